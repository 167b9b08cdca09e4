/* SPDX-License-Identifier: MIT */
/*
 * test_io_host.c -- a program's own loop that runs a runtime of several
 * workers with fib_run_nowait and, between calls, blocks in poll(2) on
 * fib_runtime_io_fd with no timeout of its own (fib_runtime_next_ns says
 * never): each kind of work sent to worker 0 meanwhile makes that
 * descriptor readable, and the next call runs it. The kinds: a fiber of
 * worker 0 readied by a fiber of worker 1 or by a plain thread, a post, a
 * cancel from worker 1 or a plain thread, a fiber placed on worker 0 by
 * worker 1; and the same with a fiber of worker 0 waiting on a pipe
 * meanwhile; with exact wake-up counts, posts, calls, offload jobs' ends
 * and closes on another thread of a descriptor a fiber of the host's
 * waits on. Runs on both back ends (tests/CMakeLists.txt: test_io*); a
 * copy asked to run on io_uring where the kernel refuses it is skipped.
 */
#include "io_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A poll that lasts this long has missed its wake-up: the case fails. */
#define WATCHDOG_MS 10000

/* The work's pace: the host is asleep in poll when each piece comes. */
#define PACE_NS (MS / 4)

static void sleep_thread_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* The case's shared state: `done` counts what ran on worker 0's account
 * (atomic); `want` is how many pieces of work are sent. */
struct job {
  fib_runtime *rt;
  fib_sem sem;
  long want;
  long done;
  fib_id *ids;           /* fibers to cancel, one per piece */
  pthread_t host;        /* the thread that runs worker 0 */
  long off_host;         /* worker 0's fibers that ran elsewhere (atomic) */
  int pipe[2];           /* with_io: worker 0's reader waits on pipe[0] */
  char got;
  int armed;             /* the host is about to block in its first poll
                            (atomic) */
};

static long done_now(struct job *j) {
  return __atomic_load_n(&j->done, __ATOMIC_SEQ_CST);
}

static void count_one(struct job *j) {
  if (!pthread_equal(current_thread(), j->host))
    __atomic_add_fetch(&j->off_host, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&j->done, 1, __ATOMIC_SEQ_CST);
}

static int armed_now(struct job *j) {
  return __atomic_load_n(&j->armed, __ATOMIC_SEQ_CST);
}

/* The sender waits until the piece before has been run (each piece finds
 * the host asleep again), a watchdog bounding it; the first piece waits
 * until the host is about to block, so that it surely wakes a poll (a
 * host that a slow machine held up past the pace would otherwise find it
 * before it polls, and never poll). */
static void wait_done_fiber(struct job *j, long n) {
  for (long t = 0; done_now(j) < n || (n == 0 && !armed_now(j)); t++) {
    CHECK(t < 40000); /* 10 s */
    CHECK_OK(fib_sleep_ns(PACE_NS));
  }
  CHECK_OK(fib_sleep_ns(PACE_NS));
}

static void wait_done_thread(struct job *j, long n) {
  for (long t = 0; done_now(j) < n || (n == 0 && !armed_now(j)); t++) {
    CHECK(t < 40000);
    sleep_thread_ns(PACE_NS);
  }
  sleep_thread_ns(PACE_NS);
}

/* ---- worker 0's side */

static void *sem_waiter(void *arg) { /* on worker 0 */
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    CHECK_OK(fib_sem_wait(&j->sem));
    count_one(j);
  }
  return NULL;
}

static void *cancel_waiter(void *arg) { /* on worker 0, one per piece */
  struct job *j = arg;
  CHECK_EQ(fib_sem_wait(&j->sem), FIB_ECANCELED);
  count_one(j);
  return NULL;
}

static void *pipe_reader(void *arg) { /* on worker 0, with_io */
  struct job *j = arg;
  CHECK_EQ(fib_read(j->pipe[0], &j->got, 1), 1);
  return NULL;
}

static void *posted_call(void *arg) { /* on whichever worker takes it */
  /* Counted on worker 0 only: an idle worker 1 that took the fiber and
   * counted it after the host's call had ended would leave the host
   * nothing to wake for; its move to worker 0 does. */
  CHECK_OK(fib_move_to(0));
  count_one(arg);
  return NULL;
}

