/* ctor_worker_wait: a constructor that hangs in a worker process (its name is "wshost-w<N>",
 * --isolation process) unless the file named by WSTEST_RELEASE exists when it starts: it then
 * creates "<WSTEST_RELEASE>.hung" and does not return for 60 s, whatever happens to the file.
 * In any other process it returns at once. It stands for code that loads fine in the serving
 * process and hangs in a fresh process that maps it again. Over HTTP it answers
 * {"ctor": "returned"}. */
#include <cloud.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

__attribute__((constructor)) static void hang_in_workers(void) {
  const char *release = getenv("WSTEST_RELEASE");
  char name[17] = "";
  prctl(PR_GET_NAME, name);
  if (!release || strncmp(name, "wshost-w", 8) || access(release, F_OK) == 0)
    return;
  char hung[4096];
  snprintf(hung, sizeof hung, "%s.hung", release);
  int fd = open(hung, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0)
    close(fd);
  time_t end = time(NULL) + 60;
  while (time(NULL) < end)
    usleep(10 * 1000);
}

CLOUD_FUNCTION(ctx) {
  return cloud_response_json(ctx, 200, json_pack("{s:s}", "ctor", "returned"));
}
