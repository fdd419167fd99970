/* accept.h: accepting connections on the listening socket the supervisor hands over, and
 * giving them to lws; backs off when descriptors run out instead of spinning. */
#ifndef WSHOST_ACCEPT_H
#define WSHOST_ACCEPT_H

#include "host.h"

/* Watches each of h->listen_fds on h->loop and adopts each connection into h->vhost. */
void accept_start(struct host *h);
void accept_stop(struct host *h);
/* The accepted descriptor fd came through an --admin-bind listener. */
int accept_via_admin(const struct host *h, int fd);

#endif
