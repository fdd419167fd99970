/* stream.h: streamed HTTP responses (cloud_stream_*, cloud_sse_send): a response sent as it is
 * written, chunked, from any thread, bounded by --max-send-queue. Owns the table of streams;
 * http.c writes their bytes to the client. */
#ifndef WSHOST_STREAM_H
#define WSHOST_STREAM_H

#include "host.h"

struct stream;

/* Told, on the loop, when some of a stream's bytes were written or its client went (what a
 * worker that writes to it needs to know). written: bytes written so far in all. */
typedef void (*stream_notify_fn)(void *arg, uint64_t id, uint64_t written, int closed);

/* Streams open at once, at most; stream_start past it: CLOUD_EFULL. */
#define STREAM_MAX 4096

/* Starts r's response as a stream: status, content type (sse: text/event-stream, ids from the
 * request's Last-Event-ID + 1). key: what cloud_stream_write finds it by in this process (the
 * ctx), or NULL. *id: its number. 0, CLOUD_ESTATE (already responded or streaming),
 * CLOUD_EINVAL, CLOUD_EFULL, CLOUD_ENOMEM. Loop only. */
int stream_start(struct host *h, struct http_req *r, const void *key, int status,
                 const char *content_type, int sse, uint64_t *id);
/* The stream found by key (0: none). Any thread. */
uint64_t stream_find(struct host *h, const void *key);
/* 1 if it is a Server-Sent-Events stream, 0 if not, CLOUD_ECLOSED when there is none. */
int stream_is_sse(struct host *h, uint64_t id);
void stream_set_notify(struct host *h, uint64_t id, stream_notify_fn fn, void *arg);

/* Queues bytes (copied). 0; CLOUD_ECLOSED (the client went, or the stream ended);
 * CLOUD_EFULL (more than --max-send-queue bytes would be waiting); CLOUD_ENOMEM. Any thread. */
int stream_write(struct host *h, uint64_t id, const void *data, size_t len);
/* One event of a Server-Sent-Events stream: "id: N", "event: E" (if any), a "data:" line per
 * line of data. As stream_write; CLOUD_EINVAL for an event name with CR or LF. */
int stream_sse(struct host *h, uint64_t id, const char *event, const char *data);
/* The id the next event of a Server-Sent-Events stream gets (0: no such stream). */
uint64_t stream_first_event(struct host *h, uint64_t id);
/* Ends it after what is queued (the last chunk). As stream_write. */
int stream_end(struct host *h, uint64_t id);

/* http.c's side, loop only. The head to send, once (status, content type, sse); 1 if due. */
int stream_head(struct stream *s, int *status, const char **content_type, int *sse);
/* Takes up to cap queued bytes into buf: how many; *fin when the end was asked and nothing is
 * left. */
size_t stream_take(struct host *h, struct stream *s, char *buf, size_t cap, int *fin);
/* Whether bytes (or the end) wait. */
int stream_pending(struct stream *s);
/* The client went, or the last chunk was written: the stream is gone (writes: ECLOSED). */
void stream_detach(struct host *h, struct stream *s);

#endif
