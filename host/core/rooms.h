/* rooms.h: named groups of live WebSocket connections: membership both ways (room -> sockets,
 * socket -> rooms), sends to a room or to everyone. In memory: rooms describe live sockets. */
#ifndef WSHOST_ROOMS_H
#define WSHOST_ROOMS_H

#include "host.h"

#define ROOM_NAME_MAX 128
/* Rooms one socket may be in at once, and rooms one user may hold (CLOUD_EFULL past it). */
#define ROOMS_PER_SOCKET_MAX 1024
/* cloud_room_keep: frames one room keeps at most, and rooms that may keep any. */
#define ROOM_KEEP_MAX 1000
#define ROOMS_KEPT_MAX 10000

/* [A-Za-z0-9_.:@-]{1,128}, the names of rooms and of timers. */
int room_name_valid(const char *name);

int rooms_open(struct host *h);
void rooms_close(struct host *h);

/* The back ends of cloud_room_*; loop thread only. Results as in cloud.h. */
int rooms_join(struct host *h, cloud_socket s, const char *room);
int rooms_leave(struct host *h, cloud_socket s, const char *room);
int rooms_send(struct host *h, const char *room, const void *data, size_t len, int is_binary,
               cloud_socket except);
int rooms_broadcast(struct host *h, const void *data, size_t len, int is_binary,
                    cloud_socket except);
/* [{"user_id", "sockets"}] of a room (empty if none), NULL for a bad name. New reference. */
json_t *rooms_members(struct host *h, const char *room);
/* The cluster's local delivery and view: a room's (or every) socket on this node
 * for a message from another node; this node's members only. */
int rooms_deliver(struct host *h, const char *room, const void *data, size_t len, int is_binary);
int rooms_deliver_all(struct host *h, const void *data, size_t len, int is_binary);
json_t *rooms_members_local(struct host *h, const char *room);
/* The names of the rooms s is in, as a new array (empty if none or closed). */
json_t *rooms_of(struct host *h, cloud_socket s);
/* s leaves every room: its connection closed. */
void rooms_leave_all(struct host *h, uint64_t socket_id);
size_t rooms_count(const struct host *h);
/* This node's rooms, [{"room", "users", "sockets"}] sorted by name, at most limit of them (the
 * admin API's GET /_/rooms). New reference, NULL on out of memory. */
json_t *rooms_list_local(struct host *h, size_t limit);

/* cloud_rooms: this node's rooms as [{"room", "users", "sockets"}]. New reference. */
json_t *rooms_list(struct host *h);
/* cloud_user_join / cloud_user_leave: the user holds the room (stored), and every socket of
 * the user is in it, those that connect later too (rooms_socket_ready). Sockets that joined or
 * left, CLOUD_ENOUSER for an unknown user, CLOUD_EINVAL for a bad name (leave: or not held). */
int rooms_user_join(struct host *h, const char *user_id, const char *room);
int rooms_user_leave(struct host *h, const char *user_id, const char *room);
/* A socket's connection event accepted it (its user is final): it joins its user's rooms. */
void rooms_socket_ready(struct host *h, struct conn *c);
/* cloud_bind_user moved the socket to another user: its rooms count it for that one. */
void rooms_socket_rebound(struct host *h, uint64_t socket_id, const char *user_id);
/* cloud_user_sockets: [{"socket", "session", "node"}] of the user here. New reference. */
json_t *rooms_user_sockets(struct host *h, const char *user_id);
/* cloud_room_keep / cloud_room_history (results as in cloud.h). */
int rooms_keep(struct host *h, const char *room, int last_n);
int rooms_history(struct host *h, cloud_socket s, const char *room, int n);

#endif
