/* SPDX-License-Identifier: MIT */
/*
 * test_seed.c -- the seeded test mode (FIB_SEEDED, FIBERS_SEED): the same
 * seed replays the same interleaving, other seeds take others; virtual
 * time; preemption points; select's choice; I/O between fibers; logical
 * workers; the settings and their errors; the seed in a fatal message;
 * and the driver of <fibers/seedtest.h>.
 */
#include "fiber_helpers.h"

#include <fibers/io.h>
#include <fibers/seedtest.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- traces */

/* What the fibers of a run did, in order: the interleaving. */
#define TRACE_MAX 4096
static int trace[TRACE_MAX];
static size_t trace_len;

static void note(int what) {
  if (trace_len < TRACE_MAX)
    trace[trace_len++] = what;
}

static fib_runtime *seeded_runtime(uint64_t seed, unsigned flags,
                                   unsigned workers) {
  fib_runtime_opts o = {0};
  o.flags = FIB_SEEDED | flags;
  o.seed = seed;
  o.workers = workers;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &o));
  return rt;
}

/* A workload that uses every kind of choice: yields, a mutex, a buffered
 * and an unbuffered channel, sleeps with equal and different deadlines,
 * a select over two ready channels, joins. */
static fib_mutex mu;
static fib_chan buffered, unbuffered;

static void *worker(void *arg) {
  int me = (int)(intptr_t)arg;
  for (int i = 0; i < 6; i++) {
    note(me * 100 + i);
    switch ((me + i) % 4) {
    case 0:
      CHECK_OK(fib_yield());
      break;
    case 1:
      CHECK_OK(fib_mutex_lock(&mu));
      note(me * 100 + 50);
      CHECK_OK(fib_yield()); /* others queue on the mutex */
      CHECK_OK(fib_mutex_unlock(&mu));
      break;
    case 2:
      CHECK_OK(fib_sleep_ns((uint64_t)(i % 2 + 1) * MS));
      break;
    default:
      CHECK_OK(fib_chan_send(&buffered, &me));
      break;
    }
  }
  return NULL;
}

static void *selector(void *arg) {
  (void)arg;
  for (int got = 0; got < 12;) {
    int a, b;
    fib_select_case cases[2] = {
        {.op = FIB_SELECT_RECV, .chan = &buffered, .elem = &a},
        {.op = FIB_SELECT_RECV, .chan = &unbuffered, .elem = &b}};
    int k = fib_select(cases, 2);
    CHECK(k == 0 || k == 1);
    note(k == 0 ? 9000 + a : 9500 + b);
    got++;
  }
  return NULL;
}

static void *feeder(void *arg) {
  (void)arg;
  for (int i = 0; i < 12 - 6; i++) { /* 6 on unbuffered, the workers' 6
                                        sends (case 3) fill the rest */
    CHECK_OK(fib_chan_send(&unbuffered, &i));
    note(8000 + i);
  }
  return NULL;
}

static void *workload(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_init(&mu));
  CHECK_OK(fib_chan_init(&buffered, sizeof(int), 4));
  CHECK_OK(fib_chan_init(&unbuffered, sizeof(int), 0));
  fib_id ids[6];
  for (int w = 0; w < 4; w++)
    CHECK_OK(fib_spawn(NULL, worker, (void *)(intptr_t)(w + 1), NULL,
                       &ids[w]));
  CHECK_OK(fib_spawn(NULL, selector, NULL, NULL, &ids[4]));
  CHECK_OK(fib_spawn(NULL, feeder, NULL, NULL, &ids[5]));
  for (int i = 0; i < 6; i++) {
    CHECK_OK(fib_join(ids[i], NULL));
    note(7000 + i);
  }
  CHECK_OK(fib_mutex_destroy(&mu));
  CHECK_OK(fib_chan_destroy(&buffered));
  CHECK_OK(fib_chan_destroy(&unbuffered));
  return NULL;
}

