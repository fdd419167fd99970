/* test_config.c: host/config.c, settings from defaults, WSHOST_* variables and flags:
 * the documented defaults, flags over environment, both flag forms, refusals, --help. */
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

#include "config.h"
#include "log.h"

/* config_parse with argv = {"wshost", the NULL-terminated arguments...}. */
static int parse(struct config *cfg, ...) {
  char *argv[32] = {"wshost"};
  int argc = 1;
  va_list ap;
  va_start(ap, cfg);
  while (argc < 31 && (argv[argc] = va_arg(ap, char *)))
    argc++;
  va_end(ap);
  return config_parse(cfg, argc, argv);
}
#define PARSE(cfg, ...) parse(cfg, __VA_ARGS__, (char *)NULL)

/* Every test starts from an environment without WSHOST_* variables. */
static int clean_env(void **state) {
  (void)state;
  for (;;) {
    char name[256] = "";
    for (char **e = environ; *e; e++)
      if (!strncmp(*e, "WSHOST_", 7)) {
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int)n, *e);
        break;
      }
    if (!name[0])
      return 0;
    unsetenv(name);
  }
}

static void test_defaults(void **state) {
  (void)state;
  struct config c;
  char *argv[] = {"wshost", NULL};
  assert_int_equal(config_parse(&c, 1, argv), 0);
  assert_int_equal(c.port, 8080);
  assert_string_equal(c.plugins_dir, "plugins");
  assert_string_equal(c.db_path, "data/wshost.db");
  assert_null(c.admin_token);
  assert_int_equal(c.max_message, 1048576);
  assert_int_equal(c.max_send_queue, 1048576);
  assert_int_equal(c.max_body, 10485760);
  assert_int_equal(c.ping_interval, 25);
  assert_int_equal(c.pong_timeout, 10);
  assert_int_equal(c.outbox_max, 1000);
  assert_int_equal(c.outbox_ttl, 604800);
  assert_true(c.max_connections > 0);
  assert_true(c.max_header > 0);
  assert_true(c.reload_debounce_ms > 0);
  assert_int_equal(c.admin_loopback_only, 0);
  assert_null(c.allowed_origins);
  assert_null(c.tls_cert);
  assert_null(c.tls_key);
  assert_int_equal(c.log_level, LOG_INFO);
  /* argc 0 (no argv[0]) is the same. */
  assert_int_equal(config_parse(&c, 0, argv + 1), 0);
  assert_int_equal(c.port, 8080);
}

static void test_env_and_flags(void **state) {
  (void)state;
  struct config c;
  setenv("WSHOST_PORT", "9001", 1);
  setenv("WSHOST_MAX_MESSAGE", "2048", 1);
  setenv("WSHOST_ADMIN_LOOPBACK_ONLY", "true", 1);
  setenv("WSHOST_PLUGINS", "/srv/fn", 1);
  setenv("WSHOST_OUTBOX_TTL", "60", 1);
  char *argv[] = {"wshost", NULL};
  assert_int_equal(config_parse(&c, 1, argv), 0);
  assert_int_equal(c.port, 9001);
  assert_int_equal(c.max_message, 2048);
  assert_int_equal(c.admin_loopback_only, 1);
  assert_string_equal(c.plugins_dir, "/srv/fn");
  assert_int_equal(c.outbox_ttl, 60);
  assert_int_equal(c.max_body, 10485760); /* untouched ones keep their default */

  /* A flag wins over its variable, in both forms. */
  assert_int_equal(PARSE(&c, "--port", "9002", "--max-message=4096"), 0);
  assert_int_equal(c.port, 9002);
  assert_int_equal(c.max_message, 4096);
  assert_string_equal(c.plugins_dir, "/srv/fn");
  assert_int_equal(PARSE(&c, "--admin-loopback-only=no"), 0);
  assert_int_equal(c.admin_loopback_only, 0);

  /* A bad variable is an error like a bad flag, even when a flag would override it. */
  setenv("WSHOST_PORT", "eighty", 1);
  assert_int_equal(config_parse(&c, 1, argv), -1);
  setenv("WSHOST_PORT", "9003", 1);
  setenv("WSHOST_LOG_LEVEL", "loud", 1);
  assert_int_equal(config_parse(&c, 1, argv), -1);
  setenv("WSHOST_LOG_LEVEL", "warn", 1);
  assert_int_equal(config_parse(&c, 1, argv), 0);
  assert_int_equal(c.log_level, LOG_WARN);
}

