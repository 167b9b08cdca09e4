/* SPDX-License-Identifier: MIT */
/*
 * test_overflow.c -- death tests: a stack overflow in a fiber or coroutine
 * is reported in one line naming it, and the process dies by SIGSEGV (on an
 * unguarded FIB_GUARD_NONE stack: the overwritten canary is reported at
 * the next switch away, and the process aborts); a fault that is not an
 * overflow goes to the handler installed before ours.
 * Each case runs the overflow in a child process.
 *
 * This file is built with -fstack-clash-protection, as fiber code should
 * be: a frame larger than the guard then probes it page by page instead of
 * jumping over it.
 */
#include "harness.h"

#include <fibers.h>

#include "arch/context.h"
#include "coro.h"

#include <pthread.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/mman.h>

/* ---- ways to overflow */

/* Unbounded on purpose; the volatile limit keeps the compiler from seeing
 * that (and from turning the recursion into a loop). */
static volatile int recursion_limit = 1 << 30;
static volatile int sink;

__attribute__((noinline)) static int recurse(int depth) {
  volatile char buf[512];
  buf[0] = (char)depth;
  buf[511] = (char)depth;
  if (depth >= recursion_limit)
    return 0;
  return recurse(depth + 1) + buf[0] + buf[511];
}

/* Frames just under one page: on riscv64 (no stack probes, 4 KiB guard)
 * the largest frames a guard still catches. */
__attribute__((noinline)) static int recurse_near_page(int depth) {
  volatile char buf[3584];
  buf[0] = (char)depth;
  buf[sizeof buf - 1] = (char)depth;
  if (depth >= recursion_limit)
    return 0;
  return recurse_near_page(depth + 1) + buf[0] + buf[sizeof buf - 1];
}

#define NEAR_PAGE_FRAMES ((intptr_t)-1) /* overflow_case.big: use those */

__attribute__((noinline)) static int big_frame(size_t n) {
  volatile char vla[n]; /* far larger than the guard */
  vla[0] = 1;           /* touched at the bottom: probes must go first */
  return vla[0];
}

/* Tell the parent where this stack's guard is, then overflow. */
static void announce_guard(void) {
  struct fib__stack *s = fib__coro_self()->stack; /* the fiber's own */
  fprintf(stderr, "guard %p %p\n", (void *)s->map, (void *)s->lo);
  fflush(stderr);
}

static void *overflow_fiber(void *arg) {
  announce_guard();
  if ((intptr_t)arg == NEAR_PAGE_FRAMES)
    return (void *)(intptr_t)recurse_near_page(0);
  if (arg)
    return (void *)(intptr_t)big_frame((size_t)(intptr_t)arg);
  return (void *)(intptr_t)recurse(0);
}

struct overflow_case {
  fib_guard_mode mode;
  const char *name;
  intptr_t big; /* 0: recurse; else one frame of this many bytes */
};

/* Check the report: the exact line, with the fault inside the guard. */
static void check_report(const struct child_result *r, const char *who) {
  CHECK_EQ(r->signal, SIGSEGV);
  void *map = NULL, *lo = NULL;
  CHECK_EQ(sscanf(r->err, "guard %p %p\n", &map, &lo), 2);
  const char *line = strchr(r->err, '\n');
  CHECK(line != NULL);
  line++;
  char want[256];
  snprintf(want, sizeof want, "fibers: stack overflow in %s (stack %zu bytes, "
           "guard %zu bytes, fault address 0x", who, (size_t)FIB_STACK_DEFAULT,
           (size_t)((char *)lo - (char *)map));
  if (strncmp(line, want, strlen(want)) != 0)
    check_failed(__FILE__, __LINE__, "report\n  %s\nwanted prefix\n  %s", line,
                 want);
  uintptr_t addr = 0;
  char tail[8] = "";
  CHECK_EQ(sscanf(line + strlen(want), "%" SCNxPTR "%7s", &addr, tail), 2);
  CHECK_STR_EQ(tail, ")");
  CHECK(strchr(line, '\n') == line + strlen(line) - 1); /* one line */
  CHECK(addr >= (uintptr_t)map && addr < (uintptr_t)lo);
}

static void *finish_quietly(void *arg) { return arg; }

static void spawn_second_overflows(void *arg) {
  struct overflow_case *c = arg;
  fib_runtime *rt;
  fib_runtime_opts opts = {.guard = c->mode};
  fib_attr attr = {.name = c->name};
  CHECK_OK(fib_runtime_create(&rt, &opts));
  CHECK_OK(fib_spawn(rt, finish_quietly, NULL, NULL, NULL)); /* id 1 */
  CHECK_OK(fib_spawn(rt, overflow_fiber, (void *)c->big, &attr, NULL));
  fib_run(rt);
}

