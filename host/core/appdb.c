/* appdb.c: cloud_db(), the functions' own SQLite database (--app-db). A handle belongs to the
 * thread that opened it (SQLite's NOMUTEX mode: no lock on each call); the thread's end closes
 * it. Several handles, in this process and in workers, share the file through WAL. */
#include "appdb.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_int handles;

static void close_handle(void *db) {
  sqlite3_close_v2(db);
  atomic_fetch_sub(&handles, 1);
}

static void make_key(void) {
  pthread_key_create(&key, close_handle);
}

struct sqlite3 *appdb_handle(const char *path) {
  if (!path)
    return NULL;
  pthread_once(&once, make_key);
  sqlite3 *db = pthread_getspecific(key);
  if (db)
    return db;
  if (atomic_fetch_add(&handles, 1) >= APPDB_HANDLES_MAX) {
    atomic_fetch_sub(&handles, 1);
    log_warn(NULL, NULL, "cloud_db: %d threads hold a handle already", APPDB_HANDLES_MAX);
    return NULL;
  }
  /* Created private before SQLite sees it: its -wal and -shm files take the same mode. */
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0)
    close(fd);
  if (fd < 0 ||
      sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    log_warn(NULL, NULL, "cloud_db: cannot open %s: %s", path,
             fd < 0 ? strerror(errno)
             : db   ? sqlite3_errmsg(db)
                    : "out of memory");
    sqlite3_close_v2(db);
    atomic_fetch_sub(&handles, 1);
    return NULL;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
  if (pthread_setspecific(key, db) != 0) {
    close_handle(db);
    return NULL;
  }
  return db;
}
