/* test_sendq.c: host/sendq.c, a connection's outgoing frames: FIFO order, byte accounting,
 * the bound that drops slow readers, the LWS_PRE room lws writes into, and freeing.
 * Run once under valgrind: valgrind --leak-check=full --error-exitcode=1 build/test_sendq */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <libwebsockets.h>

#include "cloud.h"
#include "sendq.h"

static void test_fifo(void **state) {
  (void)state;
  struct sendq q;
  sendq_init(&q, 1 << 20);
  assert_null(sendq_peek(&q));
  char msg[16];
  for (int i = 0; i < 10; i++) {
    int n = snprintf(msg, sizeof msg, "m%d", i);
    assert_int_equal(sendq_push(&q, msg, (size_t)n, i % 2), 0);
  }
  assert_int_equal(q.count, 10);
  for (int i = 0; i < 10; i++) {
    struct sendq_frame *f = sendq_peek(&q);
    assert_non_null(f);
    snprintf(msg, sizeof msg, "m%d", i);
    assert_int_equal(f->len, strlen(msg));
    assert_memory_equal(f->buf + SENDQ_PRE, msg, f->len);
    assert_int_equal(f->is_binary, i % 2);
    sendq_pop(&q);
  }
  assert_null(sendq_peek(&q));
  assert_null(q.tail);
  /* Popping an empty queue is harmless, and the queue works again after draining. */
  sendq_pop(&q);
  assert_int_equal(q.count, 0);
  assert_int_equal(sendq_push(&q, "again", 5, 0), 0);
  assert_ptr_equal(sendq_peek(&q), q.tail);
  assert_memory_equal(sendq_peek(&q)->buf + SENDQ_PRE, "again", 5);
  sendq_clear(&q);
}

static void test_bytes(void **state) {
  (void)state;
  struct sendq q;
  sendq_init(&q, 1000);
  assert_int_equal(sendq_push(&q, "aaa", 3, 0), 0);
  assert_int_equal(sendq_push(&q, "", 0, 0), 0); /* empty frames are frames */
  assert_int_equal(sendq_push(&q, "bbbbbbb", 7, 1), 0);
  assert_int_equal(q.bytes, 10);
  assert_int_equal(q.count, 3);
  sendq_pop(&q);
  assert_int_equal(q.bytes, 7);
  assert_int_equal(q.count, 2);
  assert_int_equal(sendq_peek(&q)->len, 0);
  sendq_pop(&q);
  assert_int_equal(q.bytes, 7);
  sendq_pop(&q);
  assert_int_equal(q.bytes, 0);
  assert_int_equal(q.count, 0);
}

static void test_bound(void **state) {
  (void)state;
  struct sendq q;
  char buf[200];
  memset(buf, 'x', sizeof buf);
  sendq_init(&q, 100);
  assert_int_equal(sendq_push(&q, buf, 60, 0), 0);
  assert_int_equal(sendq_push(&q, buf, 40, 0), 0); /* exactly max_bytes */
  assert_int_equal(sendq_push(&q, buf, 1, 0), CLOUD_EFULL);
  /* A refused push changes nothing. */
  assert_int_equal(q.bytes, 100);
  assert_int_equal(q.count, 2);
  assert_int_equal(q.tail->len, 40);
  sendq_pop(&q);
  assert_int_equal(sendq_push(&q, buf, 61, 0), CLOUD_EFULL);
  assert_int_equal(sendq_push(&q, buf, 60, 0), 0);
  sendq_clear(&q);

  /* An empty queue takes one frame bigger than the bound (the message limit bounds frames),
   * and nothing after it until it drained. */
  assert_int_equal(sendq_push(&q, buf, 150, 1), 0);
  assert_int_equal(q.bytes, 150);
  assert_int_equal(sendq_push(&q, buf, 1, 0), CLOUD_EFULL);
  assert_int_equal(sendq_push(&q, buf, 0, 0), CLOUD_EFULL);
  sendq_pop(&q);
  assert_int_equal(sendq_push(&q, buf, 1, 0), 0);
  sendq_clear(&q);

  /* max_bytes 0: one frame at a time. */
  sendq_init(&q, 0);
  assert_int_equal(sendq_push(&q, buf, 5, 0), 0);
  assert_int_equal(sendq_push(&q, buf, 5, 0), CLOUD_EFULL);
  sendq_clear(&q);
}

static void test_pre_room(void **state) {
  (void)state;
  /* lws writes its frame header into the LWS_PRE bytes in front of a payload. */
  assert_true(SENDQ_PRE >= LWS_PRE);
  struct sendq q;
  sendq_init(&q, 1 << 20);
  const char payload[] = "payload";
  assert_int_equal(sendq_push(&q, payload, 7, 0), 0);
  assert_int_equal(sendq_push(&q, "\x00\x01\x02", 3, 1), 0);
  for (struct sendq_frame *f = q.head; f; f = f->next) {
    unsigned char copy[16];
    memcpy(copy, f->buf + SENDQ_PRE, f->len);
    /* The room is writable (valgrind/ASan would see an overrun) and apart from the payload. */
    memset(f->buf, 0xA5, SENDQ_PRE);
    assert_memory_equal(f->buf + SENDQ_PRE, copy, f->len);
    /* A NUL after the payload: a text frame is a C string too. */
    assert_int_equal(f->buf[SENDQ_PRE + f->len], 0);
  }
  /* The frame holds a copy: the caller's buffer may change after the push. */
  char mutable[4] = "abc";
  assert_int_equal(sendq_push(&q, mutable, 3, 0), 0);
  mutable[0] = 'X';
  assert_string_equal((char *)q.tail->buf + SENDQ_PRE, "abc");
  sendq_clear(&q);
}

static void test_clear(void **state) {
  (void)state;
  struct sendq q;
  char buf[4096];
  memset(buf, 'c', sizeof buf);
  sendq_init(&q, 1 << 30);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(sendq_push(&q, buf, (size_t)i * 4, i & 1), 0);
  assert_int_equal(q.count, 1000);
  sendq_clear(&q);
  assert_null(q.head);
  assert_null(q.tail);
  assert_int_equal(q.count, 0);
  assert_int_equal(q.bytes, 0);
  assert_int_equal(q.max_bytes, 1 << 30); /* the bound survives */
  sendq_clear(&q);                        /* twice is harmless */
  assert_int_equal(sendq_push(&q, "x", 1, 0), 0);
  sendq_clear(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fifo),     cmocka_unit_test(test_bytes), cmocka_unit_test(test_bound),
      cmocka_unit_test(test_pre_room), cmocka_unit_test(test_clear),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
