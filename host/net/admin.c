/* admin.c: the operator's endpoints under /_/: healthz, readyz, client.js and the ui page
 * (public); status, users, rooms, push, broadcast, disconnect and revoke behind the bearer
 * token (--admin-loopback-only also needs a local peer). */
#include "admin.h"

#include "cluster.h"
#include "defer.h"
#include "log.h"
#include "plugins.h"
#include "push.h"
#include "quarantine.h"
#include "rooms.h"
#include "timers.h"
#include "version.h"
#include "worker.h"
#include "ws.h"
#include "xthread.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int admin_token_equal(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  unsigned char d = na != nb;
  /* Walk the full length of the expected token whatever the input, so time tells nothing. */
  for (size_t i = 0; i < nb; i++)
    d |= (unsigned char)(b[i] ^ (i < na ? a[i] : 0));
  return d == 0;
}

static void set_json(struct http_req *r, int status, json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  http_set_response(r, o ? status : 500, "application/json", s ? s : "{\"error\":\"oom\"}",
                    s ? strlen(s) : 15);
  free(s);
  json_decref(o);
}

static int is_loopback(const char *addr) {
  return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strncmp(addr, "::ffff:127.", 11);
}

/* A peer on a unix socket (--bind/--admin-bind unix:...) is on this machine. */
static int is_unix_peer(struct lws *wsi) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  return getsockname(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) == 0 &&
         ss.ss_family == AF_UNIX;
}

int admin_refuse(struct http_req *r) {
  if (!strcmp(r->name, "healthz") || !strcmp(r->name, "readyz") || !strcmp(r->name, "client.js") ||
      !strcmp(r->name, "ui") ||
      (!strcmp(r->name, "metrics") && r->host->cfg.metrics_public))
    return 0;
  if (r->host->cfg.admin_loopback_only && !is_loopback(r->remote) && !is_unix_peer(r->wsi)) {
    set_json(r, 403, json_pack("{ss}", "error", "Forbidden"));
    return 1;
  }
  const char *auth = json_string_value(json_object_get(r->headers, "authorization"));
  if (!auth || strncasecmp(auth, "Bearer ", 7) ||
      !admin_token_equal(auth + 7, r->host->admin_token)) {
    log_warn("_", r->request_id, "admin %s /_/%s refused: no valid bearer token from %s", r->method,
             r->name, r->remote);
    set_json(r, 401, json_pack("{ss}", "error", "Unauthorized"));
    return 1;
  }
  return 0;
}

static void status(struct http_req *r) {
  struct host *h = r->host;
  int64_t users = -1, online = -1, conns = -1, queued = -1;
  store_counts(h->store, &users, &online, &conns, &queued);
  json_t *o = json_pack(
      "{sI sI ss si si s{sI sI sI sI} s{sI sI sI sI sI} so}", "uptime_ms",
      (json_int_t)(host_now_ms() - h->started_ms), "pid", (json_int_t)getpid(), "boot_id",
      store_boot_id(h->store), "connections", h->nconns, "users_online", (int)h->users.count,
      "store", "users", (json_int_t)users, "online_users", (json_int_t)online, "connections",
      (json_int_t)conns, "queued_messages", (json_int_t)queued, "stats", "ws_opened",
      (json_int_t)h->stats.ws_opened, "ws_closed", (json_int_t)h->stats.ws_closed, "ws_messages",
      (json_int_t)h->stats.ws_messages, "http_requests", (json_int_t)h->stats.http_requests,
      "plugin_errors", (json_int_t)h->stats.plugin_errors, "plugins", plugins_status(h->plugins));
  json_object_set_new(json_object_get(o, "store"), "memory_bytes",
                      json_integer(store_memory_used()));
  json_object_set_new(o, "version", json_string(WSHOST_VERSION));
  json_object_set_new(o, "abi", json_integer(PLUGINS_ABI_MAX));
  json_object_set_new(o, "lws", json_string(lws_get_library_version()));
  /* An upgrade replaced the file this process runs: a restart picks up the new one. */
  json_object_set_new(o, "binary_deleted", json_boolean(h->exe_deleted));
  json_object_set_new(o, "draining", json_boolean(h->stopping));
  json_object_set_new(o, "rooms", json_integer((json_int_t)rooms_count(h)));
  json_object_set_new(o, "timers", json_integer((json_int_t)timers_count(h)));
  json_object_set_new(o, "deferred", json_integer((json_int_t)defers_outstanding(h)));
  json_t *q = quarantine_status(h->quarantine);
  json_object_set(o, "crashes", json_object_get(q, "crashes"));
  json_object_set(o, "quarantine", json_object_get(q, "quarantined"));
  json_decref(q);
  const char *fault = store_fault(h->store);
  json_object_set_new(json_object_get(o, "store"), "fault",
                      fault ? json_string(fault) : json_null());
  json_object_set_new(json_object_get(o, "store"), "waiting_for_lock",
                      json_boolean(store_waiting(h->store)));
  set_json(r, 200, o);
}

