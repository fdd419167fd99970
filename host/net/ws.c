/* ws.c: WebSocket connections: their lifecycle, events to __websocket__, send queues, users.
 * A frame is written at once when nothing waits before it, else queued for SERVER_WRITEABLE. */
#include "ws.h"

#include "cluster.h"
#include "http.h"
#include "invocation.h"
#include "log.h"
#include "lws_alloc.h"
#include "peer.h"
#include "plugins.h"
#include "quarantine.h"
#include "rooms.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

_Static_assert(SENDQ_PRE >= LWS_PRE, "send queue frames need lws's pre-padding");

static const char WS_FUNCTION[] = "__websocket__";

static void ws_protocol_prepare(struct host *h, struct conn *c, const char *offered);

struct conn *ws_find(struct host *h, cloud_socket s) {
  /* A reply to the event being handled is the common case: its connection is at hand, no
   * map lookup (~150 instructions a message). Not once it closed: then every handle to it
   * answers CLOUD_ECLOSED, its own close event's included. */
  const struct invocation *inv = h->inv;
  if (s.id && inv && inv->kind == INV_WS && inv->obj) {
    struct conn *c = inv->obj;
    if (c->id == s.id)
      return c->gone ? NULL : c;
  }
  return s.id ? map_get(&h->conns, &s.id, sizeof s.id) : NULL;
}

/* Per-connection strings are allocated to their length, and close reasons only when a close
 * happens: an idle connection carries none of them (fixed arrays were 608 bytes). */
static void str_set(char **dst, const char *src, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, src, n);
    d[n] = 0;
  }
  free(*dst);
  *dst = d; /* NULL when out of memory: the string reads as empty */
}

static void close_reason_set(struct conn *c, const char *reason) {
  str_set(&c->close_reason, reason, strlen(reason));
}

static const char *str_or_empty(const char *s) {
  return s ? s : "";
}

/* Runs __websocket__ for one event of c. */
static void ws_event(struct conn *c, const char *method, FunctionContext *ctx) {
  struct host *h = c->host;
  char rid[32];
  host_request_id(h, rid, sizeof rid);
  ctx->size = sizeof *ctx;
  ctx->function_name = WS_FUNCTION;
  ctx->request_id = rid;
  ctx->method = method;
  ctx->socket.id = c->id;
  ctx->user_id = c->user_id;
  ctx->user = c->claims;
  int found;
  int rc = invoke(h, INV_WS, c, WS_FUNCTION, ctx, &found);
  if (!found)
    log_warn(WS_FUNCTION, rid, "%s dropped: no %s.so loaded", method, WS_FUNCTION);
  else if (rc) {
    h->stats.plugin_errors++;
    log_error(WS_FUNCTION, rid, "%s of user %s failed: returned %d", method, c->user_id, rc);
  }
}

static void user_link(struct host *h, struct conn *c) {
  struct user_live *u = map_get(&h->users, c->user_id, strlen(c->user_id));
  if (!u) {
    u = calloc(1, sizeof *u);
    if (!u || map_set(&h->users, c->user_id, strlen(c->user_id), u) < 0) {
      free(u);
      log_error(NULL, NULL, "out of memory linking user %s", c->user_id);
      return;
    }
  }
  c->user_next = u->head;
  u->head = c;
  u->count++;
  if (u->count == 1 && h->cluster) /* presence on the other nodes */
    cluster_user_online(h, c->user_id, 1);
}

static void user_unlink(struct host *h, struct conn *c) {
  if (!c->user_id) /* ws_open failed before it had one */
    return;
  struct user_live *u = map_get(&h->users, c->user_id, strlen(c->user_id));
  if (!u)
    return;
  for (struct conn **pp = &u->head; *pp; pp = &(*pp)->user_next)
    if (*pp == c) {
      *pp = c->user_next;
      u->count--;
      break;
    }
  c->user_next = NULL;
  if (!u->count) {
    map_del(&h->users, c->user_id, strlen(c->user_id));
    free(u);
    if (h->cluster) /* presence on the other nodes */
      cluster_user_online(h, c->user_id, 0);
  }
}

static void wire_mark(struct conn *c, int64_t row);

/* lws 4.1.6 aborts the process when permessage-deflate compresses an empty message after
 * another (pm_deflate.c:471, assert(0) on a sync flush shorter than 4 bytes): any client could
 * end every connection by sending "" to an echo. An empty message is written uncompressed
 * (RFC 7692 6: RSV1 clear), two bytes straight to the socket, when lws has nothing of its
 * own pending, so the stream stays in order. 0, or -1 when it cannot be written now. */
static int ws_write_empty(struct lws *wsi, int is_binary) {
  unsigned char frame[2] = {(unsigned char)(0x80 | (is_binary ? 2 : 1)), 0};
  if (lws_partial_buffered(wsi))
    return -1;
  ssize_t n = send(lws_get_socket_fd(wsi), frame, 2, MSG_NOSIGNAL | MSG_DONTWAIT);
  return n == 2 ? 0 : -1;
}

/* The one writer: every data frame reaches lws here (conn_send decided it may go now).
 * payload[0..len) has LWS_PRE bytes of room before it; *sent counts what lws already has.
 * Without permessage-deflate the message goes whole: what the kernel does not take now, lws
 * buffers and writes itself. With it, a message goes in fragments of at most
 * lws_alloc_deflate_piece() bytes, one a call: each compresses whole into lws's output
 * buffer, so lws never comes back for the rest of one from a frame freed by then (what the
 * outbox drain once gave it whole: a SIGSEGV in deflate, or corrupt messages); the caller
 * writes the next fragment when the socket takes more, and nothing else goes in between.
 * 1 once the message is all written, 0 while fragments remain, -1 when lws refused it (the
 * connection is closing or its socket failed). */
static int conn_write(struct conn *c, unsigned char *payload, size_t len, size_t *sent,
                      int is_binary, int64_t tag) {
  struct host *h = c->host;
  size_t off = *sent, n = len - off;
  int more = 0;
  if (c->deflate && !len) {
    if (ws_write_empty(c->wsi, is_binary) < 0)
      return -1;
    c->wire_bytes += 2;
  } else {
    if (c->deflate && n > h->deflate_piece) {
      n = h->deflate_piece;
      more = 1;
    }
    int wp = off ? LWS_WRITE_CONTINUATION : is_binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
    if (more)
      wp |= LWS_WRITE_NO_FIN;
    /* lws puts a fragment's header in the LWS_PRE bytes before it: payload of the fragment
     * before, kept intact (a message to a user that never left whole is sent again, ws_closed). */
    unsigned char keep[LWS_PRE];
    if (off)
      memcpy(keep, payload + off - LWS_PRE, LWS_PRE);
    int w = lws_write(c->wsi, payload + off, n, (enum lws_write_protocol)wp);
    if (off)
      memcpy(payload + off - LWS_PRE, keep, LWS_PRE);
    if (w < (int)n)
      return -1;
    /* The server's frame header is 2, 4 or 10 bytes (RFC 6455 5.2; no mask, no extensions). */
    c->wire_bytes += n + (n < 126 ? 2 : n < 65536 ? 4 : 10);
  }
  *sent = off + n;
  h->metrics.ws_out_bytes += n;
  if (more)
    return 0;
  h->metrics.ws_out_messages++;
  if (tag) {
    wire_mark(c, tag);
    h->metrics.outbox_delivered++;
  }
  return 1;
}

