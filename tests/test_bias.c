/* SPDX-License-Identifier: MIT */
/* test_bias.c -- the lock a worker may keep (src/sched/bias.h), under the
 * shared channels: a run of calls from one worker makes it keep the lock,
 * after which its calls take no atomic; another worker's fiber, a plain
 * thread, a deadline's clean-up and a select get it back from a busy
 * keeper; a lock asked back often needs ever longer runs; idle workers, hosts
 * between calls and destroys keep nothing; counts stay exact throughout. */
#include "fiber_helpers.h"

#include <fibers.h>

#include "sched/bias.h"
#include "sched/fiber.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

static struct fib__block blk;
static long counter; /* guarded by blk: ThreadSanitizer checks the hand-backs */
static atomic_int phase;

/* The worker running the caller (a fiber's own), read through a call that
 * is not merged across a switch. */
static struct fib_runtime *this_worker(void) { return fib__tl_runtime_now(); }

static int kept_here(void) { return fib__block_kept(&blk, this_worker()); }

static void count_once(void) {
  fib__block_lock(&blk, fib__fiber_self());
  counter++;
  fib__block_unlock(&blk, this_worker());
}

static unsigned revokes(void) {
  return (__atomic_load_n(&blk.bias, __ATOMIC_ACQUIRE) & FIB__BIAS_REVOKES) >>
         FIB__BIAS_REVOKES_SHIFT;
}

static int kept_by_anyone(void) {
  return (__atomic_load_n(&blk.bias, __ATOMIC_ACQUIRE) & FIB__BIAS_KEPT) != 0;
}

static void reset(void) {
  blk.word = blk.bias = 0;
  counter = 0;
  atomic_store(&phase, 0);
}

static void spawn_on(fib_runtime *rt, unsigned worker, fib_fn fn, void *arg) {
  fib_attr attr = {0};
  attr.worker = worker + 1;
  CHECK_OK(fib_spawn(rt, fn, arg, &attr, NULL));
}

static void yield_until(int p) {
  while (atomic_load(&phase) != p)
    CHECK_OK(fib_yield());
}

/* ---- a keeper made, and kept */

static void *keeper_by_runs(void *arg) {
  (void)arg;
  for (unsigned i = 0; i < FIB__BIAS_RUN; i++) {
    count_once();
    CHECK(!kept_here()); /* the first call starts the run: not yet */
  }
  count_once();
  CHECK(kept_here());
  CHECK_EQ(this_worker()->bias_n, 1);
  for (int i = 0; i < 1000; i++) {
    count_once();
    CHECK(kept_here());
    CHECK_EQ(__atomic_load_n(&blk.word, __ATOMIC_RELAXED), 0); /* untouched */
  }
  return NULL;
}

TEST(a_run_of_calls_from_one_worker_makes_it_keep_the_lock) {
  reset();
  fib_runtime *rt = new_workers(2);
  spawn_on(rt, 1, keeper_by_runs, NULL);
  run_to_end(rt);
  CHECK_EQ(counter, FIB__BIAS_RUN + 1 + 1000);
  CHECK(!kept_by_anyone()); /* let go once idle, which is no revoke */
  CHECK_EQ(revokes(), 0);
}

/* ---- asked back from a busy keeper */

/* Keep blk on this worker, then stay busy (yielding, never idle) until
 * the asker is through. */
static void *busy_keeper(void *arg) {
  (void)arg;
  while (!kept_here())
    count_once();
  atomic_store(&phase, 1);
  yield_until(2);
  return NULL;
}

static void *fiber_asker(void *arg) {
  (void)arg;
  yield_until(1);
  CHECK(kept_by_anyone());
  fib__block_lock(&blk, fib__fiber_self());
  CHECK(!kept_by_anyone()); /* given back, and ours through the word */
  CHECK_EQ(__atomic_load_n(&blk.word, __ATOMIC_RELAXED), 1);
  counter++;
  fib__block_unlock(&blk, this_worker());
  atomic_store(&phase, 2);
  return NULL;
}

TEST(a_busy_keeper_gives_the_lock_to_another_workers_fiber) {
  reset();
  fib_runtime *rt = new_workers(2);
  spawn_on(rt, 1, busy_keeper, NULL);
  spawn_on(rt, 0, fiber_asker, NULL);
  run_to_end(rt);
  CHECK_EQ(counter, FIB__BIAS_RUN + 2);
  CHECK_EQ(revokes(), 1);
}

