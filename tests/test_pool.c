/* SPDX-License-Identifier: MIT */
/* test_pool.c -- the per-thread stack pool with more than one kind of
 * stack: a list per (size, guard mode) class, its bounds, eviction, drain,
 * thread exit, and allocation failures with several classes pooled.
 *
 * System calls are counted through the fault-injection seam: with a mask
 * and an `nth` that is never reached, fib__fault_calls() says how many
 * calls of those kinds the library made. A stack served by the pool makes
 * none. */
#include "harness.h"

#include <fibers.h>

#include "stack.h"
#include "sys.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

/* The calls that make, guard or unmap a stack. */
#define STACK_CALLS                                                            \
  (FIB__FAULT_MMAP | FIB__FAULT_MUNMAP | FIB__FAULT_MADVISE |                  \
   FIB__FAULT_MPROTECT)

static void count_calls(int mask) { fib__fault_inject(mask, LONG_MAX, 0); }

/* Calls counted since count_calls; stops counting. */
static long counted_calls(void) {
  long n = fib__fault_calls();
  fib__fault_inject(0, 0, 0);
  return n;
}

static void *noop(void *arg, void *first) {
  (void)first;
  return arg;
}

static fib_attr attr_of(size_t size, fib_guard_mode mode) {
  fib_attr a = {.stack_size = size, .guard = mode};
  return a;
}

/* Create, run to the end and destroy one coroutine; returns its record's
 * address (which is on its stack: the same address, the same stack). */
static const void *cycle(const fib_attr *attr) {
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, noop, NULL, attr));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_OK(fib_coro_destroy(co));
  return co;
}

/* The stack a coroutine made with `attr` gets, checked against the
 * request; the coroutine is left suspended in *out. */
static void create_checked(fib_coro **out, const fib_attr *attr) {
  fib_stack_info info;
  CHECK_OK(fib_coro_create(out, noop, NULL, attr));
  CHECK_OK(fib_coro_stack(*out, &info));
  size_t want = attr->stack_size ? attr->stack_size : FIB_STACK_DEFAULT;
  CHECK_EQ(info.size, want);
  if (attr->guard == FIB_GUARD_NONE) {
    CHECK_EQ(info.guard, FIB_GUARD_NONE);
    CHECK_EQ(info.guard_size, 0);
    /* set afresh on every get, also on a reused stack */
    CHECK(*(const uint64_t *)info.lo == FIB__STACK_CANARY);
  } else {
    fib_guard_mode resolved = attr->guard == FIB_GUARD_AUTO
                                  ? fib__stack_auto_mode()
                                  : attr->guard;
    CHECK_EQ(info.guard, resolved);
    CHECK(info.guard_size > 0);
  }
}

#define KIB ((size_t)1024)

TEST(alternating_sizes_make_no_new_mappings) {
  fib_attr small = attr_of(64 * KIB, FIB_GUARD_AUTO);
  fib_attr big = attr_of(128 * KIB, FIB_GUARD_AUTO);
  fib__stack_pool_drain();
  const void *a = cycle(&small), *b = cycle(&big); /* one of each, pooled */
  CHECK_EQ(fib__stack_pool_size(), 2);
  count_calls(STACK_CALLS);
  long rounds = scaled(10000);
  for (long i = 0; i < rounds; i++) {
    CHECK_PTR_EQ(cycle(&small), a);
    CHECK_PTR_EQ(cycle(&big), b);
  }
  CHECK_EQ(counted_calls(), 0);
  CHECK_EQ(fib__stack_pool_size(), 2);
  CHECK_EQ(fib__stack_pool_classes(), 2);
}

