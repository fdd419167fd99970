/* store.c: SQLite persistence of users, connections and the outbox (docs/INTERNALS.md, "The
 * store"). Owns the database handle, the public schema and its migrations, and write batching. */
#include "store.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloud.h"
#include "log.h"
#include "sha256.h"

#define SCHEMA_VERSION 1
/* The loop's connection waits for a lock held by someone else (an operator's sqlite3 shell, a
 * checkpoint) only this long: a write that cannot proceed is queued and retried (ops below). */
#define BUSY_TIMEOUT_MS 2
#define CKPT_BUSY_TIMEOUT_MS 1000 /* the checkpoint thread may wait: it blocks nobody */
#define RETRY_MIN_MS 20           /* first retry of writes held back by a lock, doubling */
#define RETRY_MAX_MS 500
#define OPS_MAX 200000   /* writes held back at most (~300 bytes each) */
#define PRUNE_BATCH 200  /* rows one maintenance step deletes per table */
#define PRUNE_WINDOW 200 /* users one maintenance step examines */
/* WAL bytes kept after a checkpoint reset it; more is truncated (PRAGMA journal_size_limit). */
#define WAL_SIZE_LIMIT (4 * 1024 * 1024)
#define WAL_LIMIT_STR "4194304"
/* WAL frames (of 4 KB pages): every CKPT_FRAMES more call the checkpoint thread now, while
 * the loop goes on writing; past CKPT_HOLD_FRAMES the loop also holds its writes until one
 * checkpoint copied everything (so the WAL can restart), at most CKPT_HOLD_MS. A hold at every
 * CKPT_FRAMES cost churn ~40% of its rate (greetings wait for the commit the hold delays). */
#define CKPT_FRAMES 1000
#define CKPT_HOLD_FRAMES 3000
#define CKPT_HOLD_MS 250
#define DEFAULT_USER_TTL_S (30 * 24 * 3600)
#define DEFAULT_CONN_HISTORY_S (7 * 24 * 3600)
#define DEFAULT_MAX_USERS 1000000
#define DEFAULT_OUTBOX_MAX 1000
#define DEFAULT_OUTBOX_TTL_S (7 * 24 * 3600)
#define DEFAULT_BATCH_MS 20
#define USER_JSON_CONNS 50 /* most recent connections shown by store_user_json */

/* The public schema (README documents it; tools/wshostctl and its test read it from here, so
 * keep the SCHEMA_V1 markers and one string literal per line).
 * Times are unix milliseconds (INTEGER): connections are often shorter than a second.
 * In sqlite3: SELECT datetime(last_seen / 1000, 'unixepoch') FROM users; */
/* SCHEMA_V1 BEGIN */
static const char schema_v1[] =
    "CREATE TABLE boots (\n"
    "  id TEXT PRIMARY KEY,              -- 32 hex chars, one per host start\n"
    "  pid INTEGER NOT NULL,\n"
    "  started_at INTEGER NOT NULL,\n"
    "  stopped_at INTEGER                -- NULL: running, or it crashed\n"
    ");\n"
    "CREATE TABLE users (\n"
    "  id TEXT PRIMARY KEY,              -- host ids: 22 chars base64url; or app-bound ids\n"
    "  token_hash BLOB,                  -- SHA-256 of the resume token; NULL for app-bound\n"
    "  created_at INTEGER NOT NULL,\n"
    "  last_seen INTEGER                 -- last connect or disconnect; NULL: never connected\n"
    ");\n"
    "CREATE INDEX users_last_seen ON users (last_seen);\n"
    "CREATE TABLE connections (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
    "  boot_id TEXT NOT NULL REFERENCES boots (id),\n"
    "  remote_addr TEXT,\n"
    "  connected_at INTEGER NOT NULL,\n"
    "  disconnected_at INTEGER           -- NULL while open\n"
    ");\n"
    "CREATE INDEX connections_user ON connections (user_id, id);\n"
    "CREATE INDEX connections_open ON connections (user_id) WHERE disconnected_at IS NULL;\n"
    "CREATE TABLE outbox (\n"
    "  id INTEGER PRIMARY KEY,           -- delivery order\n"
    "  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
    "  payload BLOB NOT NULL,            -- text messages are stored as TEXT\n"
    "  is_binary INTEGER NOT NULL,\n"
    "  created_at INTEGER NOT NULL,\n"
    "  expires_at INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX outbox_user ON outbox (user_id, id);\n"
    "CREATE INDEX outbox_expires ON outbox (expires_at);\n"
    "CREATE VIEW online_users (user_id, connections, since) AS\n"
    "  SELECT user_id, count(*), min(connected_at) FROM connections\n"
    "  WHERE disconnected_at IS NULL GROUP BY user_id;\n";
/* SCHEMA_V1 END */
/* Added to v1 without a version bump (new tables change no query on the old ones): rooms a user
 * holds (every socket of the user is in them, sockets that connect later too), and the frames
 * a room keeps for its history (cloud_room_keep / cloud_room_history). */
static const char schema_rooms[] =
    "CREATE TABLE IF NOT EXISTS user_rooms (\n"
    "  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
    "  room TEXT NOT NULL,\n"
    "  PRIMARY KEY (user_id, room)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS room_keep (\n"
    "  room TEXT PRIMARY KEY,\n"
    "  last_n INTEGER NOT NULL            -- frames kept, newest first\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS room_history (\n"
    "  room TEXT NOT NULL,\n"
    "  seq INTEGER NOT NULL,              -- the room's send order\n"
    "  is_binary INTEGER NOT NULL,\n"
    "  payload BLOB NOT NULL,\n"
    "  sent_at INTEGER NOT NULL,\n"
    "  PRIMARY KEY (room, seq)\n"
    ") WITHOUT ROWID;\n";
/* Added to v1 without a version bump (an index changes no query's answer): pruning closed
 * connections by age must not scan the whole table. */
static const char index_closed[] = "CREATE INDEX IF NOT EXISTS connections_closed ON connections "
                                   "(disconnected_at) WHERE disconnected_at IS NOT NULL";

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_USER_INSERT,
  ST_USER_ENSURE,
  ST_USER_IMPORT,
  ST_USER_HASH,
  ST_USER_EXISTS,
  ST_USER_TOUCH,
  ST_CONN_INSERT,
  ST_CONN_CLOSE,
  ST_OUTBOX_COUNT,
  ST_OUTBOX_INSERT,
  ST_OUTBOX_SELECT,
  ST_OUTBOX_DELETE,
  ST_OUTBOX_EXPIRE,
  ST_USERS_ALL,
  ST_USERS_ONLINE,
  ST_USER_ONE,
  ST_USER_CONNS,
  ST_COUNTS,
  ST_CONN_PRUNE,
  ST_USER_PRUNE,
  ST_USER_PRUNE_WINDOW,
  ST_USER_EVICT,
  ST_USER_COUNT,
  ST_CONN_MAX,
  ST_USER_REVOKE,
  ST_UROOM_ADD,
  ST_UROOM_DEL,
  ST_UROOM_OF,
  ST_KEEP_SET,
  ST_KEEP_DEL,
  ST_KEEP_ALL,
  ST_HIST_ADD,
  ST_HIST_TRIM,
  ST_HIST_OLDEST,
  ST_HIST_DROP,
  ST_HIST_LAST,
  ST__N
};