static void test_flag_forms(void **state) {
  (void)state;
  struct config c;
  assert_int_equal(PARSE(&c, "--port=1234", "--plugins", "/p", "--db=:memory:", "--admin-token",
                         "s3cret", "--max-body", "99", "--ping-interval=5", "--pong-timeout", "3",
                         "--outbox-max=7", "--outbox-ttl", "86400", "--reload-debounce=20",
                         "--allowed-origins", "https://a,https://b", "--log-level=debug"),
                   0);
  assert_int_equal(c.port, 1234);
  assert_string_equal(c.plugins_dir, "/p");
  assert_string_equal(c.db_path, ":memory:");
  assert_string_equal(c.admin_token, "s3cret");
  assert_int_equal(c.max_body, 99);
  assert_int_equal(c.ping_interval, 5);
  assert_int_equal(c.pong_timeout, 3);
  assert_int_equal(c.outbox_max, 7);
  assert_int_equal(c.outbox_ttl, 86400);
  assert_int_equal(c.reload_debounce_ms, 20);
  assert_string_equal(c.allowed_origins, "https://a,https://b");
  assert_int_equal(c.log_level, LOG_DEBUG);

  /* The last of a repeated flag wins; a value may contain '='. */
  assert_int_equal(PARSE(&c, "--port", "1", "--port=2", "--admin-token=a=b"), 0);
  assert_int_equal(c.port, 2);
  assert_string_equal(c.admin_token, "a=b");
  /* A boolean flag alone means true and does not take the next argument. */
  assert_int_equal(PARSE(&c, "--admin-loopback-only", "--port", "3"), 0);
  assert_int_equal(c.admin_loopback_only, 1);
  assert_int_equal(c.port, 3);
  /* TLS needs both files. */
  assert_int_equal(PARSE(&c, "--tls-cert", "c.pem", "--tls-key=k.pem"), 0);
  assert_string_equal(c.tls_cert, "c.pem");
  assert_string_equal(c.tls_key, "k.pem");
}