TEST(alternating_guard_modes_make_no_new_mappings) {
  /* AUTO (madvise or mprotect, whichever this kernel has), mprotect by
   * name (the same class as AUTO where AUTO is mprotect) and unguarded,
   * all of one size, in turn */
  fib_attr modes[3] = {attr_of(0, FIB_GUARD_AUTO),
                       attr_of(0, FIB_GUARD_NONE),
                       attr_of(0, FIB_GUARD_MPROTECT)};
  fib__stack_pool_drain();
  for (int m = 0; m < 3; m++)
    cycle(&modes[m]);
  size_t classes = fib__stack_auto_mode() == FIB_GUARD_MPROTECT ? 2 : 3;
  CHECK_EQ(fib__stack_pool_classes(), classes);
  count_calls(STACK_CALLS);
  long rounds = scaled(10000);
  for (long i = 0; i < rounds; i++)
    for (int m = 0; m < 3; m++) {
      fib_coro *co;
      create_checked(&co, &modes[m]);
      CHECK_OK(fib_coro_resume(co, NULL, NULL));
      CHECK_OK(fib_coro_destroy(co));
    }
  CHECK_EQ(counted_calls(), 0);
  CHECK_EQ(fib__stack_pool_size(), classes);
}

TEST(two_sizes_in_turn_keep_their_batches) {
  /* Both classes of a program with two sizes in turn stay in the hot
   * slots: each takes stacks from its slabs in growing batches, as a
   * single size does (one populate call for many top pages), where a
   * class swapped out at every other get took one stack per miss and
   * left nothing pooled here. Unguarded: slab stacks in every kernel. */
  enum { EACH = 64 };
  static fib_coro *a[EACH], *b[EACH];
  fib_attr small = attr_of(64 * KIB, FIB_GUARD_NONE);
  fib_attr big = attr_of(128 * KIB, FIB_GUARD_NONE);
  fib__stack_pool_drain();
  int batched = 0;
  for (int i = 0; i < EACH; i++) {
    create_checked(&a[i], &small);
    create_checked(&b[i], &big);
    /* every coroutine holds its stack: what is pooled is what is left of
     * a batch (where exactly a slab's end cuts one short is the slabs'
     * business: seen at some point is enough) */
    batched |= fib__stack_pool_size() > 0;
  }
  CHECK(batched);
  CHECK_EQ(fib__stack_pool_classes(), 2);
  for (int i = 0; i < EACH; i++) {
    CHECK_OK(fib_coro_destroy(a[i]));
    CHECK_OK(fib_coro_destroy(b[i]));
  }
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_slab_count(), 0);
}

/* ---- the same through the scheduler: fibers of two sizes in turn */

static void *fiber_noop(void *arg) { return arg; }

static void *spawn_two_sizes(void *arg) {
  long rounds = (long)(intptr_t)arg;
  fib_attr attrs[2] = {attr_of(64 * KIB, FIB_GUARD_AUTO),
                       attr_of(256 * KIB, FIB_GUARD_AUTO)};
  /* Two of each size at a time, in runs (A A B B): a one-list pool has
   * the wrong size at its head for the first of each run. */
  for (long i = 0; i < rounds; i++) {
    fib_id ids[4];
    for (int k = 0; k < 4; k++)
      CHECK_OK(fib_spawn(NULL, fiber_noop, NULL, &attrs[k / 2], &ids[k]));
    for (int k = 0; k < 4; k++)
      CHECK_OK(fib_join(ids[k], NULL));
  }
  return NULL;
}

static void *warm_then_count(void *arg) {
  long *calls = arg;
  spawn_two_sizes((void *)(intptr_t)2); /* both sizes pooled */
  count_calls(STACK_CALLS);
  spawn_two_sizes((void *)(intptr_t)scaled(10000));
  *calls = counted_calls();
  return NULL;
}

TEST(fibers_of_two_sizes_make_no_new_mappings) {
  fib_runtime *rt;
  long calls = -1;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, warm_then_count, &calls, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(calls, 0);
}

/* ---- what comes out of the pool is what was asked for */

