/* test_auth_jwt.c: JWT verification: good tokens of each algorithm, and every way a token must
 * be refused (bad signature, alg none, algorithm confusion, expired, nbf, malformed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth_jwt.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "0123456789abcdef0123456789abcdef-secret";
static const int64_t NOW = 1900000000;

/* A key pair as PEM strings (private for signing, public for the verifier). */
struct pair {
  char *priv, *pub;
};

static char *bio_str(BIO *b) {
  char *p;
  long n = BIO_get_mem_data(b, &p);
  char *s = malloc((size_t)n + 1);
  memcpy(s, p, (size_t)n);
  s[n] = 0;
  BIO_free(b);
  return s;
}

static struct pair make_pair(EVP_PKEY *k) {
  assert_non_null(k);
  BIO *a = BIO_new(BIO_s_mem()), *b = BIO_new(BIO_s_mem());
  assert_int_equal(PEM_write_bio_PrivateKey(a, k, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
  EVP_PKEY_free(k);
  return (struct pair){bio_str(a), bio_str(b)};
}

static void free_pair(struct pair *p) {
  free(p->priv);
  free(p->pub);
}

static char *sign(jwt_alg_t alg, const char *key, const char *claims_json) {
  jwt_t *j = NULL;
  assert_int_equal(jwt_new(&j), 0);
  assert_int_equal(jwt_add_grants_json(j, claims_json), 0);
  assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
  char *t = jwt_encode_str(j);
  jwt_free(j);
  assert_non_null(t);
  return t;
}

static struct auth_jwt *open_ok(const char *secret, const char *pem) {
  struct auth_jwt *a = NULL;
  char err[256] = "";
  assert_int_equal(auth_jwt_open(&a, secret, pem, 30, 1, err, sizeof err), 0);
  return a;
}

static void expect_refused(struct auth_jwt *a, const char *token, const char *reason) {
  json_t *c = (json_t *)1;
  const char *why = NULL;
  assert_int_equal(auth_jwt_verify(a, token, NOW, &c, &why), -EACCES);
  assert_null(c);
  assert_non_null(why);
  if (reason)
    assert_string_equal(why, reason);
}

static void test_hs256_good_and_claims(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  char *t =
      sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\",\"exp\":1900000100,\"role\":\"admin\"}");
  json_t *c = NULL;
  const char *why = "x";
  assert_int_equal(auth_jwt_verify(a, t, NOW, &c, &why), 0);
  assert_null(why);
  assert_string_equal(json_string_value(json_object_get(c, "sub")), "alice");
  assert_string_equal(json_string_value(json_object_get(c, "role")), "admin");
  json_decref(c);
  free(t);
  auth_jwt_close(a);
}

static void test_hs256_wrong_secret(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  char *t = sign(JWT_ALG_HS256, "another-secret-of-32-bytes-or-more!!", "{\"sub\":\"alice\"}");
  expect_refused(a, t, "bad signature");
  /* One flipped character of the signature. */
  t[strlen(t) - 2] = t[strlen(t) - 2] == 'A' ? 'B' : 'A';
  expect_refused(a, t, "bad signature");
  free(t);
  auth_jwt_close(a);
}

static void test_alg_none_refused(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  /* {"alg":"none","typ":"JWT"} . {"sub":"admin"} . (empty signature) */
  expect_refused(a, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9.", NULL);
  expect_refused(a, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9", NULL);
  /* "NONE" and "None" spellings too. */
  expect_refused(a, "eyJhbGciOiJOT05FIn0.eyJzdWIiOiJhZG1pbiJ9.", NULL);
  expect_refused(a, "eyJhbGciOiJOb25lIn0.eyJzdWIiOiJhZG1pbiJ9.", NULL);
  auth_jwt_close(a);
}

static void test_expired_and_nbf(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  char *t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\",\"exp\":1899999000}");
  expect_refused(a, t, "expired");
  free(t);
  /* Inside the 30 s leeway: accepted. */
  t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\",\"exp\":1899999990}");
  json_t *c = NULL;
  const char *why;
  assert_int_equal(auth_jwt_verify(a, t, NOW, &c, &why), 0);
  json_decref(c);
  free(t);
  t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\",\"nbf\":1900000600,\"exp\":1900009000}");
  expect_refused(a, t, "not valid yet (nbf)");
  free(t);
  t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\",\"exp\":\"tomorrow\"}");
  expect_refused(a, t, "exp or nbf is not a number");
  free(t);
  auth_jwt_close(a);
}

