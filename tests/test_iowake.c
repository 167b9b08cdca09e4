/* SPDX-License-Identifier: MIT */
/*
 * test_iowake.c -- a worker, or a one-worker runtime that has been posted
 * to, asleep in its I/O poller is woken from another thread at once
 * through its poller's wake-up eventfd (workers.h), not by a bounded nap:
 * a fiber readied from another worker, a post. Counted, not timed: the
 * process's voluntary context switches over a quiet stretch say how often
 * a sleeper woke (one per wake-up; a 1 ms nap would make hundreds), and
 * its CPU time how much that cost. Also: the wake-up descriptor is made
 * only when a wake-up may come from another thread, CLOEXEC and
 * non-blocking; wake-ups and a user's own descriptor stay apart; if the
 * eventfd cannot be made, the sleeper naps and nothing hangs. Runs on
 * both back ends (tests/CMakeLists.txt: test_io*).
 */
#include "io_helpers.h"

#include "io/poller.h"
#include "sys.h"

#include <fibers.h>
#include <fibers/io.h>

#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>

/* A quiet stretch lasts this long: with 1 ms naps, some 200 wake-ups. */
#define QUIET_NS (200 * MS)

/* At most this many voluntary switches over a quiet stretch: the few
 * sleeps and wake-ups it takes (each worker's sleep, the test's own
 * sleeps), with room for the tools; naps would make ~QUIET_NS / 1 ms. */
#define QUIET_SWITCHES 40


static long voluntary_switches(void) {
  struct rusage u;
  CHECK_EQ(getrusage(RUSAGE_SELF, &u), 0);
  return u.ru_nvcsw;
}