/* Whether requests in modes a and b are served by one class. */
static int same_class(fib_guard_mode a, fib_guard_mode b) {
  fib_guard_mode auto_is = fib__stack_auto_mode();
  return (a == FIB_GUARD_AUTO ? auto_is : a) ==
         (b == FIB_GUARD_AUTO ? auto_is : b);
}

TEST(pooled_stacks_have_the_size_and_mode_asked_for) {
  /* 2 sizes x 3 modes: at most 6 classes, all kept */
  enum { SIZES = 2, MODES = 3, EACH = 3 };
  size_t sizes[SIZES] = {FIB_STACK_MIN, 128 * KIB};
  fib_guard_mode modes[MODES] = {FIB_GUARD_AUTO, FIB_GUARD_MPROTECT,
                                 FIB_GUARD_NONE};
  static fib_coro *cos[SIZES][MODES][EACH];
  fib__stack_pool_drain();
  /* several stacks of every kind, interleaved, then all back */
  for (int k = 0; k < EACH; k++)
    for (int s = 0; s < SIZES; s++)
      for (int m = 0; m < MODES; m++) {
        fib_attr a = attr_of(sizes[s], modes[m]);
        create_checked(&cos[s][m][k], &a);
      }
  for (int k = 0; k < EACH; k++)
    for (int m = MODES - 1; m >= 0; m--)
      for (int s = 0; s < SIZES; s++)
        CHECK_OK(fib_coro_destroy(cos[s][m][k]));
  CHECK_EQ(fib__stack_pool_size(), SIZES * MODES * EACH);
  /* Asked for in another order: each from the pool (no system call; its
   * record address is one a stack of its class had before), each what it
   * should be (create_checked). */
  static fib_coro *again[SIZES][MODES][EACH];
  count_calls(STACK_CALLS);
  for (int m = 0; m < MODES; m++)
    for (int s = SIZES - 1; s >= 0; s--)
      for (int k = 0; k < EACH; k++) {
        fib_attr a = attr_of(sizes[s], modes[m]);
        create_checked(&again[s][m][k], &a);
        int found = 0;
        for (int mm = 0; mm < MODES; mm++)
          for (int j = 0; j < EACH; j++)
            found |= same_class(modes[mm], modes[m]) &&
                     cos[s][mm][j] == again[s][m][k];
        CHECK(found);
      }
  CHECK_EQ(counted_calls(), 0);
  CHECK_EQ(fib__stack_pool_size(), 0);
  for (int m = 0; m < MODES; m++)
    for (int s = 0; s < SIZES; s++)
      for (int k = 0; k < EACH; k++)
        CHECK_OK(fib_coro_destroy(again[s][m][k]));
  CHECK_EQ(fib__stack_pool_size(), SIZES * MODES * EACH);
}

static void *report_own_stack(void *arg) {
  CHECK_OK(fib_self_stack(arg));
  return NULL;
}

TEST(spawned_fibers_get_the_size_and_mode_asked_for_from_a_mixed_pool) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  fib_attr attrs[4] = {attr_of(64 * KIB, FIB_GUARD_AUTO),
                       attr_of(64 * KIB, FIB_GUARD_NONE),
                       attr_of(256 * KIB, FIB_GUARD_AUTO),
                       attr_of(256 * KIB, FIB_GUARD_NONE)};
  fib_stack_info info[2][4];
  memset(info, 0, sizeof info);
  /* twice round: the second time every stack comes from the pool */
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < 4; i++)
      CHECK_OK(fib_spawn(rt, report_own_stack, &info[round][i], &attrs[i],
                         NULL));
    CHECK_OK(fib_run(rt));
  }
  CHECK_OK(fib_runtime_destroy(rt));
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 4; i++) {
      CHECK_EQ(info[round][i].size, attrs[i].stack_size);
      if (attrs[i].guard == FIB_GUARD_NONE) {
        CHECK_EQ(info[round][i].guard, FIB_GUARD_NONE);
        CHECK_EQ(info[round][i].guard_size, 0);
      } else {
        CHECK_EQ(info[round][i].guard, fib__stack_auto_mode());
        CHECK(info[round][i].guard_size > 0);
      }
    }
}

