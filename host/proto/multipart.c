/* multipart.c: multipart/form-data as it streams in. The bytes wait in one buffer of at most
 * MULTIPART_HEAD_MAX + a chunk: a part's data goes to the callback as soon as it cannot be
 * the start of the next delimiter ("\r\n--" boundary). */
#include "multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum state { PREAMBLE, AFTER_DELIM, HEAD, BODY, DONE, FAILED };

#define CHUNK 16384

struct multipart {
  struct multipart_cb cb;
  void *arg;
  enum state st;
  char delim[MULTIPART_BOUNDARY_MAX + 5]; /* "\r\n--" boundary */
  size_t dlen;
  int parts;
  char *buf;
  size_t len, cap;
};

int multipart_boundary(const char *ct, char *out, size_t cap) {
  if (!ct)
    return 0;
  while (*ct == ' ' || *ct == '\t')
    ct++;
  if (strncasecmp(ct, "multipart/form-data", 19) || (ct[19] && ct[19] != ';' && ct[19] != ' '))
    return 0;
  const char *p = ct + 19;
  while ((p = strchr(p, ';'))) {
    p++;
    while (*p == ' ' || *p == '\t')
      p++;
    if (strncasecmp(p, "boundary=", 9))
      continue;
    p += 9;
    size_t n = 0;
    if (*p == '"') {
      const char *e = strchr(++p, '"');
      if (!e)
        return -1;
      n = (size_t)(e - p);
    } else {
      n = strcspn(p, "; \t");
    }
    if (!n || n > MULTIPART_BOUNDARY_MAX || n >= cap)
      return -1;
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
        return -1;
    memcpy(out, p, n);
    out[n] = 0;
    return 1;
  }
  return -1;
}

struct multipart *multipart_new(const char *boundary, const struct multipart_cb *cb, void *arg) {
  size_t bl = boundary ? strlen(boundary) : 0;
  if (!bl || bl > MULTIPART_BOUNDARY_MAX)
    return NULL;
  struct multipart *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->cap = MULTIPART_HEAD_MAX + CHUNK + sizeof m->delim + 4;
  if (!(m->buf = malloc(m->cap))) {
    free(m);
    return NULL;
  }
  m->cb = *cb;
  m->arg = arg;
  m->dlen = (size_t)snprintf(m->delim, sizeof m->delim, "\r\n--%s", boundary);
  /* The first delimiter may open the body: it is found as if a line break came before. */
  memcpy(m->buf, "\r\n", 2);
  m->len = 2;
  return m;
}

static int fail(struct multipart *m, char *err, size_t errlen, const char *why) {
  m->st = FAILED;
  snprintf(err, errlen, "malformed multipart body: %s", why);
  return -1;
}

static const char *find(const char *h, size_t hl, const char *n, size_t nl) {
  if (hl < nl)
    return NULL;
  for (size_t i = 0; i + nl <= hl; i++) {
    const char *c = memchr(h + i, n[0], hl - nl - i + 1);
    if (!c)
      return NULL;
    i = (size_t)(c - h);
    if (!memcmp(c, n, nl))
      return c;
  }
  return NULL;
}

/* A parameter of Content-Disposition (name="..."), copied into out; 1 if present. */
static int param(const char *v, const char *key, char *out, size_t cap) {
  size_t kl = strlen(key);
  for (const char *p = v; (p = strchr(p, ';'));) {
    p++;
    while (*p == ' ' || *p == '\t')
      p++;
    if (strncasecmp(p, key, kl) || p[kl] != '=')
      continue;
    p += kl + 1;
    size_t n;
    if (*p == '"') {
      const char *e = strchr(++p, '"');
      if (!e)
        return -1;
      n = (size_t)(e - p);
    } else {
      n = strcspn(p, "; \t");
    }
    if (n >= cap)
      return -1;
    memcpy(out, p, n);
    out[n] = 0;
    return 1;
  }
  return 0;
}

