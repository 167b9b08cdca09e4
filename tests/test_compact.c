/* SPDX-License-Identifier: MIT */
/* test_compact.c -- FIB_COMPACT: coroutines and fibers whose frames are
 * copied off a shared stack while they are suspended. Values on their
 * stacks survive suspension, nested calls and signals; compact and plain
 * ones mix; an overflow on the shared stack is caught and names its
 * owner; a wait whose records are on the stack is refused; an idle one
 * costs its frames, not a page. */
#include "harness.h"

#include <fibers.h>

#include "stack.h"

#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/time.h>

static const fib_attr compact = {.flags = FIB_COMPACT};

/* ---- coroutines */

/* A checksum over a local array, kept across yields: each resume hands a
 * value in, each yield hands the running sum out. */
__attribute__((noinline)) static uint64_t mix(volatile uint64_t *a, int n) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < n; i++)
    h = (h ^ a[i]) * 1099511628211ull;
  return h;
}

static void *keeper(void *arg, void *first) {
  volatile uint64_t a[64]; /* 512 bytes of frame, live across every yield */
  uintptr_t seed = (uintptr_t)arg + (uintptr_t)first;
  for (int i = 0; i < 64; i++)
    a[i] = seed * 31 + (uint64_t)i;
  uint64_t want = mix(a, 64);
  for (int round = 0; round < 50; round++) {
    void *in = NULL;
    CHECK_OK(fib_coro_yield((void *)(uintptr_t)round, &in));
    CHECK_EQ((uintptr_t)in, (uintptr_t)round + 1000);
    CHECK_EQ(mix(a, 64), want); /* every word back where it was */
    a[round % 64] += 1;
    want = mix(a, 64);
  }
  return (void *)(uintptr_t)want;
}

TEST(values_on_the_stack_survive_suspension) {
  enum { N = 8 };
  fib_coro *cos[N];
  for (int i = 0; i < N; i++) /* every one shares the one running stack */
    CHECK_OK(fib_coro_create(&cos[i], keeper, (void *)(uintptr_t)i, &compact));
  for (int i = 0; i < N; i++) {
    void *out = NULL;
    CHECK_OK(fib_coro_resume(cos[i], (void *)(uintptr_t)(7 * i), &out));
    CHECK_EQ((uintptr_t)out, 0);
  }
  for (int round = 0; round < 50; round++)
    for (int i = N - 1; i >= 0; i--) { /* interleaved, both orders */
      void *out = NULL;
      CHECK_OK(fib_coro_resume(cos[(i + round) % N],
                               (void *)(uintptr_t)(round + 1000), &out));
      if (round + 1 < 50)
        CHECK_EQ((uintptr_t)out, (uintptr_t)round + 1);
    }
  for (int i = 0; i < N; i++) {
    CHECK_EQ(fib_coro_status(cos[i]), FIB_CORO_DEAD);
    CHECK_OK(fib_coro_destroy(cos[i]));
  }
}

/* Deep frames, and pointers within them to each other (a linked list on
 * the stack), across a yield at the bottom. */
struct link {
  struct link *up;
  int depth;
};

__attribute__((noinline)) static int walk(struct link *l) {
  int sum = 0;
  for (; l; l = l->up)
    sum += l->depth;
  return sum;
}

__attribute__((noinline)) static int descend(struct link *up, int depth) {
  struct link here = {up, depth};
  if (depth == 40) {
    int before = walk(&here);
    CHECK_OK(fib_coro_yield(NULL, NULL));
    CHECK_EQ(walk(&here), before);
    return before;
  }
  return descend(&here, depth + 1) + 0 * depth;
}

static void *nested(void *arg, void *first) {
  (void)first;
  return (void *)(intptr_t)(descend(NULL, 0) + (int)(intptr_t)arg);
}

TEST(nested_calls_and_pointers_within_the_frames_survive) {
  fib_coro *a, *b;
  CHECK_OK(fib_coro_create(&a, nested, (void *)1, &compact));
  CHECK_OK(fib_coro_create(&b, nested, (void *)2, &compact));
  CHECK_OK(fib_coro_resume(a, NULL, NULL));
  CHECK_OK(fib_coro_resume(b, NULL, NULL)); /* b's frames over a's place */
  void *ra = NULL, *rb = NULL;
  CHECK_OK(fib_coro_resume(a, NULL, &ra));
  CHECK_OK(fib_coro_resume(b, NULL, &rb));
  CHECK_EQ((intptr_t)ra, 820 + 1); /* 0 + 1 + ... + 40 */
  CHECK_EQ((intptr_t)rb, 820 + 2);
  CHECK_OK(fib_coro_destroy(a));
  CHECK_OK(fib_coro_destroy(b));
}

