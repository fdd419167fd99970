/* upload: what a multipart/form-data request brought: the fields (ctx->body) and, per file,
 * its field, filename, type, size, the temp file's mode and folder, and an FNV-1a hash of
 * its bytes read back from ctx->files[i].path. */
#include <cloud.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static json_t *describe(const cloud_file *f) {
  unsigned long long hash = 1469598103934665603ull, bytes = 0;
  int fd = open(f->path, O_RDONLY);
  struct stat st = {0};
  if (fd >= 0) {
    fstat(fd, &st);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
      for (ssize_t i = 0; i < n; i++)
        hash = (hash ^ (unsigned char)buf[i]) * 1099511628211ull;
      bytes += (unsigned long long)n;
    }
    close(fd);
  }
  char h[32], mode[8];
  snprintf(h, sizeof h, "%016llx", hash);
  snprintf(mode, sizeof mode, "%o", (unsigned)(st.st_mode & 0777));
  return json_pack("{ss ss ss? sI sI ss ss ss}", "field", f->field, "filename", f->filename,
                   "content_type", f->content_type, "size", (json_int_t)f->size, "read",
                   (json_int_t)bytes, "fnv", h, "mode", mode, "path", f->path);
}

CLOUD_FUNCTION(ctx) {
  if (ctx->socket.id)
    return 0;
  json_t *files = json_array();
  size_t n =
      ctx->size >= offsetof(FunctionContext, files_count) + sizeof(size_t) ? ctx->files_count : 0;
  for (size_t i = 0; i < n; i++)
    json_array_append_new(files, describe(&ctx->files[i]));
  return cloud_response_json(
      ctx, 200,
      json_pack("{sO? so sb}", "fields", ctx->body, "files", files, "raw", ctx->body_raw != NULL));
}
