/* SPDX-License-Identifier: MIT */
/* test_embed_faults.c -- a runtime of several workers inside a program's
 * own loop, when one of its worker threads cannot start: the host's call
 * reports the error, loses no fiber and leaves nothing of its own behind
 * (fibers.h, fib_run_join), and the next calls start the workers again. */
#include "fiber_helpers.h"

#include <fibers.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "sys.h"

static fib_sem gate;

static void *wait_gate(void *arg) {
  CHECK_OK(fib_sem_wait(&gate));
  return arg;
}

static void *nothing(void *arg) { return arg; }

/* This thread's own set-up (its signal stack) done before the faults, so
 * that only the new worker threads meet them. */
static void prepare_this_thread(void) {
  run_main(nothing, NULL);
}

static void *altstack_of_new_thread(void *arg) {
  stack_t cur;
  CHECK_EQ(sigaltstack(NULL, &cur), 0);
  *(int *)arg = !(cur.ss_flags & SS_DISABLE);
  return NULL;
}

/* Every sigaltstack fails from now on: a worker thread that starts cannot
 * set up its signal stack, so its loop does not start (FIB_ENOMEM). Where
 * new threads come with an alternate stack of someone else's (the
 * sanitizers give every thread one), the library uses that one and no
 * worker's start can fail: the case says so. */
static void break_new_threads(void) {
  pthread_t t;
  int has_one = 0;
  CHECK_EQ(pthread_create(&t, NULL, altstack_of_new_thread, &has_one), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  if (has_one)
    SKIP("new threads start with an alternate signal stack (a sanitizer's "
         "runtime): a worker thread's start cannot fail here");
  fib__fault_inject(FIB__FAULT_SIGALTSTACK, 1, 1);
}

static void mend_new_threads(void) { fib__fault_inject(0, 0, 0); }

/* fib_run_join waits for its target through a fiber of its own on worker
 * 0; a call that fails while that fiber waits must take it out of the
 * target's join (the target stays joinable) and leave no reference to the
 * call's frame behind. */
TEST(run_join_reports_a_worker_that_could_not_start_and_loses_nothing) {
  prepare_this_thread();
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&gate, 0));
  fib_attr on0 = {0};
  on0.worker = 1;
  fib_id id;
  CHECK_OK(fib_spawn(rt, wait_gate, (void *)(intptr_t)7, &on0, &id));
  break_new_threads();
  int err = fib_run_join(rt, id, NULL);
  mend_new_threads();
  CHECK_EQ(err, FIB_ENOMEM);
  /* The target is still joinable: nothing else joins it. */
  CHECK_OK(fib_sem_post(&gate));
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, id, &result));
  CHECK_EQ((intptr_t)result, 7);
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_ESRCH);
  /* Nothing of the failed call is left unfinished. */
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_OK(fib_sem_destroy(&gate));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* The same failure in a bounded run: reported once, then the workers start
 * again at the next call and the fibers run to the end. */
TEST(run_nowait_reports_a_worker_that_could_not_start_once) {
  prepare_this_thread();
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&gate, 0));
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id id;
  CHECK_OK(fib_spawn(rt, wait_gate, (void *)(intptr_t)5, &on1, &id));
  break_new_threads();
  int err;
  long calls = 0;
  /* The thread's failure reaches the host within a few calls (it runs on
   * its own); the fiber meanwhile waits on worker 1's queue. */
  while ((err = fib_run_nowait(rt)) == 1)
    CHECK(++calls < 100000000);
  mend_new_threads();
  CHECK_EQ(err, FIB_ENOMEM);
  CHECK_OK(fib_sem_post(&gate));
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, id, &result));
  CHECK_EQ((intptr_t)result, 5);
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_OK(fib_sem_destroy(&gate));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST_MAIN(T(run_join_reports_a_worker_that_could_not_start_and_loses_nothing),
          T(run_nowait_reports_a_worker_that_could_not_start_once))
