/* plugins.c: the functions in the plugins folder: load from a private copy, ABI check, swap,
 * unload, and the inotify watch that drives hot reload. Owns every dlopen handle.
 *
 * Each version is dlopen'ed from its own copy in the runtime folder: a new inode, so dlopen
 * never hands back a cached image, and a `cp` over the original never rewrites mapped pages.
 * The slow and hostile part of a load (the copy, the ELF check, dlopen with the file's
 * constructors, the ABI checks) runs on a loader thread, one load at a time, bounded by
 * --load-timeout; the rest (CLOUD_INIT, the swap, the old version's CLOUD_FINI) happens on the
 * event loop between events, so a version is never running while it is unloaded.
 *
 * A version stays mapped while a thread it started may still run: the threads born while it
 * loaded (constructors, CLOUD_INIT) are listed from /proc/self/task before and after, and a
 * version is dlclose'd only once none of them is left after its CLOUD_FINI. Otherwise it is
 * kept mapped for good (leaked, logged, counted in /_/metrics). A load stuck in a constructor
 * holds glibc's loader lock: nothing can be dlopen'ed or dlclose'd in this process after it,
 * so the host keeps serving what is loaded, refuses further loads and says so in /_/status. */
#include "plugins.h"

#include "crash.h"
#include "elfcheck.h"
#include "http_parse.h"
#include "lifecycle.h"
#include "log.h"
#include "quarantine.h"
#include "sha256.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Threads a load started that a version remembers (more: it is never unloaded). */
#define TIDS_MAX 32
/* Threads of the process read at once from /proc/self/task (more: cannot tell, never unload). */
#define TASKS_MAX 4096
/* How often the loop looks at a load or a CLOUD_FINI in progress. */
#define JOB_POLL_MS 20
/* Loads past --load-timeout whose thread has not come back; at this many nothing more loads. */
#define LATE_MAX 4
/* CLOUD_FINI calls running at once; past it a retired version is left mapped, unfinished. */
#define FINS_MAX 8

struct version {
  void *dl;
  const cloud_plugin_desc *desc;
  void (*fini)(void);
  uint32_t options; /* CLOUD_OPT_* the file exports (CLOUD_OPTIONS), 0 without */
  int number;
  int pins;                   /* plugins_pin: outstanding deferred responses */
  int retired;                /* replaced or removed while pinned: unloaded at the last unpin */
  char sha256[CRASH_SHA_HEX]; /* of the file's content: what a quarantine names */
  char name[FN_NAME_MAX + 1];
  int ntids; /* threads born while it loaded (constructors, init); -1: too many to tell */
  pid_t tids[TIDS_MAX];
  struct version *next; /* the list of versions waiting for the loader to be idle */
  char copy[PATH_MAX];
};

enum job_phase { PH_COPY, PH_OPEN, PH_INIT, PH_DONE };

/* One load on the loader thread. The thread touches nothing but the job and its version, and
 * nothing at all once phase is PH_DONE; the loop reads phase and takes the rest after it. */
struct job {
  struct plugins *p;
  struct version *v;
  const cloud_api *api;
  int fd;         /* the plugin file, opened by the loop */
  struct stat st; /* of it */
  int number;     /* the version number a success gets */
  char name[FN_NAME_MAX + 1];
  char path[PATH_MAX + FN_NAME_MAX + 8];
  char blocked[CRASH_SHA_HEX]; /* the quarantined build of name ("" when none) */
  pthread_t thread;
  atomic_int phase;
  atomic_int cancel; /* past the deadline while copying: give up after the copy */
  int rc;            /* at PH_DONE: 0, or negative with why */
  int quarantined;   /* refused: the copy is the quarantined build */
  char why[512];
  int64_t started_ms, deadline_ms; /* monotonic */
  int64_t started_wall_ms;
  int late_phase;   /* the phase it was in when its time ran out */
  int async;        /* started by the loop: the loop finishes it (metrics, on_swap) */
  struct job *next; /* the late list */
};

/* One CLOUD_FINI on its own thread; the loop waits for it up to --load-timeout. */
struct fin {
  struct version *v;
  pthread_t thread;
  atomic_int done;
  int overdue; /* past the bound: v stays mapped for good */
  int64_t deadline_ms;
  struct fin *next;
};

struct slot {
  struct plugins *owner;
  char name[FN_NAME_MAX + 1];
  struct version *cur;
  int loads; /* versions loaded so far: the next one's number */
  int64_t loaded_at_ms;
  struct stat st; /* of the file the current version came from */
  char last_error[512];
  int64_t last_error_ms;
  int64_t changed_ms; /* last inotify event, 0 when nothing is pending */
};

struct plugins {
  struct host *h;
  const cloud_api *api; /* handed to every plugin loaded (api.c owns it) */
  char dir[PATH_MAX];
  char run[PATH_MAX];
  struct map slots; /* name -> struct slot * */
  int ifd;
  struct lws *watch;
  lws_sorted_usec_list_t debounce;
  unsigned copy_seq;
  void (*on_swap)(void *arg, const char *name); /* after the watch swapped a version in */
  void *on_swap_arg;
  struct job *job;  /* the load in progress (one at a time), or NULL */
  struct job *late; /* loads past --load-timeout whose thread has not come back */
  int nlate;
  struct fin *fins; /* CLOUD_FINI calls in progress */
  int nfins;
  struct version *closing;     /* unloaded while a load held the loader lock: closed after it */
  lws_sorted_usec_list_t poll; /* the loop's look at job, late and fins */
};

/* --load-timeout, seconds (a config that never set it, as unit tests make, gets 10). */
static int load_timeout(const struct plugins *p) {
  return p->h->cfg.load_timeout > 0 ? p->h->cfg.load_timeout : 10;
}

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The threads of this process now, into out (at most max). Their number, -1 if more. */
static int tasks_read(pid_t *out, int max) {
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    if (n == max) {
      n = -1;
      break;
    }
    out[n++] = (pid_t)atoi(e->d_name);
  }
  closedir(d);
  return n;
}

