/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new RISC-V 64 context; read a
 * fault's stack pointer. */
#include "../context.h"
#include "make.h"

#include <stdint.h>
#include <string.h>
#include <ucontext.h>

void *fib__ctx_make(void *stack_top, fib__ctx_entry entry) {
  return fib__ctx_make_inline(stack_top, entry);
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

