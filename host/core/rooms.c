/* rooms.c: named groups of live WebSocket connections, indexed both ways: a room's members
 * (so a send costs O(members), never O(all sockets)) and a socket's rooms (so a close leaves
 * them all without looking at any other room). Sends go through ws_send's bounded queues.
 * Also what applications build on rooms: the sockets of each user in a room (presence: the
 * Room:join and Room:leave events of a user's first socket in and last out), rooms a user holds
 * (stored: every socket of the user joins them, sockets that connect later too), and rooms
 * that keep their last frames (history, stored). */
#include "rooms.h"

#include "cluster.h"
#include "invocation.h"
#include "log.h"
#include "msgbuf.h"
#include "net_ops.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct room {
  struct map members; /* 8-byte socket id -> the room itself (a non-NULL marker) */
  struct map users;   /* user id -> its sockets here, as (void *)(uintptr_t)count */
  size_t name_len;
  char name[];
};

/* The rooms of one socket: few, so an array; and the user it counts for in each. */
struct sock_rooms {
  struct room **v;
  int n, cap;
  char *user; /* owned */
};

/* A room that keeps its last frames (cloud_room_keep). */
struct kept {
  int last_n;
  int64_t seq;    /* the newest frame's number */
  int64_t frames; /* kept now */
  int64_t bytes;  /* payload bytes kept now */
};

/* A presence event waiting for the end of the call (or pass) that caused it. */
struct presence {
  struct presence *next, *prev;
  int join;
  uint64_t socket;
  char *user; /* owned, like room */
  char room[];
};

struct rooms {
  struct map by_name; /* name -> struct room * */
  struct map by_sock; /* 8-byte socket id -> struct sock_rooms * */
  struct map kept;    /* name -> struct kept * */
  struct presence *ev_head, *ev_tail;
  size_t ev_bytes;
  uint64_t ev_dropped;
  ev_timer ev_fire;
  struct host *h;
  int user_rooms_used; /* a user holds (or held) a room: connections look theirs up */
};

/* Presence events go to the WebSocket function. */
#define WS_PRESENCE_FUNCTION "__websocket__"

static void presence_fire(struct ev_loop *loop, ev_timer *w, int revents);
static void kept_load(void *arg, const char *room, int last_n, int64_t seq, int64_t frames,
                      int64_t bytes);

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
  map_init(&r->kept);
  ev_timer_init(&r->ev_fire, presence_fire, 0., 0.);
  r->ev_fire.data = r;
  r->h = h;
  h->rooms = r;
  r->user_rooms_used = h->store ? store_user_rooms_any(h->store) != 0 : 0;
  if (h->store && store_room_kept_each(h->store, kept_load, r) < 0)
    log_warn(NULL, NULL, "cannot read the kept rooms: their history starts again");
  return 0;
}

static void kept_load(void *arg, const char *room, int last_n, int64_t seq, int64_t frames,
                      int64_t bytes) {
  struct rooms *r = arg;
  struct kept *k = calloc(1, sizeof *k);
  if (!k)
    return;
  *k = (struct kept){last_n, seq, frames, bytes};
  if (map_set(&r->kept, room, strlen(room), k) < 0)
    free(k);
}

static void free_room(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct room *room = value;
  map_free(&room->members);
  map_free(&room->users);
  free(room);
}

static void free_sock(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct sock_rooms *sr = value;
  free(sr->v);
  free(sr->user);
  free(sr);
}

static void free_value(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  free(value);
}