/* Run the workload with a seed; its trace in out (TRACE_MAX ints). */
static size_t run_workload(uint64_t seed, unsigned flags, unsigned workers,
                           int *out) {
  trace_len = 0;
  fib_runtime *rt = seeded_runtime(seed, flags, workers);
  CHECK_OK(fib_spawn(rt, workload, NULL, NULL, NULL));
  run_to_end(rt);
  memcpy(out, trace, trace_len * sizeof *trace);
  return trace_len;
}

static int first[TRACE_MAX], again[TRACE_MAX];

/* The same seed gives the same trace, several seeds give several. */
static void check_replay(unsigned flags, unsigned workers) {
  size_t distinct = 0;
  size_t n0 = 0;
  static int base[TRACE_MAX];
  for (uint64_t seed = 1; seed <= 8; seed++) {
    size_t n = run_workload(seed, flags, workers, first);
    size_t m = run_workload(seed, flags, workers, again);
    CHECK_EQ(n, m);
    CHECK(memcmp(first, again, n * sizeof *first) == 0);
    CHECK(n > 40); /* the workload ran in full */
    if (seed == 1) {
      memcpy(base, first, n * sizeof *first);
      n0 = n;
    } else if (n != n0 || memcmp(base, first, n * sizeof *first) != 0) {
      distinct++;
    }
  }
  CHECK(distinct >= 5); /* of 7 other seeds: the seed matters */
}

TEST(the_same_seed_replays_the_same_interleaving) { check_replay(0, 0); }

TEST(with_preemption_points_too) { check_replay(FIB_SEED_PREEMPT, 0); }

TEST(with_logical_workers_too) { check_replay(FIB_SEED_PREEMPT, 4); }

/* Without the mode, the order is the documented one, whatever the seed
 * field says (it is only read with FIB_SEEDED). */
TEST(the_seed_is_ignored_without_the_flag) {
  fib_runtime_opts o = {0};
  o.seed = 5;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &o));
  uint64_t seed = 0;
  CHECK_EQ(fib_runtime_seed(rt, &seed), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  rt = seeded_runtime(77, 0, 0);
  CHECK_EQ(fib_runtime_seed(rt, &seed), 1);
  CHECK_EQ(seed, 77);
  CHECK_EQ(fib_runtime_seed(rt, NULL), 1);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib_runtime_seed(NULL, &seed), FIB_EINVAL);
}

/* ------------------------------------------------------- virtual time */

static uint64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t woke_at[3];

static void *sleeper(void *arg) {
  int i = (int)(intptr_t)arg;
  uint64_t start = fib_now_ns();
  CHECK_OK(fib_sleep_ns((uint64_t)(i + 1) * 60 * 1000 * MS)); /* minutes */
  woke_at[i] = fib_now_ns() - start;
  return NULL;
}

TEST(sleeps_of_minutes_take_no_real_time) {
  uint64_t before = real_ns();
  fib_runtime *rt = seeded_runtime(3, 0, 0);
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, sleeper, (void *)(intptr_t)i, NULL, NULL));
  run_to_end(rt);
  for (int i = 0; i < 3; i++) {
    uint64_t want = (uint64_t)(i + 1) * 60 * 1000 * MS;
    CHECK(woke_at[i] >= want);
    CHECK(woke_at[i] < want + MS); /* a few dispatches past it */
  }
  /* Three minutes of virtual sleep; far less than that for real (a
   * generous bound: this checks that nobody waited, not a speed). */
  CHECK(real_ns() - before < 30000 * MS);
}

/* A deadline and a completion race by the clock, deterministically: the
 * earlier one wins, every run. */
struct race {
  fib_chan ch;
  uint64_t send_after, deadline_after;
  int result;
};

static void *late_sender(void *arg) {
  struct race *r = arg;
  CHECK_OK(fib_sleep_ns(r->send_after));
  int v = 1;
  (void)fib_chan_send_until(&r->ch, &v, fib_now_ns() + 1000 * MS);
  return NULL;
}

static void *timed_receiver(void *arg) {
  struct race *r = arg;
  int v;
  r->result = fib_chan_recv_until(&r->ch, &v, fib_now_ns() + r->deadline_after);
  return NULL;
}

