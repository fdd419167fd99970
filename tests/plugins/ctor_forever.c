/* ctor_forever: ctor_wait.c whose constructor never returns (when WSTEST_RELEASE is set). */
#define FOREVER 1
#include "ctor_wait.c"
