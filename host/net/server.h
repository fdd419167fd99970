/* server.h: the lws context, its protocols and vhost, and the event loop with its timers and
 * signals. Owns the loop's lifetime: start, run until SIGTERM/SIGINT, drain, stop. */
#ifndef WSHOST_SERVER_H
#define WSHOST_SERVER_H

#include "host.h"

/* Creates the context and listens. 0 or negative. */
int server_start(struct host *h);
/* Runs the loop until a signal asks to stop, then drains connections (close 1001). */
int server_run(struct host *h);
void server_stop(struct host *h);

#endif
