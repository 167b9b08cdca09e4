/* SPDX-License-Identifier: MIT */
/*
 * test_io_workers.c -- one descriptor used from two workers of a runtime
 * (each worker polls its own descriptors, in its own epoll set or ring):
 * fib_close on one worker of a descriptor another worker has watched.
 * The number's next descriptor must be watched again on that worker (not
 * left to a record that says it is in the epoll set already: its fiber
 * would wait until its deadline), learned again (O_NONBLOCK, its kind),
 * and the fibers still waiting there for the closed one must get
 * FIB_EBADF. With fibers placed on workers (fib_attr.worker), and with a
 * migratable fiber under the forced mode (FIBERS_FORCE_MIGRATE) that
 * moves itself. And a call that learns the number while a close of it
 * on another worker is between its generation bump and its close(2).
 * Runs on both back ends (tests/CMakeLists.txt: test_io*).
 */
#include "io_helpers.h"

#include "io/poller.h"

#include <fibers.h>
#include <fibers/io.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* How long a fiber that must be woken waits at most: far beyond the
 * wake-up's few milliseconds, so a wait that reaches it was lost. */
#define LONG_WAIT (3000 * MS)

/* What the new descriptor at the closed number is. */
enum { NEW_SOCKET, NEW_PIPE };

/* A new descriptor at number x (free now), and the end that feeds it in
 * *peer: a socket pair's end, or a pipe's read end. Other descriptors the
 * kernel hands out first are moved out of the way with dup2. */
static void make_at(int x, int kind, int *peer) {
  int v[2];
  if (kind == NEW_SOCKET)
    make_socketpair(v);
  else
    make_pipe(v);
  if (v[1] == x) { /* keep the feeding end elsewhere */
    int moved = CHECK_FD(fcntl(v[1], F_DUPFD_CLOEXEC, x + 1));
    CHECK_EQ(close(v[1]), 0);
    v[1] = moved;
  }
  if (v[0] != x) {
    CHECK_EQ(dup2(v[0], x), x);
    CHECK_EQ(close(v[0]), 0);
  }
  *peer = v[1];
}

/* ---- fibers placed on workers 0 and 1 */

struct placed {
  fib_chan to_closer; /* worker 0 -> 1: "x is watched here; close it" */
  fib_chan to_user;   /* worker 1 -> 0: "x is a new descriptor now" */
  int kind;
  int x, old_peer, peer;
  ssize_t got;        /* the read on worker 0 of the new x */
  char byte;
  uint64_t waited;    /* how long that read took */
  int nonblocking;    /* the new x was made non-blocking by it */
};

static void *user0(void *arg) { /* worker 0 */
  struct placed *s = arg;
  int sv[2];
  make_socketpair(sv);
  s->x = sv[0];
  s->old_peer = sv[1];
  char c;
  /* Nothing to read: the fiber waits, so x is watched in worker 0's
   * poller (or has been in its ring). */
  CHECK_EQ(fib_read_until(s->x, &c, 1, fib_now_ns() + 5 * MS), FIB_ETIMEDOUT);
  int one = 1;
  CHECK_OK(fib_chan_send(&s->to_closer, &one));
  CHECK_OK(fib_chan_recv(&s->to_user, &one));
  /* x is a new descriptor now; its peer writes in a moment */
  uint64_t t0 = fib_now_ns();
  s->got = fib_read_until(s->x, &s->byte, 1, t0 + LONG_WAIT);
  s->waited = fib_now_ns() - t0;
  s->nonblocking = is_nonblocking(s->x);
  return NULL;
}

static void *closer1(void *arg) { /* worker 1 */
  struct placed *s = arg;
  int one;
  CHECK_OK(fib_chan_recv(&s->to_closer, &one));
  CHECK_EQ(fib_close(s->x), 0);
  CHECK_EQ(close(s->old_peer), 0);
  make_at(s->x, s->kind, &s->peer);
  CHECK_OK(fib_chan_send(&s->to_user, &one));
  /* Long enough for the reader on worker 0 to try, find nothing and
   * wait: the byte must come to it through its poller. */
  CHECK_OK(fib_sleep_until(fib_now_ns() + 30 * MS));
  CHECK_EQ(write(s->peer, "y", 1), 1);
  return NULL;
}

static void placed_round(int kind) {
  struct placed s = {0};
  s.kind = kind;
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_chan_init(&s.to_closer, sizeof(int), 1));
  CHECK_OK(fib_chan_init(&s.to_user, sizeof(int), 1));
  CHECK_OK(fib_spawn(rt, user0, &s, &(fib_attr){.worker = 1}, NULL));
  CHECK_OK(fib_spawn(rt, closer1, &s, &(fib_attr){.worker = 2}, NULL));
  run_to_end(rt);
  CHECK_EQ(s.got, 1); /* not FIB_ETIMEDOUT, nor -ENOTSOCK for a pipe */
  CHECK_EQ(s.byte, 'y');
  CHECK(s.waited < LONG_WAIT / 2);
  CHECK(s.nonblocking);
  CHECK_OK(fib_chan_destroy(&s.to_closer));
  CHECK_OK(fib_chan_destroy(&s.to_user));
  CHECK_EQ(close(s.x), 0);
  CHECK_EQ(close(s.peer), 0);
}

