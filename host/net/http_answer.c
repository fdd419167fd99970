/* http_answer.c: whole responses written to an upgrade request (refusals, the interceptor's and
 * the connection event's answers) before lws has a request object. Owns the status line. */
#include "http_answer.h"

#include <stdlib.h>
#include <string.h>

int http_reject(struct lws *wsi, int status, const char *message) {
  return http_reject_with(wsi, status, message, NULL, NULL);
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Error";
  }
}

int http_answer(struct lws *wsi, int status, const char *ctype, const void *body, size_t len) {
  return http_answer_extra(wsi, status, ctype, body, len, NULL);
}

int http_answer_extra(struct lws *wsi, int status, const char *ctype, const void *body, size_t len,
                      json_t *extra) {
  unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE, *p = start,
                                     *end = buf + sizeof buf - 1;
  /* Our own status line: at upgrade time lws has not recorded the request's version yet and
   * would answer "HTTP/1.0", which WebSocket clients (RFC 6455 wants 1.1) reject as invalid. */
  p += lws_snprintf((char *)p, (size_t)(end - p), "HTTP/1.1 %d %s\r\n", status,
                    reason_phrase(status));
  if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)ctype,
                                   (int)strlen(ctype), &p, end) ||
      lws_add_http_header_content_length(wsi, (lws_filepos_t)len, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (unsigned char *)"close", 5, &p, end))
    return -1;
  size_t i;
  json_t *kv;
  json_array_foreach(extra, i, kv) {
    char name[128];
    const char *v = json_string_value(json_array_get(kv, 1));
    snprintf(name, sizeof name, "%s:", json_string_value(json_array_get(kv, 0)));
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v,
                                    (int)strlen(v), &p, end))
      return -1;
  }
  if (lws_finalize_write_http_header(wsi, start, &p, end))
    return -1;
  unsigned char *b = malloc(LWS_PRE + len + 1);
  if (!b)
    return -1;
  memcpy(b + LWS_PRE, body, len);
  int n = lws_write(wsi, b + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
  free(b);
  return n < (int)len ? -1 : 1;
}

int http_reject_with(struct lws *wsi, int status, const char *message, const char *header,
                     const char *value) {
  char body[256];
  metrics_upgrade_refused(&((struct host *)lws_context_user(lws_get_context(wsi)))->metrics, status,
                          message);
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", message);
  json_t *extra = header ? json_pack("[[ss]]", header, value) : NULL;
  if (extra) /* lws wants "name:" and adds its colon itself here: drop ours */
    json_array_set_new(json_array_get(extra, 0), 0,
                       json_stringn(header, strlen(header) - (header[strlen(header) - 1] == ':')));
  int rc = http_answer_extra(wsi, status, "application/json", body, (size_t)n, extra);
  json_decref(extra);
  return rc;
}
