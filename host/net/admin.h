/* admin.h: the operator's endpoints under /_/: healthz (public), status, users, push.
 * Owns the admin token check and the JSON those endpoints answer. */
#ifndef WSHOST_ADMIN_H
#define WSHOST_ADMIN_H

#include "http.h"

/* Sets a 401/403/404 response and returns 1 when the request may not reach admin_handle. */
int admin_refuse(struct http_req *r);
/* Answers an admin request (sets the response). */
void admin_handle(struct http_req *r);
/* The two above as http.c's admin area (main.c sets host->admin_area to it). */
extern const struct http_area admin_area;
/* Sets h->admin_token from the config or from <db dir>/admin-token, creating it (0600) with a
 * random token when missing. 0 or -errno. */
int admin_token_init(struct host *h);
/* Constant-time string compare: 1 when equal. */
int admin_token_equal(const char *a, const char *b);

#endif
