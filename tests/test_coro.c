/* SPDX-License-Identifier: MIT */
/* test_coro.c -- the coroutine layer on its own: generators, nesting,
 * status, values, early destroy. */
#include "harness.h"

#include <fibers.h>

#include <pthread.h>
#include <stdint.h>

static void *count_to(void *arg, void *first) {
  (void)first;
  intptr_t n = (intptr_t)arg;
  for (intptr_t i = 0; i < n; i++)
    CHECK_OK(fib_coro_yield((void *)i, NULL));
  return (void *)(intptr_t)-1;
}

TEST(generator_yields_in_order_then_returns) {
  fib_coro *co;
  void *v;
  CHECK_OK(fib_coro_create(&co, count_to, (void *)(intptr_t)5, NULL));
  CHECK_EQ(fib_coro_status(co), FIB_CORO_SUSPENDED);
  for (intptr_t i = 0; i < 5; i++) {
    CHECK_OK(fib_coro_resume(co, NULL, &v));
    CHECK_EQ((intptr_t)v, i);
    CHECK_EQ(fib_coro_status(co), FIB_CORO_SUSPENDED);
  }
  CHECK_OK(fib_coro_resume(co, NULL, &v));
  CHECK_EQ((intptr_t)v, -1);
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_EQ(fib_coro_resume(co, NULL, &v), FIB_EINVAL); /* dead */
  CHECK_OK(fib_coro_destroy(co));
}

static void *first_value(void *arg, void *first) {
  (void)arg;
  return first;
}

TEST(first_resume_value_reaches_the_function) {
  fib_coro *co;
  void *v = NULL;
  CHECK_OK(fib_coro_create(&co, first_value, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, (void *)0x77, &v));
  CHECK_PTR_EQ(v, (void *)0x77);
  CHECK_OK(fib_coro_destroy(co));
}

struct nest {
  fib_coro *outer, *inner;
  int inner_saw_outer_normal;
};

static void *inner_body(void *arg, void *first) {
  (void)first;
  struct nest *n = arg;
  CHECK_PTR_EQ(fib_coro_current(), n->inner);
  n->inner_saw_outer_normal = fib_coro_status(n->outer) == FIB_CORO_NORMAL;
  CHECK_EQ(fib_coro_status(n->inner), FIB_CORO_RUNNING);
  /* resuming the coroutine that resumed us: it is busy */
  CHECK_EQ(fib_coro_resume(n->outer, NULL, NULL), FIB_EBUSY);
  CHECK_EQ(fib_coro_resume(n->inner, NULL, NULL), FIB_EBUSY);
  CHECK_EQ(fib_coro_destroy(n->outer), FIB_EBUSY);
  CHECK_OK(fib_coro_yield((void *)1, NULL)); /* back to outer, not main */
  return (void *)2;
}

static void *outer_body(void *arg, void *first) {
  (void)first;
  struct nest *n = arg;
  void *v;
  CHECK_OK(fib_coro_create(&n->inner, inner_body, n, NULL));
  CHECK_OK(fib_coro_resume(n->inner, NULL, &v));
  CHECK_EQ((intptr_t)v, 1);
  CHECK_PTR_EQ(fib_coro_current(), n->outer);
  CHECK_OK(fib_coro_yield((void *)10, NULL));
  CHECK_OK(fib_coro_resume(n->inner, NULL, &v));
  CHECK_EQ((intptr_t)v, 2);
  CHECK_OK(fib_coro_destroy(n->inner));
  return (void *)20;
}

TEST(coroutines_nest_and_yield_to_their_resumer) {
  struct nest n = {0};
  void *v;
  CHECK_PTR_EQ(fib_coro_current(), NULL);
  CHECK_OK(fib_coro_create(&n.outer, outer_body, &n, NULL));
  CHECK_OK(fib_coro_resume(n.outer, NULL, &v));
  CHECK_EQ((intptr_t)v, 10);
  CHECK_EQ(n.inner_saw_outer_normal, 1);
  CHECK_PTR_EQ(fib_coro_current(), NULL);
  CHECK_OK(fib_coro_resume(n.outer, NULL, &v));
  CHECK_EQ((intptr_t)v, 20);
  CHECK_OK(fib_coro_destroy(n.outer));
}