/* A frame may go straight to the socket when nothing has to go before it: nothing queued,
 * nothing lws holds from a partial write, the user the connection's bytes may name (a fresh
 * user's greeting) committed (the egress rule, server.c), and no extension that could hold
 * a frame of its own. Otherwise it waits in the queue for SERVER_WRITEABLE, which on the libev
 * loop costs two epoll_ctl per frame (arm and disarm POLLOUT) and a copy into a malloc'ed
 * frame: the direct path is most of echo's gain over the queued one (docs/BENCHMARKS.md). */
static int conn_direct_ok(const struct conn *c) {
  return c->direct_ok && !c->q.count && !c->close_code &&
         store_synced_upto(c->host->store, c->need_seq) && !lws_partial_buffered(c->wsi);
}

static unsigned char *tx_scratch(struct host *h, size_t len) {
  size_t need = LWS_PRE + len + 1;
  if (need > h->tx_scratch_cap) {
    size_t cap = h->tx_scratch_cap ? h->tx_scratch_cap : 1024;
    while (cap < need)
      cap *= 2;
    unsigned char *b = realloc(h->tx_scratch, cap);
    if (!b)
      return NULL;
    h->tx_scratch = b;
    h->tx_scratch_cap = cap;
  }
  return h->tx_scratch + LWS_PRE;
}

/* Asks lws for a writable callback once the connection is upgraded. Before (the connection
 * event runs before the 101, ws_admit), frames only wait in the queue: ws_established asks. */
static void conn_kick(struct conn *c) {
  if (c->upgraded)
    lws_callback_on_writable(c->wsi);
}

/* The send path: every data frame for a client starts here, whatever sent it (a function's
 * send, a push or cloud_send_to_user, a room or broadcast fan-out, an outbox row the drain
 * loaded, a frame rerouted from a closed connection), and conn_write is the one place it
 * reaches lws. tag: 0, SENDQ_TO_USER (a message to the user, rerouted if this connection
 * closes before it left), or an outbox row id (> 0). The limits, in order:
 *  1. close state: nothing more for a connection closing by either side (CLOUD_ECLOSED): lws
 *     answers a peer's close and hangs up without asking us to write again;
 *  2. UTF-8: a text message must be valid (RFC 6455 8.1; the client would close 1007):
 *     CLOUD_EINVAL;
 *  3. size: a message larger than the send queue bound could never be queued: CLOUD_ETOOBIG
 *     (not for an outbox row stored under a larger bound: an empty queue takes it);
 *  4. send queue bytes: a row loads only while the queue is under half its bound (CLOUD_EFULL:
 *     the drain stops and loads more as the socket takes them); any other frame past the
 *     bound closes the connection as a slow reader (CLOUD_EFULL): the host never grows
 *     without bound for one client;
 *  5. order: a frame goes straight to the socket only when nothing waits before it
 *     (conn_direct_ok), else it waits in the queue for SERVER_WRITEABLE;
 *  6. deflate fragment cap, in conn_write. */
static int conn_send(struct conn *c, const void *data, size_t len, int is_binary, long long tag) {
  struct host *h = c->host;
  int row = tag > 0;
  if (c->close_code || c->peer_close_code)
    return CLOUD_ECLOSED;
  if (!is_binary && !(data == h->text_checked && len == h->text_checked_len) &&
      !utf8_valid(data, len))
    return CLOUD_EINVAL;
  if (!row && len > h->cfg.max_send_queue)
    return CLOUD_ETOOBIG;
  if (row && c->q.count && c->q.bytes + len > c->q.max_bytes / 2)
    return CLOUD_EFULL;
  unsigned char *buf;
  /* Rows always queue: the writable callback paces them by the socket. */
  if (!row && conn_direct_ok(c) && (buf = tx_scratch(h, len))) {
    size_t sent = 0;
    if (len)
      memcpy(buf, data, len);
    if (conn_write(c, buf, len, &sent, is_binary, 0) < 0)
      return CLOUD_ECLOSED;
    h->metrics.ws_out_direct++;
    return 0;
  }
  int rc = sendq_push(&c->q, data, len, is_binary);
  if (rc == CLOUD_EFULL && !row) {
    h->metrics.sendq_overflows++;
    log_warn(WS_FUNCTION, c->request_id,
             "closing slow reader: connection %llu of user %s from %s has %zu bytes queued",
             (unsigned long long)c->id, c->user_id, c->remote, c->q.bytes);
    c->close_code = 1008;
    close_reason_set(c, "send queue full");
    /* Its socket is not writable, so no close frame could go out: drop it on the next turn. */
    if (c->upgraded)
      lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    return CLOUD_EFULL;
  }
  if (rc < 0)
    return rc;
  c->q.tail->tag = tag;
  if (!c->upgraded)
    return 0; /* before the 101: ws_established asks for the writable callback */
  if (!store_synced_upto(h->store, c->need_seq)) {
    /* A greeting naming a user not committed yet: ws_commit_pass commits and writes it at the
     * end of this loop pass, without a writable callback (two epoll_ctl) of its own. */
    if (!c->commit_waiting) {
      c->commit_waiting = 1;
      c->commit_next = h->commit_wait;
      h->commit_wait = c;
    }
    return 0;
  }
  lws_callback_on_writable(c->wsi);
  return 0;
}

static void commit_wait_remove(struct host *h, struct conn *c) {
  if (!c->commit_waiting)
    return;
  for (struct conn **pp = &h->commit_wait; *pp; pp = &(*pp)->commit_next)
    if (*pp == c) {
      *pp = c->commit_next;
      break;
    }
  c->commit_waiting = 0;
  c->commit_next = NULL;
}

void ws_commit_pass(struct host *h) {
  /* Every user created in this pass, in one commit: this is what lets a client see its id
   * (the egress rule, server.c). A failure leaves them pending; the writable path retries. */
  int rc = store_sync(h->store);
  if (rc < 0 && rc != -EAGAIN)
    log_error(NULL, NULL, "store commit failed: new users may not survive a crash");
  while (h->commit_wait) {
    struct conn *c = h->commit_wait;
    h->commit_wait = c->commit_next;
    c->commit_waiting = 0;
    c->commit_next = NULL;
    struct sendq_frame *f;
    /* Plain frames only: outbox rows (tags) and closes take the writable path, which keeps
     * their acknowledgements and close frames in order. */
    while (c->direct_ok && !c->close_code && !c->draining &&
           store_synced_upto(h->store, c->need_seq) && !lws_partial_buffered(c->wsi) &&
           (f = sendq_peek(&c->q)) && !f->tag) {
      if (conn_write(c, f->buf + SENDQ_PRE, f->len, &f->sent, f->is_binary, 0) < 1)
        break; /* lws refused it (or, never without deflate, fragments remain) */
      h->metrics.ws_out_direct++;
      sendq_pop(&c->q);
    }
    if (sendq_peek(&c->q) || c->close_code)
      lws_callback_on_writable(c->wsi);
  }
}

int ws_send(struct host *h, cloud_socket s, const void *data, size_t len, int is_binary) {
  struct conn *c = ws_find(h, s);
  if (!c)
    return CLOUD_ECLOSED;
  if (!data && len)
    return CLOUD_EINVAL;
  return conn_send(c, data, len, is_binary, 0);
}

int ws_close(struct host *h, cloud_socket s, int code, const char *reason) {
  struct conn *c = ws_find(h, s);
  if (!c || c->close_code)
    return CLOUD_ECLOSED;
  if (code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 || code == 1015 ||
      (reason && strlen(reason) > 123))
    return CLOUD_EINVAL;
  c->close_code = code;
  close_reason_set(c, reason ? reason : "");
  conn_kick(c);
  /* A peer that never reads would keep a closing connection forever. */
  if (c->upgraded)
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
  return 0;
}

