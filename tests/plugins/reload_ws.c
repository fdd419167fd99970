/* reload_ws: a __websocket__ for the hot reload tests, built once per version with
 *   cc -shared -fPIC -I sdk/include -DVERSION=2 reload_ws.c -o __websocket__.so -ljansson
 * (CMake builds it as version 1). Every answer names the version that gave it:
 *   connection:      {"event":"connected","version":V,"user_id":...}
 *   message "count": cloud_shared "counter" += 1, answers "vV:count:N"
 *   other message:   "vV:<message>"
 * Its CLOUD_INIT and CLOUD_FINI append "init V" / "fini V" to cloud_shared "lifecycle" (read it
 * with the `shared` test function). Built with -DINIT_FAIL its init appends "init V failed"
 * and returns 7, so the host must refuse that version. */
#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef VERSION
#define VERSION 1
#endif

static void lifecycle(const char *what) {
  char line[64];
  snprintf(line, sizeof line, "%s %d%s", what, VERSION,
#ifdef INIT_FAIL
           what[0] == 'i' ? " failed" : ""
#else
           ""
#endif
  );
  json_t *list = cloud_shared_get("lifecycle");
  if (!json_is_array(list)) {
    json_decref(list);
    list = json_array();
  }
  json_array_append_new(list, json_string(line));
  cloud_shared_set("lifecycle", list);
  json_decref(list);
}

CLOUD_INIT() {
  lifecycle("init");
#ifdef INIT_FAIL
  return 7;
#else
  return 0;
#endif
}

CLOUD_FINI() {
  lifecycle("fini");
}

CLOUD_FUNCTION(ctx) {
  char out[256];
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    json_t *hello = json_pack("{ss si ss}", "event", "connected", "version", VERSION, "user_id",
                              ctx->user_id);
    char *text = json_dumps(hello, JSON_COMPACT);
    int rc = text ? cloud_socket_send(ctx->socket, text) : CLOUD_ENOMEM;
    free(text);
    json_decref(hello);
    return rc < 0;
  }
  if (!cloud_method_is(ctx, "WebSocket:message") || ctx->params.is_binary)
    return 0;
  if (ctx->params.len == 5 && !memcmp(ctx->params.data, "count", 5)) {
    json_t *old = cloud_shared_get("counter");
    json_int_t n = json_integer_value(old) + 1;
    json_decref(old);
    json_t *now = json_integer(n);
    cloud_shared_set("counter", now);
    json_decref(now);
    snprintf(out, sizeof out, "v%d:count:%lld", VERSION, (long long)n);
  } else {
    snprintf(out, sizeof out, "v%d:%.200s", VERSION, ctx->params.data);
  }
  return cloud_socket_send(ctx->socket, out) < 0;
}
