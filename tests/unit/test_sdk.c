/* test_sdk.c: the header-only wrappers of sdk/include/cloud.h as a plugin sees them: a call
 * newer than the host's table answers CLOUD_ESTATE instead of jumping past its end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "cloud.h"

const cloud_api *cloud_api_;

static struct {
  cloud_deferred *d;
  char user[32];
  char data[32];
  size_t len;
  int is_binary;
  int calls;
} seen;

static int fake_deferred_send(cloud_deferred *d, const char *user, const void *data, size_t len,
                              int is_binary) {
  seen.d = d;
  snprintf(seen.user, sizeof seen.user, "%s", user);
  memcpy(seen.data, data, len < sizeof seen.data ? len : sizeof seen.data);
  seen.len = len;
  seen.is_binary = is_binary;
  seen.calls++;
  return 0;
}

static void test_deferred_send_goes_through_a_table_that_has_it(void **state) {
  (void)state;
  cloud_api t = {.abi_version = 2, .size = sizeof t, .deferred_send_to_user = fake_deferred_send};
  cloud_api_ = &t;
  memset(&seen, 0, sizeof seen);
  cloud_deferred *d = (cloud_deferred *)(uintptr_t)7;
  assert_int_equal(cloud_deferred_send_to_user(d, "alice", "hello"), 0);
  assert_int_equal(seen.calls, 1);
  assert_ptr_equal(seen.d, d);
  assert_string_equal(seen.user, "alice");
  assert_int_equal(seen.len, 5);
  assert_memory_equal(seen.data, "hello", 5);
  assert_int_equal(seen.is_binary, 0);
  assert_int_equal(cloud_deferred_send_binary_to_user(d, "bob", "\0\1", 2), 0);
  assert_int_equal(seen.calls, 2);
  assert_int_equal(seen.is_binary, 1);
  assert_int_equal(seen.len, 2);
  assert_int_equal(cloud_deferred_send_to_user(d, "alice", NULL), CLOUD_EINVAL);
  assert_int_equal(seen.calls, 2);
}

static void test_deferred_send_on_an_older_host_is_refused(void **state) {
  (void)state;
  /* A host built before the call: its table ends at accept_protocol. */
  cloud_api t = {.abi_version = 2,
                 .size = (uint32_t)offsetof(cloud_api, deferred_send_to_user),
                 .deferred_send_to_user = fake_deferred_send};
  cloud_api_ = &t;
  memset(&seen, 0, sizeof seen);
  cloud_deferred *d = (cloud_deferred *)(uintptr_t)7;
  assert_int_equal(cloud_deferred_send_to_user(d, "alice", "hello"), CLOUD_ESTATE);
  assert_int_equal(cloud_deferred_send_binary_to_user(d, "alice", "x", 1), CLOUD_ESTATE);
  assert_int_equal(seen.calls, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deferred_send_goes_through_a_table_that_has_it),
      cmocka_unit_test(test_deferred_send_on_an_older_host_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
