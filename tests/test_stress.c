/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c -- sizes that find leaks and slow paths: ten million
 * switches, 100,000 fibers alive at once, a million spawn/join cycles with
 * resident memory and mappings flat. FIB_TEST_SCALE scales the sizes.
 */
#include "fiber_helpers.h"

#include <fibers.h>

#include <stdatomic.h>
#include <stdint.h>

static void *ping(void *arg, void *first) {
  (void)first;
  long n = *(long *)arg;
  for (long i = 0; i < n; i++)
    CHECK_OK(fib_coro_yield((void *)i, NULL));
  return NULL;
}

TEST(ten_million_switches) {
  long rounds = scaled(5000000); /* two switches per round */
  fib_coro *co;
  void *v;
  CHECK_OK(fib_coro_create(&co, ping, &rounds, NULL));
  for (long i = 0; i < rounds; i++) {
    CHECK_OK(fib_coro_resume(co, NULL, &v));
    if ((long)(intptr_t)v != i)
      CHECK_EQ((long)(intptr_t)v, i);
  }
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
}

/* Atomic: with several workers the fibers run on several threads. */
static atomic_long alive_now, alive_peak, finished;

static void *wait_for_all(void *arg) {
  long total = *(long *)arg;
  long now = atomic_fetch_add(&alive_now, 1) + 1;
  long peak = atomic_load(&alive_peak);
  while (now > peak && !atomic_compare_exchange_weak(&alive_peak, &peak, now))
    ;
  /* stay alive until every fiber has started */
  while (atomic_load(&alive_peak) < total)
    CHECK_OK(fib_yield());
  CHECK_OK(fib_yield());
  atomic_fetch_sub(&alive_now, 1);
  atomic_fetch_add(&finished, 1);
  return NULL;
}

TEST(hundred_thousand_fibers_alive_at_once) {
  long total = scaled(100000);
  fib_runtime *rt;
  fib_attr detached = {.flags = FIB_DETACHED};
  rt = new_runtime();
  for (long i = 0; i < total; i++)
    CHECK_OK(fib_spawn(rt, wait_for_all, &total, &detached, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(atomic_load(&alive_peak), total);
  CHECK_EQ(atomic_load(&finished), total);
  CHECK_OK(fib_runtime_destroy(rt));
}

static void *add_one(void *arg) { return (void *)((intptr_t)arg + 1); }

struct cycles {
  long n;
  long rss_after_warmup, rss_end;
  long maps_after_warmup, maps_end;
};

static void *spawn_join_loop(void *arg) {
  struct cycles *c = arg;
  for (long i = 0; i < c->n; i++) {
    fib_id id;
    void *r;
    CHECK_OK(fib_spawn(NULL, add_one, (void *)(intptr_t)i, NULL, &id));
    CHECK_OK(fib_join(id, &r));
    if ((intptr_t)r != i + 1)
      CHECK_EQ((intptr_t)r, i + 1);
    if (i == 1000) {
      c->rss_after_warmup = resident_kib();
      c->maps_after_warmup = count_mappings();
    }
  }
  c->rss_end = resident_kib();
  c->maps_end = count_mappings();
  return NULL;
}

TEST(million_spawn_join_cycles_stay_flat) {
  struct cycles c = {.n = scaled(1000000)};
  if (c.n < 2000)
    c.n = 2000; /* the flatness check needs a warm-up point */
  fib_runtime *rt;
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, spawn_join_loop, &c, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  /* flat: a leak of even one page per cycle would add gigabytes. TSan's
   * own shadow and history buffers grow by tens of MiB regardless, so
   * under TSan the bound is wider (still far below one page per cycle). */
  long allowed_kib = 1024;
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strncmp(tool, "tsan", 4) == 0) {
    allowed_kib = 64 * 1024;
    printf("# under TSan: resident growth allowed up to %ld KiB (TSan's "
           "shadow); grew %ld KiB\n", allowed_kib,
           c.rss_end - c.rss_after_warmup);
  }
  if (c.rss_end - c.rss_after_warmup > allowed_kib)
    check_failed(__FILE__, __LINE__, "resident memory grew from %ld to %ld KiB",
                 c.rss_after_warmup, c.rss_end);
  /* TSan maps meta memory of its own as the program runs */
  CHECK(c.maps_end - c.maps_after_warmup <= (allowed_kib > 1024 ? 64 : 2));
}

TEST_MAIN(T_ONE_WORKER(ten_million_switches,
                       "makes no runtime: coroutines only"), T(hundred_thousand_fibers_alive_at_once),
          T_ONE_WORKER(million_spawn_join_cycles_stay_flat,
                       "with several workers, stacks made on the spawner and freed on the thief pile up in the thief's pool until its quiet-period trim 1 s later: resident memory then follows the rate"))
