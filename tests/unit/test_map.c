/* test_map.c: host/map.c, the hash map behind host->conns (8-byte binary ids) and
 * host->users: set/get/replace/del, growth to many keys, keys with NULs, map_each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "map.h"

/* Values are small integers cast to pointers (the map never dereferences them). */
#define V(n) ((void *)(uintptr_t)(n))

static void test_basic(void **state) {
  (void)state;
  struct map m;
  map_init(&m);
  /* An empty map answers without buckets. */
  assert_null(map_get(&m, "a", 1));
  assert_null(map_del(&m, "a", 1));
  assert_int_equal(map_set(&m, "alice", 5, V(1)), 0);
  assert_int_equal(map_set(&m, "bob", 3, V(2)), 0);
  assert_int_equal(m.count, 2);
  assert_ptr_equal(map_get(&m, "alice", 5), V(1));
  assert_ptr_equal(map_get(&m, "bob", 3), V(2));
  assert_null(map_get(&m, "carol", 5));
  /* Prefixes and the key's length matter. */
  assert_null(map_get(&m, "alic", 4));
  assert_null(map_get(&m, "alice!", 6));
  assert_ptr_equal(map_get(&m, "alice!", 5), V(1));

  /* Replace keeps one entry. */
  assert_int_equal(map_set(&m, "alice", 5, V(3)), 0);
  assert_int_equal(m.count, 2);
  assert_ptr_equal(map_get(&m, "alice", 5), V(3));

  /* The map keeps its own copy of the key. */
  char key[8] = "dave";
  assert_int_equal(map_set(&m, key, 4, V(4)), 0);
  memcpy(key, "xxxx", 4);
  assert_ptr_equal(map_get(&m, "dave", 4), V(4));
  assert_null(map_get(&m, "xxxx", 4));

  assert_ptr_equal(map_del(&m, "alice", 5), V(3));
  assert_int_equal(m.count, 2);
  assert_null(map_get(&m, "alice", 5));
  assert_null(map_del(&m, "alice", 5));
  assert_ptr_equal(map_get(&m, "bob", 3), V(2));
  /* The empty key is a key. */
  assert_int_equal(map_set(&m, "", 0, V(5)), 0);
  assert_ptr_equal(map_get(&m, "", 0), V(5));
  assert_ptr_equal(map_del(&m, "", 0), V(5));
  map_free(&m);
  assert_int_equal(m.count, 0);
  assert_null(map_get(&m, "bob", 3));
  /* Usable again after map_free. */
  assert_int_equal(map_set(&m, "bob", 3, V(6)), 0);
  assert_ptr_equal(map_get(&m, "bob", 3), V(6));
  map_free(&m);
}

static void test_many_keys(void **state) {
  (void)state;
  enum { N = 100000 };
  struct map m;
  char key[32];
  map_init(&m);
  for (int i = 0; i < N; i++) {
    int n = snprintf(key, sizeof key, "user-%d", i);
    assert_int_equal(map_set(&m, key, (size_t)n, V(i + 1)), 0);
  }
  assert_int_equal(m.count, N);
  /* Grown by doubling: a power of two, load factor at most one. */
  assert_true(m.nbuckets >= N);
  assert_int_equal(m.nbuckets & (m.nbuckets - 1), 0);
  for (int i = 0; i < N; i++) {
    int n = snprintf(key, sizeof key, "user-%d", i);
    if (map_get(&m, key, (size_t)n) != V(i + 1))
      fail_msg("%s lost after growth", key);
  }
  /* Delete the even ones; the odd ones stay, the even ones are gone. */
  for (int i = 0; i < N; i += 2) {
    int n = snprintf(key, sizeof key, "user-%d", i);
    assert_ptr_equal(map_del(&m, key, (size_t)n), V(i + 1));
  }
  assert_int_equal(m.count, N / 2);
  for (int i = 0; i < N; i++) {
    int n = snprintf(key, sizeof key, "user-%d", i);
    void *want = i % 2 ? V(i + 1) : NULL;
    if (map_get(&m, key, (size_t)n) != want)
      fail_msg("%s wrong after deletes", key);
  }
  map_free(&m);
}

static void test_binary_keys(void **state) {
  (void)state;
  struct map m;
  map_init(&m);
  /* Connection ids are 8 raw bytes: mostly NULs. */
  for (uint64_t id = 0; id < 1000; id++)
    assert_int_equal(map_set(&m, &id, sizeof id, V(id + 1)), 0);
  uint64_t big = UINT64_C(1) << 56; /* NULs first on little endian */
  assert_int_equal(map_set(&m, &big, sizeof big, V(7777)), 0);
  assert_int_equal(m.count, 1001);
  for (uint64_t id = 0; id < 1000; id++)
    assert_ptr_equal(map_get(&m, &id, sizeof id), V(id + 1));
  assert_ptr_equal(map_get(&m, &big, sizeof big), V(7777));
  uint64_t absent = 1000;
  assert_null(map_get(&m, &absent, sizeof absent));

  /* Bytes after a NUL count, and so does a trailing NUL. */
  assert_int_equal(map_set(&m, "a\0b", 3, V(1)), 0);
  assert_int_equal(map_set(&m, "a\0c", 3, V(2)), 0);
  assert_int_equal(map_set(&m, "a", 1, V(3)), 0);
  assert_int_equal(map_set(&m, "a\0", 2, V(4)), 0);
  assert_ptr_equal(map_get(&m, "a\0b", 3), V(1));
  assert_ptr_equal(map_get(&m, "a\0c", 3), V(2));
  assert_ptr_equal(map_get(&m, "a", 1), V(3));
  assert_ptr_equal(map_get(&m, "a\0", 2), V(4));
  assert_ptr_equal(map_del(&m, "a\0b", 3), V(1));
  assert_ptr_equal(map_get(&m, "a\0c", 3), V(2));
  map_free(&m);
}

struct visit {
  int calls;
  uintptr_t sum;
  unsigned char seen[1001];
};

static void visit_fn(void *arg, const char *key, void *value) {
  struct visit *v = arg;
  uintptr_t n = (uintptr_t)value;
  int k = atoi(key); /* the key is NUL-terminated for callers like this */
  assert_int_equal(k, (int)n);
  assert_true(n <= 1000);
  v->seen[n]++;
  v->calls++;
  v->sum += n;
}

static void test_each(void **state) {
  (void)state;
  struct map m;
  struct visit v;
  char key[16];
  map_init(&m);
  memset(&v, 0, sizeof v);
  map_each(&m, visit_fn, &v); /* nothing to visit, no buckets yet */
  assert_int_equal(v.calls, 0);
  for (int i = 1; i <= 1000; i++) {
    int n = snprintf(key, sizeof key, "%d", i);
    assert_int_equal(map_set(&m, key, (size_t)n, V(i)), 0);
  }
  assert_int_equal(map_set(&m, "500", 3, V(500)), 0); /* a replace is not a second entry */
  assert_ptr_equal(map_del(&m, "1000", 4), V(1000));
  map_each(&m, visit_fn, &v);
  assert_int_equal(v.calls, 999);
  assert_int_equal(v.sum, 999 * 1000 / 2);
  for (int i = 1; i < 1000; i++)
    if (v.seen[i] != 1)
      fail_msg("entry %d visited %d times", i, v.seen[i]);
  assert_int_equal(v.seen[1000], 0);
  map_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_many_keys),
      cmocka_unit_test(test_binary_keys),
      cmocka_unit_test(test_each),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
