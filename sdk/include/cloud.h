/* cloud.h: the whole SDK of a wshost cloud function, and the only header a plugin includes.
 * Owns the ABI between host and plugin: the descriptor a plugin exports, the API table it gets.
 *
 * A function is one shared object with one entry point:
 *
 *     #include <cloud.h>
 *     CLOUD_FUNCTION(ctx) {
 *       if (cloud_method_is(ctx, "WebSocket:message"))
 *         cloud_socket_send(ctx->socket, "I have received your message");
 *       return 0;
 *     }
 *
 * Build: cc -shared -fPIC -I sdk/include handler.c -o plugins/__websocket__.so -ljansson
 *
 * Threading: the host calls the plugin on its event loop thread, and most calls below must be
 * made there, from inside a CLOUD_FUNCTION, CLOUD_INIT or CLOUD_FINI (elsewhere they return
 * CLOUD_ESTATE, or NULL). Marked "any thread": the send calls (cloud_socket_send*,
 * cloud_send_to_user*, cloud_room_send*, cloud_broadcast*), cloud_log* and cloud_deferred_*.
 * From another thread those copy their arguments, wake the loop and return 0 at once: the send
 * happens on the loop, so its count and its errors (a closed socket) are not reported back;
 * CLOUD_EFULL means the loop's queue of such calls is full. A plugin's threads must be stopped
 * in CLOUD_FINI: the host unloads the code after it.
 *
 * Ownership: strings and JSON objects in FunctionContext belong to the host and live until the
 * function returns; copy what you keep. Socket handles (cloud_socket) may be kept forever.
 */
#ifndef CLOUD_H
#define CLOUD_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version of this header. The host serves a range of versions and refuses others. */
#ifndef CLOUD_ABI_VERSION
#define CLOUD_ABI_VERSION 3
#endif

/* Status codes: every int-returning call returns 0 (or a count) on success, one of these on
 * failure. cloud_strerror() names them. */
#define CLOUD_OK 0
#define CLOUD_EINVAL (-1)  /* bad argument (NULL, wrong size, invalid user id) */
#define CLOUD_ECLOSED (-2) /* the socket's connection is closed */
#define CLOUD_ENOMEM (-3)  /* out of memory */
#define CLOUD_ENOUSER (-4) /* no such user */
#define CLOUD_EFULL (-5)   /* a bounded queue (send queue, outbox) is full */
#define CLOUD_ESTATE (-6)  /* not allowed in this event (e.g. bind outside connection) */
#define CLOUD_ETOOBIG (-7) /* message larger than the configured limit */
#define CLOUD_EIO (-8)     /* the store failed */
/* The cluster's Redis is unreachable (--redis): not sent to other nodes, not queued. */
#define CLOUD_EUNAVAIL (-9)
#define CLOUD_ENOFUNC (-10) /* cloud_invoke: no such function (or a "__" name) */
#define CLOUD_EFAILED (-11) /* cloud_invoke: the function failed and set no response */

/* A WebSocket connection. A plain value: copy it, keep it, compare it with
 * cloud_socket_equal(). After its connection closed every call on it returns CLOUD_ECLOSED.
 * id 0 is "no socket" (HTTP functions). */
typedef struct cloud_socket {
  uint64_t id;
} cloud_socket;

/* A response an HTTP function will give later (cloud_defer). Opaque: a handle, never
 * dereferenced; it stops working once completed or timed out. */
typedef struct cloud_deferred cloud_deferred;

/* SQLite's handle type (<sqlite3.h> names it sqlite3): see cloud_db(). */
struct sqlite3;

/* Event parameters. Which fields are set depends on ctx->method:
 *   "WebSocket:message": data, len, is_binary (data is NUL-terminated for convenience)
 *   "WebSocket:close":   code, reason
 *   "WebSocket:error":   error (a message)
 *   "Timer":             data = the timer's name, len (ctx->socket is {0}) */
typedef struct cloud_params {
  const char *data;
  size_t len;
  int is_binary;
  int code;
  const char *reason;
  const char *error;
} cloud_params;

/* One uploaded file of a multipart/form-data request (ctx->files): its form field, the
 * filename the client gave (as sent: never use it as a path), its Content-Type (NULL if none),
 * and where its bytes are: a private temp file (mode 0600), removed after the function returns
 * (copy or rename it to keep it). */
typedef struct cloud_file {
  const char *field, *filename, *content_type, *path;
  size_t size;
} cloud_file;

/* Mirrors Laf's FunctionContext. All members are owned by the host and valid during the call.
 * New members are only ever added at the end; `size` is sizeof as the host filled it. */
