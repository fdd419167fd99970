/* supervisor.c: the small parent process that owns the listening socket and keeps one serving
 * process running. It never loads a plugin, opens the database or links lws into its loop:
 * a fork of it is a clean start (the nginx master / Kore parent model). */
#include "supervisor.h"

#include "crash.h"
#include "listen.h"
#include "log.h"
#include "notify.h"
#include "quarantine.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_MAGIC 0x77737264u /* "wsrd" */
#define BEAT_MAGIC 0x77736862u  /* "wshb" */

struct ready_msg {
  uint32_t magic;
  int32_t port;
};

/* The serving loop's heartbeat: one a second while the loop turns. */
struct beat_msg {
  uint32_t magic;
};

struct sup {
  struct config *cfg;
  serve_fn serve;
  struct serve_args args;
  sigset_t old_mask;
  int sfd;
  pid_t child;
  int ctl;         /* our end of the child's control socket */
  int ever_ready;  /* a serving process has been ready once */
  int child_ready; /* the current one is */
  int stopping;    /* SIGTERM/SIGINT seen */
  int hung;        /* the current one stopped answering and was killed for it */
  int exit_code;   /* what we exit with */
  int64_t stop_deadline, next_start, child_started;
  int64_t last_beat;                 /* when the current one's loop last said it turns */
  int64_t heartbeat_ms;              /* --heartbeat-timeout (0: not watched) */
  int64_t hung_kill_at;              /* it was asked what holds its loop: SIGKILL by then */
  int64_t crashes[CRASH_LOOP_K * 2]; /* times of recent counted crashes (ring) */
  unsigned ncrashes;
  int backoff_ms;
  struct crash_report last; /* report of the crash being handled (magic 0: none) */
  char last_quarantined[129 + CRASH_SHA_HEX];
};

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The host is ready: the listening socket is served. Once per host, not per serving process:
 * systemd hears READY from the main process (this one), the watchdog from the serving loop. */
static void host_ready(const struct serve_args *a) {
  char pub[LISTEN_MAX * 124] = "", adm[LISTEN_MAX * 124] = "";
  size_t np = 0, na = 0;
  for (int i = 0; i < a->nlisteners; i++) {
    const struct listener *l = &a->listeners[i];
    char *buf = l->admin ? adm : pub;
    size_t *n = l->admin ? &na : &np;
    *n += (size_t)snprintf(buf + *n, sizeof pub - *n, "%s%s", *n ? ", " : "", l->name);
  }
  /* The readiness line the e2e harness and operators wait for. */
  if (a->port)
    log_info(NULL, NULL, "listening on port %d (%s)%s%s", a->port, pub, na ? "; admin API on " : "",
             adm);
  else
    log_info(NULL, NULL, "listening on %s%s%s", pub, na ? "; admin API on " : "", adm);
  notify_ready(a->port);
}

void supervisor_ready(const struct serve_args *a) {
  if (a->ctl_fd < 0) {
    host_ready(a);
    return;
  }
  struct ready_msg m = {READY_MAGIC, a->port};
  if (send(a->ctl_fd, &m, sizeof m, MSG_NOSIGNAL) < 0)
    log_warn(NULL, NULL, "cannot tell the supervisor we are ready: %s", strerror(errno));
}

/* The child side of fork: dies with the supervisor, gets the signal mask back, serves. */
static void child_main(struct sup *s, int ctl) {
  /* If the supervisor dies, even by SIGKILL, so do we: no orphan keeps the port or the
   * database. The getppid check covers a supervisor that died before prctl ran. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != s->args.host_pid)
    _exit(1);
  close(s->sfd);
  if (s->ctl >= 0)
    close(s->ctl);
  /* SIGHUP re-reads --env-file in the serving process: ignored until its watcher is up, so an
   * early one does not end it. */
  signal(SIGHUP, SIG_IGN);
  sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
  struct serve_args a = s->args;
  a.ctl_fd = ctl;
  int rc = s->serve(s->cfg, &a);
  exit(rc);
}

static int spawn(struct sup *s) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    log_error(NULL, NULL, "supervisor: socketpair: %s", strerror(errno));
    return -errno;
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    log_error(NULL, NULL, "supervisor: fork: %s", strerror(e));
    return -e;
  }
  if (pid == 0) {
    close(sv[0]);
    child_main(s, sv[1]);
  }
  close(sv[1]);
  s->child = pid;
  s->ctl = sv[0];
  s->child_ready = 0;
  s->hung = 0;
  s->hung_kill_at = 0;
  s->child_started = mono_ms();
  memset(&s->last, 0, sizeof s->last);
  return 0;
}

