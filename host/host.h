/* host.h: struct host, the one owner of the process's state, and the session types lws
 * allocates per connection. Every module gets the host passed in; none keeps its own globals. */
#ifndef WSHOST_HOST_H
#define WSHOST_HOST_H

#include <ev.h>
#include <libwebsockets.h>

#include "cloud.h"
#include "config.h"
#include "map.h"
#include "metrics.h"
#include "msgbuf.h"
#include "sendq.h"
#include "store.h"

/* Listeners the serving process accepts on (listen.h's LISTEN_MAX). */
#define HOST_LISTEN_MAX 8

struct plugins;
struct quarantine;
struct http_req;
struct invocation;
struct ws_upgrade;
struct rooms;
struct timers;
struct defers;
struct xthread;
struct cluster;
struct workers;
struct http_area;
struct net_ops;
struct invocation_runner;

/* One WebSocket connection. Plugins see only its id (cloud_socket); the host finds it again
 * through host->conns, so a handle to a closed connection finds nothing. */
struct conn {
  uint64_t id;
  struct host *host;
  struct lws *wsi;
  char *user_id;          /* owned; every connection has one from ws_open on */
  char *user_id_prev;     /* the id cloud_bind_user replaced, until the connection event ends */
  int64_t row;            /* connections table row, 0 when not stored */
  struct conn *user_next; /* next connection of the same user */
  struct sendq q;
  struct msgbuf rx;
  int in_connect_event;             /* cloud_bind_user is allowed */
  const struct ws_upgrade *upgrade; /* during the connection event: its request (ws.h) */
  int fresh_user;                   /* user_id was created for this connection */
  int established;                  /* the connection event ran; close events are due */
  int close_code;                   /* close the host or plugin asked for, 0 if none */
  int close_sent;                   /* lws has been told to send it */
  int direct_ok;      /* frames may skip the queue when it is empty (ws.c conn_send) */
  int gone;           /* out of host->conns: handles to it find nothing (ws_find) */
  int commit_waiting; /* on host->commit_wait: its frames wait for a commit */
  struct conn *commit_next;
  char *close_reason;      /* owned, NULL for none: allocated only when a close is asked for */
  int peer_close_code;     /* what the client's close frame said, 0 if none */
  char *peer_close_reason; /* owned, NULL for none */
  char *remote;            /* owned: the peer's address */
  int64_t opened_ms;
  char request_id[32]; /* the upgrade's: on every log line about the connection itself */
  uint64_t need_seq;   /* store_user_seq of its fresh user: committed before a byte leaves */
  /* The outbox drain (ws.c): rows are loaded into q as it empties, each frame tagged with its
   * row id; a row is acknowledged (deleted) once its frame was written whole. */
  int draining;            /* queued rows may remain: live sends to the user go behind them */
  int64_t drain_after;     /* last row id loaded into q */
  int64_t drain_acked;     /* last row id the peer's TCP has taken */
  int64_t drain_deleted;   /* last row id handed to store_outbox_ack */
  uint64_t wire_bytes;     /* frame bytes handed to lws_write since the connection opened */
  struct wire_mark *marks; /* written outbox frames whose bytes may still be in flight */
  size_t nmarks, marks_cap;
  json_t *claims;    /* the upgrade's JWT claims (ctx->user), NULL without one */
  int upgraded;      /* the 101 is out (ESTABLISHED): lws may be asked to write */
  int bound_user;    /* user_id is the app's (cloud_bind_user or a JWT sub): ensured, no token */
  int reject_status; /* cloud_reject in the connection event: the upgrade's answer */
  char *protocol;    /* cloud_accept_protocol's choice, NULL for none */
  int deflate;       /* permessage-deflate negotiated */
  int door_close;    /* refused at the door (ws_admit_refused): closed with this code after the
                      * 101; in no map, no user, no row, no event */
};

/* An outbox frame written to the socket: its row and where its bytes end on the wire. */
struct wire_mark {
  int64_t row;
  uint64_t end;
};

/* The live connections of one user. */
struct user_live {
  struct conn *head;
  int count;
};

/* What lws allocates per wsi (HTTP request or WebSocket). */
struct session {
  struct conn *conn;    /* WebSocket, after ESTABLISHED */
  struct http_req *req; /* HTTP, while a request is in flight */
};

struct host_stats {
  uint64_t ws_messages, ws_opened, ws_closed, http_requests, plugin_errors;
};

