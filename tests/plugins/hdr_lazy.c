/* hdr_lazy: hdr_eager with CLOUD_OPTIONS(CLOUD_OPT_LAZY_HEADERS): ctx->headers is NULL in its
 * connection event, cloud_request_header still finds every header. */
#define HDR_LAZY 1
#include "hdr_eager.c"