/* Adds to v the threads in after that were not in before (born while v loaded). */
static void tids_born(struct version *v, const pid_t *before, int nb, const pid_t *after, int na) {
  if (v->ntids < 0)
    return;
  if (nb < 0 || na < 0) {
    v->ntids = -1;
    return;
  }
  for (int i = 0; i < na; i++) {
    int old = 0;
    for (int k = 0; k < nb && !old; k++)
      old = before[k] == after[i];
    if (old)
      continue;
    if (v->ntids == TIDS_MAX) {
      v->ntids = -1;
      return;
    }
    v->tids[v->ntids++] = after[i];
  }
}

/* 1 if a thread born while v loaded may still run, looked at tries times 2 ms apart (a thread
 * that is stopping may take a moment to leave). A reused thread id reads as alive (safe). */
static int threads_left(const struct version *v, int tries) {
  if (v->ntids < 0)
    return 1;
  for (int t = 0; t < tries; t++) {
    int alive = 0;
    for (int i = 0; i < v->ntids && !alive; i++) {
      char path[64];
      snprintf(path, sizeof path, "/proc/self/task/%d", (int)v->tids[i]);
      alive = access(path, F_OK) == 0;
    }
    if (!alive)
      return 0;
    struct timespec ts = {0, 2 * 1000000L};
    if (t + 1 < tries)
      nanosleep(&ts, NULL);
  }
  return 1;
}

static pid_t *tasks_buf(void) {
  return malloc(TASKS_MAX * sizeof(pid_t));
}

static struct slot *slot_get(struct plugins *p, const char *name, int create) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  if (s || !create)
    return s;
  s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  snprintf(s->name, sizeof s->name, "%s", name);
  s->owner = p;
  if (map_set(&p->slots, name, strlen(name), s) < 0) {
    free(s);
    return NULL;
  }
  return s;
}

/* A version nobody will call again stays mapped for good: say so and count it. */
static void version_leak(struct plugins *p, struct version *v, const char *why) {
  log_warn(NULL, NULL, "plugin copy %s (version %d) stays mapped: %s", v->copy, v->number, why);
  if (p)
    p->h->metrics.plugin_versions_leaked++;
  if (v->copy[0])
    unlink(v->copy); /* the mapping keeps the inode; the name goes */
  free(v);           /* the handle is dropped, never closed */
}

/* A load past its time still inside dlopen: glibc's loader lock is held for as long. */
static int loader_locked(const struct plugins *p) {
  for (const struct job *j = p->late; j; j = j->next)
    if (atomic_load(&j->phase) == PH_OPEN)
      return 1;
  return 0;
}

static void version_close(struct plugins *p, struct version *v) {
  if (v->dl && threads_left(v, 1)) {
    version_leak(p, v,
                 v->fini ? "threads it started are still running after its CLOUD_FINI"
                         : "it started threads and has no CLOUD_FINI to stop them");
    return;
  }
  if (v->dl && loader_locked(p)) {
    version_leak(p, v, "a load is stuck in a constructor holding the loader's lock");
    return;
  }
  if (v->dl && p->job) { /* dlclose would wait for the loader's lock: after the load */
    v->next = p->closing;
    p->closing = v;
    return;
  }
  if (v->dl) {
    dlclose(v->dl);
    log_info(v->name[0] ? v->name : NULL, NULL, "plugin copy %s (version %d) unloaded", v->copy,
             v->number);
  }
  if (v->copy[0])
    unlink(v->copy);
  free(v);
}

static void poll_schedule(struct plugins *p);

/* Starts fn(arg) on a thread of its own with the signals the loop handles blocked (faults stay
 * deliverable: the crash handler must see a plugin's). 0 or -errno. */
static int thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGABRT);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(t, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return -rc;
}

static void *fin_main(void *arg) {
  struct fin *f = arg;
  struct version *v = f->v;
  struct crash_frame saved;
  lifecycle_thread_set(1);
  crash_enter(&saved, v->name, v->number, v->sha256, "fini");
  v->fini();
  crash_leave(&saved);
  lifecycle_thread_set(0);
  threads_left(v, 50); /* up to 100 ms for the threads fini stopped to leave: not on the loop */
  atomic_store(&f->done, 1); /* the last touch */
  return NULL;
}

/* A version nobody calls any more: its CLOUD_FINI runs on a thread of its own (the loop goes
 * on), then it is dlclose'd unless a thread it started is still there. */
static void version_unload(struct plugins *p, struct version *v) {
  if (!v)
    return;
  if (v->pins > 0) { /* its deferred responses are still to come: unloaded at the last unpin */
    v->retired = 1;
    return;
  }
  if (v->desc)
    crash_unmap(v->desc);
  if (!v->fini) {
    version_close(p, v);
    return;
  }
  if (p->nfins >= FINS_MAX) {
    version_leak(p, v, "too many CLOUD_FINI calls are still running: its own is not run");
    return;
  }
  struct fin *f = calloc(1, sizeof *f);
  if (!f) {
    version_leak(p, v, "no memory to run its CLOUD_FINI");
    return;
  }
  f->v = v;
  atomic_init(&f->done, 0);
  f->deadline_ms = mono_ms() + (int64_t)load_timeout(p) * 1000;
  int rc = thread_start(&f->thread, fin_main, f);
  if (rc < 0) {
    free(f);
    version_leak(p, v, "cannot start a thread for its CLOUD_FINI");
    return;
  }
  f->next = p->fins;
  p->fins = f;
  p->nfins++;
  poll_schedule(p);
}

/* Looks at the CLOUD_FINI calls in progress: a finished one's version is closed; one past
 * --load-timeout leaves its version mapped for good. */
static void fins_poll(struct plugins *p) {
  int64_t now = mono_ms();
  for (struct fin **pf = &p->fins; *pf;) {
    struct fin *f = *pf;
    if (atomic_load(&f->done)) {
      pthread_join(f->thread, NULL);
      *pf = f->next;
      p->nfins--;
      if (f->overdue) {
        log_warn(f->v->name, NULL,
                 "CLOUD_FINI of version %d returned after all; the version stays mapped",
                 f->v->number);
        free(f->v);
      } else
        version_close(p, f->v);
      free(f);
      continue;
    }
    if (!f->overdue && now >= f->deadline_ms) {
      f->overdue = 1;
      p->h->metrics.plugin_versions_leaked++;
      log_error(f->v->name, NULL,
                "CLOUD_FINI of version %d has not returned within --load-timeout (%d s): the "
                "version stays mapped for good (plugin copy %s)",
                f->v->number, load_timeout(p), f->v->copy);
      if (f->v->copy[0])
        unlink(f->v->copy);
    }
    pf = &f->next;
  }
}

