/* slow: work that waits, done right. GET /slow answers from a worker thread after a simulated
 * 200 ms backend call (?ms=N to change it, up to 10 s), while the event loop keeps serving. */
#include <cloud.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct job {
  struct job *next;
  cloud_deferred *d;
  long ms;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job *head, **tail = &head;
static int stopping;
static pthread_t worker;

/* The "backend": sleeps, then completes the response from this thread. */
static void *work(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  while (!stopping || head) {
    struct job *j = head;
    if (!j) {
      pthread_cond_wait(&cv, &mu);
      continue;
    }
    head = j->next;
    if (!head)
      tail = &head;
    pthread_mutex_unlock(&mu);
    struct timespec ts = {j->ms / 1000, (j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    cloud_deferred_json(j->d, 200,
                        json_pack("{s:s, s:i}", "answer", "from the backend", "ms", (int)j->ms));
    free(j);
    pthread_mutex_lock(&mu);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

CLOUD_INIT() {
  return pthread_create(&worker, NULL, work, NULL);
}

/* The host calls this once no response of this version is outstanding: stop the thread. */
CLOUD_FINI() {
  pthread_mutex_lock(&mu);
  stopping = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  pthread_join(worker, NULL);
}

CLOUD_FUNCTION(ctx) {
  const char *ms = json_string_value(json_object_get(ctx->query, "ms"));
  struct job *j = calloc(1, sizeof *j);
  if (!j)
    return -1;
  j->ms = ms ? atol(ms) : 200;
  if (j->ms < 0 || j->ms > 10000)
    j->ms = 200;
  if (!(j->d = cloud_defer(ctx))) {
    free(j);
    return -1;
  }
  pthread_mutex_lock(&mu);
  *tail = j;
  tail = &j->next;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  return 0;
}
