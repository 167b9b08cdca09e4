/* SPDX-License-Identifier: MIT */
/*
 * frame.h -- the saved context of a suspended AArch64 (AAPCS64) context.
 *
 * A suspended context is nothing but its stack pointer: the switch stores
 * the callee-saved state on the context's own stack, in this frame, and the
 * stack pointer then points at the frame. This header is the one place the
 * layout is defined: switch.S uses the offsets, context.c builds the first
 * frame of a new context through the struct, and the static asserts below
 * keep the two in step.
 *
 *   offset  field    why it is saved
 *   0       x19      callee-saved general-purpose registers (AAPCS64
 *   8       x20      section 6.1.1: x19-x28) ...
 *   ...
 *   72      x28
 *   80      x29      ... frame pointer (zero in a new context: ends chains)
 *   88      x30      link register: where the context continues (for a
 *                    suspended context, the return address of its call to
 *                    the switch; for a new one, the entry trampoline)
 *   96      d8       low 64 bits of v8-v15: callee-saved (AAPCS64 6.1.2;
 *   ...              the upper halves are caller-saved)
 *   152     d15
 *   160     fpcr     FP control register (rounding mode, FZ, DN, AHP):
 *                    callee-saved. FPSR (status flags) is not.
 *   168     pad      keeps the frame a multiple of 16 (sp alignment)
 *   176     (end)    the context's stack pointer after the switch returns
 */
#ifndef FIB__ARCH_AARCH64_FRAME_H
#define FIB__ARCH_AARCH64_FRAME_H

#define FIB__FRAME_X19 0
#define FIB__FRAME_X21 16
#define FIB__FRAME_X23 32
#define FIB__FRAME_X25 48
#define FIB__FRAME_X27 64
#define FIB__FRAME_X29 80
#define FIB__FRAME_X30 88
#define FIB__FRAME_D8 96
#define FIB__FRAME_D10 112
#define FIB__FRAME_D12 128
#define FIB__FRAME_D14 144
#define FIB__FRAME_FPCR 160
#define FIB__FRAME_SIZE 176

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

struct fib__frame {
  uint64_t x19, x20, x21, x22, x23, x24, x25, x26, x27, x28;
  uint64_t x29, x30;
  uint64_t d8, d9, d10, d11, d12, d13, d14, d15;
  uint64_t fpcr;
  uint64_t pad;
};

/* The switch saves and loads in pairs (stp/ldp): each pair's first member
 * is named here, and the second follows it at +8. */
_Static_assert(offsetof(struct fib__frame, x19) == FIB__FRAME_X19, "x19");
_Static_assert(offsetof(struct fib__frame, x21) == FIB__FRAME_X21, "x21");
_Static_assert(offsetof(struct fib__frame, x23) == FIB__FRAME_X23, "x23");
_Static_assert(offsetof(struct fib__frame, x25) == FIB__FRAME_X25, "x25");
_Static_assert(offsetof(struct fib__frame, x27) == FIB__FRAME_X27, "x27");
_Static_assert(offsetof(struct fib__frame, x29) == FIB__FRAME_X29, "x29");
_Static_assert(offsetof(struct fib__frame, x30) == FIB__FRAME_X30, "x30");
_Static_assert(offsetof(struct fib__frame, d8) == FIB__FRAME_D8, "d8");
_Static_assert(offsetof(struct fib__frame, d10) == FIB__FRAME_D10, "d10");
_Static_assert(offsetof(struct fib__frame, d12) == FIB__FRAME_D12, "d12");
_Static_assert(offsetof(struct fib__frame, d14) == FIB__FRAME_D14, "d14");
_Static_assert(offsetof(struct fib__frame, fpcr) == FIB__FRAME_FPCR, "fpcr");
_Static_assert(sizeof(struct fib__frame) == FIB__FRAME_SIZE, "frame size");
_Static_assert(FIB__FRAME_SIZE % 16 == 0, "sp stays 16-byte aligned");
#endif

#endif