typedef struct FunctionContext {
  size_t size;
  const char *function_name; /* "__websocket__", "echo", ... */
  const char *request_id;    /* unique per event or request; also in the log lines */
  const char *method;        /* "WebSocket:connection" ... or "GET", "POST", ... */
  cloud_params params;
  json_t *query;          /* object: query string parameters (connection event and HTTP) */
  json_t *headers;        /* object: lower-case header names (connection event and HTTP) */
  json_t *body;           /* HTTP: parsed JSON or urlencoded body, NULL if none */
  const char *body_raw;   /* HTTP: raw body bytes, NUL-terminated, NULL if none */
  size_t body_len;        /* HTTP: length of body_raw */
  const char *url;        /* path and query string of the request or upgrade */
  cloud_socket socket;    /* WebSocket events: the connection; {0} for HTTP */
  const char *user_id;    /* WebSocket events: the connection's user */
  const char *user_token; /* connection event of a host-assigned user: its resume secret */
  void *host;             /* private to the host; since ABI 2 never read back */
  /* ABI 2 */
  json_t *user; /* the claims of a valid JWT (--jwt-secret / --jwt-public-key), else NULL */
  const char *protocols; /* connection event: Sec-WebSocket-Protocol as offered, NULL if none */
  /* ABI 3: HTTP multipart/form-data: the file parts (ctx->body holds the other fields as an
   * object of strings, body_raw is NULL: the body was not kept). Check ctx->size first. */
  const cloud_file *files;
  size_t files_count;
} FunctionContext;

/* The host's functions, handed to the plugin at load. Grows only at the end; each group is
 * marked with the ABI version that added it. Plugins call the wrappers below, not this. */
typedef struct cloud_api {
  uint32_t abi_version; /* version the host serves */
  uint32_t size;        /* sizeof(cloud_api) in the host */
  /* ABI 1 */
  int (*socket_send)(cloud_socket, const void *, size_t, int is_binary);
  int (*socket_close)(cloud_socket, int code, const char *reason);
  int (*bind_user)(FunctionContext *, const char *user_id);
  int (*send_to_user)(const char *user_id, const void *, size_t, int is_binary);
  json_t *(*shared_get)(const char *key);
  int (*shared_set)(const char *key, json_t *value);
  int (*shared_delete)(const char *key);
  int (*response_json)(FunctionContext *, int status, json_t *);
  int (*response_text)(FunctionContext *, int status, const char *);
  int (*response_header)(FunctionContext *, const char *name, const char *value);
  void (*logv)(const FunctionContext *, const char *fmt, va_list);
  const char *(*strerror)(int code);
  const char *(*request_header)(FunctionContext *, const char *name);
  /* ABI 2: rooms, broadcast, timers, log levels, deferred responses */
  int (*room_join)(cloud_socket, const char *room);
  int (*room_leave)(cloud_socket, const char *room);
  int (*room_send)(const char *room, const void *, size_t, int is_binary, cloud_socket except);
  int (*broadcast)(const void *, size_t, int is_binary, cloud_socket except);
  json_t *(*room_members)(const char *room);
  json_t *(*socket_rooms)(cloud_socket);
  int (*timer_start)(const char *name, uint64_t first_ms, uint64_t every_ms);
  int (*timer_stop)(const char *name);
  void (*log_levelv)(const FunctionContext *, int level, const char *fmt, va_list);
  cloud_deferred *(*defer)(FunctionContext *);
  int (*deferred_respond)(cloud_deferred *, int status, const char *content_type, const void *,
                          size_t);
  /* ABI 2: configuration, and the door of the connection event */
  const char *(*env)(const char *name);
  int (*reject)(FunctionContext *, int status, const char *reason);
  int (*accept_protocol)(FunctionContext *, const char *name);
  /* ABI 2: a push whose HTTP answer waits for the cluster (check size before use) */
  int (*deferred_send_to_user)(cloud_deferred *, const char *user_id, const void *, size_t,
                               int is_binary);
  /* ABI 3: rooms users hold, the rooms' view, history, users made before they connect */
  int (*user_join)(const char *user_id, const char *room);
  int (*user_leave)(const char *user_id, const char *room);
  json_t *(*rooms)(void);
  json_t *(*user_sockets)(const char *user_id);
  int (*room_keep)(const char *room, int last_n);
  int (*room_history)(cloud_socket, const char *room, int n);
  int (*user_create)(const char *user_id);
  /* ABI 3: the rest of Laf's cloud object (check size before use) */
  char *(*jwt_sign)(json_t *claims, int ttl_s);
  json_t *(*jwt_verify)(const char *token);
  int (*invoke)(const char *function, const char *method, json_t *body, json_t **result);
  int (*sockets_each)(int (*fn)(cloud_socket, const char *user_id, void *), void *arg);
  struct sqlite3 *(*db)(void);
  int (*stream_start)(FunctionContext *, int status, const char *content_type);
  int (*stream_write)(FunctionContext *, const void *, size_t);
  int (*stream_end)(FunctionContext *);
  int (*sse_send)(FunctionContext *, const char *event, const char *data);
} cloud_api;

