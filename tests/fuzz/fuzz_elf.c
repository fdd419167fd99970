/* fuzz_elf: any bytes through elf_check, the gate before dlopen. Besides "no crash", whatever
 * it accepts is checked again here from first principles: every program header's file range,
 * and the tables, lie inside the input (what dlopen relies on not to fault). */
#include "elfcheck.h"

#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      __builtin_trap();                                                                            \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char why[256];
  why[0] = 0;
  int rc = elf_check(data, size, why, sizeof why);
  if (rc != 0) {
    CHECK(why[0]); /* every refusal says why */
    return 0;
  }
  ElfW(Ehdr) eh;
  CHECK(size >= sizeof eh);
  memcpy(&eh, data, sizeof eh);
  CHECK((unsigned __int128)eh.e_phoff + (unsigned __int128)eh.e_phnum * sizeof(ElfW(Phdr)) <=
        size);
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, data + eh.e_phoff + (size_t)i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_NULL)
      CHECK((unsigned __int128)ph.p_offset + ph.p_filesz <= size);
  }
  return 0;
}
