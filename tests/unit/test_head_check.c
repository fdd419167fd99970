/* test_head_check.c: host/head_guard.c's verdict on a request head, the rules that stand in
 * for what libwebsockets 4.1 parses wrong or drops without a response. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "head_guard.h"

static int check(const char *head, const char **why) {
  *why = NULL;
  return head_check(head, strlen(head), why);
}

static void test_good_heads(void **state) {
  (void)state;
  const char *why;
  assert_int_equal(check("GET / HTTP/1.1\r\n\r\n", &why), 0);
  assert_int_equal(check("GET /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"
                         "Accept-Encoding: gzip\r\nX-Custom_1: v\r\n\r\n",
                         &why),
                   0);
  /* Names that are known ones, in any case, and unknown ones lws files as custom. */
  assert_int_equal(check("GET / HTTP/1.1\nHOST: x\nContent-Length: 0\nX-Acc: 1\n\n", &why), 0);
}

static void test_prefix_names(void **state) {
  (void)state;
  const char *why;
  static const char *const bad[] = {"Acc", "Cont", "Ho", "content-len", "Sec-WebSocket", "Get"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char head[200];
    snprintf(head, sizeof head, "GET / HTTP/1.1\r\nHost: x\r\n%s: 1\r\n\r\n", bad[i]);
    assert_int_equal(check(head, &why), 400);
    assert_non_null(strstr(why, "prefix"));
  }
}

static void test_malformed_lines(void **state) {
  (void)state;
  const char *why;
  assert_int_equal(check("GET / HTTP/1.1\r\nContent-Length : 4\r\n\r\n", &why), 400);
  assert_non_null(strstr(why, "whitespace"));
  assert_int_equal(check("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", &why), 400);
  assert_int_equal(check("GET / HTTP/1.1\r\nno colon here\r\n\r\n", &why), 400);
  assert_int_equal(check("GET / HTTP/1.1\r\n: empty name\r\n\r\n", &why), 400);
}

static void test_field_count(void **state) {
  (void)state;
  const char *why;
  char head[8192];
  size_t n = (size_t)snprintf(head, sizeof head, "GET /?a=0");
  for (int i = 1; i < 81; i++)
    n += (size_t)snprintf(head + n, sizeof head - n, "&a=%d", i);
  snprintf(head + n, sizeof head - n, " HTTP/1.1\r\n\r\n");
  assert_int_equal(check(head, &why), 431); /* 81 parameters */
  n = (size_t)snprintf(head, sizeof head, "GET /?a=0");
  for (int i = 1; i < 80; i++)
    n += (size_t)snprintf(head + n, sizeof head - n, "&a=%d", i);
  snprintf(head + n, sizeof head - n, " HTTP/1.1\r\n\r\n");
  assert_int_equal(check(head, &why), 0); /* 80 */
  snprintf(head + n, sizeof head - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(check(head, &why), 431); /* 80 and a header line */
  n = (size_t)snprintf(head, sizeof head, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 80; i++)
    n += (size_t)snprintf(head + n, sizeof head - n, "Accept: %d\r\n", i);
  snprintf(head + n, sizeof head - n, "\r\n");
  assert_int_equal(check(head, &why), 0);
  snprintf(head + n, sizeof head - n, "Accept: x\r\n\r\n");
  assert_int_equal(check(head, &why), 431);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_heads),
      cmocka_unit_test(test_prefix_names),
      cmocka_unit_test(test_malformed_lines),
      cmocka_unit_test(test_field_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
