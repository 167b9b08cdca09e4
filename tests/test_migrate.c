/* SPDX-License-Identifier: MIT */
/* test_migrate.c -- fibers that move between workers after they have run:
 * FIB_MIGRATABLE fibers taken by idle workers, fib_move_to landing on the
 * worker asked for, fib_nomigrate_begin/end keeping a fiber on its thread,
 * the forced mode (FIBERS_FORCE_MIGRATE=1, which most cases here turn on
 * themselves) with exact results for channels, mutexes, joins, sleeps and
 * cancel on 2 and 4 workers, the library's answers after each move, and
 * the errors. */
#include "fiber_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* The forced mode for the runtimes this case creates from now on. */
static void force(int on) {
  if (on)
    CHECK_EQ(setenv("FIBERS_FORCE_MIGRATE", "1", 1), 0);
  else
    CHECK_EQ(unsetenv("FIBERS_FORCE_MIGRATE"), 0);
}


/* ---- the threads one fiber has run on */

#define TRACE_SLOTS 8

struct trace {
  pthread_t seen[TRACE_SLOTS];
  int count;  /* distinct threads seen (at most TRACE_SLOTS kept) */
  int steps;
};

/* Only the fiber itself writes its trace, one step at a time. */
static void note(struct trace *t) {
  pthread_t me = current_thread();
  t->steps++;
  for (int i = 0; i < t->count && i < TRACE_SLOTS; i++)
    if (pthread_equal(t->seen[i], me))
      return;
  if (t->count < TRACE_SLOTS)
    t->seen[t->count] = me;
  t->count++;
}

/* What every step checks after a move: the library answers for the
 * thread it runs on now (its thread-locals read afresh). */
static void check_self(fib_id id, fib_runtime *rt) {
  CHECK_EQ(fib_self(), id);
  CHECK_PTR_EQ(fib_runtime_current(), rt);
  CHECK_PTR_EQ(fib_coro_current(), NULL);
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  char here;
  CHECK((char *)info.lo <= &here && &here < (char *)info.hi);
}

/* ---- FIB_MIGRATABLE without the forced mode: idle workers take fibers
 * that have run */

struct spread {
  fib_runtime *rt;
  struct trace trace[8];
  uint64_t sum;
  int any_moved; /* atomic: some fiber has run on a second thread */
};

struct spread_arg {
  struct spread *s;
  int index;
};

