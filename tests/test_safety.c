/* SPDX-License-Identifier: MIT */
/*
 * test_safety.c -- the dynamic-analysis tools see fibers as they are.
 *
 * Run in every build; what a case expects depends on the tool the suite
 * runs under, which CTest passes in FIB_TEST_TOOL (tests/safety.cmake):
 * none, asan, tsan or valgrind. A case that needs a tool is skipped
 * without it (SKIP, with the reason); one that has something to check
 * without it checks that, and says so on stdout ("# ...").
 *
 * Regression tests for the switch hooks (src/coro.c, src/stack.c): each
 * fails in a build made with -DFIB_SANITIZER_HOOKS=OFF under its tool.
 *   asan:  longjmp inside a fiber: no false report, no "ignoring requested
 *          __asan_handle_no_return" warning; a real stack-buffer-overflow on
 *          a fiber stack is reported as one, located in the fiber's frame;
 *          memory held only by a suspended fiber is not a leak.
 *   tsan:  a real race between fibers of two runtimes on two threads is
 *          reported, naming the fibers; correct hand-offs give no report.
 *   valgrind: the whole suite is memcheck-clean (valgrind_run.sh).
 */
#include "fiber_helpers.h"

#include <fibers.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>

static const char *tool(void) {
  const char *t = getenv("FIB_TEST_TOOL");
  return t ? t : "none";
}

static int tool_is(const char *prefix) {
  return strncmp(tool(), prefix, strlen(prefix)) == 0;
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

static void show_child(const struct child_result *r) {
  printf("# child: exited %d code %d signal %d, stderr:\n%s", r->exited,
         r->exit_code, r->signal, r->err);
}

/* Run fn as the only fiber, named, of a fresh runtime (in this process). */
static void run_one_fiber(fib_fn fn, void *arg, const char *name) {
  fib_attr attr = {.name = name};
  run_main_with(fn, arg, &attr);
}

/* ---- longjmp inside a fiber */

static jmp_buf jump_back;
static volatile int sink;
static volatile int jump_depth = 0; /* volatile: gcc sees no recursion end */

/* Frames with poisoned redzones between their arrays, left without
 * returning: ASan must unpoison them (__asan_handle_no_return, which needs
 * to know the fiber's stack) or later frames at those addresses report a
 * false overflow. */
static void (*volatile dive_next)(int);

__attribute__((noinline)) static void dive_and_jump(int depth) {
  volatile char a[24], b[40];
  a[depth % 24] = (char)depth;
  b[depth % 40] = (char)depth;
  if (depth <= jump_depth)
    longjmp(jump_back, 1);
  dive_next(depth - 1);
  sink = a[0] + b[0];
}


/* One big frame over the same addresses, every byte written. */
__attribute__((noinline)) static int cover_the_stack(void) {
  char big[8192];
  memset(big, 1, sizeof big);
  __asm__ volatile("" : : "r"(big) : "memory");
  return big[sizeof big / 2];
}

static void *longjmp_fiber(void *arg) {
  (void)arg;
  dive_next = dive_and_jump; /* through a pointer: no visible recursion */
  for (int round = 0; round < 3; round++) {
    if (!setjmp(jump_back))
      dive_and_jump(16);
    fib_yield(); /* the switch must keep the fiber's stack known */
    sink = cover_the_stack();
  }
  return NULL;
}

static void longjmp_child(void *arg) {
  (void)arg;
  run_one_fiber(longjmp_fiber, NULL, "jumper");
}

TEST(longjmp_in_a_fiber_gives_no_false_report) {
  struct child_result r;
  run_child(longjmp_child, NULL, &r);
  if (r.err[0] || !r.exited || r.exit_code != 0)
    show_child(&r);
  CHECK(!contains(r.err, "__asan_handle_no_return"));
  CHECK(!contains(r.err, "Sanitizer"));
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 0);
  CHECK_STR_EQ(r.err, "");
}

/* ---- a real stack-buffer overflow on a fiber stack */

static volatile int past_the_end = 16;

