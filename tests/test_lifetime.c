/* SPDX-License-Identifier: MIT */
/* test_lifetime.c -- misuse that must neither strand a fiber nor touch
 * freed memory: the coroutine API kept off a fiber's own context, a
 * runtime destroyed with fibers parked on primitives, a fiber that
 * finishes holding a mutex or inside a fib_once, the wait group's counter
 * at its limits, and the reserved fields of the public structs. */
#include "fiber_helpers.h"

#include <fibers.h>

#include "coro.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------- a fiber's own coroutine is private */

static void *yield_in_body(void *arg) {
  (void)arg;
  CHECK_PTR_EQ(fib_coro_current(), NULL); /* not handed out */
  CHECK_EQ(fib_coro_yield(NULL, NULL), FIB_EPERM);
  return (void *)(intptr_t)7;
}

TEST(coro_yield_in_a_fiber_body_is_refused) {
  /* It used to switch to the scheduler loop and strand the fiber, and
   * fib_run reported a false deadlock. */
  fib_runtime *rt;
  fib_id id;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, yield_in_body, NULL, NULL, &id));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Atomic, and each side waits for the other: with several workers the
 * two fibers may run side by side, and the victim must outlive the pokes
 * (with one worker neither loop turns: one yield each). */
static _Atomic(fib_coro *) victim_context;
static atomic_int victim_poked;

static void *park_forever_ish(void *arg) {
  (void)arg;
  atomic_store(&victim_context, fib__coro_self()); /* what a user could once
                                                      obtain */
  do
    CHECK_OK(fib_yield());
  while (!atomic_load(&victim_poked));
  return NULL;
}

static void *poke_other_context(void *arg) {
  (void)arg;
  while (!atomic_load(&victim_context))
    CHECK_OK(fib_yield());
  fib_coro *victim = atomic_load(&victim_context);
  CHECK_EQ(fib_coro_resume(victim, NULL, NULL), FIB_EPERM);
  CHECK_EQ(fib_coro_destroy(victim), FIB_EPERM);
  atomic_store(&victim_poked, 1);
  return NULL;
}

