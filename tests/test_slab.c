/* SPDX-License-Identifier: MIT */
/* test_slab.c -- stacks carved from slabs: few system calls for many
 * stacks, every stack still guarded, stacks given back and reused, slabs
 * unmapped once wholly free, and out-of-memory on each call of the way.
 *
 * System calls are counted through the fault-injection seam (as in
 * test_pool.c): a mask and an `nth` never reached count without failing. */
#include "harness.h"

#include <fibers.h>

#include "stack.h"
#include "sys.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#define STACK_CALLS                                                            \
  (FIB__FAULT_MMAP | FIB__FAULT_MUNMAP | FIB__FAULT_MADVISE |                  \
   FIB__FAULT_MPROTECT)

static void count_calls(int mask) { fib__fault_inject(mask, LONG_MAX, 0); }

static long counted_calls(void) {
  long n = fib__fault_calls();
  fib__fault_inject(0, 0, 0);
  return n;
}

static void *noop(void *arg, void *first) {
  (void)first;
  return arg;
}

static void *nothing(void *arg) { return arg; }

/* The guard modes whose stacks come from slabs here: FIB_GUARD_NONE
 * always, FIB_GUARD_MADVISE where the kernel has guard markers. */
static int slab_modes(fib_guard_mode modes[2]) {
  int n = 0;
  if (fib__stack_auto_mode() == FIB_GUARD_MADVISE)
    modes[n++] = FIB_GUARD_MADVISE;
  else
    printf("# no MADV_GUARD_INSTALL here: FIB_GUARD_NONE's slabs only\n");
  modes[n++] = FIB_GUARD_NONE;
  return n;
}

#define MANY 200

TEST(many_stacks_cost_few_system_calls_and_mappings) {
  fib_guard_mode modes[2];
  int nmodes = slab_modes(modes);
  static fib_coro *cos[MANY];
  for (int m = 0; m < nmodes; m++) {
    fib_attr attr = {.guard = modes[m]};
    fib__stack_pool_drain();
    long maps = count_mappings(), slabs = fib__stack_slab_count();
    /* a pool that has this class hot takes stacks in batches: prime it */
    CHECK_OK(fib_coro_create(&cos[0], noop, NULL, &attr));
    CHECK_OK(fib_coro_destroy(cos[0]));
    count_calls(STACK_CALLS);
    for (int i = 0; i < MANY; i++)
      CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
    long calls = counted_calls();
    /* per slab an mmap and a vectored guard install per 16 stacks (or a
     * madvise per guard where the kernel lacks vectored madvise), per
     * batch of up to 16 stacks a vectored populate: well under one call
     * per stack where vectored madvise works */
    printf("# %s: %d stacks: %ld system calls, %ld slabs, %ld mappings more\n",
           modes[m] == FIB_GUARD_NONE ? "none" : "madvise", MANY, calls,
           fib__stack_slab_count() - slabs, count_mappings() - maps);
    const char *tool = getenv("FIB_TEST_TOOL");
    if (tool && strncmp(tool, "valgrind", 8) == 0) /* it has no vectored */
      printf("# valgrind: no process_madvise, one madvise per range\n");
    else if (fib__stack_vectored_madvise() < 0) /* qemu-user: per range */
      CHECK(calls < 2 * MANY + MANY / 4);
    else if (modes[m] == FIB_GUARD_NONE) /* no guards: mmaps and populates */
      CHECK(calls < MANY / 4);
    else
      CHECK(calls < MANY + MANY / 4);
    CHECK(fib__stack_slab_count() - slabs <= 5); /* 16, 32, 64, 128 */
    if (!tool || strcmp(tool, "none") == 0) /* the tools map memory too */
      CHECK(count_mappings() - maps <= 5);
    /* each stack is where its slab put it: whole, apart, the requested size */
    for (int i = 0; i < MANY; i++) {
      fib_stack_info info;
      CHECK_OK(fib_coro_stack(cos[i], &info));
      CHECK_EQ(info.size, (size_t)FIB_STACK_DEFAULT);
      CHECK_EQ(info.guard, modes[m]);
      void *out = NULL;
      CHECK_OK(fib_coro_resume(cos[i], (void *)(intptr_t)i, &out));
    }
    for (int i = 0; i < MANY; i++)
      CHECK_OK(fib_coro_destroy(cos[i]));
    fib__stack_pool_drain();
    CHECK_EQ(fib__stack_slab_count(), slabs);
  }
}

/* ---- every stack keeps its guard, wherever it sits in its slab */

static volatile int stop_recursing; /* never set: for the compiler */

static void *recurse_forever(void *arg, void *first) {
  (void)first;
  volatile char pad[512];
  pad[0] = (char)(intptr_t)arg;
  if (!stop_recursing)
    recurse_forever((void *)(intptr_t)(pad[0] + 1), NULL);
  return (void *)(intptr_t)pad[0];
}

