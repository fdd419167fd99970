/* plugins.c: the functions in the plugins folder: load from a private copy, ABI check, swap,
 * unload, and the inotify watch that drives hot reload. Owns every dlopen handle.
 *
 * Each version is dlopen'ed from its own copy in the runtime folder: a new inode, so dlopen
 * never hands back a cached image, and a `cp` over the original never rewrites mapped pages.
 * All swaps happen on the event loop between events, so a version is never running while it
 * is unloaded and at most the old and the new one are mapped during a swap. */
#include "plugins.h"

#include "crash.h"
#include "elfcheck.h"
#include "http_parse.h"
#include "log.h"
#include "quarantine.h"
#include "sha256.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct version {
  void *dl;
  const cloud_plugin_desc *desc;
  void (*fini)(void);
  uint32_t options; /* CLOUD_OPT_* the file exports (CLOUD_OPTIONS), 0 without */
  int number;
  int pins;                   /* plugins_pin: outstanding deferred responses */
  int retired;                /* replaced or removed while pinned: unloaded at the last unpin */
  char sha256[CRASH_SHA_HEX]; /* of the file's content: what a quarantine names */
  char copy[PATH_MAX];
};

struct slot {
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
};

static struct slot *slot_get(struct plugins *p, const char *name, int create) {
  struct slot *s = map_get(&p->slots, name, strlen(name));
  if (s || !create)
    return s;
  s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  snprintf(s->name, sizeof s->name, "%s", name);
  if (map_set(&p->slots, name, strlen(name), s) < 0) {
    free(s);
    return NULL;
  }
  return s;
}

static void version_unload(struct version *v) {
  if (!v)
    return;
  if (v->pins > 0) { /* its deferred responses are still to come: unloaded at the last unpin */
    v->retired = 1;
    return;
  }
  if (v->fini)
    v->fini();
  if (v->desc)
    crash_unmap(v->desc);
  if (v->dl)
    dlclose(v->dl);
  if (v->copy[0])
    unlink(v->copy);
  free(v);
}

/* "others than the host's user may write" is refused: loading a .so runs its code. */
static const char *unsafe_mode(const struct stat *st) {
  if (st->st_uid != geteuid() && st->st_uid != 0)
    return "owned by another user";
  if (st->st_mode & (S_IWGRP | S_IWOTH))
    return "writable by group or others";
  return NULL;
}

/* Copies fd to a fresh file in the runtime folder, hashing what it copies (hex into sha).
 * 0 or -errno. */
