/* log.h: one line per event on stderr: time, level, function, request id, message.
 * Owns the log level (the one process-wide setting outside struct host: logging must work
 * before the host exists and from every module). */
#ifndef WSHOST_LOG_H
#define WSHOST_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error". -1 if unknown. */
int log_level_parse(const char *name);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *function, const char *request_id, const char *fmt,
             ...) __attribute__((format(printf, 4, 5)));
void log_msgv(enum log_level level, const char *function, const char *request_id, const char *fmt,
              va_list ap);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
