/* test_api.c: host/api.c, the cloud_api table every plugin gets: its ABI header, that no
 * entry is missing, cloud_strerror, cloud_shared's ownership rules, and the guards that
 * refuse calls in the wrong event or on a closed socket without touching anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "invocation.h"
#include "net_ops_table.h"
#include "plugins.h"

#include <pthread.h>

static void test_table_header(void **state) {
  (void)state;
  const cloud_api *t = api_table();
  assert_non_null(t);
  assert_int_equal(t->abi_version, CLOUD_ABI_VERSION);
  assert_int_equal(t->size, sizeof(cloud_api));
  assert_true(CLOUD_ABI_VERSION >= PLUGINS_ABI_MIN && CLOUD_ABI_VERSION <= PLUGINS_ABI_MAX);
  /* Plugins read these two fields before anything else: their place is fixed for good. */
  assert_int_equal(offsetof(cloud_api, abi_version), 0);
  assert_int_equal(offsetof(cloud_api, size), 4);
  assert_int_equal(offsetof(cloud_plugin_desc, abi_version), 0);
  assert_int_equal(offsetof(cloud_plugin_desc, size), 4);
  /* ABI 1's entries keep their places; ABI 2's come after the last of them. */
  assert_int_equal(offsetof(cloud_api, socket_send), 8);
  assert_int_equal(offsetof(cloud_api, request_header), 8 + 12 * sizeof(void *));
  assert_int_equal(offsetof(cloud_api, room_join), 8 + 13 * sizeof(void *));
  assert_int_equal(offsetof(cloud_api, deferred_respond), 8 + 23 * sizeof(void *));
}

static void test_table_complete(void **state) {
  (void)state;
  typedef void (*fnptr)(void);
  const cloud_api *t = api_table();
  /* Every member after the header is a function pointer; walking them all also covers
   * entries added later (the table only grows at the end). */
  size_t first = offsetof(cloud_api, socket_send), n = 0;
  assert_int_equal((sizeof(cloud_api) - first) % sizeof(fnptr), 0);
  for (size_t off = first; off < sizeof(cloud_api); off += sizeof(fnptr), n++) {
    fnptr f;
    memcpy(&f, (const char *)t + off, sizeof f);
    if (!f)
      fail_msg("cloud_api entry %zu (offset %zu) is NULL", n, off);
  }
  assert_true(n >= 13);
  assert_non_null(t->socket_send);
  assert_non_null(t->request_header);
}

static void test_strerror(void **state) {
  (void)state;
  const int codes[] = {CLOUD_OK,    CLOUD_EINVAL, CLOUD_ECLOSED, CLOUD_ENOMEM, CLOUD_ENOUSER,
                       CLOUD_EFULL, CLOUD_ESTATE, CLOUD_ETOOBIG, CLOUD_EIO};
  const size_t n = sizeof codes / sizeof codes[0];
  const char *unknown = api_strerror(-1000);
  assert_non_null(unknown);
  for (size_t i = 0; i < n; i++) {
    const char *s = api_strerror(codes[i]);
    assert_non_null(s);
    assert_true(s[0]);
    /* Through the table too: plugins reach it as cloud_strerror. */
    assert_string_equal(api_table()->strerror(codes[i]), s);
    if (codes[i] != CLOUD_OK && !strcmp(s, unknown))
      fail_msg("code %d is named like an unknown code: '%s'", codes[i], s);
    for (size_t k = 0; k < i; k++)
      if (!strcmp(s, api_strerror(codes[k])))
        fail_msg("codes %d and %d share the name '%s'", codes[i], codes[k], s);
  }
  assert_non_null(api_strerror(-9));
  assert_non_null(api_strerror(12345)); /* a count is not an error */
}

static struct host h;

static int bind_host(void **state) {
  (void)state;
  memset(&h, 0, sizeof h);
  h.shared = json_object();
  h.net = &net_ops_table;
  api_bind(&h);
  return h.shared ? 0 : -1;
}

static int unbind_host(void **state) {
  (void)state;
  json_decref(h.shared);
  map_free(&h.conns);
  map_free(&h.users);
  return 0;
}

static void test_shared(void **state) {
  (void)state;
  const cloud_api *t = api_table();
  json_t *v = json_pack("{s:i}", "n", 1);
  assert_int_equal(t->shared_set("k", v), 0);
  /* The host keeps its own copy: the caller still owns v and a change to it stays out. */
  assert_int_equal(v->refcount, 1);
  json_object_set_new(v, "n", json_integer(2));
  json_t *got = t->shared_get("k");
  assert_non_null(got);
  assert_int_equal(json_integer_value(json_object_get(got, "n")), 1);
  /* get hands out a copy too: changing it does not change the stored value. */
  json_object_set_new(got, "n", json_integer(3));
  json_decref(got);
  got = t->shared_get("k");
  assert_int_equal(json_integer_value(json_object_get(got, "n")), 1);
  json_decref(got);
  json_decref(v);

  assert_null(t->shared_get("absent"));
  assert_null(t->shared_get(NULL));
  assert_int_equal(t->shared_set(NULL, json_true()), CLOUD_EINVAL);
  assert_int_equal(t->shared_set("k", NULL), CLOUD_EINVAL);
  assert_int_equal(t->shared_delete("absent"), CLOUD_EINVAL);
  assert_int_equal(t->shared_delete(NULL), CLOUD_EINVAL);
  assert_int_equal(t->shared_delete("k"), 0);
  assert_null(t->shared_get("k"));
  assert_int_equal(t->shared_delete("k"), CLOUD_EINVAL);
}