void rooms_close(struct host *h) {
  struct rooms *r = h->rooms;
  if (!r)
    return;
  if (h->loop)
    ev_timer_stop(h->loop, &r->ev_fire);
  for (struct presence *e = r->ev_head, *next; e; e = next) {
    next = e->next;
    free(e->user);
    free(e);
  }
  map_each(&r->by_name, free_room, NULL);
  map_each(&r->by_sock, free_sock, NULL);
  map_each(&r->kept, free_value, NULL);
  map_free(&r->by_name);
  map_free(&r->by_sock);
  map_free(&r->kept);
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

/* Presence events wait for the end of the call that caused them (a join in a handler must not
 * run another handler inside it) and go out in order from the next loop iteration. Bounded in
 * bytes: past it an event is dropped, logged and counted. */
#define PRESENCE_QUEUE_BYTES (4u << 20)

/* A leave that follows a join not yet fired, for the same socket, room and user (a socket
 * that joined in its connection event and was then refused; a join and leave in one call):
 * neither happened for anyone watching. Looks at the last few queued only. */
#define PRESENCE_CANCEL_SCAN 64

static int presence_cancel(struct rooms *r, const char *room, const char *user, uint64_t socket) {
  struct presence *e = r->ev_tail, *found = NULL;
  for (int i = 0; e && !found && i < PRESENCE_CANCEL_SCAN; e = e->prev, i++)
    if (e->join && e->socket == socket && !strcmp(e->room, room) && !strcmp(e->user, user))
      found = e;
  if (!(e = found))
    return 0;
  if (e->prev)
    e->prev->next = e->next;
  else
    r->ev_head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    r->ev_tail = e->prev;
  r->ev_bytes -= sizeof *e + strlen(e->room) + strlen(e->user) + 2;
  free(e->user);
  free(e);
  return 1;
}

static void presence_queue(struct host *h, int join, const char *room, const char *user,
                           uint64_t socket) {
  struct rooms *r = h->rooms;
  if (!join && presence_cancel(r, room, user, socket))
    return;
  size_t rl = strlen(room), ul = strlen(user), cost = sizeof(struct presence) + rl + ul + 2;
  struct presence *e = NULL;
  if (r->ev_bytes + cost <= PRESENCE_QUEUE_BYTES && (e = malloc(sizeof *e + rl + 1)) &&
      !(e->user = strdup(user))) {
    free(e);
    e = NULL;
  }
  if (!e) {
    if (!r->ev_dropped++ || !(r->ev_dropped % 1000))
      log_error(WS_PRESENCE_FUNCTION, NULL,
                "presence event %s of user %s in %s dropped (%llu so far): %zu bytes queued",
                join ? "Room:join" : "Room:leave", user, room, (unsigned long long)r->ev_dropped,
                r->ev_bytes);
    return;
  }
  e->next = NULL;
  e->prev = r->ev_tail;
  e->join = join;
  e->socket = socket;
  memcpy(e->room, room, rl + 1);
  if (r->ev_tail)
    r->ev_tail->next = e;
  else
    r->ev_head = e;
  r->ev_tail = e;
  r->ev_bytes += cost;
  if (h->loop && !ev_is_active(&r->ev_fire))
    ev_timer_start(h->loop, &r->ev_fire);
}

static void presence_fire(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  struct rooms *r = w->data;
  struct host *h = r->h;
  /* Only what was queued before this pass: events the handlers cause wait for the next. */
  struct presence *e = r->ev_head, *last = r->ev_tail;
  r->ev_head = r->ev_tail = NULL;
  r->ev_bytes = 0;
  while (e) {
    struct presence *next = e == last ? NULL : e->next;
    FunctionContext ctx = {0};
    char rid[32];
    host_request_id(h, rid, sizeof rid);
    ctx.size = sizeof ctx;
    ctx.function_name = WS_PRESENCE_FUNCTION;
    ctx.request_id = rid;
    ctx.method = e->join ? "Room:join" : "Room:leave";
    ctx.params.data = e->room;
    ctx.params.len = strlen(e->room);
    ctx.socket.id = e->socket;
    ctx.user_id = e->user;
    int found;
    /* No connection object: calls that need one (cloud_bind_user...) answer CLOUD_ESTATE. */
    int rc = invoke(h, INV_WS, NULL, WS_PRESENCE_FUNCTION, &ctx, &found);
    if (found && rc) {
      h->stats.plugin_errors++;
      log_error(WS_PRESENCE_FUNCTION, rid, "%s of user %s in %s failed: returned %d", ctx.method,
                e->user, e->room, rc);
    }
    free(e->user);
    free(e);
    e = next;
  }
}

/* One more (delta 1) or one fewer (-1) socket of user in room; presence when it is the first
 * in or the last out. */
static void room_user_count(struct host *h, struct room *room, const char *user, int delta,
                            uint64_t socket) {
  size_t ul = strlen(user);
  uintptr_t n = (uintptr_t)map_get(&room->users, user, ul);
  if (delta > 0) {
    if (map_set(&room->users, user, ul, (void *)(n + 1)) == 0 && n == 0)
      presence_queue(h, 1, room->name, user, socket);
  } else if (n <= 1) {
    map_del(&room->users, user, ul);
    if (n == 1)
      presence_queue(h, 0, room->name, user, socket);
  } else
    map_set(&room->users, user, ul, (void *)(n - 1));
}

/* Removes id from room, and the room when it is empty. */
static void room_remove(struct host *h, struct rooms *r, struct room *room, uint64_t id,
                        const char *user) {
  if (!map_del(&room->members, &id, sizeof id))
    return;
  if (user)
    room_user_count(h, room, user, -1, id);
  if (h->cluster) /* other nodes learn this node's members */
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
    if (sr && !(sr->user = strdup(c->user_id))) {
      free(sr);
      sr = NULL;
    }
    if (sr && map_set(&r->by_sock, &s.id, sizeof s.id, sr) < 0) {
      free_sock(NULL, NULL, sr);
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
    if (!room->members.count) {
      map_del(&r->by_name, room->name, room->name_len);
      free_room(NULL, NULL, room);
    }
    return rc;
  }
  sr->v[sr->n++] = room;
  room_user_count(h, room, sr->user, 1, s.id);
  if (h->cluster) /* other nodes learn this node's members */
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
  room_remove(h, r, room, s.id, sr->user);
  if (!sr->n) {
    map_del(&r->by_sock, &s.id, sizeof s.id);
    free_sock(NULL, NULL, sr);
  }
  return 0;
}

void rooms_leave_all(struct host *h, uint64_t id) {
  struct rooms *r = h->rooms;
  struct sock_rooms *sr = r ? map_del(&r->by_sock, &id, sizeof id) : NULL;
  if (!sr)
    return;
  for (int i = 0; i < sr->n; i++)
    room_remove(h, r, sr->v[i], id, sr->user);
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

/* Sends to every socket of map (but except), the text checked once for all of them: how many
 * sockets it reached. */
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

/* A room's history is bounded by its last_n and by bytes: the oldest frames go first. */
#define HISTORY_BYTES_MAX (8 << 20)

/* Drops the oldest kept frames while the room keeps more than last_n or HISTORY_BYTES_MAX. */
static void history_trim(struct host *h, const char *room, struct kept *k) {
  while (k->frames > 0 && (k->frames > k->last_n || k->bytes > HISTORY_BYTES_MAX)) {
    int64_t bytes = 0, oldest = store_room_history_oldest(h->store, room, &bytes);
    if (oldest <= 0 || store_room_history_trim(h->store, room, oldest) < 0)
      break;
    k->frames--;
    k->bytes -= bytes;
  }
}

/* Keeps a frame sent to a kept room, in the pass's commit, before a socket sees it: what a
 * member saw, a later history shows. CLOUD_EIO when the store cannot take it (not sent). */
static int history_add(struct host *h, const char *room, const void *data, size_t len,
                       int is_binary) {
  struct kept *k = map_get(&h->rooms->kept, room, strlen(room));
  if (!k)
    return 0;
  if (store_room_history_add(h->store, room, k->seq + 1, data, len, is_binary) < 0)
    return CLOUD_EIO;
  k->seq++;
  k->frames++;
  k->bytes += (int64_t)len;
  history_trim(h, room, k);
  return 0;
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
  if (!is_binary && !utf8_valid(data, len))
    return CLOUD_EINVAL; /* before it is kept: what history serves is what members could get */
  int rc = history_add(h, name, data, len, is_binary);
  if (rc < 0)
    return rc;
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

json_t *rooms_members(struct host *h, const char *name) {
  json_t *local = rooms_members_local(h, name);
  /* With the other nodes' members as last read (refreshed in the background). */
  return local && h->cluster ? cluster_room_members(h, name, local) : local;
}

json_t *rooms_members_local(struct host *h, const char *name) {
  if (!room_name_valid(name))
    return NULL;
  struct room *room = room_get(h->rooms, name, 0);
  json_t *out = json_array();
  for (size_t i = 0; out && room && i < room->users.nbuckets; i++)
    for (struct map_entry *e = room->users.buckets[i]; e; e = e->next)
      json_array_append_new(out, json_pack("{s:s#, s:I}", "user_id", e->key, (int)e->keylen,
                                           "sockets", (json_int_t)(uintptr_t)e->value));
  return out;
}

json_t *rooms_of(struct host *h, cloud_socket s) {
  json_t *out = json_array();
  struct sock_rooms *sr = h->rooms ? map_get(&h->rooms->by_sock, &s.id, sizeof s.id) : NULL;
  for (int i = 0; out && sr && i < sr->n; i++)
    json_array_append_new(out, json_string(sr->v[i]->name));
  return out;
}

struct room_row {
  struct host *h;
  json_t *out;
  size_t limit;
};

static void list_room(void *arg, const char *key, void *value) {
  (void)key;
  struct room_row *rr = arg;
  struct room *room = value;
  if (json_array_size(rr->out) >= rr->limit)
    return;
  json_array_append_new(rr->out, json_pack("{s:s#, s:i, s:i}", "room", room->name,
                                           (int)room->name_len, "users", (int)room->users.count,
                                           "sockets", (int)room->members.count));
}

static int by_room_name(const void *a, const void *b) {
  const char *x = json_string_value(json_object_get(*(json_t *const *)a, "room"));
  const char *y = json_string_value(json_object_get(*(json_t *const *)b, "room"));
  return strcmp(x, y);
}

json_t *rooms_list_local(struct host *h, size_t limit) {
  struct room_row rr = {h, json_array(), limit};
  if (!rr.out || !h->rooms)
    return rr.out;
  map_each(&h->rooms->by_name, list_room, &rr);
  size_t n = json_array_size(rr.out);
  json_t **v = n ? malloc(n * sizeof *v) : NULL;
  if (!v)
    return rr.out;
  for (size_t i = 0; i < n; i++)
    v[i] = json_incref(json_array_get(rr.out, i));
  qsort(v, n, sizeof *v, by_room_name);
  json_array_clear(rr.out);
  for (size_t i = 0; i < n; i++)
    json_array_append_new(rr.out, v[i]);
  free(v);
  return rr.out;
}

json_t *rooms_list(struct host *h) {
  /* In a cluster this node's view; the cluster-wide list is the cluster's (cluster.c). */
  return rooms_list_local(h, SIZE_MAX);
}

/* --- rooms a user holds ------------------------------------------------------------------ */

int rooms_user_join(struct host *h, const char *user_id, const char *room) {
  if (!user_id_valid(user_id) || !room_name_valid(room))
    return CLOUD_EINVAL;
  json_t *held = store_user_rooms(h->store, user_id, ROOMS_PER_SOCKET_MAX + 1);
  if (!held)
    return CLOUD_EIO;
  int have = 0;
  size_t i;
  json_t *v;
  json_array_foreach(held, i, v) have |= !strcmp(json_string_value(v), room);
  size_t n = json_array_size(held);
  json_decref(held);
  if (!have && n >= ROOMS_PER_SOCKET_MAX)
    return CLOUD_EFULL;
  int exists = store_user_exists(h->store, user_id);
  if (exists <= 0)
    return exists < 0 ? CLOUD_EIO : CLOUD_ENOUSER;
  if (!have && store_user_room(h->store, user_id, room, 1) < 0)
    return CLOUD_EIO;
  h->rooms->user_rooms_used = 1;
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  int joined = 0;
  for (struct conn *c = u ? u->head : NULL; c; c = c->user_next)
    if (rooms_join(h, (cloud_socket){c->id}, room) == 0)
      joined++;
  return joined;
}

int rooms_user_leave(struct host *h, const char *user_id, const char *room) {
  if (!user_id_valid(user_id) || !room_name_valid(room))
    return CLOUD_EINVAL;
  int held = store_user_room(h->store, user_id, room, 0);
  if (held < 0)
    return CLOUD_EIO;
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  int left = 0;
  for (struct conn *c = u ? u->head : NULL; c; c = c->user_next)
    if (rooms_leave(h, (cloud_socket){c->id}, room) == 0)
      left++;
  return held || left ? left : CLOUD_EINVAL;
}

void rooms_socket_ready(struct host *h, struct conn *c) {
  /* A fresh user holds nothing (nobody knew its id), and most hosts never use user rooms: no
   * read per connection then (connection churn). */
  if (c->fresh_user || !h->rooms->user_rooms_used)
    return;
  json_t *held = store_user_rooms(h->store, c->user_id, ROOMS_PER_SOCKET_MAX);
  size_t i;
  json_t *v;
  json_array_foreach(held, i, v) {
    int rc = rooms_join(h, (cloud_socket){c->id}, json_string_value(v));
    if (rc < 0)
      log_warn(WS_PRESENCE_FUNCTION, c->request_id, "socket of %s did not join its room %s (%d)",
               c->user_id, json_string_value(v), rc);
  }
  json_decref(held);
}

void rooms_socket_rebound(struct host *h, uint64_t socket_id, const char *user_id) {
  struct sock_rooms *sr =
      h->rooms ? map_get(&h->rooms->by_sock, &socket_id, sizeof socket_id) : NULL;
  char *id = sr ? strdup(user_id) : NULL;
  if (!id)
    return;
  for (int i = 0; i < sr->n; i++) {
    room_user_count(h, sr->v[i], sr->user, -1, socket_id);
    room_user_count(h, sr->v[i], id, 1, socket_id);
  }
  free(sr->user);
  sr->user = id;
}

json_t *rooms_user_sockets(struct host *h, const char *user_id) {
  if (!user_id_valid(user_id))
    return NULL;
  json_t *out = json_array();
  struct user_live *u = map_get(&h->users, user_id, strlen(user_id));
  for (struct conn *c = u ? u->head : NULL; out && c; c = c->user_next)
    json_array_append_new(
        out, json_pack("{s:I, s:n, s:n}", "socket", (json_int_t)c->id, "session", "node"));
  return out;
}

/* --- history ----------------------------------------------------------------------------- */

int rooms_keep(struct host *h, const char *room, int last_n) {
  struct rooms *r = h->rooms;
  if (!room_name_valid(room) || last_n < 0 || last_n > ROOM_KEEP_MAX)
    return CLOUD_EINVAL;
  size_t rl = strlen(room);
  struct kept *k = map_get(&r->kept, room, rl);
  if (!k && !last_n)
    return 0;
  if (!k && r->kept.count >= ROOMS_KEPT_MAX)
    return CLOUD_EFULL;
  if (store_room_keep(h->store, room, last_n) < 0)
    return CLOUD_EIO;
  if (!last_n) {
    free(map_del(&r->kept, room, rl));
    return 0;
  }
  if (!k) {
    if (!(k = calloc(1, sizeof *k)) || map_set(&r->kept, room, rl, k) < 0) {
      free(k);
      return CLOUD_ENOMEM;
    }
  }
  k->last_n = last_n;
  history_trim(h, room, k); /* a smaller last_n drops the oldest now, not at the next send */
  return 0;
}

struct history_to {
  struct host *h;
  cloud_socket s;
  int rc;
};

static int history_one(void *arg, const void *data, size_t len, int is_binary) {
  struct history_to *t = arg;
  int rc = t->h->net->ws_send(t->h, t->s, data, len, is_binary);
  if (rc < 0)
    t->rc = rc;
  return rc;
}

int rooms_history(struct host *h, cloud_socket s, const char *room, int n) {
  if (!room_name_valid(room) || n < 0)
    return CLOUD_EINVAL;
  if (!h->net->ws_find(h, s))
    return CLOUD_ECLOSED;
  if (!n || !map_get(&h->rooms->kept, room, strlen(room)))
    return 0;
  struct history_to t = {h, s, 0};
  int sent = store_room_history_each(h->store, room, n > ROOM_KEEP_MAX ? ROOM_KEEP_MAX : n,
                                     history_one, &t);
  if (sent < 0)
    return CLOUD_EIO;
  return sent == 0 && t.rc < 0 ? t.rc : sent;
}
