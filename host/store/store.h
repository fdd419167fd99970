/* store.h: SQLite persistence of users, connections and the outbox (docs/INTERNALS.md, "The
 * store"). Owns the database handle, the schema and its migrations, and write batching. Nothing
 * else in the host talks SQL. */
#ifndef WSHOST_STORE_H
#define WSHOST_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ID_MAX 128   /* longest user id, app-bound ids included */
#define STORE_ID_LEN 22    /* host ids: 16 random bytes, base64url, no padding */
#define STORE_TOKEN_LEN 43 /* tokens: 32 random bytes, base64url, no padding */

struct store;
struct metrics_hist;

/* 1 if id is a user id the host accepts from a client or a plugin (a resume's ?user_id=,
 * cloud_bind_user, cloud_send_to_user): [A-Za-z0-9_.@:-]{1,128}. The one definition. */
int user_id_valid(const char *id);

struct store_options {
  const char *path;       /* database file; ":memory:" for no persistence */
  int outbox_max;         /* messages queued per user (default 1000) */
  int64_t outbox_ttl_s;   /* seconds a queued message lives (default 7 days) */
  int batch_ms;           /* how long connection writes may wait for their commit */
  int64_t user_ttl_s;     /* host-assigned users idle this long with nothing queued are pruned
                             (default 30 days) */
  int64_t conn_history_s; /* closed connection rows kept this long (default 7 days) */
  int64_t max_users;      /* users rows at most (default 1 000 000, < 0: no bound); past it
                             the longest idle empty host-assigned users are evicted */
  /* Each commit's duration goes here (GET /_/metrics); NULL: nowhere. */
  struct metrics_hist *commit_latency;
};

/* Opens (creating and migrating the schema, WAL mode) and starts a new boot: connections of
 * earlier boots are marked closed. 0 or -errno / CLOUD_EIO; *out set on success. */
int store_open(struct store **out, const struct store_options *opt);
/* Creates the folder of a database file (mkdir -p, mode 0700 for what it creates); nothing for
 * ":memory:". The one place the host makes that folder. 0 or -errno. */
int store_make_dir(const char *path);
/* One host per database: an exclusive OFD lock on <db>.lock (created 0600 beside it, with the
 * holder's pid inside), taken before anything else is written. Held by the returned descriptor
 * (and its copies in forked children) until they are all closed. Waits up to wait_ms for a
 * holder that is going away. The descriptor, -EBUSY with *holder set (0 if unknown) when
 * another process holds it, or -errno. ":memory:" has nothing to lock: 0 is not returned then,
 * -ENOENT is. */
int store_lock(const char *db_path, int wait_ms, int *holder);
/* Commits what is pending and closes. NULL is fine. */
void store_close(struct store *s);
/* The boot id of this process (random, hex). */
const char *store_boot_id(const struct store *s);

/* A fresh secret like a resume token (32 CSPRNG bytes, base64url) into out
 * (STORE_TOKEN_LEN+1 bytes). 0 or negative. Used for the admin token too. */
int store_new_token(char *out);
/* Fresh id and token from the OS CSPRNG; inserts the user with the token's SHA-256. id_out
 * needs STORE_ID_LEN+1 bytes, token_out STORE_TOKEN_LEN+1. 0 or negative. The insert is
 * durable after the next store_sync (group commit). */
int store_user_create(struct store *s, char *id_out, char *token_out);
/* The two halves of store_user_create: a fresh id, token and the token's SHA-256 (32 bytes)
 * from the CSPRNG, nothing stored; then the insert (durable after the next store_sync). An
 * upgrade decides between them whether the user exists at all (cloud_reject). */
int store_user_new(char *id_out, char *token_out, uint8_t *hash_out);
int store_user_insert(struct store *s, const char *id, const uint8_t *hash);
/* 1 when the user exists and token matches its stored hash (constant-time compare), 0 when
 * not (unknown id, no token stored, wrong token), negative on store failure. */
int store_user_check(struct store *s, const char *id, const char *token);
/* Drops the user's resume token (the admin API's revoke): no token resumes it again. 1 when a
 * token was dropped, 0 when it had none (unknown, app-bound or already revoked), -errno on
 * failure. Durable when it returns 1. */
int store_user_revoke(struct store *s, const char *id);
/* Rooms a user holds (cloud_user_join): add (add 1) or drop a row, in the pass's commit. 1 when
 * it changed, 0 when not, -errno on failure. */
int store_user_room(struct store *s, const char *user_id, const char *room, int add);
/* 1 if any user holds a room (read once at start), 0 if none, -errno. */
int store_user_rooms_any(struct store *s);
/* The rooms the user holds, sorted, at most limit: a new JSON array, NULL on failure. */
json_t *store_user_rooms(struct store *s, const char *user_id, int limit);
/* A room's history: keep its last last_n frames (0: keep none, and drop what was kept). */
int store_room_keep(struct store *s, const char *room, int last_n);
/* Every kept room, once, at start: its last_n, newest seq, frames and payload bytes kept. */
typedef void (*store_kept_fn)(void *arg, const char *room, int last_n, int64_t seq, int64_t frames,
                              int64_t bytes);
int store_room_kept_each(struct store *s, store_kept_fn fn, void *arg);
/* A frame sent to a kept room, as number seq; and the frames at or below upto dropped. Both in
 * the pass's commit. 0 or -errno. */
int store_room_history_add(struct store *s, const char *room, int64_t seq, const void *data,
                           size_t len, int is_binary);
