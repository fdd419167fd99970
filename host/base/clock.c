/* clock.c: the host's time and its request ids: the two things every layer asks for, kept
 * here, below all of them (they lived in server.c, which made every caller depend upward). */
#include "host.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t host_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void host_request_id(struct host *h, char *buf, size_t len) {
  if (!h->request_prefix[0]) {
    unsigned char r[4] = {0};
    if (getrandom(r, sizeof r, 0) != sizeof r)
      memset(r, 0x5a, sizeof r);
    snprintf(h->request_prefix, sizeof h->request_prefix, "%02x%02x%02x%02x", r[0], r[1], r[2],
             r[3]);
  }
  /* Once per event: hex by hand, no printf. */
  static const char hex[] = "0123456789abcdef";
  char tmp[17];
  int n = 0;
  for (uint64_t v = ++h->next_request; v; v >>= 4)
    tmp[n++] = hex[v & 15];
  if (len < 8 + 1 + (size_t)n + 1) {
    if (len)
      buf[0] = 0;
    return;
  }
  memcpy(buf, h->request_prefix, 8);
  buf[8] = '-';
  for (int i = 0; i < n; i++)
    buf[9 + i] = tmp[n - 1 - i];
  buf[9 + n] = 0;
}
