/* envfile.c: KEY=VALUE parsing for --env-file (the format of systemd's EnvironmentFile= and
 * docker's --env-file, without variable expansion), and lookups with the environment behind. */
#include "envfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct envfile {
  json_t *vars; /* name -> string */
};

static int key_ok(const char *k, size_t n) {
  if (!n || n > 128 || !(isalpha((unsigned char)k[0]) || k[0] == '_'))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)k[i]) || k[i] == '_'))
      return 0;
  return 1;
}

/* One line (NUL-terminated, no newline) into vars. 0 or -EINVAL. */
static int parse_line(json_t *vars, char *line) {
  char *p = line;
  while (*p == ' ' || *p == '\t')
    p++;
  if (!*p || *p == '#')
    return 0;
  if (!strncmp(p, "export ", 7))
    p += 7;
  char *eq = strchr(p, '=');
  if (!eq)
    return -EINVAL;
  size_t kn = (size_t)(eq - p);
  while (kn && (p[kn - 1] == ' ' || p[kn - 1] == '\t'))
    kn--;
  if (!key_ok(p, kn))
    return -EINVAL;
  p[kn] = 0;
  char *v = eq + 1;
  while (*v == ' ' || *v == '\t')
    v++;
  size_t vn = strlen(v);
  while (vn && (v[vn - 1] == '\r' || v[vn - 1] == ' ' || v[vn - 1] == '\t'))
    v[--vn] = 0;
  /* Blanks around the value are not part of it; quote it to keep them. One pair of matching
   * quotes around the whole value is not part of it either. */
  if (vn >= 2 && (v[0] == '"' || v[0] == '\'') && v[vn - 1] == v[0]) {
    v[vn - 1] = 0;
    v++;
  }
  json_t *s = json_string(v);
  if (!s)
    return -EINVAL; /* not UTF-8 */
  return json_object_set_new(vars, p, s) ? -ENOMEM : 0;
}

int envfile_load(const char *path, struct envfile **out, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "env file %s: %s", path, strerror(e));
    return -e;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(err, errlen, "env file %s: not a regular file", path);
    return -EINVAL;
  }
  /* It holds secrets and decides what functions read: nobody but its owner (the host's
   * user or root) may change it, and only its group may read it (0640 root:wshost is how a
   * package installs it). */
  const char *why = st.st_mode & (S_IROTH | S_IWOTH) ? "readable or writable by others"
                    : st.st_mode & S_IWGRP           ? "writable by its group"
                    : st.st_uid != 0 && st.st_uid != geteuid()
                        ? "owned by another user, who can change it"
                        : NULL;
  if (why) {
    close(fd);
    snprintf(err, errlen,
             "env file %s is %s (mode %03o, owner uid %u); it holds secrets: chmod o-rwx,g-w %s "
             "and let root or the host's user own it",
             path, why, (unsigned)(st.st_mode & 0777), (unsigned)st.st_uid, path);
    return -EACCES;
  }
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    snprintf(err, errlen, "env file %s: out of memory", path);
    return -ENOMEM;
  }
  json_t *vars = json_object();
  char *line = NULL;
  size_t cap = 0;
  int lineno = 0, rc = 0;
  while (getline(&line, &cap, f) >= 0) {
    lineno++;
    line[strcspn(line, "\n")] = 0;
    if ((rc = parse_line(vars, line)) < 0) {
      snprintf(err, errlen, "env file %s line %d: not KEY=VALUE (KEY is [A-Za-z_][A-Za-z0-9_]*)",
               path, lineno);
      break;
    }
    /* The host's own settings are not the functions' configuration: one here would be
     * silently ignored (the host reads WSHOST_* from its environment and --config). */
    const char *host_key = NULL;
    json_t *v;
    json_object_foreach(vars, host_key, v) if (!strncmp(host_key, "WSHOST_", 7)) break;
    if (host_key) {
      snprintf(err, errlen,
               "env file %s line %d: %s is a setting of the host, not of the functions: set it "
               "in the host's environment or --config file, not in --env-file",
               path, lineno, host_key);
      rc = -EINVAL;
      break;
    }
  }
  free(line);
  fclose(f);
  struct envfile *e = rc ? NULL : calloc(1, sizeof *e);
  if (!e) {
    json_decref(vars);
    if (!rc) {
      snprintf(err, errlen, "env file %s: out of memory", path);
      rc = -ENOMEM;
    }
    return rc;
  }
  e->vars = vars;
  *out = e;
  return 0;
}

void envfile_free(struct envfile *e) {
  if (!e)
    return;
  json_decref(e->vars);
  free(e);
}

const char *envfile_get(const struct envfile *e, const char *name) {
  if (!name)
    return NULL;
  const char *v = e ? json_string_value(json_object_get(e->vars, name)) : NULL;
  return v ? v : getenv(name);
}

size_t envfile_count(const struct envfile *e) {
  return e ? json_object_size(e->vars) : 0;
}