static int race_once(uint64_t seed, uint64_t send_after, uint64_t deadline) {
  struct race r = {.send_after = send_after, .deadline_after = deadline};
  fib_runtime *rt = seeded_runtime(seed, FIB_SEED_PREEMPT, 0);
  CHECK_OK(fib_chan_init(&r.ch, sizeof(int), 0));
  CHECK_OK(fib_spawn(rt, late_sender, &r, NULL, NULL));
  CHECK_OK(fib_spawn(rt, timed_receiver, &r, NULL, NULL));
  run_to_end(rt);
  CHECK_OK(fib_chan_destroy(&r.ch));
  return r.result;
}

TEST(timeouts_race_by_the_virtual_clock) {
  for (uint64_t seed = 0; seed < 20; seed++) {
    CHECK_EQ(race_once(seed, 10 * MS, 5 * MS), FIB_ETIMEDOUT);
    CHECK_EQ(race_once(seed, 5 * MS, 10 * MS), 0);
    CHECK_EQ(race_once(seed, 59000 * MS, 60000 * MS), 0);
  }
}

/* A host loop of fib_run_nowait (or fib_run_once) gets there too: with
 * nothing ready, they move the clock instead of waiting. */
TEST(bounded_runs_move_the_clock) {
  for (int once = 0; once < 2; once++) {
    fib_runtime *rt = seeded_runtime(5, 0, 0);
    for (int i = 0; i < 3; i++)
      CHECK_OK(fib_spawn(rt, sleeper, (void *)(intptr_t)i, NULL, NULL));
    int rounds = 0, n;
    while ((n = once ? fib_run_once(rt) : fib_run_nowait(rt)) > 0)
      CHECK(++rounds < 100);
    CHECK_EQ(n, 0);
    CHECK(woke_at[2] >= 3 * 60 * 1000 * MS);
    CHECK_OK(fib_runtime_destroy(rt));
  }
}

/* A fiber that polls the clock between yields sees time pass. */
static void *clock_watcher(void *arg) {
  uint64_t end = fib_now_ns() + 10 * MS;
  unsigned long turns = 0;
  while (fib_now_ns() < end) {
    CHECK_OK(fib_yield());
    turns++;
  }
  *(unsigned long *)arg = turns;
  return NULL;
}

TEST(time_moves_while_fibers_run) {
  unsigned long turns = 0;
  fib_runtime *rt = seeded_runtime(9, 0, 0);
  CHECK_OK(fib_spawn(rt, clock_watcher, &turns, NULL, NULL));
  run_to_end(rt);
  CHECK(turns >= 9000 && turns <= 10001); /* 1 us per dispatch */
}

/* Offload jobs finish in real time while virtual time waits for them: a
 * job that takes 20 real milliseconds is done before a 1 ms virtual sleep
 * ends, every run. */
static int order[2], order_len;

static void slow_job(void *arg) {
  (void)arg;
  usleep(20000);
}

static void *offloader(void *arg) {
  (void)arg;
  CHECK_OK(fib_offload(slow_job, NULL));
  order[order_len++] = 1;
  return NULL;
}

static void *short_sleeper(void *arg) {
  (void)arg;
  CHECK_OK(fib_sleep_ns(MS));
  order[order_len++] = 2;
  return NULL;
}

TEST(virtual_time_waits_for_offload_jobs) {
  for (uint64_t seed = 0; seed < 4; seed++) {
    order_len = 0;
    fib_runtime *rt = seeded_runtime(seed, 0, 0);
    CHECK_OK(fib_spawn(rt, offloader, NULL, NULL, NULL));
    CHECK_OK(fib_spawn(rt, short_sleeper, NULL, NULL, NULL));
    run_to_end(rt);
    CHECK_EQ(order_len, 2);
    CHECK_EQ(order[0], 1);
    CHECK_EQ(order[1], 2);
  }
}

/* ------------------------------------------- choices the seed makes */

/* fib_select among ready cases: the seed decides, and decides the same
 * way again. */
static unsigned picks;