static const char *const stmt_sql[ST__N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_USER_INSERT] =
        "INSERT INTO users (id, token_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?3)",
    [ST_USER_ENSURE] =
        "INSERT OR IGNORE INTO users (id, created_at, last_seen) VALUES (?1, ?2, ?2)",
    /* A user another node of the cluster created (cluster.c): inserted when absent, never
     * changed: a row this node has (an app-bound id without a token above all) keeps its hash. */
    [ST_USER_IMPORT] = "INSERT OR IGNORE INTO users (id, token_hash, created_at, last_seen) "
                       "VALUES (?1, ?2, ?3, ?3)",
    [ST_USER_HASH] = "SELECT token_hash FROM users WHERE id = ?1",
    [ST_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
    [ST_USER_TOUCH] = "UPDATE users SET last_seen = ?2 WHERE id = ?1",
    /* The host numbers connection rows itself, so a row can be named before it is written. */
    [ST_CONN_INSERT] = "INSERT INTO connections (id, user_id, boot_id, remote_addr, connected_at) "
                       "VALUES (?5, ?1, ?2, ?3, ?4)",
    /* The host names the row's user itself (no RETURNING: an ephemeral table per close). */
    [ST_CONN_CLOSE] = "UPDATE connections SET disconnected_at = ?2 "
                      "WHERE id = ?1 AND disconnected_at IS NULL",
    [ST_OUTBOX_COUNT] = "SELECT count(*) FROM outbox WHERE user_id = ?1 AND expires_at > ?2",
    [ST_OUTBOX_INSERT] = "INSERT INTO outbox (user_id, payload, is_binary, created_at, expires_at) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_OUTBOX_SELECT] = "SELECT id, payload, is_binary FROM outbox "
                         "WHERE user_id = ?1 AND expires_at > ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    [ST_OUTBOX_DELETE] = "DELETE FROM outbox WHERE user_id = ?1 AND id <= ?2",
    [ST_OUTBOX_EXPIRE] = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                         "WHERE expires_at <= ?1 LIMIT ?2)",
    [ST_USERS_ALL] =
        "SELECT u.id, u.created_at, u.last_seen, u.token_hash IS NOT NULL, o.connections, o.since "
        "FROM users u LEFT JOIN online_users o ON o.user_id = u.id "
        "ORDER BY u.last_seen DESC, u.id LIMIT ?1",
    [ST_USERS_ONLINE] =
        "SELECT u.id, u.created_at, u.last_seen, u.token_hash IS NOT NULL, o.connections, o.since "
        "FROM online_users o JOIN users u ON u.id = o.user_id "
        "ORDER BY u.last_seen DESC, u.id LIMIT ?1",
    [ST_USER_ONE] = "SELECT created_at, last_seen, token_hash IS NOT NULL, (SELECT count(*) "
                    "FROM connections WHERE user_id = ?1 AND disconnected_at IS NULL) "
                    "FROM users WHERE id = ?1",
    [ST_USER_CONNS] = "SELECT id, boot_id, remote_addr, connected_at, disconnected_at "
                      "FROM connections WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2",
    [ST_COUNTS] = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM online_users), "
                  "(SELECT count(*) FROM connections WHERE disconnected_at IS NULL), "
                  "(SELECT count(*) FROM outbox WHERE expires_at > ?1)",
    /* Maintenance deletes in small batches (index-driven) so no step holds the lock long. */
    [ST_CONN_PRUNE] = "DELETE FROM connections WHERE id IN (SELECT id FROM connections "
                      "WHERE disconnected_at IS NOT NULL AND disconnected_at < ?1 LIMIT ?2)",
    /* Host-assigned users (a token) gone since ?1 with nothing queued and nothing open. An
     * app-bound id (cloud_bind_user) is the app's: never pruned. */
    /* A window of at most ?3 candidates after (last_seen, rowid) (?2, ?4), the order of the
     * users_last_seen index: users that stay (something queued, a connection open) are not
     * examined again every second; the window moves on, and wraps at the cutoff. */
    [ST_USER_PRUNE] =
        "DELETE FROM users WHERE id IN (SELECT w.id FROM (SELECT id FROM users WHERE "
        "(last_seen, rowid) > (?2, ?4) AND last_seen < ?1 AND token_hash IS NOT NULL "
        "ORDER BY last_seen, rowid LIMIT ?3) w WHERE NOT EXISTS (SELECT 1 FROM connections c "
        "WHERE c.user_id = w.id AND c.disconnected_at IS NULL) AND NOT EXISTS (SELECT 1 FROM "
        "outbox o WHERE o.user_id = w.id))",
    [ST_USER_PRUNE_WINDOW] =
        "SELECT last_seen, rowid FROM users WHERE (last_seen, rowid) > (?2, ?4) AND last_seen "
        "< ?1 AND token_hash IS NOT NULL ORDER BY last_seen, rowid LIMIT 1 OFFSET ?3 - 1",
    /* --max-users reached: the longest idle of the same kind of users makes room. */
    [ST_USER_EVICT] =
        "DELETE FROM users WHERE id IN (SELECT u.id FROM users u WHERE u.token_hash IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM connections c WHERE c.user_id = u.id AND "
        "c.disconnected_at IS NULL) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
        "o.user_id = u.id) ORDER BY u.last_seen LIMIT ?1)",
    [ST_USER_COUNT] = "SELECT count(*) FROM users",
    [ST_CONN_MAX] = "SELECT coalesce(max(id), 0) FROM connections",
    /* A zero-length hash matches no token, and is not NULL: a cluster import never gives the
     * user a token again. */
    [ST_USER_REVOKE] = "UPDATE users SET token_hash = X'' WHERE id = ?1 AND length(token_hash) > 0",
    [ST_UROOM_ADD] = "INSERT OR IGNORE INTO user_rooms (user_id, room) VALUES (?1, ?2)",
    [ST_UROOM_DEL] = "DELETE FROM user_rooms WHERE user_id = ?1 AND room = ?2",
    [ST_UROOM_OF] = "SELECT room FROM user_rooms WHERE user_id = ?1 ORDER BY room LIMIT ?2",
    [ST_KEEP_SET] = "INSERT INTO room_keep (room, last_n) VALUES (?1, ?2) ON CONFLICT (room) DO "
                    "UPDATE SET last_n = excluded.last_n",
    [ST_KEEP_DEL] = "DELETE FROM room_keep WHERE room = ?1",
    [ST_KEEP_ALL] = "SELECT k.room, k.last_n, coalesce(max(h.seq), 0), count(h.seq), "
                    "coalesce(sum(length(h.payload)), 0) FROM room_keep k LEFT JOIN room_history h "
                    "ON h.room = k.room GROUP BY k.room",
    [ST_HIST_ADD] = "INSERT INTO room_history (room, seq, is_binary, payload, sent_at) VALUES (?1, "
                    "?2, ?3, ?4, ?5)",
    [ST_HIST_TRIM] = "DELETE FROM room_history WHERE room = ?1 AND seq <= ?2",
    [ST_HIST_OLDEST] = "SELECT seq, length(payload) FROM room_history WHERE room = ?1 ORDER BY seq "
                       "LIMIT 1",
    [ST_HIST_DROP] = "DELETE FROM room_history WHERE room = ?1",
    [ST_HIST_LAST] = "SELECT payload, is_binary FROM (SELECT seq, payload, is_binary FROM "
                     "room_history WHERE room = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
};

/* A batched write. Each is kept in memory until the transaction that applied it committed:
 * a lock held by someone else, or a commit SQLite rolled back, costs a retry, never the write.
 * Order is kept: ops are applied in the order they were made. */
enum op_kind {
  OP_USER_INSERT,
  OP_CONN_OPEN,
  OP_CONN_CLOSE,
  OP_OUTBOX_ACK,
  OP_USER_CONN_OPEN /* a fresh user and its first connection row: one op, two inserts */
};
struct op {
  enum op_kind kind;
  int64_t row; /* connection row, or outbox id acknowledged up to */
  int64_t at;  /* unix ms */
  char user[STORE_ID_MAX + 1];
  char remote[64];
  uint8_t hash[SHA256_LEN];
  uint64_t seq;
};

struct store {
  sqlite3 *db;
  sqlite3_stmt *st[ST__N];
  char boot_id[33];
  int outbox_max;
  int64_t outbox_ttl_ms;
  int batch_ms;                   /* < 0: every write commits at once */
  int in_txn;                     /* a write transaction is open */
  int sync_pending;               /* it holds writes a client must not see uncommitted */
  int64_t txn_started;            /* monotonic ms when it was opened */
  struct op *ops;                 /* batched writes not yet committed, oldest first */
  size_t nops, ops_cap, napplied; /* ops[0..napplied) are applied in the open transaction */
  uint64_t op_seq, dropped_seq;   /* the last op refused for its content, and why */
  uint64_t user_seq;              /* op_seq of the last user created */
  int dropped_rc;
  int64_t retry_at; /* monotonic ms: a lock stopped us; do not try BEGIN before this */
  int retry_ms;
  int64_t next_conn_row;
  int64_t nusers; /* users rows, counted at open and kept up to date */
  int64_t max_users, user_ttl_ms, conn_history_ms;
  int64_t maintain_at;             /* monotonic ms of the next maintenance step */
  int64_t prune_from, prune_rowid; /* (last_seen, rowid) after which the next window starts */
  /* A fault the host cannot repair (file deleted, replaced, unwritable): new work that
   * would be lost is refused. Set once, logged once. */
  char fault[160];
  int fd; /* our own handle on the file, to notice it vanished or was replaced */
  dev_t dev;
  ino_t ino;
  /* WAL checkpoints run on a thread of their own with a connection of their own: a
   * checkpoint writes and fsyncs the database file, which must not stall the event loop. */
  char *path;
  pthread_t ckpt;
  int ckpt_started, ckpt_stop;
  int ckpt_kicked_at; /* WAL frames when the loop last called the thread (loop thread only) */
  pthread_mutex_t ckpt_mu;
  pthread_cond_t ckpt_cv;
  struct metrics_hist *commit_latency; /* NULL: commits are not timed */
  /* A PASSIVE checkpoint racing a writer that commits every few ms never finds the WAL
   * wholly copied, so the WAL is never restarted and only grows (959 MB once). Past
   * CKPT_HOLD_FRAMES the loop holds its batched writes (in memory, as for a lock) until the
   * thread has copied everything, at most CKPT_HOLD_MS. Monotonic ms; 0: no hold. */
  _Atomic int64_t ckpt_hold_until;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fill_random(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n, len -= (size_t)n;
  }
  return 0;
}

