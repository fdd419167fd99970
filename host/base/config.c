/* config.c: the host's settings from the command line, WSHOST_* environment variables and a
 * JSON --config file. One table describes every option: its flag, its variable, its key in the
 * file, its default and its help line. A name nobody knows is an error that names the nearest. */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

enum opt_kind {
  OPT_INT,
  OPT_SIZE,
  OPT_I64,
  OPT_STR,
  OPT_BOOL,
  OPT_ONOFF,
  OPT_LOGLEVEL,
  OPT_LOGFORMAT
};

/* OPT_SECRET: masked by --print-config, taken out of the environment once read (a function
 * could read it there through cloud_env). OPT_LIST: several values, comma-separated; a repeated
 * flag adds to the list. OPT_NOFILE: not a key of the --config file. */
enum { OPT_SECRET = 1, OPT_LIST = 2, OPT_NOFILE = 4 };

struct opt {
  const char *name; /* flag without "--"; the variable is WSHOST_ + upper case, '-' -> '_' */
  enum opt_kind kind;
  size_t offset;
  const char *def;
  const char *help;
  int flags;
};

#define O(name, kind, field, def, help)                                                            \
  { name, kind, offsetof(struct config, field), def, help, 0 }
#define OF(name, kind, field, def, help, flags)                                                    \
  { name, kind, offsetof(struct config, field), def, help, flags }