/* Reads what the serving process said: ready, a watchdog ping to relay to systemd, or the
 * report of its crash. */
static void read_ctl(struct sup *s) {
  union {
    struct ready_msg r;
    struct beat_msg b;
    struct crash_report c;
  } m;
  ssize_t n;
  while (s->ctl >= 0 && (n = recv(s->ctl, &m, sizeof m, MSG_DONTWAIT)) > 0) {
    if ((size_t)n == sizeof m.b && m.b.magic == BEAT_MAGIC)
      s->last_beat = mono_ms();
    else if ((size_t)n == sizeof m.r && m.r.magic == READY_MAGIC) {
      s->child_ready = 1;
      s->last_beat = mono_ms();
      if (!s->ever_ready) {
        s->ever_ready = 1;
        host_ready(&s->args);
      } else
        log_info(NULL, NULL, "serving process %d is back, %lld ms after it was started",
                 (int)s->child, (long long)(mono_ms() - s->child_started));
    } else if ((size_t)n == sizeof(struct notify_relay_msg) && m.r.magic == NOTIFY_WATCHDOG_MAGIC) {
      notify_watchdog_ping();
    } else if ((size_t)n == sizeof m.c && m.c.magic == CRASH_MAGIC) {
      s->last = m.c;
      s->last.function[sizeof s->last.function - 1] = 0;
      s->last.sha256[sizeof s->last.sha256 - 1] = 0;
      s->last.request_id[sizeof s->last.request_id - 1] = 0;
    }
  }
}

void supervisor_heartbeat(int ctl_fd, int64_t *last_ms) {
  int64_t now = mono_ms();
  /* Half the period: a timer that fires a little early still beats. */
  if (ctl_fd < 0 || now - *last_ms < SUPERVISOR_HEARTBEAT_MS / 2)
    return;
  *last_ms = now;
  struct beat_msg m = {BEAT_MAGIC};
  /* Never blocks: a supervisor that is not reading has bigger problems than a lost beat. */
  ssize_t w = send(ctl_fd, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)w;
}

static int recent_crashes(struct sup *s, int64_t now) {
  int n = 0;
  unsigned len = sizeof s->crashes / sizeof s->crashes[0];
  for (unsigned i = 0; i < len && i < s->ncrashes; i++)
    if (now - s->crashes[(s->ncrashes - 1 - i) % len] <= CRASH_LOOP_T_MS)
      n++;
  return n;
}

/* The crash record of an ending the serving process could not report itself (SIGKILL, an exit
 * outside any function, a loop that stopped answering): appended to the crash file the next
 * serving process replays (quarantine.c), so /_/status lists it with the others. It names no
 * function, so it quarantines nothing. */
static void record_end(struct sup *s, pid_t pid, int status, const char *what) {
  char path[4200];
  quarantine_path(s->cfg->db_path, s->cfg->runtime_dir, (int)getpid(), path, sizeof path);
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  json_t *rec = json_pack("{ss sI ss si ss ss}", "kind", "crash", "t",
                          (json_int_t)t.tv_sec * 1000 + t.tv_nsec / 1000000, "end",
                          s->hung               ? "stopped answering"
                          : WIFSIGNALED(status) ? "signal"
                                                : "exit",
                          "pid", (int)pid, "message", what, "by", "supervisor");
  char name[32];
  if (WIFSIGNALED(status)) {
    json_object_set_new(rec, "signal", json_integer(WTERMSIG(status)));
    json_object_set_new(rec, "signal_name", json_string(crash_signal_name(WTERMSIG(status))));
  } else {
    snprintf(name, sizeof name, "exit(%d)", WEXITSTATUS(status));
    json_object_set_new(rec, "exit_status", json_integer(WEXITSTATUS(status)));
    json_object_set_new(rec, "signal_name", json_string(name));
  }
  char *line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
  json_decref(rec);
  int fd = line ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
  size_t len = line ? strlen(line) : 0;
  if (line)
    line[len] = '\n'; /* json_dumps's terminator becomes the newline: one write, one line */
  if (fd < 0 || write(fd, line, len + 1) != (ssize_t)(len + 1))
    log_warn(NULL, NULL, "supervisor: cannot append the crash record to %s: %s", path,
             strerror(errno));
  if (fd >= 0)
    close(fd);
  free(line);
}

