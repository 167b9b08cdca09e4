/* SPDX-License-Identifier: MIT */
/* test_embed_workers.c -- a runtime of several workers inside a program's
 * own loop: fib_run_nowait, fib_run_once and fib_run_join run worker 0 on
 * the caller's thread while the other workers run on their own between
 * the calls; the program spawns, cancels, detaches and posts between
 * them; fib_run takes over; fib_runtime_destroy stops the workers. */
#include "fiber_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One frame of the host's own work: a short real sleep, so that the
 * other workers get the CPUs meanwhile (no figure is taken from it). */
static void host_frame(void) {
  struct timespec ts = {0, 50000};
  nanosleep(&ts, NULL);
}

/* Call fib_run_nowait until every fiber has finished (frames bounded by
 * a watchdog count, far above what any case needs). */
static void nowait_until_done(fib_runtime *rt) {
  long frames = 0;
  int left;
  while ((left = fib_run_nowait(rt)) > 0) {
    host_frame();
    CHECK(++frames < 10000000);
  }
  CHECK_EQ(left, 0);
}

/* ---- a tree of fibers */

struct node {
  int depth;
  long sum; /* out: the leaves under it */
};

static void *tree(void *arg) {
  struct node *n = arg;
  if (n->depth == 0) {
    for (int i = 0; i < 3; i++) /* some turns: the host's calls end */
      CHECK_OK(fib_yield());
    n->sum = 1;
    return NULL;
  }
  struct node kids[4];
  fib_id ids[4];
  for (int i = 0; i < 4; i++) {
    kids[i] = (struct node){n->depth - 1, 0};
    CHECK_OK(fib_spawn(NULL, tree, &kids[i], NULL, &ids[i]));
  }
  n->sum = 0;
  for (int i = 0; i < 4; i++) {
    CHECK_OK(fib_join(ids[i], NULL));
    n->sum += kids[i].sum;
  }
  return NULL;
}

