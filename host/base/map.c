/* map.c: a hash map from byte-string keys to pointers: FNV-1a, chained buckets, doubling.
 * Used for connection ids and user ids; the load factor stays at or under one. */
#include "map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const void *key, size_t len) {
  const unsigned char *p = key;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void map_init(struct map *m) {
  memset(m, 0, sizeof *m);
}

void map_free(struct map *m) {
  for (size_t i = 0; i < m->nbuckets; i++) {
    struct map_entry *e = m->buckets[i];
    while (e) {
      struct map_entry *next = e->next;
      free(e);
      e = next;
    }
  }
  free(m->buckets);
  map_init(m);
}

static struct map_entry **find(const struct map *m, const void *key, size_t keylen, uint64_t h) {
  if (!m->nbuckets)
    return NULL;
  struct map_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->hash == h && (*pp)->keylen == keylen && !memcmp((*pp)->key, key, keylen))
      return pp;
  return pp;
}

void *map_get(const struct map *m, const void *key, size_t keylen) {
  struct map_entry **pp = find(m, key, keylen, hash_bytes(key, keylen));
  return pp && *pp ? (*pp)->value : NULL;
}

static int grow(struct map *m) {
  size_t n = m->nbuckets ? m->nbuckets * 2 : 64;
  struct map_entry **b = calloc(n, sizeof *b);
  if (!b)
    return -ENOMEM;
  for (size_t i = 0; i < m->nbuckets; i++) {
    struct map_entry *e = m->buckets[i];
    while (e) {
      struct map_entry *next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(m->buckets);
  m->buckets = b;
  m->nbuckets = n;
  return 0;
}

int map_set(struct map *m, const void *key, size_t keylen, void *value) {
  uint64_t h = hash_bytes(key, keylen);
  struct map_entry **pp = find(m, key, keylen, h);
  if (pp && *pp) {
    (*pp)->value = value;
    return 0;
  }
  if (m->count + 1 > m->nbuckets && grow(m) < 0)
    return -ENOMEM;
  struct map_entry *e = malloc(sizeof *e + keylen + 1);
  if (!e)
    return -ENOMEM;
  e->hash = h;
  e->value = value;
  e->keylen = keylen;
  memcpy(e->key, key, keylen);
  e->key[keylen] = 0;
  size_t i = h & (m->nbuckets - 1);
  e->next = m->buckets[i];
  m->buckets[i] = e;
  m->count++;
  return 0;
}

void *map_del(struct map *m, const void *key, size_t keylen) {
  struct map_entry **pp = find(m, key, keylen, hash_bytes(key, keylen));
  if (!pp || !*pp)
    return NULL;
  struct map_entry *e = *pp;
  void *v = e->value;
  *pp = e->next;
  free(e);
  m->count--;
  return v;
}

void map_each(const struct map *m, void (*fn)(void *, const char *, void *), void *arg) {
  for (size_t i = 0; i < m->nbuckets; i++)
    for (struct map_entry *e = m->buckets[i]; e; e = e->next)
      fn(arg, e->key, e->value);
}
