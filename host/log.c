/* log.c: one line per event on stderr: time, level, function, request id, message.
 * Lines are written with one write(2) so lines of concurrent writers never interleave. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) {
  min_level = level;
}

int log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (!strcmp(name, names[i]))
      return i;
  return -1;
}

int log_enabled(enum log_level level) {
  return level >= min_level;
}

void log_msgv(enum log_level level, const char *function, const char *request_id, const char *fmt,
              va_list ap) {
  if (level < min_level)
    return;
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s %s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (int)(tv.tv_usec / 1000), names[level], function ? function : "-",
                   request_id ? request_id : "-");
  if (n < 0)
    return;
  if ((size_t)n < sizeof line) {
    int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    n = m < 0 ? n : n + m;
  }
  if ((size_t)n >= sizeof line - 1)
    n = sizeof line - 2;
  /* One event, one line: a newline inside a message would forge a second line. */
  for (int i = 0; i < n; i++)
    if (line[i] == '\n' || line[i] == '\r')
      line[i] = ' ';
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
}

void log_msg(enum log_level level, const char *function, const char *request_id, const char *fmt,
             ...) {
  va_list ap;
  va_start(ap, fmt);
  log_msgv(level, function, request_id, fmt, ap);
  va_end(ap);
}
