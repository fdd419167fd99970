/* net_ops_table.c: the network layer's answers to what the core asks of it (core/net_ops.h):
 * ws.c's and http.c's functions in one table, so the core never names them. */
#include "net_ops_table.h"

#include "http.h"
#include "push.h"
#include "ws.h"

static const char *ws_upgrade_header(struct conn *c, const char *name) {
  return c->upgrade
             ? http_header_lookup(c->wsi, c->upgrade->headers, name, c->upgrade->headers_lazy)
             : NULL;
}

const struct net_ops net_ops_table = {
    .ws_find = ws_find,
    .ws_send = ws_send,
    .ws_send_to_user = ws_send_to_user,
    .ws_close = ws_close,
    .ws_bind_user = ws_bind_user,
    .ws_reject = ws_reject,
    .ws_accept_protocol = ws_accept_protocol,
    .push_deferred = push_deferred,
    .ws_upgrade_header = ws_upgrade_header,
    .http_set_response = http_set_response,
    .http_add_header = http_add_header,
    .http_header_lookup = http_header_lookup,
    .http_deferred_done = http_deferred_done,
    .http_uploads_done = http_uploads_done,
};
