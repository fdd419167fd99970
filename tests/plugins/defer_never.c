/* defer_never: an HTTP function that defers its response and never completes it (the host
 * answers 504 after --defer-timeout); with ?twice=1 it completes on the loop at once, then
 * again, and logs what the second completion returned. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  cloud_deferred *d = cloud_defer(ctx);
  if (!d)
    return -1;
  if (json_object_get(ctx->query, "twice")) {
    int first = cloud_deferred_text(d, 201, "first");
    int second = cloud_deferred_text(d, 202, "second");
    cloud_log(ctx, "completions: first %d second %d", first, second);
  }
  /* Set after cloud_defer: ignored, the deferred response is the one that counts. */
  int late = cloud_response_text(ctx, 299, "ignored");
  cloud_log(ctx, "response after defer: %d", late);
  return 0;
}
