/* SPDX-License-Identifier: MIT */
/* test_workers.c -- a runtime with several workers (fib_runtime_opts.
 * workers): trees of spawn and join with exact results, stealing of
 * fibers that never ran, pinning, a fiber that has run never changing
 * thread, join, detach, cancel and deadlines across workers, the end of a
 * run and its deadlock, idle workers that sleep, and what is refused for
 * now. Each case runs with 2 and with 4 workers where the count matters. */
#include "fiber_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include "sched/placement.h"
#include "sys.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- a spawn/join tree: skynet's shape, each leaf doing a little work */

struct tree {
  uint64_t first;  /* the leaves' numbers: first .. first + count - 1 */
  uint64_t count;
  unsigned spin;   /* busy work per leaf, so that stealing pays */
  int count_open;  /* keep open_now and open_peak (below) */
};

/* Fibers of a counted tree that have started and not finished: a node on
 * the path being worked on, or a joiner parked on a child. */
static long open_now, open_peak;

static void opened(void) {
  long now = __atomic_add_fetch(&open_now, 1, __ATOMIC_RELAXED);
  long peak = __atomic_load_n(&open_peak, __ATOMIC_RELAXED);
  while (now > peak &&
         !__atomic_compare_exchange_n(&open_peak, &peak, now, 0,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    ;
}

/* Threads seen running leaves: a few slots, filled with CAS. */
#define THREAD_SLOTS 8
static pthread_t seen_threads[THREAD_SLOTS];
static int seen_used[THREAD_SLOTS];

static void note_thread(void) {
  pthread_t me = pthread_self();
  for (int i = 0; i < THREAD_SLOTS; i++) {
    if (__atomic_load_n(&seen_used[i], __ATOMIC_ACQUIRE) == 2 &&
        pthread_equal(seen_threads[i], me))
      return;
    int expected = 0;
    if (__atomic_compare_exchange_n(&seen_used[i], &expected, 1, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      seen_threads[i] = me;
      __atomic_store_n(&seen_used[i], 2, __ATOMIC_RELEASE);
      return;
    }
    while (__atomic_load_n(&seen_used[i], __ATOMIC_ACQUIRE) != 2)
      ; /* another thread is filling it in */
    if (pthread_equal(seen_threads[i], me))
      return;
  }
}

static int threads_seen(void) {
  int n = 0;
  for (int i = 0; i < THREAD_SLOTS; i++)
    n += __atomic_load_n(&seen_used[i], __ATOMIC_ACQUIRE) == 2;
  return n;
}

static void *tree_node(void *arg) {
  struct tree *t = arg;
  if (t->count_open)
    opened();
  uint64_t sum = 0;
  if (t->count == 1) {
    spin(t->spin);
    note_thread();
    sum = t->first;
  } else {
    struct tree kids[10];
    fib_id ids[10];
    int n = 0;
    uint64_t per = (t->count + 9) / 10;
    for (uint64_t at = 0; at < t->count; at += per, n++) {
      kids[n].first = t->first + at;
      kids[n].count = t->count - at < per ? t->count - at : per;
      kids[n].spin = t->spin;
      kids[n].count_open = t->count_open;
      CHECK_OK(fib_spawn(NULL, tree_node, &kids[n], NULL, &ids[n]));
    }
    for (int i = 0; i < n; i++) {
      void *r;
      CHECK_OK(fib_join(ids[i], &r));
      sum += (uint64_t)(uintptr_t)r;
    }
  }
  if (t->count_open)
    __atomic_sub_fetch(&open_now, 1, __ATOMIC_RELAXED);
  return (void *)(uintptr_t)sum;
}

/* `roots` trees spawned from outside before the run; the first is the
 * runtime's first fiber (pinned), the others may be taken. */
static void tree_on(unsigned workers, unsigned roots, uint64_t leaves,
                    unsigned spin) {
  memset(seen_used, 0, sizeof seen_used);
  fib_runtime *rt = new_workers(workers);
  struct tree root[8];
  fib_id ids[8];
  for (unsigned i = 0; i < roots; i++) {
    root[i] = (struct tree){0, leaves, spin, 0};
    CHECK_OK(fib_spawn(rt, tree_node, &root[i], NULL, &ids[i]));
  }
  CHECK_OK(fib_run(rt));
  for (unsigned i = 0; i < roots; i++) { /* finished, never joined */
    fib_stack_info info;
    CHECK_EQ(fib_fiber_stack(rt, ids[i], &info), FIB_ESRCH);
  }
  CHECK_OK(fib_runtime_destroy(rt));
}

struct root_job {
  uint64_t leaves;
  unsigned spin;
  uint64_t sum;
};

static void *tree_root(void *arg) {
  struct root_job *j = arg;
  struct tree t = {0, j->leaves, j->spin, 0};
  fib_id id;
  CHECK_OK(fib_spawn(NULL, tree_node, &t, NULL, &id));
  void *r;
  CHECK_OK(fib_join(id, &r));
  j->sum = (uint64_t)(uintptr_t)r;
  return NULL;
}

static void tree_sum(unsigned workers, uint64_t leaves, unsigned spin) {
  memset(seen_used, 0, sizeof seen_used);
  fib_runtime *rt = new_workers(workers);
  struct root_job j = {leaves, spin, 0};
  CHECK_OK(fib_spawn(rt, tree_root, &j, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(j.sum, leaves * (leaves - 1) / 2);
}

TEST(tree_sums_exactly_on_2_workers) {
  tree_sum(2, (uint64_t)scaled(100000), 0);
}

TEST(tree_sums_exactly_on_4_workers) {
  tree_sum(4, (uint64_t)scaled(100000), 0);
}

TEST(a_tree_with_work_at_the_leaves_uses_every_worker) {
  /* Leaves that take a while: the idle workers must take some. A run
   * whose other thread the machine's other load kept off both cores
   * throughout (a loaded CI host, a short sanitizer-scaled tree) is run
   * again, a few times at most. */
  for (int run = 0; run < 5 && (run == 0 || threads_seen() < 2); run++)
    tree_sum(2, (uint64_t)scaled(2000) + 10, 200000);
  CHECK_EQ(threads_seen(), 2);
  for (int run = 0; run < 5 && (run == 0 || threads_seen() < 2); run++)
    tree_sum(4, (uint64_t)scaled(4000) + 10, 200000);
  CHECK(threads_seen() >= 2); /* four workers on two cores: at least two */
}

TEST(fibers_spawned_before_the_run_spread_too) {
  /* again a few times at most, as above */
  for (int run = 0; run < 5 && (run == 0 || threads_seen() < 2); run++)
    tree_on(3, 6, (uint64_t)scaled(500) + 10, 100000);
  CHECK(threads_seen() >= 2);
}

/* ---- stolen subtrees run one at a time */

static void *open_root(void *arg) {
  struct root_job *j = arg;
  struct tree t = {0, j->leaves, j->spin, 1};
  j->sum = (uint64_t)(uintptr_t)tree_node(&t);
  return NULL;
}

/* The fibers a thief takes are the oldest never-run ones, subtrees near
 * the root; it runs them, and a worker that takes its offer back runs
 * them, one after the other, each depth-first, as one worker would. When
 * they waited at the back of the run queue instead, the front's budget
 * started one every 64 pops while the subtree at the front was under way,
 * so many ran interleaved, each with its path of parked joiners (10^5
 * leaves on 2 workers: 25-250 open at once, against 11-15 now and 6 on
 * one worker). */
TEST(stolen_subtrees_run_one_at_a_time) {
  /* The order of a run of its own: the forced mode moves every fiber at
   * every turn on purpose, as no run would */
  char *forced = forced_mode_off();
  uint64_t leaves = (uint64_t)scaled(100000);
  long levels = 1; /* the path from the root to a leaf */
  for (uint64_t c = leaves; c > 1; c = (c + 9) / 10)
    levels++;
  /* three runs; one under a sanitizer's or qemu's scale (gcc's TSan
   * took ~18 s a run) */
  long rounds = scaled(3);
  for (long round = 0; round < rounds; round++) {
    __atomic_store_n(&open_now, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&open_peak, 0, __ATOMIC_RELAXED);
    fib_runtime *rt = new_workers(2);
    struct root_job j = {leaves, 200, 0};
    CHECK_OK(fib_spawn(rt, open_root, &j, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_EQ(j.sum, leaves * (leaves - 1) / 2);
    /* a path on each worker, and a path or two more on a worker whose
     * joiners wait for the other's subtrees */
    CHECK(__atomic_load_n(&open_peak, __ATOMIC_RELAXED) <= 4 * levels);
  }
  forced_mode_back(forced);
}

/* ---- pinning and no migration once started */

struct placement {
  pthread_t runner;     /* the thread that called fib_run */
  int on_runner;        /* the first fiber ran there, every time */
  int moved;            /* some fiber was seen on two threads */
  int children_on_parent;
  int children;
};


static void *stay_put(void *arg) {
  struct placement *p = arg;
  pthread_t first = current_thread();
  for (int i = 0; i < 50; i++) {
    spin(20000);
    CHECK_OK(fib_yield());
    if (!pthread_equal(first, current_thread()))
      __atomic_store_n(&p->moved, 1, __ATOMIC_RELAXED);
    if (i % 10 == 0)
      CHECK_OK(fib_sleep_ns(100000));
    if (!pthread_equal(first, current_thread()))
      __atomic_store_n(&p->moved, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

struct pinned_child {
  struct placement *p;
  pthread_t parent;
};

static void *pinned_child(void *arg) {
  struct pinned_child *c = arg;
  if (pthread_equal(c->parent, current_thread()))
    __atomic_add_fetch(&c->p->children_on_parent, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&c->p->children, 1, __ATOMIC_RELAXED);
  return stay_put(c->p);
}

static void *first_fiber(void *arg) {
  struct placement *p = arg;
  p->on_runner = pthread_equal(p->runner, current_thread());
  fib_id ids[16];
  struct pinned_child kids[8];
  for (int i = 0; i < 8; i++) { /* movable ones */
    CHECK_OK(fib_spawn(NULL, stay_put, p, NULL, &ids[i]));
  }
  fib_attr pin = {0};
  pin.flags = FIB_PINNED;
  for (int i = 0; i < 8; i++) {
    kids[i].p = p;
    kids[i].parent = current_thread();
    CHECK_OK(fib_spawn(NULL, pinned_child, &kids[i], &pin, &ids[8 + i]));
  }
  for (int i = 0; i < 16; i++) {
    CHECK_OK(fib_join(ids[i], NULL));
    if (!pthread_equal(p->runner, current_thread()))
      p->on_runner = 0;
  }
  return NULL;
}

TEST(first_fiber_and_pinned_fibers_stay_and_none_moves_once_started) {
  /* What holds without FIB_MIGRATABLE: the forced mode moves them on
   * purpose (test_migrate checks it) */
  char *forced = forced_mode_off();
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct placement p = {0};
    p.runner = pthread_self();
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, first_fiber, &p, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_EQ(p.on_runner, 1);
    CHECK_EQ(p.moved, 0);
    CHECK_EQ(p.children, 8);
    CHECK_EQ(p.children_on_parent, 8);
  }
  forced_mode_back(forced);
}

/* ---- placement: fib_attr.worker */

struct placed {
  pthread_t thread[4]; /* the thread each worker's placed fiber ran on */
  int moved;
};

struct placed_arg {
  struct placed *p;
  unsigned worker;
};

static void *record_thread(void *arg) {
  struct placed_arg *a = arg;
  pthread_t me = pthread_self();
  a->p->thread[a->worker] = me;
  for (int i = 0; i < 20; i++) {
    CHECK_OK(fib_sleep_ns(50000));
    if (!pthread_equal(me, pthread_self()))
      a->p->moved = 1;
  }
  return NULL;
}

/* From a fiber of a 4-worker runtime: fn(args[w]) on each worker w
 * (fib_attr.worker), all joined. */
static void on_each_of_4_workers(fib_fn fn, void *const args[4]) {
  fib_id ids[4];
  for (unsigned w = 0; w < 4; w++) {
    fib_attr attr = {0};
    attr.worker = w + 1;
    CHECK_OK(fib_spawn(NULL, fn, args[w], &attr, &ids[w]));
  }
  for (int w = 0; w < 4; w++)
    CHECK_OK(fib_join(ids[w], NULL));
}

static void *place_all(void *arg) {
  struct placed *p = arg;
  struct placed_arg args[4];
  for (unsigned w = 0; w < 4; w++)
    args[w] = (struct placed_arg){p, w};
  fib_attr bad = {0};
  bad.worker = 5;
  CHECK_EQ(fib_spawn(NULL, record_thread, &args[0], &bad, NULL), FIB_EINVAL);
  on_each_of_4_workers(record_thread,
                       (void *const[4]){&args[0], &args[1], &args[2],
                                        &args[3]});
  return NULL;
}

TEST(fibers_placed_on_a_worker_run_there) {
  struct placed p = {0};
  fib_runtime *rt = new_workers(4);
  CHECK_OK(fib_spawn(rt, place_all, &p, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(p.moved, 0);
  CHECK(pthread_equal(p.thread[0], pthread_self())); /* worker 0: here */
  for (int a = 0; a < 4; a++) /* four workers, four threads */
    for (int b = a + 1; b < 4; b++)
      CHECK(!pthread_equal(p.thread[a], p.thread[b]));
}

/* ---- where the worker threads start (placement.h) */

/* Bind this thread to `here`, the CPU it runs on (sched_getcpu): 0 if
 * that is not known (negative), and nothing is done. */
static int narrow_to_this_cpu(int here) {
  if (here < 0)
    return 0;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(here, &one);
  CHECK_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  return 1;
}

/* The plan starts the k-th thread on the k-th CPU of the creator's set
 * after the creator's own, in turn, and only where there is a set of
 * several CPUs to spread over. */
TEST(worker_threads_are_planned_over_the_creators_cpus_in_turn) {
  cpu_set_t mine;
  CHECK_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  int here = sched_getcpu();
  struct fib__placement p;
  fib__placement_plan(&p);
  CHECK_EQ(p.spread, here >= 0 && CPU_COUNT(&mine) > 1);
  if (p.spread) {
    /* every other CPU of the set once, each after the last, then the
     * creator's (the plan's: this thread may have moved since) */
    int last = p.creator, n = CPU_COUNT(&mine);
    CHECK(CPU_ISSET(last, &mine));
    cpu_set_t seen;
    CPU_ZERO(&seen);
    for (int k = 1; k <= n; k++) {
      int cpu = fib__placement_cpu(&p, (unsigned)k);
      CHECK(cpu >= 0 && cpu < CPU_SETSIZE);
      CHECK(CPU_ISSET(cpu, &mine));
      CHECK(!CPU_ISSET(cpu, &seen));
      CPU_SET(cpu, &seen);
      if (k < n) {
        CHECK(cpu != p.creator);
        /* the next one of the set: none of it lies between (cyclically) */
        for (int c = (last + 1) % CPU_SETSIZE; c != cpu;
             c = (c + 1) % CPU_SETSIZE)
          CHECK(!CPU_ISSET(c, &mine));
      } else {
        CHECK_EQ(cpu, p.creator); /* round the set, back to its start */
      }
      last = cpu;
    }
  }
  /* one CPU to use: nothing to spread over */
  if (narrow_to_this_cpu(here)) {
    fib__placement_plan(&p);
    CHECK_EQ(p.spread, 0);
    CHECK_EQ(fib__placement_cpu(&p, 1), -1);
    CHECK_EQ(sched_setaffinity(0, sizeof mine, &mine), 0);
  }
}

struct masks {
  cpu_set_t got[4]; /* each worker's thread's affinity, seen by a fiber */
  int ok[4];
};

struct mask_arg {
  struct masks *m;
  unsigned worker;
};

static void *record_mask(void *arg) {
  struct mask_arg *a = arg;
  a->m->ok[a->worker] =
      sched_getaffinity(0, sizeof a->m->got[0], &a->m->got[a->worker]) == 0;
  return NULL;
}

static void *mask_all(void *arg) {
  struct masks *m = arg;
  struct mask_arg args[4];
  for (unsigned w = 0; w < 4; w++)
    args[w] = (struct mask_arg){m, w};
  on_each_of_4_workers(record_mask, (void *const[4]){&args[0], &args[1],
                                                     &args[2], &args[3]});
  return NULL;
}

/* A run on 4 workers by this thread: each worker's thread may use what
 * this thread may use, no more and no less. */
static void check_worker_masks(const cpu_set_t *expect) {
  struct masks m;
  memset(&m, 0, sizeof m);
  fib_runtime *rt = new_workers(4);
  CHECK_OK(fib_spawn(rt, mask_all, &m, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  for (int w = 0; w < 4; w++) {
    CHECK(m.ok[w]);
    CHECK(CPU_EQUAL(&m.got[w], expect));
  }
}

/* Started each on a CPU of its own, the threads are not left bound to
 * it: they widen back to the creator's set. And a creator narrowed to
 * one CPU gets threads on that CPU, as any thread it makes. */
TEST(worker_threads_start_spread_and_are_left_unbound) {
  cpu_set_t mine;
  CHECK_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  check_worker_masks(&mine);
  int here = sched_getcpu();
  if (narrow_to_this_cpu(here)) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(here, &one);
    check_worker_masks(&one);
    CHECK_EQ(sched_setaffinity(0, sizeof mine, &mine), 0);
  }
}

/* ---- join, detach, cancel and deadlines across workers */

static void *sleep_then_return(void *arg) {
  uint64_t ns = (uint64_t)(uintptr_t)arg;
  CHECK_OK(fib_sleep_ns(ns));
  return arg;
}

static int detached_done;

static void *detached_body(void *arg) {
  (void)arg;
  CHECK_OK(fib_yield());
  __atomic_add_fetch(&detached_done, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *joins_and_deadlines(void *arg) {
  (void)arg;
  /* A join that times out leaves the child running and joinable. */
  fib_id slow;
  CHECK_OK(fib_spawn(NULL, sleep_then_return, (void *)(uintptr_t)(50 * MS),
                     NULL, &slow));
  CHECK_EQ(fib_join_until(slow, NULL, fib_now_ns() + 5 * MS), FIB_ETIMEDOUT);
  void *r;
  CHECK_OK(fib_join(slow, &r));
  CHECK_EQ((uintptr_t)r, 50 * MS);
  CHECK_EQ(fib_join(slow, NULL), FIB_ESRCH);
  /* Many children, joined in reverse: each joined once, with its value. */
  enum { N = 200 };
  fib_id ids[N];
  for (int i = 0; i < N; i++)
    CHECK_OK(fib_spawn(NULL, sleep_then_return,
                       (void *)(uintptr_t)(i % 7 * 100000), NULL, &ids[i]));
  for (int i = N - 1; i >= 0; i--) {
    CHECK_OK(fib_join(ids[i], &r));
    CHECK_EQ((uintptr_t)r, (uintptr_t)(i % 7 * 100000));
  }
  /* Detached fibers run and vanish. */
  fib_attr det = {0};
  det.flags = FIB_DETACHED;
  for (int i = 0; i < N; i++)
    CHECK_OK(fib_spawn(NULL, detached_body, NULL, &det, NULL));
  fib_id later;
  CHECK_OK(fib_spawn(NULL, detached_body, NULL, NULL, &later));
  CHECK_OK(fib_detach(NULL, later));
  int err = fib_join(later, NULL); /* detached: alive, or already gone */
  CHECK(err == FIB_EINVAL || err == FIB_ESRCH);
  return NULL;
}

TEST(join_detach_and_deadlines_across_workers) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    detached_done = 0;
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, joins_and_deadlines, NULL, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_EQ(detached_done, 201);
  }
}

static void *sleep_long(void *arg) {
  (void)arg;
  int err = fib_sleep_ns(60ull * 1000 * MS);
  return (void *)(intptr_t)err;
}

static void *spin_until_cancelled(void *arg) {
  (void)arg;
  while (!fib_cancelled())
    CHECK_OK(fib_yield());
  return (void *)(intptr_t)fib_sleep_ns(MS); /* a cancelled fiber's call */
}

static void *cancels(void *arg) {
  (void)arg;
  int n = (int)scaled(400);
  fib_id *ids = calloc((size_t)n, sizeof *ids);
  CHECK(ids != NULL);
  for (int i = 0; i < n; i++)
    CHECK_OK(fib_spawn(NULL, i % 2 ? sleep_long : spin_until_cancelled, NULL,
                       NULL, &ids[i]));
  CHECK_OK(fib_sleep_ns(2 * MS)); /* let them start, wherever they run */
  for (int i = 0; i < n; i++)
    CHECK_OK(fib_cancel(NULL, ids[i]));
  for (int i = 0; i < n; i++) {
    void *r;
    CHECK_OK(fib_join(ids[i], &r));
    CHECK_EQ((intptr_t)r, FIB_ECANCELED);
  }
  free(ids);
  /* A join cancelled from another fiber returns FIB_ECANCELED. */
  return NULL;
}

TEST(cancel_wakes_fibers_on_every_worker) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, cancels, NULL, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* Joiners cancelled while children finish: every join ends once, either
 * with the child's value or with FIB_ECANCELED, never both or neither. */
struct race {
  fib_id child;
  int outcome; /* 1 joined, 2 cancelled */
};

static void *quick_child(void *arg) {
  for (int i = 0; i < (int)(uintptr_t)arg; i++)
    CHECK_OK(fib_yield());
  return (void *)7;
}

static void *joiner(void *arg) {
  struct race *r = arg;
  void *v;
  int err = fib_join(r->child, &v);
  if (err == 0) {
    CHECK_EQ((uintptr_t)v, 7u);
    r->outcome = 1;
  } else {
    CHECK_EQ(err, FIB_ECANCELED);
    r->outcome = 2;
  }
  return NULL;
}

static void *join_cancel_race(void *arg) {
  (void)arg;
  int n = (int)scaled(2000);
  struct race *rs = calloc((size_t)n, sizeof *rs);
  fib_id *js = calloc((size_t)n, sizeof *js);
  CHECK(rs && js);
  for (int i = 0; i < n; i++) {
    CHECK_OK(fib_spawn(NULL, quick_child, (void *)(uintptr_t)(i % 5), NULL,
                       &rs[i].child));
    CHECK_OK(fib_spawn(NULL, joiner, &rs[i], NULL, &js[i]));
  }
  for (int i = 0; i < n; i++) {
    if (i % 3 == 0)
      CHECK_OK(fib_yield());
    CHECK_OK(fib_cancel(NULL, js[i]));
  }
  for (int i = 0; i < n; i++) {
    CHECK_OK(fib_join(js[i], NULL));
    CHECK(rs[i].outcome == 1 || rs[i].outcome == 2);
    if (rs[i].outcome == 2) /* the child was not joined: collect it */
      CHECK_OK(fib_join(rs[i].child, NULL));
    else
      CHECK_EQ(fib_join(rs[i].child, NULL), FIB_ESRCH);
  }
  free(rs);
  free(js);
  return NULL;
}

TEST(a_join_racing_its_cancel_ends_exactly_once) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, join_cancel_race, NULL, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* The join word (workers.h): a joiner on one worker meets its child's
 * finish on another, with and without a deadline racing it; every child
 * is collected exactly once and its value arrives exactly once. */
static void *spin_and_return(void *arg) {
  uintptr_t v = (uintptr_t)arg;
  spin((unsigned)(v % 7) * 50);
  return (void *)(v + 1);
}

struct meet {
  unsigned workers;
  uint64_t sum, timed_out;
};

static void *join_meets_finish(void *arg) {
  struct meet *m = arg;
  int n = (int)scaled(3000);
  fib_attr there = {0};
  there.worker = m->workers; /* the last worker: not this one (worker 0) */
  for (int i = 0; i < n; i++) {
    fib_id id;
    CHECK_OK(fib_spawn(NULL, spin_and_return, (void *)(uintptr_t)i, &there,
                       &id));
    void *v = NULL;
    if (i % 2) { /* a deadline that may pass as the child finishes */
      int err = fib_join_until(id, &v, fib_now_ns() + (uint64_t)(i % 5) * 1000);
      if (err == FIB_ETIMEDOUT) {
        m->timed_out++;
        CHECK_OK(fib_join(id, &v)); /* still there, and joinable */
      } else {
        CHECK_OK(err);
      }
    } else {
      CHECK_OK(fib_join(id, &v));
    }
    CHECK_EQ((uintptr_t)v, (uintptr_t)i + 1);
    m->sum += (uintptr_t)v;
    CHECK_EQ(fib_join(id, NULL), FIB_ESRCH); /* collected once */
  }
  return NULL;
}

TEST(a_join_meets_its_childs_finish_on_another_worker_exactly_once) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct meet m = {.workers = workers};
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, join_meets_finish, &m, NULL, NULL));
    run_to_end(rt);
    uint64_t n = scaled(3000);
    CHECK_EQ(m.sum, n * (n + 1) / 2);
  }
}

/* A join on one worker, its child's finish on another and a cancel from
 * a third fiber, placed on yet another worker where there is one, each
 * at its own moment, some joins with a deadline too: the join's claim is
 * its child's join word (workers.h), which exactly one of the finish, the
 * cancel and the deadline moves. Every join ends once (the value, or
 * FIB_ECANCELED or FIB_ETIMEDOUT with the child left joinable, its value
 * still there), and a cancel that came after the join ended is kept for
 * the joiner's next wait, which it ends at once. */
struct triple {
  fib_id child, joiner;
  int outcome;   /* 1 joined, 2 cancelled, 3 timed out */
  int later;     /* what the joiner's wait after the cancel returned */
  unsigned i;
};

static unsigned triple_batch_done; /* atomic: the batch whose cancels are
                                      all made */

static void *triple_joiner(void *arg) {
  struct triple *t = arg;
  void *v = NULL;
  int err = t->i % 2 ? fib_join_until(t->child, &v,
                                      fib_now_ns() + (t->i % 4) * 2000)
                     : fib_join(t->child, &v);
  if (err == 0) {
    CHECK_EQ((uintptr_t)v, (uintptr_t)t->i + 1);
    t->outcome = 1;
  } else {
    CHECK(err == FIB_ECANCELED || err == FIB_ETIMEDOUT);
    t->outcome = err == FIB_ECANCELED ? 2 : 3;
  }
  unsigned batch = t->i / 100 + 1;
  while (__atomic_load_n(&triple_batch_done, __ATOMIC_ACQUIRE) < batch)
    CHECK_OK(fib_yield()); /* not a wait: a cancel does not end it */
  t->later = fib_sleep_ns(1000);
  return NULL;
}

static void *triple_canceller(void *arg) {
  struct triple *t = arg;
  spin(t->i % 5 * 40);
  return (void *)(intptr_t)fib_cancel(NULL, t->joiner);
}

static void *join_cancel_finish(void *arg) {
  unsigned workers = (unsigned)(uintptr_t)arg;
  unsigned n = (unsigned)scaled(3000);
  struct triple *ts = calloc(n, sizeof *ts);
  CHECK(ts != NULL);
  fib_attr child_at = {0}, joiner_at = {0}, canceller_at = {0};
  child_at.worker = workers;         /* the last worker */
  joiner_at.worker = 1;              /* worker 0 */
  canceller_at.worker = workers > 2 ? 2 : workers; /* another, if any */
  uint64_t sum = 0;
  for (unsigned b = 0; b < n; b += 100) {
    unsigned e = b + 100 < n ? b + 100 : n;
    fib_id ks[100];
    for (unsigned i = b; i < e; i++) {
      ts[i].i = i;
      CHECK_OK(fib_spawn(NULL, spin_and_return, (void *)(uintptr_t)i,
                         &child_at, &ts[i].child));
      CHECK_OK(fib_spawn(NULL, triple_joiner, &ts[i], &joiner_at,
                         &ts[i].joiner));
      CHECK_OK(fib_spawn(NULL, triple_canceller, &ts[i], &canceller_at,
                         &ks[i - b]));
    }
    for (unsigned i = b; i < e; i++) {
      void *r;
      CHECK_OK(fib_join(ks[i - b], &r));
      CHECK_EQ((intptr_t)r, 0); /* the joiner is there until we join it */
    }
    __atomic_store_n(&triple_batch_done, b / 100 + 1, __ATOMIC_RELEASE);
    for (unsigned i = b; i < e; i++) {
      CHECK_OK(fib_join(ts[i].joiner, NULL));
      CHECK_EQ(ts[i].later, FIB_ECANCELED);
      void *v;
      if (ts[i].outcome == 1) {
        sum += ts[i].i + 1;
        CHECK_EQ(fib_join(ts[i].child, NULL), FIB_ESRCH);
      } else {
        CHECK(ts[i].outcome == 2 || ts[i].outcome == 3);
        CHECK_OK(fib_join(ts[i].child, &v)); /* left joinable */
        CHECK_EQ((uintptr_t)v, (uintptr_t)ts[i].i + 1);
        sum += ts[i].i + 1;
      }
    }
  }
  CHECK_EQ(sum, (uint64_t)n * (n + 1) / 2);
  free(ts);
  return NULL;
}

TEST(a_join_its_childs_finish_and_a_cancel_on_three_workers_end_once) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    __atomic_store_n(&triple_batch_done, 0, __ATOMIC_RELAXED);
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, join_cancel_finish, (void *)(uintptr_t)workers,
                       NULL, NULL));
    run_to_end(rt);
  }
}

/* A joiner's own cancel check against a finisher on another worker that
 * has seen the cancel first (sched.c, join_take_own_cancel): the child,
 * placed on worker 1, cancels its joiner on worker 0 and returns at once,
 * so that its finish, which takes a cancelled joiner out of the join word
 * itself, races the joiner's own check between its write into the word
 * and its park (the joiner's take then fails, and it parks for the
 * finisher's wake-up). The offsets between the two sweep over a few
 * microseconds so that some land there. Each join ends once: joined
 * (the value, the child gone) or cancelled (the child joinable, its
 * value there once). */
struct own_race {
  unsigned i;
  fib_id joiner, child;
  int err; /* the joiner's join */
  void *v;
};

static void *own_race_child(void *arg) {
  struct own_race *r = arg;
  spin(r->i / 61 % 13 * 60);
  CHECK_OK(fib_cancel(NULL, r->joiner));
  return (void *)(uintptr_t)(r->i + 1);
}

static void *own_race_joiner(void *arg) {
  struct own_race *r = arg;
  fib_attr there = {0};
  there.worker = 2;
  CHECK_OK(fib_spawn(NULL, own_race_child, r, &there, &r->child));
  spin(r->i % 61 * 40);
  r->err = fib_join(r->child, &r->v);
  return NULL;
}

static void *own_races(void *arg) {
  (void)arg;
  unsigned n = (unsigned)scaled(20000);
  fib_attr here = {0};
  here.worker = 1;
  unsigned joined = 0, cancelled = 0;
  for (unsigned i = 0; i < n; i++) {
    struct own_race r = {.i = i};
    CHECK_OK(fib_spawn(NULL, own_race_joiner, &r, &here, &r.joiner));
    CHECK_OK(fib_join(r.joiner, NULL));
    if (r.err == 0) {
      joined++;
      CHECK_EQ((uintptr_t)r.v, (uintptr_t)i + 1);
      CHECK_EQ(fib_join(r.child, NULL), FIB_ESRCH);
    } else {
      cancelled++;
      CHECK_EQ(r.err, FIB_ECANCELED);
      void *v;
      CHECK_OK(fib_join(r.child, &v)); /* left joinable */
      CHECK_EQ((uintptr_t)v, (uintptr_t)i + 1);
      CHECK_EQ(fib_join(r.child, NULL), FIB_ESRCH);
    }
  }
  CHECK_EQ(joined + cancelled, n);
  return NULL;
}

TEST(a_joiners_own_cancel_check_loses_to_a_finisher_elsewhere_once) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, own_races, NULL, NULL, NULL));
  run_to_end(rt);
}

/* A joiner's worker is marked in the record of the fiber it joins, so
 * that the fiber's finish knows without touching the joiner whether it
 * waits there (workers.h, the join word); the last worker of
 * FIB_WORKERS_MAX has no mark that fits, and its finishes take the word
 * with a compare-and-swap whether the joiner waits there or not. Joins
 * between the last two workers, both ways and on the last one itself,
 * plain and with a deadline, and one on the last worker that its child
 * on the next-to-last cancels before it returns: each ends once, with
 * the child's value (or the cancel, the child left joinable), and a
 * joined child is gone. */
struct last_joins {
  fib_attr last, next_to_last;
  unsigned sum; /* atomic */
};

static void *returns_its_arg(void *arg) { return arg; }

/* Spawns children on `where` (one of the last two workers) and joins
 * each, or with the cancel, has a child cancel it and return first. */
static void *joins_children_on(void *arg) {
  struct last_joins *l = arg;
  for (unsigned k = 0; k < 2; k++) {
    const fib_attr *where = k ? &l->last : &l->next_to_last;
    for (uintptr_t v = 1; v <= 8; v++) {
      fib_id c;
      void *r = NULL;
      CHECK_OK(fib_spawn(NULL, returns_its_arg, (void *)v, where, &c));
      if (v % 2)
        CHECK_OK(fib_join(c, &r));
      else
        CHECK_OK(fib_join_until(c, &r, fib_now_ns() + 10000 * MS));
      CHECK_EQ((uintptr_t)r, v);
      CHECK_EQ(fib_join(c, NULL), FIB_ESRCH);
      __atomic_add_fetch(&l->sum, (unsigned)v, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

struct cancelled_there {
  fib_id joiner;
  int joining; /* atomic: the joiner is about to join */
};

/* Placed on the next-to-last worker: cancels its joiner, waiting on the
 * last one by then, and returns at once. Its finish, which cannot tell
 * where the joiner waits, ends the join itself if the joiner's worker has
 * not yet read the note (the finisher's cancelled path, which
 * a_joiners_own_cancel_check_loses_to_a_finisher_elsewhere_once takes
 * thousands of times), else finds the child joinable: either way the
 * join ends with the cancel. */
static void *cancels_its_joiner(void *arg) {
  struct cancelled_there *c = arg;
  while (!__atomic_load_n(&c->joining, __ATOMIC_ACQUIRE))
    CHECK_OK(fib_yield());
  CHECK_OK(fib_sleep_ns(MS)); /* it has parked by then, most likely */
  CHECK_OK(fib_cancel(NULL, c->joiner));
  return (void *)(uintptr_t)7;
}

/* Returns the child's id: a cancelled fiber's joins fail from then on,
 * so its parent joins the child, left joinable. */
static void *joins_and_is_cancelled(void *arg) {
  const fib_attr *where = arg;
  struct cancelled_there c = {fib_self(), 0};
  fib_id child;
  CHECK_OK(fib_spawn(NULL, cancels_its_joiner, &c, where, &child));
  __atomic_store_n(&c.joining, 1, __ATOMIC_RELEASE);
  CHECK_EQ(fib_join(child, NULL), FIB_ECANCELED);
  return (void *)(uintptr_t)child;
}

static void *last_worker_joins(void *arg) {
  struct last_joins *l = arg;
  fib_id a, b;
  void *r;
  CHECK_OK(fib_spawn(NULL, joins_children_on, l, &l->last, &a));
  CHECK_OK(fib_spawn(NULL, joins_children_on, l, &l->next_to_last, &b));
  CHECK_OK(fib_join(a, NULL));
  CHECK_OK(fib_join(b, NULL));
  CHECK_EQ(__atomic_load_n(&l->sum, __ATOMIC_RELAXED), 4u * 36u);
  CHECK_OK(fib_spawn(NULL, joins_and_is_cancelled, &l->next_to_last,
                     &l->last, &a));
  CHECK_OK(fib_join(a, &r));
  fib_id child = (fib_id)(uintptr_t)r;
  CHECK_OK(fib_join(child, &r));
  CHECK_EQ((uintptr_t)r, 7);
  return NULL;
}

TEST(joins_on_the_last_of_the_most_workers_end_once) {
  struct last_joins l = {{0}, {0}, 0};
  l.last.worker = FIB_WORKERS_MAX; /* worker FIB_WORKERS_MAX - 1 */
  l.next_to_last.worker = FIB_WORKERS_MAX - 1;
  fib_runtime *rt = new_workers(FIB_WORKERS_MAX);
  CHECK_OK(fib_spawn(rt, last_worker_joins, &l, &l.last, NULL));
  int err = fib_run(rt);
  CHECK_OK(fib_runtime_destroy(rt));
  if (err == FIB_ENOMEM) /* the threads could not all start */
    SKIP("cannot start %d threads here", FIB_WORKERS_MAX - 1);
  CHECK_OK(err);
}

/* Cancels carried to a joiner's owner (workers.h, the join word): joiners
 * placed on worker 0 join children on worker 0 (whose finish then settles
 * the word without a locked instruction) or on the last worker, and are
 * cancelled from worker 0 itself (taken at once) or from the last worker
 * (a note that worker 0 reads at its next turn). Meanwhile a joiner may
 * have left that join, moved to another worker and joined again there, or
 * finished and had its record reused by a joiner that nobody cancels. A
 * join that fails with FIB_ECANCELED was cancelled, every cancelled
 * joiner's last wait fails, the others' never do, and every child's value
 * arrives exactly once. */
struct carried {
  fib_id child, joiner;
  unsigned i, workers;
  int requested; /* atomic: its canceller is about to cancel it */
  int first;     /* the first join: 1 joined, 2 cancelled */
  int wrong;     /* FIB_ECANCELED with no cancel requested */
  int later;     /* its last wait, once its batch's cancels are all made */
};

static unsigned carried_batch_done; /* atomic */

static void *carried_joiner(void *arg) {
  struct carried *c = arg;
  void *v = NULL;
  int err = fib_join(c->child, &v);
  if (err == 0) {
    CHECK_EQ((uintptr_t)v, (uintptr_t)c->i + 1);
    c->first = 1;
  } else {
    CHECK_EQ(err, FIB_ECANCELED);
    c->first = 2;
    c->wrong |= !__atomic_load_n(&c->requested, __ATOMIC_ACQUIRE);
  }
  if (c->i % 3 == 1) /* on, elsewhere where there is one: a later join's
                        claim names another worker */
    CHECK_OK(fib_move_to(c->i % c->workers));
  fib_id d;
  CHECK_OK(fib_spawn(NULL, spin_and_return, (void *)(uintptr_t)c->i, NULL,
                     &d));
  err = fib_join(d, &v);
  if (err) {
    CHECK_EQ(err, FIB_ECANCELED);
    c->wrong |= !__atomic_load_n(&c->requested, __ATOMIC_ACQUIRE);
    CHECK_OK(fib_detach(NULL, d)); /* does not wait: works cancelled */
  } else {
    CHECK_EQ((uintptr_t)v, (uintptr_t)c->i + 1);
  }
  unsigned batch = c->i / 100 + 1;
  while (__atomic_load_n(&carried_batch_done, __ATOMIC_ACQUIRE) < batch)
    CHECK_OK(fib_yield());
  c->later = fib_sleep_ns(1000);
  return NULL;
}

static void *carried_canceller(void *arg) {
  struct carried *c = arg;
  spin(c->i % 5 * 40);
  __atomic_store_n(&c->requested, 1, __ATOMIC_RELEASE);
  return (void *)(intptr_t)fib_cancel(NULL, c->joiner);
}

static void *carried_cancels(void *arg) {
  unsigned workers = (unsigned)(uintptr_t)arg;
  unsigned n = (unsigned)scaled(3000);
  struct carried *cs = calloc(n, sizeof *cs);
  CHECK(cs != NULL);
  fib_attr here = {0}, last = {0};
  here.worker = 1;     /* worker 0 */
  last.worker = workers; /* the last worker */
  uint64_t sum = 0;
  for (unsigned b = 0; b < n; b += 100) {
    unsigned e = b + 100 < n ? b + 100 : n;
    fib_id ks[100];
    for (unsigned i = b; i < e; i++) {
      struct carried *c = &cs[i];
      c->i = i;
      c->workers = workers;
      CHECK_OK(fib_spawn(NULL, spin_and_return, (void *)(uintptr_t)i,
                         i % 2 ? &here : &last, &c->child));
      CHECK_OK(fib_spawn(NULL, carried_joiner, c, &here, &c->joiner));
      ks[i - b] = 0;
      if (i % 4 != 3) /* the rest nobody cancels */
        CHECK_OK(fib_spawn(NULL, carried_canceller, c,
                           i % 3 == 0 ? &here : &last, &ks[i - b]));
    }
    for (unsigned i = b; i < e; i++) {
      void *r;
      if (ks[i - b]) {
        CHECK_OK(fib_join(ks[i - b], &r));
        CHECK_EQ((intptr_t)r, 0); /* the joiner is there till we join it */
      }
    }
    __atomic_store_n(&carried_batch_done, b / 100 + 1, __ATOMIC_RELEASE);
    for (unsigned i = b; i < e; i++) {
      struct carried *c = &cs[i];
      CHECK_OK(fib_join(c->joiner, NULL));
      CHECK_EQ(c->wrong, 0);
      if (c->requested) {
        CHECK_EQ(c->later, FIB_ECANCELED);
      } else {
        CHECK_EQ(c->later, 0);
        CHECK_EQ(c->first, 1);
      }
      if (c->first == 1) {
        CHECK_EQ(fib_join(c->child, NULL), FIB_ESRCH);
      } else {
        void *v;
        CHECK_OK(fib_join(c->child, &v)); /* left joinable */
        CHECK_EQ((uintptr_t)v, (uintptr_t)i + 1);
      }
      sum += i + 1;
    }
  }
  CHECK_EQ(sum, (uint64_t)n * (n + 1) / 2);
  free(cs);
  return NULL;
}

TEST(a_cancel_carried_to_a_joiners_worker_ends_its_join_once) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    __atomic_store_n(&carried_batch_done, 0, __ATOMIC_RELAXED);
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, carried_cancels, (void *)(uintptr_t)workers, NULL,
                       NULL));
    run_to_end(rt);
  }
}

/* The same from a plain thread, which is no worker: every cancel of a
 * joiner is carried to worker 0 as a note (and wakes it if it sleeps). */
#define OUTSIDE_PAIRS 50
struct outside {
  fib_runtime *rt;
  fib_id joiners[OUTSIDE_PAIRS], children[OUTSIDE_PAIRS];
  int ready; /* atomic: the ids are there */
};

static void *joins_its_child(void *arg) {
  return (void *)(intptr_t)fib_join((fib_id)(uintptr_t)arg, NULL);
}

static void *outside_driver(void *arg) {
  struct outside *o = arg;
  fib_attr here = {0};
  here.worker = 1;
  for (int i = 0; i < OUTSIDE_PAIRS; i++) {
    CHECK_OK(fib_spawn(NULL, sleep_long, NULL, &here, &o->children[i]));
    CHECK_OK(fib_spawn(NULL, joins_its_child,
                       (void *)(uintptr_t)o->children[i], &here,
                       &o->joiners[i]));
  }
  __atomic_store_n(&o->ready, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < OUTSIDE_PAIRS; i++) {
    void *r;
    CHECK_OK(fib_join(o->joiners[i], &r));
    CHECK_EQ((intptr_t)r, FIB_ECANCELED);
    CHECK_OK(fib_join(o->children[i], &r));
    CHECK_EQ((intptr_t)r, FIB_ECANCELED);
  }
  return NULL;
}

static void *outside_canceller(void *arg) {
  struct outside *o = arg;
  while (!__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE))
    sched_yield();
  for (int i = 0; i < OUTSIDE_PAIRS; i++) {
    usleep(100); /* some joiners parked by then, perhaps asleep */
    CHECK_OK(fib_cancel(o->rt, o->joiners[i]));
    CHECK_OK(fib_cancel(o->rt, o->children[i]));
  }
  return NULL;
}

