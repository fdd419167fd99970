/* noresp: returns 0 without setting a response -> 204. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  (void)ctx;
  return 0;
}
