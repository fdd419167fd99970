/* defer.h: HTTP responses that come later (cloud_defer), completed exactly once from any
 * thread, or answered 504 after --defer-timeout. Owns the table of outstanding ones. */
#ifndef WSHOST_DEFER_H
#define WSHOST_DEFER_H

#include "host.h"

struct deferred;

int defers_open(struct host *h);
/* At shutdown, loop stopped: forgets every outstanding response (their clients get nothing
 * more) and lets go of the plugin versions they kept loaded. The table stays, so a plugin
 * thread that completes one later gets CLOUD_EINVAL. */
void defers_cancel(struct host *h);
/* After the plugins are unloaded (no plugin thread runs any more). */
void defers_free(struct host *h);
size_t defers_outstanding(struct host *h);

/* cloud_defer for request r of function fn: the handle to give the plugin, or NULL (out of
 * memory). A second call for the same request returns the same handle. Loop thread only. */
cloud_deferred *defer_begin(struct host *h, struct http_req *r, const char *fn);
/* cloud_deferred_json / _text, from any thread. 0; CLOUD_EINVAL for an unknown, completed or
 * timed-out handle or a bad status; CLOUD_ENOMEM; CLOUD_EFULL when the loop's queue is full. */
int defer_complete(struct host *h, cloud_deferred *d, int status, const char *content_type,
                   const void *body, size_t len);
/* 1 while d is a known handle not yet completed or timed out (its client may be gone). */
int defer_open(struct host *h, cloud_deferred *d);
/* The request a deferred response is for, NULL once the client went away (or the handle is
 * done). Loop thread only: --isolation process adds the worker's response headers to it. */
struct http_req *defer_request(struct host *h, cloud_deferred *d);
/* The response of d's request is given another way (a stream): d is done, without a response
 * and without its timeout. The request, or NULL (unknown, done, the client went). Loop only. */
struct http_req *defer_handover(struct host *h, cloud_deferred *d);
/* The request went away (client closed): the response, when it comes, goes nowhere. */
void defer_detach(struct deferred *d);

#endif
