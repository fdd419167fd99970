/* api.h: the table of host functions handed to every plugin (cloud_api), and cloud_shared.
 * Owns the bridge from the plugin's cloud_* calls to the host's modules. */
#ifndef WSHOST_API_H
#define WSHOST_API_H

#include "host.h"

/* The table plugins get. api_bind must have been called first. */
const cloud_api *api_table(void);
/* Points the table's functions at h (they have no context argument of their own). */
void api_bind(struct host *h);
const char *api_strerror(int code);
/* In a worker process (--isolation process): every plugin's table becomes `with`. */
void api_table_replace(const cloud_api *with);

#endif
