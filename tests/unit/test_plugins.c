/* test_plugins.c: host/plugins.c, the loader behind hot reload, against real .so files
 * compiled here with the one-line `cc -shared` build: a load runs the new code, every kind
 * of bad file is refused with a reason while the previous version keeps answering, a deleted
 * file unloads, and the folder and file permission rules hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "plugins.h"

/* The old version's CLOUD_FINI runs on a thread of its own: wait for it, as the tests read
 * what it did. */
static int reload_settled(struct plugins *pl, const char *name) {
  int rc = plugins_reload(pl, name);
  plugins_settle(pl);
  return rc;
}

/* The test's plugins. Each returns a number the test tells versions apart by. */
static const char good_c[] =
    "#include <cloud.h>\n"
    "#include <string.h>\n"
    "static void mark(const char *key, int n) {\n"
    "  json_t *v = json_integer(n);\n"
    "  cloud_shared_set(key, v);\n"
    "  json_decref(v);\n"
    "}\n"
    "CLOUD_FUNCTION(ctx) {\n"
    "  if (!ctx->function_name || strcmp(ctx->function_name, \"fn\"))\n"
    "    return -1;\n"
    "  mark(\"ran\", VERSION); /* proves the host stored its table in cloud_api_ */\n"
    "  return VERSION;\n"
    "}\n"
    "CLOUD_FINI() { mark(\"fini\", VERSION); }\n";

static const char noentry_c[] = "int not_a_cloud_function(void) { return 5; }\n";

/* Written by hand, not with CLOUD_FUNCTION: a plugin from a future SDK. */
static const char abi99_c[] =
    "#include <cloud.h>\n"
    "const cloud_api *cloud_api_ __attribute__((visibility(\"hidden\")));\n"
    "static int main_(FunctionContext *ctx) { (void)ctx; return 99; }\n"
    "__attribute__((visibility(\"default\"))) const cloud_plugin_desc cloud_plugin = {\n"
    "    99, sizeof(cloud_plugin_desc), sizeof(FunctionContext), &cloud_api_, main_};\n";

/* The right ABI but no entry function in the descriptor. */
static const char nomain_c[] =
    "#include <cloud.h>\n"
    "const cloud_api *cloud_api_ __attribute__((visibility(\"hidden\")));\n"
    "__attribute__((visibility(\"default\"))) const cloud_plugin_desc cloud_plugin = {\n"
    "    CLOUD_ABI_VERSION, sizeof(cloud_plugin_desc), sizeof(FunctionContext), &cloud_api_,\n"
    "    0};\n";

static const char initfail_c[] = "#include <cloud.h>\n"
                                 "static void mark(const char *key) {\n"
                                 "  json_t *v = json_true();\n"
                                 "  cloud_shared_set(key, v);\n"
                                 "  json_decref(v);\n"
                                 "}\n"
                                 "CLOUD_FUNCTION(ctx) { (void)ctx; return 50; }\n"
                                 "CLOUD_INIT() { mark(\"init_ran\"); return 7; }\n"
                                 "CLOUD_FINI() { mark(\"initfail_fini\"); }\n";

static char root[] = "/tmp/wshost-test-plugins-XXXXXX";
static char src_dir[PATH_MAX], plugins_dir[PATH_MAX], run_base[PATH_MAX], run_dir[PATH_MAX + 64];
static char sdk_include[PATH_MAX];
static struct host h;
static struct plugins *p;

/* The repository: this file is <repo>/tests/unit/test_plugins.c. */
static int find_sdk(void) {
  const char *env = getenv("WSHOST_SOURCE_DIR");
  const char *file = __FILE__, *cut = strstr(file, "/tests/unit/test_plugins.c");
  if (env && *env)
    snprintf(sdk_include, sizeof sdk_include, "%s/sdk/include", env);
  else if (file[0] == '/' && cut)
    snprintf(sdk_include, sizeof sdk_include, "%.*s/sdk/include", (int)(cut - file), file);
  else
    return -1;
  char hdr[PATH_MAX + 16];
  snprintf(hdr, sizeof hdr, "%s/cloud.h", sdk_include);
  return access(hdr, R_OK);
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  int ok = fwrite(data, 1, len, f) == len;
  if (fclose(f) || !ok)
    return -1;
  return chmod(path, mode);
}

