/* SPDX-License-Identifier: MIT */
/* test_sched.c -- the runtime: order, join, detach, exit, sleep, names,
 * several runtimes on several threads. */
#include "fiber_helpers.h"

#include <fibers.h>

#include "sys.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* ---- order */

struct trace {
  int log[64];
  int n;
};

struct step_arg {
  struct trace *t;
  int who;
  int steps;
};

static void *stepper(void *arg) {
  struct step_arg *a = arg;
  for (int i = 0; i < a->steps; i++) {
    a->t->log[a->t->n++] = a->who;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(round_robin_in_spawn_order) {
  struct trace t = {.n = 0};
  struct step_arg a[3] = {{&t, 1, 4}, {&t, 2, 4}, {&t, 3, 4}};
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, stepper, &a[i], NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(t.n, 12);
  for (int i = 0; i < 12; i++)
    CHECK_EQ(t.log[i], i % 3 + 1);
}

static void *spawn_late(void *arg) {
  struct step_arg *a = arg;
  a->t->log[a->t->n++] = 0;
  CHECK_OK(fib_spawn(NULL, stepper, a + 1, NULL, NULL)); /* runs next */
  CHECK_OK(fib_yield());
  a->t->log[a->t->n++] = 0;
  return NULL;
}

TEST(fiber_spawned_inside_a_fiber_runs_next) {
  struct trace t = {.n = 0};
  struct step_arg a[3] = {{&t, 0, 0}, {&t, 9, 2}, {&t, 5, 2}};
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, spawn_late, &a[0], NULL, NULL));
  CHECK_OK(fib_spawn(rt, stepper, &a[2], NULL, NULL));
  run_to_end(rt);
  /* 0 (spawns 9, which runs next when 0 gives way), 9, 5, 0, 9, 5 */
  int want[] = {0, 9, 5, 0, 9, 5};
  CHECK_EQ(t.n, 6);
  for (int i = 0; i < 6; i++)
    CHECK_EQ(t.log[i], want[i]);
}

static void *spawn_three(void *arg) {
  struct step_arg *a = arg;
  a->t->log[a->t->n++] = 0;
  for (int i = 1; i <= 3; i++) /* a[1..3]: 1, 2, 3 */
    CHECK_OK(fib_spawn(NULL, stepper, a + i, NULL, NULL));
  CHECK_OK(fib_yield());
  a->t->log[a->t->n++] = 0;
  return NULL;
}

TEST(fibers_spawned_by_a_fiber_run_first_in_spawn_order) {
  struct trace t = {.n = 0};
  struct step_arg a[5] = {
      {&t, 0, 0}, {&t, 1, 1}, {&t, 2, 1}, {&t, 3, 1}, {&t, 7, 2}};
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, spawn_three, &a[0], NULL, NULL));
  CHECK_OK(fib_spawn(rt, stepper, &a[4], NULL, NULL)); /* queued before */
  run_to_end(rt);
  /* 0 spawns 1, 2, 3 and yields: they go before 7, which was queued
   * first; 0 yielded to the back, behind 7. */
  int want[] = {0, 1, 2, 3, 7, 0, 7};
  CHECK_EQ(t.n, 7);
  for (int i = 0; i < 7; i++)
    CHECK_EQ(t.log[i], want[i]);
}

/* A joiner runs as soon as its child finishes, before fibers that were
 * ready already. */
static struct trace join_trace;

static void *log_and_return(void *arg) {
  join_trace.log[join_trace.n++] = (int)(intptr_t)arg;
  return arg;
}

static void *log_and_yield(void *arg) {
  for (int i = 0; i < 2; i++) {
    join_trace.log[join_trace.n++] = (int)(intptr_t)arg;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *joiner(void *arg) {
  (void)arg;
  fib_id child;
  CHECK_OK(fib_spawn(NULL, log_and_return, (void *)(intptr_t)2, NULL,
                     &child));
  void *r;
  CHECK_OK(fib_join(child, &r));
  join_trace.log[join_trace.n++] = 1; /* before 8's second step */
  return NULL;
}

TEST(joiner_runs_first_when_its_child_finishes) {
  join_trace.n = 0;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, log_and_yield, (void *)(intptr_t)8, NULL, NULL));
  CHECK_OK(fib_spawn(rt, joiner, NULL, NULL, NULL));
  run_to_end(rt);
  int want[] = {8, 2, 1, 8};
  CHECK_EQ(join_trace.n, 4);
  for (int i = 0; i < 4; i++)
    CHECK_EQ(join_trace.log[i], want[i]);
}

/* A fiber that spawns and joins in a loop keeps putting fibers at the
 * front; one waiting at the back must still get turns. */
static long fair_rounds, fair_other_steps, fair_max_gap;

static void *nothing(void *arg) { return arg; }

static void *spawn_join_loop(void *arg) {
  (void)arg;
  long last_other = 0, gap = 0;
  for (fair_rounds = 0; fair_rounds < 5000; fair_rounds++) {
    fib_id id;
    CHECK_OK(fib_spawn(NULL, nothing, NULL, NULL, &id));
    CHECK_OK(fib_join(id, NULL));
    if (fair_other_steps == last_other) {
      gap++;
    } else {
      last_other = fair_other_steps;
      gap = 0;
    }
    if (gap > fair_max_gap)
      fair_max_gap = gap;
  }
  return NULL;
}

