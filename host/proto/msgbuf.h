/* msgbuf.h: assembles a WebSocket message from its fragments and checks it.
 * Owns the buffer of one connection's message in progress and the size and UTF-8 rules. */
#ifndef WSHOST_MSGBUF_H
#define WSHOST_MSGBUF_H

#include <stddef.h>

struct msgbuf {
  char *data;
  size_t len, cap, max;
  int is_binary;
  int busy; /* a message is in progress */
};

enum msgbuf_result {
  MSGBUF_MORE = 0,     /* fragment taken, message not complete */
  MSGBUF_DONE = 1,     /* message complete in data/len (NUL-terminated) */
  MSGBUF_TOOBIG = -1,  /* over max: close 1009 */
  MSGBUF_BADUTF8 = -2, /* text message not valid UTF-8: close 1007 */
  MSGBUF_NOMEM = -3,
};

void msgbuf_init(struct msgbuf *m, size_t max);
/* Adds a fragment (or a piece of one). final: the message ends here; is_binary counts on the
 * first piece of a message. After MSGBUF_DONE call msgbuf_reset; after an error, close. */
enum msgbuf_result msgbuf_add(struct msgbuf *m, const void *frag, size_t len, int final,
                              int is_binary);
/* Forgets the completed message, keeps the buffer for the next one (shrinks a large one). */
void msgbuf_reset(struct msgbuf *m);
void msgbuf_free(struct msgbuf *m);
/* 1 if s[0..len) is valid UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
int utf8_valid(const unsigned char *s, size_t len);

#endif
