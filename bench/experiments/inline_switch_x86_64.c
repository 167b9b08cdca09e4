/* SPDX-License-Identifier: MIT */
/*
 * inline_switch_x86_64.c -- an experiment, not the library: the floor of
 * a context switch inlined into its caller (x86-64, System V), for
 * docs/performance.md's account of the shared-FP switch.
 *
 * fib_coro_resume / fib_coro_yield are calls into the library, so the
 * call boundary makes the six callee-saved registers theirs to save and
 * restore whatever the caller has live. A switch written as inline
 * assembly that declares every register but the stack and frame pointers
 * clobbered lets the compiler keep only what is live across it, in the
 * caller's own frame; here that is the loop's counter. No FP control
 * state is kept (as FIB_SHARED_FP), and no bookkeeping at all: no
 * current-coroutine pointer, status, checks, sanitizer or overflow hooks,
 * which is why this is a measurement of what such a design could reach,
 * not a candidate to ship (performance.md says what shipping would need).
 *
 * Usage: bench_inline_switch <n>: one BENCH line, ns per one-way switch
 * (a round trip / 2), as bench_fibers switch and bench_boost_context
 * switch report theirs.
 */
#include "../bench_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A suspended context: its stack pointer, where its resume address and
 * frame pointer were pushed. */
struct ictx {
  void *sp;
};

/* Suspend into *from and resume *to. The red zone below the stack
 * pointer may hold the caller's data (leaf code), so the pushes go below
 * it. The frame pointer is saved by hand: GCC refuses rbp in a clobber
 * list when the function keeps a frame pointer. */
static inline __attribute__((always_inline)) void iswitch(struct ictx *from,
                                                          struct ictx *to) {
  register struct ictx *f __asm__("rdi") = from;
  register struct ictx *t __asm__("rsi") = to;
  __asm__ volatile("leaq -128(%%rsp), %%rsp\n\t"
                   "pushq %%rbp\n\t"
                   "leaq 1f(%%rip), %%rax\n\t"
                   "pushq %%rax\n\t"
                   "movq %%rsp, (%0)\n\t"
                   "movq (%1), %%rsp\n\t"
                   "popq %%rax\n\t"
                   "jmpq *%%rax\n"
                   "1:\n\t"
                   "popq %%rbp\n\t"
                   "leaq 128(%%rsp), %%rsp\n\t"
                   : "+D"(f), "+S"(t)
                   :
                   : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11",
                     "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2",
                     "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                     "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
                     "memory", "cc");
}

static struct ictx main_ctx, co_ctx;
static volatile long co_turns; /* the coroutine's own count, checked */

static void co_body(void) {
  for (;;) {
    co_turns = co_turns + 1;
    iswitch(&co_ctx, &main_ctx);
  }
}

__attribute__((noinline)) static void switch_loop(long n) {
  for (long i = 0; i < n; i++)
    iswitch(&main_ctx, &co_ctx);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 0;
  if (n <= 0) {
    fprintf(stderr, "usage: bench_inline_switch <n>\n");
    return 2;
  }
  enum { STACK = 64 * 1024 };
  char *stack = malloc(STACK);
  if (!stack)
    return 1;
  /* The first resume pops co_body's address and jumps there with the
   * stack as a call would leave it: 8 below a 16-byte boundary. */
  uintptr_t top = ((uintptr_t)stack + STACK) & ~(uintptr_t)15;
  void **sp = (void **)(top - 16);
  sp[0] = (void *)co_body;
  sp[1] = NULL; /* co_body's return address: it never returns */
  co_ctx.sp = sp;
  switch_loop(n / 10 + 1);
  co_turns = 0;
  double t0 = bench_now_ns();
  switch_loop(n);
  double t1 = bench_now_ns();
  if (co_turns != n) {
    fprintf(stderr, "bench_inline_switch: %ld turns, expected %ld\n",
            (long)co_turns, n);
    return 1;
  }
  bench_report("switch", "inline_asm", (t1 - t0) / (2.0 * (double)n), "ns", n,
               "experiment: inlined switch, live registers only, no layer");
  free(stack);
  return 0;
}