/* Builds src_dir/<out>.so from text with the SDK's one-line build. */
static int compile(const char *out, const char *text, const char *defines) {
  char c[PATH_MAX + 64], so[PATH_MAX + 64], cmd[4 * PATH_MAX];
  snprintf(c, sizeof c, "%s/%s.c", src_dir, out);
  snprintf(so, sizeof so, "%s/%s.so", src_dir, out);
  if (write_file(c, text, strlen(text), 0644) < 0)
    return -1;
  snprintf(cmd, sizeof cmd, "cc -shared -fPIC -Wall -Werror -I'%s' %s '%s' -o '%s' -ljansson",
           sdk_include, defines, c, so);
  return system(cmd) == 0 ? 0 : -1;
}

static int group_setup(void **state) {
  (void)state;
  if (find_sdk() < 0) {
    fprintf(stderr, "cannot find sdk/include/cloud.h (set WSHOST_SOURCE_DIR)\n");
    return -1;
  }
  if (!mkdtemp(root))
    return -1;
  snprintf(src_dir, sizeof src_dir, "%s/src", root);
  snprintf(plugins_dir, sizeof plugins_dir, "%s/plugins", root);
  snprintf(run_base, sizeof run_base, "%s/run", root);
  if (mkdir(src_dir, 0700) || mkdir(plugins_dir, 0755) || mkdir(run_base, 0700))
    return -1;
  /* The loader's private copies go to $XDG_RUNTIME_DIR/wshost-<uid>-<port>: keep them here. */
  setenv("XDG_RUNTIME_DIR", run_base, 1);
  if (compile("good1", good_c, "-DVERSION=1") || compile("good2", good_c, "-DVERSION=2") ||
      compile("good3", good_c, "-DVERSION=3") || compile("noentry", noentry_c, "") ||
      compile("abi99", abi99_c, "") || compile("nomain", nomain_c, "") ||
      compile("initfail", initfail_c, "")) {
    fprintf(stderr, "compiling the test plugins failed\n");
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

static void empty_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[2 * PATH_MAX];
  if (!d)
    return;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      if (unlink(path) < 0)
        rmdir(path);
    }
  closedir(d);
}

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (!d)
    return -1;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

/* A fresh host and an empty plugins folder for each test; plugins_open is the test's. */
static int setup(void **state) {
  (void)state;
  static int runs;
  memset(&h, 0, sizeof h);
  h.cfg.plugins_dir = plugins_dir;
  h.cfg.port = 20000 + (int)(getpid() % 20000) * 2 + runs++ % 2; /* its runtime folder's name */
  h.cfg.reload_debounce_ms = 10;
  h.shared = json_object();
  api_bind(&h);
  snprintf(run_dir, sizeof run_dir, "%s/wshost-%u-%d", run_base, (unsigned)geteuid(), h.cfg.port);
  empty_dir(plugins_dir);
  chmod(plugins_dir, 0755);
  p = NULL;
  return h.shared ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  if (p) {
    plugins_close(p);
    p = NULL;
    /* Nothing is left in the runtime folder: every private copy was removed. */
    if (access(run_dir, F_OK) == 0) {
      fprintf(stderr, "runtime folder %s left behind\n", run_dir);
      return -1;
    }
  }
  json_decref(h.shared);
  metrics_free(&h.metrics);
  return 0;
}

