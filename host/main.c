/* main.c: wshost's entry point: settings, then store, plugins and server in that order, the
 * loop, and the orderly way down (SIGTERM drains). Owns struct host. */
#include "admin.h"
#include "api.h"
#include "auth.h"
#include "config.h"
#include "defer.h"
#include "host.h"
#include "initfn.h"
#include "invocation.h"
#include "log.h"
#include "plugins.h"
#include "rooms.h"
#include "server.h"
#include "timers.h"
#include "xthread.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Creates the folder of the database file when it is missing (data/ on a fresh clone). */
static void make_db_dir(const char *db) {
  if (!strcmp(db, ":memory:"))
    return;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", db);
  char *d = dirname(dir);
  if (mkdir(d, 0700) < 0 && errno != EEXIST)
    log_warn(NULL, NULL, "cannot create %s: %s", d, strerror(errno));
}

int main(int argc, char **argv) {
  static struct host host;
  struct host *h = &host;
  int rc = config_parse(&h->cfg, argc, argv);
  if (rc)
    return rc > 0 ? 0 : 2;
  log_set_level((enum log_level)h->cfg.log_level);
  h->started_ms = host_now_ms();
  map_init(&h->conns);
  map_init(&h->users);
  h->shared = json_object();
  api_bind(h);

  if (auth_open(h) < 0)
    return 2;
  make_db_dir(h->cfg.db_path);
  struct store_options so = {.path = h->cfg.db_path,
                             .outbox_max = h->cfg.outbox_max,
                             .outbox_ttl_s = h->cfg.outbox_ttl,
                             .batch_ms = 20,
                             .commit_latency = &h->metrics.store_commit};
  if ((rc = store_open(&h->store, &so)) < 0) {
    log_error(NULL, NULL, "cannot open database %s (%d)", h->cfg.db_path, rc);
    return 1;
  }
  log_info(NULL, NULL, "database %s open, boot %s", h->cfg.db_path, store_boot_id(h->store));
  invocation_set_loop_thread();
  if (rooms_open(h) < 0 || defers_open(h) < 0 || admin_token_init(h) < 0 ||
      plugins_open(h, &h->plugins) < 0 || server_start(h) < 0 || timers_open(h) < 0 ||
      xthread_open(h) < 0) {
    plugins_close(h->plugins);
    store_close(h->store);
    return 1;
  }
  /* Laf's __init__ runs before the first request is served: the loop has not run yet. */
  plugins_on_swap(h->plugins, initfn_on_swap, h);
  initfn_run(h, "at start");
  if ((rc = plugins_watch(h->plugins, h->vhost)) < 0)
    log_warn(NULL, NULL, "cannot watch %s (%s): no hot reload", h->cfg.plugins_dir, strerror(-rc));
  server_run(h);
  /* Deferred responses let go of the versions they pinned (their fini stops their threads);
   * timers stop while the loop still exists; queued cross-thread work is dropped last. */
  defers_cancel(h);
  timers_close(h);
  plugins_unwatch(h->plugins);
  server_stop(h);
  plugins_close(h->plugins);
  xthread_close(h);
  defers_free(h);
  rooms_close(h);
  store_flush(h->store);
  store_close(h->store);
  json_decref(h->shared);
  map_free(&h->conns);
  map_free(&h->users);
  metrics_free(&h->metrics);
  auth_close(h);
  log_info(NULL, NULL, "stopped");
  return 0;
}