TEST(overflow_with_madvise_guard_names_the_fiber) {
  struct overflow_case c = {FIB_GUARD_MADVISE, "deep-recursion", 0};
  struct child_result r;
  const char *emulator = getenv("FIB_TEST_EMULATOR");
  if (emulator && fib__stack_auto_mode() != FIB_GUARD_MADVISE) {
    /* qemu-user does not pass madvise through (it answers 0 and installs
     * nothing), so the library must not trust MADV_GUARD_INSTALL there:
     * check that guard markers are refused, never silently absent. The
     * mprotect and AUTO cases below cover the overflow report. */
    printf("# %s: no MADV_GUARD_INSTALL under the emulator; checking that "
           "madvise guards are refused instead\n", emulator);
    fib_runtime *rt;
    fib_runtime_opts opts = {.guard = FIB_GUARD_MADVISE};
    CHECK_OK(fib_runtime_create(&rt, &opts));
    CHECK_EQ(fib_spawn(rt, finish_quietly, NULL, NULL, NULL), FIB_EINVAL);
    CHECK_OK(fib_runtime_destroy(rt));
    return;
  }
  run_child(spawn_second_overflows, &c, &r);
  check_report(&r, "fiber 2 \"deep-recursion\"");
}

TEST(overflow_with_mprotect_guard_names_the_fiber) {
  struct overflow_case c = {FIB_GUARD_MPROTECT, "deep-recursion", 0};
  struct child_result r;
  run_child(spawn_second_overflows, &c, &r);
  check_report(&r, "fiber 2 \"deep-recursion\"");
}

TEST(large_frame_is_caught_by_the_guard_not_jumped) {
  struct overflow_case c = {FIB_GUARD_AUTO, "big-frame", 256 * 1024};
  struct child_result r;
#if defined(__riscv)
  /* A documented limit, not a skip: GCC emits no stack-clash probes on
   * riscv64, so a frame larger than the guard can jump it. What the guard
   * does promise there: frames smaller than it are caught. */
  printf("# riscv64: no stack probes from the compiler, so a frame larger "
         "than the %zu-byte guard can jump it (documented limit); checking "
         "frames just under the guard size instead\n",
         fib__ctx_probe_interval());
  c.big = NEAR_PAGE_FRAMES;
#endif
  run_child(spawn_second_overflows, &c, &r);
  check_report(&r, "fiber 2 \"big-frame\"");
}

static void *coro_overflow(void *arg, void *first) {
  (void)arg;
  (void)first;
  announce_guard();
  return (void *)(intptr_t)recurse(0);
}

static void overflow_coroutine(void *arg) {
  (void)arg;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_overflow, NULL, NULL));
  fib_coro_resume(co, NULL, NULL);
}

TEST(overflow_in_a_coroutine_is_reported) {
  struct child_result r;
  run_child(overflow_coroutine, NULL, &r);
  check_report(&r, "coroutine");
}

static void *thread_runtime(void *arg) {
  spawn_second_overflows(arg);
  return NULL;
}

static void overflow_on_second_thread(void *arg) {
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, thread_runtime, arg), 0);
  pthread_join(t, NULL);
}

TEST(overflow_on_another_threads_runtime_is_reported) {
  struct overflow_case c = {FIB_GUARD_AUTO, "on-thread-2", 0};
  struct child_result r;
  run_child(overflow_on_second_thread, &c, &r);
  check_report(&r, "fiber 2 \"on-thread-2\"");
}

/* ---- FIB_GUARD_NONE: no guard, a canary word at the stack's bottom */

/* The overflow below runs about 3 KiB past the stack's bottom. For it to
 * reach the next switch (where the canary is checked) instead of faulting,
 * the memory there must be writable. Where new mappings go depends on the
 * kernel and the tool (downwards on Linux, upwards under valgrind, into
 * whatever hole fits under TSan), so the test looks for such a stack before
 * the code under test asks for one: it makes unguarded coroutines (never
 * run) until one has either the top of an earlier one right below it (a
 * neighbour's stack: what an overflow meets in a real program) or free
 * space below that it can map (asked for as a hint, so nothing that is
 * already there is replaced). That one goes back to the pool, where the
 * next unguarded stack of its size comes from. */
#define LANDING ((size_t)64 * 1024)
#define TRIES 16

static void *prepared_lo; /* the stack found, for the code under test */

