/* elfcheck.h: is a file image an ELF shared object this process can map without faulting?
 * Pure (bytes in, verdict out) so it can be unit-tested and fuzzed. */
#ifndef WSHOST_ELFCHECK_H
#define WSHOST_ELFCHECK_H

#include <stddef.h>

/* Checks the image of a whole file (len bytes): ELF header sane, class, byte order and
 * machine of this host, a shared object, and every program header's file range (PT_LOAD
 * segments above all), the program and section header tables inside the file. 0 when it can be
 * handed to dlopen; otherwise -ENOEXEC and why (a sentence, for the log and /_/status). */
int elf_check(const void *image, size_t len, char *why, size_t whylen);

#endif