/* ---- bounds */

TEST(pool_keeps_what_is_used_and_trims_after_a_quiet_period) {
  enum { EACH = FIB__STACK_POOL_MAX * 3 / 4 };
  static fib_coro *a[EACH], *b[EACH];
  fib_attr small = attr_of(FIB_STACK_MIN, FIB_GUARD_AUTO);
  fib_attr other = attr_of(FIB_STACK_MIN, FIB_GUARD_NONE);
  fib__stack_pool_drain();
  fib__stack_set_quiet(UINT64_MAX / 2, 1); /* never quiet, a look per put */
  for (int i = 0; i < EACH; i++) {
    CHECK_OK(fib_coro_create(&a[i], noop, NULL, &small));
    CHECK_OK(fib_coro_create(&b[i], noop, NULL, &other));
  }
  for (int i = 0; i < EACH; i++) {
    CHECK_OK(fib_coro_destroy(a[i]));
    CHECK_OK(fib_coro_destroy(b[i]));
  }
  /* past the bound: what the program used is kept, not unmapped */
  CHECK_EQ(fib__stack_pool_size(), 2 * EACH);
  CHECK(2 * EACH > FIB__STACK_POOL_MAX);

  /* and used again without a system call, both kinds */
  count_calls(STACK_CALLS);
  for (int i = 0; i < EACH; i++) {
    CHECK_OK(fib_coro_create(&a[i], noop, NULL, &small));
    CHECK_OK(fib_coro_create(&b[i], noop, NULL, &other));
  }
  for (int i = 0; i < EACH; i++) {
    CHECK_OK(fib_coro_destroy(a[i]));
    CHECK_OK(fib_coro_destroy(b[i]));
  }
  CHECK_EQ(counted_calls(), 0);
  CHECK_EQ(fib__stack_pool_size(), 2 * EACH);

  /* Quiet now. The window that ends at the next put saw the pool empty
   * (all taken above): nothing goes. The next window never went below
   * 2 * EACH - 1 (one `other` stack taken and given back): the stacks
   * above both the bound and that low-water mark go back, the least
   * recently used class (`small`) first. */
  fib__stack_set_quiet(0, 1);
  (void)cycle(&other);
  CHECK_EQ(fib__stack_pool_size(), 2 * EACH);
  (void)cycle(&other);
  CHECK_EQ(fib__stack_pool_size(), FIB__STACK_POOL_MAX + 1);
  fib__stack_set_quiet(UINT64_MAX / 2, 1);
  /* every `other` is still pooled: EACH of them come without a call */
  count_calls(STACK_CALLS);
  for (int i = 0; i < EACH; i++)
    CHECK_OK(fib_coro_create(&b[i], noop, NULL, &other));
  CHECK_EQ(counted_calls(), 0);
  for (int i = 0; i < EACH; i++)
    CHECK_OK(fib_coro_destroy(b[i]));
  fib__stack_set_quiet(0, 0);
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_pool_size(), 0);
  CHECK_EQ(fib__stack_slab_count(), 0); /* every slab wholly free: unmapped */
}

/* Class i of the eviction test: sizes one page apart. */
static fib_attr class_attr(int i) {
  return attr_of(FIB_STACK_MIN + (size_t)i * fib__sys_page_size(),
                 FIB_GUARD_AUTO);
}

