/* test_multipart.c: host/proto/multipart.c, multipart/form-data as it streams in: the
 * boundary parameter, parts split across any feed, files and fields, and malformed bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "multipart.h"

/* What the callbacks saw: "<name>|<filename>|<type>=<data>;" per part. */
struct seen {
  char out[8192];
  size_t n;
  int stop_at_data;
};

static void put(struct seen *s, const char *p, size_t n) {
  if (s->n + n < sizeof s->out) {
    memcpy(s->out + s->n, p, n);
    s->n += n;
    s->out[s->n] = 0;
  }
}

static int on_begin(void *arg, const char *name, const char *filename, const char *ctype) {
  char b[600];
  snprintf(b, sizeof b, "%s|%s|%s=", name, filename ? filename : "-", ctype ? ctype : "-");
  put(arg, b, strlen(b));
  return 0;
}

static int on_data(void *arg, const char *p, size_t n) {
  struct seen *s = arg;
  put(s, p, n);
  return s->stop_at_data;
}

static int on_end(void *arg) {
  put(arg, ";", 1);
  return 0;
}

static const struct multipart_cb CB = {on_begin, on_data, on_end};

static const char BODY[] = "preamble to ignore\r\n"
                           "--XyZ\r\n"
                           "Content-Disposition: form-data; name=\"title\"\r\n"
                           "\r\n"
                           "hello world\r\n"
                           "--XyZ\r\n"
                           "content-disposition: form-data; name=\"up\"; filename=\"a b.txt\"\r\n"
                           "Content-Type: text/plain\r\n"
                           "\r\n"
                           "line1\r\nx--XyZ inside\r\n-- and more"
                           "\r\n--XyZ  \r\n"
                           "Content-Disposition: form-data; name=empty\r\n"
                           "\r\n"
                           "\r\n"
                           "--XyZ--\r\n"
                           "epilogue";
static const char WANT[] = "title|-|-=hello world;up|a b.txt|text/plain=line1\r\nx--XyZ inside"
                           "\r\n-- and more;empty|-|-=;";

static int parse_in_pieces(const char *body, size_t len, size_t piece, struct seen *s, char *err) {
  struct multipart *m = multipart_new("XyZ", &CB, s);
  assert_non_null(m);
  int rc = 0;
  for (size_t off = 0; off < len && rc == 0; off += piece)
    rc = multipart_feed(m, body + off, off + piece <= len ? piece : len - off, err, 256);
  if (rc == 0)
    rc = multipart_finish(m, err, 256);
  multipart_free(m);
  return rc;
}

static void test_boundary(void **state) {
  (void)state;
  char b[80];
  assert_int_equal(multipart_boundary("multipart/form-data; boundary=abc", b, sizeof b), 1);
  assert_string_equal(b, "abc");
  assert_int_equal(multipart_boundary("Multipart/Form-Data;boundary=\"a b\"; x=1", b, sizeof b), 1);
  assert_string_equal(b, "a b");
  assert_int_equal(multipart_boundary("application/json", b, sizeof b), 0);
  assert_int_equal(multipart_boundary(NULL, b, sizeof b), 0);
  assert_int_equal(multipart_boundary("multipart/form-data", b, sizeof b), -1);
  assert_int_equal(multipart_boundary("multipart/form-data; boundary=", b, sizeof b), -1);
  char longb[120];
  snprintf(longb, sizeof longb, "multipart/form-data; boundary=%071d", 0);
  assert_int_equal(multipart_boundary(longb, b, sizeof b), -1);
}

static void test_every_split(void **state) {
  (void)state;
  for (size_t piece = 1; piece <= sizeof BODY; piece++) {
    struct seen s = {0};
    char err[256] = "";
    if (parse_in_pieces(BODY, sizeof BODY - 1, piece, &s, err) != 0)
      fail_msg("piece %zu: %s (saw %s)", piece, err, s.out);
    assert_string_equal(s.out, WANT);
  }
}

static void test_big_part_in_bounded_memory(void **state) {
  (void)state;
  /* 1 MiB of data: reported as it comes, never all at once. */
  static char body[(1 << 20) + 512];
  int n = snprintf(body, sizeof body,
                   "--XyZ\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\n");
  memset(body + n, 'z', 1 << 20);
  n += 1 << 20;
  n += snprintf(body + n, sizeof body - (size_t)n, "\r\n--XyZ--");
  struct seen s = {0};
  char err[256];
  assert_int_equal(parse_in_pieces(body, (size_t)n, 65536, &s, err), 0);
  assert_true(strncmp(s.out, "f|x|-=zzzz", 10) == 0);
}

static void expect_bad(const char *body, const char *why) {
  struct seen s = {0};
  char err[256] = "";
  assert_int_equal(parse_in_pieces(body, strlen(body), 7, &s, err), -1);
  if (!strstr(err, why))
    fail_msg("error %s does not say %s", err, why);
}

static void test_malformed(void **state) {
  (void)state;
  expect_bad("", "ends before");
  expect_bad("--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue", "ends before");
  expect_bad("--XyZ\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--XyZ--",
             "not form-data");
  expect_bad("--XyZ\r\nContent-Type: text/plain\r\n\r\nv\r\n--XyZ--", "without Content-Disp");
  expect_bad("--XyZ\r\nno colon here\r\n\r\nv\r\n--XyZ--", "without a colon");
  expect_bad("--XyZjunk\r\n", "not followed by a line break");
  static char big[20000];
  int n = snprintf(big, sizeof big, "--XyZ\r\nX-Long: ");
  memset(big + n, 'a', 9000);
  memcpy(big + n + 9000, "\r\n\r\n", 5);
  expect_bad(big, "over 8192");
  /* Too many parts. */
  static char many[80 * (MULTIPART_PARTS_MAX + 2)];
  size_t m = 0;
  for (int i = 0; i <= MULTIPART_PARTS_MAX; i++)
    m += (size_t)snprintf(many + m, sizeof many - m,
                          "--XyZ\r\nContent-Disposition: form-data; name=p%d\r\n\r\nv\r\n", i);
  snprintf(many + m, sizeof many - m, "--XyZ--");
  expect_bad(many, "too many parts");
  /* A callback that says stop. */
  struct seen s = {.stop_at_data = 1};
  char err[256];
  assert_int_equal(parse_in_pieces(BODY, sizeof BODY - 1, 64, &s, err), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_boundary),
      cmocka_unit_test(test_every_split),
      cmocka_unit_test(test_big_part_in_bounded_memory),
      cmocka_unit_test(test_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