static void nowait_tree(unsigned workers) {
  int depth = scaled(100) >= 100 ? 6 : 4; /* 4096 or 256 leaves */
  long leaves = 1;
  for (int i = 0; i < depth; i++)
    leaves *= 4;
  fib_runtime *rt = new_workers(workers);
  struct node root = {depth, 0};
  CHECK_OK(fib_spawn(rt, tree, &root, NULL, NULL));
  nowait_until_done(rt);
  CHECK_EQ(root.sum, leaves);
  CHECK_EQ(fib_run_nowait(rt), 0); /* nothing left: at once */
  CHECK_EQ(fib_runtime_next_ns(rt), UINT64_MAX);
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(nowait_host_loop_finishes_a_tree_on_2_workers) { nowait_tree(2); }
TEST(nowait_host_loop_finishes_a_tree_on_4_workers) { nowait_tree(4); }

/* ---- a pipeline whose stages are placed on every worker */

struct pipe {
  fib_chan *in, *out; /* NULL: the source / the sink */
  long count;
  long sum;           /* the sink's */
};

static void *stage(void *arg) {
  struct pipe *p = arg;
  long v;
  if (!p->in) { /* the source */
    for (v = 1; v <= p->count; v++)
      CHECK_OK(fib_chan_send(p->out, &v));
    CHECK_OK(fib_chan_close(p->out));
    return NULL;
  }
  while (fib_chan_recv(p->in, &v) == 0) {
    if (p->out)
      CHECK_OK(fib_chan_send(p->out, &v));
    else
      p->sum += v;
  }
  if (p->out)
    CHECK_OK(fib_chan_close(p->out));
  return NULL;
}

static void nowait_pipeline(unsigned workers) {
  fib_runtime *rt = new_workers(workers); /* first: the channels shared */
  long count = scaled(20000);
  enum { STAGES = 5 };
  fib_chan ch[STAGES - 1];
  struct pipe p[STAGES];
  for (int i = 0; i < STAGES - 1; i++)
    CHECK_OK(fib_chan_init(&ch[i], sizeof(long), i % 2 ? 0 : 8));
  for (int i = 0; i < STAGES; i++) {
    p[i] = (struct pipe){i ? &ch[i - 1] : NULL,
                         i < STAGES - 1 ? &ch[i] : NULL, count, 0};
    fib_attr a = {0};
    a.worker = (unsigned)(i % (int)workers) + 1; /* every worker */
    CHECK_OK(fib_spawn(rt, stage, &p[i], &a, NULL));
  }
  nowait_until_done(rt);
  CHECK_EQ(p[STAGES - 1].sum, count * (count + 1) / 2);
  for (int i = 0; i < STAGES - 1; i++)
    CHECK_OK(fib_chan_destroy(&ch[i]));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(nowait_host_loop_runs_a_pipeline_across_2_workers) { nowait_pipeline(2); }
TEST(nowait_host_loop_runs_a_pipeline_across_4_workers) { nowait_pipeline(4); }

/* ---- fib_run_once */

static void *sleep_until(void *arg) {
  uint64_t *deadline = arg;
  /* from when it runs: the first call may take a while to start the
   * workers (under a sanitizer, tens of milliseconds) */
  *deadline = fib_now_ns() + 100 * MS;
  CHECK_OK(fib_sleep_until(*deadline));
  return NULL;
}

TEST(run_once_sleeps_until_worker_0s_deadline_with_the_others_idle) {
  fib_runtime *rt = new_workers(3);
  uint64_t deadline = 0;
  fib_attr on0 = {0};
  on0.worker = 1;
  CHECK_OK(fib_spawn(rt, sleep_until, &deadline, &on0, NULL));
  CHECK_EQ(fib_run_once(rt), 1); /* it runs and goes to sleep */
  CHECK_EQ(fib_runtime_next_ns(rt), deadline);
  /* Nothing ready: the call sleeps until the deadline, then runs it. */
  int left = fib_run_once(rt);
  CHECK(fib_now_ns() >= deadline);
  if (left == 1) /* woken early (a spurious wake-up): once more */
    left = fib_run_once(rt);
  CHECK_EQ(left, 0);
  CHECK_EQ(fib_run_once(rt), 0); /* nothing left: at once */
  CHECK_OK(fib_runtime_destroy(rt));
}

static fib_sem gate;

static void *wait_gate(void *arg) {
  CHECK_OK(fib_sem_wait(&gate));
  return arg;
}

TEST(run_once_returns_when_every_worker_waits_for_the_program) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&gate, 0));
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id id;
  CHECK_OK(fib_spawn(rt, wait_gate, (void *)(intptr_t)7, &on1, &id));
  CHECK_OK(fib_spawn(rt, wait_gate, NULL, NULL, NULL)); /* worker 0's */
  /* Nothing can go on by itself: the calls return instead of sleeping. */
  for (int i = 0; i < 5; i++)
    CHECK_EQ(fib_run_once(rt), 2);
  CHECK_EQ(fib_runtime_next_ns(rt), UINT64_MAX);
  CHECK_OK(fib_sem_post(&gate)); /* from the host, between calls */
  CHECK_OK(fib_sem_post(&gate));
  int left;
  long calls = 0;
  while ((left = fib_run_once(rt)) > 0)
    CHECK(++calls < 1000000);
  CHECK_EQ(left, 0);
  CHECK_OK(fib_sem_destroy(&gate));
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *read_one(void *arg) {
  char c = 0;
  CHECK_EQ(fib_read(*(int *)arg, &c, 1), 1);
  return (void *)(intptr_t)c;
}

static void *write_later(void *arg) {
  struct timespec ts = {0, 20 * 1000000};
  nanosleep(&ts, NULL);
  CHECK_EQ(write(*(int *)arg, "x", 1), 1);
  return NULL;
}

TEST(run_once_sleeps_until_worker_0s_io_while_the_others_wait) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&gate, 0));
  int p[2];
  CHECK_OK(pipe(p));
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  fib_id reader;
  CHECK_OK(fib_spawn(rt, read_one, &p[0], &on0, &reader));
  CHECK_OK(fib_spawn(rt, wait_gate, NULL, &on1, NULL));
  CHECK_EQ(fib_run_once(rt), 2); /* the reader waits for its pipe */
  pthread_t writer;
  CHECK_OK(pthread_create(&writer, NULL, write_later, &p[1]));
  /* Worker 1 waits for the program, worker 0 for I/O: this sleeps in
   * worker 0's poller until the byte comes, then runs the reader. */
  int left;
  long calls = 0;
  while ((left = fib_run_once(rt)) == 2)
    CHECK(++calls < 1000); /* a spurious wake-up: sleep again */
  CHECK_EQ(left, 1);
  void *c = NULL;
  CHECK_OK(fib_run_join(rt, reader, &c));
  CHECK_EQ((intptr_t)c, 'x');
  CHECK_OK(pthread_join(writer, NULL));
  CHECK_OK(fib_sem_post(&gate));
  nowait_until_done(rt);
  CHECK_OK(close(p[0]));
  CHECK_OK(close(p[1]));
  CHECK_OK(fib_sem_destroy(&gate));
  CHECK_OK(fib_runtime_destroy(rt));
}

struct relay {
  fib_chan *ch;
  long count;
  long sum;
};