static void *count_steps(void *arg) {
  (void)arg;
  while (fair_rounds < 5000) {
    fair_other_steps++;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(front_of_the_queue_cannot_starve_the_back) {
  fair_rounds = fair_other_steps = fair_max_gap = 0;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, spawn_join_loop, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, count_steps, NULL, NULL, NULL));
  run_to_end(rt);
  /* Each round is two front pops (child, then joiner), so the back's
   * fiber gets a turn at least every 64 front pops: every ~32 rounds. */
  CHECK(fair_other_steps >= 5000 / 40);
  CHECK(fair_max_gap <= 40);
}

/* ---- join, detach, exit */

static void *square(void *arg) {
  intptr_t v = (intptr_t)arg;
  CHECK_OK(fib_yield());
  return (void *)(v * v);
}

static void *join_all(void *arg) {
  (void)arg;
  fib_id ids[10];
  for (intptr_t i = 0; i < 10; i++)
    CHECK_OK(fib_spawn(NULL, square, (void *)i, NULL, &ids[i]));
  for (intptr_t i = 9; i >= 0; i--) { /* out of order: some finished */
    void *r;
    CHECK_OK(fib_join(ids[i], &r));
    CHECK_EQ((intptr_t)r, i * i);
    CHECK_EQ(fib_join(ids[i], NULL), FIB_ESRCH); /* record freed */
  }
  return (void *)1;
}

TEST(join_returns_each_result_once) {
  run_main(join_all, NULL);
}

/* ---- ids */

static void *nothing_to_do(void *arg) { return arg; }

TEST(ids_start_at_one_in_spawn_order_while_none_is_freed) {
  fib_runtime *rt = new_runtime();
  /* from outside: worker 0's, which hands out 1, 1 + n, 1 + 2n, ... */
  uint64_t n = test_workers() > 1 ? test_workers() : 1;
  for (uint64_t i = 0; i < 5; i++) {
    fib_id id;
    CHECK_OK(fib_spawn(rt, nothing_to_do, NULL, NULL, &id));
    CHECK_EQ(id, 1 + i * n);
  }
  run_to_end(rt);
}

/* Spawn and join 3,000 children one after the other: every id is new (a
 * stale one never names the fiber that reuses its slot), and the slots
 * are reused, so the table stays small. */
#define ID_ROUNDS 3000
static fib_id seen_ids[ID_ROUNDS];

static void *spawn_join_many(void *arg) {
  (void)arg;
  for (int i = 0; i < ID_ROUNDS; i++) {
    fib_id id;
    CHECK_OK(fib_spawn(NULL, nothing_to_do, (void *)(intptr_t)i, NULL, &id));
    CHECK(id != 0);
    CHECK_EQ(join_int(id), i);
    seen_ids[i] = id;
    /* gone for good: every call that names it finds nothing */
    CHECK_EQ(fib_join(id, NULL), FIB_ESRCH);
    CHECK_EQ(fib_cancel(NULL, id), FIB_ESRCH);
    CHECK_EQ(fib_detach(NULL, id), FIB_ESRCH);
    fib_stack_info info;
    CHECK_EQ(fib_fiber_stack(NULL, id, &info), FIB_ESRCH);
    if (i > 0) /* nor does the previous one, whose slot this one may have */
      CHECK_EQ(fib_join(seen_ids[i - 1], NULL), FIB_ESRCH);
  }
  return NULL;
}

static int cmp_ids(const void *a, const void *b) {
  fib_id x = *(const fib_id *)a, y = *(const fib_id *)b;
  return x < y ? -1 : x > y;
}

TEST(a_freed_fibers_id_is_never_handed_out_again) {
  run_main(spawn_join_many, NULL);
  uint32_t most_low = 0;
  for (int i = 0; i < ID_ROUNDS; i++)
    if ((uint32_t)seen_ids[i] > most_low)
      most_low = (uint32_t)seen_ids[i];
  qsort(seen_ids, ID_ROUNDS, sizeof seen_ids[0], cmp_ids);
  for (int i = 1; i < ID_ROUNDS; i++)
    CHECK(seen_ids[i] != seen_ids[i - 1]);
  /* slots reused: the low words stay within a few slots per worker (a
   * worker of several forgets collected ids 32 at a time) */
  CHECK(most_low <= 40u * (unsigned)(test_workers() + 1));
}

static void *spawn_detached_and_look(void *arg) {
  (void)arg;
  fib_attr det = {.flags = FIB_DETACHED};
  fib_id a, b;
  CHECK_OK(fib_spawn(NULL, nothing_to_do, NULL, &det, &a));
  while (fib_cancel(NULL, a) != FIB_ESRCH) /* until it has finished */
    CHECK_OK(fib_yield());
  CHECK_OK(fib_spawn(NULL, nothing_to_do, NULL, NULL, &b));
  CHECK(b != a);
  CHECK_EQ(fib_detach(NULL, a), FIB_ESRCH);
  CHECK_EQ(join_int(b), 0);
  return NULL;
}

TEST(a_finished_detached_fibers_id_finds_nothing) {
  run_main(spawn_detached_and_look, NULL);
}

/* Called through a volatile pointer so the compiler cannot see that the
 * recursion below ends in a function that does not return. */
static void (*volatile exit_through)(void *) = fib_exit;

__attribute__((noinline)) static void deep_exit(int depth, intptr_t v) {
  if (depth > 0)
    deep_exit(depth - 1, v);
  else
    exit_through((void *)v);
}

static void *exits_from_depth(void *arg) {
  deep_exit(10, (intptr_t)arg);
  CHECK(0);
  return NULL;
}

static void *join_exiter(void *arg) {
  (void)arg;
  fib_id id;
  void *r;
  CHECK_OK(fib_spawn(NULL, exits_from_depth, (void *)4242, NULL, &id));
  CHECK_OK(fib_join(id, &r));
  CHECK_EQ((intptr_t)r, 4242);
  return NULL;
}