static void *idle_coro(void *arg, void *first) {
  (void)arg;
  (void)first;
  return NULL;
}

static int map_room_below(void *lo, int prot) {
  char *want = (char *)lo - LANDING;
  void *p = mmap(want, LANDING, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == (void *)want)
    return 1;
  if (p != MAP_FAILED)
    munmap(p, LANDING);
  return 0;
}

/* `prot`: PROT_READ | PROT_WRITE, room to overflow into; PROT_NONE, a
 * wall that the overflow faults on (an earlier coroutine's top page is then
 * made inaccessible). */
static void prepare_unguarded_stack_with(int prot) {
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  fib_coro *co[TRIES];
  fib_stack_info st[TRIES];
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < TRIES; i++) {
    CHECK_OK(fib_coro_create(&co[i], idle_coro, NULL, &attr));
    CHECK_OK(fib_coro_stack(co[i], &st[i]));
    int room = 0, target = i;
    /* an earlier stack right below this one, or (stacks carved from a
     * slab come top down) this one right below an earlier one */
    for (int j = 0; j < i && !room; j++) {
      if (st[j].hi == st[i].lo)
        room = mprotect((char *)st[j].hi - page, page, prot) == 0;
      else if (st[i].hi == st[j].lo &&
               mprotect((char *)st[i].hi - page, page, prot) == 0) {
        room = 1;
        target = j;
      }
    }
    if (room || map_room_below(st[i].lo, prot)) {
      prepared_lo = st[target].lo;
      CHECK_OK(fib_coro_destroy(co[target])); /* the others stay, never run */
      return;
    }
  }
  check_failed(__FILE__, __LINE__, "no unguarded stack with memory below it "
               "that the test can set up, in %d tries", TRIES);
}

static void prepare_unguarded_stack(void) {
  prepare_unguarded_stack_with(PROT_READ | PROT_WRITE);
}

/* One 4 KiB frame, every byte written. Called within 2 KiB of the stack's
 * bottom, it straddles it: it writes over the canary and into the landing
 * room below, as an overflowing frame does. */
__attribute__((noinline)) static int straddle(void) {
  volatile char big[4096];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)(i | 1);
  return big[100];
}

/* Recurse in 512-byte frames down to the stack's bottom, overflow it by
 * about two kilobytes, and return all the way: the overflowing code carries
 * on as if nothing happened, until its next switch. */
__attribute__((noinline)) static int overflow_a_little(const char *lo) {
  volatile char buf[512];
  buf[0] = 1;
  buf[511] = 1;
  if ((const char *)buf < lo + 2048)
    return straddle() + buf[0];
  return overflow_a_little(lo) + buf[0] + buf[511];
}

/* On the stack prepared, say where its canary is, and overflow. */
static void overflow_past_the_canary(void) {
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  CHECK_EQ(info.guard, FIB_GUARD_NONE);
  CHECK_EQ(info.guard_size, 0);
  CHECK_PTR_EQ(info.lo, prepared_lo); /* the stack with room below */
  fprintf(stderr, "canary %p\n", info.lo);
  fflush(stderr);
  sink = overflow_a_little(info.lo);
}

/* How the overflowing coroutine or fiber next switches away. */
enum then { THEN_YIELD, THEN_RESUME_ANOTHER, THEN_FIB_YIELD, THEN_RETURN };

static void *unguarded_coro(void *arg, void *first) {
  (void)first;
  overflow_past_the_canary();
  if ((intptr_t)arg == THEN_RESUME_ANOTHER) {
    fib_coro *other;
    CHECK_OK(fib_coro_create(&other, idle_coro, NULL, NULL));
    fib_coro_resume(other, NULL, NULL); /* a switch away: checked */
  } else {
    fib_coro_yield(NULL, NULL); /* checked */
  }
  fprintf(stderr, "the overwritten canary was not noticed\n");
  return NULL;
}

static void unguarded_coroutine_child(void *then) {
  fib_coro *co;
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  prepare_unguarded_stack();
  CHECK_OK(fib_coro_create(&co, unguarded_coro, then, &attr));
  fib_coro_resume(co, NULL, NULL);
}

static void *keep_yielding(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++)
    fib_yield();
  return NULL;
}

static void *unguarded_fiber(void *then) {
  overflow_past_the_canary();
  if ((intptr_t)then == THEN_FIB_YIELD) {
    fib_yield(); /* hands over to the ready fiber 1: a transfer, checked */
    fprintf(stderr, "the overwritten canary was not noticed\n");
  }
  return NULL; /* THEN_RETURN: the exit is checked */
}