static void *thread_asker(void *arg) {
  (void)arg;
  while (atomic_load(&phase) != 1)
    sched_yield();
  fib__block_lock(&blk, NULL);
  CHECK(!kept_by_anyone());
  counter++;
  fib__block_unlock(&blk, NULL);
  atomic_store(&phase, 2);
  return NULL;
}

TEST(a_busy_keeper_gives_the_lock_to_a_plain_thread) {
  reset();
  fib_runtime *rt = new_workers(2);
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, thread_asker, NULL), 0);
  spawn_on(rt, 1, busy_keeper, NULL);
  run_to_end(rt);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(counter, FIB__BIAS_RUN + 2);
  CHECK_EQ(revokes(), 1);
}

/* ---- asked back often: ever longer runs before a keep */

static unsigned long calls_to_keep[FIB__BIAS_MAX_REVOKES + 2];

static void *keeps_and_is_asked(void *arg) {
  (void)arg;
  for (unsigned round = 0; round < FIB__BIAS_MAX_REVOKES + 2; round++) {
    unsigned long calls = 0;
    while (!kept_here()) {
      count_once();
      calls++;
    }
    calls_to_keep[round] = calls;
    atomic_store(&phase, 1);
    yield_until(2);
    atomic_store(&phase, 0);
  }
  atomic_store(&phase, 3);
  return NULL;
}

static void *asks_each_time(void *arg) {
  (void)arg;
  for (;;) {
    int p;
    while ((p = atomic_load(&phase)) != 1 && p != 3)
      CHECK_OK(fib_yield());
    if (p == 3)
      return NULL;
    count_once();
    atomic_store(&phase, 2);
    while (atomic_load(&phase) == 2)
      CHECK_OK(fib_yield());
  }
}

TEST(a_lock_asked_back_often_needs_ever_longer_runs) {
  reset();
  fib_runtime *rt = new_workers(2);
  spawn_on(rt, 1, keeps_and_is_asked, NULL);
  spawn_on(rt, 0, asks_each_time, NULL);
  run_to_end(rt);
  /* each round's run: 64 << the asks so far, up to 64 << 8, plus the
   * call that starts it (the asker's call ended the last one) */
  for (unsigned r = 0; r < FIB__BIAS_MAX_REVOKES + 2; r++) {
    unsigned shift = r < FIB__BIAS_MAX_REVOKES ? r : FIB__BIAS_MAX_REVOKES;
    CHECK_EQ(calls_to_keep[r], (FIB__BIAS_RUN << shift) + 1);
  }
  CHECK_EQ(revokes(), FIB__BIAS_MAX_REVOKES);
  CHECK(!kept_by_anyone());
}

/* ---- a keeper that goes on calling after it was asked */

static void *keeps_calling(void *arg) {
  (void)arg;
  while (!kept_here())
    count_once();
  atomic_store(&phase, 1);
  while (atomic_load(&phase) != 2) { /* calls, and passes through its loop */
    count_once();
    CHECK_OK(fib_yield());
  }
  return NULL;
}

/* Keeps the asker's worker busy, so that the asker looks only now and
 * then: a keep made again between two looks would keep it out for good. */
