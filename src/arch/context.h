/* SPDX-License-Identifier: MIT */
/*
 * context.h -- the architecture layer: make a context, switch contexts.
 *
 * This is everything the layers above know of the CPU. A context is a saved
 * stack pointer; what the switch keeps on the stack behind it is the
 * business of src/arch/<arch>/.
 */
#ifndef FIB__ARCH_CONTEXT_H
#define FIB__ARCH_CONTEXT_H

#include <stddef.h>

/* The first function a new context runs. `value` is the value passed by the
 * switch that first enters the context. It must never return. */
typedef void (*fib__ctx_entry)(void *value);

/*
 * Prepare a context on the stack that ends (exclusive) at stack_top: the
 * first switch to the returned stack pointer calls entry(value) with a zero
 * frame pointer, the ABI's stack alignment, and the FP control state of the
 * thread that called fib__ctx_make (so a new fiber inherits its creator's
 * rounding mode).
 */
void *fib__ctx_make(void *stack_top, fib__ctx_entry entry);

/* The same, inline (src/arch/<arch>/make.h): for create and spawn. */
#if defined(__x86_64__)
#include "x86_64/make.h"
#elif defined(__aarch64__)
#include "aarch64/make.h"
#elif defined(__riscv) && __riscv_xlen == 64
#include "riscv64/make.h"
#endif

/*
 * Save the running context (its stack pointer goes to *save_sp), resume the
 * one suspended at load_sp, and hand it `value`: the resumed side sees it as
 * the return value of its own fib__ctx_switch call (or as the entry's
 * argument). Implemented in assembly.
 */
void *fib__ctx_switch(void **save_sp, void *load_sp, void *value);

/* The same, without saving or restoring the FP control state (MXCSR/x87 CW
 * on x86-64, FPCR on aarch64, frm on riscv64): for contexts that share the
 * thread's. A context is always entered and left by the same variant. */
void *fib__ctx_switch_nofp(void **save_sp, void *load_sp, void *value);

/*
 * Resume the context suspended at load_sp, handing it `value`, without
 * saving the running one: for a context that has finished for good. The
 * second half of the switch; the variant must match the one the resumed
 * context was left by. Implemented in assembly.
 */
_Noreturn void fib__ctx_jump(void *load_sp, void *value);
_Noreturn void fib__ctx_jump_nofp(void *load_sp, void *value);

/* The same jumps declared as returning, so that a call of one in tail
 * position compiles to a jump: gcc and clang emit `call` for a _Noreturn
 * callee, and each `call` that never returns leaves an entry in the
 * return-stack predictor that a later `ret` of the resumed side pops
 * instead of its own (coro.c, fib__coro_entry). They never return. */
void fib__ctx_jump_tail(void *load_sp, void *value) __asm__("fib__ctx_jump");
void fib__ctx_jump_nofp_tail(void *load_sp, void *value)
    __asm__("fib__ctx_jump_nofp");

/*
 * The two switches again, typed to return int. A caller whose last act is
 * the switch can then end with `return fib__ctx_switch_int(..., NULL)` and
 * the compiler makes it a tail jump: the resumed side's saved return
 * address is then its caller's own, and no `ret` runs between switches, so
 * the return-stack predictor is never led astray. Pass value NULL: the
 * resumed side sees 0.
 */
int fib__ctx_switch_int(void **save_sp, void *load_sp, void *value)
    __asm__("fib__ctx_switch");
int fib__ctx_switch_nofp_int(void **save_sp, void *load_sp, void *value)
    __asm__("fib__ctx_switch_nofp");

/* The same switches once more, at other addresses, for the switch back
 * to a resumer (a yield): each switch ends in an indirect jump, and a jump
 * that always goes to one kind of place (into coroutines, or back to
 * their resumers) is predicted better than one that alternates between
 * the two. The shared-FP round trip was ~10 % faster here with them. */
int fib__ctx_switch_back_int(void **save_sp, void *load_sp, void *value)
    __asm__("fib__ctx_switch_back");
int fib__ctx_switch_back_nofp_int(void **save_sp, void *load_sp, void *value)
    __asm__("fib__ctx_switch_back_nofp");

/* The largest interval between two stack probes that the compiler's
 * -fstack-clash-protection makes on this architecture: a guard region at
 * least this large cannot be jumped by a probed frame. */
size_t fib__ctx_probe_interval(void);

/* The stack pointer at the moment of a fault, from a signal handler's
 * ucontext argument. */
void *fib__ctx_fault_sp(const void *ucontext);

#endif