static void *picker(void *arg) {
  (void)arg;
  fib_chan a, b;
  CHECK_OK(fib_chan_init(&a, sizeof(int), 64));
  CHECK_OK(fib_chan_init(&b, sizeof(int), 64));
  picks = 0;
  for (int i = 0; i < 16; i++) {
    int v = i;
    CHECK_OK(fib_chan_send(&a, &v));
    CHECK_OK(fib_chan_send(&b, &v));
  }
  for (int i = 0; i < 16; i++) {
    int x;
    fib_select_case c[2] = {{.op = FIB_SELECT_RECV, .chan = &a, .elem = &x},
                            {.op = FIB_SELECT_RECV, .chan = &b, .elem = &x}};
    int k = fib_select(c, 2);
    CHECK(k == 0 || k == 1);
    picks = picks << 1 | (unsigned)k;
  }
  CHECK_OK(fib_chan_destroy(&a));
  CHECK_OK(fib_chan_destroy(&b));
  return NULL;
}

static unsigned select_picks(uint64_t seed) {
  fib_runtime *rt = seeded_runtime(seed, 0, 0);
  CHECK_OK(fib_spawn(rt, picker, NULL, NULL, NULL));
  run_to_end(rt);
  return picks;
}

TEST(select_takes_the_case_the_seed_chooses) {
  unsigned p1 = select_picks(1);
  CHECK_EQ(select_picks(1), p1);
  CHECK(p1 != 0 && p1 != 0xffff); /* both cases were taken */
  unsigned distinct = 0;
  for (uint64_t seed = 2; seed < 6; seed++)
    distinct += select_picks(seed) != p1;
  CHECK(distinct >= 3);
}

/* The lost update the mode exists to find: check, then act, with a call
 * that may wait in between. In the usual order (and in a seeded order
 * without preemption points) nothing gives way there; with them, some
 * seed lets the other fiber in, and the same seed does it again. */
static int balance;
static fib_mutex log_lock;

static void *withdraw(void *arg) {
  (void)arg;
  if (balance >= 80) {
    CHECK_OK(fib_mutex_lock(&log_lock)); /* never contended */
    CHECK_OK(fib_mutex_unlock(&log_lock));
    balance -= 80;
  }
  return NULL;
}

static int overdrawn(uint64_t seed, unsigned flags) {
  balance = 100;
  fib_runtime *rt = seeded_runtime(seed, flags, 0);
  CHECK_OK(fib_mutex_init(&log_lock));
  CHECK_OK(fib_spawn(rt, withdraw, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, withdraw, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_OK(fib_mutex_destroy(&log_lock));
  return balance < 0;
}

TEST(preemption_points_find_a_lost_update_and_replay_it) {
  for (uint64_t seed = 0; seed < 50; seed++)
    CHECK_EQ(overdrawn(seed, 0), 0); /* no point: never found */
  uint64_t found = UINT64_MAX;
  for (uint64_t seed = 0; seed < 50 && found == UINT64_MAX; seed++)
    if (overdrawn(seed, FIB_SEED_PREEMPT))
      found = seed;
  CHECK(found != UINT64_MAX);
  for (int i = 0; i < 5; i++)
    CHECK_EQ(overdrawn(found, FIB_SEED_PREEMPT), 1);
}

/* Deadlock is still found, and a program's first run still ends. */
static fib_sem never;

static void *waits_forever(void *arg) {
  (void)arg;
  CHECK_EQ(fib_sem_wait(&never), FIB_ECANCELED);
  return NULL;
}

TEST(a_deadlock_is_reported_in_seeded_mode) {
  fib_runtime *rt = seeded_runtime(4, FIB_SEED_PREEMPT, 0);
  CHECK_OK(fib_sem_init(&never, 0));
  fib_id id;
  CHECK_OK(fib_spawn(rt, waits_forever, NULL, NULL, &id));
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_OK(fib_cancel(rt, id));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_sem_destroy(&never));
}

/* ------------------------------------------------------------------ I/O */

/* Ping-pong over a socketpair between fibers: epoll, whatever was asked
 * for, and the same trace for the same seed. */
static int pair[2];

static void *pinger(void *arg) {
  (void)arg;
  char b = 0;
  for (int i = 0; i < 20; i++) {
    CHECK_EQ(fib_write(pair[0], &b, 1), 1);
    CHECK_EQ(fib_read(pair[0], &b, 1), 1);
    note(100 + b);
    b++;
  }
  return NULL;
}

static void *ponger(void *arg) {
  (void)arg;
  char b;
  for (int i = 0; i < 20; i++) {
    CHECK_EQ(fib_read(pair[1], &b, 1), 1);
    note(200 + b);
    CHECK_EQ(fib_write(pair[1], &b, 1), 1);
  }
  return NULL;
}

static void *bystander(void *arg) {
  (void)arg;
  for (int i = 0; i < 30; i++) {
    note(300 + i);
    CHECK_OK(fib_yield());
  }
  return NULL;
}

static size_t io_trace(uint64_t seed, int *out) {
  trace_len = 0;
  CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair));
  fib_runtime_opts o = {0};
  o.flags = FIB_SEEDED | FIB_SEED_PREEMPT;
  o.seed = seed;
  o.io_backend = FIB_IO_URING;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &o));
  CHECK_OK(fib_spawn(rt, pinger, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, ponger, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, bystander, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_STR_EQ(fib_runtime_io_backend(rt), "epoll");
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_close(pair[0])); /* the runtime forgets the numbers */
  CHECK_OK(fib_close(pair[1]));
  memcpy(out, trace, trace_len * sizeof *trace);
  return trace_len;
}