/* Compact and plain coroutines resuming each other, in both directions. */
static void *inner(void *arg, void *first) {
  volatile int local = (int)(intptr_t)arg + (int)(intptr_t)first;
  void *in = NULL;
  CHECK_OK(fib_coro_yield((void *)(intptr_t)local, &in));
  return (void *)(intptr_t)(local + (int)(intptr_t)in);
}

static void *outer(void *arg, void *first) {
  (void)first;
  fib_attr *inner_attr = arg;
  volatile int mine = 5;
  fib_coro *co;
  void *out = NULL;
  CHECK_OK(fib_coro_create(&co, inner, (void *)10, inner_attr));
  CHECK_OK(fib_coro_resume(co, (void *)1, &out));
  CHECK_EQ((intptr_t)out, 11);
  CHECK_OK(fib_coro_yield((void *)(intptr_t)mine, NULL)); /* out and back */
  CHECK_OK(fib_coro_resume(co, (void *)100, &out));
  CHECK_EQ((intptr_t)out, 111);
  CHECK_OK(fib_coro_destroy(co));
  return (void *)(intptr_t)(mine + 1);
}

TEST(compact_and_plain_coroutines_mix) {
  fib_attr plain = {0};
  const fib_attr *kinds[2] = {&compact, &plain};
  for (int o = 0; o < 2; o++)
    for (int i = 0; i < 2; i++) {
      fib_coro *co, *other;
      void *out = NULL;
      CHECK_OK(fib_coro_create(&co, outer, (void *)kinds[i], kinds[o]));
      CHECK_OK(fib_coro_create(&other, keeper, (void *)3, &compact));
      CHECK_OK(fib_coro_resume(co, NULL, &out));
      CHECK_EQ((intptr_t)out, 5);
      CHECK_OK(fib_coro_resume(other, NULL, NULL)); /* the shared stack */
      CHECK_OK(fib_coro_resume(co, NULL, &out));
      CHECK_EQ((intptr_t)out, 6);
      CHECK_OK(fib_coro_destroy(co));
      CHECK_OK(fib_coro_destroy(other));
    }
}

/* ---- signals while compact code runs, and while it switches */

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) {
  (void)sig;
  volatile char scratch[256]; /* a handler frame on the shared stack */
  scratch[0] = 1;
  scratch[255] = scratch[0];
  ticks++;
}

TEST(signals_arriving_while_compact_coroutines_run) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
  struct itimerval it = {{0, 200}, {0, 200}}; /* every 200 us */
  CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
  enum { N = 4 };
  long rounds = 0;
  for (int pass = 0; pass < scaled(40) || ticks < 20; pass++) {
    fib_coro *cos[N];
    for (int i = 0; i < N; i++)
      CHECK_OK(fib_coro_create(&cos[i], keeper, (void *)(uintptr_t)pass,
                               &compact));
    for (int i = 0; i < N; i++)
      CHECK_OK(fib_coro_resume(cos[i], NULL, NULL));
    for (int round = 0; round < 50; round++, rounds++)
      for (int i = 0; i < N; i++)
        CHECK_OK(fib_coro_resume(cos[i], (void *)(uintptr_t)(round + 1000),
                                 NULL));
    for (int i = 0; i < N; i++)
      CHECK_OK(fib_coro_destroy(cos[i]));
    CHECK(pass < 100000);
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  CHECK_EQ(setitimer(ITIMER_REAL, &off, NULL), 0);
  printf("# %ld rounds, %d signals\n", rounds, (int)ticks);
  CHECK(ticks >= 20);
}

/* ---- fibers */

struct tally {
  int done;
  uint64_t sum;
};