TEST(a_class_beyond_the_limit_evicts_the_least_recently_used) {
  enum { N = FIB__STACK_POOL_CLASSES };
  fib_attr attrs[N + 1];
  const void *rec[N + 1];
  for (int i = 0; i <= N; i++)
    attrs[i] = class_attr(i);
  fib__stack_pool_drain();
  for (int i = 0; i < N; i++)
    rec[i] = cycle(&attrs[i]);
  CHECK_EQ(fib__stack_pool_classes(), N);
  CHECK_EQ(fib__stack_pool_size(), N);
  /* use every class but the first again, so the first is the least
   * recently used. Twice: a get served by the second hot slot moves
   * nothing (stack.c), so after one pass the two classes that were hot
   * at its start may leave the hot slots in either order; where both
   * were made hot by a put (mprotect guards: under qemu-user, AUTO is
   * mprotect), the first would then lie ahead of the second. */
  count_calls(STACK_CALLS);
  for (int pass = 0; pass < 2; pass++)
    for (int i = 1; i < N; i++)
      CHECK_PTR_EQ(cycle(&attrs[i]), rec[i]);
  CHECK_EQ(counted_calls(), 0);

  /* one more class: the first gives way, its stack unmapped */
  count_calls(FIB__FAULT_MUNMAP);
  rec[N] = cycle(&attrs[N]);
  CHECK_EQ(counted_calls(), 1);
  CHECK_EQ(fib__stack_pool_classes(), N);
  CHECK_EQ(fib__stack_pool_size(), N);

  /* the others are all still there; the first needs a new mapping */
  count_calls(FIB__FAULT_MMAP);
  for (int i = 1; i <= N; i++)
    CHECK_PTR_EQ(cycle(&attrs[i]), rec[i]);
  CHECK_EQ(counted_calls(), 0);
  count_calls(FIB__FAULT_MMAP);
  (void)cycle(&attrs[0]);
  CHECK_EQ(counted_calls(), 1);
  CHECK_EQ(fib__stack_pool_classes(), N);
  fib__stack_pool_drain();
}

/* ---- drain and thread exit */

/* How many of fill_three_classes's classes cost an mprotect guard. */
static long mprotect_classes(void) {
  return fib__stack_auto_mode() == FIB_GUARD_MPROTECT ? 2 : 1;
}

/* The munmap calls that give back fill_three_classes(each)'s stacks: one
 * per mprotect-guarded stack (a mapping each), one per slab for the other
 * classes (their few stacks all come from one slab per class). */
static long unmaps_of_three_classes(int each) {
  return each * mprotect_classes() + (3 - mprotect_classes());
}

/* Pool `each` stacks of each of three classes (one mprotect-guarded, one
 * AUTO: mprotect-guarded too where the kernel, or qemu-user, has no guard
 * markers), taken in turn into an empty pool; returns how many are
 * pooled: those, and what is left of the slab classes' batches (the two
 * that are not mprotect-guarded by name share the hot slots, so each
 * takes its stacks in batches of 1, 2, 4, 8: all from one slab). */
static long fill_three_classes(int each) {
  fib_attr attrs[3] = {attr_of(64 * KIB, FIB_GUARD_MPROTECT),
                       attr_of(64 * KIB, FIB_GUARD_NONE),
                       attr_of(128 * KIB, FIB_GUARD_AUTO)};
  fib_coro *cos[3 * 8];
  CHECK(each <= 8);
  for (int i = 0; i < 3 * each; i++)
    CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attrs[i % 3]));
  long left = (long)fib__stack_pool_size();
  for (int i = 0; i < 3 * each; i++)
    CHECK_OK(fib_coro_destroy(cos[i]));
  CHECK_EQ((long)fib__stack_pool_size(), left + 3 * each);
  return left + 3 * each;
}

