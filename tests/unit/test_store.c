/* test_store.c: host/store.c against real SQLite files in a temp dir, checked from a second
 * connection the way an operator's sqlite3 shell sees them; crash recovery with a real kill -9. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cloud.h"
#include "sha256.h"
#include "store.h"

struct fx {
  char dir[64];
  char path[128];
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  snprintf(f->dir, sizeof f->dir, "%s", "/tmp/wshost-store-XXXXXX");
  if (!mkdtemp(f->dir))
    return -1;
  snprintf(f->path, sizeof f->path, "%s/wshost.db", f->dir);
  *state = f;
  return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static int teardown(void **state) {
  struct fx *f = *state;
  nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static struct store *open_store(const char *path, int outbox_max, int batch_ms) {
  struct store_options o = {.path = path, .outbox_max = outbox_max, .batch_ms = batch_ms};
  struct store *s = NULL;
  assert_int_equal(store_open(&s, &o), 0);
  assert_non_null(s);
  return s;
}

/* A second connection, as `sqlite3 data/wshost.db` would be. */
static sqlite3 *peer(const char *path, int readonly) {
  sqlite3 *db = NULL;
  int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  assert_int_equal(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK);
  return db;
}

/* First column of the first row as integer; -1 for no row. Fails the test on any error,
 * "database is locked" included. */
static int64_t q_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK)
    fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
  assert_int_equal(rc, SQLITE_OK);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
  assert_true(rc == SQLITE_ROW || rc == SQLITE_DONE);
  int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  return v;
}

static void q_exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK)
    fprintf(stderr, "%s: %s\n", sql, err);
  sqlite3_free(err);
  assert_int_equal(rc, SQLITE_OK);
}

static int is_b64url(const char *s, size_t len) {
  if (strlen(s) != len)
    return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_'))
      return 0;
  return 1;
}

/* 1 if needle occurs in the file (missing file: 0). */
static int file_contains(const char *path, const void *needle, size_t n) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return 0;
  fseek(fp, 0, SEEK_END);
  long size = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *buf = malloc((size_t)size + 1);
  assert_non_null(buf);
  size_t got = fread(buf, 1, (size_t)size, fp);
  fclose(fp);
  int found = memmem(buf, got, needle, n) != NULL;
  free(buf);
  return found;
}

