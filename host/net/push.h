/* push.h: a push whose caller waits for the outcome (POST /_/push and the SDK's
 * cloud_deferred_send_to_user): one status rule, answered once the cluster answered. */
#ifndef WSHOST_PUSH_H
#define WSHOST_PUSH_H

#include "cluster.h"
#include "host.h"

/* Sends to every live socket of the user on every node, or queues it, and calls
 * done(arg, status, body) once with the outcome (body is the caller's to decref):
 *   200 {"delivered": n}  n sockets here + nodes reached elsewhere; 0 = queued in the outbox
 *   404 no such user, 507 outbox full, 503 cluster or store unavailable (not queued)
 * Without --redis done runs before this returns; with it, once Redis replied. Loop thread. */
void push_answered(struct host *h, const char *user_id, const void *data, size_t len, int is_binary,
                   cluster_push_done done, void *arg);

/* push_answered whose outcome completes the deferred response d (its JSON body as above).
 * 0, CLOUD_EINVAL (d is not an open deferred response, bad arguments), CLOUD_ENOMEM. */
int push_deferred(struct host *h, cloud_deferred *d, const char *user_id, const void *data,
                  size_t len, int is_binary);

/* A cluster_push_done callback that completes the deferred response d with status and the JSON
 * body: push_complete(push_completer(h, d), status, body). NULL when out of memory. */
void *push_completer(struct host *h, cloud_deferred *d);
void push_complete(void *completer, int status, json_t *body);

#endif
