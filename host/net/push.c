/* push.c: a push whose caller waits for the outcome (POST /_/push and the SDK's
 * cloud_deferred_send_to_user): one status rule, answered once the cluster answered. */
#include "push.h"

#include "defer.h"
#include "ws.h"

#include <stdlib.h>
#include <string.h>

void push_answered(struct host *h, const char *user, const void *data, size_t len, int is_binary,
                   cluster_push_done done, void *arg) {
  if (h->cluster) { /* other nodes and Redis's outbox answer later */
    cluster_push(h, user, data, len, is_binary, done, arg);
    return;
  }
  int rc = ws_send_to_user(h, user, data, len, is_binary);
  if (rc >= 0)
    done(arg, 200, json_pack("{si}", "delivered", rc));
  else if (rc == CLOUD_ENOUSER || rc == CLOUD_EINVAL)
    done(arg, 404, json_pack("{ss}", "error", "no such user"));
  else if (rc == CLOUD_EFULL)
    done(arg, 507, json_pack("{ss}", "error", "outbox full"));
  else if (rc == CLOUD_EIO) /* not queued: the store is locked or faulty; the caller retries */
    done(arg, 503, json_pack("{ss si}", "error", "store unavailable", "code", rc));
  else
    done(arg, 500, json_pack("{ss si}", "error", "push failed", "code", rc));
}

struct push_wait {
  struct host *h;
  cloud_deferred *d;
};

void push_complete(void *arg, int status, json_t *body) {
  struct push_wait *w = arg;
  char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
  /* A client gone, or a response timed out, meanwhile: the handle is unknown by now and
   * nothing is written. */
  defer_complete(w->h, w->d, s ? status : 500, "application/json", s ? s : "{}", s ? strlen(s) : 2);
  free(s);
  json_decref(body);
  free(w);
}

void *push_completer(struct host *h, cloud_deferred *d) {
  struct push_wait *w = malloc(sizeof *w);
  if (w) {
    w->h = h;
    w->d = d;
  }
  return w;
}

int push_deferred(struct host *h, cloud_deferred *d, const char *user, const void *data, size_t len,
                  int is_binary) {
  if (!user || (!data && len) || !defer_open(h, d))
    return CLOUD_EINVAL;
  void *w = push_completer(h, d);
  if (!w)
    return CLOUD_ENOMEM;
  push_answered(h, user, data, len, is_binary, push_complete, w);
  return 0;
}
