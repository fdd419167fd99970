/* lws_alloc.h: lws's allocator hook: buffers lws 4.1 keeps per connection but uses only for a
 * moment are made small (the receive buffer) or shared by all connections (deflate's output). */
#ifndef WSHOST_LWS_ALLOC_H
#define WSHOST_LWS_ALLOC_H

#include <stddef.h>

/* What lws 4.1 really keeps per WebSocket as its receive buffer once lws_alloc_install
 * applies: LWS_PRE, a control frame's payload (at most 125 bytes, RFC 6455 5.5) and its
 * terminating NUL, rounded up. */
#define LWS_ALLOC_RX_SMALL 160

/* permessage-deflate's output buffer, as a power of 2 (lws's "tx_buf_size"): the one shared
 * buffer, and the size each connection's own buffer gets when the hook is not installed (lws's
 * default is 1 KiB). */
#define LWS_ALLOC_DEFLATE_TX_PWR2 17
#define LWS_ALLOC_DEFLATE_TX_PWR2_OWN 12

/* The most a compressor call can write for n bytes in (zlib's deflateBound for any settings:
 * stored blocks, 5 bytes each, and a sync flush), plus what an earlier call with Z_NO_FLUSH
 * may still hold (lws compresses a message's non-final fragments so): at memLevel 1, which
 * ws.c sets, a 512-byte symbol buffer and MIN_LOOKAHEAD (262) bytes of input; 1 KiB here. */
#define LWS_ALLOC_DEFLATE_OUT_MAX(n) ((n) + ((n) + 7) / 8 + ((n) + 63) / 64 + 5 + 1024)

/* A compressed message is handed to lws in fragments of at most this many bytes, half the
 * output buffer: each one's compressed bytes then fit the buffer whole, and lws never has to
 * come back for the rest of a fragment from the caller's buffer after lws_write returned
 * (tx_draining_ext), which it did with zlib still pointing into a frame already freed. */
#define LWS_ALLOC_DEFLATE_PIECE(pwr2) ((size_t)1 << ((pwr2)-1))
_Static_assert(LWS_ALLOC_DEFLATE_OUT_MAX(LWS_ALLOC_DEFLATE_PIECE(LWS_ALLOC_DEFLATE_TX_PWR2)) <=
                   (size_t)1 << LWS_ALLOC_DEFLATE_TX_PWR2,
               "a fragment's compressed bytes must fit the shared output buffer");
_Static_assert(LWS_ALLOC_DEFLATE_OUT_MAX(LWS_ALLOC_DEFLATE_PIECE(LWS_ALLOC_DEFLATE_TX_PWR2_OWN)) <=
                   (size_t)1 << LWS_ALLOC_DEFLATE_TX_PWR2_OWN,
               "a fragment's compressed bytes must fit a connection's own output buffer");

/* Installs the hook when the linked lws is one whose code paths were checked (4.1.x; see
 * lws_alloc.c). Call before lws_create_context. 1 when installed: the receive buffer of every
 * WebSocket is then LWS_ALLOC_RX_SMALL bytes whatever its protocol's rx_buffer_size says
 * (rx_buffer_size only sets the read size), and permessage-deflate's output buffer is one for
 * all connections. 0 otherwise: lws allocates both per connection, as without the hook. */
int lws_alloc_install(void);

/* What to set lws's "tx_buf_size" option of each permessage-deflate connection to:
 * LWS_ALLOC_DEFLATE_TX_PWR2 when the shared output buffer is there, else
 * LWS_ALLOC_DEFLATE_TX_PWR2_OWN (each connection allocates its own, 4 KiB). */
int lws_alloc_deflate_tx_pwr2(void);
/* The largest fragment of a compressed message to hand lws in one lws_write, for that buffer:
 * LWS_ALLOC_DEFLATE_PIECE(lws_alloc_deflate_tx_pwr2()). */
size_t lws_alloc_deflate_piece(void);

#endif