TEST(a_cancel_from_a_plain_thread_reaches_a_joiner_on_a_worker) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    static struct outside o;
    memset(&o, 0, sizeof o);
    o.rt = new_workers(workers);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, outside_canceller, &o), 0);
    CHECK_OK(fib_spawn(o.rt, outside_driver, &o, NULL, NULL));
    CHECK_OK(fib_run(o.rt));
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_OK(fib_runtime_destroy(o.rt));
  }
}

/* A cancel note that arrives late: a canceller on another worker cancels
 * the joiner worker 0 is running now, while worker 0 goes on without its
 * loop (direct hand-offs) and reuses records at once; by the time it reads
 * the note, the joiner may have finished and its record serve a joiner
 * that nobody cancelled, parked in a join of its own on worker 0, which
 * the note must leave alone. */
struct late {
  unsigned n;
  fib_id *ids;     /* the joiners, as published */
  int *requested;  /* atomic: a cancel was requested for joiner i */
  unsigned current; /* atomic: the joiner the driver waits for, plus one */
  int over;        /* atomic */
};

struct late_arg {
  struct late *l;
  unsigned i;
  fib_id child;
  int wrong;
};

/* Keeps its joiner parked a while, and worker 0 busy: a cancel from
 * elsewhere finds the join, and its note waits for worker 0's turn. */