static void test_schema_and_view(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "PRAGMA user_version"), 1);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name "
                             "IN ('users', 'connections', 'outbox', 'boots')"),
                   4);
  assert_int_equal(
      q_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND name = 'online_users'"),
      1);
  /* The view's columns are public: user_id, connections, since. */
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT * FROM online_users", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_column_count(st), 3);
  assert_string_equal(sqlite3_column_name(st, 0), "user_id");
  assert_string_equal(sqlite3_column_name(st, 1), "connections");
  assert_string_equal(sqlite3_column_name(st, 2), "since");
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  /* The queries the host runs use indexes, not scans of the big tables. */
  assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name IN "
                             "('connections_open', 'outbox_user', 'outbox_expires')"),
                   3);
  /* This boot is recorded and running. */
  const char *boot = store_boot_id(s);
  assert_non_null(boot);
  assert_int_equal(strlen(boot), 32);
  assert_int_equal(strspn(boot, "0123456789abcdef"), 32);
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM boots WHERE id = '%s' AND stopped_at IS NULL",
           boot);
  assert_int_equal(q_int(db, sql), 1);
  /* Owner-only file: it holds token hashes. */
  struct stat sb;
  assert_int_equal(stat(f->path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  sqlite3_close(db);
  store_close(s);

  /* Reopening migrates nothing and starts a second boot. */
  s = open_store(f->path, 0, 0);
  db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM boots"), 2);
  assert_int_equal(q_int(db, "SELECT count(*) FROM boots WHERE stopped_at IS NULL"), 1);
  sqlite3_close(db);
  store_close(s);
}

static void test_newer_schema_refused(void **state) {
  struct fx *f = *state;
  store_close(open_store(f->path, 0, 0));
  sqlite3 *db = peer(f->path, 0);
  q_exec(db, "PRAGMA user_version = 2");
  sqlite3_close(db);
  struct store_options o = {.path = f->path};
  struct store *s = (struct store *)1;
  assert_int_equal(store_open(&s, &o), CLOUD_EIO);
  assert_null(s);
}

static void test_parent_dir_created(void **state) {
  struct fx *f = *state;
  char path[200];
  snprintf(path, sizeof path, "%s/a/b/wshost.db", f->dir);
  struct store *s = open_store(path, 0, 0);
  store_close(s);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
}

static void test_create_and_check(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1];
  char id2[STORE_ID_LEN + 1], token2[STORE_TOKEN_LEN + 1];
  assert_int_equal(store_user_create(s, id, token), 0);
  assert_int_equal(store_user_create(s, id2, token2), 0);
  assert_true(is_b64url(id, STORE_ID_LEN));
  assert_true(is_b64url(token, STORE_TOKEN_LEN));
  assert_string_not_equal(id, id2);
  assert_string_not_equal(token, token2);
  /* Group commit: pending until store_sync, which the host runs before a client sees it. */
  assert_true(store_flush_due_ms(s) >= 0);
  assert_int_equal(store_sync(s), 0);
  assert_int_equal(store_flush_due_ms(s), -1);
  assert_int_equal(store_sync(s), 0); /* nothing left to sync */

  assert_int_equal(store_user_exists(s, id), 1);
  assert_int_equal(store_user_check(s, id, token), 1);
  assert_int_equal(store_user_check(s, id2, token2), 1);
  char wrong[STORE_TOKEN_LEN + 1];
  memcpy(wrong, token, sizeof wrong);
  wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
  assert_int_equal(store_user_check(s, id, wrong), 0);
  assert_int_equal(store_user_check(s, id, token2), 0); /* someone else's token */
  assert_int_equal(store_user_check(s, id, ""), 0);
  assert_int_equal(store_user_check(s, id, NULL), 0);
  assert_int_equal(store_user_check(s, "AAAAAAAAAAAAAAAAAAAAAA", token), 0); /* unknown id */
  assert_int_equal(store_user_check(s, "../../etc", token), 0);
  assert_int_equal(store_user_check(s, NULL, token), 0);
  store_close(s);

  /* Only the hash is on disk. store_close checkpointed; look at the -wal too in case. */
  char wal[160];
  snprintf(wal, sizeof wal, "%s-wal", f->path);
  uint8_t hash[SHA256_LEN];
  sha256(token, strlen(token), hash);
  assert_false(file_contains(f->path, token, strlen(token)));
  assert_false(file_contains(wal, token, strlen(token)));
  assert_true(file_contains(f->path, hash, sizeof hash) || file_contains(wal, hash, sizeof hash));
  assert_true(file_contains(f->path, id, strlen(id)) || file_contains(wal, id, strlen(id)));

  /* And the user and token survive a restart. */
  s = open_store(f->path, 0, 0);
  assert_int_equal(store_user_check(s, id, token), 1);
  assert_int_equal(store_user_check(s, id, wrong), 0);
  store_close(s);
}

static void test_ensure(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  assert_int_equal(store_user_exists(s, "alice@example.com"), 0);
  assert_int_equal(store_user_ensure(s, "alice@example.com"), 0);
  assert_int_equal(store_user_exists(s, "alice@example.com"), 1);
  assert_int_equal(store_user_ensure(s, "alice@example.com"), 0); /* idempotent */
  /* No token stored: no token resumes it. */
  assert_int_equal(store_user_check(s, "alice@example.com", ""), 0);
  assert_int_equal(store_user_check(s, "alice@example.com", "anything"), 0);
  assert_int_equal(store_user_ensure(s, "has space"), CLOUD_EINVAL);
  assert_int_equal(store_user_ensure(s, ""), CLOUD_EINVAL);
  assert_int_equal(store_user_ensure(s, NULL), CLOUD_EINVAL);
  char longid[STORE_ID_MAX + 2];
  memset(longid, 'x', sizeof longid - 1);
  longid[STORE_ID_MAX + 1] = '\0';
  assert_int_equal(store_user_ensure(s, longid), CLOUD_EINVAL);
  longid[STORE_ID_MAX] = '\0'; /* exactly the maximum is fine */
  assert_int_equal(store_user_ensure(s, longid), 0);
  assert_int_equal(store_user_exists(s, longid), 1);

  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM users WHERE id = 'alice@example.com' AND "
                             "token_hash IS NULL AND created_at > 1700000000000"),
                   1);
  sqlite3_close(db);
  store_close(s);
}