/* Decides when the next serving process starts after an unplanned exit. */
static void after_crash(struct sup *s, pid_t pid, int status) {
  int64_t now = mono_ms();
  char what[160];
  if (s->hung)
    snprintf(what, sizeof what,
             "stopped answering (no heartbeat from its event loop for %lld s): killed by SIGKILL",
             (long long)(s->heartbeat_ms / 1000));
  else if (WIFSIGNALED(status))
    snprintf(what, sizeof what, "killed by %s (signal %d)", crash_signal_name(WTERMSIG(status)),
             WTERMSIG(status));
  else if (s->last.magic == CRASH_MAGIC && !s->last.signo)
    snprintf(what, sizeof what, "exited with status %d (exit() called by a function)",
             WEXITSTATUS(status));
  else
    snprintf(what, sizeof what, "exited with status %d", WEXITSTATUS(status));
  /* Its own handler wrote the record of a crash it reported; the rest are written here. */
  if (s->last.magic != CRASH_MAGIC)
    record_end(s, pid, status, what);
  /* A crash in a function quarantines that version: it cannot happen again, so the next
   * process starts at once. The same version crashing twice means the quarantine did not
   * hold (crash file unwritable?): then it counts like any other crash. */
  char key[sizeof s->last_quarantined];
  snprintf(key, sizeof key, "%s/%s", s->last.function, s->last.sha256);
  int quarantinable = s->last.magic == CRASH_MAGIC && s->last.function[0] && s->last.sha256[0] &&
                      strcmp(key, s->last_quarantined);
  if (quarantinable) {
    memcpy(s->last_quarantined, key, sizeof key);
    log_error(s->last.function, s->last.request_id,
              "serving process %d %s in %s version %d: version quarantined, restarting now",
              (int)pid, what, s->last.function, s->last.version);
    s->next_start = now;
    return;
  }
  unsigned len = sizeof s->crashes / sizeof s->crashes[0];
  s->crashes[s->ncrashes++ % len] = now;
  int n = recent_crashes(s, now);
  if (n <= 1)
    s->backoff_ms = 0;
  else if (!s->backoff_ms)
    s->backoff_ms = SUPERVISOR_BACKOFF_MIN_MS;
  else if ((s->backoff_ms *= 2) > SUPERVISOR_BACKOFF_MAX_MS)
    s->backoff_ms = SUPERVISOR_BACKOFF_MAX_MS;
  s->next_start = now + s->backoff_ms;
  if (n >= CRASH_LOOP_K)
    log_error(NULL, NULL,
              "CRASH LOOP: serving process %d %s, %d crashes in %d s with nothing to "
              "quarantine; next start in %d ms (backing off up to %d s)",
              (int)pid, what, n, CRASH_LOOP_T_MS / 1000, s->backoff_ms,
              SUPERVISOR_BACKOFF_MAX_MS / 1000);
  else
    log_error(NULL, NULL, "serving process %d %s; restarting in %d ms", (int)pid, what,
              s->backoff_ms);
}

/* A SIGTERM/SIGINT for the supervisor not read yet: the serving process may have got the same
 * signal (systemd signals the whole cgroup) and ended before the supervisor read its own. */
static int stop_pending(void) {
  sigset_t pend;
  return sigpending(&pend) == 0 && (sigismember(&pend, SIGTERM) || sigismember(&pend, SIGINT));
}

static void reap(struct sup *s) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid != s->child)
      continue;
    read_ctl(s); /* a crash report is written before the process goes: read it first */
    close(s->ctl);
    s->ctl = -1;
    s->child = 0;
    if (!s->stopping && stop_pending())
      s->stopping = 1;
    if (s->stopping) {
      /* Killed by the SIGTERM/SIGINT we passed on (it came before its handlers were set, in
       * start-up): that is the stop that was asked for. */
      int asked = WIFSIGNALED(status) &&
                  (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGINT) && s->exit_code == 0;
      s->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : asked ? 0 : 128 + WTERMSIG(status);
      continue;
    }
    int in_function = s->last.magic == CRASH_MAGIC && s->last.function[0];
    if (WIFEXITED(status) && !s->ever_ready && !in_function) {
      /* Start-up failed (database, plugins folder, TLS files...): it says why; retrying the
       * same settings would only repeat it. */
      s->exit_code = WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
      s->stopping = 1;
      continue;
    }
    /* Any other end is restarted, exit 0 included (a function's exit(), a SIGTERM sent to
     * the serving process itself): only a stop the supervisor was asked for stops the host,
     * and systemd's Restart=on-failure would not restart an exit 0. */
    after_crash(s, pid, status);
  }
}

