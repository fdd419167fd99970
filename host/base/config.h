/* config.h: the host's settings from the command line and WSHOST_* environment variables.
 * Owns defaults, parsing and --help; flags win over the environment. */
#ifndef WSHOST_CONFIG_H
#define WSHOST_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct config {
  int port;
  const char *plugins_dir;
  const char *db_path;
  const char *admin_token;
  const char *admin_token_file; /* --admin-token-file: the token read from there */
  size_t max_message;           /* inbound WebSocket message, bytes (close 1009 past it) */
  size_t max_send_queue;        /* per connection, bytes (slow reader closed past it) */
  size_t max_body;              /* HTTP body, bytes (413 past it) */
  size_t max_body_total;        /* HTTP bodies being read, all requests together (503 past it) */
  size_t min_body_rate;         /* bytes/s a body must keep up after its grace (408 below) */
  size_t max_header;            /* HTTP request headers, bytes */
  size_t ws_rx_buffer;          /* bytes lws reads from a WebSocket at a time (server.c) */
  int max_connections;          /* WebSocket connections (503 past it) */
  int ping_interval;            /* seconds of silence before a ping */
  int pong_timeout;             /* seconds to wait for the pong */
  int outbox_max;               /* queued messages per offline user */
  int64_t outbox_ttl;           /* seconds a queued message lives */
  int64_t user_ttl;             /* seconds before an idle empty host-assigned user is pruned */
  int64_t conn_history;         /* seconds closed connection rows are kept */
  int64_t max_users;            /* users rows at most (0: no bound) */
  int reload_debounce_ms;       /* quiet time after a plugin file changed before it is loaded */
  int load_timeout;             /* seconds a plugin load or its fini may take (refused past it) */
  int defer_timeout;            /* seconds a deferred HTTP response may take (504 past it) */
  size_t xthread_max_bytes;     /* sends and completions other threads queue for the loop */
  int admin_loopback_only;
  int metrics_public;          /* GET /_/metrics without the admin token */
  int deflate;                 /* permessage-deflate offered by a client is accepted */
  const char *allowed_origins; /* comma-separated; NULL = any */
  const char *tls_cert, *tls_key;
  int log_level;
  int no_supervisor;       /* serve in this process: a crash ends the host (debugging) */
  int log_format;          /* enum log_format: text or json lines */
  const char *log_journal; /* auto, on, off: the "<N>" priority prefix journald reads */
  int drain_timeout;       /* seconds SIGTERM waits for connections; the process ends by then + 2 */
  int heartbeat_timeout;   /* seconds without the serving loop's heartbeat before the supervisor
                            * replaces it (0: never) */
  const char *jwt_secret, *jwt_public_key, *env_file;
  const char *app_db; /* cloud_db()'s SQLite file, NULL: none */
  int jwt_leeway;
  int jwt_require_exp; /* a JWT without exp is refused (401) */
  /* The cluster (bus.c, cluster.c) and SO_REUSEPORT (listen.c). */
  const char *redis; /* redis://host:port[/db] or unix:///path; NULL: no cluster */
  int reuse_port;
  const char *isolation;  /* "process": functions run in worker processes (worker.c) */
  int workers;            /* worker processes with --isolation process (0: one per core) */
  int quarantine_crashes; /* --isolation process: crashes of one build that quarantine it */
  int quarantine_window;  /* ... within this many seconds */
  /* Operations: listeners (listen.c), files, secrets from files. */
  const char *bind;       /* comma-separated listen addresses; NULL: all interfaces */
  const char *admin_bind; /* a second listener that serves only /_/; NULL: none */
  const char *config_file;
  const char *runtime_dir; /* crash records of a :memory: host; NULL: $XDG_RUNTIME_DIR... */
  const char *jwt_secret_file;
  const char *redis_password, *redis_password_file;
};

/* Secrets are files nobody but the owner (and its group, read-only) may touch: 0 or -EACCES,
 * and the reason in err. */
int config_secret_file_ok(const char *path, char *err, size_t errlen);

/* Fills cfg from defaults, then --config FILE, then WSHOST_* environment, then argv (each
 * wins over the one before). Secrets given as files (or in $CREDENTIALS_DIRECTORY) are read,
 * and the secret variables are taken out of the environment (plugins read it). 0 to run, 1 when
 * --help or --print-config was printed, 2 when --version was asked, -1 on a bad flag, key,
 * variable or value (message printed). */
int config_parse(struct config *cfg, int argc, char **argv);
/* Frees the strings the last config_parse made (copies, lists, secrets read from files); the
 * next config_parse does it first. */
void config_free(void);
/* Blanks the values of secret flags in argv (what ps and /proc/PID/cmdline show), after
 * config_parse copied them. argv must be writable (main's is). */
void config_hide_secrets(int argc, char **argv);

#endif