int ws_bind_user(struct host *h, struct conn *c, const char *user_id) {
  if (!c->in_connect_event)
    return CLOUD_ESTATE;
  if (!user_id_valid(user_id))
    return CLOUD_EINVAL;
  if (!strcmp(c->user_id, user_id))
    return 0;
  char *id = strdup(user_id);
  if (!id)
    return CLOUD_ENOMEM;
  user_unlink(h, c);
  /* Nothing is stored yet: ws_admit writes the user (ensured, not created with a token) once
   * the connection event has accepted the connection. The host-assigned one is dropped. */
  c->fresh_user = 0;
  c->bound_user = 1;
  /* The handler's ctx->user_id (and any copy of it the handler took) pointed at the old id:
   * it stays allocated until the connection event returns, and ctx shows the new one, as it
   * did when the id lived in a fixed array rewritten in place. */
  free(c->user_id_prev);
  c->user_id_prev = c->user_id;
  c->user_id = id;
  rooms_socket_rebound(h, c->id, c->user_id); /* rooms it joined before the bind */
  struct invocation *inv = invocation_current(h);
  if (inv && inv->kind == INV_WS && inv->obj == c && inv->ctx)
    ((FunctionContext *)inv->ctx)->user_id = c->user_id; /* ws_open's own ctx */
  user_link(h, c);
  return 0;
}

int ws_user_deliver(struct host *h, const char *user_id, const void *data, size_t len,
                    int is_binary, int64_t row, int *held) {
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  int sent = 0;
  *held = 0;
  /* A connection still draining the outbox must not see this before the older queued
   * messages: it goes into the outbox behind them, and the drain brings it. */
  if (u)
    for (struct conn *c = u->head; c; c = c->user_next) {
      if (row > 0 && c->drain_after >= row && !c->close_code)
        sent++; /* its drain brought the row already */
      else if (c->draining && !c->close_code)
        (*held)++;
      else if (conn_send(c, data, len, is_binary, SENDQ_TO_USER) == 0)
        sent++; /* queued, it is not lost if the connection closes first (ws_closed) */
    }
  return sent;
}

int ws_send_to_user(struct host *h, const char *user_id, const void *data, size_t len,
                    int is_binary) {
  /* conn_send's limits, before a message is stored for later: the outbox never holds one
   * that could not be sent. */
  if (!user_id_valid(user_id) || (!data && len) || (!is_binary && !utf8_valid(data, len)))
    return CLOUD_EINVAL;
  if (len > h->cfg.max_send_queue)
    return CLOUD_ETOOBIG;
  if (h->cluster) /* other nodes, and the outbox in Redis */
    return cluster_send_to_user(h, user_id, data, len, is_binary);
  int held;
  const void *checked = h->text_checked;
  size_t checked_len = h->text_checked_len;
  if (!is_binary)
    h->text_checked = data, h->text_checked_len = len; /* checked above */
  int sent = ws_user_deliver(h, user_id, data, len, is_binary, 0, &held);
  h->text_checked = checked, h->text_checked_len = checked_len;
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  if (sent && !held)
    return sent;
  int rc = store_outbox_push(h->store, user_id, data, len, is_binary);
  if (rc < 0)
    return sent ? sent : rc;
  if (held)
    for (struct conn *c = u->head; c; c = c->user_next)
      if (c->draining)
        conn_kick(c);
  return sent + held;
}

void ws_close_all(struct host *h, int code, const char *reason) {
  for (size_t i = 0; i < h->conns.nbuckets; i++)
    for (struct map_entry *e = h->conns.buckets[i]; e; e = e->next) {
      struct conn *c = e->value;
      if (!c->close_code) {
        c->close_code = code;
        close_reason_set(c, reason);
        conn_kick(c);
      }
    }
}

int ws_user_close(struct host *h, const char *user_id, int code, const char *reason) {
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  int n = 0;
  for (struct conn *c = u ? u->head : NULL; c; c = c->user_next)
    if (ws_close(h, (cloud_socket){c->id}, code, reason) == 0)
      n++;
  return n;
}

/* The outbox drain. Rows are loaded only while the send queue has room (half of it, so live
 * frames of other kinds still fit), a batch at a time, again from the writable callback as
 * the socket takes them: a backlog larger than the queue is paced, never a reason to close
 * the reader. */
#define DRAIN_BATCH 64
#define DRAIN_IN_FLIGHT_MAX 4096

struct drain_fill_state {
  struct conn *c;
  int full;
};

/* One outbox row for c, through the send path like every other frame. */
static int drain_take(void *arg, int64_t id, const void *data, size_t len, int is_binary) {
  struct drain_fill_state *d = arg;
  struct conn *c = d->c;
  int rc = conn_send(c, data, len, is_binary, id);
  if (rc == CLOUD_EINVAL) {
    /* Text that is not UTF-8 (stored before the send path checked it): no client may be
     * sent it. Acknowledged with the rows around it, so it does not stop the drain. */
    log_warn(WS_FUNCTION, c->request_id,
             "outbox message %lld of user %s dropped: its text is not valid UTF-8", (long long)id,
             c->user_id);
    wire_mark(c, id);
    c->drain_after = id;
    return 0;
  }
  if (rc < 0) { /* the queue is full enough (or the connection closing): load more later */
    d->full = 1;
    return 1;
  }
  c->drain_after = id;
  return 0;
}

static void drain_loaded(struct conn *c, int n, int full);

static void drain_fill(struct conn *c) {
  struct host *h = c->host;
  /* Frames written but not yet acknowledged are bounded too (small messages, a big kernel
   * buffer): the timer that confirms them calls again. */
  if (!c->draining || c->close_code || c->nmarks >= DRAIN_IN_FLIGHT_MAX)
    return;
  if (h->cluster) { /* the outbox is in Redis; rows come to ws_drain_rows */
    cluster_outbox_load(h, c->id, c->user_id, c->drain_after, DRAIN_BATCH);
    return;
  }
  struct drain_fill_state d = {c, 0};
  int n = store_outbox_load(h->store, c->user_id, c->drain_after, DRAIN_BATCH, drain_take, &d);
  drain_loaded(c, n, d.full);
}

/* What a load step found: n rows (< 0: the store could not say), the queue full or not. */
static void drain_loaded(struct conn *c, int n, int full) {
  if (n < 0) {
    /* The store cannot read now: try again shortly rather than end the drain. */
    lws_set_timer_usecs(c->wsi, 100 * LWS_US_PER_MS);
    return;
  }
  if (n > 0)
    lws_callback_on_writable(c->wsi);
  else if (!full && !(c->host->cluster && cluster_outbox_pending(c->host, c->user_id)))
    c->draining = 0; /* nothing after drain_after: live sends go straight to the socket */
}

void ws_drain_rows(struct host *h, uint64_t conn_id, const struct cluster_row *rows, int n) {
  struct conn *c = ws_find(h, (cloud_socket){conn_id});
  if (!c || !c->draining || c->close_code)
    return;
  if (n == CLUSTER_ROWS_UNAVAILABLE) {
    c->draining = 0; /* Redis is down: serve live sends; ws_drain_restart when it is back */
    return;
  }
  struct drain_fill_state d = {c, 0};
  int took = 0;
  for (int i = 0; i < n; i++) {
    if (rows[i].id <= c->drain_after)
      continue; /* loaded before */
    if (drain_take(&d, rows[i].id, rows[i].data, rows[i].len, rows[i].is_binary))
      break;
    took++;
  }
  drain_loaded(c, n < 0 ? -1 : took, d.full);
}

