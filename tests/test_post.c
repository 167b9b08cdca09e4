/* SPDX-License-Identifier: MIT */
/* test_post.c -- the thread-safe way into a runtime: fib_post and fib_call
 * from plain threads, from fibers of other runtimes on other threads, and
 * into runtimes with several workers; order, results, and a runtime that
 * waits for posts instead of reporting a deadlock. */
#include "fiber_helpers.h"

#include <fibers.h>

#include <pthread.h>
#include <sched.h>
#include <stdint.h>

static fib_runtime *runtime_with(unsigned flags, unsigned workers) {
  fib_runtime_opts opts = {0};
  opts.flags = flags;
  opts.workers = workers;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  return rt;
}

/* ---- posts from a plain thread, in order, to a runtime whose only fiber
 * waits for what the posts do */

struct feed {
  fib_runtime *rt;
  fib_sem sem;     /* posted functions post it; the runtime's fiber waits */
  long next;       /* the order the posted functions ran in */
  long count;
  int bad_order;
};

struct item {
  struct feed *f;
  long seq;
};

static void *posted_fn(void *arg) {
  struct item *it = arg;
  /* Atomic: with several workers, posted fibers run on several threads. */
  if (__atomic_fetch_add(&it->f->next, 1, __ATOMIC_RELAXED) != it->seq)
    __atomic_store_n(&it->f->bad_order, 1, __ATOMIC_RELAXED);
  CHECK_OK(fib_sem_post(&it->f->sem));
  return NULL;
}

static void *poster_thread(void *arg) {
  struct feed *f = arg;
  struct item *items = calloc((size_t)f->count, sizeof *items);
  CHECK(items != NULL);
  for (long i = 0; i < f->count; i++) {
    items[i].f = f;
    items[i].seq = i;
    CHECK_OK(fib_post(f->rt, posted_fn, &items[i]));
    if (i % 64 == 0)
      usleep(100); /* let the runtime fall asleep now and then */
  }
  return items; /* freed by the test once the runtime is done */
}

static void *waits_for_all(void *arg) {
  struct feed *f = arg;
  for (long i = 0; i < f->count; i++)
    CHECK_OK(fib_sem_wait(&f->sem));
  return NULL;
}

static void posts_from_a_thread(unsigned workers) {
  struct feed f = {0};
  f.count = scaled(5000);
  f.rt = runtime_with(FIB_ACCEPT_POSTS, workers);
  CHECK_OK(fib_sem_init(&f.sem, 0));
  CHECK_OK(fib_spawn(f.rt, waits_for_all, &f, NULL, NULL));
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, poster_thread, &f));
  CHECK_OK(fib_run(f.rt));
  void *items;
  CHECK_OK(pthread_join(t, &items));
  free(items);
  CHECK_EQ(f.next, f.count);
  if (workers <= 1)
    CHECK_EQ(f.bad_order, 0); /* one worker: posts run in post order */
  CHECK_OK(fib_sem_destroy(&f.sem));
  CHECK_OK(fib_runtime_destroy(f.rt));
}

TEST(posts_from_a_thread_run_in_order) { posts_from_a_thread(1); }

TEST(posts_from_a_thread_reach_a_runtime_with_workers) {
  posts_from_a_thread(2);
}

/* ---- posts before a run, more than a turn of the loop spawns at once
 * (post.c): every one runs in that run, in order on one worker, even
 * when the first fiber is gone at once and other workers are idle */

static long g_before_ran;
static long g_before_next;
static int g_before_bad_order;

