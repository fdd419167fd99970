/* crash.c: what runs when a fatal signal arrives. Owns the running record (which function,
 * version and request is on the CPU) and the handler that reports it before the process goes.
 *
 * The handler only calls what is async-signal-safe in practice: clock_gettime, write, send,
 * and backtrace()/dladdr(), which are not on POSIX's list but are safe once backtrace() has
 * run (its first call loads libgcc_s with malloc: crash_install makes that call). dladdr
 * resolves names through glibc's _dl_addr (as backtrace_symbols_fd does): it
 * takes the loader's recursive lock, so a crash inside dlopen on another thread could stall
 * it; we accept that for named frames, and the supervisor's SIGKILL after the drain timeout
 * bounds it. Everything is formatted by hand into a stack buffer: no malloc, no stdio. */
#include "crash.h"

#include "log.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CRASH_MAPS 256

/* Where one loaded version's code lies. */
struct crash_map_entry {
  uintptr_t lo, hi, key;
  int version;
  char function[129];
  char sha256[CRASH_SHA_HEX];
};

/* The one place the signal handler can find what is running: process-wide by nature. */
static struct {
  int report_fd, record_fd;
  volatile sig_atomic_t no_symbols; /* crash_loader_busy: the loader's lock may be held */
  long loop_tid;                    /* the thread that runs plugin calls (the event loop's) */
  struct crash_map_entry maps[CRASH_MAPS];
} g = {.report_fd = -1, .record_fd = -1};

/* What runs on this thread: the loop's calls, a loader thread's constructors and init, a fini
 * thread's fini. The host's own thread-local storage (static TLS): readable in the handler. */
static __thread struct crash_frame running;

struct find_object {
  uintptr_t addr, lo, hi;
  int found;
};

static int find_object_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct find_object *f = arg;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD)
      continue;
    uintptr_t a = info->dlpi_addr + ph->p_vaddr;
    if (a < lo)
      lo = a;
    if (a + ph->p_memsz > hi)
      hi = a + ph->p_memsz;
  }
  if (f->addr >= lo && f->addr < hi) {
    f->lo = lo;
    f->hi = hi;
    f->found = 1;
    return 1;
  }
  return 0;
}

int crash_map(const void *addr, const char *function, int version, const char *sha256) {
  struct find_object f = {(uintptr_t)addr, 0, 0, 0};
  dl_iterate_phdr(find_object_cb, &f);
  if (!f.found)
    return -ENOENT;
  for (int i = 0; i < CRASH_MAPS; i++) {
    struct crash_map_entry *m = &g.maps[i];
    if (m->key)
      continue;
    m->lo = f.lo;
    m->hi = f.hi;
    m->version = version;
    snprintf(m->function, sizeof m->function, "%s", function);
    snprintf(m->sha256, sizeof m->sha256, "%s", sha256);
    m->key = (uintptr_t)addr; /* last: the entry is whole before the handler can match it */
    return 0;
  }
  return -ENOSPC;
}

void crash_unmap(const void *addr) {
  for (int i = 0; i < CRASH_MAPS; i++)
    if (g.maps[i].key == (uintptr_t)addr)
      g.maps[i].key = 0;
}

/* The loaded version whose code the innermost frame that is in one belongs to. */
static const struct crash_map_entry *map_of_frames(void *const *frames, int n) {
  for (int i = 0; i < n; i++)
    for (int j = 0; j < CRASH_MAPS; j++) {
      const struct crash_map_entry *m = &g.maps[j];
      uintptr_t pc = (uintptr_t)frames[i];
      if (m->key && pc >= m->lo && pc < m->hi)
        return m;
    }
  return NULL;
}

static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

const char *crash_signal_name(int signo) {
  switch (signo) {
  case SIGSEGV:
    return "SIGSEGV";
  case SIGBUS:
    return "SIGBUS";
  case SIGFPE:
    return "SIGFPE";
  case SIGILL:
    return "SIGILL";
  case SIGABRT:
    return "SIGABRT";
  case SIGKILL:
    return "SIGKILL";
  case SIGTERM:
    return "SIGTERM";
  default:
    return "signal";
  }
}