static void *placed_fiber(void *arg) { /* placed on worker 0 */
  count_one(arg);
  return NULL;
}

/* ---- the senders: a fiber of worker 1, or a plain thread */

static void *sem_poster_fiber(void *arg) {
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    wait_done_fiber(j, i);
    CHECK_OK(fib_sem_post(&j->sem));
  }
  return NULL;
}

static void *sem_poster_thread(void *arg) {
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    wait_done_thread(j, i);
    CHECK_OK(fib_sem_post(&j->sem));
  }
  return NULL;
}

static void *canceller_fiber(void *arg) {
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    wait_done_fiber(j, i);
    CHECK_OK(fib_cancel(NULL, j->ids[i]));
  }
  return NULL;
}

static void *canceller_thread(void *arg) {
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    wait_done_thread(j, i);
    CHECK_OK(fib_cancel(j->rt, j->ids[i]));
  }
  return NULL;
}

static void *poster_thread(void *arg) {
  struct job *j = arg;
  for (long i = 0; i < j->want; i++) {
    wait_done_thread(j, i);
    CHECK_OK(fib_post(j->rt, posted_call, j));
  }
  return NULL;
}

static void *placer_fiber(void *arg) {
  struct job *j = arg;
  fib_attr on0 = {0};
  on0.worker = 1;
  for (long i = 0; i < j->want; i++) {
    wait_done_fiber(j, i);
    CHECK_OK(fib_spawn(NULL, placed_fiber, j, &on0, NULL));
  }
  return NULL;
}

/* ---- the host */

enum kind { SEM, CANCEL, POST, PLACE };
enum sender { FROM_WORKER_1, FROM_THREAD };

static void host_case(enum kind kind, enum sender from, int with_io) {
  struct job j;
  memset(&j, 0, sizeof j);
  if (with_io) /* before the probe, whose socket is closed by close(2) */
    make_pipe(j.pipe);
  require_backend();
  j.rt = new_workers(2);
  j.want = scaled(20);
  j.host = pthread_self();
  CHECK_OK(fib_sem_init(&j.sem, 0)); /* after the runtime: shared */
  int fd = fib_runtime_io_fd(j.rt);
  CHECK(fd >= 0);
  const char *io = getenv("FIBERS_IO");
  if (io && strcmp(io, "io_uring") == 0) /* the copy that asked for it */
    CHECK_STR_EQ(fib_runtime_io_backend(j.rt), "io_uring");
  fib_attr on0 = {0}, on1 = {0};
  on0.worker = 1;
  on1.worker = 2;
  if (with_io)
    CHECK_OK(fib_spawn(j.rt, pipe_reader, &j, &on0, NULL));
  fib_id ids[64];
  CHECK((size_t)j.want <= sizeof ids / sizeof ids[0]);
  j.ids = ids;
  if (kind == SEM)
    CHECK_OK(fib_spawn(j.rt, sem_waiter, &j, &on0, NULL));
  if (kind == CANCEL)
    for (long i = 0; i < j.want; i++)
      CHECK_OK(fib_spawn(j.rt, cancel_waiter, &j, &on0, &ids[i]));
  /* Every fiber of worker 0 parked before the work starts. */
  CHECK(fib_run_nowait(j.rt) >= 0);
  static void *(*const fibers[])(void *) = {
      [SEM] = sem_poster_fiber, [CANCEL] = canceller_fiber,
      [PLACE] = placer_fiber};
  static void *(*const threads[])(void *) = {
      [SEM] = sem_poster_thread, [CANCEL] = canceller_thread,
      [POST] = poster_thread};
  pthread_t sender;
  if (from == FROM_WORKER_1)
    CHECK_OK(fib_spawn(j.rt, fibers[kind], &j, &on1, NULL));
  else
    CHECK_EQ(pthread_create(&sender, NULL, threads[kind], &j), 0);

  /* The host's loop: run, then block in poll until worker 0 has work (no
   * deadline of worker 0's: next_ns says never). A wake-up lost leaves
   * poll to its watchdog, and fails. */
  long wakes = 0, calls = 0;
  while (done_now(&j) < j.want) {
    CHECK(fib_run_nowait(j.rt) >= 0);
    CHECK(++calls < 10000000);
    if (done_now(&j) >= j.want || fib_runtime_next_ns(j.rt) != UINT64_MAX)
      continue;
    __atomic_store_n(&j.armed, 1, __ATOMIC_SEQ_CST);
    struct pollfd p = {fd, POLLIN, 0};
    CHECK_EQ(poll(&p, 1, WATCHDOG_MS), 1);
    wakes++;
  }
  CHECK_EQ(done_now(&j), j.want);
  /* Each piece woke it, once or twice (a completion the call took may
   * signal once more); a descriptor left readable would make thousands. */
  CHECK(wakes >= 1);
  CHECK(wakes <= 2 * j.want + 2);
  CHECK_EQ(__atomic_load_n(&j.off_host, __ATOMIC_SEQ_CST), 0);
  if (from == FROM_THREAD)
    CHECK_EQ(pthread_join(sender, NULL), 0);
  if (with_io) { /* the reader waited in worker 0's I/O all along */
    CHECK_EQ(j.got, 0);
    CHECK_EQ(write(j.pipe[1], "x", 1), 1);
  }
  /* The rest: the sender's end, the reader; no poll. */
  for (long frames = 0; fib_run_nowait(j.rt) > 0; frames++) {
    CHECK(frames < 10000000);
    sleep_thread_ns(50000);
  }
  if (with_io) {
    CHECK_EQ(j.got, 'x');
    CHECK_EQ(fib_close(j.pipe[0]), 0);
    CHECK_EQ(close(j.pipe[1]), 0);
  }
  CHECK_OK(fib_runtime_destroy(j.rt));
  CHECK_OK(fib_sem_destroy(&j.sem));
}

