/* SPDX-License-Identifier: MIT */
/* make.h -- the first frame of a new RISC-V 64 context (fib__ctx_make), inline
 * for the paths that make one per coroutine (create, spawn): as a call, its
 * caller kept registers across it and the call cost as much as the body. */
#ifndef FIB__ARCH_RISCV64_MAKE_H
#define FIB__ARCH_RISCV64_MAKE_H

#include "frame.h"

#include <stdint.h>
#include <string.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

static inline void *fib__ctx_make_inline(void *stack_top,
                                         void (*entry)(void *)) {
  /* The ABI keeps sp 16-byte aligned: the frame ends on a 16-byte boundary
   * and is a multiple of 16 long. */
  uintptr_t end = (uintptr_t)stack_top & ~(uintptr_t)15;
  struct fib__frame *f = (struct fib__frame *)(end - FIB__FRAME_SIZE);
  memset(f, 0, sizeof *f);

#if defined(__riscv_flen) && __riscv_flen >= 64
  /* Inherit the creator's rounding mode (frm), the FP control state. */
  unsigned long frm;
  __asm__ volatile("frrm %0" : "=r"(frm));
  f->frm = frm;
#endif

  f->s[1] = (uint64_t)(uintptr_t)entry;
  f->s[0] = 0; /* ends frame-pointer chains at the context's first frame */
  f->ra = (uint64_t)(uintptr_t)fib__ctx_entry_trampoline;
  return f;
}

#endif
