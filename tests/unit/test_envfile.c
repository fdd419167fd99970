/* test_envfile.c: --env-file parsing, the permission rule, and the fallback to the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "envfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64];

static void write_file(const char *text, mode_t mode) {
  snprintf(path, sizeof path, "/tmp/wshost-envfile-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  assert_int_equal(chmod(path, mode), 0);
}

static void test_parses_lines(void **st) {
  (void)st;
  write_file("# comment\n\nDB_URL=postgres://x?a=b\nexport API_KEY = 'k e y'\nQUOTED=\"v\"\r\n"
             "EMPTY=\n  SPACED=  padded \nKEEP=\"  kept \"\n",
             0600);
  struct envfile *e = NULL;
  char err[256] = "";
  assert_int_equal(envfile_load(path, &e, err, sizeof err), 0);
  assert_string_equal(envfile_get(e, "DB_URL"), "postgres://x?a=b");
  assert_string_equal(envfile_get(e, "API_KEY"), "k e y");
  assert_string_equal(envfile_get(e, "QUOTED"), "v");
  assert_string_equal(envfile_get(e, "EMPTY"), "");
  assert_string_equal(envfile_get(e, "SPACED"), "padded");
  assert_string_equal(envfile_get(e, "KEEP"), "  kept ");
  assert_int_equal(envfile_count(e), 6);
  envfile_free(e);
  unlink(path);
}

static void test_environment_behind(void **st) {
  (void)st;
  write_file("A=from-file\n", 0640);
  setenv("A", "from-env", 1);
  setenv("WSHOST_TEST_ONLY_ENV", "env-only", 1);
  struct envfile *e = NULL;
  char err[256];
  assert_int_equal(envfile_load(path, &e, err, sizeof err), 0);
  assert_string_equal(envfile_get(e, "A"), "from-file");
  assert_string_equal(envfile_get(e, "WSHOST_TEST_ONLY_ENV"), "env-only");
  assert_null(envfile_get(e, "WSHOST_SURELY_NOT_SET_ANYWHERE"));
  assert_string_equal(envfile_get(NULL, "WSHOST_TEST_ONLY_ENV"), "env-only");
  envfile_free(e);
  unlink(path);
}

static void test_world_readable_refused(void **st) {
  (void)st;
  write_file("SECRET=1\n", 0644);
  struct envfile *e = (struct envfile *)0x1;
  char err[256] = "";
  assert_int_equal(envfile_load(path, &e, err, sizeof err), -EACCES);
  assert_ptr_equal(e, (struct envfile *)0x1);
  assert_non_null(strstr(err, "chmod o-rwx"));
  unlink(path);
}

/* Its group may read it (0640 root:wshost, as a package installs it), never write it: a
 * group-writable file let anyone in the group change what every function reads. */
static void test_group_writable_refused_group_readable_kept(void **st) {
  (void)st;
  static const mode_t refused[] = {0620, 0660, 0602, 0622};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    write_file("SECRET=1\n", refused[i]);
    struct envfile *e = (struct envfile *)0x1;
    char err[256] = "";
    assert_int_equal(envfile_load(path, &e, err, sizeof err), -EACCES);
    assert_ptr_equal(e, (struct envfile *)0x1);
    assert_non_null(strstr(err, "g-w"));
    unlink(path);
  }
  write_file("SECRET=1\n", 0640);
  struct envfile *e = NULL;
  char err[256] = "";
  assert_int_equal(envfile_load(path, &e, err, sizeof err), 0);
  assert_string_equal(envfile_get(e, "SECRET"), "1");
  envfile_free(e);
  unlink(path);
}

static void test_bad_lines_refused_with_line_number(void **st) {
  (void)st;
  const char *bad[] = {"A=1\nno equals sign\n", "1A=x\n", "A-B=x\n", "=x\n", "A=\xff\xfe\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_file(bad[i], 0600);
    struct envfile *e = NULL;
    char err[256] = "";
    assert_int_equal(envfile_load(path, &e, err, sizeof err), -EINVAL);
    assert_null(e);
    assert_non_null(strstr(err, "line"));
    unlink(path);
  }
}

static void test_missing_file(void **st) {
  (void)st;
  struct envfile *e = NULL;
  char err[256] = "";
  assert_int_equal(envfile_load("/nonexistent/wshost.env", &e, err, sizeof err), -ENOENT);
  assert_non_null(strstr(err, "/nonexistent/wshost.env"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parses_lines),
      cmocka_unit_test(test_environment_behind),
      cmocka_unit_test(test_world_readable_refused),
      cmocka_unit_test(test_group_writable_refused_group_readable_kept),
      cmocka_unit_test(test_bad_lines_refused_with_line_number),
      cmocka_unit_test(test_missing_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
