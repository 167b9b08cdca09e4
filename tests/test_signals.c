/* SPDX-License-Identifier: MIT */
/*
 * test_signals.c -- the overflow handler among other SIGSEGV handlers:
 * the opt-out (fib_overflow_signals), a host's own handler asking
 * fib_overflow_check, and chaining with a handler installed before ours
 * and one installed after ours that forwards to ours.
 *
 * Most cases are death tests: the code under test runs in a child
 * (run_child), which arms an alarm first, so that a fault handed back and
 * forth forever fails the case (killed by SIGALRM) instead of hanging it.
 * The overflows recurse in frames far smaller than a guard, so this file
 * needs no -fstack-clash-protection (test_overflow.c covers large frames).
 */
#include "harness.h"

#include <fibers.h>

#include "sys.h" /* the fault-injection seam */

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

/* Under ASan and TSan the tool's own SIGSEGV handler would be installed
 * before ours (handle_segv=1), so faults that are not overflows would end
 * in the tool's report, not in the handlers these cases install: the
 * cases are about those handlers, so the tool's is left out, as
 * tests/safety.cmake does for test_overflow. (An ASAN_OPTIONS in the
 * environment still overrides this.) */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIGNALS_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define SIGNALS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SIGNALS_ASAN)
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "handle_segv=0"; }
#endif
#if defined(__SANITIZE_THREAD__) || defined(SIGNALS_TSAN)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "handle_segv=0"; }
#endif

/* Long enough for the slowest runner (valgrind, qemu); a case that loops
 * on a fault fails after this long. */
#define ALARM_SECONDS 60

/* ---- helpers */

static void say(const char *s) {
  ssize_t w = write(STDERR_FILENO, s, strlen(s));
  (void)w;
}

static volatile int recursion_limit = 1 << 30;

/* Unbounded recursion (the volatile limit hides that from the compiler). */
__attribute__((noinline)) static int recurse(int depth) {
  volatile char buf[256];
  buf[0] = (char)depth;
  buf[255] = (char)depth;
  if (depth >= recursion_limit)
    return 0;
  return recurse(depth + 1) + buf[0] + buf[255];
}

static void *overflow_fiber(void *arg) {
  (void)arg;
  return (void *)(intptr_t)recurse(0);
}

/* A runtime whose only fiber, 1 "deep", overflows its stack. */
static void run_overflowing_fiber(void) {
  fib_runtime *rt;
  fib_attr attr = {.name = "deep"};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, overflow_fiber, NULL, &attr, NULL));
  fib_run(rt);
  say("the overflow did not kill the process\n");
}

/* A page nobody may touch: a write to it is a fault that is not an
 * overflow. */
static char *no_access_page;

static void map_no_access_page(void) {
  no_access_page = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(no_access_page != MAP_FAILED);
}

static void open_no_access_page(void) {
  mprotect(no_access_page, (size_t)sysconf(_SC_PAGESIZE),
           PROT_READ | PROT_WRITE);
}

/* In a fiber: write to the page (a handler may make it writable and
 * return, and then the write completes). */
static void *fault_fiber(void *arg) {
  (void)arg;
  *(volatile char *)no_access_page = 7;
  if (*(volatile char *)no_access_page == 7)
    say("recovered\n");
  return NULL;
}