/* The browser client, public like any script a page loads; pages of other origins may import
 * it (a module script is fetched with CORS). */
extern const unsigned char client_js[];
extern const size_t client_js_len;
static void serve_client_js(struct http_req *r) {
  http_set_response(r, 200, "text/javascript; charset=utf-8", (const char *)client_js,
                    client_js_len);
  http_add_header(r, "access-control-allow-origin", "*");
  http_add_header(r, "cache-control", "no-cache");
}

/* The operator's page: a shell without data, public like client.js; what it shows it reads from
 * the endpoints behind the token. Its own inline script and same-origin fetches only. */
extern const unsigned char admin_ui_html[];
extern const size_t admin_ui_html_len;
static void serve_ui(struct http_req *r) {
  http_set_response(r, 200, "text/html; charset=utf-8", (const char *)admin_ui_html,
                    admin_ui_html_len);
  http_add_header(r, "content-security-policy",
                  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                  "connect-src 'self'; frame-ancestors 'none'; form-action 'none'");
  http_add_header(r, "x-frame-options", "DENY");
  http_add_header(r, "referrer-policy", "no-referrer");
  http_add_header(r, "cache-control", "no-cache");
}

/* The Prometheus page: counters from h->metrics, gauges read now. */
static void metrics(struct http_req *r) {
  struct host *h = r->host;
  struct metrics_gauges g = {.connections = h->nconns,
                             .users_online = (int64_t)h->users.count,
                             .users_stored = -1,
                             .outbox_depth = -1,
                             .wal_bytes = -1,
                             .db_bytes = -1,
                             .upgrades = h->stats.ws_opened,
                             .closes = h->stats.ws_closed,
                             .http_requests = h->stats.http_requests,
                             .start_time_s = (double)h->started_ms / 1e3,
                             .draining = h->stopping,
                             .xthread_bytes = xthread_bytes(h),
                             .xthread_refused = xthread_refused(h),
                             .version = WSHOST_VERSION,
                             .lws = lws_get_library_version(),
                             .abi = PLUGINS_ABI_MAX,
                             .crashes = quarantine_crash_counts(h->quarantine),
                             .worker_violations = workers_violations(h)};
  int64_t online, conns;
  store_counts(h->store, &g.users_stored, &online, &conns, &g.outbox_depth);
  struct stat st;
  char wal[4200];
  if (strcmp(h->cfg.db_path, ":memory:")) {
    snprintf(wal, sizeof wal, "%s-wal", h->cfg.db_path);
    g.db_bytes = stat(h->cfg.db_path, &st) == 0 ? (int64_t)st.st_size : -1;
    g.wal_bytes = stat(wal, &st) == 0 ? (int64_t)st.st_size : 0;
  }
  size_t len = 0;
  char *text = metrics_render(&h->metrics, &g, &len);
  if (text)
    http_set_response(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
  else
    set_json(r, 500, json_pack("{ss}", "error", "out of memory"));
  free(text);
}

/* POST /_/quarantine/<name>/lift: the operator vouches for the build; it is loaded again. */
static void quarantine_lift_route(struct http_req *r) {
  const char *name = r->path + strlen("/_/quarantine/");
  const char *end = strstr(name, "/lift");
  size_t n = end ? (size_t)(end - name) : 0;
  char fn[FN_NAME_MAX + 1];
  if (!end || strcmp(end, "/lift") || !fn_name_valid(name, n)) {
    set_json(r, 404, json_pack("{ss}", "error", "Not Found"));
    return;
  }
  memcpy(fn, name, n);
  fn[n] = 0;
  if (quarantine_lift(r->host->quarantine, fn, "admin") < 0) {
    set_json(r, 404, json_pack("{ss}", "error", "not quarantined"));
    return;
  }
  /* The load runs on the loader thread: "loading" until it is swapped in (/_/status). */
  int rc = plugins_reload(r->host->plugins, fn);
  log_warn(fn, r->request_id, "quarantine of %s lifted by the admin API from %s; %s", fn, r->remote,
           rc == 0              ? "loaded again"
           : rc == -EINPROGRESS ? "loading it again"
                                : "its file still does not load");
  set_json(r, 200,
           json_pack("{ss sb sb}", "lifted", fn, "loaded", plugins_loaded(r->host->plugins, fn),
                     "loading", rc == -EINPROGRESS));
}

static void answer_now(void *r, int status, json_t *body) {
  set_json(r, status, body);
}

/* POST /_/push {"user_id", "message"} and the example push function answer alike. */
static void push(struct http_req *r) {
  json_error_t e;
  json_t *b = r->body ? json_loadb(r->body, r->body_len, 0, &e) : NULL;
  const char *user = json_string_value(json_object_get(b, "user_id"));
  const char *msg = json_string_value(json_object_get(b, "message"));
  if (!user || !msg) {
    set_json(r, 400,
             json_pack("{ss ss}", "error", "Bad Request", "message",
                       "body must be {\"user_id\": string, \"message\": string}"));
    json_decref(b);
    return;
  }
  if (!r->host->cluster) { /* answered before push_answered returns */
    push_answered(r->host, user, msg, strlen(msg), 0, answer_now, r);
    json_decref(b);
    return;
  }
  /* In a cluster the answer comes once Redis replied: a deferred response carries it. */
  cloud_deferred *d = defer_begin(r->host, r, "_");
  if (d)
    r->deferred = 1;
  if (!d || push_deferred(r->host, d, user, msg, strlen(msg), 0) < 0) {
    if (d)
      defer_complete(r->host, d, 500, "application/json", "{\"error\":\"out of memory\"}", 24);
    else
      set_json(r, 500, json_pack("{ss}", "error", "out of memory"));
  }
  json_decref(b);
}

static json_t *body_object(struct http_req *r) {
  json_error_t e;
  if (!r->body || !r->body_len)
    return json_object();
  json_t *b = json_loadb(r->body, r->body_len, 0, &e);
  if (!json_is_object(b)) {
    json_decref(b);
    return NULL;
  }
  return b;
}

static void bad_request(struct http_req *r, const char *why) {
  set_json(r, 400, json_pack("{ss ss}", "error", "Bad Request", "message", why));
}

/* The user id of /_/users/<id>/<verb>, from the path (r->name is cut at FN_NAME_MAX), into id
 * (STORE_ID_MAX+1 bytes). 0, or -1 when the path is not that shape or the id is not one. */
static int user_of_action(struct http_req *r, const char *verb, char *id) {
  const char *p = r->path + strlen("/_/users/");
  const char *slash = strchr(p, '/');
  size_t n = slash ? (size_t)(slash - p) : 0;
  if (!slash || strcmp(slash + 1, verb) || n == 0 || n > STORE_ID_MAX)
    return -1;
  memcpy(id, p, n);
  id[n] = 0;
  return user_id_valid(id) ? 0 : -1;
}

/* POST /_/users/<id>/disconnect {"code": 4000, "reason": "...", "reconnect": true}: every socket
 * of the user on this node is closed. Without a code: 4000 when
 * the client may come back, 4001 when it should not (the JS client stops retrying). */
static void user_disconnect(struct http_req *r, const char *id) {
  json_t *b = body_object(r);
  if (!b) {
    bad_request(r, "body must be a JSON object {\"code\", \"reason\", \"reconnect\"}");
    return;
  }
  json_t *jr = json_object_get(b, "reconnect"), *jc = json_object_get(b, "code");
  json_t *jreason = json_object_get(b, "reason");
  int reconnect = jr ? json_is_true(jr) : 1;
  int code = jc          ? (int)json_integer_value(jc)
             : reconnect ? WS_CLOSE_RECONNECT
                         : WS_CLOSE_NO_RECONNECT;
  const char *reason = jreason ? json_string_value(jreason) : "disconnected by the operator";
  if ((jr && !json_is_boolean(jr)) || (jc && !json_is_integer(jc)) || (jreason && !reason) ||
      code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 || code == 1015 ||
      strlen(reason) > 123) {
    bad_request(r, "code must be 1000..4999 (not 1004-1006, 1015), reason at most 123 bytes, "
                   "reconnect a boolean");
    json_decref(b);
    return;
  }
  int exists = store_user_exists(r->host->store, id);
  if (exists <= 0) {
    set_json(r, exists < 0 ? 503 : 404,
             json_pack("{ss}", "error", exists < 0 ? "store unavailable" : "no such user"));
    json_decref(b);
    return;
  }
  int n = ws_user_close(r->host, id, code, reason);
  log_warn("_", r->request_id, "admin disconnect of user %s (%d \"%s\") from %s: %d socket(s)", id,
           code, reason, r->remote, n);
  set_json(r, 200, json_pack("{ss si si}", "user_id", id, "code", code, "disconnected", n));
  json_decref(b);
}

/* POST /_/users/<id>/revoke: the user's resume token stops working, and its sockets here are
 * closed (4001: a token that no longer resumes is no reason to retry). An app-bound user has no
 * token of the host's to drop: 409. */
static void user_revoke(struct http_req *r, const char *id) {
  struct host *h = r->host;
  int exists = store_user_exists(h->store, id);
  if (exists < 0) {
    set_json(r, 503, json_pack("{ss}", "error", "store unavailable"));
    return;
  }
  if (!exists) {
    set_json(r, 404, json_pack("{ss}", "error", "no such user"));
    return;
  }
  int rc = store_user_revoke(h->store, id);
  if (rc > 0 && h->cluster) /* every node, and the hash other nodes would import */
    cluster_user_revoke(h, id);
  if (rc < 0) {
    set_json(r, 503, json_pack("{ss}", "error", "store unavailable"));
    return;
  }
  if (rc == 0) {
    set_json(r, 409,
             json_pack("{ss ss}", "error", "Conflict", "message",
                       "the user has no resume token (app-bound or already revoked)"));
    return;
  }
  int n = ws_user_close(h, id, WS_CLOSE_NO_RECONNECT, "token revoked");
  log_warn("_", r->request_id,
           "admin revoked the resume token of user %s from %s; %d socket(s) closed", id, r->remote,
           n);
  set_json(r, 200, json_pack("{ss sb si}", "user_id", id, "revoked", 1, "disconnected", n));
}

/* POST /_/users {"user_id"}: a user that exists before it connects (app-bound: no token), so
 * sends to it queue. 201 created, 200 when it was there already. */
static void user_create(struct http_req *r) {
  json_t *b = body_object(r);
  const char *id = json_string_value(json_object_get(b, "user_id"));
  if (!id || !user_id_valid(id)) {
    bad_request(r, "body must be {\"user_id\": an id of [A-Za-z0-9_.:@-], 1..128 bytes}");
    json_decref(b);
    return;
  }
  int before = store_user_exists(r->host->store, id);
  int rc = before < 0 ? before : store_user_ensure(r->host->store, id);
  if (rc < 0)
    set_json(r, 503, json_pack("{ss}", "error", "store unavailable"));
  else
    set_json(r, before ? 200 : 201, json_pack("{ss sb}", "user_id", id, "created", !before));
  json_decref(b);
}

/* POST /_/broadcast {"message"}: every live socket (every node's, in a cluster). */
static void broadcast(struct http_req *r) {
  json_t *b = body_object(r);
  json_t *m = json_object_get(b, "message");
  if (!json_is_string(m)) {
    bad_request(r, "body must be {\"message\": string}");
    json_decref(b);
    return;
  }
  int n =
      rooms_broadcast(r->host, json_string_value(m), json_string_length(m), 0, (cloud_socket){0});
  if (n < 0)
    set_json(r, n == CLOUD_ETOOBIG ? 413 : 500,
             json_pack("{ss}", "error", n == CLOUD_ETOOBIG ? "message too large" : "failed"));
  else
    set_json(r, 200, json_pack("{si sb}", "delivered", n, "cluster", r->host->cluster != NULL));
  json_decref(b);
}

#define ROOMS_LIST_MAX 10000

static void rooms_list_route(struct http_req *r) {
  const char *lim = json_string_value(json_object_get(r->query, "limit"));
  long limit = lim ? strtol(lim, NULL, 10) : 1000;
  if (limit <= 0 || limit > ROOMS_LIST_MAX)
    limit = limit <= 0 ? 1000 : ROOMS_LIST_MAX;
  json_t *list = rooms_list_local(r->host, (size_t)limit);
  if (!list) {
    set_json(r, 500, json_pack("{ss}", "error", "out of memory"));
    return;
  }
  size_t total = rooms_count(r->host);
  set_json(r, 200,
           json_pack("{so si sb}", "rooms", list, "count", (int)total, "truncated",
                     total > json_array_size(list)));
}

void admin_handle(struct http_req *r) {
  struct host *h = r->host;
  const char *n = r->name;
  /* HEAD is GET without the body (http.c writes none). */
  int get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
  if (!strcmp(n, "readyz") && get)
    /* Ready for new clients: not while draining (a load balancer stops sending them here),
     * nor with the store failing. */
    set_json(r, h->stopping || store_fault(h->store) ? 503 : 200,
             json_pack("{sb}", "ready", !h->stopping && !store_fault(h->store)));
  else if (!strcmp(n, "healthz") && get) {
    const char *fault = store_fault(h->store);
    if (fault)
      set_json(r, 503, json_pack("{sb ss}", "ok", 0, "store", fault));
    else
      set_json(r, 200, json_pack("{sb}", "ok", !h->stopping));
  } else if (!strcmp(n, "status") && get)
    status(r);
  else if (!strcmp(n, "client.js") && get)
    serve_client_js(r);
  else if (!strcmp(n, "ui") && get)
    serve_ui(r);
  else if (!strcmp(n, "metrics") && get)
    metrics(r);
  else if (!strcmp(n, "users") && get) {
    const char *on = json_string_value(json_object_get(r->query, "online"));
    const char *lim = json_string_value(json_object_get(r->query, "limit"));
    int limit = lim ? atoi(lim) : 1000;
    const char *cl = json_string_value(json_object_get(r->query, "cluster"));
    cloud_deferred *d = cl && strcmp(cl, "0") && h->cluster ? defer_begin(h, r, "_") : NULL;
    void *w = d ? push_completer(h, d) : NULL;
    if (w) { /* the cluster's list comes once Redis replied */
      r->deferred = 1;
      cluster_users(h, push_complete, w);
    } else if (d)
      defer_complete(h, d, 500, "application/json", "{\"error\":\"out of memory\"}", 24);
    else
      set_json(r, 200, store_users_json(h->store, on && strcmp(on, "0"), limit > 0 ? limit : 1000));
  } else if (!strcmp(n, "users") && !strcmp(r->method, "POST"))
    user_create(r);
  else if (!strncmp(n, "users/", 6) && !strcmp(r->method, "POST")) {
    char id[STORE_ID_MAX + 1];
    if (!user_of_action(r, "disconnect", id))
      user_disconnect(r, id);
    else if (!user_of_action(r, "revoke", id))
      user_revoke(r, id);
    else
      set_json(r, 404, json_pack("{ss}", "error", "Not Found"));
  } else if (!strncmp(n, "users/", 6) && get) {
    /* The id from the path itself: r->name keeps FN_NAME_MAX bytes, so a 128-byte id after
     * "users/" would arrive cut and could name another user. */
    json_t *u = store_user_json(h->store, r->path + strlen("/_/users/"));
    if (u)
      set_json(r, 200, u);
    else
      set_json(r, 404, json_pack("{ss}", "error", "no such user"));
  } else if (!strncmp(n, "rooms/", 6) && get) {
    /* From the path, like users/: a 128-byte room name does not fit in r->name. */
    const char *room = r->path + strlen("/_/rooms/");
    json_t *m = rooms_members(h, room);
    if (m)
      set_json(r, 200, json_pack("{s:s, s:o}", "room", room, "members", m));
    else
      set_json(r, 400, json_pack("{ss}", "error", "bad room name"));
  } else if (!strcmp(n, "rooms") && get)
    rooms_list_route(r);
  else if (!strcmp(n, "push") && !strcmp(r->method, "POST"))
    push(r);
  else if (!strcmp(n, "broadcast") && !strcmp(r->method, "POST"))
    broadcast(r);
  else if (!strcmp(n, "quarantine") && get) {
    json_t *q = quarantine_status(h->quarantine);
    set_json(r, 200, q);
  } else if (!strncmp(n, "quarantine/", 11) && !strcmp(r->method, "POST"))
    quarantine_lift_route(r);
  else
    set_json(r, 404, json_pack("{ss}", "error", "Not Found"));
}

const struct http_area admin_area = {.refuse = admin_refuse, .handle = admin_handle};

int admin_token_init(struct host *h) {
  if (h->cfg.admin_token && *h->cfg.admin_token) {
    snprintf(h->admin_token, sizeof h->admin_token, "%s", h->cfg.admin_token);
    return 0;
  }
  char dir[4096], path[4200];
  snprintf(dir, sizeof dir, "%s", strcmp(h->cfg.db_path, ":memory:") ? h->cfg.db_path : "data/x");
  /* With --db :memory: nothing else creates data/: the token file still needs a home. */
  int rc = store_make_dir(dir);
  if (rc < 0)
    log_warn(NULL, NULL, "cannot create the folder of %s: %s", dir, strerror(-rc));
  const char *folder = dirname(dir);
  snprintf(path, sizeof path, "%s/admin-token", folder);
  FILE *f = fopen(path, "r");
  if (f) {
    int ok = fgets(h->admin_token, sizeof h->admin_token, f) != NULL;
    fclose(f);
    h->admin_token[strcspn(h->admin_token, "\r\n")] = 0;
    if (ok && *h->admin_token) {
      log_info(NULL, NULL, "admin token read from %s", path);
      return 0;
    }
  }
  _Static_assert(sizeof h->admin_token > STORE_TOKEN_LEN, "admin token buffer");
  if (store_new_token(h->admin_token) < 0)
    return -EIO;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    log_error(NULL, NULL, "cannot write admin token to %s: %s", path, strerror(errno));
    return -errno;
  }
  dprintf(fd, "%s\n", h->admin_token);
  close(fd);
  log_info(NULL, NULL, "admin token generated into %s (mode 0600)", path);
  return 0;
}