static const struct opt opts[] = {
    O("port", OPT_INT, port, "8080", "TCP port for HTTP and WebSocket (0: any free one, logged)"),
    O("plugins", OPT_STR, plugins_dir, "plugins", "folder of function .so files"),
    O("db", OPT_STR, db_path, "data/wshost.db", "SQLite database (\":memory:\": none)"),
    OF("admin-token", OPT_STR, admin_token, NULL,
       "bearer token for /_/ (default: generated into <db dir>/admin-token)", OPT_SECRET),
    O("admin-token-file", OPT_STR, admin_token_file, NULL,
      "file holding the admin token (not readable by others; or admin-token in "
      "$CREDENTIALS_DIRECTORY)"),
    O("max-message", OPT_SIZE, max_message, "1048576", "inbound WebSocket message bytes"),
    O("max-send-queue", OPT_SIZE, max_send_queue, "1048576", "queued outbound bytes per socket"),
    O("max-body", OPT_SIZE, max_body, "10485760", "HTTP request body bytes"),
    O("max-body-total", OPT_SIZE, max_body_total, "67108864",
      "HTTP request body bytes buffered for all requests together"),
    O("min-body-rate", OPT_SIZE, min_body_rate, "1024",
      "bytes/s a request body must keep up after 5 s (0: no minimum)"),
    O("max-header", OPT_SIZE, max_header, "4096",
      "HTTP request header bytes (per connection while it is read)"),
    O("ws-rx-buffer", OPT_SIZE, ws_rx_buffer, "65536",
      "bytes lws reads from a WebSocket at a time (128..1048576); one buffer for all connections, "
      "each keeps 160 bytes (lws 4.1; see README)"),
    O("max-connections", OPT_INT, max_connections, "10000", "WebSocket connections"),
    O("ping-interval", OPT_INT, ping_interval, "25", "seconds idle before a ping"),
    O("pong-timeout", OPT_INT, pong_timeout, "10", "seconds to wait for the pong"),
    O("outbox-max", OPT_INT, outbox_max, "1000", "queued messages per offline user"),
    O("outbox-ttl", OPT_I64, outbox_ttl, "604800", "seconds a queued message lives"),
    O("user-ttl", OPT_I64, user_ttl, "2592000",
      "seconds before a host-assigned user gone that long with nothing queued is deleted"),
    O("conn-history", OPT_I64, conn_history, "604800", "seconds closed connection rows are kept"),
    O("max-users", OPT_I64, max_users, "1000000",
      "users rows at most; past it the longest idle empty host-assigned users go (0: none)"),
    O("reload-debounce", OPT_INT, reload_debounce_ms, "100",
      "ms a changed plugin file must be quiet before it is loaded"),
    O("load-timeout", OPT_INT, load_timeout, "10",
      "seconds a plugin load (copy, constructors, CLOUD_INIT) or its CLOUD_FINI may take; a load "
      "past it is refused and its build quarantined"),
    O("defer-timeout", OPT_INT, defer_timeout, "30",
      "seconds a deferred HTTP response may take before the host answers 504"),
    O("xthread-max-bytes", OPT_SIZE, xthread_max_bytes, "67108864",
      "bytes of sends and deferred responses other threads may queue for the event loop "
      "(past it they get CLOUD_EFULL)"),
    O("admin-loopback-only", OPT_BOOL, admin_loopback_only, "0",
      "serve /_/status, /_/users, /_/push to 127.0.0.0/8 and ::1 only"),
    O("metrics-public", OPT_BOOL, metrics_public, "0",
      "serve /_/metrics (Prometheus) without the admin token"),
    O("deflate", OPT_ONOFF, deflate, "off",
      "negotiate permessage-deflate when a client offers it (on/off; off: see README, lws 4.1.6)"),
    O("allowed-origins", OPT_STR, allowed_origins, NULL,
      "comma-separated Origin values allowed to upgrade (default: any)"),
    O("tls-cert", OPT_STR, tls_cert, NULL, "PEM certificate: serve wss:// and https://"),
    O("tls-key", OPT_STR, tls_key, NULL, "PEM private key for --tls-cert"),
    O("log-level", OPT_LOGLEVEL, log_level, "info", "debug, info, warn or error"),
    O("no-supervisor", OPT_BOOL, no_supervisor, "0",
      "serve in this process, without the supervisor that restarts it after a crash (debugging)"),
    O("log-format", OPT_LOGFORMAT, log_format, "text",
      "text (time level source function request-id message) or json (one object per line)"),
    O("log-journal", OPT_STR, log_journal, "auto",
      "start each log line with its syslog priority (<3> error .. <7> debug) for journald: on, "
      "off, or auto (when stderr is the journal stream systemd names in JOURNAL_STREAM)"),
    O("drain-timeout", OPT_INT, drain_timeout, "10",
      "seconds SIGTERM lets connections close; the process ends by then + 2 s, even if stuck"),
    O("heartbeat-timeout", OPT_INT, heartbeat_timeout, "10",
      "seconds the serving process's event loop may go without its heartbeat before the "
      "supervisor replaces it (SIGKILL, restart; 0: never)"),
    OF("jwt-secret", OPT_STR, jwt_secret, NULL,
       "HS256 secret (32+ bytes): a valid Bearer/access_token JWT fills ctx->user", OPT_SECRET),
    O("jwt-secret-file", OPT_STR, jwt_secret_file, NULL,
      "file holding the HS256 secret (not readable by others; or jwt-secret in "
      "$CREDENTIALS_DIRECTORY)"),
    O("jwt-public-key", OPT_STR, jwt_public_key, NULL,
      "PEM public key file (RSA: RS256, EC P-256: ES256) instead of --jwt-secret"),
    O("jwt-leeway", OPT_INT, jwt_leeway, "30", "seconds of clock skew allowed on exp and nbf"),
    O("jwt-require-exp", OPT_ONOFF, jwt_require_exp, "on",
      "refuse (401) a JWT without an exp claim, which would be good forever (on/off)"),
    O("env-file", OPT_STR, env_file, NULL,
      "KEY=VALUE file behind cloud_env() (re-read on SIGHUP; others may not read it, only its "
      "owner may write it)"),
    O("app-db", OPT_STR, app_db, NULL,
      "the functions' own SQLite file behind cloud_db() (WAL, one handle per thread)"),
    O("redis", OPT_STR, redis, NULL,
      "redis://host:port[/db] or unix:///path: join the cluster on that Redis"),
    OF("redis-password", OPT_STR, redis_password, NULL,
       "the Redis password (better --redis-password-file: flags show in ps)", OPT_SECRET),
    O("redis-password-file", OPT_STR, redis_password_file, NULL,
      "file holding the Redis password (not readable by others; or redis-password in "
      "$CREDENTIALS_DIRECTORY)"),
    O("reuse-port", OPT_BOOL, reuse_port, "0",
      "SO_REUSEPORT: several hosts share --port (one per core; with --redis they act as one)"),
    O("isolation", OPT_STR, isolation, "none",
      "none (functions run in the serving process) or process (in worker processes: a crash "
      "fails one event)"),
    O("workers", OPT_INT, workers, "0",
      "worker processes with --isolation process (0: one per core)"),
    O("quarantine-crashes", OPT_INT, quarantine_crashes, "3",
      "with --isolation process: a build that crashes this many times..."),
    O("quarantine-window", OPT_INT, quarantine_window, "60",
      "...within this many seconds is quarantined"),
    OF("bind", OPT_STR, bind, NULL,
       "listen addresses, comma-separated or repeated: 127.0.0.1, ::1, 0.0.0.0, :: or "
       "unix:/path.sock (default: all interfaces)",
       OPT_LIST),
    OF("admin-bind", OPT_STR, admin_bind, NULL,
       "a second listener (same forms as --bind) serving only /_/; the public one then answers "
       "only /_/healthz, /_/readyz and /_/client.js there",
       OPT_LIST),
    O("runtime-dir", OPT_STR, runtime_dir, NULL,
      "folder for a :memory: host's crash records (default $XDG_RUNTIME_DIR, $TMPDIR or /tmp)"),
    OF("config", OPT_STR, config_file, NULL,
       "JSON object of settings keyed by these flags' names (flags, then WSHOST_*, win over it)",
       OPT_NOFILE),
};
#define NOPTS (sizeof opts / sizeof opts[0])

