/* fail_resp: sets a response (418 text, header x-custom: yes), then returns an error.
 * The response set wins over the 500. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  cloud_response_header(ctx, "x-custom", "yes");
  cloud_response_text(ctx, 418, "teapot");
  return -1;
}