static void test_bad_values(void **state) {
  (void)state;
  struct config c;
  const char *bad[][2] = {
      {"--port", "abc"},
      {"--port", "-1"},
      {"--port", "65536"},
      {"--port", ""},
      {"--port", "80x"},
      {"--port", "99999999999999999999"},
      {"--max-message", "0"},
      {"--max-message", "-5"},
      {"--max-message", "1.5"},
      {"--max-body", "ten"},
      {"--max-send-queue", "-1"},
      {"--ping-interval", "-1"},
      {"--pong-timeout", "-5"},
      {"--outbox-ttl", "x"},
      {"--outbox-max", "0"},
      {"--max-connections", "0"},
      {"--ping-interval", "3000000000"},
      {"--log-level", "loud"},
      {"--admin-loopback-only=maybe", NULL},
      {"--port=", NULL},
      {"--tls-cert", "only-cert.pem"},
      {"--tls-key", "only-key.pem"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *argv[] = {"wshost", (char *)bad[i][0], (char *)bad[i][1], NULL};
    int argc = bad[i][1] ? 3 : 2;
    if (config_parse(&c, argc, argv) != -1)
      fail_msg("%s %s accepted", bad[i][0], bad[i][1] ? bad[i][1] : "");
  }
  /* A flag that needs a value, last on the line. */
  assert_int_equal(PARSE(&c, "--port"), -1);
  assert_int_equal(PARSE(&c, "--port", "1", "--db"), -1);
}

static void test_unknown_flags(void **state) {
  (void)state;
  struct config c;
  const char *bad[] = {"--nope", "--nope=1",  "-p",       "run",       "--",        "-",
                       "--por",  "--portx=1", "--PORT=1", "---port=1", "--port8080"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *argv[] = {"wshost", (char *)bad[i], NULL};
    if (config_parse(&c, 2, argv) != -1)
      fail_msg("'%s' accepted", bad[i]);
  }
}

/* Runs config_parse with stdout going to a file; returns its result and the text. */
static int parse_captured(struct config *c, int argc, char **argv, char *out, size_t outlen) {
  char path[] = "/tmp/test_config_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  fflush(stdout);
  int saved = dup(1);
  assert_true(saved >= 0);
  assert_true(dup2(fd, 1) >= 0);
  int rc = config_parse(c, argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  ssize_t n = pread(fd, out, outlen - 1, 0);
  out[n > 0 ? n : 0] = 0;
  close(fd);
  return rc;
}

static void test_help(void **state) {
  (void)state;
  struct config c;
  static char out[16384];
  char *a1[] = {"wshost", "--help", NULL};
  assert_int_equal(parse_captured(&c, 2, a1, out, sizeof out), 1);
  /* It lists every flag with its variable. */
  const char *want[] = {
      "--port",          "WSHOST_PORT",    "--plugins",         "--db",
      "--admin-token",   "--max-message",  "WSHOST_MAX_BODY",   "--max-send-queue",
      "--ping-interval", "--pong-timeout", "WSHOST_OUTBOX_TTL", "--help"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(out, want[i]))
      fail_msg("--help does not mention %s", want[i]);
  char *a2[] = {"wshost", "-h", NULL};
  assert_int_equal(parse_captured(&c, 2, a2, out, sizeof out), 1);
  /* --help wins over flags before it, even bad-looking ones after it are not reached. */
  char *a3[] = {"wshost", "--port", "1", "--help", "--nope", NULL};
  assert_int_equal(parse_captured(&c, 5, a3, out, sizeof out), 1);
  assert_non_null(strstr(out, "--port"));
  /* Help is not printed on a normal run. */
  char *a4[] = {"wshost", "--port", "1", NULL};
  assert_int_equal(parse_captured(&c, 3, a4, out, sizeof out), 0);
  assert_string_equal(out, "");
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
}

/* --bind and --admin-bind are lists: a repeated flag adds, a later source replaces. */
static void test_lists(void **state) {
  (void)state;
  struct config c;
  assert_int_equal(PARSE(&c, "--bind", "127.0.0.1", "--bind=::1"), 0);
  assert_string_equal(c.bind, "127.0.0.1,::1");
  setenv("WSHOST_BIND", "10.0.0.1", 1);
  assert_int_equal(PARSE(&c, "--db", "x"), 0);
  assert_string_equal(c.bind, "10.0.0.1");
  assert_int_equal(PARSE(&c, "--bind", "unix:/s"), 0);
  assert_string_equal(c.bind, "unix:/s");
  unsetenv("WSHOST_BIND");
}

/* The file is under the environment and the flags; its unknown keys and bad values fail. */
static void test_config_file(void **state) {
  (void)state;
  struct config c;
  char dir[] = "/tmp/wshost-unit-cfg-XXXXXX", path[128], secret[128];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/c.json", dir);
  write_file(path, "{\"port\": 5, \"bind\": [\"a\", \"b\"], \"max-body\": 7, \"deflate\": true}",
             0644);
  setenv("WSHOST_PORT", "6", 1);
  assert_int_equal(PARSE(&c, "--config", path, "--max-body", "8"), 0);
  assert_int_equal(c.port, 6);
  assert_int_equal(c.max_body, 8);
  assert_int_equal(c.deflate, 1);
  assert_string_equal(c.bind, "a,b");
  unsetenv("WSHOST_PORT");
  write_file(path, "{\"prot\": 5}", 0644);
  assert_int_equal(PARSE(&c, "--config", path), -1);
  write_file(path, "{\"port\": [1]}", 0644);
  assert_int_equal(PARSE(&c, "--config", path), -1);
  write_file(path, "{\"config\": \"x\"}", 0644);
  assert_int_equal(PARSE(&c, "--config", path), -1);
  /* A secret in a file others can read is refused. */
  write_file(path, "{\"admin-token\": \"t\"}", 0644);
  assert_int_equal(PARSE(&c, "--config", path), -1);
  chmod(path, 0600);
  assert_int_equal(PARSE(&c, "--config", path), 0);
  assert_string_equal(c.admin_token, "t");
  unlink(path);
  /* Secret files: the content, one newline dropped; not with the flag too. */
  snprintf(secret, sizeof secret, "%s/tok", dir);
  write_file(secret, "abc\n", 0600);
  assert_int_equal(PARSE(&c, "--admin-token-file", secret), 0);
  assert_string_equal(c.admin_token, "abc");
  assert_int_equal(PARSE(&c, "--admin-token-file", secret, "--admin-token", "x"), -1);
  chmod(secret, 0604);
  assert_int_equal(PARSE(&c, "--admin-token-file", secret), -1);
  chmod(secret, 0620);
  assert_int_equal(PARSE(&c, "--admin-token-file", secret), -1);
  chmod(secret, 0640);
  assert_int_equal(PARSE(&c, "--admin-token-file", secret), 0);
  unlink(secret);
  rmdir(dir);
}

/* An unknown WSHOST_* variable fails; the secret variables are gone once read. */
static void test_environment_checked(void **state) {
  (void)state;
  struct config c;
  setenv("WSHOST_MAX_CONECTIONS", "5", 1);
  assert_int_equal(PARSE(&c, "--db", "x"), -1);
  unsetenv("WSHOST_MAX_CONECTIONS");
  setenv("WSHOST_ADMIN_TOKEN", "from-env", 1);
  assert_int_equal(PARSE(&c, "--db", "x"), 0);
  assert_string_equal(c.admin_token, "from-env");
  assert_null(getenv("WSHOST_ADMIN_TOKEN"));
  char *a[] = {"wshost", "--version", NULL};
  assert_int_equal(config_parse(&c, 2, a), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, clean_env),
      cmocka_unit_test_setup(test_env_and_flags, clean_env),
      cmocka_unit_test_setup(test_flag_forms, clean_env),
      cmocka_unit_test_setup(test_bad_values, clean_env),
      cmocka_unit_test_setup(test_unknown_flags, clean_env),
      cmocka_unit_test_setup(test_help, clean_env),
      cmocka_unit_test_setup(test_lists, clean_env),
      cmocka_unit_test_setup(test_config_file, clean_env),
      cmocka_unit_test_setup(test_environment_checked, clean_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