/* Strings the settings point to that are not argv's or the environment's (copies, lists, file
 * contents): owned here, freed by the next config_parse or config_free. */
static struct {
  char **p;
  size_t n, cap;
} owned;

static char *keep(char *s) {
  if (!s)
    return NULL;
  if (owned.n == owned.cap) {
    size_t cap = owned.cap ? owned.cap * 2 : 16;
    char **p = realloc(owned.p, cap * sizeof *p);
    if (!p) {
      free(s);
      return NULL;
    }
    owned.p = p;
    owned.cap = cap;
  }
  return owned.p[owned.n++] = s;
}

void config_free(void) {
  for (size_t i = 0; i < owned.n; i++) {
    explicit_bzero(owned.p[i], strlen(owned.p[i])); /* secrets among them */
    free(owned.p[i]);
  }
  free(owned.p);
  memset(&owned, 0, sizeof owned);
}

static int set_opt(struct config *cfg, const struct opt *o, const char *v, const char *from) {
  char *p = (char *)cfg + o->offset;
  char *end;
  errno = 0;
  switch (o->kind) {
  case OPT_STR:
    if (!v)
      break;
    *(const char **)p = v;
    return 0;
  case OPT_LOGLEVEL: {
    int l = v ? log_level_parse(v) : LOG_INFO;
    if (l < 0)
      break;
    *(int *)p = l;
    return 0;
  }
  case OPT_LOGFORMAT: {
    int f = v ? log_format_parse(v) : -1;
    if (f < 0)
      break;
    *(int *)p = f;
    return 0;
  }
  case OPT_ONOFF: /* a switch that takes its value: --deflate off */
    if (!v)
      break;
    /* fallthrough */
  case OPT_BOOL:
    if (!v || !strcmp(v, "on") || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
      *(int *)p = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
      *(int *)p = 0;
    else
      break;
    return 0;
  case OPT_INT: {
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < 0 || n > INT_MAX)
      break;
    *(int *)p = (int)n;
    return 0;
  }
  case OPT_SIZE:
  case OPT_I64: {
    long long n = strtoll(v, &end, 10);
    if (errno || *end || end == v || n < 0)
      break;
    if (o->kind == OPT_SIZE)
      *(size_t *)p = (size_t)n;
    else
      *(int64_t *)p = n;
    return 0;
  }
  }
  log_error(NULL, NULL, "bad value '%s' for %s", v ? v : "", from);
  return -1;
}

static void env_name(const struct opt *o, char *buf, size_t len) {
  size_t n = (size_t)snprintf(buf, len, "WSHOST_");
  for (const char *s = o->name; *s && n + 1 < len; s++)
    buf[n++] = *s == '-' ? '_' : (char)(*s >= 'a' && *s <= 'z' ? *s - 32 : *s);
  buf[n] = 0;
}