static void *relay_send(void *arg) { /* on worker 1 */
  struct relay *r = arg;
  for (long v = 1; v <= r->count; v++) {
    CHECK_OK(fib_sleep_ns(MS / 4)); /* the host blocks meanwhile */
    CHECK_OK(fib_chan_send(r->ch, &v));
  }
  CHECK_OK(fib_chan_close(r->ch));
  return NULL;
}

static void *relay_recv(void *arg) { /* on worker 0 */
  struct relay *r = arg;
  long v;
  while (fib_chan_recv(r->ch, &v) == 0)
    r->sum += v;
  return NULL;
}

TEST(a_host_blocked_in_poll_on_the_io_fd_wakes_for_work_sent_to_worker_0) {
  fib_runtime *rt = new_workers(2);
  fib_chan ch;
  CHECK_OK(fib_chan_init(&ch, sizeof(long), 0));
  struct relay r = {&ch, scaled(200), 0};
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  CHECK_OK(fib_spawn(rt, relay_recv, &r, &on0, NULL));
  CHECK_OK(fib_spawn(rt, relay_send, &r, &on1, NULL));
  int fd = fib_runtime_io_fd(rt);
  CHECK(fd >= 0);
  /* The host's loop: run, then block in poll until worker 0 has work
   * (no deadline of worker 0's: next_ns says never). A wake-up lost
   * would leave poll to its watchdog of 10 s, and fail. */
  long sleeps = 0;
  int left;
  while ((left = fib_run_nowait(rt)) > 0) {
    uint64_t next = fib_runtime_next_ns(rt);
    if (next == 0)
      continue;
    CHECK_EQ(next, UINT64_MAX);
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, 10000);
    CHECK_EQ(n, 1);
    sleeps++;
  }
  CHECK_EQ(left, 0);
  CHECK_EQ(r.sum, r.count * (r.count + 1) / 2);
  CHECK(sleeps >= 1);
  /* The eventfd was read back: nothing left readable. */
  struct pollfd p = {fd, POLLIN, 0};
  CHECK_EQ(poll(&p, 1, 0), 0);
  CHECK_OK(fib_chan_destroy(&ch));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- fib_run_join */

static void *report_thread(void *arg) {
  *(pthread_t *)arg = current_thread();
  for (int i = 0; i < 10; i++)
    CHECK_OK(fib_yield());
  return (void *)(intptr_t)42;
}

TEST(run_join_collects_a_fiber_that_runs_on_worker_1) {
  fib_runtime *rt = new_workers(2);
  fib_attr on1 = {0};
  on1.worker = 2;
  pthread_t ran;
  fib_id id;
  CHECK_OK(fib_spawn(rt, report_thread, &ran, &on1, &id));
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, id, &result));
  CHECK_EQ((intptr_t)result, 42);
  CHECK(!pthread_equal(ran, pthread_self()));
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_ESRCH); /* collected */
  CHECK_EQ(fib_run_nowait(rt), 0);
  /* And one that runs on worker 0, after it. */
  CHECK_OK(fib_spawn(rt, report_thread, &ran, NULL, &id));
  CHECK_OK(fib_run_join(rt, id, &result));
  CHECK_EQ((intptr_t)result, 42);
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- the program between calls, while the other workers run */

struct tally {
  long ran;      /* atomic */
  long cancelled; /* atomic */
};

static void *count_one(void *arg) {
  struct tally *t = arg;
  CHECK_OK(fib_yield());
  __atomic_add_fetch(&t->ran, 1, __ATOMIC_RELAXED);
  return arg;
}

