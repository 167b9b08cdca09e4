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
 * So each worker's thread is created bound to one CPU, the next ones that
 * the creating thread may use after the one it runs on, in turn (worker
 * k on the k-th); and its first act is to widen its affinity back to the
 * creator's whole set, the one it would have inherited. It is not pinned:
 * the kernel may move it from then on as it would any thread, it simply
 * starts where nobody else of the runtime runs. Nothing is done if the
 * creator may use one CPU only, or if the kernel will not tell (then the
 * threads start as any thread does). The creating thread itself (worker
 * 0, the caller of fib_run) is left alone.
 */
#ifndef FIB__SCHED_PLACEMENT_H
#define FIB__SCHED_PLACEMENT_H

#include <pthread.h>
#include <sched.h>

struct fib__placement {
  int spread;    /* the threads start spread (the plan below holds) */
  int next;      /* the CPU the last thread was bound to, or the
                    creator's */
  cpu_set_t cpus; /* the creator's affinity: what each thread widens to */
};

/* Plan the start of a group's threads, from the thread that will create
 * them. */
void fib__placement_plan(struct fib__placement *p);

/* Bind *attr (initialized by the caller) to the next thread's CPU: 1 if
 * it did (create the thread with attr), 0 if the threads are not spread
 * (create it without). */
int fib__placement_next(struct fib__placement *p, pthread_attr_t *attr);

/* The first act of a thread created with fib__placement_next's attr:
 * its affinity back to the creator's set. */
void fib__placement_widen(const struct fib__placement *p);

#endif
