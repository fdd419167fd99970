/* rooms_app: a __websocket__ for tests/e2e/test_rooms_app.py, driving the rooms applications
 * build on: rooms users hold, presence, the rooms' view, history, users made before they
 * connect. ?as=ID binds the connection to user ID. Answers "ok <command> <result>". Commands:
 * ujoin U R, uleave U R, join R, rooms, usockets U, keep R N, say R TEXT (to all of R),
 * history R N, create U, members R, myrooms. Presence events and what the close event saw go to
 * user "observer" as "presence join|leave U R socket" and "close U agree|DISAGREE". */
#include "reply.h"

#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when members of room lists user. */
static int member(const char *room, const char *user) {
  json_t *m = cloud_room_members(room);
  size_t i;
  json_t *v;
  int in = 0;
  json_array_foreach(m, i, v) in |=
      !strcmp(json_string_value(json_object_get(v, "user_id")), user) &&
      json_integer_value(json_object_get(v, "sockets")) > 0;
  json_decref(m);
  return in;
}

static void command(FunctionContext *ctx, const char *text) {
  cloud_socket s = ctx->socket;
  char a[200] = "", b[200] = "";
  int n = 0;
  if (sscanf(text, "ujoin %199s %199s", a, b) == 2)
    reply(s, "ujoin", cloud_user_join(a, b));
  else if (sscanf(text, "uleave %199s %199s", a, b) == 2)
    reply(s, "uleave", cloud_user_leave(a, b));
  else if (sscanf(text, "join %199s", a) == 1)
    reply(s, "join", cloud_room_join(s, a));
  else if (!strcmp(text, "rooms"))
    reply_json(s, "rooms", cloud_rooms());
  else if (sscanf(text, "usockets %199s", a) == 1)
    reply_json(s, "usockets", cloud_user_sockets(a));
  else if (sscanf(text, "keep %199s %d", a, &n) == 2)
    reply(s, "keep", cloud_room_keep(a, n));
  else if (sscanf(text, "say %199s %n", a, &n) == 1 && n > 0)
    reply(s, "say", cloud_room_send(a, text + n, (cloud_socket){0}));
  else if (sscanf(text, "history %199s %d", a, &n) == 2)
    reply(s, "history", cloud_room_history(s, a, n));
  else if (sscanf(text, "create %199s", a) == 1)
    reply(s, "create", cloud_user_create(a));
  else if (sscanf(text, "members %199s", a) == 1)
    reply_json(s, "members", cloud_room_members(a));
  else if (!strcmp(text, "myrooms"))
    reply_json(s, "myrooms", cloud_socket_rooms(s));
  else
    reply(s, "unknown", -1);
}

CLOUD_FUNCTION(ctx) {
  char buf[400];
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    const char *as = json_string_value(json_object_get(ctx->query, "as"));
    if (as && cloud_bind_user(ctx, as) < 0)
      return cloud_reject(ctx, 400, "bad as"), 0;
    snprintf(buf, sizeof buf, "hello %s", ctx->user_id);
    cloud_socket_send(ctx->socket, buf);
  } else if (cloud_method_is(ctx, "WebSocket:message") && !ctx->params.is_binary) {
    command(ctx, ctx->params.data);
  } else if (cloud_method_is(ctx, "Room:join") || cloud_method_is(ctx, "Room:leave")) {
    /* Inside the event the two views agree about ctx->socket too. */
    json_t *mine = cloud_socket_rooms(ctx->socket);
    size_t i;
    json_t *v;
    int in_rooms = 0;
    json_array_foreach(mine, i, v) in_rooms |= !strcmp(json_string_value(v), ctx->params.data);
    json_decref(mine);
    snprintf(buf, sizeof buf, "presence %s %s %s %llu",
             cloud_method_is(ctx, "Room:join") ? "join" : "leave", ctx->user_id, ctx->params.data,
             (unsigned long long)ctx->socket.id);
    cloud_send_to_user("observer", buf);
    (void)in_rooms;
  } else if (cloud_method_is(ctx, "WebSocket:close")) {
    json_t *rooms = cloud_socket_rooms(ctx->socket);
    size_t i;
    json_t *v;
    int agree = 1;
    json_array_foreach(rooms, i, v) agree &= member(json_string_value(v), ctx->user_id);
    json_decref(rooms);
    if (strcmp(ctx->user_id, "observer")) {
      snprintf(buf, sizeof buf, "close %s %s", ctx->user_id, agree ? "agree" : "DISAGREE");
      cloud_send_to_user("observer", buf);
    }
  }
  return 0;
}
