/* intercept.c: __interceptor__ before HTTP functions and upgrades. The interceptor answers like
 * any HTTP function (cloud_response_*); the target never runs once it has answered. */
#include "intercept.h"

#include "invocation.h"
#include "log.h"
#include "net_ops.h"
#include "plugins.h"

#include <stdio.h>
#include <sys/stat.h>

/* A deployed file with nothing loaded from it: refused at load, or quarantined. */
static int deployed(struct host *h) {
  char path[4200];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s.so", h->cfg.plugins_dir, INTERCEPTOR);
  return stat(path, &st) == 0;
}

static void answer(struct http_req *r, int status, const char *error) {
  char body[160];
  int n =
      snprintf(body, sizeof body, "{\"error\":\"%s\",\"requestId\":\"%s\"}", error, r->request_id);
  r->host->net->http_set_response(r, status, "application/json", body, (size_t)n);
}

int intercept(struct host *h, struct http_req *r, FunctionContext *ctx) {
  if (!plugins_loaded(h->plugins, INTERCEPTOR)) {
    if (!deployed(h))
      return 0;
    log_error(INTERCEPTOR, r->request_id,
              "%s /%s refused: %s.so is deployed but not loaded (see /_/status): failing closed",
              r->method, ctx->function_name, INTERCEPTOR);
    answer(r, 503, "Interceptor Unavailable");
    return 1;
  }
  int found;
  int rc = invoke(h, INV_HTTP, r, INTERCEPTOR, ctx, &found);
  if (!found) { /* unloaded by the call itself: as above */
    answer(r, 503, "Interceptor Unavailable");
    return 1;
  }
  if (r->responded || r->deferred)
    return 1;
  if (rc) {
    log_info(INTERCEPTOR, r->request_id, "%s /%s denied: returned %d", r->method,
             ctx->function_name, rc);
    answer(r, 403, "Forbidden");
    return 1;
  }
  return 0;
}