/* Puts a file in place the way an atomic deploy does (write aside, then rename). */
static void install_bytes(const char *name, const void *data, size_t len, mode_t mode) {
  char tmp[PATH_MAX + 64], dst[PATH_MAX + 64];
  snprintf(tmp, sizeof tmp, "%s/.incoming", plugins_dir);
  snprintf(dst, sizeof dst, "%s/%s", plugins_dir, name);
  assert_int_equal(write_file(tmp, data, len, mode), 0);
  assert_int_equal(rename(tmp, dst), 0);
}

/* Installs src_dir/<built>.so as plugins/<name>; keep > 0 copies only that many bytes. */
static void install(const char *built, const char *name, mode_t mode, size_t keep) {
  char so[PATH_MAX + 64];
  snprintf(so, sizeof so, "%s/%s.so", src_dir, built);
  FILE *f = fopen(so, "rb");
  assert_non_null(f);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  assert_true(n > 0 && n < sizeof buf);
  install_bytes(name, buf, keep && keep < n ? keep : n, mode);
}

/* Calls fn; returns its result, fails the test when nothing answers. */
static int call(const char *name) {
  FunctionContext ctx = {
      .size = sizeof ctx, .function_name = name, .request_id = "test-1", .method = "GET"};
  int found = -1;
  int rc = plugins_call(p, name, &ctx, &found);
  if (!found)
    fail_msg("no version of %s answered", name);
  return rc;
}

static int shared_int(const char *key) {
  json_t *v = json_object_get(h.shared, key);
  return v ? (int)json_integer_value(v) : -1;
}

static json_t *status_of(const char *name) {
  json_t *all = plugins_status(p);
  assert_non_null(all);
  json_t *one = json_incref(json_object_get(all, name));
  json_decref(all);
  return one;
}

/* The status's last_error of name contains want (NULL: there is none). */
static void assert_last_error(const char *name, const char *want) {
  json_t *s = status_of(name);
  assert_non_null(s);
  json_t *e = json_object_get(s, "last_error");
  if (!want) {
    if (!json_is_null(e))
      fail_msg("%s: unexpected last_error '%s'", name, json_string_value(e));
  } else if (!json_is_string(e) || !strstr(json_string_value(e), want)) {
    fail_msg("%s: last_error '%s', want '%s'", name, json_string_value(e), want);
  }
  json_decref(s);
}

static int status_version(const char *name) {
  json_t *s = status_of(name);
  json_t *v = json_object_get(s, "version");
  int n = v ? (int)json_integer_value(v) : 0;
  json_decref(s);
  return n;
}

static void test_open_loads_folder(void **state) {
  (void)state;
  install("good1", "fn.so", 0755, 0);
  install("noentry", "bad.so", 0755, 0);
  install_bytes("txt.so", "not an ELF\n", 11, 0644);
  install("good2", "not.a.name.so", 0755, 0); /* no function name: ignored */
  install_bytes("README", "hello\n", 6, 0644);
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  assert_non_null(p);
  assert_true(plugins_loaded(p, "fn"));
  assert_false(plugins_loaded(p, "bad"));
  assert_false(plugins_loaded(p, "txt"));
  assert_int_equal(call("fn"), 1);
  assert_int_equal(shared_int("ran"), 1);
  assert_int_equal(status_version("fn"), 1);
  assert_last_error("fn", NULL);
  /* Files that fail at start are recorded, not fatal. */
  assert_last_error("bad", "no entry point");
  assert_last_error("txt", "not an ELF");
  json_t *s = status_of("not.a.name");
  assert_null(s);
  /* One private copy per loaded version, none for refused files. */
  assert_int_equal(count_files(run_dir), 1);
}