void ws_drain_restart(struct host *h, uint64_t conn_id) {
  struct conn *c = ws_find(h, (cloud_socket){conn_id});
  if (c && !c->close_code && !c->draining) {
    c->draining = 1;
    drain_fill(c);
  }
}

void ws_drain_kick(struct host *h, const char *user_id) {
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  for (struct conn *c = u ? u->head : NULL; c; c = c->user_next)
    if (c->draining)
      drain_fill(c);
}

/* A row counts as delivered once the peer's TCP acknowledged the bytes of its frame, not when
 * lws_write returned: what sits in our kernel's send queue is lost if the peer drops, and
 * the row must then stay for the next connection. SIOCOUTQ says how many written bytes the
 * peer has not acknowledged yet; lws's own buffer (a partial write) holds at most part of
 * the last frame. Over TLS the byte counts differ: there a whole lws_write is the mark. */
static void wire_confirm(struct conn *c, int closing) {
  if (!c->nmarks)
    return;
  /* When the peer closed cleanly, lws echoed its close frame after all our data and shut the
   * socket down: that frame (2 bytes of header, the payload) and the FIN (one sequence
   * number, counted by SIOCOUTQ) may still be unacknowledged, and are not ours. Any other
   * close: every unacknowledged byte counts as ours. */
  uint64_t slack = 0;
  if (closing && c->peer_close_code && c->peer_close_code != 1006)
    slack =
        2 + (c->peer_close_code == 1005 ? 0 : 2 + strlen(str_or_empty(c->peer_close_reason))) + 1;
  uint64_t delivered = c->wire_bytes;
  int outq = 0, fd = lws_get_socket_fd(c->wsi);
  if (!lws_is_ssl(c->wsi)) {
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &outq) < 0)
      return;
    if (lws_partial_buffered(c->wsi))
      delivered = c->nmarks > 1 ? c->marks[c->nmarks - 2].end : 0;
    uint64_t ours = (uint64_t)outq > slack ? (uint64_t)outq - slack : 0;
    delivered = delivered > ours ? delivered - ours : 0;
    /* Compressed frames (permessage-deflate) are shorter on the wire than we count: only an
     * empty send queue says every frame arrived. Until then nothing is acknowledged (a row may
     * come twice, never not at all). */
    if (c->deflate && (ours || lws_partial_buffered(c->wsi)))
      delivered = 0;
  }
  size_t i = 0;
  while (i < c->nmarks && c->marks[i].end <= delivered)
    c->drain_acked = c->marks[i++].row;
  if (i) {
    memmove(c->marks, c->marks + i, (c->nmarks - i) * sizeof *c->marks);
    c->nmarks -= i;
  }
}

/* The frame of outbox row `row` was handed to lws_write whole. */
static void wire_mark(struct conn *c, int64_t row) {
  if (c->nmarks == c->marks_cap) {
    size_t cap = c->marks_cap ? c->marks_cap * 2 : 64;
    struct wire_mark *m = realloc(c->marks, cap * sizeof *m);
    if (!m)
      return; /* not acknowledged: delivered again next time, never lost */
    c->marks = m;
    c->marks_cap = cap;
  }
  c->marks[c->nmarks++] = (struct wire_mark){row, c->wire_bytes};
}

/* Rows whose frames arrived go, batched with the store's other writes (and retried by the
 * store while its database is locked). */
static void drain_ack(struct conn *c, int closing) {
  wire_confirm(c, closing);
  if (c->drain_acked > c->drain_deleted &&
      c->host->cluster) { /* pop the acknowledged rows from Redis */
    cluster_outbox_ack(c->host, c->user_id, c->drain_acked);
    c->drain_deleted = c->drain_acked;
  } else if (c->drain_acked > c->drain_deleted &&
             store_outbox_ack(c->host->store, c->user_id, c->drain_acked) >= 0)
    c->drain_deleted = c->drain_acked;
}

/* The URI argument `name` ("user_id=") decoded into buf; 0 if absent. */
static int query_arg(struct lws *wsi, const char *name, char *buf, size_t len) {
  char tmp[STORE_ID_MAX + 64];
  const char *v = lws_get_urlarg_by_name(wsi, name, tmp, (int)sizeof tmp);
  if (!v || strlen(v) >= len)
    return 0;
  memmove(buf, v, strlen(v) + 1);
  return 1;
}

/* The offered subprotocols (Sec-WebSocket-Protocol) as the client sent them, "" if none. lws
 * joins repeated headers with ", ". 0, or -1 when longer than lws 4.1 handles (it would drop
 * the connection: lws_process_ws_upgrade copies the list into 128 bytes). */
static int offered_protocols(struct lws *wsi, char *buf, size_t len) {
  buf[0] = 0;
  int n = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
  if (n <= 0)
    return 0;
  if (n >= (int)len || n > 120 || lws_hdr_copy(wsi, buf, (int)len, WSI_TOKEN_PROTOCOL) < 0)
    return -1;
  for (const char *p = buf; *p;) { /* lws_tokenize_cstr takes names of 63 bytes at most */
    size_t t = strcspn(p, ", \t");
    if (t > 63)
      return -1;
    p += t + strspn(p + t, ", \t");
  }
  return 0;
}

/* Frees what a connection owns. */
static void conn_free(struct conn *c) {
  sendq_clear(&c->q);
  msgbuf_free(&c->rx);
  free(c->marks);
  json_decref(c->claims);
  free(c->protocol);
  free(c->user_id);
  free(c->user_id_prev);
  free(c->remote);
  free(c->close_reason);
  free(c->peer_close_reason);
  free(c);
}

/* Drops a connection lws never completed: out of the maps, its user and its rooms, freed. */
static void conn_drop(struct host *h, struct conn *c) {
  map_del(&h->conns, &c->id, sizeof c->id);
  h->nconns--;
  user_unlink(h, c);
  rooms_leave_all(h, c->id);
  conn_free(c);
}

int ws_admit_refused(struct host *h, struct lws *wsi, int code, const char *reason) {
  char offered[128];
  if (offered_protocols(wsi, offered, sizeof offered) < 0)
    return http_reject(wsi, 400, "Sec-WebSocket-Protocol list too long");
  struct conn *c = calloc(1, sizeof *c);
  if (!c)
    return -1;
  c->host = h;
  c->wsi = wsi;
  c->door_close = c->close_code = code;
  size_t n = strlen(reason);
  str_set(&c->close_reason, reason, n < 123 ? n : 123); /* a close frame's reason */
  if (offered[0]) /* lws drops an upgrade whose subprotocols it cannot bind */
    ws_protocol_prepare(h, c, offered);
  lws_set_opaque_user_data(wsi, c);
  return 0;
}