static void *sleep_long(void *arg) {
  struct tally *t = arg;
  int err = fib_sleep_ns(3600ull * 1000 * MS);
  if (err == FIB_ECANCELED)
    __atomic_add_fetch(&t->cancelled, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *busy_worker1(void *arg) {
  int *stop = arg;
  /* keeps worker 1 running between the host's calls */
  while (!__atomic_load_n(stop, __ATOMIC_RELAXED))
    CHECK_OK(fib_yield());
  return NULL;
}

TEST(the_host_spawns_cancels_detaches_and_posts_between_calls) {
  fib_runtime *rt = new_workers(2);
  struct tally t = {0, 0};
  int stop = 0;
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id busy;
  CHECK_OK(fib_spawn(rt, busy_worker1, &stop, &on1, &busy));
  enum { SLEEPERS = 8 };
  fib_id sleepers[SLEEPERS];
  for (int i = 0; i < SLEEPERS; i++) {
    fib_attr a = {0};
    a.worker = (unsigned)(i % 2) + 1;
    CHECK_OK(fib_spawn(rt, sleep_long, &t, &a, &sleepers[i]));
  }
  CHECK(fib_run_nowait(rt) > 0); /* the workers run from now on */
  long rounds = scaled(200), spawned = 0, posted = 0;
  fib_id last = 0;
  for (long r = 0; r < rounds; r++) {
    /* spawned from the host: worker 0's, and others may take them; one
     * detached at once, one detached a call later (it may have finished
     * by then), the others left joinable */
    if (last)
      CHECK_OK(fib_detach(rt, last));
    for (int k = 0; k < 4; k++) {
      fib_id id;
      CHECK_OK(fib_spawn(rt, count_one, &t, NULL, &id));
      spawned++;
      if (k == 0)
        CHECK_OK(fib_detach(rt, id));
      else if (k == 1)
        last = id;
    }
    CHECK_OK(fib_post(rt, count_one, &t));
    posted++;
    if (r < SLEEPERS)
      CHECK_OK(fib_cancel(rt, sleepers[r]));
    CHECK(fib_run_nowait(rt) > 0); /* busy_worker1 still runs */
    host_frame();
  }
  CHECK_OK(fib_run_join(rt, last, NULL)); /* the last round's, joinable */
  __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
  CHECK_OK(fib_run_join(rt, busy, NULL));
  /* The rest: the joinable ones are collected by destroy's discard, or
   * finish and wait for a join; run until every one has, and every
   * cancelled sleeper has seen its cancel (one woken on worker 1 may have
   * been taken by worker 0 in a call that then ended: it runs in a later
   * one). */
  long cancels = rounds < SLEEPERS ? rounds : SLEEPERS;
  int left;
  long calls = 0;
  while ((left = fib_run_nowait(rt)) > 0) {
    /* joinable fibers stay counted until joined: none is, past here */
    if (__atomic_load_n(&t.ran, __ATOMIC_RELAXED) == spawned + posted &&
        __atomic_load_n(&t.cancelled, __ATOMIC_RELAXED) == cancels)
      break;
    host_frame();
    CHECK(++calls < 10000000);
  }
  CHECK_EQ(__atomic_load_n(&t.ran, __ATOMIC_RELAXED), spawned + posted);
  CHECK_EQ(__atomic_load_n(&t.cancelled, __ATOMIC_RELAXED), cancels);
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *note_post(void *arg) {
  __atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
  return NULL;
}

struct poster {
  fib_runtime *rt;
  int ran;
};

static void *post_later(void *arg) {
  struct poster *p = arg;
  struct timespec ts = {0, 20 * 1000000};
  nanosleep(&ts, NULL);
  CHECK_OK(fib_post(p->rt, note_post, &p->ran));
  return NULL;
}

TEST(run_once_wakes_for_a_post_from_another_thread) {
  fib_runtime *rt = new_workers(2);
  struct tally t = {0, 0};
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id sleeper;
  CHECK_OK(fib_spawn(rt, sleep_long, &t, &on1, &sleeper));
  CHECK_EQ(fib_run_nowait(rt), 1); /* the workers run from now on */
  struct poster p = {rt, 0};
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, post_later, &p));
  /* Worker 1 has a deadline (no stall), worker 0 nothing: the call
   * sleeps until the post comes, then runs it, or returns once it has
   * handed its fiber to worker 1 (idle, it may take it). */
  int left = fib_run_once(rt);
  CHECK(left == 1 || left == 2);
  CHECK_OK(pthread_join(th, NULL));
  long frames = 0;
  while (!__atomic_load_n(&p.ran, __ATOMIC_ACQUIRE)) {
    CHECK(fib_run_nowait(rt) >= 1);
    host_frame();
    CHECK(++frames < 1000000);
  }
  CHECK_OK(fib_cancel(rt, sleeper));
  CHECK_OK(fib_run_join(rt, sleeper, NULL));
  CHECK_EQ(__atomic_load_n(&t.cancelled, __ATOMIC_RELAXED), 1);
  CHECK_EQ(fib_run_once(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- fib_run after bounded runs, and bounded runs after fib_run */

TEST(fib_run_takes_over_after_bounded_runs_and_they_start_again) {
  fib_runtime *rt = new_workers(3);
  /* Many passes: a worker whose count of finished fibers, read while
   * the last pass's threads served bounded calls, was older than the
   * host's next spawn and fib_run ended that run at once (seen under
   * qemu: fib_run returned 0, the tree not run). */
  long passes = 3 + scaled(60);
  for (long pass = 0; pass < passes; pass++) {
    struct node root = {4, 0};
    CHECK_OK(fib_spawn(rt, tree, &root, NULL, NULL));
    for (int i = 0; i < 3; i++)
      (void)fib_run_nowait(rt);
    CHECK_OK(fib_run(rt)); /* the rest, with the same workers */
    CHECK_EQ(root.sum, 256);
    CHECK_EQ(fib_run_nowait(rt), 0);
  }
  CHECK_OK(fib_run(rt)); /* nothing: at once */
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- destroy between bounded runs */

TEST(destroy_between_bounded_runs_with_fibers_waiting) {
  fib_runtime *rt = new_workers(4);
  CHECK_OK(fib_sem_init(&gate, 0));
  struct tally t = {0, 0};
  for (int i = 0; i < 16; i++) {
    fib_attr a = {0};
    a.worker = (unsigned)(i % 4) + 1;
    CHECK_OK(fib_spawn(rt, i % 2 ? wait_gate : sleep_long,
                       i % 2 ? NULL : (void *)&t, &a, NULL));
  }
  CHECK_EQ(fib_run_nowait(rt), 16);
  CHECK_EQ(fib_run_nowait(rt), 16);
  CHECK_OK(fib_runtime_destroy(rt)); /* stops the workers, discards them */
  CHECK_OK(fib_sem_post(&gate)); /* still a valid semaphore, no waiter */
  CHECK_OK(fib_sem_destroy(&gate));
}

static void *spin_yielding(void *arg) {
  (void)arg;
  for (;;)
    CHECK_OK(fib_yield());
  return NULL;
}

TEST(destroy_between_bounded_runs_with_fibers_running_on_other_workers) {
  fib_runtime *rt = new_workers(3);
  for (int i = 0; i < 6; i++) {
    fib_attr a = {0};
    a.worker = (unsigned)(i % 2) + 2; /* workers 1 and 2 */
    CHECK_OK(fib_spawn(rt, spin_yielding, NULL, &a, NULL));
  }
  CHECK_OK(fib_spawn(rt, spin_yielding, NULL, NULL, NULL));
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(fib_run_nowait(rt), 7);
    host_frame();
  }
  CHECK_OK(fib_runtime_destroy(rt)); /* they never finish: discarded */
}

/* ---- errors */

struct inside {
  fib_runtime *rt;
  pthread_t thread;
};

static void *call_inside(void *arg) {
  struct inside *in = arg;
  in->thread = current_thread();
  CHECK_EQ(fib_run_once(in->rt), FIB_EBUSY);
  CHECK_EQ(fib_run_nowait(in->rt), FIB_EBUSY);
  CHECK_EQ(fib_run_join(in->rt, 1, NULL), FIB_EBUSY);
  CHECK_EQ(fib_run(in->rt), FIB_EBUSY);
  CHECK_EQ(fib_runtime_destroy(in->rt), FIB_EBUSY);
  return NULL;
}

TEST(calls_from_inside_its_fibers_are_refused) {
  fib_runtime *rt = new_workers(2);
  struct inside in0 = {rt, 0}, in1 = {rt, 0};
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id a, b;
  CHECK_OK(fib_spawn(rt, call_inside, &in0, NULL, &a));
  CHECK_OK(fib_spawn(rt, call_inside, &in1, &on1, &b));
  CHECK_OK(fib_run_join(rt, b, NULL));
  CHECK(!pthread_equal(in1.thread, pthread_self()));
  CHECK_OK(fib_run_join(rt, a, NULL));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(run_join_reports_a_deadlock_and_leaves_the_fiber_joinable) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&gate, 0));
  fib_attr on1 = {0};
  on1.worker = 2;
  fib_id id;
  CHECK_OK(fib_spawn(rt, wait_gate, (void *)(intptr_t)9, &on1, &id));
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_EDEADLK);
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_EDEADLK); /* still there */
  CHECK_EQ(fib_run_nowait(rt), 1);
  CHECK_OK(fib_sem_post(&gate));
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, id, &result));
  CHECK_EQ((intptr_t)result, 9);
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_ESRCH);
  CHECK_EQ(fib_run_join(NULL, id, NULL), FIB_EINVAL);
  fib_attr det = {0};
  det.flags = FIB_DETACHED;
  CHECK_OK(fib_spawn(rt, wait_gate, NULL, &det, &id));
  CHECK_EQ(fib_run_join(rt, id, NULL), FIB_EINVAL); /* detached */
  CHECK_OK(fib_sem_post(&gate));
  nowait_until_done(rt);
  CHECK_OK(fib_sem_destroy(&gate));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- a cancel carried to worker 0 between calls */

