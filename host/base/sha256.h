/* sha256.h: SHA-256 (FIPS 180-4), for hashing resume tokens before they are stored.
 * Owns nothing but the digest; the installed libwebsockets is built without its genhash API. */
#ifndef WSHOST_SHA256_H
#define WSHOST_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

struct sha256 {
  uint32_t h[8];
  uint64_t total; /* bytes hashed so far */
  uint8_t buf[64];
  size_t fill;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* One-shot digest of data. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);

#endif
