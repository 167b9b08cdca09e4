/* SPDX-License-Identifier: MIT */
/*
 * test_switch.c -- the context switch keeps the ABI's callee-saved state
 * (general and FP registers, the FP control state: MXCSR and x87 control
 * word on x86-64, FPCR on aarch64, frm on riscv64), hands values across,
 * and starts new contexts aligned and with a terminated frame chain.
 *
 * The architecture-specific parts live in tests/arch/<arch>/: regs.S (the
 * callee-saved registers) and fpctl.h (the FP control state).
 */
#include "fiber_helpers.h"

#include <fibers.h>

#include <fenv.h>
#include <stdint.h>

#include "fpctl.h" /* tests/arch/<arch>/ */

/* tests/arch/<arch>/regs.S: 0 means every callee-saved register (general
 * and FP) came back unchanged. */
unsigned regs_call_preserved(void (*fn)(void *), void *arg, uint64_t seed);

#define ROUNDS 1000

/* ---- general-purpose registers */

static void yield_once(void *arg) {
  (void)arg;
  CHECK_OK(fib_coro_yield(NULL, NULL));
}

static void resume_once(void *co) { CHECK_OK(fib_coro_resume(co, NULL, NULL)); }

static void *clobbering_body(void *arg, void *first) {
  (void)first;
  unsigned *mask = arg;
  for (int i = 0; i < ROUNDS; i++)
    *mask |= regs_call_preserved(yield_once, NULL, 0xdead0000beef0000ull + i);
  return NULL;
}

TEST(callee_saved_registers_survive_coroutine_switches) {
  unsigned inner = 0, outer = 0;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, clobbering_body, &inner, NULL));
  for (int i = 0; i < ROUNDS; i++)
    outer |= regs_call_preserved(resume_once, co, 0x0123456789abcdefull * i);
  /* The last resume comes back by the finished side's jump, which saves
   * nothing of its own: ours must still be intact. */
  outer |= regs_call_preserved(resume_once, co, 0xfeedface12345678ull);
  CHECK_EQ(outer, 0);
  CHECK_EQ(inner, 0);
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

static void fib_yield_once(void *arg) {
  (void)arg;
  CHECK_OK(fib_yield());
}

static void *yielding_fiber(void *arg) {
  unsigned mask = 0;
  for (int i = 0; i < ROUNDS; i++)
    mask |= regs_call_preserved(fib_yield_once, NULL,
                                (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + i);
  return (void *)(uintptr_t)mask;
}

struct join_slot {
  fib_id id;
  void *result;
};

static void join_once(void *arg) {
  struct join_slot *j = arg;
  CHECK_OK(fib_join(j->id, &j->result));
}

/* The fibers' masks are checked through join in a fiber of their own. A
 * joiner is woken by the finishing fiber's hand-over, a jump that saves
 * nothing of the finished side: the joiner's registers must survive it. */
static void *joiner(void *arg) {
  fib_id *ids = arg;
  for (int i = 0; i < 3; i++) {
    struct join_slot j = {ids[i], NULL};
    CHECK_EQ(regs_call_preserved(join_once, &j, 0x5eed0000u + (unsigned)i), 0);
    CHECK_EQ((uintptr_t)j.result, 0);
  }
  return NULL;
}

TEST(callee_saved_registers_survive_scheduler_switches) {
  fib_runtime *rt;
  fib_id ids[3];
  CHECK_OK(fib_runtime_create(&rt, NULL));
  for (uintptr_t i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, yielding_fiber, (void *)(i + 7), NULL, &ids[i]));
  CHECK_OK(fib_spawn(rt, joiner, ids, NULL, NULL));
  run_to_end(rt);
}

/* ---- FP control state (tests/arch/<arch>/fpctl.h) */

static void *fp_changer(void *arg, void *first) {
  (void)arg;
  (void)first;
  struct fpctl mine = fpctl_set_nondefault();
  for (int i = 0; i < ROUNDS; i++) {
    CHECK_OK(fib_coro_yield(NULL, NULL));
    /* our own settings are back after every switch */
    FPCTL_CHECK_NONDEFAULT(mine);
  }
  return NULL;
}