int ws_admit(struct host *h, struct lws *wsi, const struct ws_upgrade *u) {
  json_t *claims = u->claims;
  char offered[128];
  if (offered_protocols(wsi, offered, sizeof offered) < 0) {
    json_decref(claims);
    return http_reject(wsi, 400, "Sec-WebSocket-Protocol list too long");
  }
  struct conn *c = calloc(1, sizeof *c);
  if (!c) {
    json_decref(claims);
    return -1;
  }
  c->id = ++h->next_conn_id;
  c->opened_ms = host_now_ms();
  snprintf(c->request_id, sizeof c->request_id, "%s", u->request_id);
  c->host = h;
  c->wsi = wsi;
  c->claims = claims;
  sendq_init(&c->q, h->cfg.max_send_queue);
  msgbuf_init(&c->rx, h->cfg.max_message);
  str_set(&c->remote, u->remote, strlen(u->remote)); /* no second getpeername */
  if (!c->remote || map_set(&h->conns, &c->id, sizeof c->id, c) < 0) {
    free(c->remote);
    json_decref(claims);
    free(c);
    return -1;
  }
  h->nconns++;

  /* Identity: a JWT's sub (checked in http_admit_upgrade), a resume with the right token, or a
   * fresh user. Nothing is written until the connection event has accepted the connection:
   * a rejected upgrade leaves no user row. lws_get_urlarg_by_name wants "name=". */
  char want_id[STORE_ID_MAX + 2] = "", token[STORE_TOKEN_LEN + 8] = "";
  char fresh_token[STORE_TOKEN_LEN + 1] = "";
  uint8_t fresh_hash[32];
  int resumed = 0;
  const char *sub = json_string_value(json_object_get(c->claims, "sub"));
  if (sub) {
    str_set(&c->user_id, sub, strlen(sub)); /* a valid id: http_admit_upgrade checked */
    c->bound_user = 1;
    resumed = 1;
  } else if (query_arg(wsi, "user_id=", want_id, sizeof want_id) &&
             query_arg(wsi, "token=", token, sizeof token)) {
    int ok = user_id_valid(want_id) ? store_user_check(h->store, want_id, token) : 0;
    if (ok == 1) {
      str_set(&c->user_id, want_id, strlen(want_id));
      resumed = 1;
    } else
      log_warn(WS_FUNCTION, c->request_id,
               "resume as %.64s from %s refused: %s; assigning a new user", want_id, c->remote,
               ok < 0 ? "store error" : "unknown user or wrong token");
  }
  char fresh_id[STORE_ID_LEN + 1];
  if (!resumed) {
    if (store_user_new(fresh_id, fresh_token, fresh_hash) < 0) {
      log_error(WS_FUNCTION, c->request_id, "cannot make a user id for %s", c->remote);
      conn_drop(h, c);
      return -1;
    }
    str_set(&c->user_id, fresh_id, strlen(fresh_id));
  }
  if (!c->user_id) {
    log_error(WS_FUNCTION, c->request_id, "out of memory for connection from %s", c->remote);
    conn_drop(h, c);
    return -1;
  }
  c->fresh_user = !resumed;
  user_link(h, c);

  FunctionContext ctx = {0};
  ctx.headers = u->headers_in_ctx ? u->headers : NULL;
  ctx.query = u->query;
  ctx.url = u->url;
  c->upgrade = u; /* cloud_request_header reads its headers during the event */
  ctx.user_token = resumed ? NULL : fresh_token;
  ctx.protocols = offered[0] ? offered : NULL;
  c->in_connect_event = 1;
  c->established = 1; /* the connection event runs: a close event is due from here on */
  ws_event(c, "WebSocket:connection", &ctx);
  c->in_connect_event = 0;
  c->upgrade = NULL;
  free(c->user_id_prev); /* replaced by cloud_bind_user during the event */
  c->user_id_prev = NULL;
  memset(token, 0, sizeof token);

  if (c->reject_status) {
    int status = c->reject_status;
    char body[200];
    log_info(WS_FUNCTION, c->request_id, "upgrade from %s rejected by the function: %d %s",
             c->remote, status, str_or_empty(c->close_reason));
    json_t *o = json_pack("{ss ss}", "error",
                          c->close_reason && c->close_reason[0] ? c->close_reason : "Rejected",
                          "requestId", c->request_id);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    snprintf(body, sizeof body, "%s", text ? text : "{\"error\":\"Rejected\"}");
    free(text);
    json_decref(o);
    metrics_upgrade_refused(&h->metrics, status, "rejected");
    c->established = 0; /* never connected: no close event */
    explicit_bzero(fresh_hash, sizeof fresh_hash);
    explicit_bzero(fresh_token, sizeof fresh_token);
    if (status == 401 || status == 403) { /* a browser reads a close code, not a status */
      char reason[124];
      snprintf(reason, sizeof reason, "%s",
               c->close_reason && c->close_reason[0] ? c->close_reason
               : status == 401                       ? "Unauthorized"
                                                     : "Forbidden");
      conn_drop(h, c);
      return ws_admit_refused(h, wsi, 4000 + status, reason);
    }
    conn_drop(h, c);
    return http_answer(wsi, status, "application/json", body, strlen(body));
  }
  /* Accepted: the user exists from now on (a fresh one is committed before its greeting
   * leaves, egress_ready), then the connection row. */
  int rc = 0;
  int64_t row = 0;
  if (c->fresh_user) { /* the user row and its connection row: one write */
    row = store_user_conn_open(h->store, c->user_id, fresh_hash, c->remote);
    rc = row < 0 ? (int)row : 0;
  } else if (c->bound_user)
    rc = store_user_ensure(h->store, c->user_id);
  explicit_bzero(fresh_hash, sizeof fresh_hash);
  if (rc >= 0 && h->cluster) /* every node can check its token (or knows the id) */
    cluster_user_created(h, c->user_id, c->fresh_user ? fresh_token : NULL);
  explicit_bzero(fresh_token, sizeof fresh_token);
  if (rc < 0) {
    log_error(WS_FUNCTION, c->request_id, "cannot store user %s for %s (%d): 503", c->user_id,
              c->remote, rc);
    c->established = 0;
    conn_drop(h, c);
    return http_reject(wsi, 503, "storage unavailable");
  }
  /* Its frames (the greeting first: it carries the token) leave once this user is stored. */
  c->need_seq = c->fresh_user ? store_user_seq(h->store) : 0;
  h->stats.ws_opened++;
  if (!c->fresh_user)
    row = store_conn_open(h->store, c->user_id, c->remote);
  c->row = row > 0 ? row : 0;
  /* Its user is final now: the socket joins the rooms the user holds (cloud_user_join). */
  rooms_socket_ready(h, c);
  if (offered[0])
    ws_protocol_prepare(h, c, offered);
  /* lws frees the per-session memory when it binds the WebSocket protocol; the opaque
   * pointer it keeps: ws_established finds the connection there. */
  lws_set_opaque_user_data(wsi, c);
  return 0;
}

/* A negotiated permessage-deflate compresses every frame we send, the greeting first, with a
 * zlib stream kept for the connection's life: at lws's defaults (15-bit window, memLevel 8)
 * that is ~270 KB per connection. Any window is valid for the sender (the peer's inflater
 * takes distances up to its own, larger, window), so ours is 9 bits and memLevel 1: ~9 KB.
 * lws 4.1 picks the sender's window from the "client" argument on a vhost that does not
 * listen itself (pm_deflate.c: args[SERVER + (listen_port <= 0)]), which ours does not (the
 * supervisor's socket is adopted); the "server" one also sizes lws's inflater, so it stays. */
