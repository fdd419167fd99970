/* ws.h: WebSocket connections: their lifecycle, events to __websocket__, send queues, users.
 * Owns struct conn and the host's maps of connections and live users. */
#ifndef WSHOST_WS_H
#define WSHOST_WS_H

#include "host.h"

/* The lws protocol callback's WebSocket reasons land here. */
int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, struct session *s, void *in,
                size_t len);
/* Decides whether an upgrade may proceed: 0 yes, >0 refused with a response written, <0 hang
 * up. Called from LWS_CALLBACK_HTTP_CONFIRM_UPGRADE. */
int ws_confirm_upgrade(struct host *h, struct lws *wsi);
/* The last step of admission (after the JWT and __interceptor__, http_admit_upgrade): the
 * connection event runs now, before the 101, so cloud_reject can still refuse the upgrade
 * (that status is written, no user or connection row is left) and cloud_accept_protocol can
 * pick the subprotocol. Takes claims. 0: upgrade (frames the event queued go after the 101);
 * 1: answered; <0: hang up. */
struct ws_upgrade {
  const char *request_id;
  const char *remote; /* the peer's address, as http.c read it */
  json_t *headers;    /* every header, or (CLOUD_OPT_LAZY_HEADERS) those looked up so far */
  int headers_lazy;   /* headers holds only what was looked up so far */
  int headers_in_ctx; /* 0: ctx->headers is NULL; cloud_request_header reads `headers` */
  json_t *query;
  const char *url;
  json_t *claims; /* taken */
};
int ws_admit(struct host *h, struct lws *wsi, const struct ws_upgrade *u);
/* Auth at the door, readable by a browser (which sees an HTTP 401 or 403 before the 101 only
 * as close 1006): the upgrade completes and the connection is closed at once with code (4401
 * a bad or expired JWT, 4403 refused) and reason (at most 123 bytes). No event runs for it and
 * nothing is stored. 0: upgrade; <0: hang up. */
#define WS_CLOSE_UNAUTHORIZED 4401
#define WS_CLOSE_FORBIDDEN 4403
int ws_admit_refused(struct host *h, struct lws *wsi, int code, const char *reason);
/* LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: 0 accepts the extension for this upgrade. */
int ws_confirm_extension(struct host *h, struct lws *wsi, const char *name);
/* LWS_CALLBACK_WSI_DESTROY: an admitted upgrade lws never completed is closed (1006). */
void ws_upgrade_abandoned(struct host *h, struct lws *wsi);

/* The slot protocol an upgrade that offers subprotocols is bound to (see ws.c). server.c
 * registers it beside "wshost", with the same callback and sizes, and keeps a pointer to
 * lws's copy in h->proto_slot. */
#define WS_SLOT_PROTOCOL "wshost-subprotocol"
/* LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: names the chosen subprotocol for the 101. */
void ws_protocol_filter(struct host *h, struct lws *wsi);

/* Back ends of the SDK calls. */
struct conn *ws_find(struct host *h, cloud_socket s);
int ws_send(struct host *h, cloud_socket s, const void *data, size_t len, int is_binary);
int ws_close(struct host *h, cloud_socket s, int code, const char *reason);
int ws_bind_user(struct host *h, struct conn *c, const char *user_id);
/* Connection event only (CLOUD_ESTATE elsewhere): refuse the upgrade with status (400..599);
 * pick one of the offered subprotocols. 0 or CLOUD_EINVAL. */
int ws_reject(struct conn *c, int status, const char *reason);
int ws_accept_protocol(struct conn *c, const char *name);
int ws_send_to_user(struct host *h, const char *user_id, const void *data, size_t len,
                    int is_binary);
/* The part of ws_send_to_user on this node: sockets reached; *held counts those draining the
 * outbox (the message must reach them through it). The cluster's local delivery: row is the
 * outbox row in Redis holding the same message (0: none), which a connection whose drain
 * loaded it already has (counted, not sent twice). */
int ws_user_deliver(struct host *h, const char *user_id, const void *data, size_t len,
                    int is_binary, int64_t row, int *held);
/* Cluster: outbox rows read from Redis for connection conn_id (n < 0: not read), and a new
 * row behind a drain of the user. */
struct cluster_row;
void ws_drain_rows(struct host *h, uint64_t conn_id, const struct cluster_row *rows, int n);
void ws_drain_kick(struct host *h, const char *user_id);
void ws_drain_restart(struct host *h, uint64_t conn_id);
/* user_id_valid (the ids cloud_bind_user and a resume accept) lives in store.h. */

/* A protocol error lws cannot see (head_guard.c: an unmasked client frame): the plugin gets
 * WebSocket:error, the client close code, and nothing more of the connection is delivered.
 * 0, or CLOUD_ECLOSED when wsi has no open connection. */
int ws_refuse(struct lws *wsi, int code, const char *why);

/* Close codes of the host's own disconnects, read by the JS client (sdk/js/wshost.js): 4000 the
 * client may reconnect at once, 4001 it should not reconnect. */
#define WS_CLOSE_RECONNECT 4000
#define WS_CLOSE_NO_RECONNECT 4001
/* Closes every live socket of the user on this node with code and reason (the admin API's
 * disconnect): how many were told to close. */
int ws_user_close(struct host *h, const char *user_id, int code, const char *reason);
/* Sends close 1001 to every connection (SIGTERM). */
void ws_close_all(struct host *h, int code, const char *reason);
/* Once per loop pass, before the loop sleeps (server.c): commits the users created in this
 * pass (one commit for all of them) and writes the frames that waited for it (greetings)
 * straight away; what cannot go now waits for SERVER_WRITEABLE as before. */
void ws_commit_pass(struct host *h);

#endif