TEST(a_fiber_of_worker_0_readied_by_worker_1_wakes_the_host) {
  host_case(SEM, FROM_WORKER_1, 0);
}
TEST(a_fiber_of_worker_0_readied_by_a_plain_thread_wakes_the_host) {
  host_case(SEM, FROM_THREAD, 0);
}
TEST(a_cancel_from_worker_1_wakes_the_host) {
  host_case(CANCEL, FROM_WORKER_1, 0);
}
TEST(a_cancel_from_a_plain_thread_wakes_the_host) {
  host_case(CANCEL, FROM_THREAD, 0);
}
TEST(a_post_from_a_plain_thread_wakes_the_host) {
  host_case(POST, FROM_THREAD, 0);
}
TEST(a_fiber_placed_on_worker_0_by_worker_1_wakes_the_host) {
  host_case(PLACE, FROM_WORKER_1, 0);
}
TEST(a_fiber_readied_by_worker_1_wakes_the_host_while_worker_0_does_io) {
  host_case(SEM, FROM_WORKER_1, 1);
}
TEST(a_post_wakes_the_host_while_worker_0_does_io) {
  host_case(POST, FROM_THREAD, 1);
}

/* ---- exact counts: a one-worker host, and offload jobs

   The sender sends piece i only once the host has run the pieces before
   it, found nothing to do (fib_runtime_next_ns says never) and said that
   it is about to block in poll (`armed` = i + 1): so each piece finds the
   host committed to its poll, and wakes exactly one poll. A piece that
   wakes none leaves poll to its watchdog (the case fails); a descriptor
   left readable after a call, or a second wake-up, makes more polls than
   pieces. */

struct exact {
  fib_runtime *rt;
  long want;
  long done;  /* pieces run on the runtime (atomic) */
  long armed; /* done + 1 once the host is about to poll (atomic) */
  int pipe[2];
  char got;
  int (*closing)[2]; /* EXACT_CLOSE: a pipe per piece */
};

static long exact_done(struct exact *e) {
  return __atomic_load_n(&e->done, __ATOMIC_SEQ_CST);
}

/* On the sender's thread (a plain thread, or an offload pool thread). */
static void wait_armed(struct exact *e, long i) {
  for (long t = 0; __atomic_load_n(&e->armed, __ATOMIC_SEQ_CST) != i + 1;
       t++) {
    CHECK(t < 500000); /* the watchdog: 10 s */
    sleep_thread_ns(20000);
  }
}

