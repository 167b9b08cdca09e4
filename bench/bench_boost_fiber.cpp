/* SPDX-License-Identifier: MIT */
// bench_boost_fiber.cpp -- Boost.Fiber peer (impl "boost_fiber"): the
// default round_robin scheduler on one thread (work_stealing on two for the
// _2w rows), default stack allocator
// (boost::fibers::default_stack, an unguarded malloc'd fixedsize_stack).
//
//   spawn_join  ns per boost::fibers::fiber(fn) + join()
//   yield       ns per hop: two fibers boost::this_fiber::yield() to each other
//   idle_rss    bytes per fiber suspended on a condition variable after
//               touching 512 bytes of its stack
//   skynet_1m   ms for the skynet tree (fiber + join per node); also prints
//               skynet_1m_peak_rss
//   skynet_1m_chan  the canonical skynet: children detached, each sends its
//               sum through its parent's unbuffered_channel; also prints
//               skynet_1m_chan_peak_rss
//   spawn_alive_1m  ms to start n fibers that all wait on one gate (a
//               condition_variable; Boost.Fiber has no wait group), open
//               it and wait for all to finish; also prints
//               spawn_alive_1m_peak_rss and spawn_alive_1m_idle_rss
//   chan_unbuffered  ns per message: two fibers ping-pong through two
//               boost::fibers::unbuffered_channel<long>
//   chan_buffered    ns per message: producer -> consumer through a
//               buffered_channel<long>(64)
//   mutex_handoff    ns per lock: two fibers loop lock / yield / unlock on
//               one boost::fibers::mutex
//   skynet_1m_2w, chan_unbuffered_2w  as skynet_1m and chan_unbuffered, on
//               the work_stealing scheduler with two threads (below)
//   fanout_2w, fanout_2w_buf  ns per message through a pipeline: producer
//               -> 4 stages -> collector, unbuffered_channel or
//               buffered_channel(64), work_stealing on two threads
//   idle_cpu_2w  % of one core used while every fiber waits, work_stealing
//               on two threads; also prints idle_cpu_2w_ms
//   (select4: Boost.Fiber has no select over channels; run.py reports it
//   missing)
#include "bench_common.h"

#include <boost/context/stack_traits.hpp>
#include <boost/fiber/all.hpp>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace bf = boost::fibers;

static void noop() {}

static void spawn_join_loop(long n) {
  for (long i = 0; i < n; i++) {
    bf::fiber f(noop);
    f.join();
  }
}

static void bench_spawn_join(long n) {
  spawn_join_loop(n / 10 + 1);
  double t0 = bench_now_ns();
  spawn_join_loop(n);
  double t1 = bench_now_ns();
  bench_report("spawn_join", "boost_fiber", (t1 - t0) / double(n), "ns", n,
               nullptr);
}

static void yielder(long n) {
  for (long i = 0; i < n; i++)
    boost::this_fiber::yield();
}

static double run_yield(long per_fiber) {
  double t0 = bench_now_ns();
  bf::fiber a(yielder, per_fiber), b(yielder, per_fiber);
  a.join();
  b.join();
  return bench_now_ns() - t0;
}

static void bench_yield(long n) {
  long per_fiber = n / 2 > 0 ? n / 2 : 1;
  (void)run_yield(per_fiber / 10 + 1);
  double t = run_yield(per_fiber);
  bench_report("yield", "boost_fiber", t / (2.0 * double(per_fiber)), "ns",
               2 * per_fiber, nullptr);
}

static bf::mutex g_mtx;
static bf::condition_variable g_cv;
static bool g_go; // never set: the fibers stay suspended until _exit

static void idle_body() {
  BENCH_TOUCH_STACK(512);
  std::unique_lock<bf::mutex> lk(g_mtx);
  g_cv.wait(lk, [] { return g_go; });
}

static void bench_idle_rss(const char *name, long n) {
  std::vector<bf::fiber> fibers(static_cast<std::size_t>(n)); // touched before baseline
  long before = bench_rss_bytes();
  long created = 0;
  std::string why;
  for (long i = 0; i < n; i++) {
    try {
      fibers[std::size_t(i)] = bf::fiber(idle_body);
    } catch (const std::exception &e) {
      why = std::string(", spawn failed: ") + e.what();
      break;
    }
    created++;
  }
  boost::this_fiber::yield(); // every fiber runs and blocks
  long after = bench_rss_bytes();
  std::string note = std::to_string(created) + " created" + why +
                     "; default_stack " +
                     std::to_string(boost::context::stack_traits::default_size() / 1024) +
                     " KiB malloc'd, no guard";
  bench_report(name, "boost_fiber",
               created ? double(after - before) / double(created) : 0, "bytes",
               created, note.c_str());
  // No teardown: the measurement is done (fibers still joinable would
  // std::terminate in ~fiber, so leave without running destructors).
  _exit(created < n ? 2 : 0);
}