TEST(drain_empties_every_class) {
  fib__stack_pool_drain();
  long guarded = fib__stack_mprotect_count();
  long pooled = fill_three_classes(5);
  CHECK_EQ(fib__stack_pool_size(), pooled);
  CHECK_EQ(fib__stack_pool_classes(), 3);
  CHECK_EQ(fib__stack_mprotect_count(), guarded + 5 * mprotect_classes());
  CHECK_EQ(fib__stack_slab_count(), 3 - mprotect_classes());
  count_calls(FIB__FAULT_MUNMAP);
  fib__stack_pool_drain();
  /* every stack given back: its own mapping, or its slab once wholly free */
  CHECK_EQ(counted_calls(), unmaps_of_three_classes(5));
  CHECK_EQ(fib__stack_slab_count(), 0);
  CHECK_EQ(fib__stack_pool_size(), 0);
  CHECK_EQ(fib__stack_pool_classes(), 0);
  CHECK_EQ(fib__stack_mprotect_count(), guarded);
  /* and the pool works as before */
  fib_attr a = attr_of(0, FIB_GUARD_NONE);
  const void *rec = cycle(&a);
  CHECK_PTR_EQ(cycle(&a), rec);
}

static void *pool_and_exit(void *arg) {
  *(long *)arg = fill_three_classes(4);
  CHECK_EQ((long)fib__stack_pool_size(), *(long *)arg);
  return NULL;
}

TEST(thread_exit_unmaps_every_class) {
  long guarded = fib__stack_mprotect_count(), pooled = 0;
  count_calls(FIB__FAULT_MUNMAP);
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, pool_and_exit, &pooled), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  long unmapped = counted_calls();
  CHECK(pooled >= 12);
  /* every pooled stack, by its own mapping or its slab's (and the
   * thread's signal stack, overflow.c) */
  CHECK(unmapped >= unmaps_of_three_classes(4) &&
        unmapped <= unmaps_of_three_classes(4) + 1);
  CHECK_EQ(fib__stack_slab_count(), 0);
  CHECK_EQ(fib__stack_mprotect_count(), guarded);
}

/* ---- a stack freed on another thread */

static void *make_one(void *arg) {
  fib_attr a = attr_of(96 * KIB, FIB_GUARD_AUTO);
  CHECK_OK(fib_coro_create(arg, noop, NULL, &a));
  CHECK_EQ(fib__stack_pool_size(), 0);
  return NULL;
}

TEST(a_stack_freed_on_another_thread_joins_that_threads_pool) {
  fib_coro *co;
  pthread_t t;
  fib__stack_pool_drain();
  CHECK_EQ(pthread_create(&t, NULL, make_one, &co), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_OK(fib_coro_resume(co, NULL, NULL)); /* runs here too */
  CHECK_OK(fib_coro_destroy(co));
  CHECK_EQ(fib__stack_pool_size(), 1);
  count_calls(STACK_CALLS);
  fib_attr a = attr_of(96 * KIB, FIB_GUARD_AUTO);
  CHECK_PTR_EQ(cycle(&a), co);
  CHECK_EQ(counted_calls(), 0);
}

/* ---- stacks flowing from one thread to another: the depot */

enum { FLOW = 2 * FIB__STACK_POOL_MAX };

struct flow {
  fib_coro **cos;
  pthread_barrier_t done, go;
};

static void *destroy_then_wait(void *arg) {
  struct flow *f = arg;
  for (int i = 0; i < FLOW; i++)
    CHECK_OK(fib_coro_destroy(f->cos[i]));
  pthread_barrier_wait(&f->done);
  pthread_barrier_wait(&f->go); /* alive (its pool too) until then */
  return NULL;
}

TEST(stacks_freed_on_another_thread_come_back_through_the_depot) {
  /* This thread makes stacks, another frees them: the other's pool keeps
   * its bound and hands the rest to the depot in batches, and this
   * thread's next stacks come from there, pages and all, with no system
   * call; a pool that kept them all would leave this one to map new
   * slabs. Unguarded: slab stacks in every kernel. */
  static fib_coro *cos[FLOW];
  fib_attr a = attr_of(0, FIB_GUARD_NONE);
  fib__stack_pool_drain();
  for (int i = 0; i < FLOW; i++)
    create_checked(&cos[i], &a);
  struct flow f = {.cos = cos};
  CHECK_EQ(pthread_barrier_init(&f.done, NULL, 2), 0);
  CHECK_EQ(pthread_barrier_init(&f.go, NULL, 2), 0);
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, destroy_then_wait, &f), 0);
  pthread_barrier_wait(&f.done);

  size_t moved = fib__stack_depot_size();
  CHECK(moved > 0 && moved <= FLOW - FIB__STACK_POOL_MAX);
  long slabs = fib__stack_slab_count();
  count_calls(STACK_CALLS);
  for (size_t i = 0; i < moved; i++)
    create_checked(&cos[i], &a);
  CHECK_EQ(counted_calls(), 0);
  CHECK_EQ(fib__stack_slab_count(), slabs);
  CHECK_EQ(fib__stack_depot_size(), 0);

  pthread_barrier_wait(&f.go);
  CHECK_EQ(pthread_join(t, NULL), 0); /* its pool given back at exit */
  for (size_t i = 0; i < moved; i++)
    CHECK_OK(fib_coro_destroy(cos[i]));
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_slab_count(), 0);
  pthread_barrier_destroy(&f.done);
  pthread_barrier_destroy(&f.go);
}