int store_room_history_trim(struct store *s, const char *room, int64_t upto);
/* The oldest kept frame: its seq (0 if none) and payload bytes, or -errno. */
int64_t store_room_history_oldest(struct store *s, const char *room, int64_t *bytes);
/* The last n kept frames, oldest first, to fn (which stops the walk by returning < 0): how
 * many fn took, or -errno. */
typedef int (*store_frame_fn)(void *arg, const void *data, size_t len, int is_binary);
int store_room_history_each(struct store *s, const char *room, int n, store_frame_fn fn, void *arg);
/* Creates the user without a token if absent (cloud_bind_user). 0 or negative. */
int store_user_ensure(struct store *s, const char *id);
/* A user created on another node of the cluster: inserted with its token hash (SHA256_LEN
 * bytes, NULL for an app-bound id) when absent, making room at --max-users as a new user does;
 * a user this node has is never changed (its hash stays). 0, CLOUD_EFULL, or negative. */
int store_user_import(struct store *s, const char *id, const uint8_t *hash);
/* 1 if the user exists, 0 if not, negative on failure. */
int store_user_exists(struct store *s, const char *id);

/* A connection row: opened now for this boot. Returns the row id (> 0) or negative. */
int64_t store_conn_open(struct store *s, const char *user_id, const char *remote_addr);
/* A fresh user (the id, token hash of store_user_new) and its first connection row, one
 * write: store_user_insert then store_conn_open. Returns the row id (> 0) or negative; the
 * user is durable after the next store_sync, like store_user_insert's. */
int64_t store_user_conn_open(struct store *s, const char *id, const uint8_t *hash,
                             const char *remote_addr);
/* Marks the row closed now and sets user_id's last_seen (idempotent: a row already closed
 * changes nothing). user_id is the row's user. The write waits in memory for the next commit
 * (the loop pass's store_sync, or store_flush within the batch time), not a statement now;
 * the admin views (store_users_json, store_user_json, store_counts) apply it before they read.
 * After a crash store_open closes what it finds open. */
int store_conn_close(struct store *s, int64_t conn_row, const char *user_id);

/* Queues a message for an offline user. 0, CLOUD_ENOUSER, CLOUD_EFULL, or negative.
 * Committed before it returns: a queued message survives kill -9. */
int store_outbox_push(struct store *s, const char *user_id, const void *data, size_t len,
                      int is_binary);
/* Calls fn for unexpired messages of the user with id > after, oldest first, at most max (0:
 * all); fn returns non-zero to stop (that row is not counted). Rows stay until acknowledged;
 * rows acknowledged but not yet deleted are skipped. Returns how many fn took, or negative. */
typedef int (*store_outbox_row_fn)(void *arg, int64_t id, const void *data, size_t len,
                                   int is_binary);
int store_outbox_load(struct store *s, const char *user_id, int64_t after, int max,
                      store_outbox_row_fn fn, void *arg);
/* The user's rows up to id `upto` reached the socket: deleted with the next batch commit, and
 * kept as a write in memory (retried) while the database is locked. 0 or negative. */
int store_outbox_ack(struct store *s, const char *user_id, int64_t upto);
/* store_outbox_load of everything, then an ack of what fn took, committed (tests, tools).
 * Calls fn for each unexpired message of the user, oldest first, then deletes those
 * delivered. fn returns 0 to go on, non-zero to stop (that message and later stay queued).
 * Returns the number delivered or negative. */
typedef int (*store_outbox_fn)(void *arg, const void *data, size_t len, int is_binary);
int store_outbox_drain(struct store *s, const char *user_id, store_outbox_fn fn, void *arg);
/* Number of messages queued for a user (expired ones excluded). */
int store_outbox_count(struct store *s, const char *user_id);

/* Commits the open batch if it holds writes that must be durable before a client sees their
 * effect (new users). The host calls it before writing to any socket (server.c, the one
 * place every outgoing frame passes); -EAGAIN while the database is locked: hold the bytes. */
int store_sync(struct store *s);
/* The same for one connection's bytes: commits up to the user created when `seq` (from
 * store_user_seq when the bytes were queued) was current; 0 when done, -EAGAIN while the
 * database is locked. Other connections' frames leave meanwhile. */
int store_sync_upto(struct store *s, uint64_t seq);
/* 1 when every user created up to `seq` is committed (nothing is committed by asking). */
int store_synced_upto(const struct store *s, uint64_t seq);
/* A sequence number covering every user created so far. */
uint64_t store_user_seq(const struct store *s);
/* Commits pending batched writes now. Called by the batch timer and at shutdown. */
int store_flush(struct store *s);
/* Milliseconds until pending writes must be flushed, -1 if nothing is pending. */
int store_flush_due_ms(const struct store *s);
/* One maintenance step: deletes a batch of expired outbox rows, closed connections older than
 * conn_history_s and users idle past user_ttl_s. Returns rows deleted or negative. */
int store_expire(struct store *s);
/* Called often from the loop; at most once a second does a few store_expire steps and checks
 * that the database file is still the one opened. Returns rows deleted. */
int store_maintain(struct store *s);
/* Why the store refuses new work (file deleted, replaced, unwritable), or NULL when healthy. */
const char *store_fault(const struct store *s);
/* 1 while writes wait for a lock someone else holds on the database. */
int store_waiting(const struct store *s);

/* Admin views. Each returns a new reference, or NULL on failure. */
json_t *store_users_json(struct store *s, int online_only, int limit);
json_t *store_user_json(struct store *s, const char *id); /* object or NULL */
/* Counts for /_/status: users, online users, open connections, queued messages. */
int store_counts(struct store *s, int64_t *users, int64_t *online, int64_t *conns, int64_t *queued);

/* Bytes SQLite holds in memory (page cache, statements), for /_/status. */
int64_t store_memory_used(void);

#endif
