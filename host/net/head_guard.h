/* head_guard.h: reads the first request head of each plain-TCP connection before lws 4.1
 * parses it, and answers the heads lws would drop without a word or misread. */
#ifndef WSHOST_HEAD_GUARD_H
#define WSHOST_HEAD_GUARD_H

#include "host.h"

/* At LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: start watching wsi's first head. */
void head_guard_start(struct host *h, struct lws *wsi);
/* At LWS_CALLBACK_WSI_DESTROY: forget wsi (nothing if it was not watched). */
void head_guard_end(struct host *h, struct lws *wsi);

/* The verdict on one complete head (request line to the blank line, len bytes): 0 when lws
 * can parse it, else the status to answer (400, 431) with why set to a static message.
 * Pure, for the unit tests and fuzzers. */
int head_check(const char *head, size_t len, const char **why);

#endif
