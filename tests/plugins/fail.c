/* fail: returns an error without a response -> 500 {"error","requestId"}. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  cloud_log(ctx, "fail: about to fail on purpose");
  return -1;
}
