/* test_admin.c: admin_token_equal, the bearer token compare behind /_/status, /_/users and
 * /_/push: right answers, and time that does not tell where a guess first goes wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "admin.h"

static void test_equal_and_not(void **state) {
  (void)state;
  const char *tok = "e2e-admin-token-0123456789";
  assert_true(admin_token_equal(tok, tok));
  assert_true(admin_token_equal("e2e-admin-token-0123456789", tok));
  assert_false(admin_token_equal("", tok));
  assert_false(admin_token_equal("e", tok));
  assert_false(admin_token_equal("e2e-admin-token-012345678", tok));   /* prefix */
  assert_false(admin_token_equal("e2e-admin-token-01234567890", tok)); /* longer */
  assert_false(admin_token_equal("E2e-admin-token-0123456789", tok));  /* first byte */
  assert_false(admin_token_equal("e2e-admin-token-012345678X", tok));  /* last byte */
  /* a longer input whose extra bytes the walk over the expected length never reads */
  assert_false(admin_token_equal("e2e-admin-token-0123456789e2e", tok));
  assert_true(admin_token_equal("", ""));
  assert_false(admin_token_equal("x", ""));
  /* bytes above 0x7f do not wrap into a match */
  assert_false(admin_token_equal("\xe5", "e"));
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median time of admin_token_equal(guess, tok) over rounds. */
static double median_time(const char *guess, const char *tok, int rounds) {
  double t[41];
  volatile int sink = 0;
  for (int r = 0; r < 41; r++) {
    double t0 = now_s();
    for (int i = 0; i < rounds; i++)
      sink += admin_token_equal(guess, tok);
    t[r] = now_s() - t0;
  }
  (void)sink;
  qsort(t, 41, sizeof *t, cmp_double);
  return t[20];
}

/* A compare that stops at the first difference takes ~N times longer for a guess that is
 * wrong only in its last byte than for one wrong in its first; admin_token_equal walks the
 * whole expected token either way. The bound is loose (a loaded CI box is noisy); an
 * early-exit compare misses it by orders of magnitude at this length. */
static void test_time_does_not_depend_on_where_it_differs(void **state) {
  (void)state;
  enum { N = 64 * 1024 };
  char *tok = malloc(N + 1), *first = malloc(N + 1), *last = malloc(N + 1);
  assert_non_null(tok);
  assert_non_null(first);
  assert_non_null(last);
  memset(tok, 'k', N);
  tok[N] = 0;
  memcpy(first, tok, N + 1);
  memcpy(last, tok, N + 1);
  first[0] = 'x';
  last[N - 1] = 'x';
  double tf = median_time(first, tok, 20), tl = median_time(last, tok, 20);
  double ratio = tl > tf ? tl / tf : tf / tl;
  if (ratio > 4.0)
    fail_msg("first-byte miss %.6fs, last-byte miss %.6fs: ratio %.1f", tf, tl, ratio);
  free(tok);
  free(first);
  free(last);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_equal_and_not),
      cmocka_unit_test(test_time_does_not_depend_on_where_it_differs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