static void usage(void) {
  printf("usage: wshost [options]\n\nEvery option is also an environment variable "
         "WSHOST_<NAME> and a key of the --config file; a flag wins, then the variable.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64], flag[64];
    env_name(&opts[i], env, sizeof env);
    snprintf(flag, sizeof flag, "--%s%s", opts[i].name, opts[i].kind == OPT_BOOL ? "" : " V");
    printf("  %-26s %s\n  %-26s   (%s, default %s)\n", flag, opts[i].help, "", env,
           opts[i].def ? opts[i].def : "none");
  }
  printf("  %-26s %s\n", "--print-config", "print the settings in effect (secrets masked), exit");
  printf("  %-26s %s\n", "--version", "print the version, exit");
  printf("  %-26s %s\n", "--help", "this text");
}

/* Levenshtein distance, for "did you mean": names are short (under 64 bytes). */
static size_t edit_distance(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b), row[65];
  if (na > 64 || nb > 64)
    return SIZE_MAX;
  for (size_t j = 0; j <= nb; j++)
    row[j] = j;
  for (size_t i = 1; i <= na; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= nb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* The option whose name (env: whose variable) is nearest to name. */
static const char *nearest(const char *name, int env) {
  const char *best = NULL;
  size_t bd = SIZE_MAX;
  for (size_t i = 0; i < NOPTS; i++) {
    char buf[64];
    if (env)
      env_name(&opts[i], buf, sizeof buf);
    else
      snprintf(buf, sizeof buf, "%s", opts[i].name);
    size_t d = edit_distance(name, buf);
    if (d < bd) {
      bd = d;
      best = opts[i].name;
    }
  }
  return best;
}

static const struct opt *find_opt(const char *name, size_t n) {
  for (size_t i = 0; i < NOPTS; i++)
    if (strlen(opts[i].name) == n && !strncmp(opts[i].name, name, n))
      return &opts[i];
  return NULL;
}

/* Where each list option got its values last: a new source replaces, the same one adds. */
struct sources {
  int list_from[NOPTS];
};
enum { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_FLAG };

static int set_from(struct config *cfg, struct sources *src, const struct opt *o, const char *v,
                    const char *what, int from) {
  if (!(o->flags & OPT_LIST))
    return set_opt(cfg, o, v, what);
  const char **p = (const char **)((char *)cfg + o->offset);
  size_t i = (size_t)(o - opts);
  if (!v || !*v) {
    log_error(NULL, NULL, "bad value '' for %s", what);
    return -1;
  }
  if (src->list_from[i] == from && *p) {
    size_t len = strlen(*p) + strlen(v) + 2;
    char *joined = keep(malloc(len));
    if (!joined)
      return -1;
    snprintf(joined, len, "%s,%s", *p, v);
    *p = joined; /* settings live as long as the process */
    return 0;
  }
  src->list_from[i] = from;
  *p = v;
  return 0;
}

/* --config FILE: one JSON object, keys are the flags' long names, values strings, numbers or
 * booleans (a list option also takes an array of strings). */
static int load_file(struct config *cfg, struct sources *src, const char *path) {
  json_error_t e;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
  if (!root) {
    log_error(NULL, NULL, "--config %s: %s (line %d)", path, e.text, e.line);
    return -1;
  }
  if (!json_is_object(root)) {
    log_error(NULL, NULL, "--config %s: want one JSON object of settings", path);
    json_decref(root);
    return -1;
  }
  const char *key;
  json_t *val;
  int rc = 0;
  json_object_foreach(root, key, val) {
    const struct opt *o = find_opt(key, strlen(key));
    char err[2600];
    /* A file that holds a secret is held to the rules of a secret file. */
    if (o && (o->flags & OPT_SECRET) && config_secret_file_ok(path, err, sizeof err) < 0) {
      log_error(NULL, NULL, "--config: \"%s\" is a secret: %s", key, err);
      rc = -1;
      break;
    }
    if (!o || (o->flags & OPT_NOFILE)) {
      log_error(NULL, NULL, "--config %s: unknown setting \"%s\" (did you mean \"%s\"?)", path, key,
                nearest(key, 0));
      rc = -1;
      break;
    }
    char what[160];
    snprintf(what, sizeof what, "\"%s\" in %s", key, path);
    json_t *items = json_is_array(val) && (o->flags & OPT_LIST) ? val : NULL;
    size_t n = items ? json_array_size(items) : 1;
    for (size_t k = 0; k < n && !rc; k++) {
      json_t *x = items ? json_array_get(items, k) : val;
      char num[32];
      const char *v = NULL;
      if (json_is_string(x))
        v = json_string_value(x);
      else if (json_is_integer(x))
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(x)), v = num;
      else if (json_is_boolean(x))
        v = json_is_true(x) ? "1" : "0";
      char *copy = v ? keep(strdup(v)) : NULL; /* outlives root, like argv */
      if (!copy) {
        log_error(NULL, NULL, "bad value for %s: want a string, an integer or a boolean", what);
        rc = -1;
      } else if (set_from(cfg, src, o, copy, what, FROM_FILE) < 0)
        rc = -1;
    }
    if (rc)
      break;
  }
  json_decref(root);
  return rc;
}