TEST(io_between_fibers_replays_too) {
  size_t distinct = 0, n1 = 0;
  static int base[TRACE_MAX];
  for (uint64_t seed = 1; seed <= 5; seed++) {
    size_t n = io_trace(seed, first);
    CHECK_EQ(n, 70);
    CHECK_EQ(io_trace(seed, again), n);
    CHECK(memcmp(first, again, n * sizeof *first) == 0);
    if (seed == 1) {
      memcpy(base, first, n * sizeof *first);
      n1 = n;
    } else {
      distinct += memcmp(base, first, n1 * sizeof *first) != 0;
    }
  }
  CHECK(distinct >= 3);
}

/* ----------------------------------------------------- logical workers */

static pthread_t main_thread;
static int off_thread;
static long counter;

static void *counting(void *arg) {
  fib_mutex *m = arg;
  if (!pthread_equal(pthread_self(), main_thread))
    off_thread = 1;
  for (int i = 0; i < 100; i++) {
    CHECK_OK(fib_mutex_lock(m));
    long v = counter;
    CHECK_OK(fib_yield());
    counter = v + 1;
    CHECK_OK(fib_mutex_unlock(m));
  }
  return NULL;
}

TEST(logical_workers_run_on_one_thread_with_shared_primitives) {
  main_thread = pthread_self();
  fib_runtime *rt = seeded_runtime(12, FIB_SEED_PREEMPT, 4);
  fib_mutex m;
  CHECK_OK(fib_mutex_init(&m)); /* shared: a 4-worker runtime exists */
  fib_attr attr = {0};
  for (unsigned w = 0; w <= 4; w++) {
    attr.worker = w;
    CHECK_OK(fib_spawn(rt, counting, &m, &attr, NULL));
  }
  attr.worker = 5;
  CHECK_EQ(fib_spawn(rt, counting, &m, &attr, NULL), FIB_EINVAL);
  CHECK_OK(fib_run(rt));
  CHECK_EQ(counter, 500);
  CHECK_EQ(off_thread, 0);
  /* fib_run_once and friends work: there is one thread */
  CHECK_OK(fib_spawn(rt, counting, &m, NULL, NULL));
  while (fib_run_once(rt) > 0)
    ;
  CHECK_EQ(counter, 600);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_mutex_destroy(&m));
}

/* ------------------------------------------------------------ settings */

