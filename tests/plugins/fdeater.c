/* fdeater: takes every free descriptor of the host for a while, for the descriptor
 * exhaustion test: GET /fdeater?hold_ms=N opens /dev/null until EMFILE, answers how many it
 * holds, and closes them all N ms later from a thread of its own. */
#include <cloud.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_HELD 65536

static int held[MAX_HELD];
static int nheld;
static int hold_ms;

static void *release(void *arg) {
  (void)arg;
  usleep((useconds_t)hold_ms * 1000);
  for (int i = 0; i < nheld; i++)
    close(held[i]);
  nheld = 0;
  return NULL;
}

CLOUD_FUNCTION(ctx) {
  const char *ms = json_string_value(json_object_get(ctx->query, "hold_ms"));
  if (nheld)
    return cloud_response_json(ctx, 409, json_pack("{s:s}", "error", "already holding"));
  hold_ms = ms ? atoi(ms) : 1000;
  while (nheld < MAX_HELD) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      break;
    held[nheld++] = fd;
  }
  int n = nheld;
  pthread_t t;
  if (pthread_create(&t, NULL, release, NULL) == 0)
    pthread_detach(t);
  else
    release(NULL);
  return cloud_response_json(ctx, 200, json_pack("{s:i}", "held", n));
}