static void unguarded_fiber_child(void *then) {
  fib_runtime *rt;
  fib_attr attr = {.name = "smasher", .guard = FIB_GUARD_NONE};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, keep_yielding, NULL, NULL, NULL)); /* id 1 */
  prepare_unguarded_stack();
  CHECK_OK(fib_spawn(rt, unguarded_fiber, then, &attr, NULL));
  fib_run(rt);
  fprintf(stderr, "the overwritten canary was not noticed\n");
}

/* The exact report: abort() after one line naming `who` and the canary. */
static void check_canary_report(const struct child_result *r,
                                const char *who) {
  void *lo = NULL;
  if (sscanf(r->err, "canary %p\n", &lo) != 1)
    check_failed(__FILE__, __LINE__, "child's stderr:\n%s", r->err);
  char want[512];
  snprintf(want, sizeof want,
           "canary %p\nfibers: fatal: stack overflow in %s (stack %zu bytes, "
           "no guard, canary at 0x%" PRIxPTR " overwritten)\n",
           lo, who, (size_t)FIB_STACK_DEFAULT, (uintptr_t)lo);
  CHECK_STR_EQ(r->err, want);
  CHECK_EQ(r->signal, SIGABRT);
}

/* Run child(then) and expect the canary report naming who. */
static void expect_canary_report(void (*child)(void *), intptr_t then,
                                 const char *who) {
  struct child_result r;
  run_child(child, (void *)then, &r);
  check_canary_report(&r, who);
}

TEST(unguarded_coroutine_overflow_is_caught_at_its_yield) {
  expect_canary_report(unguarded_coroutine_child, THEN_YIELD, "coroutine");
}

TEST(unguarded_coroutine_overflow_is_caught_when_it_resumes_another) {
  expect_canary_report(unguarded_coroutine_child, THEN_RESUME_ANOTHER,
                       "coroutine");
}

TEST(unguarded_fiber_overflow_names_the_fiber) {
  expect_canary_report(unguarded_fiber_child, THEN_FIB_YIELD,
                       "fiber 2 \"smasher\"");
}

TEST(unguarded_fiber_overflow_is_caught_at_its_exit) {
  expect_canary_report(unguarded_fiber_child, THEN_RETURN,
                       "fiber 2 \"smasher\"");
}

/* Without a guard the fault report still works where the overflow runs
 * into memory that is not accessible (unmapped, or a neighbour's guard):
 * with such memory right below it, an unguarded coroutine recursing without
 * end is reported as overflowing, with "no guard" for the guard's size. */
static void *coro_overflow_unguarded(void *arg, void *first) {
  (void)arg;
  (void)first;
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  CHECK_PTR_EQ(info.lo, prepared_lo);
  fprintf(stderr, "stack %p\n", info.lo);
  fflush(stderr);
  return (void *)(intptr_t)recurse(0);
}

static void unguarded_fault_child(void *arg) {
  (void)arg;
  fib_coro *co;
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  prepare_unguarded_stack_with(PROT_NONE);
  CHECK_OK(fib_coro_create(&co, coro_overflow_unguarded, NULL, &attr));
  fib_coro_resume(co, NULL, NULL);
}

TEST(unguarded_overflow_into_a_fault_is_reported_as_one) {
  struct child_result r;
  run_child(unguarded_fault_child, NULL, &r);
  void *lo = NULL;
  if (sscanf(r.err, "stack %p\n", &lo) != 1)
    check_failed(__FILE__, __LINE__, "child's stderr:\n%s", r.err);
  CHECK_EQ(r.signal, SIGSEGV);
  const char *line = strchr(r.err, '\n') + 1;
  char want[256];
  snprintf(want, sizeof want, "fibers: stack overflow in coroutine (stack "
           "%zu bytes, no guard, fault address 0x", (size_t)FIB_STACK_DEFAULT);
  if (strncmp(line, want, strlen(want)) != 0)
    check_failed(__FILE__, __LINE__, "report\n  %s\nwanted prefix\n  %s", line,
                 want);
  uintptr_t addr = 0;
  char tail[8] = "";
  CHECK_EQ(sscanf(line + strlen(want), "%" SCNxPTR "%7s", &addr, tail), 2);
  CHECK_STR_EQ(tail, ")");
  CHECK(strchr(line, '\n') == line + strlen(line) - 1); /* one line */
  CHECK(addr < (uintptr_t)lo && addr >= (uintptr_t)lo - LANDING);
}

/* Deep, but inside the stack: 48 KiB of a 64 KiB stack, written, over and
 * over, with switches (and a generator on an unguarded stack of its own)
 * in between. */
