/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new x86-64 context; read a
 * fault's stack pointer. */
#include "../context.h"
#include "frame.h"

#include <stdint.h>
#include <string.h>
#include <ucontext.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

void *fib__ctx_make(void *stack_top, fib__ctx_entry entry) {
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

size_t fib__ctx_probe_interval(void) {
  return 4096; /* gcc and clang probe every page on x86-64 */
}

void *fib__ctx_fault_sp(const void *ucontext) {
  const ucontext_t *uc = ucontext;
  return (void *)(uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
}
