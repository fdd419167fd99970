/* test_elfcheck.c: host/elfcheck.c, the check a plugin's copy passes before dlopen: a real
 * shared object passes whole and fails cut at every offset; crafted headers each fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <jansson.h>
#include <link.h>

#include "elfcheck.h"

/* The bytes of a real shared object: the jansson library this test is linked with. */
static unsigned char *real_so(size_t *len) {
  Dl_info info;
  assert_true(dladdr((void *)json_object, &info));
  FILE *f = fopen(info.dli_fname, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  assert_true(n > 4096);
  rewind(f);
  unsigned char *b = malloc((size_t)n);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void test_real_whole_passes_every_cut_fails(void **state) {
  (void)state;
  size_t len;
  unsigned char *b = real_so(&len);
  char why[256] = "";
  assert_int_equal(elf_check(b, len, why, sizeof why), 0);
  /* A deploy that wrote in place and paused: every prefix must be refused, never passed on
   * to dlopen (which faults on a segment past the end). */
  size_t step = len / 997 + 1, cuts = 0;
  for (size_t cut = 0; cut < len; cut += step, cuts++) {
    why[0] = 0;
    int rc = elf_check(b, cut, why, sizeof why);
    if (rc != -ENOEXEC)
      fail_msg("cut at %zu of %zu bytes passed", cut, len);
    assert_true(why[0]);
  }
  assert_true(cuts > 900);
  /* The last byte matters too. */
  assert_int_equal(elf_check(b, len - 1, why, sizeof why), -ENOEXEC);
  free(b);
}

/* A minimal valid image: header, two program headers (PT_LOAD over the file, PT_DYNAMIC). */
struct image {
  ElfW(Ehdr) eh;
  ElfW(Phdr) ph[2];
  unsigned char body[256];
};

static void make(struct image *im) {
  memset(im, 0, sizeof *im);
  memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
  im->eh.e_ident[EI_CLASS] = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
  im->eh.e_ident[EI_DATA] = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
  im->eh.e_ident[EI_VERSION] = EV_CURRENT;
  im->eh.e_version = EV_CURRENT;
  im->eh.e_type = ET_DYN;
  /* The machine of this very test binary. */
  ElfW(Ehdr) self;
  FILE *f = fopen("/proc/self/exe", "rb");
  assert_non_null(f);
  assert_int_equal(fread(&self, sizeof self, 1, f), 1);
  fclose(f);
  im->eh.e_machine = self.e_machine;
  im->eh.e_ehsize = sizeof im->eh;
  im->eh.e_phoff = offsetof(struct image, ph);
  im->eh.e_phentsize = sizeof(ElfW(Phdr));
  im->eh.e_phnum = 2;
  im->ph[0].p_type = PT_LOAD;
  im->ph[0].p_offset = 0;
  im->ph[0].p_filesz = sizeof *im;
  im->ph[0].p_memsz = sizeof *im + 4096;
  im->ph[1].p_type = PT_DYNAMIC;
  im->ph[1].p_offset = offsetof(struct image, body);
  im->ph[1].p_filesz = 64;
  im->ph[1].p_memsz = 64;
}

static int check(struct image *im, size_t len, const char *want) {
  char why[256] = "";
  int rc = elf_check(im, len, why, sizeof why);
  if (want && !strstr(why, want))
    fail_msg("why '%s', want '%s'", why, want);
  return rc;
}

static void test_crafted_headers(void **state) {
  (void)state;
  struct image im;
  make(&im);
  assert_int_equal(check(&im, sizeof im, NULL), 0);

  make(&im);
  im.eh.e_ident[1] = 'X';
  assert_int_equal(check(&im, sizeof im, "no ELF magic"), -ENOEXEC);
  make(&im);
  im.eh.e_ident[EI_CLASS] = sizeof(void *) == 8 ? ELFCLASS32 : ELFCLASS64;
  assert_int_equal(check(&im, sizeof im, "class"), -ENOEXEC);
  make(&im);
  im.eh.e_machine = (ElfW(Half))(im.eh.e_machine + 1);
  assert_int_equal(check(&im, sizeof im, "machine"), -ENOEXEC);
  make(&im);
  im.eh.e_type = ET_EXEC;
  assert_int_equal(check(&im, sizeof im, "not a shared object"), -ENOEXEC);
  make(&im);
  im.eh.e_phentsize = 12;
  assert_int_equal(check(&im, sizeof im, "program header"), -ENOEXEC);
  make(&im);
  im.eh.e_phoff = sizeof im - 8;
  assert_int_equal(check(&im, sizeof im, "program header table"), -ENOEXEC);
  make(&im);
  im.eh.e_phoff = (ElfW(Off)) - 8; /* offset + size wraps around */
  assert_int_equal(check(&im, sizeof im, "program header table"), -ENOEXEC);
  make(&im);
  im.ph[0].p_filesz = sizeof im + 1; /* the SIGBUS case: a segment past the end */
  assert_int_equal(check(&im, sizeof im, "segment 0 runs past the end"), -ENOEXEC);
  make(&im);
  im.ph[0].p_offset = (ElfW(Off)) - 16; /* wraps */
  assert_int_equal(check(&im, sizeof im, "segment 0"), -ENOEXEC);
  make(&im);
  im.ph[1].p_offset = sizeof im; /* a PT_DYNAMIC past the end, zero-length is fine */
  im.ph[1].p_filesz = 1;
  assert_int_equal(check(&im, sizeof im, "segment 1"), -ENOEXEC);
  make(&im);
  im.ph[0].p_memsz = 8;
  assert_int_equal(check(&im, sizeof im, "more file bytes"), -ENOEXEC);
  make(&im);
  im.ph[1].p_type = PT_NOTE;
  assert_int_equal(check(&im, sizeof im, "0 dynamic"), -ENOEXEC);
  make(&im);
  im.eh.e_shoff = sizeof im; /* section table past the end: cut before the linker's last write */
  im.eh.e_shnum = 3;
  im.eh.e_shentsize = sizeof(ElfW(Shdr));
  assert_int_equal(check(&im, sizeof im, "section header table"), -ENOEXEC);
  make(&im);
  im.eh.e_shoff = offsetof(struct image, body); /* extended count: huge, in section 0 */
  im.eh.e_shnum = 0;
  im.eh.e_shentsize = sizeof(ElfW(Shdr));
  ElfW(Shdr) s0 = {0};
  s0.sh_size = (ElfW(Xword))1 << 60;
  memcpy(im.body, &s0, sizeof s0);
  assert_int_equal(check(&im, sizeof im, "section header table"), -ENOEXEC);
  make(&im);
  im.eh.e_shoff = offsetof(struct image, body); /* one section whose bytes are missing */
  im.eh.e_shnum = 1;
  im.eh.e_shentsize = sizeof(ElfW(Shdr));
  ElfW(Shdr) s1 = {0};
  s1.sh_type = SHT_PROGBITS;
  s1.sh_offset = 100;
  s1.sh_size = sizeof im;
  memcpy(im.body, &s1, sizeof s1);
  assert_int_equal(check(&im, sizeof im, "section 0 runs past"), -ENOEXEC);
  s1.sh_type = SHT_NOBITS; /* .bss has no file bytes */
  memcpy(im.body, &s1, sizeof s1);
  assert_int_equal(check(&im, sizeof im, NULL), 0);

  assert_int_equal(check(&im, 10, "ELF header"), -ENOEXEC);
  assert_int_equal(elf_check(NULL, 0, NULL, 0), -ENOEXEC);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_real_whole_passes_every_cut_fails),
      cmocka_unit_test(test_crafted_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
