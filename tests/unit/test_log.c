/* test_log.c: host/log.c, the line format (text and JSON), the per-site repeat limit with its
 * "repeated N times" summary, lws's lines, and whole lines from many threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <unistd.h>

#include "log.h"

static int64_t fake_ms;
static int64_t fake_clock(void) {
  return fake_ms;
}

/* The limiter's own (monotonic) clock: by default it follows fake_ms, so a test moves both
 * with one assignment; test_wall_clock_set_back moves them apart. */
static int64_t mono_offset;
static int64_t fake_mono(void) {
  return fake_ms + mono_offset;
}

static FILE *out;

/* Each test writes into a fresh temp file with the fake clock at 2000-02-29T12:34:56.789Z. */
static int setup(void **state) {
  (void)state;
  out = tmpfile();
  assert_non_null(out);
  log_set_fd(fileno(out));
  fake_ms = 951827696789;
  mono_offset = 0;
  log_set_clock(fake_clock);
  log_set_limiter_clock(fake_mono);
  log_set_level(LOG_DEBUG);
  log_set_format(LOG_FORMAT_TEXT);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  log_set_fd(2);
  log_set_clock(NULL);
  log_set_limiter_clock(NULL);
  log_set_format(LOG_FORMAT_TEXT);
  log_set_level(LOG_INFO);
  fclose(out);
  return 0;
}

