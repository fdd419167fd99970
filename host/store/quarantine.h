/* quarantine.h: crash records and the versions they quarantine. Owns the crash file beside
 * the database (<db>-crashes.jsonl): one JSON line per crash (written by the signal handler of
 * the process that crashed) or lift; the next serving process replays it. */
#ifndef WSHOST_QUARANTINE_H
#define WSHOST_QUARANTINE_H

#include <jansson.h>

/* Crashes /_/status lists (the newest last). */
#define QUARANTINE_CRASHES_SHOWN 20

struct quarantine;

/* The crash file's path for a database path (<db>-crashes.jsonl; ":memory:" has none of its
 * own: see quarantine_open_file). */
/* The crash file of a host on db_path: <db>-crashes.jsonl, or for ":memory:" one of its own
 * under runtime_dir ($XDG_RUNTIME_DIR, $TMPDIR, /tmp) named by host_pid, the supervisor's. */
void quarantine_path(const char *db_path, const char *runtime_dir, int host_pid, char *buf,
                     size_t len);
/* Reads the file (a missing one is empty) and opens it for appending. 0 or -errno. */
int quarantine_open(const char *db_path, struct quarantine **out);
/* The same with the crash file named (a :memory: host keeps one per host under its runtime
 * folder: main.c). */
int quarantine_open_file(const char *crash_path, struct quarantine **out);
void quarantine_close(struct quarantine *q);
/* The append fd the crash handler writes to (-1 when the file could not be opened). */
int quarantine_fd(const struct quarantine *q);
/* The crash record that quarantines function name, or NULL (borrowed). */
const json_t *quarantine_get(const struct quarantine *q, const char *name);
/* 1 if the version of name with this file hash (hex) must not be loaded. */
int quarantine_blocks(const struct quarantine *q, const char *name, const char *sha256);
/* Lifts name's quarantine and records why ("admin", "deployed ..."). 0, or -ENOENT. */
int quarantine_lift(struct quarantine *q, const char *name, const char *by);
/* Records a crash seen by this process (--isolation process: a worker's), appending it to the
 * file and to the crashes shown. A record with "function" and "sha256" quarantines that build,
 * as the signal handler's records do. 0 or -errno (then it lasts until restart). */
int quarantine_add(struct quarantine *q, json_t *rec);
/* Crashes recorded in the file (replayed at open, compaction keeps the count) and since, by
 * function ("-": outside any function); borrowed: {name: n}. */
const json_t *quarantine_crash_counts(const struct quarantine *q);
/* {"quarantined": {name: crash record}, "crashes": [last crash records]}; new reference. */
json_t *quarantine_status(const struct quarantine *q);

#endif
