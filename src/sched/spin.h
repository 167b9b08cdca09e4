/* SPDX-License-Identifier: MIT */
/*
 * spin.h -- a spin lock in one 32-bit word, for the records of primitives
 * shared by the workers of a multi-worker runtime (src/sync/): their
 * critical sections are a few dozen instructions and never switch, so a
 * waiter spins instead of sleeping. Zero is unlocked, so a zeroed record
 * has an unlocked lock.
 */
#ifndef FIB__SCHED_SPIN_H
#define FIB__SCHED_SPIN_H

#include <sched.h>
#include <stdint.h>

/* A hint to the CPU that this is a spin-wait loop. */
static inline void fib__cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* How many pauses a waiter spends on a held lock before it gives its CPU
 * away once (sched_yield) and spins again: a section is a few dozen
 * instructions, so a holder that keeps it longer than that has been
 * preempted, and on a machine with more runnable threads than CPUs the
 * spinner may be what keeps it from running. Spinning on for the whole
 * time slice made contended runs 30x slower there (5 fibers contending
 * for a mutex on 4 workers, 3 such processes on 2 CPUs: 3.4 s against
 * 0.1 s). */
#define FIB__SPIN_BEFORE_YIELD 128

/* One step of a spin-wait, the `spins`-th (counted from 1): a pause, or
 * every FIB__SPIN_BEFORE_YIELD steps the CPU given away once. Every spin
 * of the runtime (this lock, the join word, an idle worker) waits so. */
static inline void fib__spin_step(unsigned spins) {
  if (spins % FIB__SPIN_BEFORE_YIELD == 0)
    sched_yield();
  else
    fib__cpu_relax();
}

static inline void fib__spin_lock(uint32_t *l) {
  /* acquire: what the last holder wrote is visible inside. Test first,
   * then exchange: waiters spin on a shared line, not on a written one. */
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
    unsigned spins = 0;
    while (__atomic_load_n(l, __ATOMIC_RELAXED))
      fib__spin_step(++spins);
  }
}

/* One try: 1 if the caller now holds the lock (acquire, as
 * fib__spin_lock), 0 if it was held. For a caller that sets up no stack
 * frame for a wait (whose loop calls sched_yield) and goes elsewhere to
 * wait instead. */
static inline int fib__spin_trylock(uint32_t *l) {
  return __builtin_expect(__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE), 0) == 0;
}

static inline void fib__spin_unlock(uint32_t *l) {
  __atomic_store_n(l, 0, __ATOMIC_RELEASE); /* release: publish the section */
}

#endif
