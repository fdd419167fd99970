/* lifecycle.c: the mark of a thread running a plugin's CLOUD_INIT or CLOUD_FINI off the loop. */
#include "lifecycle.h"

static __thread int marked;

void lifecycle_thread_set(int on) {
  marked = on;
}

int lifecycle_thread(void) {
  return marked;
}