static int deflate_narrow(struct host *h, struct lws *wsi) {
  if (!h->cfg.deflate)
    return 0;
  /* memLevel 1 also bounds what zlib holds between a message's fragments (lws_alloc.h). */
  int rc = lws_set_extension_option(wsi, "permessage-deflate", "mem_level", "1");
  /* Each message we send gets a fresh compressor, ended after its last frame (pm_deflate.c
   * PACKET_TX_PRESEND: deflateEnd on FIN when this argument is set; only our sending side
   * reads it), so an idle connection holds no zlib state: ~9 KB each at the settings above
   * (docs/BENCHMARKS.md). A sender may always drop its history (RFC 7692 7.1.1.1): the
   * peer's inflater is unaffected, and this changes nothing in the negotiated response. */
  lws_set_extension_option(wsi, "permessage-deflate", "client_no_context_takeover", "1");
  /* The output buffer one lws_write compresses into whole (conn_write writes fragments of
   * h->deflate_piece bytes): the one all connections share (lws_alloc.c), or its own. */
  char v[8];
  snprintf(v, sizeof v, "%d", lws_alloc_deflate_tx_pwr2());
  if (rc < 0 || lws_set_extension_option(wsi, "permessage-deflate", "tx_buf_size", v) < 0)
    return -1;
  if (lws_get_vhost_listen_port(h->vhost) <= 0)
    lws_set_extension_option(wsi, "permessage-deflate", "client_max_window_bits", "9");
  return 0;
}

int ws_confirm_extension(struct host *h, struct lws *wsi, const char *name) {
  struct conn *c = lws_get_opaque_user_data(wsi);
  if (!h->cfg.deflate || !c || strcmp(name, "permessage-deflate"))
    return 1;
  /* Over TLS the host cannot put an empty frame on the wire itself (ws_write_empty). */
  if (lws_is_ssl(wsi))
    return 1;
  c->deflate = 1;
  return 0;
}

/* LWS_CALLBACK_ESTABLISHED: the 101 is out. What the connection event queued goes now. */
static int ws_established(struct host *h, struct lws *wsi, struct session *s) {
  struct conn *c = lws_get_opaque_user_data(wsi);
  lws_set_opaque_user_data(wsi, NULL);
  if (!c)
    return -1;
  s->conn = c;
  c->upgraded = 1;
  if (c->door_close) { /* the close frame goes from SERVER_WRITEABLE (ws_writeable) */
    lws_callback_on_writable(wsi);
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
    return 0;
  }
  /* From here frames may skip the queue (conn_send), but not with permessage-deflate: lws may
   * then have to finish a compressed frame in SERVER_WRITEABLE. */
  c->direct_ok = !c->deflate;
  if (c->deflate && deflate_narrow(h, wsi) < 0 && !c->close_code) {
    /* Without those settings a fragment's compressed bytes may not fit lws's output buffer. */
    log_error(WS_FUNCTION, c->request_id, "lws refused the compressor settings: closing 1011");
    c->close_code = 1011;
    close_reason_set(c, "compressor unavailable");
  }
  log_debug(WS_FUNCTION, c->request_id, "connection %llu of user %s from %s opened%s",
            (unsigned long long)c->id, c->user_id, c->remote, c->fresh_user ? "" : " (resumed)");
  if (c->close_code == 1008) /* the connection event overflowed its own queue */
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
  else if (c->close_code)
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
  /* Messages queued while the user was away go out right after the greeting, in order,
   * paced by the socket (drain_fill). */
  /* In a cluster the outbox is in Redis: the drain asks it. */
  /* A fresh user has nothing queued: nobody knew its id before this connection, which has
   * been its live socket since ws_admit (user_link), so sends to it never reached the outbox. */
  int n = c->close_code   ? 0
          : h->cluster    ? -1
          : c->fresh_user ? 0
                          : store_outbox_count(h->store, c->user_id);
  if (n != 0) { /* < 0: the store could not say; the drain finds out (and retries) */
    if (n > 0)
      log_info(WS_FUNCTION, c->request_id, "delivering %d queued messages to user %s", n,
               c->user_id);
    c->draining = 1;
    drain_fill(c);
  }
  /* What the connection event queued (the greeting) goes out at the end of this loop pass,
   * written directly after the pass's one commit (ws_commit_pass), without a writable
   * callback of its own; with deflate, a drain or a close it takes the writable path. */
  if (c->direct_ok && !c->close_code && !c->draining && c->q.count && !c->commit_waiting) {
    c->commit_waiting = 1;
    c->commit_next = h->commit_wait;
    h->commit_wait = c;
  } else
    conn_kick(c);
  return 0;
}

void ws_upgrade_abandoned(struct host *h, struct lws *wsi) {
  struct conn *c = lws_get_opaque_user_data(wsi);
  if (!c)
    return;
  lws_set_opaque_user_data(wsi, NULL);
  if (c->door_close) {
    conn_free(c);
    return;
  }
  /* Admitted, then lws failed the handshake: the function saw a connection, so it sees it
   * close (1006). */
  FunctionContext ctx = {0};
  ctx.params.code = 1006;
  ctx.params.reason = "";
  ws_event(c, "WebSocket:close", &ctx);
  if (c->row)
    store_conn_close(h->store, c->row, c->user_id);
  h->stats.ws_closed++;
  conn_drop(h, c);
}

static void ws_closed(struct host *h, struct session *s) {
  struct conn *c = s->conn;
  if (!c)
    return;
  s->conn = NULL;
  /* Gone from the map first: from here on every handle to it answers CLOUD_ECLOSED. */
  map_del(&h->conns, &c->id, sizeof c->id);
  c->gone = 1;
  commit_wait_remove(h, c);
  h->nconns--;
  h->stats.ws_closed++;
  /* The code and reason the plugin gets are the ones the log line shows. */
  int code = c->peer_close_code ? c->peer_close_code : c->close_code ? c->close_code : 1006;
  const char *reason = str_or_empty(c->peer_close_code ? c->peer_close_reason : c->close_reason);
  /* A closing connection is no longer live for cloud_send_to_user: what its close handler
   * sends to its own user is queued, not put into a queue about to be freed. */
  user_unlink(h, c);
  drain_ack(c, 1);
  /* Frames for its user that never left (the peer closed first, or dropped) go to the user's
   * other connections or the outbox, in their order: a push answered "delivered" is not lost
   * with the connection. Before the close event, so they stay ahead of what it sends. */
  int rerouted = 0;
  for (struct sendq_frame *f = sendq_peek(&c->q); f; f = f->next)
    if (f->tag == SENDQ_TO_USER &&
        ws_send_to_user(h, c->user_id, f->buf + SENDQ_PRE, f->len, f->is_binary) >= 0)
      rerouted++;
  if (rerouted)
    log_debug(WS_FUNCTION, c->request_id, "%d unsent messages of user %s requeued", rerouted,
              c->user_id);
  if (c->established) {
    FunctionContext ctx = {0};
    ctx.params.code = code;
    ctx.params.reason = reason;
    ws_event(c, "WebSocket:close", &ctx);
  }
  /* After the close event, so its handler could still name the rooms (cloud_socket_rooms). */
  rooms_leave_all(h, c->id);
  /* Counted by code; the line per connection is debug (at info it cost ~4 us of each
   * connection's ~75 under churn, and grew the log by a line per connection). */
  metrics_ws_close(&h->metrics, code);
  log_debug(WS_FUNCTION, c->request_id,
            "connection %llu of user %s from %s closed (%d%s%.123s) after %lld ms",
            (unsigned long long)c->id, str_or_empty(c->user_id), c->remote, code,
            *reason ? " " : "", reason, (long long)(host_now_ms() - c->opened_ms));
  if (c->row)
    store_conn_close(h->store, c->row, c->user_id);
  conn_free(c);
}

