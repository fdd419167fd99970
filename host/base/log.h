/* log.h: one line per event on stderr: time, level, source, function, request id, message.
 * Owns the log level, format and the repeat limiter (the process-wide settings outside struct
 * host: logging must work before the host exists, from every module and from every thread). */
#ifndef WSHOST_LOG_H
#define WSHOST_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Lines one call site may write per second; past it they are counted and a summary line
 * ("... repeated N times") follows once the second is over. */
#define LOG_BURST 20
#define LOG_WINDOW_MS 1000

void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error". -1 if unknown. */
int log_level_parse(const char *name);
void log_set_format(enum log_format format);
enum log_format log_get_format(void);
/* journald: each line starts with its syslog priority, "<3>" for an error ... "<7>" for
 * debug (sd-daemon(3)), so the journal files it at that level. Async-signal-safe to read. */
void log_set_journal(int on);
int log_journal(void);
/* Whether stderr is the stream systemd's JOURNAL_STREAM names ("device:inode"). */
int log_stderr_is_journal(void);
/* Parses "text", "json". -1 if unknown. */
int log_format_parse(const char *name);

/* The source is the host file that logs ("store" for store.c), taken from __FILE__ by the
 * macros below, so every line says where it comes from without each call saying it. */
#define log_msg(...) log_emit(__FILE__, __VA_ARGS__)
#define log_msgv(...) log_emitv(__FILE__, __VA_ARGS__)
#define log_debug(...) log_emit(__FILE__, LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_emit(__FILE__, LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_emit(__FILE__, LOG_WARN, __VA_ARGS__)
#define log_error(...) log_emit(__FILE__, LOG_ERROR, __VA_ARGS__)

/* function and request_id may be NULL ("-" in text, absent in JSON). Safe from any thread:
 * one write(2) per line; repeats of one call site (fmt) are limited as said above. */
void log_emit(const char *source, enum log_level level, const char *function,
              const char *request_id, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void log_emitv(const char *source, enum log_level level, const char *function,
               const char *request_id, const char *fmt, va_list ap);

/* The access line of one HTTP request: in text "METHOD PATH STATUS PEER[ note], N bytes in
 * D ms" as the message; in JSON the same message and each of them as its own field (method,
 * path, status, peer, bytes, duration_ms, note). note may be NULL. Limited like any call site
 * (one site per note). */
#define log_access(...) log_access_at(__FILE__, __VA_ARGS__)
void log_access_at(const char *source, const char *function, const char *request_id,
                   const char *method, const char *path, int status, const char *peer, size_t bytes,
                   double duration_ms, const char *note);

/* Writes the summaries of repeats whose second is over (all: every pending one); the loop
 * calls it every second, and main with all=1 before exit. */
void log_flush_repeats(int all);

/* lws's log emitter (lws_set_log_level(..., log_lws_emit)): its lines get our format and limit. */
void log_lws_emit(int lws_level, const char *line);

/* One line from a signal handler: no locks, no stdio, no limiter. */
void log_emergency(enum log_level level, const char *source, const char *message);

/* Tests: where lines go (default 2), the wall clock lines are stamped with (ms since 1970),
 * and the monotonic clock the limiter counts its seconds on (setting it forgets every site).
 * NULL: the real ones (CLOCK_REALTIME, CLOCK_MONOTONIC). */
void log_set_fd(int fd);
void log_set_clock(int64_t (*now_ms)(void));
void log_set_limiter_clock(int64_t (*mono_ms)(void));

#endif