TEST(resume_or_destroy_of_a_fibers_context_is_refused) {
  fib_runtime *rt;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, park_forever_ish, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, poke_other_context, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *inner_coro(void *arg, void *first) {
  (void)first;
  CHECK_PTR_EQ(fib_coro_current(), *(fib_coro **)arg);
  CHECK_OK(fib_coro_yield((void *)(intptr_t)1, NULL));
  return (void *)(intptr_t)2;
}

static void *fiber_with_a_coroutine(void *arg) {
  (void)arg;
  fib_coro *co;
  void *out = NULL;
  CHECK_OK(fib_coro_create(&co, inner_coro, &co, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((intptr_t)out, 1);
  CHECK_PTR_EQ(fib_coro_current(), NULL); /* back in the fiber's body */
  CHECK_OK(fib_yield());
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((intptr_t)out, 2);
  CHECK_OK(fib_coro_destroy(co));
  return NULL;
}

TEST(coroutines_a_fiber_resumes_still_work) {
  run_main(fiber_with_a_coroutine, NULL);
}

/* ------------------------------- destroy with fibers parked on primitives */

static fib_mutex mtx;
static fib_chan chan;
static fib_cond cond;
static fib_sem sem;
static fib_wg wg;

static void *hold_then_wait_on_chan(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  int v;
  CHECK_OK(fib_chan_recv(&chan, &v)); /* nobody sends: parked for good */
  return NULL;
}

static void *wait_for_mutex(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  return NULL;
}

static void *send_on_chan(void *arg) {
  (void)arg;
  int v = 5;
  CHECK_OK(fib_chan_send(&chan, &v)); /* unbuffered, nobody receives */
  return NULL;
}

static void *wait_on_cond(void *arg) {
  (void)arg;
  fib_mutex m;
  CHECK_OK(fib_mutex_init(&m));
  CHECK_OK(fib_mutex_lock(&m));
  CHECK_OK(fib_cond_wait(&cond, &m));
  return NULL;
}

static void *wait_on_sem(void *arg) {
  (void)arg;
  CHECK_OK(fib_sem_wait(&sem));
  return NULL;
}

static void *wait_on_wg(void *arg) {
  (void)arg;
  CHECK_OK(fib_wg_wait(&wg));
  return NULL;
}

/* A select over more cases than fit its on-stack nodes: its wait records
 * come from the heap, which the discard must free (ASan/valgrind see a
 * leak otherwise). */
static fib_chan many[12];

static void *select_on_many(void *arg) {
  (void)arg;
  fib_select_case c[12];
  for (int i = 0; i < 12; i++)
    c[i] = (fib_select_case){FIB_SELECT_RECV, &many[i], NULL, 0};
  CHECK_OK(fib_select(c, 12));
  return NULL;
}

/* Let a fresh runtime use every primitive: each must work as new. */
static void *use_everything(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  CHECK_OK(fib_mutex_unlock(&mtx));
  int v = 9, got = 0;
  fib_select_case c[2] = {{FIB_SELECT_SEND, &chan, &v, 0},
                          {FIB_SELECT_DEFAULT, NULL, NULL, 0}};
  CHECK_EQ(fib_select(c, 2), 1); /* no receiver: the old ones are gone */
  CHECK_OK(fib_sem_post(&sem));
  CHECK_OK(fib_sem_wait(&sem));
  CHECK_OK(fib_cond_signal(&cond)); /* nobody waits any more */
  CHECK_OK(fib_wg_wait(&wg));       /* 0: no wait */
  CHECK_OK(fib_chan_close(&many[0]));
  CHECK_EQ(fib_chan_recv(&many[0], &got), FIB_EPIPE);
  return NULL;
}

TEST(destroy_after_deadlock_leaves_every_primitive_valid) {
  /* after the runtime: shared, if it has several workers */
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_mutex_init(&mtx));
  CHECK_OK(fib_chan_init(&chan, sizeof(int), 0));
  CHECK_OK(fib_cond_init(&cond));
  CHECK_OK(fib_sem_init(&sem, 0));
  CHECK_OK(fib_wg_init(&wg));
  CHECK_OK(fib_wg_add(&wg, 1));
  for (int i = 0; i < 12; i++)
    CHECK_OK(fib_chan_init(&many[i], 0, 0));

  CHECK_OK(fib_spawn(rt, hold_then_wait_on_chan, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, wait_for_mutex, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, send_on_chan, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, wait_on_cond, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, wait_on_sem, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, wait_on_wg, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, select_on_many, NULL, NULL, NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt));

  /* The primitives are as if the discarded fibers had never used them. */
  CHECK_OK(fib_wg_add(&wg, -1));
  CHECK_EQ(fib_chan_len(&chan), 0);
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, use_everything, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));

  CHECK_OK(fib_mutex_destroy(&mtx)); /* not held, nobody waits */
  CHECK_OK(fib_chan_destroy(&chan));
  CHECK_OK(fib_cond_destroy(&cond));
  CHECK_OK(fib_sem_destroy(&sem));
  CHECK_OK(fib_wg_destroy(&wg));
  for (int i = 0; i < 12; i++)
    CHECK_OK(fib_chan_destroy(&many[i]));
}

TEST(destroy_right_after_a_timeout_unlinks_the_stale_wait) {
  /* A fiber whose timed wait has expired is ready, but its node stays on
   * the queue until it runs again (waitq.h): destroy must take it off. */
  CHECK_OK(fib_sem_init(&sem, 0));
  fib_runtime *rt;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, wait_on_sem, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 1); /* parked in fib_sem_wait */
  CHECK_OK(fib_cancel(rt, 1));     /* ready, its node still linked */
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_post(&sem)); /* finds no waiter: the unit is kept */
  CHECK_EQ(fib_sem_value(&sem), 1);
  CHECK_OK(fib_sem_destroy(&sem));
}