/* "others than the host's user may write" is refused: loading a .so runs its code. */
static const char *unsafe_mode(const struct stat *st) {
  if (st->st_uid != geteuid() && st->st_uid != 0)
    return "owned by another user";
  if (st->st_mode & (S_IWGRP | S_IWOTH))
    return "writable by group or others";
  return NULL;
}

/* Copies fd to out (a fresh file in the runtime folder), hashing what it copies (hex into
 * sha). 0 or -errno. Runs on the loader thread. */
static int copy_private(int fd, const char *out, char sha[CRASH_SHA_HEX]) {
  struct sha256 hc;
  sha256_init(&hc);
  int wfd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (wfd < 0)
    return -errno;
  char *buf = malloc(65536);
  ssize_t n;
  int rc = buf ? 0 : -ENOMEM;
  while (!rc && (n = read(fd, buf, 65536)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    sha256_update(&hc, buf, (size_t)n);
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(wfd, buf + off, n - off);
      if (w < 0) {
        rc = -errno;
        break;
      }
      off += w;
    }
  }
  free(buf);
  if (close(wfd) < 0 && !rc)
    rc = -errno;
  if (rc)
    unlink(out);
  uint8_t d[SHA256_LEN];
  sha256_final(&hc, d);
  for (int i = 0; i < SHA256_LEN; i++)
    snprintf(sha + 2 * i, 3, "%02x", d[i]);
  return rc;
}

/* elf_check on the private copy. 0 or negative with why filled. */
static int check_copy(const char *copy, char *why, size_t whylen) {
  int fd = open(copy, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    int e = errno;
    snprintf(why, whylen, "cannot read the copy %.200s: %s", copy, strerror(e));
    if (fd >= 0)
      close(fd);
    return -e;
  }
  if (st.st_size == 0) {
    close(fd);
    snprintf(why, whylen, "empty file");
    return -ENOEXEC;
  }
  /* Our own copy, which nobody else writes: mapping it cannot fault. */
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    snprintf(why, whylen, "cannot map the copy: %s", strerror(errno));
    return -EIO;
  }
  char elf_why[400];
  int rc = elf_check(m, (size_t)st.st_size, elf_why, sizeof elf_why);
  munmap(m, (size_t)st.st_size);
  if (rc < 0)
    snprintf(why, whylen, "%s", elf_why);
  return rc;
}

static void refuse(struct slot *s, const char *path, const char *why) {
  snprintf(s->last_error, sizeof s->last_error, "%s", why);
  s->last_error_ms = host_now_ms();
  if (s->cur)
    log_error(s->name, NULL, "plugin %s refused: %s; version %d keeps serving", path, why,
              s->cur->number);
  else
    log_error(s->name, NULL, "plugin %s refused: %s", path, why);
}

/* The loader thread: copy, check, dlopen (constructors), ABI checks. No SDK call and no
 * host state: what it finds goes into the job, for the loop. */
static void *job_main(void *arg) {
  struct job *j = arg;
  struct version *v = j->v;
  pid_t *before = NULL, *after = NULL;
  int rc = copy_private(j->fd, v->copy, v->sha256);
  close(j->fd);
  j->fd = -1;
  if (rc < 0) {
    snprintf(j->why, sizeof j->why, "cannot copy to %.200s: %s", v->copy, strerror(-rc));
    v->copy[0] = 0;
    goto done;
  }
  /* The copy, not the original, is what dlopen maps: check it, so a file cut short (a deploy
   * that wrote in place and paused) is refused here instead of faulting inside dlopen. */
  if ((rc = check_copy(v->copy, j->why, sizeof j->why)) < 0)
    goto done;
  if (j->blocked[0] && !strcmp(j->blocked, v->sha256)) {
    j->quarantined = 1;
    rc = -EPERM;
    goto done;
  }
  if (atomic_load(&j->cancel)) {
    snprintf(j->why, sizeof j->why, "the copy took longer than --load-timeout");
    rc = -ETIMEDOUT;
    goto done;
  }
  before = tasks_buf();
  after = tasks_buf();
  int nb = before ? tasks_read(before, TASKS_MAX) : -1;
  atomic_store(&j->phase, PH_OPEN);
  /* Constructors run plugin code: a crash there quarantines this build too. */
  struct crash_frame saved;
  crash_enter(&saved, j->name, j->number, v->sha256, "load");
  v->dl = dlopen(v->copy, RTLD_NOW | RTLD_LOCAL);
  crash_leave(&saved);
  int na = after ? tasks_read(after, TASKS_MAX) : -1;
  tids_born(v, before, nb, after, na);
  rc = -EINVAL;
  if (!v->dl) {
    const char *e = dlerror();
    snprintf(j->why, sizeof j->why, "dlopen failed: %s", e ? e : "?");
    goto done;
  }
  v->desc = dlsym(v->dl, "cloud_plugin");
  if (!v->desc) {
    snprintf(j->why, sizeof j->why,
             "no entry point [cloud_plugin] (built without CLOUD_FUNCTION?)");
    goto done;
  }
  if (v->desc->abi_version < PLUGINS_ABI_MIN || v->desc->abi_version > PLUGINS_ABI_MAX) {
    snprintf(j->why, sizeof j->why, "ABI %u, host serves %d..%d", v->desc->abi_version,
             PLUGINS_ABI_MIN, PLUGINS_ABI_MAX);
    v->desc = NULL;
    goto done;
  }
  if (v->desc->size < sizeof(cloud_plugin_desc) || !v->desc->main || !v->desc->api ||
      v->desc->context_size > sizeof(FunctionContext)) {
    snprintf(j->why, sizeof j->why, "descriptor of size %u / context %u does not match ABI %u",
             v->desc->size, v->desc->context_size, v->desc->abi_version);
    v->desc = NULL;
    goto done;
  }
  const uint32_t *options = dlsym(v->dl, "cloud_plugin_options");
  v->options = options ? *options : 0;
  /* CLOUD_INIT runs here too; its cloud_shared and cloud_env calls are run on the loop for it
   * (lifecycle.h). Threads it starts are counted like the constructors'. */
  if (atomic_load(&j->cancel)) { /* timed out in the constructors: refused already */
    snprintf(j->why, sizeof j->why, "its constructors took longer than --load-timeout");
    rc = -ETIMEDOUT;
    goto done;
  }
  *v->desc->api = j->api;
  int (*init)(void) = (int (*)(void))dlsym(v->dl, "cloud_plugin_init");
  v->fini = (void (*)(void))dlsym(v->dl, "cloud_plugin_fini");
  nb = before ? tasks_read(before, TASKS_MAX) : -1;
  atomic_store(&j->phase, PH_INIT);
  lifecycle_thread_set(1);
  crash_enter(&saved, j->name, j->number, v->sha256, "load");
  rc = init ? init() : 0;
  crash_leave(&saved);
  lifecycle_thread_set(0);
  na = after ? tasks_read(after, TASKS_MAX) : -1;
  tids_born(v, before, nb, after, na);
  if (rc != 0) {
    snprintf(j->why, sizeof j->why, "init returned %d", rc);
    v->fini = NULL; /* init failed: nothing to finish */
    rc = -EINVAL;
  }
done:
  free(before);
  free(after);
  j->rc = rc;
  atomic_store(&j->phase, PH_DONE); /* the last touch: the loop owns the job from here */
  return NULL;
}

