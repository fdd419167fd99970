/* auth_jwt.c: JSON Web Token verification (and HS256 signing) on libjwt (Debian's libjwt 1.10).
 * libjwt checks signatures; the algorithm rule and the time claims are ours (1.10 has neither). */
#include "auth_jwt.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_jwt {
  jwt_alg_t alg; /* the one algorithm this key verifies */
  unsigned char *key;
  int key_len;
  int leeway_s;
  int require_exp; /* a token without exp would be good forever: refused unless turned off */
};

/* The algorithm a PEM public key is for: RS256 for RSA, ES256 for a P-256 EC key. */
static jwt_alg_t pem_alg(const char *pem, char *err, size_t errlen) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  jwt_alg_t alg = JWT_ALG_INVAL;
  if (!k)
    snprintf(err, errlen, "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  else if (EVP_PKEY_is_a(k, "RSA"))
    alg = EVP_PKEY_get_bits(k) >= 2048 ? JWT_ALG_RS256 : JWT_ALG_INVAL;
  else if (EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 256)
    alg = JWT_ALG_ES256;
  if (k && alg == JWT_ALG_INVAL)
    snprintf(err, errlen, "the key is neither RSA (2048 bits or more) nor EC P-256");
  EVP_PKEY_free(k);
  return alg;
}

int auth_jwt_open(struct auth_jwt **out, const char *secret, const char *public_key_pem,
                  int leeway_s, int require_exp, char *err, size_t errlen) {
  *out = NULL;
  if (!secret == !public_key_pem) {
    snprintf(err, errlen, "give either a secret or a public key");
    return -EINVAL;
  }
  jwt_alg_t alg = JWT_ALG_HS256;
  if (public_key_pem && (alg = pem_alg(public_key_pem, err, errlen)) == JWT_ALG_INVAL)
    return -EINVAL;
  /* RFC 7518 3.2: an HS256 key must have at least 256 bits. */
  if (secret && strlen(secret) < 32) {
    snprintf(err, errlen, "an HS256 secret needs at least 32 bytes (RFC 7518 3.2)");
    return -EINVAL;
  }
  struct auth_jwt *a = calloc(1, sizeof *a);
  const char *key = secret ? secret : public_key_pem;
  if (!a || !(a->key = (unsigned char *)strdup(key))) {
    free(a);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  a->key_len = (int)strlen(key);
  a->alg = alg;
  a->leeway_s = leeway_s;
  a->require_exp = require_exp;
  *out = a;
  return 0;
}

void auth_jwt_close(struct auth_jwt *a) {
  if (!a)
    return;
  memset(a->key, 0, (size_t)a->key_len);
  free(a->key);
  free(a);
}

/* A time claim: absent (1, *v untouched), a number (1, *v set) or anything else (0). */
static int time_claim(json_t *claims, const char *name, int64_t *v) {
  json_t *c = json_object_get(claims, name);
  if (!c)
    return 1;
  if (!json_is_number(c))
    return 0;
  *v = (int64_t)json_number_value(c);
  return 1;
}

int auth_jwt_verify(const struct auth_jwt *a, const char *token, int64_t now_s, json_t **claims,
                    const char **why) {
  *claims = NULL;
  *why = "malformed token";
  if (!a || !token || strlen(token) > 8192)
    return -EACCES;
  /* The algorithm comes from the key, never from the token: parse the header unverified first
   * and refuse any other "alg", so an RS256 public key is never used as an HS256 secret
   * (algorithm confusion) and "none" never passes. */
  jwt_t *j = NULL;
  if (jwt_decode(&j, token, NULL, 0) != 0 || !j)
    return -EACCES;
  /* libjwt 1.10 reports JWT_ALG_NONE for a token decoded without a key; the header keeps
   * what the token claims. */
  const char *claimed = jwt_get_header(j, "alg");
  jwt_alg_t alg = claimed ? jwt_str_alg(claimed) : JWT_ALG_INVAL;
  jwt_free(j);
  j = NULL;
  if (alg != a->alg) {
    *why = "algorithm not accepted for this key";
    return -EACCES;
  }
  if (jwt_decode(&j, token, a->key, a->key_len) != 0 || !j || jwt_get_alg(j) != a->alg) {
    jwt_free(j);
    *why = "bad signature";
    return -EACCES;
  }
  char *payload = jwt_get_grants_json(j, NULL);
  jwt_free(j);
  json_t *c = payload ? json_loads(payload, 0, NULL) : NULL;
  free(payload);
  if (!json_is_object(c)) {
    json_decref(c);
    return -EACCES;
  }
  int64_t exp = INT64_MAX, nbf = INT64_MIN;
  if (!time_claim(c, "exp", &exp) || !time_claim(c, "nbf", &nbf)) {
    *why = "exp or nbf is not a number";
  } else if (exp == INT64_MAX && a->require_exp) {
    *why = "no exp claim, and one is required";
  } else if (exp != INT64_MAX && now_s > exp + a->leeway_s) {
    *why = "expired";
  } else if (nbf != INT64_MIN && now_s < nbf - a->leeway_s) {
    *why = "not valid yet (nbf)";
  } else {
    *claims = c;
    *why = NULL;
    return 0;
  }
  json_decref(c);
  return -EACCES;
}

int auth_jwt_sign(const struct auth_jwt *a, json_t *claims, int ttl_s, int64_t now_s,
                  char **token) {
  *token = NULL;
  if (!a || a->alg != JWT_ALG_HS256)
    return -ENOKEY; /* a public key verifies; signing needs the secret */
  if (!json_is_object(claims) || ttl_s < 0)
    return -EINVAL;
  json_t *c = json_deep_copy(claims);
  if (!c)
    return -ENOMEM;
  json_object_set_new(c, "iat", json_integer((json_int_t)now_s));
  if (ttl_s > 0)
    json_object_set_new(c, "exp", json_integer((json_int_t)(now_s + ttl_s)));
  char *payload = json_dumps(c, JSON_COMPACT);
  json_decref(c);
  jwt_t *j = NULL;
  int rc = -ENOMEM;
  if (payload && jwt_new(&j) == 0 && j && jwt_set_alg(j, JWT_ALG_HS256, a->key, a->key_len) == 0 &&
      jwt_add_grants_json(j, payload) == 0) {
    char *t = jwt_encode_str(j);
    if (t) {
      *token = t;
      rc = 0;
    }
  }
  jwt_free(j);
  free(payload);
  return rc;
}