static void run_faulting_fiber(void) {
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, fault_fiber, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Whether two actions are the same (handler, flags and mask). */
static int same_action(const struct sigaction *a, const struct sigaction *b) {
  if (a->sa_handler != b->sa_handler || a->sa_flags != b->sa_flags)
    return 0;
  for (int s = 1; s < NSIG; s++)
    if (sigismember(&a->sa_mask, s) != sigismember(&b->sa_mask, s))
      return 0;
  return 1;
}

/* Start the thread without an alternate signal stack, so that one made by
 * the library shows. (ASan gives every thread one of its own, which the
 * library would use as is.) */
static void no_signal_stack_yet(void) {
  stack_t off = {.ss_flags = SS_DISABLE};
  CHECK_EQ(sigaltstack(&off, NULL), 0);
}

static int blocked(int sig) {
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  return sigismember(&cur, sig) == 1;
}

/* `err` is `before` followed by exactly one report line for fiber 1
 * "deep" (the guard's size and the fault address vary). */
static void check_report_after(const char *err, const char *before) {
  if (strncmp(err, before, strlen(before)) != 0)
    check_failed(__FILE__, __LINE__, "child's stderr:\n%s\nwanted first:\n%s",
                 err, before);
  const char *line = err + strlen(before);
  static const char want[] =
      "fibers: stack overflow in fiber 1 \"deep\" (stack 65536 bytes, guard ";
  if (strncmp(line, want, sizeof want - 1) != 0)
    check_failed(__FILE__, __LINE__, "report\n  %s\nwanted prefix\n  %s", line,
                 want);
  const char *nl = strchr(line, '\n');
  CHECK(nl != NULL && nl[1] == 0); /* one line, and nothing after it */
  CHECK(strstr(line, ", fault address 0x") != NULL);
  CHECK(nl[-1] == ')');
}

/* ---- the opt-out */

static void *yield_and_return(void *arg) {
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_yield());
  return arg;
}

static void *coro_double(void *arg, void *first) {
  (void)arg;
  return (void *)((intptr_t)first * 2);
}

/* Fibers and a coroutine run, and the thread has no signal stack. */
static void run_fibers_and_check_no_signal_stack(void) {
  fib_coro *co;
  void *out = NULL;
  CHECK_OK(fib_coro_create(&co, coro_double, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, (void *)21, &out));
  CHECK_EQ((intptr_t)out, 42);
  CHECK_OK(fib_coro_destroy(co));

  fib_runtime *rt;
  fib_id ids[3];
  CHECK_OK(fib_runtime_create(&rt, NULL));
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, yield_and_return, (void *)(intptr_t)(i + 1), NULL,
                       &ids[i]));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));

  stack_t ss;
  CHECK_EQ(sigaltstack(NULL, &ss), 0);
  CHECK(ss.ss_flags & SS_DISABLE);
}

static void *thread_runs_fibers(void *arg) {
  (void)arg;
  no_signal_stack_yet();
  run_fibers_and_check_no_signal_stack();
  return NULL;
}

static void host_handler_exits(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)si;
  (void)uc;
  _exit(3);
}

static void opt_out_child(void *with_opt_out) {
  /* A host's handler for SIGSEGV; SIGBUS keeps the default. */
  struct sigaction host, segv_before, bus_before, segv_after, bus_after;
  memset(&host, 0, sizeof host);
  host.sa_sigaction = host_handler_exits;
  host.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&host.sa_mask);
  sigaddset(&host.sa_mask, SIGUSR2);
  CHECK_EQ(sigaction(SIGSEGV, &host, NULL), 0);
  CHECK_EQ(sigaction(SIGSEGV, NULL, &segv_before), 0);
  CHECK_EQ(sigaction(SIGBUS, NULL, &bus_before), 0);
  no_signal_stack_yet();

  if (with_opt_out)
    CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  run_fibers_and_check_no_signal_stack();
  pthread_t t; /* another thread's first fibers */
  CHECK_EQ(pthread_create(&t, NULL, thread_runs_fibers, NULL), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);

  CHECK_EQ(sigaction(SIGSEGV, NULL, &segv_after), 0);
  CHECK_EQ(sigaction(SIGBUS, NULL, &bus_after), 0);
  CHECK(same_action(&segv_before, &segv_after));
  CHECK(same_action(&bus_before, &bus_after));
}

TEST(opt_out_installs_no_handler_and_no_signal_stack) {
  struct child_result r;
  run_child(opt_out_child, (void *)1, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 0);
  /* The same without the opt-out fails its checks: the checks can fail. */
  run_child(opt_out_child, NULL, &r);
  CHECK(!r.exited && r.signal == SIGABRT);
  CHECK(strstr(r.err, "check failed") != NULL);
}

/* With every sigaltstack() failing, the library still runs fibers when it
 * is told to leave signals alone, and then does not even try one. */
