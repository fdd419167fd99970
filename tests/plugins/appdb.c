/* appdb: cloud_db(), the app's own SQLite database, driven by ?do=:
 *   put (?k=, ?v=) and get (?k=) on the loop thread's handle, with the journal mode;
 *   slow (?k=, ?ms=): the documented way off the loop: the response is deferred and a thread
 *   of this function runs the query on its own handle, sleeps ms, and completes it;
 *   has: whether there is a database at all. */
#include <cloud.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QMAX 16

struct job {
  cloud_deferred *d;
  char key[64];
  int ms;
};

static pthread_t th;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job q[QMAX];
static int qn, stopping, started;
static sqlite3 *loop_db;

static json_t *get(sqlite3 *db, const char *k) {
  sqlite3_stmt *st = NULL;
  json_t *v = json_null();
  if (sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?", -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, k, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
      json_decref(v);
      v = json_string((const char *)sqlite3_column_text(st, 0));
    }
  }
  sqlite3_finalize(st);
  return v;
}

static void *run(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!qn && !stopping)
      pthread_cond_wait(&cv, &mu);
    if (!qn && stopping)
      break;
    struct job j = q[0];
    memmove(q, q + 1, (size_t)(--qn) * sizeof q[0]);
    pthread_mutex_unlock(&mu);
    sqlite3 *db = cloud_db(); /* this thread's own handle */
    usleep((useconds_t)j.ms * 1000);
    json_t *v = db ? get(db, j.key) : json_null();
    cloud_deferred_json(j.d, db ? 200 : 500,
                        json_pack("{so sb sb}", "v", v, "own_handle", db && db != loop_db,
                                  "same_again", db && db == cloud_db()));
    pthread_mutex_lock(&mu);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

CLOUD_INIT() {
  started = pthread_create(&th, NULL, run, NULL) == 0;
  return started ? 0 : 1;
}

CLOUD_FINI() {
  pthread_mutex_lock(&mu);
  stopping = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  if (started)
    pthread_join(th, NULL);
}

static const char *arg(FunctionContext *ctx, const char *name) {
  return json_string_value(json_object_get(ctx->query, name));
}

CLOUD_FUNCTION(ctx) {
  const char *what = arg(ctx, "do");
  sqlite3 *db = cloud_db();
  if (!what)
    return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "?do="));
  if (!strcmp(what, "has"))
    return cloud_response_json(ctx, 200, json_pack("{sb}", "db", db != NULL));
  if (!db)
    return cloud_response_json(ctx, 503, json_pack("{ss}", "error", "no --app-db"));
  loop_db = db;
  sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT)", NULL, NULL, NULL);
  const char *k = arg(ctx, "k") ? arg(ctx, "k") : "";
  if (!strcmp(what, "put")) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv VALUES (?, ?)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(st, 1, k, -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 2, arg(ctx, "v") ? arg(ctx, "v") : "", -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return cloud_response_json(ctx, rc == SQLITE_DONE ? 200 : 500,
                               json_pack("{sb}", "ok", rc == SQLITE_DONE));
  }
  if (!strcmp(what, "get")) {
    sqlite3_stmt *st = NULL;
    json_t *mode = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      mode = json_string((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return cloud_response_json(ctx, 200, json_pack("{so so*}", "v", get(db, k), "journal", mode));
  }
  if (!strcmp(what, "slow")) {
    pthread_mutex_lock(&mu);
    int full = qn == QMAX;
    pthread_mutex_unlock(&mu);
    if (full)
      return cloud_response_json(ctx, 503, json_pack("{ss}", "error", "busy"));
    cloud_deferred *d = cloud_defer(ctx);
    if (!d)
      return 1;
    struct job j = {d, "", arg(ctx, "ms") ? atoi(arg(ctx, "ms")) : 0};
    snprintf(j.key, sizeof j.key, "%s", k);
    pthread_mutex_lock(&mu);
    q[qn++] = j;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return 0;
  }
  return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "unknown do"));
}
