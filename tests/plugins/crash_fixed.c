/* crash_fixed: crash.c built as the fixed release (it never crashes): deploying it over a
 * quarantined crash.so lifts the quarantine. */
#define CRASH_FIXED 1
#define CRASH_BUILD "fixed"
#include "crash.c"
