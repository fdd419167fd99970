/* stream.c: streamed HTTP responses. The plugin's side (any thread) reserves room against
 * --max-send-queue under the table's lock and hands the bytes to the loop; the loop keeps them
 * as pieces until http.c takes them for the wire. A stream is known by a number (and, in this
 * process, by its ctx), never by a pointer a late writer could follow after it is gone. */
#include "stream.h"

#include "http.h"
#include "invocation.h"
#include "log.h"
#include "map.h"
#include "net_ops.h"
#include "sse.h"
#include "xthread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct piece {
  struct piece *next;
  size_t len, off;
  char data[];
};

struct stream {
  uint64_t id;
  struct http_req *r;
  const void *key;
  /* Under the table's lock. */
  size_t reserved; /* bytes written and not yet taken for the wire */
  int ended;       /* stream_end was called: later writes are refused */
  uint64_t next_event;
  /* Loop only. */
  struct piece *head, *tail;
  int end_queued, head_due, status, sse;
  char content_type[128];
  uint64_t written;
  stream_notify_fn notify;
  void *notify_arg;
};

static struct {
  pthread_mutex_t mu;
  struct map by_id;  /* 8-byte id -> struct stream * */
  struct map by_key; /* pointer value -> struct stream * */
  uint64_t next_id;
  int ready;
} T = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void table_init(void) {
  if (!T.ready) {
    map_init(&T.by_id);
    map_init(&T.by_key);
    T.ready = 1;
  }
}

/* What a thread hands to the loop. */
enum { PIECE_DATA, PIECE_END };
struct post {
  struct xthread_item base;
  uint64_t id;
  int kind;
  size_t len;
  char data[];
};

static struct stream *get(uint64_t id) {
  return T.ready ? map_get(&T.by_id, &id, sizeof id) : NULL;
}

static void wake(struct stream *s) {
  if (s->r && s->r->wsi)
    lws_callback_on_writable(s->r->wsi);
}

/* Loop: the bytes join the stream (or are dropped: it is gone). */
static void append(struct host *h, uint64_t id, int kind, const char *data, size_t len) {
  (void)h;
  pthread_mutex_lock(&T.mu);
  struct stream *s = get(id);
  pthread_mutex_unlock(&T.mu);
  if (!s)
    return;
  if (kind == PIECE_END) {
    s->end_queued = 1;
  } else if (len) {
    struct piece *p = malloc(sizeof *p + len);
    if (!p) {
      pthread_mutex_lock(&T.mu);
      s->reserved -= len;
      pthread_mutex_unlock(&T.mu);
      return;
    }
    p->next = NULL;
    p->len = len;
    p->off = 0;
    memcpy(p->data, data, len);
    if (s->tail)
      s->tail->next = p;
    else
      s->head = p;
    s->tail = p;
  }
  wake(s);
}

static void post_run(struct host *h, struct xthread_item *it) {
  struct post *m = (struct post *)it;
  if (h)
    append(h, m->id, m->kind, m->data, m->len);
  free(m);
}

/* Reserves room and queues; the table's lock is held (so that ids and order agree). */
static int queue_locked(struct host *h, struct stream *s, int kind, const char *data, size_t len) {
  if (!s || s->ended)
    return CLOUD_ECLOSED;
  if (kind == PIECE_DATA && s->reserved + len > h->cfg.max_send_queue)
    return CLOUD_EFULL;
  if (invocation_on_loop()) {
    s->reserved += len;
    if (kind == PIECE_END)
      s->ended = 1;
    pthread_mutex_unlock(&T.mu);
    append(h, s->id, kind, data, len);
    pthread_mutex_lock(&T.mu);
    return 0;
  }
  struct post *m = malloc(sizeof *m + len);
  if (!m)
    return CLOUD_ENOMEM;
  m->base.run = post_run;
  m->id = s->id;
  m->kind = kind;
  m->len = len;
  if (len)
    memcpy(m->data, data, len);
  int rc = xthread_post(h, &m->base, sizeof *m + len);
  if (rc < 0) {
    free(m);
    return rc;
  }
  s->reserved += len;
  if (kind == PIECE_END)
    s->ended = 1;
  return 0;
}

int stream_start(struct host *h, struct http_req *r, const void *key, int status,
                 const char *content_type, int sse, uint64_t *id) {
  *id = 0;
  if (!r || !r->wsi || r->stream || r->no_defer)
    return CLOUD_ESTATE;
  if (status < 200 || status > 599 || status == 204 || status == 304 || !content_type ||
      !http_response_header_ok("content-type", content_type))
    return CLOUD_EINVAL;
  struct stream *s = calloc(1, sizeof *s);
  if (!s)
    return CLOUD_ENOMEM;
  s->r = r;
  s->key = key;
  s->status = status;
  s->sse = sse;
  s->head_due = 1;
  snprintf(s->content_type, sizeof s->content_type, "%s", content_type);
  /* Server-Sent Events resume: ids go on after the one the client last saw. */
  const char *last =
      sse ? h->net->http_header_lookup(r->wsi, r->headers, "last-event-id", r->headers_lazy) : NULL;
  char *end = NULL;
  unsigned long long n = last ? strtoull(last, &end, 10) : 0;
  s->next_event = last && end && !*end && *last ? n + 1 : 1;
  pthread_mutex_lock(&T.mu);
  table_init();
  int rc = T.by_id.count >= STREAM_MAX ? CLOUD_EFULL : 0;
  if (!rc) {
    s->id = ++T.next_id;
    if (map_set(&T.by_id, &s->id, sizeof s->id, s) < 0 ||
        (key && map_set(&T.by_key, &key, sizeof key, s) < 0)) {
      map_del(&T.by_id, &s->id, sizeof s->id);
      rc = CLOUD_ENOMEM;
    }
  }
  pthread_mutex_unlock(&T.mu);
  if (rc) {
    free(s);
    return rc;
  }
  r->stream = s;
  /* The response lasts as long as the function writes: lws's idle timeouts do not apply. */
  lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
  log_info(r->name, r->request_id, "%s %s %d (stream%s) %s", r->method, r->path, status,
           sse ? ", event-stream" : "", r->remote);
  wake(s);
  *id = s->id;
  return 0;
}