/* base64url without padding; out needs 4*ceil(len/3)+1 bytes. */
static void b64url(const unsigned char *in, size_t len, char *out) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t i = 0;
  while (i + 2 < len) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = a[v >> 18], *out++ = a[(v >> 12) & 63], *out++ = a[(v >> 6) & 63], *out++ = a[v & 63];
    i += 3;
  }
  if (len - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *out++ = a[v >> 18], *out++ = a[(v >> 12) & 63];
  } else if (len - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *out++ = a[v >> 18], *out++ = a[(v >> 12) & 63], *out++ = a[(v >> 6) & 63];
  }
  *out = '\0';
}

/* The SDK's user id alphabet, [A-Za-z0-9_.@:-]{1,STORE_ID_MAX}; host ids are a subset. */
int store_new_token(char *out) {
  unsigned char raw[32];
  int rc = fill_random(raw, sizeof raw);
  if (rc < 0)
    return rc;
  b64url(raw, sizeof raw, out);
  explicit_bzero(raw, sizeof raw);
  return 0;
}

int user_id_valid(const char *id) {
  size_t n = 0;
  if (!id)
    return 0;
  for (; id[n]; n++) {
    char c = id[n];
    if (n >= STORE_ID_MAX || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                               (c >= '0' && c <= '9') || strchr("_.@:-", c)))
      return 0;
  }
  return n > 0;
}

static void set_fault(struct store *s, const char *fmt, const char *a, const char *b) {
  if (s->fault[0])
    return;
  snprintf(s->fault, sizeof s->fault, fmt, a, b);
  log_error(NULL, NULL, "store: %s: new users and queued messages are refused", s->fault);
}

/* A busy or locked database is a wait (-EAGAIN, retried); the rest is an error. Errors that
 * mean the file cannot take writes any more are a fault. */
static int db_fail(struct store *s, const char *what) {
  int code = sqlite3_errcode(s->db);
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    return -EAGAIN;
  log_warn(NULL, NULL, "%s: %s", what, sqlite3_errmsg(s->db));
  if (code == SQLITE_READONLY || code == SQLITE_IOERR || code == SQLITE_FULL ||
      code == SQLITE_CANTOPEN || code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
    set_fault(s, "%s: %s", what, sqlite3_errmsg(s->db));
  return CLOUD_EIO;
}

/* Runs a statement with no result rows and resets it. */
static int run(struct store *s, int id, const char *what) {
  sqlite3_stmt *st = s->st[id];
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    return db_fail(s, what);
  return 0;
}

static void done(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

/* Every write goes into one open transaction; store_flush commits it. The batch saves an
 * fsync-less commit per connection event, and BEGIN IMMEDIATE takes the write lock up front
 * so the commit itself never waits. Readers are not blocked in WAL mode. */
static int op_apply(struct store *s, struct op *o);
static int txn_commit(struct store *s);

static int ckpt_holding(struct store *s) {
  int64_t until = atomic_load(&s->ckpt_hold_until);
  return until && mono_ms() < until;
}

/* After each commit of the loop's connection (SQLite calls it with the WAL's size). */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames) {
  (void)db, (void)name;
  struct store *s = arg;
  if (frames < s->ckpt_kicked_at)
    s->ckpt_kicked_at = 0; /* the WAL restarted */
  if (!s->ckpt_started || ckpt_holding(s))
    return SQLITE_OK;
  if (frames > CKPT_HOLD_FRAMES)
    atomic_store(&s->ckpt_hold_until, mono_ms() + CKPT_HOLD_MS);
  else if (frames < s->ckpt_kicked_at + CKPT_FRAMES)
    return SQLITE_OK;
  s->ckpt_kicked_at = frames;
  pthread_mutex_lock(&s->ckpt_mu);
  pthread_cond_signal(&s->ckpt_cv);
  pthread_mutex_unlock(&s->ckpt_mu);
  return SQLITE_OK;
}
static int touch_user(struct store *s, const char *id, int len, int64_t now);

/* Applies the ops not yet applied in the open transaction. One that SQLite refuses for its
 * content (a constraint) is dropped with a line; a wait or an I/O error stops the replay. */
static int ops_apply(struct store *s) {
  while (s->napplied < s->nops) {
    int rc = op_apply(s, &s->ops[s->napplied]);
    if (rc == -EAGAIN || (rc < 0 && s->fault[0]))
      return rc;
    if (rc < 0) {
      s->dropped_seq = s->ops[s->napplied].seq;
      s->dropped_rc = rc;
      memmove(&s->ops[s->napplied], &s->ops[s->napplied + 1],
              (s->nops - s->napplied - 1) * sizeof *s->ops);
      s->nops--;
      continue;
    }
    s->napplied++;
  }
  return 0;
}

/* Every write goes into one open transaction; store_flush commits it. The batch saves an
 * fsync-less commit per connection event, and BEGIN IMMEDIATE takes the write lock up front
 * so the commit itself never waits. Readers are not blocked in WAL mode. When another
 * process holds the lock, BEGIN gives up after BUSY_TIMEOUT_MS and the ops wait in memory:
 * -EAGAIN, and no new attempt before retry_at (backing off), so the loop never spins on it. */
static int txn_begin(struct store *s) {
  if (s->in_txn && s->batch_ms >= 0 && mono_ms() - s->txn_started >= s->batch_ms) {
    /* Overdue (the host's timer did not fire yet): commit now rather than grow the batch. */
    int rc = txn_commit(s);
    if (rc)
      return rc;
  }
  if (s->in_txn)
    return ops_apply(s);
  if (s->retry_at && mono_ms() < s->retry_at)
    return -EAGAIN;
  int rc = run(s, ST_BEGIN, "begin");
  if (rc == -EAGAIN) {
    if (!s->retry_ms)
      log_warn(NULL, NULL, "store: %s is locked by another process: writes wait in memory",
               s->path ? s->path : "the database");
    s->retry_ms = s->retry_ms ? s->retry_ms * 2 : RETRY_MIN_MS;
    if (s->retry_ms > RETRY_MAX_MS)
      s->retry_ms = RETRY_MAX_MS;
    s->retry_at = mono_ms() + s->retry_ms;
    return rc;
  }
  if (rc)
    return rc;
  if (s->retry_ms)
    log_info(NULL, NULL, "store: lock released; %zu waiting writes applied", s->nops);
  s->retry_at = 0;
  s->retry_ms = 0;
  s->in_txn = 1;
  s->txn_started = mono_ms();
  return ops_apply(s);
}

/* After a batched write: commit at once only when batching is off. */
static int txn_batched(struct store *s) {
  return s->batch_ms < 0 ? store_flush(s) : 0;
}

/* Queues o and applies it now if the write lock can be had; a wait is not an error for a
 * batched write (it is retried). Returns what applying it returned, 0 when it waits. */
static int write_op(struct store *s, const struct op *o) {
  if (s->fault[0])
    return CLOUD_EIO;
  if (s->nops >= OPS_MAX) {
    log_error(NULL, NULL, "store: %zu writes wait for the database lock; refusing more", s->nops);
    return CLOUD_EIO;
  }
  if (s->nops == s->ops_cap) {
    size_t cap = s->ops_cap ? s->ops_cap * 2 : 64;
    struct op *n = realloc(s->ops, cap * sizeof *n);
    if (!n)
      return CLOUD_ENOMEM;
    s->ops = n;
    s->ops_cap = cap;
  }
  s->ops[s->nops] = *o;
  s->ops[s->nops++].seq = ++s->op_seq;
  /* A close has no caller waiting for its result and no client who must see it first: it
   * waits in memory for the pass's commit (store_sync) or the batch timer (store_flush) and is
   * applied there with the others, in order. A crash loses nothing store_open does not repair
   * (it closes the rows a dead process left open and sets their users' last_seen). */
  if (o->kind == OP_CONN_CLOSE && s->batch_ms >= 0)
    return 0;
  if (!s->in_txn && ckpt_holding(s))
    return 0;
  int rc = txn_begin(s);
  if (rc == -EAGAIN)
    return 0;
  if (rc < 0)
    return rc;
  if (s->dropped_seq == s->op_seq)
    return s->dropped_rc; /* refused for its content: the caller hears why */
  return txn_batched(s);
}

int store_flush(struct store *s) {
  if (!s)
    return 0;
  if (s->in_txn && s->napplied < s->nops) {
    int rc = ops_apply(s); /* closes queued since the transaction opened (write_op) */
    if (rc == -EAGAIN || (rc < 0 && s->fault[0]))
      return rc;
  }
  return txn_commit(s);
}

/* Commits what the open transaction holds (opening one for ops a lock held back). */
static int txn_commit(struct store *s) {
  if (!s->in_txn) {
    if (s->nops == 0)
      return 0;
    if (ckpt_holding(s))
      return -EAGAIN;
    int rc = txn_begin(s); /* ops held back by a lock, or closes waiting for this commit */
    if (rc)
      return rc;
  }
  uint64_t t0 = metrics_now_ns();
  int rc = sqlite3_step(s->st[ST_COMMIT]);
  sqlite3_reset(s->st[ST_COMMIT]);
  metrics_hist_observe(s->commit_latency, metrics_now_ns() - t0);
  if (rc == SQLITE_DONE) {
    s->in_txn = 0;
    /* Ops a wait stopped before they were applied stay for the next transaction. */
    if (s->nops > s->napplied)
      memmove(s->ops, s->ops + s->napplied, (s->nops - s->napplied) * sizeof *s->ops);
    s->nops -= s->napplied;
    s->napplied = 0;
    if (!s->nops)
      s->sync_pending = 0;
    return 0;
  }
  rc = db_fail(s, "commit");
  if (sqlite3_get_autocommit(s->db)) {
    /* SQLite rolled the batch back itself: the ops are still here, applied again later. */
    s->in_txn = 0;
    s->napplied = 0;
  }
  return rc;
}

int store_flush_due_ms(const struct store *s) {
  if (!s || (!s->in_txn && !s->nops))
    return -1;
  if (!s->in_txn) {
    int64_t left = s->retry_at - mono_ms();
    return left > 0 ? (int)left : 0;
  }
  int64_t left = s->txn_started + (s->batch_ms > 0 ? s->batch_ms : 0) - mono_ms();
  return left > 0 ? (int)left : 0;
}

static int exec(struct store *s, const char *sql, const char *what) {
  char *err = NULL;
  if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
    log_error(NULL, NULL, "%s: %s", what, err ? err : sqlite3_errmsg(s->db));
    sqlite3_free(err);
    return CLOUD_EIO;
  }
  return 0;
}

