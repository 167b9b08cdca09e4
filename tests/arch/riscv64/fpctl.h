/* SPDX-License-Identifier: MIT */
/*
 * fpctl.h -- the FP control state the switch must keep per context, for
 * tests/test_switch.c: on RISC-V, the dynamic rounding mode frm (the rest
 * of fcsr, fflags, is status). Interface: see tests/arch/x86_64/fpctl.h.
 */
#ifndef FIB__TEST_FPCTL_H
#define FIB__TEST_FPCTL_H

#if !defined(__riscv_flen) || __riscv_flen < 64
#error "riscv64 without a D-extension FPU has no FP control state to test"
#endif

#define FPCTL_NAME "frm"

#define FRM_RUP 3u /* round up, toward plus infinity */

struct fpctl {
  unsigned long frm;
};

static inline struct fpctl fpctl_get(void) {
  struct fpctl s;
  __asm__ volatile("frrm %0" : "=r"(s.frm));
  return s;
}

static inline struct fpctl fpctl_set_nondefault(void) {
  __asm__ volatile("fsrm %0" : : "r"((unsigned long)FRM_RUP));
  struct fpctl s = {FRM_RUP}; /* what was asked for */
  return s;
}

#define FPCTL_CHECK_NONDEFAULT(s)                                              \
  do {                                                                         \
    CHECK_EQ(fpctl_get().frm, FRM_RUP);                                        \
    CHECK_EQ(fpctl_get().frm, (s).frm);                                        \
  } while (0)

/* No tool that runs the suite here limits what can be checked (valgrind
 * runs the suite on x86-64 only): every field, always. */
static inline const char *fpctl_limit_to_tool(const char *tool) {
  (void)tool;
  return 0;
}

#define FPCTL_CHECK_SAME(s) CHECK_EQ(fpctl_get().frm, (s).frm)

#endif
