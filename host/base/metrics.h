/* metrics.h: the host's counters and histograms, and their rendering in the Prometheus text
 * format (GET /_/metrics). Owns struct metrics; depends on nothing of the host but map.h. */
#ifndef WSHOST_METRICS_H
#define WSHOST_METRICS_H

#include "map.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Latency buckets, upper bounds: 100 us .. 10 s (Prometheus "le"). */
#define METRICS_BUCKETS 16
#define METRICS_REFUSALS 24
/* Close codes counted one by one (metrics.c close_codes); the last slot is every other code. */
#define METRICS_CLOSE_CODES 11
/* Event types with a duration histogram each (metrics.c events); the last is "other". */
#define METRICS_EVENTS 11

struct metrics_hist {
  uint64_t bucket[METRICS_BUCKETS]; /* not cumulative; the renderer sums */
  uint64_t count;
  uint64_t sum_ns;
};

/* Every counter is touched on the event loop thread only, so plain integers do. */
struct metrics {
  uint64_t ws_in_messages, ws_in_bytes;
  uint64_t ws_in_pieces; /* LWS_CALLBACK_RECEIVE calls: a large message's pieces (reads) */
  uint64_t ws_out_messages, ws_out_bytes;
  uint64_t ws_out_direct; /* of ws_out_messages: written at once, without the send queue */
  uint64_t sendq_overflows;
  uint64_t outbox_delivered;
  uint64_t reloads_loaded, reloads_refused;
  uint64_t plugin_loads_timed_out; /* loads refused for running past --load-timeout */
  uint64_t plugin_versions_leaked; /* versions left mapped: threads still running, or fini late */
  /* Upgrades refused, by (status, reason); reasons are a fixed list, so labels stay few. */
  struct {
    int status;
    int reason;
    uint64_t n;
  } refused[METRICS_REFUSALS];
  int nrefused;
  /* Connections closed, by the code their close event got (the log line per close is debug). */
  uint64_t ws_closes[METRICS_CLOSE_CODES];
  struct metrics_hist store_commit;
  struct map functions;                       /* function name -> struct metrics_fn * */
  uint64_t http_status[500];                  /* HTTP answers by status, 100..599 */
  struct metrics_hist events[METRICS_EVENTS]; /* function calls by event type */
  /* Later work adds its counters here: function crashes and quarantines (containment), the
   * Redis link state (cluster); metrics_render gains one block each. */
};

/* What the renderer reads from elsewhere at scrape time (admin.c fills it from the host). */
struct metrics_gauges {
  int64_t connections, users_online;
  int64_t users_stored, outbox_depth; /* -1: unknown */
  int64_t wal_bytes, db_bytes;        /* -1: no file (":memory:") */
  uint64_t upgrades, closes, http_requests;
  double start_time_s;
  int draining;
  uint64_t xthread_bytes, xthread_refused; /* the loop's queue of other threads' sends */
  const char *version, *lws;               /* wshost_build_info */
  int abi;
  const json_t *crashes; /* function -> crashes recorded (quarantine.c), or NULL */
  uint64_t worker_violations; /* --isolation process: frames refused at the boundary */
};

/* A monotonic clock in nanoseconds, for the durations below. */
uint64_t metrics_now_ns(void);
void metrics_hist_observe(struct metrics_hist *hist, uint64_t ns);
/* One call of function name that took ns and returned rc (non-zero counts as an error). */
void metrics_function_call(struct metrics *m, const char *name, uint64_t ns, int rc);
/* One call for an event: its method ("WebSocket:message", "Timer", or an HTTP method) names
 * the histogram. */
void metrics_event(struct metrics *m, const char *method, uint64_t ns);
/* An HTTP request answered with this status. */
void metrics_http_response(struct metrics *m, int status);
/* An upgrade refused with this status and message (the message is mapped to a fixed label). */
void metrics_upgrade_refused(struct metrics *m, int status, const char *message);
/* A WebSocket connection closed with this code (1006: no close frame). */
void metrics_ws_close(struct metrics *m, int code);
/* A plugin file loaded (rc 0) or refused (rc < 0) by the watch. */
void metrics_reload(struct metrics *m, int rc);
/* The text format (version 0.0.4) in a malloc'ed string (caller frees), NULL on no memory. */
char *metrics_render(const struct metrics *m, const struct metrics_gauges *g, size_t *len);
/* Frees what the counters allocated (the per-function entries). */
void metrics_free(struct metrics *m);

#endif
