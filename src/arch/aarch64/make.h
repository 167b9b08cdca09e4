/* SPDX-License-Identifier: MIT */
/* make.h -- the first frame of a new AArch64 context (fib__ctx_make), inline
 * for the paths that make one per coroutine (create, spawn): as a call, its
 * caller kept registers across it and the call cost as much as the body. */
#ifndef FIB__ARCH_AARCH64_MAKE_H
#define FIB__ARCH_AARCH64_MAKE_H

#include "frame.h"

#include <stdint.h>
#include <string.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

static inline void *fib__ctx_make_inline(void *stack_top,
                                         void (*entry)(void *)) {
  /* sp must be 16-byte aligned at all times: the frame ends on a 16-byte
   * boundary and is a multiple of 16 long. */
  uintptr_t end = (uintptr_t)stack_top & ~(uintptr_t)15;
  struct fib__frame *f = (struct fib__frame *)(end - FIB__FRAME_SIZE);
  memset(f, 0, sizeof *f);

  /* Inherit the creator's FP control state (FPCR is callee-saved, so a
   * fresh context must start from a valid one). */
  uint64_t fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  f->fpcr = fpcr;

  f->x19 = (uint64_t)(uintptr_t)entry;
  f->x29 = 0; /* ends frame-pointer chains at the context's first frame */
  f->x30 = (uint64_t)(uintptr_t)fib__ctx_entry_trampoline;
  return f;
}

#endif
