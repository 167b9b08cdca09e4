/* SPDX-License-Identifier: MIT */
/*
 * gdb_fibers_target.c -- the debuggee of the gdb_fibers test
 * (gdb_fibers.sh): fibers suspended in known functions when debug_stop()
 * is called, for `info fibers` and `fiber bt`, live and in a core file.
 *
 * Runtime A (run on the main thread):
 *   1 "alpha"    blocked in alpha_wait (fib_sem_wait)
 *   2 "beta"     sleeping in beta_sleep (fib_sleep_ns)
 *   3 "gamma"    ready, in gamma_spin (fib_yield), with a deep stack
 *   4 "stopper"  running: calls debug_stop(), where the breakpoint is
 * Runtime B (created, never run while stopped):
 *   1 "epsilon"  ready, never started; unguarded (FIB_GUARD_NONE), so its
 *                high-water mark must leave out the canary at its bottom
 * After debug_stop everything finishes. Then runtime C, with 2 workers
 * (each a runtime in the listing: C's handle, then its worker 1):
 *   C 1 "eta"   on worker 1 (fib_attr.worker): running, calls
 *               debug_stop_workers() once zeta waits
 *   W 2 "zeta"  spawned by eta, so its record is in worker 1's map: blocked
 *               in zeta_wait (fib_sem_wait), whichever worker it runs on
 * and the program exits 0.
 * `gdb_fibers_target mprotect` uses mprotect guards instead of the default.
 */
#include <fibers.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static fib_sem sem;
static volatile int stop_spinning;
static volatile int sink;

void debug_stop(void); /* global: the breakpoint's name is stable */
__attribute__((noinline)) void debug_stop(void) { sink++; }
void debug_stop_workers(void);
__attribute__((noinline)) void debug_stop_workers(void) { sink++; }

__attribute__((noinline)) static void alpha_wait(void) {
  if (fib_sem_wait(&sem) != 0)
    sink = -1;
}

static void *alpha(void *arg) {
  (void)arg;
  alpha_wait();
  return NULL;
}

__attribute__((noinline)) static void beta_sleep(void) {
  (void)fib_sleep_ns(60ull * 1000000000u); /* cancelled long before */
}

static void *beta(void *arg) {
  (void)arg;
  beta_sleep();
  return NULL;
}

/* Not ASan-instrumented: its array must be on the fiber's own stack. */
__attribute__((noinline, no_sanitize("address"))) static void
gamma_spin(void) {
  volatile char deep[20000]; /* the high-water mark shows it */
  memset((char *)deep, 1, sizeof deep);
  while (!stop_spinning)
    fib_yield();
  sink = deep[0];
}

static void *gamma_fn(void *arg) {
  (void)arg;
  gamma_spin();
  return NULL;
}

static void *stopper(void *arg) {
  fib_id beta_id = (fib_id)(uintptr_t)arg;
  fib_yield(); /* let the others reach their waits */
  debug_stop();
  stop_spinning = 1;
  fib_sem_post(&sem);
  fib_cancel(NULL, beta_id);
  return NULL;
}

static void *epsilon(void *arg) {
  (void)arg;
  return NULL;
}

/* Runtime C: a fiber of worker 1's map waiting while gdb looks. */
static fib_sem zeta_sem;
static int zeta_waits; /* atomic: zeta and eta may run on two threads */

__attribute__((noinline)) static void zeta_wait(void) {
  __atomic_store_n(&zeta_waits, 1, __ATOMIC_SEQ_CST);
  if (fib_sem_wait(&zeta_sem) != 0)
    sink = -1;
}

static void *zeta(void *arg) {
  (void)arg;
  zeta_wait();
  return NULL;
}

static void *eta(void *arg) {
  (void)arg;
  fib_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.name = "zeta";
  fib_id zeta_id;
  if (fib_spawn(NULL, zeta, NULL, &attr, &zeta_id) != 0) {
    sink = -1;
    return NULL;
  }
  while (!__atomic_load_n(&zeta_waits, __ATOMIC_SEQ_CST))
    fib_yield();
  fib_sleep_ns(20 * 1000000u); /* from the flag into the wait */
  debug_stop_workers();
  fib_sem_post(&zeta_sem);
  if (fib_join(zeta_id, NULL) != 0)
    sink = -1;
  return NULL;
}

static int run_workers(void) {
  fib_runtime_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.workers = 2;
  fib_runtime *c;
  if (fib_runtime_create(&c, &opts) != 0)
    return 1;
  int bad = fib_sem_init(&zeta_sem, 0) != 0; /* shared: C exists */
  fib_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.name = "eta";
  attr.worker = 2;
  bad = bad || fib_spawn(c, eta, NULL, &attr, NULL) != 0 || fib_run(c) != 0;
  fib_runtime_destroy(c);
  fib_sem_destroy(&zeta_sem);
  return bad;
}

static int check(int err, const char *what) {
  if (err)
    fprintf(stderr, "gdb_fibers_target: %s: %s\n", what, fib_strerror(err));
  return err != 0;
}

int main(int argc, char **argv) {
  /* "mprotect": guards that gcore can step around (it cannot read a
   * mapping with MADV_GUARD_INSTALL markers inside; see docs/safety.md) */
  fib_runtime_opts opts;
  memset(&opts, 0, sizeof opts);
  if (argc > 1 && strcmp(argv[1], "mprotect") == 0)
    opts.guard = FIB_GUARD_MPROTECT;
  fib_runtime *a, *b;
  fib_id beta_id;
  int bad = check(fib_runtime_create(&a, &opts), "create a") ||
            check(fib_runtime_create(&b, &opts), "create b") ||
            check(fib_sem_init(&sem, 0), "sem");
  if (bad)
    return 1;
  fib_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.name = "alpha";
  bad |= check(fib_spawn(a, alpha, NULL, &attr, NULL), "spawn alpha");
  attr.name = "beta";
  bad |= check(fib_spawn(a, beta, NULL, &attr, &beta_id), "spawn beta");
  attr.name = "gamma";
  bad |= check(fib_spawn(a, gamma_fn, NULL, &attr, NULL), "spawn gamma");
  attr.name = "stopper";
  bad |= check(fib_spawn(a, stopper, (void *)(uintptr_t)beta_id, &attr, NULL),
               "spawn stopper");
  attr.name = "epsilon";
  attr.guard = FIB_GUARD_NONE;
  bad |= check(fib_spawn(b, epsilon, NULL, &attr, NULL), "spawn epsilon");
  bad |= check(fib_run(a), "run a") || check(fib_run(b), "run b");
  bad |= check(fib_runtime_destroy(a), "destroy a") ||
         check(fib_runtime_destroy(b), "destroy b");
  bad |= run_workers();
  return bad || sink < 0;
}
