/* multipart.h: a multipart/form-data body (RFC 7578) parsed as it streams in, in bounded
 * memory: parts are reported with their names as they begin, their bytes as they arrive. */
#ifndef WSHOST_MULTIPART_H
#define WSHOST_MULTIPART_H

#include <stddef.h>

/* Longest boundary (RFC 2046: 70), part head, and how many parts a body may have. */
#define MULTIPART_BOUNDARY_MAX 70
#define MULTIPART_HEAD_MAX 8192
#define MULTIPART_PARTS_MAX 1000

struct multipart_cb {
  /* A part begins: its form field name, its filename (NULL: not a file) and content type
   * (NULL if none). Non-zero stops the parse. */
  int (*begin)(void *arg, const char *name, const char *filename, const char *content_type);
  int (*data)(void *arg, const char *p, size_t n);
  int (*end)(void *arg);
};

struct multipart;

/* The boundary parameter of a multipart/form-data Content-Type into out (NUL-terminated):
 * 1 found, 0 not multipart/form-data, -1 multipart/form-data with a bad or missing boundary. */
int multipart_boundary(const char *content_type, char *out, size_t cap);
struct multipart *multipart_new(const char *boundary, const struct multipart_cb *cb, void *arg);
/* Feeds n bytes. 0, or -1 with a reason in err (malformed, too many parts, a callback said
 * stop). After -1 the parser refuses everything. */
int multipart_feed(struct multipart *m, const char *p, size_t n, char *err, size_t errlen);
/* The body ended: 0 if the closing boundary was seen, else -1 with a reason. */
int multipart_finish(struct multipart *m, char *err, size_t errlen);
void multipart_free(struct multipart *m);

#endif
