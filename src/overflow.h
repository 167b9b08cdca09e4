/* SPDX-License-Identifier: MIT */
/*
 * overflow.h -- the stack layer's overflow report: a fault in a guard
 * region, or an overwritten FIB_GUARD_NONE canary, becomes one line naming
 * the fiber or coroutine that overflowed (overflow.c).
 */
#ifndef FIB__OVERFLOW_H
#define FIB__OVERFLOW_H

#include "stack.h"
#include "tls.h"

/*
 * What runs on this thread now, for the overflow handler: NULL on the
 * thread's own stack, else a pointer to the running stack's owner record,
 * whose first member is its `struct fib__stack *`. The layer above keeps
 * its "current coroutine" in this very variable (its record starts with
 * the stack pointer), so a switch writes one thread-local word, not two.
 */
extern FIB__TLS struct fib__stack *const *fib__tl_running;
/* Whether this thread is set up: its handler stack is in place, or the
 * process runs without our handler (FIB_SIGNALS_NONE). */
extern FIB__TLS int fib__tl_overflow_ready;

/* Install the SIGSEGV/SIGBUS handler (once per process) and this thread's
 * alternate signal stack; the first call in the process fixes the mode
 * (fib_overflow_signals), and with FIB_SIGNALS_NONE installs neither and
 * returns 0. 0 or FIB_ENOMEM. */
int fib__overflow_setup_thread(void);

/* The same, as a flag check once it has been done on this thread. */
static inline int fib__overflow_prepare_thread(void) {
  return fib__tl_overflow_ready ? 0 : fib__overflow_setup_thread();
}

/* A FIB_GUARD_NONE stack's canary was found overwritten: report it in one
 * line naming the owner, then abort (fib__fatal). Out of line and cold, so
 * the check at each switch stays a load and a branch. */
__attribute__((cold)) _Noreturn void
fib__stack_canary_fail(const struct fib__stack *s);

#endif