static void *hold_mutex_and_park(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  CHECK_OK(fib_sem_wait(&sem)); /* never posted */
  return NULL;
}

static int b_got_it;

static void *lock_count_unlock(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  b_got_it++;
  CHECK_OK(fib_mutex_unlock(&mtx));
  return NULL;
}

TEST(destroy_hands_a_held_mutex_to_a_waiter_of_another_runtime) {
  fib_runtime *a, *b;
  a = new_runtime();
  b = new_runtime();
  CHECK_OK(fib_mutex_init(&mtx)); /* after: shared, with several workers */
  CHECK_OK(fib_sem_init(&sem, 0));
  CHECK_OK(fib_spawn(a, hold_mutex_and_park, NULL, NULL, NULL));
  CHECK_EQ(fib_run(a), FIB_EDEADLK);
  CHECK_OK(fib_spawn(b, lock_count_unlock, NULL, NULL, NULL));
  CHECK_EQ(fib_run(b), FIB_EDEADLK); /* b waits for a's fiber */
  CHECK_OK(fib_runtime_destroy(a));  /* the mutex goes to b's fiber */
  CHECK_OK(fib_run(b));
  CHECK_EQ(b_got_it, 1);
  CHECK_OK(fib_runtime_destroy(b));
  CHECK_OK(fib_mutex_destroy(&mtx));
  CHECK_OK(fib_sem_destroy(&sem));
}

/* ------------------------------------ finishing while holding something */

static void *lock_and_return(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_lock(&mtx));
  CHECK_OK(fib_yield()); /* let the other queue up */
  return NULL;            /* never unlocks */
}

TEST(a_fiber_that_finishes_holding_a_mutex_gives_it_up) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_mutex_init(&mtx)); /* after: shared, with several workers */
  b_got_it = 0;
  CHECK_OK(fib_spawn(rt, lock_and_return, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, lock_count_unlock, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt)); /* used to end in a false FIB_EDEADLK */
  CHECK_EQ(b_got_it, 1);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_mutex_destroy(&mtx));
}

static fib_once once = FIB_ONCE_INIT;
static int once_runs;

static void init_that_exits(void *arg) {
  (void)arg;
  once_runs++;
  if (once_runs == 1) {
    CHECK_OK(fib_yield()); /* the other fiber starts waiting */
    fib_exit(NULL);        /* never returns into fib_once_call */
  }
}

static void *call_once(void *arg) {
  (void)arg;
  CHECK_OK(fib_once_call(&once, init_that_exits, NULL));
  return NULL;
}

TEST(a_fiber_that_exits_inside_once_lets_a_waiter_run_it) {
  fib_runtime *rt;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, call_once, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, call_once, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt)); /* the waiter used to wait forever */
  CHECK_EQ(once_runs, 2);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_once_call(&once, init_that_exits, NULL)); /* done: no run */
  CHECK_EQ(once_runs, 2);
}

static void init_that_parks(void *arg) {
  (void)arg;
  once_runs++;
  if (once_runs == 1)
    CHECK_OK(fib_sem_wait(&sem)); /* never posted: discarded in here */
}

static void *call_once_parking(void *arg) {
  (void)arg;
  CHECK_OK(fib_once_call(&once, init_that_parks, NULL));
  return NULL;
}

TEST(destroy_with_a_fiber_inside_once_resets_it) {
  memset(&once, 0, sizeof once);
  once_runs = 0;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_sem_init(&sem, 0)); /* after: shared, with several workers */
  CHECK_OK(fib_spawn(rt, call_once_parking, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, call_once_parking, NULL, NULL, NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt));
  /* As if never called: this call runs it (outside any fiber). */
  CHECK_OK(fib_once_call(&once, init_that_parks, NULL));
  CHECK_EQ(once_runs, 2);
  CHECK_OK(fib_sem_destroy(&sem));
}

