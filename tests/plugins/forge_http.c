/* forge_http: an HTTP function that forges ctx->socket and ctx->host before calling the host,
 * for tests/e2e/test_rooms.py: the host must find its request through its own record, so
 * cloud_bind_user refuses (no connection) and the response still reaches the client. */
#include <cloud.h>
#include <stdio.h>
#include <string.h>

CLOUD_FUNCTION(ctx) {
  char junk[64];
  memset(junk, 0x41, sizeof junk);
  ctx->socket.id = 1; /* the first connection's id, if one is open */
  ctx->host = junk;
  int bind = cloud_bind_user(ctx, "someone");
  FunctionContext copy = *ctx;
  int copy_rc = cloud_response_text(&copy, 500, "the copy answered");
  char body[128];
  snprintf(body, sizeof body, "bind %d copy %d junk %d", bind, copy_rc, junk[0] == 0x41);
  return cloud_response_text(ctx, 200, body) < 0;
}