static void *spin_and_yield(void *arg) {
  uintptr_t v = (uintptr_t)arg;
  spin((unsigned)(v % 5) * 60);
  for (uintptr_t k = 0; k < v % 3; k++)
    CHECK_OK(fib_yield());
  return (void *)(v + 1);
}

static void *late_join(void *arg) {
  struct late_arg *a = arg;
  int err = fib_join(a->child, NULL);
  if (err) {
    CHECK_EQ(err, FIB_ECANCELED);
    a->wrong = !__atomic_load_n(&a->l->requested[a->i], __ATOMIC_ACQUIRE);
  }
  return (void *)(intptr_t)err;
}

static void *late_canceller(void *arg) {
  struct late *l = arg;
  unsigned last = 0;
  while (!__atomic_load_n(&l->over, __ATOMIC_ACQUIRE)) {
    unsigned c = __atomic_load_n(&l->current, __ATOMIC_ACQUIRE);
    if (c && c != last && c % 3 == 0) {
      last = c;
      __atomic_store_n(&l->requested[c - 1], 1, __ATOMIC_RELEASE);
      int err = fib_cancel(NULL, l->ids[c - 1]);
      CHECK(err == 0 || err == FIB_ESRCH);
    }
    CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *late_driver(void *arg) {
  unsigned workers = (unsigned)(uintptr_t)arg;
  struct late l = {0};
  l.n = (unsigned)scaled(40000);
  l.ids = calloc(l.n, sizeof *l.ids);
  l.requested = calloc(l.n, sizeof *l.requested);
  CHECK(l.ids && l.requested);
  fib_attr here = {0}, last = {0};
  here.worker = 1;
  last.worker = workers;
  fib_id k;
  CHECK_OK(fib_spawn(NULL, late_canceller, &l, &last, &k));
  unsigned cancelled = 0;
  for (unsigned i = 0; i < l.n; i++) {
    struct late_arg a = {.l = &l, .i = i};
    CHECK_OK(fib_spawn(NULL, spin_and_yield, (void *)(uintptr_t)i, &here,
                       &a.child));
    CHECK_OK(fib_spawn(NULL, late_join, &a, &here, &l.ids[i]));
    __atomic_store_n(&l.current, i + 1, __ATOMIC_RELEASE);
    void *r;
    CHECK_OK(fib_join(l.ids[i], &r));
    CHECK_EQ(a.wrong, 0);
    if (r) { /* cancelled: the child is left joinable */
      cancelled++;
      CHECK_OK(fib_join(a.child, &r));
      CHECK_EQ((uintptr_t)r, (uintptr_t)i + 1);
    } else {
      CHECK_EQ(fib_join(a.child, NULL), FIB_ESRCH);
    }
  }
  __atomic_store_n(&l.over, 1, __ATOMIC_RELEASE);
  CHECK_OK(fib_join(k, NULL));
  free(l.ids);
  free(l.requested);
  (void)cancelled; /* how many depends on the threads' timing */
  return NULL;
}

TEST(a_late_cancel_note_leaves_a_reused_record_alone) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, late_driver, (void *)(uintptr_t)workers, NULL,
                       NULL));
    run_to_end(rt);
  }
}

