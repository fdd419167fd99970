/* http_parse.h: pure functions from request text to FunctionContext values (no lws here,
 * so the unit tests and the fuzzers reach them directly). */
#ifndef WSHOST_HTTP_PARSE_H
#define WSHOST_HTTP_PARSE_H

#include <jansson.h>
#include <stddef.h>

#define FN_NAME_MAX 128

/* 1 if name[0..len) is a function name: [A-Za-z0-9_-]{1,128}. */
int fn_name_valid(const char *name, size_t len);
/* 1 when a function may set this response header: a token name, a value without CR or LF
 * (no response splitting), neither too long, and not one whose framing the host owns
 * (content-length, request-id, transfer-encoding, connection). The one rule, in-process and
 * in a worker (cloud_response_header). */
int http_response_header_ok(const char *name, const char *value);

enum route_kind { ROUTE_NOT_FOUND, ROUTE_FUNCTION, ROUTE_ADMIN };
/* Maps a request path to a function name (copied into name, FN_NAME_MAX+1 bytes) or to the
 * admin area ("/_/..."; name gets the rest). Names starting with "__" are not routable. */
enum route_kind http_route(const char *path, char *name);

/* Decodes %XX and '+' in place-length text into out (size >= len+1). Returns the length, or
 * -1 on a bad escape. */
int url_decode(const char *in, size_t len, char *out, int plus_is_space);

/* Adds one "key=value" (still encoded when decode is set) to obj; a repeated key becomes an
 * array of its values. 0 or -1. */
int query_add(json_t *obj, const char *kv, size_t len, int decode);
/* "a=1&b=2" to an object of strings. NULL on a bad escape or out of memory. */
json_t *query_parse(const char *qs, size_t len);

/* Parses a request body by content type: application/json (any JSON value; malformed: -1
 * with a message in err), application/x-www-form-urlencoded (an object of strings). Other
 * types give *out = NULL and 0. An empty body gives NULL and 0. */
int body_parse(const char *content_type, const char *raw, size_t len, json_t **out, char *err,
               size_t errlen);

#endif