static int pragma_int(struct store *s, const char *sql, int64_t *out) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
    return db_fail(s, sql);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *out = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : db_fail(s, sql);
}

static int migrate(struct store *s) {
  int64_t version = 0;
  if (exec(s, "BEGIN IMMEDIATE", "migrate") || pragma_int(s, "PRAGMA user_version", &version))
    goto fail;
  if (version > SCHEMA_VERSION) {
    log_error(NULL, NULL, "database schema version %lld is newer than this host's (%d)",
              (long long)version, SCHEMA_VERSION);
    goto fail;
  }
  if (version < 1 &&
      (exec(s, schema_v1, "create schema") || exec(s, "PRAGMA user_version = 1", "create schema")))
    goto fail;
  /* Later versions: if (version < 2) { ALTER ...; PRAGMA user_version = 2 } */
  if (exec(s, index_closed, "create index") || exec(s, schema_rooms, "create room tables"))
    goto fail;
  return exec(s, "COMMIT", "migrate");
fail:
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return CLOUD_EIO;
}

/* A new boot: whatever an earlier process left open died with it (kill -9, power loss). */
static int boot_start(struct store *s) {
  unsigned char raw[16];
  int rc = fill_random(raw, sizeof raw);
  if (rc)
    return rc;
  for (int i = 0; i < 16; i++)
    snprintf(s->boot_id + 2 * i, 3, "%02x", raw[i]);

  sqlite3_stmt *st = NULL;
  int64_t now = now_ms();
  if (exec(s, "BEGIN IMMEDIATE", "boot"))
    return CLOUD_EIO;
  /* Their users were last seen no later than now: a close still waiting for its batch when
   * the process died (write_op) would have written that. */
  if (sqlite3_prepare_v2(s->db,
                         "UPDATE users SET last_seen = ?1 WHERE id IN (SELECT user_id FROM "
                         "connections WHERE disconnected_at IS NULL)",
                         -1, &st, NULL) != SQLITE_OK)
    goto fail;
  sqlite3_bind_int64(st, 1, now);
  if (sqlite3_step(st) != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(st);
  st = NULL;
  if (sqlite3_prepare_v2(
          s->db, "UPDATE connections SET disconnected_at = ?1 WHERE disconnected_at IS NULL", -1,
          &st, NULL) != SQLITE_OK)
    goto fail;
  sqlite3_bind_int64(st, 1, now);
  if (sqlite3_step(st) != SQLITE_DONE)
    goto fail;
  int stale = sqlite3_changes(s->db);
  sqlite3_finalize(st);
  if (sqlite3_prepare_v2(s->db, "INSERT INTO boots (id, pid, started_at) VALUES (?1, ?2, ?3)", -1,
                         &st, NULL) != SQLITE_OK)
    goto fail;
  sqlite3_bind_text(st, 1, s->boot_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, getpid());
  sqlite3_bind_int64(st, 3, now);
  if (sqlite3_step(st) != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(st);
  if (exec(s, "COMMIT", "boot"))
    goto fail;
  if (stale > 0)
    log_info(NULL, NULL, "closed %d connection(s) left open by an earlier run", stale);
  return 0;
fail:
  db_fail(s, "boot");
  sqlite3_finalize(st);
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return CLOUD_EIO;
}

/* mkdir -p of the file's directory; SQLite would only say "unable to open database file".
 * 0700: the folder holds token hashes and the admin token. */
int store_make_dir(const char *path) {
  char dir[4096];
  if (!path || !strcmp(path, ":memory:"))
    return 0;
  size_t n = strlen(path);
  if (n >= sizeof dir)
    return -ENAMETOOLONG;
  memcpy(dir, path, n + 1);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return 0;
  *slash = '\0';
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

int store_lock(const char *db_path, int wait_ms, int *holder) {
  char path[4200];
  *holder = 0;
  if (!db_path || !strcmp(db_path, ":memory:"))
    return -ENOENT;
  int rc = store_make_dir(db_path);
  if (rc < 0)
    return rc;
  snprintf(path, sizeof path, "%s.lock", db_path);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return -errno;
  /* An open file description lock: not lost when any other descriptor of the file is closed
   * (as a POSIX record lock would be), and shared by the children forked from here. */
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  for (int waited = 0; fcntl(fd, F_OFD_SETLK, &fl) < 0; waited += 50) {
    if ((errno != EAGAIN && errno != EACCES) || waited >= wait_ms) {
      int e = errno == EAGAIN || errno == EACCES ? EBUSY : errno;
      char buf[32] = "";
      if (e == EBUSY && pread(fd, buf, sizeof buf - 1, 0) > 0)
        *holder = atoi(buf);
      close(fd);
      return -e;
    }
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
    log_warn(NULL, NULL, "cannot write the pid into %s: %s", path, strerror(errno));
  return fd;
}

#define CHECKPOINT_EVERY_MS 1000

static void *checkpoint_main(void *arg) {
  struct store *s = arg;
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    log_error(NULL, NULL, "checkpoint thread cannot open %s", s->path);
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, CKPT_BUSY_TIMEOUT_MS);
  /* A connection that has not read the database does not know it is in WAL mode, and a
   * checkpoint on it is a silent no-op (SQLITE_OK, nothing copied): that is why the WAL once
   * grew to 959 MB. Reading the schema opens the WAL; the size limit truncates the file
   * whenever a checkpoint lets it restart. */
  if (sqlite3_exec(
          db, "PRAGMA journal_size_limit = " WAL_LIMIT_STR "; SELECT count(*) FROM sqlite_master",
          NULL, NULL, NULL) != SQLITE_OK)
    log_warn(NULL, NULL, "store: checkpoint thread cannot read %s: %s", s->path,
             sqlite3_errmsg(db));
  pthread_mutex_lock(&s->ckpt_mu);
  while (!s->ckpt_stop) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (CHECKPOINT_EVERY_MS % 1000) * 1000000L;
    until.tv_sec += CHECKPOINT_EVERY_MS / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->ckpt_cv, &s->ckpt_mu, &until);
    if (s->ckpt_stop)
      break;
    pthread_mutex_unlock(&s->ckpt_mu);
    /* PASSIVE: copies what it can without waiting for the writer or readers. */
    int log_frames = 0, ckpt_frames = 0;
    int rc =
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &ckpt_frames);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      log_warn(NULL, NULL, "checkpoint: %s", sqlite3_errmsg(db));
    /* The loop may write again: its next transaction starts on a wholly copied WAL, which
     * lets SQLite restart the WAL from its beginning (and cut it to journal_size_limit). */
    atomic_store(&s->ckpt_hold_until, 0);
    pthread_mutex_lock(&s->ckpt_mu);
  }
  pthread_mutex_unlock(&s->ckpt_mu);
  sqlite3_close(db);
  return NULL;
}

static int checkpoint_start(struct store *s) {
  if (pthread_mutex_init(&s->ckpt_mu, NULL) || pthread_cond_init(&s->ckpt_cv, NULL))
    return CLOUD_ENOMEM;
  if (pthread_create(&s->ckpt, NULL, checkpoint_main, s))
    return CLOUD_ENOMEM;
  s->ckpt_started = 1;
  sqlite3_wal_hook(s->db, wal_hook, s);
  return 0;
}