/* A cancel whose note cannot be allocated: FIB_ENOMEM, the fiber is
 * marked cancelled, its join goes on until its child (cancelled next)
 * finishes, then fails, the child left joinable, and its next wait
 * fails. */
struct nomem {
  fib_id joiner, child;
  int joining; /* atomic */
  int err, later;
};

static void *nomem_joiner(void *arg) {
  struct nomem *m = arg;
  fib_attr here = {0};
  here.worker = 1;
  CHECK_OK(fib_spawn(NULL, sleep_long, NULL, &here, &m->child));
  __atomic_store_n(&m->joining, 1, __ATOMIC_RELEASE);
  m->err = fib_join(m->child, NULL);
  m->later = fib_sleep_ns(1000);
  return NULL;
}

static void *nomem_canceller(void *arg) {
  struct nomem *m = arg;
  while (!__atomic_load_n(&m->joining, __ATOMIC_ACQUIRE))
    CHECK_OK(fib_yield());
  CHECK_OK(fib_sleep_ns(2 * MS)); /* parked in its join by then */
  fib__fault_inject(FIB__FAULT_MALLOC, 1, 0); /* the note's */
  int err = fib_cancel(NULL, m->joiner);
  fib__fault_inject(0, 0, 0);
  CHECK_OK(fib_cancel(NULL, m->child));
  return (void *)(intptr_t)err;
}

