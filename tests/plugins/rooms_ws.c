/* rooms_ws: a __websocket__ that drives the room, broadcast and thread-safety calls from text
 * commands, for tests/e2e/test_rooms.py. Answers "ok <command> <result>"; what others send to
 * a room arrives as it was sent. Commands: join R, leave R, say R TEXT (all but the sender),
 * sayall R TEXT, bcast TEXT, members R, rooms, threads N (8 threads each send N messages to
 * this socket, N to its room "t" and log one line, at once), forge, badutf8 R (text that is not
 * UTF-8 to this socket, its user, room R and everyone: the five return codes). */
#include "reply.h"

#include <cloud.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
  cloud_socket s;
  int n, i;
};

static void *sender(void *arg) {
  struct job *j = arg;
  char buf[64];
  for (int k = 0; k < j->n; k++) {
    snprintf(buf, sizeof buf, "thread %d message %d", j->i, k);
    cloud_socket_send(j->s, buf);
    cloud_room_send("t", buf, j->s);
  }
  cloud_log_warn(NULL, "thread %d sent %d", j->i, j->n);
  return NULL;
}

static int forge(FunctionContext *ctx) {
  cloud_socket real = ctx->socket;
  char junk[64];
  memset(junk, 0x41, sizeof junk);
  /* A plugin that clears the socket and points ctx->host anywhere must not make the host
   * write a response into that memory, or bind a user through it. */
  ctx->socket.id = 0;
  ctx->host = junk;
  int r1 = cloud_response_text(ctx, 200, "forged");
  ctx->host = NULL;
  int r2 = cloud_response_header(ctx, "x-a", "b");
  ctx->socket = real;
  ctx->host = junk;
  int r3 = cloud_bind_user(ctx, "someone");
  /* A copy of the context is not the call's either. */
  FunctionContext copy = *ctx;
  int r4 = cloud_bind_user(&copy, "someone");
  char buf[128];
  snprintf(buf, sizeof buf, "ok forge %d %d %d %d %d", r1, r2, r3, r4, junk[0] == 0x41);
  return cloud_socket_send(real, buf) < 0;
}

CLOUD_FUNCTION(ctx) {
  if (!cloud_method_is(ctx, "WebSocket:message"))
    return 0;
  const char *m = ctx->params.data;
  char room[160] = "";
  int off = 0;
  cloud_socket s = ctx->socket, none = {0};
  if (sscanf(m, "join %159s", room) == 1)
    reply(s, "join", cloud_room_join(s, room));
  else if (sscanf(m, "leave %159s", room) == 1)
    reply(s, "leave", cloud_room_leave(s, room));
  else if (!strncmp(m, "sayall ", 7) && sscanf(m, "sayall %159s %n", room, &off) == 1 && off)
    reply(s, "sayall", cloud_room_send(room, m + off, none));
  else if (!strncmp(m, "say ", 4) && sscanf(m, "say %159s %n", room, &off) == 1 && off)
    reply(s, "say", cloud_room_send(room, m + off, s));
  else if (!strncmp(m, "bcast ", 6))
    reply(s, "bcast", cloud_broadcast(m + 6, s));
  else if (sscanf(m, "members %159s", room) == 1)
    reply_json(s, "members", cloud_room_members(room));
  else if (!strcmp(m, "rooms"))
    reply_json(s, "rooms", cloud_socket_rooms(s));
  else if (!strncmp(m, "threads ", 8)) {
    pthread_t t[8];
    struct job jobs[8];
    for (int i = 0; i < 8; i++) {
      jobs[i] = (struct job){s, atoi(m + 8), i};
      pthread_create(&t[i], NULL, sender, &jobs[i]);
    }
    /* Joined here, on the loop: their sends are queued and go out after this returns. */
    for (int i = 0; i < 8; i++)
      pthread_join(t[i], NULL);
    reply(s, "threads", 8);
  } else if (!strcmp(m, "forge"))
    return forge(ctx);
  else if (sscanf(m, "badutf8 %159s", room) == 1) {
    static const char bad[] = "caf\xc3\x28 \xed\xa0\x80"; /* a bad sequence, a surrogate */
    char buf[128];
    snprintf(buf, sizeof buf, "ok badutf8 %d %d %d %d %d", cloud_socket_send(s, bad),
             cloud_send_to_user(ctx->user_id, bad), cloud_room_send(room, bad, none),
             cloud_broadcast(bad, none), cloud_socket_send(s, "valid caf\xc3\xa9") /* 0 */);
    cloud_socket_send(s, buf);
  } else
    reply(s, "unknown", -1);
  return 0;
}
