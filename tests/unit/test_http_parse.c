/* test_http_parse.c: host/http_parse.c, the first code every request byte reaches: function
 * names, routes, %-decoding, query strings and bodies by content type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_parse.h"

static int valid(const char *s) {
  return fn_name_valid(s, strlen(s));
}

static void test_fn_name_valid(void **state) {
  (void)state;
  char name[FN_NAME_MAX + 2];
  assert_true(valid("echo"));
  assert_true(valid("a"));
  assert_true(valid("Az09_-"));
  assert_true(valid("__websocket__")); /* valid as a name; http_route keeps it private */
  memset(name, 'x', sizeof name);
  assert_true(fn_name_valid(name, FN_NAME_MAX));
  assert_false(fn_name_valid(name, FN_NAME_MAX + 1));
  assert_false(fn_name_valid("", 0));
  assert_false(fn_name_valid("echo", 0));
  const char *bad[] = {"a.b",  ".",   "..",       "a/b",         "/",    "%2e",  "a%", "a b", "a+b",
                       "a\\b", "a:b", "\xc3\xa9", "caf\xc3\xa9", "\xff", "a\tb", "~x", "a*"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (valid(bad[i]))
      fail_msg("'%s' accepted", bad[i]);
  }
  /* A NUL inside the given length is not a short name. */
  assert_false(fn_name_valid("ab\0c", 4));
  assert_false(fn_name_valid("ab\0", 3));
}

static void test_route_functions(void **state) {
  (void)state;
  char name[FN_NAME_MAX + 1];
  memset(name, '#', sizeof name);
  assert_int_equal(http_route("/echo", name), ROUTE_FUNCTION);
  assert_string_equal(name, "echo");
  memset(name, '#', sizeof name);
  assert_int_equal(http_route("/echo/", name), ROUTE_FUNCTION);
  assert_string_equal(name, "echo");
  assert_int_equal(http_route("/_", name), ROUTE_FUNCTION); /* one underscore is a name */
  assert_string_equal(name, "_");
  assert_int_equal(http_route("/_x", name), ROUTE_FUNCTION);
  assert_string_equal(name, "_x");

  char path[FN_NAME_MAX + 3];
  path[0] = '/';
  memset(path + 1, 'n', FN_NAME_MAX);
  path[FN_NAME_MAX + 1] = 0;
  assert_int_equal(http_route(path, name), ROUTE_FUNCTION);
  assert_int_equal(strlen(name), FN_NAME_MAX);
  path[FN_NAME_MAX + 1] = 'n';
  path[FN_NAME_MAX + 2] = 0;
  assert_int_equal(http_route(path, name), ROUTE_NOT_FOUND);
}

static void test_route_not_found(void **state) {
  (void)state;
  char name[FN_NAME_MAX + 1];
  const char *bad[] = {"/__websocket__", "/__x",    "/__",     "/__/",     "/a/b", "/..",
                       "/../x",          "/%2e%2e", "/%2E%2E", "/.",       "/",    "",
                       "echo",           "//echo",  "/echo//", "/echo.so", "/a b", "/caf\xc3\xa9"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    enum route_kind k = http_route(bad[i], name);
    if (k != ROUTE_NOT_FOUND)
      fail_msg("'%s' routed as %d", bad[i], k);
  }
  assert_int_equal(http_route(NULL, name), ROUTE_NOT_FOUND);
}

static void test_route_admin(void **state) {
  (void)state;
  char name[FN_NAME_MAX + 1];
  assert_int_equal(http_route("/_/status", name), ROUTE_ADMIN);
  assert_string_equal(name, "status");
  assert_int_equal(http_route("/_/healthz", name), ROUTE_ADMIN);
  assert_string_equal(name, "healthz");
  assert_int_equal(http_route("/_/", name), ROUTE_ADMIN);
  assert_string_equal(name, "");

  /* A long admin path is cut to the name buffer, never written past it. */
  char path[3 + 2 * FN_NAME_MAX + 2], big[FN_NAME_MAX + 16];
  memcpy(path, "/_/", 3);
  memset(path + 3, 'a', 2 * FN_NAME_MAX);
  path[3 + 2 * FN_NAME_MAX] = 0;
  memset(big, '#', sizeof big);
  assert_int_equal(http_route(path, big), ROUTE_ADMIN);
  assert_int_equal(strlen(big), FN_NAME_MAX);
  for (size_t i = FN_NAME_MAX + 1; i < sizeof big; i++)
    assert_int_equal(big[i], '#');
  path[3 + 2 * FN_NAME_MAX] = 'a';
  path[3 + 2 * FN_NAME_MAX + 1] = 0;
  assert_int_equal(http_route(path, big), ROUTE_NOT_FOUND);
}

static int decode(const char *in, char *out, int plus) {
  return url_decode(in, strlen(in), out, plus);
}

