/* test_metrics.c: host/metrics.c, the counters and the Prometheus text renderer: histogram
 * buckets (edges, cumulative, +Inf = count), refusal labels and their bound, label escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static const struct metrics_gauges no_gauges = {
    .users_stored = -1, .outbox_depth = -1, .wal_bytes = -1, .db_bytes = -1};

static char *render(const struct metrics *m) {
  size_t len = 0;
  char *text = metrics_render(m, &no_gauges, &len);
  assert_non_null(text);
  assert_int_equal(strlen(text), len);
  assert_true(len > 0 && text[len - 1] == '\n');
  return text;
}

static void assert_line(const char *text, const char *line) {
  char want[512];
  snprintf(want, sizeof want, "\n%s\n", line);
  if (!strstr(text, want)) {
    fprintf(stderr, "missing line: %s\n", line);
    fail();
  }
}

static void test_histogram_buckets(void **state) {
  (void)state;
  struct metrics m = {0};
  metrics_function_call(&m, "echo", 100000, 0);       /* exactly 100 us: le="0.0001" */
  metrics_function_call(&m, "echo", 100001, 0);       /* just over: le="0.00025" */
  metrics_function_call(&m, "echo", 3000000000u, 1);  /* 3 s, an error */
  metrics_function_call(&m, "echo", 20000000000u, 0); /* 20 s: only +Inf */
  char *t = render(&m);
  assert_line(t, "wshost_function_calls_total{function=\"echo\"} 4");
  assert_line(t, "wshost_function_errors_total{function=\"echo\"} 1");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"0.0001\"} 1");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"0.00025\"} 2");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"2.5\"} 2");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"5\"} 3");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"10\"} 3");
  assert_line(t, "wshost_function_duration_seconds_bucket{function=\"echo\",le=\"+Inf\"} 4");
  assert_line(t, "wshost_function_duration_seconds_count{function=\"echo\"} 4");
  assert_line(t, "wshost_function_duration_seconds_sum{function=\"echo\"} 23.000200001");
  /* The store histogram has no labels at all. */
  assert_line(t, "wshost_store_commit_duration_seconds_bucket{le=\"+Inf\"} 0");
  assert_line(t, "wshost_store_commit_duration_seconds_count 0");
  free(t);
  metrics_free(&m);
}

static void test_refusals(void **state) {
  (void)state;
  struct metrics m = {0};
  metrics_upgrade_refused(&m, 503, "too many connections");
  metrics_upgrade_refused(&m, 503, "too many connections");
  metrics_upgrade_refused(&m, 403, "origin not allowed");
  /* A message the host does not know (a plugin's reason) never becomes a label. */
  metrics_upgrade_refused(&m, 401, "user \"x\" said no");
  char *t = render(&m);
  assert_line(t, "wshost_ws_upgrades_refused_total{reason=\"max_connections\",status=\"503\"} 2");
  assert_line(t, "wshost_ws_upgrades_refused_total{reason=\"origin\",status=\"403\"} 1");
  assert_line(t, "wshost_ws_upgrades_refused_total{reason=\"other\",status=\"401\"} 1");
  assert_null(strstr(t, "said no"));
  free(t);
  /* Statuses are bounded: past METRICS_REFUSALS pairs the last one sums, nothing grows. */
  for (int s = 0; s < 100; s++)
    metrics_upgrade_refused(&m, 400 + s, "x");
  assert_int_equal(m.nrefused, METRICS_REFUSALS);
  uint64_t total = 0;
  for (int i = 0; i < m.nrefused; i++)
    total += m.refused[i].n;
  assert_int_equal(total, 104);
  metrics_free(&m);
}

static void test_label_escaping(void **state) {
  (void)state;
  struct metrics m = {0};
  metrics_function_call(&m, "a\"b\\c\nd", 1, 0);
  char *t = render(&m);
  assert_line(t, "wshost_function_calls_total{function=\"a\\\"b\\\\c\\nd\"} 1");
  free(t);
  metrics_free(&m);
}

static void test_every_family_typed(void **state) {
  (void)state;
  struct metrics m = {0};
  metrics_reload(&m, 0);
  metrics_reload(&m, -22);
  metrics_hist_observe(&m.store_commit, 2000000);
  metrics_hist_observe(NULL, 1); /* no histogram: nothing happens */
  char *t = render(&m);
  assert_line(t, "wshost_plugin_reloads_total{result=\"loaded\"} 1");
  assert_line(t, "wshost_plugin_reloads_total{result=\"refused\"} 1");
  assert_line(t, "wshost_store_commit_duration_seconds_bucket{le=\"0.001\"} 0");
  assert_line(t, "wshost_store_commit_duration_seconds_bucket{le=\"0.0025\"} 1");
  assert_line(t, "wshost_store_wal_bytes -1");
  /* Each sample's family has a TYPE line before it. */
  char *save = NULL, *copy = strdup(t);
  char typed[64][96];
  int ntyped = 0;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (!strncmp(line, "# TYPE ", 7)) {
      assert_true(ntyped < 64);
      sscanf(line + 7, "%95s", typed[ntyped++]);
      continue;
    }
    if (line[0] == '#')
      continue;
    int ok = 0;
    for (int i = 0; i < ntyped && !ok; i++)
      ok = !strncmp(line, typed[i], strlen(typed[i]));
    if (!ok)
      fprintf(stderr, "untyped sample: %s\n", line);
    assert_true(ok);
  }
  free(copy);
  free(t);
  metrics_free(&m);
}

/* Event types: the WebSocket and timer events by name, every HTTP method as "HTTP", anything
 * else as "other"; statuses by code, out-of-range ones not at all. */
static void test_events_and_statuses(void **state) {
  (void)state;
  struct metrics m = {0};
  metrics_event(&m, "WebSocket:message", 1000);
  metrics_event(&m, "WebSocket:message", 1000);
  metrics_event(&m, "GET", 1000);
  metrics_event(&m, "POST", 1000);
  metrics_event(&m, "Timer", 1000);
  metrics_event(&m, "WebSocket:nonsense", 1000);
  metrics_event(&m, "get", 1000);
  metrics_event(&m, NULL, 1000);
  metrics_event(&m, "", 1000);
  metrics_http_response(&m, 200);
  metrics_http_response(&m, 200);
  metrics_http_response(&m, 599);
  metrics_http_response(&m, 99);
  metrics_http_response(&m, 600);
  char *text = render(&m);
  assert_line(text, "wshost_event_duration_seconds_count{event=\"WebSocket:message\"} 2");
  assert_line(text, "wshost_event_duration_seconds_count{event=\"HTTP\"} 2");
  assert_line(text, "wshost_event_duration_seconds_count{event=\"Timer\"} 1");
  assert_line(text, "wshost_event_duration_seconds_count{event=\"other\"} 4");
  assert_null(strstr(text, "event=\"WebSocket:close\"")); /* never seen: no series */
  assert_line(text, "wshost_http_requests_total{status=\"200\"} 2");
  assert_line(text, "wshost_http_requests_total{status=\"599\"} 1");
  assert_null(strstr(text, "status=\"99\""));
  assert_null(strstr(text, "status=\"600\""));
  assert_line(text, "wshost_build_info{abi=\"0\",lws=\"unknown\",version=\"unknown\"} 1");
  free(text);
  metrics_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_histogram_buckets),   cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_label_escaping),      cmocka_unit_test(test_every_family_typed),
      cmocka_unit_test(test_events_and_statuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