/* What a plugin exports under the symbol name "cloud_plugin". The host checks abi_version and
 * size before it uses anything else, then stores its table through `api`. */
typedef struct cloud_plugin_desc {
  uint32_t abi_version;
  uint32_t size;         /* sizeof(cloud_plugin_desc) in the plugin */
  uint32_t context_size; /* sizeof(FunctionContext) in the plugin */
  const cloud_api **api; /* where the host stores its table */
  int (*main)(FunctionContext *);
} cloud_plugin_desc;

/* Defined once per plugin by CLOUD_FUNCTION; set by the host before any hook runs. */
extern const cloud_api *cloud_api_ __attribute__((visibility("hidden")));

/* The entry point. Runs for every event of the function; return 0, or non-zero for an error
 * (logged with the request id; over HTTP a 500 unless a response was set). */
#define CLOUD_FUNCTION(ctx)                                                                        \
  const cloud_api *cloud_api_ __attribute__((visibility("hidden")));                               \
  static int cloud_main_(FunctionContext *);                                                       \
  __attribute__((visibility("default")))                                                           \
  const cloud_plugin_desc cloud_plugin = {CLOUD_ABI_VERSION, sizeof(cloud_plugin_desc),            \
                                          sizeof(FunctionContext), &cloud_api_, cloud_main_};      \
  static int cloud_main_(FunctionContext *ctx)

/* Optional: runs once after load, before the version is swapped in (like Laf's __init__).
 * Non-zero refuses this version; the previous one keeps serving. */
#define CLOUD_INIT() __attribute__((visibility("default"))) int cloud_plugin_init(void)

/* Optional: runs once before this version is unloaded. */
#define CLOUD_FINI() __attribute__((visibility("default"))) void cloud_plugin_fini(void)

/* Optional: what the host need not build for this function, as CLOUD_OPT_* bits:
 *     CLOUD_OPTIONS(CLOUD_OPT_LAZY_HEADERS);
 * An exported constant read at load, like CLOUD_INIT: no ABI change, so a plugin built
 * before it (ABI 1 or 2) simply has none and keeps getting everything. */
#define CLOUD_OPTIONS(bits)                                                                        \
  __attribute__((visibility("default"))) const uint32_t cloud_plugin_options = (bits)
/* The function reads request headers only through cloud_request_header(), never
 * ctx->headers: in its WebSocket connection event (and, for __interceptor__, in its call
 * before an upgrade) ctx->headers is NULL, and the host does not build the JSON object of
 * every header for each upgrade (~15 000 instructions, 5% of a short connection's cost).
 * cloud_request_header() still finds every header, standard or custom. HTTP functions keep
 * getting ctx->headers. The host builds ctx->headers for an upgrade when __websocket__ or
 * a loaded __interceptor__ lacks this bit. */
#define CLOUD_OPT_LAZY_HEADERS 0x1u

/* 1 if ctx->method equals method (e.g. "WebSocket:connection", "POST"). */
static inline int cloud_method_is(const FunctionContext *ctx, const char *method) {
  const char *a = ctx->method, *b = method;
  if (!a || !b)
    return 0;
  while (*a && *a == *b)
    a++, b++;
  return *a == *b;
}

/* Queues a text frame (copied). 0, or CLOUD_ECLOSED / CLOUD_EFULL (the connection is then
 * closed: a reader that slow is dropped) / CLOUD_ETOOBIG / CLOUD_EINVAL (text that is not valid
 * UTF-8, which no client may be sent; so for every text send). Any thread. */
static inline int cloud_socket_send(cloud_socket s, const char *text) {
  size_t n = 0;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->socket_send(s, text, n, 0);
}

/* Queues a binary frame (copied). Same results as cloud_socket_send. Any thread. */
static inline int cloud_socket_send_binary(cloud_socket s, const void *data, size_t len) {
  return cloud_api_->socket_send(s, data, len, 1);
}

