/* SPDX-License-Identifier: MIT */
/*
 * fiber_helpers.h -- small helpers for tests that run code in fibers
 * (harness.h stays independent of the library).
 */
#ifndef FIB__TEST_FIBER_HELPERS_H
#define FIB__TEST_FIBER_HELPERS_H

#include "harness.h"

#include <fibers.h>

#include <pthread.h>
#include <stdint.h>

#define MS 1000000ull

/* The thread running the caller now. glibc declares pthread_self const,
 * so within one function the compiler may call it once and reuse the
 * answer after the fiber has moved to another worker (the rule in
 * fibers.h, FIB_MIGRATABLE): every look goes through this call, which
 * cannot be merged. */
__attribute__((noinline)) HARNESS_UNUSED static pthread_t
current_thread(void) {
  pthread_t t = pthread_self();
  __asm__ volatile("" : "+r"(t));
  return t;
}

/* A runtime with the default options, but for its workers: as many as
 * FIB_TEST_WORKERS asks (harness.h; one by default). Every runtime of a
 * suite that tests/CMakeLists.txt runs with several workers is made here
 * or through new_runtime_with, so that one variable reaches them all. */
HARNESS_UNUSED static fib_runtime *new_runtime_with(fib_runtime_opts opts) {
  fib_runtime *rt;
  opts.workers = test_workers();
  CHECK_OK(fib_runtime_create(&rt, &opts));
  return rt;
}

HARNESS_UNUSED static fib_runtime *new_runtime(void) {
  return new_runtime_with((fib_runtime_opts){0});
}

/* The forced mode (FIBERS_FORCE_MIGRATE, read at each runtime's
 * creation) off for a case about what holds without it; forced_mode_back
 * puts it back as it was, so that the cases after it in the same process
 * run forced again. */
HARNESS_UNUSED static char *forced_mode_off(void) {
  const char *e = getenv("FIBERS_FORCE_MIGRATE");
  char *saved = e ? strdup(e) : NULL;
  CHECK(!e || saved != NULL);
  CHECK_OK(unsetenv("FIBERS_FORCE_MIGRATE"));
  return saved;
}

HARNESS_UNUSED static void forced_mode_back(char *saved) {
  if (saved)
    CHECK_OK(setenv("FIBERS_FORCE_MIGRATE", saved, 1));
  free(saved);
}

/* A runtime of exactly n workers, whatever FIB_TEST_WORKERS says: for the
 * suites about workers themselves. */
HARNESS_UNUSED static fib_runtime *new_workers(unsigned n) {
  fib_runtime_opts opts = {0};
  opts.workers = n;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  return rt;
}

/* Run rt until no fiber is left, then destroy it. */
HARNESS_UNUSED static void run_to_end(fib_runtime *rt) {
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Run fn(arg) as the only fiber of a fresh runtime, to completion; attr
 * may be NULL. */
HARNESS_UNUSED static void run_main_with(fib_fn fn, void *arg,
                                         const fib_attr *attr) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, fn, arg, attr, NULL));
  run_to_end(rt);
}

HARNESS_UNUSED static void run_main(fib_fn fn, void *arg) {
  run_main_with(fn, arg, NULL);
}

/* Spawn in the current fiber's runtime; the new fiber's id. */
HARNESS_UNUSED static fib_id spawn(fib_fn fn, void *arg) {
  fib_id id;
  CHECK_OK(fib_spawn(NULL, fn, arg, NULL, &id));
  return id;
}

/* n rounds of busy work that the compiler cannot drop (a volatile
 * sink): CPU time for a fiber to hold, e.g. so that stealing pays. */
HARNESS_UNUSED static void spin(unsigned n) {
  volatile unsigned sink = 0;
  for (unsigned i = 0; i < n; i++)
    sink = sink + i;
}

/* Join and return the fiber's result as an int. */
HARNESS_UNUSED static int join_int(fib_id id) {
  void *r;
  CHECK_OK(fib_join(id, &r));
  return (int)(intptr_t)r;
}

#endif
