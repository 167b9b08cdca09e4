/* SPDX-License-Identifier: MIT */
/*
 * test_bti.c -- AArch64 Branch Target Identification, enforced: this
 * program is linked only from BTI-marked objects (bti_start.S replaces the
 * distribution's unmarked crt files; see tests.cmake), so under
 * qemu-aarch64 -cpu max (or BTI hardware) every indirect branch into it
 * must land on a `bti` instruction. The context switch and its entry
 * trampoline work under that rule, and a target without a landing pad
 * really does fault, so the rule is in force.
 */
#include "harness.h"

#include <fibers.h>

#include <stdint.h>

#include "bti_check.h"

int bti_marked(void);   /* bti_targets.S */
int bti_unmarked(void); /* the same without a landing pad */

TEST(process_runs_with_bti_enforced) { bti_check_enforced(); }

TEST(marked_target_is_callable_through_a_pointer) {
  int (*volatile fn)(void) = bti_marked;
  CHECK_EQ(fn(), 42);
}

static void call_unmarked(void *arg) {
  (void)arg;
  int (*volatile fn)(void) = bti_unmarked;
  fprintf(stderr, "returned %d\n", fn());
}

TEST(unmarked_target_faults_with_sigill) {
  bti_check_enforced();
  struct child_result r;
  run_child(call_unmarked, NULL, &r);
  if (r.signal != SIGILL)
    check_failed(__FILE__, __LINE__, "an indirect call to a target without "
                 "`bti` was not stopped (signal %d, stderr \"%s\")", r.signal,
                 r.err);
}

/* The switch under BTI: new contexts enter through the trampoline (reached
 * by the switch's ret) which calls the entry with blr; suspended contexts
 * resume at return sites with ret; coroutines and fibers both. */
static void *ping(void *arg, void *first) {
  uintptr_t v = (uintptr_t)first;
  for (int i = 0; i < 1000; i++)
    CHECK_OK(fib_coro_yield((void *)(v + 1), (void **)&v));
  return arg;
}

static void *yielder(void *arg) {
  for (int i = 0; i < 100; i++)
    CHECK_OK(fib_yield());
  return arg;
}

TEST(switch_works_with_bti_enforced) {
  bti_check_enforced();
  fib_coro *co;
  void *out;
  CHECK_OK(fib_coro_create(&co, ping, (void *)0xb71, NULL));
  for (uintptr_t v = 1; v <= 1000; v++) {
    CHECK_OK(fib_coro_resume(co, (void *)v, &out));
    CHECK_EQ((uintptr_t)out, v + 1);
  }
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((uintptr_t)out, 0xb71);
  CHECK_OK(fib_coro_destroy(co));

  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  for (uintptr_t i = 0; i < 8; i++)
    CHECK_OK(fib_spawn(rt, yielder, (void *)i, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST_MAIN(T(process_runs_with_bti_enforced),
          T(marked_target_is_callable_through_a_pointer),
          T(unmarked_target_faults_with_sigill),
          T(switch_works_with_bti_enforced))
