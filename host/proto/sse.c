/* sse.c: the text of one Server-Sent Event. */
#include "sse.h"

#include <stdio.h>
#include <string.h>

size_t sse_size(const char *event, const char *data) {
  if (!data || (event && (strpbrk(event, "\r\n") || strlen(event) > SSE_EVENT_MAX)))
    return 0;
  size_t lines = 1;
  for (const char *c = data; *c; c++)
    lines += *c == '\n';
  return 4 + 20 + 1 + (event ? 7 + strlen(event) + 1 : 0) + strlen(data) + lines * 7 + 1;
}

size_t sse_format(char *buf, uint64_t id, const char *event, const char *data) {
  size_t n = (size_t)sprintf(buf, "id: %llu\n", (unsigned long long)id);
  if (event)
    n += (size_t)sprintf(buf + n, "event: %s\n", event);
  for (const char *line = data;;) {
    const char *nl = strchr(line, '\n');
    size_t k = nl ? (size_t)(nl - line) : strlen(line);
    if (k && line[k - 1] == '\r')
      k--;
    memcpy(buf + n, "data: ", 6);
    memcpy(buf + n + 6, line, k);
    n += 6 + k;
    buf[n++] = '\n';
    if (!nl)
      break;
    line = nl + 1;
  }
  buf[n++] = '\n';
  return n;
}