/* Closes after what is queued was sent. code: 1000..4999 (1011 tells the client "server
 * error"); reason (copied) at most 123 bytes, may be NULL. */
static inline int cloud_socket_close(cloud_socket s, int code, const char *reason) {
  return cloud_api_->socket_close(s, code, reason);
}

/* 1 if both handles name the same connection. */
static inline int cloud_socket_equal(cloud_socket a, cloud_socket b) {
  return a.id == b.id;
}

/* Connection event only: makes user_id (copied; [A-Za-z0-9_.@:-]{1,128}) this connection's
 * user instead of a host-assigned one. Check your own credential first. 0, CLOUD_ESTATE
 * outside the connection event, CLOUD_EINVAL for a bad id. */
static inline int cloud_bind_user(FunctionContext *ctx, const char *user_id) {
  return cloud_api_->bind_user(ctx, user_id);
}

/* Sends text (copied) to every live connection of the user: returns how many. With none live
 * it is queued in the outbox (returns 0) and delivered in order on the user's next connection.
 * CLOUD_ENOUSER for an unknown user, CLOUD_EFULL when the outbox is full. Any thread. */
static inline int cloud_send_to_user(const char *user_id, const char *text) {
  size_t n = 0;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->send_to_user(user_id, text, n, 0);
}

/* Binary variant of cloud_send_to_user. Any thread. */
static inline int cloud_send_binary_to_user(const char *user_id, const void *data, size_t len) {
  return cloud_api_->send_to_user(user_id, data, len, 1);
}

/* Process-wide JSON values, shared by all functions, kept across reloads.
 * get: a new reference to a copy (json_decref it), NULL if absent.
 * set: the host keeps its own copy; the caller still owns value.
 * delete: 0, or CLOUD_EINVAL if absent. */
static inline json_t *cloud_shared_get(const char *key) {
  return cloud_api_->shared_get(key);
}
static inline int cloud_shared_set(const char *key, json_t *value) {
  return cloud_api_->shared_set(key, value);
}
static inline int cloud_shared_delete(const char *key) {
  return cloud_api_->shared_delete(key);
}

/* HTTP functions only (CLOUD_ESTATE elsewhere). The last response set wins.
 * response_json steals the reference to json (like jansson's *_new), even on failure.
 * response_text copies text and sets content-type text/plain. */
static inline int cloud_response_json(FunctionContext *ctx, int status, json_t *json) {
  return cloud_api_->response_json(ctx, status, json);
}
static inline int cloud_response_text(FunctionContext *ctx, int status, const char *text) {
  return cloud_api_->response_text(ctx, status, text);
}
/* Adds a response header (both copied). */
static inline int cloud_response_header(FunctionContext *ctx, const char *name, const char *value) {
  return cloud_api_->response_header(ctx, name, value);
}

/* One log line at level info, tagged with function name and request id. Any thread; off the
 * loop pass a ctx that is still valid (its function has not returned) or NULL. */
static inline __attribute__((format(printf, 2, 3))) void cloud_log(const FunctionContext *ctx,
                                                                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cloud_api_->logv(ctx, fmt, ap);
  va_end(ap);
}

/* The value of any request header by name (case-blind), NULL if absent. ctx->headers holds
 * the standard headers; this also finds custom ones (and adds them to ctx->headers when the
 * host built it). Valid until the function returns. HTTP functions and the connection event
 * only. With CLOUD_OPT_LAZY_HEADERS the one way to read headers in the connection event. */
static inline const char *cloud_request_header(FunctionContext *ctx, const char *name) {
  return cloud_api_->request_header(ctx, name);
}

/* The same at levels warn and error. Any thread, as cloud_log. */
static inline __attribute__((format(printf, 2, 3))) void cloud_log_warn(const FunctionContext *ctx,
                                                                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cloud_api_->log_levelv(ctx, 2, fmt, ap);
  va_end(ap);
}
static inline __attribute__((format(printf, 2, 3))) void cloud_log_error(const FunctionContext *ctx,
                                                                         const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cloud_api_->log_levelv(ctx, 3, fmt, ap);
  va_end(ap);
}

/* ---- ABI 2: rooms and broadcast. Rooms live in the host's memory and hold live sockets only;
 * names are [A-Za-z0-9_.:@-]{1,128}. A socket may be in many rooms (up to 1024) and leaves
 * all of them when it closes (after its WebSocket:close event). */

/* Adds s to room (created on first join). 0 (also when already a member), CLOUD_ECLOSED,
 * CLOUD_EINVAL (bad name), CLOUD_EFULL (s is in too many rooms). Loop thread. */