static void *slow_neighbour(void *arg) {
  (void)arg;
  while (atomic_load(&phase) != 2) {
    for (volatile int i = 0; i < 200000; i++)
      ;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(a_keeper_that_goes_on_calling_lets_the_asker_in) {
  reset();
  fib_runtime *rt = new_workers(2);
  spawn_on(rt, 1, keeps_calling, NULL);
  spawn_on(rt, 0, fiber_asker, NULL);
  spawn_on(rt, 0, slow_neighbour, NULL);
  run_to_end(rt);
  CHECK(counter >= FIB__BIAS_RUN + 2);
}

/* ---- many fibers on every worker, and a plain thread: exact */

struct crowd {
  long n;
};

static void *crowd_fiber(void *arg) {
  const struct crowd *c = arg;
  for (long i = 0; i < c->n; i++) {
    count_once();
    if (i % 97 == 0)
      CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *crowd_thread(void *arg) {
  const struct crowd *c = arg;
  for (long i = 0; i < c->n; i++) {
    fib__block_lock(&blk, NULL);
    counter++;
    fib__block_unlock(&blk, NULL);
  }
  return NULL;
}

TEST(counts_stay_exact_while_workers_keep_and_give_back) {
  for (unsigned workers = 2; workers <= 4; workers *= 2) {
    reset();
    struct crowd c = {.n = scaled(20000)}, t = {.n = scaled(2000)};
    fib_runtime *rt = new_workers(workers);
    fib_attr migratable = {0};
    migratable.flags = FIB_MIGRATABLE;
    for (unsigned w = 0; w < workers; w++) {
      spawn_on(rt, w, crowd_fiber, &c); /* placed: each worker's own run */
      CHECK_OK(fib_spawn(rt, crowd_fiber, &c, &migratable, NULL));
    }
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, crowd_thread, &t), 0);
    run_to_end(rt);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(counter, 2 * (long)workers * c.n + t.n);
    CHECK(!kept_by_anyone());
  }
}

/* ---- channels */

static fib_chan ch;

/* Send and take back `n` values on ch alone: a run of calls from this
 * worker. */
static void make_kept(int n) {
  for (int i = 0; i < n; i++) {
    long v = i, got = -1;
    CHECK_OK(fib_chan_send(&ch, &v));
    CHECK_OK(fib_chan_recv(&ch, &got));
    CHECK_EQ(got, v);
  }
}

/* A fresh 4-slot channel `ch`, and a two-worker run to the end of `one`
 * on worker 1 and `zero` (and `zero_too`, if any) on worker 0. */
static void run_on_channel(fib_fn one, fib_fn zero, fib_fn zero_too) {
  reset();
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_chan_init(&ch, sizeof(long), 4));
  spawn_on(rt, 1, one, NULL);
  spawn_on(rt, 0, zero, NULL);
  if (zero_too)
    spawn_on(rt, 0, zero_too, NULL);
  run_to_end(rt);
  CHECK_OK(fib_chan_destroy(&ch));
}

struct flow {
  long sum;       /* the receiver's */
  long n;         /* values each sender sends */
  atomic_int senders_done;
};

static void *kept_receiver(void *arg) {
  struct flow *f = arg;
  make_kept(200);
  CHECK_EQ(this_worker()->bias_n, 1); /* the channel: kept here */
  atomic_store(&phase, 1);
  for (long i = 0; i < 3 * f->n; i++) {
    long v;
    CHECK_OK(fib_chan_recv(&ch, &v));
    f->sum += v;
  }
  return NULL;
}

static void *other_sender(void *arg) {
  struct flow *f = arg;
  yield_until(1);
  for (long i = 0; i < f->n; i++)
    CHECK_OK(fib_chan_send(&ch, &i));
  return NULL;
}

static void *select_sender(void *arg) {
  struct flow *f = arg;
  yield_until(1);
  for (long i = 0; i < f->n; i++) {
    fib_select_case k[1] = {{.op = FIB_SELECT_SEND, .chan = &ch, .elem = &i}};
    CHECK_EQ(fib_select(k, 1), 0);
    CHECK_OK(k[0].err);
  }
  return NULL;
}

static void *plain_sender(void *arg) {
  struct flow *f = arg;
  while (atomic_load(&phase) != 1)
    sched_yield();
  for (long i = 0; i < f->n; i++)
    CHECK_OK(fib_chan_send(&ch, &i));
  return NULL;
}

TEST(a_channel_one_worker_keeps_serves_other_workers_and_threads) {
  reset();
  struct flow f = {.n = scaled(3000)};
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  opts.flags = FIB_ACCEPT_POSTS; /* its receiver may wait for the thread */
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  CHECK_OK(fib_chan_init(&ch, sizeof(long), 8));
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, plain_sender, &f), 0);
  spawn_on(rt, 1, kept_receiver, &f);
  spawn_on(rt, 0, other_sender, &f);
  spawn_on(rt, 0, select_sender, &f);
  run_to_end(rt);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(f.sum, 3 * (f.n * (f.n - 1) / 2));
  CHECK_EQ(fib_chan_len(&ch), 0);
  CHECK_OK(fib_chan_destroy(&ch));
}

/* A waiter from another worker whose deadline passes takes its node back
 * under the lock, which a busy worker keeps. */
static void *kept_and_busy(void *arg) {
  (void)arg;
  make_kept(200);
  CHECK_EQ(this_worker()->bias_n, 1);
  atomic_store(&phase, 1);
  yield_until(2);
  return NULL;
}