static void checkpoint_stop(struct store *s) {
  if (!s->ckpt_started)
    return;
  sqlite3_wal_hook(s->db, NULL, NULL);
  atomic_store(&s->ckpt_hold_until, 0);
  pthread_mutex_lock(&s->ckpt_mu);
  s->ckpt_stop = 1;
  pthread_cond_signal(&s->ckpt_cv);
  pthread_mutex_unlock(&s->ckpt_mu);
  pthread_join(s->ckpt, NULL);
  pthread_cond_destroy(&s->ckpt_cv);
  pthread_mutex_destroy(&s->ckpt_mu);
  s->ckpt_started = 0;
}

int store_open(struct store **out, const struct store_options *opt) {
  if (!out || !opt || !opt->path)
    return CLOUD_EINVAL;
  *out = NULL;
  int memory = strcmp(opt->path, ":memory:") == 0, rc;
  if (!memory) {
    if ((rc = store_make_dir(opt->path)) < 0) {
      log_error(NULL, NULL, "cannot create the directory of %s: %s", opt->path, strerror(-rc));
      return rc;
    }
    /* Token hashes and user ids are nobody else's business: create the file owner-only
     * (SQLite gives the -wal and -shm files the same mode). */
    int fd = open(opt->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = -errno;
      log_error(NULL, NULL, "cannot open %s: %s", opt->path, strerror(errno));
      return rc;
    }
    close(fd);
  }

  struct store *s = calloc(1, sizeof *s);
  if (!s)
    return CLOUD_ENOMEM;
  s->outbox_max = opt->outbox_max > 0 ? opt->outbox_max : DEFAULT_OUTBOX_MAX;
  s->outbox_ttl_ms = (opt->outbox_ttl_s > 0 ? opt->outbox_ttl_s : DEFAULT_OUTBOX_TTL_S) * 1000;
  s->batch_ms = opt->batch_ms != 0 ? opt->batch_ms : DEFAULT_BATCH_MS;
  s->commit_latency = opt->commit_latency;
  s->user_ttl_ms = (opt->user_ttl_s > 0 ? opt->user_ttl_s : DEFAULT_USER_TTL_S) * 1000;
  s->conn_history_ms =
      (opt->conn_history_s > 0 ? opt->conn_history_s : DEFAULT_CONN_HISTORY_S) * 1000;
  s->max_users = opt->max_users > 0 ? opt->max_users : opt->max_users < 0 ? 0 : DEFAULT_MAX_USERS;
  s->fd = -1;
  s->prune_from = -1;

  if (sqlite3_open_v2(opt->path, &s->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    log_error(NULL, NULL, "cannot open %s: %s", opt->path,
              s->db ? sqlite3_errmsg(s->db) : "out of memory");
    goto fail;
  }
  sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
  if (!memory) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK) {
      db_fail(s, "journal_mode");
      goto fail;
    }
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!mode || strcmp(mode, "wal") != 0) {
      log_error(NULL, NULL, "%s: cannot use WAL mode (%s)", opt->path,
                mode ? mode : sqlite3_errmsg(s->db));
      sqlite3_finalize(st);
      goto fail;
    }
    sqlite3_finalize(st);
  }
  /* NORMAL in WAL mode: a commit survives a process crash; only power loss may take the
   * last few commits. foreign_keys: an outbox row or connection for no user is a bug. */
  if (exec(s,
           "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
           "PRAGMA journal_size_limit = " WAL_LIMIT_STR,
           "pragmas") ||
      migrate(s))
    goto fail;
  for (int i = 0; i < ST__N; i++) {
    if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) !=
        SQLITE_OK) {
      db_fail(s, stmt_sql[i]);
      goto fail;
    }
  }
  if ((rc = boot_start(s)) < 0) {
    store_close(s);
    return rc;
  }
  {
    sqlite3_stmt *st = s->st[ST_CONN_MAX];
    rc = sqlite3_step(st);
    s->next_conn_row = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) + 1 : 1;
    done(st);
    st = s->st[ST_USER_COUNT];
    rc = sqlite3_step(st);
    s->nusers = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    done(st);
  }
  if (!memory) {
    struct stat st;
    s->fd = open(opt->path, O_RDONLY | O_CLOEXEC);
    if (s->fd >= 0 && fstat(s->fd, &st) == 0)
      s->dev = st.st_dev, s->ino = st.st_ino;
    if (!(s->path = strdup(opt->path)) ||
        exec(s, "PRAGMA wal_autocheckpoint = 0", "wal_autocheckpoint") || checkpoint_start(s) < 0) {
      store_close(s);
      return CLOUD_EIO;
    }
  }
  *out = s;
  return 0;
fail:
  store_close(s);
  return CLOUD_EIO;
}

void store_close(struct store *s) {
  if (!s)
    return;
  checkpoint_stop(s);
  if (s->db) {
    /* Shutting down, the loop is done: waiting for another process's lock now is what
     * keeps the writes held back in memory. */
    sqlite3_busy_timeout(s->db, 5000);
    s->retry_at = 0;
  }
  if (s->db && s->boot_id[0] && s->st[ST_BEGIN]) {
    /* A clean stop: nothing of ours stays online, and the boot is marked as not crashed. */
    static const char sql[] =
        "UPDATE users SET last_seen = ?2 WHERE id IN (SELECT user_id FROM connections "
        "WHERE boot_id = ?1 AND disconnected_at IS NULL);"
        "UPDATE connections SET disconnected_at = ?2 WHERE boot_id = ?1 AND disconnected_at IS "
        "NULL;"
        "UPDATE boots SET stopped_at = ?2 WHERE id = ?1;";
    const char *p = sql;
    int64_t now = now_ms();
    if (txn_begin(s) == 0) {
      while (*p) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->db, p, -1, &st, &p) != SQLITE_OK || !st)
          break;
        sqlite3_bind_text(st, 1, s->boot_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
          db_fail(s, "close");
          break;
        }
      }
    }
    store_flush(s);
  }
  for (int i = 0; i < ST__N; i++)
    sqlite3_finalize(s->st[i]);
  if (s->db && sqlite3_close(s->db) != SQLITE_OK)
    log_error(NULL, NULL, "close: %s", sqlite3_errmsg(s->db));
  if (s->fd >= 0)
    close(s->fd);
  free(s->ops);
  free(s->path);
  free(s);
}

const char *store_boot_id(const struct store *s) {
  return s ? s->boot_id : NULL;
}

int store_user_new(char *id_out, char *token_out, uint8_t *hash_out) {
  unsigned char raw[16 + 32];
  int rc;
  if (!id_out || !token_out || !hash_out)
    return CLOUD_EINVAL;
  if ((rc = fill_random(raw, sizeof raw)) < 0)
    return rc;
  b64url(raw, 16, id_out);
  b64url(raw + 16, 32, token_out);
  sha256(token_out, STORE_TOKEN_LEN, hash_out);
  explicit_bzero(raw, sizeof raw);
  return 0;
}

int store_user_insert(struct store *s, const char *id, const uint8_t *hash) {
  int rc;
  if (!s || !id || strlen(id) != STORE_ID_LEN || !hash)
    return CLOUD_EINVAL;
  struct op o = {.kind = OP_USER_INSERT, .at = now_ms()};
  memcpy(o.user, id, STORE_ID_LEN + 1);
  memcpy(o.hash, hash, SHA256_LEN);
  if ((rc = write_op(s, &o)) < 0)
    return rc;
  s->user_seq = s->op_seq;
  /* Committed with the next store_sync, which the host runs before any byte leaves for a
   * client: one commit covers every user created in the same turn of the event loop. */
  s->sync_pending = 1;
  return 0;
}

int store_user_create(struct store *s, char *id_out, char *token_out) {
  uint8_t hash[SHA256_LEN];
  int rc;
  if (!s)
    return CLOUD_EINVAL;
  if ((rc = store_user_new(id_out, token_out, hash)) < 0)
    return rc;
  return store_user_insert(s, id_out, hash);
}