static void *sleeper(void *arg) {
  struct tally *t = arg;
  volatile uint64_t a[32];
  for (int i = 0; i < 32; i++)
    a[i] = (uint64_t)fib_self() * 1000 + (uint64_t)i;
  uint64_t want = mix(a, 32);
  for (int i = 0; i < 3; i++) {
    CHECK_OK(fib_yield());
    CHECK_OK(fib_sleep_ns(1000));
    CHECK_EQ(mix(a, 32), want);
  }
  t->done++;
  t->sum += a[5];
  return (void *)(uintptr_t)want;
}

static void *joiner(void *arg) {
  struct tally *t = arg;
  fib_attr attr = {.flags = FIB_COMPACT};
  fib_id kids[8];
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_spawn(NULL, sleeper, t, i % 2 ? &attr : NULL, &kids[i]));
  uint64_t total = 0;
  for (int i = 0; i < 8; i++) {
    void *r = NULL;
    CHECK_OK(fib_join(kids[i], &r));
    total += (uintptr_t)r != 0;
  }
  return (void *)(uintptr_t)total;
}

TEST(a_runtime_mixing_compact_and_plain_fibers) {
  fib_runtime *rt;
  struct tally t = {0};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  fib_id ids[6];
  for (int i = 0; i < 6; i++)
    CHECK_OK(fib_spawn(rt, joiner, &t, i % 3 ? &compact : NULL, &ids[i]));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(t.done, 48);
  CHECK_OK(fib_runtime_destroy(rt));
}

/* Several workers: compact fibers stay on the worker (thread) that spawned
 * them, whose shared stack their frames belong to. */
static void *sleeper_checks_its_thread(void *arg) {
  struct tally *t = arg;
  pthread_t me = pthread_self();
  volatile uint64_t a[16];
  for (int i = 0; i < 16; i++)
    a[i] = (uint64_t)i * 7;
  uint64_t want = mix(a, 16);
  for (int i = 0; i < 5; i++) {
    CHECK_OK(fib_yield());
    CHECK_OK(fib_sleep_ns(1000));
    CHECK(pthread_equal(me, pthread_self()));
    CHECK_EQ(mix(a, 16), want);
  }
  __atomic_add_fetch(&t->done, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void *spawn_compact_here(void *arg) {
  for (int i = 0; i < 20; i++)
    CHECK_OK(fib_spawn(NULL, sleeper_checks_its_thread, arg, &compact, NULL));
  fib_attr elsewhere = {.flags = FIB_COMPACT, .worker = 2};
  CHECK_EQ(fib_spawn(NULL, sleeper_checks_its_thread, arg, &elsewhere, NULL),
           FIB_EINVAL);
  return NULL;
}

TEST(compact_fibers_stay_on_their_worker) {
  fib_runtime *rt;
  fib_runtime_opts opts = {.workers = 2};
  struct tally t = {0};
  CHECK_OK(fib_runtime_create(&rt, &opts));
  fib_attr plain = {.flags = FIB_DETACHED};
  for (int i = 0; i < 4; i++) /* spawners, which idle workers may take */
    CHECK_OK(fib_spawn(rt, spawn_compact_here, &t, i ? &plain : NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(t.done, 80);
  CHECK_OK(fib_runtime_destroy(rt));
}

/* A runtime destroyed with compact fibers suspended frees them. */
TEST(destroying_a_runtime_with_suspended_compact_fibers) {
  fib_runtime *rt;
  struct tally t = {0};
  CHECK_OK(fib_runtime_create(&rt, NULL));
  for (int i = 0; i < 10; i++)
    CHECK_OK(fib_spawn(rt, sleeper, &t, &compact, NULL));
  CHECK(fib_run_nowait(rt) >= 0); /* each runs to its first yield */
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(t.done, 0);
}

/* ---- what is refused */

static void *waits_on_a_sem(void *arg) {
  CHECK_OK(fib_sem_wait(arg)); /* its wait record is on its stack */
  return NULL;
}

static void compact_fiber_waits(void *arg) {
  (void)arg;
  fib_runtime *rt;
  fib_sem sem;
  CHECK_OK(fib_sem_init(&sem, 0));
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, waits_on_a_sem, &sem, &compact, NULL));
  (void)fib_run(rt);
}

/* body, run in a child, ends in the one-line fatal message of a compact
 * fiber that blocked in a wait whose records would be on its stack. */
static void check_compact_wait_is_fatal(void (*body)(void *)) {
  struct child_result r;
  run_child(body, NULL, &r);
  strip_emulator_report(&r);
  CHECK_EQ(r.signal, SIGABRT);
  CHECK(strstr(r.err, "fibers: fatal: a FIB_COMPACT fiber blocked in a wait "
                      "whose records are on its stack") != NULL);
}

TEST(a_compact_fiber_blocking_in_a_wait_queue_is_fatal) {
  check_compact_wait_is_fatal(compact_fiber_waits);
}

static void *waits_on_a_chan(void *arg) {
  int v;
  CHECK_OK(fib_chan_recv(arg, &v)); /* no deadline: the tail wait */
  return NULL;
}

static void compact_fiber_waits_on_a_chan(void *arg) {
  (void)arg;
  fib_runtime *rt;
  fib_chan ch;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, waits_on_a_chan, &ch, &compact, NULL));
  (void)fib_run(rt);
}