static void poll_fire(lws_sorted_usec_list_t *sul);
static void debounce_fire(lws_sorted_usec_list_t *sul);

static void poll_schedule(struct plugins *p) {
  if (p->h->lws && (p->job || p->late || p->fins))
    lws_sul_schedule(p->h->lws, 0, &p->poll, poll_fire, JOB_POLL_MS * LWS_US_PER_MS);
}

/* Closes what waited for the loader to be idle. */
static void closing_flush(struct plugins *p) {
  while (p->closing && !p->job) {
    struct version *v = p->closing;
    p->closing = v->next;
    version_close(p, v);
  }
}

/* The loop's half of a load whose thread is done: the swap, then the old version goes. */
static int job_apply(struct plugins *p, struct job *j) {
  struct slot *s = slot_get(p, j->name, 1);
  struct version *v = j->v;
  if (!s) {
    version_unload(p, v);
    return -ENOMEM;
  }
  if (j->rc < 0 && j->quarantined) {
    const json_t *q = quarantine_get(p->h->quarantine, j->name);
    const char *sig = json_string_value(json_object_get(q, "signal_name"));
    snprintf(j->why, sizeof j->why,
             "quarantined: this build (sha256 %.12s...) crashed the host with %s; deploy a "
             "different build, or lift it (POST /_/quarantine/%s/lift)",
             v->sha256, sig ? sig : "a signal", j->name);
    refuse(s, j->path, j->why);
    version_close(p, v);
    return -EPERM;
  }
  if (j->rc < 0) {
    refuse(s, j->path, j->why);
    v->desc = NULL; /* never crash_map'ed */
    version_close(p, v);
    return j->rc == -EPERM ? -EPERM : -EINVAL;
  }
  struct stat now_st;
  if (stat(j->path, &now_st) < 0 && errno == ENOENT) { /* removed while it loaded */
    log_info(j->name, NULL, "plugin %s was removed while it loaded: not swapped in", j->path);
    v->desc = NULL;
    version_unload(p, v);
    return -ENOENT;
  }
  crash_map(v->desc, s->name, j->number, v->sha256);
  if (quarantine_get(p->h->quarantine, j->name) &&
      quarantine_lift(p->h->quarantine, j->name, "deployed a different build") == 0)
    log_info(j->name, NULL, "quarantine of %s lifted: a different build (sha256 %.12s...) loaded",
             j->name, v->sha256);
  struct version *old = s->cur;
  v->number = ++s->loads;
  s->cur = v;
  s->st = j->st;
  s->loaded_at_ms = host_now_ms();
  s->last_error[0] = 0;
  version_unload(p, old);
  log_info(j->name, NULL, "plugin %s loaded: version %d (ABI %u) in %lld ms off the loop%s",
           j->path, v->number, v->desc->abi_version, (long long)(mono_ms() - j->started_ms),
           old ? ", previous version unloading" : "");
  return 0;
}

/* A load past --load-timeout: refused, its build quarantined (the file's sha256 is known by
 * then: the copy is done), the old version keeps serving. */
static void job_timed_out(struct plugins *p, struct job *j, int phase) {
  struct slot *s = slot_get(p, j->name, 1);
  const char *where = phase == PH_OPEN ? "its constructors (inside dlopen)" : "its CLOUD_INIT";
  char why[512];
  snprintf(why, sizeof why,
           "did not finish loading within --load-timeout (%d s): stuck in %s; build sha256 "
           "%.12s... quarantined%s",
           load_timeout(p), where, j->v->sha256,
           phase == PH_OPEN ? "; no plugin can be loaded while that dlopen holds the loader's "
                              "lock (restart the host)"
                            : "");
  if (s)
    refuse(s, j->path, why);
  log_error(j->name, NULL, "plugin %s refused: %s", j->path, why);
  p->h->metrics.plugin_loads_timed_out++;
  metrics_reload(&p->h->metrics, -ETIMEDOUT);
  json_t *rec =
      json_pack("{ss sI ss ss si ss ss ss}", "kind", "load_timeout", "t", (json_int_t)host_now_ms(),
                "signal_name", "a load stuck past --load-timeout", "function", j->name, "version",
                j->number, "sha256", j->v->sha256, "request_id", "load", "phase",
                phase == PH_OPEN ? "constructors" : "init");
  if (rec && quarantine_add(p->h->quarantine, rec) < 0)
    log_warn(j->name, NULL, "cannot record the stuck load in the crash file");
  json_decref(rec);
}

