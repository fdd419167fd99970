/* wire.h: the messages between the serving process and its workers (--isolation process):
 * length-prefixed frames on a stream socketpair, each a type byte and a list of fields. */
#ifndef WSHOST_WIRE_H
#define WSHOST_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A stream, not SOCK_SEQPACKET: a datagram on an AF_UNIX socket is bounded by the socket's
 * send buffer (net.core.wmem_default, 208 KiB; more needs SO_SNDBUF up to net.core.wmem_max,
 * a sysctl the host cannot count on), and a message may be --max-message (1 MiB) or more. */
#define WIRE_MAX (64u << 20) /* a frame larger than this is a broken peer */

enum wire_type {
  /* serving process -> worker */
  W_EVENT = 1, /* run a function for one event */
  W_REPLY,     /* the answer to a W_CALL */
  /* worker -> serving process */
  W_CALL,  /* an SDK call to apply on the loop; answered with W_REPLY when it wants one */
  W_DONE,  /* the event finished: its result (and an HTTP response) */
  W_READY, /* the worker is up */
  /* serving process -> worker */
  W_STREAM /* a streamed response's progress: id, bytes written in all, whether it is over */
};

/* A frame being built: 4 bytes of length, the type byte, then fields. */
struct wbuf {
  char *p;
  size_t len, cap;
  int failed; /* out of memory: the frame is not sent */
};

void wbuf_begin(struct wbuf *b, enum wire_type t);
void wbuf_u64(struct wbuf *b, uint64_t v);
/* Bytes with a length; NULL is kept apart from "" (a NULL field reads back as NULL). */
void wbuf_bytes(struct wbuf *b, const void *p, size_t len);
void wbuf_str(struct wbuf *b, const char *s);
/* Finishes the length prefix. 0, or -ENOMEM. */
int wbuf_end(struct wbuf *b);
void wbuf_free(struct wbuf *b);

/* A frame being read (the payload after the length). Strings point into the frame and are
 * NUL-terminated there; a short frame makes every later read return 0 / NULL and sets bad. */
struct wread {
  const char *p, *end;
  int bad;
};

void wread_init(struct wread *r, const void *payload, size_t len);
uint64_t wread_u64(struct wread *r);
const char *wread_bytes(struct wread *r, size_t *len);
const char *wread_str(struct wread *r);

/* Blocking whole writes and reads on fd (EINTR retried). 0, or -errno / -EPIPE at the end. */
int wire_write_all(int fd, const void *p, size_t len);
/* Reads one frame into *buf (grown as needed): its payload length in *len. */
int wire_read_frame(int fd, char **buf, size_t *cap, size_t *len);

#endif