static void test_conn_batching_and_online(void **state) {
  struct fx *f = *state;
  /* A batch window long enough that only store_flush commits. */
  struct store *s = open_store(f->path, 0, 60000);
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1], sql[200];
  assert_int_equal(store_user_create(s, id, token), 0);
  assert_int_equal(store_sync(s), 0);
  sqlite3 *db = peer(f->path, 1);
  snprintf(sql, sizeof sql, "SELECT connections FROM online_users WHERE user_id = '%s'", id);

  assert_int_equal(store_flush_due_ms(s), -1);
  int64_t c1 = store_conn_open(s, id, "10.0.0.1");
  int64_t c2 = store_conn_open(s, id, "10.0.0.2");
  assert_true(c1 > 0);
  assert_true(c2 > c1);
  int due = store_flush_due_ms(s);
  assert_true(due > 0 && due <= 60000);
  /* Not committed yet, and reading while the batch holds the write lock is not an error. */
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(store_flush_due_ms(s), -1);
  assert_int_equal(q_int(db, sql), 2);
  assert_true(q_int(db, "SELECT count(*) FROM users WHERE last_seen IS NOT NULL") == 1);

  assert_int_equal(store_conn_close(s, c1, id), 0);
  assert_int_equal(q_int(db, sql), 2); /* batched */
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(q_int(db, sql), 1);
  assert_int_equal(store_conn_close(s, c1, id), 0); /* idempotent */
  int64_t users, online, conns, queued;
  assert_int_equal(store_counts(s, &users, &online, &conns, &queued), 0);
  assert_int_equal(users, 1);
  assert_int_equal(online, 1);
  assert_int_equal(conns, 1);
  assert_int_equal(queued, 0);
  assert_int_equal(store_conn_close(s, c2, id), 0);
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM connections WHERE disconnected_at IS NULL"), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM connections WHERE disconnected_at >= "
                             "connected_at AND remote_addr LIKE '10.0.0.%'"),
                   2);

  /* A connection for a user that was never created is refused, not orphaned. */
  assert_int_equal(store_conn_open(s, "nobody", "1.2.3.4"), CLOUD_ENOUSER);
  assert_int_equal(store_conn_open(s, "bad id", "1.2.3.4"), CLOUD_EINVAL);
  assert_int_equal(store_conn_close(s, 0, id), CLOUD_EINVAL);
  assert_int_equal(store_flush(s), 0);
  sqlite3_close(db);
  store_close(s);
}

static void test_batching_off(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, -1);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  sqlite3 *db = peer(f->path, 1);
  int64_t c = store_conn_open(s, "u1", NULL);
  assert_true(c > 0);
  assert_int_equal(store_flush_due_ms(s), -1);
  assert_int_equal(q_int(db, "SELECT connections FROM online_users WHERE user_id = 'u1'"), 1);
  assert_int_equal(store_conn_close(s, c, "u1"), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  sqlite3_close(db);
  store_close(s);
}

/* A fresh user and its first connection row are one write, durable after the
 * pass's store_sync; a close waits in memory for the next commit, names its user for
 * last_seen (once: a second close of the row changes nothing), and the admin views see it
 * before it is committed. */
static void test_user_conn_open_and_queued_close(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 60000);
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1], sql[200];
  uint8_t hash[32];
  assert_int_equal(store_user_new(id, token, hash), 0);
  uint64_t before = store_user_seq(s);
  int64_t row = store_user_conn_open(s, id, hash, "10.2.0.1");
  assert_true(row > 0);
  assert_true(store_user_seq(s) > before);
  assert_false(store_synced_upto(s, store_user_seq(s)));
  assert_int_equal(store_sync(s), 0);
  assert_true(store_synced_upto(s, store_user_seq(s)));
  sqlite3 *db = peer(f->path, 1);
  snprintf(sql, sizeof sql, "SELECT connections FROM online_users WHERE user_id = '%s'", id);
  assert_int_equal(q_int(db, sql), 1); /* both rows committed by the one sync */
  assert_int_equal(store_user_check(s, id, token), 1);

  usleep(3000); /* the close's time must differ from the connect's */
  assert_int_equal(store_conn_close(s, row, id), 0);
  assert_int_equal(q_int(db, sql), 1); /* not committed yet */
  int64_t users, online, conns, queued;
  assert_int_equal(store_counts(s, &users, &online, &conns, &queued), 0);
  assert_int_equal(online, 0); /* the admin view applied the queued close */
  assert_int_equal(conns, 0);
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  snprintf(sql, sizeof sql,
           "SELECT u.last_seen = c.disconnected_at AND c.disconnected_at > c.connected_at FROM "
           "users u JOIN connections c ON c.user_id = u.id WHERE u.id = '%s'",
           id);
  assert_int_equal(q_int(db, sql), 1);
  snprintf(sql, sizeof sql, "SELECT last_seen FROM users WHERE id = '%s'", id);
  int64_t seen = q_int(db, sql);
  usleep(3000);
  assert_int_equal(store_conn_close(s, row, id), 0); /* idempotent: last_seen stays */
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(q_int(db, sql), seen);
  assert_int_equal(store_conn_close(s, row, "bad id"), CLOUD_EINVAL);
  assert_int_equal(store_user_conn_open(s, "short", hash, NULL), CLOUD_EINVAL);
  sqlite3_close(db);
  store_close(s);
}