static void *nomem_driver(void *arg) {
  unsigned workers = (unsigned)(uintptr_t)arg;
  struct nomem m = {0};
  fib_attr here = {0}, last = {0};
  here.worker = 1;
  last.worker = workers;
  fib_id k;
  CHECK_OK(fib_spawn(NULL, nomem_joiner, &m, &here, &m.joiner));
  CHECK_OK(fib_spawn(NULL, nomem_canceller, &m, &last, &k));
  void *r;
  CHECK_OK(fib_join(k, &r));
  CHECK_OK(fib_join(m.joiner, NULL));
  /* FIB_ENOMEM: the join went on until the child finished, whose finish
   * found the joiner cancelled; 0: the joiner was not parked yet, and its
   * join saw the flag */
  CHECK((intptr_t)r == FIB_ENOMEM || (intptr_t)r == 0);
  CHECK_EQ(m.err, FIB_ECANCELED);
  CHECK_OK(fib_join(m.child, &r)); /* left joinable */
  CHECK_EQ((intptr_t)r, FIB_ECANCELED); /* its sleep, cancelled */
  CHECK_EQ(m.later, FIB_ECANCELED);
  return NULL;
}

TEST(a_cancel_that_cannot_be_carried_says_so_and_marks_the_fiber) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, nomem_driver, (void *)(uintptr_t)workers, NULL,
                       NULL));
    run_to_end(rt);
  }
}

