/* map.h: a hash map from byte-string keys to pointers (chained, grows by doubling).
 * Owns its copies of the keys; never the values. */
#ifndef WSHOST_MAP_H
#define WSHOST_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_entry {
  struct map_entry *next;
  uint64_t hash;
  void *value;
  size_t keylen;
  char key[]; /* NUL-terminated copy */
};

struct map {
  struct map_entry **buckets;
  size_t nbuckets, count;
};

void map_init(struct map *m);
/* Frees the entries (not the values). */
void map_free(struct map *m);
void *map_get(const struct map *m, const void *key, size_t keylen);
/* Inserts or replaces. 0, or -ENOMEM. */
int map_set(struct map *m, const void *key, size_t keylen, void *value);
/* Removes and returns the value, NULL if absent. */
void *map_del(struct map *m, const void *key, size_t keylen);
/* Calls fn for every entry; fn must not change the map. */
void map_each(const struct map *m, void (*fn)(void *arg, const char *key, void *value), void *arg);

#endif
