/* SPDX-License-Identifier: MIT */
/* placement.c -- where the threads of a multi-worker runtime start
 * (placement.h says why). Every call here is a hint: a failure leaves a
 * thread to start where the kernel puts it, and nothing else. */
#include "placement.h"

void fib__placement_plan(struct fib__placement *p) {
  p->next = sched_getcpu();
  /* A set of at most CPU_SETSIZE CPUs: on a machine with more, the call
   * fails (EINVAL) and the threads start as any thread does. */
  p->spread = p->next >= 0 &&
              sched_getaffinity(0, sizeof p->cpus, &p->cpus) == 0 &&
              CPU_ISSET(p->next, &p->cpus) && CPU_COUNT(&p->cpus) > 1;
}

int fib__placement_next(struct fib__placement *p, pthread_attr_t *attr) {
  if (!p->spread)
    return 0;
  /* the next CPU of the set after the last one, in turn: the set holds
   * the creator's, so the search ends */
  do
    p->next = (p->next + 1) % CPU_SETSIZE;
  while (!CPU_ISSET(p->next, &p->cpus));
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(p->next, &one);
  return pthread_attr_setaffinity_np(attr, sizeof one, &one) == 0;
}

void fib__placement_widen(const struct fib__placement *p) {
  /* Should the creator's set have been narrowed meanwhile (EINVAL), the
   * thread stays on the CPU it started on: it runs all the same. */
  (void)sched_setaffinity(0, sizeof p->cpus, &p->cpus);
}