static void test_wrong_event_guards(void **state) {
  (void)state;
  const cloud_api *t = api_table();
  /* An HTTP context (socket 0) with no request behind it, and a WebSocket one. */
  FunctionContext http = {.size = sizeof http, .function_name = "f", .method = "GET"};
  FunctionContext ws = {.size = sizeof ws,
                        .function_name = "__websocket__",
                        .method = "WebSocket:message",
                        .socket = {7}};
  assert_int_equal(t->bind_user(&http, "alice"), CLOUD_ESTATE);
  assert_int_equal(t->bind_user(NULL, "alice"), CLOUD_ESTATE);
  assert_int_equal(t->response_text(&ws, 200, "x"), CLOUD_ESTATE);
  assert_int_equal(t->response_header(&ws, "x-a", "b"), CLOUD_ESTATE);
  assert_int_equal(t->response_text(NULL, 200, "x"), CLOUD_ESTATE);
  /* response_json takes over the reference even when it refuses. */
  json_t *j = json_object();
  json_incref(j);
  assert_int_equal(t->response_json(&ws, 200, j), CLOUD_ESTATE);
  assert_int_equal(j->refcount, 1);
  json_decref(j);
  assert_null(t->request_header(&http, "host")); /* no headers object */
}

/* Without a host-private invocation record, a context is nobody's: whatever the plugin wrote
 * into ctx->socket and ctx->host, no call acts on it. */
static void test_forged_context(void **state) {
  (void)state;
  const cloud_api *t = api_table();
  char junk[256];
  memset(junk, 0x41, sizeof junk);
  FunctionContext ctx = {.size = sizeof ctx, .function_name = "f", .method = "GET", .host = junk};
  assert_int_equal(t->response_text(&ctx, 200, "x"), CLOUD_ESTATE);
  ctx.socket.id = 7;
  assert_int_equal(t->bind_user(&ctx, "alice"), CLOUD_ESTATE);
  assert_null(t->defer(&ctx));
  assert_null(t->request_header(&ctx, "host"));
  for (size_t i = 0; i < sizeof junk; i++)
    assert_int_equal(junk[i], 0x41);
}

static void *off_loop_calls(void *arg) {
  const cloud_api *t = arg;
  intptr_t bad = 0;
  /* Loop-only calls refuse from another thread; the deferred calls check their handle. */
  json_t *v = json_integer(1);
  bad |= t->shared_set("k", v) != CLOUD_ESTATE;
  json_decref(v);
  bad |= t->shared_get("k") != NULL;
  bad |= t->socket_close((cloud_socket){1}, 1000, NULL) != CLOUD_ESTATE;
  bad |= t->room_join((cloud_socket){1}, "r") != CLOUD_ESTATE;
  bad |= t->timer_start("t", 1, 1) != CLOUD_ESTATE;
  bad |= t->deferred_respond((cloud_deferred *)(uintptr_t)12345, 200, "text/plain", "x", 1) !=
         CLOUD_EINVAL;
  /* Sends check what they can on the caller's thread. */
  bad |= t->room_send("bad name", "x", 1, 0, (cloud_socket){0}) != CLOUD_EINVAL;
  bad |= t->send_to_user("a b", "x", 1, 0) != CLOUD_EINVAL;
  return (void *)bad;
}

static void test_off_loop_guards(void **state) {
  (void)state;
  invocation_set_loop_thread();
  pthread_t th;
  void *bad = (void *)1;
  assert_int_equal(pthread_create(&th, NULL, off_loop_calls, (void *)api_table()), 0);
  pthread_join(th, &bad);
  assert_null(bad);
}

static void test_closed_socket_guards(void **state) {
  (void)state;
  const cloud_api *t = api_table();
  /* No connection has these ids: calls answer CLOUD_ECLOSED and touch nothing. */
  cloud_socket gone = {42}, none = {0};
  assert_int_equal(t->socket_send(gone, "x", 1, 0), CLOUD_ECLOSED);
  assert_int_equal(t->socket_send(none, "x", 1, 1), CLOUD_ECLOSED);
  assert_int_equal(t->socket_close(gone, 1000, "bye"), CLOUD_ECLOSED);
  assert_int_equal(t->socket_close(none, 1000, NULL), CLOUD_ECLOSED);
  /* A user id that cannot exist is refused before the store is asked. */
  assert_int_equal(t->send_to_user(NULL, "x", 1, 0), CLOUD_EINVAL);
  assert_int_equal(t->send_to_user("", "x", 1, 0), CLOUD_EINVAL);
  assert_int_equal(t->send_to_user("a b", "x", 1, 0), CLOUD_EINVAL);
  assert_int_equal(t->send_to_user("../etc", "x", 1, 0), CLOUD_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_header),
      cmocka_unit_test(test_table_complete),
      cmocka_unit_test(test_strerror),
      cmocka_unit_test_setup_teardown(test_shared, bind_host, unbind_host),
      cmocka_unit_test_setup_teardown(test_wrong_event_guards, bind_host, unbind_host),
      cmocka_unit_test_setup_teardown(test_closed_socket_guards, bind_host, unbind_host),
      cmocka_unit_test_setup_teardown(test_forged_context, bind_host, unbind_host),
      cmocka_unit_test_setup_teardown(test_off_loop_guards, bind_host, unbind_host),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
