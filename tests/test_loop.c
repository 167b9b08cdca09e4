/* SPDX-License-Identifier: MIT */
/* test_loop.c -- the runtime inside a program's own loop: fib_run_nowait
 * and fib_run_once run one bounded round, fib_runtime_next_ns says when to
 * come back, fib_run_join waits for one fiber from outside. */
#include "fiber_helpers.h"

#include <fibers.h>

#include <stdint.h>

/* Each fiber counts its turns; it gives way after each, `turns` times. */
struct counter {
  int turns;
  int seen;
};

static void *count_turns(void *arg) {
  struct counter *c = arg;
  for (int i = 0; i < c->turns; i++) {
    c->seen++;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(nowait_runs_each_ready_fiber_once_per_call) {
  fib_runtime *rt;
  struct counter c[3] = {{5, 0}, {5, 0}, {5, 0}};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, count_turns, &c[i], NULL, NULL));
  for (int round = 1; round <= 5; round++) {
    CHECK_EQ(fib_run_nowait(rt), 3); /* none has finished yet */
    for (int i = 0; i < 3; i++)
      CHECK_EQ(c[i].seen, round);
  }
  CHECK_EQ(fib_run_nowait(rt), 0); /* the last turns: they return */
  CHECK_EQ(fib_run_nowait(rt), 0); /* nothing left: at once */
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *spawner(void *arg) {
  struct counter *c = arg;
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(NULL, count_turns, c, NULL, NULL));
  CHECK_OK(fib_yield());
  return NULL;
}

TEST(a_round_ends_even_if_fibers_keep_spawning) {
  /* The round began with one fiber: one turn is all it may take, though
   * the spawned children run first (work-first) and are ready. */
  fib_runtime *rt;
  struct counter children = {1000, 0};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, spawner, &children, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 4);
  CHECK_EQ(children.seen, 0); /* the spawner's turn was the round */
  /* Four turns: the children (spawned to the front) one each, then the
   * spawner, which returns. */
  CHECK_EQ(fib_run_nowait(rt), 3);
  CHECK_EQ(children.seen, 3);
  CHECK_OK(fib_runtime_destroy(rt)); /* discards the rest */
}

static fib_sem sem;

static void *wait_for_post(void *arg) {
  (void)arg;
  CHECK_OK(fib_sem_wait(&sem));
  return (void *)(intptr_t)3;
}

TEST(nowait_leaves_waiters_for_the_program_to_wake) {
  fib_runtime *rt;
  CHECK_OK(fib_sem_init(&sem, 0));
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_EQ(fib_runtime_next_ns(rt), UINT64_MAX); /* nothing at all */
  CHECK_OK(fib_spawn(rt, wait_for_post, NULL, NULL, NULL));
  CHECK_EQ(fib_runtime_next_ns(rt), 0); /* spawned: ready now */
  CHECK_EQ(fib_run_nowait(rt), 1); /* parked: not an error here */
  CHECK_EQ(fib_run_once(rt), 1);   /* nothing to sleep for: returns */
  CHECK_EQ(fib_runtime_next_ns(rt), UINT64_MAX);
  CHECK_OK(fib_sem_post(&sem)); /* from main, outside any fiber */
  CHECK_EQ(fib_runtime_next_ns(rt), 0);
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&sem));
}

static void *sleep_long(void *arg) {
  (void)arg;
  return (void *)(intptr_t)fib_sleep_ns(3600ull * 1000 * MS);
}

TEST(nowait_never_sleeps_and_next_ns_is_the_deadline) {
  fib_runtime *rt;
  fib_id id;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, sleep_long, NULL, NULL, &id));
  uint64_t before = fib_now_ns();
  CHECK_EQ(fib_run_nowait(rt), 1); /* asleep for an hour: no wait here */
  CHECK_EQ(fib_run_nowait(rt), 1);
  uint64_t next = fib_runtime_next_ns(rt);
  CHECK(next >= before + 3599ull * 1000 * MS);
  CHECK(next != UINT64_MAX);
  CHECK_OK(fib_cancel(rt, id)); /* wakes it: its sleep returns at once */
  CHECK_EQ(fib_runtime_next_ns(rt), 0);
  void *r;
  CHECK_OK(fib_run_join(rt, id, &r));
  CHECK_EQ((intptr_t)r, FIB_ECANCELED);
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *sleep_briefly(void *arg) {
  (void)arg;
  CHECK_OK(fib_sleep_ns(20 * MS));
  return NULL;
}