/* A token without exp would be good forever: refused unless --jwt-require-exp off. */
static void test_exp_required_unless_off(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  char *t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\"}");
  expect_refused(a, t, "no exp claim, and one is required");
  auth_jwt_close(a);
  char err[256] = "";
  assert_int_equal(auth_jwt_open(&a, SECRET, NULL, 30, 0, err, sizeof err), 0);
  json_t *c = NULL;
  const char *why;
  assert_int_equal(auth_jwt_verify(a, t, NOW, &c, &why), 0);
  assert_string_equal(json_string_value(json_object_get(c, "sub")), "a");
  json_decref(c);
  /* Off accepts a missing exp, never a bad or past one. */
  free(t);
  t = sign(JWT_ALG_HS256, SECRET, "{\"sub\":\"a\",\"exp\":1899999000}");
  expect_refused(a, t, "expired");
  free(t);
  auth_jwt_close(a);
}

static void test_rs256_and_confusion(void **st) {
  (void)st;
  struct pair p = make_pair(EVP_RSA_gen(2048));
  struct auth_jwt *a = open_ok(NULL, p.pub);
  char *t = sign(JWT_ALG_RS256, p.priv, "{\"sub\":\"bob\",\"exp\":1900000100}");
  json_t *c = NULL;
  const char *why;
  assert_int_equal(auth_jwt_verify(a, t, NOW, &c, &why), 0);
  assert_string_equal(json_string_value(json_object_get(c, "sub")), "bob");
  json_decref(c);
  free(t);
  /* Algorithm confusion: an HS256 token whose HMAC key is the public key's PEM text. */
  t = sign(JWT_ALG_HS256, p.pub, "{\"sub\":\"admin\"}");
  expect_refused(a, t, "algorithm not accepted for this key");
  free(t);
  /* Signed by another RSA key. */
  struct pair q = make_pair(EVP_RSA_gen(2048));
  t = sign(JWT_ALG_RS256, q.priv, "{\"sub\":\"bob\"}");
  expect_refused(a, t, "bad signature");
  free(t);
  free_pair(&q);
  free_pair(&p);
  auth_jwt_close(a);
}

static void test_es256(void **st) {
  (void)st;
  struct pair p = make_pair(EVP_EC_gen("P-256"));
  struct auth_jwt *a = open_ok(NULL, p.pub);
  char *t = sign(JWT_ALG_ES256, p.priv, "{\"sub\":\"carol\",\"exp\":1900000100}");
  json_t *c = NULL;
  const char *why;
  assert_int_equal(auth_jwt_verify(a, t, NOW, &c, &why), 0);
  json_decref(c);
  free(t);
  t = sign(JWT_ALG_HS256, p.pub, "{\"sub\":\"carol\"}");
  expect_refused(a, t, "algorithm not accepted for this key");
  free(t);
  free_pair(&p);
  auth_jwt_close(a);
}

static void test_malformed(void **st) {
  (void)st;
  struct auth_jwt *a = open_ok(SECRET, NULL);
  const char *bad[] = {"", "a", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9..", "%%%.%%%.%%%"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_refused(a, bad[i], NULL);
  char *huge = malloc(10000);
  memset(huge, 'a', 9999);
  huge[9999] = 0;
  expect_refused(a, huge, NULL);
  free(huge);
  auth_jwt_close(a);
}

static void test_open_refuses_bad_keys(void **st) {
  (void)st;
  struct auth_jwt *a = NULL;
  char err[256];
  assert_int_equal(auth_jwt_open(&a, "short", NULL, 30, 1, err, sizeof err), -EINVAL);
  assert_int_equal(auth_jwt_open(&a, NULL, "not a pem", 30, 1, err, sizeof err), -EINVAL);
  assert_int_equal(auth_jwt_open(&a, NULL, NULL, 30, 1, err, sizeof err), -EINVAL);
  assert_int_equal(auth_jwt_open(&a, SECRET, "x", 30, 1, err, sizeof err), -EINVAL);
  assert_null(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hs256_good_and_claims),
      cmocka_unit_test(test_hs256_wrong_secret),
      cmocka_unit_test(test_alg_none_refused),
      cmocka_unit_test(test_expired_and_nbf),
      cmocka_unit_test(test_exp_required_unless_off),
      cmocka_unit_test(test_rs256_and_confusion),
      cmocka_unit_test(test_es256),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_open_refuses_bad_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
