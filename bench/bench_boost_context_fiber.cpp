/* SPDX-License-Identifier: MIT */
// bench_boost_context_fiber.cpp -- Boost.Context's high-level API peer
// (impl "boost_context_fiber"): boost::context::fiber, the checked,
// move-only handle over the same fcontext switch that bench_boost_context.cpp
// times raw. It is the like-for-like peer of our coroutine layer: a resume
// returns the other side's fiber, a resumed-from or finished fiber is empty,
// and a fiber that is destroyed while suspended is unwound.
//
//   switch    ns per one-way switch: main does `f = std::move(f).resume();`,
//             the body loops on `c = std::move(c).resume();` (round trips
//             / 2). No value goes either way (the API has none; ours hands
//             one over each way)
//   create    ns per fiber constructed on a fixedsize_stack(16 KiB)
//             (malloc'd, no guard: the same stack as the boost_context
//             create row) + resumed to completion: the constructor jumps in
//             once to set up (Boost's create_fiber), the resume jumps in
//             again, the body returns and its record and stack are freed on
//             the way out (ontop_fcontext)
#include "bench_common.h"

#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>

#include <memory>
#include <string>
#include <utility>

namespace ctx = boost::context;

static const std::size_t kStack = 16 * 1024;

// ------------------------------------------------------------- switch

static ctx::fiber switch_body(ctx::fiber &&c) {
  for (;;)
    c = std::move(c).resume();
  return std::move(c); // not reached: the fiber is unwound when destroyed
}

__attribute__((noinline)) ctx::fiber bench_switch_loop(ctx::fiber f, long n) {
  for (long i = 0; i < n; i++)
    f = std::move(f).resume();
  return f;
}

static void bench_switch(long n) {
  ctx::fiber f{std::allocator_arg, ctx::fixedsize_stack(kStack), switch_body};
  f = bench_switch_loop(std::move(f), n / 10 + 1);
  double t0 = bench_now_ns();
  f = bench_switch_loop(std::move(f), n);
  double t1 = bench_now_ns();
  bench_report("switch", "boost_context_fiber", (t1 - t0) / (2.0 * double(n)),
               "ns", n, "fiber::resume round trip / 2 (fixedsize_stack 16 KiB)");
}

// ------------------------------------------------------------- create

static volatile long g_sink;

static ctx::fiber create_body(ctx::fiber &&c) {
  g_sink = g_sink + 1;
  return std::move(c);
}

__attribute__((noinline)) void bench_create_loop(long n) {
  for (long i = 0; i < n; i++) {
    ctx::fiber f{std::allocator_arg, ctx::fixedsize_stack(kStack),
                 create_body};
    f = std::move(f).resume();
    if (f)
      std::abort(); // the body returned: nothing left to resume
  }
}

static void bench_create(long n) {
  bench_create_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  bench_create_loop(n);
  double t1 = bench_now_ns();
  bench_report("create", "boost_context_fiber", (t1 - t0) / double(n), "ns", n,
               "fiber on a malloc'd 16 KiB fixedsize_stack, no guard");
}

int main(int argc, char **argv) {
  const char *benches = "switch create";
  long n;
  const char *arg = bench_args(argc, argv, benches, &n);
  if (!arg)
    return 2;
  std::string b = arg;
  if (b == "switch")
    bench_switch(n);
  else if (b == "create")
    bench_create(n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
