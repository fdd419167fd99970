/* log.c: one line per event on stderr (text or JSON): time, level, source, function, request
 * id, message; one write(2) per line, and a limit on how often one call site may repeat. */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = LOG_INFO;
static atomic_int format = LOG_FORMAT_TEXT;
static atomic_int out_fd = 2;
static atomic_int journal;
static const char *const names[] = {"debug", "info", "warn", "error"};

/* The repeat limiter: one slot per call site (hashed; a collision evicts the older site after
 * writing its summary). Its lock also orders the writes, so a summary precedes what follows. */
#define SLOTS 256
#define LAST_MAX 240
struct site {
  const void *key;
  const char *source;
  const char *function; /* static or NULL: the function of the last line, for the summary */
  char function_copy[64];
  enum log_level level;
  int64_t window_ms;
  unsigned written, repeats;
  char last[LAST_MAX]; /* the last suppressed message */
  char last_rid[48];
};
static struct site sites[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t (*clock_fn)(void); /* the time lines are stamped with (NULL: the real one) */
static int64_t (*mono_fn)(void);  /* the limiter's seconds (NULL: CLOCK_MONOTONIC) */

static int64_t real_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The limiter counts seconds on the monotonic clock: a wall clock set back must not hold a
 * site's second open (and its lines suppressed) until the clock catches up. */
static int64_t mono_now_ms(void) {
  if (mono_fn)
    return mono_fn();
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void log_set_level(enum log_level level) {
  min_level = level;
}

int log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (!strcmp(name, names[i]))
      return i;
  return -1;
}

void log_set_format(enum log_format f) {
  format = f;
}

enum log_format log_get_format(void) {
  return (enum log_format)format;
}

void log_set_journal(int on) {
  journal = on;
}

int log_journal(void) {
  return journal;
}

int log_stderr_is_journal(void) {
  const char *v = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;
  if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
    return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int log_format_parse(const char *name) {
  if (!strcmp(name, "text"))
    return LOG_FORMAT_TEXT;
  if (!strcmp(name, "json"))
    return LOG_FORMAT_JSON;
  return -1;
}

void log_set_fd(int fd) {
  out_fd = fd;
}

void log_set_clock(int64_t (*now_ms)(void)) {
  pthread_mutex_lock(&lock);
  clock_fn = now_ms;
  pthread_mutex_unlock(&lock);
}

void log_set_limiter_clock(int64_t (*mono_ms)(void)) {
  pthread_mutex_lock(&lock);
  mono_fn = mono_ms;
  memset(sites, 0, sizeof sites);
  pthread_mutex_unlock(&lock);
}

/* "host/store.c" -> "store": async-signal-safe, no allocation. */
static size_t source_name(const char *file, const char **start) {
  const char *s = file ? file : "-";
  for (const char *p = s; *p; p++)
    if (*p == '/')
      s = p + 1;
  size_t n = strlen(s);
  if (n > 2 && s[n - 2] == '.' && (s[n - 1] == 'c' || s[n - 1] == 'h'))
    n -= 2;
  *start = s;
  return n;
}

/* Days since 1970-01-01 to a civil date (H. Hinnant's algorithm): no gmtime_r, so a signal
 * handler can stamp its line too. */
static int stamp(char *buf, int64_t ms) {
  int64_t secs = ms / 1000, days = secs / 86400, sod = secs % 86400;
  int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  int64_t f[] = {y, m, d, sod / 3600, sod / 60 % 60, sod % 60, ms % 1000};
  static const int width[] = {4, 2, 2, 2, 2, 2, 3};
  static const char after[] = "--T::.Z";
  int n = 0;
  for (int i = 0; i < 7; i++) {
    for (int w = width[i] - 1; w >= 0; w--) {
      int64_t v = f[i];
      for (int k = 0; k < w; k++)
        v /= 10;
      buf[n++] = (char)('0' + v % 10);
    }
    buf[n++] = after[i];
  }
  buf[n] = 0;
  return n;
}

struct out {
  char *buf;
  size_t len, cap; /* cap keeps room for the newline */
};

static void put(struct out *o, const char *s, size_t n) {
  if (n > o->cap - o->len)
    n = o->cap - o->len;
  memcpy(o->buf + o->len, s, n);
  o->len += n;
}

static void puts_(struct out *o, const char *s) {
  put(o, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  size_t len = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
  if (!len || len > n || (len == 2 && s[0] < 0xc2) || (len == 4 && s[0] > 0xf4))
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)))
    return 0;
  if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)))
    return 0;
  return len;
}