static inline int cloud_room_join(cloud_socket s, const char *room) {
  return cloud_api_->room_join(s, room);
}
/* Removes s from room. 0, or CLOUD_EINVAL if s is not a member. Loop thread. */
static inline int cloud_room_leave(cloud_socket s, const char *room) {
  return cloud_api_->room_leave(s, room);
}
/* Queues text (copied) to every member of room but `except` ({0}: nobody excluded). Returns
 * how many sockets it reached (0 for an empty or unknown room); never blocks: a member whose
 * send queue is full is dropped as in cloud_socket_send. CLOUD_EINVAL, CLOUD_ETOOBIG. Costs
 * O(members). Any thread (0 when called off the loop). */
static inline int cloud_room_send(const char *room, const char *text, cloud_socket except) {
  size_t n = 0;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->room_send(room, text, n, 0, except);
}
/* Binary variant of cloud_room_send. Any thread. */
static inline int cloud_room_send_binary(const char *room, const void *data, size_t len,
                                         cloud_socket except) {
  return cloud_api_->room_send(room, data, len, 1, except);
}
/* Queues text (copied) to every live socket but `except`; returns how many. Any thread. */
static inline int cloud_broadcast(const char *text, cloud_socket except) {
  size_t n = 0;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->broadcast(text, n, 0, except);
}
/* The members of room as a new reference (json_decref it): [{"user_id": .., "sockets": n}],
 * one entry per user; [] for an empty or unknown room; NULL for a bad name. Loop thread. */
static inline json_t *cloud_room_members(const char *room) {
  return cloud_api_->room_members(room);
}
/* The names of the rooms s is in, as a new array (json_decref it). Also valid in s's
 * WebSocket:close event, to tell its rooms it left. Loop thread. */
static inline json_t *cloud_socket_rooms(cloud_socket s) {
  return cloud_api_->socket_rooms(s);
}

/* ---- ABI 3: rooms for applications. A user may hold a room: every socket of the user is in
 * it, on this node and (with --redis) every other, sockets that connect later too, and the
 * membership is stored (a restart keeps it). A socket in a room for either reason counts once.
 * Presence: when a user's first socket enters a room or its last leaves it (a leave, a close),
 * __websocket__ gets method "Room:join" / "Room:leave", with ctx->user_id the user,
 * ctx->params.data the room and ctx->socket the socket that entered or left (closed, for a
 * close). They run after the call that caused them returned. Inside every event
 * cloud_room_members and cloud_socket_rooms agree about ctx->socket: in its WebSocket:close
 * it is still a member of the rooms it is in; it leaves them after that event. */

/* The user holds room from now on: its sockets join. How many joined now (0: none live),
 * CLOUD_ENOUSER, CLOUD_EINVAL (bad id or name), CLOUD_EFULL (1024 rooms held), CLOUD_EIO. */
static inline int cloud_user_join(const char *user_id, const char *room) {
  return cloud_api_->user_join(user_id, room);
}
/* The user no longer holds room, and every socket of the user leaves it (also one that
 * joined with cloud_room_join). How many left; CLOUD_EINVAL if the user was not in it. */
static inline int cloud_user_leave(const char *user_id, const char *room) {
  return cloud_api_->user_leave(user_id, room);
}
/* Every room with a member: [{"room": .., "users": n, "sockets": n}], sorted by name, as a new
 * reference (json_decref it). Loop thread. */
static inline json_t *cloud_rooms(void) {
  return cloud_api_->rooms();
}
/* The user's live sockets: [{"socket": id, "session": id or null, "node": id or null}] (the
 * number is a cloud_socket's id), new reference; NULL for a bad id. Loop thread. */
static inline json_t *cloud_user_sockets(const char *user_id) {
  return cloud_api_->user_sockets(user_id);
}
/* The room keeps its last last_n frames sent with cloud_room_send* (1..1000; and at most 8 MiB
 * of them), stored, so cloud_room_history serves them after a restart too; 0 keeps none and
 * drops what was kept. 0, CLOUD_EINVAL, CLOUD_EFULL (10 000 rooms keep frames), CLOUD_EIO. */
static inline int cloud_room_keep(const char *room, int last_n) {
  return cloud_api_->room_keep(room, last_n);
}
/* Sends s the room's last n kept frames, oldest first, through its send queue: how many (0 for
 * a room that keeps none), CLOUD_ECLOSED, CLOUD_EINVAL, CLOUD_EFULL (s's queue), CLOUD_EIO. */
