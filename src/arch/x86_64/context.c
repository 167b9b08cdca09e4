/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new x86-64 context; read a
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
  return 4096; /* gcc and clang probe every page on x86-64 */
}

void *fib__ctx_fault_sp(const void *ucontext) {
  const ucontext_t *uc = ucontext;
  return (void *)(uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
}
