/* SPDX-License-Identifier: MIT */
/*
 * frame.h -- the saved context of a suspended RISC-V 64 (LP64D) context.
 *
 * A suspended context is nothing but its stack pointer: the switch stores
 * the callee-saved state on the context's own stack, in this frame, and the
 * stack pointer then points at the frame. This header is the one place the
 * layout is defined: switch.S uses the offsets, context.c builds the first
 * frame of a new context through the struct, and the static asserts below
 * keep the two in step.
 *
 *   offset  field    why it is saved
 *   0       ra       where the context continues: for a suspended context
 *                    the return address of its call to the switch; for a
 *                    new one, the entry trampoline
 *   8       s0       frame pointer (zero in a new context: ends chains)
 *   16      s1       callee-saved registers s1-s11 (psABI: "Integer
 *   ...              Register Convention") ...
 *   96      s11
 *   104     fs0      callee-saved FP registers fs0-fs11, 64 bits each (the
 *   ...              LP64D ABI; unused without an FPU)
 *   192     fs11
 *   200     frm      dynamic rounding mode (fcsr bits 5-7): the FP control
 *                    state a fiber may change. fflags (status) is not kept.
 *   208     (end)    the context's stack pointer after the switch returns;
 *                    208 is a multiple of 16 (the ABI's sp alignment)
 */
#ifndef FIB__ARCH_RISCV64_FRAME_H
#define FIB__ARCH_RISCV64_FRAME_H

#define FIB__FRAME_RA 0
#define FIB__FRAME_S0 8
#define FIB__FRAME_S(n) (8 + 8 * (n))      /* s0-s11 */
#define FIB__FRAME_FS(n) (104 + 8 * (n))   /* fs0-fs11 */
#define FIB__FRAME_FRM 200
#define FIB__FRAME_SIZE 208

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

struct fib__frame {
  uint64_t ra;
  uint64_t s[12];
  uint64_t fs[12];
  uint64_t frm;
};

_Static_assert(offsetof(struct fib__frame, ra) == FIB__FRAME_RA, "ra");
_Static_assert(offsetof(struct fib__frame, s) == FIB__FRAME_S0, "s0");
_Static_assert(offsetof(struct fib__frame, s[11]) == FIB__FRAME_S(11), "s11");
_Static_assert(offsetof(struct fib__frame, fs) == FIB__FRAME_FS(0), "fs0");
_Static_assert(offsetof(struct fib__frame, fs[11]) == FIB__FRAME_FS(11), "fs11");
_Static_assert(offsetof(struct fib__frame, frm) == FIB__FRAME_FRM, "frm");
_Static_assert(sizeof(struct fib__frame) == FIB__FRAME_SIZE, "frame size");
_Static_assert(FIB__FRAME_SIZE % 16 == 0, "sp stays 16-byte aligned");
#endif

#endif