static void no_signal_stack_needed_child(void *with_opt_out) {
  no_signal_stack_yet();
  if (with_opt_out)
    CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  fib__fault_inject(FIB__FAULT_SIGALTSTACK, 1, 1);
  fib_coro *co;
  int err = fib_coro_create(&co, coro_double, NULL, NULL);
  if (!with_opt_out) { /* the default needs one: the injection bites */
    CHECK_EQ(err, FIB_ENOMEM);
    return;
  }
  CHECK_OK(err);
  CHECK_OK(fib_coro_destroy(co));
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, yield_and_return, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib__fault_calls(), 0); /* no sigaltstack() was made */
}

TEST(opt_out_never_fails_for_want_of_a_signal_stack) {
  struct child_result r;
  run_child(no_signal_stack_needed_child, (void *)1, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited && r.exit_code == 0);
  run_child(no_signal_stack_needed_child, NULL, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited && r.exit_code == 0);
}

static void opt_out_overflow_child(void *arg) {
  (void)arg;
  alarm(ALARM_SECONDS);
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  run_overflowing_fiber();
}

TEST(opt_out_overflow_dies_by_sigsegv_without_report) {
  struct child_result r;
  run_child(opt_out_overflow_child, NULL, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK_EQ(r.signal, SIGSEGV);
}

static void opt_out_too_late_child(void *arg) {
  (void)arg;
  alarm(ALARM_SECONDS);
  struct sigaction before, after;
  CHECK_EQ(sigaction(SIGSEGV, NULL, &before), 0);
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_double, NULL, NULL)); /* installs */
  CHECK_OK(fib_coro_destroy(co));
  CHECK_EQ(fib_overflow_signals(FIB_SIGNALS_NONE), FIB_EBUSY);
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_INSTALL)); /* the one in force */
  CHECK_EQ(fib_overflow_signals(2), FIB_EINVAL);
  /* Nothing was undone: our handler is still there, and still reports. */
  CHECK_EQ(sigaction(SIGSEGV, NULL, &after), 0);
  CHECK(!same_action(&before, &after));
  CHECK((after.sa_flags & (SA_SIGINFO | SA_ONSTACK)) ==
        (SA_SIGINFO | SA_ONSTACK));
  run_overflowing_fiber();
}

TEST(opt_out_after_installation_is_refused_and_changes_nothing) {
  struct child_result r;
  run_child(opt_out_too_late_child, NULL, &r);
  check_report_after(r.err, "");
  CHECK_EQ(r.signal, SIGSEGV);
}

/* Until the first use the mode may be changed back and forth; the first
 * use fixes the last one asked for. */
static void mode_changes_child(void *arg) {
  int last = (int)(intptr_t)arg;
  struct sigaction before, after;
  CHECK_EQ(sigaction(SIGSEGV, NULL, &before), 0);
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_INSTALL));
  CHECK_OK(fib_overflow_signals(last));
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, coro_double, NULL, NULL));
  CHECK_OK(fib_coro_destroy(co));
  CHECK_EQ(sigaction(SIGSEGV, NULL, &after), 0);
  CHECK_EQ(same_action(&before, &after), last == FIB_SIGNALS_NONE);
  CHECK_OK(fib_overflow_signals(last));
  CHECK_EQ(fib_overflow_signals(last == FIB_SIGNALS_NONE ? FIB_SIGNALS_INSTALL
                                                         : FIB_SIGNALS_NONE),
           FIB_EBUSY);
}

TEST(mode_is_fixed_by_the_first_use) {
  struct child_result r;
  run_child(mode_changes_child, (void *)(intptr_t)FIB_SIGNALS_INSTALL, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited && r.exit_code == 0);
  run_child(mode_changes_child, (void *)(intptr_t)FIB_SIGNALS_NONE, &r);
  CHECK_STR_EQ(r.err, "");
  CHECK(r.exited && r.exit_code == 0);
}

/* ---- a host's own handler asking fib_overflow_check */

static void host_asks_us(int sig, siginfo_t *si, void *uc) {
  say("host\n");
  if (fib_overflow_check(sig, si, uc) != 0)
    say("fib_overflow_check returned non-zero\n");
  if (si->si_addr == no_access_page) { /* one of its own: it handles it */
    say("host: not an overflow\n");
    open_no_access_page();
    return;
  }
  say("host: not an overflow, not mine either\n");
  _exit(7);
}

