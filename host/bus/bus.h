/* bus.h: the connection to Redis behind --redis: two hiredis async contexts (commands and
 * pub/sub) on the host's libev loop, a liveness ping, reconnection with backoff by itself. */
#ifndef WSHOST_BUS_H
#define WSHOST_BUS_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stddef.h>

struct bus;

/* What the bus tells its owner (cluster.c). Called on the loop thread. */
struct bus_hooks {
  void *arg;
  void (*up)(void *arg);   /* both connections ready (first time and after each reconnect) */
  void (*down)(void *arg); /* lost, or an attempt failed: commands in flight got NULL */
  void (*message)(void *arg, const char *channel, const char *data, size_t len);
};

/* A command's reply; r NULL when the command failed because the bus went down. r is only
 * valid during the call (hiredis frees it). */
typedef void (*bus_reply_fn)(void *arg, redisReply *r);

/* Parses url (redis://[:password@]host[:port][/db], unix:///path[?db=N]); the password comes
 * from the URL, else password (--redis-password[-file], NULL: none). Starts connecting; never
 * blocks. 0 or -errno (-EINVAL: a URL it cannot read, message logged). */
int bus_open(struct ev_loop *loop, const char *url, const char *password,
             const struct bus_hooks *hooks, struct bus **out);
/* Disconnects (commands in flight fail) and frees. */
void bus_close(struct bus *b);
/* 1 while both connections answer. */
int bus_up(const struct bus *b);
/* 1 during the first connection attempt (nothing has failed yet). */
int bus_starting(const struct bus *b);
/* Sends a command (argv, binary safe). 0 once sent: fn gets the reply (or NULL) exactly once;
 * -ENOTCONN while down (fn is not called). fn may be NULL. */
int bus_cmd(struct bus *b, bus_reply_fn fn, void *arg, int argc, const char **argv,
            const size_t *lens);
/* Commands written to the connection and not yet taken by Redis, in bytes, at most, for the
 * sends that may be dropped (bus_cmd_droppable). */
#define BUS_MAX_UNSENT (16u << 20)
/* bus_cmd for a send that may be dropped when Redis cannot keep up (a PUBLISH to a room or to
 * everyone): -ENOBUFS while more than BUS_MAX_UNSENT bytes wait to be written, so a flood of
 * large broadcasts cannot grow the write buffer without bound. */
int bus_cmd_droppable(struct bus *b, bus_reply_fn fn, void *arg, int argc, const char **argv,
                      const size_t *lens);
/* Subscribes to a channel for as long as the bus lives (again after each reconnect) or until
 * bus_unsubscribe. 0 or -ENOMEM. Idempotent. */
int bus_subscribe(struct bus *b, const char *channel);
void bus_unsubscribe(struct bus *b, const char *channel);

#endif
