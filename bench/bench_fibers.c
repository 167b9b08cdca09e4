/* SPDX-License-Identifier: MIT */
/*
 * bench_fibers.c -- our side of the benchmark suite (impl "fibers").
 *
 *   switch      ns per one-way switch: a coroutine and its resumer trade
 *               control n times each way (fib_coro_resume / fib_coro_yield)
 *   switch_shared_fp  the same with FIB_SHARED_FP (no MXCSR / x87 CW)
 *   switch_fp_paired  shared-FP / full switch time, the two timed in
 *               alternating chunks in one process (a sanity check: < 1)
 *   switch_fp_flags  the full switch when the resumer's MXCSR status
 *               flags differ from the coroutine's (after one inexact
 *               FP operation in the resumer)
 *   create      ns per fib_coro_create + first resume to completion +
 *               fib_coro_destroy (the stack comes from the per-thread pool)
 *   create_mixed  the same, alternating 64 KiB and 128 KiB stacks: a
 *               program with two stack sizes must still be served by the
 *               pool (compare with create, measured in the same run)
 *   spawn_join  ns per fib_spawn + fib_join of a fiber that returns at once
 *   yield       ns per hop: two fibers fib_yield() to each other through the
 *               scheduler
 *   call_rtt    ns per fib_call from a plain thread into a runtime that a
 *               thread of its own runs (asleep on its futex word between
 *               calls)
 *   call_rtt_io the same with a fiber of the runtime in a socket read, so
 *               it sleeps in its I/O poller between calls: each call wakes
 *               it through the poller's wake-up eventfd
 *   idle_rss    bytes of RSS per suspended fiber that touched 512 bytes of
 *               its stack, n fibers alive (64 KiB default guarded stacks)
 *   idle_rss_compact_1m  the same with FIB_COMPACT fibers: their frames
 *               saved on the heap while they wait in fib_join
 *   skynet_1m   ms for the skynet tree with n leaves (10 children each,
 *               each joined): also prints skynet_1m_peak_rss (VmHWM, bytes)
 *   skynet_1m_2w  the same on a runtime with two workers
 *               (fib_runtime_opts.workers)
 *   skynet_1m_2w_nowait  skynet_1m_2w run by a host loop of
 *               fib_run_nowait calls (worker 0 on the calling thread
 *               during each call, worker 1 on its own thread throughout;
 *               not in make bench: no peer has the shape)
 *   skynet_1m_chan  the canonical skynet: children detached, sums sent
 *               through the parent's unbuffered channel (most of the tree
 *               alive at once); also prints skynet_1m_chan_peak_rss
 *   spawn_alive_1m  ms to spawn n fibers that all wait on one wait group,
 *               release them and wait for all to finish; also prints
 *               spawn_alive_1m_peak_rss and spawn_alive_1m_idle_rss (RSS
 *               per fiber while all n wait)
 *   chan_unbuffered  ns per message: two fibers ping-pong a long through
 *               two unbuffered channels (n messages in all)
 *   chan_buffered    ns per message: a producer streams n longs through a
 *               64-slot channel to a consumer
 *   mutex_handoff    ns per lock hand-off: two fibers loop
 *               lock / fib_yield / unlock on one fib_mutex (n locks in all)
 *   select4     ns per (send + select): one fiber sends on one of 4
 *               1-slot channels in turn, then selects over receives on all
 *               4 (exactly one ready)
 *
 * Usage: bench_fibers <bench> <n>. Prints one BENCH line (bench_common.h).
 */
#include "bench_common.h"
#include "fibers.h"
#include "fibers/io.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <stdatomic.h>
#include <stdint.h>

static void check(int err, const char *what) {
  if (err) {
    fprintf(stderr, "bench_fibers: %s: %s\n", what, fib_err_name(err));
    exit(1);
  }
}

/* ------------------------------------------------------------- switch */

/*
 * Values travel both ways, as in a program that uses them (and as
 * Boost.Context's jump_fcontext always hands over its transfer_t): the
 * body yields what it was resumed with, the loop resumes with what it got.
 * With NULL for `out` and `in` (as this benchmark once had),
 * fib_coro_resume and fib_coro_yield each skip a store with a forward
 * taken branch; the shared-FP switch is front-end bound (~110
 * instructions in ~20 cycles per round trip), and those two branches made
 * it ~0.4-1 ns per switch slower than the same switch with values, on the
 * Xeon of docs/performance.md, measured interleaved in one process. The
 * full switch hides them behind ldmxcsr / fldcw.
 */
static void *switch_body(void *arg, void *first) {
  (void)arg;
  void *in = first;
  for (;;)
    (void)fib_coro_yield(in, &in);
  return NULL;
}

