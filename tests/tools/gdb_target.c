/* SPDX-License-Identifier: MIT */
/*
 * gdb_target.c -- the debuggee of the gdb_backtrace test (gdb_backtrace.sh).
 *
 *   gdb_target fiber   a fiber runs fiber_body, which calls fiber_leaf
 *   gdb_target coro    a coroutine (no runtime) runs coro_body -> coro_leaf
 *   gdb_target nested  a fiber resumes a coroutine that calls coro_leaf
 *   gdb_target sharedfp  as coro, with FIB_SHARED_FP (the other switch)
 *
 * The test sets a breakpoint in the leaf and checks the backtrace: it must
 * go leaf -> body -> the library's entry -> fib__ctx_entry_trampoline and
 * end there. Built -O0 -g -fno-omit-frame-pointer; the leaves are noinline
 * so they are real frames at any optimisation level.
 */
#include <fibers.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static volatile int sink;

__attribute__((noinline)) static int fiber_leaf(int x) {
  sink = x;
  return x + 1;
}

__attribute__((noinline)) static int coro_leaf(int x) {
  sink = x;
  return x * 2;
}

static void *fiber_body(void *arg) {
  int v = fiber_leaf((int)(intptr_t)arg);
  return (void *)(intptr_t)v;
}

static void *coro_body(void *arg, void *first) {
  (void)first;
  int v = coro_leaf((int)(intptr_t)arg);
  return (void *)(intptr_t)v;
}

static int fail(const char *what, int err) {
  fprintf(stderr, "gdb_target: %s: %s\n", what, fib_strerror(err));
  return 1;
}

/* Resume a fresh coroutine running coro_body(arg) to its end; 0 if it
 * returned the expected value. */
static int run_coro(int arg, unsigned flags) {
  fib_coro *co;
  void *out = NULL;
  fib_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.flags = flags;
  int err = fib_coro_create(&co, coro_body, (void *)(intptr_t)arg, &attr);
  if (err)
    return fail("fib_coro_create", err);
  err = fib_coro_resume(co, NULL, &out);
  if (err)
    return fail("fib_coro_resume", err);
  if (fib_coro_status(co) != FIB_CORO_DEAD || (intptr_t)out != arg * 2) {
    fprintf(stderr, "gdb_target: coroutine returned %ld\n", (long)(intptr_t)out);
    return 1;
  }
  return fib_coro_destroy(co) ? 1 : 0;
}

static int nested_failed;

static void *nested_body(void *arg) {
  nested_failed = run_coro((int)(intptr_t)arg, 0);
  return NULL;
}

static int run_fiber(fib_fn fn, int arg) {
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, NULL);
  if (err)
    return fail("fib_runtime_create", err);
  err = fib_spawn(rt, fn, (void *)(intptr_t)arg, NULL, NULL);
  if (err)
    return fail("fib_spawn", err);
  err = fib_run(rt);
  if (err)
    return fail("fib_run", err);
  (void)fib_runtime_destroy(rt);
  if (sink != arg || nested_failed) {
    fprintf(stderr, "gdb_target: the fiber did not run its leaf\n");
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "fiber";
  if (strcmp(mode, "fiber") == 0)
    return run_fiber(fiber_body, 7);
  if (strcmp(mode, "coro") == 0)
    return run_coro(9, 0);
  if (strcmp(mode, "sharedfp") == 0)
    return run_coro(13, FIB_SHARED_FP);
  if (strcmp(mode, "nested") == 0)
    return run_fiber(nested_body, 11);
  fprintf(stderr, "usage: gdb_target [fiber|coro|nested|sharedfp]\n");
  return 2;
}
