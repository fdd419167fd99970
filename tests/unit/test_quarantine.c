/* test_quarantine.c: host/quarantine.c replaying its crash file: a crash in a function
 * quarantines that file hash, a lift (or a crash outside functions) does not, lifts persist,
 * garbage lines are skipped, and a big file is compacted to what is still in force. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "quarantine.h"

static char dir[64], db[128], file[256];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/wshost-qtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(db, sizeof db, "%s/w.db", dir);
  quarantine_path(db, NULL, 0, file, sizeof file);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(file);
  rmdir(dir);
  return 0;
}

static void write_file(const char *text) {
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

#define SHA_A "aaaa000000000000000000000000000000000000000000000000000000000000"
#define SHA_B "bbbb000000000000000000000000000000000000000000000000000000000000"

static void test_replay(void **state) {
  (void)state;
  assert_string_equal(file + strlen(dir), "/w.db-crashes.jsonl");
  write_file("{\"kind\":\"crash\",\"t\":1,\"signal\":11,\"function\":\"f\",\"version\":1,"
             "\"sha256\":\"" SHA_A "\",\"request_id\":\"r1\"}\n"
             "not json at all\n"
             "{\"kind\":\"crash\",\"t\":2,\"signal\":11}\n" /* outside any function */
             "{\"kind\":\"crash\",\"t\":3,\"signal\":6,\"function\":\"g\",\"version\":2,"
             "\"sha256\":\"" SHA_B "\"}\n"
             "{\"kind\":\"lift\",\"t\":4,\"function\":\"g\",\"by\":\"admin\"}\n");
  struct quarantine *q = NULL;
  assert_int_equal(quarantine_open(db, &q), 0);
  assert_true(quarantine_blocks(q, "f", SHA_A));
  assert_false(quarantine_blocks(q, "f", SHA_B)); /* a different build loads */
  assert_false(quarantine_blocks(q, "g", SHA_B)); /* lifted */
  assert_null(quarantine_get(q, "g"));
  json_t *st = quarantine_status(q);
  assert_int_equal(json_array_size(json_object_get(st, "crashes")), 3);
  assert_int_equal(json_object_size(json_object_get(st, "quarantined")), 1);
  json_decref(st);
  assert_int_equal(quarantine_lift(q, "f", "test"), 0);
  assert_int_equal(quarantine_lift(q, "f", "test"), -ENOENT);
  assert_false(quarantine_blocks(q, "f", SHA_A));
  quarantine_close(q);
  /* The lift was written down: the next process sees it. */
  assert_int_equal(quarantine_open(db, &q), 0);
  assert_null(quarantine_get(q, "f"));
  quarantine_close(q);
}

static void test_compaction_keeps_what_is_in_force(void **state) {
  (void)state;
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fprintf(f, "{\"kind\":\"crash\",\"t\":1,\"signal\":11,\"function\":\"keep\",\"version\":1,"
             "\"sha256\":\"" SHA_A "\"}\n");
  for (int i = 0; i < 3000; i++)
    fprintf(f,
            "{\"kind\":\"crash\",\"t\":%d,\"signal\":11,\"function\":\"x%d\",\"version\":1,"
            "\"sha256\":\"" SHA_B "\"}\n{\"kind\":\"lift\",\"t\":%d,\"function\":\"x%d\"}\n",
            i + 2, i, i + 2, i);
  fclose(f);
  struct stat before, after;
  assert_int_equal(stat(file, &before), 0);
  assert_true(before.st_size > 256 * 1024);
  struct quarantine *q = NULL;
  assert_int_equal(quarantine_open(db, &q), 0);
  quarantine_close(q);
  assert_int_equal(stat(file, &after), 0);
  assert_true(after.st_size < 16 * 1024);
  assert_int_equal(quarantine_open(db, &q), 0);
  assert_true(quarantine_blocks(q, "keep", SHA_A));
  json_t *st = quarantine_status(q);
  assert_int_equal(json_object_size(json_object_get(st, "quarantined")), 1);
  assert_int_equal(json_array_size(json_object_get(st, "crashes")), QUARANTINE_CRASHES_SHOWN);
  json_decref(st);
  /* The crash counts (wshost_crashes_total) outlive the records compaction dropped: 3001
   * crashes, "keep" one of them, the names past the first few summed as "other". */
  const json_t *counts = quarantine_crash_counts(q);
  const char *name;
  json_t *n;
  json_int_t total = 0;
  json_object_foreach((json_t *)counts, name, n) total += json_integer_value(n);
  assert_int_equal(total, 3001);
  assert_int_equal(json_integer_value(json_object_get(counts, "keep")), 1);
  assert_true(json_integer_value(json_object_get(counts, "other")) > 2000);
  assert_true(json_object_size(counts) <= 65);
  quarantine_close(q);
}

/* A crash outside any function counts under "-"; one added while running counts at once. */
static void test_crash_counts(void **state) {
  (void)state;
  write_file("{\"kind\":\"crash\",\"t\":1,\"signal\":11,\"function\":\"f\",\"version\":1,"
             "\"sha256\":\"" SHA_A "\"}\n"
             "{\"kind\":\"crash\",\"t\":2,\"signal\":11}\n"
             "{\"kind\":\"lift\",\"t\":3,\"function\":\"f\",\"by\":\"admin\"}\n");
  struct quarantine *q = NULL;
  assert_int_equal(quarantine_open(db, &q), 0);
  assert_int_equal(json_integer_value(json_object_get(quarantine_crash_counts(q), "f")), 1);
  assert_int_equal(json_integer_value(json_object_get(quarantine_crash_counts(q), "-")), 1);
  json_t *rec = json_pack("{ss sI si ss si ss}", "kind", "crash", "t", (json_int_t)4, "signal", 11,
                          "function", "f", "version", 2, "sha256", SHA_B);
  assert_int_equal(quarantine_add(q, rec), 0);
  json_decref(rec);
  assert_int_equal(json_integer_value(json_object_get(quarantine_crash_counts(q), "f")), 2);
  quarantine_close(q);
  assert_int_equal(quarantine_open(db, &q), 0);
  assert_int_equal(json_integer_value(json_object_get(quarantine_crash_counts(q), "f")), 2);
  quarantine_close(q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compaction_keeps_what_is_in_force, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_counts, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
