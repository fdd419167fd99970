/* chat: a team chat served as login (POST {"user", "password"} of CHAT_USERS="alice:pw1,..":
 * {"token"}), rooms (GET, Bearer token: cloud_rooms()) and __websocket__ (?access_token=; the
 * host needs --jwt-secret). In: {"join"|"leave"|"typing": room}, {"say", "to": room}, {"say",
 * "dm": user}. Out: {"room", "user", "say"|"event": "joined"|"left"|"typing"}, {"dm", "user",
 * "say"}, {"room", "count"} every CHAT_TICK_MS (a minute). Its page: plugins/chat_page.c. */
#include <cloud.h>
#include <string.h>
#include <time.h>

/* Creates every user of CHAT_USERS (messages to them wait in their outbox); 1 if user:password. */
static int login_ok(const char *user, const char *password) {
  const char *users = cloud_env("CHAT_USERS");
  char *list = strdup(users ? users : ""), *save = NULL, *entry, *pass;
  int ok = 0;
  for (entry = strtok_r(list, ",", &save); entry; entry = strtok_r(NULL, ",", &save)) {
    if (!(pass = strchr(entry, ':')))
      continue;
    *pass++ = '\0';
    cloud_user_create(entry);
    ok |= user && password && !strcmp(entry, user) && !strcmp(pass, password);
  }
  free(list);
  return ok;
}

/* Sends msg (stolen) to the room, kept in its history; with live_only to the users in it now,
 * not kept: notices that mean nothing later. */
static void to_room(const char *room, json_t *msg, int live_only) {
  char *text = json_dumps(msg, JSON_COMPACT);
  json_t *members = live_only ? cloud_room_members(room) : NULL, *m;
  size_t i;
  if (!live_only) /* the calls refuse a NULL text (out of memory) */
    cloud_room_send(room, text, (cloud_socket){0});
  json_array_foreach(members, i, m)
      cloud_send_to_user(json_string_value(json_object_get(m, "user_id")), text);
  json_decref(members);
  free(text);
  json_decref(msg);
}

static void notice(const char *room, const char *user, const char *event, int live_only) {
  to_room(room, json_pack("{s:s, s:s, s:s}", "room", room, "user", user, "event", event),
          live_only);
}

/* At most one typing notice per user a second (so per room too): one shared stamp a user. */
static int typing_allowed(const char *user) {
  char key[160];
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  json_int_t ms = (json_int_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
  snprintf(key, sizeof key, "chat.typing/%s", user);
  json_t *last = cloud_shared_get(key), *stamp = json_integer(ms);
  int ok = !last || ms - json_integer_value(last) >= 1000;
  if (ok)
    cloud_shared_set(key, stamp);
  json_decref(last);
  json_decref(stamp);
  return ok;
}

static void on_message(FunctionContext *ctx) {
  json_t *m = json_loads(ctx->params.data, 0, NULL), *say = json_object_get(m, "say");
  const char *me = ctx->user_id, *room, *to;
  if ((room = json_string_value(json_object_get(m, "join"))) && cloud_user_join(me, room) >= 0) {
    cloud_room_keep(room, 50);
    cloud_room_history(ctx->socket, room, 50); /* "joined" comes after: Room:join runs next */
  } else if ((room = json_string_value(json_object_get(m, "leave"))))
    cloud_user_leave(me, room);
  else if ((room = json_string_value(json_object_get(m, "typing"))) && typing_allowed(me))
    notice(room, me, "typing", 1);
  else if ((room = json_string_value(json_object_get(m, "to"))) && json_is_string(say))
    to_room(room, json_pack("{s:s, s:s, s:O}", "room", room, "user", me, "say", say), 0);
  else if ((to = json_string_value(json_object_get(m, "dm"))) && json_is_string(say)) {
    json_t *dm = json_pack("{s:s, s:s, s:O}", "dm", to, "user", me, "say", say);
    char *text = json_dumps(dm, 0);
    if (text && cloud_send_to_user(to, text) == CLOUD_ENOUSER) /* queued while they are away */
      cloud_socket_send(ctx->socket, "{\"error\":\"no such user\"}");
    free(text);
    json_decref(dm);
  }
  json_decref(m);
}

CLOUD_FUNCTION(ctx) {
  const char *fn = ctx->function_name, *tick = cloud_env("CHAT_TICK_MS");
  static int ticking;
  if (!strcmp(fn, "login")) {
    json_t *user = json_object_get(ctx->body, "user"), *claims;
    if (!login_ok(json_string_value(user),
                  json_string_value(json_object_get(ctx->body, "password"))))
      return cloud_response_json(ctx, 401, json_pack("{s:s}", "error", "wrong user or password"));
    char *token = cloud_jwt_sign(claims = json_pack("{s:O}", "sub", user), 12 * 3600);
    json_decref(claims);
    int rc = token ? cloud_response_json(ctx, 200, json_pack("{s:s}", "token", token)) : -1;
    free(token);
    return rc;
  } else if (!strcmp(fn, "rooms"))
    return ctx->user ? cloud_response_json(ctx, 200, json_pack("{s:o}", "rooms", cloud_rooms()))
                     : cloud_response_json(ctx, 401, json_pack("{s:s}", "error", "log in first"));
  if (cloud_method_is(ctx, "WebSocket:connection") && !ctx->user)
    return cloud_reject(ctx, 401, "log in first: /?access_token=<token from /login>");
  if (!ticking && !cloud_method_is(ctx, "Timer")) /* one timer, started once per load */
    ticking = cloud_timer_start("tick", tick ? atoi(tick) : 60000, tick ? atoi(tick) : 60000) == 0;
  if (cloud_method_is(ctx, "WebSocket:message"))
    on_message(ctx);
  else if (cloud_method_is(ctx, "Room:join") || cloud_method_is(ctx, "Room:leave"))
    notice(ctx->params.data, ctx->user_id, cloud_method_is(ctx, "Room:join") ? "joined" : "left",
           0);
  else if (cloud_method_is(ctx, "Timer")) {
    json_t *rooms = cloud_rooms(), *r;
    size_t i;
    json_array_foreach(rooms, i, r) {
      const char *room = json_string_value(json_object_get(r, "room"));
      to_room(room, json_pack("{s:s, s:O}", "room", room, "count", json_object_get(r, "users")), 1);
    }
    json_decref(rooms);
  }
  return 0;
}