/* A close still in memory when the process dies (SIGKILL): the next start closes the row and
 * sets its user's last_seen, so online_users and last_seen are right after kill -9. */
static void test_lost_close_repaired_at_start(void **state) {
  struct fx *f = *state;
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1], sql[200];
  uint8_t hash[32];
  assert_int_equal(store_user_new(id, token, hash), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct store *s = open_store(f->path, 0, 60000);
    int64_t row = store_user_conn_open(s, id, hash, NULL);
    if (row <= 0 || store_sync(s))
      _exit(1);
    usleep(3000);
    if (store_conn_close(s, row, id)) /* queued: the batch is 60 s */
      _exit(1);
    raise(SIGKILL);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 1); /* the close was lost */
  sqlite3_close(db);
  struct store *s = open_store(f->path, 0, 60000);
  db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  snprintf(sql, sizeof sql,
           "SELECT u.last_seen > c.connected_at FROM users u JOIN connections c "
           "ON c.user_id = u.id WHERE u.id = '%s'",
           id);
  assert_int_equal(q_int(db, sql), 1);
  sqlite3_close(db);
  store_close(s);
}

static void test_overdue_batch_commits_on_next_write(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 1);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  sqlite3 *db = peer(f->path, 1);
  assert_true(store_conn_open(s, "u1", NULL) > 0);
  usleep(5000);
  assert_int_equal(store_flush_due_ms(s), 0);
  /* The host's timer is late: the next write commits the overdue batch first. */
  assert_true(store_conn_open(s, "u1", NULL) > 0);
  assert_int_equal(q_int(db, "SELECT connections FROM online_users WHERE user_id = 'u1'"), 1);
  sqlite3_close(db);
  store_close(s);
}

static void test_clean_close_closes_connections(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  assert_true(store_conn_open(s, "u1", "::1") > 0);
  char boot[40], sql[160];
  snprintf(boot, sizeof boot, "%s", store_boot_id(s));
  store_close(s); /* pending batch included */
  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM connections"), 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM boots WHERE id = '%s' AND stopped_at > 0", boot);
  assert_int_equal(q_int(db, sql), 1);
  sqlite3_close(db);
}

/* The child opens connections and queues a message, then dies by SIGKILL without closing
 * anything. Plain code only: cmocka's asserts do not belong in a forked child. */
static void crash_child(const char *path, int out_fd) {
  struct store_options o = {.path = path, .batch_ms = 60000};
  struct store *s;
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1], line[128];
  if (store_open(&s, &o) || store_user_create(s, id, token) || store_user_ensure(s, "bob"))
    _exit(2);
  if (store_conn_open(s, id, "a") <= 0 || store_conn_open(s, id, "b") <= 0 ||
      store_conn_open(s, "bob", "c") <= 0 || store_flush(s))
    _exit(3);
  /* An outbox push commits even while a batch is open. */
  if (store_conn_open(s, "bob", "d") <= 0 || store_outbox_push(s, id, "kept", 4, 0))
    _exit(4);
  /* This one stays uncommitted and dies with the process. */
  if (store_conn_open(s, "bob", "e") <= 0)
    _exit(5);
  int n = snprintf(line, sizeof line, "%s %s %s\n", id, token, store_boot_id(s));
  if (write(out_fd, line, (size_t)n) != n)
    _exit(6);
  raise(SIGKILL);
  _exit(7);
}