/* One look at the load in progress, the late ones and the CLOUD_FINI calls. On the loop (or
 * in the start-up and shutdown waits). */
static void job_poll(struct plugins *p) {
  struct job *j = p->job;
  if (j) {
    int ph = atomic_load(&j->phase);
    if (ph == PH_DONE) {
      pthread_join(j->thread, NULL);
      p->job = NULL;
      crash_loader_busy(loader_locked(p));
      closing_flush(p);
      int rc = job_apply(p, j);
      if (j->async) {
        metrics_reload(&p->h->metrics, rc);
        if (rc == 0 && p->on_swap && plugins_loaded(p, j->name))
          p->on_swap(p->on_swap_arg, j->name);
        /* Changes that came in meanwhile waited for this load. */
        if (p->h->lws)
          lws_sul_schedule(p->h->lws, 0, &p->debounce, debounce_fire, LWS_US_PER_MS);
      }
      free(j);
    } else if (mono_ms() >= j->deadline_ms) {
      if (ph == PH_COPY) {
        atomic_store(&j->cancel, 1); /* the copy ends by itself; the load then gives up */
      } else {
        job_timed_out(p, j, ph);
        atomic_store(&j->cancel, 1);
        j->late_phase = ph;
        p->job = NULL;
        j->next = p->late;
        p->late = j;
        p->nlate++;
        crash_loader_busy(loader_locked(p));
        closing_flush(p);
        if (p->h->lws)
          lws_sul_schedule(p->h->lws, 0, &p->debounce, debounce_fire, LWS_US_PER_MS);
      }
    }
  }
  for (struct job **pj = &p->late; *pj;) {
    j = *pj;
    if (atomic_load(&j->phase) != PH_DONE) {
      pj = &j->next;
      continue;
    }
    /* It came back after all: its version stays refused (quarantined) and goes. */
    pthread_join(j->thread, NULL);
    *pj = j->next;
    p->nlate--;
    crash_loader_busy(loader_locked(p) || p->job);
    log_warn(j->name, NULL,
             "plugin %s: the load that ran past --load-timeout came back after %lld ms; its "
             "version stays refused",
             j->path, (long long)(mono_ms() - j->started_ms));
    j->v->desc = NULL;
    version_unload(p, j->v); /* its CLOUD_FINI if its init succeeded */
    free(j);
  }
  fins_poll(p);
}

static void poll_fire(lws_sorted_usec_list_t *sul) {
  struct plugins *p = lws_container_of(sul, struct plugins, poll);
  job_poll(p);
  poll_schedule(p);
}

int plugins_reload(struct plugins *p, const char *name) {
  char path[PATH_MAX + FN_NAME_MAX + 8], why[512];
  snprintf(path, sizeof path, "%s/%s.so", p->dir, name);
  struct slot *s = slot_get(p, name, 1);
  if (!s)
    return -ENOMEM;
  if (p->job) { /* one load at a time: this one goes when the current one is done */
    if (!s->changed_ms)
      s->changed_ms = host_now_ms() - p->h->cfg.reload_debounce_ms;
    return -EINPROGRESS;
  }
  /* The folder is checked again on every load: it may have been chmod'ed since start. */
  struct stat dst;
  const char *dir_bad =
      stat(p->dir, &dst) < 0 ? "cannot stat the plugins folder" : unsafe_mode(&dst);
  if (dir_bad) {
    snprintf(why, sizeof why, "plugins folder %.300s: %s", p->dir, dir_bad);
    refuse(s, path, why);
    return -EPERM;
  }

  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0 && errno == ENOENT) {
    if (s->cur) {
      log_info(name, NULL, "plugin %s removed: version %d unloaded", path, s->cur->number);
      version_unload(p, s->cur);
      s->cur = NULL;
    }
    s->last_error[0] = 0;
    return 0;
  }
  struct stat st;
  const char *bad = NULL;
  if (fd < 0)
    snprintf(why, sizeof why, "cannot open: %s", strerror(errno));
  else if (fstat(fd, &st) < 0)
    snprintf(why, sizeof why, "cannot stat: %s", strerror(errno));
  else if (!S_ISREG(st.st_mode))
    snprintf(why, sizeof why, "not a regular file");
  else if ((bad = unsafe_mode(&st)))
    snprintf(why, sizeof why, "%s (mode %04o, uid %u)", bad, (unsigned)(st.st_mode & 07777),
             (unsigned)st.st_uid);
  else
    why[0] = 0;
  if (why[0]) {
    if (fd >= 0)
      close(fd);
    refuse(s, path, why);
    return -EPERM;
  }
  if (s->cur && st.st_dev == s->st.st_dev && st.st_ino == s->st.st_ino &&
      st.st_size == s->st.st_size && st.st_mtim.tv_sec == s->st.st_mtim.tv_sec &&
      st.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec) {
    close(fd);
    if (s->last_error[0]) { /* e.g. chmod go+w then back: the serving file is fine again */
      log_info(name, NULL, "plugin %s is version %d again: error cleared", path, s->cur->number);
      s->last_error[0] = 0;
    }
    return 0; /* the version serving is this file already */
  }
  unsigned char magic[4] = {0};
  if (pread(fd, magic, 4, 0) != 4 || memcmp(magic, "\177ELF", 4)) {
    close(fd);
    refuse(s, path, "not an ELF shared object");
    return -ENOEXEC;
  }
  if (loader_locked(p) || p->nlate >= LATE_MAX) {
    close(fd);
    snprintf(why, sizeof why, "not loaded: %s; restart the host to load plugins again",
             loader_locked(p) ? "a load is stuck in a constructor, holding the loader's lock"
                              : "too many loads are stuck past --load-timeout");
    refuse(s, path, why);
    return -EDEADLK;
  }

  struct version *v = calloc(1, sizeof *v);
  struct job *j = calloc(1, sizeof *j);
  if (!v || !j) {
    free(v);
    free(j);
    close(fd);
    return -ENOMEM;
  }
  if ((size_t)snprintf(v->copy, sizeof v->copy, "%.3800s/%.128s.%u.so", p->run, name,
                       ++p->copy_seq) >= sizeof v->copy) {
    free(v);
    free(j);
    close(fd);
    return -ENAMETOOLONG;
  }
  j->p = p;
  j->v = v;
  j->api = p->api;
  snprintf(v->name, sizeof v->name, "%s", name);
  j->fd = fd;
  j->st = st;
  j->number = s->loads + 1;
  snprintf(j->name, sizeof j->name, "%s", name);
  snprintf(j->path, sizeof j->path, "%s", path);
  const char *blocked =
      json_string_value(json_object_get(quarantine_get(p->h->quarantine, name), "sha256"));
  snprintf(j->blocked, sizeof j->blocked, "%s", blocked ? blocked : "");
  j->started_ms = mono_ms();
  j->started_wall_ms = host_now_ms();
  j->deadline_ms = j->started_ms + (int64_t)load_timeout(p) * 1000;
  atomic_init(&j->phase, PH_COPY);
  atomic_init(&j->cancel, 0);
  int rc = thread_start(&j->thread, job_main, j);
  if (rc < 0) {
    close(fd);
    free(v);
    free(j);
    snprintf(why, sizeof why, "cannot start the loader thread: %s", strerror(-rc));
    refuse(s, path, why);
    return rc;
  }
  p->job = j;
  crash_loader_busy(1);
  if (p->h->lws) { /* the loop goes on; job_poll finishes the load */
    j->async = 1;
    poll_schedule(p);
    return -EINPROGRESS;
  }
  /* Start-up (no loop yet): wait here, bounded the same way. */
  while (p->job == j) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
    int done = atomic_load(&j->phase) == PH_DONE;
    if (done) {
      pthread_join(j->thread, NULL);
      p->job = NULL;
      crash_loader_busy(loader_locked(p));
      rc = job_apply(p, j);
      free(j);
      return rc;
    }
    job_poll(p); /* the deadline */
  }
  return -ETIMEDOUT;
}