TEST(exit_from_a_nested_call_finishes_the_fiber) {
  run_main(join_exiter, NULL);
}

static int detached_ran;

static void *detached_body(void *arg) {
  (void)arg;
  CHECK_OK(fib_yield());
  detached_ran++;
  return NULL;
}

static void *detacher(void *arg) {
  (void)arg;
  fib_id a, b, c;
  fib_attr detached = {.flags = FIB_DETACHED};
  CHECK_OK(fib_spawn(NULL, detached_body, NULL, &detached, &a));
  CHECK_OK(fib_spawn(NULL, detached_body, NULL, NULL, &b));
  CHECK_OK(fib_detach(NULL, b)); /* while it runs */
  CHECK_OK(fib_spawn(NULL, square, (void *)3, NULL, &c));
  CHECK_EQ(fib_join(a, NULL), FIB_EINVAL); /* detached, still running */
  CHECK_EQ(fib_detach(NULL, a), FIB_EINVAL);
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_yield());
  /* all three have finished now */
  CHECK_EQ(detached_ran, 2);
  CHECK_EQ(fib_join(a, NULL), FIB_ESRCH); /* freed when it finished */
  CHECK_EQ(fib_join(b, NULL), FIB_ESRCH);
  CHECK_OK(fib_detach(NULL, c)); /* finished, not joined: freed now */
  CHECK_EQ(fib_join(c, NULL), FIB_ESRCH);
  return NULL;
}

TEST(detached_fibers_are_freed_when_they_finish) {
  run_main(detacher, NULL);
}

/* A fiber detached from spawn keeps its record on its own stack (no
 * allocation): spawning it needs no malloc once the id map and timer heap
 * have room, while a joinable one does. Its record stays usable through
 * blocking, cancellation and its finish. */
static fib_sem stack_rec_sem;
static int stack_rec_woke, stack_rec_cancelled;

static void *stack_rec_waiter(void *arg) {
  int err = fib_sem_wait(&stack_rec_sem);
  if (arg) { /* the one cancelled by id */
    CHECK_EQ(err, FIB_ECANCELED);
    stack_rec_cancelled++;
  } else {
    CHECK_OK(err);
    stack_rec_woke++;
  }
  CHECK_EQ(fib_self_name()[0], 'w'); /* the name is in the record */
  return NULL;
}

static void *stack_rec_main(void *arg) {
  (void)arg;
  fib_attr detached = {.flags = FIB_DETACHED, .name = "waiter"};
  /* Room in the id map and the timer heap for what follows, and no
   * spare records (detached fibers leave none). */
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_spawn(NULL, nothing, NULL, &detached, NULL));
  CHECK_OK(fib_yield()); /* they have run and finished */
  fib__fault_inject(FIB__FAULT_MALLOC, 1, 1); /* every malloc fails */
  fib_id cancel_me = 0;
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_spawn(NULL, stack_rec_waiter, i == 2 ? (void *)1 : NULL,
                       &detached, i == 2 ? &cancel_me : NULL));
  long mallocs = fib__fault_calls();
  fib_id joinable;
  CHECK_EQ(fib_spawn(NULL, nothing, NULL, NULL, &joinable), FIB_ENOMEM);
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(mallocs, 0);
  CHECK_OK(fib_yield()); /* all four wait */
  CHECK_EQ(fib_join(cancel_me, NULL), FIB_EINVAL); /* detached */
  CHECK_OK(fib_cancel(NULL, cancel_me));
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_sem_post(&stack_rec_sem));
  CHECK_OK(fib_yield());
  CHECK_EQ(stack_rec_woke, 3);
  CHECK_EQ(stack_rec_cancelled, 1);
  CHECK_EQ(fib_cancel(NULL, cancel_me), FIB_ESRCH); /* gone with its stack */
  return NULL;
}

TEST(detached_fiber_record_lives_on_its_stack) {
  stack_rec_woke = stack_rec_cancelled = 0;
  CHECK_OK(fib_sem_init(&stack_rec_sem, 0));
  run_main(stack_rec_main, NULL);
  CHECK_OK(fib_sem_destroy(&stack_rec_sem));
}

/* A runtime destroyed with detached fibers parked: their records, on
 * their stacks, are read before those stacks are freed (ASan and valgrind
 * runs of this case check it). */
static void *stack_rec_parked(void *arg) {
  (void)arg;
  (void)fib_sem_wait(&stack_rec_sem); /* never posted */
  return NULL;
}

TEST(destroy_discards_detached_fibers_with_their_records) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_sem_init(&stack_rec_sem, 0)); /* after: shared by workers */
  fib_attr detached = {.flags = FIB_DETACHED};
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_spawn(rt, stack_rec_parked, NULL, i & 1 ? &detached : NULL,
                       NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&stack_rec_sem)); /* nobody left on it */
}

static fib_id partner_id;
/* Each joiner's result: with several workers the partner may run on
 * another worker and reach the join first; then the first joiner is the
 * one refused, or, if the target has been joined and freed already, gets
 * FIB_ESRCH. Either way exactly one join gets the result. */
static atomic_int partner_err, first_err;
static atomic_intptr_t joined_value;

static void *join_partner(void *arg) {
  (void)arg;
  void *r = NULL;
  int err = fib_join(partner_id, &r);
  if (err == 0)
    atomic_store(&joined_value, (intptr_t)r);
  atomic_store(&partner_err, err);
  return NULL;
}