struct host {
  struct config cfg;
  struct lws_context *lws;
  struct lws_vhost *vhost;
  struct store *store;
  struct plugins *plugins;
  /* What the core asks of the lws glue (net_ops.h), set by main.c. */
  const struct net_ops *net;
  json_t *shared;   /* cloud_shared_*: key -> host-owned copy */
  struct map conns; /* 8-byte connection id -> struct conn * */
  struct map users; /* user id -> struct user_live * */
  uint64_t next_conn_id, next_request;
  char request_prefix[9];
  int nconns;
  int stopping;
  int64_t started_ms;
  char admin_token[128];
  const struct http_area *admin_area; /* /_/ (admin.c), wired in by main.c */
  struct host_stats stats;
  struct metrics metrics; /* GET /_/metrics (metrics.c) */
  size_t http_body_bytes; /* request body bytes buffered now, all requests (http.c) */
  struct map head_guards; /* struct lws * -> first heads being read (head_guard.c) */
  lws_sorted_usec_list_t store_timer;
  /* The event loop lws runs on (server.c owns it): epoll through libev, so an event costs
   * the same with 10 000 idle connections as with 10. The drain check is a watcher on it;
   * signals are real handlers (signals.c) that wake it. */
  struct ev_loop *loop;
  ev_signal sighup;
  ev_timer drain, log_tick;
  ev_timer watchdog; /* systemd WatchdogSec= pings (notify.c) */
  int64_t drain_deadline_ms;
  /* What the plugin being called is doing (invocation.c), rooms, timers, deferred
   * HTTP responses and the queue other threads post to (xthread.c). */
  struct invocation *inv;
  struct rooms *rooms;
  struct timers *timers;
  /* JWT verification (NULL without --jwt-*), the --env-file values (NULL without). */
  struct auth_jwt *jwt;
  struct envfile *env;
  int64_t jwt_unkeyed_warned_ms;    /* last "JWT sent to a host with no key" warning (auth.c) */
  struct lws_protocols *proto_slot; /* lws's copy of the subprotocol slot (ws.c) */
  char slot_name[64];               /* its name for the upgrade in progress */
  int init_result;                  /* what __init__ returned last (0 without one), for /_/status */
  struct defers *defers;
  struct xthread *xq;
  /* The listening socket comes from the supervisor (supervisor.c); accept.c accepts on it
   * within a descriptor budget derived from RLIMIT_NOFILE. */
  int listen_fd;
  int host_pid; /* the supervisor's pid: names the runtime folder across restarts */
  /* The control socket to the supervisor (-1: none): ready, heartbeat, crashes, and the
   * watchdog pings it relays to systemd (notify.c). */
  int ctl_fd;
  ev_timer heartbeat;   /* one beat a second to the supervisor from the loop (server.c) */
  int64_t heartbeat_ms; /* when the last beat went (supervisor_heartbeat) */
  long nofile, fd_budget;
  /* Every listener (--bind, --admin-bind; listen_fd is the first), and which accepted
   * descriptors came through an admin one (a bit per descriptor under fd_budget; NULL
   * without --admin-bind). */
  int nlisten;
  int listen_fds[HOST_LISTEN_MAX];
  unsigned char listen_admin[HOST_LISTEN_MAX];
  ev_io accept_ios[HOST_LISTEN_MAX];
  unsigned char *admin_fds;
  int exe_deleted; /* /proc/self/exe is "(deleted)": an upgrade replaced the binary */
  ev_timer accept_pause;
  int64_t accept_log_ms;
  uint64_t accept_refused, accept_errors;
  struct quarantine *quarantine;
  struct cluster *cluster; /* --redis (cluster.c); NULL on a single node */
  struct workers *workers; /* --isolation process: plugin calls run there (worker.c) */
  const struct invocation_runner *runner; /* set with workers: invoke() goes there */
  /* A frame written straight to the socket is built here (lws wants LWS_PRE bytes
   * of room before the payload); grown to the largest frame sent so far. */
  unsigned char *tx_scratch;
  size_t tx_scratch_cap;
  /* The largest fragment of a compressed message one lws_write takes (ws.c conn_write,
   * lws_alloc.h): set with the server, from the size of lws's deflate output buffer. */
  size_t deflate_piece;
  /* Text already checked as UTF-8 for the call in progress: the message event being handled
   * (msgbuf checked it on the way in) or a fan-out's text (checked once for all its sockets).
   * conn_send does not check these bytes again; whoever sets it restores what was there. */
  const void *text_checked;
  size_t text_checked_len;
  /* Connections whose queued frames wait for the commit of their new user; the commit runs
   * once per loop pass (ws_commit_pass, from an ev_prepare watcher). */
  struct conn *commit_wait;
  ev_prepare commit_pass;
};

/* clock.c: fills buf (at least 32 bytes) with a fresh request id. */
void host_request_id(struct host *h, char *buf, size_t len);
/* Milliseconds since the epoch. */
int64_t host_now_ms(void);

#endif