/* Every WSHOST_* variable must be one of ours: a typo (WSHOST_MAX_CONECTIONS) silently
 * ignored would leave the default in force. */
static int check_environment(void) {
  for (char **e = environ; e && *e; e++) {
    if (strncmp(*e, "WSHOST_", 7))
      continue;
    const char *eq = strchr(*e, '=');
    size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), *e);
    int known = 0;
    for (size_t i = 0; i < NOPTS && !known; i++) {
      char env[64];
      env_name(&opts[i], env, sizeof env);
      known = !strcmp(env, name);
    }
    if (!known) {
      char near[64];
      const struct opt *o = find_opt(nearest(name, 1), strlen(nearest(name, 1)));
      env_name(o, near, sizeof near);
      log_error(NULL, NULL, "unknown environment variable %s (did you mean %s?); unset it", name,
                near);
      return -1;
    }
  }
  return 0;
}

static int secret_mode_ok(const char *path, const struct stat *stp, char *err, size_t errlen);

int config_secret_file_ok(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -errno;
  }
  return secret_mode_ok(path, &st, err, errlen);
}

static int secret_mode_ok(const char *path, const struct stat *stp, char *err, size_t errlen) {
  struct stat st = *stp;
  /* Group read is how a root-owned file is given to the service's group (0640 root:wshost). */
  if (st.st_mode & (S_IWGRP | S_IROTH | S_IWOTH)) {
    snprintf(err, errlen,
             "%.1000s is readable or writable by others (mode %03o) and holds a secret: "
             "chmod 0600 %.1000s (or 0640 with the service's group)",
             path, (unsigned)(st.st_mode & 0777), path);
    return -EACCES;
  }
  return 0;
}

/* The secret in a file: the whole file, one trailing newline dropped. NULL on error (printed). */
static const char *read_secret(const char *path, const char *what) {
  char err[2600];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    log_error(NULL, NULL, "%s %s: %s", what, path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
      secret_mode_ok(path, &st, err, sizeof err) < 0) {
    if (!S_ISREG(st.st_mode))
      snprintf(err, sizeof err, "%.1000s is not a regular file", path);
    close(fd);
    log_error(NULL, NULL, "%s: %s", what, err);
    return NULL;
  }
  enum { SECRET_MAX = 16384 };
  char *buf = keep(calloc(1, SECRET_MAX + 1));
  ssize_t n = buf ? read(fd, buf, SECRET_MAX) : -1;
  char more;
  if (n == SECRET_MAX && read(fd, &more, 1) == 1)
    n = SECRET_MAX + 1;
  close(fd);
  if (n < 0 || n > SECRET_MAX) {
    log_error(NULL, NULL, "%s %s: %s", what, path,
              n < 0 ? strerror(errno) : "longer than 16 KiB: not a secret");
    return NULL; /* buf is freed with the settings */
  }
  buf[n] = 0;
  if (n && buf[n - 1] == '\n')
    buf[--n] = 0;
  if (n && buf[n - 1] == '\r')
    buf[--n] = 0;
  if (!n) {
    log_error(NULL, NULL, "%s %s is empty", what, path);
    return NULL;
  }
  return buf;
}

