/* rooms.h: named groups of live WebSocket connections: membership both ways (room -> sockets,
 * socket -> rooms), sends to a room or to everyone. In memory: rooms describe live sockets. */
#ifndef WSHOST_ROOMS_H
#define WSHOST_ROOMS_H

#include "host.h"

#define ROOM_NAME_MAX 128
/* Rooms one socket may be in at once (CLOUD_EFULL past it). */
#define ROOMS_PER_SOCKET_MAX 1024

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

#endif