TEST(reused_number_is_watched_again_on_the_worker_that_watched_it) {
  require_backend();
  placed_round(NEW_SOCKET);
  placed_round(NEW_PIPE); /* a socket's record would recv() on a pipe */
}

/* ---- waiters on worker 0 when worker 1 closes */

struct waiters {
  int x, peer;
  int r_read, r_wait; /* what the two waiters' calls returned */
  uint64_t t_read, t_wait;
  int parked;         /* both are about to wait (worker 0's count) */
};

static void *reader0(void *arg) {
  struct waiters *w = arg;
  char c;
  uint64_t t0 = fib_now_ns();
  __atomic_add_fetch(&w->parked, 1, __ATOMIC_SEQ_CST);
  w->r_read = (int)fib_read_until(w->x, &c, 1, t0 + LONG_WAIT);
  w->t_read = fib_now_ns() - t0;
  return NULL;
}

static void *waiter0(void *arg) {
  struct waiters *w = arg;
  uint64_t t0 = fib_now_ns();
  __atomic_add_fetch(&w->parked, 1, __ATOMIC_SEQ_CST);
  w->r_wait = fib_wait_fd_until(w->x, FIB_IO_READ, t0 + LONG_WAIT);
  w->t_wait = fib_now_ns() - t0;
  return NULL;
}

static void *closer_later(void *arg) { /* worker 1 */
  struct waiters *w = arg;
  while (__atomic_load_n(&w->parked, __ATOMIC_SEQ_CST) < 2)
    CHECK_OK(fib_sleep_until(fib_now_ns() + 1 * MS));
  /* they call and wait (nothing to read) within this */
  CHECK_OK(fib_sleep_until(fib_now_ns() + 30 * MS));
  CHECK_EQ(fib_close(w->x), 0);
  return NULL;
}

TEST(close_on_another_worker_wakes_its_waiters_with_ebadf) {
  require_backend();
  struct waiters w = {0};
  int sv[2];
  make_socketpair(sv);
  w.x = sv[0];
  w.peer = sv[1];
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, reader0, &w, &(fib_attr){.worker = 1}, NULL));
  CHECK_OK(fib_spawn(rt, waiter0, &w, &(fib_attr){.worker = 1}, NULL));
  CHECK_OK(fib_spawn(rt, closer_later, &w, &(fib_attr){.worker = 2}, NULL));
  run_to_end(rt);
  CHECK_EQ(w.r_read, FIB_EBADF);
  CHECK_EQ(w.r_wait, FIB_EBADF);
  CHECK(w.t_read < LONG_WAIT / 2);
  CHECK(w.t_wait < LONG_WAIT / 2);
  CHECK_EQ(close(w.peer), 0);
}

/* ---- a migratable fiber that moves: with fib_move_to, and under the
 * forced mode (every give-way moves it to the other worker) */

struct mover {
  int forced; /* FIBERS_FORCE_MIGRATE=1: move by yielding */
  int kind;
  int x, peer;
  pthread_t watched_on, closed_on, read_on;
  ssize_t got;
  char byte;
  uint64_t waited;
};

static void *late_writer(void *arg) {
  struct mover *m = arg;
  CHECK_OK(fib_sleep_until(fib_now_ns() + 30 * MS));
  CHECK_EQ(write(m->peer, "z", 1), 1);
  return NULL;
}

/* Get onto worker k (not forced), or onto a thread that is (`same`) or
 * is not t by giving way (forced: each give-way moves the fiber). */
static void reach(struct mover *m, unsigned k, pthread_t t, int same) {
  if (!m->forced) {
    CHECK_OK(fib_move_to(k));
    return;
  }
  for (int i = 0; i < 100 && pthread_equal(current_thread(), t) != same; i++)
    CHECK_OK(fib_yield());
  CHECK(pthread_equal(current_thread(), t) == same);
}

static void *mover(void *arg) {
  struct mover *m = arg;
  reach(m, 0, current_thread(), 1);
  int sv[2];
  make_socketpair(sv);
  m->x = sv[0];
  char c;
  CHECK_EQ(fib_read_until(m->x, &c, 1, fib_now_ns() + 5 * MS), FIB_ETIMEDOUT);
  m->watched_on = current_thread();
  reach(m, 1, m->watched_on, 0);
  m->closed_on = current_thread();
  CHECK_EQ(fib_close(m->x), 0);
  CHECK_EQ(close(sv[1]), 0);
  make_at(m->x, m->kind, &m->peer);
  fib_id w;
  CHECK_OK(fib_spawn(NULL, late_writer, m, NULL, &w));
  reach(m, 0, m->watched_on, 1);
  uint64_t t0 = fib_now_ns();
  m->got = fib_read_until(m->x, &m->byte, 1, t0 + LONG_WAIT);
  m->waited = fib_now_ns() - t0;
  m->read_on = current_thread();
  CHECK_OK(fib_join(w, NULL));
  return NULL;
}

