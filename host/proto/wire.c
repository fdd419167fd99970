/* wire.c: encoding and blocking I/O of the frames between serving process and workers.
 * Pure byte handling: no host state, so both sides of the socketpair share it. */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NULL_FIELD 0xffffffffu

static void put(struct wbuf *b, const void *p, size_t n) {
  if (b->failed)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->failed = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void wbuf_begin(struct wbuf *b, enum wire_type t) {
  b->len = 0;
  b->failed = 0;
  uint32_t zero = 0;
  uint8_t type = (uint8_t)t;
  put(b, &zero, 4);
  put(b, &type, 1);
}

void wbuf_u64(struct wbuf *b, uint64_t v) {
  put(b, &v, sizeof v);
}

void wbuf_bytes(struct wbuf *b, const void *p, size_t len) {
  uint32_t n = p ? (uint32_t)len : NULL_FIELD;
  put(b, &n, 4);
  if (p && len)
    put(b, p, len);
  put(b, "", 1); /* the reader hands out NUL-terminated strings in place */
}

void wbuf_str(struct wbuf *b, const char *s) {
  wbuf_bytes(b, s, s ? strlen(s) : 0);
}

int wbuf_end(struct wbuf *b) {
  if (b->failed || b->len - 4 > WIRE_MAX)
    return -ENOMEM;
  uint32_t n = (uint32_t)(b->len - 4);
  memcpy(b->p, &n, 4);
  return 0;
}

void wbuf_free(struct wbuf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

void wread_init(struct wread *r, const void *payload, size_t len) {
  r->p = payload;
  r->end = r->p + len;
  r->bad = 0;
}

uint64_t wread_u64(struct wread *r) {
  uint64_t v = 0;
  if (r->bad || (size_t)(r->end - r->p) < sizeof v) {
    r->bad = 1;
    return 0;
  }
  memcpy(&v, r->p, sizeof v);
  r->p += sizeof v;
  return v;
}

const char *wread_bytes(struct wread *r, size_t *len) {
  uint32_t n;
  if (len)
    *len = 0;
  if (r->bad || r->end - r->p < 5) {
    r->bad = 1;
    return NULL;
  }
  memcpy(&n, r->p, 4);
  r->p += 4;
  if (n == NULL_FIELD) {
    r->p++;
    return NULL;
  }
  if ((size_t)(r->end - r->p) < (size_t)n + 1 || r->p[n] != 0) {
    r->bad = 1;
    return NULL;
  }
  const char *s = r->p;
  r->p += n + 1;
  if (len)
    *len = n;
  return s;
}

const char *wread_str(struct wread *r) {
  return wread_bytes(r, NULL);
}

int wire_write_all(int fd, const void *p, size_t len) {
  const char *c = p;
  while (len) {
    ssize_t w = write(fd, c, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    c += w;
    len -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, void *p, size_t len) {
  char *c = p;
  while (len) {
    ssize_t n = read(fd, c, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EPIPE;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

int wire_read_frame(int fd, char **buf, size_t *cap, size_t *len) {
  uint32_t n;
  int rc = read_all(fd, &n, 4);
  if (rc < 0)
    return rc;
  if (n > WIRE_MAX || n == 0)
    return -EPROTO;
  if (n + 1 > *cap) {
    char *q = realloc(*buf, n + 1);
    if (!q)
      return -ENOMEM;
    *buf = q;
    *cap = n + 1;
  }
  if ((rc = read_all(fd, *buf, n)) < 0)
    return rc;
  *len = n;
  return 0;
}
