/*
 * bench_fibers.c -- our side of the benchmark suite (impl "fibers").
 *
 *   switch      ns per one-way switch: a coroutine and its resumer trade
 *               control n times each way (fib_coro_resume / fib_coro_yield)
 *   switch_shared_fp  the same with FIB_SHARED_FP (no MXCSR / x87 CW)
 *   create      ns per fib_coro_create + first resume to completion +
 *               fib_coro_destroy (the stack comes from the per-thread pool)
 *   spawn_join  ns per fib_spawn + fib_join of a fiber that returns at once
 *   yield       ns per hop: two fibers fib_yield() to each other through the
 *               scheduler
 *   idle_rss    bytes of RSS per suspended fiber that touched 512 bytes of
 *               its stack, n fibers alive (64 KiB default guarded stacks)
 *   skynet      ms for the skynet tree with n leaves (10 children each);
 *               also prints skynet_1m_peak_rss (VmHWM, bytes)
 *
 * Usage: bench_fibers <bench> <n>. Prints one BENCH line (bench_common.h).
 */
#include "bench_common.h"
#include "fibers.h"

#include <stdint.h>

static void check(int err, const char *what) {
  if (err) {
    fprintf(stderr, "bench_fibers: %s: %s\n", what, fib_err_name(err));
    exit(1);
  }
}

/* ------------------------------------------------------------- switch */

static void *switch_body(void *arg, void *first) {
  (void)arg;
  (void)first;
  for (;;)
    (void)fib_coro_yield(NULL, NULL);
  return NULL;
}

/* Kept out of line: callgrind's --toggle-collect names it. */
__attribute__((noinline)) void bench_switch_loop(fib_coro *co, long n);
__attribute__((noinline)) void bench_switch_loop(fib_coro *co, long n) {
  for (long i = 0; i < n; i++)
    (void)fib_coro_resume(co, NULL, NULL);
}

/* switch_shared_fp: the same, on a coroutine created with FIB_SHARED_FP
 * (its switches neither save nor restore MXCSR and the x87 control word). */
static void bench_switch(const char *name, long n, unsigned flags) {
  fib_coro *co;
  fib_attr attr = {0};
  attr.flags = flags;
  check(fib_coro_create(&co, switch_body, NULL, &attr), "fib_coro_create");
  bench_switch_loop(co, n / 10 + 1); /* warm caches and predictors */
  double t0 = bench_now_ns();
  bench_switch_loop(co, n);
  double t1 = bench_now_ns();
  check(fib_coro_destroy(co), "fib_coro_destroy");
  bench_report(name, "fibers", (t1 - t0) / (2.0 * (double)n), "ns", n,
               flags & FIB_SHARED_FP
                   ? "FIB_SHARED_FP coroutine, resume+yield round trip / 2"
                   : "fib_coro_resume+fib_coro_yield round trip / 2");
}

/* ------------------------------------------------------------- create */

static void *create_body(void *arg, void *first) {
  (void)first;
  return arg;
}

__attribute__((noinline)) void bench_create_loop(long n);
__attribute__((noinline)) void bench_create_loop(long n) {
  for (long i = 0; i < n; i++) {
    fib_coro *co;
    check(fib_coro_create(&co, create_body, NULL, NULL), "fib_coro_create");
    check(fib_coro_resume(co, NULL, NULL), "fib_coro_resume");
    check(fib_coro_destroy(co), "fib_coro_destroy");
  }
}

static void bench_create(long n) {
  bench_create_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  bench_create_loop(n);
  double t1 = bench_now_ns();
  bench_report("create", "fibers", (t1 - t0) / (double)n, "ns", n,
               "64 KiB guarded stack from the pool");
}

/* --------------------------------------------------------- spawn_join */

static long g_n;
static double g_result;

static void *noop_fiber(void *arg) { return arg; }

