/* init_fn: a test __init__. Counts its runs in cloud_shared "init_runs" and stores its
 * configuration's GREETING; fails (returns 3) when INIT_FAIL is set in its configuration. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  json_t *n = cloud_shared_get("init_runs");
  json_t *next = json_integer((n ? json_integer_value(n) : 0) + 1);
  cloud_shared_set("init_runs", next);
  json_decref(next);
  json_decref(n);
  const char *g = cloud_env("GREETING");
  json_t *gs = json_string(g ? g : "none");
  cloud_shared_set("greeting", gs);
  json_decref(gs);
  cloud_log(ctx, "init_fn ran (%s)", ctx->method);
  return cloud_env("INIT_FAIL") ? 3 : 0;
}
