/* msgbuf.c: assembles a WebSocket message from its fragments and checks it.
 * A single-frame message that fits is the common case; the buffer is reused across messages. */
#include "msgbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Buffers above this are freed after their message, so one big message does not pin memory. */
#define MSGBUF_KEEP 4096

void msgbuf_init(struct msgbuf *m, size_t max) {
  memset(m, 0, sizeof *m);
  m->max = max;
}

enum msgbuf_result msgbuf_add(struct msgbuf *m, const void *frag, size_t len, int final,
                              int is_binary) {
  if (!m->busy) {
    m->len = 0;
    m->is_binary = is_binary;
    m->busy = 1;
  }
  if (len > m->max || m->len > m->max - len)
    return MSGBUF_TOOBIG;
  if (m->len + len + 1 > m->cap) {
    size_t cap = m->cap ? m->cap : 256;
    while (cap < m->len + len + 1)
      cap *= 2;
    char *d = realloc(m->data, cap);
    if (!d)
      return MSGBUF_NOMEM;
    m->data = d;
    m->cap = cap;
  }
  if (len)
    memcpy(m->data + m->len, frag, len);
  m->len += len;
  m->data[m->len] = 0;
  if (!final)
    return MSGBUF_MORE;
  if (!m->is_binary && !utf8_valid((const unsigned char *)m->data, m->len))
    return MSGBUF_BADUTF8;
  return MSGBUF_DONE;
}

void msgbuf_reset(struct msgbuf *m) {
  m->len = 0;
  m->busy = 0;
  if (m->cap > MSGBUF_KEEP) {
    free(m->data);
    m->data = NULL;
    m->cap = 0;
  }
}

void msgbuf_free(struct msgbuf *m) {
  free(m->data);
  m->data = NULL;
  m->cap = m->len = 0;
}

int utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    /* Text is mostly ASCII: skip it 32 bytes at a time (a 64 KiB message took ~7 instructions
     * a byte one at a time, as much as lws's whole receive path; 8 at a time it was still 14%
     * of the host's CPU in a 64 KiB echo once lws read whole messages). */
    while (len - i >= 32) {
      uint64_t w[4];
      memcpy(w, s + i, 32);
      if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull)
        break;
      i += 32;
    }
    while (len - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull)
        break;
      i += 8;
    }
    if (i >= len)
      break;
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
      n = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0)
        lo = 0xA0; /* overlong */
      if (c == 0xED)
        hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0)
        lo = 0x90; /* overlong */
      if (c == 0xF4)
        hi = 0x8F; /* > U+10FFFF */
    } else
      return 0;
    if (len - i <= n) /* truncated sequence */
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t k = 2; k <= n; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
    i += n + 1;
  }
  return 1;
}
