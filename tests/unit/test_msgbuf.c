/* test_msgbuf.c: host/msgbuf.c, the assembly of WebSocket fragments into one message: size
 * limit (close 1009), binary flag, reuse, and the UTF-8 rule for text (close 1007). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msgbuf.h"

static void test_single_frame(void **state) {
  (void)state;
  struct msgbuf m;
  msgbuf_init(&m, 1024);
  assert_int_equal(msgbuf_add(&m, "hello", 5, 1, 0), MSGBUF_DONE);
  assert_int_equal(m.len, 5);
  assert_int_equal(m.is_binary, 0);
  assert_string_equal(m.data, "hello"); /* NUL-terminated */
  msgbuf_reset(&m);
  /* An empty message is a message: data is "" (not NULL). */
  assert_int_equal(msgbuf_add(&m, NULL, 0, 1, 0), MSGBUF_DONE);
  assert_int_equal(m.len, 0);
  assert_non_null(m.data);
  assert_string_equal(m.data, "");
  msgbuf_free(&m);
}

static void test_fragments(void **state) {
  (void)state;
  struct msgbuf m;
  msgbuf_init(&m, 1024);
  /* The first fragment's flag decides: continuation frames carry no type of their own. */
  assert_int_equal(msgbuf_add(&m, "\x00\x01", 2, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "", 0, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "\xff\x02", 2, 1, 0), MSGBUF_DONE);
  assert_int_equal(m.is_binary, 1);
  assert_int_equal(m.len, 4);
  assert_memory_equal(m.data, "\x00\x01\xff\x02\x00", 5);
  msgbuf_reset(&m);

  assert_int_equal(msgbuf_add(&m, "ab", 2, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "cd", 2, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "ef", 2, 1, 1), MSGBUF_DONE);
  assert_int_equal(m.is_binary, 0);
  assert_string_equal(m.data, "abcdef");
  msgbuf_free(&m);
}

static void test_many_fragments_grow(void **state) {
  (void)state;
  struct msgbuf m;
  char piece[1000], *want = malloc(100 * sizeof piece);
  assert_non_null(want);
  msgbuf_init(&m, 100 * sizeof piece);
  for (int i = 0; i < 100; i++) {
    memset(piece, 'a' + i % 26, sizeof piece);
    memcpy(want + i * sizeof piece, piece, sizeof piece);
    assert_int_equal(msgbuf_add(&m, piece, sizeof piece, i == 99, 0),
                     i == 99 ? MSGBUF_DONE : MSGBUF_MORE);
  }
  assert_int_equal(m.len, 100 * sizeof piece);
  assert_memory_equal(m.data, want, m.len);
  assert_int_equal(m.data[m.len], 0);
  free(want);
  msgbuf_free(&m);
}

static void test_limit(void **state) {
  (void)state;
  struct msgbuf m;
  char buf[101];
  memset(buf, 'x', sizeof buf);
  msgbuf_init(&m, 100);
  assert_int_equal(msgbuf_add(&m, buf, 100, 1, 0), MSGBUF_DONE);
  assert_int_equal(m.len, 100);
  assert_int_equal(m.data[100], 0);
  msgbuf_reset(&m);
  assert_int_equal(msgbuf_add(&m, buf, 101, 1, 0), MSGBUF_TOOBIG);
  msgbuf_free(&m);

  /* Reached through fragments: exactly max is fine, one byte more is not. */
  msgbuf_init(&m, 100);
  assert_int_equal(msgbuf_add(&m, buf, 60, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, buf, 40, 1, 1), MSGBUF_DONE);
  assert_int_equal(m.len, 100);
  msgbuf_reset(&m);
  assert_int_equal(msgbuf_add(&m, buf, 60, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, buf, 40, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, buf, 1, 1, 1), MSGBUF_TOOBIG);
  msgbuf_free(&m);

  /* A fragment length that would wrap size_t arithmetic is still too big. */
  msgbuf_init(&m, 100);
  assert_int_equal(msgbuf_add(&m, buf, 50, 0, 1), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, buf, SIZE_MAX - 10, 1, 1), MSGBUF_TOOBIG);
  msgbuf_free(&m);

  /* max 0 still takes an empty message. */
  msgbuf_init(&m, 0);
  assert_int_equal(msgbuf_add(&m, "", 0, 1, 0), MSGBUF_DONE);
  msgbuf_reset(&m);
  assert_int_equal(msgbuf_add(&m, "x", 1, 1, 0), MSGBUF_TOOBIG);
  msgbuf_free(&m);
}

