/* rooms.c: named groups of live WebSocket connections, indexed both ways: a room's members
 * (so a send costs O(members), never O(all sockets)) and a socket's rooms (so a close leaves
 * them all without looking at any other room). Sends go through ws_send's bounded queues. */
#include "rooms.h"

#include "cluster.h"
#include "log.h"
#include "msgbuf.h"
#include "net_ops.h"

#include <stdlib.h>
#include <string.h>

struct room {
  struct map members; /* 8-byte socket id -> the room itself (a non-NULL marker) */
  size_t name_len;
  char name[];
};

/* The rooms of one socket: few, so an array. */
struct sock_rooms {
  struct room **v;
  int n, cap;
};

struct rooms {
  struct map by_name; /* name -> struct room * */
  struct map by_sock; /* 8-byte socket id -> struct sock_rooms * */
};

int room_name_valid(const char *name) {
  if (!name)
    return 0;
  size_t n = 0;
  for (; name[n]; n++) {
    char c = name[n];
    if (n >= ROOM_NAME_MAX ||
        !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == ':' || c == '@' || c == '-'))
      return 0;
  }
  return n > 0;
}

int rooms_open(struct host *h) {
  struct rooms *r = calloc(1, sizeof *r);
  if (!r)
    return CLOUD_ENOMEM;
  map_init(&r->by_name);
  map_init(&r->by_sock);
  h->rooms = r;
  return 0;
}

static void free_room(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct room *room = value;
  map_free(&room->members);
  free(room);
}

static void free_sock(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct sock_rooms *sr = value;
  free(sr->v);
  free(sr);
}

void rooms_close(struct host *h) {
  struct rooms *r = h->rooms;
  if (!r)
    return;
  map_each(&r->by_name, free_room, NULL);
  map_each(&r->by_sock, free_sock, NULL);
  map_free(&r->by_name);
  map_free(&r->by_sock);
  free(r);
  h->rooms = NULL;
}

size_t rooms_count(const struct host *h) {
  return h->rooms ? h->rooms->by_name.count : 0;
}

static struct room *room_get(struct rooms *r, const char *name, int create) {
  if (!r)
    return NULL;
  size_t n = strlen(name);
  struct room *room = map_get(&r->by_name, name, n);
  if (room || !create)
    return room;
  room = calloc(1, sizeof *room + n + 1);
  if (!room)
    return NULL;
  map_init(&room->members);
  memcpy(room->name, name, n + 1);
  room->name_len = n;
  if (map_set(&r->by_name, name, n, room) < 0) {
    free(room);
    return NULL;
  }
  return room;
}

/* Removes id from room, and the room when it is empty. */
static void room_remove(struct host *h, struct rooms *r, struct room *room, uint64_t id) {
  map_del(&room->members, &id, sizeof id);
  if (h->cluster) /* issue 13: other nodes learn this node's members */
    cluster_room_changed(h, room->name, room->members.count > 0);
  if (!room->members.count) {
    map_del(&r->by_name, room->name, room->name_len);
    free_room(NULL, NULL, room);
  }
}

int rooms_join(struct host *h, cloud_socket s, const char *name) {
  struct rooms *r = h->rooms;
  struct conn *c = h->net->ws_find(h, s);
  if (!c || c->close_code)
    return CLOUD_ECLOSED;
  if (!r)
    return CLOUD_ESTATE;
  if (!room_name_valid(name))
    return CLOUD_EINVAL;
  struct room *room = room_get(r, name, 1);
  if (!room)
    return CLOUD_ENOMEM;
  if (map_get(&room->members, &s.id, sizeof s.id))
    return 0; /* already a member */
  struct sock_rooms *sr = map_get(&r->by_sock, &s.id, sizeof s.id);
  if (!sr) {
    sr = calloc(1, sizeof *sr);
    if (!sr || map_set(&r->by_sock, &s.id, sizeof s.id, sr) < 0) {
      free(sr);
      sr = NULL;
    }
  }
  int rc = 0;
  if (!sr)
    rc = CLOUD_ENOMEM;
  else if (sr->n >= ROOMS_PER_SOCKET_MAX)
    rc = CLOUD_EFULL;
  else if (sr->n == sr->cap) {
    int cap = sr->cap ? sr->cap * 2 : 4;
    struct room **v = realloc(sr->v, cap * sizeof *v);
    if (v) {
      sr->v = v;
      sr->cap = cap;
    } else
      rc = CLOUD_ENOMEM;
  }
  if (!rc && map_set(&room->members, &s.id, sizeof s.id, room) < 0)
    rc = CLOUD_ENOMEM;
  if (rc) {
    if (!room->members.count)
      room_remove(h, r, room, s.id);
    return rc;
  }
  sr->v[sr->n++] = room;
  if (h->cluster) /* issue 13 */
    cluster_room_changed(h, name, 1);
  return 0;
}

int rooms_leave(struct host *h, cloud_socket s, const char *name) {
  struct rooms *r = h->rooms;
  if (!room_name_valid(name) || !r)
    return CLOUD_EINVAL;
  struct room *room = room_get(r, name, 0);
  struct sock_rooms *sr = map_get(&r->by_sock, &s.id, sizeof s.id);
  if (!room || !sr || !map_get(&room->members, &s.id, sizeof s.id))
    return CLOUD_EINVAL;
  for (int i = 0; i < sr->n; i++)
    if (sr->v[i] == room) {
      sr->v[i] = sr->v[--sr->n];
      break;
    }
  if (!sr->n) {
    map_del(&r->by_sock, &s.id, sizeof s.id);
    free_sock(NULL, NULL, sr);
  }
  room_remove(h, r, room, s.id);
  return 0;
}