void crash_enter(struct crash_frame *saved, const char *function, int version, const char *sha256,
                 const char *request_id) {
  *saved = running;
  running.function = function;
  running.version = version;
  running.sha256 = sha256;
  running.request_id = request_id;
}

void crash_leave(const struct crash_frame *saved) {
  running = *saved;
}

void crash_loader_busy(int busy) {
  g.no_symbols = busy;
}

/* A bounded writer into a stack buffer. */
struct out {
  char *p, *end;
};

static void put(struct out *o, const char *s) {
  while (s && *s && o->p < o->end)
    *o->p++ = *s++;
}

/* Names, request ids and hashes are checked where they come from; the log and the JSON line
 * must stay one line of plain text whatever happened to memory since. */
static void put_safe(struct out *o, const char *s, size_t max) {
  for (size_t i = 0; s && s[i] && i < max && o->p < o->end; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || c == '.' || c == ':';
    *o->p++ = ok ? c : '?';
  }
}

static void put_u(struct out *o, uint64_t v, int base, int width) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % (unsigned)base];
    v /= (unsigned)base;
  } while (v && n < (int)sizeof tmp);
  while (n < width && n < (int)sizeof tmp)
    tmp[n++] = '0';
  while (n && o->p < o->end)
    *o->p++ = tmp[--n];
}

/* The log's time format (log.c), from days since the epoch (Hinnant's civil_from_days). */
static void put_time(struct out *o, int64_t ms) {
  int64_t s = ms / 1000, z = s / 86400 + 719468, sod = s % 86400;
  int64_t era = z / 146097, doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  int64_t y = yoe + era * 400 + (m <= 2);
  put_u(o, (uint64_t)y, 10, 4);
  put(o, "-");
  put_u(o, (uint64_t)m, 10, 2);
  put(o, "-");
  put_u(o, (uint64_t)d, 10, 2);
  put(o, "T");
  put_u(o, (uint64_t)(sod / 3600), 10, 2);
  put(o, ":");
  put_u(o, (uint64_t)(sod / 60 % 60), 10, 2);
  put(o, ":");
  put_u(o, (uint64_t)(sod % 60), 10, 2);
  put(o, ".");
  put_u(o, (uint64_t)(ms % 1000), 10, 3);
  put(o, "Z");
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

/* A JSON string of s: quotes, backslashes and control bytes escaped, bytes past ASCII shown
 * as '?' (a file name may hold anything; the line must stay valid JSON). */
static void put_json(struct out *o, const char *s, size_t max) {
  put(o, "\"");
  for (size_t i = 0; s && s[i] && i < max && o->p + 7 < o->end; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      *o->p++ = '\\';
      *o->p++ = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      put(o, c < 0x20 ? "\\u00" : "?");
      if (c < 0x20) {
        *o->p++ = "0123456789abcdef"[c >> 4];
        *o->p++ = "0123456789abcdef"[c & 15];
      }
    } else
      *o->p++ = (char)c;
  }
  put(o, "\"");
}

/* One frame as backtrace_symbols writes it, "file(symbol+0xoff)[0xaddr]", into tmp. dladdr
 * is what backtrace_symbols_fd calls (glibc's _dl_addr): no more and no less safe here. */
static void frame_text(char *tmp, size_t cap, void *frame) {
  struct out o = {tmp, tmp + cap - 1};
  Dl_info di;
  /* Naming a frame takes the loader's lock, which a stuck load may hold for good: then the
   * address alone (crash_loader_busy). */
  if (!g.no_symbols && dladdr(frame, &di) && di.dli_fname) {
    put(&o, di.dli_fname);
    put(&o, "(");
    uintptr_t base = di.dli_sname ? (uintptr_t)di.dli_saddr : (uintptr_t)di.dli_fbase;
    if (di.dli_sname)
      put(&o, di.dli_sname);
    put(&o, "+0x");
    put_u(&o, (uint64_t)((uintptr_t)frame - base), 16, 1);
    put(&o, ")");
  }
  put(&o, "[0x");
  put_u(&o, (uint64_t)(uintptr_t)frame, 16, 1);
  put(&o, "]");
  *o.p = 0;
}

