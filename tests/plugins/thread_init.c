/* thread_init: a CLOUD_INIT that starts a thread and no CLOUD_FINI to stop it. The thread runs
 * this file's code every millisecond for as long as the process lives, so unmapping the file
 * under it (dlclose at a reload) takes the process down. Over HTTP it answers
 * {"build": BUILD, "ticks": n}; build another with -DBUILD=2. */
#include <cloud.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#ifndef BUILD
#define BUILD 1
#endif

static atomic_long ticks;

__attribute__((noinline)) static void tick(void) {
  atomic_fetch_add(&ticks, 1);
}

static void *run(void *arg) {
  (void)arg;
  for (;;) {
    tick();
    usleep(1000);
  }
  return NULL;
}

CLOUD_INIT() {
  pthread_t t;
  if (pthread_create(&t, NULL, run, NULL))
    return 1;
  pthread_detach(t);
  return 0;
}

CLOUD_FUNCTION(ctx) {
  return cloud_response_json(
      ctx, 200, json_pack("{s:i, s:I}", "build", BUILD, "ticks", (json_int_t)atomic_load(&ticks)));
}