/* The part head in m->buf[0..n) (without its blank line): name, filename, content type. */
static int head(struct multipart *m, size_t n, char *err, size_t errlen) {
  char name[256] = "", filename[256] = "", ctype[256] = "";
  int have_name = 0, have_file = 0, have_type = 0;
  m->buf[n] = 0;
  if (memchr(m->buf, 0, n))
    return fail(m, err, errlen, "a NUL byte in a part head");
  for (char *line = m->buf; line && *line;) {
    char *eol = strstr(line, "\r\n");
    if (eol)
      *eol = 0;
    char *colon = strchr(line, ':');
    if (!colon)
      return fail(m, err, errlen, "a part header without a colon");
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    if (!strcasecmp(line, "content-disposition")) {
      if (strncasecmp(v, "form-data", 9) || (v[9] && v[9] != ';' && v[9] != ' '))
        return fail(m, err, errlen, "a part that is not form-data");
      int a = param(v, "name", name, sizeof name),
          b = param(v, "filename", filename, sizeof filename);
      if (a < 0 || b < 0)
        return fail(m, err, errlen, "a bad name or filename");
      have_name = a;
      have_file = b;
    } else if (!strcasecmp(line, "content-type")) {
      snprintf(ctype, sizeof ctype, "%.255s", v);
      have_type = 1;
    }
    line = eol ? eol + 2 : NULL;
  }
  if (!have_name)
    return fail(m, err, errlen, "a part without Content-Disposition: form-data; name=");
  if (++m->parts > MULTIPART_PARTS_MAX)
    return fail(m, err, errlen, "too many parts");
  if (m->cb.begin(m->arg, name, have_file ? filename : NULL, have_type ? ctype : NULL))
    return fail(m, err, errlen, "refused");
  return 0;
}

static void consume(struct multipart *m, size_t n) {
  memmove(m->buf, m->buf + n, m->len - n);
  m->len -= n;
}

/* Runs the states over what is buffered. */
static int step(struct multipart *m, char *err, size_t errlen) {
  for (;;) {
    if (m->st == PREAMBLE || m->st == BODY) {
      const char *d = find(m->buf, m->len, m->delim, m->dlen);
      size_t upto = d ? (size_t)(d - m->buf) : m->len > m->dlen ? m->len - m->dlen + 1 : 0;
      if (m->st == BODY && upto && m->cb.data(m->arg, m->buf, upto))
        return fail(m, err, errlen, "refused");
      if (!d) {
        consume(m, upto);
        return 0;
      }
      if (m->st == BODY && m->cb.end(m->arg))
        return fail(m, err, errlen, "refused");
      consume(m, upto + m->dlen);
      m->st = AFTER_DELIM;
    } else if (m->st == AFTER_DELIM) {
      size_t i = 0;
      while (i < m->len && (m->buf[i] == ' ' || m->buf[i] == '\t'))
        i++;
      if (i > 64)
        return fail(m, err, errlen, "padding after a boundary");
      if (m->len - i < 2)
        return 0;
      if (!memcmp(m->buf + i, "--", 2)) {
        m->st = DONE;
        m->len = 0;
        return 0;
      }
      if (memcmp(m->buf + i, "\r\n", 2))
        return fail(m, err, errlen, "a boundary not followed by a line break");
      consume(m, i + 2);
      m->st = HEAD;
    } else if (m->st == HEAD) {
      size_t n;
      if (m->len >= 2 && !memcmp(m->buf, "\r\n", 2))
        n = 0; /* no headers at all */
      else {
        const char *e = find(m->buf, m->len, "\r\n\r\n", 4);
        if (!e) {
          if (m->len > MULTIPART_HEAD_MAX)
            return fail(m, err, errlen, "a part head over 8192 bytes");
          return 0;
        }
        n = (size_t)(e - m->buf) + 2;
        if (n > MULTIPART_HEAD_MAX)
          return fail(m, err, errlen, "a part head over 8192 bytes");
      }
      /* head() writes a NUL at n: the buffer has room (cap > HEAD_MAX). */
      if (n > 2) {
        if (head(m, n - 2, err, errlen) < 0)
          return -1;
      } else if (head(m, 0, err, errlen) < 0) {
        return -1;
      }
      consume(m, n + 2);
      m->st = BODY;
    } else {
      if (m->st == DONE)
        m->len = 0; /* the epilogue is ignored */
      return m->st == FAILED ? -1 : 0;
    }
  }
}

int multipart_feed(struct multipart *m, const char *p, size_t n, char *err, size_t errlen) {
  while (n) {
    if (m->st == FAILED)
      return -1;
    if (m->st == DONE)
      return 0;
    size_t k = m->cap - m->len - 1;
    if (k > CHUNK)
      k = CHUNK;
    if (k > n)
      k = n;
    if (!k)
      return fail(m, err, errlen, "a part head over 8192 bytes");
    memcpy(m->buf + m->len, p, k);
    m->len += k;
    p += k;
    n -= k;
    if (step(m, err, errlen) < 0)
      return -1;
  }
  return m->st == FAILED ? -1 : 0;
}

int multipart_finish(struct multipart *m, char *err, size_t errlen) {
  if (m->st == DONE)
    return 0;
  if (m->st != FAILED)
    fail(m, err, errlen, "the body ends before its closing boundary");
  return -1;
}

void multipart_free(struct multipart *m) {
  if (!m)
    return;
  free(m->buf);
  free(m);
}
