/* test_sha256.c: host/sha256.c against the FIPS 180-4 / NIST test vectors.
 * Owns nothing else; the store's token hashing relies on these being right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sha256.h"

static void hex(const uint8_t d[SHA256_LEN], char out[2 * SHA256_LEN + 1]) {
  for (int i = 0; i < SHA256_LEN; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check(const char *msg, const char *want) {
  uint8_t d[SHA256_LEN];
  char h[2 * SHA256_LEN + 1];
  sha256(msg, strlen(msg), d);
  hex(d, h);
  assert_string_equal(h, want);
}

static void test_vectors(void **state) {
  (void)state;
  check("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  check("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  /* 56 bytes: the length no longer fits in the first block. */
  check("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  check("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrl"
        "mnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a_incremental(void **state) {
  (void)state;
  struct sha256 c;
  char chunk[997]; /* odd size: updates straddle block boundaries */
  uint8_t d[SHA256_LEN];
  char h[2 * SHA256_LEN + 1];
  size_t left = 1000000;
  memset(chunk, 'a', sizeof chunk);
  sha256_init(&c);
  while (left) {
    size_t n = left < sizeof chunk ? left : sizeof chunk;
    sha256_update(&c, chunk, n);
    left -= n;
  }
  sha256_final(&c, d);
  hex(d, h);
  assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors),
      cmocka_unit_test(test_million_a_incremental),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
