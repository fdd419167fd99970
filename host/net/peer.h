/* peer.h: what the kernel knows about a connection that lws does not say: whether the peer
 * is still there, how long it has been silent, whether anything was ever sent to it. */
#ifndef WSHOST_PEER_H
#define WSHOST_PEER_H

#include <libwebsockets.h>
#include <stdint.h>

struct peer_state {
  int open;            /* no end of stream or reset waiting on the socket */
  uint32_t idle_ms;    /* since the peer last sent data */
  uint64_t bytes_sent; /* by us, over the connection's life */
};

/* Fills ps for wsi's socket. 0, or a negative errno (no socket, getsockopt failed). */
int peer_probe(struct lws *wsi, struct peer_state *ps);

/* Writes buf straight to wsi's socket, bypassing lws: only for a last word on a plain TCP
 * connection lws is closing with nothing queued. Bytes written, or a negative errno. */
int peer_write_last(struct lws *wsi, const void *buf, size_t len);

/* Reads and drops up to max bytes already waiting on a plain TCP socket lws is about to close:
 * unread input turns close() into a reset, and a reset makes the peer's kernel discard what we
 * sent last (the close frame) before the peer reads it. Bytes dropped. */
size_t peer_discard_input(struct lws *wsi, size_t max);

#endif
