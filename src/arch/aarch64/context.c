/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new AArch64 context; read a
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
  /* GCC's -fstack-clash-protection on AArch64 probes every 64 KiB
   * (stack-clash-protection-probe-interval defaults to 16, i.e. 2^16), and
   * assumes the caller's outgoing-argument area covered the first 1 KiB. A
   * guard smaller than that could be jumped by a probed frame. */
  return 65536;
}

void *fib__ctx_fault_sp(const void *ucontext) {
  const ucontext_t *uc = ucontext;
  return (void *)(uintptr_t)uc->uc_mcontext.sp;
}