static std::uint64_t skynet(std::uint64_t num, std::uint64_t size) {
  if (size == 1)
    return num;
  std::uint64_t sub = size / 10, sums[10];
  bf::fiber kids[10];
  for (int i = 0; i < 10; i++)
    kids[i] = bf::fiber([&sums, i, num, sub] { sums[i] = skynet(num + i * sub, sub); });
  std::uint64_t sum = 0;
  for (int i = 0; i < 10; i++) {
    kids[i].join();
    sum += sums[i];
  }
  return sum;
}

static void bench_skynet(long n) {
  std::uint64_t leaves = 1;
  while (leaves < std::uint64_t(n))
    leaves *= 10;
  double t0 = bench_now_ns();
  std::uint64_t sum = 0;
  bf::fiber root([&] { sum = skynet(0, leaves); });
  root.join();
  double t1 = bench_now_ns();
  if (sum != leaves * (leaves - 1) / 2) {
    std::fprintf(stderr, "bench_boost_fiber: skynet sum wrong\n");
    std::exit(1);
  }
  bench_report("skynet_1m", "boost_fiber", (t1 - t0) / 1e6, "ms", long(leaves),
               nullptr);
  bench_report("skynet_1m_peak_rss", "boost_fiber",
               double(bench_status_bytes("VmHWM")), "bytes", long(leaves),
               "VmHWM of the whole process");
}

// The canonical skynet: as bench_fibers.c's skynet_chan.
using sky_chan = bf::unbuffered_channel<std::uint64_t>;

static void skynet_chan(sky_chan &parent, std::uint64_t num, std::uint64_t size) {
  std::uint64_t sum = num;
  if (size > 1) {
    sky_chan rc;
    std::uint64_t sub = size / 10;
    for (std::uint64_t i = 0; i < 10; i++)
      bf::fiber([&rc, num, i, sub] { skynet_chan(rc, num + i * sub, sub); })
          .detach();
    sum = 0;
    for (int i = 0; i < 10; i++) {
      std::uint64_t v;
      rc.pop(v);
      sum += v;
    }
  }
  parent.push(sum);
}

static void bench_skynet_chan(long n) {
  std::uint64_t leaves = 1;
  while (leaves < std::uint64_t(n))
    leaves *= 10;
  double t0 = bench_now_ns();
  sky_chan c;
  bf::fiber([&c, leaves] { skynet_chan(c, 0, leaves); }).detach();
  std::uint64_t sum;
  c.pop(sum);
  double t1 = bench_now_ns();
  if (sum != leaves * (leaves - 1) / 2) {
    std::fprintf(stderr, "bench_boost_fiber: skynet_1m_chan sum wrong\n");
    std::exit(1);
  }
  bench_report("skynet_1m_chan", "boost_fiber", (t1 - t0) / 1e6, "ms",
               long(leaves), "unbuffered_channel per node, fibers detached");
  bench_report("skynet_1m_chan_peak_rss", "boost_fiber",
               double(bench_status_bytes("VmHWM")), "bytes", long(leaves),
               "VmHWM of the whole process");
  // The last senders may still be finishing: leave without unwinding the
  // scheduler (as idle_rss does).
  std::fflush(stdout);
  _exit(0);
}

// spawn_alive_1m: the shape of bench_fibers.c's, with a counter and a
// condition variable in place of a wait group.
struct counter {
  bf::mutex m;
  bf::condition_variable cv;
  long n = 0;
  void done() {
    std::unique_lock<bf::mutex> lk(m);
    if (--n == 0)
      cv.notify_all();
  }
  void wait() {
    std::unique_lock<bf::mutex> lk(m);
    cv.wait(lk, [this] { return n == 0; });
  }
};