/* Kept out of line: callgrind's --toggle-collect names it. */
__attribute__((noinline)) void bench_switch_loop(fib_coro *co, long n);
__attribute__((noinline)) void bench_switch_loop(fib_coro *co, long n) {
  void *v = NULL;
  for (long i = 0; i < n; i++)
    (void)fib_coro_resume(co, v, &v);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/*
 * A sanity check (bench/run.py reads it): the shared-FP
 * switch timed against the full one in the same process, in alternating
 * chunks, so that both sides of each pair see the same machine within a
 * millisecond. Two rows measured minutes apart drift with the machine's
 * load by more than the difference between them (we saw the same loop go
 * from 3.7 to 5.3 ns within minutes on the shared machine); a per-pair
 * ratio does not. n round trips per side in all; reports the median of
 * PAIRS ratios shared / full. A program of its own (not a part of
 * switch_shared_fp) so that callgrind's per-switch counts stay exact.
 */
static void bench_switch_fp_paired(long n) {
  enum { PAIRS = 21 };
  long chunk = n / PAIRS > 1000 ? n / PAIRS : 1000;
  fib_coro *shared, *full;
  fib_attr attr = {0};
  attr.flags = FIB_SHARED_FP;
  check(fib_coro_create(&shared, switch_body, NULL, &attr), "fib_coro_create");
  check(fib_coro_create(&full, switch_body, NULL, NULL), "fib_coro_create");
  bench_switch_loop(shared, chunk); /* warm both */
  bench_switch_loop(full, chunk);
  /* Times are kept and divided only at the end: an inexact division sets
   * MXCSR's precision flag in this (the resumer's) context, and while its
   * flags differ from the full coroutine's saved MXCSR every full switch
   * reloads a changed MXCSR, ~10x slower on that Xeon (docs/performance.md,
   * "MXCSR status flags"). bench_now_ns's arithmetic is exact. */
  double ts[PAIRS], tf[PAIRS], ratio[PAIRS];
  for (int i = 0; i < PAIRS; i++) {
    /* The order alternates too, so neither side always goes first. */
    fib_coro *first = i & 1 ? full : shared, *second = i & 1 ? shared : full;
    double t0 = bench_now_ns();
    bench_switch_loop(first, chunk);
    double t1 = bench_now_ns();
    bench_switch_loop(second, chunk);
    double t2 = bench_now_ns();
    ts[i] = i & 1 ? t2 - t1 : t1 - t0;
    tf[i] = i & 1 ? t1 - t0 : t2 - t1;
  }
  for (int i = 0; i < PAIRS; i++)
    ratio[i] = ts[i] / tf[i];
  check(fib_coro_destroy(full), "fib_coro_destroy");
  check(fib_coro_destroy(shared), "fib_coro_destroy");
  qsort(ratio, PAIRS, sizeof ratio[0], cmp_double);
  char note[160];
  snprintf(note, sizeof note,
           "FIB_SHARED_FP / full switch: median of %d pairs of %ld round "
           "trips each, alternating, in one process (min %.3f, max %.3f)",
           PAIRS, chunk, ratio[0], ratio[PAIRS - 1]);
  bench_report("switch_fp_paired", "fibers", ratio[PAIRS / 2], "ratio",
               PAIRS * chunk, note);
}

/* An inexact division: sets the sticky precision flag (PE) in MXCSR, as
 * nearly any floating-point arithmetic does sooner or later. */
static void raise_inexact(void) {
  volatile double x = 1.0, y = 3.0;
  x = x / y;
  (void)x;
}

/* switch_shared_fp: the same, on a coroutine created with FIB_SHARED_FP
 * (its switches neither save nor restore MXCSR and the x87 control word).
 * switch_fp_flags: the full switch once the resumer has done one inexact
 * FP operation and the coroutine none: MXCSR's status flags then differ
 * between the two contexts, so every switch loads a changed MXCSR (the
 * switch saves and restores the whole register, status flags too, as
 * Boost.Context's does). */
static void bench_switch(const char *name, long n, unsigned flags) {
  fib_coro *co;
  fib_attr attr = {0};
  attr.flags = flags;
  check(fib_coro_create(&co, switch_body, NULL, &attr), "fib_coro_create");
  int dirty = !strcmp(name, "switch_fp_flags");
  if (dirty)
    raise_inexact(); /* after the create: the coroutine keeps clean flags */
  bench_switch_loop(co, n / 10 + 1); /* warm caches and predictors */
  double t0 = bench_now_ns();
  bench_switch_loop(co, n);
  double t1 = bench_now_ns();
  check(fib_coro_destroy(co), "fib_coro_destroy");
  bench_report(name, "fibers", (t1 - t0) / (2.0 * (double)n), "ns", n,
               flags & FIB_SHARED_FP
                   ? "FIB_SHARED_FP coroutine, resume+yield round trip / 2"
               : dirty ? "as switch, the resumer's MXCSR precision flag set"
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

/* Two sizes in turn, each create right after the other size's destroy:
 * the pool's head is always the wrong size, the worst case for a pool
 * that looks at one list. */
__attribute__((noinline)) void bench_create_mixed_loop(long n);
__attribute__((noinline)) void bench_create_mixed_loop(long n) {
  static const fib_attr sizes[2] = {{.stack_size = 64 * 1024},
                                    {.stack_size = 128 * 1024}};
  for (long i = 0; i < n; i++) {
    fib_coro *co;
    check(fib_coro_create(&co, create_body, NULL, &sizes[i & 1]),
          "fib_coro_create");
    check(fib_coro_resume(co, NULL, NULL), "fib_coro_resume");
    check(fib_coro_destroy(co), "fib_coro_destroy");
  }
}

static void bench_create_mixed(long n) {
  bench_create_mixed_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  bench_create_mixed_loop(n);
  double t1 = bench_now_ns();
  bench_report("create_mixed", "fibers", (t1 - t0) / (double)n, "ns", n,
               "64 KiB and 128 KiB guarded stacks in turn");
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

/* Two fibers yielding to each other, on a runtime of `workers` workers:
 * with two, both are pinned to worker 0, and worker 1 either sits idle or
 * (`busy`) runs two fibers of its own that yield to each other until the
 * measured pair is done: the hop's cost on a worker of several, with the
 * other worker's scheduling going on beside it. */
static atomic_int yield_pair_left; /* measured yielders still running */

static void *yielder(void *arg) {
  bench_yield_loop((long)(intptr_t)arg);
  atomic_fetch_sub_explicit(&yield_pair_left, 1, memory_order_relaxed);
  return NULL;
}

static void *busy_yielder(void *arg) {
  (void)arg;
  while (atomic_load_explicit(&yield_pair_left, memory_order_relaxed) > 0)
    check(fib_yield(), "fib_yield");
  return NULL;
}

static double run_yield(long per_fiber, unsigned workers, int busy) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = workers;
  fib_attr pin = {0}, other = {0};
  pin.flags = FIB_PINNED;
  other.worker = 2; /* worker 1, plus one */
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  atomic_store(&yield_pair_left, 2);
  for (int i = 0; i < 2; i++)
    check(fib_spawn(rt, yielder, (void *)(intptr_t)per_fiber, &pin, NULL),
          "fib_spawn");
  for (int i = 0; busy && i < 2; i++)
    check(fib_spawn(rt, busy_yielder, NULL, &other, NULL), "fib_spawn");
  double t0 = bench_now_ns();
  check(fib_run(rt), "fib_run");
  double t1 = bench_now_ns();
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  return t1 - t0;
}

static void bench_yield_on(long n, unsigned workers, int busy,
                           const char *name) {
  long per_fiber = n / 2 > 0 ? n / 2 : 1; /* n hops in all */
  (void)run_yield(per_fiber / 10 + 1, workers, busy);
  double t = run_yield(per_fiber, workers, busy);
  bench_report(name, "fibers", t / (2.0 * (double)per_fiber), "ns",
               2 * per_fiber,
               workers == 1 ? NULL
               : busy       ? "both on worker 0 of 2, worker 1 busy yielding"
                            : "both on worker 0 of 2, worker 1 idle");
}

static void bench_yield(long n) { bench_yield_on(n, 1, 0, "yield"); }

/* ----------------------------------------------------------- call_rtt */

/* fib_call from a plain thread into a runtime run by another thread: the
 * round trip (post, wake, spawn, run, reply, wake). */
static void *call_nothing(void *arg) { return arg; }

static void *keep_alive(void *arg) {
  check(fib_sem_wait(arg), "fib_sem_wait");
  return NULL;
}

static void *stop_it(void *arg) {
  check(fib_sem_post(arg), "fib_sem_post");
  return NULL;
}

static void *run_runtime(void *arg) {
  check(fib_run(arg), "fib_run");
  return NULL;
}

/* A fiber that keeps its runtime in an I/O wait: it reads a socket until
 * the bench writes to it. */
static void *read_one(void *arg) {
  char b;
  if (fib_read(*(int *)arg, &b, 1) != 1) {
    fprintf(stderr, "bench_fibers: fib_read failed\n");
    exit(1);
  }
  return NULL;
}

/* call_rtt; with `io`, the runtime also has a fiber in a socket read, so it
 * sleeps in its poller between calls and each call wakes it there (the
 * wake-up eventfd: docs/multicore.md), not on its futex word. */
static void bench_call_rtt_on(long n, int io, const char *name) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.flags = FIB_ACCEPT_POSTS;
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  fib_sem stop;
  check(fib_sem_init(&stop, 0), "fib_sem_init");
  check(fib_spawn(rt, keep_alive, &stop, NULL, NULL), "fib_spawn");
  int sv[2] = {-1, -1};
  if (io) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      fprintf(stderr, "bench_fibers: socketpair failed\n");
      exit(1);
    }
    check(fib_spawn(rt, read_one, &sv[0], NULL, NULL), "fib_spawn");
  }
  pthread_t t;
  if (pthread_create(&t, NULL, run_runtime, rt) != 0) {
    fprintf(stderr, "bench_fibers: pthread_create failed\n");
    exit(1);
  }
  for (long i = 0; i < n / 10 + 1; i++)
    check(fib_call(rt, call_nothing, NULL, NULL), "fib_call");
  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    check(fib_call(rt, call_nothing, NULL, NULL), "fib_call");
  double t1 = bench_now_ns();
  check(fib_call(rt, stop_it, &stop, NULL), "fib_call");
  if (io && write(sv[1], "x", 1) != 1) {
    fprintf(stderr, "bench_fibers: write failed\n");
    exit(1);
  }
  pthread_join(t, NULL);
  check(fib_sem_destroy(&stop), "fib_sem_destroy");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  if (io) {
    close(sv[0]);
    close(sv[1]);
  }
  bench_report(name, "fibers", (t1 - t0) / (double)n, "ns", n,
               io ? "fib_call from a plain thread, runtime on another thread "
                    "asleep in its I/O poller"
                  : "fib_call from a plain thread, runtime on another thread");
}