TEST(a_compact_fiber_blocking_on_a_channel_is_fatal) {
  check_compact_wait_is_fatal(compact_fiber_waits_on_a_chan);
}

static fib_coro *made_elsewhere;

static void *make_compact(void *arg) {
  (void)arg;
  CHECK_OK(fib_coro_create(&made_elsewhere, keeper, NULL, &compact));
  return NULL;
}

TEST(refused_combinations) {
  fib_coro *co;
  fib_attr none = {.flags = FIB_COMPACT, .guard = FIB_GUARD_NONE};
  CHECK_EQ(fib_coro_create(&co, keeper, NULL, &none), FIB_EINVAL);
  /* a fifth stack size on this thread */
  fib_coro *sizes[5];
  for (int i = 0; i < 4; i++) {
    fib_attr a = {.flags = FIB_COMPACT,
                  .stack_size = FIB_STACK_MIN + (size_t)i * 4096};
    CHECK_OK(fib_coro_create(&sizes[i], keeper, NULL, &a));
  }
  fib_attr fifth = {.flags = FIB_COMPACT, .stack_size = 2 * FIB_STACK_DEFAULT};
  CHECK_EQ(fib_coro_create(&sizes[4], keeper, NULL, &fifth), FIB_ENOMEM);
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_coro_destroy(sizes[i]));
  /* another thread's compact coroutine: its frames belong at that
   * thread's addresses */
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, make_compact, NULL), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(fib_coro_resume(made_elsewhere, NULL, NULL), FIB_EPERM);
  CHECK_OK(fib_coro_destroy(made_elsewhere));
}

/* ---- the hazard: a pointer into a suspended compact coroutine's stack */

static void *lends_a_local(void *arg, void *first) {
  (void)first;
  volatile uint64_t local = 0x1122334455667788ull;
  *(volatile uint64_t **)arg = &local;
  CHECK_OK(fib_coro_yield(NULL, NULL));
  return (void *)(uintptr_t)local;
}

static void read_through_a_lent_pointer(void *arg) {
  (void)arg;
  volatile uint64_t *p = NULL;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, lends_a_local, (void *)&p, &compact));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  printf("read %llx\n", (unsigned long long)*p); /* ASan: reported */
}

TEST(under_asan_a_pointer_into_a_suspended_compact_stack_is_reported) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (!tool || strncmp(tool, "asan", 4) != 0)
    SKIP("not an ASan build (its fill check is the next case)");
  struct child_result r;
  run_child(read_through_a_lent_pointer, NULL, &r);
  CHECK(r.signal != 0 || r.exit_code != 0);
  if (!strstr(r.err, "AddressSanitizer: use-after-poison"))
    check_failed(__FILE__, __LINE__, "no report:\n%s", r.err);
}

TEST(a_pointer_into_a_suspended_compact_stack_reads_the_debug_fill) {
#ifdef NDEBUG
  SKIP("built with NDEBUG: no fill of a vacated stack (the hazard remains)");
#else
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strncmp(tool, "asan", 4) == 0)
    SKIP("ASan build: the stretch is poisoned instead (the previous case)");
  volatile uint64_t *p = NULL;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, lends_a_local, (void *)&p, &compact));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK(p != NULL);
  CHECK_EQ(*p, 0xdbdbdbdbdbdbdbdbull); /* not the value: it is not there */
  void *out = NULL;
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((uintptr_t)out, 0x1122334455667788ull); /* back for its owner */
  CHECK_OK(fib_coro_destroy(co));
