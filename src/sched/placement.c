/* SPDX-License-Identifier: MIT */
/* placement.c -- where the threads of a multi-worker runtime start
 * (placement.h says why). Every call here is a hint: a failure leaves a
 * thread where the kernel put it, and nothing else. */
#include "placement.h"

void fib__placement_plan(struct fib__placement *p) {
  p->creator = sched_getcpu();
  /* A set of at most CPU_SETSIZE CPUs: on a machine with more, the call
   * fails (EINVAL) and the threads stay where they start. */
  p->spread = p->creator >= 0 &&
              sched_getaffinity(0, sizeof p->cpus, &p->cpus) == 0 &&
              CPU_ISSET(p->creator, &p->cpus) && CPU_COUNT(&p->cpus) > 1;
}

int fib__placement_cpu(const struct fib__placement *p, unsigned k) {
  if (!p->spread)
    return -1;
  /* k steps through the set from the creator's CPU, which is in it, so
   * each step ends */
  int cpu = p->creator;
  for (unsigned i = 0; i < k; i++)
    do
      cpu = (cpu + 1) % CPU_SETSIZE;
    while (!CPU_ISSET(cpu, &p->cpus));
  return cpu;
}

void fib__placement_enter(const struct fib__placement *p, unsigned k) {
  int cpu = fib__placement_cpu(p, k);
  if (cpu < 0)
    return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  /* The kernel moves a thread off a CPU its new set leaves out at once;
   * widened again, it has no reason to move it back. Should the
   * creator's set have been narrowed meanwhile (EINVAL), the thread stays
   * where it is: it runs all the same. */
  if (sched_setaffinity(0, sizeof one, &one) == 0)
    (void)sched_setaffinity(0, sizeof p->cpus, &p->cpus);
}
