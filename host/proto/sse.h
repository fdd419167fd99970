/* sse.h: the text of one Server-Sent Event (the WHATWG event-stream format). */
#ifndef WSHOST_SSE_H
#define WSHOST_SSE_H

#include <stddef.h>
#include <stdint.h>

/* Longest event name accepted. */
#define SSE_EVENT_MAX 128

/* Bytes sse_format writes at most for (event, data); 0 when they cannot make an event (data
 * NULL, an event name with CR or LF, or longer than SSE_EVENT_MAX). */
size_t sse_size(const char *event, const char *data);
/* Writes "id: <id>\n", "event: <event>\n" (event not NULL), "data: <line>\n" per line of data
 * (LF or CRLF ends a line) and a blank line into buf (sse_size bytes at least): how many. */
size_t sse_format(char *buf, uint64_t id, const char *event, const char *data);

#endif