/* Everything written so far; the caller frees it. */
static char *output(void) {
  long n = lseek(fileno(out), 0, SEEK_END);
  char *buf = calloc(1, (size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(pread(fileno(out), buf, (size_t)n, 0), n);
  return buf;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static int count_str(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
    n++;
  return n;
}

static void test_text_format(void **state) {
  (void)state;
  log_info("fn", "abcd-1", "hello %d", 42);
  log_warn(NULL, NULL, "two\nlines\rhere");
  log_debug(NULL, NULL, "x");
  log_set_level(LOG_WARN);
  log_info(NULL, NULL, "below the level");
  char *s = output();
  assert_string_equal(s, "2000-02-29T12:34:56.789Z info  test_log fn abcd-1 hello 42\n"
                         "2000-02-29T12:34:56.789Z warn  test_log - - two lines here\n"
                         "2000-02-29T12:34:56.789Z debug test_log - - x\n");
  free(s);
}

static void test_dates(void **state) {
  (void)state;
  const struct {
    int64_t ms;
    const char *want;
  } cases[] = {{0, "1970-01-01T00:00:00.000Z"},
               {86399999, "1970-01-01T23:59:59.999Z"},
               {1709164800000, "2024-02-29T00:00:00.000Z"},
               {4102444799001, "2099-12-31T23:59:59.001Z"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fake_ms = cases[i].ms;
    log_info(NULL, NULL, "%zu", i);
  }
  char *s = output();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!strstr(s, cases[i].want))
      fail_msg("no %s in\n%s", cases[i].want, s);
  free(s);
}

static void test_json_format(void **state) {
  (void)state;
  log_set_format(LOG_FORMAT_JSON);
  log_error("fn", "r-1", "quote \" backslash \\ tab \t bad utf8 \xff\xfe ok \xc3\xa9 nl \n");
  log_info(NULL, NULL, "no function");
  char big[3000];
  memset(big, 'a', sizeof big);
  big[sizeof big - 1] = 0;
  big[2040] = '"'; /* an escape right where the message is cut */
  log_info(NULL, NULL, "%s", big);
  char *s = output();
  assert_int_equal(count_lines(s), 3);
  char *save = NULL, *line = strtok_r(s, "\n", &save);
  json_error_t err;
  json_t *j = json_loads(line, 0, &err);
  if (!j)
    fail_msg("not JSON: %s (%s)", line, err.text);
  assert_string_equal(json_string_value(json_object_get(j, "time")), "2000-02-29T12:34:56.789Z");
  assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
  assert_string_equal(json_string_value(json_object_get(j, "source")), "test_log");
  assert_string_equal(json_string_value(json_object_get(j, "function")), "fn");
  assert_string_equal(json_string_value(json_object_get(j, "request_id")), "r-1");
  assert_string_equal(json_string_value(json_object_get(j, "msg")),
                      "quote \" backslash \\ tab \t bad utf8 \xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9 "
                      "nl \n");
  json_decref(j);
  j = json_loads(strtok_r(NULL, "\n", &save), 0, &err);
  assert_non_null(j);
  assert_null(json_object_get(j, "function"));
  assert_null(json_object_get(j, "request_id"));
  json_decref(j);
  line = strtok_r(NULL, "\n", &save);
  j = json_loads(line, 0, &err);
  if (!j)
    fail_msg("a long line is not JSON: %s", err.text);
  assert_true(strlen(json_string_value(json_object_get(j, "msg"))) > 1000);
  json_decref(j);
  free(s);
}

/* log_emit with a format chosen at run time (the site is the format's address). */
static void log_emitv_test(const char *fmt, int n) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
  log_emit("test_log.c", LOG_INFO, NULL, NULL, fmt, n);
#pragma GCC diagnostic pop
}

static void storm(int n) {
  for (int i = 0; i < n; i++)
    log_warn("_", "r", "admin refused: bad token from 10.0.0.%d", i % 250);
}

static void test_repeats_are_counted_not_written(void **state) {
  (void)state;
  storm(11500);
  log_info(NULL, NULL, "another site"); /* not limited by the storm */
  char *s = output();
  assert_int_equal(count_str(s, "admin refused"), LOG_BURST);
  assert_int_equal(count_str(s, "another site"), 1);
  assert_int_equal(count_str(s, "repeated"), 0);
  free(s);
  log_flush_repeats(0); /* the second is not over: nothing yet */
  s = output();
  assert_int_equal(count_str(s, "repeated"), 0);
  free(s);
  fake_ms += LOG_WINDOW_MS;
  log_flush_repeats(0);
  s = output();
  char want[128];
  snprintf(want, sizeof want,
           "warn  test_log _ r last message repeated %d more times in 1.0 s: "
           "admin refused: bad token from 10.0.0.",
           11500 - LOG_BURST);
  if (!strstr(s, want))
    fail_msg("no '%s' in\n%s", want, s);
  assert_true(strlen(s) < 64 * 1024); /* 11 500 lines would be over 1 MB */
  free(s);
  /* A new second: the site may write again; the summary is not written twice. */
  storm(3);
  log_flush_repeats(1);
  s = output();
  assert_int_equal(count_str(s, "admin refused: bad"), LOG_BURST + 3 + 1);
  assert_int_equal(count_str(s, "repeated"), 1);
  free(s);
}

static void test_summary_before_next_line_of_site(void **state) {
  (void)state;
  storm(LOG_BURST + 7);
  fake_ms += 2500;
  storm(1);
  char *s = output();
  char *summary = strstr(s, "repeated 7 more times in 2.5 s");
  assert_non_null(summary);
  assert_int_equal(count_str(summary, "admin refused: bad"), 2); /* its own text, then the line */
  free(s);
}

/* 120 busy call sites at once: each keeps its own second (sites that hash alike must not
 * evict each other, which would let every line through). */
static void test_many_sites_each_limited(void **state) {
  (void)state;
  static const char *const fmts[] = {
      "site 000 line %d", "site 001 line %d", "site 002 line %d", "site 003 line %d",
      "site 004 line %d", "site 005 line %d", "site 006 line %d", "site 007 line %d",
      "site 008 line %d", "site 009 line %d", "site 010 line %d", "site 011 line %d",
      "site 012 line %d", "site 013 line %d", "site 014 line %d", "site 015 line %d",
      "site 016 line %d", "site 017 line %d", "site 018 line %d", "site 019 line %d",
      "site 020 line %d", "site 021 line %d", "site 022 line %d", "site 023 line %d",
      "site 024 line %d", "site 025 line %d", "site 026 line %d", "site 027 line %d",
      "site 028 line %d", "site 029 line %d", "site 030 line %d", "site 031 line %d",
      "site 032 line %d", "site 033 line %d", "site 034 line %d", "site 035 line %d",
      "site 036 line %d", "site 037 line %d", "site 038 line %d", "site 039 line %d",
      "site 040 line %d", "site 041 line %d", "site 042 line %d", "site 043 line %d",
      "site 044 line %d", "site 045 line %d", "site 046 line %d", "site 047 line %d",
      "site 048 line %d", "site 049 line %d", "site 050 line %d", "site 051 line %d",
      "site 052 line %d", "site 053 line %d", "site 054 line %d", "site 055 line %d",
      "site 056 line %d", "site 057 line %d", "site 058 line %d", "site 059 line %d",
      "site 060 line %d", "site 061 line %d", "site 062 line %d", "site 063 line %d",
      "site 064 line %d", "site 065 line %d", "site 066 line %d", "site 067 line %d",
      "site 068 line %d", "site 069 line %d", "site 070 line %d", "site 071 line %d",
      "site 072 line %d", "site 073 line %d", "site 074 line %d", "site 075 line %d",
      "site 076 line %d", "site 077 line %d", "site 078 line %d", "site 079 line %d",
      "site 080 line %d", "site 081 line %d", "site 082 line %d", "site 083 line %d",
      "site 084 line %d", "site 085 line %d", "site 086 line %d", "site 087 line %d",
      "site 088 line %d", "site 089 line %d", "site 090 line %d", "site 091 line %d",
      "site 092 line %d", "site 093 line %d", "site 094 line %d", "site 095 line %d",
      "site 096 line %d", "site 097 line %d", "site 098 line %d", "site 099 line %d",
      "site 100 line %d", "site 101 line %d", "site 102 line %d", "site 103 line %d",
      "site 104 line %d", "site 105 line %d", "site 106 line %d", "site 107 line %d",
      "site 108 line %d", "site 109 line %d", "site 110 line %d", "site 111 line %d",
      "site 112 line %d", "site 113 line %d", "site 114 line %d", "site 115 line %d",
      "site 116 line %d", "site 117 line %d", "site 118 line %d", "site 119 line %d"};
  for (int round = 0; round < 100; round++)
    for (int i = 0; i < 120; i++)
      log_emitv_test(fmts[i], round);
  log_flush_repeats(1);
  char *s = output();
  assert_int_equal(count_lines(s), 120 * (LOG_BURST + 1));
  assert_int_equal(count_str(s, "repeated"), 120);
  free(s);
}

/* 250 busy call sites, nearly one per slot of the limiter's table: however their keys hash
 * (format strings' addresses move with ASLR), each keeps its own second. With a short probe
 * window some of them evicted each other and wrote far more than LOG_BURST lines. */
static void test_table_nearly_full_each_limited(void **state) {
  (void)state;
  enum { SITES = 250, LEN = 24 };
  static char fmts[SITES][LEN];
  for (int i = 0; i < SITES; i++)
    snprintf(fmts[i], LEN, "busy %03d line %%d", i);
  for (int round = 0; round < 40; round++)
    for (int i = 0; i < SITES; i++)
      log_emitv_test(fmts[i], round);
  log_flush_repeats(1);
  char *s = output();
  assert_int_equal(count_lines(s), SITES * (LOG_BURST + 1));
  assert_int_equal(count_str(s, "repeated 20 more times"), SITES);
  free(s);
}

/* The limiter's second is monotonic: setting the wall clock back an hour does not keep a
 * site suppressed for that hour. */
static void test_wall_clock_set_back(void **state) {
  (void)state;
  for (int i = 0; i < LOG_BURST + 5; i++)
    log_info("test", NULL, "clock line %d", i);
  fake_ms -= 3600 * 1000;
  mono_offset += 3600 * 1000 + LOG_WINDOW_MS; /* an hour back on the wall, 1 s on */
  log_info("test", NULL, "clock line %d", 999);
  char *s = output();
  assert_int_equal(count_str(s, "clock line"), LOG_BURST + 1 + 1); /* + the summary */
  assert_non_null(strstr(s, "repeated 5 more times in 1.0 s"));
  assert_non_null(strstr(s, "clock line 999"));
  free(s);
}

static void test_lws_lines(void **state) {
  (void)state;
  for (int i = 0; i < 1000; i++) {
    char line[64];
    snprintf(line, sizeof line, "accept: errno %d on fd %d\n", 24, 100 + i);
    log_lws_emit(1 /* LLL_ERR */, line);
  }
  log_lws_emit(2 /* LLL_WARN */, "something else\n");
  log_flush_repeats(1);
  char *s = output();
  assert_int_equal(count_str(s, "error lws - - accept: errno 24 on fd"), LOG_BURST);
  assert_int_equal(count_str(s, "repeated 980 more times"), 1);
  assert_int_equal(count_str(s, "warn  lws - - something else\n"), 1);
  free(s);
}

static int64_t ticking_ms;
static pthread_mutex_t tick_lock = PTHREAD_MUTEX_INITIALIZER;
/* Every call is a new second: nothing is limited, so every line of every thread is written. */
static int64_t ticking_clock(void) {
  pthread_mutex_lock(&tick_lock);
  int64_t t = ticking_ms += LOG_WINDOW_MS;
  pthread_mutex_unlock(&tick_lock);
  return t;
}

static void *writer(void *arg) {
  for (int i = 0; i < 500; i++)
    log_info("thread", NULL, "writer %ld line %d %s", (long)(intptr_t)arg, i,
             "padding padding padding padding padding padding padding padding padding");
  return NULL;
}

static void test_threads_write_whole_lines(void **state) {
  (void)state;
  log_set_clock(ticking_clock);
  log_set_limiter_clock(ticking_clock);
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)i), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  char *s = output();
  assert_int_equal(count_lines(s), 2000);
  regex_t rx;
  assert_int_equal(
      regcomp(&rx,
              "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z info  "
              "test_log thread - writer [0-3] line [0-9]+ padding( padding){8}$",
              REG_EXTENDED | REG_NOSUB),
      0);
  char *save = NULL;
  for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    if (regexec(&rx, line, 0, NULL, 0))
      fail_msg("torn line: %s", line);
  regfree(&rx);
  free(s);
}