static int name_of_file(const char *file, char *name) {
  size_t n = strlen(file);
  if (n < 4 || strcmp(file + n - 3, ".so") || !fn_name_valid(file, n - 3))
    return 0;
  memcpy(name, file, n - 3);
  name[n - 3] = 0;
  return 1;
}

/* Removes what earlier runs left in the runtime folder (copies survive a kill -9). */
/* Empties a runtime folder (fd of the open folder) of the copies a run left in it. */
static void run_dir_empty(DIR *d) {
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      unlinkat(dirfd(d), e->d_name, 0);
}

/* Removes the per-process runtime folders (--port 0) of processes that no longer exist:
 * a host killed with -9 could not remove its own. */
static void run_dir_reap(const char *base, pid_t mine) {
  char prefix[64];
  int n = snprintf(prefix, sizeof prefix, "wshost-%u-pid", (unsigned)geteuid());
  DIR *b = opendir(base);
  if (!b)
    return;
  struct dirent *e;
  while ((e = readdir(b))) {
    if (strncmp(e->d_name, prefix, n))
      continue;
    char *end;
    long pid = strtol(e->d_name + n, &end, 10);
    if (*end || pid <= 0 || pid == mine || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
      continue;
    int fd = openat(dirfd(b), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct stat st;
    if (d && fstat(fd, &st) == 0 && st.st_uid == geteuid()) {
      run_dir_empty(d);
      unlinkat(dirfd(b), e->d_name, AT_REMOVEDIR);
    }
    if (d)
      closedir(d);
    else if (fd >= 0)
      close(fd);
  }
  closedir(b);
}

static int run_dir_prepare(struct plugins *p) {
  const char *base = getenv("XDG_RUNTIME_DIR");
  if (!base || !*base)
    base = getenv("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  /* One folder per port, so the next start on that port cleans up after a crash; with
   * --port 0 (a port the kernel picks) one per process, removed at exit. */
  if (p->h->cfg.port)
    snprintf(p->run, sizeof p->run, "%s/wshost-%u-%d", base, (unsigned)geteuid(), p->h->cfg.port);
  else
    snprintf(p->run, sizeof p->run, "%s/wshost-%u-pid%d", base, (unsigned)geteuid(),
             p->h->host_pid ? p->h->host_pid : (int)getpid());
  if (mkdir(p->run, 0700) < 0 && errno != EEXIST)
    return -errno;
  struct stat st;
  if (lstat(p->run, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
    log_error(NULL, NULL, "runtime folder %s is not a folder of ours", p->run);
    return -EPERM;
  }
  chmod(p->run, 0700);
  DIR *d = opendir(p->run);
  if (!d)
    return -errno;
  run_dir_empty(d);
  closedir(d);
  run_dir_reap(base, p->h->host_pid ? (pid_t)p->h->host_pid : getpid());
  return 0;
}

int plugins_open(struct host *h, const cloud_api *api, struct plugins **out) {
  struct plugins *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->h = h;
  p->api = api;
  p->ifd = -1;
  map_init(&p->slots);
  if (!realpath(h->cfg.plugins_dir, p->dir)) {
    int e = errno;
    log_error(NULL, NULL, "plugins folder %s: %s", h->cfg.plugins_dir, strerror(e));
    free(p);
    return -e;
  }
  struct stat st;
  const char *bad;
  if (stat(p->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    log_error(NULL, NULL, "plugins folder %s is not a folder", p->dir);
    free(p);
    return -ENOTDIR;
  }
  if ((bad = unsafe_mode(&st))) {
    log_error(NULL, NULL, "plugins folder %s refused: %s (mode %04o); chmod go-w it", p->dir, bad,
              (unsigned)(st.st_mode & 07777));
    free(p);
    return -EPERM;
  }
  int rc = run_dir_prepare(p);
  if (rc < 0) {
    log_error(NULL, NULL, "runtime folder %s: %s", p->run, strerror(-rc));
    free(p);
    return rc;
  }
  DIR *d = opendir(p->dir);
  if (!d) {
    rc = -errno;
    free(p);
    return rc;
  }
  struct dirent *e;
  char name[FN_NAME_MAX + 1];
  while ((e = readdir(d)))
    if (name_of_file(e->d_name, name))
      plugins_reload(p, name);
  closedir(d);
  *out = p;
  return 0;
}

static void slot_free(void *arg, const char *key, void *value) {
  (void)key;
  struct slot *s = value;
  version_unload(arg, s->cur);
  free(s);
}

void plugins_settle(struct plugins *p) {
  for (;;) {
    int waiting = p->job != NULL;
    for (struct fin *f = p->fins; f; f = f->next)
      waiting |= !f->overdue;
    if (!waiting)
      break;
    struct timespec ts = {0, 2 * 1000000L};
    nanosleep(&ts, NULL);
    job_poll(p);
  }
}

void plugins_close(struct plugins *p) {
  if (!p)
    return;
  /* A load in progress ends (or reaches its deadline) first: its thread uses p's folder. */
  while (p->job) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
    job_poll(p);
  }
  map_each(&p->slots, slot_free, p);
  closing_flush(p);
  plugins_settle(p); /* the versions' CLOUD_FINI calls, each bounded by --load-timeout */
  map_free(&p->slots);
  if (p->ifd >= 0 && !p->watch)
    close(p->ifd);
  rmdir(p->run);
  free(p);
}

int plugins_call(struct plugins *p, const char *name, FunctionContext *ctx, int *found) {
  struct slot *s = slot_get(p, name, 0);
  *found = s && s->cur;
  if (!*found)
    return 0;
  uint64_t t0 = metrics_now_ns();
  /* What the crash handler reports if this call takes the process down. */
  struct crash_frame saved;
  crash_enter(&saved, s->name, s->cur->number, s->cur->sha256, ctx->request_id);
  int rc = s->cur->desc->main(ctx);
  crash_leave(&saved);
  uint64_t ns = metrics_now_ns() - t0;
  metrics_function_call(&p->h->metrics, name, ns, rc);
  metrics_event(&p->h->metrics, ctx->method, ns);
  return rc;
}

void *plugins_pin(struct plugins *p, const char *name) {
  struct slot *s = p ? slot_get(p, name, 0) : NULL;
  if (!s || !s->cur)
    return NULL;
  s->cur->pins++;
  return s->cur;
}

void plugins_unpin(struct plugins *p, void *pin) {
  (void)p;
  struct version *v = pin;
  if (!v || --v->pins > 0 || !v->retired)
    return;
  log_info(NULL, NULL, "plugin copy %s: last deferred response done, version %d unloaded", v->copy,
           v->number);
  version_unload(p, v);
}

void plugins_on_swap(struct plugins *p, void (*fn)(void *arg, const char *name), void *arg) {
  p->on_swap = fn;
  p->on_swap_arg = arg;
}

int plugins_loaded(const struct plugins *p, const char *name) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  return s && s->cur;
}

uint32_t plugins_options(const struct plugins *p, const char *name) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  return s && s->cur ? s->cur->options : 0;
}

static void status_one(void *arg, const char *key, void *value) {
  struct slot *s = value;
  json_t *o = json_pack("{sb si}", "loaded", s->cur != NULL, "loads", s->loads);
  if (s->cur) {
    char file[96];
    snprintf(file, sizeof file, "dev %llu ino %llu size %lld mtime %lld",
             (unsigned long long)s->st.st_dev, (unsigned long long)s->st.st_ino,
             (long long)s->st.st_size, (long long)s->st.st_mtim.tv_sec);
    json_object_set_new(o, "version", json_integer(s->cur->number));
    json_object_set_new(o, "abi", json_integer(s->cur->desc->abi_version));
    json_object_set_new(o, "loaded_at_ms", json_integer(s->loaded_at_ms));
    json_object_set_new(o, "file", json_string(file));
    json_object_set_new(o, "sha256", json_string(s->cur->sha256));
  }
  json_object_set_new(o, "last_error", s->last_error[0] ? json_string(s->last_error) : json_null());
  struct plugins *p = s->owner;
  if (p->job && !strcmp(p->job->name, s->name))
    json_object_set_new(o, "loading", json_true());
  for (const struct job *j = p->late; j; j = j->next)
    if (!strcmp(j->name, s->name)) {
      int ph = atomic_load(&j->phase);
      json_object_set_new(o, "stuck_load",
                          json_pack("{ss sI sI ss sb}", "phase",
                                    ph == PH_OPEN   ? "constructors"
                                    : ph == PH_INIT ? "init"
                                                    : "done",
                                    "since_ms", (json_int_t)j->started_wall_ms, "seconds",
                                    (json_int_t)((mono_ms() - j->started_ms) / 1000), "sha256",
                                    j->v->sha256, "holds_loader_lock", ph == PH_OPEN));
    }
  if (s->last_error[0])
    json_object_set_new(o, "last_error_at_ms", json_integer(s->last_error_ms));
  json_object_set_new(arg, key, o);
}

/* Loads a second image of v from a copy of its private copy (a new inode, so dlopen maps it
 * afresh: static data as the file has it, not as the serving process's threads left it, e.g.
 * a mutex held at the moment of the fork) and makes it v's. 0, or -1 (v keeps the old one). */
static int reopen_fresh(struct plugins *p, struct slot *s) {
  struct version *v = s->cur;
  char path[PATH_MAX + 64];
  if ((size_t)snprintf(path, sizeof path, "%.3800s/%.128s.w%d.so", p->run, s->name,
                       (int)getpid()) >= sizeof path)
    return -1;
  int in = open(v->copy, O_RDONLY | O_CLOEXEC);
  int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
  char buf[65536];
  ssize_t n = in >= 0 && out >= 0 ? 0 : -1;
  while (n >= 0 && (n = read(in, buf, sizeof buf)) > 0)
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w <= 0) {
        n = -1;
        break;
      }
      off += w;
    }
  if (in >= 0)
    close(in);
  if (out >= 0 && close(out) < 0)
    n = -1;
  void *dl = n == 0 ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
  unlink(path);
  const cloud_plugin_desc *desc = dl ? dlsym(dl, "cloud_plugin") : NULL;
  if (!desc || !desc->api) {
    if (dl)
      dlclose(dl);
    log_warn(s->name, NULL, "worker %d: cannot map version %d afresh: using the inherited image",
             (int)getpid(), v->number);
    return -1;
  }
  *desc->api = p->api;
  v->dl = dl;
  v->desc = desc;
  v->fini = (void (*)(void))dlsym(dl, "cloud_plugin_fini");
  crash_map(desc, s->name, v->number, v->sha256);
  return 0;
}

