/* envfile.h: the functions' configuration file (--env-file): KEY=VALUE lines behind cloud_env(),
 * re-read on SIGHUP. Owns the parsed values and the rule that only its owner may change it and
 * only its group may read it. */
#ifndef WSHOST_ENVFILE_H
#define WSHOST_ENVFILE_H

#include <stddef.h>

struct envfile;

/* Reads path. 0 and *out, or negative with a reason in err naming the file (and the line):
 * -EACCES when others may read or write it, its group may write it, or a user other than root
 * and the host's own owns it (it holds secrets), -EINVAL for a bad line,
 * -errno when it cannot be read. *out is untouched on failure, so a bad edit followed by
 * SIGHUP keeps the values that were loaded. */
int envfile_load(const char *path, struct envfile **out, char *err, size_t errlen);
void envfile_free(struct envfile *e);
/* The value of name from the file, else from the process environment, else NULL. The string
 * lives until the next successful envfile_load replaces e (the caller decides when). */
const char *envfile_get(const struct envfile *e, const char *name);
/* Number of keys in the file. */
size_t envfile_count(const struct envfile *e);

#endif