/* The host's handler, on the host's own signal stack: the library makes
 * none (FIB_SIGNALS_NONE). */
static void install_host_asking_us(void) {
  static char host_stack[64 * 1024]; /* static: nothing to free or leak */
  stack_t ss = {.ss_sp = host_stack, .ss_size = sizeof host_stack};
  CHECK_EQ(sigaltstack(&ss, NULL), 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = host_asks_us;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
}

static void host_check_child(void *overflow) {
  alarm(ALARM_SECONDS);
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  map_no_access_page();
  install_host_asking_us();
  if (overflow)
    run_overflowing_fiber();
  else
    run_faulting_fiber();
}

TEST(host_handler_asking_check_gets_an_overflow_reported) {
  struct child_result r;
  run_child(host_check_child, (void *)1, &r);
  check_report_after(r.err, "host\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

TEST(host_handler_asking_check_keeps_other_faults) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "valgrind") == 0)
    SKIP("under valgrind 3.19 the fiber's registers come back wrong after "
         "a handler recovers a fault in it and returns (an invalid read at "
         "its next scheduler call, not seen natively, under ASan, TSan or "
         "qemu): the native, sanitizer and qemu runs check it");
  struct child_result r;
  run_child(host_check_child, NULL, &r);
  CHECK_STR_EQ(r.err, "host\nhost: not an overflow\nrecovered\n");
  CHECK(r.exited && r.exit_code == 0);
}

/* Direct calls, from a fiber, with a siginfo made up to look like a fault
 * at `addr`: 0 for anything that is not an overflow of this stack. */
static int check_made_up(int sig, int code, void *addr) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  si.si_signo = sig;
  si.si_code = code;
  si.si_addr = addr;
  return fib_overflow_check(sig, &si, NULL);
}

static void *made_up_faults(void *arg) {
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  char *in_guard = (char *)info.lo - 1;
  int local = 0;
  CHECK_EQ(check_made_up(SIGSEGV, SEGV_MAPERR, &local), 0); /* in the stack */
  CHECK_EQ(check_made_up(SIGSEGV, SEGV_MAPERR, no_access_page), 0);
  CHECK_EQ(check_made_up(SIGSEGV, SEGV_MAPERR, (char *)info.hi + 4096), 0);
  CHECK_EQ(check_made_up(SIGUSR1, SEGV_MAPERR, in_guard), 0); /* not a fault */
  CHECK_EQ(check_made_up(SIGSEGV, SI_USER, in_guard), 0); /* kill()-sent */
  CHECK_EQ(fib_overflow_check(SIGSEGV, NULL, NULL), 0);
  say("not ours: 0\n");
  if (arg) /* and one that is: a fault in the guard, reported, fatal */
    check_made_up(SIGBUS, SEGV_MAPERR, in_guard);
  return NULL;
}