static unsigned detach_race_done; /* atomic */

static void *count_and_return(void *arg) {
  spin((unsigned)(uintptr_t)arg % 7 * 50);
  __atomic_add_fetch(&detach_race_done, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *detach_meets_finish(void *arg) {
  unsigned workers = (unsigned)(uintptr_t)arg;
  int n = (int)scaled(3000);
  fib_attr there = {0};
  there.worker = workers;
  fib_id *ids = calloc((size_t)n, sizeof *ids);
  CHECK(ids != NULL);
  for (int i = 0; i < n; i++) {
    CHECK_OK(fib_spawn(NULL, count_and_return, (void *)(uintptr_t)i, &there,
                       &ids[i]));
    if (i % 3) /* at once, or after a while: racing the finish either way */
      spin(50);
    CHECK_OK(fib_detach(NULL, ids[i]));
    int again = fib_detach(NULL, ids[i]); /* detached, or already gone */
    CHECK(again == FIB_EINVAL || again == FIB_ESRCH);
  }
  /* Every one finishes and is freed by itself: its id finds nothing. */
  for (int i = 0; i < n; i++)
    while (fib_join(ids[i], NULL) != FIB_ESRCH)
      CHECK_OK(fib_yield());
  CHECK_EQ(__atomic_load_n(&detach_race_done, __ATOMIC_RELAXED), (unsigned)n);
  free(ids);
  return NULL;
}

TEST(a_detach_meets_the_finish_on_another_worker_and_frees_once) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    __atomic_store_n(&detach_race_done, 0, __ATOMIC_RELAXED);
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, detach_meets_finish, (void *)(uintptr_t)workers,
                       NULL, NULL));
    run_to_end(rt);
  }
}

/* ---- a join on the child's own worker raced by a join, a detach or a
 * cancel from elsewhere (the join word, workers.h): each round races one
 * of them against a join on the worker that spawned the child, the child
 * pinned (it stays where it was spawned) and held until both sides have
 * acted, with a jitter on each side so that the two land before, inside
 * and after each other's calls. */

enum rival_kind {
  RIVAL_DETACH,       /* fib_detach from worker 1 */
  RIVAL_JOIN,         /* fib_join from worker 1 */
  RIVAL_THREAD_DETACH, /* fib_detach from a plain thread */
  RIVAL_CANCEL,       /* fib_cancel of the joiner from worker 1 */
  RIVAL_THREAD_CANCEL /* fib_cancel of the joiner from a plain thread */
};

struct join_race {
  fib_runtime *rt;
  enum rival_kind kind;
  long rounds;
  long round;        /* atomic: the round whose ids are published */
  fib_id child, joiner; /* this round's (written before `round`) */
  long acting;       /* atomic: sides that have begun their call */
  long rival_done;   /* atomic: the last round the rival finished */
  int rival_err;     /* its result (written before rival_done) */
  int joiner_err;    /* the joiner's, for a cancel race */
  long joiner_done;  /* atomic: the last round the joiner returned in */
  unsigned finished; /* atomic: children that returned */
  unsigned won[2];   /* joins or detaches that succeeded: ours, theirs */
};

static void jitter(long i) {
  for (long k = (i * 7) % 97; k > 0; k--)
    __asm__ volatile("" ::: "memory");
}

/* Held until both sides have begun, and a few turns more (the calls are
 * short); for a cancel race, until the joiner has returned (a lost
 * cancel would keep it parked: the child gives up after a few seconds,
 * and the joiner's result says so). */
static void *held_child(void *arg) {
  struct join_race *g = arg;
  long i = __atomic_load_n(&g->round, __ATOMIC_ACQUIRE);
  int cancel = g->kind == RIVAL_CANCEL || g->kind == RIVAL_THREAD_CANCEL;
  uint64_t give_up = fib_now_ns() + 5000 * MS;
  if (cancel) {
    while (__atomic_load_n(&g->joiner_done, __ATOMIC_ACQUIRE) != i &&
           fib_now_ns() < give_up)
      fib_yield();
  } else {
    while (__atomic_load_n(&g->acting, __ATOMIC_ACQUIRE) < 2)
      fib_yield();
    for (int k = 0; k < 8; k++)
      fib_yield();
  }
  __atomic_add_fetch(&g->finished, 1, __ATOMIC_RELAXED);
  return (void *)(intptr_t)i;
}

/* The joiner of a cancel race: joins the child, on worker 0 with it. */
static void *cancelled_joiner(void *arg) {
  struct join_race *g = arg;
  long i = __atomic_load_n(&g->round, __ATOMIC_ACQUIRE);
  __atomic_add_fetch(&g->acting, 1, __ATOMIC_RELEASE);
  jitter(i + 3);
  g->joiner_err = fib_join(g->child, NULL);
  __atomic_store_n(&g->joiner_done, i, __ATOMIC_RELEASE);
  return NULL;
}

/* One rival's call in round i. */
static void rival_act(struct join_race *g, long i) {
  fib_runtime *rt = g->kind >= RIVAL_THREAD_DETACH &&
                            g->kind != RIVAL_CANCEL
                        ? g->rt
                        : NULL;
  __atomic_add_fetch(&g->acting, 1, __ATOMIC_RELEASE);
  jitter(i);
  void *r = NULL;
  int err;
  switch (g->kind) {
  case RIVAL_JOIN:
    err = fib_join(g->child, &r);
    if (!err)
      CHECK_EQ((long)(intptr_t)r, i);
    break;
  case RIVAL_CANCEL:
  case RIVAL_THREAD_CANCEL:
    err = fib_cancel(rt, g->joiner);
    break;
  default:
    err = fib_detach(rt, g->child);
    break;
  }
  g->rival_err = err;
  __atomic_store_n(&g->rival_done, i, __ATOMIC_RELEASE);
}

static void rival_loop(struct join_race *g, int in_fiber) {
  for (long i = 1; i <= g->rounds; i++) {
    while (__atomic_load_n(&g->round, __ATOMIC_ACQUIRE) != i) {
      if (in_fiber)
        fib_yield();
      else
        sched_yield();
    }
    rival_act(g, i);
  }
}

static void *rival_fiber(void *arg) {
  rival_loop(arg, 1);
  return NULL;
}

static void *rival_thread(void *arg) {
  rival_loop(arg, 0);
  return NULL;
}

/* The first fiber (pinned to worker 0): spawns each round's child there,
 * pinned, and joins it (or has a joiner of its own join it, for a cancel
 * race), against the rival. */
static void *join_race_driver(void *arg) {
  struct join_race *g = arg;
  int cancel = g->kind == RIVAL_CANCEL || g->kind == RIVAL_THREAD_CANCEL;
  fib_attr pinned = {0};
  pinned.flags = FIB_PINNED;
  fib_attr there = {0};
  there.worker = 2;
  fib_id rival = 0;
  pthread_t thread;
  int threaded = g->kind == RIVAL_THREAD_DETACH ||
                 g->kind == RIVAL_THREAD_CANCEL;
  if (threaded)
    CHECK_EQ(pthread_create(&thread, NULL, rival_thread, g), 0);
  else
    CHECK_OK(fib_spawn(NULL, rival_fiber, g, &there, &rival));
  for (long i = 1; i <= g->rounds; i++) {
    __atomic_store_n(&g->acting, 0, __ATOMIC_RELAXED);
    CHECK_OK(fib_spawn(NULL, held_child, g, &pinned, &g->child));
    if (cancel)
      CHECK_OK(fib_spawn(NULL, cancelled_joiner, g, &pinned, &g->joiner));
    __atomic_store_n(&g->round, i, __ATOMIC_RELEASE);
    if (cancel) {
      void *r;
      CHECK_OK(fib_join(g->joiner, &r));
      while (__atomic_load_n(&g->rival_done, __ATOMIC_ACQUIRE) != i)
        fib_yield();
      /* the child is held until the join returns: only the cancel ends
       * it, whenever it came */
      CHECK_EQ(g->joiner_err, FIB_ECANCELED);
      CHECK_OK(g->rival_err);
      CHECK_OK(fib_join(g->child, &r));
      CHECK_EQ((long)(intptr_t)r, i);
      continue;
    }
    __atomic_add_fetch(&g->acting, 1, __ATOMIC_RELEASE);
    jitter(i + 5);
    void *r = NULL;
    int err = fib_join(g->child, &r);
    while (__atomic_load_n(&g->rival_done, __ATOMIC_ACQUIRE) != i)
      fib_yield();
    int theirs = g->rival_err;
    /* exactly one of the two got the child; the other was refused
     * (joined or detached: EINVAL) or found it gone (ESRCH) */
    CHECK((err == 0) + (theirs == 0) == 1);
    if (err) {
      CHECK(err == FIB_EINVAL || err == FIB_ESRCH);
    } else {
      CHECK_EQ((long)(intptr_t)r, i);
      CHECK(theirs == FIB_EINVAL || theirs == FIB_ESRCH);
    }
    g->won[err != 0]++;
  }
  if (threaded)
    CHECK_EQ(pthread_join(thread, NULL), 0);
  else
    CHECK_OK(fib_join(rival, NULL));
  return NULL;
}