static void test_url_decode(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(decode("abc", out, 1), 3);
  assert_string_equal(out, "abc");
  assert_int_equal(decode("", out, 1), 0);
  assert_string_equal(out, "");
  assert_int_equal(decode("%2e%2E", out, 0), 2);
  assert_string_equal(out, "..");
  assert_int_equal(decode("a%20b%2Bc", out, 1), 5);
  assert_string_equal(out, "a b+c");
  assert_int_equal(decode("a+b", out, 1), 3);
  assert_string_equal(out, "a b");
  assert_int_equal(decode("a+b", out, 0), 3);
  assert_string_equal(out, "a+b");
  assert_int_equal(decode("%e2%82%ac", out, 1), 3);
  assert_memory_equal(out, "\xe2\x82\xac", 4);
  /* %00 decodes to a NUL byte: the length says so even though strlen would not. */
  assert_int_equal(decode("a%00b", out, 1), 3);
  assert_memory_equal(out, "a\0b", 4);

  const char *bad[] = {"%", "%4", "%zz", "%4g", "%g4", "abc%", "abc%4", "%%41", "%-1", "% 1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (decode(bad[i], out, 1) != -1)
      fail_msg("'%s' decoded", bad[i]);
  /* The length bounds the input: an escape cut by len is bad even if the string goes on. */
  assert_int_equal(url_decode("%41", 2, out, 1), -1);
  assert_int_equal(url_decode("%41", 3, out, 1), 1);
  assert_string_equal(out, "A");
}

static json_t *qp(const char *s) {
  return query_parse(s, strlen(s));
}

static void test_query_parse(void **state) {
  (void)state;
  json_t *q = qp("a=1&b=two&c=");
  assert_non_null(q);
  assert_int_equal(json_object_size(q), 3);
  assert_string_equal(json_string_value(json_object_get(q, "a")), "1");
  assert_string_equal(json_string_value(json_object_get(q, "b")), "two");
  assert_string_equal(json_string_value(json_object_get(q, "c")), "");
  json_decref(q);

  /* Repeated keys become an array of their values, in order. */
  q = qp("id=1&x=y&id=2&id=3");
  assert_non_null(q);
  json_t *ids = json_object_get(q, "id");
  assert_true(json_is_array(ids));
  assert_int_equal(json_array_size(ids), 3);
  assert_string_equal(json_string_value(json_array_get(ids, 0)), "1");
  assert_string_equal(json_string_value(json_array_get(ids, 1)), "2");
  assert_string_equal(json_string_value(json_array_get(ids, 2)), "3");
  assert_string_equal(json_string_value(json_object_get(q, "x")), "y");
  json_decref(q);

  /* Empty pieces and empty keys carry nothing; a key without '=' has the value "". */
  q = qp("&&a=1&&=x&flag&");
  assert_non_null(q);
  assert_int_equal(json_object_size(q), 2);
  assert_string_equal(json_string_value(json_object_get(q, "a")), "1");
  assert_string_equal(json_string_value(json_object_get(q, "flag")), "");
  json_decref(q);

  q = qp("");
  assert_non_null(q);
  assert_int_equal(json_object_size(q), 0);
  json_decref(q);

  /* Keys and values are decoded ('+' is a space); an encoded '&' or '=' stays data. */
  q = qp("na%6De=J+D%C3%A9&k%3D=v%26w");
  assert_non_null(q);
  assert_string_equal(json_string_value(json_object_get(q, "name")), "J D\xc3\xa9");
  assert_string_equal(json_string_value(json_object_get(q, "k=")), "v&w");
  json_decref(q);

  /* The length bounds the string. */
  q = query_parse("a=1&b=2", 3);
  assert_non_null(q);
  assert_int_equal(json_object_size(q), 1);
  assert_string_equal(json_string_value(json_object_get(q, "a")), "1");
  json_decref(q);

  /* Bad escapes, invalid UTF-8 (in a value or a key) and NUL in a key make it invalid. */
  const char *bad[] = {"a=%",      "a=%zz",       "a=1&b=%4", "a=%ff",  "%ff=1",
                       "a=%C0%80", "a=%ED%A0%80", "k%00=1",   "a=\xff", "a=%e2%82"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    q = qp(bad[i]);
    if (q) {
      json_decref(q);
      fail_msg("'%s' parsed", bad[i]);
    }
  }
}

static void test_query_add(void **state) {
  (void)state;
  json_t *o = json_object();
  /* decode 0 keeps the text as it is. */
  assert_int_equal(query_add(o, "a=%41+", 6, 0), 0);
  assert_string_equal(json_string_value(json_object_get(o, "a")), "%41+");
  assert_int_equal(query_add(o, "b=%41+", 6, 1), 0);
  assert_string_equal(json_string_value(json_object_get(o, "b")), "A ");
  assert_int_equal(query_add(o, "=v", 2, 1), 0);
  assert_int_equal(json_object_size(o), 2);
  assert_int_equal(query_add(o, "c=%", 3, 1), -1);
  assert_null(json_object_get(o, "c"));
  json_decref(o);
}

static void test_body_json(void **state) {
  (void)state;
  json_t *b = NULL;
  char err[256] = "";
  const char *obj = "{\"a\":[1,2]}";
  assert_int_equal(body_parse("application/json", obj, strlen(obj), &b, err, sizeof err), 0);
  assert_true(json_is_object(b));
  assert_int_equal(json_array_size(json_object_get(b, "a")), 2);
  json_decref(b);

  /* Parameters and case do not matter. */
  const char *types[] = {"application/json; charset=utf-8", "Application/JSON",
                         "APPLICATION/JSON;charset=UTF-8", " application/json"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    b = NULL;
    assert_int_equal(body_parse(types[i], "[1]", 3, &b, err, sizeof err), 0);
    if (!json_is_array(b))
      fail_msg("content type '%s' not parsed as JSON", types[i]);
    json_decref(b);
  }

  /* Any JSON value, not only objects. */
  assert_int_equal(body_parse("application/json", "42", 2, &b, err, sizeof err), 0);
  assert_true(json_is_integer(b));
  assert_int_equal(json_integer_value(b), 42);
  json_decref(b);
  assert_int_equal(body_parse("application/json", "\"s\"", 3, &b, err, sizeof err), 0);
  assert_string_equal(json_string_value(b), "s");
  json_decref(b);
  assert_int_equal(body_parse("application/json", "null", 4, &b, err, sizeof err), 0);
  assert_true(json_is_null(b));
  json_decref(b);

  /* Malformed: -1, no value, a message. */
  const char *bad[] = {"{", "{\"a\":}", "{} x", "[1,]", "\xff", "nul", "{'a':1}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    b = (json_t *)1;
    assert_int_equal(body_parse("application/json", bad[i], strlen(bad[i]), &b, err, sizeof err),
                     -1);
    assert_null(b);
    if (!strstr(err, "invalid JSON"))
      fail_msg("'%s': message '%s'", bad[i], err);
  }
  /* A client's deep nesting is refused, not a stack overflow in the parser. */
  size_t deep = 1 << 20;
  char *nest = malloc(deep);
  assert_non_null(nest);
  memset(nest, '[', deep);
  assert_int_equal(body_parse("application/json", nest, deep, &b, err, sizeof err), -1);
  assert_null(b);
  assert_non_null(strstr(err, "invalid JSON"));
  free(nest);
  /* The length bounds the body: a valid prefix of garbage parses. */
  assert_int_equal(body_parse("application/json", "[1]garbage", 3, &b, err, sizeof err), 0);
  assert_true(json_is_array(b));
  json_decref(b);
  /* A tiny error buffer is never overrun. */
  char small[8];
  memset(small, '#', sizeof small);
  assert_int_equal(body_parse("application/json", "{", 1, &b, small, 4), -1);
  assert_int_equal(strlen(small), 3);
  assert_int_equal(small[4], '#');
}

static void test_body_other(void **state) {
  (void)state;
  json_t *b = (json_t *)1;
  char err[128];
  const char *form = "name=J+D&x=%41&x=2";
  assert_int_equal(
      body_parse("application/x-www-form-urlencoded", form, strlen(form), &b, err, sizeof err), 0);
  assert_true(json_is_object(b));
  assert_string_equal(json_string_value(json_object_get(b, "name")), "J D");
  assert_int_equal(json_array_size(json_object_get(b, "x")), 2);
  json_decref(b);
  b = (json_t *)1;
  assert_int_equal(
      body_parse("Application/X-WWW-Form-Urlencoded; charset=utf-8", "a=1", 3, &b, err, sizeof err),
      0);
  assert_string_equal(json_string_value(json_object_get(b, "a")), "1");
  json_decref(b);
  b = (json_t *)1;
  assert_int_equal(body_parse("application/x-www-form-urlencoded", "a=%zz", 5, &b, err, sizeof err),
                   -1);
  assert_null(b);

  /* Other types: no parsed body, no error (the raw bytes still reach the function). */
  const char *types[] = {"text/plain",
                         "application/jsonx",
                         "application/json-patch+json",
                         "application/octet-stream",
                         "multipart/form-data; boundary=x",
                         ""};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    b = (json_t *)1;
    assert_int_equal(body_parse(types[i], "{}", 2, &b, err, sizeof err), 0);
    if (b)
      fail_msg("content type '%s' gave a body", types[i]);
  }
  b = (json_t *)1;
  assert_int_equal(body_parse(NULL, "{}", 2, &b, err, sizeof err), 0);
  assert_null(b);

  /* An empty body is no body, whatever the type says (even malformed-looking JSON). */
  b = (json_t *)1;
  assert_int_equal(body_parse("application/json", "", 0, &b, err, sizeof err), 0);
  assert_null(b);
  b = (json_t *)1;
  assert_int_equal(body_parse("application/x-www-form-urlencoded", NULL, 0, &b, err, sizeof err),
                   0);
  assert_null(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fn_name_valid),   cmocka_unit_test(test_route_functions),
      cmocka_unit_test(test_route_not_found), cmocka_unit_test(test_route_admin),
      cmocka_unit_test(test_url_decode),      cmocka_unit_test(test_query_parse),
      cmocka_unit_test(test_query_add),       cmocka_unit_test(test_body_json),
      cmocka_unit_test(test_body_other),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
