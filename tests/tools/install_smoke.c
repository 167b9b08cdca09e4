/* SPDX-License-Identifier: MIT */
/*
 * install_smoke.c -- built by install_check.sh against an *installed* copy
 * of fibers (pkg-config, and find_package(fibers CONFIG)), shared and
 * static. Uses only the public header. Exit 0 means it all worked.
 */
#include <fibers.h>

#include <stdint.h>
#include <stdio.h>

#define SMOKE_CHECK(cond)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "install_smoke: check failed: %s (line %d)\n", #cond,    \
              __LINE__);                                                       \
      return 1;                                                                \
    }                                                                          \
  } while (0)

#define SMOKE_CHECK_P(cond)                                                    \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "install_smoke: check failed: %s (line %d)\n", #cond,    \
              __LINE__);                                                       \
      failed = 1;                                                              \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

static int failed = 1; /* cleared by the parent fiber when all went well */
static int trace[8];
static int trace_len;

/* Sum 1..n, yielding after every step so the two workers interleave. */
static void *worker(void *arg) {
  intptr_t n = (intptr_t)arg, sum = 0;
  for (intptr_t i = 1; i <= n; i++) {
    sum += i;
    if (trace_len < 8)
      trace[trace_len++] = (int)n;
    if (fib_yield() != 0)
      return NULL;
  }
  return (void *)sum;
}

static void *parent(void *arg) {
  (void)arg;
  fib_id a, b;
  void *ra = NULL, *rb = NULL;
  SMOKE_CHECK_P(fib_self() == 1);
  SMOKE_CHECK_P(fib_spawn(NULL, worker, (void *)(intptr_t)3, NULL, &a) == 0);
  SMOKE_CHECK_P(fib_spawn(NULL, worker, (void *)(intptr_t)4, NULL, &b) == 0);
  SMOKE_CHECK_P(a == 2 && b == 3);
  SMOKE_CHECK_P(fib_join(a, &ra) == 0);
  SMOKE_CHECK_P(fib_join(b, &rb) == 0);
  SMOKE_CHECK_P((intptr_t)ra == 6);
  SMOKE_CHECK_P((intptr_t)rb == 10);
  SMOKE_CHECK_P(fib_join(a, NULL) == FIB_ESRCH);
  failed = 0;
  return NULL;
}

int main(void) {
  SMOKE_CHECK(fib_version() == FIB_VERSION_MAJOR * 10000 +
                                   FIB_VERSION_MINOR * 100 + FIB_VERSION_PATCH);
  fib_runtime *rt;
  SMOKE_CHECK(fib_runtime_create(&rt, NULL) == 0);
  SMOKE_CHECK(fib_spawn(rt, parent, NULL, NULL, NULL) == 0);
  SMOKE_CHECK(fib_run(rt) == 0);
  /* the I/O layer links too (with io_uring: liburing, which a static link
   * takes from the .pc file's Libs.private or the CMake package) */
  SMOKE_CHECK(fib_runtime_io_backend(rt) != NULL);
  SMOKE_CHECK(fib_runtime_destroy(rt) == 0);
  SMOKE_CHECK(failed == 0);
  /* The workers alternated in spawn order (fibers spawned by a fiber run
   * first, in the order they were spawned): 3 4 3 4 3 4 4. */
  static const int want[] = {3, 4, 3, 4, 3, 4, 4};
  SMOKE_CHECK(trace_len == 7);
  for (int i = 0; i < 7; i++)
    SMOKE_CHECK(trace[i] == want[i]);
  printf("install_smoke: ok (fibers %d)\n", fib_version());
  return 0;
}