static void bench_call_rtt(long n) { bench_call_rtt_on(n, 0, "call_rtt"); }

/* ----------------------------------------------------------- idle_rss */

/*
 * The measuring fiber (id 1) spawns n workers and yields until every
 * worker has run, touched 512 bytes of its stack and blocked in fib_join
 * on the one spawned before it (the first joins the measurer). Then the
 * measurer reads RSS with all n suspended, and leaves.
 */
static long g_created;
static const char *g_bench_name;
static const fib_attr *g_idle_attr; /* NULL: default guarded stacks */

static long g_parked; /* workers that have run up to their join */

static void *idle_worker(void *arg) {
  BENCH_TOUCH_STACK(512);
  g_parked++;
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
    int err =
        fib_spawn(NULL, idle_worker, (void *)(uintptr_t)prev, g_idle_attr, &id);
    if (err) {
      spawn_err = err;
      break;
    }
    prev = id;
    g_created++;
  }
  /* Until every worker has run and parked: the spawned ones run first,
   * but the queue's front budget lets the measurer in every 64 turns. */
  while (g_parked < g_created)
    check(fib_yield(), "fib_yield");
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
  static const fib_attr compact = {.flags = FIB_COMPACT};
  g_n = n;
  g_bench_name = name;
  g_idle_attr = strstr(name, "compact") ? &compact : NULL;
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

/* skynet_1m on `workers` workers (fib_runtime_opts.workers), by fib_run
 * or (`nowait`) a loop of fib_run_nowait calls: reported as `name`. */
static void bench_skynet_on(long n, unsigned workers, int nowait,
                            const char *name) {
  uintptr_t level = 0;
  for (long s = 1; s < n; s *= 10)
    level++;
  long leaves = 1;
  for (uintptr_t l = 0; l < level; l++)
    leaves *= 10;
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = workers;
  double t0 = bench_now_ns();
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  check(fib_spawn(rt, skynet_root, (void *)level, NULL, NULL), "fib_spawn");
  long calls = 0;
  if (nowait) {
    int left;
    while ((left = fib_run_nowait(rt)) > 0)
      calls++;
    check(left, "fib_run_nowait");
  } else {
    check(fib_run(rt), "fib_run");
  }
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  double t1 = bench_now_ns();
  double expect = (double)leaves * (double)(leaves - 1) / 2;
  if (g_result != expect) {
    fprintf(stderr, "bench_fibers: skynet sum %.0f, expected %.0f\n",
            g_result, expect);
    exit(1);
  }
  char note[96];
  snprintf(note, sizeof note, "%u workers, %ld fib_run_nowait calls",
           workers, calls);
  bench_report(name, "fibers", (t1 - t0) / 1e6, "ms", leaves,
               nowait ? note : workers > 1 ? "2 workers" : NULL);
  if (workers <= 1)
    bench_report("skynet_1m_peak_rss", "fibers",
                 (double)bench_status_bytes("VmHWM"), "bytes", leaves,
                 "VmHWM of the whole process");
}