static void overflow_in_the_middle(void *arg) {
  (void)arg;
  fib_attr attr = {.guard = FIB_GUARD_MADVISE, .stack_size = FIB_STACK_MIN};
  fib_coro *cos[9];
  for (int i = 0; i < 9; i++)
    CHECK_OK(fib_coro_create(&cos[i], recurse_forever, NULL, &attr));
  (void)fib_coro_resume(cos[4], NULL, NULL); /* neighbours on both sides */
}

TEST(a_stack_in_the_middle_of_a_slab_overflows_into_its_guard) {
  if (fib__stack_auto_mode() != FIB_GUARD_MADVISE)
    SKIP("no MADV_GUARD_INSTALL: madvise-guarded slabs are refused here");
  struct child_result r;
  run_child(overflow_in_the_middle, NULL, &r);
  strip_emulator_report(&r);
  CHECK_EQ(r.signal, SIGSEGV);
  CHECK(strstr(r.err, "fibers: stack overflow in coroutine (stack 16384 "
                      "bytes, guard ") != NULL);
}

/* ---- given back, reused, released */

static int resident(const void *addr) {
  unsigned char v = 0;
  size_t page = fib__sys_page_size();
  CHECK_EQ(mincore((void *)((uintptr_t)addr & ~(page - 1)), page, &v), 0);
  return v & 1;
}

TEST(given_back_stacks_are_reused_and_free_slabs_unmapped) {
  enum { N = 40, HALF = N / 2 };
  fib_guard_mode modes[2];
  int nmodes = slab_modes(modes);
  for (int m = 0; m < nmodes; m++) {
    fib_attr attr = {.guard = modes[m]};
    fib_coro *cos[N];
    fib_stack_info info[N];
    fib__stack_pool_drain();
    long slabs = fib__stack_slab_count();
    for (int i = 0; i < N; i++) {
      CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
      CHECK_OK(fib_coro_stack(cos[i], &info[i]));
      CHECK(resident((const char *)info[i].hi - 1)); /* its top page, populated */
    }
    long made = fib__stack_slab_count() - slabs;
    CHECK(made >= 1);
    /* The last half given back. Slabs hold 16, then 32: the second slab
     * still holds four live stacks, so it stays mapped, but the memory of
     * the given-back stacks is returned. */
    CHECK_EQ(made, 2);
    for (int i = HALF; i < N; i++)
      CHECK_OK(fib_coro_destroy(cos[i]));
    fib__stack_pool_drain();
    CHECK_EQ(fib__stack_slab_count() - slabs, made);
    for (int i = HALF; i < N; i++)
      CHECK(!resident((const char *)info[i].hi - 1));
    /* taken again without mapping anything: the same stretches of slab */
    count_calls(FIB__FAULT_MMAP);
    for (int i = HALF; i < N; i++) {
      fib_stack_info again;
      CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
      CHECK_OK(fib_coro_stack(cos[i], &again));
      int found = 0;
      for (int j = HALF; j < N; j++)
        found |= again.lo == info[j].lo;
      CHECK(found);
    }
    CHECK_EQ(counted_calls(), 0);
    /* all given back: each slab wholly free, unmapped, one munmap each */
    for (int i = 0; i < N; i++)
      CHECK_OK(fib_coro_destroy(cos[i]));
    count_calls(FIB__FAULT_MUNMAP);
    fib__stack_pool_drain();
    CHECK_EQ(counted_calls(), made);
    CHECK_EQ(fib__stack_slab_count(), slabs);
  }
}

TEST(a_slab_whose_munmap_is_refused_is_kept_and_used) {
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  fib_coro *cos[5];
  fib__stack_pool_drain();
  long maps = count_mappings();
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_coro_destroy(cos[i]));
  CHECK_EQ(fib__stack_slab_count(), 1);
  fib__fault_inject(FIB__FAULT_MUNMAP, 1, 1);
  fib__stack_pool_drain();
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(fib__stack_slab_count(), 1); /* kept, not lost */
  CHECK_EQ(fib__stack_pool_size(), 0);
  /* with every call failing, its stacks are still handed out */
  fib__fault_inject(FIB__FAULT_ALL, 1, 1);
  for (int i = 0; i < 5; i++)
    CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
  for (int i = 0; i < 5; i++) {
    CHECK_OK(fib_coro_resume(cos[i], NULL, NULL));
    CHECK_OK(fib_coro_destroy(cos[i]));
  }
  fib__fault_inject(0, 0, 0);
  /* and the drain unmaps it once munmap works */
  fib__stack_pool_drain();
  CHECK_EQ(fib__stack_slab_count(), 0);
  const char *tool = getenv("FIB_TEST_TOOL");
  if (!tool || strcmp(tool, "none") == 0) /* the tools map memory too */
    CHECK(count_mappings() - maps < 3);
}

/* ---- out of memory on each call: refused cleanly, nothing lost */