__attribute__((noinline)) static void overflow_local(void) {
  volatile char local[16];
  volatile char *p = local;
  __asm__("" : "+r"(p)); /* hide it from UBSan's bounds and object-size
                            checks: this one is ASan's to find */
  local[0] = 1;
  p[past_the_end] = 2; /* one past the end: a real bug */
  sink = local[0];
}

static void *overflowing_fiber(void *arg) {
  (void)arg;
  fib_yield();
  overflow_local();
  return NULL;
}

static void stack_overflow_child(void *arg) {
  (void)arg;
  run_one_fiber(overflowing_fiber, NULL, "smasher");
}

TEST(asan_reports_a_stack_buffer_overflow_on_a_fiber_stack) {
  if (!tool_is("asan"))
    SKIP("%s build: the stack-buffer overflow is only run under ASan "
         "(make test-asan); elsewhere it would corrupt the stack", tool());
  struct child_result r;
  run_child(stack_overflow_child, NULL, &r);
  show_child(&r);
  CHECK(!r.exited || r.exit_code != 0);
  CHECK(contains(r.err, "ERROR: AddressSanitizer: stack-buffer-overflow"));
  /* Located in the fiber's frame: ASan knows the fiber's stack. */
  CHECK(contains(r.err, "is located in stack of thread"));
  CHECK(contains(r.err, "overflow_local"));
  CHECK(contains(r.err, "'local'"));
}

/* ---- memory held only by a suspended fiber
 *
 * Two blocks, each pointed to only by the suspended fiber's frame: one
 * malloc'd by the fiber, one malloc'd on the thread's own stack and handed
 * over through a global that the fiber then clears. The second one is what
 * makes the case fail without the library's root regions in every build:
 * LeakSanitizer treats a block whose allocation it cannot unwind (no known
 * caller: "may be allocated in a coroutine") as reachable, and without the
 * switch hooks (-DFIB_SANITIZER_HOOKS=OFF) ASan cannot unwind a fiber's
 * stack, so the fiber's own block alone passes there. Seen with gcc 12:
 * without the root regions the first block is reported when the hooks are
 * in, the second in both builds. */

static fib_sem never_posted;
static void *volatile from_the_thread;

/* Not inlined: nothing of it stays live on the thread's stack. */
__attribute__((noinline)) static void allocate_for_the_fiber(void) {
  void *p = malloc(1000);
  memset(p, 7, 1000);
  from_the_thread = p;
}

static void *hold_and_block(void *arg) {
  (void)arg;
  void *volatile held = malloc(1000); /* only this frame points to it */
  memset(held, 7, 1000);
  void *volatile given = from_the_thread; /* and to this one, from now on */
  from_the_thread = NULL;
  fib_sem_wait(&never_posted); /* suspended for good */
  free(held);
  free(given);
  return NULL;
}

static void suspended_holder_child(void *arg) {
  (void)arg;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_sem_init(&never_posted, 0));
  allocate_for_the_fiber();
  CHECK_OK(fib_spawn(rt, hold_and_block, NULL, NULL, NULL));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  exit(0); /* with the fiber suspended: LeakSanitizer checks now */
}

TEST(memory_held_by_a_suspended_fiber_is_not_a_leak) {
  struct child_result r;
  run_child(suspended_holder_child, NULL, &r);
  if (r.err[0] || !r.exited || r.exit_code != 0)
    show_child(&r);
  CHECK(!contains(r.err, "LeakSanitizer"));
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 0);
}

/* ---- data races between fibers of two runtimes on two threads */

static int racy_counter; /* plain int: any unsynchronised access races */
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static int use_lock;

__attribute__((noinline)) static void bump_counter(void) {
  if (use_lock)
    pthread_mutex_lock(&counter_lock);
  racy_counter++;
  if (use_lock)
    pthread_mutex_unlock(&counter_lock);
}

/* The two bumpers (one per runtime) meet before their first bump, so
 * that their bumps overlap in time. Without it, on a busy machine one
 * runtime could make all its bumps before the other began, and clang's
 * TSan then missed the race in most runs (clang 14; gcc's in none seen).
 * Meeting after the last bump as well made clang's TSan miss it in every
 * run, so they meet once. */
static pthread_barrier_t bumpers_meet;