static void bench_skynet(long n) { bench_skynet_on(n, 1, 0, "skynet_1m"); }

/* ------------------------------------------------------ skynet_1m_chan */

/*
 * The canonical skynet (github.com/atemerev/skynet, whose Go, Boost.Fiber
 * and libdill programs all have this shape): every node makes an
 * unbuffered channel, spawns its 10 children detached, receives their 10
 * sums from that channel in whatever order they come, and sends its own sum
 * through its parent's channel. A child stays alive until its parent
 * receives from it, so most of the tree is alive at once (skynet_1m above
 * joins each child instead, and work-first keeps only ~60 alive).
 */
struct sky_node {
  fib_chan *parent; /* where this node's sum goes */
  uint64_t num;     /* its first leaf */
  unsigned level;   /* it covers 10^level leaves */
};

static const fib_attr sky_detached = {.flags = FIB_DETACHED};

static void *skynet_chan(void *arg) {
  /* Copied out at once: arg points into the parent's frame. */
  struct sky_node me = *(const struct sky_node *)arg;
  uint64_t sum = me.num;
  if (me.level > 0) {
    fib_chan rc;
    struct sky_node kids[10];
    uint64_t sub = 1;
    for (unsigned l = 1; l < me.level; l++)
      sub *= 10;
    check(fib_chan_init(&rc, sizeof(uint64_t), 0), "fib_chan_init");
    for (unsigned i = 0; i < 10; i++) {
      kids[i] = (struct sky_node){&rc, me.num + i * sub, me.level - 1};
      check(fib_spawn(NULL, skynet_chan, &kids[i], &sky_detached, NULL),
            "fib_spawn");
    }
    sum = 0;
    for (int i = 0; i < 10; i++) {
      uint64_t v;
      check(fib_chan_recv(&rc, &v), "fib_chan_recv");
      sum += v;
    }
    check(fib_chan_destroy(&rc), "fib_chan_destroy");
  }
  check(fib_chan_send(me.parent, &sum), "fib_chan_send");
  return NULL;
}

static unsigned g_sky_level;

static void *skynet_chan_root(void *arg) {
  (void)arg;
  fib_chan c;
  struct sky_node root = {&c, 0, g_sky_level};
  uint64_t sum;
  check(fib_chan_init(&c, sizeof(uint64_t), 0), "fib_chan_init");
  check(fib_spawn(NULL, skynet_chan, &root, &sky_detached, NULL), "fib_spawn");
  check(fib_chan_recv(&c, &sum), "fib_chan_recv");
  check(fib_chan_destroy(&c), "fib_chan_destroy");
  g_result = (double)sum;
  return NULL;
}

static void bench_skynet_chan(long n) {
  unsigned level = 0;
  long leaves = 1;
  while (leaves < n) {
    leaves *= 10;
    level++;
  }
  g_sky_level = level;
  double t0 = bench_now_ns();
  run_one(skynet_chan_root);
  double t1 = bench_now_ns();
  double expect = (double)leaves * (double)(leaves - 1) / 2;
  if (g_result != expect) {
    fprintf(stderr, "bench_fibers: skynet_1m_chan sum %.0f, expected %.0f\n",
            g_result, expect);
    exit(1);
  }
  bench_report("skynet_1m_chan", "fibers", (t1 - t0) / 1e6, "ms", leaves,
               "unbuffered channel per node, children detached");
  bench_report("skynet_1m_chan_peak_rss", "fibers",
               (double)bench_status_bytes("VmHWM"), "bytes", leaves,
               "VmHWM of the whole process");
}

/* ----------------------------------------------------- spawn_alive_1m */

/*
 * n fibers alive at once, all blocked on one shared wait: the measuring
 * fiber spawns n workers; each says it is there (ready) and waits on the
 * gate, a wait group held at 1. When all n are there, RSS is read (idle
 * bytes per fiber: default guarded 64 KiB stacks, nothing touched beyond
 * what the fiber's own frames need), the gate opens (one fib_wg_done
 * wakes all n) and the measurer waits for all to finish (done). Timed
 * from the first spawn to the last finish, runtime creation included.
 */
static fib_wg g_ready, g_gate, g_done;
static double g_idle_per_fiber;

static void *alive_worker(void *arg) {
  (void)arg;
  check(fib_wg_done(&g_ready), "fib_wg_done");
  check(fib_wg_wait(&g_gate), "fib_wg_wait");
  check(fib_wg_done(&g_done), "fib_wg_done");
  return NULL;
}

static void *alive_measure(void *arg) {
  (void)arg;
  check(fib_wg_add(&g_ready, g_n), "fib_wg_add");
  check(fib_wg_add(&g_done, g_n), "fib_wg_add");
  check(fib_wg_add(&g_gate, 1), "fib_wg_add");
  long before = bench_rss_bytes();
  for (long i = 0; i < g_n; i++)
    check(fib_spawn(NULL, alive_worker, NULL, &sky_detached, NULL),
          "fib_spawn");
  check(fib_wg_wait(&g_ready), "fib_wg_wait"); /* all n are at the gate */
  long after = bench_rss_bytes();
  g_idle_per_fiber = (double)(after - before) / (double)g_n;
  check(fib_wg_done(&g_gate), "fib_wg_done"); /* open it: all n wake */
  check(fib_wg_wait(&g_done), "fib_wg_wait");
  return NULL;
}

