/* store.c: SQLite persistence of users, connections and the outbox (DESIGN §3).
 * Owns the database handle, the public schema and its migrations, and write batching. */
#include "store.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
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
/* An operator's write may hold the lock for a moment; the event loop must not wait long. */
#define BUSY_TIMEOUT_MS 1000
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

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_USER_INSERT,
  ST_USER_ENSURE,
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
  ST_USER_DELETE,
  ST_CONN_PRUNE,
  ST__N
};

static const char *const stmt_sql[ST__N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_USER_INSERT] =
        "INSERT INTO users (id, token_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?3)",
    [ST_USER_ENSURE] =
        "INSERT OR IGNORE INTO users (id, created_at, last_seen) VALUES (?1, ?2, ?2)",
    [ST_USER_HASH] = "SELECT token_hash FROM users WHERE id = ?1",
    [ST_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
    [ST_USER_TOUCH] = "UPDATE users SET last_seen = ?2 WHERE id = ?1",
    [ST_CONN_INSERT] = "INSERT INTO connections (user_id, boot_id, remote_addr, connected_at) "
                       "VALUES (?1, ?2, ?3, ?4)",
    [ST_CONN_CLOSE] = "UPDATE connections SET disconnected_at = ?2 "
                      "WHERE id = ?1 AND disconnected_at IS NULL RETURNING user_id",
    [ST_OUTBOX_COUNT] = "SELECT count(*) FROM outbox WHERE user_id = ?1 AND expires_at > ?2",
    [ST_OUTBOX_INSERT] = "INSERT INTO outbox (user_id, payload, is_binary, created_at, expires_at) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_OUTBOX_SELECT] = "SELECT id, payload, is_binary FROM outbox "
                         "WHERE user_id = ?1 AND expires_at > ?2 ORDER BY id",
    [ST_OUTBOX_DELETE] = "DELETE FROM outbox WHERE user_id = ?1 AND id <= ?2",
    [ST_OUTBOX_EXPIRE] = "DELETE FROM outbox WHERE expires_at <= ?1",
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
    /* Only a user that never connected under its own id and has nothing queued. */
    [ST_USER_DELETE] = "DELETE FROM users WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM outbox "
                       "WHERE user_id = ?1) AND NOT EXISTS (SELECT 1 FROM connections "
                       "WHERE user_id = ?1)",
    /* History of closed connections is kept as long as queued messages are. */
    [ST_CONN_PRUNE] = "DELETE FROM connections WHERE disconnected_at IS NOT NULL AND "
                      "disconnected_at < ?1",
};

