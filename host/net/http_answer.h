/* http_answer.h: whole responses written to an upgrade request (refusals, the interceptor's and
 * the connection event's answers) before lws has a request object. Used by http.c and ws.c. */
#ifndef WSHOST_HTTP_ANSWER_H
#define WSHOST_HTTP_ANSWER_H

#include "host.h"

/* Writes a complete JSON error response now ({"error": message}) and returns 1, the value
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE wants for "refused, response written". */
int http_reject(struct lws *wsi, int status, const char *message);
/* The same with one more response header ("name:" with its colon, as lws wants it). */
int http_reject_with(struct lws *wsi, int status, const char *message, const char *header,
                     const char *value);
/* Writes a whole response to an upgrade request (status, a body of type ctype) and returns 1,
 * what CONFIRM_UPGRADE wants for "answered"; -1 when it could not be written. */
int http_answer(struct lws *wsi, int status, const char *ctype, const void *body, size_t len);
/* The same with more headers: extra is an array of [name, value] (no colon), or NULL. */
int http_answer_extra(struct lws *wsi, int status, const char *ctype, const void *body, size_t len,
                      json_t *extra);

#endif