__attribute__((noinline)) void bench_spawn_join_loop(long n);
__attribute__((noinline)) void bench_spawn_join_loop(long n) {
  for (long i = 0; i < n; i++) {
    fib_id id;
    check(fib_spawn(NULL, noop_fiber, NULL, NULL, &id), "fib_spawn");
    check(fib_join(id, NULL), "fib_join");
  }
}

static void *spawn_join_main(void *arg) {
  (void)arg;
  bench_spawn_join_loop(g_n / 10 + 1);
  double t0 = bench_now_ns();
  bench_spawn_join_loop(g_n);
  g_result = (bench_now_ns() - t0) / (double)g_n;
  return NULL;
}

static void run_one(fib_fn fn) {
  fib_runtime *rt;
  check(fib_runtime_create(&rt, NULL), "fib_runtime_create");
  check(fib_spawn(rt, fn, NULL, NULL, NULL), "fib_spawn");
  check(fib_run(rt), "fib_run");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
}

static void bench_spawn_join(long n) {
  g_n = n;
  run_one(spawn_join_main);
  bench_report("spawn_join", "fibers", g_result, "ns", n, NULL);
}

/* -------------------------------------------------------------- yield */

__attribute__((noinline)) void bench_yield_loop(long n);
__attribute__((noinline)) void bench_yield_loop(long n) {
  for (long i = 0; i < n; i++)
    check(fib_yield(), "fib_yield");
}

static void *yielder(void *arg) {
  bench_yield_loop((long)(intptr_t)arg);
  return NULL;
}

static double run_yield(long per_fiber) {
  fib_runtime *rt;
  check(fib_runtime_create(&rt, NULL), "fib_runtime_create");
  check(fib_spawn(rt, yielder, (void *)(intptr_t)per_fiber, NULL, NULL),
        "fib_spawn");
  check(fib_spawn(rt, yielder, (void *)(intptr_t)per_fiber, NULL, NULL),
        "fib_spawn");
  double t0 = bench_now_ns();
  check(fib_run(rt), "fib_run");
  double t1 = bench_now_ns();
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  return t1 - t0;
}

static void bench_yield(long n) {
  long per_fiber = n / 2 > 0 ? n / 2 : 1; /* n hops in all */
  (void)run_yield(per_fiber / 10 + 1);
  double t = run_yield(per_fiber);
  bench_report("yield", "fibers", t / (2.0 * (double)per_fiber), "ns",
               2 * per_fiber, NULL);
}

/* ----------------------------------------------------------- idle_rss */

/*
 * The measuring fiber (id 1) spawns n workers and yields once: every worker
 * runs, touches 512 bytes of its stack and blocks in fib_join on the one
 * spawned before it (the first joins the measurer). Then the measurer reads
 * RSS with all n suspended, and returns: the chain of joins unwinds.
 */
static long g_created;
static const char *g_bench_name;

static void *idle_worker(void *arg) {
  BENCH_TOUCH_STACK(512);
  (void)fib_join((fib_id)(uintptr_t)arg, NULL);
  return NULL;
}

static void *idle_measure(void *arg) {
  (void)arg;
  fib_id prev = fib_self();
  int spawn_err = 0;
  long before = bench_rss_bytes(), pte_before = bench_status_bytes("VmPTE");
  g_created = 0;
  for (long i = 0; i < g_n; i++) {
    fib_id id;
    int err = fib_spawn(NULL, idle_worker, (void *)(uintptr_t)prev, NULL, &id);
    if (err) {
      spawn_err = err;
      break;
    }
    prev = id;
    g_created++;
  }
  check(fib_yield(), "fib_yield"); /* every worker runs and parks */
  long after = bench_rss_bytes();
  long pte = bench_status_bytes("VmPTE") - pte_before;
  char note[160];
  snprintf(note, sizeof note,
           "%ld created%s%s; page tables (VmPTE, not in RSS) %.0f B/fiber",
           g_created, spawn_err ? ", spawn failed: " : "",
           spawn_err ? fib_strerror(spawn_err) : "",
           g_created ? (double)pte / (double)g_created : 0.0);
  bench_report(g_bench_name, "fibers",
               g_created ? (double)(after - before) / (double)g_created : 0,
               "bytes", g_created, note);
  /* Measured: leave without unwinding the n suspended fibers (unmapping
   * them one by one is not what this benchmark is about). */
  _exit(g_created < g_n ? 2 : 0);
}