static int stop_ms(const struct sup *s) {
  return s->cfg->drain_timeout * 1000 + 2000 + SUPERVISOR_STOP_MARGIN_MS;
}

static void on_signal(struct sup *s, int signo) {
  if (signo == SIGCHLD) {
    reap(s);
    return;
  }
  if (s->stopping) {
    if (s->child)
      kill(s->child, signo);
    return;
  }
  s->stopping = 1;
  s->exit_code = 0;
  notify_stopping(); /* from here, the main process: NotifyAccess=main */
  if (s->child) {
    log_info(NULL, NULL, "supervisor: %s: passing it to serving process %d (drain)",
             crash_signal_name(signo), (int)s->child);
    kill(s->child, signo);
    s->stop_deadline = mono_ms() + stop_ms(s);
  }
}

static int run(struct sup *s) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, &s->old_mask);
  s->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (s->sfd < 0) {
    log_error(NULL, NULL, "supervisor: signalfd: %s", strerror(errno));
    return 1;
  }
  s->ctl = -1;
  s->next_start = mono_ms();
  for (;;) {
    int64_t now = mono_ms();
    if (!s->child && s->stopping)
      break;
    if (!s->child && now >= s->next_start && spawn(s) < 0)
      s->next_start = now + 1000; /* fork failing (memory, pids): retry, not spin */
    int timeout = -1;
    if (!s->child)
      timeout = (int)(s->next_start - now > 0 ? s->next_start - now : 0);
    if (s->child && s->stopping) {
      if (now >= s->stop_deadline) {
        log_error(NULL, NULL, "supervisor: serving process %d did not stop within %d ms: SIGKILL",
                  (int)s->child, stop_ms(s));
        kill(s->child, SIGKILL);
        s->stop_deadline = now + 60000;
      }
      timeout = (int)(s->stop_deadline - now > 0 ? s->stop_deadline - now : 0);
    }
    if (s->child && s->child_ready && !s->stopping && !s->hung && s->heartbeat_ms > 0) {
      /* A loop that stopped (SIGSTOP, a wait outside any function, a function that never
       * returns in-process) answers nobody: replaced as if it had crashed. */
      read_ctl(s);
      int64_t due = s->last_beat + s->heartbeat_ms;
      if (now >= due) {
        log_error(NULL, NULL,
                  "serving process %d stopped answering: no heartbeat from its event loop for "
                  "%lld ms (--heartbeat-timeout %lld): asking what holds it, then SIGKILL",
                  (int)s->child, (long long)(now - s->last_beat),
                  (long long)(s->heartbeat_ms / 1000));
        /* Its loop's thread (the main thread: tid = pid) reports the function holding it,
         * if one does, and dies; a stopped one gets SIGKILL after a moment. */
        s->hung = 1;
        s->hung_kill_at = now + SUPERVISOR_STUCK_GRACE_MS;
        if (syscall(SYS_tgkill, s->child, s->child, CRASH_STUCK_SIGNAL) < 0)
          kill(s->child, SIGKILL);
      } else if (timeout < 0 || due - now < timeout)
        timeout = (int)(due - now);
    }
    if (s->child && s->hung && s->hung_kill_at) {
      if (now >= s->hung_kill_at) {
        kill(s->child, SIGKILL);
        s->hung_kill_at = 0;
      } else if (timeout < 0 || s->hung_kill_at - now < timeout)
        timeout = (int)(s->hung_kill_at - now);
    }
    struct pollfd p[2] = {{s->sfd, POLLIN, 0}, {s->ctl, POLLIN, 0}};
    int n = poll(p, s->ctl >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) {
      log_error(NULL, NULL, "supervisor: poll: %s", strerror(errno));
      sleep(1);
      continue;
    }
    if (n > 0 && s->ctl >= 0 && (p[1].revents & POLLIN))
      read_ctl(s);
    if (n > 0 && (p[0].revents & POLLIN)) {
      struct signalfd_siginfo si;
      while (read(s->sfd, &si, sizeof si) == sizeof si)
        if (si.ssi_signo == SIGHUP) { /* configuration: the serving process re-reads it */
          if (s->child > 0)
            kill(s->child, SIGHUP);
        } else
          on_signal(s, (int)si.ssi_signo);
    }
    /* The child's end closed without SIGCHLD yet: poll would report it forever. */
    if (n > 0 && s->ctl >= 0 && (p[1].revents & (POLLHUP | POLLERR)) && !(p[1].revents & POLLIN))
      p[1].fd = -1, nanosleep(&(struct timespec){0, 5 * 1000000}, NULL);
  }
  close(s->sfd);
  return s->exit_code;
}