static void join_race_run(enum rival_kind kind, long rounds) {
  static struct join_race g;
  memset(&g, 0, sizeof g);
  g.kind = kind;
  g.rounds = rounds;
  g.rt = new_workers(2);
  CHECK_OK(fib_spawn(g.rt, join_race_driver, &g, NULL, NULL));
  run_to_end(g.rt);
  /* every child returned: joined once, or detached and freed itself */
  CHECK_EQ(__atomic_load_n(&g.finished, __ATOMIC_RELAXED),
           (unsigned)rounds);
  if (kind != RIVAL_CANCEL && kind != RIVAL_THREAD_CANCEL)
    CHECK_EQ(g.won[0] + g.won[1], (unsigned)rounds);
}

TEST(a_join_and_a_detach_from_another_worker_end_once) {
  join_race_run(RIVAL_DETACH, scaled(2000));
}

TEST(two_joins_from_two_workers_end_once) {
  join_race_run(RIVAL_JOIN, scaled(2000));
}

TEST(a_join_and_a_detach_from_a_plain_thread_end_once) {
  join_race_run(RIVAL_THREAD_DETACH, scaled(2000));
}

TEST(a_cancel_from_another_worker_never_misses_a_join_on_its_childs_worker) {
  join_race_run(RIVAL_CANCEL, scaled(2000));
}

TEST(a_cancel_from_a_plain_thread_never_misses_a_join_on_its_childs_worker) {
  join_race_run(RIVAL_THREAD_CANCEL, scaled(2000));
}

/* ---- the end of a run */

static fib_id cycle_ids[2];

static void *join_the_other(void *arg) {
  int me = (int)(uintptr_t)arg;
  CHECK_OK(fib_sleep_ns(MS)); /* both exist before either joins */
  return (void *)(intptr_t)fib_join(cycle_ids[1 - me], NULL);
}

TEST(a_join_cycle_across_workers_is_a_deadlock) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, join_the_other, (void *)0, NULL, &cycle_ids[0]));
  CHECK_OK(fib_spawn(rt, join_the_other, (void *)1, NULL, &cycle_ids[1]));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt)); /* discards both */
}

/* A wake-up from one worker to another goes through the owner's inbox;
 * it must not count as work from outside the run (as a plain thread's or
 * another runtime's would: then more may come, and there is no deadlock).
 * It did: the woken worker was marked as taking work from other threads
 * for good, and a run that deadlocked afterwards slept forever instead of
 * returning FIB_EDEADLK. */
static fib_sem woke_across, never_posted;

static void *wait_twice(void *arg) {
  (void)arg;
  CHECK_OK(fib_sem_wait(&woke_across)); /* posted from worker 1 */
  return (void *)(intptr_t)fib_sem_wait(&never_posted);
}

static void *post_across_then_wait(void *arg) {
  (void)arg;
  CHECK_OK(fib_sleep_ns(10 * MS)); /* the other is parked by then */
  CHECK_OK(fib_sem_post(&woke_across));
  return (void *)(intptr_t)fib_sem_wait(&never_posted);
}

TEST(a_deadlock_after_a_wake_up_across_workers_is_reported) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_sem_init(&woke_across, 0));
  CHECK_OK(fib_sem_init(&never_posted, 0));
  CHECK_OK(fib_spawn(rt, wait_twice, NULL, &(fib_attr){.worker = 1}, NULL));
  CHECK_OK(fib_spawn(rt, post_across_then_wait, NULL,
                     &(fib_attr){.worker = 2}, NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt)); /* discards both */
  CHECK_OK(fib_sem_destroy(&woke_across));
  CHECK_OK(fib_sem_destroy(&never_posted));
}

