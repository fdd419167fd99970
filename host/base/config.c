/* config.c: the host's settings from the command line and WSHOST_* environment variables.
 * One table describes every option: its flag, its variable, its default and its help line. */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct opt {
  const char *name; /* flag without "--"; the variable is WSHOST_ + upper case, '-' -> '_' */
  enum opt_kind kind;
  size_t offset;
  const char *def;
  const char *help;
};

#define O(name, kind, field, def, help)                                                            \
  { name, kind, offsetof(struct config, field), def, help }
static const struct opt opts[] = {
    O("port", OPT_INT, port, "8080", "TCP port for HTTP and WebSocket (0: any free one, logged)"),
    O("plugins", OPT_STR, plugins_dir, "plugins", "folder of function .so files"),
    O("db", OPT_STR, db_path, "data/wshost.db", "SQLite database (\":memory:\": none)"),
    O("admin-token", OPT_STR, admin_token, NULL,
      "bearer token for /_/ (default: generated into <db dir>/admin-token)"),
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
    O("drain-timeout", OPT_INT, drain_timeout, "3",
      "seconds SIGTERM lets connections close; the process ends by then + 2 s, even if stuck"),
    O("heartbeat-timeout", OPT_INT, heartbeat_timeout, "10",
      "seconds the serving process's event loop may go without its heartbeat before the "
      "supervisor replaces it (SIGKILL, restart; 0: never)"),
    O("jwt-secret", OPT_STR, jwt_secret, NULL,
      "HS256 secret (32+ bytes): a valid Bearer/access_token JWT fills ctx->user"),
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
      "redis://[:password@]host:port[/db] or unix:///path: join the cluster on that Redis"
      " (password also from WSHOST_REDIS_PASSWORD)"),
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
};
#define NOPTS (sizeof opts / sizeof opts[0])

static int set_opt(struct config *cfg, const struct opt *o, const char *v, const char *from) {
  char *p = (char *)cfg + o->offset;
  char *end;
  errno = 0;
  switch (o->kind) {
  case OPT_STR:
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
         "WSHOST_<NAME>; a flag wins.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64], flag[64];
    env_name(&opts[i], env, sizeof env);
    snprintf(flag, sizeof flag, "--%s%s", opts[i].name, opts[i].kind == OPT_BOOL ? "" : " V");
    printf("  %-26s %s\n  %-26s   (%s, default %s)\n", flag, opts[i].help, "", env,
           opts[i].def ? opts[i].def : "none");
  }
  printf("  %-26s %s\n", "--help", "this text");
}

int config_parse(struct config *cfg, int argc, char **argv) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].def && set_opt(cfg, &opts[i], opts[i].def, "default") < 0)
      return -1;
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64];
    env_name(&opts[i], env, sizeof env);
    const char *v = getenv(env);
    if (v && set_opt(cfg, &opts[i], v, env) < 0)
      return -1;
  }
  for (int a = 1; a < argc; a++) {
    const char *arg = argv[a];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      usage();
      return 1;
    }
    const struct opt *o = NULL;
    const char *val = NULL;
    if (!strncmp(arg, "--", 2)) {
      const char *name = arg + 2, *eq = strchr(name, '=');
      size_t n = eq ? (size_t)(eq - name) : strlen(name);
      for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == n && !strncmp(opts[i].name, name, n))
          o = &opts[i];
      if (eq)
        val = eq + 1;
    }
    if (!o) {
      log_error(NULL, NULL, "unknown option '%s' (see --help)", arg);
      return -1;
    }
    if (!val && o->kind != OPT_BOOL) {
      if (a + 1 >= argc) {
        log_error(NULL, NULL, "%s needs a value", arg);
        return -1;
      }
      val = argv[++a];
    }
    if (set_opt(cfg, o, val, arg) < 0)
      return -1;
  }
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
  return 0;
}
