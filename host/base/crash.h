/* crash.h: what runs when a fatal signal arrives. Owns the record of which function, version
 * and request is running (set around every plugin call) and the handler that reports it. */
#ifndef WSHOST_CRASH_H
#define WSHOST_CRASH_H

#include <signal.h>
#include <stdint.h>

#define CRASH_MAGIC 0x77736372u /* "wscr" */
#define CRASH_SHA_HEX 65
/* The supervisor sends this to the serving loop's thread when the loop stopped answering:
 * the handler reports the function holding it (if any) and the process dies of SIGKILL. */
#define CRASH_STUCK_SIGNAL SIGUSR2

/* What the handler sends the supervisor (one datagram on the control socket): enough to tell
 * a crash in a function (the quarantine ends it) from one the host cannot pin on anyone.
 * signo 0: not a signal but exit() called by a function. */
struct crash_report {
  uint32_t magic;
  int32_t signo;
  int32_t version; /* 0: no function was running */
  int32_t pid;
  int32_t status; /* signo 0: the function called exit() with this status */
  int64_t time_ms;
  uint64_t addr;
  char function[129];
  char request_id[64];
  char sha256[CRASH_SHA_HEX];
};

/* The running record, saved and restored around each call (calls may nest: a load's init may
 * run while an event is in flight on another version). Pointers must outlive the call. */
struct crash_frame {
  const char *function, *request_id, *sha256;
  int version;
};

/* Installs the handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT on an alternate stack,
 * and an exit hook that reports exit() called from a function the same way (then _exits).
 * report_fd: the supervisor's control socket (-1: none); record_fd: the crash file, opened for
 * append (-1: none). Both stay open for the life of the process. 0 or -errno. */
int crash_install(int report_fd, int record_fd);
/* Marks function/version (sha256 hex of its file)/request as running; *saved gets what ran
 * before, for crash_leave. */
void crash_enter(struct crash_frame *saved, const char *function, int version, const char *sha256,
                 const char *request_id);
void crash_leave(const struct crash_frame *saved);
/* The running record is per thread: a loader or fini thread marks its own work the same way.
 * busy 1 while a load may hold glibc's loader lock (a dlopen in progress, or one stuck in a
 * constructor): the handler then prints frame addresses instead of names (naming them takes
 * that lock and would hang the handler). */
void crash_loader_busy(int busy);
/* Records where a loaded version's code lies (the object containing addr), so a crash on a
 * thread that is not running a call (a plugin's own thread, its fini) is still pinned on it
 * by the backtrace. Call after dlopen; crash_unmap before dlclose. 0, or -ENOSPC/-ENOENT. */
int crash_map(const void *addr, const char *function, int version, const char *sha256);
void crash_unmap(const void *addr);
/* Name of a fatal signal ("SIGSEGV"), "signal" for others. */
const char *crash_signal_name(int signo);

#endif