TEST(a_run_with_no_fibers_returns_at_once_and_runs_again) {
  fib_runtime *rt = new_workers(3);
  CHECK_OK(fib_run(rt));
  struct root_job j = {1000, 0, 0};
  CHECK_OK(fib_spawn(rt, tree_root, &j, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(j.sum, 1000u * 999u / 2);
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- idle workers sleep */

static uint64_t cpu_ns(void) {
  struct rusage u;
  CHECK_OK(getrusage(RUSAGE_SELF, &u));
  return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000u +
         (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000u;
}

struct idle_probe {
  uint64_t cpu, wall;
};

/* Let the workers start and settle, then measure a quiet stretch: the
 * process's CPU time while this fiber sleeps and nothing else runs. */
static void *nap(void *arg) {
  struct idle_probe *p = arg;
  CHECK_OK(fib_sleep_ns(100 * MS));
  uint64_t cpu0 = cpu_ns(), t0 = fib_now_ns();
  CHECK_OK(fib_sleep_ns(300 * MS));
  p->cpu = cpu_ns() - cpu0;
  p->wall = fib_now_ns() - t0;
  return NULL;
}

TEST(idle_workers_use_no_cpu) {
  fib_runtime *rt = new_workers(4);
  struct idle_probe p = {0, 0};
  CHECK_OK(fib_spawn(rt, nap, &p, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK(p.wall >= 300 * MS);
  /* Four workers spinning would burn ~4x wall (2x on two cores); asleep
   * they burn ~0. A tenth of the wall time leaves room for the tools. */
  if (p.cpu * 10 > p.wall)
    CHECK_EQ(p.cpu, 0u); /* print the figure */
}

/* ---- I/O from several workers */

struct pipe_pair {
  int fd[2];
  int rounds;
};

static void *pipe_reader(void *arg) {
  struct pipe_pair *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    unsigned char b;
    CHECK_EQ(fib_read(p->fd[0], &b, 1), 1);
    CHECK_EQ(b, (unsigned char)i);
  }
  return NULL;
}

static void *pipe_writer(void *arg) {
  struct pipe_pair *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    unsigned char b = (unsigned char)i;
    CHECK_EQ(fib_write(p->fd[1], &b, 1), 1);
    if (i % 3 == 0)
      CHECK_OK(fib_sleep_ns(100000));
  }
  return NULL;
}

static void *pipes(void *arg) {
  (void)arg;
  enum { PAIRS = 8 };
  struct pipe_pair ps[PAIRS];
  fib_id ids[2 * PAIRS];
  for (int i = 0; i < PAIRS; i++) {
    CHECK_OK(pipe(ps[i].fd));
    ps[i].rounds = (int)scaled(200);
    CHECK_OK(fib_spawn(NULL, pipe_reader, &ps[i], NULL, &ids[2 * i]));
    CHECK_OK(fib_spawn(NULL, pipe_writer, &ps[i], NULL, &ids[2 * i + 1]));
  }
  for (int i = 0; i < 2 * PAIRS; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  for (int i = 0; i < PAIRS; i++) {
    CHECK_OK(fib_close(ps[i].fd[0]));
    CHECK_OK(fib_close(ps[i].fd[1]));
  }
  return NULL;
}

TEST(io_waits_on_several_workers) {
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, pipes, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- primitives and channels shared across workers */

struct shared_prims {
  fib_mutex m;
  fib_cond cv;
  fib_sem sem;
  fib_wg wg;
  fib_once once;
  fib_chan unbuf, buf, done;
  long counter;      /* under m */
  long once_runs;
  int turn;          /* under m: cond's ping-pong */
  long received_sum; /* by the consumers, atomically */
  int rounds;
};

static void once_body(void *arg) {
  struct shared_prims *p = arg;
  CHECK_OK(fib_sleep_ns(100000)); /* others wait for it meanwhile */
  __atomic_add_fetch(&p->once_runs, 1, __ATOMIC_RELAXED);
}

static void *mutex_worker(void *arg) {
  struct shared_prims *p = arg;
  CHECK_OK(fib_once_call(&p->once, once_body, p));
  for (int i = 0; i < p->rounds; i++) {
    CHECK_OK(fib_mutex_lock(&p->m));
    long seen = p->counter;
    if (i % 7 == 0)
      CHECK_OK(fib_yield()); /* hold it across a switch */
    p->counter = seen + 1;   /* lost updates would show */
    CHECK_OK(fib_mutex_unlock(&p->m));
  }
  CHECK_OK(fib_wg_done(&p->wg));
  return NULL;
}

static void *producer(void *arg) {
  struct shared_prims *p = arg;
  for (int i = 1; i <= p->rounds; i++) {
    long v = i;
    CHECK_OK(fib_chan_send(i % 2 ? &p->unbuf : &p->buf, &v));
  }
  CHECK_OK(fib_sem_post(&p->sem));
  return NULL;
}

static void *consumer(void *arg) {
  struct shared_prims *p = arg;
  for (;;) {
    long a = 0, b = 0;
    fib_select_case cases[3] = {
        {.op = FIB_SELECT_RECV, .chan = &p->unbuf, .elem = &a},
        {.op = FIB_SELECT_RECV, .chan = &p->buf, .elem = &b},
        {.op = FIB_SELECT_RECV, .chan = &p->done, .elem = NULL}};
    int r = fib_select_until(cases, 3, fib_now_ns() + 10 * MS);
    if (r == FIB_ETIMEDOUT)
      continue; /* deadlines racing hand-offs: nothing may be lost */
    CHECK(r >= 0);
    if (r == 2) {
      CHECK_EQ(cases[2].err, FIB_EPIPE);
      return NULL;
    }
    CHECK_OK(cases[r].err);
    __atomic_add_fetch(&p->received_sum, r == 0 ? a : b, __ATOMIC_RELAXED);
  }
}

static void *ping(void *arg) {
  struct shared_prims *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    CHECK_OK(fib_mutex_lock(&p->m));
    while (p->turn != 0)
      CHECK_OK(fib_cond_wait(&p->cv, &p->m));
    p->turn = 1;
    CHECK_OK(fib_cond_broadcast(&p->cv));
    CHECK_OK(fib_mutex_unlock(&p->m));
  }
  return NULL;
}

static void *pong(void *arg) {
  struct shared_prims *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    CHECK_OK(fib_mutex_lock(&p->m));
    while (p->turn != 1)
      CHECK_OK(fib_cond_wait(&p->cv, &p->m));
    p->turn = 0;
    CHECK_OK(fib_cond_signal(&p->cv));
    CHECK_OK(fib_mutex_unlock(&p->m));
  }
  return NULL;
}

static void *shared_main(void *arg) {
  struct shared_prims *p = arg;
  enum { MUTEXERS = 16, PRODUCERS = 4, CONSUMERS = 6 };
  CHECK_OK(fib_wg_add(&p->wg, MUTEXERS));
  fib_attr det = {0};
  det.flags = FIB_DETACHED;
  for (int i = 0; i < MUTEXERS; i++)
    CHECK_OK(fib_spawn(NULL, mutex_worker, p, &det, NULL));
  fib_id cons[CONSUMERS];
  for (int i = 0; i < CONSUMERS; i++)
    CHECK_OK(fib_spawn(NULL, consumer, p, NULL, &cons[i]));
  for (int i = 0; i < PRODUCERS; i++)
    CHECK_OK(fib_spawn(NULL, producer, p, &det, NULL));
  CHECK_OK(fib_wg_wait(&p->wg));
  CHECK_EQ(p->counter, (long)MUTEXERS * p->rounds);
  CHECK_EQ(p->once_runs, 1);
  for (int i = 0; i < PRODUCERS; i++)
    CHECK_OK(fib_sem_wait(&p->sem));
  CHECK_OK(fib_chan_close(&p->done));
  for (int i = 0; i < CONSUMERS; i++)
    CHECK_OK(fib_join(cons[i], NULL));
  long n = p->rounds;
  CHECK_EQ(p->received_sum, PRODUCERS * n * (n + 1) / 2);
  fib_id a, b;
  CHECK_OK(fib_spawn(NULL, ping, p, NULL, &a));
  CHECK_OK(fib_spawn(NULL, pong, p, NULL, &b));
  CHECK_OK(fib_join(a, NULL));
  CHECK_OK(fib_join(b, NULL));
  return NULL;
}

TEST(primitives_and_channels_are_shared_across_workers) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    /* Initialised while a multi-worker runtime exists: shared. */
    struct shared_prims *p = calloc(1, sizeof *p);
    CHECK(p != NULL);
    p->rounds = (int)scaled(2000);
    CHECK_OK(fib_mutex_init(&p->m));
    CHECK_OK(fib_cond_init(&p->cv));
    CHECK_OK(fib_sem_init(&p->sem, 0));
    CHECK_OK(fib_wg_init(&p->wg));
    CHECK_OK(fib_chan_init(&p->unbuf, sizeof(long), 0));
    CHECK_OK(fib_chan_init(&p->buf, sizeof(long), 8));
    CHECK_OK(fib_chan_init(&p->done, 0, 0));
    CHECK_OK(fib_spawn(rt, shared_main, p, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_mutex_destroy(&p->m));
    CHECK_OK(fib_cond_destroy(&p->cv));
    CHECK_OK(fib_sem_destroy(&p->sem));
    CHECK_OK(fib_wg_destroy(&p->wg));
    CHECK_OK(fib_chan_destroy(&p->unbuf));
    CHECK_OK(fib_chan_destroy(&p->buf));
    CHECK_OK(fib_chan_destroy(&p->done));
    free(p);
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* Hand-offs racing deadlines and cancels: a mutex or a unit handed to a
 * waiter whose deadline fires at the same moment is either taken (the
 * call returns 0 and the fiber owns it) or not (an error, and it went to
 * someone else): the counts balance exactly. */
struct racers {
  fib_mutex m;
  fib_sem s;
  long held;      /* under m */
  long locks, timeouts, units, unit_timeouts;
  int rounds;
};

static void *lock_racer(void *arg) {
  struct racers *r = arg;
  for (int i = 0; i < r->rounds; i++) {
    int err = fib_mutex_lock_until(&r->m, fib_now_ns() + (uint64_t)(i % 3) * 20000);
    if (err == FIB_ETIMEDOUT) {
      __atomic_add_fetch(&r->timeouts, 1, __ATOMIC_RELAXED);
      continue;
    }
    CHECK_OK(err);
    CHECK_EQ(r->held, 0);
    r->held = 1;
    if (i % 2)
      CHECK_OK(fib_yield());
    r->held = 0;
    r->locks++;
    CHECK_OK(fib_mutex_unlock(&r->m));
  }
  return NULL;
}

static void *unit_racer(void *arg) {
  struct racers *r = arg;
  for (int i = 0; i < r->rounds; i++) {
    int err = fib_sem_wait_until(&r->s, fib_now_ns() + (uint64_t)(i % 4) * 10000);
    if (err == FIB_ETIMEDOUT)
      __atomic_add_fetch(&r->unit_timeouts, 1, __ATOMIC_RELAXED);
    else {
      CHECK_OK(err);
      __atomic_add_fetch(&r->units, 1, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

static void *unit_poster(void *arg) {
  struct racers *r = arg;
  for (int i = 0; i < r->rounds; i++) {
    CHECK_OK(fib_sem_post(&r->s));
    if (i % 3 == 0)
      CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *racers_main(void *arg) {
  struct racers *r = arg;
  enum { N = 8 };
  fib_id ids[3 * N];
  for (int i = 0; i < N; i++) {
    CHECK_OK(fib_spawn(NULL, lock_racer, r, NULL, &ids[3 * i]));
    CHECK_OK(fib_spawn(NULL, unit_racer, r, NULL, &ids[3 * i + 1]));
    CHECK_OK(fib_spawn(NULL, unit_poster, r, NULL, &ids[3 * i + 2]));
  }
  for (int i = 0; i < 3 * N; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  CHECK_EQ(r->locks + r->timeouts, (long)N * r->rounds);
  /* every unit posted was taken by a wait that returned 0, or is left */
  CHECK_EQ((long)fib_sem_value(&r->s) + r->units, (long)N * r->rounds);
  CHECK_EQ(r->units + r->unit_timeouts, (long)N * r->rounds);
  return NULL;
}

TEST(hand_offs_racing_deadlines_balance_exactly) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    struct racers *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    r->rounds = (int)scaled(3000);
    CHECK_OK(fib_mutex_init(&r->m));
    CHECK_OK(fib_sem_init(&r->s, 0));
    CHECK_OK(fib_spawn(rt, racers_main, r, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_mutex_destroy(&r->m));
    CHECK_OK(fib_sem_destroy(&r->s));
    free(r);
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* A shared primitive also serves a one-worker runtime's fibers, deadlines
 * and cancels included. */
static void *one_worker_user(void *arg) {
  fib_sem *s = arg;
  CHECK_EQ(fib_sem_wait_until(s, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_OK(fib_sem_post(s));
  CHECK_OK(fib_sem_wait(s));
  return NULL;
}

/* ---- what is refused with several workers */

static fib_mutex early_mutex;
static fib_chan early_chan;

static void *refused(void *arg) {
  (void)arg;
  /* Initialised before any multi-worker runtime existed: local. */
  CHECK_EQ(fib_mutex_lock(&early_mutex), FIB_ENOTSUP);
  int v = 1;
  CHECK_EQ(fib_chan_send(&early_chan, &v), FIB_ENOTSUP);
  return NULL;
}

TEST(local_primitives_are_refused) {
  CHECK_OK(fib_mutex_init(&early_mutex));
  CHECK_OK(fib_chan_init(&early_chan, sizeof(int), 1));
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, refused, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  /* A shared one (made now) works for a one-worker runtime too. */
  fib_sem s;
  CHECK_OK(fib_sem_init(&s, 0));
  fib_runtime *one = new_runtime();
  CHECK_OK(fib_spawn(one, one_worker_user, &s, NULL, NULL));
  CHECK_OK(fib_run(one));
  CHECK_OK(fib_runtime_destroy(one));
  CHECK_OK(fib_sem_destroy(&s));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_mutex_destroy(&early_mutex));
  CHECK_OK(fib_chan_destroy(&early_chan));
  CHECK_STR_EQ(fib_strerror(FIB_ENOTSUP),
               "not supported (yet) in this configuration");
}

TEST_MAIN(T(tree_sums_exactly_on_2_workers), T(tree_sums_exactly_on_4_workers),
          T(a_tree_with_work_at_the_leaves_uses_every_worker),
          T(fibers_spawned_before_the_run_spread_too),
          T(stolen_subtrees_run_one_at_a_time),
          T(first_fiber_and_pinned_fibers_stay_and_none_moves_once_started),
          T(fibers_placed_on_a_worker_run_there),
          T(worker_threads_are_planned_over_the_creators_cpus_in_turn),
          T(worker_threads_start_spread_and_are_left_unbound),
          T(join_detach_and_deadlines_across_workers),
          T(cancel_wakes_fibers_on_every_worker),
          T(a_join_racing_its_cancel_ends_exactly_once),
          T(a_join_meets_its_childs_finish_on_another_worker_exactly_once),
          T(a_detach_meets_the_finish_on_another_worker_and_frees_once),
          T(a_join_its_childs_finish_and_a_cancel_on_three_workers_end_once),
          T(a_joiners_own_cancel_check_loses_to_a_finisher_elsewhere_once),
          T(joins_on_the_last_of_the_most_workers_end_once),
          T(a_cancel_carried_to_a_joiners_worker_ends_its_join_once),
          T(a_cancel_from_a_plain_thread_reaches_a_joiner_on_a_worker),
          T(a_late_cancel_note_leaves_a_reused_record_alone),
          T(a_cancel_that_cannot_be_carried_says_so_and_marks_the_fiber),
          T(a_join_and_a_detach_from_another_worker_end_once),
          T(two_joins_from_two_workers_end_once),
          T(a_join_and_a_detach_from_a_plain_thread_end_once),
          T(a_cancel_from_another_worker_never_misses_a_join_on_its_childs_worker),
          T(a_cancel_from_a_plain_thread_never_misses_a_join_on_its_childs_worker),
          T(a_join_cycle_across_workers_is_a_deadlock),
          T_TIMEOUT(a_deadlock_after_a_wake_up_across_workers_is_reported, 10),
          T(a_run_with_no_fibers_returns_at_once_and_runs_again),
          T(idle_workers_use_no_cpu), T(io_waits_on_several_workers),
          T(primitives_and_channels_are_shared_across_workers),
          T(hand_offs_racing_deadlines_balance_exactly),
          T(local_primitives_are_refused))
