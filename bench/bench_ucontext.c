/* SPDX-License-Identifier: MIT */
/*
 * bench_ucontext.c -- glibc ucontext peer (impl "ucontext"): makecontext /
 * swapcontext. swapcontext saves and restores the signal mask with a
 * rt_sigprocmask system call on every switch, which is what it costs.
 *
 *   switch    ns per one-way swapcontext (round trips / 2)
 *   create    ns per malloc'd 16 KiB stack + getcontext + makecontext +
 *             swapcontext in + return through uc_link + free
 *   idle_rss  bytes per suspended context (malloc'd 16 KiB stack, no
 *             guard, plus its ucontext_t) that touched 512 bytes of stack
 */
#include "bench_common.h"

#include <errno.h>
#include <stdint.h>
#include <ucontext.h>

#define STACK_SIZE (16 * 1024)

static ucontext_t main_uc, co_uc;

static void die(const char *what) {
  fprintf(stderr, "bench_ucontext: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* getcontext() is returns_twice; keeping it in its own frame keeps the
 * callers' loop variables out of -Wclobbered's way (it never returns twice
 * here: makecontext replaces what it saved). */
__attribute__((noinline)) static void prepare(ucontext_t *uc, void *stack,
                                              ucontext_t *link,
                                              void (*fn)(void)) {
  if (getcontext(uc))
    die("getcontext");
  uc->uc_stack.ss_sp = stack;
  uc->uc_stack.ss_size = STACK_SIZE;
  uc->uc_link = link;
  makecontext(uc, fn, 0);
}

/* ------------------------------------------------------------- switch */

static void switch_body(void) {
  for (;;)
    if (swapcontext(&co_uc, &main_uc))
      die("swapcontext");
}

static void switch_loop(long n) {
  for (long i = 0; i < n; i++)
    if (swapcontext(&main_uc, &co_uc))
      die("swapcontext");
}

static void bench_switch(long n) {
  void *stack = malloc(STACK_SIZE);
  if (!stack)
    die("malloc");
  prepare(&co_uc, stack, NULL, switch_body);
  switch_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  switch_loop(n);
  double t1 = bench_now_ns();
  free(stack);
  bench_report("switch", "ucontext", (t1 - t0) / (2.0 * (double)n), "ns", n,
               "swapcontext round trip / 2");
}

/* ------------------------------------------------------------- create */

static volatile long g_sink;

static void create_body(void) { g_sink++; } /* returns through uc_link */

static void create_loop(long n) {
  for (long i = 0; i < n; i++) {
    void *stack = malloc(STACK_SIZE);
    if (!stack)
      die("malloc");
    prepare(&co_uc, stack, &main_uc, create_body);
    if (swapcontext(&main_uc, &co_uc))
      die("swapcontext");
    free(stack);
  }
}

static void bench_create(long n) {
  create_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  create_loop(n);
  double t1 = bench_now_ns();
  bench_report("create", "ucontext", (t1 - t0) / (double)n, "ns", n,
               "malloc'd 16 KiB stack, no guard");
}

/* ----------------------------------------------------------- idle_rss */

static ucontext_t *g_ucs;
static long g_cur;

static void idle_body(void) {
  BENCH_TOUCH_STACK(512);
  if (swapcontext(&g_ucs[g_cur], &main_uc)) /* suspended for good */
    die("swapcontext");
}

static void bench_idle_rss(const char *name, long n) {
  /* The array of contexts is part of each context's cost, so it is
   * allocated (not touched) after the baseline. */
  long before = bench_rss_bytes();
  g_ucs = malloc((size_t)n * sizeof *g_ucs);
  if (!g_ucs)
    die("malloc");
  long created = 0;
  const char *why = "";
  for (long i = 0; i < n; i++) {
    void *stack = malloc(STACK_SIZE);
    if (!stack) {
      why = ", malloc failed";
      break;
    }
    prepare(&g_ucs[i], stack, NULL, idle_body);
    g_cur = i;
    if (swapcontext(&main_uc, &g_ucs[i]))
      die("swapcontext");
    created++;
  }
  long after = bench_rss_bytes();
  char note[128];
  snprintf(note, sizeof note, "%ld created%s; malloc'd 16 KiB stacks, no guard",
           created, why);
  bench_report(name, "ucontext",
               created ? (double)(after - before) / (double)created : 0,
               "bytes", created, note);
  _exit(created < n ? 2 : 0); /* no teardown: the measurement is done */
}

int main(int argc, char **argv) {
  const char *benches = "switch create idle_rss_100k idle_rss_1m";
  long n;
  const char *b = bench_args(argc, argv, benches, &n);
  if (!b)
    return 2;
  if (!strcmp(b, "switch"))
    bench_switch(n);
  else if (!strcmp(b, "create"))
    bench_create(n);
  else if (!strcmp(b, "idle_rss_100k") || !strcmp(b, "idle_rss_1m"))
    bench_idle_rss(b, n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