static void *first_joiner(void *arg) {
  fib_id target = *(fib_id *)arg;
  partner_id = target;
  CHECK_OK(fib_spawn(NULL, join_partner, NULL, NULL, NULL));
  void *r = NULL;
  int err = fib_join(target, &r); /* blocks; the partner runs meanwhile */
  if (err == 0)
    atomic_store(&joined_value, (intptr_t)r);
  atomic_store(&first_err, err);
  return NULL;
}

TEST(second_joiner_is_refused) {
  fib_runtime *rt;
  fib_id target;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, square, (void *)7, NULL, &target));
  CHECK_OK(fib_spawn(rt, first_joiner, &target, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(atomic_load(&joined_value), 49);
  if (test_workers() == 1) {
    CHECK_OK(atomic_load(&first_err));
    CHECK_EQ(atomic_load(&partner_err), FIB_EINVAL); /* someone else joins */
  } else {
    int first = atomic_load(&first_err), partner = atomic_load(&partner_err);
    CHECK((first == 0) != (partner == 0)); /* one join got the result */
    int refused = first ? first : partner;
    CHECK(refused == FIB_EINVAL || refused == FIB_ESRCH);
  }
}

static fib_id cycle_ids[2];

static void *join_other(void *arg) {
  intptr_t me = (intptr_t)arg;
  CHECK_OK(fib_join(cycle_ids[1 - me], NULL)); /* never returns */
  CHECK(0);
  return NULL;
}

TEST(run_reports_a_deadlock_and_destroy_cleans_up) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, join_other, (void *)0, NULL, &cycle_ids[0]));
  CHECK_OK(fib_spawn(rt, join_other, (void *)1, NULL, &cycle_ids[1]));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt)); /* both blocked fibers discarded */
}

/* A join that waits with no frame is completed by its target's finish,
 * also when the joiner cannot run next (a fiber the target spawned last
 * is at the front before it): it gets the result all the same, after it,
 * and until it runs the join is under way (the fuzzer's model: a join or
 * detach of the target meanwhile is refused, not told it is gone). */
static int late_order[2];
static atomic_int late_n; /* with several workers the two may run at once */
static _Atomic fib_id late_child_id;

static void *late_front(void *arg) {
  (void)arg;
  late_order[atomic_fetch_add(&late_n, 1)] = 2;
  /* Its target has finished, but the joiner has not run yet: the join
   * is still under way (on other workers it may have ended by now) */
  fib_id c = atomic_load(&late_child_id);
  int join = fib_join(c, NULL), detach = fib_detach(NULL, c);
  if (test_workers() == 1) {
    CHECK_EQ(join, FIB_EINVAL);
    CHECK_EQ(detach, FIB_EINVAL);
  } else {
    CHECK(join == FIB_EINVAL || join == FIB_ESRCH);
    CHECK(detach == FIB_EINVAL || detach == FIB_ESRCH);
  }
  return NULL;
}

static void *late_child(void *arg) {
  (void)arg;
  CHECK_OK(fib_yield());
  CHECK_OK(fib_spawn(NULL, late_front, NULL, NULL, NULL));
  return (void *)9;
}

static void *late_joiner(void *arg) {
  (void)arg;
  fib_id c;
  void *r = NULL;
  CHECK_OK(fib_spawn(NULL, late_child, NULL, NULL, &c));
  atomic_store(&late_child_id, c);
  CHECK_OK(fib_join(c, &r));
  CHECK_EQ((intptr_t)r, 9);
  late_order[atomic_fetch_add(&late_n, 1)] = 1;
  CHECK_EQ(fib_join(c, NULL), FIB_ESRCH); /* collected by the join */
  return NULL;
}

TEST(a_joiner_readied_behind_another_fiber_gets_the_result) {
  atomic_store(&late_n, 0);
  run_main(late_joiner, NULL);
  CHECK_EQ(atomic_load(&late_n), 2);
  if (test_workers() == 1) { /* the front's order: the spawned one first */
    CHECK_EQ(late_order[0], 2);
    CHECK_EQ(late_order[1], 1);
  }
}

/* Fibers discarded while they wait in a join leave their stacks to the
 * pool with the join's marks in them; the next fibers on those stacks,
 * cancelled while they sleep, must not take those marks for a join of
 * their own (it would touch the discarded targets' freed records). */
static void *sleep_to_be_cancelled(void *arg) {
  (void)arg;
  CHECK_EQ(fib_sleep_ns(10000000000u), FIB_ECANCELED);
  return NULL;
}

static void *cancel_the_sleepers(void *arg) {
  fib_id *ids = arg;
  CHECK_OK(fib_yield()); /* they go to sleep */
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_cancel(NULL, ids[i]));
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  return NULL;
}

TEST(a_discarded_joiners_stack_carries_no_join_to_its_next_fiber) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, join_other, (void *)0, NULL, &cycle_ids[0]));
  CHECK_OK(fib_spawn(rt, join_other, (void *)1, NULL, &cycle_ids[1]));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_runtime_destroy(rt)); /* their stacks go to the pool */
  fib_id ids[8];
  rt = new_runtime();
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_spawn(rt, sleep_to_be_cancelled, NULL, NULL, &ids[i]));
  CHECK_OK(fib_spawn(rt, cancel_the_sleepers, ids, NULL, NULL));
  run_to_end(rt);
}

static void *spawn_more(void *arg) {
  (void)arg;
  return (void *)5;
}

TEST(run_can_be_called_again_with_new_fibers) {
  fib_runtime *rt;
  fib_id a, b;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, spawn_more, NULL, NULL, &a));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_spawn(rt, spawn_more, NULL, NULL, &b));
  CHECK_EQ(b, a + test_workers()); /* worker 0's next id (multicore.md) */
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_run(rt)); /* nothing to do */
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- identity */