static void bench_spawn_alive(long n) {
  g_n = n;
  check(fib_wg_init(&g_ready), "fib_wg_init");
  check(fib_wg_init(&g_gate), "fib_wg_init");
  check(fib_wg_init(&g_done), "fib_wg_init");
  double t0 = bench_now_ns();
  run_one(alive_measure);
  double t1 = bench_now_ns();
  check(fib_wg_destroy(&g_ready), "fib_wg_destroy");
  check(fib_wg_destroy(&g_gate), "fib_wg_destroy");
  check(fib_wg_destroy(&g_done), "fib_wg_destroy");
  bench_report("spawn_alive_1m", "fibers", (t1 - t0) / 1e6, "ms", n,
               "spawn n, all wait on one fib_wg, release, all finish");
  bench_report("spawn_alive_1m_peak_rss", "fibers",
               (double)bench_status_bytes("VmHWM"), "bytes", n,
               "VmHWM of the whole process");
  bench_report("spawn_alive_1m_idle_rss", "fibers", g_idle_per_fiber, "bytes",
               n, "RSS per fiber with all n waiting at the gate (64 KiB "
               "guarded stacks, default mode)");
}

/* ----------------------------------------------- channels and mutex */

static fib_chan g_ch[4];
static fib_mutex g_mutex;

static void *ping(void *arg) {
  long rounds = (long)(intptr_t)arg, v = 0;
  for (long i = 0; i < rounds; i++) {
    check(fib_chan_send(&g_ch[0], &v), "fib_chan_send");
    check(fib_chan_recv(&g_ch[1], &v), "fib_chan_recv");
  }
  return NULL;
}

static void *pong(void *arg) {
  long rounds = (long)(intptr_t)arg, v;
  for (long i = 0; i < rounds; i++) {
    check(fib_chan_recv(&g_ch[0], &v), "fib_chan_recv");
    v++;
    check(fib_chan_send(&g_ch[1], &v), "fib_chan_send");
  }
  return NULL;
}

static void *stream_out(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++)
    check(fib_chan_send(&g_ch[0], &i), "fib_chan_send");
  return NULL;
}

static void *stream_in(void *arg) {
  long n = (long)(intptr_t)arg, v;
  for (long i = 0; i < n; i++)
    check(fib_chan_recv(&g_ch[0], &v), "fib_chan_recv");
  return NULL;
}

static void *contend(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++) {
    check(fib_mutex_lock(&g_mutex), "fib_mutex_lock");
    check(fib_yield(), "fib_yield");
    check(fib_mutex_unlock(&g_mutex), "fib_mutex_unlock");
  }
  return NULL;
}

static void *select_loop(void *arg) {
  long n = (long)(intptr_t)arg, v;
  fib_select_case cases[4];
  for (int i = 0; i < 4; i++)
    cases[i] = (fib_select_case){FIB_SELECT_RECV, &g_ch[i], &v, 0};
  for (long i = 0; i < n; i++) {
    check(fib_chan_send(&g_ch[i & 3], &i), "fib_chan_send");
    if (fib_select(cases, 4) != (int)(i & 3))
      check(FIB_EINVAL, "fib_select chose a case that was not ready");
  }
  return NULL;
}

/* Two fibers (or one, if b is NULL) with `per` as their argument; returns
 * the wall time of fib_run. */
static double run_pair(fib_fn a, fib_fn b, long per) {
  fib_runtime *rt;
  check(fib_runtime_create(&rt, NULL), "fib_runtime_create");
  check(fib_spawn(rt, a, (void *)(intptr_t)per, NULL, NULL), "fib_spawn");
  if (b)
    check(fib_spawn(rt, b, (void *)(intptr_t)per, NULL, NULL), "fib_spawn");
  double t0 = bench_now_ns();
  check(fib_run(rt), "fib_run");
  double t1 = bench_now_ns();
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  return t1 - t0;
}

/* chan_unbuffered_2w: the same ping-pong with ping started on worker 0
 * and pong on worker 1 of a two-worker runtime (fib_attr.worker), both
 * FIB_MIGRATABLE, through shared channels (initialised after the runtime
 * exists). */
static double run_pair_2w(long rounds) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  for (int i = 0; i < 2; i++)
    check(fib_chan_init(&g_ch[i], sizeof(long), 0), "fib_chan_init");
  /* Started on two workers, and migratable, as goroutines are: what the
   * runtime then does with them is the row's subject (docs/multicore.md,
   * "Where the time goes: chan_unbuffered_2w"). */
  fib_attr on[2] = {{0}, {0}};
  on[0].worker = 1;
  on[1].worker = 2;
  on[0].flags = on[1].flags = FIB_MIGRATABLE;
  check(fib_spawn(rt, ping, (void *)(intptr_t)rounds, &on[0], NULL),
        "fib_spawn");
  check(fib_spawn(rt, pong, (void *)(intptr_t)rounds, &on[1], NULL),
        "fib_spawn");
  double t0 = bench_now_ns();
  check(fib_run(rt), "fib_run");
  double t1 = bench_now_ns();
  for (int i = 0; i < 2; i++)
    check(fib_chan_destroy(&g_ch[i]), "fib_chan_destroy");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  return t1 - t0;
}

static void bench_chan_2w(long n) {
  long rounds = n / 2 > 0 ? n / 2 : 1;
  (void)run_pair_2w(rounds / 10 + 1);
  double t = run_pair_2w(rounds);
  bench_report("chan_unbuffered_2w", "fibers", t / (2.0 * (double)rounds),
               "ns", 2 * rounds,
               "unbuffered ping-pong, migratable fibers started on 2 workers");
}

