/* SPDX-License-Identifier: MIT */
/*
 * offload.h -- the offload pool's internal entry points (offload.c), for
 * the library's own calls and for tests.
 */
#ifndef FIB__IO_OFFLOAD_H
#define FIB__IO_OFFLOAD_H

#include <stdint.h>

/*
 * fib_offload_until, with `detachable`: fn(arg) touches no memory of the
 * calling fiber, so if the fiber's runtime is destroyed while fn runs, the
 * job is left to finish and freed by the pool instead of destroy waiting
 * for it (the way fib_fsync's and fib_getaddrinfo's jobs are treated).
 */
int fib__offload_call(void (*fn)(void *), void *arg, int detachable,
                      uint64_t deadline_ns);

/* The pool now: threads started and not yet left, and the most there have
 * been at once since the process started (tests check the bound). */
void fib__offload_stats(unsigned *threads, unsigned *peak);

#endif