static void bench_idle_rss(const char *name, long n) {
  g_n = n;
  g_bench_name = name;
  run_one(idle_measure);
  fprintf(stderr, "bench_fibers: idle_rss: the measurer did not exit\n");
  exit(1);
}

/* ------------------------------------------------------------- skynet */

/* arg packs the subtree's first leaf number and its level:
 * (num << 8) | level, covering 10^level leaves. */
static void *skynet(void *arg) {
  uintptr_t a = (uintptr_t)arg;
  uintptr_t num = a >> 8, level = a & 0xff;
  if (level == 0)
    return (void *)num;
  uintptr_t sub = 1;
  for (uintptr_t l = 1; l < level; l++)
    sub *= 10;
  fib_id ids[10];
  for (uintptr_t i = 0; i < 10; i++)
    check(fib_spawn(NULL, skynet,
                    (void *)(((num + i * sub) << 8) | (level - 1)), NULL,
                    &ids[i]),
          "fib_spawn");
  uintptr_t sum = 0;
  for (int i = 0; i < 10; i++) {
    void *r;
    check(fib_join(ids[i], &r), "fib_join");
    sum += (uintptr_t)r;
  }
  return (void *)sum;
}

static void *skynet_root(void *arg) {
  g_result = (double)(uintptr_t)skynet(arg);
  return NULL;
}

static void bench_skynet(long n) {
  uintptr_t level = 0;
  for (long s = 1; s < n; s *= 10)
    level++;
  long leaves = 1;
  for (uintptr_t l = 0; l < level; l++)
    leaves *= 10;
  fib_runtime *rt;
  double t0 = bench_now_ns();
  check(fib_runtime_create(&rt, NULL), "fib_runtime_create");
  check(fib_spawn(rt, skynet_root, (void *)level, NULL, NULL), "fib_spawn");
  check(fib_run(rt), "fib_run");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  double t1 = bench_now_ns();
  double expect = (double)leaves * (double)(leaves - 1) / 2;
  if (g_result != expect) {
    fprintf(stderr, "bench_fibers: skynet sum %.0f, expected %.0f\n",
            g_result, expect);
    exit(1);
  }
  bench_report("skynet_1m", "fibers", (t1 - t0) / 1e6, "ms", leaves, NULL);
  bench_report("skynet_1m_peak_rss", "fibers",
               (double)bench_status_bytes("VmHWM"), "bytes", leaves,
               "VmHWM of the whole process");
}

int main(int argc, char **argv) {
  const char *benches =
      "switch switch_shared_fp create spawn_join yield idle_rss_100k "
      "idle_rss_1m skynet_1m";
  if (argc != 3) {
    bench_usage(argv[0], benches);
    return 2;
  }
  const char *b = argv[1];
  long n = strtol(argv[2], NULL, 10);
  if (n <= 0) {
    bench_usage(argv[0], benches);
    return 2;
  }
  if (!strcmp(b, "switch"))
    bench_switch(b, n, 0);
  else if (!strcmp(b, "switch_shared_fp"))
    bench_switch(b, n, FIB_SHARED_FP);
  else if (!strcmp(b, "create"))
    bench_create(n);
  else if (!strcmp(b, "spawn_join"))
    bench_spawn_join(n);
  else if (!strcmp(b, "yield"))
    bench_yield(n);
  else if (!strcmp(b, "idle_rss_100k") || !strcmp(b, "idle_rss_1m"))
    bench_idle_rss(b, n);
  else if (!strcmp(b, "skynet_1m"))
    bench_skynet(n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
