/* lws_baseline.c: the example function's job written straight on libwebsockets, no plugin layer,
 * as the floor `make bench` compares build/wshost against. Owns nothing the host uses.
 *
 * Same contract as plugins/__websocket__.so + plugins/push.so: every WebSocket connection gets a
 * random user id and the greeting {"event":"connected","user_id":..,"token":..}; every message
 * is answered "I have received your message"; POST /push {"user_id","message"} sends the message
 * to that user's socket and answers 200 {"delivered":n}; GET /_/healthz answers 200.
 * No persistence: it is what the host's :memory: mode could reach at best.
 *
 *   lws_baseline [port [poll|ev|uv|glib]]        (default 8091 poll)
 *
 * The event loop is a choice because lws's default poll() walks every socket on each pass, so
 * with thousands of idle connections it costs milliseconds per event; the ev/uv/glib loops are
 * lws's epoll-backed plugins. The host should be compared with the loop it uses.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ID_LEN 22    /* 16 random bytes, base64url: the host's user id size */
#define TOKEN_LEN 43 /* 32 random bytes, base64url: the host's token size */
#define NBUCKETS 65536
#define MAX_BODY 65536

static const char ACK[] = "I have received your message";

struct msg {
  struct msg *next;
  size_t len;
  unsigned char buf[]; /* LWS_PRE bytes of room, then the payload */
};

/* One per connection, WebSocket or HTTP; kept small because idle memory is measured. */
struct pss {
  struct lws *wsi;
  struct pss *next_in_bucket; /* WebSocket: the user map's chain */
  struct msg *head, *tail;    /* WebSocket: frames waiting for SERVER_WRITEABLE */
  char *body;                 /* HTTP: request body, then the response body */
  size_t body_len;
  int status; /* HTTP: response status once known, 0 before */
  int is_push;
  char user_id[ID_LEN + 1];
};

/* The process's state: the user map (user id -> connection). */
static struct { struct pss *buckets[NBUCKETS]; } g;

static unsigned bucket_of(const char *id, size_t len) {
  unsigned h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)id[i]) * 16777619u;
  return h & (NBUCKETS - 1);
}

static void users_add(struct pss *p) {
  unsigned b = bucket_of(p->user_id, ID_LEN);
  p->next_in_bucket = g.buckets[b];
  g.buckets[b] = p;
}

static void users_remove(struct pss *p) {
  for (struct pss **pp = &g.buckets[bucket_of(p->user_id, ID_LEN)]; *pp;
       pp = &(*pp)->next_in_bucket)
    if (*pp == p) {
      *pp = p->next_in_bucket;
      return;
    }
}

static struct pss *users_find(const char *id, size_t len) {
  if (len != ID_LEN)
    return NULL;
  for (struct pss *p = g.buckets[bucket_of(id, len)]; p; p = p->next_in_bucket)
    if (!memcmp(p->user_id, id, len))
      return p;
  return NULL;
}

static void b64url(char *dst, const unsigned char *src, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v =
        (uint32_t)src[i] << 16 | (i + 1 < n ? src[i + 1] << 8 : 0) | (i + 2 < n ? src[i + 2] : 0);
    dst[o++] = a[v >> 18 & 63];
    dst[o++] = a[v >> 12 & 63];
    if (i + 1 < n)
      dst[o++] = a[v >> 6 & 63];
    if (i + 2 < n)
      dst[o++] = a[v & 63];
  }
  dst[o] = 0;
}

static int queue_frame(struct pss *p, const char *data, size_t len) {
  struct msg *m = malloc(sizeof *m + LWS_PRE + len);
  if (!m)
    return -1;
  m->next = NULL;
  m->len = len;
  memcpy(m->buf + LWS_PRE, data, len);
  if (p->tail)
    p->tail->next = m;
  else
    p->head = m;
  p->tail = m;
  lws_callback_on_writable(p->wsi);
  return 0;
}

/* The string value of "key" in a flat JSON object; escapes are not decoded (the bench sends
 * none), which is all this baseline needs. */
static const char *json_str(const char *s, size_t n, const char *key, size_t *len) {
  char pat[32];
  int pl = snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *k = memmem(s, n, pat, (size_t)pl), *end = s + n;
  if (!k)
    return NULL;
  k += pl;
  while (k < end && (*k == ' ' || *k == ':'))
    k++;
  if (k >= end || *k != '"')
    return NULL;
  const char *v = ++k;
  while (k < end && *k != '"')
    k += *k == '\\' ? 2 : 1;
  if (k >= end)
    return NULL;
  *len = (size_t)(k - v);
  return v;
}

static void http_respond(struct lws *wsi, struct pss *p, int status, const char *body) {
  free(p->body);
  p->body = strdup(body);
  p->body_len = p->body ? strlen(body) : 0;
  p->status = status;
  lws_callback_on_writable(wsi);
}

static void push(struct lws *wsi, struct pss *p) {
  size_t idl = 0, ml = 0;
  const char *id = p->body ? json_str(p->body, p->body_len, "user_id", &idl) : NULL;
  const char *m = p->body ? json_str(p->body, p->body_len, "message", &ml) : NULL;
  if (!id || !m) {
    http_respond(wsi, p, 400, "{\"error\":\"user_id and message required\"}");
    return;
  }
  struct pss *u = users_find(id, idl);
  if (!u) {
    http_respond(wsi, p, 404, "{\"error\":\"no such user\"}");
    return;
  }
  int n = queue_frame(u, m, ml) == 0;
  http_respond(wsi, p, 200, n ? "{\"delivered\":1}" : "{\"delivered\":0}");
}

