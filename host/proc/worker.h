/* worker.h: --isolation process: the pool of worker processes that run every plugin call, as
 * the serving process sees it (fork, route events in order, apply their SDK calls, crashes). */
#ifndef WSHOST_WORKER_H
#define WSHOST_WORKER_H

#include "host.h"
#include "invocation.h"

/* The SDK calls a worker sends back (W_CALL), applied on the serving process's loop. */
enum worker_op {
  OP_SEND = 1,     /* sock, data, is_binary */
  OP_CLOSE,        /* sock, code, reason */
  OP_BIND,         /* user id (the event's connection) */
  OP_SEND_USER,    /* user id, data, is_binary */
  OP_SHARED_GET,   /* key -> JSON text */
  OP_SHARED_SET,   /* key, JSON text */
  OP_SHARED_DEL,   /* key */
  OP_HEADER,       /* request header by name -> value */
  OP_RESP_HEADER,  /* name, value: a response header of the event's request */
  OP_ROOM_JOIN,    /* sock, room */
  OP_ROOM_LEAVE,   /* sock, room */
  OP_ROOM_SEND,    /* room, data, is_binary, except */
  OP_BROADCAST,    /* data, is_binary, except */
  OP_ROOM_MEMBERS, /* room -> JSON text */
  OP_SOCKET_ROOMS, /* sock -> JSON text */
  OP_TIMER_START,  /* name, first_ms, every_ms */
  OP_TIMER_STOP,   /* name */
  OP_DEFER_DONE,   /* handle, status, content type, body */
  OP_ENV,          /* name -> value */
  OP_REJECT,       /* status, reason (the connection event's upgrade) */
  OP_ACCEPT_PROTO, /* subprotocol name (the connection event's upgrade) */
  OP_DEFER_PUSH,   /* handle, user id, data, is_binary */
  OP_USER_JOIN,    /* user id, room */
  OP_USER_LEAVE,   /* user id, room */
  OP_ROOMS,        /* -> JSON text */
  OP_USER_SOCKETS, /* user id -> JSON text */
  OP_ROOM_KEEP,    /* room, last_n */
  OP_ROOM_HISTORY, /* sock, room, n */
  OP_USER_CREATE,  /* user id */
  OP_JWT_SIGN,     /* claims JSON text, ttl_s -> token */
  OP_JWT_VERIFY,   /* token -> claims JSON text */
  OP_SOCKETS,      /* -> [[socket id, user id], ...] (cloud_sockets_each walks it here) */
  OP_STREAM_START, /* status, content type, sse, headers JSON -> stream id, first event id */
  OP_STREAM_WRITE, /* stream id, bytes */
  OP_STREAM_END    /* stream id */
};

/* Event kinds beyond enum inv_kind on the wire: stop after what is queued. */
#define WORKER_QUIT 0

/* Starts cfg.workers workers when --isolation process is set (else does nothing). Call with
 * the plugins loaded and the loop created. 0 or -errno. */
int workers_open(struct host *h);
/* Kills every worker (a function stuck in a loop cannot hold the way down) and reaps it.
 * Later events are dropped (the serving process never runs them itself). */
void workers_close(struct host *h);
/* After workers_close, once nothing can invoke any more: frees the pool. */
void workers_free(struct host *h);
/* 1 when plugin calls go to workers. */
int workers_on(const struct host *h);
/* Calls and answers refused because they named what the worker was not handed (another
 * request, deferred response or sequence number), or replies it left unread past the bound:
 * each replaced the worker. */
uint64_t workers_violations(const struct host *h);
/* invoke() for --isolation process: the same contract, but the call runs in a worker. WS
 * messages, closes and errors, HTTP functions (as a deferred response) and timers return at
 * once (found 1, result 0; the result is logged when the worker answers); the connection
 * event, the interceptor and __init__ wait for their answer. */
int workers_invoke(struct host *h, enum inv_kind kind, void *obj, const char *name,
                   FunctionContext *ctx, int *found);
/* plugins_on_swap hook: every worker is replaced by one with the new code, then __init__'s
 * own hook runs (arg is the host). */
void workers_on_swap(void *arg, const char *name);

/* The worker process's side (worker_proc.c): never returns. fd is its end of the pair. */
void worker_main(struct host *h, int fd, int index);

#endif
