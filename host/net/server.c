/* server.c: the lws context, its protocols and vhost, and the event loop with its timers and
 * signals. One protocol serves HTTP and WebSocket on one port; a second watches plugins/.
 * The loop is a libev loop (epoll) the host owns and lws joins (a "foreign" loop): one event
 * costs the same however many idle connections there are, unlike lws's default poll() loop. */
#include "server.h"

#include "accept.h"
#include "auth.h"
#include "head_guard.h"
#include "http.h"
#include "log.h"
#include "lws_alloc.h"
#include "notify.h"
#include "plugins.h"
#include "signals.h"
#include "supervisor.h"
#include "ws.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* The rule every outgoing frame obeys: a frame may name a user created in this turn (a
 * greeting carries the new id and token), so it leaves only once that user is committed.
 * Writable callbacks check it here; ws.c's direct writes check store_synced_upto before they
 * skip the queue. While someone else holds the database lock the bytes wait, and the callback
 * comes again a little later. */
static int egress_ready(struct lws *wsi, struct session *s) {
  struct host *h = lws_context_user(lws_get_context(wsi));
  /* A WebSocket waits only for its own new user (whose token its greeting carries), so echoes
   * on other connections go on while one greeting waits for a locked database. */
  int rc = s && s->conn ? store_sync_upto(h->store, s->conn->need_seq) : store_sync(h->store);
  /* While another process holds the database, HTTP answers (/_/healthz among them) are not
   * held: only an admin view could show a user not yet committed. */
  if (rc == -EAGAIN && !(s && s->conn) && store_waiting(h->store))
    rc = 0;
  if (rc == -EAGAIN) {
    lws_set_timer_usecs(wsi, 50 * LWS_US_PER_MS);
    return 0;
  }
  if (rc < 0)
    log_error(NULL, NULL, "store commit failed: new users may not survive a crash");
  return 1;
}