TEST(options_and_environment) {
  fib_runtime_opts o = {0};
  fib_runtime *rt;
  o.flags = FIB_SEED_PREEMPT; /* without FIB_SEEDED */
  CHECK_EQ(fib_runtime_create(&rt, &o), FIB_EINVAL);
  o.flags = 1u << 7;
  CHECK_EQ(fib_runtime_create(&rt, &o), FIB_EINVAL);

  uint64_t seed;
  CHECK_OK(setenv("FIBERS_SEED", "0x2a", 1));
  CHECK_OK(fib_runtime_create(&rt, NULL)); /* on, from the environment */
  CHECK_EQ(fib_runtime_seed(rt, &seed), 1);
  CHECK_EQ(seed, 42);
  CHECK_OK(fib_runtime_destroy(rt));
  o.flags = FIB_SEEDED;
  o.seed = 7; /* the variable wins */
  CHECK_OK(fib_runtime_create(&rt, &o));
  CHECK_EQ(fib_runtime_seed(rt, &seed), 1);
  CHECK_EQ(seed, 42);
  CHECK_OK(fib_runtime_destroy(rt));
  const char *bad[] = {"", "x", "12abc", "-1", "99999999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_OK(setenv("FIBERS_SEED", bad[i], 1));
    CHECK_EQ(fib_runtime_create(&rt, NULL), FIB_EINVAL);
  }
  CHECK_OK(unsetenv("FIBERS_SEED"));

  /* FIBERS_SEED_PREEMPT turns the points on and off: seen through the
   * lost update, which only the points expose. */
  CHECK_OK(setenv("FIBERS_SEED_PREEMPT", "1", 1));
  int found = 0;
  for (uint64_t s = 0; s < 50 && !found; s++)
    found = overdrawn(s, 0);
  CHECK(found);
  CHECK_OK(setenv("FIBERS_SEED_PREEMPT", "0", 1));
  for (uint64_t s = 0; s < 50; s++)
    CHECK_EQ(overdrawn(s, FIB_SEED_PREEMPT), 0);
  CHECK_OK(unsetenv("FIBERS_SEED_PREEMPT"));
}

/* A fatal error in a seeded run names the seed that replays it. */
static void *compact_waits(void *arg) {
  fib_mutex *m = arg;
  (void)fib_mutex_lock(m); /* a compact fiber in a waitq wait: fatal */
  return NULL;
}

static void *holds_then_spawns(void *arg) {
  fib_mutex *m = arg;
  CHECK_OK(fib_mutex_lock(m));
  fib_attr attr = {0};
  attr.flags = FIB_COMPACT;
  CHECK_OK(fib_spawn(NULL, compact_waits, m, &attr, NULL));
  CHECK_OK(fib_sleep_ns(MS));
  CHECK_OK(fib_mutex_unlock(m));
  return NULL;
}