static void bench_chan(const char *name, long n) {
  int buffered = !strcmp(name, "chan_buffered");
  int sel = !strcmp(name, "select4");
  for (int i = 0; i < 4; i++)
    check(fib_chan_init(&g_ch[i], sizeof(long),
                        sel ? 1 : buffered && i == 0 ? 64 : 0),
          "fib_chan_init");
  double t;
  long msgs;
  if (sel) {
    (void)run_pair(select_loop, NULL, n / 10 + 1);
    t = run_pair(select_loop, NULL, n);
    msgs = n;
  } else if (buffered) {
    (void)run_pair(stream_out, stream_in, n / 10 + 1);
    t = run_pair(stream_out, stream_in, n);
    msgs = n;
  } else {
    long rounds = n / 2 > 0 ? n / 2 : 1; /* two messages per round */
    (void)run_pair(ping, pong, rounds / 10 + 1);
    t = run_pair(ping, pong, rounds);
    msgs = 2 * rounds;
  }
  for (int i = 0; i < 4; i++)
    check(fib_chan_destroy(&g_ch[i]), "fib_chan_destroy");
  bench_report(name, "fibers", t / (double)msgs, "ns", msgs,
               sel ? "buffered send + fib_select over 4 receives"
               : buffered ? "64-slot fib_chan, producer -> consumer"
                          : "unbuffered fib_chan ping-pong, per message");
}

static void bench_mutex(long n) {
  long per = n / 2 > 0 ? n / 2 : 1;
  check(fib_mutex_init(&g_mutex), "fib_mutex_init");
  (void)run_pair(contend, contend, per / 10 + 1);
  double t = run_pair(contend, contend, per);
  check(fib_mutex_destroy(&g_mutex), "fib_mutex_destroy");
  bench_report("mutex_handoff", "fibers", t / (2.0 * (double)per), "ns",
               2 * per, "2 fibers: lock, fib_yield, unlock (FIFO hand-off)");
}

/* ------------------------------------------------ several workers: more */

/*
 * fanout_2w, fanout_2w_buf: a fan-out/fan-in pipeline on a runtime with
 * two workers. One producer sends 0 .. n-1 into channel `in`;
 * FAN_STAGES stage fibers each receive from `in`, compute 3v + 1 and send
 * it on `out`; the collector (the runtime's first fiber) receives the n
 * results and sums them. Both channels are shared (initialised once the
 * runtime exists), unbuffered or of FAN_BUF slots. The producer and the
 * stages are spawned unplaced and FIB_MIGRATABLE: the goroutines and
 * Boost.Fiber's fibers of the peers' programs of the same shape are
 * neither placed nor kept where they first ran (both runtimes move them),
 * so the row measures what a program of ours written the same way gets:
 * where the fibers run is the runtime's choice (docs/multicore.md, "The
 * multi-core rows"). fanout_2w_stay and fanout_2w_buf_stay spawn them
 * plain instead (a fiber that has run stays on its worker): the cost of a
 * pipeline whose stages stay where the first steal put them. The note
 * says how many stages ended on worker 0. Verified: the sum, and the
 * count of values every stage passed on.
 */
enum { FAN_STAGES = 4, FAN_BUF = 64 };
static fib_chan g_fan_in, g_fan_out;
static long g_fan_n;
static pthread_t g_main_thread;
static _Atomic long g_fan_passed, g_fan_on_main;
static unsigned g_fan_flags;

/* The thread running the caller now, through a call the compiler can
 * neither inline nor merge: glibc declares pthread_self const, and a
 * migratable fiber may have moved since an earlier call in its frame. */
__attribute__((noinline)) static pthread_t fan_thread_now(void) {
  pthread_t t = pthread_self();
  __asm__ volatile("" : "+r"(t));
  return t;
}

static void *fan_producer(void *arg) {
  (void)arg;
  for (long i = 0; i < g_fan_n; i++)
    check(fib_chan_send(&g_fan_in, &i), "fib_chan_send");
  check(fib_chan_close(&g_fan_in), "fib_chan_close");
  return NULL;
}

static void *fan_stage(void *arg) {
  (void)arg;
  long v, passed = 0;
  int err;
  while ((err = fib_chan_recv(&g_fan_in, &v)) == 0) {
    v = 3 * v + 1;
    check(fib_chan_send(&g_fan_out, &v), "fib_chan_send");
    passed++;
  }
  if (err != FIB_EPIPE)
    check(err, "fib_chan_recv");
  g_fan_passed += passed;
  if (pthread_equal(fan_thread_now(), g_main_thread))
    g_fan_on_main++;
  return NULL;
}

static void *fan_collector(void *arg) {
  (void)arg;
  fib_id ids[FAN_STAGES + 1];
  fib_attr attr = {0};
  attr.flags = g_fan_flags;
  check(fib_spawn(NULL, fan_producer, NULL, &attr, &ids[0]), "fib_spawn");
  for (int i = 1; i <= FAN_STAGES; i++)
    check(fib_spawn(NULL, fan_stage, NULL, &attr, &ids[i]), "fib_spawn");
  uint64_t sum = 0;
  for (long i = 0; i < g_fan_n; i++) {
    long v;
    check(fib_chan_recv(&g_fan_out, &v), "fib_chan_recv");
    sum += (uint64_t)v;
  }
  for (int i = 0; i <= FAN_STAGES; i++)
    check(fib_join(ids[i], NULL), "fib_join");
  g_result = (double)sum;
  return NULL;
}

static double run_fanout(long n, size_t cap) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  check(fib_chan_init(&g_fan_in, sizeof(long), cap), "fib_chan_init");
  check(fib_chan_init(&g_fan_out, sizeof(long), cap), "fib_chan_init");
  g_fan_n = n;
  g_fan_passed = 0;
  g_fan_on_main = 0;
  g_result = -1;
  check(fib_spawn(rt, fan_collector, NULL, NULL, NULL), "fib_spawn");
  double t0 = bench_now_ns();
  check(fib_run(rt), "fib_run");
  double t1 = bench_now_ns();
  check(fib_chan_destroy(&g_fan_in), "fib_chan_destroy");
  check(fib_chan_destroy(&g_fan_out), "fib_chan_destroy");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  /* sum of 3v + 1 over v = 0 .. n-1 */
  double expect = 3.0 * (double)n * (double)(n - 1) / 2 + (double)n;
  if (g_result != expect || g_fan_passed != n) {
    fprintf(stderr,
            "bench_fibers: fanout: sum %.0f (expected %.0f), %ld passed on "
            "(expected %ld)\n",
            g_result, expect, (long)g_fan_passed, n);
    exit(1);
  }
  return t1 - t0;
}

