/* laf: the rest of Laf's cloud object from an HTTP function, driven by ?do=:
 *   sign (claims = the JSON body, ?ttl=), verify (?token=), sockets (?stop=N: stop after N),
 *   invoke (?fn=, ?method=; the body passed on).
 * As a callee of cloud_invoke (query empty) it acts on its method:
 *   ECHO: what it was given; TEXT: a plain-text answer; FAIL: returns 1, no response;
 *   CRASH: a segfault; RECURSE: invokes "laf" with RECURSE again until refused;
 *   NONE: answers nothing (204). */
#include <cloud.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct walk {
  int stop, seen;
  json_t *users;
};

static int each(cloud_socket s, const char *user_id, void *arg) {
  struct walk *w = arg;
  json_array_append_new(w->users,
                        json_pack("{sI ss}", "socket", (json_int_t)s.id, "user", user_id));
  return w->stop && ++w->seen >= w->stop;
}

static int callee(FunctionContext *ctx) {
  if (cloud_method_is(ctx, "ECHO"))
    return cloud_response_json(ctx, 201,
                               json_pack("{ss sO? ss? ss ss sO? ss? sb}", "method", ctx->method,
                                         "body", ctx->body, "raw", ctx->body_raw, "url", ctx->url,
                                         "function", ctx->function_name, "user", ctx->user,
                                         "request_id", ctx->request_id, "header",
                                         cloud_request_header(ctx, "host") != NULL));
  if (cloud_method_is(ctx, "TEXT"))
    return cloud_response_text(ctx, 200, "plain words");
  if (cloud_method_is(ctx, "FAIL"))
    return 1;
  if (cloud_method_is(ctx, "NONE"))
    return 0;
  if (cloud_method_is(ctx, "CRASH"))
    raise(SIGSEGV);
  if (cloud_method_is(ctx, "RECURSE")) {
    json_t *res = NULL;
    int rc = cloud_invoke("laf", "RECURSE", NULL, &res);
    json_t *out;
    if (rc < 0)
      out = json_pack("{si si}", "bottom", rc, "levels", 1);
    else
      out = json_pack("{sO sI}", "bottom", json_object_get(res, "bottom"), "levels",
                      json_integer_value(json_object_get(res, "levels")) + 1);
    json_decref(res);
    return cloud_response_json(ctx, 200, out);
  }
  return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "unknown method"));
}

CLOUD_FUNCTION(ctx) {
  if (ctx->socket.id)
    return 0;
  const char *what = json_string_value(json_object_get(ctx->query, "do"));
  if (!what)
    return callee(ctx);
  if (!strcmp(what, "sign")) {
    const char *ttl = json_string_value(json_object_get(ctx->query, "ttl"));
    char *t = cloud_jwt_sign(ctx->body, ttl ? atoi(ttl) : 0);
    json_t *out = json_pack("{ss?}", "token", t);
    free(t);
    return cloud_response_json(ctx, 200, out);
  }
  if (!strcmp(what, "verify")) {
    json_t *c = cloud_jwt_verify(json_string_value(json_object_get(ctx->query, "token")));
    return cloud_response_json(ctx, 200, json_pack("{so?}", "claims", c));
  }
  if (!strcmp(what, "sockets")) {
    const char *stop = json_string_value(json_object_get(ctx->query, "stop"));
    struct walk w = {stop ? atoi(stop) : 0, 0, json_array()};
    int n = cloud_sockets_each(each, &w);
    return cloud_response_json(ctx, 200, json_pack("{si so}", "calls", n, "sockets", w.users));
  }
  if (!strcmp(what, "invoke")) {
    const char *fn = json_string_value(json_object_get(ctx->query, "fn"));
    const char *method = json_string_value(json_object_get(ctx->query, "method"));
    json_t *res = NULL;
    int rc = cloud_invoke(fn, method, ctx->body, &res);
    /* The caller goes on after its callee: what it says now still reaches its client. */
    return cloud_response_json(
        ctx, 200, json_pack("{si so? ss}", "rc", rc, "result", res, "after", "caller went on"));
  }
  return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "unknown do"));
}
