/* SPDX-License-Identifier: MIT */
/*
 * frame.h -- the saved context of a suspended x86-64 System V context.
 *
 * A suspended context is nothing but its stack pointer: the switch stores
 * the callee-saved state on the context's own stack, in this frame, and the
 * stack pointer then points at the frame. This header is the one place the
 * layout is defined: switch.S uses the offsets, context.c builds the first
 * frame of a new context through the struct, and the static asserts below
 * keep the two in step.
 *
 *   offset  field    why it is saved
 *   0       mxcsr    SSE control bits (rounding, FTZ/DAZ, exception masks):
 *                    callee-saved by the ABI. Status bits ride along.
 *   4       x87cw    x87 control word (precision, rounding): callee-saved.
 *   6       pad      keeps the registers 8-byte aligned
 *   8       r12      callee-saved general-purpose registers ...
 *   16      r13
 *   24      r14
 *   32      r15
 *   40      rbx
 *   48      rbp      ... frame pointer (zero in a new context: ends chains)
 *   56      rip      where the context continues; for a suspended context
 *                    the return address its call to the switch pushed.
 *   64      (end)    the context's stack pointer after the switch returns
 */
#ifndef FIB__ARCH_X86_64_FRAME_H
#define FIB__ARCH_X86_64_FRAME_H

#define FIB__FRAME_MXCSR 0
#define FIB__FRAME_X87CW 4
#define FIB__FRAME_R12 8
#define FIB__FRAME_R13 16
#define FIB__FRAME_R14 24
#define FIB__FRAME_R15 32
#define FIB__FRAME_RBX 40
#define FIB__FRAME_RBP 48
#define FIB__FRAME_RIP 56
#define FIB__FRAME_SIZE 64

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

struct fib__frame {
  uint32_t mxcsr;
  uint16_t x87cw;
  uint16_t pad;
  uint64_t r12, r13, r14, r15, rbx, rbp, rip;
};

_Static_assert(offsetof(struct fib__frame, mxcsr) == FIB__FRAME_MXCSR, "mxcsr");
_Static_assert(offsetof(struct fib__frame, x87cw) == FIB__FRAME_X87CW, "x87cw");
_Static_assert(offsetof(struct fib__frame, r12) == FIB__FRAME_R12, "r12");
_Static_assert(offsetof(struct fib__frame, r13) == FIB__FRAME_R13, "r13");
_Static_assert(offsetof(struct fib__frame, r14) == FIB__FRAME_R14, "r14");
_Static_assert(offsetof(struct fib__frame, r15) == FIB__FRAME_R15, "r15");
_Static_assert(offsetof(struct fib__frame, rbx) == FIB__FRAME_RBX, "rbx");
_Static_assert(offsetof(struct fib__frame, rbp) == FIB__FRAME_RBP, "rbp");
_Static_assert(offsetof(struct fib__frame, rip) == FIB__FRAME_RIP, "rip");
_Static_assert(sizeof(struct fib__frame) == FIB__FRAME_SIZE, "frame size");
#endif

#endif