static int conn_insert(struct store *s, const struct op *o) {
  sqlite3_stmt *st = s->st[ST_CONN_INSERT];
  sqlite3_bind_text(st, 1, o->user, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, s->boot_id, -1, SQLITE_STATIC);
  if (o->remote[0])
    sqlite3_bind_text(st, 3, o->remote, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, o->at);
  sqlite3_bind_int64(st, 5, o->row);
  int rc = sqlite3_step(st);
  done(st);
  if (rc != SQLITE_DONE) {
    if (sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
      return CLOUD_ENOUSER;
    return db_fail(s, "connection open");
  }
  return 0;
}

/* At --max-users the longest idle empty host-assigned users make room for one more: a storm
 * of new or failed-resume connections, or of users other nodes announce, cannot grow the
 * table past the bound. 0, CLOUD_EFULL (nothing evictable), or negative. */
static int users_make_room(struct store *s) {
  if (s->max_users <= 0 || s->nusers < s->max_users)
    return 0;
  int rc;
  sqlite3_bind_int64(s->st[ST_USER_EVICT], 1, s->nusers - s->max_users + 1);
  if ((rc = run(s, ST_USER_EVICT, "user evict")))
    return rc;
  int freed = sqlite3_changes(s->db);
  s->nusers -= freed;
  if (!freed) {
    /* Nothing evictable. The count may have drifted (an operator deleted rows): recount
     * before saying no; if it is right, every user is online or holds messages and the
     * bound holds: no new user. */
    sqlite3_stmt *st = s->st[ST_USER_COUNT];
    if (sqlite3_step(st) == SQLITE_ROW)
      s->nusers = sqlite3_column_int64(st, 0);
    done(st);
    if (s->nusers >= s->max_users)
      return CLOUD_EFULL;
  }
  return 0;
}

static int op_apply(struct store *s, struct op *o) {
  sqlite3_stmt *st;
  int rc;
  switch (o->kind) {
  case OP_USER_INSERT:
  case OP_USER_CONN_OPEN:
    /* At --max-users the longest idle empty host-assigned users make room: a storm of new
     * or failed-resume connections cannot grow the table past the bound. */
    if ((rc = users_make_room(s)))
      return rc;
    st = s->st[ST_USER_INSERT];
    sqlite3_bind_text(st, 1, o->user, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, o->hash, sizeof o->hash, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, o->at);
    if ((rc = run(s, ST_USER_INSERT, "user create")))
      return rc;
    s->nusers++;
    return o->kind == OP_USER_CONN_OPEN ? conn_insert(s, o) : 0;
  case OP_CONN_OPEN:
    return conn_insert(s, o);
  case OP_CONN_CLOSE:
    st = s->st[ST_CONN_CLOSE];
    sqlite3_bind_int64(st, 1, o->row);
    sqlite3_bind_int64(st, 2, o->at);
    rc = sqlite3_step(st);
    done(st);
    if (rc != SQLITE_DONE)
      return db_fail(s, "connection close");
    /* last_seen only when this closed the row: a second close of the same row changes nothing. */
    return sqlite3_changes(s->db) > 0 ? touch_user(s, o->user, -1, o->at) : 0;
  case OP_OUTBOX_ACK:
    st = s->st[ST_OUTBOX_DELETE];
    sqlite3_bind_text(st, 1, o->user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, o->row);
    return run(s, ST_OUTBOX_DELETE, "outbox delete");
  }
  return CLOUD_EINVAL;
}

/* Every op up to this sequence number is committed (or was refused and dropped). */
static uint64_t committed_seq(const struct store *s) {
  return s->nops ? s->ops[0].seq - 1 : s->op_seq;
}

int store_synced_upto(const struct store *s, uint64_t seq) {
  return !s || committed_seq(s) >= seq;
}

uint64_t store_user_seq(const struct store *s) {
  return s ? s->user_seq : 0;
}

int store_sync_upto(struct store *s, uint64_t seq) {
  if (!s || committed_seq(s) >= seq)
    return 0;
  int rc = store_flush(s);
  if (committed_seq(s) >= seq)
    return 0;
  /* Failed for good (a fault): holding the bytes would not help; the caller logs it. */
  return rc == 0 ? -EAGAIN : rc;
}

int store_sync(struct store *s) {
  if (!s || !s->sync_pending)
    return 0;
  int rc = store_sync_upto(s, s->user_seq);
  if (rc != -EAGAIN)
    s->sync_pending = 0;
  return rc;
}

int store_user_check(struct store *s, const char *id, const char *token) {
  uint8_t want[SHA256_LEN], got[SHA256_LEN];
  int found = 0;
  if (!s)
    return CLOUD_EINVAL;
  if (!user_id_valid(id) || !token)
    return 0;
  sqlite3_stmt *st = s->st[ST_USER_HASH];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == SHA256_LEN) {
    memcpy(want, sqlite3_column_blob(st, 0), SHA256_LEN);
    found = 1;
  }
  done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return db_fail(s, "user check");
  if (!found)
    return 0;
  sha256(token, strlen(token), got);
  unsigned char diff = 0;
  for (int i = 0; i < SHA256_LEN; i++)
    diff |= (unsigned char)(want[i] ^ got[i]);
  return diff == 0;
}

int store_user_ensure(struct store *s, const char *id) {
  int rc;
  if (!s || !user_id_valid(id))
    return CLOUD_EINVAL;
  if ((rc = store_user_exists(s, id)) != 0)
    return rc == -EAGAIN ? CLOUD_EIO : rc < 0 ? rc : 0;
  if ((rc = txn_begin(s)))
    return rc == -EAGAIN ? CLOUD_EIO : rc; /* locked: the SDK caller hears CLOUD_EIO */
  sqlite3_bind_text(s->st[ST_USER_ENSURE], 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s->st[ST_USER_ENSURE], 2, now_ms());
  if ((rc = run(s, ST_USER_ENSURE, "user ensure")))
    return rc;
  s->nusers += sqlite3_changes(s->db);
  rc = store_flush(s);
  return rc == -EAGAIN ? CLOUD_EIO : rc;
}

int store_user_import(struct store *s, const char *id, const uint8_t *hash) {
  int rc;
  if (!s || !user_id_valid(id))
    return CLOUD_EINVAL;
  if ((rc = txn_begin(s)))
    return rc == -EAGAIN ? CLOUD_EIO : rc;
  if ((rc = store_user_exists(s, id)) != 0)
    return rc < 0 ? rc : 0; /* known here: nothing to change */
  if ((rc = users_make_room(s)))
    return rc;
  sqlite3_stmt *st = s->st[ST_USER_IMPORT];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (hash)
    sqlite3_bind_blob(st, 2, hash, SHA256_LEN, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 2);
  sqlite3_bind_int64(st, 3, now_ms());
  if ((rc = run(s, ST_USER_IMPORT, "user import")))
    return rc;
  s->nusers += sqlite3_changes(s->db);
  /* Committed with the store's next batch: a resume that races it finds the user a moment
   * later (docs/SCALING.md). */
  s->sync_pending = 1;
  return 0;
}

int store_user_revoke(struct store *s, const char *id) {
  int rc;
  if (!s || !user_id_valid(id))
    return -EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_bind_text(s->st[ST_USER_REVOKE], 1, id, -1, SQLITE_STATIC);
  if ((rc = run(s, ST_USER_REVOKE, "user revoke")))
    return rc;
  int n = sqlite3_changes(s->db);
  rc = store_flush(s);
  return rc < 0 ? rc : n;
}

/* --- rooms a user holds, and room history ------------------------------------------------ */

static void apply_queued(struct store *s);

int store_user_room(struct store *s, const char *user_id, const char *room, int add) {
  int rc;
  if (!s || !user_id_valid(user_id) || !room)
    return -EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  int st = add ? ST_UROOM_ADD : ST_UROOM_DEL;
  sqlite3_bind_text(s->st[st], 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(s->st[st], 2, room, -1, SQLITE_STATIC);
  if ((rc = run(s, st, add ? "user room add" : "user room delete")))
    return rc;
  return sqlite3_changes(s->db);
}

int store_user_rooms_any(struct store *s) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, "SELECT EXISTS (SELECT 1 FROM user_rooms)", -1, &st, NULL))
    return db_fail(s, "user rooms any");
  int rc = sqlite3_step(st), any = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? any : db_fail(s, "user rooms any");
}

json_t *store_user_rooms(struct store *s, const char *user_id, int limit) {
  if (!s || !user_id_valid(user_id))
    return NULL;
  apply_queued(s);
  sqlite3_stmt *st = s->st[ST_UROOM_OF];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, limit);
  json_t *out = json_array();
  int rc;
  while (out && (rc = sqlite3_step(st)) == SQLITE_ROW)
    json_array_append_new(out, json_string((const char *)sqlite3_column_text(st, 0)));
  done(st);
  if (out && rc != SQLITE_DONE) {
    db_fail(s, "user rooms");
    json_decref(out);
    return NULL;
  }
  return out;
}

int store_room_keep(struct store *s, const char *room, int last_n) {
  int rc;
  if (!s || !room)
    return -EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  if (last_n > 0) {
    sqlite3_bind_text(s->st[ST_KEEP_SET], 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int(s->st[ST_KEEP_SET], 2, last_n);
    return run(s, ST_KEEP_SET, "room keep");
  }
  sqlite3_bind_text(s->st[ST_KEEP_DEL], 1, room, -1, SQLITE_STATIC);
  if ((rc = run(s, ST_KEEP_DEL, "room keep")))
    return rc;
  sqlite3_bind_text(s->st[ST_HIST_DROP], 1, room, -1, SQLITE_STATIC);
  return run(s, ST_HIST_DROP, "room history drop");
}

int store_room_kept_each(struct store *s, store_kept_fn fn, void *arg) {
  if (!s)
    return -EINVAL;
  apply_queued(s);
  sqlite3_stmt *st = s->st[ST_KEEP_ALL];
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1),
       sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4));
  done(st);
  return rc == SQLITE_DONE ? 0 : db_fail(s, "kept rooms");
}