static int callback_main(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len) {
  struct session *s = user;
  switch (reason) {
  case LWS_CALLBACK_SERVER_WRITEABLE:
  case LWS_CALLBACK_HTTP_WRITEABLE:
    if (!egress_ready(wsi, s))
      return 0;
    return reason == LWS_CALLBACK_HTTP_WRITEABLE ? http_callback(wsi, reason, s, in, len)
                                                 : ws_callback(wsi, reason, s, in, len);
  case LWS_CALLBACK_TIMER:
    lws_callback_on_writable(wsi);
    return s && s->conn ? ws_callback(wsi, reason, s, in, len) : 0;
  case LWS_CALLBACK_ESTABLISHED:
  case LWS_CALLBACK_RECEIVE:
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
  case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
  case LWS_CALLBACK_CLOSED:
    return ws_callback(wsi, reason, s, in, len);
  case LWS_CALLBACK_HTTP:
  case LWS_CALLBACK_HTTP_BODY:
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    return http_callback(wsi, reason, s, in, len);
  case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
    return ws_confirm_extension(lws_context_user(lws_get_context(wsi)), wsi, in);
  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
    ws_protocol_filter(lws_context_user(lws_get_context(wsi)), wsi);
    return 0;
  case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
    head_guard_start(lws_context_user(lws_get_context(wsi)), wsi);
    return 0;
  case LWS_CALLBACK_WSI_DESTROY:
    head_guard_end(lws_context_user(lws_get_context(wsi)), wsi);
    /* An upgrade admitted (its connection event ran) that never became a connection. */
    ws_upgrade_abandoned(lws_context_user(lws_get_context(wsi)), wsi);
    return 0;
  default:
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}

/* rx_buffer_size (--ws-rx-buffer, 64 KiB by default) is how much lws 4.1 reads from a
 * WebSocket per service and the largest piece it hands to LWS_CALLBACK_RECEIVE. lws also
 * allocates a receive buffer of that size for every WebSocket for its whole life, unless
 * lws_alloc.c's allocator hook applies: then that buffer is 160 bytes (it only ever holds control
 * frames) and a 64 KiB message is one read instead of 128 at 512 (docs/BENCHMARKS.md). Without
 * the hook (another lws series) the buffer stays per connection and is capped at
 * WS_RX_PER_CONN. tx_packet_size: without it lws caps every send() at rx_buffer_size plus a
 * frame header; at 64 KiB one send() takes a whole frame and lws buffers what the kernel
 * refuses. */
#define WS_RX_PER_CONN 512
#define WS_TX_PACKET 65536
static struct lws_protocols protocols[] = {
    {"wshost", callback_main, sizeof(struct session), 512, 0, NULL, WS_TX_PACKET},
    {"wshost-watch", plugins_watch_callback, 0, 0, 0, NULL, 0},
    /* The subprotocol slot (ws.c, WS_SLOT_PROTOCOL): an upgrade that offers subprotocols is
     * bound here; its name is rewritten per upgrade. Must match "wshost" in all but name. */
    {WS_SLOT_PROTOCOL, callback_main, sizeof(struct session), 4096, 0, NULL, WS_TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Commits batched store writes (and retries those a lock held back); once a second a small
 * maintenance step: expiry, pruning, the database file check. */
static void store_tick(lws_sorted_usec_list_t *sul) {
  struct host *h = lws_container_of(sul, struct host, store_timer);
  static const int tick_ms = 20;
  if (store_flush_due_ms(h->store) >= 0)
    store_flush(h->store);
  store_maintain(h->store);
  lws_sul_schedule(h->lws, 0, &h->store_timer, store_tick, tick_ms * LWS_US_PER_MS);
}

/* Once per loop pass, before the loop sleeps: one commit for the users created in the pass,
 * and the greetings that waited for it written at once (ws.c). */
static void commit_pass(struct ev_loop *loop, ev_prepare *w, int revents) {
  (void)loop;
  (void)revents;
  ws_commit_pass(w->data);
}

/* SIGTERM/SIGINT: close every connection with 1001 and keep serving until they are gone or
 * the drain deadline passes; the drain timer then breaks the loop. A second signal changes
 * nothing. */
static void drain_check(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  struct host *h = t->data;
  if (h->nconns == 0 || host_now_ms() > h->drain_deadline_ms)
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal(int signum, void *arg) {
  struct host *h = arg;
  if (h->stopping)
    return;
  h->stopping = 1;
  log_info(NULL, NULL, "signal %d: closing %d connections (1001) and stopping", signum, h->nconns);
  if (h->ctl_fd < 0) /* else the supervisor says it, as the main process */
    notify_stopping();
  /* The reason says what the client should do (docs/OPERATIONS.md, sdk/js/wshost.js): this
   * host goes, the service stays, so come back (to another instance) after a random delay. */
  ws_close_all(h, 1001, "shutdown; reconnect");
  h->drain_deadline_ms = host_now_ms() + (int64_t)h->cfg.drain_timeout * 1000;
  ev_timer_start(h->loop, &h->drain);
}

/* A package upgrade replaces the binary under a running host: the kernel then names it
 * "/usr/bin/wshost (deleted)". Said once, and in /_/status, so the operator restarts it. */
static void exe_check(struct host *h) {
  char buf[4200];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0 || h->exe_deleted)
    return;
  buf[n] = 0;
  if (n > 10 && !strcmp(buf + n - 10, " (deleted)")) {
    h->exe_deleted = 1;
    log_warn(NULL, NULL,
             "the binary this host runs was replaced or removed (%s): restart the host to run "
             "the installed version",
             buf);
  }
}

/* Summaries of rate-limited log lines ("... repeated N times") once their second is over. */
static void log_tick(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  log_flush_repeats(0);
  exe_check(t->data);
}

/* SIGHUP: the functions' configuration (--env-file) is read again. */
static void on_sighup(struct ev_loop *loop, ev_signal *sig, int revents) {
  (void)loop;
  (void)revents;
  auth_env_reload(sig->data);
}

int server_start(struct host *h) {
  static lws_retry_bo_t retry;
  struct lws_context_creation_info info;
  h->loop = ev_loop_new(EVBACKEND_EPOLL);
  if (!h->loop) {
    log_error(NULL, NULL, "cannot create the event loop (libev, epoll)");
    return -1;
  }
  void *loops[1] = {h->loop};
  memset(&info, 0, sizeof info);
  /* The supervisor bound the port; accept.c accepts on it and hands connections to lws. */
  info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
  size_t rx = h->cfg.ws_rx_buffer;
  int small_rx = lws_alloc_install();
  h->deflate_piece = lws_alloc_deflate_piece();
  if (!small_rx && rx > WS_RX_PER_CONN) {
    log_warn(NULL, NULL,
             "lws %s allocates the receive buffer on every WebSocket: reading in pieces of %d "
             "bytes, not --ws-rx-buffer %zu",
             lws_get_library_version(), WS_RX_PER_CONN, rx);
    rx = WS_RX_PER_CONN;
  }
  /* With permessage-deflate on, lws 4.1.6 loses the close frame of a message it refuses
   * (1009 for a deflate bomb) when it reads in small pieces: 4096 then (test_deflate.py). */
  if (h->cfg.deflate && rx < 4096)
    rx = 4096;
  /* lws reads into pt->serv_buf and caps a read at its size too (default 4096). */
  if (small_rx && rx + LWS_PRE > 4096)
    info.pt_serv_buf_size = (unsigned)(rx + LWS_PRE);
  protocols[0].rx_buffer_size = rx;
  protocols[2].rx_buffer_size = rx; /* the subprotocol slot (ws.c) matches "wshost" */
  info.protocols = protocols;
  info.user = h;
  /* lws joins our loop (plugin libwebsockets-evlib_ev) and leaves signals to us. Not libuv:
   * Debian's lws 4.1.6 is built with _DEBUG, which under libuv closes every connection a
   * second time when a callback returns -1, so close frames (1001, 1009, ...) are never
   * sent (warmcat/libwebsockets#3569). */
  info.options = LWS_SERVER_OPTION_LIBEV;
  info.foreign_loops = loops;
  /* lws writes NULL here once the context is wholly gone. */
  info.pcontext = &h->lws;
  info.max_http_header_data =
      (unsigned short)(h->cfg.max_header > 65535 ? 65535 : h->cfg.max_header);
  /* lws indexes its table by descriptor number up to this; a value under the soft limit
   * would switch Debian's lws to scanning the whole table on every lookup. */
  info.fd_limit_per_thread = (unsigned)h->nofile;
  /* Slow clients: a connection whose TLS handshake or request headers are not complete
   * within timeout_secs_ah_idle is dropped (slowloris); a body that stalls, after
   * timeout_secs (both measured, tests/e2e/test_badinput.py). */
  info.timeout_secs = 20;
  info.timeout_secs_ah_idle = 10;
  /* Heartbeat: ping after ping_interval idle, hang up pong_timeout later without traffic. */
  retry.secs_since_valid_ping = (uint16_t)h->cfg.ping_interval;
  retry.secs_since_valid_hangup = (uint16_t)(h->cfg.ping_interval + h->cfg.pong_timeout);
  info.retry_and_idle_policy = &retry;
  if (h->cfg.tls_cert) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = h->cfg.tls_cert;
    info.ssl_private_key_filepath = h->cfg.tls_key;
  }
  info.vhost_name = "wshost";
  lws_set_log_level(LLL_ERR | LLL_WARN, log_lws_emit);
  /* permessage-deflate (RFC 7692), lws's implementation: its zlib state is made on first use
   * (an idle connection that sent nothing compressed holds only lws's small private struct);
   * ws.c narrows the compressor of each connection (deflate_narrow). */
  static const struct lws_extension exts[] = {{"permessage-deflate",
                                               lws_extension_callback_pm_deflate,
                                               "permessage-deflate; client_max_window_bits"},
                                              {NULL, NULL, NULL}};
  if (h->cfg.deflate)
    info.extensions = exts;
  h->lws = lws_create_context(&info);
  if (!h->lws) {
    log_error(NULL, NULL,
              "cannot start lws: it cannot load its libev loop (package "
              "libwebsockets-evlib-ev)%s; see above",
              h->cfg.tls_cert ? ", or the TLS certificate and key" : "");
    ev_loop_destroy(h->loop);
    h->loop = NULL;
    return -1;
  }
  h->vhost = lws_get_vhost_by_name(h->lws, "wshost");
  /* lws's own copy of the protocol table: the one it matches offered subprotocols against. */
  h->proto_slot = (struct lws_protocols *)lws_vhost_name_to_protocol(h->vhost, WS_SLOT_PROTOCOL);
  ev_signal_init(&h->sighup, on_sighup, SIGHUP);
  h->sighup.data = h;
  ev_signal_start(h->loop, &h->sighup);
  ev_timer_init(&h->drain, drain_check, 0, 0.01);
  h->drain.data = h;
  /* A real handler, not an ev_signal: SIGTERM must work while a function holds the loop. */
  int rc = signals_start(h->loop, h->cfg.drain_timeout, on_signal, h);
  if (rc < 0)
    log_warn(NULL, NULL, "cannot install signal handlers: %s", strerror(-rc));
  ev_prepare_init(&h->commit_pass, commit_pass);
  h->commit_pass.data = h;
  ev_prepare_start(h->loop, &h->commit_pass);
  ev_unref(h->loop); /* it alone does not keep the loop running */
  ev_timer_init(&h->log_tick, log_tick, 1, 1);
  h->log_tick.data = h;
  exe_check(h);
  ev_timer_start(h->loop, &h->log_tick);
  ev_unref(h->loop); /* the tick alone does not keep the loop running */
  signal(SIGPIPE, SIG_IGN);
  lws_sul_schedule(h->lws, 0, &h->store_timer, store_tick, 20 * LWS_US_PER_MS);
  accept_start(h);
  return 0;
}

/* The supervisor's liveness check: a beat a second from a timer on this loop, so a loop that
 * stopped turning (SIGSTOP, a wait outside any function, an endless function in-process)
 * stops beating and is replaced after --heartbeat-timeout (supervisor.c). */
static void heartbeat(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  struct host *h = t->data;
  supervisor_heartbeat(h->ctl_fd, &h->heartbeat_ms);
}

int server_run(struct host *h) {
  log_info(NULL, NULL, "serving process %d accepting%s", (int)getpid(),
           h->cfg.tls_cert ? " (TLS)" : "");
  notify_watchdog_start(h->loop, &h->watchdog, &h->ctl_fd);
  if (h->ctl_fd >= 0) {
    ev_timer_init(&h->heartbeat, heartbeat, 0, SUPERVISOR_HEARTBEAT_MS / 1000.);
    h->heartbeat.data = h;
    ev_timer_start(h->loop, &h->heartbeat);
    ev_unref(h->loop); /* it alone does not keep the loop running */
  }
  /* Returns when the drain timer breaks the loop. */
  ev_run(h->loop, 0);
  if (ev_is_active(&h->heartbeat)) {
    ev_ref(h->loop);
    ev_timer_stop(h->loop, &h->heartbeat);
  }
  notify_watchdog_stop(h->loop, &h->watchdog);
  return 0;
}

void server_stop(struct host *h) {
  if (!h->lws)
    return;
  lws_sul_cancel(&h->store_timer);
  accept_stop(h);
  signals_stop();
  ev_ref(h->loop);
  ev_timer_stop(h->loop, &h->log_tick);
  ev_ref(h->loop);
  ev_prepare_stop(h->loop, &h->commit_pass);
  ev_signal_stop(h->loop, &h->sighup);
  ev_timer_stop(h->loop, &h->drain);
  /* On a foreign loop lws stops its watchers and frees the context (clearing h->lws); the
   * loop runs once more in case anything is left to finish, then goes. */
  lws_context_destroy(h->lws);
  ev_run(h->loop, EVRUN_NOWAIT);
  if (h->lws)
    lws_context_destroy(h->lws);
  ev_loop_destroy(h->loop);
  h->loop = NULL;
  h->lws = NULL;
}