static void bench_spawn_alive(long n) {
  counter ready, gate, done;
  ready.n = n;
  done.n = n;
  gate.n = 1;
  double t0 = bench_now_ns();
  long before = bench_rss_bytes();
  for (long i = 0; i < n; i++)
    bf::fiber([&] {
      ready.done();
      gate.wait();
      done.done();
    }).detach();
  ready.wait(); // all n are at the gate
  long after = bench_rss_bytes();
  gate.done(); // open it: all n wake
  done.wait();
  double t1 = bench_now_ns();
  bench_report("spawn_alive_1m", "boost_fiber", (t1 - t0) / 1e6, "ms", n,
               "spawn n, all wait on one condition_variable, release, all "
               "finish");
  bench_report("spawn_alive_1m_peak_rss", "boost_fiber",
               double(bench_status_bytes("VmHWM")), "bytes", n,
               "VmHWM of the whole process");
  bench_report("spawn_alive_1m_idle_rss", "boost_fiber",
               double(after - before) / double(n), "bytes", n,
               "RSS per fiber with all n waiting (default_stack, malloc'd, "
               "no guard)");
  std::fflush(stdout);
  _exit(0); // as above: the last fibers may still be finishing
}

static void bench_unbuffered(long n) {
  long rounds = n / 2 > 0 ? n / 2 : 1;
  auto run = [](long r) {
    bf::unbuffered_channel<long> a, b;
    double t0 = bench_now_ns();
    bf::fiber pinger([&] {
      long v = 0;
      for (long i = 0; i < r; i++) {
        a.push(v);
        b.pop(v);
      }
    });
    bf::fiber ponger([&] {
      long v;
      for (long i = 0; i < r; i++) {
        a.pop(v);
        b.push(v + 1);
      }
    });
    pinger.join();
    ponger.join();
    return bench_now_ns() - t0;
  };
  (void)run(rounds / 10 + 1);
  double t = run(rounds);
  bench_report("chan_unbuffered", "boost_fiber", t / (2.0 * double(rounds)),
               "ns", 2 * rounds, "unbuffered_channel ping-pong, per message");
}

static void bench_buffered(long n) {
  auto run = [](long m) {
    bf::buffered_channel<long> ch(64);
    double t0 = bench_now_ns();
    bf::fiber out([&] {
      for (long i = 0; i < m; i++)
        ch.push(i);
    });
    bf::fiber in([&] {
      long v;
      for (long i = 0; i < m; i++)
        ch.pop(v);
    });
    out.join();
    in.join();
    return bench_now_ns() - t0;
  };
  (void)run(n / 10 + 1);
  double t = run(n);
  bench_report("chan_buffered", "boost_fiber", t / double(n), "ns", n,
               "buffered_channel(64) producer -> consumer");
}

static void bench_mutex(long n) {
  long per = n / 2 > 0 ? n / 2 : 1;
  auto run = [](long p) {
    bf::mutex m;
    auto body = [&m, p] {
      for (long i = 0; i < p; i++) {
        m.lock();
        boost::this_fiber::yield();
        m.unlock();
      }
    };
    double t0 = bench_now_ns();
    bf::fiber a(body), b(body);
    a.join();
    b.join();
    return bench_now_ns() - t0;
  };
  (void)run(per / 10 + 1);
  double t = run(per);
  bench_report("mutex_handoff", "boost_fiber", t / (2.0 * double(per)), "ns",
               2 * per, "2 fibers: lock, yield, unlock on boost::fibers::mutex");
}

// ---------------------------------------------- several threads: work_stealing
//
// The rows beside our two-worker ones (skynet_1m_2w, chan_unbuffered_2w,
// fanout_2w, fanout_2w_buf, idle_cpu_2w) run Boost.Fiber's work_stealing
// scheduler on two threads, the main thread and one more, with suspend =
// true: an idle thread waits on a condition variable until it is notified
// or its next deadline. Boost's default, suspend = false, keeps an idle
// thread looking for work; on the 2-vCPU machine of docs/performance.md,
// shared with other jobs, those spinning threads took the CPU from the
// working ones and every row was several times slower (docs/multicore.md
// has the figures), so the rows use the faster setting.
// BENCH_BOOST_SPIN=1 in the environment selects the default instead.
// A work_stealing group is one per process (its registry is static), which
// suits a program that runs one benchmark. The second thread installs the
// scheduler (whose constructor waits until both have) and waits, as a
// fiber, for the end; fibers spawned on either thread may be stolen by the
// other. The program leaves with _exit once it has reported, as the rows
// above do: the helper's scheduler would otherwise be torn down while
// the main thread's may still steal from it.
static bf::mutex g_ws_mtx;
static bf::condition_variable g_ws_cv;
static bool g_ws_done;

static bool ws_suspend() {
  const char *s = std::getenv("BENCH_BOOST_SPIN");
  return !(s && *s == '1');
}

