/* reply.h: the "ok <command> <result>" answers of the command-driven test functions
 * (rooms_ws, rooms_app), which tests/e2e/harness.py's cmd() reads. */
#ifndef TEST_PLUGINS_REPLY_H
#define TEST_PLUGINS_REPLY_H

#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void reply(cloud_socket s, const char *cmd, long rc) {
  char buf[160];
  snprintf(buf, sizeof buf, "ok %s %ld", cmd, rc);
  cloud_socket_send(s, buf);
}

/* Answers with j as JSON ("null" for NULL), which it takes. */
static inline void reply_json(cloud_socket s, const char *cmd, json_t *j) {
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  char *buf = malloc(strlen(cmd) + (text ? strlen(text) : 4) + 8);
  if (buf) {
    sprintf(buf, "ok %s %s", cmd, text ? text : "null");
    cloud_socket_send(s, buf);
  }
  free(buf);
  free(text);
  json_decref(j);
}

#endif