static void made_up_child(void *in_guard_too) {
  alarm(ALARM_SECONDS);
  map_no_access_page();
  CHECK_OK(fib_overflow_signals(FIB_SIGNALS_NONE));
  /* Outside any fiber nothing is an overflow. */
  CHECK_EQ(check_made_up(SIGSEGV, SEGV_MAPERR, no_access_page), 0);
  fib_runtime *rt;
  fib_attr attr = {.name = "deep"};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, made_up_faults, in_guard_too, &attr, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(check_returns_0_unless_the_fault_is_in_the_guard) {
  struct child_result r;
  run_child(made_up_child, NULL, &r);
  CHECK_STR_EQ(r.err, "not ours: 0\n");
  CHECK(r.exited && r.exit_code == 0);
  run_child(made_up_child, (void *)1, &r);
  check_report_after(r.err, "not ours: 0\n");
  CHECK_EQ(r.signal, SIGBUS); /* dies by the signal it was given */
}

/* ---- a handler installed before ours */

/* What the handler before ours saw, printed by the fiber afterwards. */
static volatile sig_atomic_t before_calls, before_sig, before_code_ok,
    before_addr_ok, before_uc_ok, before_usr2_blocked, before_segv_blocked;

static void note_before(int sig, const siginfo_t *si, const void *uc) {
  before_calls++;
  before_sig = sig;
  before_code_ok = si && si->si_signo == SIGSEGV && si->si_code == SEGV_ACCERR;
  before_addr_ok = si && si->si_addr == no_access_page;
  before_uc_ok = uc != NULL;
  before_usr2_blocked = blocked(SIGUSR2); /* from its sa_mask */
  before_segv_blocked = blocked(SIGSEGV); /* unless SA_NODEFER */
}

static void before_siginfo(int sig, siginfo_t *si, void *uc) {
  note_before(sig, si, uc);
  open_no_access_page(); /* fix the cause and return: the write completes */
}

static void before_plain(int sig) {
  note_before(sig, NULL, NULL);
  open_no_access_page();
}

static void install_before(unsigned flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  if (flags & SA_SIGINFO)
    sa.sa_sigaction = before_siginfo;
  else
    sa.sa_handler = before_plain;
  sa.sa_flags = (int)flags;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);
  CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
}

/* The library's handler has replaced `prev` (so a case that expects
 * `prev` to be called checks the chaining, not the absence of ours). */
static void check_ours_is_installed_over(const struct sigaction *prev) {
  struct sigaction cur;
  CHECK_EQ(sigaction(SIGSEGV, NULL, &cur), 0);
  CHECK(cur.sa_handler != prev->sa_handler && cur.sa_handler != SIG_DFL &&
        cur.sa_handler != SIG_IGN);
}

static void before_ours_child(void *flags) {
  alarm(ALARM_SECONDS);
  map_no_access_page();
  install_before((unsigned)(uintptr_t)flags);
  struct sigaction before;
  CHECK_EQ(sigaction(SIGSEGV, NULL, &before), 0);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, fault_fiber, NULL, NULL, NULL)); /* installs ours */
  check_ours_is_installed_over(&before);
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  fprintf(stderr, "calls %d sig %d code %d addr %d uc %d usr2 %d segv %d\n",
          (int)before_calls, (int)before_sig, (int)before_code_ok,
          (int)before_addr_ok, (int)before_uc_ok, (int)before_usr2_blocked,
          (int)before_segv_blocked);
}

TEST(handler_before_ours_gets_a_fault_with_its_siginfo_and_mask) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "valgrind") == 0)
    SKIP("under valgrind 3.19 the fiber's registers come back wrong after "
         "a handler recovers a fault in it and returns (an invalid read at "
         "its next scheduler call, not seen natively, under ASan, TSan or "
         "qemu): the native, sanitizer and qemu runs check it");
  struct child_result r;
  run_child(before_ours_child, (void *)(uintptr_t)SA_SIGINFO, &r);
  CHECK_STR_EQ(r.err, "recovered\n"
                      "calls 1 sig 11 code 1 addr 1 uc 1 usr2 1 segv 1\n");
  CHECK(r.exited && r.exit_code == 0);
}

TEST(handler_before_ours_with_nodefer_and_no_siginfo) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "valgrind") == 0)
    SKIP("under valgrind 3.19 the fiber's registers come back wrong after "
         "a handler recovers a fault in it and returns (an invalid read at "
         "its next scheduler call, not seen natively, under ASan, TSan or "
         "qemu): the native, sanitizer and qemu runs check it");
  struct child_result r;
  run_child(before_ours_child, (void *)(uintptr_t)SA_NODEFER, &r);
  CHECK_STR_EQ(r.err, "recovered\n"
                      "calls 1 sig 11 code 0 addr 0 uc 0 usr2 1 segv 0\n");
  CHECK(r.exited && r.exit_code == 0);
}

static void before_exits(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)si;
  (void)uc;
  say("before\n");
  _exit(3);
}

static void before_overflow_child(void *arg) {
  (void)arg;
  alarm(ALARM_SECONDS);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = before_exits;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
  run_overflowing_fiber();
}