int plugins_current(const struct plugins *p, const char *name, char sha256[CRASH_SHA_HEX]) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  if (!s || !s->cur)
    return 0;
  memcpy(sha256, s->cur->sha256, CRASH_SHA_HEX);
  return s->cur->number;
}

int plugins_unload(struct plugins *p, const char *name, const char *why) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  if (!s || !s->cur)
    return -ENOENT;
  snprintf(s->last_error, sizeof s->last_error, "%s", why);
  s->last_error_ms = host_now_ms();
  version_unload(p, s->cur);
  s->cur = NULL;
  return 0;
}

static void rerun_init(void *arg, const char *key, void *value) {
  (void)key;
  struct slot *s = value;
  if (!s->cur || !s->cur->dl)
    return;
  reopen_fresh(arg, s);
  int (*init)(void) = (int (*)(void))dlsym(s->cur->dl, "cloud_plugin_init");
  struct crash_frame saved;
  crash_enter(&saved, s->name, s->cur->number, s->cur->sha256, "load");
  int rc = init ? init() : 0;
  crash_leave(&saved);
  if (rc)
    log_warn(s->name, NULL, "init of version %d returned %d in worker %d", s->cur->number, rc,
             (int)getpid());
}

void plugins_rerun_init(struct plugins *p) {
  map_each(&p->slots, rerun_init, p);
}

