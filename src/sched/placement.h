/* SPDX-License-Identifier: MIT */
/*
 * placement.h -- where the threads of a multi-worker runtime start.
 *
 * A new thread starts on a CPU the kernel picks, and a thread woken from a
 * futex goes back where it last ran unless the kernel sees an idle CPU
 * that shares a cache with it. Where it sees none (a virtual machine that
 * describes no shared cache between its CPUs, a machine of several
 * sockets), a worker's thread can start on its creator's CPU and stay
 * there, the two workers taking turns on one CPU while another is idle,
 * until the load balancer moves one of them milliseconds later. On the
 * reference machine (two vCPUs, no shared cache described) that was
 * 8-16 ms of a 37 ms two-worker skynet, every run.
 *
 * So each worker's thread, as its first act, binds itself to one CPU,
 * the k-th that the creating thread may use after the one it ran on
 * (worker k; in turn, round the set), which moves it there at once, and
 * then widens its affinity back to the creator's whole set, the one it
 * inherited. It is not pinned: the kernel may move it from then on as it
 * would any thread, it simply starts where nobody else of the runtime
 * runs. Nothing is done if the creator may use one CPU only, or if the
 * kernel will not tell (then the threads stay where they start). The
 * creating thread itself (worker 0, the caller of fib_run) is left alone.
 */
#ifndef FIB__SCHED_PLACEMENT_H
#define FIB__SCHED_PLACEMENT_H

#include <sched.h>

struct fib__placement {
  int spread;     /* the threads start spread (the plan below holds) */
  int creator;    /* the CPU the creating thread ran on */
  cpu_set_t cpus; /* the creator's affinity: what each thread widens to */
};

/* Plan the start of a group's threads, from the thread that will create
 * them, before it does. */
void fib__placement_plan(struct fib__placement *p);

/* The CPU worker k (k >= 1) starts on: the k-th of the set after the
 * creator's, in turn; -1 if the threads are not spread. */
int fib__placement_cpu(const struct fib__placement *p, unsigned k);

/* The first act of worker k's thread: onto its CPU, then its affinity
 * back to the creator's set. */
void fib__placement_enter(const struct fib__placement *p, unsigned k);

#endif