static void *first(void *arg) { /* the first fiber: never forced to move */
  struct mover *m = arg;
  fib_id id;
  fib_attr a = {0};
  a.flags = m->forced ? 0 : FIB_MIGRATABLE;
  CHECK_OK(fib_spawn(NULL, mover, arg, &a, &id));
  CHECK_OK(fib_join(id, NULL));
  return NULL;
}

static void mover_round(int forced, int kind) {
  struct mover m = {0};
  m.forced = forced;
  m.kind = kind;
  if (forced)
    CHECK_EQ(setenv("FIBERS_FORCE_MIGRATE", "1", 1), 0);
  fib_runtime *rt = new_workers(2);
  CHECK_EQ(unsetenv("FIBERS_FORCE_MIGRATE"), 0);
  CHECK_OK(fib_spawn(rt, first, &m, NULL, NULL));
  run_to_end(rt);
  CHECK(!pthread_equal(m.watched_on, m.closed_on)); /* closed elsewhere */
  CHECK(pthread_equal(m.watched_on, m.read_on));    /* read where watched */
  CHECK_EQ(m.got, 1);
  CHECK_EQ(m.byte, 'z');
  CHECK(m.waited < LONG_WAIT / 2);
  CHECK_EQ(close(m.x), 0);
  CHECK_EQ(close(m.peer), 0);
}

TEST(migratable_fiber_closes_elsewhere_then_reuses_the_number) {
  require_backend();
  mover_round(0, NEW_SOCKET);
  mover_round(0, NEW_PIPE);
}

TEST(forced_migration_close_elsewhere_then_reuse) {
  require_backend();
  mover_round(1, NEW_SOCKET);
  mover_round(1, NEW_PIPE);
}

/* ---- a call on worker 0 that starts while worker 1's close is under way
 *
 * fib_close bumps the number's generation, then closes the descriptor. A
 * call on another worker in between finds its record stale and learns the
 * number again; the descriptor is still open then, and what it learned
 * would be the one on its way out, its wait in the epoll set, from which
 * close(2) then removes it without an event: the call would wait for its
 * deadline. It must get FIB_EBADF once the close is over. The test holds
 * the window open by running fib_close's two halves itself (io.c). */

struct window {
  int x, peer;
  int watched, closing;   /* worker 0 has watched x; the close has begun */
  int got;                /* what the call in the window returned */
  uint64_t waited;
};

static void *call_in_window(void *arg) { /* worker 0 */
  struct window *w = arg;
  char c;
  CHECK_EQ(fib_read_until(w->x, &c, 1, fib_now_ns() + 5 * MS), FIB_ETIMEDOUT);
  __atomic_store_n(&w->watched, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&w->closing, __ATOMIC_SEQ_CST))
    CHECK_OK(fib_sleep_until(fib_now_ns() + 1 * MS));
  uint64_t t0 = fib_now_ns();
  w->got = (int)fib_read_until(w->x, &c, 1, t0 + LONG_WAIT);
  w->waited = fib_now_ns() - t0;
  return NULL;
}

static void *close_slowly(void *arg) { /* worker 1 */
  struct window *w = arg;
  while (!__atomic_load_n(&w->watched, __ATOMIC_SEQ_CST))
    CHECK_OK(fib_sleep_until(fib_now_ns() + 1 * MS));
  fib__fdgen_closing(w->x, fib__poller_peek()); /* fib_close's first half */
  __atomic_store_n(&w->closing, 1, __ATOMIC_SEQ_CST);
  /* worker 0's call starts within this, and learns the number */
  CHECK_OK(fib_sleep_until(fib_now_ns() + 30 * MS));
  CHECK_EQ(close(w->x), 0);
  fib__fdgen_closed(w->x); /* its second half */
  return NULL;
}

TEST(call_during_a_close_on_another_worker_gets_ebadf) {
  require_backend();
  struct window w = {0};
  int sv[2];
  make_socketpair(sv);
  w.x = sv[0];
  w.peer = sv[1];
  fib_runtime *rt = new_workers(2);
  CHECK_OK(fib_spawn(rt, call_in_window, &w, &(fib_attr){.worker = 1}, NULL));
  CHECK_OK(fib_spawn(rt, close_slowly, &w, &(fib_attr){.worker = 2}, NULL));
  run_to_end(rt);
  CHECK_EQ(w.got, FIB_EBADF);
  CHECK(w.waited < LONG_WAIT / 2);
  CHECK_EQ(close(w.peer), 0);
}

TEST_MAIN(T(reused_number_is_watched_again_on_the_worker_that_watched_it),
          T(close_on_another_worker_wakes_its_waiters_with_ebadf),
          T(migratable_fiber_closes_elsewhere_then_reuses_the_number),
          T(forced_migration_close_elsewhere_then_reuse),
          T(call_during_a_close_on_another_worker_gets_ebadf))