/* Worker 0's joiner waits (with no frame) for a child that waits for the
 * program; a fiber of worker 1 cancels the joiner while the host is
 * between calls: the cancel is a note for worker 0, which
 * fib_runtime_next_ns must count as work, or a host that sleeps for its
 * answer sleeps through the cancel. */
static fib_sem held_child_sem;
static fib_id held_joiner;
static int joiner_parked, cancel_go, cancel_made;

static void *held_child(void *arg) {
  (void)arg;
  CHECK_OK(fib_sem_wait(&held_child_sem));
  return NULL;
}

static void *joiner_on_0(void *arg) {
  fib_id *child = arg;
  fib_attr on0 = {0};
  on0.worker = 1;
  CHECK_OK(fib_spawn(NULL, held_child, NULL, &on0, child));
  __atomic_store_n(&joiner_parked, 1, __ATOMIC_SEQ_CST);
  CHECK_EQ(fib_join(*child, NULL), FIB_ECANCELED);
  return NULL;
}

static void *canceller_on_1(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&cancel_go, __ATOMIC_SEQ_CST))
    CHECK_OK(fib_sleep_ns(100000));
  CHECK_OK(fib_cancel(NULL, held_joiner));
  __atomic_store_n(&cancel_made, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

TEST(a_cancel_sent_to_worker_0_between_calls_is_work_for_the_next) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&held_child_sem, 0)); /* after: shared */
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  fib_id child = 0;
  CHECK_OK(fib_spawn(rt, joiner_on_0, &child, &on0, &held_joiner));
  CHECK_OK(fib_spawn(rt, canceller_on_1, NULL, &on1, NULL));
  long frames = 0;
  while (!__atomic_load_n(&joiner_parked, __ATOMIC_SEQ_CST)) {
    CHECK(fib_run_nowait(rt) > 0);
    CHECK(++frames < 1000000);
  }
  /* One more round: the joiner, which set the flag, is parked in its
   * join once the round that ran it has ended. */
  CHECK(fib_run_nowait(rt) > 0);
  __atomic_store_n(&cancel_go, 1, __ATOMIC_SEQ_CST);
  for (frames = 0; !__atomic_load_n(&cancel_made, __ATOMIC_SEQ_CST);) {
    host_frame(); /* no call: worker 1 cancels meanwhile */
    CHECK(++frames < 1000000);
  }
  CHECK_EQ(fib_runtime_next_ns(rt), 0); /* the note waits for a call */
  CHECK_OK(fib_sem_post(&held_child_sem));
  nowait_until_done(rt);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&held_child_sem));
}