static void test_crash_recovery(void **state) {
  struct fx *f = *state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    crash_child(f->path, fds[1]);
  }
  close(fds[1]);
  char line[128] = {0}, id[64], token[64], boot[64], sql[200];
  ssize_t n = read(fds[0], line, sizeof line - 1);
  close(fds[0]);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
  assert_true(n > 0);
  assert_int_equal(sscanf(line, "%63s %63s %63s", id, token, boot), 3);

  /* What the dead process left: its committed connections still look online. */
  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 2);
  assert_int_equal(q_int(db, "SELECT sum(connections) FROM online_users"), 4);
  sqlite3_close(db);

  struct store *s = open_store(f->path, 0, 0);
  db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users"), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM connections WHERE disconnected_at IS NULL"), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM connections"), 4); /* "e" never committed */
  snprintf(sql, sizeof sql, "SELECT count(*) FROM boots WHERE id = '%s' AND stopped_at IS NULL",
           boot);
  assert_int_equal(q_int(db, sql), 1); /* the crashed boot is visible as such */
  sqlite3_close(db);

  /* Users, their tokens and queued messages survived. */
  assert_int_equal(store_user_exists(s, id), 1);
  assert_int_equal(store_user_exists(s, "bob"), 1);
  assert_int_equal(store_user_check(s, id, token), 1);
  assert_int_equal(store_outbox_count(s, id), 1);
  int64_t users, online, conns, queued;
  assert_int_equal(store_counts(s, &users, &online, &conns, &queued), 0);
  assert_int_equal(users, 2);
  assert_int_equal(online, 0);
  assert_int_equal(conns, 0);
  assert_int_equal(queued, 1);
  store_close(s);
}

struct got {
  int n, stop_at;
  char msg[8][16];
  size_t len[8];
  int bin[8];
};

static int collect(void *arg, const void *data, size_t len, int is_binary) {
  struct got *g = arg;
  if (g->n + 1 == g->stop_at)
    return 1;
  assert_true(g->n < 8 && len < 16);
  memcpy(g->msg[g->n], data, len);
  g->len[g->n] = len;
  g->bin[g->n] = is_binary;
  g->n++;
  return 0;
}

static void test_outbox_order_and_drain(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  assert_int_equal(store_user_ensure(s, "u2"), 0);
  assert_int_equal(store_outbox_push(s, "u1", "one", 3, 0), 0);
  assert_int_equal(store_outbox_push(s, "u2", "other", 5, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "two", 3, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "\0\1\2", 3, 1), 0);
  assert_int_equal(store_outbox_push(s, "u1", "four", 4, 0), 0);
  assert_int_equal(store_outbox_count(s, "u1"), 4);

  /* Committed before returning: another connection sees them. */
  sqlite3 *db = peer(f->path, 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE user_id = 'u1'"), 4);

  /* fn stops at the third message: it and later stay queued. */
  struct got g = {.stop_at = 3};
  assert_int_equal(store_outbox_drain(s, "u1", collect, &g), 2);
  assert_int_equal(g.n, 2);
  assert_memory_equal(g.msg[0], "one", 3);
  assert_memory_equal(g.msg[1], "two", 3);
  assert_int_equal(store_outbox_count(s, "u1"), 2);
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE user_id = 'u1'"), 2);

  struct got g2 = {0};
  assert_int_equal(store_outbox_drain(s, "u1", collect, &g2), 2);
  assert_int_equal(g2.len[0], 3);
  assert_memory_equal(g2.msg[0], "\0\1\2", 3);
  assert_int_equal(g2.bin[0], 1);
  assert_memory_equal(g2.msg[1], "four", 4);
  assert_int_equal(g2.len[1], 4);
  assert_int_equal(g2.bin[1], 0);
  assert_int_equal(store_outbox_count(s, "u1"), 0);

  /* Stopping at the first delivers and deletes nothing. */
  struct got g3 = {.stop_at = 1};
  assert_int_equal(store_outbox_drain(s, "u2", collect, &g3), 0);
  assert_int_equal(store_outbox_count(s, "u2"), 1);
  struct got g4 = {0};
  assert_int_equal(store_outbox_drain(s, "u2", collect, &g4), 1);
  assert_memory_equal(g4.msg[0], "other", 5);
  assert_int_equal(store_outbox_drain(s, "u2", collect, &g4), 0); /* empty */
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 0);
  sqlite3_close(db);
  store_close(s);
}

static void test_outbox_bound(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 3, 0);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(store_outbox_push(s, "u1", "m", 1, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "overflow", 8, 0), CLOUD_EFULL);
  assert_int_equal(store_outbox_count(s, "u1"), 3); /* nothing dropped, nothing added */
  struct got g = {0};
  assert_int_equal(store_outbox_drain(s, "u1", collect, &g), 3);
  assert_int_equal(store_outbox_push(s, "u1", "again", 5, 0), 0);
  store_close(s);
}