static inline int cloud_room_history(cloud_socket s, const char *room, int n) {
  return cloud_api_->room_history(s, room, n);
}
/* A user by id before it ever connects (app-bound: no resume token), so that sends to it
 * queue in its outbox: 1 created, 0 it existed; CLOUD_EINVAL for a bad id, CLOUD_EIO. */
static inline int cloud_user_create(const char *user_id) {
  return cloud_api_->user_create(user_id);
}

/* ---- ABI 3: the rest of Laf's cloud object. A plugin built with these runs on a host of
 * ABI 3 that lacks them too: the wrappers then return CLOUD_ESTATE (NULL). */
#define CLOUD_HAS_(member) (cloud_api_->size >= offsetof(cloud_api, member) + sizeof(void *))

/* Laf's cloud.getToken: a JWT of claims (an object; not stolen) signed HS256 with the host's
 * --jwt-secret, with iat now and, for ttl_s > 0, exp now + ttl_s. The caller frees it (free).
 * NULL without a secret (none, or only --jwt-public-key: that key cannot sign), for claims
 * that are not an object, a negative ttl_s. Loop thread. */
static inline char *cloud_jwt_sign(json_t *claims, int ttl_s) {
  return CLOUD_HAS_(jwt_sign) ? cloud_api_->jwt_sign(claims, ttl_s) : NULL;
}
/* Laf's cloud.parseToken: the claims of token (new reference) when the host's key verifies it
 * (signature with the key's one algorithm, exp/nbf within --jwt-leeway), else NULL. As
 * ctx->user is checked at the door. Loop thread. */
static inline json_t *cloud_jwt_verify(const char *token) {
  return CLOUD_HAS_(jwt_verify) ? cloud_api_->jwt_verify(token) : NULL;
}
/* Laf's cloud.invoke: calls HTTP function `function` now and waits for it. It sees a ctx with
 * method (NULL: "POST") and body (not stolen; its JSON text as body_raw, NULL for none), the
 * caller's user and request id, url "/<function>", empty query and headers; cloud_defer is
 * refused there. *result (may be NULL) gets its response body as a new reference: parsed
 * JSON, else a string (a body neither JSON nor UTF-8: CLOUD_EINVAL); a 204 gives JSON null.
 * The response's status is not reported: put what the caller needs in the body.
 * 0, CLOUD_ENOFUNC (none loaded, or a name starting "__"), CLOUD_EFAILED (it returned non-zero
 * and set no response), CLOUD_ESTATE (off the loop; or calls nested more than 8 deep).
 * A crash of the callee is the caller's crash: in-process the host restarts; with
 * --isolation process the callee runs in the caller's worker, whose event fails (502).
 * Loop thread (inside a function's call). */
static inline int cloud_invoke(const char *function, const char *method, json_t *body,
                               json_t **result) {
  if (result)
    *result = NULL;
  return CLOUD_HAS_(invoke) ? cloud_api_->invoke(function, method, body, result) : CLOUD_ESTATE;
}
/* Calls fn(socket, user_id, arg) for each open WebSocket connection of this node (with
 * --redis other nodes' are not walked: cloud_rooms and cloud_user_sockets see the cluster).
 * A snapshot taken first: fn may close or send to sockets. fn returns non-zero to stop.
 * user_id is valid during the fn call only. How many fn calls were made; CLOUD_EINVAL for a
 * NULL fn; CLOUD_ESTATE off the loop. */
static inline int cloud_sockets_each(int (*fn)(cloud_socket, const char *user_id, void *),
                                     void *arg) {
  return CLOUD_HAS_(sockets_each) ? cloud_api_->sockets_each(fn, arg) : CLOUD_ESTATE;
}

/* Laf's cloud.database(): the app's own SQLite database (--app-db FILE; NULL without), the
 * calling thread's handle (sqlite3 * from <sqlite3.h>; link -lsqlite3): opened on the
 * thread's first call, in WAL mode with a 5 s busy timeout, closed when the thread ends; never
 * close it yourself. Use it on the thread that got it only. Any thread; with --isolation
 * process each worker has its own handles on the same file. At most 256 threads hold one.
 *
 * A query on the loop thread stalls every connection while it runs. A slow one goes off the
 * loop: the HTTP function defers its response and returns, and a thread of its own (started in
 * CLOUD_INIT, stopped in CLOUD_FINI) runs the query on its own cloud_db() handle and completes
 * the response:
 *     cloud_deferred *d = cloud_defer(ctx);   // on the loop, in the function
 *     ...hand d to the thread...               // e.g. a queue the thread waits on
 *     sqlite3 *db = cloud_db();                // on the thread
 *     ...sqlite3_prepare_v2 / sqlite3_step...
 *     cloud_deferred_json(d, 200, rows);       // any thread
 * tests/plugins/appdb.c does exactly this. */