/* The report on stderr in the log's format: text is the error line then a line per frame;
 * JSON is one object with the frames in a "backtrace" array, so every line a shipper reads
 * parses. Under journald each line carries the "<3>" (error) priority prefix. */
static void write_report(int64_t now, const char *signame, const struct crash_frame *f,
                         const char *msg, void *const *frames, int n) {
  char line[12288], tmp[256];
  const char *prefix = log_journal() ? "<3>" : "";
  struct out o = {line, line + sizeof line - 2};
  put(&o, prefix);
  if (log_get_format() == LOG_FORMAT_JSON) {
    put(&o, "{\"time\":\"");
    put_time(&o, now);
    put(&o, "\",\"level\":\"error\",\"source\":\"crash\"");
    if (f->function) {
      put(&o, ",\"function\":");
      put_json(&o, f->function, 128);
      put(&o, ",\"request_id\":");
      put_json(&o, f->request_id, 63);
    }
    put(&o, ",\"msg\":");
    put_json(&o, msg, 767);
    put(&o, ",\"signal\":\"");
    put(&o, signame);
    put(&o, "\",\"pid\":");
    put_u(&o, (uint64_t)getpid(), 10, 1);
    put(&o, ",\"backtrace\":[");
    for (int i = 0; i < n && o.p + 300 < o.end; i++) {
      frame_text(tmp, sizeof tmp, frames[i]);
      if (i)
        put(&o, ",");
      put_json(&o, tmp, sizeof tmp);
    }
    put(&o, "]}\n");
    write_all(STDERR_FILENO, line, (size_t)(o.p - line));
    return;
  }
  put_time(&o, now);
  put(&o, " error ");
  if (f->function)
    put_safe(&o, f->function, 128);
  else
    put(&o, "-");
  put(&o, " ");
  if (f->request_id)
    put_safe(&o, f->request_id, 63);
  else
    put(&o, "-");
  put(&o, " ");
  put(&o, msg);
  put(&o, "; backtrace:\n");
  for (int i = 0; i < n && o.p + 300 < o.end; i++) {
    frame_text(tmp, sizeof tmp, frames[i]);
    put(&o, prefix);
    put(&o, tmp);
    put(&o, "\n");
  }
  write_all(STDERR_FILENO, line, (size_t)(o.p - line));
}

/* How the process ends: a fatal signal (signo), exit() (signo 0, status) called by code
 * that belongs to a function, or the supervisor's word that its loop stopped answering
 * (stuck: the process then dies of SIGKILL). */
struct ending {
  int signo, status, sent, stuck;
  pid_t sender;
  uint64_t addr;
  struct crash_frame f;
};

/* The running function as far as this thread can tell: the call record on the loop's thread,
 * the backtrace elsewhere. */
static struct crash_frame frame_here(void *const *frames, int n) {
  if (running.function || !g.loop_tid || syscall(SYS_gettid) == g.loop_tid)
    return running; /* the loop's calls, a loader's or a fini thread's work */
  const struct crash_map_entry *m = map_of_frames(frames, n);
  return (struct crash_frame){m ? m->function : NULL, m ? "-" : NULL, m ? m->sha256 : NULL,
                              m ? m->version : 0};
}

/* Reports an ending three ways: the log (with the backtrace), the crash file and the
 * supervisor. */
