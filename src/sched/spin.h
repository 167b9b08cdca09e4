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

static inline void fib__spin_lock(uint32_t *l) {
  /* acquire: what the last holder wrote is visible inside. Test first,
   * then exchange: waiters spin on a shared line, not on a written one. */
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
    while (__atomic_load_n(l, __ATOMIC_RELAXED))
      fib__cpu_relax();
}

static inline void fib__spin_unlock(uint32_t *l) {
  __atomic_store_n(l, 0, __ATOMIC_RELEASE); /* release: publish the section */
}

#endif
