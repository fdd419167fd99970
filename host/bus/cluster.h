/* cluster.h: many hosts acting as one on Redis (--redis, docs/SCALING.md): node identity and
 * presence, users and their token hashes, pushes, the outbox, rooms and broadcast cluster-wide. */
#ifndef WSHOST_CLUSTER_H
#define WSHOST_CLUSTER_H

#include "host.h"

/* One queued message handed to the drain (ws.c). */
struct cluster_row {
  int64_t id; /* the outbox sequence number: the drain's tag, acknowledged in order */
  const void *data;
  size_t len;
  int is_binary;
};

#define CLUSTER_ROWS_UNAVAILABLE (-2)

/* Local delivery, filled in by main.c: the cluster reaches the connection layer only through
 * these, so calls keep pointing one way (ws/rooms -> cluster -> bus). */
struct cluster_ops {
  /* Sockets of the user on this node reached; *held counts those draining the outbox. row:
   * the outbox row that holds this message too (0: none): a connection whose drain loaded it
   * already has it and counts as reached. */
  int (*user_deliver)(struct host *h, const char *user_id, const void *data, size_t len,
                      int is_binary, int64_t row, int *held);
  /* Rows of the outbox for connection conn_id; n < 0: Redis did not answer (try again), or
   * CLUSTER_ROWS_UNAVAILABLE: it is down (stop draining; drain_restart when it is back). */
  void (*drain_rows)(struct host *h, uint64_t conn_id, const struct cluster_row *rows, int n);
  void (*drain_restart)(struct host *h, uint64_t conn_id);
  /* Something was queued behind a drain: connections of the user drain again. */
  void (*drain_kick)(struct host *h, const char *user_id);
  int (*room_deliver)(struct host *h, const char *room, const void *data, size_t len,
                      int is_binary);
  int (*all_deliver)(struct host *h, const void *data, size_t len, int is_binary);
  /* [{"user_id","sockets"}] of the room on this node (new reference). */
  json_t *(*room_members_local)(struct host *h, const char *room);
  /* Closes the user's sockets on this node (a revoke heard from another node): how many. */
  int (*user_close)(struct host *h, const char *user_id, int code, const char *reason);
};

/* Joins the cluster when cfg.redis is set (h->cluster stays NULL otherwise: no hiredis call at
 * all). Needs h->loop. 0 or negative (a bad URL). */
int cluster_open(struct host *h, const struct cluster_ops *ops);
/* The admin API's revoke on every node: the user's entry in Redis loses its hash, and every
 * node that has the user drops its token (checked against Redis) and closes its sockets. */
int cluster_user_revoke(struct host *h, const char *user);
void cluster_close(struct host *h);

/* --- hooks (each a no-op without --redis; callers check h->cluster) --- */

/* cloud_send_to_user in a cluster: local sockets now, other nodes (and the outbox when no
 * socket anywhere took it) through one Lua script. Sockets reached on this node (0 when only
 * Redis took it), or CLOUD_EUNAVAIL when Redis is down and no local socket took it. */
int cluster_send_to_user(struct host *h, const char *user_id, const void *data, size_t len,
                         int is_binary);
/* The same with the answer after Redis replied (/_/push, cloud_deferred_send_to_user): done(arg,
 * status, json) gets 200 {"delivered": sockets here + nodes that acknowledged taking it within
 * a second (0: queued; a push to another node stays in the user's outbox until it did)}, 404,
 * 507 or 503. During the host's first connection attempt it waits for it. */
typedef void (*cluster_push_done)(void *arg, int status, json_t *body);
void cluster_push(struct host *h, const char *user_id, const void *data, size_t len, int is_binary,
                  cluster_push_done done, void *arg);

/* A user was created here (token: the resume token, or NULL for an app-bound id). */
void cluster_user_created(struct host *h, const char *user_id, const char *token);
/* The user's first socket on this node opened (online 1) or its last closed (0). */
void cluster_user_online(struct host *h, const char *user_id, int online);

/* The outbox drain in a cluster: rows with id > after, at most max, come back through
 * ops->drain_rows. */
void cluster_outbox_load(struct host *h, uint64_t conn_id, const char *user_id, int64_t after,
                         int max);
void cluster_outbox_ack(struct host *h, const char *user_id, int64_t upto);
/* Pushes of this node queued behind a drain of the user and not yet answered by Redis. */
int cluster_outbox_pending(struct host *h, const char *user_id);

/* The room's local membership changed; exists: it still has local members. */
void cluster_room_changed(struct host *h, const char *room, int exists);
void cluster_room_send(struct host *h, const char *room, const void *data, size_t len,
                       int is_binary);
void cluster_broadcast(struct host *h, const void *data, size_t len, int is_binary);
/* local (this node's members, stolen) merged with the other nodes' as last read from Redis
 * (refreshed in the background, at most every 500 ms). New reference. */
json_t *cluster_room_members(struct host *h, const char *room, json_t *local);
/* The admin /_/users?cluster=1: done gets 200 {"users": ids online on any live node, "node",
 * "nodes": the live node ids} once Redis answered, or 503. */
void cluster_users(struct host *h, cluster_push_done done, void *arg);

#endif