static int http_writeable(struct lws *wsi, struct pss *p) {
  unsigned char buf[LWS_PRE + 512], *start = buf + LWS_PRE, *q = start, *end = buf + sizeof buf;
  if (!p->status)
    return 0;
  if (lws_add_http_common_headers(wsi, (unsigned)p->status, "application/json", p->body_len, &q,
                                  end) ||
      lws_finalize_write_http_header(wsi, start, &q, end))
    return -1;
  unsigned char *out = malloc(LWS_PRE + p->body_len + 1);
  if (!out)
    return -1;
  memcpy(out + LWS_PRE, p->body, p->body_len);
  int w = lws_write(wsi, out + LWS_PRE, p->body_len, LWS_WRITE_HTTP_FINAL);
  free(out);
  free(p->body);
  p->body = NULL;
  p->body_len = 0;
  p->status = 0;
  p->is_push = 0;
  if (w < 0)
    return -1;
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  struct pss *p = user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED: {
    unsigned char rnd[16 + 32];
    char token[TOKEN_LEN + 2], greet[160];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
      return -1;
    p->wsi = wsi;
    b64url(p->user_id, rnd, 16);
    b64url(token, rnd + 16, 32);
    users_add(p);
    int n = snprintf(greet, sizeof greet,
                     "{\"event\":\"connected\",\"user_id\":\"%s\",\"token\":\"%s\"}", p->user_id,
                     token);
    return queue_frame(p, greet, (size_t)n);
  }
  case LWS_CALLBACK_RECEIVE:
    if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
      return queue_frame(p, ACK, sizeof ACK - 1);
    return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: {
    struct msg *m = p->head;
    if (!m)
      return 0;
    p->head = m->next;
    if (!p->head)
      p->tail = NULL;
    int w = lws_write(wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT);
    free(m);
    if (w < 0)
      return -1;
    if (p->head)
      lws_callback_on_writable(wsi);
    return 0;
  }
  case LWS_CALLBACK_CLOSED:
    users_remove(p);
    while (p->head) {
      struct msg *m = p->head;
      p->head = m->next;
      free(m);
    }
    p->tail = NULL;
    return 0;
  case LWS_CALLBACK_HTTP: {
    const char *uri = in;
    if (!p)
      return -1;
    p->wsi = wsi;
    p->body_len = 0;
    p->status = 0;
    p->is_push = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) && !strcmp(uri, "/push");
    if (p->is_push)
      return 0; /* the body follows */
    if (!strcmp(uri, "/_/healthz"))
      http_respond(wsi, p, 200, "{\"ok\":true}");
    else
      http_respond(wsi, p, 404, "{\"error\":\"Function Not Found\"}");
    return 0;
  }
  case LWS_CALLBACK_HTTP_BODY:
    if (!p)
      return -1;
    if (p->body_len + len > MAX_BODY) {
      http_respond(wsi, p, 413, "{\"error\":\"Payload Too Large\"}");
      p->is_push = 0;
      return 0;
    }
    if (p->is_push) {
      char *nb = realloc(p->body, p->body_len + len + 1);
      if (!nb)
        return -1;
      p->body = nb;
      memcpy(p->body + p->body_len, in, len);
      p->body_len += len;
      p->body[p->body_len] = 0;
    }
    return 0;
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (p && p->is_push)
      push(wsi, p);
    return 0;
  case LWS_CALLBACK_HTTP_WRITEABLE:
    return p ? http_writeable(wsi, p) : 0;
  case LWS_CALLBACK_CLOSED_HTTP:
    if (p) { /* NULL when the client left before lws bound the connection to us */
      free(p->body);
      p->body = NULL;
    }
    return 0;
  default:
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}

static const struct lws_protocols protocols[] = {
    {"baseline", callback, sizeof(struct pss), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* With the ev/uv/glib loops lws_service() runs the library's loop and does not come back to
 * check a flag; a bench server has nothing to flush, so a signal just ends the process. */
static void on_signal(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = argc > 1 ? atoi(argv[1]) : 8091;
  info.protocols = protocols;
  info.iface = "127.0.0.1"; /* benches run over loopback only */
  const char *loop = argc > 2 ? argv[2] : "poll";
  if (!strcmp(loop, "ev"))
    info.options |= LWS_SERVER_OPTION_LIBEV;
  else if (!strcmp(loop, "uv"))
    info.options |= LWS_SERVER_OPTION_LIBUV;
  else if (!strcmp(loop, "glib"))
    info.options |= LWS_SERVER_OPTION_GLIB;
  else if (strcmp(loop, "poll")) {
    fprintf(stderr, "lws_baseline: unknown event loop %s (poll, ev, uv, glib)\n", loop);
    return 2;
  }
  lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  struct lws_context *ctx = lws_create_context(&info);
  if (!ctx)
    return 1;
  while (lws_service(ctx, 0) >= 0)
    ;
  lws_context_destroy(ctx);
  return 0;
}