static void *exact_bump(void *arg) {
  struct exact *e = arg;
  __atomic_add_fetch(&e->done, 1, __ATOMIC_SEQ_CST);
  return e;
}

static void *exact_poster(void *arg) {
  struct exact *e = arg;
  for (long i = 0; i < e->want; i++) {
    wait_armed(e, i);
    CHECK_OK(fib_post(e->rt, exact_bump, e));
  }
  return NULL;
}

static void *exact_caller(void *arg) {
  struct exact *e = arg;
  for (long i = 0; i < e->want; i++) {
    wait_armed(e, i);
    void *r = NULL;
    CHECK_OK(fib_call(e->rt, exact_bump, e, &r));
    CHECK(r == e);
    CHECK_EQ(exact_done(e), i + 1);
  }
  return NULL;
}

static void *exact_reader(void *arg) {
  struct exact *e = arg;
  CHECK_EQ(fib_read(e->pipe[0], &e->got, 1), 1);
  return NULL;
}

/* EXACT_CLOSE: on worker 0, a read of each pipe in turn, which the
 * closer's fib_close of its read end on another thread ends. */
static void *exact_close_reader(void *arg) {
  struct exact *e = arg;
  for (long i = 0; i < e->want; i++) {
    char c;
    CHECK_EQ(fib_read(e->closing[i][0], &c, 1), FIB_EBADF);
    exact_bump(e);
  }
  return NULL;
}

static void *exact_closer(void *arg) {
  struct exact *e = arg;
  for (long i = 0; i < e->want; i++) {
    wait_armed(e, i);
    CHECK_OK(fib_close(e->closing[i][0]));
  }
  return NULL;
}

/* An offload job: it ends once the host is about to poll. */
struct exact_job {
  struct exact *e;
  long i;
};

static void exact_job_run(void *arg) {
  struct exact_job *ej = arg;
  wait_armed(ej->e, ej->i);
}

static void *exact_offloader(void *arg) {
  struct exact *e = arg;
  for (long i = 0; i < e->want; i++) {
    struct exact_job ej = {e, i};
    CHECK_OK(fib_offload(exact_job_run, &ej));
    exact_bump(e);
  }
  return NULL;
}

enum exact_kind { EXACT_POST, EXACT_CALL, EXACT_OFFLOAD, EXACT_CLOSE };

static void exact_case(enum exact_kind kind, unsigned workers, int with_io,
                       long want) {
  struct exact e;
  memset(&e, 0, sizeof e);
  if (with_io) /* before the probe, whose socket is closed by close(2) */
    make_pipe(e.pipe);
  if (kind == EXACT_CLOSE) {
    e.closing = calloc((size_t)want, sizeof *e.closing);
    CHECK(e.closing != NULL);
    for (long i = 0; i < want; i++)
      make_pipe(e.closing[i]);
  }
  require_backend();
  e.rt = new_workers(workers);
  e.want = want;
  int fd = fib_runtime_io_fd(e.rt);
  CHECK(fd >= 0);
  const char *io = getenv("FIBERS_IO");
  if (io && strcmp(io, "io_uring") == 0)
    CHECK_STR_EQ(fib_runtime_io_backend(e.rt), "io_uring");
  fib_attr on0 = {0};
  on0.worker = 1; /* worker 0: the host's */
  if (with_io)
    CHECK_OK(fib_spawn(e.rt, exact_reader, &e, &on0, NULL));
  pthread_t sender;
  if (kind == EXACT_OFFLOAD)
    CHECK_OK(fib_spawn(e.rt, exact_offloader, &e, &on0, NULL));
  else if (kind == EXACT_CLOSE)
    CHECK_OK(fib_spawn(e.rt, exact_close_reader, &e, &on0, NULL));
  if (kind != EXACT_OFFLOAD)
    CHECK_EQ(pthread_create(&sender, NULL,
                            kind == EXACT_POST   ? exact_poster
                            : kind == EXACT_CALL ? exact_caller
                                                 : exact_closer,
                            &e),
             0);
  long wakes = 0;
  for (long calls = 0;; calls++) {
    CHECK(calls < 10000000);
    CHECK(fib_run_nowait(e.rt) >= 0);
    long done = exact_done(&e);
    if (done >= e.want)
      break;
    if (fib_runtime_next_ns(e.rt) != UINT64_MAX)
      continue;
    __atomic_store_n(&e.armed, done + 1, __ATOMIC_SEQ_CST);
    struct pollfd p = {fd, POLLIN, 0};
    CHECK_EQ(poll(&p, 1, WATCHDOG_MS), 1);
    wakes++;
  }
  CHECK_EQ(exact_done(&e), e.want);
  CHECK_EQ(wakes, e.want);
  if (kind != EXACT_OFFLOAD)
    CHECK_EQ(pthread_join(sender, NULL), 0);
  if (with_io) { /* the reader waited in the runtime's I/O all along */
    CHECK_EQ(e.got, 0);
    CHECK_EQ(write(e.pipe[1], "x", 1), 1);
  }
  for (long frames = 0; fib_run_nowait(e.rt) > 0; frames++) {
    CHECK(frames < 10000000);
    sleep_thread_ns(50000);
  }
  if (with_io) {
    CHECK_EQ(e.got, 'x');
    CHECK_EQ(fib_close(e.pipe[0]), 0);
    CHECK_EQ(close(e.pipe[1]), 0);
  }
  CHECK_OK(fib_runtime_destroy(e.rt));
  if (kind == EXACT_CLOSE) {
    for (long i = 0; i < want; i++)
      CHECK_EQ(close(e.closing[i][1]), 0);
    free(e.closing);
  }
}