static void *times_out_on_kept(void *arg) {
  (void)arg;
  yield_until(1);
  long v = -1;
  CHECK_EQ(fib_chan_recv_until(&ch, &v, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_EQ(v, -1);
  long w = 7;
  CHECK_OK(fib_chan_send(&ch, &w));
  CHECK_OK(fib_chan_recv(&ch, &v));
  CHECK_EQ(v, 7);
  CHECK_EQ(fib_chan_len(&ch), 0);
  atomic_store(&phase, 2);
  return NULL;
}

TEST(a_deadline_from_another_worker_on_a_kept_channel) {
  run_on_channel(kept_and_busy, times_out_on_kept, NULL);
}

/* A select whose deadline passes while another worker keeps its channel
 * says so: its clean-up waits for the keeper, which must not cost it the
 * reason it woke. */
static atomic_int select_done;

static void *keeps_by_looking(void *arg) {
  (void)arg;
  for (unsigned long i = 0; !atomic_load(&select_done); i++) {
    (void)fib_chan_len(&ch); /* a call under the lock: it counts */
    if (this_worker()->bias_n == 1)
      atomic_store(&phase, 1);
    if (i % 10 == 0)
      CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *selects_until_a_deadline(void *arg) {
  (void)arg;
  yield_until(1);
  long v = -1;
  fib_select_case k[1] = {{.op = FIB_SELECT_RECV, .chan = &ch, .elem = &v}};
  CHECK_EQ(fib_select_until(k, 1, fib_now_ns() + 20 * MS), FIB_ETIMEDOUT);
  CHECK_EQ(v, -1);
  atomic_store(&select_done, 1);
  return NULL;
}

static void *yields_until_the_select_is_done(void *arg) {
  (void)arg;
  while (!atomic_load(&select_done))
    CHECK_OK(fib_yield());
  return NULL;
}

TEST(a_select_that_times_out_on_a_kept_channel_says_so) {
  for (int round = 0; round < 5; round++) {
    atomic_store(&select_done, 0);
    run_on_channel(keeps_by_looking, selects_until_a_deadline,
                   yields_until_the_select_is_done);
  }
}

static void *destroys_what_it_keeps(void *arg) {
  (void)arg;
  make_kept(200);
  CHECK_EQ(this_worker()->bias_n, 1);
  CHECK_OK(fib_chan_destroy(&ch));
  CHECK_EQ(this_worker()->bias_n, 0);
  CHECK_OK(fib_chan_init(&ch, sizeof(long), 4));
  atomic_store(&phase, 1);
  long v;
  CHECK_OK(fib_chan_recv(&ch, &v));
  CHECK_EQ(v, 42);
  return NULL;
}

static void *sends_after_the_destroy(void *arg) {
  (void)arg;
  yield_until(1);
  long v = 42;
  CHECK_OK(fib_chan_send(&ch, &v));
  return NULL;
}

TEST(a_keeper_that_destroys_its_channel_forgets_it) {
  run_on_channel(destroys_what_it_keeps, sends_after_the_destroy, NULL);
}

/* A host's worker 0 keeps nothing between its calls: a plain thread (the
 * host itself) sends without waiting for a loop that is not running. */
static void *host_fiber(void *arg) {
  long *got = arg;
  make_kept(200);
  CHECK_EQ(this_worker()->bias_n, 1);
  CHECK_OK(fib_chan_recv(&ch, got));
  return NULL;
}

TEST(a_host_between_calls_keeps_nothing) {
  reset();
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_chan_init(&ch, sizeof(long), 4));
  long got = -1;
  spawn_on(rt, 0, host_fiber, &got);
  /* one round: the fiber keeps the channel, then parks in its receive */
  CHECK_EQ(fib_run_nowait(rt), 1);
  CHECK_EQ(got, -1);
  CHECK_EQ(rt->bias_n, 0);
  long v = 5;
  CHECK_OK(fib_chan_send(&ch, &v)); /* from the host's thread, between calls */
  while (fib_run_nowait(rt) > 0)
    ;
  CHECK_EQ(got, 5);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_chan_destroy(&ch));
}

TEST_MAIN(T(a_run_of_calls_from_one_worker_makes_it_keep_the_lock),
          T(a_busy_keeper_gives_the_lock_to_another_workers_fiber),
          T(a_busy_keeper_gives_the_lock_to_a_plain_thread),
          T(a_lock_asked_back_often_needs_ever_longer_runs),
          T(a_keeper_that_goes_on_calling_lets_the_asker_in),
          T(counts_stay_exact_while_workers_keep_and_give_back),
          T(a_channel_one_worker_keeps_serves_other_workers_and_threads),
          T(a_deadline_from_another_worker_on_a_kept_channel),
          T(a_select_that_times_out_on_a_kept_channel_says_so),
          T(a_keeper_that_destroys_its_channel_forgets_it),
          T(a_host_between_calls_keeps_nothing))
