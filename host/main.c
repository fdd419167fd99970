/* main.c: wshost's entry point: settings, then store, plugins and server in that order, the
 * loop, and the orderly way down (SIGTERM drains). Owns struct host. */
#include "admin.h"
#include "api.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "plugins.h"
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

  /* store_open creates the database's folder (data/ on a fresh clone). */
  struct store_options so = {.path = h->cfg.db_path,
                             .outbox_max = h->cfg.outbox_max,
                             .outbox_ttl_s = h->cfg.outbox_ttl,
                             .batch_ms = 20,
                             .user_ttl_s = h->cfg.user_ttl,
                             .conn_history_s = h->cfg.conn_history,
                             .max_users = h->cfg.max_users ? h->cfg.max_users : -1};
  if ((rc = store_open(&h->store, &so)) < 0) {
    log_error(NULL, NULL, "cannot open database %s (%d)", h->cfg.db_path, rc);
    return 1;
  }
  log_info(NULL, NULL, "database %s open, boot %s", h->cfg.db_path, store_boot_id(h->store));
  if (admin_token_init(h) < 0 || plugins_open(h, &h->plugins) < 0 || server_start(h) < 0) {
    plugins_close(h->plugins);
    store_close(h->store);
    return 1;
  }
  if ((rc = plugins_watch(h->plugins, h->vhost)) < 0)
    log_warn(NULL, NULL, "cannot watch %s (%s): no hot reload", h->cfg.plugins_dir, strerror(-rc));
  server_run(h);
  plugins_unwatch(h->plugins);
  server_stop(h);
  plugins_close(h->plugins);
  store_flush(h->store);
  store_close(h->store);
  json_decref(h->shared);
  map_free(&h->conns);
  map_free(&h->users);
  log_info(NULL, NULL, "stopped");
  return 0;
}
