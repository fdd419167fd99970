/* bodylen: answers {"len": body_len, "raw": body_raw != NULL} without echoing the body. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  return cloud_response_json(ctx, 200, json_pack("{s:I, s:b}", "len", (json_int_t)ctx->body_len,
                                                 "raw", ctx->body_raw != NULL));
}
