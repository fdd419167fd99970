/* net_ops.h: what the core (and proc/worker.c, which stands in for a plugin) asks of the network
 * layer: find, send to and close WebSocket connections, set HTTP responses. Owns the interface.
 *
 * Calls go one way, net -> core: core reaches the lws glue only through this table, which net
 * fills in (net_ops_table.c) and main.c hands over as host->net before anything runs. */
#ifndef WSHOST_NET_OPS_H
#define WSHOST_NET_OPS_H

#include "host.h"

struct net_ops {
  /* WebSocket connections (ws.c): the backs of cloud_socket_*, cloud_send_to_user, rooms. */
  struct conn *(*ws_find)(struct host *h, cloud_socket s);
  int (*ws_send)(struct host *h, cloud_socket s, const void *data, size_t len, int is_binary);
  int (*ws_send_to_user)(struct host *h, const char *user_id, const void *data, size_t len,
                         int is_binary);
  int (*ws_close)(struct host *h, cloud_socket s, int code, const char *reason);
  int (*ws_bind_user)(struct host *h, struct conn *c, const char *user_id);
  int (*ws_reject)(struct conn *c, int status, const char *reason);
  int (*ws_accept_protocol)(struct conn *c, const char *name);
  /* cloud_request_header in the connection event: a header of c's upgrade request. */
  const char *(*ws_upgrade_header)(struct conn *c, const char *name);
  /* cloud_deferred_send_to_user (push.c): d completed with the push's outcome. */
  int (*push_deferred)(struct host *h, cloud_deferred *d, const char *user_id, const void *data,
                       size_t len, int is_binary);
  /* HTTP requests (http.c): the backs of cloud_response_*, cloud_request_header, cloud_defer. */
  int (*http_set_response)(struct http_req *r, int status, const char *content_type,
                           const char *body, size_t len);
  int (*http_add_header)(struct http_req *r, const char *name, const char *value);
  const char *(*http_header_lookup)(struct lws *wsi, json_t *headers, const char *name, int lazy);
  void (*http_deferred_done)(struct http_req *r);
  /* An upload's function returned (in a worker): its temp files go. */
  void (*http_uploads_done)(struct http_req *r);
};

#endif