static const char *ws_note() {
  return ws_suspend() ? "work_stealing(2, suspend=true)"
                      : "work_stealing(2), default suspend=false (spinning)";
}

static void ws_start() {
  bool suspend = ws_suspend();
  std::thread([suspend] {
    bf::use_scheduling_algorithm<bf::algo::work_stealing>(2, suspend);
    std::unique_lock<bf::mutex> lk(g_ws_mtx);
    g_ws_cv.wait(lk, [] { return g_ws_done; });
  }).detach();
  bf::use_scheduling_algorithm<bf::algo::work_stealing>(2, suspend);
}

static void ws_exit() {
  std::fflush(stdout);
  _exit(0);
}

static void bench_skynet_2w(long n) {
  ws_start();
  std::uint64_t leaves = 1;
  while (leaves < std::uint64_t(n))
    leaves *= 10;
  double t0 = bench_now_ns();
  std::uint64_t sum = 0;
  bf::fiber root([&] { sum = skynet(0, leaves); });
  root.join();
  double t1 = bench_now_ns();
  if (sum != leaves * (leaves - 1) / 2) {
    std::fprintf(stderr, "bench_boost_fiber: skynet_1m_2w sum wrong\n");
    std::exit(1);
  }
  bench_report("skynet_1m_2w", "boost_fiber", (t1 - t0) / 1e6, "ms",
               long(leaves), ws_note());
  ws_exit();
}

static void bench_unbuffered_2w(long n) {
  ws_start();
  long rounds = n / 2 > 0 ? n / 2 : 1;
  auto run = [](long r) {
    bf::unbuffered_channel<long> a, b;
    long last = -1;
    double t0 = bench_now_ns();
    bf::fiber pinger([&] {
      long v = 0;
      for (long i = 0; i < r; i++) {
        a.push(v);
        b.pop(v);
      }
      last = v;
    });
    bf::fiber ponger([&] {
      long v;
      for (long i = 0; i < r; i++) {
        a.pop(v);
        b.push(v + 1);
      }
    });
    pinger.join();
    ponger.join();
    double t = bench_now_ns() - t0;
    if (last != r) {
      std::fprintf(stderr, "bench_boost_fiber: chan_unbuffered_2w: %ld "
                   "round trips counted, expected %ld\n", last, r);
      std::exit(1);
    }
    return t;
  };
  (void)run(rounds / 10 + 1);
  double t = run(rounds);
  std::string note = std::string("unbuffered_channel ping-pong, ") + ws_note();
  bench_report("chan_unbuffered_2w", "boost_fiber",
               t / (2.0 * double(rounds)), "ns", 2 * rounds, note.c_str());
  ws_exit();
}

// fanout_2w (unbuffered_channel), fanout_2w_buf (buffered_channel of 64):
// bench_fibers.c's pipeline, producer -> 4 stages -> collector (main).
template <class Chan> static double run_fanout(long n, Chan &in, Chan &out) {
  enum { STAGES = 4 };
  std::atomic<long> passed{0};
  double t0 = bench_now_ns();
  bf::fiber producer([&] {
    for (long i = 0; i < n; i++)
      in.push(i);
    in.close();
  });
  bf::fiber stages[STAGES];
  for (auto &s : stages)
    s = bf::fiber([&] {
      long v, p = 0;
      while (in.pop(v) == bf::channel_op_status::success) {
        out.push(3 * v + 1);
        p++;
      }
      passed += p;
    });
  std::uint64_t sum = 0;
  for (long i = 0; i < n; i++) {
    long v;
    out.pop(v);
    sum += std::uint64_t(v);
  }
  producer.join();
  for (auto &s : stages)
    s.join();
  double t = bench_now_ns() - t0;
  std::uint64_t un = std::uint64_t(n);
  if (sum != 3 * un * (un - 1) / 2 + un || passed != n) {
    std::fprintf(stderr, "bench_boost_fiber: fanout: wrong sum or count\n");
    std::exit(1);
  }
  return t;
}

static void bench_fanout(const std::string &name, long n) {
  ws_start();
  bool buffered = name == "fanout_2w_buf";
  auto run = [buffered](long m) {
    if (buffered) {
      bf::buffered_channel<long> in(64), out(64);
      return run_fanout(m, in, out);
    }
    bf::unbuffered_channel<long> in, out;
    return run_fanout(m, in, out);
  };
  (void)run(n / 10 + 1);
  double t = run(n);
  std::string note = std::string("1 producer -> 4 stages -> 1 collector, ") +
                     (buffered ? "buffered_channel(64), " : "unbuffered_channel, ") +
                     ws_note();
  bench_report(name.c_str(), "boost_fiber", t / double(n), "ns", n, note.c_str());
  ws_exit();
}