/* ------------------------------------------------- counters at the limit */

TEST(wait_group_add_at_the_limits) {
  fib_wg g;
  CHECK_OK(fib_wg_init(&g));
  CHECK_EQ(fib_wg_add(&g, INT64_MIN), FIB_EINVAL); /* was signed overflow */
  CHECK_EQ(fib_wg_add(&g, -1), FIB_EINVAL);
  CHECK_OK(fib_wg_add(&g, INT64_MAX));
  CHECK_EQ(fib_wg_add(&g, 1), FIB_EOVERFLOW);
  CHECK_EQ(fib_wg_add(&g, INT64_MIN), FIB_EINVAL); /* one below zero */
  CHECK_OK(fib_wg_add(&g, -INT64_MAX));            /* exactly to zero */
  CHECK_EQ(fib_wg_add(&g, INT64_MIN), FIB_EINVAL);
  CHECK_OK(fib_wg_add(&g, 0));
  CHECK_OK(fib_wg_destroy(&g));
}

/* ------------------------------------------------------- reserved fields */

static void *nothing(void *arg) { return arg; }
static void *nothing_coro(void *arg, void *first) {
  (void)first;
  return arg;
}

TEST(reserved_fields_must_be_zero) {
  fib_runtime_opts opts = {0};
  opts.reserved[3] = 1;
  fib_runtime *rt;
  CHECK_EQ(fib_runtime_create(&rt, &opts), FIB_EINVAL);
  opts.reserved[3] = 0;
  opts.workers = FIB_WORKERS_MAX + 1;
  CHECK_EQ(fib_runtime_create(&rt, &opts), FIB_EINVAL);
  opts.workers = 0;
  opts.io_backend = FIB_IO_URING + 1;
  CHECK_EQ(fib_runtime_create(&rt, &opts), FIB_EINVAL);
  rt = new_runtime();
  fib_attr attr = {0};
  attr.reserved[2] = 1;
  CHECK_EQ(fib_spawn(rt, nothing, NULL, &attr, NULL), FIB_EINVAL);
  fib_coro *co;
  CHECK_EQ(fib_coro_create(&co, nothing_coro, NULL, &attr), FIB_EINVAL);
  attr.reserved[2] = 0;
  attr.worker = test_workers() + 1; /* one worker: only 0 or 1 */
  CHECK_EQ(fib_spawn(rt, nothing, NULL, &attr, NULL), FIB_EINVAL);
  attr.worker = test_workers();
  CHECK_OK(fib_spawn(rt, nothing, NULL, &attr, NULL)); /* the last one */
  attr.worker = 1;
  CHECK_EQ(fib_coro_create(&co, nothing_coro, NULL, &attr), FIB_EINVAL);
  CHECK_OK(fib_spawn(rt, nothing, NULL, &attr, NULL));
  attr.worker = 0;
  CHECK_OK(fib_spawn(rt, nothing, NULL, &attr, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST_MAIN(T(coro_yield_in_a_fiber_body_is_refused),
          T(resume_or_destroy_of_a_fibers_context_is_refused),
          T(coroutines_a_fiber_resumes_still_work),
          T(destroy_after_deadlock_leaves_every_primitive_valid),
          T_ONE_WORKER(destroy_right_after_a_timeout_unlinks_the_stale_wait,
                       "drives its run with fib_run_nowait, which several workers refuse"),
          T(destroy_hands_a_held_mutex_to_a_waiter_of_another_runtime),
          T(a_fiber_that_finishes_holding_a_mutex_gives_it_up),
          T(a_fiber_that_exits_inside_once_lets_a_waiter_run_it),
          T(destroy_with_a_fiber_inside_once_resets_it),
          T_ONE_WORKER(wait_group_add_at_the_limits,
                       "makes no runtime"), T(reserved_fields_must_be_zero))
