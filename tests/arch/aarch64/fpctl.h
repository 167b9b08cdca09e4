/* SPDX-License-Identifier: MIT */
/*
 * fpctl.h -- the FP control state the switch must keep per context, for
 * tests/test_switch.c: on AArch64, FPCR. Interface: see
 * tests/arch/x86_64/fpctl.h.
 */
#ifndef FIB__TEST_FPCTL_H
#define FIB__TEST_FPCTL_H

#include <stdint.h>

#define FPCTL_NAME "FPCR"

#define FPCR_RMODE_MASK (3ull << 22) /* rounding mode */
#define FPCR_RMODE_RP (1ull << 22)   /* toward plus infinity */
#define FPCR_FZ (1ull << 24)         /* flush-to-zero */
#define FPCR_DN (1ull << 25)         /* default NaN */

struct fpctl {
  uint64_t fpcr;
};

static inline struct fpctl fpctl_get(void) {
  struct fpctl s;
  __asm__ volatile("mrs %0, fpcr" : "=r"(s.fpcr));
  return s;
}

static inline struct fpctl fpctl_set_nondefault(void) {
  uint64_t v = (fpctl_get().fpcr & ~FPCR_RMODE_MASK) | FPCR_RMODE_RP | FPCR_FZ | FPCR_DN;
  __asm__ volatile("msr fpcr, %0" : : "r"(v));
  struct fpctl s = {v}; /* what was asked for */
  return s;
}

/* Rounding mode, FZ and DN each, then the whole register. */
#define FPCTL_CHECK_NONDEFAULT(s)                                              \
  do {                                                                         \
    CHECK_EQ(fpctl_get().fpcr & FPCR_RMODE_MASK, FPCR_RMODE_RP);               \
    CHECK_EQ(fpctl_get().fpcr & FPCR_FZ, FPCR_FZ);                             \
    CHECK_EQ(fpctl_get().fpcr & FPCR_DN, FPCR_DN);                             \
    CHECK_EQ(fpctl_get().fpcr, (s).fpcr);                                      \
  } while (0)

/* No tool that runs the suite here limits what can be checked (valgrind
 * runs the suite on x86-64 only): every field, always. */
static inline const char *fpctl_limit_to_tool(const char *tool) {
  (void)tool;
  return 0;
}

#define FPCTL_CHECK_SAME(s) CHECK_EQ(fpctl_get().fpcr, (s).fpcr)

#endif