TEST(handler_before_ours_does_not_get_an_overflow) {
  struct child_result r;
  run_child(before_overflow_child, NULL, &r);
  check_report_after(r.err, "");
  CHECK_EQ(r.signal, SIGSEGV);
}

/* A crash reporter: one-shot (SA_RESETHAND), says its piece and returns,
 * so that the fault recurs and kills by the default action. */
static void reporter(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)si;
  (void)uc;
  say("reporter\n");
}

static void one_shot_child(void *arg) {
  (void)arg;
  alarm(ALARM_SECONDS);
  map_no_access_page();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = reporter;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
  run_faulting_fiber();
}

TEST(one_shot_handler_before_ours_runs_once_then_default_death) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "valgrind") == 0)
    SKIP("under valgrind a write to a PROT_NONE page that faulted once "
         "completes when the handler returns, so the fault never recurs; "
         "the native, sanitizer and qemu runs check it");
  struct child_result r;
  run_child(one_shot_child, NULL, &r);
  CHECK_STR_EQ(r.err, "reporter\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

/* SIG_IGN, recorded with SA_SIGINFO set (the kernel goes by the handler's
 * value, whatever the flags): a SIGSEGV sent by raise() is ignored; a real
 * fault cannot be, and kills by the default action. */
static void *raise_then_fault(void *arg) {
  (void)arg;
  raise(SIGSEGV);
  say("still here\n");
  *(volatile char *)no_access_page = 1;
  say("the fault was ignored\n");
  return NULL;
}

static void ignored_child(void *arg) {
  (void)arg;
  alarm(ALARM_SECONDS);
  map_no_access_page();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, raise_then_fault, NULL, NULL, NULL));
  check_ours_is_installed_over(&sa);
  fib_run(rt);
}

TEST(ignored_before_ours_ignores_a_sent_sigsegv_not_a_fault) {
  struct child_result r;
  run_child(ignored_child, NULL, &r);
  CHECK_STR_EQ(r.err, "still here\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

/* ---- a handler installed after ours, forwarding to ours */

static struct sigaction ours; /* as the host saved it */
static int host_returns; /* after forwarding: return, or exit(9) */

static void host_forwards(int sig, siginfo_t *si, void *uc) {
  say("host\n");
  if (ours.sa_flags & SA_SIGINFO)
    ours.sa_sigaction(sig, si, uc);
  else if (ours.sa_handler != SIG_DFL && ours.sa_handler != SIG_IGN)
    ours.sa_handler(sig);
  if (host_returns)
    return;
  say("host: forwarded, and it returned\n");
  _exit(9);
}

/* A host that forwards from a handler without SA_SIGINFO: it has no
 * siginfo to pass on. */
static void host_forwards_plain(int sig) {
  say("host\n");
  ours.sa_sigaction(sig, NULL, NULL);
  say(before_calls == 1 ? "host: it returned, after the handler before\n"
                        : "host: it returned\n");
  _exit(9);
}

/* Install the host's handler after ours (which `fib_spawn` has just
 * installed), saving ours. */
static void install_host_after(int plain) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  if (plain)
    sa.sa_handler = host_forwards_plain;
  else
    sa.sa_sigaction = host_forwards;
  sa.sa_flags = SA_ONSTACK | (plain ? 0 : SA_SIGINFO);
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGSEGV, &sa, &ours), 0);
  CHECK(ours.sa_flags & SA_SIGINFO); /* ours, not the default */
}

enum after_case {
  OVERFLOW_HOST_RETURNS,
  OVERFLOW_HOST_EXITS,
  FAULT_HOST_EXITS,
  FAULT_TO_BEFORE,
  FAULT_PLAIN_HOST_TO_BEFORE
};

