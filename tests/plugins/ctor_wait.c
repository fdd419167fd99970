/* ctor_wait: a constructor that does not return until the file named by the environment
 * variable WSTEST_RELEASE exists (at most 60 s; at once when the variable is unset). It
 * stands for a constructor that spins for a long time. Built with FOREVER (ctor_forever.c) it
 * never returns at all. Over HTTP it answers {"ctor": "returned", "build": BUILD}. */
#include <cloud.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef BUILD
#define BUILD 1
#endif

__attribute__((constructor)) static void wait_for_release(void) {
  const char *release = getenv("WSTEST_RELEASE");
  if (!release)
    return;
  time_t end = time(NULL) + 60;
#ifdef FOREVER
  for (;;)
    sleep(1);
#endif
  while (access(release, F_OK) != 0 && time(NULL) < end)
    usleep(10 * 1000);
}

CLOUD_FUNCTION(ctx) {
  return cloud_response_json(ctx, 200, json_pack("{s:s, s:i}", "ctor", "returned", "build", BUILD));
}