static void *who_am_i(void *arg) {
  const char *want = arg;
  CHECK_STR_EQ(fib_self_name(), want);
  CHECK(fib_self() != 0);
  CHECK(fib_runtime_current() != NULL);
  return (void *)(uintptr_t)fib_self();
}

static void *check_ids(void *arg) {
  (void)arg;
  fib_id id;
  void *r;
  fib_attr named = {.name = "worker-7"};
  CHECK_OK(fib_spawn(NULL, who_am_i, "worker-7", &named, &id));
  CHECK_OK(fib_join(id, &r));
  CHECK_EQ((uintptr_t)r, id);
  fib_attr long_name = {.name = "0123456789012345678901234567890123456789"};
  CHECK_OK(fib_spawn(NULL, who_am_i, "0123456789012345678901234567890",
                     &long_name, &id));
  CHECK_OK(fib_join(id, NULL));
  CHECK_OK(fib_spawn(NULL, who_am_i, "", NULL, &id));
  CHECK_OK(fib_join(id, NULL));
  return NULL;
}

TEST(self_id_and_name) {
  fib_runtime *rt;
  fib_id first;
  CHECK_EQ(fib_self(), 0);
  CHECK_PTR_EQ(fib_self_name(), NULL);
  CHECK_PTR_EQ(fib_runtime_current(), NULL);
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, check_ids, NULL, NULL, &first));
  CHECK_EQ(first, 1);
  run_to_end(rt);
}

/* ---- sleep */

struct sleeper {
  uint64_t ns;
  int *order;
  int *n;
  int who;
  uint64_t woke_late_by;
  uint64_t deadline; /* sleep_to_recorded_deadline's */
};

static void *sleep_body(void *arg) {
  struct sleeper *s = arg;
  uint64_t start = fib_now_ns();
  CHECK_OK(fib_sleep_ns(s->ns));
  uint64_t slept = fib_now_ns() - start;
  CHECK(slept >= s->ns);
  s->woke_late_by = slept - s->ns;
  s->order[(*s->n)++] = s->who;
  return NULL;
}

/* Sleeps s->ns from when it first runs, to a deadline it records. */
static void *sleep_to_recorded_deadline(void *arg) {
  struct sleeper *s = arg;
  s->deadline = fib_now_ns() + s->ns;
  CHECK_OK(fib_sleep_until(s->deadline));
  CHECK(fib_now_ns() >= s->deadline);
  s->order[(*s->n)++] = s->who;
  return NULL;
}

TEST(sleepers_wake_in_deadline_order) {
  int order[5], n = 0;
  uint64_t ms = 1000000;
  struct sleeper s[5] = {{30 * ms, order, &n, 0, 0, 0},
                         {10 * ms, order, &n, 1, 0, 0},
                         {20 * ms, order, &n, 2, 0, 0},
                         {0, order, &n, 3, 0, 0},
                         {5 * ms, order, &n, 4, 0, 0}};
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_spawn(rt, sleep_to_recorded_deadline, &s[i], NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(n, 5);
  /* Each deadline is taken when its sleeper first runs: on a loaded
   * machine (valgrind, a busy CI host) the thread may be descheduled for
   * longer than the 5 ms between two of them, so the order to check is
   * that of the deadlines as taken (3, 4, 1, 2, 0 unless so delayed). */
  for (int i = 1; i < 5; i++)
    CHECK(s[order[i - 1]].deadline <= s[order[i]].deadline);
}

static void *sleep_until_shared(void *arg) {
  struct sleeper *s = arg;
  CHECK_OK(fib_sleep_until(s->ns));
  s->order[(*s->n)++] = s->who;
  return NULL;
}

TEST(equal_deadlines_wake_in_the_order_they_slept) {
  int order[8], n = 0;
  uint64_t deadline = fib_now_ns() + 20000000;
  struct sleeper s[8];
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 8; i++) {
    s[i] = (struct sleeper){deadline, order, &n, i, 0, 0};
    CHECK_OK(fib_spawn(rt, sleep_until_shared, &s[i], NULL, NULL));
  }
  run_to_end(rt);
  CHECK_EQ(n, 8);
  for (int i = 0; i < 8; i++)
    CHECK_EQ(order[i], i);
}

static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(only_sleepers_left_means_the_thread_sleeps) {
  int order[1], n = 0;
  struct sleeper s = {200000000, order, &n, 0, 0, 0}; /* 200 ms */
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, sleep_body, &s, NULL, NULL));
  uint64_t cpu0 = cpu_ns(), wall0 = fib_now_ns();
  run_to_end(rt);
  uint64_t cpu = cpu_ns() - cpu0, wall = fib_now_ns() - wall0;
  CHECK(wall >= 200000000);
  /* A spinning loop would burn ~200 ms of CPU; sleeping burns next to
   * none. Under a tool (valgrind: its translation of the workers' code is
   * CPU too, several times slower) the bar is half of the wall time, which
   * a spinning loop would still exceed. */
  uint64_t bar = getenv("FIB_TEST_TOOL") || getenv("FIB_TEST_EMULATOR")
                     ? wall / 2
                     : 50000000;
  if (cpu >= bar)
    check_failed(__FILE__, __LINE__, "burned %llu ns of CPU while sleeping",
                 (unsigned long long)cpu);
}

static atomic_int busy_stop; /* the yielders may run on other workers */

static void *busy_yielder(void *arg) {
  (void)arg;
  while (!busy_stop)
    CHECK_OK(fib_yield());
  return NULL;
}