TEST(a_thread_alone_keeps_its_stacks_out_of_the_depot) {
  /* Nobody else wants stacks: a pool over its bound keeps them, for its
   * own thread's next ones and the quiet-period trim. */
  static fib_coro *cos[FLOW];
  fib_attr a = attr_of(0, FIB_GUARD_NONE);
  fib__stack_pool_drain();
  for (int i = 0; i < FLOW; i++)
    create_checked(&cos[i], &a);
  for (int i = 0; i < FLOW; i++)
    CHECK_OK(fib_coro_destroy(cos[i]));
  CHECK_EQ(fib__stack_depot_size(), 0);
  CHECK(fib__stack_pool_size() >= FLOW);
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_slab_count(), 0);
}

/* ---- allocation failures with a mixed pool */

TEST(failed_creates_beside_a_mixed_pool_lose_nothing) {
  fib__stack_pool_drain();
  long guarded = fib__stack_mprotect_count();
  long pooled = fill_three_classes(2);
  fib_attr fresh = attr_of(256 * KIB, FIB_GUARD_MPROTECT); /* a new class */
  int failures = 0;
  for (long nth = 1;; nth++) {
    CHECK(nth < 100);
    fib_coro *co;
    fib__fault_inject(FIB__FAULT_ALL, nth, 0);
    int err = fib_coro_create(&co, noop, NULL, &fresh);
    int injected = fib__fault_calls() >= nth;
    fib__fault_inject(0, 0, 0);
    if (!injected) { /* past the last call: it went through */
      CHECK_OK(err);
      CHECK_OK(fib_coro_destroy(co));
      break;
    }
    CHECK_EQ(err, FIB_ENOMEM);
    failures++;
    /* what was pooled is all there, and nothing half-made is kept */
    CHECK_EQ(fib__stack_pool_size(), pooled);
    CHECK_EQ(fib__stack_mprotect_count(), guarded + 2 * mprotect_classes());
  }
  CHECK(failures >= 2); /* the mmap and the mprotect */
  CHECK_EQ(fib__stack_pool_size(), pooled + 1);

  /* With every call failing, every pooled kind is still served, and
   * given back: the pool needs no system call for either. */
  fib_attr kinds[4] = {attr_of(64 * KIB, FIB_GUARD_MPROTECT),
                       attr_of(64 * KIB, FIB_GUARD_NONE),
                       attr_of(128 * KIB, FIB_GUARD_AUTO), fresh};
  fib__fault_inject(FIB__FAULT_ALL, 1, 1);
  for (int round = 0; round < 3; round++)
    for (int k = 0; k < 4; k++)
      (void)cycle(&kinds[k]);
  fib_coro *co; /* a kind not pooled fails cleanly */
  fib_attr other = attr_of(512 * KIB, FIB_GUARD_NONE);
  CHECK_EQ(fib_coro_create(&co, noop, NULL, &other), FIB_ENOMEM);
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(fib__stack_pool_size(), pooled + 1);
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_mprotect_count(), guarded);
}