void rooms_leave_all(struct host *h, uint64_t id) {
  struct rooms *r = h->rooms;
  struct sock_rooms *sr = r ? map_del(&r->by_sock, &id, sizeof id) : NULL;
  if (!sr)
    return;
  for (int i = 0; i < sr->n; i++)
    room_remove(h, r, sr->v[i], id);
  free_sock(NULL, NULL, sr);
}

struct fanout {
  struct host *h;
  const void *data;
  size_t len;
  int is_binary;
  uint64_t except;
  int sent;
};

/* Sends to every socket of map (but except): the text checked once for all of them (DESIGN 8:
 * a send returns how many sockets it reached). */
static int fan_out(struct host *h, const struct map *members, const void *data, size_t len,
                   int is_binary, uint64_t except);

static void send_one(void *arg, const char *key, void *value) {
  (void)value;
  struct fanout *f = arg;
  cloud_socket s;
  memcpy(&s.id, key, sizeof s.id);
  if (s.id != f->except && f->h->net->ws_send(f->h, s, f->data, f->len, f->is_binary) == 0)
    f->sent++;
}

static int fan_out(struct host *h, const struct map *members, const void *data, size_t len,
                   int is_binary, uint64_t except) {
  if (!is_binary && !utf8_valid(data, len))
    return CLOUD_EINVAL;
  struct fanout f = {h, data, len, is_binary, except, 0};
  const void *checked = h->text_checked;
  size_t checked_len = h->text_checked_len;
  if (!is_binary) /* each socket's send (ws.c conn_send) need not read it again */
    h->text_checked = data, h->text_checked_len = len;
  map_each(members, send_one, &f);
  h->text_checked = checked, h->text_checked_len = checked_len;
  return f.sent;
}

int rooms_send(struct host *h, const char *name, const void *data, size_t len, int is_binary,
               cloud_socket except) {
  if (!room_name_valid(name) || (!data && len))
    return CLOUD_EINVAL;
  if (len > h->cfg.max_send_queue)
    return CLOUD_ETOOBIG;
  struct room *room = room_get(h->rooms, name, 0);
  struct map none = {0};
  int sent = fan_out(h, room ? &room->members : &none, data, len, is_binary, except.id);
  if (sent >= 0 && h->cluster) /* the room's members on other nodes (except is a local socket) */
    cluster_room_send(h, name, data, len, is_binary);
  return sent;
}

int rooms_deliver(struct host *h, const char *name, const void *data, size_t len, int is_binary) {
  struct room *room = room_name_valid(name) ? room_get(h->rooms, name, 0) : NULL;
  if (!room || len > h->cfg.max_send_queue)
    return 0;
  int sent = fan_out(h, &room->members, data, len, is_binary, 0);
  return sent > 0 ? sent : 0;
}

int rooms_deliver_all(struct host *h, const void *data, size_t len, int is_binary) {
  if (len > h->cfg.max_send_queue)
    return 0;
  int sent = fan_out(h, &h->conns, data, len, is_binary, 0);
  return sent > 0 ? sent : 0;
}

int rooms_broadcast(struct host *h, const void *data, size_t len, int is_binary,
                    cloud_socket except) {
  if (!data && len)
    return CLOUD_EINVAL;
  if (len > h->cfg.max_send_queue)
    return CLOUD_ETOOBIG;
  int sent = fan_out(h, &h->conns, data, len, is_binary, except.id);
  if (sent >= 0 && h->cluster) /* every other node */
    cluster_broadcast(h, data, len, is_binary);
  return sent;
}

struct member_list {
  struct host *h;
  json_t *by_user; /* user id -> count */
};

static void count_member(void *arg, const char *key, void *value) {
  (void)value;
  struct member_list *m = arg;
  cloud_socket s;
  memcpy(&s.id, key, sizeof s.id);
  struct conn *c = m->h->net->ws_find(m->h, s);
  if (!c)
    return;
  json_t *n = json_object_get(m->by_user, c->user_id);
  json_object_set_new(m->by_user, c->user_id, json_integer(n ? json_integer_value(n) + 1 : 1));
}

json_t *rooms_members(struct host *h, const char *name) {
  json_t *local = rooms_members_local(h, name);
  /* Issue 13: with the other nodes' members as last read (refreshed in the background). */
  return local && h->cluster ? cluster_room_members(h, name, local) : local;
}

json_t *rooms_members_local(struct host *h, const char *name) {
  if (!room_name_valid(name))
    return NULL;
  struct room *room = room_get(h->rooms, name, 0);
  json_t *out = json_array();
  struct member_list m = {h, json_object()};
  if (!out || !m.by_user) {
    json_decref(out);
    json_decref(m.by_user);
    return NULL;
  }
  if (room)
    map_each(&room->members, count_member, &m);
  const char *user;
  json_t *n;
  json_object_foreach(m.by_user, user, n)
      json_array_append_new(out, json_pack("{s:s, s:O}", "user_id", user, "sockets", n));
  json_decref(m.by_user);
  return out;
}

json_t *rooms_of(struct host *h, cloud_socket s) {
  json_t *out = json_array();
  struct sock_rooms *sr = h->rooms ? map_get(&h->rooms->by_sock, &s.id, sizeof s.id) : NULL;
  for (int i = 0; out && sr && i < sr->n; i++)
    json_array_append_new(out, json_string(sr->v[i]->name));
  return out;
}
