/* api.h: the table of host functions handed to every plugin (cloud_api), and cloud_shared.
 * Owns the bridge from the plugin's cloud_* calls to the host's modules. */
#ifndef WSHOST_API_H
#define WSHOST_API_H

#include "host.h"

/* The table plugins get. api_bind must have been called first. */
const cloud_api *api_table(void);
/* Points the table's functions at h (they have no context argument of their own). */
void api_bind(struct host *h);
const char *api_strerror(int code);
/* In a worker process (--isolation process): every plugin's table becomes `with`. */
void api_table_replace(const cloud_api *with);

/* cloud_invoke: how deep calls may nest (the worker's side keeps the same bound). */
#define API_INVOKE_DEPTH 8
/* cloud_invoke's result from a response body: JSON null for 204 or an empty body, parsed JSON,
 * else a string; CLOUD_EINVAL for bytes that are neither. result may be NULL (then 0). */
int api_invoke_result(const char *body, size_t len, int status, json_t **result);
/* cloud_sockets_each: this node's open sockets as [[id, user id], ...] (a snapshot), and the
 * walk of such a list through fn (stops when fn returns non-zero): how many calls. */
int api_sockets_each_list(struct host *h, json_t **out);
int api_sockets_walk(json_t *list, int (*fn)(cloud_socket, const char *, void *), void *arg);
/* cloud_db: the calling thread's handle on --app-db (any thread, also in a worker). */
struct sqlite3 *api_db(void);

#endif
