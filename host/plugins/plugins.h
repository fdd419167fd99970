/* plugins.h: the functions in the plugins folder: load from a private copy, ABI check, swap,
 * unload, and the inotify watch that drives hot reload. Owns every dlopen handle. */
#ifndef WSHOST_PLUGINS_H
#define WSHOST_PLUGINS_H

#include "host.h"

/* ABI versions this host serves. */
#define PLUGINS_ABI_MIN 1
#define PLUGINS_ABI_MAX 3

/* Checks the folder, cleans the runtime folder and loads every valid function in it.
 * Files that fail are logged and recorded; only an unusable folder fails. 0 or -errno.
 * api: the table every plugin gets (api.c's; kept by address, for the life of p). */
int plugins_open(struct host *h, const cloud_api *api, struct plugins **out);
/* Starts watching the folder through the lws event loop. 0 or -errno. */
int plugins_watch(struct plugins *p, struct lws_vhost *vh);
/* Stops pending reloads; call before the lws context goes away. */
void plugins_unwatch(struct plugins *p);
/* Waits, blocking, until no load and no CLOUD_FINI is in progress (each is bounded by
 * --load-timeout; one past it is left behind): shutdown and tests. */
void plugins_settle(struct plugins *p);
/* Runs each loaded version's fini hook, unloads it and removes the runtime folder. */
void plugins_close(struct plugins *p);

/* Runs function name on ctx. Returns its result; *found is 0 when no version is loaded. */
int plugins_call(struct plugins *p, const char *name, FunctionContext *ctx, int *found);
int plugins_loaded(const struct plugins *p, const char *name);
/* The CLOUD_OPT_* bits name's current version exports (CLOUD_OPTIONS in cloud.h); 0 when it
 * exports none or nothing is loaded. */
uint32_t plugins_options(const struct plugins *p, const char *name);
/* fn(arg, name) runs after the watch swapped a new version of name in (not at start, not for
 * plugins_reload called directly): how the core learns of reloads without plugins.c naming it. */
void plugins_on_swap(struct plugins *p, void (*fn)(void *arg, const char *name), void *arg);
/* Keeps name's current version loaded (not its fini, not dlclose) until unpinned, even when a
 * reload or a removal replaces it: a deferred response is still to come from it. Returns the
 * pin (NULL when nothing is loaded); plugins_unpin(NULL) does nothing. */
void *plugins_pin(struct plugins *p, const char *name);
void plugins_unpin(struct plugins *p, void *pin);
/* Loads (or unloads, when the file is gone) name's file, outside the watch: used by the watch,
 * the admin API and tests. The load runs on the loader thread: with the loop running this
 * returns -EINPROGRESS and the loop swaps the version in when it is done (on_swap then runs);
 * before the loop exists it waits, bounded by --load-timeout. 0 if a version was swapped in or
 * unloaded (the old version's CLOUD_FINI then runs on a thread of its own: plugins_settle),
 * negative when refused. */
int plugins_reload(struct plugins *p, const char *name);
/* A worker process (--isolation process) is a fork of this one: the versions are loaded, but
 * threads their init started are not there. plugins_rerun_init runs every current version's
 * init again in this process (its result is ignored: the load already accepted the version);
 * plugins_run_fini runs their fini (before the worker exits). */
void plugins_rerun_init(struct plugins *p);
/* The host's private runtime folder (0700; emptied at start): uploads' temp files go there. */
const char *plugins_run_dir(const struct plugins *p);
void plugins_run_fini(struct plugins *p);
/* The current version of name: its number (0 when none is loaded) and its file's sha256. */
int plugins_current(const struct plugins *p, const char *name, char sha256[65]);
/* Unloads name's current version now, with why as its last error (a quarantine in
 * --isolation process). 0, or -ENOENT when nothing is loaded. */
int plugins_unload(struct plugins *p, const char *name, const char *why);
/* For /_/status: {"<name>": {"version", "loaded_at", "file", "last_error", ...}}. */
json_t *plugins_status(const struct plugins *p);

/* lws callback of the watch protocol. */
int plugins_watch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len);

#endif