static inline struct sqlite3 *cloud_db(void) {
  return CLOUD_HAS_(db) ? cloud_api_->db() : NULL;
}

/* Laf's ctx.response.write / Server-Sent Events: an HTTP function's response sent as it is
 * written (chunked transfer encoding), from the function or, after it returned, from any
 * thread of the function, through the same ctx pointer (the host keeps that context alive
 * while the response lasts; its other members are NULL once the function returned). Like a
 * deferred response, other connections never wait on it. Until cloud_stream_end the client
 * waits for more; the plugin's threads must end their streams before CLOUD_FINI returns.
 * After cloud_stream_end, or once a write returned CLOUD_ECLOSED, do not use ctx again. */

/* Starts the response: status (200..599; not 204/304) and content type (NULL:
 * application/octet-stream); headers set with cloud_response_header before go with it. 0,
 * CLOUD_ESTATE (not an HTTP call, started already, deferred, inside cloud_invoke),
 * CLOUD_EINVAL, CLOUD_EFULL (4096 streams open). Loop thread, inside the function's call. */
static inline int cloud_stream_start(FunctionContext *ctx, int status, const char *content_type) {
  return CLOUD_HAS_(stream_start) ? cloud_api_->stream_start(ctx, status, content_type)
                                  : CLOUD_ESTATE;
}
/* Queues len bytes (copied) as the next part. 0; CLOUD_ECLOSED (the client went, the stream
 * ended, or it never started); CLOUD_EFULL when more than --max-send-queue bytes would wait
 * for a slow reader (nothing queued: try later); CLOUD_ENOMEM. Any thread. */
static inline int cloud_stream_write(FunctionContext *ctx, const void *data, size_t len) {
  return CLOUD_HAS_(stream_write) ? cloud_api_->stream_write(ctx, data, len) : CLOUD_ESTATE;
}
/* Ends the response after what is queued. 0 or CLOUD_ECLOSED. Any thread. */
static inline int cloud_stream_end(FunctionContext *ctx) {
  return CLOUD_HAS_(stream_end) ? cloud_api_->stream_end(ctx) : CLOUD_ESTATE;
}
/* One Server-Sent Event: "id: N" (1, 2, ... or, when the client reconnects with
 * Last-Event-ID: n, n+1, ...), "event: <event>" unless NULL (no CR/LF), a "data:" line per
 * line of data (copied). The first call starts the stream (200, text/event-stream) unless
 * cloud_stream_start did; that first call must be made in the function's call. Results as
 * cloud_stream_write, and CLOUD_EINVAL. Any thread. */
static inline int cloud_sse_send(FunctionContext *ctx, const char *event, const char *data) {
  return CLOUD_HAS_(sse_send) ? cloud_api_->sse_send(ctx, event, data) : CLOUD_ESTATE;
}

/* ---- ABI 2: timers. A timer belongs to the function that started it, by name: when it
 * fires the host calls that function's current version (after a reload: the new one) with
 * method "Timer" and ctx->params.data = name. It ends when the function's file is removed.
 * A repeating timer whose handler overran its period skips the firings it missed. */

/* Starts (or replaces) timer name ([A-Za-z0-9_.:@-]{1,128}, copied): first firing after
 * first_ms, then every every_ms (0: once). 0, CLOUD_EINVAL, CLOUD_EFULL (4096 timers),
 * CLOUD_ESTATE outside a call of the function (e.g. from another thread). Loop thread. */
static inline int cloud_timer_start(const char *name, uint64_t first_ms, uint64_t every_ms) {
  return cloud_api_->timer_start(name, first_ms, every_ms);
}
/* Stops the calling function's timer name. 0, or CLOUD_EINVAL if it has none. Loop thread. */
static inline int cloud_timer_stop(const char *name) {
  return cloud_api_->timer_stop(name);
}

/* ---- ABI 2: work that waits. An HTTP function that must wait (a database, another service)
 * defers its response and returns at once, so the loop keeps serving; a thread of its own
 * completes the response later. The version stays loaded until every response it deferred
 * was completed or timed out (then 504, after --defer-timeout seconds, default 30). */

/* HTTP functions only, loop thread: the response to ctx's request comes later. A handle, or
 * NULL (not an HTTP call, out of memory). Valid until completed or timed out. Responses set
 * on ctx after this call are ignored. */