static void close_listeners(struct serve_args *a) {
  for (int i = 0; i < a->nlisteners; i++) {
    close(a->listeners[i].fd);
    /* Our socket file: gone with us, so the next start finds no stale one. */
    if (!strncmp(a->listeners[i].name, "unix:", 5))
      unlink(a->listeners[i].name + 5);
  }
  a->nlisteners = 0;
}

/* Binds each comma-separated address of list. A --port of 0 is picked by the kernel once:
 * the next TCP addresses get the same port. */
static int bind_list(struct config *cfg, struct serve_args *a, const char *list, int admin) {
  char *copy = strdup(list), *save = NULL;
  int rc = copy ? 0 : -1;
  for (char *item = copy ? strtok_r(copy, ",", &save) : NULL; item && !rc;
       item = strtok_r(NULL, ",", &save)) {
    while (*item == ' ')
      item++;
    char err[512];
    if (a->nlisteners >= LISTEN_MAX) {
      log_error(NULL, NULL, "more than %d listen addresses", LISTEN_MAX);
      rc = -1;
      break;
    }
    struct listener *l = &a->listeners[a->nlisteners];
    /* The admin listener cannot share the public port on the same address: it names its own. */
    int def = admin ? -1 : a->port ? a->port : cfg->port;
    if (listen_open_addr(item, def, cfg->port ? 2000 : 0, admin ? 0 : cfg->reuse_port, l, err,
                         sizeof err) < 0) {
      log_error(NULL, NULL, "--%sbind: %s", admin ? "admin-" : "", err);
      rc = -1;
      break;
    }
    l->admin = admin;
    a->nlisteners++;
    if (!admin && l->port && !a->port)
      a->port = l->port;
  }
  free(copy);
  return rc;
}

static int bind_port(struct config *cfg, struct serve_args *a) {
  long before, nofile = listen_raise_nofile(&before);
  memset(a, 0, sizeof *a);
  a->ctl_fd = -1;
  a->host_pid = getpid();
  if (!cfg->bind) {
    /* A fixed port may still be held for a moment by the serving process of a host that was
     * just killed (it dies with its supervisor, a few ms later): wait up to 2 s for it. */
    struct listener *l = &a->listeners[0];
    int fd = listen_open(cfg->port, cfg->port ? 2000 : 0, cfg->reuse_port, &a->port);
    if (fd < 0) {
      log_error(NULL, NULL, "cannot listen on port %d: %s%s", cfg->port, strerror(-fd),
                fd == -EADDRINUSE ? " (the port is in use)" : "");
      return -1;
    }
    l->fd = fd;
    l->port = a->port;
    snprintf(l->name, sizeof l->name, "*:%d", a->port);
    a->nlisteners = 1;
  } else if (bind_list(cfg, a, cfg->bind, 0) < 0) {
    close_listeners(a);
    return -1;
  }
  if (cfg->admin_bind && bind_list(cfg, a, cfg->admin_bind, 1) < 0) {
    close_listeners(a);
    return -1;
  }
  if (nofile != before)
    log_info(NULL, NULL, "descriptor limit raised from %ld to %ld", before, nofile);
  a->listen_fd = a->listeners[0].fd;
  return 0;
}

int supervisor_run(struct config *cfg, serve_fn serve) {
  static struct sup s;
  memset(&s, 0, sizeof s);
  s.cfg = cfg;
  s.serve = serve;
  s.heartbeat_ms = (int64_t)cfg->heartbeat_timeout * 1000;
  if (bind_port(cfg, &s.args) < 0)
    return 1;
  log_info(NULL, NULL, "supervisor %d started: it restarts the serving process if that crashes",
           (int)getpid());
  int rc = run(&s);
  close_listeners(&s.args);
  log_info(NULL, NULL, "supervisor: stopped (exit %d)", rc);
  return rc;
}

int supervisor_none(struct config *cfg, serve_fn serve) {
  struct serve_args a;
  if (bind_port(cfg, &a) < 0)
    return 1;
  log_info(NULL, NULL, "no supervisor (--no-supervisor): a crash ends the host");
  int rc = serve(cfg, &a);
  close_listeners(&a);
  return rc;
}
