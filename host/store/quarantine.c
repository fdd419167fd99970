/* quarantine.c: crash records and the versions they quarantine. The crash file is written by
 * the crashed process's signal handler (crash.c, one line per crash) and by lifts; each serving
 * process replays it at start, so a record outlives the process it describes.
 * The file stays small: past 256 KiB it is rewritten with what is still in force. */
#include "quarantine.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMPACT_BYTES (256 * 1024)

struct quarantine {
  char path[4200];
  int fd;
  json_t *quarantined; /* name -> crash record */
  json_t *crashes;     /* the last QUARANTINE_CRASHES_SHOWN crash records */
  json_t *counts;      /* function ("-": none) -> crashes recorded, for wshost_crashes_total */
};

/* Names counted one by one; past it they are summed under "other" (the series stay few). */
#define COUNTED_NAMES 64

static void count_crashes(struct quarantine *q, const char *fn, json_int_t n) {
  const char *key = fn ? fn : "-";
  if (!json_object_get(q->counts, key) && json_object_size(q->counts) >= COUNTED_NAMES)
    key = "other";
  json_int_t had = json_integer_value(json_object_get(q->counts, key));
  json_object_set_new(q->counts, key, json_integer(had + n));
}

void quarantine_path(const char *db_path, const char *runtime_dir, int host_pid, char *buf,
                     size_t len) {
  if (strcmp(db_path, ":memory:")) {
    snprintf(buf, len, "%s-crashes.jsonl", db_path);
    return;
  }
  /* A :memory: host's own file under the runtime folder, named by the supervisor's pid, so a
   * restarted serving process still sees it and another :memory: host in the same folder does
   * not. Removed when the host stops (main.c). */
  const char *base = runtime_dir;
  if (!base || !*base)
    base = getenv("XDG_RUNTIME_DIR");
  if (!base || !*base)
    base = getenv("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  snprintf(buf, len, "%s/wshost-%u-memory-%d-crashes.jsonl", base, (unsigned)geteuid(), host_pid);
}

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void replay(struct quarantine *q, json_t *rec) {
  const char *kind = json_string_value(json_object_get(rec, "kind"));
  const char *fn = json_string_value(json_object_get(rec, "function"));
  /* A load that ran past --load-timeout quarantines its build as a crash does. */
  if (kind && (!strcmp(kind, "crash") || !strcmp(kind, "load_timeout"))) {
    if (!strcmp(kind, "crash")) /* wshost_crashes_total counts crashes only */
      count_crashes(q, fn, 1);
    json_array_append(q->crashes, rec);
    if (json_array_size(q->crashes) > QUARANTINE_CRASHES_SHOWN)
      json_array_remove(q->crashes, 0);
    /* Only a crash inside a function with a known file hash names a version to keep out. */
    if (fn && json_string_value(json_object_get(rec, "sha256")))
      json_object_set(q->quarantined, fn, rec);
  } else if (kind && !strcmp(kind, "lift") && fn)
    json_object_del(q->quarantined, fn);
  else if (kind && !strcmp(kind, "tally") && fn) /* crashes compaction left out of the file */
    count_crashes(q, fn, json_integer_value(json_object_get(rec, "n")));
}

static int append_line(struct quarantine *q, json_t *rec) {
  char *s = json_dumps(rec, JSON_COMPACT);
  if (!s)
    return -ENOMEM;
  size_t n = strlen(s);
  s[n] = '\n'; /* json_dumps's terminator becomes the newline: one write, one line */
  ssize_t w = q->fd >= 0 ? write(q->fd, s, n + 1) : -1;
  int rc = w == (ssize_t)(n + 1) ? 0 : -(errno ? errno : EIO);
  free(s);
  return rc;
}

static int in_list(json_t *list, json_t *rec) {
  size_t i;
  json_t *x;
  json_array_foreach(list, i, x) if (x == rec) return 1;
  return 0;
}

static void dump_line(json_t *rec, FILE *f) {
  json_dumpf(rec, f, JSON_COMPACT);
  fputc('\n', f);
}

/* One more record of fn's that compaction keeps in the file. */
static void kept(json_t *left, json_t *rec) {
  const char *fn = json_string_value(json_object_get(rec, "function"));
  const char *key = fn ? fn : "-";
  json_t *n = json_object_get(left, key);
  if (!n) /* counted with the names past COUNTED_NAMES */
    n = json_object_get(left, "other");
  if (n)
    json_integer_set(n, json_integer_value(n) - 1);
}

/* Rewrites the file with what is still in force, in an order whose replay gives the same
 * state: older quarantines, then the crashes shown, each lifted at once unless it is the
 * record in force for its function, then the crash counts of the records left out (tallies). */
static void compact(struct quarantine *q) {
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp", q->path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return;
  const char *name;
  json_t *rec, *left = json_deep_copy(q->counts);
  json_object_foreach(q->quarantined, name, rec) if (!in_list(q->crashes, rec)) kept(left, rec);
  size_t k;
  json_array_foreach(q->crashes, k, rec) kept(left, rec);
  json_object_foreach(q->quarantined, name, rec) if (!in_list(q->crashes, rec)) dump_line(rec, f);
  size_t i;
  json_array_foreach(q->crashes, i, rec) {
    dump_line(rec, f);
    const char *fn = json_string_value(json_object_get(rec, "function"));
    if (fn && json_string_value(json_object_get(rec, "sha256")) &&
        json_object_get(q->quarantined, fn) != rec) {
      json_t *lift = json_pack("{ss ss ss}", "kind", "lift", "function", fn, "by", "compaction");
      dump_line(lift, f);
      json_decref(lift);
    }
  }
  /* Last: the names of the records kept come first when the file is replayed, as they did. */
  json_object_foreach(left, name, rec) if (json_integer_value(rec) > 0) {
    json_t *tally =
        json_pack("{ss ss sI}", "kind", "tally", "function", name, "n", json_integer_value(rec));
    if (tally)
      dump_line(tally, f);
    json_decref(tally);
  }
  json_decref(left);
  if (fclose(f) == 0)
    rename(tmp, q->path);
  else
    unlink(tmp);
}

int quarantine_open(const char *db_path, struct quarantine **out) {
  char path[4200];
  quarantine_path(db_path, NULL, 0, path, sizeof path);
  return quarantine_open_file(path, out);
}

int quarantine_open_file(const char *crash_path, struct quarantine **out) {
  struct quarantine *q = calloc(1, sizeof *q);
  if (!q)
    return -ENOMEM;
  q->fd = -1;
  q->quarantined = json_object();
  q->crashes = json_array();
  q->counts = json_object();
  snprintf(q->path, sizeof q->path, "%s", crash_path);
  FILE *f = fopen(q->path, "r");
  long size = 0;
  if (f) {
    char line[4096];
    while (fgets(line, sizeof line, f)) {
      json_t *rec = json_loads(line, 0, NULL);
      if (json_is_object(rec))
        replay(q, rec);
      json_decref(rec);
    }
    size = ftell(f);
    fclose(f);
  } else if (errno != ENOENT)
    log_warn(NULL, NULL, "cannot read crash records %s: %s", q->path, strerror(errno));
  if (size > COMPACT_BYTES)
    compact(q);
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", q->path);
  mkdir(dirname(dir), 0700); /* --db :memory: has no folder of its own */
  q->fd = open(q->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (q->fd < 0)
    log_warn(NULL, NULL, "cannot open crash records %s: %s; a crash will not be remembered",
             q->path, strerror(errno));
  const char *name;
  json_t *rec;
  json_object_foreach(q->quarantined, name, rec)
      log_warn(name, json_string_value(json_object_get(rec, "request_id")),
               "function %s is quarantined: version %lld (sha256 %.12s...) crashed with %s; "
               "deploy a fixed build or lift it (POST /_/quarantine/%s/lift)",
               name, (long long)json_integer_value(json_object_get(rec, "version")),
               json_string_value(json_object_get(rec, "sha256")),
               json_string_value(json_object_get(rec, "signal_name"))
                   ? json_string_value(json_object_get(rec, "signal_name"))
                   : "a signal",
               name);
  *out = q;
  return 0;
}

void quarantine_close(struct quarantine *q) {
  if (!q)
    return;
  if (q->fd >= 0)
    close(q->fd);
  json_decref(q->quarantined);
  json_decref(q->crashes);
  json_decref(q->counts);
  free(q);
}

const json_t *quarantine_crash_counts(const struct quarantine *q) {
  return q ? q->counts : NULL;
}

int quarantine_fd(const struct quarantine *q) {
  return q ? q->fd : -1;
}

const json_t *quarantine_get(const struct quarantine *q, const char *name) {
  return q ? json_object_get(q->quarantined, name) : NULL;
}

int quarantine_blocks(const struct quarantine *q, const char *name, const char *sha256) {
  const char *bad = json_string_value(json_object_get(quarantine_get(q, name), "sha256"));
  return bad && sha256 && !strcmp(bad, sha256);
}

int quarantine_lift(struct quarantine *q, const char *name, const char *by) {
  const json_t *rec = quarantine_get(q, name);
  if (!rec)
    return -ENOENT;
  json_t *lift = json_pack("{ss sI ss sO? ss}", "kind", "lift", "t", (json_int_t)now_ms(),
                           "function", name, "sha256", json_object_get(rec, "sha256"), "by", by);
  int rc = lift ? append_line(q, lift) : -ENOMEM;
  if (rc < 0)
    log_warn(name, NULL, "cannot record the lift in %s (%s): it lasts until restart", q->path,
             strerror(-rc));
  json_object_del(q->quarantined, name);
  json_decref(lift);
  return 0;
}

int quarantine_add(struct quarantine *q, json_t *rec) {
  if (!q || !json_is_object(rec))
    return -EINVAL;
  int rc = append_line(q, rec);
  replay(q, rec);
  return rc;
}

json_t *quarantine_status(const struct quarantine *q) {
  if (!q)
    return json_pack("{s{} s[]}", "quarantined", "crashes");
  return json_pack("{sO sO ss}", "quarantined", q->quarantined, "crashes", q->crashes, "file",
                   q->path);
}