static void after_ours_child(void *arg) {
  enum after_case c = (enum after_case)(intptr_t)arg;
  alarm(ALARM_SECONDS);
  map_no_access_page();
  if (c == FAULT_TO_BEFORE || c == FAULT_PLAIN_HOST_TO_BEFORE)
    install_before(SA_SIGINFO);
  host_returns = c == OVERFLOW_HOST_RETURNS || c == FAULT_TO_BEFORE;
  fib_runtime *rt;
  fib_attr attr = {.name = "deep"};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  int overflow = c == OVERFLOW_HOST_RETURNS || c == OVERFLOW_HOST_EXITS;
  CHECK_OK(fib_spawn(rt, overflow ? overflow_fiber : fault_fiber, NULL,
                     &attr, NULL));
  install_host_after(c == FAULT_PLAIN_HOST_TO_BEFORE);
  CHECK_OK(fib_run(rt));
  fprintf(stderr, "calls %d addr %d\n", (int)before_calls,
          (int)before_addr_ok);
}

TEST(handler_after_ours_forwards_an_overflow_to_ours) {
  struct child_result r;
  run_child(after_ours_child, (void *)(intptr_t)OVERFLOW_HOST_RETURNS, &r);
  check_report_after(r.err, "host\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

/* The host does not return after forwarding (it would exit 9): we are not
 * to count on it, and die by SIGSEGV ourselves. */
TEST(handler_after_ours_that_would_not_return_still_dies_by_sigsegv) {
  struct child_result r;
  run_child(after_ours_child, (void *)(intptr_t)OVERFLOW_HOST_EXITS, &r);
  check_report_after(r.err, "host\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

TEST(handler_after_ours_forwards_a_fault_to_default_death) {
  struct child_result r;
  run_child(after_ours_child, (void *)(intptr_t)FAULT_HOST_EXITS, &r);
  CHECK_STR_EQ(r.err, "host\n");
  CHECK_EQ(r.signal, SIGSEGV);
}

TEST(handler_after_ours_forwards_a_fault_to_the_one_before) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "valgrind") == 0)
    SKIP("under valgrind 3.19 the fiber's registers come back wrong after "
         "a handler recovers a fault in it and returns (an invalid read at "
         "its next scheduler call, not seen natively, under ASan, TSan or "
         "qemu): the native, sanitizer and qemu runs check it");
  struct child_result r;
  run_child(after_ours_child, (void *)(intptr_t)FAULT_TO_BEFORE, &r);
  CHECK_STR_EQ(r.err, "host\nrecovered\ncalls 1 addr 1\n");
  CHECK(r.exited && r.exit_code == 0);
}

/* Forwarded with no siginfo at all: not taken for an overflow, handed on
 * to the handler before ours (which gets no siginfo either), no crash. */
TEST(forwarded_without_siginfo_reaches_the_handler_before) {
  struct child_result r;
  run_child(after_ours_child, (void *)(intptr_t)FAULT_PLAIN_HOST_TO_BEFORE,
            &r);
  /* The handler before ours ran (and fixed the page); then ours
   * returned to the host, which exits 9. */
  CHECK_STR_EQ(r.err, "host\nhost: it returned, after the handler before\n");
  CHECK(r.exited);
  CHECK_EQ(r.exit_code, 9);
}

TEST_MAIN(T(opt_out_installs_no_handler_and_no_signal_stack),
          T(opt_out_never_fails_for_want_of_a_signal_stack),
          T(opt_out_overflow_dies_by_sigsegv_without_report),
          T(opt_out_after_installation_is_refused_and_changes_nothing),
          T(mode_is_fixed_by_the_first_use),
          T(host_handler_asking_check_gets_an_overflow_reported),
          T(host_handler_asking_check_keeps_other_faults),
          T(check_returns_0_unless_the_fault_is_in_the_guard),
          T(handler_before_ours_gets_a_fault_with_its_siginfo_and_mask),
          T(handler_before_ours_with_nodefer_and_no_siginfo),
          T(handler_before_ours_does_not_get_an_overflow),
          T(one_shot_handler_before_ours_runs_once_then_default_death),
          T(ignored_before_ours_ignores_a_sent_sigsegv_not_a_fault),
          T(handler_after_ours_forwards_an_overflow_to_ours),
          T(handler_after_ours_that_would_not_return_still_dies_by_sigsegv),
          T(handler_after_ours_forwards_a_fault_to_default_death),
          T(handler_after_ours_forwards_a_fault_to_the_one_before),
          T(forwarded_without_siginfo_reaches_the_handler_before))