/* ---- the host's own pushes between calls, and the deadlock census */

/* A fiber that waits on `first` (the host posts it between calls), then
 * on `never`, which only the cleanup posts. */
struct two_waits {
  fib_sem *first;
  fib_sem *never;
  int parked; /* atomic: it waits on `first` */
};

static void *wait_twice(void *arg) {
  struct two_waits *w = arg;
  __atomic_store_n(&w->parked, 1, __ATOMIC_SEQ_CST);
  CHECK_OK(fib_sem_wait(w->first));
  CHECK_OK(fib_sem_wait(w->never));
  return (void *)(intptr_t)5;
}

static void *wait_cancelled(void *arg) {
  struct two_waits *w = arg;
  __atomic_store_n(&w->parked, 1, __ATOMIC_SEQ_CST);
  CHECK_EQ(fib_sem_wait(w->never), FIB_ECANCELED);
  return NULL;
}

/* A plain thread that, if the case has not stopped it within 10 s, posts
 * `never` enough times to end a wait the runtime should have reported
 * as a deadlock: the case then fails on the result instead of hanging. */
struct watchdog {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;
  fib_sem *never;
  int posts;
  int fired;
};

static void *watchdog_main(void *arg) {
  struct watchdog *d = arg;
  struct timespec until;
  CHECK_EQ(clock_gettime(CLOCK_REALTIME, &until), 0);
  until.tv_sec += 10;
  pthread_mutex_lock(&d->lock);
  int err = 0;
  while (!d->stop && err != ETIMEDOUT)
    err = pthread_cond_timedwait(&d->cond, &d->lock, &until);
  int fire = !d->stop;
  pthread_mutex_unlock(&d->lock);
  if (fire) {
    d->fired = 1;
    for (int i = 0; i < d->posts; i++)
      CHECK_OK(fib_sem_post(d->never));
  }
  return NULL;
}

static void watchdog_start(struct watchdog *d, fib_sem *never, int posts) {
  memset(d, 0, sizeof *d);
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, NULL);
  d->never = never;
  d->posts = posts;
  CHECK_EQ(pthread_create(&d->thread, NULL, watchdog_main, d), 0);
}