/* A protocol error of the client's: tell the plugin, then close with code. */
static int ws_fail(struct conn *c, struct lws *wsi, int code, const char *why) {
  FunctionContext ctx = {0};
  ctx.params.error = why;
  c->close_code = code;
  close_reason_set(c, why);
  ws_event(c, "WebSocket:error", &ctx);
  log_warn(WS_FUNCTION, c->request_id, "closing connection %llu of user %s with %d: %s",
           (unsigned long long)c->id, c->user_id, code, why);
  /* Not -1 here: lws would send the close frame and hang up at once, while the peer may
   * still be sending the rest of its message; those unread bytes make the kernel answer with
   * a reset, and the peer loses the close frame (it saw 1006, not 1009). Closing from
   * SERVER_WRITEABLE instead takes lws's polite path: close frame, then frames read and
   * dropped until the peer's close (or 5 s). */
  lws_callback_on_writable(wsi);
  lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
  return 0;
}

/* lws 4.1 finds some protocol errors itself (a control frame over 125 bytes, ops-ws.c
 * illegal_ctl_length; a close frame it cannot echo) and hangs up without a close frame. It
 * tells us only through this, the last callback before its close path
 * (close.c: protocol_unbind_cb, then close_via_role_protocol, which sends a close frame when
 * a reason has been set). A close neither side asked for, on a socket that is still open and
 * just carried data, is one of those: give it 1002. An idle connection lws hangs up (no pong)
 * or one the peer closed keeps its plain end. */
static void ws_lws_refused(struct lws *wsi, struct conn *c) {
  struct peer_state ps;
  if (c->close_code || c->peer_close_code || peer_probe(wsi, &ps) < 0 || !ps.open ||
      ps.idle_ms > 1000)
    return;
  c->close_code = 1002;
  c->close_sent = 1;
  close_reason_set(c, "protocol error");
  log_warn(WS_FUNCTION, NULL, "closing connection %llu of user %s with 1002: lws refused a frame",
           (unsigned long long)c->id, c->user_id);
  lws_close_reason(wsi, 1002, (unsigned char *)"protocol error", 14);
  /* lws reads a WebSocket in pieces of its receive buffer (--ws-rx-buffer): the rest of the
   * refused frame may still wait on the socket. */
  peer_discard_input(wsi, 1 << 20);
}

int ws_refuse(struct lws *wsi, int code, const char *why) {
  struct session *s = lws_wsi_user(wsi);
  struct conn *c = s ? s->conn : NULL;
  if (!c || c->close_code)
    return CLOUD_ECLOSED;
  ws_fail(c, wsi, code, why);
  return 0;
}

static int ws_receive(struct host *h, struct lws *wsi, struct conn *c, void *in, size_t len) {
  h->metrics.ws_in_pieces++;
  if (c->close_code)
    return 0; /* closing: what still arrives is not delivered */
  /* A frame that announces more than the limit is refused on its first bytes, not after a
   * megabyte of them has been buffered. */
  size_t rest = lws_remaining_packet_payload(wsi);
  if (rest > c->rx.max || (c->rx.busy ? c->rx.len : 0) + len > c->rx.max - rest)
    return ws_fail(c, wsi, 1009, "message too big");
  switch (msgbuf_add(&c->rx, in, len, lws_is_final_fragment(wsi), lws_frame_is_binary(wsi))) {
  case MSGBUF_MORE:
    return 0;
  case MSGBUF_TOOBIG:
    return ws_fail(c, wsi, 1009, "message too big");
  case MSGBUF_BADUTF8:
    return ws_fail(c, wsi, 1007, "invalid UTF-8 in text message");
  case MSGBUF_NOMEM:
    return ws_fail(c, wsi, 1011, "out of memory");
  case MSGBUF_DONE:
    break;
  }
  h->stats.ws_messages++;
  h->metrics.ws_in_messages++, h->metrics.ws_in_bytes += c->rx.len;
  FunctionContext ctx = {0};
  ctx.params.data = c->rx.data;
  ctx.params.len = c->rx.len;
  ctx.params.is_binary = c->rx.is_binary;
  /* An echo sends the bytes msgbuf checked: conn_send need not read them again. */
  const void *checked = h->text_checked;
  size_t checked_len = h->text_checked_len;
  if (!c->rx.is_binary)
    h->text_checked = c->rx.data, h->text_checked_len = c->rx.len;
  ws_event(c, "WebSocket:message", &ctx);
  h->text_checked = checked, h->text_checked_len = checked_len;
  /* The handler may have closed the connection; c stays valid until LWS_CALLBACK_CLOSED. */
  msgbuf_reset(&c->rx);
  return 0;
}

static int ws_writeable(struct lws *wsi, struct conn *c) {
  struct sendq_frame *f;
  int wrote = 0;
  /* store_sync ran before this callback (server.c): new users are committed. */
  while ((f = sendq_peek(&c->q))) {
    int done =
        conn_write(c, f->buf + SENDQ_PRE, f->len, &f->sent, f->is_binary, f->tag > 0 ? f->tag : 0);
    if (done < 0) {
      drain_ack(c, 0);
      return -1;
    }
    if (done) /* else a fragment of it went: the rest when the socket takes more */
      sendq_pop(&c->q);
    wrote = 1;
    /* lws_send_pipe_choked costs a poll(2): ask only when there is more to write. */
    if (sendq_peek(&c->q) && lws_send_pipe_choked(wsi))
      break;
  }
  drain_ack(c, 0);
  if (c->draining && c->q.bytes < c->q.max_bytes / 2)
    drain_fill(c);
  if (c->nmarks) /* bytes in flight: look again when the peer may have taken them */
    lws_set_timer_usecs(wsi, 20 * LWS_US_PER_MS);
  /* The close frame waits for a callback of its own: the last frame may still sit in lws's
   * buffer, and closing now would drop it and the close frame with it. */
  if (sendq_peek(&c->q) || (wrote && c->close_code)) {
    lws_callback_on_writable(wsi);
    return 0;
  }
  if (c->close_code) {
    /* Once: lws then sends the close frame and waits for the peer's (reading and dropping
     * frames meanwhile). A second -1 while it waits would hang up at once, with the peer's
     * unread frames turning into a reset that loses the close frame. */
    if (c->close_sent)
      return 0;
    c->close_sent = 1;
    const char *reason = str_or_empty(c->close_reason);
    lws_close_reason(wsi, c->close_code, (unsigned char *)reason, strlen(reason));
    return -1;
  }
  return 0;
}

/* Subprotocols on lws 4.1. lws binds an upgrade to the first offered name that is one of the
 * vhost's protocols and drops the connection when none is (server-ws.c,
 * lws_process_ws_upgrade: "No supported protocol"); the 101 then names that protocol. The
 * function chooses instead: our "slot" protocol (WS_SLOT_PROTOCOL, same callback as "wshost")
 * is renamed, just before lws looks (we are inside CONFIRM_UPGRADE, which lws follows
 * synchronously with the upgrade), to the name the function accepted, or to the first one
 * offered when it accepted none, so lws binds the slot. At
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION, just before lws writes the 101 (handshake_0405),
 * the slot is renamed to the accepted name, or to "", which lws leaves out of the 101 (RFC
 * 6455 4.2.2 lets the server pick none; the client decides whether to stay). The name is
 * set anew for every upgrade, so a failed one cannot leave it wrong for the next. */
