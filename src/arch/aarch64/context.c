/* SPDX-License-Identifier: MIT */
/* context.c -- build the first frame of a new AArch64 context; read a
 * fault's stack pointer. */
#include "../context.h"
#include "frame.h"

#include <stdint.h>
#include <string.h>
#include <ucontext.h>

void fib__ctx_entry_trampoline(void); /* switch.S */

void *fib__ctx_make(void *stack_top, fib__ctx_entry entry) {
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

