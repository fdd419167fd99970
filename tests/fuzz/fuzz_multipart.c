/* fuzz_multipart: multipart/form-data bodies through multipart_feed, fed in pieces of the
 * size byte 0 picks (so every split of a delimiter or head is tried). Checked: callbacks come
 * in order (data and end only inside a part, one end per begin), the bytes reported for parts
 * never exceed the input, and a parse that says done saw the closing boundary. */
#include "multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      __builtin_trap();                                                                            \
  } while (0)

struct seen {
  int in_part, begins, ends;
  size_t bytes;
};

static int on_begin(void *arg, const char *name, const char *filename, const char *ctype) {
  struct seen *s = arg;
  (void)filename;
  (void)ctype;
  CHECK(!s->in_part && name);
  s->in_part = 1;
  s->begins++;
  return 0;
}

static int on_data(void *arg, const char *p, size_t n) {
  struct seen *s = arg;
  CHECK(s->in_part && p && n);
  s->bytes += n;
  return 0;
}

static int on_end(void *arg) {
  struct seen *s = arg;
  CHECK(s->in_part);
  s->in_part = 0;
  s->ends++;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t piece = (size_t)data[0] + 1;
  data++;
  size--;
  static const struct multipart_cb cb = {on_begin, on_data, on_end};
  struct seen s = {0};
  struct multipart *m = multipart_new("XyZ", &cb, &s);
  CHECK(m);
  char err[256];
  int rc = 0;
  for (size_t off = 0; off < size && rc == 0; off += piece)
    rc = multipart_feed(m, (const char *)data + off, off + piece <= size ? piece : size - off, err,
                        sizeof err);
  if (rc == 0 && multipart_finish(m, err, sizeof err) == 0)
    CHECK(!s.in_part && s.begins == s.ends);
  CHECK(s.bytes <= size);
  CHECK(s.ends <= s.begins && s.begins <= MULTIPART_PARTS_MAX);
  multipart_free(m);
  return 0;
}