TEST(each_failing_call_of_a_new_slab_is_refused_cleanly) {
  fib_guard_mode modes[2];
  int nmodes = slab_modes(modes);
  fib_coro *first; /* the thread's signal stack (overflow.c) made first */
  CHECK_OK(fib_coro_create(&first, noop, NULL, NULL));
  CHECK_OK(fib_coro_destroy(first));
  for (int m = 0; m < nmodes; m++) {
    fib_attr attr = {.guard = modes[m]};
    int failures = 0;
    for (long nth = 1;; nth++) {
      CHECK(nth < 50);
      fib__stack_pool_drain();
      fib__stack_seal_slabs(); /* a new slab must be made */
      long slabs = fib__stack_slab_count(), maps = count_mappings();
      fib_coro *co;
      fib__fault_inject(FIB__FAULT_ALL, nth, 0);
      int err = fib_coro_create(&co, noop, NULL, &attr);
      int injected = fib__fault_calls() >= nth;
      fib__fault_inject(0, 0, 0);
      if (!injected) {
        CHECK_OK(err);
        CHECK_OK(fib_coro_destroy(co));
        break;
      }
      CHECK_EQ(err, FIB_ENOMEM);
      failures++;
      /* no slab, no mapping left behind */
      CHECK_EQ(fib__stack_slab_count(), slabs);
      const char *tool = getenv("FIB_TEST_TOOL"); /* tools map memory too */
      if ((!tool || strcmp(tool, "none") == 0) && count_mappings() > maps)
        check_failed(__FILE__, __LINE__, "call %ld failing left %ld mappings",
                     nth, count_mappings() - maps);
    }
    /* the slab's header and its mapping; guarded: the guard install */
    CHECK(failures >= (modes[m] == FIB_GUARD_NONE ? 2 : 3));
    fib__stack_pool_drain();
  }
}

TEST(a_failing_populate_costs_only_faults) {
  fib_guard_mode modes[2];
  int nmodes = slab_modes(modes);
  for (int m = 0; m < nmodes; m++) {
    fib_attr attr = {.guard = modes[m], .stack_size = FIB_STACK_MIN};
    enum { N = 12 }; /* within the first slab (16): its guards are in */
    fib_coro *cos[N];
    fib__stack_pool_drain();
    fib__stack_seal_slabs();
    CHECK_OK(fib_coro_create(&cos[0], noop, NULL, &attr)); /* the class */
    CHECK_OK(fib_coro_destroy(cos[0]));                     /* pooled, hot */
    fib__fault_inject(FIB__FAULT_MADVISE, 1, 1); /* every madvise fails */
    for (int i = 0; i < N; i++)
      CHECK_OK(fib_coro_create(&cos[i], noop, NULL, &attr));
    long tried = fib__fault_calls();
    fib__fault_inject(0, 0, 0);
    CHECK(tried >= 1); /* a batch of more than one was populated, or not */
    for (int i = 0; i < N; i++) {
      CHECK_OK(fib_coro_resume(cos[i], NULL, NULL));
      CHECK_OK(fib_coro_destroy(cos[i]));
    }
    fib__stack_pool_drain();
  }
}

TEST(a_runtime_out_of_slabs_keeps_running) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  int ok = 0, refused = 0;
  fib__stack_pool_drain();
  fib__stack_seal_slabs();
  fib__fault_inject(FIB__FAULT_MMAP, 1, 1); /* no new slab, ever */
  for (int i = 0; i < 40; i++) {
    int err = fib_spawn(rt, nothing, NULL, NULL, NULL);
    if (err == 0)
      ok++;
    else {
      CHECK_EQ(err, FIB_ENOMEM);
      refused++;
    }
  }
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(ok, 0);
  CHECK_EQ(refused, 40);
  /* memory back: spawns work and run */
  for (int i = 0; i < 40; i++)
    CHECK_OK(fib_spawn(rt, nothing, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* ---- a stack given back on another thread */

static fib_coro *shared[MANY];

static void *destroy_all(void *arg) {
  (void)arg;
  for (int i = 0; i < MANY; i++)
    CHECK_OK(fib_coro_destroy(shared[i]));
  CHECK(fib__stack_pool_size() >= MANY); /* in this thread's pool */
  return NULL; /* its pool gives them back at thread exit */
}

TEST(stacks_freed_on_another_thread_go_back_at_its_exit) {
  fib__stack_pool_drain();
  long slabs = fib__stack_slab_count();
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  for (int i = 0; i < MANY; i++)
    CHECK_OK(fib_coro_create(&shared[i], noop, NULL, &attr));
  fib__stack_pool_drain();
  CHECK(fib__stack_slab_count() > slabs);
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, destroy_all, NULL), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  fib__stack_pool_drain(); /* this thread's batch leftovers */
  CHECK_EQ(fib__stack_slab_count(), slabs);
}

TEST_MAIN(T(many_stacks_cost_few_system_calls_and_mappings),
          T(a_stack_in_the_middle_of_a_slab_overflows_into_its_guard),
          T(given_back_stacks_are_reused_and_free_slabs_unmapped),
          T(a_slab_whose_munmap_is_refused_is_kept_and_used),
          T(each_failing_call_of_a_new_slab_is_refused_cleanly),
          T(a_failing_populate_costs_only_faults),
          T(a_runtime_out_of_slabs_keeps_running),
          T(stacks_freed_on_another_thread_go_back_at_its_exit))
