/* SPDX-License-Identifier: MIT */
// bench_boost_context.cpp -- Boost.Context peer (impl "boost_context"):
// the raw fcontext layer (make_fcontext / jump_fcontext) that
// boost::context::fiber is built on.
//
//   switch    ns per one-way jump_fcontext (round trips / 2)
//   switch_fp_flags  the same once the resumer's MXCSR status flags differ
//             from the context's (one inexact FP operation in the resumer)
//   create    ns per malloc'd 16 KiB stack + make_fcontext + jump in + the
//             context finishing (jumping back for good) + free
//   idle_rss  bytes per suspended context on a guarded stack
//             (protected_fixedsize_stack, 64 KiB as ours: mmap + an mprotect'd
//             guard page, i.e. two mappings each) that touched 512 bytes
#include "bench_common.h"

#include <boost/context/detail/fcontext.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
#include <boost/context/stack_traits.hpp>

#include <cerrno>
#include <algorithm>
#include <new>
#include <string>
#include <vector>

namespace ctxd = boost::context::detail;

static const std::size_t kStack = 16 * 1024;

// ------------------------------------------------------------- switch

static void switch_body(ctxd::transfer_t t) {
  for (;;)
    t = ctxd::jump_fcontext(t.fctx, nullptr);
}

__attribute__((noinline)) ctxd::fcontext_t bench_switch_loop(ctxd::fcontext_t c,
                                                             long n) {
  for (long i = 0; i < n; i++)
    c = ctxd::jump_fcontext(c, nullptr).fctx;
  return c;
}

// switch_fp_flags: as bench_fibers.c's, the resumer's MXCSR precision
// flag set after make_fcontext (which saved the clean MXCSR into the new
// context), so every jump loads a changed MXCSR.
static void raise_inexact() {
  volatile double x = 1.0, y = 3.0;
  x = x / y;
  (void)x;
}

static void bench_switch(const char *name, long n) {
  char *stack = static_cast<char *>(std::malloc(kStack));
  ctxd::fcontext_t c = ctxd::make_fcontext(stack + kStack, kStack, switch_body);
  bool dirty = std::string(name) == "switch_fp_flags";
  if (dirty)
    raise_inexact();
  c = bench_switch_loop(c, n / 10 + 1);
  double t0 = bench_now_ns();
  c = bench_switch_loop(c, n);
  double t1 = bench_now_ns();
  std::free(stack);
  bench_report(name, "boost_context", (t1 - t0) / (2.0 * double(n)), "ns", n,
               dirty ? "as switch, the resumer's MXCSR precision flag set"
                     : "jump_fcontext round trip / 2");
}

// ------------------------------------------------------------- create

static volatile long g_sink;

static void create_body(ctxd::transfer_t t) {
  g_sink = g_sink + 1;
  ctxd::jump_fcontext(t.fctx, nullptr); // finished: never resumed
  std::abort();
}

__attribute__((noinline)) void bench_create_loop(long n) {
  for (long i = 0; i < n; i++) {
    char *stack = static_cast<char *>(std::malloc(kStack));
    if (!stack)
      std::abort();
    ctxd::fcontext_t c = ctxd::make_fcontext(stack + kStack, kStack, create_body);
    ctxd::jump_fcontext(c, nullptr);
    std::free(stack);
  }
}

static void bench_create(long n) {
  bench_create_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  bench_create_loop(n);
  double t1 = bench_now_ns();
  bench_report("create", "boost_context", (t1 - t0) / double(n), "ns", n,
               "malloc'd 16 KiB stack, no guard");
}

// ----------------------------------------------------------- idle_rss

static void idle_body(ctxd::transfer_t t) {
  BENCH_TOUCH_STACK(512);
  ctxd::jump_fcontext(t.fctx, nullptr); // suspended for good
  std::abort();
}

static void bench_idle_rss(const char *name, long n) {
  boost::context::protected_fixedsize_stack alloc(64 * 1024);
  // The bookkeeping vector is touched before the baseline: only what each
  // context itself costs is counted.
  std::vector<boost::context::stack_context> stacks(static_cast<std::size_t>(n));
  long before = bench_rss_bytes();
  long created = 0;
  std::string why;
  for (long i = 0; i < n; i++) {
    boost::context::stack_context sc;
    try {
      sc = alloc.allocate();
    } catch (const std::bad_alloc &) {
      why = ", allocate failed (mmap/mprotect: vm.max_map_count)";
      break;
    }
    stacks[std::size_t(i)] = sc;
    ctxd::fcontext_t c = ctxd::make_fcontext(sc.sp, sc.size, idle_body);
    ctxd::jump_fcontext(c, nullptr);
    created++;
  }
  long after = bench_rss_bytes();
  // protected_fixedsize_stack checks its mprotect() only with BOOST_ASSERT:
  // past vm.max_map_count the guard page is silently missing. Each guarded
  // stack is two mappings, so the mapping count bounds the guarded ones.
  long maps = 0;
  if (FILE *f = std::fopen("/proc/self/maps", "r")) {
    for (int ch; (ch = std::fgetc(f)) != EOF;)
      maps += ch == '\n';
    std::fclose(f);
  }
  std::string note = std::to_string(created) + " created" + why +
                     "; protected_fixedsize_stack(64 KiB); " +
                     std::to_string(maps) + " mappings in all, so at most " +
                     std::to_string(std::min(created, maps / 2)) +
                     " stacks have their guard page";
  bench_report(name, "boost_context",
               created ? double(after - before) / double(created) : 0, "bytes",
               created, note.c_str());
  _exit(created < n ? 2 : 0); // no teardown: the measurement is done
}

int main(int argc, char **argv) {
  const char *benches =
      "switch switch_fp_flags create idle_rss_100k idle_rss_1m";
  long n;
  const char *arg = bench_args(argc, argv, benches, &n);
  if (!arg)
    return 2;
  std::string b = arg;
  if (b == "switch" || b == "switch_fp_flags")
    bench_switch(b.c_str(), n);
  else if (b == "create")
    bench_create(n);
  else if (b == "idle_rss_100k" || b == "idle_rss_1m")
    bench_idle_rss(b.c_str(), n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