#endif
}

/* ---- their first frame and their records */

static void *reports_rounding(void *arg, void *first) {
  (void)arg;
  (void)first;
  return (void *)(intptr_t)fegetround();
}

/* Until it first runs, a compact coroutine's first frame may be one its
 * thread shares among those made with the same FP control state: one made
 * under another rounding mode still starts in its own creator's. */
TEST(compact_coroutines_start_in_their_creators_fp_control_state) {
  fib_coro *a, *b, *c;
  CHECK_OK(fib_coro_create(&a, reports_rounding, NULL, &compact));
  CHECK_EQ(fesetround(FE_UPWARD), 0);
  CHECK_OK(fib_coro_create(&b, reports_rounding, NULL, &compact));
  CHECK_EQ(fesetround(FE_TONEAREST), 0);
  CHECK_OK(fib_coro_create(&c, reports_rounding, NULL, &compact));
  void *out = NULL;
  CHECK_OK(fib_coro_resume(b, NULL, &out));
  CHECK_EQ((intptr_t)out, FE_UPWARD);
  CHECK_OK(fib_coro_resume(a, NULL, &out));
  CHECK_EQ((intptr_t)out, FE_TONEAREST);
  CHECK_OK(fib_coro_resume(c, NULL, &out));
  CHECK_EQ((intptr_t)out, FE_TONEAREST);
  CHECK_EQ(fegetround(), FE_TONEAREST);
  CHECK_OK(fib_coro_destroy(a));
  CHECK_OK(fib_coro_destroy(b));
  CHECK_OK(fib_coro_destroy(c));
}

static void *yield_once(void *arg, void *first) {
  (void)first;
  volatile char pad[256];
  pad[0] = (char)(intptr_t)arg;
  CHECK_OK(fib_coro_yield(NULL, NULL));
  return (void *)(intptr_t)pad[0];
}

static void *make_two_and_leave(void *arg) {
  fib_coro **co = arg;
  CHECK_OK(fib_coro_create(&co[0], yield_once, (void *)7, &compact));
  CHECK_OK(fib_coro_resume(co[0], NULL, NULL)); /* suspended, frames saved */
  CHECK_OK(fib_coro_create(&co[1], yield_once, (void *)8, &compact));
  return NULL; /* co[1] never ran */
}

/* The shared stack goes back to the pool when its thread exits; what its
 * compact coroutines point to as their stack stays valid until the last
 * of them is freed (they can never run again). */
TEST(compact_coroutines_outlive_their_thread_for_stack_and_destroy) {
  fib_coro *co[2];
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, make_two_and_leave, co), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  for (int i = 0; i < 2; i++) {
    fib_stack_info info;
    CHECK_OK(fib_coro_stack(co[i], &info));
    CHECK_EQ(info.size, (size_t)FIB_STACK_DEFAULT);
    CHECK(info.lo != NULL);
    CHECK_EQ(fib_coro_resume(co[i], NULL, NULL), FIB_EPERM);
  }
  CHECK_OK(fib_coro_destroy(co[1]));
  CHECK_OK(fib_coro_destroy(co[0]));
}

/* ---- overflow on the shared stack */

static volatile int stop_recursing;

static void *recurse(void *arg) {
  volatile char pad[512];
  pad[0] = (char)(intptr_t)arg;
  if (!stop_recursing)
    recurse((void *)(intptr_t)(pad[0] + 1));
  return (void *)(intptr_t)pad[0];
}

static void *idle_then_return(void *arg) {
  CHECK_OK(fib_yield());
  return arg;
}

static void compact_fiber_overflows(void *arg) {
  (void)arg;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  fib_attr quiet = {.flags = FIB_COMPACT, .name = "idle"};
  fib_attr deep = {.flags = FIB_COMPACT, .name = "deep-compact"};
  CHECK_OK(fib_spawn(rt, idle_then_return, NULL, &quiet, NULL)); /* id 1 */
  CHECK_OK(fib_spawn(rt, recurse, NULL, &deep, NULL));            /* id 2 */
  (void)fib_run(rt);
}

