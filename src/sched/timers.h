/* SPDX-License-Identifier: MIT */
/*
 * timers.h -- deadlines: a binary min-heap of intrusive timer nodes.
 *
 * Ordered by (deadline, seq): seq is the insertion order, so timers with
 * equal deadlines fire in the order they were started. Inserting never
 * allocates: the owner reserves capacity ahead (the scheduler reserves one
 * slot per fiber at spawn time, where an allocation failure can be
 * reported), so going to sleep cannot fail.
 */
#ifndef FIB__SCHED_TIMERS_H
#define FIB__SCHED_TIMERS_H

#include <stddef.h>
#include <stdint.h>

struct fib__timer {
  uint64_t deadline; /* fib_now_ns() time */
  uint64_t seq;      /* tie-break: insertion order */
  size_t slot;       /* index in the heap while armed */
};

struct fib__timers {
  struct fib__timer **heap;
  size_t count;
  size_t cap;
  uint64_t next_seq;
};

void fib__timers_init(struct fib__timers *t);
void fib__timers_free(struct fib__timers *t);
/* Make room for `n` timers in all. 0 or FIB_ENOMEM. Inline: on every
 * spawn, and nearly always a comparison. */
int fib__timers_grow(struct fib__timers *t, size_t n);
static inline int fib__timers_reserve(struct fib__timers *t, size_t n) {
  return n <= t->cap ? 0 : fib__timers_grow(t, n);
}
/* Arm a timer; the capacity must have been reserved. */
void fib__timers_add(struct fib__timers *t, struct fib__timer *tm,
                     uint64_t deadline);
/* The earliest timer, or NULL. */
static inline struct fib__timer *fib__timers_first(const struct fib__timers *t) {
  return t->count ? t->heap[0] : NULL;
}
/* Disarm the earliest timer. */
void fib__timers_pop(struct fib__timers *t);
/* Disarm any armed timer. */
void fib__timers_remove(struct fib__timers *t, struct fib__timer *tm);

#endif
