/* defer_push_thread: POST {"user_id", "message"}: cloud_deferred_send_to_user called from a
 * thread of the function's own (CONTRACT 8: cloud_deferred_* are safe from any thread). The
 * function joins the thread before it returns; the answer is the push's outcome. */
#include <cloud.h>
#include <pthread.h>

struct job {
  cloud_deferred *d;
  const char *user, *message;
  int rc;
};

static void *run(void *arg) {
  struct job *j = arg;
  j->rc = cloud_deferred_send_to_user(j->d, j->user, j->message);
  return NULL;
}

CLOUD_FUNCTION(ctx) {
  struct job j = {cloud_defer(ctx), json_string_value(json_object_get(ctx->body, "user_id")),
                  json_string_value(json_object_get(ctx->body, "message")), 0};
  pthread_t t;
  if (!j.d)
    return cloud_response_json(ctx, 500, json_pack("{ss}", "error", "no deferred response"));
  if (pthread_create(&t, NULL, run, &j))
    return cloud_deferred_json(j.d, 500, json_pack("{ss}", "error", "no thread"));
  pthread_join(t, NULL);
  if (j.rc < 0) /* not accepted: the function answers with the code itself */
    return cloud_deferred_json(j.d, 422, json_pack("{si}", "code", j.rc));
  return 0;
}