/* Stacks with a mapping of their own (mprotect guards): a refused munmap
 * keeps the stack on the spill list. (A slab whose munmap is refused is
 * kept with all its stacks free: test_slab.) */
TEST(munmap_failures_during_eviction_lose_nothing) {
  enum { N = FIB__STACK_POOL_CLASSES };
  fib_attr attrs[N + 1];
  fib__stack_pool_drain();
  long maps = count_mappings();
  for (int i = 0; i <= N; i++)
    attrs[i] = attr_of(FIB_STACK_MIN + (size_t)i * fib__sys_page_size(),
                       FIB_GUARD_MPROTECT);
  for (int i = 0; i < N; i++)
    (void)cycle(&attrs[i]);
  CHECK_EQ(fib__stack_pool_size(), N);
  /* the ninth class evicts one while munmap refuses: that stack is kept */
  fib__fault_inject(FIB__FAULT_MUNMAP, 1, 1);
  (void)cycle(&attrs[N]);
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(fib__stack_pool_classes(), N);
  CHECK_EQ(fib__stack_pool_size(), N + 1);
  /* and still served: with every call failing, each of the nine kinds
   * is there for a request, the evicted one where it was kept */
  static fib_coro *one[N + 1];
  fib__fault_inject(FIB__FAULT_ALL, 1, 1);
  for (int i = 0; i <= N; i++)
    CHECK_OK(fib_coro_create(&one[i], noop, NULL, &attrs[i]));
  CHECK_EQ(fib__stack_pool_size(), 0);
  for (int i = 0; i <= N; i++) /* back, evicting with munmap refused */
    CHECK_OK(fib_coro_destroy(one[i]));
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(fib__stack_pool_size(), N + 1);
  /* past the bound with munmap refusing: over the bound, nothing lost */
  enum { MORE = FIB__STACK_POOL_MAX + 8 };
  static fib_coro *cos[MORE];
  for (int i = 0; i < MORE; i++)
    CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attrs[0]));
  fib__fault_inject(FIB__FAULT_MUNMAP, 1, 1);
  for (int i = 0; i < MORE; i++)
    CHECK_OK(fib_coro_destroy(cos[i]));
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(fib__stack_pool_size(), N + MORE); /* attrs[0]'s one was taken */
  /* the drain gives them all back once munmap works again */
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_pool_size(), 0);
  CHECK_EQ(fib__stack_pool_classes(), 0);
  const char *tool = getenv("FIB_TEST_TOOL");
  if (!tool || strncmp(tool, "tsan", 4) != 0)
    CHECK(count_mappings() - maps < 10);
}

TEST_MAIN(T(alternating_sizes_make_no_new_mappings),
          T(alternating_guard_modes_make_no_new_mappings),
          T(two_sizes_in_turn_keep_their_batches),
          T(fibers_of_two_sizes_make_no_new_mappings),
          T(pooled_stacks_have_the_size_and_mode_asked_for),
          T(spawned_fibers_get_the_size_and_mode_asked_for_from_a_mixed_pool),
          T(pool_keeps_what_is_used_and_trims_after_a_quiet_period),
          T(a_class_beyond_the_limit_evicts_the_least_recently_used),
          T(drain_empties_every_class),
          T(thread_exit_unmaps_every_class),
          T(a_stack_freed_on_another_thread_joins_that_threads_pool),
          T(stacks_freed_on_another_thread_come_back_through_the_depot),
          T(a_thread_alone_keeps_its_stacks_out_of_the_depot),
          T(failed_creates_beside_a_mixed_pool_lose_nothing),
          T(munmap_failures_during_eviction_lose_nothing))