static void test_reset_reuses(void **state) {
  (void)state;
  struct msgbuf m;
  msgbuf_init(&m, 1 << 20);
  assert_int_equal(msgbuf_add(&m, "first message", 13, 1, 1), MSGBUF_DONE);
  char *data = m.data;
  msgbuf_reset(&m);
  assert_int_equal(m.len, 0);
  /* The next message starts empty, takes its own type, and reuses the small buffer. */
  assert_int_equal(msgbuf_add(&m, "2nd", 3, 1, 0), MSGBUF_DONE);
  assert_ptr_equal(m.data, data);
  assert_int_equal(m.is_binary, 0);
  assert_int_equal(m.len, 3);
  assert_string_equal(m.data, "2nd");
  msgbuf_reset(&m);

  /* A big message's buffer is let go after it, so one burst does not pin memory. */
  char *big = malloc(100000);
  assert_non_null(big);
  memset(big, 'b', 100000);
  assert_int_equal(msgbuf_add(&m, big, 100000, 1, 0), MSGBUF_DONE);
  assert_true(m.cap > 100000);
  msgbuf_reset(&m);
  assert_true(m.cap <= 100000);
  assert_int_equal(msgbuf_add(&m, "x", 1, 1, 0), MSGBUF_DONE);
  assert_string_equal(m.data, "x");
  free(big);
  msgbuf_free(&m);
  assert_null(m.data);
}

struct utf8_case {
  const char *s;
  size_t len;
  int valid;
  const char *what;
};
#define U(str, v, what)                                                                            \
  { str, sizeof(str) - 1, v, what }

static const struct utf8_case utf8_cases[] = {
    U("", 1, "empty"),
    U("plain ascii", 1, "ascii"),
    U("a\0b", 1, "NUL is a character"),
    U("\x7f", 1, "DEL"),
    U("\xc2\x80", 1, "U+0080, smallest 2-byte"),
    U("\xdf\xbf", 1, "U+07FF, largest 2-byte"),
    U("\xc3\xa9t\xc3\xa9", 1, "2-byte in text"),
    U("\xe0\xa0\x80", 1, "U+0800, smallest 3-byte"),
    U("\xe2\x82\xac", 1, "euro sign"),
    U("\xed\x9f\xbf", 1, "U+D7FF, below surrogates"),
    U("\xee\x80\x80", 1, "U+E000, above surrogates"),
    U("\xef\xbf\xbf", 1, "U+FFFF"),
    U("\xef\xbb\xbf", 1, "BOM"),
    U("\xf0\x90\x80\x80", 1, "U+10000, smallest 4-byte"),
    U("\xf0\x9f\x98\x80", 1, "emoji"),
    U("\xf4\x8f\xbf\xbf", 1, "U+10FFFF, largest"),
    U("\xc0\x80", 0, "overlong NUL"),
    U("\xc1\xbf", 0, "overlong 2-byte"),
    U("\xe0\x80\x80", 0, "overlong 3-byte NUL"),
    U("\xe0\x9f\xbf", 0, "overlong 3-byte U+07FF"),
    U("\xf0\x80\x80\x80", 0, "overlong 4-byte NUL"),
    U("\xf0\x8f\xbf\xbf", 0, "overlong 4-byte U+FFFF"),
    U("\xed\xa0\x80", 0, "surrogate U+D800"),
    U("\xed\xbf\xbf", 0, "surrogate U+DFFF"),
    U("\xed\xa0\xbd\xed\xb8\x80", 0, "CESU-8 pair"),
    U("\xf4\x90\x80\x80", 0, "U+110000"),
    U("\xf5\x80\x80\x80", 0, "lead F5"),
    U("\xf8\x88\x80\x80\x80", 0, "5-byte form"),
    U("\xfe", 0, "FE"),
    U("\xff", 0, "FF"),
    U("\x80", 0, "lone continuation"),
    U("a\xbf", 0, "continuation after ascii"),
    U("\xc2", 0, "truncated 2-byte at end"),
    U("ab\xe2\x82", 0, "truncated 3-byte at end"),
    U("\xe2", 0, "lead of 3-byte alone"),
    U("\xf0\x9f\x98", 0, "truncated 4-byte at end"),
    U("\xf0\x9f", 0, "4-byte with 1 continuation"),
    U("\xc2\x41", 0, "2-byte with ascii continuation"),
    U("\xe2\x28\xa1", 0, "bad 2nd byte of 3"),
    U("\xe2\x82\x28", 0, "bad 3rd byte of 3"),
    U("\xf0\x9f\x98\x28", 0, "bad 4th byte of 4"),
    U("\xe2\x82\xac\xc0", 0, "valid then bad lead"),
};