static void run_fini(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct slot *s = value;
  if (s->cur && s->cur->fini)
    s->cur->fini();
}

void plugins_run_fini(struct plugins *p) {
  map_each(&p->slots, run_fini, NULL);
}

json_t *plugins_status(const struct plugins *p) {
  json_t *o = json_object();
  if (o)
    map_each(&p->slots, status_one, o);
  return o;
}

/* Loads every file that has been quiet for the debounce time; waits again for the others. */
static void debounce_fire(lws_sorted_usec_list_t *sul) {
  struct plugins *p = lws_container_of(sul, struct plugins, debounce);
  int64_t now = host_now_ms(), wait = -1, quiet = p->h->cfg.reload_debounce_ms;
  for (size_t i = 0; i < p->slots.nbuckets; i++)
    for (struct map_entry *e = p->slots.buckets[i]; e; e = e->next) {
      struct slot *s = e->value;
      if (!s->changed_ms)
        continue;
      if (p->job) /* one load at a time: job_poll fires this again when it is done */
        continue;
      if (now - s->changed_ms >= quiet) {
        s->changed_ms = 0;
        int rc = plugins_reload(p, s->name);
        if (rc == -EINPROGRESS) /* the loader has it: job_poll counts it and swaps it in */
          continue;
        metrics_reload(&p->h->metrics, rc);
        if (rc == 0 && p->on_swap && plugins_loaded(p, s->name))
          p->on_swap(p->on_swap_arg, s->name);
      } else if (wait < 0 || quiet - (now - s->changed_ms) < wait)
        wait = quiet - (now - s->changed_ms);
    }
  if (wait >= 0)
    lws_sul_schedule(p->h->lws, 0, &p->debounce, debounce_fire, (wait + 1) * LWS_US_PER_MS);
}

static void watch_read(struct plugins *p) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  ssize_t n;
  int any = 0;
  while ((n = read(p->ifd, buf, sizeof buf)) > 0) {
    for (char *q = buf; q < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)q;
      char name[FN_NAME_MAX + 1];
      if (ev->len && name_of_file(ev->name, name)) {
        struct slot *s = slot_get(p, name, 1);
        if (s) {
          s->changed_ms = host_now_ms();
          any = 1;
        }
      }
      if (ev->mask & IN_Q_OVERFLOW)
        log_warn(NULL, NULL, "plugins watch overflowed; changes may need a touch");
      q += sizeof *ev + ev->len;
    }
  }
  if (any)
    lws_sul_schedule(p->h->lws, 0, &p->debounce, debounce_fire,
                     (p->h->cfg.reload_debounce_ms + 1) * LWS_US_PER_MS);
}

int plugins_watch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len) {
  (void)user;
  (void)in;
  (void)len;
  struct host *h = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_RAW_RX_FILE:
    if (h && h->plugins)
      watch_read(h->plugins);
    return 0;
  case LWS_CALLBACK_RAW_CLOSE_FILE:
    if (h && h->plugins && h->plugins->watch == wsi) {
      close(h->plugins->ifd);
      h->plugins->ifd = -1;
      h->plugins->watch = NULL;
    }
    return 0;
  default:
    return 0;
  }
}

void plugins_unwatch(struct plugins *p) {
  if (p && p->h->lws) {
    lws_sul_cancel(&p->debounce);
    lws_sul_cancel(&p->poll);
  }
}

int plugins_watch(struct plugins *p, struct lws_vhost *vh) {
  p->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (p->ifd < 0)
    return -errno;
  if (inotify_add_watch(p->ifd, p->dir,
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                            IN_MODIFY | IN_ATTRIB) < 0) {
    int e = errno;
    close(p->ifd);
    p->ifd = -1;
    return -e;
  }
  lws_sock_file_fd_type u;
  u.filefd = p->ifd;
  p->watch = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, "wshost-watch", NULL);
  if (!p->watch) {
    close(p->ifd);
    p->ifd = -1;
    return -EIO;
  }
  log_info(NULL, NULL, "watching %s for changed functions", p->dir);
  poll_schedule(p); /* a load stuck at start-up is looked at from here on */
  return 0;
}

const char *plugins_run_dir(const struct plugins *p) {
  return p && p->run[0] ? p->run : NULL;
}
