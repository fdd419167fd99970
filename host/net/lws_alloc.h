/* lws_alloc.h: lws's allocator hook: buffers lws 4.1 keeps per connection but uses only for a
 * moment are made small (the receive buffer) or shared by all connections (deflate's output). */
#ifndef WSHOST_LWS_ALLOC_H
#define WSHOST_LWS_ALLOC_H

#include <stddef.h>

/* What lws 4.1 really keeps per WebSocket as its receive buffer once lws_alloc_install
 * applies: LWS_PRE, a control frame's payload (at most 125 bytes, RFC 6455 5.5) and its
 * terminating NUL, rounded up. */
#define LWS_ALLOC_RX_SMALL 160

/* permessage-deflate's output piece, as a power of 2: the whole of a compressed message of up
 * to 64 KiB (ws.c caps deflate sends there), in the one shared buffer. */
#define LWS_ALLOC_DEFLATE_TX_PWR2 17

/* Installs the hook when the linked lws is one whose code paths were checked (4.1.x; see
 * lws_alloc.c). Call before lws_create_context. 1 when installed: the receive buffer of every
 * WebSocket is then LWS_ALLOC_RX_SMALL bytes whatever its protocol's rx_buffer_size says
 * (rx_buffer_size only sets the read size), and permessage-deflate's output buffer is one for
 * all connections. 0 otherwise: lws allocates both per connection, as without the hook. */
int lws_alloc_install(void);

/* LWS_ALLOC_DEFLATE_TX_PWR2 when the shared deflate output buffer is there (set lws's
 * "tx_buf_size" option of each permessage-deflate connection to it), else 0 (leave lws's
 * default 1 KiB per connection). */
int lws_alloc_deflate_tx_pwr2(void);

#endif