/* A JSON string: a shipper must be able to parse every line, whatever bytes a client sent.
 * Writes whole escapes only and always the closing quote (reserve 1 byte for it). */
static void put_json(struct out *o, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  put(o, "\"", 1);
  o->cap--;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    char e[6];
    const char *tok = e;
    size_t l;
    if (c == '"' || c == '\\') {
      e[0] = '\\';
      e[1] = (char)c;
      l = 2;
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      memcpy(e, "\\u00", 4);
      e[4] = hex[c >> 4];
      e[5] = hex[c & 15];
      l = 6;
      i++;
    } else if ((l = utf8_len((const unsigned char *)s + i, n - i))) {
      tok = s + i;
      i += l;
    } else {
      tok = "\\ufffd";
      l = 6;
      i++;
    }
    if (l > o->cap - o->len)
      break;
    put(o, tok, l);
  }
  o->cap++;
  put(o, "\"", 1);
}

/* Formats one line into buf (cap bytes) and writes it with one write(2). Async-signal-safe:
 * no stdio, no locks. */
static void write_line(char *buf, size_t cap, int64_t ms, enum log_level level, const char *file,
                       const char *function, const char *request_id, const char *msg, size_t msglen,
                       const char *fields) {
  struct out o = {buf, 0, cap - 1};
  char ts[32];
  stamp(ts, ms);
  if (journal) {
    static const char prio[] = {'7', '6', '4', '3'}; /* debug, info, warning, err */
    char p[3] = {'<', prio[level], '>'};
    put(&o, p, 3);
  }
  const char *src;
  size_t srclen = source_name(file, &src);
  if (format == LOG_FORMAT_JSON) {
    puts_(&o, "{\"time\":\"");
    puts_(&o, ts);
    puts_(&o, "\",\"level\":\"");
    puts_(&o, names[level]);
    puts_(&o, "\",\"source\":");
    put_json(&o, src, srclen);
    if (function) {
      puts_(&o, ",\"function\":");
      put_json(&o, function, strlen(function));
    }
    if (request_id) {
      puts_(&o, ",\"request_id\":");
      put_json(&o, request_id, strlen(request_id));
    }
    if (fields)
      puts_(&o, fields); /* whole fields, each with its leading comma, or nothing */
    puts_(&o, ",\"msg\":");
    o.cap--; /* room for the closing brace */
    put_json(&o, msg, msglen);
    o.cap++;
    puts_(&o, "}");
  } else {
    puts_(&o, ts);
    puts_(&o, " ");
    const char *lv = names[level];
    puts_(&o, lv);
    put(&o, "      ", 6 - strlen(lv)); /* "info  ", "warn  ", "error " */
    put(&o, src, srclen);
    puts_(&o, " ");
    puts_(&o, function ? function : "-");
    puts_(&o, " ");
    puts_(&o, request_id ? request_id : "-");
    puts_(&o, " ");
    size_t start = o.len;
    put(&o, msg, msglen);
    /* One event, one line: a newline inside a message would forge a second line. */
    for (size_t i = start; i < o.len; i++)
      if (o.buf[i] == '\n' || o.buf[i] == '\r')
        o.buf[i] = ' ';
  }
  o.buf[o.len++] = '\n';
  for (size_t off = 0; off < o.len;) {
    ssize_t w = write(out_fd, o.buf + off, o.len - off);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
}

/* now: the limiter's clock (the length of the window); wall: the line's stamp. */
static void write_summary(struct site *s, int64_t now, int64_t wall) {
  char msg[LAST_MAX + 96], line[4096];
  int n = snprintf(msg, sizeof msg, "last message repeated %u more times in %.1f s: %s", s->repeats,
                   (double)(now - s->window_ms) / 1000.0, s->last);
  if (n < 0)
    return;
  write_line(line, sizeof line, wall, s->level, s->source, s->function,
             s->last_rid[0] ? s->last_rid : NULL, msg, strlen(msg), NULL);
  s->repeats = 0;
}

void log_flush_repeats(int all) {
  pthread_mutex_lock(&lock);
  int64_t now = mono_now_ms(), wall = clock_fn ? clock_fn() : real_now_ms();
  for (int i = 0; i < SLOTS; i++)
    if (sites[i].repeats && (all || now - sites[i].window_ms >= LOG_WINDOW_MS))
      write_summary(&sites[i], now, wall);
  pthread_mutex_unlock(&lock);
}

/* The limiter's decision for one line of call site key: 1 to write it. Under the lock.
 * Linear probing over the whole table, to the key or the first free slot: slots are never
 * emptied, so a key is always found before a free one. A site whose second is over with
 * nothing suppressed holds no state and may be taken over; only when all SLOTS are busy does
 * the one quiet longest go, after its summary. (Probing only a few slots let busy sites that
 * hash alike evict each other, which restarted their seconds and let their lines through;
 * whether they did depended on where the format strings were mapped.) */
static int admit(const void *key, const char *source, enum log_level level, const char *function,
                 const char *request_id, const char *msg, size_t len, int64_t now, int64_t wall) {
  uintptr_t k = (uintptr_t)key ^ ((uintptr_t)level << 3);
  k ^= k >> 17;
  k *= (uintptr_t)0x9e3779b97f4a7c15u;
  size_t at = (k >> 24) % SLOTS;
  struct site *s = NULL, *free_slot = NULL, *stale = NULL, *oldest = NULL;
  for (size_t i = 0; i < SLOTS && !s && !free_slot; i++) {
    struct site *c = &sites[(at + i) % SLOTS];
    if (c->key == key && c->level == level)
      s = c;
    else if (!c->key)
      free_slot = c;
    else {
      if (!stale && !c->repeats && now - c->window_ms >= LOG_WINDOW_MS)
        stale = c;
      if (!oldest || c->window_ms < oldest->window_ms)
        oldest = c;
    }
  }
  if (!s) {
    s = stale ? stale : free_slot ? free_slot : oldest;
    if (s->repeats)
      write_summary(s, now, wall);
    memset(s, 0, sizeof *s);
    s->key = key;
    s->source = source;
    s->level = level;
    s->window_ms = now;
  }
  if (now - s->window_ms >= LOG_WINDOW_MS) {
    if (s->repeats)
      write_summary(s, now, wall);
    s->window_ms = now;
    s->written = 0;
  }
  if (s->written < LOG_BURST) {
    s->written++;
    return 1;
  }
  s->repeats++;
  snprintf(s->last, sizeof s->last, "%.*s", (int)len, msg);
  snprintf(s->last_rid, sizeof s->last_rid, "%s", request_id ? request_id : "");
  snprintf(s->function_copy, sizeof s->function_copy, "%s", function ? function : "");
  s->function = function ? s->function_copy : NULL;
  return 0;
}

static void emit_fields(const void *key, const char *source, enum log_level level,
                        const char *function, const char *request_id, const char *msg, size_t len,
                        const char *fields) {
  char line[4096];
  pthread_mutex_lock(&lock);
  int64_t now = mono_now_ms(), wall = clock_fn ? clock_fn() : real_now_ms();
  if (admit(key, source, level, function, request_id, msg, len, now, wall))
    write_line(line, sizeof line, wall, level, source, function, request_id, msg, len, fields);
  pthread_mutex_unlock(&lock);
}

static void emit(const void *key, const char *source, enum log_level level, const char *function,
                 const char *request_id, const char *msg, size_t len) {
  emit_fields(key, source, level, function, request_id, msg, len, NULL);
}

/* `,"name":` and s as a JSON string (put_json closes it even when cut), whole or not at all:
 * the fields must stay valid JSON. */
static void field_str(struct out *o, const char *name, const char *s, size_t max) {
  size_t n = s ? strlen(s) : 0;
  char tmp[1400];
  struct out t = {tmp, 0, sizeof tmp - 1};
  puts_(&t, ",\"");
  puts_(&t, name);
  puts_(&t, "\":");
  put_json(&t, s ? s : "", n > max ? max : n);
  if (t.len < t.cap && t.len <= o->cap - o->len)
    put(o, tmp, t.len);
}

void log_access_at(const char *source, const char *function, const char *request_id,
                   const char *method, const char *path, int status, const char *peer, size_t bytes,
                   double duration_ms, const char *note) {
  if (LOG_INFO < min_level)
    return;
  char msg[512], fields[2048], num[96];
  int n = snprintf(msg, sizeof msg, "%s %.200s %d %s%s%s, %zu bytes in %.1f ms", method, path,
                   status, peer, note ? " " : "", note ? note : "", bytes, duration_ms);
  size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
  msg[len] = 0;
  struct out o = {fields, 0, sizeof fields - 1};
  if (format == LOG_FORMAT_JSON) {
    field_str(&o, "method", method, 16);
    field_str(&o, "path", path, 200);
    snprintf(num, sizeof num, ",\"status\":%d", status);
    puts_(&o, num);
    field_str(&o, "peer", peer, 64);
    snprintf(num, sizeof num, ",\"bytes\":%zu,\"duration_ms\":%.3f", bytes, duration_ms);
    puts_(&o, num);
    if (note)
      field_str(&o, "note", note, 200);
  }
  fields[o.len] = 0;
  /* The site is the note's text (a literal per call site), never a client's bytes. */
  emit_fields(note ? (const void *)note : (const void *)log_access_at, source, LOG_INFO, function,
              request_id, msg, len, format == LOG_FORMAT_JSON ? fields : NULL);
}

/* Site keys of lws lines: addresses inside a private array, never a format string's address. */
static const char lws_keys[64];
static const void *lws_site_key(uint64_t hash) {
  return lws_keys + hash % sizeof lws_keys;
}

void log_emitv(const char *source, enum log_level level, const char *function,
               const char *request_id, const char *fmt, va_list ap) {
  if ((int)level < min_level || level > LOG_ERROR)
    return;
  char msg[2048];
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
  msg[len] = 0;
  emit(fmt, source, level, function, request_id, msg, len);
}

void log_emit(const char *source, enum log_level level, const char *function,
              const char *request_id, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_emitv(source, level, function, request_id, fmt, ap);
  va_end(ap);
}

/* lws's level bits (libwebsockets.h), kept here so the log depends on nothing. */
enum { LWS_ERR = 1 << 0, LWS_WARN = 1 << 1, LWS_NOTICE = 1 << 2 };

/* lws hands over formatted lines, not formats: the site is the line with its digits left out
 * ("accept: errno 24" from every accept is one site). */
void log_lws_emit(int lws_level, const char *line) {
  enum log_level level = (lws_level & LWS_ERR)      ? LOG_ERROR
                         : (lws_level & LWS_WARN)   ? LOG_WARN
                         : (lws_level & LWS_NOTICE) ? LOG_INFO
                                                    : LOG_DEBUG;
  if ((int)level < min_level)
    return;
  uint64_t hash = 1469598103934665603u;
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
    n--;
  if (n > 2047)
    n = 2047;
  for (size_t i = 0; i < n; i++)
    if (line[i] < '0' || line[i] > '9')
      hash = (hash ^ (unsigned char)line[i]) * 1099511628211u;
  emit(lws_site_key(hash), "lws", level, NULL, NULL, line, n);
}

void log_emergency(enum log_level level, const char *source, const char *message) {
  char line[1024];
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  write_line(line, sizeof line, (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000, level, source, NULL,
             NULL, message, strlen(message), NULL);
}
