/* seccomp_run.c: runs a command under the system call allow-list the packaged unit gives the
 * service (SystemCallFilter=, SystemCallErrorNumber=EPERM, NoNewPrivileges=), the way systemd
 * applies it just before exec, so a test can prove the host works under it without booting the
 * unit. Built by tests/e2e/test_deb.py with `cc seccomp_run.c -lseccomp`.
 *   seccomp_run <allow-list file: one system call name a line> <command> [args...] */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: seccomp_run ALLOWLIST COMMAND [ARGS...]\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (!ctx || seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1) < 0) {
    fprintf(stderr, "seccomp_init failed\n");
    return 2;
  }
  char name[128];
  int allowed = 0;
  while (fgets(name, sizeof name, f)) {
    name[strcspn(name, "\r\n")] = 0;
    int nr = seccomp_syscall_resolve_name(name);
    if (!name[0] || nr == __NR_SCMP_ERROR)
      continue; /* not a call of this architecture or this libseccomp */
    if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) < 0) {
      fprintf(stderr, "cannot allow %s\n", name);
      return 2;
    }
    allowed++;
  }
  fclose(f);
  if (allowed < 100 || seccomp_load(ctx) < 0) {
    fprintf(stderr, "cannot load the filter (%d calls allowed)\n", allowed);
    return 2;
  }
  seccomp_release(ctx);
  execvp(argv[2], argv + 2);
  perror(argv[2]);
  return 127;
}
