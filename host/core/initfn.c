/* initfn.c: __init__ at start and after its own reloads. A failing __init__ is logged at error
 * and shown in /_/status; the host keeps serving the functions that do not depend on it. */
#include "initfn.h"

#include "invocation.h"
#include "log.h"
#include "plugins.h"

#include <string.h>

int initfn_run(struct host *h, const char *when) {
  if (!plugins_loaded(h->plugins, INIT_FUNCTION))
    return 0;
  char rid[32];
  host_request_id(h, rid, sizeof rid);
  FunctionContext ctx = {
      .size = sizeof ctx, .function_name = INIT_FUNCTION, .request_id = rid, .method = "Init"};
  int found;
  int rc = invoke(h, INV_INIT, NULL, INIT_FUNCTION, &ctx, &found);
  h->init_result = found ? rc : 0;
  if (found && rc)
    log_error(INIT_FUNCTION, rid, "%s failed: returned %d; serving anyway", when, rc);
  else if (found)
    log_info(INIT_FUNCTION, rid, "%s: done", when);
  return h->init_result;
}

void initfn_on_swap(void *host, const char *name) {
  if (!strcmp(name, INIT_FUNCTION))
    initfn_run(host, "after its reload");
}