/* A secret from its flag, its *-file flag or systemd's credentials folder (LoadCredential=). */
static int resolve_secret(struct config *cfg, const char *name) {
  char file_name[64], env[64];
  snprintf(file_name, sizeof file_name, "%s-file", name);
  const struct opt *o = find_opt(name, strlen(name)), *f = find_opt(file_name, strlen(file_name));
  const char **val = (const char **)((char *)cfg + o->offset);
  const char *path = *(const char **)((char *)cfg + f->offset);
  char cred[4200];
  const char *creds = getenv("CREDENTIALS_DIRECTORY");
  if (*val && path) {
    log_error(NULL, NULL, "--%s and --%s both given: keep one", name, file_name);
    return -1;
  }
  if (!*val && !path && creds && *creds) {
    snprintf(cred, sizeof cred, "%s/%s", creds, name);
    if (access(cred, F_OK) == 0)
      path = cred;
  }
  if (path && !(*val = read_secret(path, path == cred ? "credential" : file_name)))
    return -1;
  if (*val && !(*val = keep(strdup(*val))))
    return -1;
  /* Read once: the variable goes, so neither a function (cloud_env falls back to the
   * environment) nor a child process sees it, and its bytes are wiped where the kernel shows
   * them (/proc/PID/environ). */
  env_name(o, env, sizeof env);
  size_t n = strlen(env);
  for (char **e = environ; e && *e; e++)
    if (!strncmp(*e, env, n) && (*e)[n] == '=')
      memset(*e + n + 1, 0, strlen(*e + n + 1));
  unsetenv(env);
  return 0;
}

static void print_config(const struct config *cfg) {
  json_t *o = json_object();
  for (size_t i = 0; i < NOPTS; i++) {
    const struct opt *op = &opts[i];
    const char *p = (const char *)cfg + op->offset;
    json_t *v = NULL;
    switch (op->kind) {
    case OPT_STR:
      v = *(const char *const *)p ? json_string(*(const char *const *)p) : json_null();
      if ((op->flags & OPT_SECRET) && *(const char *const *)p)
        v = (json_decref(v), json_string("********"));
      else if (!strcmp(op->name, "redis") && *(const char *const *)p) {
        /* redis://:password@host: the password is a secret too. */
        const char *u = *(const char *const *)p, *at = strrchr(u, '@'), *sch = strstr(u, "://");
        if (at && sch && sch < at) {
          char masked[512];
          snprintf(masked, sizeof masked, "%.*s********%.400s", (int)(sch + 3 - u), u, at);
          v = (json_decref(v), json_string(masked));
        }
      }
      break;
    case OPT_BOOL:
    case OPT_ONOFF:
      v = json_boolean(*(const int *)p);
      break;
    case OPT_INT:
      v = json_integer(*(const int *)p);
      break;
    case OPT_SIZE:
      v = json_integer((json_int_t) * (const size_t *)p);
      break;
    case OPT_I64:
      v = json_integer((json_int_t) * (const int64_t *)p);
      break;
    case OPT_LOGLEVEL:
      v = json_string(*(const int *)p == LOG_DEBUG  ? "debug"
                      : *(const int *)p == LOG_INFO ? "info"
                      : *(const int *)p == LOG_WARN ? "warn"
                                                    : "error");
      break;
    case OPT_LOGFORMAT:
      v = json_string(*(const int *)p == LOG_FORMAT_JSON ? "json" : "text");
      break;
    }
    json_object_set_new(o, op->name, v);
  }
  json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  putchar('\n');
  json_decref(o);
}

