/* http_parse.c: pure functions from request text to FunctionContext values: function names,
 * routes, query strings and bodies. Everything a client sends passes here first. */
#include "http_parse.h"

#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int fn_name_valid(const char *name, size_t len) {
  if (len < 1 || len > FN_NAME_MAX)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-'))
      return 0;
  }
  return 1;
}

enum route_kind http_route(const char *path, char *name) {
  if (!path || path[0] != '/')
    return ROUTE_NOT_FOUND;
  path++;
  if (path[0] == '_' && path[1] == '/') {
    size_t n = strlen(path + 2);
    if (n > FN_NAME_MAX * 2)
      return ROUTE_NOT_FOUND;
    memcpy(name, path + 2, n < FN_NAME_MAX ? n + 1 : FN_NAME_MAX);
    name[n < FN_NAME_MAX ? n : FN_NAME_MAX] = 0;
    return ROUTE_ADMIN;
  }
  size_t n = strlen(path);
  if (n && path[n - 1] == '/') /* "/echo/" is "/echo" */
    n--;
  if (!fn_name_valid(path, n) || (n >= 2 && path[0] == '_' && path[1] == '_'))
    return ROUTE_NOT_FOUND;
  memcpy(name, path, n);
  name[n] = 0;
  return ROUTE_FUNCTION;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int url_decode(const char *in, size_t len, char *out, int plus_is_space) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (in[i] == '%') {
      if (len - i < 3)
        return -1;
      int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
      if (h < 0 || l < 0)
        return -1;
      out[o++] = (char)(h * 16 + l);
      i += 2;
    } else if (in[i] == '+' && plus_is_space)
      out[o++] = ' ';
    else
      out[o++] = in[i];
  }
  out[o] = 0;
  return (int)o;
}

/* Sets key to val (stolen); a repeated key becomes an array of its values. */
static int add_value(json_t *obj, const char *key, json_t *val) {
  json_t *old = json_object_get(obj, key);
  if (!old)
    return json_object_set_new(obj, key, val) ? -1 : 0;
  if (json_is_array(old))
    return json_array_append_new(old, val) ? -1 : 0;
  json_t *arr = json_array();
  if (!arr || json_array_append(arr, old) || json_array_append_new(arr, val)) {
    json_decref(arr);
    json_decref(val);
    return -1;
  }
  return json_object_set_new(obj, key, arr) ? -1 : 0;
}

int query_add(json_t *obj, const char *kv, size_t len, int decode) {
  const char *eq = memchr(kv, '=', len);
  size_t klen = eq ? (size_t)(eq - kv) : len;
  const char *v = eq ? eq + 1 : kv + len;
  size_t vlen = kv + len - v;
  if (!klen)
    return 0; /* "=x" and "&&" carry nothing */
  /* Heap, not stack: an urlencoded body may be megabytes. */
  char *kbuf = malloc(2 * (len + 1)), *vbuf = kbuf ? kbuf + len + 1 : NULL;
  int kn, vn;
  if (!kbuf)
    return -1;
  if (decode) {
    kn = url_decode(kv, klen, kbuf, 1);
    vn = url_decode(v, vlen, vbuf, 1);
  } else {
    memcpy(kbuf, kv, klen);
    kbuf[klen] = 0;
    memcpy(vbuf, v, vlen);
    vbuf[vlen] = 0;
    kn = (int)klen;
    vn = (int)vlen;
  }
  /* Keys and values are JSON strings: bytes that are not UTF-8 make the request invalid. */
  json_t *val = kn < 0 || vn < 0 ? NULL : json_stringn(vbuf, vn);
  if (!val || memchr(kbuf, 0, kn)) {
    json_decref(val);
    free(kbuf);
    return -1;
  }
  int rc = add_value(obj, kbuf, val);
  free(kbuf);
  return rc;
}

json_t *query_parse(const char *qs, size_t len) {
  json_t *obj = json_object();
  if (!obj)
    return NULL;
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || qs[i] == '&') {
      if (i > start && query_add(obj, qs + start, i - start, 1) < 0) {
        json_decref(obj);
        return NULL;
      }
      start = i + 1;
    }
  }
  return obj;
}

/* The media type of a content-type header, without parameters, compared case-blind. */
static int media_is(const char *ct, const char *type) {
  size_t n = strlen(type);
  while (*ct == ' ')
    ct++;
  return !strncasecmp(ct, type, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

int body_parse(const char *content_type, const char *raw, size_t len, json_t **out, char *err,
               size_t errlen) {
  *out = NULL;
  if (!len || !content_type)
    return 0;
  if (media_is(content_type, "application/json")) {
    json_error_t e;
    *out = json_loadb(raw, len, JSON_DECODE_ANY, &e);
    if (!*out) {
      snprintf(err, errlen, "invalid JSON body: %s at line %d column %d", e.text, e.line, e.column);
      return -1;
    }
    return 0;
  }
  if (media_is(content_type, "application/x-www-form-urlencoded")) {
    *out = query_parse(raw, len);
    if (!*out) {
      snprintf(err, errlen, "invalid urlencoded body");
      return -1;
    }
  }
  return 0;
}

int http_response_header_ok(const char *name, const char *value) {
  if (!name || !value || !*name || strlen(name) > 100 || strlen(value) > 4000)
    return 0;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_'))
      return 0;
  for (const char *p = value; *p; p++)
    if (*p == '\r' || *p == '\n')
      return 0;
  return strcasecmp(name, "content-length") && strcasecmp(name, "request-id") &&
         strcasecmp(name, "transfer-encoding") && strcasecmp(name, "connection");
}
