/* test_rooms.c: host/rooms.c's membership index without sockets on the wire: names, join and
 * leave both ways, members grouped by user, a closed socket leaving every room, the bound on
 * rooms per socket, and rooms removed when their last member goes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "net_ops_table.h"
#include "rooms.h"

static struct host h;
static struct conn conns[3];

static int setup(void **state) {
  (void)state;
  memset(&h, 0, sizeof h);
  memset(conns, 0, sizeof conns);
  h.net = &net_ops_table;
  map_init(&h.conns);
  for (int i = 0; i < 3; i++) {
    conns[i].id = (uint64_t)i + 1;
    conns[i].user_id = i < 2 ? "alice" : "bob";
    map_set(&h.conns, &conns[i].id, sizeof conns[i].id, &conns[i]);
  }
  return rooms_open(&h);
}

static int teardown(void **state) {
  (void)state;
  rooms_close(&h);
  map_free(&h.conns);
  return 0;
}

static cloud_socket sock(int i) {
  return (cloud_socket){conns[i].id};
}

static void test_names(void **state) {
  (void)state;
  char long_name[130];
  memset(long_name, 'x', sizeof long_name);
  long_name[128] = 0;
  assert_true(room_name_valid(long_name));
  long_name[128] = 'x';
  long_name[129] = 0;
  assert_false(room_name_valid(long_name));
  assert_true(room_name_valid("A-z_0.9:@x"));
  assert_false(room_name_valid(""));
  assert_false(room_name_valid(NULL));
  assert_false(room_name_valid("a b"));
  assert_false(room_name_valid("a/b"));
  assert_int_equal(rooms_join(&h, sock(0), "a/b"), CLOUD_EINVAL);
  assert_int_equal(rooms_count(&h), 0);
}

static void test_join_leave_members(void **state) {
  (void)state;
  assert_int_equal(rooms_join(&h, sock(0), "r"), 0);
  assert_int_equal(rooms_join(&h, sock(0), "r"), 0); /* twice is once */
  assert_int_equal(rooms_join(&h, sock(1), "r"), 0);
  assert_int_equal(rooms_join(&h, sock(2), "r"), 0);
  assert_int_equal(rooms_join(&h, sock(2), "s"), 0);
  assert_int_equal(rooms_join(&h, (cloud_socket){99}, "r"), CLOUD_ECLOSED);
  assert_int_equal(rooms_count(&h), 2);
  json_t *m = rooms_members(&h, "r");
  assert_int_equal(json_array_size(m), 2); /* alice with 2 sockets, bob with 1 */
  size_t i;
  json_t *e;
  json_array_foreach(m, i, e) {
    const char *u = json_string_value(json_object_get(e, "user_id"));
    assert_int_equal(json_integer_value(json_object_get(e, "sockets")),
                     !strcmp(u, "alice") ? 2 : 1);
  }
  json_decref(m);
  json_t *of = rooms_of(&h, sock(2));
  assert_int_equal(json_array_size(of), 2);
  json_decref(of);
  assert_int_equal(rooms_leave(&h, sock(0), "r"), 0);
  assert_int_equal(rooms_leave(&h, sock(0), "r"), CLOUD_EINVAL);
  assert_int_equal(rooms_leave(&h, sock(0), "nope"), CLOUD_EINVAL);
  /* Closing socket 2 leaves both its rooms; s had no one else and goes. */
  rooms_leave_all(&h, conns[2].id);
  assert_int_equal(rooms_count(&h), 1);
  m = rooms_members(&h, "s");
  assert_int_equal(json_array_size(m), 0);
  json_decref(m);
  of = rooms_of(&h, sock(2));
  assert_int_equal(json_array_size(of), 0);
  json_decref(of);
  rooms_leave_all(&h, conns[1].id);
  assert_int_equal(rooms_count(&h), 0);
  assert_null(rooms_members(&h, "bad name"));
}

static void test_rooms_per_socket_bound(void **state) {
  (void)state;
  char name[32];
  for (int i = 0; i < ROOMS_PER_SOCKET_MAX; i++) {
    snprintf(name, sizeof name, "room%d", i);
    assert_int_equal(rooms_join(&h, sock(0), name), 0);
  }
  assert_int_equal(rooms_join(&h, sock(0), "one-more"), CLOUD_EFULL);
  assert_int_equal(rooms_count(&h), ROOMS_PER_SOCKET_MAX); /* the refused room is not left */
  rooms_leave_all(&h, conns[0].id);
  assert_int_equal(rooms_count(&h), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_names, setup, teardown),
      cmocka_unit_test_setup_teardown(test_join_leave_members, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rooms_per_socket_bound, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
