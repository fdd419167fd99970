/* main.c: wshost's entry point: settings, then the supervisor (supervisor.c), which forks the
 * serving process: store, plugins and server in that order, the loop, and the orderly way down
 * (SIGTERM drains). Owns struct host. */
#include "admin.h"
#include "api.h"
#include "auth.h"
#include "cluster.h"
#include "config.h"
#include "crash.h"
#include "defer.h"
#include "host.h"
#include "initfn.h"
#include "invocation.h"
#include "listen.h"
#include "log.h"
#include "net_ops_table.h"
#include "plugins.h"
#include "quarantine.h"
#include "rooms.h"
#include "server.h"
#include "supervisor.h"
#include "timers.h"
#include "version.h"
#include "worker.h"
#include "ws.h"
#include "xthread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

_Static_assert(HOST_LISTEN_MAX == LISTEN_MAX, "host.h and listen.h agree on listeners");

/* The serving process: everything that runs plugins. */
static int serve(struct config *cfg, const struct serve_args *a) {
  static struct host host;
  struct host *h = &host;
  int rc;
  h->cfg = *cfg;
  h->listen_fd = a->listen_fd;
  h->nlisten = a->nlisteners;
  for (int i = 0; i < a->nlisteners; i++) {
    h->listen_fds[i] = a->listeners[i].fd;
    h->listen_admin[i] = (unsigned char)a->listeners[i].admin;
  }
  h->host_pid = (int)a->host_pid;
  h->ctl_fd = a->ctl_fd;
  long before;
  h->nofile = listen_raise_nofile(&before);
  /* lws sizes its descriptor table by this soft limit, and Debian's lws (built with _DEBUG)
   * scans that whole table on every connection opened and closed: ~120 000 instructions a
   * connection at 20 000 entries, and a hard limit of 1 << 20 would make it millions. No larger
   * than --max-connections needs, then (a lower fd_limit_per_thread instead would make lws
   * search the table on every event). */
  long fit = listen_nofile_for(h->cfg.max_connections);
  if (h->nofile > fit)
    h->nofile = listen_lower_nofile(fit);
  h->fd_budget = listen_fd_budget(h->nofile);
  if (h->cfg.max_connections > h->fd_budget) {
    log_warn(NULL, NULL,
             "--max-connections %d is more than %ld descriptors allow (ulimit -n %ld): using %ld",
             h->cfg.max_connections, h->fd_budget, h->nofile, h->fd_budget);
    h->cfg.max_connections = (int)h->fd_budget;
  }
  log_info(NULL, NULL, "descriptor limit %ld: up to %ld connections, %d of them WebSocket",
           h->nofile, h->fd_budget, h->cfg.max_connections);
  h->started_ms = host_now_ms();
  map_init(&h->conns);
  map_init(&h->users);
  h->shared = json_object();
  api_bind(h);
  h->net = &net_ops_table;
  h->admin_area = &admin_area;

  if (auth_open(h) < 0)
    return 2;
  /* store_open creates the database's folder (data/ on a fresh clone). */
  struct store_options so = {.path = h->cfg.db_path,
                             .outbox_max = h->cfg.outbox_max,
                             .outbox_ttl_s = h->cfg.outbox_ttl,
                             .batch_ms = 20,
                             .commit_latency = &h->metrics.store_commit,
                             .user_ttl_s = h->cfg.user_ttl,
                             .conn_history_s = h->cfg.conn_history,
                             .max_users = h->cfg.max_users ? h->cfg.max_users : -1};
  if ((rc = store_open(&h->store, &so)) < 0) {
    log_error(NULL, NULL, "cannot open database %s (%d)", h->cfg.db_path, rc);
    return 1;
  }
  log_info(NULL, NULL, "database %s open, boot %s", h->cfg.db_path, store_boot_id(h->store));
  /* Crash records first: a version that crashed must not even be loaded again. */
  char crashes[4200];
  quarantine_path(h->cfg.db_path, h->cfg.runtime_dir, h->host_pid, crashes, sizeof crashes);
  quarantine_open_file(crashes, &h->quarantine);
  if ((rc = crash_install(a->ctl_fd, quarantine_fd(h->quarantine))) < 0)
    log_warn(NULL, NULL, "no crash reports: cannot install the handler (%s)", strerror(-rc));
  invocation_set_loop_thread();
  if (rooms_open(h) < 0 || defers_open(h) < 0 || admin_token_init(h) < 0 ||
      plugins_open(h, api_table(), &h->plugins) < 0 || server_start(h) < 0 || timers_open(h) < 0 ||
      xthread_open(h) < 0) {
    plugins_close(h->plugins);
    store_close(h->store);
    quarantine_close(h->quarantine);
    return 1;
  }
  /* --redis joins the cluster (connecting in the background, on the loop). */
  static const struct cluster_ops cluster_ops = {
      .user_deliver = ws_user_deliver,
      .drain_rows = ws_drain_rows,
      .drain_kick = ws_drain_kick,
      .drain_restart = ws_drain_restart,
      .room_deliver = rooms_deliver,
      .all_deliver = rooms_deliver_all,
      .room_members_local = rooms_members_local,
      .user_close = ws_user_close,
  };
  if (cluster_open(h, &cluster_ops) < 0) {
    server_stop(h);
    plugins_close(h->plugins);
    store_close(h->store);
    quarantine_close(h->quarantine);
    return 1;
  }
  /* Laf's __init__ runs before the first request is served: the loop has not run yet. */
  if (workers_open(h) < 0) {
    log_error(NULL, NULL, "cannot start the worker processes (--isolation process)");
    return 1;
  }
  plugins_on_swap(h->plugins, workers_on(h) ? workers_on_swap : initfn_on_swap, h);
  initfn_run(h, "at start");
  if ((rc = plugins_watch(h->plugins, h->vhost)) < 0)
    log_warn(NULL, NULL, "cannot watch %s (%s): no hot reload", h->cfg.plugins_dir, strerror(-rc));
  supervisor_ready(a);
  server_run(h);
  /* Deferred responses let go of the versions they pinned (their fini stops their threads);
   * timers stop while the loop still exists; queued cross-thread work is dropped last. */
  workers_close(h);
  defers_cancel(h);
  timers_close(h);
  cluster_close(h);
  plugins_unwatch(h->plugins);
  server_stop(h);
  /* Before plugins_close: the CLOUD_FINI calls (on threads of their own) then make their
   * cloud_shared calls directly, this thread waiting for them, not through a queue no loop
   * drains any more. */
  xthread_close(h);
  plugins_close(h->plugins);
  workers_free(h);
  defers_free(h);
  rooms_close(h);
  store_flush(h->store);
  store_close(h->store);
  json_decref(h->shared);
  map_free(&h->conns);
  map_free(&h->users);
  free(h->tx_scratch);
  metrics_free(&h->metrics);
  quarantine_close(h->quarantine);
  auth_close(h);
  log_info(NULL, NULL, "stopped");
  log_flush_repeats(1);
  return 0;
}