static void *busy_yielder(void *arg) {
  struct spread_arg *a = arg;
  struct trace *t = &a->s->trace[a->index];
  fib_id id = fib_self();
  /* 200 steps, and on (up to a bound far beyond any quiet machine's
   * need) until some fiber has moved: on a crowded machine the idle
   * workers' threads may get no CPU to take one for a long while */
  for (int i = 0;
       i < 200 || (i < 100000 && !__atomic_load_n(&a->s->any_moved,
                                                  __ATOMIC_RELAXED));
       i++) {
    spin(20000);
    note(t);
    if (t->count > 1)
      __atomic_store_n(&a->s->any_moved, 1, __ATOMIC_RELAXED);
    CHECK_OK(fib_yield());
    check_self(id, a->s->rt);
  }
  __atomic_add_fetch(&a->s->sum, (uint64_t)a->index + 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *spread_main(void *arg) {
  struct spread *s = arg;
  struct spread_arg args[8];
  fib_id ids[8];
  /* All start on worker 0 (placed there, so no idle worker takes them
   * before they run): any move is of a fiber that has run. */
  fib_attr attr = {0};
  attr.flags = FIB_MIGRATABLE;
  attr.worker = 1;
  for (int i = 0; i < 8; i++) {
    args[i] = (struct spread_arg){s, i};
    CHECK_OK(fib_spawn(NULL, busy_yielder, &args[i], &attr, &ids[i]));
  }
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  return NULL;
}

TEST(migratable_fibers_that_have_run_are_taken_by_idle_workers) {
  force(0);
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct spread s = {0};
    s.rt = new_workers(workers);
    CHECK_OK(fib_spawn(s.rt, spread_main, &s, NULL, NULL));
    CHECK_OK(fib_run(s.rt));
    CHECK_OK(fib_runtime_destroy(s.rt));
    CHECK_EQ(s.sum, 36u);
    int moved = 0;
    for (int i = 0; i < 8; i++) {
      CHECK(s.trace[i].steps >= 200);
      moved += s.trace[i].count > 1;
    }
    CHECK(moved >= 1);
  }
}

/* ---- the forced mode: exact results, and fibers really move */

struct forced {
  fib_runtime *rt;
  unsigned workers;
  fib_mutex mutex;
  fib_chan chan;
  fib_chan results;
  uint64_t counter;
  uint64_t received;
  uint64_t slept;
  int cancelled;
  struct trace trace[16];
};

#define PRODUCERS 4
#define PER_PRODUCER 300
#define LOCKERS 4
#define PER_LOCKER 200

struct forced_arg {
  struct forced *f;
  int index;
};

static void *locker(void *arg) {
  struct forced_arg *a = arg;
  struct trace *t = &a->f->trace[a->index];
  fib_id id = fib_self();
  for (int i = 0; i < PER_LOCKER; i++) {
    CHECK_OK(fib_mutex_lock(&a->f->mutex));
    note(t);
    uint64_t v = a->f->counter;
    CHECK_OK(fib_yield()); /* a move inside the section */
    check_self(id, a->f->rt);
    note(t); /* at each switch: two moves may bring it back */
    a->f->counter = v + 1;
    CHECK_OK(fib_mutex_unlock(&a->f->mutex));
    note(t);
  }
  return NULL;
}

static void *producer(void *arg) {
  struct forced_arg *a = arg;
  struct trace *t = &a->f->trace[a->index];
  fib_id id = fib_self();
  for (int i = 1; i <= PER_PRODUCER; i++) {
    uint64_t v = (uint64_t)a->index * 1000000u + (uint64_t)i;
    CHECK_OK(fib_chan_send(&a->f->chan, &v));
    check_self(id, a->f->rt);
    note(t);
  }
  return NULL;
}

static void *consumer(void *arg) {
  struct forced_arg *a = arg;
  struct trace *t = &a->f->trace[a->index];
  fib_id id = fib_self();
  uint64_t sum = 0, v;
  int err;
  while ((err = fib_chan_recv(&a->f->chan, &v)) == 0) {
    sum += v;
    check_self(id, a->f->rt);
    note(t);
  }
  CHECK_EQ(err, FIB_EPIPE);
  CHECK_OK(fib_chan_send(&a->f->results, &sum));
  return NULL;
}

static void *sleeper(void *arg) {
  struct forced_arg *a = arg;
  struct trace *t = &a->f->trace[a->index];
  fib_id id = fib_self();
  for (int i = 0; i < 20; i++) {
    uint64_t before = fib_now_ns();
    CHECK_OK(fib_sleep_ns(200000));
    CHECK(fib_now_ns() >= before + 200000);
    check_self(id, a->f->rt);
    note(t);
  }
  __atomic_add_fetch(&a->f->slept, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *wait_for_cancel(void *arg) {
  struct forced_arg *a = arg;
  fib_id id = fib_self();
  for (;;) {
    int err = fib_sleep_ns(10 * MS);
    check_self(id, a->f->rt);
    if (err == FIB_ECANCELED) {
      CHECK_EQ(fib_cancelled(), 1);
      break;
    }
    CHECK_OK(err);
  }
  return NULL;
}

static void *leaf(void *arg) {
  CHECK_OK(fib_yield());
  return (void *)((uintptr_t)arg * 2);
}

static void *joiner_tree(void *arg) {
  struct forced_arg *a = arg;
  fib_id id = fib_self();
  uint64_t sum = 0;
  for (int round = 0; round < 20; round++) {
    fib_id kids[5];
    for (uintptr_t k = 0; k < 5; k++)
      CHECK_OK(fib_spawn(NULL, leaf, (void *)k, NULL, &kids[k]));
    for (int k = 0; k < 5; k++) {
      void *r;
      CHECK_OK(fib_join(kids[k], &r));
      check_self(id, a->f->rt);
      sum += (uintptr_t)r;
    }
  }
  return (void *)(uintptr_t)sum;
}

static void *forced_main(void *arg) {
  struct forced *f = arg;
  CHECK_OK(fib_mutex_init(&f->mutex));
  CHECK_OK(fib_chan_init(&f->chan, sizeof(uint64_t), 0));
  CHECK_OK(fib_chan_init(&f->results, sizeof(uint64_t), 4));
  struct forced_arg args[16];
  fib_id lockers[LOCKERS], producers[PRODUCERS], consumers[2], sleepers[2];
  int n = 0;
  for (int i = 0; i < LOCKERS; i++, n++) {
    args[n] = (struct forced_arg){f, n};
    CHECK_OK(fib_spawn(NULL, locker, &args[n], NULL, &lockers[i]));
  }
  for (int i = 0; i < PRODUCERS; i++, n++) {
    args[n] = (struct forced_arg){f, n};
    CHECK_OK(fib_spawn(NULL, producer, &args[n], NULL, &producers[i]));
  }
  for (int i = 0; i < 2; i++, n++) {
    args[n] = (struct forced_arg){f, n};
    CHECK_OK(fib_spawn(NULL, consumer, &args[n], NULL, &consumers[i]));
  }
  for (int i = 0; i < 2; i++, n++) {
    args[n] = (struct forced_arg){f, n};
    CHECK_OK(fib_spawn(NULL, sleeper, &args[n], NULL, &sleepers[i]));
  }
  struct forced_arg tree_arg = {f, n};
  fib_id tree, victim;
  CHECK_OK(fib_spawn(NULL, joiner_tree, &tree_arg, NULL, &tree));
  CHECK_OK(fib_spawn(NULL, wait_for_cancel, &tree_arg, NULL, &victim));

  CHECK_OK(fib_sleep_ns(2 * MS));
  CHECK_OK(fib_cancel(NULL, victim));
  CHECK_OK(fib_join(victim, NULL));
  for (int i = 0; i < LOCKERS; i++)
    CHECK_OK(fib_join(lockers[i], NULL));
  for (int i = 0; i < PRODUCERS; i++)
    CHECK_OK(fib_join(producers[i], NULL));
  CHECK_OK(fib_chan_close(&f->chan));
  uint64_t total = 0;
  for (int i = 0; i < 2; i++) {
    uint64_t part;
    CHECK_OK(fib_chan_recv(&f->results, &part));
    total += part;
  }
  f->received = total;
  for (int i = 0; i < 2; i++) {
    CHECK_OK(fib_join(consumers[i], NULL));
    CHECK_OK(fib_join(sleepers[i], NULL));
  }
  void *r;
  CHECK_OK(fib_join(tree, &r));
  CHECK_EQ((uintptr_t)r, 20u * (0 + 2 + 4 + 6 + 8));
  CHECK_OK(fib_mutex_destroy(&f->mutex));
  CHECK_OK(fib_chan_destroy(&f->chan));
  CHECK_OK(fib_chan_destroy(&f->results));
  return NULL;
}

static void forced_run(unsigned workers) {
  force(1);
  struct forced f = {0};
  f.workers = workers;
  f.rt = new_workers(workers);
  CHECK_OK(fib_spawn(f.rt, forced_main, &f, NULL, NULL));
  CHECK_OK(fib_run(f.rt));
  CHECK_OK(fib_runtime_destroy(f.rt));
  CHECK_EQ(f.counter, (uint64_t)LOCKERS * PER_LOCKER);
  uint64_t want = 0;
  for (int p = LOCKERS; p < LOCKERS + PRODUCERS; p++)
    want += (uint64_t)p * 1000000u * PER_PRODUCER +
            (uint64_t)PER_PRODUCER * (PER_PRODUCER + 1) / 2;
  CHECK_EQ(f.received, want);
  CHECK_EQ(f.slept, 2u);
  /* Every fiber that gave way often ran on more than one thread, and the
   * lockers on every worker (each turn moves them on, in turn). */
  for (int i = 0; i < LOCKERS + PRODUCERS + 4; i++)
    if (f.trace[i].count < 2)
      check_failed(__FILE__, __LINE__, "fiber %d: %d threads in %d steps", i,
                   f.trace[i].count, f.trace[i].steps);
  for (int i = 0; i < LOCKERS; i++)
    CHECK_EQ(f.trace[i].count, (int)workers);
}

TEST(forced_mode_exact_results_on_2_workers) { forced_run(2); }
TEST(forced_mode_exact_results_on_4_workers) { forced_run(4); }

/* ---- the first fiber, FIB_PINNED, fib_attr.worker and compact fibers
 * stay, even in the forced mode; the guard keeps a fiber where it is */

struct stay {
  pthread_t runner;
  int first_moved, pinned_moved, guarded_moved, guard_then_moved;
};

static void *stays(void *arg) {
  int *moved = arg;
  pthread_t me = current_thread();
  for (int i = 0; i < 50; i++) {
    CHECK_OK(fib_yield());
    if (i % 10 == 0)
      CHECK_OK(fib_sleep_ns(100000));
    if (!pthread_equal(me, current_thread()))
      *moved = 1;
  }
  return NULL;
}

struct guarded {
  struct stay *s;
  fib_chan *ping;
};

static void *guarded_fiber(void *arg) {
  struct guarded *g = arg;
  CHECK_OK(fib_nomigrate_begin());
  CHECK_OK(fib_nomigrate_begin()); /* nested */
  pthread_t me = current_thread();
  for (int i = 0; i < 100; i++) {
    CHECK_OK(fib_yield());
    if (i % 20 == 0)
      CHECK_OK(fib_sleep_ns(100000));
    int v = i;
    CHECK_OK(fib_chan_send(g->ping, &v)); /* a wait on another fiber */
    if (!pthread_equal(me, current_thread()))
      g->s->guarded_moved = 1;
  }
  CHECK_EQ(fib_move_to(0), FIB_EBUSY);
  CHECK_OK(fib_nomigrate_end());
  CHECK_EQ(fib_move_to(0), FIB_EBUSY); /* still one deep */
  CHECK_OK(fib_nomigrate_end());
  CHECK_EQ(fib_nomigrate_end(), FIB_EINVAL);
  /* Out of the guard: the forced mode moves it again. */
  for (int i = 0; i < 10; i++) {
    CHECK_OK(fib_yield());
    if (!pthread_equal(me, current_thread()))
      g->s->guard_then_moved = 1;
  }
  int end = -1;
  CHECK_OK(fib_chan_send(g->ping, &end));
  return NULL;
}

static void *drain(void *arg) {
  fib_chan *c = arg;
  int v;
  do
    CHECK_OK(fib_chan_recv(c, &v));
  while (v >= 0);
  return NULL;
}

static void *stay_main(void *arg) {
  struct stay *s = arg;
  fib_chan ping;
  CHECK_OK(fib_chan_init(&ping, sizeof(int), 0));
  fib_attr pin = {0};
  pin.flags = FIB_PINNED;
  fib_attr placed = {0};
  placed.worker = 2;
  fib_attr compact = {0};
  compact.flags = FIB_COMPACT;
  fib_id ids[6];
  struct guarded g = {s, &ping};
  CHECK_OK(fib_spawn(NULL, stays, &s->pinned_moved, &pin, &ids[0]));
  CHECK_OK(fib_spawn(NULL, stays, &s->pinned_moved, &placed, &ids[1]));
  CHECK_OK(fib_spawn(NULL, stays, &s->pinned_moved, &compact, &ids[2]));
  CHECK_OK(fib_spawn(NULL, guarded_fiber, &g, NULL, &ids[3]));
  CHECK_OK(fib_spawn(NULL, drain, &ping, NULL, &ids[4]));
  (void)stays(&s->first_moved); /* the first fiber itself */
  if (!pthread_equal(s->runner, current_thread()))
    s->first_moved = 1;
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  CHECK_OK(fib_chan_destroy(&ping));
  return NULL;
}

TEST(pinned_first_placed_compact_and_guarded_fibers_stay_when_forced) {
  force(1);
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct stay s = {0};
    s.runner = current_thread();
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_spawn(rt, stay_main, &s, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_EQ(s.first_moved, 0);
    CHECK_EQ(s.pinned_moved, 0);
    CHECK_EQ(s.guarded_moved, 0);
    CHECK_EQ(s.guard_then_moved, 1);
  }
}

/* ---- fib_move_to */

struct worker_threads {
  pthread_t thread[4];
};

struct probe {
  struct worker_threads *w;
  unsigned index;
};

static void *probe_thread(void *arg) {
  struct probe *p = arg;
  p->w->thread[p->index] = current_thread();
  return NULL;
}

/* Learn each worker's thread from a fiber placed on it. */
static void learn_threads(struct worker_threads *w, unsigned workers) {
  struct probe probes[4];
  fib_id ids[4];
  for (unsigned k = 0; k < workers; k++) {
    probes[k] = (struct probe){w, k};
    fib_attr attr = {0};
    attr.worker = k + 1;
    CHECK_OK(fib_spawn(NULL, probe_thread, &probes[k], &attr, &ids[k]));
  }
  for (unsigned k = 0; k < workers; k++)
    CHECK_OK(fib_join(ids[k], NULL));
}

struct mover {
  fib_runtime *rt;
  struct worker_threads w;
  unsigned workers;
  int done;
};

static void *move_around(void *arg) {
  struct mover *m = arg;
  fib_id id = fib_self();
  /* Every worker in turn, twice, and to where it is (no switch). */
  for (unsigned i = 0; i < 2 * m->workers; i++) {
    unsigned k = (i * 3 + 1) % m->workers;
    CHECK_OK(fib_move_to(k));
    CHECK(pthread_equal(current_thread(), m->w.thread[k]));
    check_self(id, m->rt);
    CHECK_OK(fib_move_to(k));
    CHECK(pthread_equal(current_thread(), m->w.thread[k]));
    /* Not FIB_MIGRATABLE: it stays on its new worker while it waits. */
    for (int j = 0; j < 5; j++) {
      CHECK_OK(fib_yield());
      CHECK_OK(fib_sleep_ns(20000));
      CHECK(pthread_equal(current_thread(), m->w.thread[k]));
    }
  }
  CHECK_EQ(fib_move_to(m->workers), FIB_EINVAL);
  CHECK_OK(fib_cancel(NULL, id)); /* a move is not a wait */
  CHECK_OK(fib_move_to(0));
  CHECK(pthread_equal(current_thread(), m->w.thread[0]));
  m->done++;
  return NULL;
}

static void *move_main(void *arg) {
  struct mover *m = arg;
  learn_threads(&m->w, m->workers);
  for (unsigned a = 0; a < m->workers; a++)
    for (unsigned b = a + 1; b < m->workers; b++)
      CHECK(!pthread_equal(m->w.thread[a], m->w.thread[b]));
  fib_attr pin = {0};
  pin.flags = FIB_PINNED;
  fib_id ids[2];
  CHECK_OK(fib_spawn(NULL, move_around, m, &pin, &ids[0]));
  CHECK_OK(fib_spawn(NULL, move_around, m, NULL, &ids[1]));
  for (int i = 0; i < 2; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  /* The first fiber may move too, and back. */
  CHECK_OK(fib_move_to(m->workers - 1));
  CHECK(pthread_equal(current_thread(), m->w.thread[m->workers - 1]));
  CHECK_OK(fib_move_to(0));
  CHECK(pthread_equal(current_thread(), m->w.thread[0]));
  return NULL;
}

/* In the forced mode, which moves a fiber each time it gives way, an
 * explicit move still returns on the worker asked for (it runs there
 * before the mode moves it on). */
static void *forced_mover(void *arg) {
  struct mover *m = arg;
  for (unsigned i = 0; i < 4 * m->workers; i++) {
    unsigned k = (i * 3 + 1) % m->workers;
    CHECK_OK(fib_move_to(k));
    CHECK(pthread_equal(current_thread(), m->w.thread[k]));
    CHECK_OK(fib_yield()); /* the mode moves it on from here */
  }
  m->done++;
  return NULL;
}

static void *forced_move_main(void *arg) {
  struct mover *m = arg;
  learn_threads(&m->w, m->workers);
  fib_id id;
  CHECK_OK(fib_spawn(NULL, forced_mover, m, NULL, &id));
  CHECK_OK(fib_join(id, NULL));
  return NULL;
}

TEST(move_to_lands_there_in_the_forced_mode_too) {
  force(1);
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct mover m = {0};
    m.workers = workers;
    m.rt = new_workers(workers);
    CHECK_OK(fib_spawn(m.rt, forced_move_main, &m, NULL, NULL));
    CHECK_OK(fib_run(m.rt));
    CHECK_OK(fib_runtime_destroy(m.rt));
    CHECK_EQ(m.done, 1);
  }
  force(0);
}

TEST(move_to_lands_on_the_worker_asked_for) {
  force(0);
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    struct mover m = {0};
    m.workers = workers;
    m.rt = new_workers(workers);
    CHECK_OK(fib_spawn(m.rt, move_main, &m, NULL, NULL));
    CHECK_OK(fib_run(m.rt));
    CHECK_OK(fib_runtime_destroy(m.rt));
    CHECK_EQ(m.done, 2);
  }
}

/* A FIB_MIGRATABLE fiber moved to a worker that has other fibers ready
 * while the worker it left is idle: the worker it came to offers its ready
 * fibers that may move, and the move must still return there (it is
 * offered nowhere until it has run there). */
struct restless {
  struct worker_threads w;
  int stop;  /* the yielders' end */
  long moves;
};

static void *yield_until_stop(void *arg) {
  struct restless *r = arg;
  while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
    CHECK_OK(fib_yield());
  return NULL;
}

static void *restless_mover(void *arg) {
  struct restless *r = arg;
  long rounds = scaled(2000);
  for (long i = 0; i < rounds; i++) {
    CHECK_OK(fib_move_to(1));
    CHECK(pthread_equal(current_thread(), r->w.thread[1]));
    CHECK_OK(fib_move_to(0));
    CHECK(pthread_equal(current_thread(), r->w.thread[0]));
    r->moves += 2;
  }
  __atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *restless_main(void *arg) {
  struct restless *r = arg;
  learn_threads(&r->w, 2);
  fib_attr pin = {0}, move = {0};
  pin.flags = FIB_PINNED; /* not FIB_MIGRATABLE either: they stay */
  move.flags = FIB_MIGRATABLE;
  fib_id ids[4];
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(NULL, yield_until_stop, r, &pin, &ids[i]));
  CHECK_OK(fib_spawn(NULL, restless_mover, r, &move, &ids[3]));
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  return NULL;
}

TEST(a_migratable_fibers_move_lands_there_beside_ready_fibers) {
  force(0);
  struct restless r = {0};
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, restless_main, &r, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(r.moves, 2 * scaled(2000));
}

/* ---- errors */

static void *one_worker_calls(void *arg) {
  (void)arg;
  CHECK_OK(fib_move_to(0));
  CHECK_EQ(fib_move_to(1), FIB_EINVAL);
  CHECK_OK(fib_nomigrate_begin());
  CHECK_EQ(fib_move_to(0), FIB_EBUSY);
  CHECK_OK(fib_nomigrate_end());
  CHECK_EQ(fib_nomigrate_end(), FIB_EINVAL);
  fib_attr bad = {0};
  bad.flags = FIB_MIGRATABLE | FIB_PINNED;
  CHECK_EQ(fib_spawn(NULL, leaf, NULL, &bad, NULL), FIB_EINVAL);
  bad.flags = FIB_MIGRATABLE | FIB_COMPACT;
  CHECK_EQ(fib_spawn(NULL, leaf, NULL, &bad, NULL), FIB_EINVAL);
  fib_attr ok = {0};
  ok.flags = FIB_MIGRATABLE; /* accepted, no effect with one worker */
  fib_id id;
  CHECK_OK(fib_spawn(NULL, leaf, (void *)1, &ok, &id));
  CHECK_EQ(join_int(id), 2);
  return NULL;
}

static void *compact_mover(void *arg) {
  (void)arg;
  CHECK_EQ(fib_move_to(0), FIB_EINVAL);
  CHECK_EQ(fib_move_to(1), FIB_EINVAL);
  CHECK_OK(fib_nomigrate_begin()); /* the guard is fine: it only counts */
  CHECK_OK(fib_nomigrate_end());
  return NULL;
}

/* The guard's depth has a limit (fibers.h: 65,000), and the library's own
 * guard around an I/O wait still fits beyond it. */
static void *deep_guard(void *arg) {
  (void)arg;
  unsigned depth = 0;
  int err;
  while ((err = fib_nomigrate_begin()) == 0)
    depth++;
  CHECK_EQ(err, FIB_EOVERFLOW);
  CHECK_EQ(depth, 65000u);
  CHECK_OK(fib_sleep_ns(1000)); /* a wait inside the deepest guard */
  int fds[2];
  CHECK_EQ(pipe(fds), 0);
  char c;
  CHECK_EQ(fib_read_until(fds[0], &c, 1, fib_now_ns() + 1000000),
           FIB_ETIMEDOUT); /* an I/O wait: the library's guard on top */
  CHECK_EQ(fib_close(fds[0]), 0);
  CHECK_EQ(close(fds[1]), 0);
  while (depth--)
    CHECK_OK(fib_nomigrate_end());
  CHECK_EQ(fib_nomigrate_end(), FIB_EINVAL);
  return NULL;
}

static void *coro_body(void *arg, void *first) {
  (void)arg;
  (void)first;
  CHECK_EQ(fib_move_to(0), FIB_EPERM);
  CHECK_EQ(fib_nomigrate_begin(), FIB_EPERM);
  return NULL;
}

static void *inside_coroutine(void *arg) {
  (void)arg;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_body, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_OK(fib_coro_destroy(co));
  return NULL;
}

TEST(errors) {
  force(0);
  CHECK_EQ(fib_move_to(0), FIB_EPERM);
  CHECK_EQ(fib_nomigrate_begin(), FIB_EPERM);
  CHECK_EQ(fib_nomigrate_end(), FIB_EPERM);
  run_main(one_worker_calls, NULL);
  run_main(inside_coroutine, NULL);
  run_main(deep_guard, NULL);
  fib_attr compact = {0};
  compact.flags = FIB_COMPACT;
  run_main_with(compact_mover, NULL, &compact);
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, compact_mover, NULL, &compact, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  /* A forced mode that cannot be read is refused, not ignored. */
  CHECK_EQ(setenv("FIBERS_FORCE_MIGRATE", "yes", 1), 0);
  CHECK_EQ(fib_runtime_create(&rt, NULL), FIB_EINVAL);
  CHECK_EQ(setenv("FIBERS_FORCE_MIGRATE", "0", 1), 0);
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- a migratable fiber follows the partner that wakes it (workers.c,
 * inbox_drain: Go's rule), unless it holds its guard */

struct pair {
  fib_chan ch[2];
  int rounds, guarded;
  pthread_t *ping_at, *pong_at; /* the thread of each round, per side */
  long sum;
};

static void *pair_ping(void *arg) {
  struct pair *p = arg;
  if (p->guarded)
    CHECK_OK(fib_nomigrate_begin());
  for (long i = 0; i < p->rounds; i++) {
    long v;
    CHECK_OK(fib_chan_send(&p->ch[0], &i));
    CHECK_OK(fib_chan_recv(&p->ch[1], &v));
    CHECK_EQ(v, i + 1);
    p->sum += v;
    p->ping_at[i] = current_thread();
  }
  if (p->guarded)
    CHECK_OK(fib_nomigrate_end());
  return NULL;
}

static void *pair_pong(void *arg) {
  struct pair *p = arg;
  if (p->guarded)
    CHECK_OK(fib_nomigrate_begin());
  for (long i = 0; i < p->rounds; i++) {
    long v;
    CHECK_OK(fib_chan_recv(&p->ch[0], &v));
    p->pong_at[i] = current_thread();
    v++;
    CHECK_OK(fib_chan_send(&p->ch[1], &v));
  }
  if (p->guarded)
    CHECK_OK(fib_nomigrate_end());
  return NULL;
}

static void pair_run(unsigned workers, int guarded) {
  struct pair p = {.rounds = (int)scaled(2000) + 200, .guarded = guarded};
  p.ping_at = calloc((size_t)p.rounds, sizeof *p.ping_at);
  p.pong_at = calloc((size_t)p.rounds, sizeof *p.pong_at);
  CHECK(p.ping_at && p.pong_at);
  fib_runtime *rt = new_workers(workers);
  for (int i = 0; i < 2; i++)
    CHECK_OK(fib_chan_init(&p.ch[i], sizeof(long), 0));
  fib_attr a = {0}, b = {0};
  a.worker = 1; /* started on two workers, as in chan_unbuffered_2w */
  b.worker = workers;
  a.flags = b.flags = FIB_MIGRATABLE;
  CHECK_OK(fib_spawn(rt, pair_ping, &p, &a, NULL));
  CHECK_OK(fib_spawn(rt, pair_pong, &p, &b, NULL));
  CHECK_OK(fib_run(rt));
  long n = p.rounds;
  CHECK_EQ(p.sum, n * (n + 1) / 2);
  if (guarded) { /* each stayed where it started, on its own thread */
    for (int i = 0; i < p.rounds; i++) {
      CHECK(pthread_equal(p.ping_at[i], p.ping_at[0]));
      CHECK(pthread_equal(p.pong_at[i], p.pong_at[0]));
    }
    CHECK(!pthread_equal(p.ping_at[0], p.pong_at[0]));
  } else { /* together, after the first hops: the last 100 rounds */
    for (int i = p.rounds - 100; i < p.rounds; i++)
      CHECK(pthread_equal(p.ping_at[i], p.pong_at[i]));
  }
  for (int i = 0; i < 2; i++)
    CHECK_OK(fib_chan_destroy(&p.ch[i]));
  CHECK_OK(fib_runtime_destroy(rt));
  free(p.ping_at);
  free(p.pong_at);
}

TEST(a_migratable_fiber_follows_the_partner_that_wakes_it) {
  force(0);
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    pair_run(workers, 0);
    pair_run(workers, 1);
  }
}

TEST_MAIN(T(migratable_fibers_that_have_run_are_taken_by_idle_workers),
          T(forced_mode_exact_results_on_2_workers),
          T(forced_mode_exact_results_on_4_workers),
          T(pinned_first_placed_compact_and_guarded_fibers_stay_when_forced),
          T(move_to_lands_on_the_worker_asked_for),
          T(move_to_lands_there_in_the_forced_mode_too),
          T(a_migratable_fibers_move_lands_there_beside_ready_fibers),
          T(a_migratable_fiber_follows_the_partner_that_wakes_it), T(errors))