static void test_outbox_expiry(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 2, 0);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  assert_int_equal(store_outbox_push(s, "u1", "old", 3, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "new", 3, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "x", 1, 0), CLOUD_EFULL);
  /* Default ttl is 7 days. */
  sqlite3 *db = peer(f->path, 0);
  assert_true(q_int(db, "SELECT min(expires_at - created_at) FROM outbox") == 7LL * 86400 * 1000);
  q_exec(db, "UPDATE outbox SET expires_at = 1 WHERE payload = 'old'");

  /* An expired message is neither counted, nor delivered, nor holding a place in the bound. */
  assert_int_equal(store_outbox_count(s, "u1"), 1);
  assert_int_equal(store_outbox_push(s, "u1", "newer", 5, 0), 0);
  struct got g = {0};
  assert_int_equal(store_outbox_drain(s, "u1", collect, &g), 2);
  assert_memory_equal(g.msg[0], "new", 3);
  assert_memory_equal(g.msg[1], "newer", 5);

  assert_int_equal(store_outbox_push(s, "u1", "a", 1, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "b", 1, 0), 0);
  q_exec(db, "UPDATE outbox SET expires_at = 1 WHERE payload IN ('a', 'b')");
  assert_int_equal(store_expire(s), 2);
  assert_int_equal(store_flush(s), 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 0);
  assert_int_equal(store_expire(s), 0);
  assert_int_equal(store_flush(s), 0);
  sqlite3_close(db);
  store_close(s);

  /* A short ttl from the options. */
  struct store_options o = {.path = f->path, .outbox_ttl_s = 1};
  assert_int_equal(store_open(&s, &o), 0);
  assert_int_equal(store_outbox_push(s, "u1", "brief", 5, 0), 0);
  assert_int_equal(store_outbox_count(s, "u1"), 1);
  usleep(1100 * 1000);
  assert_int_equal(store_outbox_count(s, "u1"), 0);
  struct got g2 = {0};
  assert_int_equal(store_outbox_drain(s, "u1", collect, &g2), 0);
  assert_int_equal(g2.n, 0);
  store_close(s);
}

static void test_outbox_unknown_user(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  assert_int_equal(store_outbox_push(s, "ghost", "hi", 2, 0), CLOUD_ENOUSER);
  assert_int_equal(store_outbox_push(s, "bad id", "hi", 2, 0), CLOUD_EINVAL);
  assert_int_equal(store_outbox_push(s, NULL, "hi", 2, 0), CLOUD_EINVAL);
  assert_int_equal(store_outbox_count(s, "ghost"), 0);
  struct got g = {0};
  assert_int_equal(store_outbox_drain(s, "ghost", collect, &g), 0);
  assert_int_equal(store_outbox_drain(s, "ghost", NULL, &g), CLOUD_EINVAL);
  store_close(s);
}

static void test_push_commits_open_batch(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 60000);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  assert_int_equal(store_user_ensure(s, "u2"), 0);
  sqlite3 *db = peer(f->path, 1);
  assert_true(store_conn_open(s, "u1", NULL) > 0);
  assert_true(store_flush_due_ms(s) >= 0);
  assert_int_equal(store_outbox_push(s, "u2", "hello", 5, 0), 0);
  assert_int_equal(store_flush_due_ms(s), -1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM online_users WHERE user_id = 'u1'"), 1);
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE user_id = 'u2'"), 1);
  sqlite3_close(db);
  store_close(s);
}

static void test_memory(void **state) {
  (void)state;
  struct store *s = open_store(":memory:", 0, 0);
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1];
  assert_int_equal(strlen(store_boot_id(s)), 32);
  assert_int_equal(store_user_create(s, id, token), 0);
  assert_int_equal(store_user_check(s, id, token), 1);
  int64_t c = store_conn_open(s, id, "127.0.0.1");
  assert_true(c > 0);
  assert_int_equal(store_outbox_push(s, id, "m", 1, 0), 0);
  struct got g = {0};
  assert_int_equal(store_outbox_drain(s, id, collect, &g), 1);
  assert_int_equal(store_conn_close(s, c, id), 0);
  assert_int_equal(store_flush(s), 0);
  store_close(s);
}