static void watchdog_stop(struct watchdog *d) {
  pthread_mutex_lock(&d->lock);
  d->stop = 1;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->lock);
  CHECK_EQ(pthread_join(d->thread, NULL), 0);
  CHECK(!d->fired);
  pthread_mutex_destroy(&d->lock);
  pthread_cond_destroy(&d->cond);
}

/* Run bounded calls until each flag is set and one more round has parked
 * the fibers that set them. */
static void run_until_parked(fib_runtime *rt, int *const *flags, int n) {
  for (long frames = 0;; frames++) {
    CHECK(frames < 1000000);
    int all = 1;
    for (int i = 0; i < n; i++)
      all &= __atomic_load_n(flags[i], __ATOMIC_SEQ_CST);
    CHECK(fib_run_nowait(rt) > 0);
    if (all)
      break;
    host_frame();
  }
  host_frame();
  CHECK(fib_run_nowait(rt) > 0);
}

TEST(a_deadlock_after_the_hosts_pushes_between_calls_is_reported) {
  fib_runtime *rt = new_workers(2);
  fib_sem first, never;
  CHECK_OK(fib_sem_init(&first, 0)); /* after the runtime: shared */
  CHECK_OK(fib_sem_init(&never, 0));
  struct two_waits w0 = {&first, &never, 0}, w1 = {&first, &never, 0};
  struct two_waits z = {&first, &never, 0};
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  fib_id x, y, zid;
  CHECK_OK(fib_spawn(rt, wait_twice, &w0, &on0, &x));
  CHECK_OK(fib_spawn(rt, wait_twice, &w1, &on1, &y));
  CHECK_OK(fib_spawn(rt, wait_cancelled, &z, &on0, &zid));
  int *flags[] = {&w0.parked, &w1.parked, &z.parked};
  run_until_parked(rt, flags, 3);
  /* Between calls the host readies a fiber of each worker (pushes onto
   * worker 0's and worker 1's inboxes) and cancels one of worker 0's. */
  CHECK_OK(fib_sem_post(&first));
  CHECK_OK(fib_sem_post(&first));
  CHECK_OK(fib_cancel(rt, zid));
  /* Then every fiber left waits on `never`: a deadlock, reported, not
   * waited out (before, the pushes marked the workers posted, and the
   * join waited for the watchdog's posts). */
  struct watchdog d;
  watchdog_start(&d, &never, 2);
  CHECK_EQ(fib_run_join(rt, x, NULL), FIB_EDEADLK);
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  watchdog_stop(&d);
  CHECK_OK(fib_sem_post(&never));
  CHECK_OK(fib_sem_post(&never));
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, x, &result));
  CHECK_EQ((intptr_t)result, 5);
  CHECK_OK(fib_run_join(rt, y, &result));
  CHECK_EQ((intptr_t)result, 5);
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&first));
  CHECK_OK(fib_sem_destroy(&never));
}

/* A fiber of worker 1 in fib_call to a runtime that a plain thread runs:
 * its reply is still to come, and a join waits for it even though the
 * host pushed between calls and everything else waits. */
struct server {
  fib_runtime *rt;
  fib_sem stop;
  int started; /* atomic: its keeper fiber runs */
};

static void *keeper(void *arg) {
  struct server *s = arg;
  __atomic_store_n(&s->started, 1, __ATOMIC_SEQ_CST);
  CHECK_OK(fib_sem_wait(&s->stop));
  return NULL;
}

static void *serve(void *arg) {
  struct server *s = arg;
  CHECK_OK(fib_run(s->rt));
  return NULL;
}

static void *slow_answer(void *arg) {
  (void)arg;
  CHECK_OK(fib_sleep_ns(50 * MS));
  return (void *)(intptr_t)7;
}

struct caller {
  struct server *s;
  int parked; /* atomic: about to call */
};

static void *call_server(void *arg) {
  struct caller *c = arg;
  __atomic_store_n(&c->parked, 1, __ATOMIC_SEQ_CST);
  void *r = NULL;
  CHECK_OK(fib_call(c->s->rt, slow_answer, NULL, &r));
  return r;
}

