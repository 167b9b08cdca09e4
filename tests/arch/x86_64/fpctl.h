/* SPDX-License-Identifier: MIT */
/*
 * fpctl.h -- the FP control state the switch must keep per context, for
 * tests/test_switch.c: x86-64 has two, MXCSR (SSE) and the x87 control
 * word, and each is checked on its own.
 *
 *   fpctl_get()               the current state
 *   fpctl_set_nondefault()    switch to a non-default state (every field
 *                             the switch must carry differs from the
 *                             default); returns it
 *   FPCTL_CHECK_NONDEFAULT(s) the state set by fpctl_set_nondefault (s) is
 *                             in force
 *   FPCTL_CHECK_SAME(s)       the control state equals s (a fpctl_get())
 *   fpctl_limit_to_tool(tool) if the tool running the test (FIB_TEST_TOOL)
 *                             cannot emulate every field, limit the two
 *                             above to the fields it can and return a note
 *                             saying so (for the test's output); else NULL
 */
#ifndef FIB__TEST_FPCTL_H
#define FIB__TEST_FPCTL_H

#include <string.h>
#include <xmmintrin.h>

#define FPCTL_NAME "MXCSR and x87 control word"

#define MXCSR_CONTROL 0xffc0u /* everything but the exception flags */
#define MXCSR_RC_MASK 0x6000u
#define MXCSR_RC_UP 0x4000u
#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u
#define X87_RC_MASK 0x0c00u
#define X87_RC_DOWN 0x0400u
#define X87_PC_MASK 0x0300u /* precision control: 00 = single */

struct fpctl {
  unsigned mxcsr;
  unsigned short x87cw;
};

static inline unsigned short fpctl_get_x87cw(void) {
  unsigned short cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  return cw;
}

static inline struct fpctl fpctl_get(void) {
  struct fpctl s = {_mm_getcsr() & MXCSR_CONTROL, fpctl_get_x87cw()};
  return s;
}

/* valgrind (3.19, amd64) emulates only the rounding control of MXCSR and
 * of the x87 control word: FTZ, DAZ and the x87 precision control are
 * dropped when loaded and read back as the defaults (seen: ldmxcsr 0xdfc0
 * reads back 0x5f80, fldcw 0x047f reads back 0x077f), so a check of them
 * fails under it whatever the switch does. There, only the rounding
 * control is changed and checked: still both registers, still per
 * context. */
static int fpctl_rounding_only;

static inline const char *fpctl_limit_to_tool(const char *tool) {
  if (!tool || strncmp(tool, "valgrind", 8) != 0)
    return NULL;
  fpctl_rounding_only = 1;
  return "valgrind emulates only the rounding control of MXCSR and of the "
         "x87 control word (FTZ, DAZ and the x87 precision read back as "
         "defaults): checking the rounding control of both; the native runs "
         "check FTZ, DAZ and the precision too";
}

static inline struct fpctl fpctl_set_nondefault(void) {
  unsigned more = fpctl_rounding_only ? 0 : MXCSR_FTZ | MXCSR_DAZ;
  unsigned mx = (_mm_getcsr() & ~MXCSR_RC_MASK) | MXCSR_RC_UP | more;
  _mm_setcsr(mx);
  unsigned clear = X87_RC_MASK | (fpctl_rounding_only ? 0 : X87_PC_MASK);
  unsigned short cw = (unsigned short)((fpctl_get_x87cw() & ~clear) |
                                       X87_RC_DOWN);
  __asm__ volatile("fldcw %0" : : "m"(cw));
  struct fpctl s = {mx & MXCSR_CONTROL, cw}; /* what was asked for */
  return s;
}

/* MXCSR: rounding up, FTZ and DAZ (rounding only, under valgrind); x87:
 * the whole control word. */
#define FPCTL_CHECK_NONDEFAULT(s)                                              \
  do {                                                                         \
    CHECK_EQ(_mm_getcsr() & MXCSR_RC_MASK, MXCSR_RC_UP);                       \
    if (!fpctl_rounding_only)                                                  \
      CHECK_EQ(_mm_getcsr() & (MXCSR_FTZ | MXCSR_DAZ), MXCSR_FTZ | MXCSR_DAZ); \
    CHECK_EQ(fpctl_get_x87cw(), (s).x87cw);                                    \
  } while (0)

#define FPCTL_CHECK_SAME(s)                                                    \
  do {                                                                         \
    CHECK_EQ(_mm_getcsr() & MXCSR_CONTROL, (s).mxcsr);                         \
    CHECK_EQ(fpctl_get_x87cw(), (s).x87cw);                                    \
  } while (0)

#endif
