/* streamer: streamed responses, written by a thread of the function after it returned, driven
 * by ?do=:
 *   chunks (?n=, ?ms=): n parts "part <i>\n", ms apart, then the end;
 *   sse (?n=): one event in the call, n more from the thread ("tick", two data lines), then
 *     the end;
 *   flood (?size=): writes size-byte parts until the client goes (CLOUD_EFULL: waits and tries
 *     again), then ends; stats: what the last flood saw;
 *   page: an HTML page whose EventSource reads ?do=sse (window.events);
 *   crash: starts a stream, writes a line, crashes;
 *   twice: cloud_stream_start twice, and cloud_stream_write before it (the results). */
#include <cloud.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QMAX 64

struct job {
  FunctionContext *ctx;
  int kind, n, ms;
  size_t size;
};

static pthread_t th;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job q[QMAX];
static int qn, stopping, started;
/* The last flood: bytes accepted, EFULL answers, whether it ended with ECLOSED. */
static long long flood_bytes, flood_full, flood_closed, flood_done;

enum { CHUNKS, SSE, FLOOD };

static void run_job(struct job *j) {
  char buf[128];
  if (j->kind == CHUNKS) {
    for (int i = 0; i < j->n; i++) {
      usleep((useconds_t)j->ms * 1000);
      int k = snprintf(buf, sizeof buf, "part %d\n", i);
      if (cloud_stream_write(j->ctx, buf, (size_t)k) < 0)
        return;
    }
    cloud_stream_end(j->ctx);
  } else if (j->kind == SSE) {
    for (int i = 0; i < j->n; i++) {
      usleep(20000);
      snprintf(buf, sizeof buf, "tick %d\nsecond line", i);
      if (cloud_sse_send(j->ctx, "tick", buf) < 0)
        return;
    }
    cloud_stream_end(j->ctx);
  } else {
    char *chunk = malloc(j->size);
    if (!chunk)
      return;
    memset(chunk, 'x', j->size);
    long long bytes = 0, full = 0;
    int closed = 0;
    /* Bounded: 256 MiB offered at most, 30 s of waiting at most. */
    for (int tries = 0; tries < 3000 && bytes < (256ll << 20);) {
      int rc = cloud_stream_write(j->ctx, chunk, j->size);
      if (rc == 0) {
        bytes += (long long)j->size;
        continue;
      }
      if (rc == CLOUD_ECLOSED) {
        closed = 1;
        break;
      }
      full += rc == CLOUD_EFULL;
      pthread_mutex_lock(&mu);
      flood_bytes = bytes;
      flood_full = full;
      pthread_mutex_unlock(&mu);
      tries++;
      usleep(10000);
    }
    free(chunk);
    if (!closed)
      cloud_stream_end(j->ctx);
    pthread_mutex_lock(&mu);
    flood_bytes = bytes;
    flood_full = full;
    flood_closed = closed;
    flood_done = 1;
    pthread_mutex_unlock(&mu);
  }
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
    run_job(&j);
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

static int arg_int(FunctionContext *ctx, const char *name, int dflt) {
  const char *v = json_string_value(json_object_get(ctx->query, name));
  return v ? atoi(v) : dflt;
}

static int enqueue(struct job j) {
  pthread_mutex_lock(&mu);
  int ok = qn < QMAX;
  if (ok) {
    q[qn++] = j;
    pthread_cond_signal(&cv);
  }
  pthread_mutex_unlock(&mu);
  return ok ? 0 : 1;
}

static const char PAGE[] =
    "<!doctype html><meta charset=\"utf-8\"><title>sse</title><script>\n"
    "window.events = []; window.opens = 0;\n"
    "const es = new EventSource('/streamer?do=sse&n=3');\n"
    "es.onopen = () => window.opens++;\n"
    "es.addEventListener('hello', (e) => events.push([e.type, e.lastEventId, e.data]));\n"
    "es.addEventListener('tick', (e) => events.push([e.type, e.lastEventId, e.data]));\n"
    "</script>";

CLOUD_FUNCTION(ctx) {
  const char *what = json_string_value(json_object_get(ctx->query, "do"));
  if (!what)
    return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "?do="));
  if (!strcmp(what, "page")) {
    int rc = cloud_response_text(ctx, 200, PAGE);
    return rc ? rc : cloud_response_header(ctx, "content-type", "text/html; charset=utf-8");
  }
  if (!strcmp(what, "stats")) {
    pthread_mutex_lock(&mu);
    json_t *o = json_pack("{sI sI sb sb}", "bytes", flood_bytes, "full", flood_full, "closed",
                          (int)flood_closed, "done", (int)flood_done);
    pthread_mutex_unlock(&mu);
    return cloud_response_json(ctx, 200, o);
  }
  if (!strcmp(what, "crash")) { /* a stream whose writer dies */
    cloud_stream_start(ctx, 200, "text/plain");
    cloud_stream_write(ctx, "before\n", 7);
    raise(SIGSEGV);
  }
  if (!strcmp(what, "twice")) {
    int before = cloud_stream_write(ctx, "x", 1);
    int bad = cloud_stream_start(ctx, 204, "text/plain");
    cloud_response_header(ctx, "x-streamed", "yes");
    int first = cloud_stream_start(ctx, 201, "text/plain; charset=utf-8");
    int second = cloud_stream_start(ctx, 200, "text/plain");
    char buf[128];
    int k = snprintf(buf, sizeof buf, "%d %d %d %d\n", before, bad, first, second);
    cloud_stream_write(ctx, buf, (size_t)k);
    int end = cloud_stream_end(ctx);
    int after = cloud_stream_write(ctx, "y", 1);
    cloud_log(ctx, "twice: end %d, write after end %d", end, after);
    return 0;
  }
  struct job j = {ctx, 0, arg_int(ctx, "n", 3), arg_int(ctx, "ms", 10), 0};
  if (!strcmp(what, "chunks")) {
    j.kind = CHUNKS;
    int rc = cloud_stream_start(ctx, 200, "text/plain; charset=utf-8");
    return rc ? rc : enqueue(j);
  }
  if (!strcmp(what, "sse")) {
    j.kind = SSE;
    int rc = cloud_sse_send(ctx, "hello", "first");
    return rc ? rc : enqueue(j);
  }
  if (!strcmp(what, "flood")) {
    j.kind = FLOOD;
    j.size = (size_t)arg_int(ctx, "size", 65536);
    pthread_mutex_lock(&mu);
    flood_done = 0;
    pthread_mutex_unlock(&mu);
    int rc = cloud_stream_start(ctx, 200, "application/octet-stream");
    return rc ? rc : enqueue(j);
  }
  return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "unknown do"));
}