TEST(a_reply_still_coming_is_waited_for_after_the_hosts_pushes) {
  fib_runtime *rt = new_workers(2);
  struct server srv = {0};
  fib_runtime_opts o = {0};
  o.flags = FIB_ACCEPT_POSTS;
  CHECK_OK(fib_runtime_create(&srv.rt, &o));
  CHECK_OK(fib_sem_init(&srv.stop, 0)); /* shared */
  CHECK_OK(fib_spawn(srv.rt, keeper, &srv, NULL, NULL));
  fib_sem first, never;
  CHECK_OK(fib_sem_init(&first, 0));
  CHECK_OK(fib_sem_init(&never, 0));
  struct two_waits w0 = {&first, &never, 0};
  struct caller c = {&srv, 0};
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  fib_id x, y;
  CHECK_OK(fib_spawn(rt, wait_twice, &w0, &on0, &x));
  CHECK_OK(fib_spawn(rt, call_server, &c, &on1, &y));
  int *flags[] = {&w0.parked, &c.parked};
  run_until_parked(rt, flags, 2);
  CHECK_OK(fib_sem_post(&first)); /* the host's push onto worker 0 */
  pthread_t server;
  CHECK_EQ(pthread_create(&server, NULL, serve, &srv), 0);
  void *result = NULL;
  CHECK_OK(fib_run_join(rt, y, &result)); /* not FIB_EDEADLK */
  CHECK_EQ((intptr_t)result, 7);
  CHECK_OK(fib_sem_post(&srv.stop));
  CHECK_EQ(pthread_join(server, NULL), 0);
  CHECK_OK(fib_runtime_destroy(srv.rt));
  CHECK_OK(fib_sem_post(&never));
  CHECK_OK(fib_run_join(rt, x, &result));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&srv.stop));
  CHECK_OK(fib_sem_destroy(&first));
  CHECK_OK(fib_sem_destroy(&never));
}

/* The host's pushes count as any thread's once another thread makes the
 * calls: the old host is outside the run now, and may push again. */
struct join_from {
  fib_runtime *rt;
  fib_id id;
  int err;
  void *result;
  int done; /* atomic */
};

static void *join_on_thread(void *arg) {
  struct join_from *j = arg;
  j->err = fib_run_join(j->rt, j->id, &j->result);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

TEST(the_old_hosts_pushes_count_once_another_thread_makes_the_calls) {
  fib_runtime *rt = new_workers(2);
  fib_sem first, never;
  CHECK_OK(fib_sem_init(&first, 0));
  CHECK_OK(fib_sem_init(&never, 0));
  struct two_waits w0 = {&first, &never, 0};
  fib_attr on0 = {0};
  on0.worker = 1;
  fib_id x;
  CHECK_OK(fib_spawn(rt, wait_twice, &w0, &on0, &x));
  int *flags[] = {&w0.parked};
  run_until_parked(rt, flags, 1);
  CHECK_OK(fib_sem_post(&first)); /* this thread's push, between calls */
  struct join_from j = {rt, x, 0, NULL, 0};
  pthread_t other;
  CHECK_EQ(pthread_create(&other, NULL, join_on_thread, &j), 0);
  /* The join, on the other thread, waits: this thread may push again,
   * and does. */
  struct timespec ts = {0, 50 * 1000000};
  nanosleep(&ts, NULL);
  CHECK(!__atomic_load_n(&j.done, __ATOMIC_SEQ_CST));
  CHECK_OK(fib_sem_post(&never));
  CHECK_EQ(pthread_join(other, NULL), 0);
  CHECK_OK(j.err);
  CHECK_EQ((intptr_t)j.result, 5);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&first));
  CHECK_OK(fib_sem_destroy(&never));
}

TEST_MAIN(T(nowait_host_loop_finishes_a_tree_on_2_workers),
          T(nowait_host_loop_finishes_a_tree_on_4_workers),
          T(nowait_host_loop_runs_a_pipeline_across_2_workers),
          T(nowait_host_loop_runs_a_pipeline_across_4_workers),
          T(run_once_sleeps_until_worker_0s_deadline_with_the_others_idle),
          T(run_once_returns_when_every_worker_waits_for_the_program),
          T(run_once_sleeps_until_worker_0s_io_while_the_others_wait),
          T(a_host_blocked_in_poll_on_the_io_fd_wakes_for_work_sent_to_worker_0),
          T(run_once_wakes_for_a_post_from_another_thread),
          T(run_join_collects_a_fiber_that_runs_on_worker_1),
          T(the_host_spawns_cancels_detaches_and_posts_between_calls),
          T(fib_run_takes_over_after_bounded_runs_and_they_start_again),
          T(destroy_between_bounded_runs_with_fibers_waiting),
          T(destroy_between_bounded_runs_with_fibers_running_on_other_workers),
          T(calls_from_inside_its_fibers_are_refused),
          T(run_join_reports_a_deadlock_and_leaves_the_fiber_joinable),
          T(a_cancel_sent_to_worker_0_between_calls_is_work_for_the_next),
          T(a_deadlock_after_the_hosts_pushes_between_calls_is_reported),
          T(a_reply_still_coming_is_waited_for_after_the_hosts_pushes),
          T(the_old_hosts_pushes_count_once_another_thread_makes_the_calls))
