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

/* Back ends of the SDK calls. */
struct conn *ws_find(struct host *h, cloud_socket s);
int ws_send(struct host *h, cloud_socket s, const void *data, size_t len, int is_binary);
int ws_close(struct host *h, cloud_socket s, int code, const char *reason);
int ws_bind_user(struct host *h, struct conn *c, const char *user_id);
int ws_send_to_user(struct host *h, const char *user_id, const void *data, size_t len,
                    int is_binary);
/* user_id_valid (the ids cloud_bind_user and a resume accept) lives in store.h. */

/* A protocol error lws cannot see (head_guard.c: an unmasked client frame): the plugin gets
 * WebSocket:error, the client close code, and nothing more of the connection is delivered.
 * 0, or CLOUD_ECLOSED when wsi has no open connection. */
int ws_refuse(struct lws *wsi, int code, const char *why);

/* Sends close 1001 to every connection (SIGTERM). */
void ws_close_all(struct host *h, int code, const char *reason);
/* Once per loop pass, before the loop sleeps (server.c): commits the users created in this
 * pass (one commit for all of them) and writes the frames that waited for it (greetings)
 * straight away; what cannot go now waits for SERVER_WRITEABLE as before. */
void ws_commit_pass(struct host *h);

#endif