static uint64_t cpu_ns(void) {
  struct timespec ts;
  CHECK_EQ(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_thread_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* What the quiet stretch of a case measured. */
struct quiet {
  long switches;
  uint64_t cpu;
};

static void quiet_begin(struct quiet *q) {
  q->switches = voluntary_switches();
  q->cpu = cpu_ns();
}

static void quiet_end(struct quiet *q) {
  q->switches = voluntary_switches() - q->switches;
  q->cpu = cpu_ns() - q->cpu;
}

/* ---- (a) a fiber on worker 0 readies one on worker 1, which sleeps in
 * its poller (a fiber of it waits on a socket) */

struct cross {
  fib_chan ch;
  int sv[2];
  long got;          /* what worker 1's receiver received */
  char byte;         /* what worker 1's reader read */
  struct quiet q;
  const char *backend;
};

static void *holder(void *arg) { /* worker 1: keeps it in an I/O wait */
  struct cross *c = arg;
  CHECK_EQ(fib_read(c->sv[0], &c->byte, 1), 1);
  return NULL;
}

static void *receiver(void *arg) { /* worker 1: readied from worker 0 */
  struct cross *c = arg;
  CHECK_OK(fib_chan_recv(&c->ch, &c->got));
  CHECK_EQ(fib_write(c->sv[1], "x", 1), 1); /* ends holder's wait */
  return NULL;
}

static void *sender(void *arg) { /* worker 0 */
  struct cross *c = arg;
  CHECK_OK(fib_sleep_ns(100 * MS)); /* worker 1 settles in its poller */
  quiet_begin(&c->q);
  CHECK_OK(fib_sleep_ns(QUIET_NS));
  quiet_end(&c->q);
  long v = 42;
  CHECK_OK(fib_chan_send(&c->ch, &v));
  return NULL;
}

TEST(a_fiber_readied_from_another_worker_wakes_its_poller) {
  require_backend();
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  struct cross c = {0};
  make_socketpair(c.sv);
  CHECK_OK(fib_chan_init(&c.ch, sizeof(long), 0)); /* shared: 2 workers */
  fib_attr on1 = {0};
  on1.worker = 2; /* worker 1, pinned */
  fib_attr on0 = {0};
  on0.worker = 1;
  CHECK_OK(fib_spawn(rt, holder, &c, &on1, NULL));
  CHECK_OK(fib_spawn(rt, receiver, &c, &on1, NULL));
  CHECK_OK(fib_spawn(rt, sender, &c, &on0, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_EQ(c.got, 42);
  CHECK_EQ(c.byte, 'x');
  CHECK_OK(fib_chan_destroy(&c.ch));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(close(c.sv[0]), 0);
  CHECK_EQ(close(c.sv[1]), 0);
  if (c.q.switches > QUIET_SWITCHES)
    CHECK_EQ(c.q.switches, 0); /* print the figure */
}

/* ---- (a) a post reaches a one-worker runtime asleep in its poller */

struct posted {
  fib_runtime *rt;
  int sv[2];
  char byte;
  int wake_fd;        /* the runtime thread's poller's, after the wait */
  int wake_fd_flags;  /* its FD_CLOEXEC */
  int wake_fl;        /* its O_NONBLOCK */
  int posts_ran;
};

static void note_wake_fd(struct posted *p) {
  struct fib__poller *pl = fib__poller_peek();
  CHECK(pl != NULL);
  p->wake_fd = pl->wake_fd;
  if (p->wake_fd >= 0) {
    p->wake_fd_flags = fcntl(p->wake_fd, F_GETFD);
    p->wake_fl = fcntl(p->wake_fd, F_GETFL);
  }
}

static void *posted_reader(void *arg) {
  struct posted *p = arg;
  CHECK_EQ(fib_read(p->sv[0], &p->byte, 1), 1);
  note_wake_fd(p);
  return NULL;
}

static void *posted_write(void *arg) { /* runs in the runtime: a post */
  struct posted *p = arg;
  p->posts_ran++;
  CHECK_EQ(fib_write(p->sv[1], "y", 1), 1);
  return NULL;
}

static void *run_it(void *arg) {
  struct posted *p = arg;
  CHECK_OK(fib_run(p->rt));
  return NULL;
}

/* A FIB_ACCEPT_POSTS runtime on a thread of its own, whose one fiber
 * reads a socket; a quiet stretch, then a post that writes to the socket.
 * The quiet stretch's figures in *q. */
static void post_into_poller(struct posted *p, struct quiet *q) {
  fib_runtime_opts opts = {0};
  opts.flags = FIB_ACCEPT_POSTS;
  CHECK_OK(fib_runtime_create(&p->rt, &opts));
  p->wake_fd = -2;
  make_socketpair(p->sv);
  CHECK_OK(fib_spawn(p->rt, posted_reader, p, NULL, NULL));
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, run_it, p), 0);
  sleep_thread_ns(100 * MS); /* it settles in its poller */
  quiet_begin(q);
  sleep_thread_ns(QUIET_NS);
  quiet_end(q);
  CHECK_OK(fib_post(p->rt, posted_write, p));
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(p->byte, 'y');
  CHECK_EQ(p->posts_ran, 1);
  CHECK_OK(fib_runtime_destroy(p->rt));
  CHECK_EQ(close(p->sv[0]), 0);
  CHECK_EQ(close(p->sv[1]), 0);
}

TEST(a_post_wakes_a_runtime_in_its_poller) {
  require_backend();
  struct posted p = {0};
  struct quiet q;
  post_into_poller(&p, &q);
  /* The wake-up descriptor: made (the runtime slept in its poller with
   * posts possible), close-on-exec, non-blocking. */
  CHECK(p.wake_fd >= 0);
  CHECK(p.wake_fd != p.sv[0] && p.wake_fd != p.sv[1]);
  CHECK(p.wake_fd_flags >= 0 && (p.wake_fd_flags & FD_CLOEXEC));
  CHECK(p.wake_fl >= 0 && (p.wake_fl & O_NONBLOCK));
  if (q.switches > QUIET_SWITCHES)
    CHECK_EQ(q.switches, 0); /* print the figure */
}

/* ---- the fallback: no eventfd (EMFILE), so the sleeper naps */

TEST(without_an_eventfd_the_sleeper_naps_and_the_post_arrives) {
  require_backend();
  struct posted p = {0};
  struct quiet q;
  fib__fault_inject_err(FIB__FAULT_EVENTFD, 1, 1, EMFILE);
  post_into_poller(&p, &q);
  long tries = fib__fault_calls();
  fib__fault_inject(0, 0, 0);
  CHECK(tries >= 1);       /* it tried to make one */
  CHECK_EQ(p.wake_fd, -1); /* and has none */
  /* Bounded naps instead (~1 ms each): the post still arrived above, and
   * the sleeper woke again and again meanwhile. */
  CHECK(q.switches >= 3);
}

/* ---- (b) an idle 2-worker runtime, one fiber in a socket read: ~0 CPU */

struct idle_read {
  int sv[2];
  struct quiet q;
  uint64_t wall;
};

static void *idle_reader(void *arg) {
  struct idle_read *r = arg;
  char b;
  CHECK_EQ(fib_read_until(r->sv[0], &b, 1, fib_now_ns() + 100 * MS),
           FIB_ETIMEDOUT); /* the other worker settles asleep */
  uint64_t t0 = fib_now_ns();
  quiet_begin(&r->q);
  CHECK_EQ(fib_read_until(r->sv[0], &b, 1, t0 + 300 * MS), FIB_ETIMEDOUT);
  quiet_end(&r->q);
  r->wall = fib_now_ns() - t0;
  return NULL;
}

TEST(an_idle_runtime_with_a_socket_reader_uses_no_cpu) {
  require_backend();
  fib_runtime *rt;
  fib_runtime_opts opts = {0};
  opts.workers = 2;
  CHECK_OK(fib_runtime_create(&rt, &opts));
  struct idle_read r = {0};
  make_socketpair(r.sv);
  CHECK_OK(fib_spawn(rt, idle_reader, &r, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(close(r.sv[0]), 0);
  CHECK_EQ(close(r.sv[1]), 0);
  CHECK(r.wall >= 300 * MS);
  /* Asleep: a wake-up or two and ~0 CPU (here 0.1-0.2 ms); 1 ms naps
   * made ~270 wake-ups and 15 ms. 10 ms leaves room for the tools
   * (valgrind, sanitizers). */
  if (r.q.switches > QUIET_SWITCHES)
    CHECK_EQ(r.q.switches, 0);
  if (r.q.cpu > 10 * MS)
    CHECK_EQ(r.q.cpu, 0u);
}

/* ---- no wake-up descriptor where no wake-up can come from elsewhere */

static void *short_wait(void *arg) {
  int *sv = arg;
  char b;
  CHECK_EQ(fib_read_until(sv[0], &b, 1, fib_now_ns() + 20 * MS),
           FIB_ETIMEDOUT);
  return NULL;
}

TEST(a_runtime_never_posted_to_makes_no_wake_fd) {
  require_backend();
  int sv[2];
  make_socketpair(sv);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, short_wait, sv, NULL, NULL));
  CHECK_OK(fib_run(rt));
  struct fib__poller *pl = fib__poller_peek();
  CHECK(pl != NULL);
  CHECK_EQ(pl->wake_fd, -1);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(close(sv[0]), 0);
  CHECK_EQ(close(sv[1]), 0);
}

/* ---- wake-ups and a user's descriptor stay apart */

struct apart {
  fib_runtime *rt;
  int efd;          /* the user's eventfd, which a fiber waits on */
  int waited;       /* that fiber's wait returned */
  long posts;       /* posts that ran */
  int wake_fd;
};

static void *user_waiter(void *arg) {
  struct apart *a = arg;
  CHECK_EQ(fib_wait_fd(a->efd, FIB_IO_READ), FIB_IO_READ);
  uint64_t v = 0;
  CHECK_EQ(fib_read(a->efd, &v, sizeof v), (ssize_t)sizeof v);
  CHECK_EQ(v, 7u);
  __atomic_store_n(&a->waited, 1, __ATOMIC_RELEASE);
  a->wake_fd = fib__poller_peek()->wake_fd;
  return NULL;
}

static void *count_post(void *arg) {
  struct apart *a = arg;
  __atomic_add_fetch(&a->posts, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void *run_apart(void *arg) {
  struct apart *a = arg;
  CHECK_OK(fib_run(a->rt));
  return NULL;
}

TEST(wake_ups_and_user_descriptors_stay_apart) {
  require_backend();
  struct apart a = {0};
  a.wake_fd = -2;
  a.efd = CHECK_FD(eventfd(0, EFD_CLOEXEC));
  fib_runtime_opts opts = {0};
  opts.flags = FIB_ACCEPT_POSTS;
  CHECK_OK(fib_runtime_create(&a.rt, &opts));
  CHECK_OK(fib_spawn(a.rt, user_waiter, &a, NULL, NULL));
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, run_apart, &a), 0);
  /* Wake-ups through the runtime's descriptor: each post runs, and the
   * user's wait on its own eventfd goes on. */
  for (long i = 1; i <= 5; i++) {
    sleep_thread_ns(10 * MS);
    CHECK_OK(fib_post(a.rt, count_post, &a));
    while (__atomic_load_n(&a.posts, __ATOMIC_ACQUIRE) < i)
      sleep_thread_ns(MS);
    CHECK_EQ(__atomic_load_n(&a.waited, __ATOMIC_ACQUIRE), 0);
  }
  /* The user's descriptor wakes the user's fiber. */
  uint64_t seven = 7;
  CHECK_EQ(write(a.efd, &seven, sizeof seven), (ssize_t)sizeof seven);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(a.waited, 1);
  CHECK(a.wake_fd >= 0 && a.wake_fd != a.efd);
  CHECK_OK(fib_runtime_destroy(a.rt));
  CHECK_EQ(close(a.efd), 0);
}

TEST_MAIN(T(a_fiber_readied_from_another_worker_wakes_its_poller),
          T(a_post_wakes_a_runtime_in_its_poller),
          T(without_an_eventfd_the_sleeper_naps_and_the_post_arrives),
          T(an_idle_runtime_with_a_socket_reader_uses_no_cpu),
          T(a_runtime_never_posted_to_makes_no_wake_fd),
          T(wake_ups_and_user_descriptors_stay_apart))