static void *bumper(void *arg) {
  (void)arg;
  pthread_barrier_wait(&bumpers_meet);
  for (int i = 0; i < 50; i++) {
    bump_counter();
    fib_yield();
  }
  return NULL;
}

/* Fibers of one runtime hand a plain variable (on their thread's stack) to
 * each other: each switch orders them, so this is never a race. */
static void *hand_off(void *arg) {
  int *handed_over = arg;
  for (int i = 0; i < 20; i++) {
    ++*handed_over;
    fib_yield();
  }
  return NULL;
}

static void *runtime_thread(void *name) {
  fib_runtime *rt;
  fib_attr attr = {.name = name};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, bumper, NULL, &attr, NULL));
  int handed_over = 0;
  CHECK_OK(fib_spawn(rt, hand_off, &handed_over, NULL, NULL));
  CHECK_OK(fib_spawn(rt, hand_off, &handed_over, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(handed_over, 40);
  return NULL;
}

static void two_threads_child(void *locked) {
  use_lock = locked != NULL;
  CHECK_EQ(pthread_barrier_init(&bumpers_meet, NULL, 2), 0);
  pthread_t a, b;
  CHECK_EQ(pthread_create(&a, NULL, runtime_thread, "racer-a"), 0);
  CHECK_EQ(pthread_create(&b, NULL, runtime_thread, "racer-b"), 0);
  CHECK_EQ(pthread_join(a, NULL), 0);
  CHECK_EQ(pthread_join(b, NULL), 0);
  CHECK_EQ(pthread_barrier_destroy(&bumpers_meet), 0);
  /* After the joins the main thread may read what both wrote. */
  CHECK_EQ(racy_counter, 100);
}

TEST(tsan_reports_a_race_between_fibers_on_two_threads) {
  if (!tool_is("tsan"))
    SKIP("%s build: the racy run is only made under TSan (make test-tsan)",
         tool());
  struct child_result r;
  run_child(two_threads_child, NULL, &r);
  show_child(&r);
  CHECK(!r.exited || r.exit_code != 0);
  CHECK(contains(r.err, "WARNING: ThreadSanitizer: data race"));
  CHECK(contains(r.err, "bump_counter"));
  /* TSan knows the accesses were made by the fibers, by name. */
  CHECK(contains(r.err, "racer-a") || contains(r.err, "racer-b"));
}

TEST(correct_hand_offs_give_no_race_report) {
  struct child_result r;
  run_child(two_threads_child, (void *)1, &r);
  if (r.err[0] || !r.exited || r.exit_code != 0)
    show_child(&r);
  CHECK(!contains(r.err, "ThreadSanitizer"));
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 0);
  CHECK_STR_EQ(r.err, "");
}

/* ---- stack information and the high-water mark */

/* Not instrumented: its buffer must be on the fiber stack, not in one of
 * ASan's fake stacks (detect_stack_use_after_return). */
__attribute__((noinline, no_sanitize("address"))) static void
use_stack(size_t bytes) {
  char buf[48 * 1024];
  memset(buf, 1, bytes < sizeof buf ? bytes : sizeof buf);
  __asm__ volatile("" : : "r"(buf) : "memory");
}

static void *measure_self(void *arg) {
  size_t *marks = arg;
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  CHECK_EQ(info.size, (size_t)FIB_STACK_DEFAULT);
  CHECK_PTR_EQ((char *)info.lo + info.size, info.hi);
  CHECK(info.guard_size >= 4096);
  CHECK(info.guard == FIB_GUARD_MADVISE || info.guard == FIB_GUARD_MPROTECT);
  char *here = __builtin_frame_address(0); /* on it */
  CHECK(here > (char *)info.lo && here < (char *)info.hi);
  marks[0] = info.high_water;
  use_stack(40 * 1024);
  CHECK_OK(fib_self_stack(&info));
  marks[1] = info.high_water;
  fib_yield(); /* suspended: main measures it from outside */
  return NULL;
}