static void *forever(void *arg, void *first) {
  (void)arg;
  (void)first;
  for (;;)
    CHECK_OK(fib_coro_yield(NULL, NULL));
  return NULL; /* not reached */
}

TEST(suspended_coroutine_can_be_destroyed) {
  for (int i = 0; i < 1000; i++) {
    fib_coro *co;
    CHECK_OK(fib_coro_create(&co, forever, NULL, NULL));
    CHECK_OK(fib_coro_resume(co, NULL, NULL));
    CHECK_OK(fib_coro_destroy(co)); /* never finishes; stack discarded */
  }
}

TEST(custom_stack_size_is_usable) {
  fib_attr attr = {.stack_size = 1u << 20};
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, count_to, (void *)(intptr_t)1, &attr));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

static void *deep(void *arg, void *first) {
  (void)first;
  /* use most of a 256 KiB stack: it is really there */
  volatile char big[200 * 1024];
  for (size_t i = 0; i < sizeof big; i += 512)
    big[i] = (char)i;
  *(int *)arg = big[512];
  return NULL;
}

TEST(large_frames_fit_in_a_large_stack) {
  int out = 0;
  fib_attr attr = {.stack_size = 256 * 1024};
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, deep, &out, &attr));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(out, (char)512);
  CHECK_OK(fib_coro_destroy(co));
}

TEST(yield_outside_a_coroutine_is_refused) {
  void *in = (void *)1;
  CHECK_EQ(fib_coro_yield(NULL, &in), FIB_EPERM);
  CHECK_PTR_EQ(in, (void *)1);
}

TEST(bad_arguments_are_refused) {
  fib_coro *co = NULL;
  CHECK_EQ(fib_coro_create(NULL, count_to, NULL, NULL), FIB_EINVAL);
  CHECK_EQ(fib_coro_create(&co, NULL, NULL, NULL), FIB_EINVAL);
  fib_attr small = {.stack_size = 1024};
  CHECK_EQ(fib_coro_create(&co, count_to, NULL, &small), FIB_EINVAL);
  fib_attr huge = {.stack_size = (size_t)1 << 40};
  CHECK_EQ(fib_coro_create(&co, count_to, NULL, &huge), FIB_EINVAL);
  fib_attr detached = {.flags = FIB_DETACHED}; /* a fiber-only flag */
  CHECK_EQ(fib_coro_create(&co, count_to, NULL, &detached), FIB_EINVAL);
  fib_attr bad_guard = {.guard = (fib_guard_mode)99};
  CHECK_EQ(fib_coro_create(&co, count_to, NULL, &bad_guard), FIB_EINVAL);
  CHECK_PTR_EQ(co, NULL);
  CHECK_EQ(fib_coro_resume(NULL, NULL, NULL), FIB_EINVAL);
  CHECK_EQ(fib_coro_status(NULL), FIB_EINVAL);
  CHECK_EQ(fib_coro_destroy(NULL), FIB_EINVAL);
}

static void *hop_body(void *arg, void *first) {
  (void)first;
  int *hops = arg;
  while (*hops > 0) {
    (*hops)--;
    CHECK_OK(fib_coro_yield(NULL, NULL));
  }
  return NULL;
}

static void *resume_until_dead(void *co) {
  while (fib_coro_status(co) != FIB_CORO_DEAD)
    CHECK_OK(fib_coro_resume(co, NULL, NULL));
  return NULL;
}

TEST(coroutine_can_move_between_threads) {
  /* created and started here, finished by another OS thread: allowed, as
   * long as one thread at a time resumes it */
  int hops = 5;
  fib_coro *co;
  pthread_t t;
  CHECK_OK(fib_coro_create(&co, hop_body, &hops, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(pthread_create(&t, NULL, resume_until_dead, co), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(hops, 0);
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

TEST_MAIN(T(generator_yields_in_order_then_returns),
          T(first_resume_value_reaches_the_function),
          T(coroutines_nest_and_yield_to_their_resumer),
          T(suspended_coroutine_can_be_destroyed),
          T(custom_stack_size_is_usable),
          T(large_frames_fit_in_a_large_stack),
          T(yield_outside_a_coroutine_is_refused),
          T(bad_arguments_are_refused),
          T(coroutine_can_move_between_threads))