static void *sleeper_among_yielders(void *arg) {
  (void)arg;
  uint64_t start = fib_now_ns();
  CHECK_OK(fib_sleep_ns(5000000));
  uint64_t late = fib_now_ns() - start - 5000000;
  busy_stop = 1;
  /* it woke within a scheduling round of its deadline, not after the
   * yielders stopped (they never would) */
  CHECK(late < 1000000000);
  return NULL;
}

TEST(sleeper_is_not_starved_by_yielding_fibers) {
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_spawn(rt, busy_yielder, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, sleeper_among_yielders, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(busy_stop, 1);
}

/* ---- deadlines and cancellation */

/* The target waits for its joiner's word, so it cannot finish before the
 * join times out, however the threads of several workers are scheduled. */
static void *wait_for_word_then(void *arg) {
  CHECK_OK(fib_sem_wait(arg));
  return (void *)77;
}

static void *join_with_deadline(void *arg) {
  (void)arg;
  fib_id t;
  void *r = NULL;
  fib_sem word;
  CHECK_OK(fib_sem_init(&word, 0));
  CHECK_OK(fib_spawn(NULL, wait_for_word_then, &word, NULL, &t));
  uint64_t start = fib_now_ns();
  CHECK_EQ(fib_join_until(t, &r, start + 5000000), FIB_ETIMEDOUT);
  CHECK(fib_now_ns() - start >= 5000000);
  CHECK_PTR_EQ(r, NULL);
  CHECK_OK(fib_sem_post(&word));
  CHECK_OK(fib_join(t, &r)); /* still joinable */
  CHECK_EQ((intptr_t)r, 77);
  CHECK_OK(fib_sem_destroy(&word));
  return NULL;
}

TEST(join_until_times_out_and_leaves_the_target_joinable) {
  run_main(join_with_deadline, NULL);
}

static void *sleeper_that_cleans_up(void *arg) {
  (void)arg;
  CHECK_EQ(fib_sleep_ns(10ull * 1000000000u), FIB_ECANCELED);
  CHECK(fib_cancelled());
  /* every later blocking call is cancelled at once, too */
  CHECK_EQ(fib_sleep_ns(1), FIB_ECANCELED);
  CHECK_OK(fib_yield()); /* giving way still works */
  return (void *)5;
}

static void *canceller(void *arg) {
  (void)arg;
  fib_id t;
  void *r;
  CHECK_OK(fib_spawn(NULL, sleeper_that_cleans_up, NULL, NULL, &t));
  CHECK_OK(fib_yield()); /* let it go to sleep */
  uint64_t start = fib_now_ns();
  CHECK_OK(fib_cancel(NULL, t));
  CHECK_OK(fib_join(t, &r));
  CHECK_EQ((intptr_t)r, 5);
  CHECK(fib_now_ns() - start < 1000000000u); /* did not sleep 10 s */
  CHECK_EQ(fib_cancel(NULL, t), FIB_ESRCH); /* joined: gone */
  return NULL;
}

TEST(cancelling_a_sleeper_wakes_it_with_ecanceled) {
  run_main(canceller, NULL);
}

static fib_id blocked_joiner_target;

static void *blocked_joiner(void *arg) {
  (void)arg;
  CHECK_EQ(fib_join(blocked_joiner_target, NULL), FIB_ECANCELED);
  return NULL;
}

static void *cancel_a_joiner(void *arg) {
  (void)arg;
  fib_id target, joiner;
  void *r;
  fib_sem word; /* the target finishes only after the cancel */
  CHECK_OK(fib_sem_init(&word, 0));
  CHECK_OK(fib_spawn(NULL, wait_for_word_then, &word, NULL, &target));
  blocked_joiner_target = target;
  CHECK_OK(fib_spawn(NULL, blocked_joiner, NULL, NULL, &joiner));
  CHECK_OK(fib_yield());
  CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, joiner));
  CHECK_OK(fib_join(joiner, NULL));
  CHECK_OK(fib_sem_post(&word));
  CHECK_OK(fib_join(target, &r)); /* the target was left joinable */
  CHECK_EQ((intptr_t)r, 77);
  CHECK_OK(fib_sem_destroy(&word));
  return NULL;
}

TEST(cancelling_a_blocked_joiner_leaves_the_target_joinable) {
  run_main(cancel_a_joiner, NULL);
}

static void *cancel_self(void *arg) {
  (void)arg;
  CHECK_EQ(fib_cancelled(), 0);
  CHECK_OK(fib_cancel(NULL, fib_self()));
  CHECK_EQ(fib_cancelled(), 1);
  CHECK_EQ(fib_sleep_ns(1000), FIB_ECANCELED);
  return NULL;
}

TEST(cancel_rules) {
  fib_runtime *rt;
  fib_id done, self_canceller;
  CHECK_EQ(fib_cancel(NULL, 1), FIB_EPERM);
  CHECK_EQ(fib_cancelled(), 0);
  rt = new_runtime();
  CHECK_EQ(fib_cancel(rt, 99), FIB_ESRCH);
  CHECK_OK(fib_spawn(rt, spawn_more, NULL, NULL, &done));
  CHECK_OK(fib_spawn(rt, cancel_self, NULL, NULL, &self_canceller));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_cancel(rt, done)); /* finished: nothing to do */
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Many sleepers, some cancelled: the rest wake in deadline order, which
 * checks the timer heap after removals from its middle. */
#define SLEEPERS 200

struct timed {
  uint64_t deadline;
  uint64_t woke;
  atomic_int cancelled; /* the canceller's mark: with several workers its
                           sleeper may read it while it is being set */
  int err;              /* what its sleep returned */
  pthread_t thread; /* where it woke: its worker's, whose timer heap it was
                       on (a fiber that has run never moves) */
};

