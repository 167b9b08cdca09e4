/* SPDX-License-Identifier: MIT */
/* make.h -- the first frame of a new x86-64 context (fib__ctx_make), inline
 * for the paths that make one per coroutine (create, spawn): as a call, its
 * caller kept registers across it and the call cost as much as the body. */
#ifndef FIB__ARCH_X86_64_MAKE_H
#define FIB__ARCH_X86_64_MAKE_H

#include "frame.h"

#include <stdint.h>
#include <string.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

static inline void *fib__ctx_make_inline(void *stack_top,
                                         void (*entry)(void *)) {
  /* The trampoline calls entry with rsp = frame end; the ABI wants that
   * 16-byte aligned at the call, so the frame ends on a 16-byte boundary. */
  uintptr_t end = (uintptr_t)stack_top & ~(uintptr_t)15;
  struct fib__frame *f = (struct fib__frame *)(end - FIB__FRAME_SIZE);
  memset(f, 0, sizeof *f);

  /* Inherit the creator's FP control state: the ABI calls it callee-saved,
   * so a fresh context must start from a valid one. Only the control bits
   * of MXCSR are inherited; stale exception flags are not. */
  f->mxcsr = __builtin_ia32_stmxcsr() & 0xffc0u;
  __asm__ volatile("fnstcw %0" : "=m"(f->x87cw));

  f->r12 = (uint64_t)(uintptr_t)entry;
  f->rbp = 0; /* ends frame-pointer chains at the context's first frame */
  f->rip = (uint64_t)(uintptr_t)fib__ctx_entry_trampoline;
  return f;
}

#endif