static void test_admin_json(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 0);
  assert_int_equal(store_user_ensure(s, "on"), 0);
  assert_int_equal(store_user_ensure(s, "off"), 0);
  int64_t c1 = store_conn_open(s, "on", "10.1.1.1");
  int64_t c2 = store_conn_open(s, "on", "10.1.1.2");
  int64_t c3 = store_conn_open(s, "off", "10.1.1.3");
  assert_true(c1 > 0 && c2 > 0 && c3 > 0);
  assert_int_equal(store_conn_close(s, c3, "off"), 0);
  assert_int_equal(store_outbox_push(s, "off", "q", 1, 0), 0);

  json_t *all = store_users_json(s, 0, 0);
  assert_non_null(all);
  assert_int_equal(json_array_size(all), 2);
  int seen = 0;
  for (size_t i = 0; i < json_array_size(all); i++) {
    json_t *u = json_array_get(all, i);
    const char *id = json_string_value(json_object_get(u, "id"));
    assert_non_null(id);
    assert_true(json_is_integer(json_object_get(u, "last_seen")));
    if (strcmp(id, "on") == 0) {
      assert_true(json_is_true(json_object_get(u, "online")));
      assert_int_equal(json_integer_value(json_object_get(u, "connections")), 2);
      seen |= 1;
    } else {
      assert_string_equal(id, "off");
      assert_true(json_is_false(json_object_get(u, "online")));
      assert_int_equal(json_integer_value(json_object_get(u, "connections")), 0);
      seen |= 2;
    }
  }
  assert_int_equal(seen, 3);
  json_decref(all);

  json_t *on = store_users_json(s, 1, 0);
  assert_non_null(on);
  assert_int_equal(json_array_size(on), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(on, 0), "id")), "on");
  json_decref(on);
  json_t *one = store_users_json(s, 0, 1);
  assert_int_equal(json_array_size(one), 1); /* limit */
  json_decref(one);

  json_t *u = store_user_json(s, "off");
  assert_non_null(u);
  assert_string_equal(json_string_value(json_object_get(u, "id")), "off");
  assert_true(json_is_false(json_object_get(u, "online")));
  assert_int_equal(json_integer_value(json_object_get(u, "queued")), 1);
  json_t *cs = json_object_get(u, "connections");
  assert_int_equal(json_array_size(cs), 1);
  json_t *c = json_array_get(cs, 0);
  assert_int_equal(json_integer_value(json_object_get(c, "id")), c3);
  assert_string_equal(json_string_value(json_object_get(c, "remote_addr")), "10.1.1.3");
  assert_string_equal(json_string_value(json_object_get(c, "boot_id")), store_boot_id(s));
  assert_true(json_is_integer(json_object_get(c, "disconnected_at")));
  assert_true(json_is_false(json_object_get(c, "open")));
  json_decref(u);

  u = store_user_json(s, "on");
  assert_non_null(u);
  assert_true(json_is_true(json_object_get(u, "online")));
  assert_int_equal(json_integer_value(json_object_get(u, "open_connections")), 2);
  cs = json_object_get(u, "connections");
  assert_int_equal(json_array_size(cs), 2);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(cs, 0), "id")), c2);
  assert_true(json_is_null(json_object_get(json_array_get(cs, 0), "disconnected_at")));
  json_decref(u);

  assert_null(store_user_json(s, "nobody"));
  assert_null(store_user_json(s, "bad id"));

  int64_t users = -1, online = -1, conns = -1, queued = -1;
  assert_int_equal(store_counts(s, &users, &online, &conns, &queued), 0);
  assert_int_equal(users, 2);
  assert_int_equal(online, 1);
  assert_int_equal(conns, 2);
  assert_int_equal(queued, 1);
  assert_int_equal(store_counts(s, NULL, NULL, NULL, NULL), 0);
  store_close(s);
}

struct first_row {
  int64_t id;
  char data[16];
  int n;
};

static int take_row(void *arg, int64_t id, const void *data, size_t len, int is_binary) {
  (void)is_binary;
  struct first_row *r = arg;
  if (r->n++ == 0) {
    r->id = id;
    snprintf(r->data, sizeof r->data, "%.*s", (int)len, (const char *)data);
  }
  return 0;
}

static int64_t mono_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Another process holds the write lock (BEGIN EXCLUSIVE): batched writes wait in memory and
 * return at once, a push that cannot be committed is refused, an acknowledged row is not
 * loaded again, and everything lands once the lock is gone. */