__attribute__((noinline)) static int use_48k(void) {
  volatile char buf[48 * 1024];
  for (size_t i = 0; i < sizeof buf; i += 64)
    buf[i] = (char)i;
  buf[sizeof buf - 1] = 1;
  return buf[0] + buf[sizeof buf - 1];
}

static void *counting_coro(void *arg, void *first) {
  (void)arg;
  (void)first;
  for (intptr_t i = 0;; i++) {
    sink = use_48k();
    fib_coro_yield((void *)i, NULL);
  }
  return NULL;
}

static void *deep_but_within(void *arg) {
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  CHECK_EQ(info.guard, FIB_GUARD_NONE);
  fib_attr attr = {.guard = FIB_GUARD_NONE};
  fib_coro *gen;
  CHECK_OK(fib_coro_create(&gen, counting_coro, NULL, &attr));
  for (intptr_t i = 0; i < 50; i++) {
    sink = use_48k();
    void *v;
    CHECK_OK(fib_coro_resume(gen, NULL, &v));
    CHECK_EQ((intptr_t)v, i);
    fib_yield();
  }
  CHECK_OK(fib_coro_destroy(gen));
  return arg;
}

static void unguarded_within_child(void *arg) {
  (void)arg;
  fib_runtime *rt;
  fib_runtime_opts opts = {.guard = FIB_GUARD_NONE}; /* for all its fibers */
  CHECK_OK(fib_runtime_create(&rt, &opts));
  fib_id ids[4];
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_spawn(rt, deep_but_within, (void *)(intptr_t)i, NULL,
                       &ids[i]));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(unguarded_fibers_within_their_stacks_run_fine) {
  struct child_result r;
  run_child(unguarded_within_child, NULL, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 0);
}

/* ---- faults that are not ours */

static void user_handler(int sig, siginfo_t *si, void *uc) {
  (void)si;
  (void)uc;
  static const char msg[] = "user handler\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(sig == SIGSEGV ? 3 : 4);
}

/* The fault must reach the signal handlers: not UBSan's null check. */
__attribute__((no_sanitize("undefined"))) static void *null_deref(void *arg) {
  return (void *)(intptr_t)*(volatile int *)arg;
}

static void fault_in_fiber_with_user_handler(void *arg) {
  (void)arg;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = user_handler;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, null_deref, NULL, NULL, NULL));
  fib_run(rt);
}

TEST(non_overflow_fault_goes_to_the_previous_handler) {
  struct child_result r;
  run_child(fault_in_fiber_with_user_handler, NULL, &r);
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 3);
  CHECK_STR_EQ(r.err, "user handler\n");
}

static void fault_on_main_stack(void *arg) {
  (void)arg;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_overflow, NULL, NULL)); /* installs ours */
  null_deref(NULL);
}

TEST(non_overflow_fault_without_handler_dies_by_default) {
  struct child_result r;
  run_child(fault_on_main_stack, NULL, &r);
  CHECK_EQ(r.signal, SIGSEGV);
  CHECK_STR_EQ(r.err, ""); /* not reported as an overflow */
}

static void fault_with_sigsegv_ignored(void *arg) {
  (void)arg;
  signal(SIGSEGV, SIG_IGN); /* before ours: a real fault still kills */
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, null_deref, NULL, NULL, NULL));
  fib_run(rt);
}

TEST(ignored_sigsegv_does_not_make_a_fault_loop) {
  struct child_result r;
  run_child(fault_with_sigsegv_ignored, NULL, &r);
  CHECK_EQ(r.signal, SIGSEGV);
  CHECK_STR_EQ(r.err, "");
}

TEST_MAIN(T(overflow_with_madvise_guard_names_the_fiber),
          T(overflow_with_mprotect_guard_names_the_fiber),
          T(large_frame_is_caught_by_the_guard_not_jumped),
          T(overflow_in_a_coroutine_is_reported),
          T(overflow_on_another_threads_runtime_is_reported),
          T(unguarded_coroutine_overflow_is_caught_at_its_yield),
          T(unguarded_coroutine_overflow_is_caught_when_it_resumes_another),
          T(unguarded_fiber_overflow_names_the_fiber),
          T(unguarded_fiber_overflow_is_caught_at_its_exit),
          T(unguarded_overflow_into_a_fault_is_reported_as_one),
          T(unguarded_fibers_within_their_stacks_run_fine),
          T(non_overflow_fault_goes_to_the_previous_handler),
          T(non_overflow_fault_without_handler_dies_by_default),
          T(ignored_sigsegv_does_not_make_a_fault_loop))
