/* fini_wait: a CLOUD_FINI that does not return until the file named by the environment
 * variable WSTEST_RELEASE exists (at most 60 s; at once when it is unset), then sets
 * cloud_shared "fini_done" to its BUILD. Its CLOUD_INIT sets cloud_shared "init_build" to BUILD.
 * Over HTTP it answers {"build": BUILD, "init_build": ..., "fini_done": ...}. Build another with
 * -DBUILD=2. */
#include <cloud.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef BUILD
#define BUILD 1
#endif

CLOUD_INIT() {
  json_t *b = json_integer(BUILD);
  int rc = cloud_shared_set("init_build", b);
  json_decref(b);
  return rc == 0 ? 0 : 1;
}

CLOUD_FINI() {
  const char *release = getenv("WSTEST_RELEASE");
  time_t end = time(NULL) + 60;
  while (release && access(release, F_OK) != 0 && time(NULL) < end)
    usleep(10 * 1000);
  json_t *b = json_integer(BUILD);
  cloud_shared_set("fini_done", b);
  json_decref(b);
}

CLOUD_FUNCTION(ctx) {
  json_t *init = cloud_shared_get("init_build"), *fini = cloud_shared_get("fini_done");
  return cloud_response_json(
      ctx, 200,
      json_pack("{s:i, s:o?, s:o?}", "build", BUILD, "init_build", init, "fini_done", fini));
}