static void *timed_sleeper(void *arg) {
  struct timed *t = arg;
  /* t->deadline holds an offset until now: relative to when the sleeper
   * runs, so slow spawning (valgrind, qemu) cannot eat the margin before
   * the canceller runs in the same round */
  t->deadline += fib_now_ns();
  /* Wakes on the thread whose heap held its timer, also when migration is
   * forced (FIBERS_FORCE_MIGRATE): that is the order checked */
  CHECK_OK(fib_nomigrate_begin());
  int err = fib_sleep_until(t->deadline);
  /* A cancel that comes after its deadline (a slow machine, a sleeper on
   * another worker) finds it woken or gone: either outcome, but never a
   * cancel it was not sent */
  if (err == FIB_ECANCELED)
    CHECK(atomic_load(&t->cancelled));
  else
    CHECK_OK(err);
  t->err = err;
  t->woke = fib_now_ns();
  t->thread = pthread_self();
  CHECK_OK(fib_nomigrate_end());
  return NULL;
}

static struct timed timed[SLEEPERS];
static fib_id timed_ids[SLEEPERS];

static void *cancel_some(void *arg) {
  (void)arg;
  for (int i = 0; i < SLEEPERS; i += 3) {
    atomic_store(&timed[i].cancelled, 1);
    int err = fib_cancel(NULL, timed_ids[i]);
    CHECK(err == 0 || err == FIB_ESRCH); /* ESRCH: it woke and was freed */
  }
  return NULL;
}

TEST(timer_heap_stays_ordered_when_sleepers_are_cancelled) {
  fib_runtime *rt;
  fib_attr detached = {.flags = FIB_DETACHED};
  uint64_t base = 20000000;
  unsigned seed = 12345;
  rt = new_runtime();
  for (int i = 0; i < SLEEPERS; i++) {
    seed = seed * 1103515245u + 12345u;
    timed[i].deadline = base + (seed >> 8) % 30000000;
    CHECK_OK(fib_spawn(rt, timed_sleeper, &timed[i], &detached, &timed_ids[i]));
  }
  CHECK_OK(fib_spawn(rt, cancel_some, NULL, NULL, NULL));
  run_to_end(rt);
  for (int i = 0; i < SLEEPERS; i++) {
    if (timed[i].err == FIB_ECANCELED)
      continue; /* it checked that it was sent the cancel */
    CHECK(timed[i].woke >= timed[i].deadline);
    /* in deadline order on each worker (with one worker: all of them);
     * the workers' heaps are apart, and their threads wake independently */
    for (int j = 0; j < SLEEPERS; j++)
      if (timed[j].err != FIB_ECANCELED &&
          timed[j].deadline < timed[i].deadline &&
          pthread_equal(timed[j].thread, timed[i].thread))
        CHECK(timed[j].woke <= timed[i].woke);
  }
}

/* Fibers that wait for each other by yielding keep every worker busy.
 * One that a busy worker offered to an idle one, which then took only
 * half of the offer and got busy too, must still run: with several
 * workers the rest of the offer list used to wait for a worker to go
 * idle, which none ever did here, and the run never ended. With one
 * worker there are no offers: all start in the first round. */
static atomic_long started_count;

static void *wait_until_all_started(void *arg) {
  long total = (long)(intptr_t)arg;
  atomic_fetch_add(&started_count, 1);
  uint64_t give_up = fib_now_ns() + 20000 * MS;
  while (atomic_load(&started_count) < total && fib_now_ns() < give_up)
    CHECK_OK(fib_yield());
  CHECK_EQ(atomic_load(&started_count), total);
  return NULL;
}

TEST(fibers_that_wait_for_each_other_by_yielding_all_start) {
  /* Each yields until all have started: ~total^2 yields. 200 at least,
   * several offers' worth on four workers. */
  long total = scaled(4000);
  if (total < 200)
    total = 200;
  fib_attr detached = {.flags = FIB_DETACHED};
  fib_runtime *rt = new_runtime();
  for (long i = 0; i < total; i++)
    CHECK_OK(fib_spawn(rt, wait_until_all_started, (void *)(intptr_t)total,
                       &detached, NULL));
  run_to_end(rt);
  CHECK_EQ(atomic_load(&started_count), total);
}

/* ---- several runtimes, several threads */

#define THREADS 4

