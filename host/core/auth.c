/* auth.c: JWTs on requests and upgrades, and the env file behind cloud_env(). The key and the
 * file are read once at start (and the file on SIGHUP); a check is one libjwt verification. */
#include "auth.h"

#include "auth_jwt.h"
#include "envfile.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char *read_small_file(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "re");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(65537);
  size_t n = buf ? fread(buf, 1, 65536, f) : 0;
  int big = buf && n == 65536 && fgetc(f) != EOF;
  fclose(f);
  if (!buf || big) {
    free(buf);
    snprintf(err, errlen, "%s: %s", path, big ? "larger than 64 KiB" : "out of memory");
    return NULL;
  }
  buf[n] = 0;
  return buf;
}

int auth_open(struct host *h) {
  char err[512] = "";
  const struct config *c = &h->cfg;
  if (c->jwt_secret || c->jwt_public_key) {
    if (c->jwt_secret && c->jwt_public_key) {
      log_error(NULL, NULL, "give --jwt-secret or --jwt-public-key, not both");
      return -1;
    }
    char *pem = c->jwt_public_key ? read_small_file(c->jwt_public_key, err, sizeof err) : NULL;
    if ((c->jwt_public_key && !pem) || auth_jwt_open(&h->jwt, c->jwt_secret, pem, c->jwt_leeway,
                                                     c->jwt_require_exp, err, sizeof err) < 0) {
      log_error(NULL, NULL, "JWT %s refused: %s", c->jwt_secret ? "secret" : "public key", err);
      free(pem);
      return -1;
    }
    free(pem);
    log_info(NULL, NULL, "JWT: %s, %d s leeway, %s", c->jwt_secret ? "HS256" : "public key",
             c->jwt_leeway,
             c->jwt_require_exp ? "exp required" : "tokens without exp accepted (no expiry)");
  }
  if (c->env_file) {
    if (envfile_load(c->env_file, &h->env, err, sizeof err) < 0) {
      log_error(NULL, NULL, "%s", err);
      return -1;
    }
    log_info(NULL, NULL, "env file %s: %zu values", c->env_file, envfile_count(h->env));
  }
  return 0;
}

void auth_close(struct host *h) {
  auth_jwt_close(h->jwt);
  envfile_free(h->env);
  h->jwt = NULL;
  h->env = NULL;
}

void auth_env_reload(struct host *h) {
  if (!h->cfg.env_file)
    return;
  char err[512] = "";
  struct envfile *e = NULL;
  if (envfile_load(h->cfg.env_file, &e, err, sizeof err) < 0) {
    log_error(NULL, NULL, "%s; keeping the %zu values loaded before", err, envfile_count(h->env));
    return;
  }
  /* Between events on the loop thread: no call holds a value of the old file now. */
  envfile_free(h->env);
  h->env = e;
  log_info(NULL, NULL, "env file %s re-read: %zu values", h->cfg.env_file, envfile_count(e));
}

const char *auth_bearer(const char *authorization) {
  if (!authorization || strncasecmp(authorization, "Bearer ", 7))
    return NULL;
  const char *t = authorization + 7;
  while (*t == ' ')
    t++;
  return *t ? t : NULL;
}

int auth_check(struct host *h, const char *token, json_t **claims, const char **why) {
  *claims = NULL;
  *why = NULL;
  if (!token || !*token)
    return 0;
  if (!h->jwt) {
    /* An operator whose key never reached the host (a flag left out, a secret file not
     * read) sees every client become anonymous: say so, at most once a minute. */
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t now = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 + 1; /* never 0 */
    if (!h->jwt_unkeyed_warned_ms || now - h->jwt_unkeyed_warned_ms >= 60000) {
      h->jwt_unkeyed_warned_ms = now;
      log_warn(NULL, NULL,
               "a request carries a JWT but this host has no --jwt-secret or --jwt-public-key: "
               "the token is ignored and the caller is anonymous (said at most once a minute)");
    }
    return 0;
  }
  return auth_jwt_verify(h->jwt, token, (int64_t)time(NULL), claims, why) == 0 ? 0 : -1;
}
