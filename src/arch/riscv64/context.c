/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new RISC-V 64 context; read a
 * fault's stack pointer. */
#include "../context.h"
#include "frame.h"

#include <stdint.h>
#include <string.h>
#include <ucontext.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

void *fib__ctx_make(void *stack_top, fib__ctx_entry entry) {
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

size_t fib__ctx_probe_interval(void) {
  /* A page. LIMIT: GCC 12 emits no stack-clash probes on riscv64
   * (-fstack-clash-protection is accepted and ignored there), so a guard
   * only catches overflows whose frames are smaller than the guard: one
   * frame larger than it (a big array or VLA) can step over the guard into
   * whatever lies below. Keep large buffers off fiber stacks on riscv64. */
  return 4096;
}

void *fib__ctx_fault_sp(const void *ucontext) {
  const ucontext_t *uc = ucontext;
  return (void *)(uintptr_t)uc->uc_mcontext.__gregs[REG_SP];
}

