/* appdb.h: cloud_db(), the functions' own SQLite database (--app-db): one handle per thread,
 * opened on a thread's first call, closed when the thread ends. Owns those handles. */
#ifndef WSHOST_APPDB_H
#define WSHOST_APPDB_H

struct sqlite3;

/* The calling thread's handle on path (created 0600 if missing; WAL, a 5 s busy timeout), or
 * NULL: no path, the file cannot be opened, or APPDB_HANDLES_MAX threads hold one already. */
struct sqlite3 *appdb_handle(const char *path);

/* Threads that may hold a handle at once. */
#define APPDB_HANDLES_MAX 256

#endif