static void *counts_in_order(void *arg) {
  long seq = (long)(uintptr_t)arg;
  if (__atomic_fetch_add(&g_before_next, 1, __ATOMIC_RELAXED) != seq)
    __atomic_store_n(&g_before_bad_order, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_before_ran, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *returns_at_once(void *arg) { return arg; }

TEST(posts_made_before_a_run_all_run_in_it) {
  for (unsigned workers = 1; workers <= 4; workers *= 2) {
    long n = scaled(5000);
    g_before_ran = g_before_next = 0;
    g_before_bad_order = 0;
    fib_runtime *rt = runtime_with(0, workers);
    CHECK_OK(fib_spawn(rt, returns_at_once, NULL, NULL, NULL));
    for (long i = 0; i < n; i++)
      CHECK_OK(fib_post(rt, counts_in_order, (void *)(uintptr_t)i));
    CHECK_OK(fib_run(rt));
    CHECK_EQ(__atomic_load_n(&g_before_ran, __ATOMIC_RELAXED), n);
    if (workers == 1)
      CHECK_EQ(g_before_bad_order, 0);
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* ---- posts that wait for later posts: the runtime starts posts a batch
 * per turn (post.c), and a batch whose fibers all wait must not keep the
 * post that releases them from starting */

struct gate {
  fib_sem open;  /* the last post posts it once for every other one */
  long n;
  long arrived;
  long passed;
};

static void *waits_at_the_gate(void *arg) {
  struct gate *g = arg;
  long k = __atomic_add_fetch(&g->arrived, 1, __ATOMIC_RELAXED);
  if (k == g->n) { /* the last: open for all the others */
    for (long i = 1; i < g->n; i++)
      CHECK_OK(fib_sem_post(&g->open));
  } else {
    CHECK_OK(fib_sem_wait(&g->open));
  }
  __atomic_fetch_add(&g->passed, 1, __ATOMIC_RELAXED);
  return NULL;
}

TEST(posts_that_wait_for_later_posts_do_not_hang) {
  for (unsigned workers = 1; workers <= 2; workers++) {
    struct gate g = {.n = scaled(2000)};
    fib_runtime *rt = runtime_with(FIB_ACCEPT_POSTS, workers);
    CHECK_OK(fib_sem_init(&g.open, 0));
    CHECK_OK(fib_spawn(rt, returns_at_once, NULL, NULL, NULL));
    for (long i = 0; i < g.n; i++)
      CHECK_OK(fib_post(rt, waits_at_the_gate, &g));
    CHECK_OK(fib_run(rt));
    CHECK_EQ(g.arrived, g.n);
    CHECK_EQ(g.passed, g.n);
    CHECK_OK(fib_sem_destroy(&g.open));
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* ---- several plain threads posting at once: every post runs once, and
 * on one worker each thread's posts run in the order it made them */

enum { POSTERS = 3 };

struct poster {
  fib_runtime *rt;
  long count;
  long next;     /* the next sequence number expected from this poster */
  int bad_order;
  long *total;   /* posts run, all posters */
  fib_sem *sem;  /* posted once per post run */
};

struct post_of {
  struct poster *p;
  long seq;
};

static void *runs_one_of(void *arg) {
  struct post_of *o = arg;
  if (__atomic_fetch_add(&o->p->next, 1, __ATOMIC_RELAXED) != o->seq)
    __atomic_store_n(&o->p->bad_order, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(o->p->total, 1, __ATOMIC_RELAXED);
  CHECK_OK(fib_sem_post(o->p->sem));
  return NULL;
}

static void *posts_its_share(void *arg) {
  struct poster *p = arg;
  struct post_of *items = calloc((size_t)p->count, sizeof *items);
  CHECK(items != NULL);
  for (long i = 0; i < p->count; i++) {
    items[i].p = p;
    items[i].seq = i;
    CHECK_OK(fib_post(p->rt, runs_one_of, &items[i]));
  }
  return items; /* freed by the test once the runtime is done */
}

struct sem_count {
  fib_sem *sem;
  long count;
};

static void *waits_for_count(void *arg) {
  struct sem_count *w = arg;
  for (long i = 0; i < w->count; i++)
    CHECK_OK(fib_sem_wait(w->sem));
  return NULL;
}

TEST(posts_from_several_threads_all_run_once) {
  for (unsigned workers = 1; workers <= 4; workers *= 2) {
    fib_runtime *rt = runtime_with(FIB_ACCEPT_POSTS, workers);
    fib_sem sem;
    CHECK_OK(fib_sem_init(&sem, 0));
    long total = 0, each = scaled(4000);
    struct poster ps[POSTERS];
    for (int i = 0; i < POSTERS; i++)
      ps[i] = (struct poster){rt, each, 0, 0, &total, &sem};
    struct sem_count all = {&sem, POSTERS * each};
    CHECK_OK(fib_spawn(rt, waits_for_count, &all, NULL, NULL));
    pthread_t t[POSTERS];
    for (int i = 0; i < POSTERS; i++)
      CHECK_OK(pthread_create(&t[i], NULL, posts_its_share, &ps[i]));
    CHECK_OK(fib_run(rt));
    for (int i = 0; i < POSTERS; i++) {
      void *items;
      CHECK_OK(pthread_join(t[i], &items));
      free(items);
      CHECK_EQ(ps[i].next, each);
      if (workers == 1)
        CHECK_EQ(ps[i].bad_order, 0);
    }
    CHECK_EQ(total, POSTERS * each);
    CHECK_OK(fib_sem_destroy(&sem));
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* ---- fib_call from a plain thread */

static void *triple(void *arg) { return (void *)((uintptr_t)arg * 3); }

static void *stay_until_told(void *arg) {
  fib_sem *stop = arg;
  CHECK_OK(fib_sem_wait(stop));
  return NULL;
}

struct runner {
  fib_runtime *rt;
  int result;
};

static void *run_thread(void *arg) {
  struct runner *r = arg;
  r->result = fib_run(r->rt);
  return NULL;
}

static void *post_stop(void *arg) {
  CHECK_OK(fib_sem_post(arg));
  return NULL;
}

TEST(call_from_a_plain_thread_returns_the_result) {
  for (unsigned workers = 1; workers <= 2; workers++) {
    struct runner r = {runtime_with(FIB_ACCEPT_POSTS, workers), -1};
    fib_sem stop;
    CHECK_OK(fib_sem_init(&stop, 0));
    CHECK_OK(fib_spawn(r.rt, stay_until_told, &stop, NULL, NULL));
    pthread_t t;
    CHECK_OK(pthread_create(&t, NULL, run_thread, &r));
    for (uintptr_t i = 0; i < (uintptr_t)scaled(2000); i++) {
      void *out;
      CHECK_OK(fib_call(r.rt, triple, (void *)i, &out));
      CHECK_EQ((uintptr_t)out, 3 * i);
    }
    CHECK_OK(fib_post(r.rt, post_stop, &stop));
    CHECK_OK(pthread_join(t, NULL));
    CHECK_OK(r.result);
    CHECK_OK(fib_sem_destroy(&stop));
    CHECK_OK(fib_runtime_destroy(r.rt));
  }
}

/* ---- fib_call between runtimes on two threads, both ways */

struct pair {
  fib_runtime *other;
  long calls;
  long sum;
};

static void *add_one(void *arg) { return (void *)((uintptr_t)arg + 1); }

static void *caller(void *arg) {
  struct pair *p = arg;
  for (long i = 0; i < p->calls; i++) {
    void *out;
    CHECK_OK(fib_call(p->other, add_one, (void *)(uintptr_t)i, &out));
    p->sum += (long)(uintptr_t)out;
  }
  return NULL;
}

struct side {
  fib_runtime *rt;
  struct pair pair;
  fib_sem *done_here;   /* posted when this side's caller is done */
  fib_sem *done_there;  /* the other side's, waited on before ending */
  int result;
};

static void *side_main(void *arg) {
  struct side *s = arg;
  caller(&s->pair);
  CHECK_OK(fib_call(s->pair.other, post_stop, s->done_there, NULL));
  return NULL;
}

static void *side_thread(void *arg) {
  struct side *s = arg;
  s->result = fib_run(s->rt);
  return NULL;
}

TEST(calls_between_runtimes_on_two_threads) {
  for (unsigned workers = 1; workers <= 2; workers++) {
    fib_runtime *a = runtime_with(FIB_ACCEPT_POSTS, workers);
    fib_runtime *b = runtime_with(FIB_ACCEPT_POSTS, 1);
    fib_sem a_done, b_done; /* each side stays until the other is done */
    CHECK_OK(fib_sem_init(&a_done, 0));
    CHECK_OK(fib_sem_init(&b_done, 0));
    long n = scaled(3000);
    struct side sa = {a, {b, n, 0}, &a_done, &b_done, -1};
    struct side sb = {b, {a, n, 0}, &b_done, &a_done, -1};
    CHECK_OK(fib_spawn(a, side_main, &sa, NULL, NULL));
    CHECK_OK(fib_spawn(a, stay_until_told, &a_done, NULL, NULL));
    CHECK_OK(fib_spawn(b, side_main, &sb, NULL, NULL));
    CHECK_OK(fib_spawn(b, stay_until_told, &b_done, NULL, NULL));
    pthread_t ta, tb;
    CHECK_OK(pthread_create(&ta, NULL, side_thread, &sa));
    CHECK_OK(pthread_create(&tb, NULL, side_thread, &sb));
    CHECK_OK(pthread_join(ta, NULL));
    CHECK_OK(pthread_join(tb, NULL));
    CHECK_OK(sa.result);
    CHECK_OK(sb.result);
    CHECK_EQ(sa.pair.sum, n * (n + 1) / 2);
    CHECK_EQ(sb.pair.sum, n * (n + 1) / 2);
    CHECK_OK(fib_sem_destroy(&a_done));
    CHECK_OK(fib_sem_destroy(&b_done));
    CHECK_OK(fib_runtime_destroy(a));
    CHECK_OK(fib_runtime_destroy(b));
  }
}

/* ---- a call into one's own runtime, and the errors */

static void *calls_itself(void *arg) {
  (void)arg;
  void *out;
  CHECK_OK(fib_call(fib_runtime_current(), triple, (void *)7, &out));
  CHECK_EQ((uintptr_t)out, 21u);
  return NULL;
}

TEST(a_fiber_may_call_into_its_own_runtime) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, calls_itself, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt)); /* the call marks it: no false deadlock */
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *wait_forever(void *arg) {
  CHECK_OK(fib_sem_wait(arg));
  return NULL;
}

TEST(errors_and_deadlock_rules) {
  fib_runtime *rt = new_runtime();
  CHECK_EQ(fib_post(NULL, triple, NULL), FIB_EINVAL);
  CHECK_EQ(fib_post(rt, NULL, NULL), FIB_EINVAL);
  CHECK_EQ(fib_call(rt, NULL, NULL, NULL), FIB_EINVAL);
  fib_runtime_opts bad = {0};
  bad.flags = 1u << 20;
  fib_runtime *x;
  CHECK_EQ(fib_runtime_create(&x, &bad), FIB_EINVAL);
  /* Without posts, a fiber nothing can wake is a deadlock, as before. */
  fib_sem s;
  CHECK_OK(fib_sem_init(&s, 0));
  CHECK_OK(fib_spawn(rt, wait_forever, &s, NULL, NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  /* A post made before the run: it runs first, and the runtime is now
   * one that waits for posts (the post readies the waiter). */
  CHECK_OK(fib_post(rt, post_stop, &s));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_sem_destroy(&s));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- plain threads feeding fibers through shared channels */

struct pool_feed {
  fib_chan work;    /* threads -> fibers */
  fib_chan results; /* fibers -> the test's thread */
  long per_thread;
};

static void *feeder(void *arg) {
  struct pool_feed *p = arg;
  for (long i = 1; i <= p->per_thread; i++)
    CHECK_OK(fib_chan_send(&p->work, &i));
  return NULL;
}

static void *doubler(void *arg) {
  struct pool_feed *p = arg;
  long v;
  int err;
  while ((err = fib_chan_recv(&p->work, &v)) == 0) {
    long twice = 2 * v;
    CHECK_OK(fib_chan_send(&p->results, &twice));
  }
  CHECK_EQ(err, FIB_EPIPE);
  return NULL;
}

TEST(plain_threads_send_and_receive_on_shared_channels) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = runtime_with(FIB_ACCEPT_POSTS, workers);
    struct pool_feed p;
    p.per_thread = scaled(3000);
    CHECK_OK(fib_chan_init(&p.work, sizeof(long), 0)); /* shared: rt exists */
    CHECK_OK(fib_chan_init(&p.results, sizeof(long), 16));
    enum { THREADS = 3, FIBERS = 5 };
    for (int i = 0; i < FIBERS; i++)
      CHECK_OK(fib_spawn(rt, doubler, &p, NULL, NULL));
    struct runner r = {rt, -1};
    pthread_t run, feeders[THREADS];
    CHECK_OK(pthread_create(&run, NULL, run_thread, &r));
    for (int i = 0; i < THREADS; i++)
      CHECK_OK(pthread_create(&feeders[i], NULL, feeder, &p));
    long sum = 0, got = 0;
    while (got < THREADS * p.per_thread) { /* this thread receives */
      long v;
      CHECK_OK(fib_chan_recv(&p.results, &v));
      sum += v;
      got++;
    }
    for (int i = 0; i < THREADS; i++)
      CHECK_OK(pthread_join(feeders[i], NULL));
    long n = p.per_thread;
    CHECK_EQ(sum, THREADS * n * (n + 1));
    /* Nothing more comes: a deadline ends a thread's wait. */
    long v;
    CHECK_EQ(fib_chan_recv_until(&p.results, &v, fib_now_ns() + 2 * MS),
             FIB_ETIMEDOUT);
    CHECK_OK(fib_chan_close(&p.work)); /* the doublers end */
    CHECK_OK(pthread_join(run, NULL));
    CHECK_OK(r.result);
    CHECK_OK(fib_chan_destroy(&p.work));
    CHECK_OK(fib_chan_destroy(&p.results));
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

static void *close_later(void *arg) {
  usleep(20000);
  CHECK_OK(fib_chan_close(arg));
  return NULL;
}

TEST(a_close_wakes_a_blocked_thread) {
  fib_runtime *rt = runtime_with(0, 2); /* makes new channels shared */
  fib_chan c;
  CHECK_OK(fib_chan_init(&c, sizeof(int), 0));
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, close_later, &c));
  int v;
  CHECK_EQ(fib_chan_recv(&c, &v), FIB_EPIPE);
  CHECK_OK(pthread_join(t, NULL));
  CHECK_OK(fib_chan_destroy(&c));
  CHECK_OK(fib_runtime_destroy(rt));
  /* A local channel from a plain thread is still refused. */
  CHECK_OK(fib_chan_init(&c, sizeof(int), 0));
  CHECK_EQ(fib_chan_recv(&c, &v), FIB_EPERM);
  CHECK_OK(fib_chan_destroy(&c));
}

/* A post's wake-up may still be touching its runtime when what it posted
 * has run and the program, seeing its fibers done, destroys the runtime:
 * destroy waits for it. (Under TSan a missing wait is a reported race
 * between the free and the waker's accesses; natively, ASan's
 * use-after-free, when the timing hits.) */
struct late_wake {
  fib_runtime *rt;
  fib_sem *sem;
};

static void *post_to_sem(void *arg) {
  CHECK_OK(fib_sem_post(arg));
  return NULL;
}

static void *late_poster(void *arg) {
  struct late_wake *w = arg;
  CHECK_OK(fib_post(w->rt, post_to_sem, w->sem));
  return NULL;
}

static void *sem_waiter(void *arg) {
  CHECK_OK(fib_sem_wait(arg));
  return NULL;
}

TEST(destroy_waits_for_a_wake_up_still_under_way) {
  for (long i = 0, n = scaled(300); i < n; i++) {
    fib_runtime *rt = runtime_with(FIB_ACCEPT_POSTS, 1 + (unsigned)(i & 1));
    fib_sem sem;
    CHECK_OK(fib_sem_init(&sem, 0));
    struct late_wake w = {rt, &sem};
    CHECK_OK(fib_spawn(rt, sem_waiter, &sem, NULL, NULL));
    pthread_t t;
    CHECK_OK(pthread_create(&t, NULL, late_poster, &w));
    CHECK_OK(fib_run(rt)); /* the waiter and the post have finished */
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_OK(pthread_join(t, NULL));
    CHECK_OK(fib_sem_destroy(&sem));
  }
}

/* ---- posts and calls a runtime still has when it is destroyed: cancelled
 * (fibers.h, fib_runtime_destroy). The freed nodes are checked by the
 * leak checkers (ASan, valgrind): a node left behind is a leak. */

static long cancelled_ran; /* atomic: functions that ran, or started */

static void *must_not_run(void *arg) {
  __atomic_add_fetch(&cancelled_ran, 1, __ATOMIC_RELAXED);
  return arg;
}

/* A plain thread's fib_call(rt, fn, arg). */
struct thread_call {
  fib_runtime *rt;
  fib_fn fn;
  void *arg;
  void *result;
  int err;
};

static void *call_from_thread(void *arg) {
  struct thread_call *c = arg;
  c->err = fib_call(c->rt, c->fn, c->arg, &c->result);
  return NULL;
}

static void call_into_a_runtime_destroyed_first(unsigned workers) {
  __atomic_store_n(&cancelled_ran, 0, __ATOMIC_RELAXED);
  fib_runtime *rt = new_workers(workers);
  void *untouched = (void *)&untouched;
  struct thread_call c = {rt, must_not_run, (void *)1, untouched, 0};
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, call_from_thread, &c));
  /* The call is queued once the runtime has something to take (it has no
   * fiber, and no deadline: UINT64_MAX till then). */
  while (fib_runtime_next_ns(rt) != 0)
    sched_yield();
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(pthread_join(t, NULL));
  CHECK_EQ(c.err, FIB_ECANCELED);
  CHECK(c.result == untouched);
  CHECK_EQ(__atomic_load_n(&cancelled_ran, __ATOMIC_RELAXED), 0);
}

TEST(a_call_into_a_runtime_destroyed_before_it_runs_is_cancelled) {
  call_into_a_runtime_destroyed_first(1);
  call_into_a_runtime_destroyed_first(2);
  call_into_a_runtime_destroyed_first(3);
}

/* Callers that are fibers of another runtime (one worker, run by this
 * thread), each parked in fib_call once that runtime's bounded call has
 * returned. */
struct far_caller {
  fib_runtime *target;
  fib_fn fn;
  void *arg;
  int err;
  long *parked; /* callers that have posted */
};

static void *far_call(void *arg) {
  struct far_caller *c = arg;
  __atomic_add_fetch(c->parked, 1, __ATOMIC_RELAXED);
  void *r = NULL;
  c->err = fib_call(c->target, c->fn, c->arg, &r);
  return NULL;
}

enum { CANCEL_CALLERS = 10, CANCEL_POSTS = 40 };

static void queued_posts_and_calls_are_cancelled(unsigned workers) {
  __atomic_store_n(&cancelled_ran, 0, __ATOMIC_RELAXED);
  fib_runtime *rt = new_workers(workers);
  fib_runtime *callers = runtime_with(0, 1);
  /* More than a turn takes (32), and never taken: all on the stack. */
  for (int i = 0; i < CANCEL_POSTS; i++)
    CHECK_OK(fib_post(rt, must_not_run, NULL));
  long parked = 0;
  struct far_caller c[CANCEL_CALLERS];
  for (int i = 0; i < CANCEL_CALLERS; i++) {
    c[i] = (struct far_caller){rt, must_not_run, NULL, 1, &parked};
    CHECK_OK(fib_spawn(callers, far_call, &c[i], NULL, NULL));
  }
  /* One round: each caller posts and parks. */
  CHECK_EQ(fib_run_nowait(callers), CANCEL_CALLERS);
  CHECK_EQ(parked, CANCEL_CALLERS);
  CHECK_OK(fib_runtime_destroy(rt));
  /* Each was answered: the run ends, none deadlocked. */
  CHECK_OK(fib_run(callers));
  for (int i = 0; i < CANCEL_CALLERS; i++)
    CHECK_EQ(c[i].err, FIB_ECANCELED);
  CHECK_EQ(__atomic_load_n(&cancelled_ran, __ATOMIC_RELAXED), 0);
  CHECK_OK(fib_runtime_destroy(callers));
}

TEST(posts_and_calls_still_queued_at_destroy_are_cancelled) {
  queued_posts_and_calls_are_cancelled(1);
  queued_posts_and_calls_are_cancelled(2);
  queued_posts_and_calls_are_cancelled(4);
}

/* Calls whose fibers have started, each parked in its function for good
 * (a semaphore nobody posts), from fibers of another runtime and from a
 * plain thread; and posts of the runtime's own fiber to itself, one
 * started and one queued behind it, whose caller is discarded with it
 * (nobody to answer). */
static void *waits_for_good(void *arg) {
  __atomic_add_fetch(&cancelled_ran, 1, __ATOMIC_RELAXED);
  (void)fib_sem_wait(arg); /* discarded here */
  return NULL;
}

struct own_call {
  fib_sem *sem;
  int returned;
};

static void *calls_own_runtime(void *arg) {
  struct own_call *o = arg;
  (void)fib_call(fib_runtime_current(), waits_for_good, o->sem, NULL);
  o->returned = 1; /* never: discarded while it waits */
  return NULL;
}

static void started_calls_are_answered(unsigned workers) {
  __atomic_store_n(&cancelled_ran, 0, __ATOMIC_RELAXED);
  fib_runtime *rt = new_workers(workers);
  fib_sem sem;
  CHECK_OK(fib_sem_init(&sem, 0));
  fib_runtime *callers = runtime_with(0, 1);
  long parked = 0;
  struct far_caller c[CANCEL_CALLERS];
  for (int i = 0; i < CANCEL_CALLERS; i++) {
    c[i] = (struct far_caller){rt, waits_for_good, &sem, 1, &parked};
    CHECK_OK(fib_spawn(callers, far_call, &c[i], NULL, NULL));
  }
  CHECK_EQ(fib_run_nowait(callers), CANCEL_CALLERS);
  struct thread_call st = {rt, waits_for_good, &sem, NULL, 1};
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, call_from_thread, &st));
  struct own_call own = {&sem, 0};
  CHECK_OK(fib_spawn(rt, calls_own_runtime, &own, NULL, NULL));
  /* Every function has started (and waits): the callers' ten, the
   * thread's, and the own fiber's call (its post is taken at a later turn
   * than the fiber that made it). */
  const long started = CANCEL_CALLERS + 2;
  while (__atomic_load_n(&cancelled_ran, __ATOMIC_RELAXED) < started) {
    CHECK(fib_run_nowait(rt) > 0);
    sched_yield();
  }
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(pthread_join(t, NULL));
  CHECK_EQ(st.err, FIB_ECANCELED);
  CHECK_OK(fib_run(callers));
  for (int i = 0; i < CANCEL_CALLERS; i++)
    CHECK_EQ(c[i].err, FIB_ECANCELED);
  CHECK_EQ(own.returned, 0);
  CHECK_EQ(__atomic_load_n(&cancelled_ran, __ATOMIC_RELAXED), started);
  CHECK_OK(fib_runtime_destroy(callers));
  CHECK_OK(fib_sem_destroy(&sem)); /* no waiter left on it */
}

TEST(calls_whose_function_has_started_are_answered_at_destroy) {
  started_calls_are_answered(1);
  started_calls_are_answered(2);
  started_calls_are_answered(4);
}

/* A posted function that ends its fiber with fib_exit never comes back to
 * return its value: its call is answered with FIB_ECANCELED, and its node
 * freed (the leak checkers), as at destroy; so is a plain post's. */
static void *exits_its_fiber(void *arg) {
  __atomic_add_fetch(&cancelled_ran, 1, __ATOMIC_RELAXED);
  fib_exit(arg);
}

static void *calls_one_that_exits(void *arg) {
  (void)arg;
  void *r = (void *)&r;
  int err = fib_call(fib_runtime_current(), exits_its_fiber, NULL, &r);
  CHECK_EQ(err, FIB_ECANCELED);
  CHECK(r == (void *)&r); /* not written */
  return (void *)1;
}

static void calls_whose_function_exits(unsigned workers) {
  __atomic_store_n(&cancelled_ran, 0, __ATOMIC_RELAXED);
  struct runner r = {runtime_with(FIB_ACCEPT_POSTS, workers), -1};
  fib_sem stop;
  CHECK_OK(fib_sem_init(&stop, 0));
  CHECK_OK(fib_spawn(r.rt, stay_until_told, &stop, NULL, NULL));
  CHECK_OK(fib_post(r.rt, exits_its_fiber, NULL));
  fib_id own;
  CHECK_OK(fib_spawn(r.rt, calls_one_that_exits, NULL, NULL, &own));
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, run_thread, &r));
  struct thread_call c = {r.rt, exits_its_fiber, NULL, NULL, 0};
  call_from_thread(&c);
  CHECK_EQ(c.err, FIB_ECANCELED);
  CHECK_OK(fib_post(r.rt, post_stop, &stop));
  CHECK_OK(pthread_join(t, NULL));
  CHECK_OK(r.result);
  void *own_result = NULL;
  CHECK_OK(fib_run_join(r.rt, own, &own_result)); /* finished: at once */
  CHECK(own_result == (void *)1);
  CHECK_EQ(__atomic_load_n(&cancelled_ran, __ATOMIC_RELAXED), 3);
  CHECK_OK(fib_sem_destroy(&stop));
  CHECK_OK(fib_runtime_destroy(r.rt));
}

TEST(a_call_whose_function_calls_fib_exit_is_cancelled) {
  calls_whose_function_exits(1);
  calls_whose_function_exits(2);
}

TEST_MAIN(T(posts_from_a_thread_run_in_order),
          T(posts_from_a_thread_reach_a_runtime_with_workers),
          T(posts_made_before_a_run_all_run_in_it),
          T(posts_that_wait_for_later_posts_do_not_hang),
          T(posts_from_several_threads_all_run_once),
          T(call_from_a_plain_thread_returns_the_result),
          T(calls_between_runtimes_on_two_threads),
          T(a_fiber_may_call_into_its_own_runtime),
          T(errors_and_deadlock_rules),
          T(plain_threads_send_and_receive_on_shared_channels),
          T(a_close_wakes_a_blocked_thread),
          T(destroy_waits_for_a_wake_up_still_under_way),
          T(a_call_into_a_runtime_destroyed_before_it_runs_is_cancelled),
          T(posts_and_calls_still_queued_at_destroy_are_cancelled),
          T(calls_whose_function_has_started_are_answered_at_destroy),
          T(a_call_whose_function_calls_fib_exit_is_cancelled))