// idle_cpu_2w: bench_fibers.c's, without the socket read (Boost.Fiber has
// no I/O of its own: a read would block its thread): a fiber in a receive
// on a channel nobody sends on until the end, and one waiting on a
// condition variable with a deadline an hour away (a sleep that can be cut
// short). The main fiber measures the CPU time over n ms, asleep in
// this_fiber::sleep_for.
static double cpu_now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

static void bench_idle_cpu(long ms) {
  ws_start();
  bf::unbuffered_channel<long> ch;
  bf::mutex m;
  bf::condition_variable cv;
  bool cancel = false, cancelled = false;
  std::atomic<int> waiting{0};
  long got = 0;
  bf::fiber receiver([&] {
    waiting++;
    ch.pop(got);
    std::unique_lock<bf::mutex> lk(m);
    cancel = true;
    cv.notify_all();
  });
  bf::fiber sleeper([&] {
    waiting++;
    std::unique_lock<bf::mutex> lk(m);
    cancelled = cv.wait_for(lk, std::chrono::hours(1), [&] { return cancel; });
  });
  while (waiting < 2)
    boost::this_fiber::sleep_for(std::chrono::milliseconds(1));
  boost::this_fiber::sleep_for(std::chrono::milliseconds(20));
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  double c0 = cpu_now_ns(), w0 = bench_now_ns();
  boost::this_fiber::sleep_for(std::chrono::milliseconds(ms));
  double c1 = cpu_now_ns(), w1 = bench_now_ns();
  getrusage(RUSAGE_SELF, &ru1);
  ch.push(42);
  receiver.join();
  sleeper.join();
  if (got != 42 || !cancelled) {
    std::fprintf(stderr, "bench_boost_fiber: idle_cpu_2w: a wait ended wrongly\n");
    std::exit(1);
  }
  double cpu = c1 - c0, wall = w1 - w0;
  char note[240];
  std::snprintf(note, sizeof note,
                "%s: a channel receive, a condition wait an hour long, the "
                "main fiber asleep (no socket read: no I/O layer); %.3f ms CPU "
                "in %.0f ms, %ld voluntary context switches",
                ws_note(), cpu / 1e6, wall / 1e6, ru1.ru_nvcsw - ru0.ru_nvcsw);
  bench_report("idle_cpu_2w", "boost_fiber", 100.0 * cpu / wall, "%", ms, note);
  bench_report("idle_cpu_2w_ms", "boost_fiber", cpu / 1e6, "ms", ms, note);
  ws_exit();
}

int main(int argc, char **argv) {
  const char *benches =
      "spawn_join yield idle_rss_100k idle_rss_1m skynet_1m skynet_1m_chan "
      "spawn_alive_1m chan_unbuffered "
      "chan_buffered mutex_handoff skynet_1m_2w chan_unbuffered_2w fanout_2w "
      "fanout_2w_buf idle_cpu_2w";
  long n;
  const char *arg = bench_args(argc, argv, benches, &n);
  if (!arg)
    return 2;
  std::string b = arg;
  if (b == "spawn_join")
    bench_spawn_join(n);
  else if (b == "yield")
    bench_yield(n);
  else if (b == "idle_rss_100k" || b == "idle_rss_1m")
    bench_idle_rss(b.c_str(), n);
  else if (b == "skynet_1m")
    bench_skynet(n);
  else if (b == "skynet_1m_chan")
    bench_skynet_chan(n);
  else if (b == "spawn_alive_1m")
    bench_spawn_alive(n);
  else if (b == "chan_unbuffered")
    bench_unbuffered(n);
  else if (b == "chan_buffered")
    bench_buffered(n);
  else if (b == "mutex_handoff")
    bench_mutex(n);
  else if (b == "skynet_1m_2w")
    bench_skynet_2w(n);
  else if (b == "chan_unbuffered_2w")
    bench_unbuffered_2w(n);
  else if (b == "fanout_2w" || b == "fanout_2w_buf")
    bench_fanout(b, n);
  else if (b == "idle_cpu_2w")
    bench_idle_cpu(n);
  else {
    bench_usage(argv[0], benches);
    return 2;
  }
  return 0;
}
