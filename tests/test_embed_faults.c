/* SPDX-License-Identifier: MIT */
/* test_embed_faults.c -- a runtime inside a program's own loop, when
 * things go wrong around the host: one of its worker
 * threads cannot start (the host's call reports the error, loses no fiber
 * and leaves nothing of its own behind, fibers.h, fib_run_join, and the
 * next calls start the workers again); the host's thread exits between
 * calls (nothing written to, or read from, a descriptor that is the
 * program's by then). */
#include "fiber_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

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

/* ---- a host thread that exits between calls */

static void *host_once(void *arg) {
  fib_runtime *rt = arg;
  /* The host watches the runtime's descriptor (its thread's poller and
   * wake-up eventfd are made), and its call ends announcing the runtime
   * (worker 0 of several) as a host that such a descriptor wakes. */
  CHECK(fib_runtime_io_fd(rt) >= 0);
  CHECK_EQ(fib_run_nowait(rt), 0);
  return NULL;
}

static int posts_ran;

static void *count_post(void *arg) {
  (void)arg;
  posts_ran++;
  return NULL;
}

/* The thread's poller closes its descriptors when it exits; pipes made
 * next take their numbers. A post for the host's runtime (one worker, or
 * worker 0 of several) then wakes the host that
 * is no more: the runtime must write only what is its own, and the next
 * call (from another thread) and destroy must read only that. */
static void host_thread_exits(unsigned workers) {
  fib_runtime *rt = new_workers(workers);
  pthread_t host;
  CHECK_EQ(pthread_create(&host, NULL, host_once, rt), 0);
  CHECK_EQ(pthread_join(host, NULL), 0);
  enum { PIPES = 8 };
  int fds[PIPES][2];
  for (int i = 0; i < PIPES; i++)
    CHECK_EQ(pipe2(fds[i], O_NONBLOCK | O_CLOEXEC), 0);
  posts_ran = 0;
  CHECK_OK(fib_post(rt, count_post, NULL));
  for (int i = 0; i < PIPES; i++) {
    struct pollfd p = {fds[i][0], POLLIN, 0};
    CHECK_EQ(poll(&p, 1, 0), 0); /* nothing was written into it */
    char byte = 'x';
    CHECK_EQ(write(fds[i][1], &byte, 1), 1); /* a read of it would see */
  }
  /* This thread hosts now: its call ends the old announcement (a read of
   * the runtime's own descriptor, not of a pipe) and runs the post. */
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_EQ(posts_ran, 1);
  for (int i = 0; i < PIPES; i++) {
    char byte = 0;
    CHECK_EQ(read(fds[i][0], &byte, 1), 1); /* still there: unread */
    CHECK_EQ(byte, 'x');
    CHECK_OK(close(fds[i][0]));
    CHECK_OK(close(fds[i][1]));
  }
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(a_host_thread_that_exits_leaves_no_write_to_the_programs_descriptors) {
  host_thread_exits(2);
}

TEST(a_one_worker_host_that_exits_leaves_no_write_to_the_programs_fds) {
  host_thread_exits(1);
}

TEST_MAIN(T(run_join_reports_a_worker_that_could_not_start_and_loses_nothing),
          T(run_nowait_reports_a_worker_that_could_not_start_once),
          T(a_host_thread_that_exits_leaves_no_write_to_the_programs_descriptors),
          T(a_one_worker_host_that_exits_leaves_no_write_to_the_programs_fds))
