/* room_bench: the function `wsbench -m room` measures, served both as __websocket__ (every
 * connection joins room "bench" and is greeted; "joinleave" times joining every connection
 * to another room and leaving it) and as room_bench (POST {"message"} sends it to the room). */
#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_SOCKETS 200000
static cloud_socket *socks;
static int nsocks;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int join_leave(cloud_socket asker) {
  int n = 0;
  double t0 = now_us();
  for (int i = 0; i < nsocks; i++)
    n += cloud_room_join(socks[i], "joinleave") == 0;
  double t1 = now_us();
  for (int i = 0; i < nsocks; i++)
    cloud_room_leave(socks[i], "joinleave");
  double t2 = now_us();
  char buf[96];
  snprintf(buf, sizeof buf, "jl %d %.0f %.0f", n, t1 - t0, t2 - t1);
  return cloud_socket_send(asker, buf) < 0;
}

CLOUD_FINI() {
  free(socks);
}

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    if (!socks)
      socks = calloc(MAX_SOCKETS, sizeof *socks);
    if (socks && nsocks < MAX_SOCKETS)
      socks[nsocks++] = ctx->socket;
    cloud_room_join(ctx->socket, "bench");
    char hello[256];
    snprintf(hello, sizeof hello, "{\"user_id\":\"%s\"}", ctx->user_id);
    return cloud_socket_send(ctx->socket, hello) < 0;
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return join_leave(ctx->socket);
  if (ctx->socket.id)
    return 0;
  const char *msg = json_string_value(json_object_get(ctx->body, "message"));
  if (!msg)
    return cloud_response_text(ctx, 400, "body must be {\"message\": string}") < 0;
  int n = cloud_room_send("bench", msg, (cloud_socket){0});
  return cloud_response_json(ctx, 200, json_pack("{s:i}", "delivered", n)) < 0;
}