uint64_t stream_find(struct host *h, const void *key) {
  (void)h;
  pthread_mutex_lock(&T.mu);
  struct stream *s = key && T.ready ? map_get(&T.by_key, &key, sizeof key) : NULL;
  uint64_t id = s ? s->id : 0;
  pthread_mutex_unlock(&T.mu);
  return id;
}

int stream_is_sse(struct host *h, uint64_t id) {
  (void)h;
  pthread_mutex_lock(&T.mu);
  struct stream *s = get(id);
  int rc = s ? s->sse : CLOUD_ECLOSED;
  pthread_mutex_unlock(&T.mu);
  return rc;
}

void stream_set_notify(struct host *h, uint64_t id, stream_notify_fn fn, void *arg) {
  (void)h;
  pthread_mutex_lock(&T.mu);
  struct stream *s = get(id);
  if (s) {
    s->notify = fn;
    s->notify_arg = arg;
  }
  pthread_mutex_unlock(&T.mu);
}

int stream_write(struct host *h, uint64_t id, const void *data, size_t len) {
  if (!data && len)
    return CLOUD_EINVAL;
  if (!len)
    return 0;
  pthread_mutex_lock(&T.mu);
  int rc = queue_locked(h, get(id), PIECE_DATA, data, len);
  pthread_mutex_unlock(&T.mu);
  return rc;
}

int stream_sse(struct host *h, uint64_t id, const char *event, const char *data) {
  size_t cap = sse_size(event, data);
  if (!cap)
    return CLOUD_EINVAL;
  char *buf = malloc(cap);
  if (!buf)
    return CLOUD_ENOMEM;
  pthread_mutex_lock(&T.mu);
  struct stream *s = get(id);
  int rc = CLOUD_ECLOSED;
  if (s && !s->ended) {
    size_t n = sse_format(buf, s->next_event, event, data);
    rc = queue_locked(h, s, PIECE_DATA, buf, n);
    if (rc == 0)
      s->next_event++;
  }
  pthread_mutex_unlock(&T.mu);
  free(buf);
  return rc;
}

uint64_t stream_first_event(struct host *h, uint64_t id) {
  (void)h;
  pthread_mutex_lock(&T.mu);
  struct stream *s = get(id);
  uint64_t n = s ? s->next_event : 0;
  pthread_mutex_unlock(&T.mu);
  return n;
}

int stream_end(struct host *h, uint64_t id) {
  pthread_mutex_lock(&T.mu);
  int rc = queue_locked(h, get(id), PIECE_END, NULL, 0);
  pthread_mutex_unlock(&T.mu);
  return rc;
}

int stream_head(struct stream *s, int *status, const char **content_type, int *sse) {
  if (!s->head_due)
    return 0;
  s->head_due = 0;
  *status = s->status;
  *content_type = s->content_type;
  *sse = s->sse;
  return 1;
}

size_t stream_take(struct host *h, struct stream *s, char *buf, size_t cap, int *fin) {
  (void)h;
  size_t n = 0;
  while (s->head && n < cap) {
    struct piece *p = s->head;
    size_t k = p->len - p->off < cap - n ? p->len - p->off : cap - n;
    memcpy(buf + n, p->data + p->off, k);
    n += k;
    p->off += k;
    if (p->off == p->len) {
      s->head = p->next;
      if (!s->head)
        s->tail = NULL;
      free(p);
    }
  }
  *fin = s->end_queued && !s->head;
  if (n) {
    pthread_mutex_lock(&T.mu);
    s->reserved -= n;
    pthread_mutex_unlock(&T.mu);
    s->written += n;
    if (s->notify)
      s->notify(s->notify_arg, s->id, s->written, 0);
  }
  return n;
}

int stream_pending(struct stream *s) {
  return s->head || s->end_queued;
}

void stream_detach(struct host *h, struct stream *s) {
  (void)h;
  if (!s)
    return;
  pthread_mutex_lock(&T.mu);
  map_del(&T.by_id, &s->id, sizeof s->id);
  if (s->key && map_get(&T.by_key, &s->key, sizeof s->key) == s)
    map_del(&T.by_key, &s->key, sizeof s->key);
  pthread_mutex_unlock(&T.mu);
  while (s->head) {
    struct piece *p = s->head;
    s->head = p->next;
    free(p);
  }
  if (s->notify)
    s->notify(s->notify_arg, s->id, s->written, 1);
  if (s->r)
    s->r->stream = NULL;
  free(s);
}