int store_room_history_trim(struct store *s, const char *room, int64_t upto) {
  int rc;
  if (!s || !room)
    return -EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_bind_text(s->st[ST_HIST_TRIM], 1, room, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s->st[ST_HIST_TRIM], 2, upto);
  return run(s, ST_HIST_TRIM, "room history trim");
}

int store_room_history_add(struct store *s, const char *room, int64_t seq, const void *data,
                           size_t len, int is_binary) {
  int rc;
  if (!s || !room)
    return -EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_stmt *st = s->st[ST_HIST_ADD];
  sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, seq);
  sqlite3_bind_int(st, 3, is_binary);
  if (is_binary)
    sqlite3_bind_blob(st, 4, len ? data : "", (int)len, SQLITE_STATIC);
  else
    sqlite3_bind_text(st, 4, len ? data : "", (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 5, now_ms());
  return run(s, ST_HIST_ADD, "room history add");
}

int64_t store_room_history_oldest(struct store *s, const char *room, int64_t *bytes) {
  sqlite3_stmt *st = s->st[ST_HIST_OLDEST];
  sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
  int64_t seq = 0;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    seq = sqlite3_column_int64(st, 0);
    *bytes = sqlite3_column_int64(st, 1);
  }
  done(st);
  return rc == SQLITE_ROW ? seq : rc == SQLITE_DONE ? 0 : db_fail(s, "room history oldest");
}

int store_room_history_each(struct store *s, const char *room, int n, store_frame_fn fn,
                            void *arg) {
  if (!s || !room)
    return -EINVAL;
  apply_queued(s);
  sqlite3_stmt *st = s->st[ST_HIST_LAST];
  sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, n);
  int rc, count = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *p = sqlite3_column_blob(st, 0);
    if (fn(arg, p ? p : "", (size_t)sqlite3_column_bytes(st, 0), sqlite3_column_int(st, 1)) < 0)
      break;
    count++;
  }
  done(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? count : db_fail(s, "room history");
}

int store_user_exists(struct store *s, const char *id) {
  if (!s)
    return CLOUD_EINVAL;
  if (!user_id_valid(id))
    return 0;
  sqlite3_stmt *st = s->st[ST_USER_EXISTS];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  done(st);
  if (rc == SQLITE_ROW)
    return 1;
  return rc == SQLITE_DONE ? 0 : db_fail(s, "user exists");
}

static int touch_user(struct store *s, const char *id, int len, int64_t now) {
  sqlite3_stmt *st = s->st[ST_USER_TOUCH];
  sqlite3_bind_text(st, 1, id, len, SQLITE_STATIC); /* run() resets before id can go */
  sqlite3_bind_int64(st, 2, now);
  return run(s, ST_USER_TOUCH, "last_seen");
}

int64_t store_conn_open(struct store *s, const char *user_id, const char *remote_addr) {
  if (!s || !user_id_valid(user_id))
    return CLOUD_EINVAL;
  struct op o = {.kind = OP_CONN_OPEN, .at = now_ms(), .row = s->next_conn_row};
  memcpy(o.user, user_id, strlen(user_id) + 1);
  if (remote_addr)
    snprintf(o.remote, sizeof o.remote, "%s", remote_addr);
  /* last_seen is written when a connection closes: one users-row write per connection. */
  int rc = write_op(s, &o);
  if (rc < 0)
    return rc;
  return s->next_conn_row++;
}

int store_conn_close(struct store *s, int64_t conn_row, const char *user_id) {
  if (!s || conn_row <= 0 || !user_id_valid(user_id))
    return CLOUD_EINVAL;
  struct op o = {.kind = OP_CONN_CLOSE, .at = now_ms(), .row = conn_row};
  memcpy(o.user, user_id, strlen(user_id) + 1);
  return write_op(s, &o);
}

int64_t store_user_conn_open(struct store *s, const char *id, const uint8_t *hash,
                             const char *remote_addr) {
  int rc;
  if (!s || !id || strlen(id) != STORE_ID_LEN || !hash)
    return CLOUD_EINVAL;
  struct op o = {.kind = OP_USER_CONN_OPEN, .at = now_ms(), .row = s->next_conn_row};
  memcpy(o.user, id, STORE_ID_LEN + 1);
  memcpy(o.hash, hash, SHA256_LEN);
  if (remote_addr)
    snprintf(o.remote, sizeof o.remote, "%s", remote_addr);
  if ((rc = write_op(s, &o)) < 0)
    return rc;
  s->user_seq = s->op_seq;
  s->sync_pending = 1; /* as store_user_insert: committed before any byte leaves */
  return s->next_conn_row++;
}

int store_outbox_push(struct store *s, const char *user_id, const void *data, size_t len,
                      int is_binary) {
  int rc, n;
  int64_t now = now_ms();
  if (!s || !user_id_valid(user_id) || (!data && len) || len > INT32_MAX)
    return CLOUD_EINVAL;
  if (s->fault[0])
    return CLOUD_EIO; /* "queued" would be a lie */
  if ((rc = store_user_exists(s, user_id)) <= 0)
    return rc == -EAGAIN ? CLOUD_EIO : rc < 0 ? rc : CLOUD_ENOUSER;
  if ((n = store_outbox_count(s, user_id)) < 0)
    return n == -EAGAIN ? CLOUD_EIO : n;
  if (n >= s->outbox_max)
    return CLOUD_EFULL;
  if ((rc = txn_begin(s)))
    return CLOUD_EIO; /* locked by someone else: refused now rather than claimed and lost */
  sqlite3_stmt *st = s->st[ST_OUTBOX_INSERT];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  /* Text stays TEXT so `SELECT payload FROM outbox` is readable in the sqlite3 shell. */
  if (is_binary)
    sqlite3_bind_blob(st, 2, data ? data : "", (int)len, SQLITE_STATIC);
  else
    sqlite3_bind_text(st, 2, data ? data : "", (int)len, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, is_binary ? 1 : 0);
  sqlite3_bind_int64(st, 4, now);
  sqlite3_bind_int64(st, 5, now + s->outbox_ttl_ms);
  if ((rc = run(s, ST_OUTBOX_INSERT, "outbox push")))
    return rc < 0 ? CLOUD_EIO : rc;
  /* The caller was told "queued": commit it (and the batch with it) before returning. */
  return store_flush(s) < 0 ? CLOUD_EIO : 0;
}

/* Acknowledged rows whose delete has not committed yet still count as delivered. */
static int64_t acked_upto(const struct store *s, const char *user_id) {
  int64_t upto = 0;
  for (size_t i = 0; i < s->nops; i++)
    if (s->ops[i].kind == OP_OUTBOX_ACK && s->ops[i].row > upto && !strcmp(s->ops[i].user, user_id))
      upto = s->ops[i].row;
  return upto;
}

int store_outbox_load(struct store *s, const char *user_id, int64_t after, int max,
                      store_outbox_row_fn fn, void *arg) {
  int taken = 0, rc;
  if (!s || !fn)
    return CLOUD_EINVAL;
  if (!user_id_valid(user_id))
    return 0;
  int64_t acked = acked_upto(s, user_id);
  sqlite3_stmt *st = s->st[ST_OUTBOX_SELECT];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now_ms());
  sqlite3_bind_int64(st, 3, after > acked ? after : acked);
  sqlite3_bind_int(st, 4, max > 0 ? max : -1);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *data = sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if (fn(arg, sqlite3_column_int64(st, 0), data ? data : "", len, sqlite3_column_int(st, 2)))
      break;
    taken++;
  }
  done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    rc = db_fail(s, "outbox load");
    return taken ? taken : rc;
  }
  return taken;
}

int store_outbox_ack(struct store *s, const char *user_id, int64_t upto) {
  if (!s || !user_id_valid(user_id) || upto <= 0)
    return CLOUD_EINVAL;
  /* Expired rows before upto go with them; they were dead anyway. */
  struct op o = {.kind = OP_OUTBOX_ACK, .row = upto};
  memcpy(o.user, user_id, strlen(user_id) + 1);
  return write_op(s, &o);
}

struct drain_all {
  store_outbox_fn fn;
  void *arg;
  int64_t last;
};

static int drain_one(void *arg, int64_t id, const void *data, size_t len, int is_binary) {
  struct drain_all *d = arg;
  if (d->fn(d->arg, data, len, is_binary))
    return 1;
  d->last = id;
  return 0;
}

int store_outbox_drain(struct store *s, const char *user_id, store_outbox_fn fn, void *arg) {
  if (!s || !fn)
    return CLOUD_EINVAL;
  struct drain_all d = {fn, arg, 0};
  int n = store_outbox_load(s, user_id, 0, 0, drain_one, &d);
  if (n <= 0)
    return n;
  int rc = store_outbox_ack(s, user_id, d.last);
  if (rc == 0)
    rc = store_flush(s);
  return rc < 0 && rc != -EAGAIN ? rc : n;
}

