/* SPDX-License-Identifier: MIT */
/*
 * worker_pool.c -- a pool of 4 worker fibers takes jobs from a buffered
 * channel; a wait group tells main's fiber when all jobs are done, and a
 * mutex guards the shared totals. Each job "works" by sleeping briefly;
 * the results are printed in job order at the end, so the output does not
 * depend on timing.
 */
#include <fibers.h>

#include <stdio.h>
#include <stdlib.h>

#define WORKERS 4
#define JOBS 12

static fib_chan jobs;
static fib_wg pending;
static fib_mutex totals_lock;
static long results[JOBS], total;
static int done_by[WORKERS];

static void *worker(void *arg) {
  int me = (int)(long)arg;
  long job;
  while (fib_chan_recv(&jobs, &job) == 0) {
    fib_sleep_ns(100000 * (uint64_t)(job % 3)); /* the work */
    results[job] = job * job + 1;
    fib_mutex_lock(&totals_lock);
    total += results[job];
    done_by[me]++;
    fib_mutex_unlock(&totals_lock);
    fib_wg_done(&pending);
  }
  return NULL;
}

static void *boss(void *arg) {
  (void)arg;
  fib_attr detached = {.flags = FIB_DETACHED};
  for (long w = 0; w < WORKERS; w++)
    if (fib_spawn(NULL, worker, (void *)w, &detached, NULL) != 0)
      return NULL;
  fib_wg_add(&pending, JOBS);
  for (long j = 0; j < JOBS; j++)
    fib_chan_send(&jobs, &j);
  fib_wg_wait(&pending);
  fib_chan_close(&jobs); /* the workers' receives fail: they return */
  for (int j = 0; j < JOBS; j++)
    printf("job %2d -> %ld\n", j, results[j]);
  int jobs_done = 0;
  for (int w = 0; w < WORKERS; w++)
    jobs_done += done_by[w];
  printf("%d jobs by %d workers, total %ld\n", jobs_done, WORKERS, total);
  return NULL;
}

int main(void) {
  fib_runtime *rt;
  int err = fib_chan_init(&jobs, sizeof(long), 4);
  if (!err)
    err = fib_wg_init(&pending);
  if (!err)
    err = fib_mutex_init(&totals_lock);
  if (!err)
    err = fib_runtime_create(&rt, NULL);
  if (!err)
    err = fib_spawn(rt, boss, NULL, NULL, NULL);
  if (!err)
    err = fib_run(rt);
  if (err) {
    fprintf(stderr, "worker_pool: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  fib_chan_destroy(&jobs);
  fib_wg_destroy(&pending);
  fib_mutex_destroy(&totals_lock);
  return EXIT_SUCCESS;
}