TEST(fp_control_state_is_per_context) {
  const char *limit = fpctl_limit_to_tool(getenv("FIB_TEST_TOOL"));
  struct fpctl before = fpctl_get();
  fib_coro *co;
  printf("# FP control state checked: %s\n", FPCTL_NAME);
  if (limit)
    printf("# %s\n", limit);
  CHECK_OK(fib_coro_create(&co, fp_changer, NULL, NULL));
  for (int i = 0; i <= ROUNDS; i++) {
    CHECK_OK(fib_coro_resume(co, NULL, NULL));
    /* the coroutine's control state did not leak to us */
    FPCTL_CHECK_SAME(before);
    CHECK_EQ(fegetround(), FE_TONEAREST);
  }
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

static void *report_round(void *arg, void *first) {
  (void)first;
  *(int *)arg = fegetround();
  return NULL;
}

TEST(new_context_inherits_creators_rounding_mode) {
  int seen = -1;
  CHECK_EQ(fesetround(FE_DOWNWARD), 0);
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, report_round, &seen, NULL));
  CHECK_EQ(fesetround(FE_TONEAREST), 0);
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(seen, FE_DOWNWARD);
  CHECK_EQ(fegetround(), FE_TONEAREST);
  CHECK_OK(fib_coro_destroy(co));
}

static void *fesetround_fiber(void *arg) {
  CHECK_EQ(fesetround((int)(intptr_t)arg), 0);
  for (int i = 0; i < 100; i++) {
    CHECK_OK(fib_yield());
    CHECK_EQ(fegetround(), (int)(intptr_t)arg);
  }
  return NULL;
}

TEST(fibers_changing_rounding_mode_do_not_leak_it) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, fesetround_fiber, (void *)(intptr_t)FE_UPWARD, NULL, NULL));
  CHECK_OK(fib_spawn(rt, fesetround_fiber, (void *)(intptr_t)FE_TOWARDZERO, NULL, NULL));
  CHECK_OK(fib_spawn(rt, fesetround_fiber, (void *)(intptr_t)FE_TONEAREST, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(fegetround(), FE_TONEAREST);
}

/* Rounding and exception masks stay per context while the sticky
 * exception flags differ from one context to the next (the switch loads
 * the control state only when it differs, and never needs the flags: the
 * ABI does not preserve them across a call). */
static void *inexact_fiber(void *arg) {
  int mode = (int)(intptr_t)arg;
  const char *tool = getenv("FIB_TEST_TOOL");
  int flags_untracked = tool && strncmp(tool, "valgrind", 8) == 0;
  CHECK_EQ(fesetround(mode), 0);
  volatile double one = 1.0, three = 3.0, third;
  for (int i = 0; i < 200; i++) {
    feclearexcept(FE_ALL_EXCEPT);
    if (mode != FE_TONEAREST) {
      third = one / three; /* inexact in every mode: raises FE_INEXACT */
      if (!flags_untracked) /* valgrind does not model the flags */
        CHECK(fetestexcept(FE_INEXACT));
    }
    CHECK_OK(fib_yield());
    CHECK_EQ(fegetround(), mode);
  }
  (void)third;
  return NULL;
}

TEST(control_state_survives_differing_exception_flags) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, inexact_fiber, (void *)(intptr_t)FE_UPWARD, NULL, NULL));
  CHECK_OK(fib_spawn(rt, inexact_fiber, (void *)(intptr_t)FE_TONEAREST, NULL, NULL));
  CHECK_OK(fib_spawn(rt, inexact_fiber, (void *)(intptr_t)FE_DOWNWARD, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(fegetround(), FE_TONEAREST);
}

/* ---- FIB_SHARED_FP: the FP control state is the thread's, not saved */

static void *set_round_up_and_yield(void *arg, void *first) {
  (void)arg;
  (void)first;
  CHECK_EQ(fesetround(FE_UPWARD), 0);
  CHECK_OK(fib_coro_yield(NULL, NULL));
  /* the resumer's change is seen here too */
  CHECK_EQ(fegetround(), FE_DOWNWARD);
  return NULL;
}

TEST(shared_fp_coroutine_shares_the_rounding_mode) {
  fib_attr shared = {.flags = FIB_SHARED_FP};
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, set_round_up_and_yield, NULL, &shared));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fegetround(), FE_UPWARD); /* not isolated: by request */
  CHECK_EQ(fesetround(FE_DOWNWARD), 0);
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_EQ(fesetround(FE_TONEAREST), 0);
  CHECK_OK(fib_coro_destroy(co));
}

