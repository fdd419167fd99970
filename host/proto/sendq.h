/* sendq.h: a connection's outgoing frames, waiting for lws's writable callback.
 * Owns the frames and the byte bound; the one place bytes wait before the socket. */
#ifndef WSHOST_SENDQ_H
#define WSHOST_SENDQ_H

#include <stddef.h>

/* Room lws needs in front of a payload it writes (LWS_PRE); checked against lws in ws.c. */
#define SENDQ_PRE 16

/* A frame sent to a user (not to one socket): if its connection closes before it is written,
 * it goes to the user's other connections or the outbox instead of being lost. */
#define SENDQ_TO_USER (-1)

struct sendq_frame {
  struct sendq_frame *next;
  size_t len;
  size_t sent; /* payload bytes already handed to lws: a message written in fragments */
  int is_binary;
  long long tag; /* the caller's (0 from sendq_push): ws.c puts an outbox row id (> 0) here, or
                   SENDQ_TO_USER for a cloud_send_to_user frame */
  unsigned char buf[]; /* SENDQ_PRE bytes of room, then len bytes of payload */
};

struct sendq {
  struct sendq_frame *head, *tail;
  size_t bytes, count, max_bytes;
};

void sendq_init(struct sendq *q, size_t max_bytes);
/* Copies data into a new frame at the tail. 0, CLOUD_EFULL past max_bytes, CLOUD_ENOMEM. */
int sendq_push(struct sendq *q, const void *data, size_t len, int is_binary);
/* The frame to write next, or NULL. */
static inline struct sendq_frame *sendq_peek(const struct sendq *q) {
  return q->head;
}
/* Drops the head frame after it was written. */
void sendq_pop(struct sendq *q);
void sendq_clear(struct sendq *q);

#endif
