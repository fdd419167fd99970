/* chat: rooms, join/leave notices, a typing indicator and a per-room member count every
 * second. Serve it as __websocket__.so; plugins/chat_page.c is a page that talks to it. */
#include <cloud.h>
#include <stdlib.h>

/* Client -> host: {"join": room}, {"leave": room}, {"say": text, "to": room}, {"typing": room}.
 * Host -> client: the same objects with "user" added, and {"room", "count"} every second. */
static void to_room(const char *room, json_t *msg, cloud_socket except) {
  char *text = json_dumps(msg, JSON_COMPACT);
  if (text)
    cloud_room_send(room, text, except);
  free(text);
  json_decref(msg);
}

CLOUD_FUNCTION(ctx) {
  cloud_socket me = ctx->socket, none = {0};
  if (cloud_method_is(ctx, "Timer")) { /* one timer per room, named after it */
    json_t *members = cloud_room_members(ctx->params.data);
    size_t n = json_array_size(members);
    json_decref(members);
    if (!n)
      return cloud_timer_stop(ctx->params.data) < 0;
    to_room(ctx->params.data, json_pack("{s:s, s:i}", "room", ctx->params.data, "count", (int)n),
            none);
  } else if (cloud_method_is(ctx, "WebSocket:message")) {
    json_t *m = json_loads(ctx->params.data, 0, NULL);
    const char *room;
    if ((room = json_string_value(json_object_get(m, "join"))) && cloud_room_join(me, room) == 0) {
      to_room(room, json_pack("{s:s, s:s}", "join", room, "user", ctx->user_id), none);
      cloud_timer_start(room, 1000, 1000);
    } else if ((room = json_string_value(json_object_get(m, "leave"))) &&
               cloud_room_leave(me, room) == 0)
      to_room(room, json_pack("{s:s, s:s}", "leave", room, "user", ctx->user_id), none);
    else if ((room = json_string_value(json_object_get(m, "to"))) && json_object_get(m, "say"))
      to_room(room,
              json_pack("{s:s, s:O, s:s}", "to", room, "say", json_object_get(m, "say"), "user",
                        ctx->user_id),
              none);
    else if ((room = json_string_value(json_object_get(m, "typing"))))
      to_room(room, json_pack("{s:s, s:s}", "typing", room, "user", ctx->user_id), me);
    json_decref(m);
  } else if (cloud_method_is(ctx, "WebSocket:close")) { /* still in its rooms until now */
    json_t *rooms = cloud_socket_rooms(me), *r;
    size_t i;
    json_array_foreach(rooms, i, r) to_room(
        json_string_value(r), json_pack("{s:O, s:s}", "leave", r, "user", ctx->user_id), me);
    json_decref(rooms);
  }
  return 0;
}