TEST(one_worker_each_post_from_a_plain_thread_wakes_the_host_once) {
  exact_case(EXACT_POST, 1, 0, scaled(20));
}
TEST(one_worker_each_call_from_a_plain_thread_wakes_the_host_once) {
  exact_case(EXACT_CALL, 1, 0, scaled(20));
}
TEST(one_worker_each_post_wakes_the_host_once_while_a_fiber_does_io) {
  exact_case(EXACT_POST, 1, 1, scaled(20));
}
TEST(one_worker_each_offload_job_end_wakes_the_host_once) {
  exact_case(EXACT_OFFLOAD, 1, 0, 5);
}
TEST(worker_0_each_offload_job_end_wakes_the_host_once) {
  exact_case(EXACT_OFFLOAD, 2, 0, 5);
}
/* A close notice (fibers/io.h: fib_close on another thread) of a
 * descriptor a fiber of the host's waits on. */
TEST(one_worker_each_close_from_a_plain_thread_wakes_the_host_once) {
  exact_case(EXACT_CLOSE, 1, 0, scaled(20));
}
TEST(worker_0_each_close_from_a_plain_thread_wakes_the_host_once) {
  exact_case(EXACT_CLOSE, 2, 0, scaled(20));
}

TEST_MAIN(T(a_fiber_of_worker_0_readied_by_worker_1_wakes_the_host),
          T(a_fiber_of_worker_0_readied_by_a_plain_thread_wakes_the_host),
          T(a_cancel_from_worker_1_wakes_the_host),
          T(a_cancel_from_a_plain_thread_wakes_the_host),
          T(a_post_from_a_plain_thread_wakes_the_host),
          T(a_fiber_placed_on_worker_0_by_worker_1_wakes_the_host),
          T(a_fiber_readied_by_worker_1_wakes_the_host_while_worker_0_does_io),
          T(a_post_wakes_the_host_while_worker_0_does_io),
          T(one_worker_each_post_from_a_plain_thread_wakes_the_host_once),
          T(one_worker_each_call_from_a_plain_thread_wakes_the_host_once),
          T(one_worker_each_post_wakes_the_host_once_while_a_fiber_does_io),
          T(one_worker_each_offload_job_end_wakes_the_host_once),
          T(worker_0_each_offload_job_end_wakes_the_host_once),
          T(one_worker_each_close_from_a_plain_thread_wakes_the_host_once),
          T(worker_0_each_close_from_a_plain_thread_wakes_the_host_once))