static void test_utf8_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
    const struct utf8_case *c = &utf8_cases[i];
    if (utf8_valid((const unsigned char *)c->s, c->len) != c->valid)
      fail_msg("utf8_valid(%s) != %d", c->what, c->valid);
  }
  /* The length bounds the check: a valid prefix of an invalid buffer is valid. */
  assert_true(utf8_valid((const unsigned char *)"ok\xff", 2));
  assert_false(utf8_valid((const unsigned char *)"\xe2\x82\xac", 2));
}

/* utf8_valid skips ASCII 32, then 8 bytes at a time: every case must judge the same wherever
 * it falls against those strides, and a bad byte must be found inside a long ASCII run too. */
static void test_utf8_at_every_offset(void **state) {
  (void)state;
  char buf[160];
  for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
    const struct utf8_case *c = &utf8_cases[i];
    for (size_t pre = 0; pre <= 65 && pre + c->len + 65 <= sizeof buf; pre++) {
      memset(buf, 'a', sizeof buf);
      memcpy(buf + pre, c->s, c->len);
      if (utf8_valid((const unsigned char *)buf, pre + c->len) != c->valid)
        fail_msg("utf8_valid(%s after %zu ASCII bytes) != %d", c->what, pre, c->valid);
      if (utf8_valid((const unsigned char *)buf, pre + c->len + 65) != c->valid)
        fail_msg("utf8_valid(%s between ASCII runs, %zu before) != %d", c->what, pre, c->valid);
    }
  }
  char big[4096];
  memset(big, 'x', sizeof big);
  assert_true(utf8_valid((const unsigned char *)big, sizeof big));
  for (size_t at = 0; at < sizeof big; at += at < 200 ? 1 : 509) {
    big[at] = (char)0xff;
    assert_false(utf8_valid((const unsigned char *)big, sizeof big));
    big[at] = 'x';
  }
}

static void test_utf8_in_messages(void **state) {
  (void)state;
  struct msgbuf m;
  msgbuf_init(&m, 1024);
  /* A character split across fragments is fine: UTF-8 is checked on the whole message. */
  assert_int_equal(msgbuf_add(&m, "\xe2\x82", 2, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "\xac", 1, 1, 0), MSGBUF_DONE);
  assert_string_equal(m.data, "\xe2\x82\xac");
  msgbuf_reset(&m);
  /* Invalid UTF-8 split across fragments is caught when the message ends. */
  assert_int_equal(msgbuf_add(&m, "ok \xed", 4, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "\xa0\x80", 2, 1, 0), MSGBUF_BADUTF8);
  msgbuf_free(&m);
  msgbuf_init(&m, 1024);
  assert_int_equal(msgbuf_add(&m, "\xc0", 1, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "\x80", 1, 1, 0), MSGBUF_BADUTF8);
  msgbuf_free(&m);
  /* A text message that ends in the middle of a character. */
  msgbuf_init(&m, 1024);
  assert_int_equal(msgbuf_add(&m, "abc", 3, 0, 0), MSGBUF_MORE);
  assert_int_equal(msgbuf_add(&m, "\xf0\x9f\x98", 3, 1, 0), MSGBUF_BADUTF8);
  msgbuf_free(&m);
  /* Binary messages carry any bytes. */
  msgbuf_init(&m, 1024);
  assert_int_equal(msgbuf_add(&m, "\xc0\x80\xff", 3, 1, 1), MSGBUF_DONE);
  msgbuf_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_frame),        cmocka_unit_test(test_fragments),
      cmocka_unit_test(test_many_fragments_grow), cmocka_unit_test(test_limit),
      cmocka_unit_test(test_reset_reuses),        cmocka_unit_test(test_utf8_table),
      cmocka_unit_test(test_utf8_in_messages),    cmocka_unit_test(test_utf8_at_every_offset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