static inline cloud_deferred *cloud_defer(FunctionContext *ctx) {
  return cloud_api_->defer(ctx);
}
/* Completes d with status and json as the body; steals json (like jansson's *_new), even on
 * failure. Exactly once: a second call, or one after the timeout answered 504, returns
 * CLOUD_EINVAL and sends nothing. CLOUD_ENOMEM, CLOUD_EFULL. Any thread. */
static inline int cloud_deferred_json(cloud_deferred *d, int status, json_t *json) {
  char *s = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  json_decref(json);
  if (!s)
    return json ? CLOUD_ENOMEM : CLOUD_EINVAL;
  size_t n = 0;
  while (s[n])
    n++;
  int rc = cloud_api_->deferred_respond(d, status, "application/json", s, n);
  free(s);
  return rc;
}
/* Completes d with status and text (copied) as text/plain. As cloud_deferred_json. */
static inline int cloud_deferred_text(cloud_deferred *d, int status, const char *text) {
  size_t n = 0;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->deferred_respond(d, status, "text/plain; charset=utf-8", text, n);
}

/* Sends text (copied) as cloud_send_to_user does and completes d with the outcome, once it is
 * known: at once on a single host; with --redis once Redis replied and the other nodes it went
 * to acknowledged it (at most a second), so a full cluster-wide outbox or an unreachable Redis
 * reach the caller instead of a "sent" that was not. JSON bodies:
 *   200 {"delivered": n}   n = sockets reached on this node + other nodes that acknowledged
 *                          taking it; 0 = queued (delivered on the user's next connection)
 *   404 {"error": "no such user"}   507 {"error": "outbox full"}
 *   503 {"error": "cluster unavailable" | "store unavailable"}: not sent elsewhere, not queued
 * 0 when d will be completed, CLOUD_EINVAL (d already completed or timed out, NULL argument),
 * CLOUD_ENOMEM, CLOUD_EFULL (from another thread: the loop's queue is full), CLOUD_ESTATE on a
 * host older than this call. Any thread. */
static inline int cloud_deferred_send_to_user(cloud_deferred *d, const char *user_id,
                                              const char *text) {
  size_t n = 0;
  if (cloud_api_->size < offsetof(cloud_api, deferred_send_to_user) + sizeof(void *))
    return CLOUD_ESTATE;
  if (!text)
    return CLOUD_EINVAL;
  while (text[n])
    n++;
  return cloud_api_->deferred_send_to_user(d, user_id, text, n, 0);
}
/* Binary variant of cloud_deferred_send_to_user. */
static inline int cloud_deferred_send_binary_to_user(cloud_deferred *d, const char *user_id,
                                                     const void *data, size_t len) {
  if (cloud_api_->size < offsetof(cloud_api, deferred_send_to_user) + sizeof(void *))
    return CLOUD_ESTATE;
  return cloud_api_->deferred_send_to_user(d, user_id, data, len, 1);
}

/* The function's configuration: name's value from --env-file (KEY=VALUE lines, re-read on
 * SIGHUP), else from the host's environment, else NULL. The string belongs to the host and
 * stays valid until the current call returns (a SIGHUP may replace it after): copy what you
 * keep. Loop thread only (events, CLOUD_INIT, timers); NULL elsewhere. */
static inline const char *cloud_env(const char *name) {
  return cloud_api_->env(name);
}

/* Connection event only: refuses the upgrade. The client gets HTTP status (400..599) and
 * {"error": reason, "requestId": ..}; no user, no connection row, no close event; frames
 * queued in the event are dropped. reason (copied) at most 123 bytes, may be NULL.
 * 0, CLOUD_ESTATE outside the connection event, CLOUD_EINVAL for a bad status. */
static inline int cloud_reject(FunctionContext *ctx, int status, const char *reason) {
  return cloud_api_->reject(ctx, status, reason);
}

/* Connection event only: answers the upgrade with this subprotocol, which must be one of
 * ctx->protocols (the client's offer). Without it the upgrade succeeds with no subprotocol
 * (RFC 6455 lets the client decide whether to stay). 0, CLOUD_ESTATE, CLOUD_EINVAL. */
static inline int cloud_accept_protocol(FunctionContext *ctx, const char *name) {
  return cloud_api_->accept_protocol(ctx, name);
}

/* A static string naming a CLOUD_E* code. */
static inline const char *cloud_strerror(int code) {
  return cloud_api_->strerror(code);
}

#ifdef __cplusplus
}
#endif
#endif
