/* upload.c: a multipart/form-data request body as it arrives (proto/multipart.c parses it):
 * a file part's bytes go straight to a temp file made by mkstemp (0600) in the host's runtime
 * folder (0700, emptied at start, so a crash leaves nothing behind for long), a field's value
 * is kept in memory and counted with the other buffered bodies (--max-body-total). */
#include "upload.h"

#include "log.h"
#include "multipart.h"
#include "plugins.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct upload {
  struct host *h;
  struct multipart *mp;
  json_t *fields;
  cloud_file files[MULTIPART_PARTS_MAX];
  size_t nfiles;
  int fd;     /* the file part being written, -1 */
  char *name; /* the field part being read: its name and value */
  char *val;
  size_t val_len, val_cap;
  size_t held; /* bytes counted in h->http_body_bytes */
  int io_error, mem_error;
};

static int hold(struct upload *u, size_t n) {
  if (u->h->http_body_bytes + n > u->h->cfg.max_body_total) {
    u->mem_error = 1;
    return -1;
  }
  u->h->http_body_bytes += n;
  u->held += n;
  return 0;
}

static int on_begin(void *arg, const char *name, const char *filename, const char *ctype) {
  struct upload *u = arg;
  if (!filename) {
    free(u->name);
    u->name = strdup(name);
    u->val_len = 0;
    return u->name ? 0 : -1;
  }
  const char *dir = plugins_run_dir(u->h->plugins);
  char path[4200];
  snprintf(path, sizeof path, "%s/upload-XXXXXX", dir ? dir : "/nonexistent");
  int fd = mkstemp(path); /* 0600 */
  cloud_file *f = &u->files[u->nfiles];
  memset(f, 0, sizeof *f);
  if (fd < 0 || !(f->field = strdup(name)) || !(f->filename = strdup(filename)) ||
      !(f->path = strdup(path)) || (ctype && !(f->content_type = strdup(ctype)))) {
    if (fd >= 0) {
      close(fd);
      unlink(path);
    }
    free((char *)f->field);
    free((char *)f->filename);
    free((char *)f->path);
    u->io_error = 1;
    log_error(NULL, NULL, "upload: cannot make a temp file in %s: %s", dir ? dir : "(none)",
              strerror(errno));
    return -1;
  }
  u->fd = fd;
  u->nfiles++;
  return 0;
}

static int on_data(void *arg, const char *p, size_t n) {
  struct upload *u = arg;
  if (u->fd >= 0) {
    while (n) {
      ssize_t k = write(u->fd, p, n);
      if (k < 0 && errno == EINTR)
        continue;
      if (k <= 0) {
        u->io_error = 1;
        log_error(NULL, NULL, "upload: writing %s: %s", u->files[u->nfiles - 1].path,
                  strerror(errno));
        return -1;
      }
      u->files[u->nfiles - 1].size += (size_t)k;
      p += k;
      n -= (size_t)k;
    }
    return 0;
  }
  if (u->val_len + n + 1 > u->val_cap) {
    size_t cap = u->val_cap ? u->val_cap : 256;
    while (cap < u->val_len + n + 1)
      cap *= 2;
    if (hold(u, cap - u->val_cap) < 0)
      return -1;
    char *v = realloc(u->val, cap);
    if (!v)
      return -1;
    u->val = v;
    u->val_cap = cap;
  }
  memcpy(u->val + u->val_len, p, n);
  u->val_len += n;
  return 0;
}

static int on_end(void *arg) {
  struct upload *u = arg;
  if (u->fd >= 0) {
    close(u->fd);
    u->fd = -1;
    return 0;
  }
  json_t *v = json_stringn(u->val ? u->val : "", u->val_len);
  if (!v) /* not UTF-8: kept as it is not possible in a JSON string */
    v = json_null();
  json_object_set_new(u->fields, u->name ? u->name : "", v);
  return 0;
}

struct upload *upload_new(struct host *h, const char *boundary) {
  struct upload *u = calloc(1, sizeof *u);
  if (!u)
    return NULL;
  static const struct multipart_cb cb = {on_begin, on_data, on_end};
  u->h = h;
  u->fd = -1;
  u->fields = json_object();
  u->mp = multipart_new(boundary, &cb, u);
  if (!u->fields || !u->mp || !plugins_run_dir(h->plugins)) {
    upload_free(u);
    return NULL;
  }
  /* The parser's buffer. */
  h->http_body_bytes += MULTIPART_HEAD_MAX + 16384;
  u->held += MULTIPART_HEAD_MAX + 16384;
  return u;
}

int upload_feed(struct upload *u, const char *p, size_t n, char *err, size_t errlen) {
  if (multipart_feed(u->mp, p, n, err, errlen) == 0)
    return 0;
  return u->mem_error ? -2 : u->io_error ? -3 : -1;
}

int upload_finish(struct upload *u, char *err, size_t errlen) {
  return multipart_finish(u->mp, err, errlen);
}

json_t *upload_fields(struct upload *u) {
  return u->fields;
}

const cloud_file *upload_files(struct upload *u, size_t *count) {
  *count = u->nfiles;
  return u->nfiles ? u->files : NULL;
}

void upload_remove(struct upload *u) {
  if (!u)
    return;
  if (u->fd >= 0) {
    close(u->fd);
    u->fd = -1;
  }
  for (size_t i = 0; i < u->nfiles; i++)
    if (u->files[i].path)
      unlink(u->files[i].path);
}

void upload_free(struct upload *u) {
  if (!u)
    return;
  upload_remove(u);
  for (size_t i = 0; i < u->nfiles; i++) {
    free((char *)u->files[i].field);
    free((char *)u->files[i].filename);
    free((char *)u->files[i].content_type);
    free((char *)u->files[i].path);
  }
  multipart_free(u->mp);
  json_decref(u->fields);
  free(u->name);
  free(u->val);
  u->h->http_body_bytes -= u->held;
  free(u);
}
