/* auth_jwt.h: verification and signing of JSON Web Tokens (--jwt-secret HS256, --jwt-public-key
 * RS256/ES256) on libjwt. Owns the key and the rules: which algorithm a key accepts, exp/nbf with
 * leeway. */
#ifndef WSHOST_AUTH_JWT_H
#define WSHOST_AUTH_JWT_H

#include <jansson.h>
#include <stdint.h>

struct auth_jwt;

/* Exactly one of secret (HS256) and public_key_pem (RS256 or ES256, told by the key's type).
 * require_exp: a token without an exp claim is refused. 0, or -EINVAL with a reason in err
 * (an unreadable or unusable key). */
int auth_jwt_open(struct auth_jwt **out, const char *secret, const char *public_key_pem,
                  int leeway_s, int require_exp, char *err, size_t errlen);
void auth_jwt_close(struct auth_jwt *a);

/* Verifies token at time now_s (seconds since the epoch). 0 and *claims (a new reference to the
 * payload object) when the signature is good with this key's one algorithm, exp is there
 * (unless require_exp is off), and exp/nbf (when present; both must be numbers) hold within
 * the leeway. Otherwise -EACCES and *why, a static
 * reason fit for a log line (never the token). */
int auth_jwt_verify(const struct auth_jwt *a, const char *token, int64_t now_s, json_t **claims,
                    const char **why);

/* Signs claims (an object, not changed) with this key at time now_s: a copy gets iat = now_s
 * and, for ttl_s > 0, exp = now_s + ttl_s. 0 and *token (malloc'd), -ENOKEY for a key that
 * only verifies (a public key), -EINVAL for claims that are not an object, -ENOMEM. */
int auth_jwt_sign(const struct auth_jwt *a, json_t *claims, int ttl_s, int64_t now_s, char **token);

#endif