static void report(const struct ending *e, void *const *frames, int n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  const struct crash_frame f = e->f;
  uint64_t addr = e->sent ? 0 : e->addr;
  char buf[1024], msg[768];
  struct out o = {msg, msg + sizeof msg - 1};

  /* 1. The report for the log, in its format (write_report): the message (what ended, where),
   * then the frames. */
  char signame[32] = "SIGKILL";
  if (e->stuck) {
    put(&o, "function stopped answering: it held the event loop past --heartbeat-timeout");
  } else if (!e->signo) {
    put(&o, "function exited: exit(");
    put_u(&o, (uint64_t)(unsigned)e->status, 10, 1);
    put(&o, ")");
    struct out so = {signame, signame + sizeof signame - 1};
    put(&so, "exit(");
    put_u(&so, (uint64_t)(unsigned)e->status, 10, 1);
    put(&so, ")");
    *so.p = 0;
  } else {
    struct out so = {signame, signame + sizeof signame - 1};
    put(&so, crash_signal_name(e->signo));
    *so.p = 0;
    put(&o, f.function ? "function crashed: " : "host crashed outside any function: ");
    put(&o, crash_signal_name(e->signo));
    put(&o, " (signal ");
    put_u(&o, (uint64_t)e->signo, 10, 1);
    if (e->sent) {
      put(&o, ") sent by pid ");
      put_u(&o, (uint64_t)e->sender, 10, 1);
    } else {
      put(&o, ") at address 0x");
      put_u(&o, addr, 16, 1);
    }
  }
  if (f.function) {
    put(&o, " in ");
    put_safe(&o, f.function, 128);
    put(&o, " version ");
    put_u(&o, (uint64_t)f.version, 10, 1);
    put(&o, " (sha256 ");
    put_safe(&o, f.sha256, 64);
    put(&o, ") request ");
    put_safe(&o, f.request_id, 63);
  }
  put(&o, ", pid ");
  put_u(&o, (uint64_t)getpid(), 10, 1);
  *o.p = 0;
  write_report(now, signame, &f, msg, frames, n);

  /* 2. The crash file: one JSON line the next serving process reads (quarantine.c). An exit
   * names itself where a signal would ("exit(0)"), so every reader shows how it ended. */
  if (g.record_fd >= 0) {
    o = (struct out){buf, buf + sizeof buf - 1};
    put(&o, "{\"kind\":\"crash\",\"t\":");
    put_u(&o, (uint64_t)now, 10, 1);
    if (e->stuck) {
      put(&o, ",\"end\":\"stopped answering\",\"signal\":");
      put_u(&o, (uint64_t)SIGKILL, 10, 1);
      put(&o, ",\"signal_name\":\"SIGKILL\"");
    } else if (e->signo) {
      put(&o, ",\"end\":\"signal\",\"signal\":");
      put_u(&o, (uint64_t)e->signo, 10, 1);
      put(&o, ",\"signal_name\":\"");
      put(&o, crash_signal_name(e->signo));
      put(&o, "\",\"addr\":\"0x");
      put_u(&o, addr, 16, 1);
      put(&o, "\"");
    } else {
      put(&o, ",\"end\":\"exit\",\"exit_status\":");
      put_u(&o, (uint64_t)(unsigned)e->status, 10, 1);
      put(&o, ",\"signal_name\":\"exit(");
      put_u(&o, (uint64_t)(unsigned)e->status, 10, 1);
      put(&o, ")\"");
    }
    put(&o, ",\"pid\":");
    put_u(&o, (uint64_t)getpid(), 10, 1);
    if (f.function) {
      put(&o, ",\"function\":\"");
      put_safe(&o, f.function, 128);
      put(&o, "\",\"version\":");
      put_u(&o, (uint64_t)f.version, 10, 1);
      put(&o, ",\"sha256\":\"");
      put_safe(&o, f.sha256, 64);
      put(&o, "\",\"request_id\":\"");
      put_safe(&o, f.request_id, 63);
      put(&o, "\"");
    }
    put(&o, "}\n");
    write_all(g.record_fd, buf, (size_t)(o.p - buf));
  }

  /* 3. The supervisor: one datagram. */
  if (g.report_fd >= 0) {
    struct crash_report r;
    memset(&r, 0, sizeof r);
    r.magic = CRASH_MAGIC;
    r.signo = e->signo;
    r.status = e->status;
    r.pid = (int32_t)getpid();
    r.time_ms = now;
    r.addr = addr;
    if (f.function) {
      r.version = f.version;
      o = (struct out){r.function, r.function + sizeof r.function - 1};
      put_safe(&o, f.function, 128);
      o = (struct out){r.request_id, r.request_id + sizeof r.request_id - 1};
      put_safe(&o, f.request_id, 63);
      o = (struct out){r.sha256, r.sha256 + sizeof r.sha256 - 1};
      put_safe(&o, f.sha256, 64);
    }
    ssize_t w = send(g.report_fd, &r, sizeof r, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
  }
}

static void on_fatal(int signo, siginfo_t *si, void *uctx) {
  (void)uctx;
  int saved_errno = errno;
  void *frames[64];
  int n = backtrace(frames, 64);
  struct ending e = {.signo = signo, .addr = (uint64_t)(uintptr_t)si->si_addr};
  /* A signal someone else sent (kill -SEGV, the OOM killer's cousins) says nothing about the
   * code that happened to run: no function is blamed. A fault (si_code > 0) or our own
   * raise/abort (sent by this pid) is the running code's. The call record belongs to the
   * loop's thread; a crash on another thread (a plugin's own, or the host's) is pinned on a
   * function only if its backtrace runs through one. */
  e.sent = si->si_code <= 0 && si->si_pid != getpid();
  e.sender = si->si_pid;
  if (!e.sent)
    e.f = frame_here(frames, n);
  report(&e, frames, n);
  /* SA_RESETHAND restored the default action: a fault re-executes and kills; a raised or
   * sent signal is raised again, pending until we return. */
  errno = saved_errno;
  raise(signo);
}

/* The supervisor heard no heartbeat from the loop: it asks the loop's thread (CRASH_STUCK_SIGNAL
 * by tgkill) what runs there before it kills the process. A function holding the loop is
 * reported like a crash in it (quarantined); without one the supervisor writes the record. */
static void on_stuck(int signo, siginfo_t *si, void *uctx) {
  (void)signo;
  (void)uctx;
  if (si->si_pid != getppid() || (g.loop_tid && syscall(SYS_gettid) != g.loop_tid))
    return; /* not the supervisor's question, or not the thread it was meant for */
  void *frames[64];
  int n = backtrace(frames, 64);
  struct ending e = {.signo = SIGKILL, .stuck = 1, .f = running};
  if (e.f.function)
    report(&e, frames, n);
  raise(SIGKILL);
}

/* exit() from a function (on the loop's thread, or on a plugin's own thread by its backtrace)
 * ends the serving process as surely as a fault: it is reported like one, so the supervisor
 * restarts it and the build is quarantined, and the process goes at once with _exit: the
 * host's exit-time cleanup must not run under a plugin's call. Any other exit (the host's own
 * at the end of serve()) goes on as usual. */
static void on_exit_call(int status, void *arg) {
  (void)arg;
  void *frames[64];
  int n = backtrace(frames, 64);
  struct ending e = {.signo = 0, .status = status};
  e.f = frame_here(frames, n);
  if (!e.f.function)
    return;
  report(&e, frames, n);
  _exit(status);
}

int crash_install(int report_fd, int record_fd) {
  g.report_fd = report_fd;
  g.record_fd = record_fd;
  g.loop_tid = syscall(SYS_gettid);
  /* Warm-up: backtrace's first call loads libgcc_s (malloc, dlopen): not in the handler. */
  void *warm[2];
  backtrace(warm, 2);
  /* A stack overflow in a function leaves no stack to run the handler on: it gets its own. */
  static int exit_hooked; /* inherited by a fork: a worker must not hook it twice */
  if (!exit_hooked && on_exit(on_exit_call, NULL) == 0)
    exit_hooked = 1;
  static char altstack[64 * 1024];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) < 0)
    return -errno;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
    if (sigaction(fatal[i], &sa, NULL) < 0)
      return -errno;
  sa.sa_sigaction = on_stuck;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  if (sigaction(CRASH_STUCK_SIGNAL, &sa, NULL) < 0)
    return -errno;
  return 0;
}