static void test_writes_wait_for_a_lock(void **state) {
  struct fx *f = *state;
  struct store *s = open_store(f->path, 0, 60000);
  assert_int_equal(store_user_ensure(s, "u1"), 0);
  assert_int_equal(store_outbox_push(s, "u1", "a", 1, 0), 0);
  assert_int_equal(store_outbox_push(s, "u1", "b", 1, 0), 0);
  sqlite3 *db = peer(f->path, 0);
  q_exec(db, "BEGIN EXCLUSIVE");
  int64_t t0 = mono_now_ms();
  int64_t c = store_conn_open(s, "u1", "10.0.0.9");
  assert_true(c > 0);
  struct first_row r = {0};
  assert_int_equal(store_outbox_load(s, "u1", 0, 1, take_row, &r), 1);
  assert_string_equal(r.data, "a");
  assert_int_equal(store_outbox_ack(s, "u1", r.id), 0);
  assert_int_equal(store_flush(s), -EAGAIN);
  assert_true(store_waiting(s));
  assert_int_equal(store_outbox_push(s, "u1", "c", 1, 0), CLOUD_EIO);
  struct first_row r2 = {0};
  assert_int_equal(store_outbox_load(s, "u1", 0, 0, take_row, &r2), 1);
  assert_string_equal(r2.data, "b"); /* "a" is acknowledged: never delivered twice */
  assert_true(mono_now_ms() - t0 < 500);
  q_exec(db, "COMMIT");
  for (int i = 0; i < 100 && store_flush(s) == -EAGAIN; i++)
    usleep(20000);
  assert_false(store_waiting(s));
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 1);
  assert_int_equal(q_int(db, "SELECT connections FROM online_users WHERE user_id = 'u1'"), 1);
  sqlite3_close(db);
  store_close(s);
}

/* --max-users: the longest idle empty host-assigned users make room; the bound holds. */
static void test_max_users_evicts_idle_users(void **state) {
  struct fx *f = *state;
  struct store_options o = {.path = f->path, .batch_ms = -1, .max_users = 5};
  struct store *s = NULL;
  assert_int_equal(store_open(&s, &o), 0);
  char id[STORE_ID_LEN + 1], token[STORE_TOKEN_LEN + 1], first[STORE_ID_LEN + 1];
  assert_int_equal(store_user_create(s, first, token), 0);
  int64_t c = store_conn_open(s, first, NULL); /* online: never evicted */
  assert_true(c > 0);
  for (int i = 0; i < 50; i++)
    assert_int_equal(store_user_create(s, id, token), 0);
  assert_int_equal(store_flush(s), 0);
  sqlite3 *db = peer(f->path, 1);
  assert_true(q_int(db, "SELECT count(*) FROM users") <= 5);
  char sql[120];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM users WHERE id = '%s'", first);
  assert_int_equal(q_int(db, sql), 1);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM users WHERE id = '%s'", id);
  assert_int_equal(q_int(db, sql), 1); /* the newest stays */
  sqlite3_close(db);
  store_close(s);
}

/* Pruning looks at a moving window of idle users: 250 that must stay (each holds a queued
 * message, all with the same last_seen) do not keep the ones behind them from going. */
static void test_prune_window_moves_past_users_that_stay(void **state) {
  struct fx *f = *state;
  struct store_options o = {.path = f->path, .batch_ms = -1, .user_ttl_s = 1};
  struct store *s = NULL;
  assert_int_equal(store_open(&s, &o), 0);
  sqlite3 *db = peer(f->path, 0);
  q_exec(db, "BEGIN");
  for (int i = 0; i < 255; i++) {
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO users (id, token_hash, created_at, last_seen) VALUES ('u%03d', x'00', 1, "
             "1); %s",
             i,
             i < 250 ? "INSERT INTO outbox (user_id, payload, is_binary, created_at, expires_at) "
                       "VALUES (last_insert_rowid() || '', 'm', 0, 1, 9e15)"
                     : "");
    q_exec(db, sql);
  }
  q_exec(db, "UPDATE outbox SET user_id = (SELECT id FROM users WHERE rowid = outbox.user_id)");
  q_exec(db, "COMMIT");
  assert_int_equal(q_int(db, "SELECT count(*) FROM outbox o JOIN users u ON u.id = o.user_id"),
                   250);
  for (int i = 0; i < 6; i++)
    assert_true(store_expire(s) >= 0);
  assert_int_equal(q_int(db, "SELECT count(*) FROM users"), 250);
  assert_int_equal(q_int(db, "SELECT count(*) FROM users WHERE id >= 'u250'"), 0);
  sqlite3_close(db);
  store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_schema_and_view, setup, teardown),
      cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_parent_dir_created, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_and_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ensure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_conn_batching_and_online, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batching_off, setup, teardown),
      cmocka_unit_test_setup_teardown(test_overdue_batch_commits_on_next_write, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_conn_open_and_queued_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lost_close_repaired_at_start, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clean_close_closes_connections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_outbox_order_and_drain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_outbox_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_outbox_expiry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_outbox_unknown_user, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_commits_open_batch, setup, teardown),
      cmocka_unit_test(test_memory),
      cmocka_unit_test_setup_teardown(test_admin_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_writes_wait_for_a_lock, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_users_evicts_idle_users, setup, teardown),
      cmocka_unit_test_setup_teardown(test_prune_window_moves_past_users_that_stay, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