/* "4.1.6-v4.1.6" or "4.1.6-" (Debian's, no git tag): the version alone. */
static const char *lws_version(void) {
  static char v[32];
  snprintf(v, sizeof v, "%s", lws_get_library_version());
  v[strcspn(v, "- ")] = 0;
  return v;
}

int main(int argc, char **argv) {
  static struct config cfg;
  /* Secrets live in this process's memory: no core file, no ptrace or /proc/PID/mem by other
   * users (the serving process, forked from here, inherits it). */
  prctl(PR_SET_DUMPABLE, 0);
  int rc = config_parse(&cfg, argc, argv);
  if (rc == 2) {
    printf("wshost %s (ABI %d, libwebsockets %s)\n", WSHOST_VERSION, PLUGINS_ABI_MAX,
           lws_version());
    return 0;
  }
  if (rc)
    return rc > 0 ? 0 : 2;
  config_hide_secrets(argc, argv);
  log_set_level((enum log_level)cfg.log_level);
  log_set_format((enum log_format)cfg.log_format);
  log_set_journal(!strcmp(cfg.log_journal, "on") ||
                  (!strcmp(cfg.log_journal, "auto") && log_stderr_is_journal()));
  log_info(NULL, NULL, "wshost %s (ABI %d, libwebsockets %s) starting, pid %d", WSHOST_VERSION,
           PLUGINS_ABI_MAX, lws_version(), (int)getpid());
  /* One host per database, decided before anything is written (the port, the admin token, the
   * database itself). A host killed a moment ago may still hold it for a few ms. */
  int holder = 0, lock = store_lock(cfg.db_path, 2000, &holder);
  if (lock == -EBUSY) {
    if (holder)
      log_error(NULL, NULL, "database %s is in use by pid %d (another wshost); stop it first",
                cfg.db_path, holder);
    else
      log_error(NULL, NULL, "database %s is in use by another wshost; stop it first", cfg.db_path);
    return 2;
  }
  if (lock < 0 && lock != -ENOENT) {
    log_error(NULL, NULL, "cannot lock %s.lock: %s", cfg.db_path, strerror(-lock));
    return 2;
  }
  char crashes[4200];
  if (lock == -ENOENT) {
    /* The name is predictable and the folder may be shared (/tmp): the file is ours, made
     * here, not one somebody left at that name to be read or appended to. */
    quarantine_path(cfg.db_path, cfg.runtime_dir, (int)getpid(), crashes, sizeof crashes);
    unlink(crashes);
    int fd = open(crashes, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      log_warn(NULL, NULL, "cannot create %s: %s; crashes will not be remembered", crashes,
               strerror(errno));
    else
      close(fd);
  }
  rc = cfg.no_supervisor ? supervisor_none(&cfg, serve) : supervisor_run(&cfg, serve);
  if (lock == -ENOENT)
    unlink(crashes);
  return rc;
}