static void test_emergency_line(void **state) {
  (void)state;
  log_emergency(LOG_ERROR, "signals", "stuck: exiting");
  char *s = output();
  regex_t rx;
  assert_int_equal(regcomp(&rx,
                           "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z error signals - - "
                           "stuck: exiting\n$",
                           REG_EXTENDED | REG_NOSUB),
                   0);
  if (regexec(&rx, s, 0, NULL, 0))
    fail_msg("emergency line: %s", s);
  regfree(&rx);
  free(s);
}

static void test_parse(void **state) {
  (void)state;
  assert_int_equal(log_format_parse("text"), LOG_FORMAT_TEXT);
  assert_int_equal(log_format_parse("json"), LOG_FORMAT_JSON);
  assert_int_equal(log_format_parse("xml"), -1);
  assert_int_equal(log_level_parse("warn"), LOG_WARN);
  assert_int_equal(log_level_parse("loud"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_text_format, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dates, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_format, setup, teardown),
      cmocka_unit_test_setup_teardown(test_repeats_are_counted_not_written, setup, teardown),
      cmocka_unit_test_setup_teardown(test_summary_before_next_line_of_site, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_sites_each_limited, setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_nearly_full_each_limited, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wall_clock_set_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lws_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_write_whole_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_emergency_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_parse, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
