/* metrics.c: the host's counters and histograms, and their rendering in the Prometheus text
 * format (version 0.0.4, what every Prometheus server scrapes). Counters only grow; gauges are
 * read at scrape time; no label takes a value a client chose, so the series stay few. */
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct metrics_fn {
  uint64_t calls, errors;
  struct metrics_hist latency;
};

static const uint64_t bucket_ns[METRICS_BUCKETS] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000};
static const char *const bucket_le[METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"};

/* Upgrade refusals: the host's own messages get their own label; anything else (a plugin's
 * cloud_reject reason, say) is labelled by its status alone. */
static const struct {
  const char *message, *label;
} reasons[] = {
    {"bad WebSocket handshake", "bad_handshake"},
    {"WebSocket version 13 only", "bad_version"},
    {"shutting down", "draining"},
    {"too many connections", "max_connections"},
    {"no __websocket__ function loaded", "no_function"},
    {"origin not allowed", "origin"},
    {NULL, "other"},
};
#define NREASONS (sizeof reasons / sizeof reasons[0])

uint64_t metrics_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void metrics_hist_observe(struct metrics_hist *hist, uint64_t ns) {
  if (!hist)
    return;
  for (int i = 0; i < METRICS_BUCKETS; i++)
    if (ns <= bucket_ns[i]) {
      hist->bucket[i]++;
      break;
    }
  hist->count++;
  hist->sum_ns += ns;
}

void metrics_function_call(struct metrics *m, const char *name, uint64_t ns, int rc) {
  struct metrics_fn *f = map_get(&m->functions, name, strlen(name));
  if (!f) {
    f = calloc(1, sizeof *f);
    if (!f || map_set(&m->functions, name, strlen(name), f) < 0) {
      free(f);
      return; /* out of memory: this call goes uncounted, nothing else suffers */
    }
  }
  f->calls++;
  if (rc)
    f->errors++;
  metrics_hist_observe(&f->latency, ns);
}

/* The event types a function is called for; HTTP methods are one type ("HTTP"). */
static const char *const events[METRICS_EVENTS] = {"WebSocket:connection",
                                                   "WebSocket:message",
                                                   "WebSocket:close",
                                                   "WebSocket:error",
                                                   "WebSocket:resume",
                                                   "WebSocket:end",
                                                   "Room:join",
                                                   "Room:leave",
                                                   "Timer",
                                                   "HTTP",
                                                   "other"};

void metrics_event(struct metrics *m, const char *method, uint64_t ns) {
  int i = 0;
  while (i < METRICS_EVENTS - 2 && (!method || strcmp(events[i], method)))
    i++;
  if (i == METRICS_EVENTS - 2 && method && *method) { /* not a WebSocket event: a method? */
    int upper = 1;
    for (const char *p = method; *p && upper; p++)
      upper = *p >= 'A' && *p <= 'Z';
    i = upper ? METRICS_EVENTS - 2 : METRICS_EVENTS - 1;
  } else if (i == METRICS_EVENTS - 2)
    i = METRICS_EVENTS - 1;
  metrics_hist_observe(&m->events[i], ns);
}

void metrics_http_response(struct metrics *m, int status) {
  if (status >= 100 && status <= 599)
    m->http_status[status - 100]++;
}

void metrics_upgrade_refused(struct metrics *m, int status, const char *message) {
  int reason = (int)NREASONS - 1;
  for (size_t i = 0; message && reasons[i].message; i++)
    if (!strcmp(message, reasons[i].message))
      reason = (int)i;
  int k;
  for (k = 0; k < m->nrefused; k++)
    if (m->refused[k].status == status && m->refused[k].reason == reason)
      break;
  if (k == m->nrefused) {
    if (m->nrefused == METRICS_REFUSALS)
      k = METRICS_REFUSALS - 1; /* statuses are few; should they not be, the last one sums */
    else {
      m->refused[k].status = status;
      m->refused[k].reason = reason;
      m->nrefused++;
    }
  }
  m->refused[k].n++;
}

void metrics_reload(struct metrics *m, int rc) {
  if (rc < 0)
    m->reloads_refused++;
  else
    m->reloads_loaded++;
}

static void header(FILE *f, const char *name, const char *type, const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v) {
  header(f, name, "counter", help);
  fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(FILE *f, const char *name, const char *help, int64_t v) {
  header(f, name, "gauge", help);
  fprintf(f, "%s %lld\n", name, (long long)v);
}

/* Label values are function names ([A-Za-z0-9_-]) and fixed words today; escaped all the same
 * as the format asks, so a future label cannot break the page. Cut to fit out. */
static void label_escape(char *out, size_t cap, const char *v) {
  size_t n = 0;
  for (; *v && n + 3 < cap; v++) {
    if (*v == '\\' || *v == '"')
      out[n++] = '\\', out[n++] = *v;
    else if (*v == '\n')
      out[n++] = '\\', out[n++] = 'n';
    else
      out[n++] = *v;
  }
  out[n] = 0;
}

/* One histogram's series; labels is "" or `name="value",` (escaped, with its comma). */
static void hist_series(FILE *f, const char *name, const char *labels,
                        const struct metrics_hist *h) {
  uint64_t cum = 0;
  for (int i = 0; i < METRICS_BUCKETS; i++) {
    cum += h->bucket[i];
    fprintf(f, "%s_bucket{%sle=\"%s\"} %llu\n", name, labels, bucket_le[i],
            (unsigned long long)cum);
  }
  fprintf(f, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
  /* The same labels without the trailing comma, in braces, or nothing. */
  size_t n = strlen(labels);
  if (n)
    fprintf(f, "%s_sum{%.*s} %.9f\n%s_count{%.*s} %llu\n", name, (int)n - 1, labels,
            (double)h->sum_ns / 1e9, name, (int)n - 1, labels, (unsigned long long)h->count);
  else
    fprintf(f, "%s_sum %.9f\n%s_count %llu\n", name, (double)h->sum_ns / 1e9, name,
            (unsigned long long)h->count);
}

struct fn_pass {
  FILE *f;
  int what; /* 0 calls, 1 errors, 2 latency */
};

static void fn_one(void *arg, const char *key, void *value) {
  struct fn_pass *p = arg;
  const struct metrics_fn *fn = value;
  char v[2 * 128 + 8], labels[sizeof v + 16];
  label_escape(v, sizeof v, key);
  if (p->what == 2) {
    snprintf(labels, sizeof labels, "function=\"%s\",", v);
    hist_series(p->f, "wshost_function_duration_seconds", labels, &fn->latency);
    return;
  }
  fprintf(p->f, "%s{function=\"%s\"} %llu\n",
          p->what ? "wshost_function_errors_total" : "wshost_function_calls_total", v,
          (unsigned long long)(p->what ? fn->errors : fn->calls));
}

static const int close_codes[METRICS_CLOSE_CODES] = {1000, 1001, 1002, 1003, 1005, 1006,
                                                     1007, 1008, 1009, 1011, 0};

void metrics_ws_close(struct metrics *m, int code) {
  int i = 0;
  while (i < METRICS_CLOSE_CODES - 1 && close_codes[i] != code)
    i++;
  m->ws_closes[i]++;
}

/* The process_* series every Prometheus client library exports, for this (serving) process,
 * from getrusage, getrlimit and /proc/self. A value that cannot be read is left out. */
static void process_block(FILE *f) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    header(f, "process_cpu_seconds_total", "counter", "User and system CPU time, seconds.");
    fprintf(f, "process_cpu_seconds_total %.6f\n",
            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  }
  long page = sysconf(_SC_PAGESIZE), tick = sysconf(_SC_CLK_TCK);
  unsigned long long vsize = 0, rss = 0, start = 0, btime = 0;
  FILE *st = fopen("/proc/self/stat", "re");
  char line[1024];
  int have_stat = 0;
  if (st && fgets(line, sizeof line, st)) {
    /* Fields after the command name, which is in parentheses and may hold anything. */
    const char *p = strrchr(line, ')');
    have_stat = p && sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
                            "%*d %*d %*d %llu %llu %llu",
                            &start, &vsize, &rss) == 3;
  }
  if (st)
    fclose(st);
  if (have_stat) {
    gauge(f, "process_virtual_memory_bytes", "Virtual memory size, bytes.", (int64_t)vsize);
    gauge(f, "process_resident_memory_bytes", "Resident memory size, bytes.",
          (int64_t)(rss * (unsigned long long)page));
  }
  FILE *ps = fopen("/proc/stat", "re");
  int have_btime = 0;
  while (ps && fgets(line, sizeof line, ps))
    if (sscanf(line, "btime %llu", &btime) == 1) {
      have_btime = 1;
      break;
    }
  if (ps)
    fclose(ps);
  if (have_stat && have_btime && tick > 0) {
    header(f, "process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch, seconds.");
    fprintf(f, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)tick);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    int64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
      n += e->d_name[0] != '.';
    closedir(d);
    gauge(f, "process_open_fds", "Open file descriptors.", n - 1); /* less opendir's own */
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    gauge(f, "process_max_fds", "Most open file descriptors (soft RLIMIT_NOFILE).",
          (int64_t)rl.rlim_cur);
}

char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  if (!f)
    return NULL;
  process_block(f);
  char ver[96], lws[96];
  label_escape(ver, sizeof ver, g->version ? g->version : "unknown");
  label_escape(lws, sizeof lws, g->lws ? g->lws : "unknown");
  header(f, "wshost_build_info", "gauge",
         "1, labelled with the host's version, the plugin ABI it serves and libwebsockets'.");
  fprintf(f, "wshost_build_info{abi=\"%d\",lws=\"%s\",version=\"%s\"} 1\n", g->abi, lws, ver);
  header(f, "wshost_start_time_seconds", "gauge", "Start of this serving process, Unix time.");
  fprintf(f, "wshost_start_time_seconds %.3f\n", g->start_time_s);
  gauge(f, "wshost_draining", "1 while the host drains after SIGTERM.", g->draining);
  counter(f, "wshost_worker_violations_total",
          "Calls and answers of workers refused for naming what they were not handed, or for "
          "replies left unread; each replaced its worker.",
          g->worker_violations);

  gauge(f, "wshost_connections", "Open WebSocket connections.", g->connections);
  gauge(f, "wshost_users_online", "Users with at least one open connection on this host.",
        g->users_online);
  counter(f, "wshost_ws_upgrades_total", "WebSocket upgrades accepted.", g->upgrades);
  header(f, "wshost_ws_upgrades_refused_total", "counter",
         "WebSocket upgrades refused, by HTTP status and reason.");
  for (int i = 0; i < m->nrefused; i++)
    fprintf(f, "wshost_ws_upgrades_refused_total{reason=\"%s\",status=\"%d\"} %llu\n",
            reasons[m->refused[i].reason].label, m->refused[i].status,
            (unsigned long long)m->refused[i].n);
  counter(f, "wshost_ws_closed_total", "WebSocket connections closed.", g->closes);
  header(f, "wshost_ws_closes_by_code_total", "counter",
         "WebSocket connections closed, by close code (\"other\": any code not listed).");
  for (int i = 0; i < METRICS_CLOSE_CODES; i++) {
    if (!m->ws_closes[i])
      continue;
    if (close_codes[i])
      fprintf(f, "wshost_ws_closes_by_code_total{code=\"%d\"} %llu\n", close_codes[i],
              (unsigned long long)m->ws_closes[i]);
    else
      fprintf(f, "wshost_ws_closes_by_code_total{code=\"other\"} %llu\n",
              (unsigned long long)m->ws_closes[i]);
  }
  counter(f, "wshost_ws_messages_received_total", "Complete WebSocket messages received.",
          m->ws_in_messages);
  counter(f, "wshost_ws_received_bytes_total", "Payload bytes of the messages received.",
          m->ws_in_bytes);
  counter(f, "wshost_ws_received_pieces_total",
          "Pieces lws handed the received messages over in: one per read of a large message, "
          "each up to --ws-rx-buffer bytes.",
          m->ws_in_pieces);
  counter(f, "wshost_ws_messages_sent_total", "WebSocket messages written to clients.",
          m->ws_out_messages);
  counter(f, "wshost_ws_sent_bytes_total", "Payload bytes of the messages sent.", m->ws_out_bytes);
  counter(f, "wshost_ws_messages_sent_direct_total",
          "Of the messages sent, those written without a writable callback (at once, or a "
          "greeting right after its user's commit).",
          m->ws_out_direct);
  counter(f, "wshost_ws_send_queue_overflows_total",
          "Slow readers closed because their send queue passed --max-send-queue.",
          m->sendq_overflows);
  gauge(f, "wshost_xthread_queued_bytes",
        "Bytes of sends and deferred responses other threads queued for the event loop and it "
        "has not run yet (bounded by --xthread-max-bytes).",
        (int64_t)g->xthread_bytes);
  counter(f, "wshost_xthread_refused_total",
          "Sends and deferred responses from other threads refused with CLOUD_EFULL (the "
          "loop's queue held --xthread-max-bytes).",
          g->xthread_refused);
  header(f, "wshost_http_requests_total", "counter",
         "HTTP requests answered (functions and /_/), by status.");
  for (int i = 0; i < 500; i++)
    if (m->http_status[i])
      fprintf(f, "wshost_http_requests_total{status=\"%d\"} %llu\n", i + 100,
              (unsigned long long)m->http_status[i]);

  gauge(f, "wshost_users", "Users in the store (-1: unknown).", g->users_stored);
  gauge(f, "wshost_outbox_messages", "Messages queued for offline users (-1: unknown).",
        g->outbox_depth);
  counter(f, "wshost_outbox_delivered_total", "Queued messages delivered on reconnect.",
          m->outbox_delivered);

  struct fn_pass p = {f, 0};
  header(f, "wshost_function_calls_total", "counter", "Calls of each function (all events).");
  map_each(&m->functions, fn_one, &p);
  p.what = 1;
  header(f, "wshost_function_errors_total", "counter",
         "Calls of each function that returned non-zero.");
  map_each(&m->functions, fn_one, &p);
  p.what = 2;
  header(f, "wshost_function_duration_seconds", "histogram", "Time in each function's code.");
  map_each(&m->functions, fn_one, &p);

  header(f, "wshost_event_duration_seconds", "histogram",
         "Time in functions' code by event type (HTTP: every HTTP method).");
  for (int i = 0; i < METRICS_EVENTS; i++) {
    if (!m->events[i].count)
      continue;
    char labels[64];
    snprintf(labels, sizeof labels, "event=\"%s\",", events[i]);
    hist_series(f, "wshost_event_duration_seconds", labels, &m->events[i]);
  }
  header(f, "wshost_crashes_total", "counter",
         "Crashes recorded (the crash file and since), by function (\"-\": outside any).");
  const char *cname;
  json_t *cn;
  json_object_foreach((json_t *)g->crashes, cname, cn) {
    char v[2 * 128 + 8];
    label_escape(v, sizeof v, cname);
    fprintf(f, "wshost_crashes_total{function=\"%s\"} %lld\n", v,
            (long long)json_integer_value(cn));
  }

  header(f, "wshost_plugin_reloads_total", "counter",
         "Plugin files the watch loaded (or unloaded) and refused.");
  fprintf(f, "wshost_plugin_reloads_total{result=\"loaded\"} %llu\n",
          (unsigned long long)m->reloads_loaded);
  fprintf(f, "wshost_plugin_reloads_total{result=\"refused\"} %llu\n",
          (unsigned long long)m->reloads_refused);
  header(f, "wshost_plugin_load_timeouts_total", "counter",
         "Plugin loads refused for running past --load-timeout (constructors or CLOUD_INIT).");
  fprintf(f, "wshost_plugin_load_timeouts_total %llu\n",
          (unsigned long long)m->plugin_loads_timed_out);
  header(f, "wshost_plugin_versions_leaked_total", "counter",
         "Plugin versions never unloaded (dlclose'd): threads they started may still run, or "
         "their CLOUD_FINI did not return within --load-timeout.");
  fprintf(f, "wshost_plugin_versions_leaked_total %llu\n",
          (unsigned long long)m->plugin_versions_leaked);

  header(f, "wshost_store_commit_duration_seconds", "histogram",
         "SQLite commits of batched writes (the store's write latency).");
  hist_series(f, "wshost_store_commit_duration_seconds", "", &m->store_commit);
  gauge(f, "wshost_store_wal_bytes", "Size of the SQLite write-ahead log (-1: none).",
        g->wal_bytes);
  gauge(f, "wshost_store_db_bytes", "Size of the SQLite database file (-1: none).", g->db_bytes);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  if (len)
    *len = n;
  return buf;
}

static void fn_free(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  free(value);
}

void metrics_free(struct metrics *m) {
  map_each(&m->functions, fn_free, NULL);
  map_free(&m->functions);
}
