/* elfcheck.c: is a file image an ELF shared object this process can map without faulting?
 * Pure (bytes in, verdict out) so it can be unit-tested and fuzzed.
 *
 * Why: dlopen maps each PT_LOAD segment from the file and zeroes its tail; a segment that ends
 * past the end of a half-written file is a SIGBUS inside _dl_map_segments.
 * Everything here is checked with overflow-safe arithmetic on the image's own length. */
#include "elfcheck.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HOST_MACHINE EM_PPC64
#elif defined(__s390x__)
#define HOST_MACHINE EM_S390
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_DATA ELFDATA2LSB
#else
#define HOST_DATA ELFDATA2MSB
#endif

#define HOST_CLASS (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32)

/* [off, off + size) lies inside a file of len bytes. */
static int inside(uint64_t off, uint64_t size, size_t len) {
  return off <= len && size <= len - off;
}

static int fail(char *why, size_t whylen, const char *fmt, unsigned long long a,
                unsigned long long b) {
  if (why && whylen)
    snprintf(why, whylen, fmt, a, b);
  return -ENOEXEC;
}

int elf_check(const void *image, size_t len, char *why, size_t whylen) {
  const unsigned char *b = image;
  ElfW(Ehdr) eh;
  if (!b || len < sizeof eh)
    return fail(why, whylen, "not an ELF shared object (%llu bytes, an ELF header is %llu)", len,
                sizeof eh);
  memcpy(&eh, b, sizeof eh); /* the image need not be aligned */
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG))
    return fail(why, whylen, "not an ELF shared object (no ELF magic)", 0, 0);
  if (eh.e_ident[EI_CLASS] != HOST_CLASS || eh.e_ident[EI_DATA] != HOST_DATA)
    return fail(why, whylen, "ELF class %llu / byte order %llu is not this host's",
                eh.e_ident[EI_CLASS], eh.e_ident[EI_DATA]);
  if (eh.e_ident[EI_VERSION] != EV_CURRENT || eh.e_version != EV_CURRENT)
    return fail(why, whylen, "ELF version %llu is not %llu", eh.e_version, EV_CURRENT);
  if (eh.e_type != ET_DYN)
    return fail(why, whylen, "ELF type %llu is not a shared object (%llu)", eh.e_type, ET_DYN);
#ifdef HOST_MACHINE
  if (eh.e_machine != HOST_MACHINE)
    return fail(why, whylen, "built for ELF machine %llu, this host is %llu", eh.e_machine,
                HOST_MACHINE);
#endif
  if (eh.e_ehsize < sizeof eh)
    return fail(why, whylen, "ELF header size %llu, expected %llu", eh.e_ehsize, sizeof eh);
  if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0 || eh.e_phnum == PN_XNUM)
    return fail(why, whylen, "bad program header table (%llu entries of %llu bytes)", eh.e_phnum,
                eh.e_phentsize);
  if (!inside(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(ElfW(Phdr)), len))
    return fail(why, whylen,
                "program header table at %llu runs past the end of the file (%llu "
                "bytes): truncated?",
                eh.e_phoff, len);

  /* Section headers: dlopen does not need them, but a table past the end means the file was
   * cut (the linker writes it last), whatever the segments say. */
  if (eh.e_shoff || eh.e_shnum) {
    if (eh.e_shentsize != sizeof(ElfW(Shdr)))
      return fail(why, whylen, "section header size %llu, expected %llu", eh.e_shentsize,
                  sizeof(ElfW(Shdr)));
    uint64_t shnum = eh.e_shnum;
    if (!inside(eh.e_shoff, sizeof(ElfW(Shdr)), len))
      return fail(why, whylen,
                  "section header table at %llu is past the end of the file (%llu "
                  "bytes): truncated?",
                  eh.e_shoff, len);
    if (shnum == 0) { /* more than SHN_LORESERVE sections: the count is in section 0 */
      ElfW(Shdr) s0;
      memcpy(&s0, b + eh.e_shoff, sizeof s0);
      shnum = s0.sh_size;
    }
    if (shnum > len / sizeof(ElfW(Shdr)) || !inside(eh.e_shoff, shnum * sizeof(ElfW(Shdr)), len))
      return fail(why, whylen,
                  "section header table (%llu entries) runs past the end of the file "
                  "(%llu bytes): truncated?",
                  shnum, len);
    for (uint64_t i = 0; i < shnum; i++) {
      ElfW(Shdr) sh;
      memcpy(&sh, b + eh.e_shoff + i * sizeof sh, sizeof sh);
      if (sh.sh_type != SHT_NOBITS && sh.sh_type != SHT_NULL &&
          !inside(sh.sh_offset, sh.sh_size, len))
        return fail(why, whylen,
                    "section %llu runs past the end of the file (%llu bytes): "
                    "truncated?",
                    i, len);
    }
  }

  int loads = 0, dynamic = 0;
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, b + eh.e_phoff + (size_t)i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_NULL)
      continue;
    if (!inside(ph.p_offset, ph.p_filesz, len))
      return fail(why, whylen,
                  "segment %llu runs past the end of the file (%llu bytes): "
                  "truncated?",
                  i, len);
    if (ph.p_type == PT_LOAD) {
      if (ph.p_filesz > ph.p_memsz)
        return fail(why, whylen, "segment %llu has more file bytes than memory (%llu)", i,
                    ph.p_memsz);
      loads++;
    } else if (ph.p_type == PT_DYNAMIC)
      dynamic++;
  }
  if (!loads || dynamic != 1)
    return fail(why, whylen, "not a shared object: %llu loadable segments, %llu dynamic", loads,
                dynamic);
  return 0;
}
