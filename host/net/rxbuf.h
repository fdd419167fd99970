/* rxbuf.h: lws's per-WebSocket receive buffer, decoupled from how much lws reads at a time:
 * large reads (the protocol's rx_buffer_size) without a large buffer on every idle connection. */
#ifndef WSHOST_RXBUF_H
#define WSHOST_RXBUF_H

#include <stddef.h>

/* What lws 4.1 really keeps per WebSocket once rxbuf_install applies: LWS_PRE, a control
 * frame's payload (at most 125 bytes, RFC 6455 5.5) and its terminating NUL, rounded up. */
#define RXBUF_SMALL 160

/* Installs lws's allocator hook when the linked lws is one whose receive path was checked
 * (4.1.x: data frames are unmasked in place in the per-thread read buffer and never copied into
 * the per-connection one; only control frames are). Call before lws_create_context. 1 when
 * installed: the receive buffer of every WebSocket is then RXBUF_SMALL bytes whatever its
 * protocol's rx_buffer_size says, and rx_buffer_size only sets the read size. 0 otherwise:
 * lws allocates rx_buffer_size per connection, as without the hook. */
int rxbuf_install(void);

/* Receive buffers allocated small since rxbuf_install (for tests and /_/metrics). */
unsigned long long rxbuf_small_count(void);

#endif