static void ws_protocol_prepare(struct host *h, struct conn *c, const char *offered) {
  struct lws_protocols *slot = h->proto_slot;
  if (!slot)
    return;
  if (c->protocol)
    snprintf(h->slot_name, sizeof h->slot_name, "%s", c->protocol);
  else {
    size_t n = strcspn(offered, ", \t");
    snprintf(h->slot_name, sizeof h->slot_name, "%.*s", (int)n, offered);
  }
  slot->name = h->slot_name;
}

void ws_protocol_filter(struct host *h, struct lws *wsi) {
  struct conn *c = lws_get_opaque_user_data(wsi);
  if (h->proto_slot && lws_get_protocol(wsi) == h->proto_slot)
    h->proto_slot->name = c && c->protocol ? h->slot_name : "";
}

int ws_accept_protocol(struct conn *c, const char *name) {
  if (!c->in_connect_event)
    return CLOUD_ESTATE;
  char offered[128];
  if (!name || offered_protocols(c->wsi, offered, sizeof offered) < 0)
    return CLOUD_EINVAL;
  size_t n = strlen(name);
  for (char *t = strtok(offered, ", \t"); t; t = strtok(NULL, ", \t"))
    if (strlen(t) == n && !memcmp(t, name, n)) {
      char *copy = strdup(name);
      if (!copy)
        return CLOUD_ENOMEM;
      free(c->protocol);
      c->protocol = copy;
      return 0;
    }
  return CLOUD_EINVAL; /* RFC 6455 4.2.2: only one the client offered */
}

int ws_reject(struct conn *c, int status, const char *reason) {
  if (!c->in_connect_event)
    return CLOUD_ESTATE;
  if (status < 400 || status > 599 || (reason && strlen(reason) > 123))
    return CLOUD_EINVAL;
  c->reject_status = status;
  close_reason_set(c, reason ? reason : "");
  return 0;
}

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, struct session *s, void *in,
                size_t len) {
  struct host *h = lws_context_user(lws_get_context(wsi));
  struct conn *c = s ? s->conn : NULL;
  if (c && c->door_close) { /* refused at the door: only its close frame, then freed */
    if (reason == LWS_CALLBACK_SERVER_WRITEABLE)
      return ws_writeable(wsi, c);
    if (reason == LWS_CALLBACK_CLOSED) {
      s->conn = NULL;
      conn_free(c);
    }
    return 0;
  }
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    return ws_established(h, wsi, s);
  case LWS_CALLBACK_RECEIVE:
    return c ? ws_receive(h, wsi, c, in, len) : -1;
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return c ? ws_writeable(wsi, c) : 0;
  case LWS_CALLBACK_TIMER: /* in-flight outbox frames to confirm, or a drain step to retry */
    if (c) {
      drain_ack(c, 0);
      if (c->nmarks)
        lws_set_timer_usecs(wsi, 20 * LWS_US_PER_MS);
      drain_fill(c);
    }
    return 0;
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (c && len >= 2) {
      unsigned char *p = in;
      c->peer_close_code = p[0] << 8 | p[1];
      /* lws 4.1 turns the codes it knows to be invalid into 1002 but passes 5000 and up, and
       * does not check the reason: answer those as RFC 6455 7.4 and 8.1 ask, in the frame lws
       * echoes, so the plugin never sees an invalid code or a reason that is not UTF-8. */
      if (c->peer_close_code > 4999)
        c->peer_close_code = 1002;
      else if (!utf8_valid(p + 2, len - 2))
        c->peer_close_code = 1007;
      if (c->peer_close_code != (p[0] << 8 | p[1])) {
        p[0] = (unsigned char)(c->peer_close_code >> 8);
        p[1] = (unsigned char)c->peer_close_code;
        memset(p + 2, ' ', len - 2);
        len = 2;
      }
      str_set(&c->peer_close_reason, (const char *)p + 2, len - 2 < 123 ? len - 2 : 123);
    } else if (c && len == 1) {
      /* RFC 6455 5.5.1: a close body is a 2-byte code or nothing. lws has no code to echo
       * here; close with 1002 of our own (returning -1 with a reason set sends it). */
      c->peer_close_code = c->close_code = 1002;
      c->close_sent = 1;
      close_reason_set(c, "close frame with a 1-byte body");
      lws_close_reason(wsi, 1002, (unsigned char *)"close frame with a 1-byte body", 30);
      return -1;
    } else if (c)
      c->peer_close_code = 1005;
    return 0;
  case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
    if (c)
      ws_lws_refused(wsi, c);
    return 0;
  case LWS_CALLBACK_CLOSED:
    ws_closed(h, s);
    return 0;
  default:
    return 0;
  }
}

/* RFC 6455 4.2.1: a GET with Sec-WebSocket-Key (16 bytes in base64) and Version 13. lws 4.1
 * upgrades without the last two checks; refused here: 426 naming the version, else 400. */
static int handshake_refused(struct lws *wsi) {
  char key[32] = "", version[8] = "";
  int klen = lws_hdr_copy(wsi, key, sizeof key, WSI_TOKEN_KEY);
  int ok = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 && klen == 24 && key[22] == '=' &&
           key[23] == '=';
  for (int i = 0; ok && i < 22; i++)
    ok = (key[i] >= 'A' && key[i] <= 'Z') || (key[i] >= 'a' && key[i] <= 'z') ||
         (key[i] >= '0' && key[i] <= '9') || key[i] == '+' || key[i] == '/';
  if (!ok)
    return http_reject(wsi, 400, "bad WebSocket handshake");
  if (lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_VERSION) <= 0 || strcmp(version, "13"))
    return http_reject_with(wsi, 426, "WebSocket version 13 only", "sec-websocket-version:", "13");
  return 0;
}

int ws_confirm_upgrade(struct host *h, struct lws *wsi) {
  int refused = handshake_refused(wsi);
  if (refused)
    return refused;
  if (h->stopping)
    return http_reject(wsi, 503, "shutting down");
  /* Its greeting would wait for the lock: say so now rather than hold a silent socket. */
  if (store_waiting(h->store))
    return http_reject(wsi, 503, "storage busy, retry");
  /* A new user would be stored nowhere a restart finds it. */
  if (store_fault(h->store))
    return http_reject(wsi, 503, "storage unavailable");
  if (h->nconns >= h->cfg.max_connections) {
    log_warn(WS_FUNCTION, NULL, "upgrade refused: %d connections is the limit", h->nconns);
    return http_reject(wsi, 503, "too many connections");
  }
  if (!plugins_loaded(h->plugins, WS_FUNCTION) && quarantine_get(h->quarantine, WS_FUNCTION)) {
    log_warn(WS_FUNCTION, NULL, "upgrade refused: %s is quarantined after a crash", WS_FUNCTION);
    return http_reject(wsi, 503, "Function Unavailable");
  }
  if (!plugins_loaded(h->plugins, WS_FUNCTION))
    return http_reject(wsi, 503, "no __websocket__ function loaded");
  if (h->cfg.allowed_origins) {
    char origin[256] = "";
    int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    int ok = 0;
    const char *p = h->cfg.allowed_origins;
    while (n > 0 && *p && !ok) {
      const char *e = strchr(p, ',');
      size_t l = e ? (size_t)(e - p) : strlen(p);
      while (l && *p == ' ')
        p++, l--;
      ok = l == (size_t)n && !strncmp(p, origin, l);
      p = e ? e + 1 : p + l;
    }
    if (!ok) {
      log_warn(WS_FUNCTION, NULL, "upgrade refused: origin '%s' not allowed", origin);
      return http_reject(wsi, 403, "origin not allowed");
    }
  }
  return 0;
}