TEST(an_overflow_on_the_shared_stack_is_caught_and_named) {
  struct child_result r;
  run_child(compact_fiber_overflows, NULL, &r);
  strip_emulator_report(&r);
  CHECK_EQ(r.signal, SIGSEGV);
  char want[160];
  snprintf(want, sizeof want,
           "fibers: stack overflow in fiber 2 \"deep-compact\" (stack %zu "
           "bytes, guard ",
           (size_t)FIB_STACK_DEFAULT);
  if (!strstr(r.err, want))
    check_failed(__FILE__, __LINE__, "report\n  %s\nwanted\n  %s", r.err,
                 want);
}

/* ---- what an idle one costs */

static long idle_now;

static void *idle_member(void *arg) {
  (void)arg;
  volatile char buf[512]; /* as bench idle_rss: 512 bytes of frame */
  for (int i = 0; i < 512; i += 64)
    buf[i] = (char)i;
  idle_now++;
  CHECK_EQ(fib_sleep_ns(3600ull * 1000000000u), FIB_ECANCELED);
  return (void *)(intptr_t)buf[64];
}

struct census {
  long n, rss_before, rss_idle;
  fib_id *ids;
  const fib_attr *attr;
};

static void *spawn_and_measure(void *arg) {
  struct census *c = arg;
  c->rss_before = resident_kib();
  for (long i = 0; i < c->n; i++)
    CHECK_OK(fib_spawn(NULL, idle_member, NULL, c->attr, &c->ids[i]));
  while (idle_now < c->n) /* each one runs, touches its frame, sleeps */
    CHECK_OK(fib_yield());
  c->rss_idle = resident_kib();
  for (long i = 0; i < c->n; i++)
    CHECK_OK(fib_cancel(NULL, c->ids[i]));
  for (long i = 0; i < c->n; i++) {
    void *r = NULL;
    CHECK_OK(fib_join(c->ids[i], &r));
    CHECK_EQ((intptr_t)r, 64);
  }
  return NULL;
}

static double idle_bytes(const fib_attr *attr, long n) {
  struct census c = {.n = n, .attr = attr};
  idle_now = 0;
  c.ids = calloc((size_t)n, sizeof *c.ids);
  CHECK(c.ids != NULL);
  for (long i = 0; i < n; i++) /* resident before the count starts */
    c.ids[i] = 0;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, spawn_and_measure, &c, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  free(c.ids);
  return (double)(c.rss_idle - c.rss_before) * 1024 / (double)n;
}

TEST(an_idle_compact_fiber_costs_its_frames_not_a_page) {
  long n = scaled(20000);
  /* compact first: the plain run's records, freed, would be reused */
  double small = idle_bytes(&compact, n), plain = idle_bytes(NULL, n);
  printf("# %ld idle fibers, 512 bytes of frame each: %.0f bytes each "
         "(guarded stacks), %.0f bytes each (FIB_COMPACT)\n",
         n, plain, small);
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strcmp(tool, "none") != 0) {
    printf("# %s: resident memory is the tool's too: not checked\n", tool);
    return;
  }
  CHECK(plain > 4096);
  /* frames ~770 B at -O2 (more at -O0), records ~520 B: well under half */
  CHECK(small < plain / 2);
}

TEST_MAIN(T(values_on_the_stack_survive_suspension),
          T(nested_calls_and_pointers_within_the_frames_survive),
          T(compact_and_plain_coroutines_mix),
          T(signals_arriving_while_compact_coroutines_run),
          T(a_runtime_mixing_compact_and_plain_fibers),
          T(compact_fibers_stay_on_their_worker),
          T(destroying_a_runtime_with_suspended_compact_fibers),
          T(a_compact_fiber_blocking_in_a_wait_queue_is_fatal),
          T(a_compact_fiber_blocking_on_a_channel_is_fatal),
          T(refused_combinations),
          T(under_asan_a_pointer_into_a_suspended_compact_stack_is_reported),
          T(a_pointer_into_a_suspended_compact_stack_reads_the_debug_fill),
          T(compact_coroutines_start_in_their_creators_fp_control_state),
          T(compact_coroutines_outlive_their_thread_for_stack_and_destroy),
          T(an_overflow_on_the_shared_stack_is_caught_and_named),
          T(an_idle_compact_fiber_costs_its_frames_not_a_page))