static void bench_fanout(const char *name, long n) {
  size_t cap = strncmp(name, "fanout_2w_buf", 13) ? 0 : FAN_BUF;
  int stay = strstr(name, "_stay") != NULL;
  g_fan_flags = stay ? 0 : FIB_MIGRATABLE;
  g_main_thread = pthread_self();
  (void)run_fanout(n / 10 + 1, cap);
  double t = run_fanout(n, cap);
  char note[200];
  snprintf(note, sizeof note,
           "1 producer -> %d stages -> 1 collector, %s shared channels, "
           "2 workers, %s fibers; %ld of %d stages ended on worker 0",
           FAN_STAGES, cap ? "64-slot" : "unbuffered",
           stay ? "plain" : "migratable", (long)g_fan_on_main, FAN_STAGES);
  bench_report(name, "fibers", t / (double)n, "ns", n, note);
}

/*
 * post_rate, post_rate_2w: fib_post throughput, in posts run per second.
 * The program's main thread (no runtime) posts n small calls, as fast as
 * fib_post takes them, to a runtime run by a thread of its own (one
 * worker, or two); each post's fiber adds its argument to a sum and
 * counts itself, and the one that completes the count notes the time and
 * lets the runtime's keep-alive fiber finish. Timed from the first post to
 * the last post's fiber run. Verified: the count and the sum of the
 * arguments.
 */
static _Atomic long g_post_count;
static _Atomic uint64_t g_post_sum;
static long g_post_n;
static double g_post_t_end;
static fib_sem g_post_stop;

static void *post_one(void *arg) {
  g_post_sum += (uint64_t)(uintptr_t)arg;
  if (++g_post_count == g_post_n) {
    g_post_t_end = bench_now_ns();
    check(fib_sem_post(&g_post_stop), "fib_sem_post");
  }
  return NULL;
}

static double run_post_rate(long n, unsigned workers) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.flags = FIB_ACCEPT_POSTS;
  opts.workers = workers;
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  check(fib_sem_init(&g_post_stop, 0), "fib_sem_init");
  check(fib_spawn(rt, keep_alive, &g_post_stop, NULL, NULL), "fib_spawn");
  g_post_count = 0;
  g_post_sum = 0;
  g_post_n = n;
  pthread_t t;
  if (pthread_create(&t, NULL, run_runtime, rt) != 0) {
    fprintf(stderr, "bench_fibers: pthread_create failed\n");
    exit(1);
  }
  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    check(fib_post(rt, post_one, (void *)(uintptr_t)i), "fib_post");
  pthread_join(t, NULL);
  check(fib_sem_destroy(&g_post_stop), "fib_sem_destroy");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  uint64_t expect = (uint64_t)n * (uint64_t)(n - 1) / 2;
  if (g_post_count != n || g_post_sum != expect) {
    fprintf(stderr,
            "bench_fibers: post_rate: %ld run (expected %ld), sum %llu "
            "(expected %llu)\n",
            (long)g_post_count, n, (unsigned long long)g_post_sum,
            (unsigned long long)expect);
    exit(1);
  }
  return g_post_t_end - t0;
}

static void bench_post_rate(const char *name, long n, unsigned workers) {
  (void)run_post_rate(n / 10 + 1, workers);
  double t = run_post_rate(n, workers);
  bench_report(name, "fibers", (double)n / (t / 1e9), "msgs/s", n,
               workers > 1 ? "fib_post from a plain thread into a runtime of "
                             "2 workers, a fiber per post"
                           : "fib_post from a plain thread into a runtime on "
                             "another thread, a fiber per post");
}

/*
 * idle_cpu_2w: the CPU a runtime of two workers uses while every fiber
 * waits. Worker 0 has a fiber in a socket read (so it sleeps in its I/O
 * poller); worker 1 a fiber in a receive on a shared channel that nobody
 * sends on until the end, and a sleeper an hour from its deadline (so it
 * sleeps on its futex word with a deadline). Once all three are in their
 * waits and the workers have had 20 ms to settle, the process's CPU time
 * (CLOCK_PROCESS_CPUTIME_ID: both workers and this thread, which only
 * sleeps) is read over n ms. Then this thread sends on the channel (a
 * plain thread on a shared channel), whose receiver cancels the sleeper,
 * and writes the socket. Verified: the byte and the value arrive, the
 * sleep ends cancelled, and the run ends with 0. Reported as % of one
 * core and as ms (idle_cpu_2w_ms), with the voluntary context switches of
 * the window (the wake-ups) in the note.
 */
static _Atomic int g_idle_waiting;
static fib_chan g_idle_ch;
static fib_id g_idle_sleeper;
static int g_idle_sleep_err = 1;
static char g_idle_byte;

static void *idle_reader(void *arg) {
  g_idle_waiting++;
  if (fib_read(*(int *)arg, &g_idle_byte, 1) != 1) {
    fprintf(stderr, "bench_fibers: idle_cpu_2w: fib_read failed\n");
    exit(1);
  }
  return NULL;
}

static void *idle_receiver(void *arg) {
  (void)arg;
  long v;
  g_idle_waiting++;
  check(fib_chan_recv(&g_idle_ch, &v), "fib_chan_recv");
  if (v != 42)
    check(FIB_EINVAL, "idle_cpu_2w: wrong value received");
  check(fib_cancel(NULL, g_idle_sleeper), "fib_cancel");
  return NULL;
}

static void *idle_sleeper(void *arg) {
  (void)arg;
  g_idle_waiting++;
  g_idle_sleep_err = fib_sleep_ns(3600ull * 1000000000ull);
  return NULL;
}

