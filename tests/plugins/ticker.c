/* ticker: an HTTP function with a timer, for tests/e2e/test_timers.py. GET /ticker?every=MS
 * starts timer "tick" (first after MS, then every MS); ?stop=1 stops it; ?sleep=MS makes each
 * firing take that long. Each firing adds one to cloud_shared "ticks" (kept across reloads)
 * and logs "tick <name>"; GET /ticker answers {"ticks": n}. */
#include <cloud.h>
#include <stdlib.h>
#include <time.h>

static long sleep_ms;

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "Timer")) {
    json_t *t = cloud_shared_get("ticks");
    json_int_t n = json_integer_value(t) + 1;
    json_decref(t);
    t = json_integer(n);
    cloud_shared_set("ticks", t);
    json_decref(t);
    cloud_log(ctx, "tick %s %lld", ctx->params.data, (long long)n);
    if (sleep_ms) {
      struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    return 0;
  }
  const char *every = json_string_value(json_object_get(ctx->query, "every"));
  const char *stop = json_string_value(json_object_get(ctx->query, "stop"));
  const char *sl = json_string_value(json_object_get(ctx->query, "sleep"));
  if (sl)
    sleep_ms = atol(sl);
  int rc = 0;
  if (every)
    rc = cloud_timer_start("tick", (uint64_t)atol(every), (uint64_t)atol(every));
  else if (stop)
    rc = cloud_timer_stop("tick");
  json_t *t = cloud_shared_get("ticks");
  json_int_t n = json_integer_value(t);
  json_decref(t);
  return cloud_response_json(ctx, 200, json_pack("{s:I, s:i}", "ticks", n, "rc", rc)) < 0;
}