struct store {
  sqlite3 *db;
  sqlite3_stmt *st[ST__N];
  char boot_id[33];
  int outbox_max;
  int64_t outbox_ttl_ms;
  int batch_ms;        /* < 0: every write commits at once */
  int in_txn;          /* a write transaction is open */
  int sync_pending;    /* it holds writes a client must not see uncommitted */
  int64_t txn_started; /* monotonic ms when it was opened */
  /* WAL checkpoints run on a thread of their own with a connection of their own: a
   * checkpoint writes and fsyncs the database file, which must not stall the event loop. */
  char *path;
  pthread_t ckpt;
  int ckpt_started, ckpt_stop;
  pthread_mutex_t ckpt_mu;
  pthread_cond_t ckpt_cv;
  struct metrics_hist *commit_latency; /* NULL: commits are not timed */
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

static int db_fail(struct store *s, const char *what) {
  log_error(NULL, NULL, "%s: %s", what, sqlite3_errmsg(s->db));
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
static int txn_begin(struct store *s) {
  if (s->in_txn && s->batch_ms >= 0 && mono_ms() - s->txn_started >= s->batch_ms) {
    /* Overdue (the host's timer did not fire yet): commit now rather than grow the batch. */
    int rc = store_flush(s);
    if (rc)
      return rc;
  }
  if (s->in_txn)
    return 0;
  if (run(s, ST_BEGIN, "begin"))
    return CLOUD_EIO;
  s->in_txn = 1;
  s->txn_started = mono_ms();
  return 0;
}

/* After a batched write: commit at once only when batching is off. */
static int txn_batched(struct store *s) {
  return s->batch_ms < 0 ? store_flush(s) : 0;
}

int store_flush(struct store *s) {
  if (!s || !s->in_txn)
    return 0;
  uint64_t t0 = metrics_now_ns();
  int rc = sqlite3_step(s->st[ST_COMMIT]);
  sqlite3_reset(s->st[ST_COMMIT]);
  metrics_hist_observe(s->commit_latency, metrics_now_ns() - t0);
  if (rc == SQLITE_DONE) {
    s->in_txn = 0;
    s->sync_pending = 0;
    return 0;
  }
  db_fail(s, "commit");
  if (sqlite3_get_autocommit(s->db)) {
    /* SQLite rolled the batch back itself (disk full, I/O error): those writes are lost. */
    s->in_txn = 0;
  }
  return CLOUD_EIO;
}

int store_flush_due_ms(const struct store *s) {
  if (!s || !s->in_txn)
    return -1;
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

/* mkdir -p of the file's directory; SQLite would only say "unable to open database file". */
static int make_parent(const char *path) {
  char dir[4096];
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
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(dir, 0755) < 0 && errno != EEXIST)
    return -errno;
  return 0;
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
  sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
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
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      log_error(NULL, NULL, "checkpoint: %s", sqlite3_errmsg(db));
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
  return 0;
}

static void checkpoint_stop(struct store *s) {
  if (!s->ckpt_started)
    return;
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
    if ((rc = make_parent(opt->path)) < 0) {
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
  if (exec(s, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", "pragmas") || migrate(s))
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
  if (!memory) {
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
  free(s->path);
  free(s);
}

const char *store_boot_id(const struct store *s) {
  return s ? s->boot_id : NULL;
}

int store_user_create(struct store *s, char *id_out, char *token_out) {
  unsigned char raw[16 + 32];
  uint8_t hash[SHA256_LEN];
  int rc;
  if (!s || !id_out || !token_out)
    return CLOUD_EINVAL;
  if ((rc = fill_random(raw, sizeof raw)) < 0)
    return rc;
  b64url(raw, 16, id_out);
  b64url(raw + 16, 32, token_out);
  sha256(token_out, STORE_TOKEN_LEN, hash);
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_stmt *st = s->st[ST_USER_INSERT];
  sqlite3_bind_text(st, 1, id_out, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, hash, sizeof hash, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, now_ms());
  rc = run(s, ST_USER_INSERT, "user create");
  explicit_bzero(raw, sizeof raw);
  if (rc)
    return rc;
  /* Committed with the next store_sync, which the host runs before any byte leaves for a
   * client: one commit covers every user created in the same turn of the event loop. */
  s->sync_pending = 1;
  return txn_batched(s);
}

int store_sync(struct store *s) {
  if (!s || !s->sync_pending)
    return 0;
  s->sync_pending = 0;
  return store_flush(s);
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
    return rc < 0 ? rc : 0;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_bind_text(s->st[ST_USER_ENSURE], 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s->st[ST_USER_ENSURE], 2, now_ms());
  if ((rc = run(s, ST_USER_ENSURE, "user ensure")))
    return rc;
  return store_flush(s);
}

int store_user_delete(struct store *s, const char *id) {
  int rc;
  if (!s || !user_id_valid(id))
    return CLOUD_EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_bind_text(s->st[ST_USER_DELETE], 1, id, -1, SQLITE_STATIC);
  if ((rc = run(s, ST_USER_DELETE, "user delete")))
    return rc;
  return txn_batched(s);
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
  sqlite3_bind_text(st, 1, id, len, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 2, now);
  return run(s, ST_USER_TOUCH, "last_seen");
}

int64_t store_conn_open(struct store *s, const char *user_id, const char *remote_addr) {
  int rc;
  int64_t now = now_ms();
  if (!s || !user_id_valid(user_id))
    return CLOUD_EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_stmt *st = s->st[ST_CONN_INSERT];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, s->boot_id, -1, SQLITE_STATIC);
  if (remote_addr)
    sqlite3_bind_text(st, 3, remote_addr, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, now);
  rc = sqlite3_step(st);
  done(st);
  if (rc != SQLITE_DONE) {
    if (sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
      return CLOUD_ENOUSER;
    return db_fail(s, "connection open");
  }
  int64_t row = sqlite3_last_insert_rowid(s->db);
  /* last_seen is written when a connection closes: one users-row write per connection. */
  if ((rc = txn_batched(s)))
    return rc;
  return row;
}

int store_conn_close(struct store *s, int64_t conn_row) {
  int rc;
  int64_t now = now_ms();
  if (!s || conn_row <= 0)
    return CLOUD_EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_stmt *st = s->st[ST_CONN_CLOSE];
  sqlite3_bind_int64(st, 1, conn_row);
  sqlite3_bind_int64(st, 2, now);
  char user[STORE_ID_MAX + 1];
  int ulen = 0;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    ulen = sqlite3_column_bytes(st, 0);
    if (ulen > STORE_ID_MAX)
      ulen = STORE_ID_MAX;
    memcpy(user, sqlite3_column_text(st, 0), (size_t)ulen);
    rc = sqlite3_step(st); /* RETURNING: the update is done when the statement finishes */
  }
  done(st);
  if (rc != SQLITE_DONE)
    return db_fail(s, "connection close");
  if (ulen > 0 && (rc = touch_user(s, user, ulen, now)))
    return rc;
  return txn_batched(s);
}

int store_outbox_push(struct store *s, const char *user_id, const void *data, size_t len,
                      int is_binary) {
  int rc, n;
  int64_t now = now_ms();
  if (!s || !user_id_valid(user_id) || (!data && len) || len > INT32_MAX)
    return CLOUD_EINVAL;
  if ((rc = store_user_exists(s, user_id)) <= 0)
    return rc < 0 ? rc : CLOUD_ENOUSER;
  if ((n = store_outbox_count(s, user_id)) < 0)
    return n;
  if (n >= s->outbox_max)
    return CLOUD_EFULL;
  if ((rc = txn_begin(s)))
    return rc;
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
    return rc;
  /* The caller was told "queued": commit it (and the batch with it) before returning. */
  return store_flush(s);
}

int store_outbox_drain(struct store *s, const char *user_id, store_outbox_fn fn, void *arg) {
  int delivered = 0, rc;
  int64_t last = 0;
  if (!s || !fn)
    return CLOUD_EINVAL;
  if (!user_id_valid(user_id))
    return 0;
  sqlite3_stmt *st = s->st[ST_OUTBOX_SELECT];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now_ms());
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *data = sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if (fn(arg, data ? data : "", len, sqlite3_column_int(st, 2)) != 0)
      break;
    last = sqlite3_column_int64(st, 0);
    delivered++;
  }
  done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    db_fail(s, "outbox drain");
  if (delivered == 0)
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : CLOUD_EIO;
  /* Delivered rows go even if reading the rest failed: sending them twice is worse.
   * Expired rows before `last` go with them; they were dead anyway. */
  if ((rc = txn_begin(s)))
    return rc;
  st = s->st[ST_OUTBOX_DELETE];
  sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, last);
  if ((rc = run(s, ST_OUTBOX_DELETE, "outbox delete")) || (rc = store_flush(s)))
    return rc;
  return delivered;
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

int store_expire(struct store *s) {
  int rc;
  if (!s)
    return CLOUD_EINVAL;
  if ((rc = txn_begin(s)))
    return rc;
  sqlite3_bind_int64(s->st[ST_OUTBOX_EXPIRE], 1, now_ms());
  if ((rc = run(s, ST_OUTBOX_EXPIRE, "outbox expire")))
    return rc;
  int n = sqlite3_changes(s->db);
  sqlite3_bind_int64(s->st[ST_CONN_PRUNE], 1, now_ms() - s->outbox_ttl_ms);
  if ((rc = run(s, ST_CONN_PRUNE, "connection prune")))
    return rc;
  if ((rc = txn_batched(s)))
    return rc;
  return n;
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

json_t *store_users_json(struct store *s, int online_only, int limit) {
  if (!s)
    return NULL;
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