static double cpu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void sleep_ns(double ns) {
  struct timespec ts = {(time_t)(ns / 1e9), (long)((long long)ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static void bench_idle_cpu(long ms) {
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  check(fib_runtime_create(&rt, &opts), "fib_runtime_create");
  check(fib_chan_init(&g_idle_ch, sizeof(long), 0), "fib_chan_init");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    fprintf(stderr, "bench_fibers: socketpair failed\n");
    exit(1);
  }
  fib_attr on[2] = {{0}, {0}};
  on[0].worker = 1;
  on[1].worker = 2;
  check(fib_spawn(rt, idle_reader, &sv[0], &on[0], NULL), "fib_spawn");
  check(fib_spawn(rt, idle_receiver, NULL, &on[1], NULL), "fib_spawn");
  check(fib_spawn(rt, idle_sleeper, NULL, &on[1], &g_idle_sleeper),
        "fib_spawn");
  pthread_t t;
  if (pthread_create(&t, NULL, run_runtime, rt) != 0) {
    fprintf(stderr, "bench_fibers: pthread_create failed\n");
    exit(1);
  }
  while (g_idle_waiting < 3)
    sleep_ns(1e6);
  sleep_ns(20e6); /* the waits begin; the workers' spin (tens of us) ends */
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  double c0 = cpu_now_ns(), w0 = bench_now_ns();
  sleep_ns((double)ms * 1e6);
  double c1 = cpu_now_ns(), w1 = bench_now_ns();
  getrusage(RUSAGE_SELF, &ru1);
  long v = 42;
  check(fib_chan_send(&g_idle_ch, &v), "fib_chan_send");
  if (write(sv[1], "x", 1) != 1) {
    fprintf(stderr, "bench_fibers: write failed\n");
    exit(1);
  }
  pthread_join(t, NULL);
  if (g_idle_byte != 'x' || g_idle_sleep_err != FIB_ECANCELED) {
    fprintf(stderr,
            "bench_fibers: idle_cpu_2w: read %d, sleep ended with %s "
            "(expected FIB_ECANCELED)\n",
            g_idle_byte, fib_err_name(g_idle_sleep_err));
    exit(1);
  }
  check(fib_chan_destroy(&g_idle_ch), "fib_chan_destroy");
  check(fib_runtime_destroy(rt), "fib_runtime_destroy");
  close(sv[0]);
  close(sv[1]);
  double cpu = c1 - c0, wall = w1 - w0;
  char note[200];
  snprintf(note, sizeof note,
           "2 workers: a socket read on one, a channel receive and an "
           "hour's sleep on the other; %.3f ms CPU in %.0f ms, %ld voluntary "
           "context switches",
           cpu / 1e6, wall / 1e6, ru1.ru_nvcsw - ru0.ru_nvcsw);
  bench_report("idle_cpu_2w", "fibers", 100.0 * cpu / wall, "%", ms, note);
  bench_report("idle_cpu_2w_ms", "fibers", cpu / 1e6, "ms", ms, note);
}

int main(int argc, char **argv) {
  const char *benches =
      "switch switch_shared_fp switch_fp_paired switch_fp_flags create create_mixed spawn_join yield "
      "yield_2w yield_2w_busy call_rtt call_rtt_io chan_unbuffered_2w "
      "idle_rss_100k idle_rss_1m idle_rss_compact_1m skynet_1m skynet_1m_2w "
      "skynet_1m_2w_nowait skynet_1m_chan "
      "spawn_alive_1m "
      "chan_unbuffered chan_buffered mutex_handoff "
      "select4 fanout_2w fanout_2w_buf fanout_2w_stay fanout_2w_buf_stay "
      "post_rate post_rate_2w idle_cpu_2w";
  long n;
  const char *b = bench_args(argc, argv, benches, &n);
  if (!b)
    return 2;
  if (!strcmp(b, "switch"))
    bench_switch(b, n, 0);
  else if (!strcmp(b, "switch_shared_fp"))
    bench_switch(b, n, FIB_SHARED_FP);
  else if (!strcmp(b, "switch_fp_flags"))
    bench_switch(b, n, 0);
  else if (!strcmp(b, "switch_fp_paired"))
    bench_switch_fp_paired(n);
  else if (!strcmp(b, "create"))
    bench_create(n);
  else if (!strcmp(b, "create_mixed"))
    bench_create_mixed(n);
  else if (!strcmp(b, "spawn_join"))
    bench_spawn_join(n);
  else if (!strcmp(b, "yield"))
    bench_yield(n);
  else if (!strcmp(b, "yield_2w"))
    bench_yield_on(n, 2, 0, "yield_2w");
  else if (!strcmp(b, "yield_2w_busy"))
    bench_yield_on(n, 2, 1, "yield_2w_busy");
  else if (!strcmp(b, "call_rtt"))
    bench_call_rtt(n);
  else if (!strcmp(b, "call_rtt_io"))
    bench_call_rtt_on(n, 1, "call_rtt_io");
  else if (!strcmp(b, "chan_unbuffered_2w"))
    bench_chan_2w(n);
  else if (!strcmp(b, "idle_rss_100k") || !strcmp(b, "idle_rss_1m") ||
           !strcmp(b, "idle_rss_compact_1m"))
    bench_idle_rss(b, n);
  else if (!strcmp(b, "skynet_1m"))
    bench_skynet(n);
  else if (!strcmp(b, "skynet_1m_2w"))
    bench_skynet_on(n, 2, 0, "skynet_1m_2w");
  else if (!strcmp(b, "skynet_1m_2w_nowait"))
    bench_skynet_on(n, 2, 1, "skynet_1m_2w_nowait");
  else if (!strcmp(b, "skynet_1m_chan"))
    bench_skynet_chan(n);
  else if (!strcmp(b, "spawn_alive_1m"))
    bench_spawn_alive(n);
  else if (!strcmp(b, "chan_unbuffered") || !strcmp(b, "chan_buffered") ||
           !strcmp(b, "select4"))
    bench_chan(b, n);
  else if (!strcmp(b, "mutex_handoff"))
    bench_mutex(n);
  else if (!strcmp(b, "fanout_2w") || !strcmp(b, "fanout_2w_buf") ||
           !strcmp(b, "fanout_2w_stay") || !strcmp(b, "fanout_2w_buf_stay"))
    bench_fanout(b, n);
  else if (!strcmp(b, "post_rate"))
    bench_post_rate(b, n, 1);
  else if (!strcmp(b, "post_rate_2w"))
    bench_post_rate(b, n, 2);
  else if (!strcmp(b, "idle_cpu_2w"))
    bench_idle_cpu(n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
