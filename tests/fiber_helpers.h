/*
 * fiber_helpers.h -- small helpers for tests that run code in fibers
 * (harness.h stays independent of the library).
 */
#ifndef FIB__TEST_FIBER_HELPERS_H
#define FIB__TEST_FIBER_HELPERS_H

#include "harness.h"

#include <fibers.h>

#include <stdint.h>

#define MS 1000000ull

/* Run fn(arg) as the only fiber of a fresh runtime, to completion. */
HARNESS_UNUSED static void run_main(fib_fn fn, void *arg) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, fn, arg, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Spawn in the current fiber's runtime; the new fiber's id. */
HARNESS_UNUSED static fib_id spawn(fib_fn fn, void *arg) {
  fib_id id;
  CHECK_OK(fib_spawn(NULL, fn, arg, NULL, &id));
  return id;
}

/* Join and return the fiber's result as an int. */
HARNESS_UNUSED static int join_int(fib_id id) {
  void *r;
  CHECK_OK(fib_join(id, &r));
  return (int)(intptr_t)r;
}

#endif
