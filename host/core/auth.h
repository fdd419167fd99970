/* auth.h: who is calling: JWTs on requests and upgrades (auth_jwt.c does the crypto) and the
 * functions' configuration file. Owns h->jwt and h->env; the lws glue calls in, never out. */
#ifndef WSHOST_AUTH_H
#define WSHOST_AUTH_H

#include "host.h"

/* Opens the JWT key and the env file the flags name. 0, or -1 after logging why (the host
 * then refuses to start: a key or a secrets file it cannot use is an operator's mistake). */
int auth_open(struct host *h);
void auth_close(struct host *h);
/* Re-reads --env-file (SIGHUP). A file that fails keeps the values loaded before. */
void auth_env_reload(struct host *h);

/* The token of an "Authorization: Bearer <jwt>" value (NULL for another scheme or none). */
const char *auth_bearer(const char *authorization);
/* Checks a JWT. No token, or no --jwt-* flag: 0 and *claims NULL (the function decides what
 * an anonymous caller may do). A valid one: 0 and *claims, a new reference. A bad one:
 * -1 and *why (logged by the caller with its request id; the token itself never is). */
int auth_check(struct host *h, const char *token, json_t **claims, const char **why);

#endif