TEST(a_fatal_error_names_the_seed) {
  int err_pipe[2];
  CHECK_OK(pipe(err_pipe));
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    fib_runtime *rt = seeded_runtime(31337, 0, 0);
    fib_mutex m;
    CHECK_OK(fib_mutex_init(&m));
    CHECK_OK(fib_spawn(rt, holds_then_spawns, &m, NULL, NULL));
    (void)fib_run(rt);
    _exit(0); /* not reached: the run aborts */
  }
  close(err_pipe[1]);
  char buf[1024] = {0};
  size_t got = 0;
  ssize_t n;
  while (got < sizeof buf - 1 &&
         (n = read(err_pipe[0], buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)n;
  close(err_pipe[0]);
  int status;
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  CHECK(strstr(buf, "fibers: fatal: ") != NULL);
  CHECK(strstr(buf, "seeded run: FIBERS_SEED=31337 replays it") != NULL);
}

/* ---------------------------------------------------------- the driver */

static int lost_update_test(void *arg) {
  (void)arg;
  balance = 100;
  fib_mutex_init(&log_lock);
  fib_id a, b;
  fib_spawn(NULL, withdraw, NULL, NULL, &a);
  fib_spawn(NULL, withdraw, NULL, NULL, &b);
  fib_join(a, NULL);
  fib_join(b, NULL);
  fib_mutex_destroy(&log_lock);
  return balance < 0;
}

static int always_passes(void *arg) {
  (void)arg;
  CHECK_OK(fib_yield());
  return 0;
}

static int deadlocks(void *arg) {
  (void)arg;
  fib_sem s;
  fib_sem_init(&s, 0);
  fib_sem_wait(&s);
  return 0;
}

static int crashes(void *arg) {
  (void)arg;
  abort();
}

/* The driver's report, read back from a temporary file. */
static char report[4096];

static int drive(fib_seedtest_fn fn, fib_seedtest_opts *o, uint64_t *bad) {
  FILE *f = tmpfile();
  CHECK(f != NULL);
  o->report = f;
  o->program = "./t";
  int r = fib_seedtest("t", fn, NULL, o, bad);
  rewind(f);
  size_t n = fread(report, 1, sizeof report - 1, f);
  report[n] = 0;
  fclose(f);
  return r;
}

TEST(the_driver_finds_reports_and_replays_the_first_failing_seed) {
  fib_seedtest_opts o = {0};
  o.seeds = 200;
  o.flags = FIB_SEED_PREEMPT;
  uint64_t bad = UINT64_MAX;
  CHECK_EQ(drive(lost_update_test, &o, &bad), 1);
  CHECK(bad < 200);
  char want[128];
  snprintf(want, sizeof want, "seedtest t: seed %llu FAILED: the test "
           "returned 1", (unsigned long long)bad);
  CHECK(strstr(report, want) != NULL);
  snprintf(want, sizeof want, "replay: FIBERS_SEED=%llu "
           "FIBERS_SEED_PREEMPT=1 ./t", (unsigned long long)bad);
  CHECK(strstr(report, want) != NULL);
  /* The same search in the process finds the same seed. */
  uint64_t again_bad = UINT64_MAX;
  o.in_process = 1;
  CHECK_EQ(drive(lost_update_test, &o, &again_bad), 1);
  CHECK_EQ(again_bad, bad);
  /* The replay: FIBERS_SEED runs that seed alone, and it fails again. */
  char seed_text[32];
  snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)bad);
  CHECK_OK(setenv("FIBERS_SEED", seed_text, 1));
  o.in_process = 0;
  CHECK_EQ(drive(lost_update_test, &o, &again_bad), 1);
  CHECK(strstr(report, "replayed seed") != NULL);
  CHECK(strstr(report, "FAILED") != NULL);
  CHECK_OK(unsetenv("FIBERS_SEED"));
}

TEST(the_driver_counts_passes_deadlocks_crashes_and_budgets) {
  fib_seedtest_opts o = {0};
  o.seeds = 20;
  uint64_t bad = UINT64_MAX;
  CHECK_EQ(drive(always_passes, &o, &bad), 0);
  CHECK(strstr(report, "20 seeds passed (0 to 19)") != NULL);
  o.first_seed = 1000;
  o.seeds = 3;
  CHECK_EQ(drive(deadlocks, &o, &bad), 1);
  CHECK_EQ(bad, 1000);
  CHECK(strstr(report, "EDEADLK") != NULL);
  CHECK_EQ(drive(crashes, &o, &bad), 1);
  CHECK(strstr(report, "signal 6 (SIGABRT") != NULL);
  /* A time budget stops the search early (it always runs one seed). */
  o.seeds = 1000000;
  o.seconds = 1e-9;
  CHECK_EQ(drive(always_passes, &o, &bad), 0);
  CHECK(strstr(report, "1 seeds passed (1000 to 1000)") != NULL);
}

TEST_MAIN(T(the_same_seed_replays_the_same_interleaving),
          T(with_preemption_points_too),
          T(with_logical_workers_too),
          T(the_seed_is_ignored_without_the_flag),
          T(sleeps_of_minutes_take_no_real_time),
          T(timeouts_race_by_the_virtual_clock),
          T(bounded_runs_move_the_clock),
          T(time_moves_while_fibers_run),
          T(virtual_time_waits_for_offload_jobs),
          T(select_takes_the_case_the_seed_chooses),
          T(preemption_points_find_a_lost_update_and_replay_it),
          T(a_deadlock_is_reported_in_seeded_mode),
          T(io_between_fibers_replays_too),
          T(logical_workers_run_on_one_thread_with_shared_primitives),
          T(options_and_environment),
          T(a_fatal_error_names_the_seed),
          T(the_driver_finds_reports_and_replays_the_first_failing_seed),
          T(the_driver_counts_passes_deadlocks_crashes_and_budgets))
