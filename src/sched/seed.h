/* SPDX-License-Identifier: MIT */
/*
 * seed.h -- the seeded test mode (FIB_SEEDED in fibers.h): one generator
 * per runtime draws every scheduling choice, and a virtual clock stands in
 * for CLOCK_MONOTONIC, so that the same seed replays the same run.
 *
 * Where the choices are made:
 *   - which ready fiber runs next: the loop takes a uniformly chosen one
 *     (fib__seed_take), and every switch goes through the loop (sched.c
 *     keeps until_loop at 0, so fibers never hand off directly);
 *   - which ready case a select takes (fib__rand_below);
 *   - preemption points (fib__preempt_point) at the start of the calls
 *     that may wait, with FIB_SEED_PREEMPT.
 * Everything else a one-thread run does already follows from those
 * choices: timers with equal deadlines fire in start order, epoll reports
 * a socketpair's readiness in the order the writes made it, ids are handed
 * out in spawn order.
 */
#ifndef FIB__SCHED_SEED_H
#define FIB__SCHED_SEED_H

#include "fiber.h"

#include <stddef.h>
#include <stdint.h>

/* Where the virtual clock starts, and how far it moves per dispatch (a
 * loop that polls fib_now_ns() between yields sees time pass). */
#define FIB__SEED_EPOCH_NS 1000000000u
#define FIB__SEED_TICK_NS 1000u

/* Set rt up from opts and the environment (FIBERS_SEED,
 * FIBERS_SEED_PREEMPT). 0, or FIB_EINVAL (a FIBERS_SEED that is not a
 * number; FIB_SEED_PREEMPT without FIB_SEEDED). */
int fib__seed_setup(struct fib_runtime *rt, const fib_runtime_opts *opts);

/* rt is being destroyed. */
void fib__seed_teardown(struct fib_runtime *rt);

/* A number below k (k > 0) from rt's generator. */
size_t fib__seed_below(struct fib_runtime *rt, size_t k);

/* Take one of rt's ready fibers, chosen by its generator (the queue is
 * not empty). */
struct fib__fiber *fib__seed_take(struct fib_runtime *rt);

/* Nothing is ready in a seeded run and something outside the fibers may
 * still ready one (timers, I/O, posts): collect what is there, else move
 * the clock to the earliest deadline, else wait for real. */
void fib__seed_idle(struct fib_runtime *rt);

/* Move the clock to the earliest deadline, if there is one ahead and no
 * operation in flight that must finish first. 1 if it moved. */
int fib__seed_jump(struct fib_runtime *rt);

/* A number below k (k > 0) for a choice among equals (select's ready
 * cases): from the running seeded runtime's generator, else from a cheap
 * per-thread one. */
size_t fib__rand_below(size_t k);

/* How many live runtimes have preemption points (atomic): the calls that
 * may wait test it first, so the cost without any is one load. */
extern unsigned fib__preempt_live;

/* Whether some runtime has preemption points (then call the slow half). */
static inline int fib__preempt_any(void) {
  return __builtin_expect(
      __atomic_load_n(&fib__preempt_live, __ATOMIC_RELAXED) != 0, 0);
}

/* The point's slow half: the running fiber of a runtime with
 * FIB_SEED_PREEMPT gives way, or not, as its generator says. */
void fib__preempt_slow(void);

/* At the start of a call that may wait, before anything else: a running
 * fiber of a runtime with FIB_SEED_PREEMPT may give way here. The hottest
 * calls (a mutex's lock, a channel's send and receive) test
 * fib__preempt_any() and make the point in a cold function of their own
 * instead, so that their fast path makes no call and stays a leaf. */
static inline void fib__preempt_point(void) {
  if (fib__preempt_any())
    fib__preempt_slow();
}

/* For those hottest calls: defines NAME, a cold out-of-line function of
 * PARAMS that makes the point and then tail-calls BODY(ARGS), the call's
 * real body. The public call tail-calls NAME when fib__preempt_any(), and
 * BODY otherwise, so its fast path stays a leaf. */
#define FIB__PREEMPTED(ret, name, body, params, args)                       \
  static __attribute__((noinline, cold)) ret name params {                  \
    fib__preempt_slow();                                                     \
    return body args;                                                        \
  }

#endif
