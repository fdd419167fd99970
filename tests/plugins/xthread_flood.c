/* xthread_flood: POST {"n", "size"}: a thread of the function's own makes n cloud_broadcast
 * calls of size bytes each while the function holds the event loop (it joins the thread
 * before it returns), so every accepted send waits in the loop's cross-thread queue at once.
 * With "inline": true the function makes the calls itself, on the loop (in a cluster each is
 * a PUBLISH that waits to be written until the function returns). Answers {"ok", "full",
 * "other"}: the sends accepted, refused with CLOUD_EFULL, and failed otherwise. */
#include <cloud.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct job {
  int n;
  size_t size;
  char *text;
  int ok, full, other;
};

static void *run(void *arg) {
  struct job *j = arg;
  for (int i = 0; i < j->n; i++) {
    int rc = cloud_broadcast(j->text, (cloud_socket){0});
    if (rc >= 0)
      j->ok++;
    else if (rc == CLOUD_EFULL)
      j->full++;
    else
      j->other++;
  }
  return NULL;
}

CLOUD_FUNCTION(ctx) {
  struct job j = {(int)json_integer_value(json_object_get(ctx->body, "n")),
                  (size_t)json_integer_value(json_object_get(ctx->body, "size")),
                  NULL,
                  0,
                  0,
                  0};
  if (j.n < 1 || j.n > 100000 || j.size < 1 || j.size > (16u << 20))
    return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "n 1..100000, size 1..16 MiB"));
  j.text = malloc(j.size + 1);
  if (!j.text)
    return cloud_response_json(ctx, 500, json_pack("{ss}", "error", "no memory"));
  memset(j.text, 'x', j.size);
  j.text[j.size] = 0;
  pthread_t t;
  if (json_is_true(json_object_get(ctx->body, "inline")))
    run(&j);
  else if (pthread_create(&t, NULL, run, &j)) {
    free(j.text);
    return cloud_response_json(ctx, 500, json_pack("{ss}", "error", "no thread"));
  } else
    pthread_join(t, NULL);
  free(j.text);
  return cloud_response_json(ctx, 200,
                             json_pack("{sisisi}", "ok", j.ok, "full", j.full, "other", j.other));
}