static void *measure_other(void *arg) {
  fib_id *target = arg;
  fib_stack_info info;
  CHECK_OK(fib_fiber_stack(NULL, *target, &info)); /* suspended */
  target[1] = info.high_water;
  fib_id me = fib_self();
  CHECK_OK(fib_fiber_stack(NULL, me, &info)); /* running */
  CHECK_EQ(fib_fiber_stack(NULL, 999, &info), FIB_ESRCH);
  CHECK_EQ(fib_fiber_stack(NULL, me, NULL), FIB_EINVAL);
  return NULL;
}

static void *coro_deep(void *arg, void *first) {
  (void)arg;
  (void)first;
  use_stack(30 * 1024);
  fib_coro_yield(NULL, NULL);
  return NULL;
}

TEST(stack_info_and_high_water_mark) {
  size_t marks[2] = {0, 0};
  fib_id ids[2] = {0, 0};
  fib_runtime *rt;
  fib_stack_info info;
  CHECK_EQ(fib_self_stack(&info), FIB_EPERM);
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_EQ(fib_fiber_stack(NULL, 1, &info), FIB_EPERM);
  CHECK_OK(fib_spawn(rt, measure_self, marks, NULL, &ids[0]));
  CHECK_OK(fib_fiber_stack(rt, ids[0], &info)); /* not started yet */
  CHECK(info.high_water >= 4096 && info.high_water <= 8192);
  CHECK_OK(fib_spawn(rt, measure_other, ids, NULL, NULL));
  CHECK_OK(fib_run(rt));
  printf("# high-water: %zu bytes at entry, %zu after using 40 KiB, "
         "%zu seen from another fiber\n", marks[0], marks[1],
         (size_t)ids[1]);
  /* a fresh stack: a page or two at entry (more under a sanitizer's
   * bigger frames); the 40 KiB frame shows, page-granular */
  CHECK(marks[0] >= 4096 && marks[0] < 40 * 1024);
  CHECK(marks[1] >= 40 * 1024 && marks[1] <= FIB_STACK_DEFAULT);
  CHECK_EQ((size_t)ids[1], marks[1]);
  CHECK_EQ(fib_fiber_stack(rt, ids[0], &info), FIB_ESRCH); /* finished */
  CHECK_OK(fib_runtime_destroy(rt));

  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_deep, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_OK(fib_coro_stack(co, &info)); /* suspended */
  CHECK(info.high_water >= 30 * 1024);
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fib_coro_stack(co, &info), FIB_EINVAL); /* dead */
  CHECK_EQ(fib_coro_stack(NULL, &info), FIB_EINVAL);
  CHECK_OK(fib_coro_destroy(co));
}

/* FIB_GUARD_NONE: the canary keeps the stack's lowest page resident, which
 * must not read as a stack used to the bottom. */
static void *measure_unguarded(void *arg) {
  size_t *marks = arg;
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  CHECK_EQ(info.guard, FIB_GUARD_NONE);
  CHECK_EQ(info.guard_size, 0);
  marks[0] = info.high_water;
  use_stack(40 * 1024);
  CHECK_OK(fib_self_stack(&info));
  marks[1] = info.high_water;
  return NULL;
}

TEST(unguarded_high_water_mark_leaves_out_the_canary) {
  size_t marks[2] = {0, 0};
  fib_runtime *rt;
  fib_runtime_opts opts = {.guard = FIB_GUARD_NONE};
  CHECK_OK(fib_runtime_create(&rt, &opts));
  CHECK_OK(fib_spawn(rt, measure_unguarded, marks, NULL, NULL));
  run_to_end(rt);
  printf("# unguarded high-water: %zu bytes at entry, %zu after using "
         "40 KiB\n", marks[0], marks[1]);
  CHECK(marks[0] >= 4096 && marks[0] < 40 * 1024);
  CHECK(marks[1] >= 40 * 1024 && marks[1] <= FIB_STACK_DEFAULT);
}

TEST_MAIN(T(longjmp_in_a_fiber_gives_no_false_report),
          T(asan_reports_a_stack_buffer_overflow_on_a_fiber_stack),
          T(memory_held_by_a_suspended_fiber_is_not_a_leak),
          T(tsan_reports_a_race_between_fibers_on_two_threads),
          T(correct_hand_offs_give_no_race_report),
          T(stack_info_and_high_water_mark),
          T(unguarded_high_water_mark_leaves_out_the_canary))