static void test_reload_swaps_version(void **state) {
  (void)state;
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  int found = -1;
  FunctionContext ctx = {.size = sizeof ctx, .function_name = "fn"};
  assert_int_equal(plugins_call(p, "fn", &ctx, &found), 0);
  assert_int_equal(found, 0);

  install("good1", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 1);
  assert_int_equal(shared_int("fini"), -1);
  /* The same file again is no new version (and no fini). */
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(status_version("fn"), 1);
  assert_int_equal(shared_int("fini"), -1);

  install("good2", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 2);
  assert_int_equal(shared_int("fini"), 1); /* version 1's fini ran when it was unloaded */
  assert_int_equal(status_version("fn"), 2);
  assert_int_equal(count_files(run_dir), 1);

  /* Overwritten in place (cp over it): a new version too. Same inode and the same size (one
   * source, another VERSION), so only the mtime tells: sleep past the file system's clock tick. */
  usleep(50 * 1000);
  install("good3", ".staging", 0755, 0);
  char from[PATH_MAX + 16], cmd[3 * PATH_MAX];
  snprintf(from, sizeof from, "%s/.staging", plugins_dir);
  snprintf(cmd, sizeof cmd, "cat '%s' > '%s/fn.so'", from, plugins_dir);
  assert_int_equal(system(cmd), 0);
  unlink(from);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 3);
  assert_int_equal(shared_int("fini"), 2);
}

struct bad_file {
  const char *built; /* NULL: the bytes below */
  const char *bytes;
  mode_t mode;
  size_t keep;
  const char *error;
};

static void test_refusals_keep_old_version(void **state) {
  (void)state;
  static char abi_error[64]; /* names both sides: the plugin's version and the host's range */
  snprintf(abi_error, sizeof abi_error, "ABI 99, host serves %d..%d", PLUGINS_ABI_MIN,
           PLUGINS_ABI_MAX);
  const struct bad_file bad[] = {
      {NULL, "not an ELF\n", 0644, 0, "not an ELF"},
      {NULL, "\177EL", 0644, 0, "not an ELF"},      /* shorter than the magic */
      {"good2", NULL, 0755, 200, "truncated?"},     /* half written */
      {"noentry", NULL, 0755, 0, "no entry point"}, /* built without CLOUD_FUNCTION */
      {"abi99", NULL, 0755, 0, abi_error},
      {"nomain", NULL, 0755, 0, "descriptor"},
      {"initfail", NULL, 0755, 0, "init returned 7"},
      {"good2", NULL, 0775, 0, "writable by group or others"},
      {"good2", NULL, 0757, 0, "writable by group or others"},
      {"good2", NULL, 0664, 0, "writable by group or others"},
  };
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  install("good1", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 1);

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (bad[i].built)
      install(bad[i].built, "fn.so", bad[i].mode, bad[i].keep);
    else
      install_bytes("fn.so", bad[i].bytes, strlen(bad[i].bytes), bad[i].mode);
    int rc = reload_settled(p, "fn");
    if (rc >= 0)
      fail_msg("case %zu (%s) loaded", i, bad[i].error);
    /* Refused loudly, and version 1 keeps answering. */
    assert_true(plugins_loaded(p, "fn"));
    assert_int_equal(call("fn"), 1);
    assert_int_equal(status_version("fn"), 1);
    assert_last_error("fn", bad[i].error);
    /* A refused version left no private copy behind and its fini never ran. */
    assert_int_equal(count_files(run_dir), 1);
    assert_int_equal(shared_int("fini"), -1);
  }
  /* The init hook did run (the refusal is its answer), but a failed init gets no fini. */
  assert_non_null(json_object_get(h.shared, "init_ran"));
  assert_null(json_object_get(h.shared, "initfail_fini"));

  /* A file of another user is refused like a writable one (only root can make one here). */
  if (geteuid() == 0) {
    char path[PATH_MAX + 16];
    install("good2", "fn.so", 0755, 0);
    snprintf(path, sizeof path, "%s/fn.so", plugins_dir);
    assert_int_equal(chown(path, 65534, 65534), 0);
    assert_true(reload_settled(p, "fn") < 0);
    assert_int_equal(call("fn"), 1);
    assert_last_error("fn", "owned by another user");
  }

  /* A directory in the file's place. */
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/fn.so", plugins_dir);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(mkdir(path, 0755), 0);
  assert_true(reload_settled(p, "fn") < 0);
  assert_int_equal(call("fn"), 1);
  assert_last_error("fn", "not a regular file");
  assert_int_equal(rmdir(path), 0);

  /* Fixed: the good file loads and the error is cleared. */
  install("good2", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 2);
  assert_int_equal(status_version("fn"), 2);
  assert_last_error("fn", NULL);
  assert_int_equal(shared_int("fini"), 1);
}