TEST(shared_fp_keeps_callee_saved_registers) {
  unsigned inner = 0, outer = 0;
  fib_attr shared = {.flags = FIB_SHARED_FP};
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, clobbering_body, &inner, &shared));
  for (int i = 0; i < ROUNDS; i++)
    outer |= regs_call_preserved(resume_once, co, 0x5555aaaa5555aaaaull ^ i);
  CHECK_EQ(outer, 0);
  CHECK_EQ(inner, 0);
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_OK(fib_coro_destroy(co));
}

static void *round_up_fiber(void *arg) {
  (void)arg;
  CHECK_EQ(fesetround(FE_UPWARD), 0);
  CHECK_OK(fib_yield());
  return NULL;
}

static void *observe_round(void *arg) {
  *(int *)arg = fegetround();
  return NULL;
}

TEST(shared_fp_runtime_applies_to_its_fibers) {
  fib_runtime *rt;
  fib_runtime_opts opts = {.flags = FIB_SHARED_FP};
  int seen = -1;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  CHECK_OK(fib_spawn(rt, round_up_fiber, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, observe_round, &seen, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(seen, FE_UPWARD); /* the first fiber's change reached the second */
  CHECK_EQ(fesetround(FE_TONEAREST), 0);
}

static void *shared_sees_nearest(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    CHECK_EQ(fegetround(), FE_TONEAREST);
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(shared_and_isolated_fibers_mix_in_one_runtime) {
  /* isolated fibers keep their own modes; shared ones always see the
   * thread's, even as fibers hand the CPU to each other directly */
  fib_runtime *rt;
  fib_attr shared = {.flags = FIB_SHARED_FP};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  int modes[] = {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
  for (int i = 0; i < 3; i++) {
    CHECK_OK(fib_spawn(rt, fesetround_fiber, (void *)(intptr_t)modes[i], NULL, NULL));
    CHECK_OK(fib_spawn(rt, shared_sees_nearest, NULL, &shared, NULL));
  }
  run_to_end(rt);
  CHECK_EQ(fegetround(), FE_TONEAREST);
}

/* ---- values across the switch */

static void *echo_plus_one(void *arg, void *first) {
  CHECK_PTR_EQ(arg, (void *)0x1234);
  uintptr_t v = (uintptr_t)first;
  for (;;) {
    void *in;
    CHECK_OK(fib_coro_yield((void *)(v + 1), &in));
    v = (uintptr_t)in;
    if (v == 0)
      return (void *)0xd0d0;
  }
}

TEST(values_pass_both_ways) {
  fib_coro *co;
  void *out;
  CHECK_OK(fib_coro_create(&co, echo_plus_one, (void *)0x1234, NULL));
  for (uintptr_t v = 1; v < 1000; v++) {
    CHECK_OK(fib_coro_resume(co, (void *)v, &out));
    CHECK_EQ((uintptr_t)out, v + 1);
  }
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((uintptr_t)out, 0xd0d0);
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

/* ---- alignment and frame chain at a new context's entry */

__attribute__((noinline)) static uintptr_t frame_misalignment(void) {
  return (uintptr_t)__builtin_frame_address(0) & 15;
}

/* Varargs with doubles and long doubles (which need the ABI's alignment of
 * the stack: on x86-64 the SSE register save area, on aarch64 and riscv64
 * 16-byte slots for 128-bit long double), and on x86-64 an aligned SSE
 * spill. (On aarch64 the hardware itself faults on any sp-relative access
 * with a misaligned sp; riscv64 has no alignment fault, and
 * frame_misalignment() checks it.) */
__attribute__((noinline)) static void varargs_and_sse(void) {
  char buf[128];
  long double ld = 1.25L;
  snprintf(buf, sizeof buf, "%.3f %g %Lf %d %s", 3.14159, 2.5e10, ld, 42, "x");
  CHECK_STR_EQ(buf, "3.142 2.5e+10 1.250000 42 x");
  double d = 0;
  int i = 0;
  long double l = 0;
  CHECK_EQ(sscanf("6.5 17 0.5", "%lf %d %Lf", &d, &i, &l), 3);
#if defined(__x86_64__)
  CHECK(d == 6.5 && i == 17 && l == 0.5L);
#else
  /* 128-bit long double is soft-float here: compare it through printf, not
   * libgcc's __eqtf2 (whose Debian 12 object lacks the BTI note and would
   * cost test_switch_bti its BTI marking on aarch64). */
  char lbuf[32];
  snprintf(lbuf, sizeof lbuf, "%Lf", l);
  CHECK(d == 6.5 && i == 17);
  CHECK_STR_EQ(lbuf, "0.500000");
#endif
#if defined(__x86_64__)
  /* movaps on a stack slot faults if the stack is misaligned */
  volatile __m128 v = _mm_set_ps(1.0f, 2.0f, 3.0f, 4.0f);
  __m128 w = _mm_add_ps(v, v);
  _Alignas(16) float out[4];
  _mm_store_ps(out, w);
  CHECK(out[0] == 8.0f && out[3] == 2.0f);
#endif
}

/* Where a frame keeps its caller's frame pointer: x86-64 and aarch64 point
 * the frame pointer at the saved one; on riscv64 s0 points just above the
 * frame record {saved s0, ra}, so the saved one is two words below. */
#if defined(__riscv)
#define SAVED_FP(fp) ((fp)[-2])
#else
#define SAVED_FP(fp) ((fp)[0])
#endif

/* Walk the frame-pointer chain (this file is built with frame pointers):
 * it must end in a zero saved frame pointer, inside the context's stack. */
__attribute__((noinline)) static int frame_chain_ends_in_zero(char *lo, char *hi) {
  void **fp = __builtin_frame_address(0);
  for (int depth = 0; depth < 64; depth++) {
    if ((char *)fp < lo || (char *)fp >= hi)
      return 0; /* walked off the stack: chain not terminated */
    if (SAVED_FP(fp) == NULL)
      return 1;
    fp = SAVED_FP(fp);
  }
  return 0;
}

static void *alignment_body(void *arg, void *first) {
  (void)first;
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);
  char *hi = (char *)(here + 4096), *lo = (char *)(here - FIB_STACK_DEFAULT);
  CHECK_EQ(frame_misalignment(), 0);
  varargs_and_sse();
  *(int *)arg = frame_chain_ends_in_zero(lo, hi);
  return NULL;
}

TEST(new_context_is_aligned_and_frame_chain_terminated) {
  int chain_ok = 0;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, alignment_body, &chain_ok, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(chain_ok, 1);
  CHECK_OK(fib_coro_destroy(co));
}

static void *aligned_fiber(void *arg) {
  (void)arg;
  CHECK_EQ(frame_misalignment(), 0);
  varargs_and_sse();
  CHECK_OK(fib_yield());
  CHECK_EQ(frame_misalignment(), 0);
  varargs_and_sse();
  return NULL;
}

TEST(fibers_are_aligned_for_varargs_and_sse) {
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_spawn(rt, aligned_fiber, NULL, NULL, NULL));
  run_to_end(rt);
}

/* test_switch_bti (aarch64, tests/arch/aarch64/tests.cmake): this same
 * file, linked so that BTI is enforced; first check that it is. */
#if defined(FIB_TEST_EXPECT_BTI)
#include "bti_check.h"
TEST(runs_with_bti_enforced) { bti_check_enforced(); }
#define BTI_CASE T(runs_with_bti_enforced),
#else
#define BTI_CASE
#endif

TEST_MAIN(BTI_CASE T(callee_saved_registers_survive_coroutine_switches),
          T(callee_saved_registers_survive_scheduler_switches),
          T(fp_control_state_is_per_context),
          T(new_context_inherits_creators_rounding_mode),
          T(fibers_changing_rounding_mode_do_not_leak_it),
          T(control_state_survives_differing_exception_flags),
          T(shared_fp_coroutine_shares_the_rounding_mode),
          T(shared_fp_keeps_callee_saved_registers),
          T(shared_fp_runtime_applies_to_its_fibers),
          T(shared_and_isolated_fibers_mix_in_one_runtime),
          T(values_pass_both_ways),
          T(new_context_is_aligned_and_frame_chain_terminated),
          T(fibers_are_aligned_for_varargs_and_sse))
