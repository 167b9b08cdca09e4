/* SPDX-License-Identifier: MIT */
/* timers.c -- the deadline heap, and the clock deadlines are read on. */
#include "timers.h"
#include "fiber.h"
#include "../sys.h"
#include "fibers.h"

#include <time.h>

static int earlier(const struct fib__timer *a, const struct fib__timer *b) {
  return a->deadline != b->deadline ? a->deadline < b->deadline
                                    : a->seq < b->seq;
}

static void place(struct fib__timers *t, size_t i, struct fib__timer *tm) {
  t->heap[i] = tm;
  tm->slot = i;
}

static void sift_up(struct fib__timers *t, size_t i) {
  struct fib__timer *tm = t->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(tm, t->heap[parent]))
      break;
    place(t, i, t->heap[parent]);
    i = parent;
  }
  place(t, i, tm);
}

static void sift_down(struct fib__timers *t, size_t i) {
  struct fib__timer *tm = t->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= t->count)
      break;
    if (child + 1 < t->count && earlier(t->heap[child + 1], t->heap[child]))
      child++;
    if (!earlier(t->heap[child], tm))
      break;
    place(t, i, t->heap[child]);
    i = child;
  }
  place(t, i, tm);
}

void fib__timers_init(struct fib__timers *t) {
  t->heap = NULL;
  t->count = t->cap = 0;
  t->next_seq = 0;
}

void fib__timers_free(struct fib__timers *t) {
  fib__sys_free(t->heap);
  fib__timers_init(t);
}

int fib__timers_grow(struct fib__timers *t, size_t n) {
  size_t cap = t->cap ? t->cap : 16;
  while (cap < n)
    cap *= 2;
  struct fib__timer **heap = fib__sys_realloc(t->heap, cap * sizeof *heap);
  if (!heap)
    return FIB_ENOMEM;
  t->heap = heap;
  t->cap = cap;
  return 0;
}

void fib__timers_add(struct fib__timers *t, struct fib__timer *tm,
                     uint64_t deadline) {
  tm->deadline = deadline;
  tm->seq = t->next_seq++;
  t->heap[t->count++] = tm;
  sift_up(t, t->count - 1);
}

void fib__timers_pop(struct fib__timers *t) { fib__timers_remove(t, t->heap[0]); }

void fib__timers_remove(struct fib__timers *t, struct fib__timer *tm) {
  size_t i = tm->slot;
  struct fib__timer *last = t->heap[--t->count];
  if (i == t->count)
    return; /* it was the last one */
  t->heap[i] = last;
  last->slot = i;
  /* the moved timer may belong above or below its new place */
  if (i > 0 && earlier(last, t->heap[(i - 1) / 2]))
    sift_up(t, i);
  else
    sift_down(t, i);
}

/* The clock deadlines are measured on (fibers.h). */
uint64_t fib_now_ns(void) {
  const struct fib_runtime *rt = fib__tl_runtime;
  if (__builtin_expect(rt && rt->seeded, 0))
    return rt->vnow; /* the seeded mode's virtual clock (seed.h) */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