/* Atomic: with several workers a runtime's fibers count in parallel. */
static void *count_up(void *arg) {
  atomic_long *counter = arg;
  for (int i = 0; i < 10000; i++) {
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *thread_main(void *arg) {
  atomic_long *counter = arg;
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 10; i++)
    CHECK_OK(fib_spawn(rt, count_up, counter, NULL, NULL));
  run_to_end(rt);
  return NULL;
}

TEST(runtimes_on_different_threads_run_independently) {
  pthread_t t[THREADS];
  atomic_long counters[THREADS] = {0};
  for (int i = 0; i < THREADS; i++)
    CHECK_EQ(pthread_create(&t[i], NULL, thread_main, &counters[i]), 0);
  for (int i = 0; i < THREADS; i++) {
    CHECK_EQ(pthread_join(t[i], NULL), 0);
    CHECK_EQ(atomic_load(&counters[i]), 10 * 10000);
  }
}

/* Found by the fuzzer (fuzz/regressions/joiner-readied-twice): a joiner
 * whose deadline fires in the same round as its target finishes, the
 * target running first, was readied a second time by the target's finish
 * (queued twice: a finished fiber then ran). */
static uint64_t race_deadline;
static fib_id race_target;

static void *sleep_to_deadline(void *arg) {
  (void)arg;
  CHECK_OK(fib_sleep_until(race_deadline)); /* armed first: fires first */
  return (void *)42;
}

static void *join_with_same_deadline(void *arg) {
  (void)arg;
  void *r;
  int err = fib_join_until(race_target, &r, race_deadline);
  if (err == 0) { /* the finish won: the join is complete */
    CHECK_EQ((uintptr_t)r, 42u);
    return NULL;
  }
  CHECK_EQ(err, FIB_ETIMEDOUT); /* the deadline won: join again */
  CHECK_OK(fib_join(race_target, &r));
  CHECK_EQ((uintptr_t)r, 42u);
  return NULL;
}

TEST(a_joiner_whose_deadline_races_its_targets_end_runs_once) {
  for (int i = 0; i < 50; i++) {
    fib_runtime *rt = new_runtime();
    race_deadline = fib_now_ns() + 2 * MS;
    CHECK_OK(fib_spawn(rt, sleep_to_deadline, NULL, NULL, &race_target));
    CHECK_OK(fib_spawn(rt, join_with_same_deadline, NULL, NULL, NULL));
    run_to_end(rt);
  }
}

/* Found by the fuzzer (fuzz/regressions/join-finished-when-cancelled): a
 * cancelled fiber's fib_join returns FIB_ECANCELED even when its target
 * has finished (a call that may wait, fibers.h), and joins nothing. */
static void *returns_7(void *arg) {
  (void)arg;
  return (void *)7;
}

static void *cancelled_joiner(void *arg) {
  (void)arg;
  fib_id t;
  CHECK_OK(fib_spawn(NULL, returns_7, NULL, NULL, &t));
  CHECK_OK(fib_yield()); /* t finishes */
  CHECK_OK(fib_cancel(NULL, fib_self()));
  CHECK_EQ(fib_join(t, NULL), FIB_ECANCELED);
  /* The argument checks come first, as for every call that may wait
   * (fuzz/regressions/join-unknown-id-when-cancelled). */
  CHECK_EQ(fib_join(t + 1000, NULL), FIB_ESRCH);
  CHECK_EQ(fib_join(fib_self(), NULL), FIB_EDEADLK);
  return (void *)(uintptr_t)t; /* still joinable: main collects it */
}

TEST(a_cancelled_fiber_joining_a_finished_one_gets_ecanceled) {
  fib_runtime *rt = new_runtime();
  fib_id j;
  CHECK_OK(fib_spawn(rt, cancelled_joiner, NULL, NULL, &j));
  void *t;
  CHECK_OK(fib_run_join(rt, j, &t));
  void *r;
  CHECK_OK(fib_run_join(rt, (fib_id)(uintptr_t)t, &r));
  CHECK_EQ((uintptr_t)r, 7u);
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST_MAIN(T_ONE_WORKER(round_robin_in_spawn_order,
                       "checks one run queue's exact round-robin order"),
          T(a_joiner_whose_deadline_races_its_targets_end_runs_once),
          T_ONE_WORKER(a_cancelled_fiber_joining_a_finished_one_gets_ecanceled,
                       "drives its run with fib_run_join, which several workers refuse"),
          T_ONE_WORKER(fibers_spawned_by_a_fiber_run_first_in_spawn_order,
                       "checks one run queue's exact order"),
          T_ONE_WORKER(joiner_runs_first_when_its_child_finishes,
                       "checks one run queue's exact order"),
          T_ONE_WORKER(front_of_the_queue_cannot_starve_the_back,
                       "measures one run queue's front precedence: with several workers the two fibers run side by side"),
          T_ONE_WORKER(fiber_spawned_inside_a_fiber_runs_next,
                       "checks one run queue's exact order"),
          T(join_returns_each_result_once),
          T(ids_start_at_one_in_spawn_order_while_none_is_freed),
          T(a_freed_fibers_id_is_never_handed_out_again),
          T(a_finished_detached_fibers_id_finds_nothing),
          T(exit_from_a_nested_call_finishes_the_fiber),
          T_ONE_WORKER(detached_fibers_are_freed_when_they_finish,
                       "counts on four yields letting three fibers finish: "
                       "on other workers they may still run"),
          T_ONE_WORKER(detached_fiber_record_lives_on_its_stack,
                       "the record on the stack is the one-worker path"),
          T(destroy_discards_detached_fibers_with_their_records),
          T(second_joiner_is_refused),
          T(run_reports_a_deadlock_and_destroy_cleans_up),
          T(a_joiner_readied_behind_another_fiber_gets_the_result),
          T(a_discarded_joiners_stack_carries_no_join_to_its_next_fiber),
          T(run_can_be_called_again_with_new_fibers),
          T(self_id_and_name),
          T_ONE_WORKER(sleepers_wake_in_deadline_order,
                       "checks one timer heap's order over all sleepers: each worker has its own"),
          T_ONE_WORKER(equal_deadlines_wake_in_the_order_they_slept,
                       "checks one timer heap's tie-break over all sleepers: each worker has its own"),
          T(only_sleepers_left_means_the_thread_sleeps),
          T(sleeper_is_not_starved_by_yielding_fibers),
          T(join_until_times_out_and_leaves_the_target_joinable),
          T(cancelling_a_sleeper_wakes_it_with_ecanceled),
          T(cancelling_a_blocked_joiner_leaves_the_target_joinable),
          T(cancel_rules),
          T(timer_heap_stays_ordered_when_sleepers_are_cancelled),
          T(fibers_that_wait_for_each_other_by_yielding_all_start),
          T(runtimes_on_different_threads_run_independently))
