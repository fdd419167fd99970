/* rxbuf.c: lws's allocator hook, which gives each WebSocket a small receive buffer while the
 * protocol's rx_buffer_size (the read size) stays large. Everything else lws allocates is plain
 * realloc/free, as without the hook.
 *
 * Why this is safe on lws 4.1 (read in v4.1.6: roles/ws/ops-ws.c, server-ws.c):
 * - lws_server_init_wsi_for_ws allocates wsi->ws->rx_ubuf with reason "rx_ubuf" and records
 *   rx_buffer_size + LWS_PRE as its size (rx_ubuf_alloc); rops_handle_POLLIN_ws reads up to
 *   that many bytes, capped by pt_serv_buf_size, into the per-thread pt->serv_buf, not into
 *   rx_ubuf.
 * - lws_parse_ws parses frame headers byte by byte, then hands the payload of every data frame
 *   (text, binary, continuation) to lws_ws_frame_rest_is_payload, which unmasks it in place in
 *   serv_buf and passes it to LWS_CALLBACK_RECEIVE (or to permessage-deflate's inflater, which
 *   has its own buffer). The only bytes lws_ws_rx_sm copies into rx_ubuf are control frame
 *   payloads, at most 125 bytes (a longer control frame is refused at its length byte,
 *   illegal_ctl_length), plus the NUL it writes after a payload handed to a callback.
 * So rx_ubuf never holds more than LWS_PRE + 125 + 1 bytes. A client WebSocket (lws as client)
 * allocates its buffer under another reason and is untouched. */
#include "rxbuf.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(RXBUF_SMALL >= LWS_PRE + 125 + 1, "a control frame must fit the small buffer");

static unsigned long long small_count;

static void *rxbuf_realloc(void *ptr, size_t size, const char *reason) {
  if (!size) {
    free(ptr);
    return NULL;
  }
  /* lws_malloc(rx_buffer_size + LWS_PRE + 4, "rx_ubuf"): a new buffer, never resized. */
  if (!ptr && size > RXBUF_SMALL && reason && !strcmp(reason, "rx_ubuf")) {
    small_count++;
    return malloc(RXBUF_SMALL);
  }
  return realloc(ptr, size);
}

int rxbuf_install(void) {
  /* "4.1.6 ..." for Debian 12's; another series may read into rx_ubuf (4.3 allocates it on
   * demand and may use all of it), so it keeps lws's own allocation. */
  const char *v = lws_get_library_version();
  if (!v || strncmp(v, "4.1.", 4))
    return 0;
  lws_set_allocator(rxbuf_realloc);
  return 1;
}

unsigned long long rxbuf_small_count(void) {
  return small_count;
}
