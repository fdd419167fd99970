/* fuzz_resume: the resume path of an upgrade (?user_id=<id>&token=<token>, CONTRACT 3): the
 * query as a client may write it, user_id_valid on the id, then store_user_check against a
 * :memory: store that holds a few real users. A wrong or missing token must never yield an
 * id: store_user_check answers 1 only for an exact (id, token) pair the store created.
 *
 * Input: byte 0 picks a mode: 0 the rest is a query string; 1 raw id \0 token; 2 a real
 * user's id and token, edited by the rest (flip, cut, append), so near misses are tried. */
#include "http_parse.h"
#include "store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      __builtin_trap();                                                                            \
  } while (0)

#define NUSERS 3
static struct store *st;
static char ids[NUSERS][STORE_ID_MAX + 1], tokens[NUSERS][STORE_TOKEN_LEN + 1];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  struct store_options o = {.path = ":memory:"};
  if (store_open(&st, &o) < 0)
    abort();
  for (int i = 0; i < NUSERS; i++)
    if (store_user_create(st, ids[i], tokens[i]) < 0 || store_user_check(st, ids[i], tokens[i]) != 1)
      abort();
  /* An app-bound user has no token: nothing may resume it. */
  if (store_user_ensure(st, "bound-user") < 0)
    abort();
  return 0;
}

/* What ws.c does with the two query values. */
static void check(const char *id, const char *token) {
  int ok = user_id_valid(id) ? store_user_check(st, id, token) : 0;
  CHECK(ok == 0 || ok == 1);
  int real = 0;
  for (int i = 0; i < NUSERS; i++)
    real |= !strcmp(id, ids[i]) && !strcmp(token, tokens[i]);
  CHECK(ok == real);
  /* the store's own check refuses what user_id_valid refuses */
  if (!user_id_valid(id))
    CHECK(store_user_check(st, id, token) == 0);
  else
    CHECK(strlen(id) <= STORE_ID_MAX);
}

static const char *str_value(json_t *q, const char *key) {
  json_t *v = json_object_get(q, key);
  if (json_is_array(v))
    v = json_array_get(v, 0);
  return json_string_value(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const char *in = (const char *)data + 1;
  size_t n = size - 1;
  switch (data[0] % 3) {
  case 0: {
    json_t *q = query_parse(in, n);
    const char *id = str_value(q, "user_id"), *token = str_value(q, "token");
    /* json strings may hold NULs; ws.c sees C strings, so does the check */
    if (id && token)
      check(id, token);
    json_decref(q);
    break;
  }
  case 1: {
    char *buf = malloc(n + 2);
    memcpy(buf, in, n);
    buf[n] = buf[n + 1] = 0;
    check(buf, buf + strlen(buf) + (strlen(buf) < n ? 1 : 0));
    free(buf);
    break;
  }
  default: {
    if (n < 2)
      return 0;
    int u = (unsigned char)in[0] % NUSERS, op = (unsigned char)in[1] % 4;
    char id[STORE_ID_MAX + 64], token[STORE_TOKEN_LEN + 64];
    snprintf(id, sizeof id, "%s", ids[u]);
    snprintf(token, sizeof token, "%s", tokens[u]);
    char *target = (op & 1) ? token : id;
    size_t tl = strlen(target);
    for (size_t k = 2; k + 1 < n; k += 2) {
      size_t pos = (unsigned char)in[k] % (tl + 1);
      char c = in[k + 1];
      if (op & 2) { /* overwrite / append one byte */
        if (pos == tl && tl + 1 < STORE_TOKEN_LEN + 60) {
          target[tl++] = c;
          target[tl] = 0;
        } else
          target[pos] = c;
      } else { /* cut */
        target[pos] = 0;
      }
      tl = strlen(target);
    }
    check(id, token);
    check(ids[u], token);
    break;
  }
  }
  return 0;
}
