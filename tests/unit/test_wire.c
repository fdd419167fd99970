/* test_wire.c: host/wire.c, the frames between the serving process and its workers: fields
 * read back as written (NULL apart from "", binary bytes, integers), short or lying frames
 * are refused, and whole frames cross a socketpair in pieces larger than a datagram could. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "wire.h"

static void test_round_trip(void **state) {
  (void)state;
  struct wbuf b = {0};
  wbuf_begin(&b, W_EVENT);
  wbuf_u64(&b, 42);
  wbuf_str(&b, "hello");
  wbuf_str(&b, NULL);
  wbuf_str(&b, "");
  wbuf_bytes(&b, "a\0b", 3);
  wbuf_u64(&b, UINT64_MAX);
  assert_int_equal(wbuf_end(&b), 0);
  uint32_t n;
  memcpy(&n, b.p, 4);
  assert_int_equal(n, b.len - 4);
  assert_int_equal((unsigned char)b.p[4], W_EVENT);
  struct wread r;
  wread_init(&r, b.p + 5, b.len - 5);
  assert_int_equal(wread_u64(&r), 42);
  assert_string_equal(wread_str(&r), "hello");
  assert_null(wread_str(&r));
  const char *empty = wread_str(&r);
  assert_non_null(empty);
  assert_string_equal(empty, "");
  size_t len;
  const char *bin = wread_bytes(&r, &len);
  assert_int_equal(len, 3);
  assert_memory_equal(bin, "a\0b", 3);
  assert_int_equal(bin[3], 0); /* NUL-terminated in place */
  assert_true(wread_u64(&r) == UINT64_MAX);
  assert_false(r.bad);
  /* Past the end: nothing, and the reader says so. */
  assert_int_equal(wread_u64(&r), 0);
  assert_true(r.bad);
  wbuf_free(&b);
}

static void test_short_and_lying_frames(void **state) {
  (void)state;
  struct wbuf b = {0};
  wbuf_begin(&b, W_CALL);
  wbuf_str(&b, "abcdef");
  assert_int_equal(wbuf_end(&b), 0);
  struct wread r;
  /* Cut anywhere inside the string: refused, never read past the end. */
  for (size_t cut = 0; cut < b.len - 5; cut++) {
    wread_init(&r, b.p + 5, cut);
    assert_null(wread_str(&r));
    assert_true(r.bad);
  }
  /* A length that claims more than is there. */
  uint32_t big = 1000;
  memcpy(b.p + 5, &big, 4);
  wread_init(&r, b.p + 5, b.len - 5);
  assert_null(wread_str(&r));
  assert_true(r.bad);
  wbuf_free(&b);
}

static void test_large_frame_over_a_socketpair(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  size_t size = 3u << 20; /* larger than any AF_UNIX datagram on a default system */
  char *data = malloc(size);
  assert_non_null(data);
  for (size_t i = 0; i < size; i++)
    data[i] = (char)(i * 7);
  struct wbuf b = {0};
  wbuf_begin(&b, W_DONE);
  wbuf_bytes(&b, data, size);
  assert_int_equal(wbuf_end(&b), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(sv[1]);
    _exit(wire_write_all(sv[0], b.p, b.len) == 0 ? 0 : 1);
  }
  close(sv[0]);
  char *buf = NULL;
  size_t cap = 0, len = 0;
  assert_int_equal(wire_read_frame(sv[1], &buf, &cap, &len), 0);
  assert_int_equal(len, b.len - 4);
  assert_int_equal((unsigned char)buf[0], W_DONE);
  struct wread r;
  wread_init(&r, buf + 1, len - 1);
  size_t got;
  const char *p = wread_bytes(&r, &got);
  assert_int_equal(got, size);
  assert_memory_equal(p, data, size);
  /* The writer is gone: the next read says so instead of blocking. */
  assert_int_equal(wire_read_frame(sv[1], &buf, &cap, &len), -EPIPE);
  close(sv[1]);
  free(buf);
  free(data);
  wbuf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_short_and_lying_frames),
      cmocka_unit_test(test_large_frame_over_a_socketpair),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