int store_outbox_count(struct store *s, const char *user_id) {
  if (!s)
    return CLOUD_EINVAL;
  if (!user_id_valid(user_id))
    return 0;
  sqlite3_stmt *st = s->st[ST_OUTBOX_COUNT];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now_ms());
  int rc = sqlite3_step(st);
  int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  done(st);
  return rc == SQLITE_ROW ? n : db_fail(s, "outbox count");
}

/* One DELETE ... LIMIT statement with a cutoff. Returns rows deleted or negative. */
static int prune_step(struct store *s, int id, int64_t cutoff, const char *what) {
  int rc;
  sqlite3_bind_int64(s->st[id], 1, cutoff);
  sqlite3_bind_int(s->st[id], 2, PRUNE_BATCH);
  if ((rc = run(s, id, what)))
    return rc;
  return sqlite3_changes(s->db);
}

static int prune_users(struct store *s, int64_t cutoff) {
  /* Where this window ends (its last row), read before the delete changes it; no row: the
   * window is short, it reaches the cutoff, and the next one starts over from the oldest. */
  sqlite3_stmt *st = s->st[ST_USER_PRUNE_WINDOW];
  sqlite3_bind_int64(st, 1, cutoff);
  sqlite3_bind_int64(st, 2, s->prune_from);
  sqlite3_bind_int(st, 3, PRUNE_WINDOW);
  sqlite3_bind_int64(st, 4, s->prune_rowid);
  int rc = sqlite3_step(st);
  int64_t last = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  int64_t last_rowid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 1) : 0;
  done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return db_fail(s, "user prune");
  st = s->st[ST_USER_PRUNE];
  sqlite3_bind_int64(st, 1, cutoff);
  sqlite3_bind_int64(st, 2, s->prune_from);
  sqlite3_bind_int(st, 3, PRUNE_WINDOW);
  sqlite3_bind_int64(st, 4, s->prune_rowid);
  if ((rc = run(s, ST_USER_PRUNE, "user prune")))
    return rc;
  s->prune_from = last;
  s->prune_rowid = last_rowid;
  return sqlite3_changes(s->db);
}

int store_expire(struct store *s) {
  int rc;
  if (!s)
    return CLOUD_EINVAL;
  if (s->fault[0])
    return CLOUD_EIO;
  if (ckpt_holding(s)) /* maintenance can wait for the checkpoint */
    return 0;
  if ((rc = txn_begin(s)))
    return rc;
  int64_t now = now_ms();
  int n = prune_step(s, ST_OUTBOX_EXPIRE, now, "outbox expire");
  if (n < 0)
    return n;
  int c = prune_step(s, ST_CONN_PRUNE, now - s->conn_history_ms, "connection prune");
  if (c < 0)
    return c;
  int u = prune_users(s, now - s->user_ttl_ms);
  if (u < 0)
    return u;
  s->nusers -= u;
  if (u || c)
    log_debug(NULL, NULL, "store: pruned %d users, %d connection rows", u, c);
  if ((rc = txn_batched(s)))
    return rc;
  return n + c + u;
}

/* The file we opened must still be the one at the path: deleted (st_nlink 0) or replaced
 * (another inode), every write from now on goes nowhere a restart would find. */
static void check_file(struct store *s) {
  struct stat fst, pst;
  if (s->fd < 0 || s->fault[0])
    return;
  if (fstat(s->fd, &fst) == 0 && fst.st_nlink == 0)
    set_fault(s, "database file %s%s was deleted", s->path, "");
  else if (stat(s->path, &pst) < 0)
    set_fault(s, "database file %s is gone: %s", s->path, strerror(errno));
  else if (pst.st_ino != s->ino || pst.st_dev != s->dev)
    set_fault(s, "database file %s%s was replaced by another file", s->path, "");
}

int store_maintain(struct store *s) {
  if (!s)
    return CLOUD_EINVAL;
  int64_t now = mono_ms();
  if (now < s->maintain_at)
    return 0;
  s->maintain_at = now + 1000;
  check_file(s);
  int n, total = 0;
  /* Small steps while there is a backlog, each its own commit, bounded per call. */
  for (int i = 0; i < 5 && (n = store_expire(s)) > 0; i++) {
    total += n;
    store_flush(s);
  }
  return total;
}

const char *store_fault(const struct store *s) {
  return s && s->fault[0] ? s->fault : NULL;
}

int store_waiting(const struct store *s) {
  return s && !s->in_txn && s->nops > 0 && s->retry_at > 0;
}

static json_t *int_or_null(sqlite3_stmt *st, int col) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL)
    return json_null();
  return json_integer(sqlite3_column_int64(st, col));
}

static json_t *text_or_null(sqlite3_stmt *st, int col) {
  const unsigned char *t = sqlite3_column_text(st, col);
  return t ? json_string((const char *)t) : json_null();
}

/* The admin views read the loop's own connection, so they see the open transaction; closes
 * still queued (write_op) are applied first, or a user just gone would still look online. A
 * lock that stops it changes nothing: the rows are then as committed. */
static void apply_queued(struct store *s) {
  if (s->napplied < s->nops && !s->fault[0] && (s->in_txn || !ckpt_holding(s)))
    (void)txn_begin(s);
}

json_t *store_users_json(struct store *s, int online_only, int limit) {
  if (!s)
    return NULL;
  apply_queued(s);
  json_t *arr = json_array();
  sqlite3_stmt *st = s->st[online_only ? ST_USERS_ONLINE : ST_USERS_ALL];
  sqlite3_bind_int(st, 1, limit > 0 ? limit : -1);
  int rc = SQLITE_DONE;
  while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *u = json_pack(
        "{s:s, s:o, s:o, s:b, s:b, s:I, s:o}", "id", (const char *)sqlite3_column_text(st, 0),
        "created_at", int_or_null(st, 1), "last_seen", int_or_null(st, 2), "has_token",
        sqlite3_column_int(st, 3), "online", sqlite3_column_type(st, 4) != SQLITE_NULL,
        "connections", (json_int_t)sqlite3_column_int64(st, 4), "online_since", int_or_null(st, 5));
    if (!u || json_array_append_new(arr, u)) {
      json_decref(arr);
      arr = NULL;
    }
  }
  done(st);
  if (arr && rc != SQLITE_DONE) {
    db_fail(s, "users");
    json_decref(arr);
    return NULL;
  }
  return arr;
}

json_t *store_user_json(struct store *s, const char *id) {
  if (!s || !user_id_valid(id))
    return NULL;
  apply_queued(s);
  sqlite3_stmt *st = s->st[ST_USER_ONE];
  json_t *u = NULL, *conns = NULL;
  int rc;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    u = json_pack("{s:s, s:o, s:o, s:b, s:b, s:I}", "id", id, "created_at", int_or_null(st, 0),
                  "last_seen", int_or_null(st, 1), "has_token", sqlite3_column_int(st, 2), "online",
                  sqlite3_column_int64(st, 3) > 0, "open_connections",
                  (json_int_t)sqlite3_column_int64(st, 3));
  done(st);
  if (rc != SQLITE_ROW) {
    if (rc != SQLITE_DONE)
      db_fail(s, "user");
    return NULL;
  }
  if (!u || !(conns = json_array()))
    goto fail;
  st = s->st[ST_USER_CONNS];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, USER_JSON_CONNS);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *c =
        json_pack("{s:I, s:o, s:o, s:I, s:o, s:b}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                  "boot_id", text_or_null(st, 1), "remote_addr", text_or_null(st, 2),
                  "connected_at", (json_int_t)sqlite3_column_int64(st, 3), "disconnected_at",
                  int_or_null(st, 4), "open", sqlite3_column_type(st, 4) == SQLITE_NULL);
    if (!c || json_array_append_new(conns, c)) {
      done(st);
      goto fail;
    }
  }
  done(st);
  if (rc != SQLITE_DONE) {
    db_fail(s, "user connections");
    goto fail;
  }
  int queued = store_outbox_count(s, id);
  if (queued < 0)
    goto fail;
  if (json_object_set_new(u, "queued", json_integer(queued)) ||
      json_object_set_new(u, "connections", conns))
    goto fail_u;
  return u;
fail:
  json_decref(conns);
fail_u:
  json_decref(u);
  return NULL;
}

int store_counts(struct store *s, int64_t *users, int64_t *online, int64_t *conns,
                 int64_t *queued) {
  if (!s)
    return CLOUD_EINVAL;
  apply_queued(s);
  sqlite3_stmt *st = s->st[ST_COUNTS];
  sqlite3_bind_int64(st, 1, now_ms());
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (users)
      *users = sqlite3_column_int64(st, 0);
    if (online)
      *online = sqlite3_column_int64(st, 1);
    if (conns)
      *conns = sqlite3_column_int64(st, 2);
    if (queued)
      *queued = sqlite3_column_int64(st, 3);
  }
  done(st);
  return rc == SQLITE_ROW ? 0 : db_fail(s, "counts");
}

int64_t store_memory_used(void) {
  return sqlite3_memory_used();
}