int config_parse(struct config *cfg, int argc, char **argv) {
  static struct sources src;
  config_free();
  memset(cfg, 0, sizeof *cfg);
  memset(&src, 0, sizeof src);
  int print = 0;
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].def && set_opt(cfg, &opts[i], opts[i].def, "default") < 0)
      return -1;
  /* The file first (its name from the flag, else the variable): everything else wins over it. */
  const char *file = getenv("WSHOST_CONFIG");
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
      usage();
      return 1;
    }
    if (!strcmp(argv[a], "--version"))
      return 2; /* main.c prints it: the lws version is not this layer's to ask */
    if (!strcmp(argv[a], "--config") && a + 1 < argc)
      file = argv[a + 1];
    else if (!strncmp(argv[a], "--config=", 9))
      file = argv[a] + 9;
  }
  if (check_environment() < 0)
    return -1;
  if (file && load_file(cfg, &src, file) < 0)
    return -1;
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64];
    env_name(&opts[i], env, sizeof env);
    const char *v = getenv(env);
    if (v && set_from(cfg, &src, &opts[i], v, env, FROM_ENV) < 0)
      return -1;
  }
  for (int a = 1; a < argc; a++) {
    const char *arg = argv[a];
    if (!strcmp(arg, "--print-config")) {
      print = 1;
      continue;
    }
    const struct opt *o = NULL;
    const char *val = NULL;
    if (!strncmp(arg, "--", 2)) {
      const char *name = arg + 2, *eq = strchr(name, '=');
      size_t n = eq ? (size_t)(eq - name) : strlen(name);
      o = find_opt(name, n);
      if (eq)
        val = eq + 1;
    }
    if (!o) {
      char name[64];
      snprintf(name, sizeof name, "%.*s",
               (int)strcspn(arg + (arg[0] == '-') + (arg[1] == '-'), "="),
               arg + (arg[0] == '-') + (arg[1] == '-'));
      log_error(NULL, NULL, "unknown option '%s' (did you mean --%s? see --help)", arg,
                nearest(name, 0));
      return -1;
    }
    if (!val && o->kind != OPT_BOOL) {
      if (a + 1 >= argc) {
        log_error(NULL, NULL, "%s needs a value", arg);
        return -1;
      }
      val = argv[++a];
    }
    if (set_from(cfg, &src, o, val, arg, FROM_FLAG) < 0)
      return -1;
    /* A secret on the command line is blanked there by config_hide_secrets: keep a copy. */
    if (((o->flags & OPT_SECRET) || !strcmp(o->name, "redis")) && val) {
      char *copy = keep(strdup(val));
      if (!copy)
        return -1;
      *(const char **)((char *)cfg + o->offset) = copy;
    }
  }
  if (resolve_secret(cfg, "admin-token") < 0 || resolve_secret(cfg, "jwt-secret") < 0 ||
      resolve_secret(cfg, "redis-password") < 0)
    return -1;
  if (cfg->port < 0 || cfg->port > 65535 || cfg->max_message < 1 || cfg->max_connections < 1 ||
      cfg->outbox_max < 1) {
    log_error(NULL, NULL, "--port, --max-message, --max-connections, --outbox-max out of range");
    return -1;
  }
  if (cfg->load_timeout < 1 || cfg->load_timeout > 3600) {
    log_error(NULL, NULL, "--load-timeout must be 1..3600 seconds");
    return -1;
  }
  if (cfg->ws_rx_buffer < 128 || cfg->ws_rx_buffer > 1048576) {
    log_error(NULL, NULL, "--ws-rx-buffer must be 128..1048576 bytes");
    return -1;
  }
  if (!cfg->tls_cert != !cfg->tls_key) {
    log_error(NULL, NULL, "--tls-cert and --tls-key go together");
    return -1;
  }
  if (cfg->xthread_max_bytes < 4096) {
    log_error(NULL, NULL,
              "--xthread-max-bytes must be at least 4096 (every send from another "
              "thread would be refused)");
    return -1;
  }
  if (strcmp(cfg->log_journal, "auto") && strcmp(cfg->log_journal, "on") &&
      strcmp(cfg->log_journal, "off")) {
    log_error(NULL, NULL, "--log-journal is auto, on or off, not '%s'", cfg->log_journal);
    return -1;
  }
  if (cfg->isolation && strcmp(cfg->isolation, "none") && strcmp(cfg->isolation, "process")) {
    log_error(NULL, NULL, "--isolation is none or process, not '%s'", cfg->isolation);
    return -1;
  }
  if (print) {
    print_config(cfg);
    return 1;
  }
  return 0;
}

void config_hide_secrets(int argc, char **argv) {
  for (int a = 1; a < argc; a++) {
    if (strncmp(argv[a], "--", 2))
      continue;
    const char *name = argv[a] + 2, *eq = strchr(name, '=');
    const struct opt *o = find_opt(name, eq ? (size_t)(eq - name) : strlen(name));
    int url = o && !strcmp(o->name, "redis");
    if (!o || (!(o->flags & OPT_SECRET) && !url))
      continue;
    char *v = eq ? (char *)eq + 1 : a + 1 < argc ? argv[++a] : NULL;
    if (v && url) { /* redis://:password@host: the password only */
      char *sch = strstr(v, "://"), *at = strrchr(v, '@');
      if (sch && at && sch < at)
        memset(sch + 3, 'x', (size_t)(at - sch - 3));
    } else if (v)
      memset(v, 'x', strlen(v));
  }
}
