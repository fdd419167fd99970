/* fuzz_http: everything a client's request line and body reach before a plugin runs:
 * http_route, url_decode, query_parse and body_parse, on arbitrary bytes split into parts
 * at NUL bytes: path \0 query \0 content-type \0 body. Besides "no crash, no leak, no UB",
 * it checks the routing contract of CONTRACT 5: only [A-Za-z0-9_-]{1,128} names not starting
 * with "__" reach the plugin loader. */
#include "http_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      __builtin_trap();                                                                            \
  } while (0)

/* Every value of a parsed query or urlencoded body is a string or an array of strings. */
static void check_strings(json_t *obj) {
  const char *k;
  json_t *v;
  CHECK(json_is_object(obj));
  json_object_foreach(obj, k, v) {
    CHECK(k && *k);
    if (json_is_array(v)) {
      size_t i;
      json_t *e;
      CHECK(json_array_size(v) >= 2);
      json_array_foreach(v, i, e) CHECK(json_is_string(e));
    } else
      CHECK(json_is_string(v));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *part[4] = {"", "", "", ""};
  size_t plen[4] = {0, 0, 0, 0};
  char *copy = malloc(size + 1);
  if (!copy)
    return 0;
  memcpy(copy, data, size);
  copy[size] = 0;
  size_t start = 0;
  int n = 0;
  for (size_t i = 0; i <= size && n < 4; i++)
    if (i == size || copy[i] == 0) {
      part[n] = copy + start;
      plen[n] = i - start;
      n++;
      start = i + 1;
    }
  if (n == 4) /* the body is the rest, NULs and all */
    plen[3] = size - (size_t)(part[3] - copy);

  /* Route: name gets exactly the FN_NAME_MAX + 1 bytes the header promises to need. */
  char *name = malloc(FN_NAME_MAX + 1);
  const char *path = part[0];
  enum route_kind k = http_route(path, name);
  if (k == ROUTE_FUNCTION) {
    size_t nl = strlen(name);
    CHECK(fn_name_valid(name, nl));
    CHECK(!(name[0] == '_' && name[1] == '_'));
    CHECK(path[0] == '/' && !strncmp(path + 1, name, nl));
    CHECK(path[1 + nl] == 0 || (path[1 + nl] == '/' && path[2 + nl] == 0));
    CHECK(!strchr(name, '.') && !strchr(name, '/') && !strchr(name, '%'));
  } else if (k == ROUTE_ADMIN) {
    CHECK(!strncmp(path, "/_/", 3));
    CHECK(strlen(name) <= FN_NAME_MAX);
  } else
    CHECK(k == ROUTE_NOT_FOUND);
  free(name);

  /* url_decode never grows its input; out is NUL-terminated. */
  char *out = malloc(plen[0] + 1);
  for (int plus = 0; plus < 2; plus++) {
    int r = url_decode(path, plen[0], out, plus);
    CHECK(r == -1 || ((size_t)r <= plen[0] && out[r] == 0));
  }
  free(out);

  json_t *q = query_parse(part[1], plen[1]);
  if (q) {
    check_strings(q);
    char *s = json_dumps(q, JSON_COMPACT);
    CHECK(s);
    free(s);
    json_decref(q);
  }

  json_t *body = NULL;
  char err[256] = "";
  const char *ctypes[] = {part[2], "application/json", "application/x-www-form-urlencoded"};
  for (int i = 0; i < 3; i++) {
    err[0] = 0;
    int r = body_parse(ctypes[i], part[3], plen[3], &body, err, sizeof err);
    CHECK(r == 0 || r == -1);
    if (r < 0)
      CHECK(!body && err[0]);
    if (body && i == 2)
      check_strings(body);
    json_decref(body);
    body = NULL;
  }
  free(copy);
  return 0;
}