TEST(once_sleeps_until_the_earliest_deadline_then_runs) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, sleep_briefly, NULL, NULL, NULL));
  CHECK_EQ(fib_run_once(rt), 1); /* its first turn: it goes to sleep */
  uint64_t deadline = fib_runtime_next_ns(rt);
  CHECK(deadline != 0 && deadline != UINT64_MAX);
  CHECK_EQ(fib_run_once(rt), 0); /* waits for the deadline, then runs it */
  CHECK(fib_now_ns() >= deadline);
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- fib_run_join */

static void *answer(void *arg) {
  CHECK_OK(fib_yield());
  return arg;
}

static fib_id awaited_id;

static void *try_to_join_the_awaited(void *arg) {
  (void)arg;
  CHECK_EQ(fib_join(awaited_id, NULL), FIB_EINVAL); /* main joins it */
  CHECK_EQ(fib_detach(NULL, awaited_id), FIB_EINVAL);
  return NULL;
}

TEST(run_join_waits_for_one_fiber_and_leaves_the_rest) {
  fib_runtime *rt;
  struct counter busy = {1000, 0};
  fib_id busy_id;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, answer, (void *)(intptr_t)42, NULL, &awaited_id));
  CHECK_OK(fib_spawn(rt, count_turns, &busy, NULL, &busy_id));
  CHECK_OK(fib_spawn(rt, try_to_join_the_awaited, NULL, NULL, NULL));
  void *r = NULL;
  CHECK_OK(fib_run_join(rt, awaited_id, &r));
  CHECK_EQ((intptr_t)r, 42);
  CHECK(busy.seen < 1000); /* it stopped when the answer came */
  CHECK_EQ(fib_run_join(rt, awaited_id, NULL), FIB_ESRCH); /* collected */
  CHECK_OK(fib_run_join(rt, busy_id, NULL));
  CHECK_EQ(busy.seen, 1000);
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

static fib_runtime *the_rt;

static void *run_join_from_a_fiber(void *arg) {
  (void)arg;
  CHECK_EQ(fib_run_join(the_rt, fib_self(), NULL), FIB_EBUSY);
  return NULL;
}

TEST(run_join_errors) {
  fib_runtime *rt;
  fib_id waiter, detached;
  CHECK_EQ(fib_run_join(NULL, 1, NULL), FIB_EINVAL);
  CHECK_OK(fib_sem_init(&sem, 0));
  CHECK_OK(fib_runtime_create(&rt, NULL));
  the_rt = rt;
  CHECK_EQ(fib_run_join(rt, 99, NULL), FIB_ESRCH);
  fib_attr det = {.flags = FIB_DETACHED};
  CHECK_OK(fib_spawn(rt, answer, NULL, &det, &detached));
  CHECK_EQ(fib_run_join(rt, detached, NULL), FIB_EINVAL);
  CHECK_OK(fib_spawn(rt, run_join_from_a_fiber, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, wait_for_post, NULL, NULL, &waiter));
  CHECK_EQ(fib_run_join(rt, waiter, NULL), FIB_EDEADLK); /* nobody posts */
  CHECK_OK(fib_sem_post(&sem));
  void *r;
  CHECK_OK(fib_run_join(rt, waiter, &r)); /* still joinable */
  CHECK_EQ((intptr_t)r, 3);
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&sem));
}

TEST(runs_refuse_a_runtime_already_running) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  the_rt = rt;
  CHECK_OK(fib_spawn(rt, run_join_from_a_fiber, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(fib_run_once(NULL), FIB_EINVAL);
  CHECK_EQ(fib_run_nowait(NULL), FIB_EINVAL);
  CHECK_EQ(fib_runtime_next_ns(NULL), 0);
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST_MAIN(T(nowait_runs_each_ready_fiber_once_per_call),
          T(a_round_ends_even_if_fibers_keep_spawning),
          T(nowait_leaves_waiters_for_the_program_to_wake),
          T(nowait_never_sleeps_and_next_ns_is_the_deadline),
          T(once_sleeps_until_the_earliest_deadline_then_runs),
          T(run_join_waits_for_one_fiber_and_leaves_the_rest),
          T(run_join_errors), T(runs_refuse_a_runtime_already_running))
