/* SPDX-License-Identifier: MIT */
/*
 * seed.c -- the seeded test mode: the generator, the random choice of the
 * next fiber, virtual time when nothing is ready, preemption points, and
 * the settings from fib_runtime_opts and the environment. seed.h says
 * where each choice is made.
 */
#include "seed.h"
#include "workers.h"
#include "../sys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

unsigned fib__preempt_live;

/* ---- the generator: splitmix64 (one word of state, every seed a good
 * stream of its own, neighbouring seeds unrelated) */

static uint64_t next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Lemire's multiply-shift on the high bits: no division, and the bias
 * (k / 2^32) is nothing for choosing among fibers. */
static size_t below(uint64_t r, size_t k) {
  if (k <= UINT32_MAX)
    return (size_t)(((r >> 32) * (uint64_t)k) >> 32);
  return (size_t)(r % k);
}

size_t fib__seed_below(struct fib_runtime *rt, size_t k) {
  return below(next(&rt->rng), k);
}

/* xorshift64* per thread for the unseeded choices: cheap and plenty for a
 * handful of select cases. */
static FIB__TLS uint64_t thread_rng;

size_t fib__rand_below(size_t k) {
  struct fib_runtime *rt = fib__tl_runtime;
  if (rt && rt->seeded)
    return fib__seed_below(rt, k);
  uint64_t x = thread_rng ? thread_rng : 0x9e3779b97f4a7c15u;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  thread_rng = x;
  return below(x * 0x2545f4914f6cdd1du, k);
}

/* ---- settings */

/* FIBERS_SEED: 1 and *seed if set to a number, 0 if unset, -1 if set to
 * anything else. */
static int env_seed(uint64_t *seed) {
  const char *e = getenv("FIBERS_SEED");
  if (!e)
    return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(e, &end, 0);
  if (end == e || *end || errno || *e == '-')
    return -1;
  *seed = v;
  return 1;
}

int fib__seed_setup(struct fib_runtime *rt, const fib_runtime_opts *opts) {
  int seeded = (opts->flags & FIB_SEEDED) != 0;
  int preempt = (opts->flags & FIB_SEED_PREEMPT) != 0;
  if (preempt && !seeded)
    return FIB_EINVAL;
  uint64_t seed = opts->seed;
  int from_env = env_seed(&seed);
  if (from_env < 0)
    return FIB_EINVAL;
  if (from_env)
    seeded = 1;
  const char *p = getenv("FIBERS_SEED_PREEMPT");
  if (p && (p[0] == '0' || p[0] == '1') && !p[1])
    preempt = p[0] == '1';
  if (!seeded)
    return 0;
  rt->seeded = 1;
  rt->preempt = preempt;
  rt->seed = seed;
  rt->rng = seed;
  rt->vnow = FIB__SEED_EPOCH_NS;
  rt->logical_workers = opts->workers > 1 ? opts->workers : 1;
  snprintf(rt->seed_note, sizeof rt->seed_note,
           "seeded run: FIBERS_SEED=%llu%s replays it",
           (unsigned long long)seed, preempt ? " FIBERS_SEED_PREEMPT=1" : "");
  if (preempt)
    __atomic_add_fetch(&fib__preempt_live, 1, __ATOMIC_RELAXED);
  /* The primitives and channels made from now on take their shared mode,
   * as with real workers (sync/storage.h). */
  if (rt->logical_workers > 1)
    __atomic_add_fetch(&fib__group_live, 1, __ATOMIC_RELEASE);
  return 0;
}

void fib__seed_teardown(struct fib_runtime *rt) {
  if (rt->preempt)
    __atomic_sub_fetch(&fib__preempt_live, 1, __ATOMIC_RELAXED);
  if (rt->logical_workers > 1)
    __atomic_sub_fetch(&fib__group_live, 1, __ATOMIC_RELEASE);
}

/* ---- choices */

struct fib__fiber *fib__seed_take(struct fib_runtime *rt) {
  size_t k = fib__seed_below(rt, fib__runq_len(&rt->runq));
  return (struct fib__fiber *)fib__runq_take_nth(&rt->runq, k);
}

int fib__seed_jump(struct fib_runtime *rt) {
  const struct fib__timer *first = fib__timers_first(&rt->timers);
  if (!first || rt->io_inflight || first->deadline <= rt->vnow)
    return 0;
  rt->vnow = first->deadline;
  return 1;
}

void fib__seed_idle(struct fib_runtime *rt) {
  int posted = __atomic_load_n(&rt->posted, __ATOMIC_SEQ_CST);
  if (rt->io_waiting)
    (void)rt->poll(rt, 0);
  if (posted)
    fib__runtime_tend(rt);
  if (fib__runq_len(&rt->runq))
    return;
  if (rt->timers.count && !rt->io_inflight) {
    (void)fib__seed_jump(rt); /* the loop expires the timer */
    return;
  }
  /* Only what comes from outside can go on: an offload job finishing, a
   * descriptor whose peer is outside, a post. */
  if (posted)
    fib__runtime_sleep(rt, FIB__NO_DEADLINE);
  else if (rt->io_waiting)
    (void)rt->poll(rt, FIB__NO_DEADLINE);
}

void fib__preempt_slow(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  if (!rt || !rt->preempt)
    return;
  struct fib__fiber *self = fib__fiber_self();
  if (self && fib__seed_below(rt, 4) == 0)
    (void)fib_yield();
}