static int copy_private(struct plugins *p, int fd, const char *name, char *out, size_t outlen,
                        char sha[CRASH_SHA_HEX]) {
  struct sha256 hc;
  sha256_init(&hc);
  if ((size_t)snprintf(out, outlen, "%.3800s/%.128s.%u.so", p->run, name, ++p->copy_seq) >= outlen)
    return -ENAMETOOLONG;
  int wfd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (wfd < 0)
    return -errno;
  char buf[65536];
  ssize_t n;
  int rc = 0;
  while ((n = read(fd, buf, sizeof buf)) != 0) {
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
    if (rc)
      break;
  }
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

int plugins_reload(struct plugins *p, const char *name) {
  char path[PATH_MAX + FN_NAME_MAX + 8], why[512];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  snprintf(path, sizeof path, "%s/%s.so", p->dir, name);
  struct slot *s = slot_get(p, name, 1);
  if (!s)
    return -ENOMEM;
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
      version_unload(s->cur);
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

  struct version *v = calloc(1, sizeof *v);
  if (!v) {
    close(fd);
    return -ENOMEM;
  }
  int rc = copy_private(p, fd, name, v->copy, sizeof v->copy, v->sha256);
  close(fd);
  if (rc < 0) {
    v->copy[0] = 0;
    snprintf(why, sizeof why, "cannot copy to %.200s: %s", p->run, strerror(-rc));
    goto fail;
  }
  /* The copy, not the original, is what dlopen maps: check it, so a file cut short (a deploy
   * that wrote in place and paused) is refused here instead of faulting inside dlopen. */
  if ((rc = check_copy(v->copy, why, sizeof why)) < 0)
    goto fail;
  if (quarantine_blocks(p->h->quarantine, name, v->sha256)) {
    const json_t *q = quarantine_get(p->h->quarantine, name);
    snprintf(why, sizeof why,
             "quarantined: this build (sha256 %.12s...) crashed the host with %s; deploy a "
             "different build, or lift it (POST /_/quarantine/%s/lift)",
             v->sha256,
             json_string_value(json_object_get(q, "signal_name"))
                 ? json_string_value(json_object_get(q, "signal_name"))
                 : "a signal",
             name);
    refuse(s, path, why);
    version_unload(v);
    return -EPERM;
  }
  /* Constructors and init run plugin code: a crash there quarantines this build too. */
  struct crash_frame saved;
  crash_enter(&saved, s->name, s->loads + 1, v->sha256, "load");
  v->dl = dlopen(v->copy, RTLD_NOW | RTLD_LOCAL);
  crash_leave(&saved);
  if (!v->dl) {
    const char *e = dlerror();
    snprintf(why, sizeof why, "dlopen failed: %s", e ? e : "?");
    goto fail;
  }
  v->desc = dlsym(v->dl, "cloud_plugin");
  if (!v->desc) {
    snprintf(why, sizeof why, "no entry point [cloud_plugin] (built without CLOUD_FUNCTION?)");
    goto fail;
  }
  crash_map(v->desc, s->name, s->loads + 1, v->sha256);
  if (v->desc->abi_version < PLUGINS_ABI_MIN || v->desc->abi_version > PLUGINS_ABI_MAX) {
    snprintf(why, sizeof why, "ABI %u, host serves %d..%d", v->desc->abi_version, PLUGINS_ABI_MIN,
             PLUGINS_ABI_MAX);
    goto fail;
  }
  if (v->desc->size < sizeof(cloud_plugin_desc) || !v->desc->main || !v->desc->api ||
      v->desc->context_size > sizeof(FunctionContext)) {
    snprintf(why, sizeof why, "descriptor of size %u / context %u does not match ABI %u",
             v->desc->size, v->desc->context_size, v->desc->abi_version);
    goto fail;
  }
  *v->desc->api = p->api;
  const uint32_t *options = dlsym(v->dl, "cloud_plugin_options");
  v->options = options ? *options : 0;
  int (*init)(void) = (int (*)(void))dlsym(v->dl, "cloud_plugin_init");
  v->fini = (void (*)(void))dlsym(v->dl, "cloud_plugin_fini");
  crash_enter(&saved, s->name, s->loads + 1, v->sha256, "load");
  rc = init ? init() : 0;
  crash_leave(&saved);
  if (rc != 0) {
    snprintf(why, sizeof why, "init returned %d", rc);
    v->fini = NULL; /* init failed: nothing to finish */
    goto fail;
  }
  if (quarantine_get(p->h->quarantine, name) &&
      quarantine_lift(p->h->quarantine, name, "deployed a different build") == 0)
    log_info(name, NULL, "quarantine of %s lifted: a different build (sha256 %.12s...) loaded",
             name, v->sha256);

  struct version *old = s->cur;
  v->number = ++s->loads;
  s->cur = v;
  s->st = st;
  s->loaded_at_ms = host_now_ms();
  s->last_error[0] = 0;
  version_unload(old);
  /* The whole reload ran on the event loop: its duration is the stall clients can see. */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  log_info(name, NULL, "plugin %s loaded: version %d (ABI %u) in %.2f ms%s", path, v->number,
           v->desc->abi_version,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
           old ? ", previous version unloaded" : "");
  return 0;

fail:
  refuse(s, path, why);
  version_unload(v);
  return -EINVAL;
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
  (void)arg;
  (void)key;
  struct slot *s = value;
  version_unload(s->cur);
  free(s);
}

void plugins_close(struct plugins *p) {
  if (!p)
    return;
  map_each(&p->slots, slot_free, NULL);
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
  metrics_function_call(&p->h->metrics, name, metrics_now_ns() - t0, rc);
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
  version_unload(v);
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
  version_unload(s->cur);
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
      if (now - s->changed_ms >= quiet) {
        s->changed_ms = 0;
        int rc = plugins_reload(p, s->name);
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
  if (p && p->h->lws)
    lws_sul_cancel(&p->debounce);
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
  return 0;
}

const char *plugins_run_dir(const struct plugins *p) {
  return p && p->run[0] ? p->run : NULL;
}