static void test_refused_without_old_version(void **state) {
  (void)state;
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  install("abi99", "fn.so", 0755, 0);
  assert_true(reload_settled(p, "fn") < 0);
  assert_false(plugins_loaded(p, "fn"));
  int found = -1;
  FunctionContext ctx = {.size = sizeof ctx, .function_name = "fn"};
  assert_int_equal(plugins_call(p, "fn", &ctx, &found), 0);
  assert_int_equal(found, 0);
  assert_last_error("fn", "ABI 99");
  json_t *s = status_of("fn");
  assert_false(json_is_true(json_object_get(s, "loaded")));
  assert_null(json_object_get(s, "version"));
  json_decref(s);
  assert_int_equal(count_files(run_dir), 0);
}

static void test_delete_unloads(void **state) {
  (void)state;
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/fn.so", plugins_dir);
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  install("good1", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  install_bytes("fn.so", "junk", 4, 0644);
  assert_true(reload_settled(p, "fn") < 0);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_false(plugins_loaded(p, "fn"));
  int found = -1;
  FunctionContext ctx = {.size = sizeof ctx, .function_name = "fn"};
  assert_int_equal(plugins_call(p, "fn", &ctx, &found), 0);
  assert_int_equal(found, 0);
  assert_int_equal(shared_int("fini"), 1);
  assert_last_error("fn", NULL); /* gone is not an error */
  assert_int_equal(count_files(run_dir), 0);
  /* A reload of a file that never was is no error either. */
  assert_int_equal(reload_settled(p, "never"), 0);
  assert_false(plugins_loaded(p, "never"));
  /* And it comes back. */
  install("good3", "fn.so", 0755, 0);
  assert_int_equal(reload_settled(p, "fn"), 0);
  assert_int_equal(call("fn"), 3);
}

static void test_close_runs_fini(void **state) {
  (void)state;
  install("good3", "fn.so", 0755, 0);
  assert_int_equal(plugins_open(&h, api_table(), &p), 0);
  assert_int_equal(call("fn"), 3);
  assert_int_equal(count_files(run_dir), 1);
  plugins_close(p);
  p = NULL;
  assert_int_equal(shared_int("fini"), 3);
  assert_int_equal(access(run_dir, F_OK), -1);
}

static void test_unsafe_folder(void **state) {
  (void)state;
  struct plugins *q = (struct plugins *)&h; /* must stay untouched on failure */
  install("good1", "fn.so", 0755, 0);
  const mode_t modes[] = {0775, 0757, 0777};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    assert_int_equal(chmod(plugins_dir, modes[i]), 0);
    assert_int_equal(plugins_open(&h, api_table(), &q), -EPERM);
    assert_ptr_equal(q, &h);
    assert_int_equal(shared_int("ran"), -1); /* nothing of the folder ran */
  }
  assert_int_equal(chmod(plugins_dir, 0755), 0);
  char missing[PATH_MAX + 16];
  snprintf(missing, sizeof missing, "%s/missing", root);
  h.cfg.plugins_dir = missing;
  assert_true(plugins_open(&h, api_table(), &q) < 0);
  /* A file is no folder. */
  snprintf(missing, sizeof missing, "%s/fn.so", plugins_dir);
  assert_true(plugins_open(&h, api_table(), &q) < 0);
  assert_ptr_equal(q, &h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_open_loads_folder, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reload_swaps_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusals_keep_old_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refused_without_old_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delete_unloads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_runs_fini, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unsafe_folder, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
