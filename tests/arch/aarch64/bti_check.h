/* SPDX-License-Identifier: MIT */
/*
 * bti_check.h -- does this process run with BTI enforced? For the tests
 * linked with bti_start.S (tests.cmake). Both must hold: the CPU (qemu
 * -cpu max) has BTI, and the main program carries the BTI property, which
 * it loses if any object in the link lacks it.
 */
#ifndef FIB__TEST_BTI_CHECK_H
#define FIB__TEST_BTI_CHECK_H

#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <sys/auxv.h>

#ifndef HWCAP2_BTI
#define HWCAP2_BTI (1 << 17)
#endif
#ifndef PT_GNU_PROPERTY
#define PT_GNU_PROPERTY 0x6474e553
#endif
#define BTI_PROPERTY_AARCH64_FEATURE_1_AND 0xc0000000u
#define BTI_PROPERTY_BTI 1u

/* dl_iterate_phdr callback: the first object is the main program. */
static int bti_main_program_marked(struct dl_phdr_info *info, size_t size,
                                   void *data) {
  (void)size;
  int *marked = data;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_GNU_PROPERTY)
      continue;
    const uint32_t *n = (const uint32_t *)(info->dlpi_addr + ph->p_vaddr);
    /* one NT_GNU_PROPERTY_TYPE_0 note: namesz 4, descsz, type 5, "GNU" */
    if (n[0] != 4 || n[2] != NT_GNU_PROPERTY_TYPE_0)
      continue;
    const unsigned char *p = (const unsigned char *)(n + 4);
    const unsigned char *end = p + n[1];
    while (p + 8 <= end) {
      uint32_t type = ((const uint32_t *)p)[0], datasz = ((const uint32_t *)p)[1];
      if (type == BTI_PROPERTY_AARCH64_FEATURE_1_AND && datasz >= 4)
        *marked = (((const uint32_t *)p)[2] & BTI_PROPERTY_BTI) != 0;
      p += 8 + ((datasz + 7) & ~7u);
    }
  }
  return 1; /* stop after the main program */
}

/* Fails the test, saying which half is missing, unless BTI is enforced. */
static inline void bti_check_enforced(void) {
  if (!(getauxval(AT_HWCAP2) & HWCAP2_BTI))
    check_failed(__FILE__, __LINE__, "the CPU has no BTI (run under "
                 "qemu-aarch64 -cpu max, or on BTI hardware)");
  int marked = 0;
  dl_iterate_phdr(bti_main_program_marked, &marked);
  if (!marked)
    check_failed(__FILE__, __LINE__, "this executable lost its BTI property "
                 "note (an unmarked object in the link; see readelf -n)");
}

#endif
