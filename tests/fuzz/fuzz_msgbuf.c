/* fuzz_msgbuf: WebSocket messages as lws hands them over, a fragment (or a piece of one) at
 * a time, through msgbuf_add: the size limit (1009), the UTF-8 rule (1007) and reassembly.
 * utf8_valid is checked against an independent decoder written from RFC 3629 section 3
 * (code points and their ranges, not the byte table msgbuf.c uses).
 *
 * Input: byte 0 picks the limit; then records [len][flags][len bytes]: flags bit 0 = final,
 * bit 1 = binary (counts on a message's first piece). */
#include "msgbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      __builtin_trap();                                                                            \
  } while (0)

/* RFC 3629: a code point in 1..4 bytes, shortest form, not a surrogate, at most U+10FFFF. */
static int ref_utf8(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    int n;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else
      return 0; /* a continuation byte or 0xF8..0xFF as a lead */
    if (i + (size_t)n > len)
      return 0;
    for (int k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += (size_t)n;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The whole input as one text: both decoders agree. */
  CHECK(!utf8_valid(data, size) == !ref_utf8(data, size));
  if (size < 1)
    return 0;

  static const size_t limits[] = {0, 1, 2, 3, 4, 7, 64, 255, 256, 257, 1000, 4096, 70000};
  size_t max = limits[data[0] % (sizeof limits / sizeof limits[0])];
  if (max == 0)
    max = 1;
  struct msgbuf m;
  msgbuf_init(&m, max);
  unsigned char *expect = malloc(size + 1);
  size_t elen = 0;
  int ebinary = 0, busy = 0;
  size_t i = 1;
  while (i + 2 <= size) {
    size_t len = data[i];
    int final = data[i + 1] & 1, binary = (data[i + 1] >> 1) & 1;
    i += 2;
    if (len > size - i)
      len = size - i;
    const uint8_t *frag = data + i;
    i += len;
    if (!busy) {
      elen = 0;
      ebinary = binary;
      busy = 1;
    }
    int too_big = elen + len > max;
    if (!too_big) {
      memcpy(expect + elen, frag, len);
      elen += len;
    }
    enum msgbuf_result r = msgbuf_add(&m, len ? frag : (const void *)"", len, final, binary);
    if (too_big) {
      CHECK(r == MSGBUF_TOOBIG);
    } else if (!final) {
      CHECK(r == MSGBUF_MORE);
      CHECK(m.len == elen);
      continue;
    } else if (!ebinary && !ref_utf8(expect, elen)) {
      CHECK(r == MSGBUF_BADUTF8);
    } else {
      CHECK(r == MSGBUF_DONE);
      CHECK(m.len == elen && m.is_binary == ebinary);
      CHECK(elen == 0 || !memcmp(m.data, expect, elen));
      CHECK(m.data[m.len] == 0);
      msgbuf_reset(&m);
      busy = 0;
      continue;
    }
    /* an error closes the connection in the host: start over on a fresh buffer */
    msgbuf_free(&m);
    msgbuf_init(&m, max);
    busy = 0;
  }
  msgbuf_free(&m);
  free(expect);
  return 0;
}
