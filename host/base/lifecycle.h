/* lifecycle.h: which thread is running a plugin's CLOUD_INIT or CLOUD_FINI off the event loop
 * (the plugins' loader and fini threads), so the SDK can run that thread's loop-only calls
 * (cloud_shared_*, cloud_env) on the loop for it instead of refusing them. */
#ifndef WSHOST_LIFECYCLE_H
#define WSHOST_LIFECYCLE_H

/* Marks (1) or unmarks (0) the calling thread. */
void lifecycle_thread_set(int on);
/* 1 on a marked thread. */
int lifecycle_thread(void);

#endif
