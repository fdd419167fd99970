/* lws_alloc.c: lws's allocator hook. Two buffers lws 4.1 allocates for a connection's whole
 * life are only ever used for a moment; everything else lws allocates is plain realloc/free.
 * Checked in the v4.1.6 source (roles/ws/ops-ws.c, server-ws.c, ext/extension.c,
 * ext/extension-permessage-deflate.c, core-net/output.c); lws is single-threaded here (one
 * service thread).
 *
 * The receive buffer ("rx_ubuf", rx_buffer_size + LWS_PRE + 4 bytes per WebSocket):
 * - rops_handle_POLLIN_ws reads up to rx_buffer_size + LWS_PRE bytes, capped by
 *   pt_serv_buf_size, into the per-thread pt->serv_buf, not into rx_ubuf.
 * - lws_parse_ws parses frame headers byte by byte, then hands the payload of every data frame
 *   (text, binary, continuation) to lws_ws_frame_rest_is_payload, which unmasks it in place in
 *   serv_buf and passes it to LWS_CALLBACK_RECEIVE (or to the inflater, which has its own
 *   buffer). The only bytes lws_ws_rx_sm copies into rx_ubuf are control frame payloads, at
 *   most 125 bytes (a longer control frame is refused at its length byte, illegal_ctl_length),
 *   plus the NUL it writes after a payload it hands to a callback.
 *   So rx_ubuf never holds more than LWS_PRE + 125 + 1 bytes: it gets LWS_ALLOC_RX_SMALL.
 *   A client WebSocket (lws as client) allocates its buffer under another reason.
 *
 * permessage-deflate's output buffer ("pmd tx deflate buf", LWS_PRE + 12 + 1 KiB per
 * connection, allocated at its first compressed message): every LWS_EXT_CB_PAYLOAD_TX starts
 * writing at its beginning, and rops_write_role_protocol_ws sends what it got within the same
 * lws_write (lws_issue_raw_ext_access -> lws_issue_raw, which copies an unsent remainder to
 * the connection's buflist_out). What a message still has to say between two writable
 * callbacks waits inside zlib, not there. So one buffer serves every connection; made large
 * enough for the whole of one lws_write (ws.c writes a compressed message in fragments that
 * fit it), it also means lws never has to come back for the rest of one (tx_draining_ext),
 * which it did with zlib still pointing into the caller's buffer, long freed by then (a
 * SIGSEGV in deflate, or corrupt frames: test_deflate.py, test_send_path.py). */
#include "lws_alloc.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(LWS_ALLOC_RX_SMALL >= LWS_PRE + 125 + 1, "a control frame must fit");

/* The shared output buffer holds the whole of what one lws_write compresses: ws.c sets lws's
 * tx_buf_size to LWS_ALLOC_DEFLATE_TX_PWR2 on every connection and writes a compressed message
 * in fragments of LWS_ALLOC_DEFLATE_PIECE bytes at most (lws_alloc.h checks the bound). */
#define TX_SHARED_SIZE (LWS_PRE + 7 + 5 + (1u << LWS_ALLOC_DEFLATE_TX_PWR2))

static unsigned char *tx_shared;

static void *lws_alloc_realloc(void *ptr, size_t size, const char *reason) {
  if (ptr && ptr == tx_shared) {
    if (!size)
      return NULL;            /* a connection let go of the shared buffer: it stays */
    void *own = malloc(size); /* never asked by lws 4.1: a private copy, to be safe */
    if (own)
      memcpy(own, tx_shared, size < TX_SHARED_SIZE ? size : TX_SHARED_SIZE);
    return own;
  }
  if (!size) {
    free(ptr);
    return NULL;
  }
  if (!ptr && reason) {
    /* lws_malloc(rx_buffer_size + LWS_PRE + 4, "rx_ubuf"): a new buffer, never resized. */
    if (size > LWS_ALLOC_RX_SMALL && !strcmp(reason, "rx_ubuf"))
      return malloc(LWS_ALLOC_RX_SMALL);
    if (tx_shared && size <= TX_SHARED_SIZE && !strcmp(reason, "pmd tx deflate buf"))
      return tx_shared;
  }
  return realloc(ptr, size);
}

int lws_alloc_install(void) {
  /* "4.1.6 ..." for Debian 12's; another series may use these buffers differently (4.3
   * allocates the receive buffer on demand and may fill all of it), so it keeps lws's own. */
  const char *v = lws_get_library_version();
  if (!v || strncmp(v, "4.1.", 4))
    return 0;
  if (!tx_shared)
    tx_shared = malloc(TX_SHARED_SIZE); /* NULL: each connection gets its own, as before */
  lws_set_allocator(lws_alloc_realloc);
  return 1;
}

int lws_alloc_deflate_tx_pwr2(void) {
  return tx_shared ? LWS_ALLOC_DEFLATE_TX_PWR2 : LWS_ALLOC_DEFLATE_TX_PWR2_OWN;
}

size_t lws_alloc_deflate_piece(void) {
  return LWS_ALLOC_DEFLATE_PIECE(lws_alloc_deflate_tx_pwr2());
}
