/* sendq.c: a connection's outgoing frames as a singly linked FIFO, one allocation a frame
 * (header, lws's pre-padding and payload together), bounded in bytes. */
#include "sendq.h"

#include "cloud.h"

#include <stdlib.h>
#include <string.h>

void sendq_init(struct sendq *q, size_t max_bytes) {
  memset(q, 0, sizeof *q);
  q->max_bytes = max_bytes;
}

int sendq_push(struct sendq *q, const void *data, size_t len, int is_binary) {
  /* An empty queue always takes one frame: the message limit, not the queue, bounds size. */
  if (q->count && q->bytes + len > q->max_bytes)
    return CLOUD_EFULL;
  struct sendq_frame *f = malloc(sizeof *f + SENDQ_PRE + len + 1);
  if (!f)
    return CLOUD_ENOMEM;
  f->next = NULL;
  f->len = len;
  f->sent = 0;
  f->is_binary = is_binary;
  f->tag = 0;
  if (len)
    memcpy(f->buf + SENDQ_PRE, data, len);
  f->buf[SENDQ_PRE + len] = 0;
  if (q->tail)
    q->tail->next = f;
  else
    q->head = f;
  q->tail = f;
  q->bytes += len;
  q->count++;
  return 0;
}

void sendq_pop(struct sendq *q) {
  struct sendq_frame *f = q->head;
  if (!f)
    return;
  q->head = f->next;
  if (!q->head)
    q->tail = NULL;
  q->bytes -= f->len;
  q->count--;
  free(f);
}

void sendq_clear(struct sendq *q) {
  while (q->head)
    sendq_pop(q);
}
