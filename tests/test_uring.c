/* SPDX-License-Identifier: MIT */
/*
 * test_uring.c -- the I/O back ends: which one runs (FIBERS_IO, the
 * runtime option, the fallback when io_uring setup fails, the query), and
 * what only a completion back end can get wrong: a deadline or a cancel
 * racing the completion (data never lost, accepted descriptors never
 * leaked), fib_close and fib_runtime_destroy with operations in flight.
 * The calls themselves are run on both back ends (every_call).
 */
#include "fiber_helpers.h"
#include "sys.h"

#include <fibers/io.h>

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef FIB__HAVE_IO_URING
long fib__uring_setup_flags(void); /* src/io/uring.h */
extern long fib__uring_cancel_lost;
#endif

/* Whether this build and this kernel give io_uring (a raw setup, as the
 * library's first step would). */
static int uring_here(void) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strncmp(tool, "valgrind", 8) == 0)
    return 0; /* valgrind cannot follow io_uring: epoll only */
#ifdef FIB__HAVE_IO_URING
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  long fd = syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0)
    return 0;
  close((int)fd);
  return 1;
#else
  return 0;
#endif
}

static fib_runtime *runtime_with(unsigned backend) {
  fib_runtime_opts o;
  memset(&o, 0, sizeof o);
  o.io_backend = backend;
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, &o));
  return rt;
}

static void socket_pair(int sv[2]) {
  CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
}

/* One byte there and back over a socketpair, in fibers. */
static void *echo_once(void *arg) {
  int *sv = arg;
  char c = 'x', d = 0;
  /* a wait first: epoll names itself once it has watched a descriptor */
  CHECK_EQ(fib_read_until(sv[1], &d, 1, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_EQ(fib_write(sv[0], &c, 1), 1);
  CHECK_EQ(fib_read(sv[1], &d, 1), 1);
  CHECK_EQ(d, 'x');
  return NULL;
}

/* The back end a runtime made with `backend` runs, after one exchange. */
static const char *backend_after_io(unsigned backend) {
  fib_runtime *rt = runtime_with(backend);
  CHECK_STR_EQ(fib_runtime_io_backend(rt), "none");
  int sv[2];
  socket_pair(sv);
  CHECK_OK(fib_spawn(rt, echo_once, sv, NULL, NULL));
  CHECK_OK(fib_run(rt));
  const char *b = fib_runtime_io_backend(rt);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_close(sv[0]));
  CHECK_OK(fib_close(sv[1]));
  return b; /* a string literal: outlives the runtime */
}

/* ------------------------------------------------------------ choice */

TEST(option_and_environment_choose) {
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strncmp(tool, "valgrind", 8) == 0)
    SKIP("valgrind cannot follow io_uring: its leg runs epoll only");
  unsetenv("FIBERS_IO");
  const char *want = uring_here() ? "io_uring" : "epoll";
  CHECK_STR_EQ(backend_after_io(FIB_IO_EPOLL), "epoll");
  CHECK_STR_EQ(backend_after_io(FIB_IO_URING), want);
  const char *autob = backend_after_io(FIB_IO_AUTO);
  CHECK(strcmp(autob, "epoll") == 0 || strcmp(autob, "io_uring") == 0);
  /* the environment overrides the option, both ways */
  setenv("FIBERS_IO", "epoll", 1);
  CHECK_STR_EQ(backend_after_io(FIB_IO_URING), "epoll");
  CHECK_STR_EQ(backend_after_io(FIB_IO_AUTO), "epoll");
  setenv("FIBERS_IO", "io_uring", 1);
  CHECK_STR_EQ(backend_after_io(FIB_IO_EPOLL), want);
  CHECK_STR_EQ(backend_after_io(FIB_IO_AUTO), want);
  setenv("FIBERS_IO", "bogus", 1); /* ignored */
  CHECK_STR_EQ(backend_after_io(FIB_IO_EPOLL), "epoll");
  unsetenv("FIBERS_IO");
  /* out of range: rejected at creation */
  fib_runtime_opts o;
  memset(&o, 0, sizeof o);
  o.io_backend = 3;
  fib_runtime *rt;
  CHECK_EQ(fib_runtime_create(&rt, &o), FIB_EINVAL);
}

/* Each setup attempt runs on a fresh thread: the ring is the thread's. */
struct fallback_case {
  int err;          /* what the injected setup call fails with */
  int sticky;       /* every attempt, or the first only */
  const char *want; /* the back end that must run */
  long flags;       /* the ring's setup flags, if io_uring (-1: any) */
};

static void *fallback_thread(void *arg) {
  struct fallback_case *c = arg;
  fib__fault_inject_err(FIB__FAULT_IO_URING, 1, c->sticky, c->err);
  CHECK_STR_EQ(backend_after_io(FIB_IO_URING), c->want);
  CHECK(fib__fault_calls() >= 1);
#ifdef FIB__HAVE_IO_URING
  if (c->flags != -1)
    CHECK_EQ(fib__uring_setup_flags(), c->flags);
#endif
  fib__fault_inject(0, 0, 0);
  return NULL;
}

TEST(refused_setup_falls_back_to_epoll) {
  if (!uring_here())
    SKIP("no io_uring in this build or kernel: nothing to fall back from");
  unsetenv("FIBERS_IO");
  struct fallback_case cases[] = {
      {EPERM, 1, "epoll", -1},  /* seccomp, sysctl io_uring_disabled */
      {ENOSYS, 1, "epoll", -1}, /* no io_uring in the kernel */
      {ENOMEM, 1, "epoll", -1}, /* RLIMIT_MEMLOCK before 5.12 */
      {EPERM, 0, "epoll", -1},  /* EPERM stops the ladder at once */
#ifdef FIB__HAVE_IO_URING
      /* EINVAL: flags this kernel does not know: the next step */
      {EINVAL, 0, "io_uring",
       IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
           IORING_SETUP_SUBMIT_ALL},
      {EINVAL, 1, "epoll", -1}, /* every step refused */
#endif
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pthread_t t;
    CHECK_OK(pthread_create(&t, NULL, fallback_thread, &cases[i]));
    CHECK_OK(pthread_join(t, NULL));
  }
}

/* ------------------------------------------------- every call, both */

static void *every_call_fiber(void *arg) {
  (void)arg;
  int sv[2];
  socket_pair(sv);
  char buf[64];
  /* read/write, recv/send */
  CHECK_EQ(fib_write(sv[0], "hello", 5), 5);
  CHECK_EQ(fib_read(sv[1], buf, sizeof buf), 5);
  CHECK(memcmp(buf, "hello", 5) == 0);
  CHECK_EQ(fib_send(sv[1], "back", 4, 0), 4);
  CHECK_EQ(fib_recv(sv[0], buf, sizeof buf, 0), 4);
  /* writev/readv, sendmsg/recvmsg */
  struct iovec wv[2] = {{"ab", 2}, {"cde", 3}};
  CHECK_EQ(fib_writev(sv[0], wv, 2), 5);
  char r1[2], r2[8];
  struct iovec rv[2] = {{r1, 2}, {r2, 8}};
  CHECK_EQ(fib_readv(sv[1], rv, 2), 5);
  CHECK(memcmp(r1, "ab", 2) == 0 && memcmp(r2, "cde", 3) == 0);
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = wv;
  m.msg_iovlen = 2;
  CHECK_EQ(fib_sendmsg(sv[1], &m, 0), 5);
  memset(&m, 0, sizeof m);
  m.msg_iov = rv;
  m.msg_iovlen = 2;
  CHECK_EQ(fib_recvmsg(sv[0], &m, 0), 5);
  /* wait_fd: writable at once; readable after a write */
  CHECK_EQ(fib_wait_fd(sv[0], FIB_IO_WRITE), FIB_IO_WRITE);
  CHECK_EQ(fib_wait_fd_until(sv[0], FIB_IO_READ, fib_now_ns() + 2 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(fib_write(sv[1], "z", 1), 1);
  CHECK_EQ(fib_wait_fd(sv[0], FIB_IO_READ), FIB_IO_READ);
  CHECK_EQ(fib_read(sv[0], buf, 1), 1);
  /* a deadline with nothing to read */
  CHECK_EQ(fib_read_until(sv[0], buf, 1, fib_now_ns() + 2 * MS),
           FIB_ETIMEDOUT);
  /* end of file, and a pipe's broken write (no SIGPIPE) */
  CHECK_OK(fib_close(sv[1]));
  CHECK_EQ(fib_read(sv[0], buf, sizeof buf), 0);
  CHECK_EQ(fib_write(sv[0], "x", 1), -EPIPE);
  CHECK_OK(fib_close(sv[0]));
  int p[2];
  CHECK_OK(pipe2(p, O_CLOEXEC));
  CHECK_EQ(fib_write(p[1], "pipe", 4), 4);
  CHECK_EQ(fib_read(p[0], buf, sizeof buf), 4);
  CHECK_EQ(fib_read_until(p[0], buf, 1, fib_now_ns() + 2 * MS), FIB_ETIMEDOUT);
  CHECK_OK(fib_close(p[0]));
  CHECK_EQ(fib_write(p[1], "x", 1), FIB_EPIPE);
  CHECK_OK(fib_close(p[1]));
  /* a regular file: never parks */
  char path[] = "/tmp/fib_uring_XXXXXX";
  int f = mkstemp(path);
  CHECK(f >= 0);
  unlink(path);
  CHECK_EQ(fib_write(f, "file", 4), 4);
  CHECK_EQ(lseek(f, 0, SEEK_SET), 0);
  CHECK_EQ(fib_read(f, buf, sizeof buf), 4);
  CHECK_EQ(fib_wait_fd(f, FIB_IO_READ), FIB_IO_READ);
  CHECK_OK(fib_close(f));
  /* accept and connect on loopback TCP */
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_OK(bind(l, (struct sockaddr *)&a, sizeof a));
  CHECK_OK(listen(l, 8));
  socklen_t al = sizeof a;
  CHECK_OK(getsockname(l, (struct sockaddr *)&a, &al));
  CHECK_EQ(fib_accept_until(l, NULL, NULL, 0, fib_now_ns() + 2 * MS),
           FIB_ETIMEDOUT);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK_OK(fib_connect(c, (struct sockaddr *)&a, sizeof a));
  int s = fib_accept(l, NULL, NULL, SOCK_CLOEXEC);
  CHECK(s >= 0);
  CHECK(fcntl(s, F_GETFL) & O_NONBLOCK);
  CHECK_EQ(fib_send(c, "tcp", 3, 0), 3);
  CHECK_EQ(fib_recv(s, buf, sizeof buf, 0), 3);
  CHECK_OK(fib_close(s));
  CHECK_OK(fib_close(c));
  /* a refused connection */
  CHECK_OK(fib_close(l));
  c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK_EQ(fib_connect(c, (struct sockaddr *)&a, sizeof a), FIB_ECONNREFUSED);
  CHECK_OK(fib_close(c));
  return NULL;
}

static void every_call_on(unsigned backend, const char *want) {
  fib_runtime *rt = runtime_with(backend);
  CHECK_OK(fib_spawn(rt, every_call_fiber, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_STR_EQ(fib_runtime_io_backend(rt), want);
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(every_call) {
  unsetenv("FIBERS_IO");
  every_call_on(FIB_IO_EPOLL, "epoll");
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  every_call_on(FIB_IO_URING, "io_uring");
}

/* A fiber that yields without end must not keep I/O waiting: the loop
 * submits and reaps after each round. */
static int spinning;
static void *spinner(void *arg) {
  (void)arg;
  while (spinning)
    fib_yield();
  return NULL;
}
static void *pinger(void *arg) {
  int *sv = arg;
  for (int i = 0; i < 1000; i++) {
    char c = (char)i, d;
    CHECK_EQ(fib_send(sv[0], &c, 1, 0), 1);
    CHECK_EQ(fib_recv(sv[1], &d, 1, 0), 1);
    CHECK_EQ(d, c);
  }
  spinning = 0;
  return NULL;
}

TEST(busy_fibers_do_not_starve_io) {
  if (!uring_here())
    SKIP("io_uring not here");
  fib_runtime *rt = runtime_with(FIB_IO_URING);
  int sv[2];
  socket_pair(sv);
  spinning = 1;
  CHECK_OK(fib_spawn(rt, spinner, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, pinger, sv, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  fib_close(sv[0]);
  fib_close(sv[1]);
}

/* --------------------------------------------- completion vs cancel */

/* A thread writes bytes 0, 1, 2, ... with short random pauses; a fiber
 * reads them with deadlines (or is cancelled by another fiber) that keep
 * cutting its waits short. Every byte must arrive once, in order: a
 * cancelled read that had taken data returns it. */
enum { RACE_BYTES = 20000 };

struct race {
  int sv[2];
  long n;
  long timeouts, cancels, reads;
  fib_id reader;
  int done;
};

static void pause_random(unsigned *seed) {
  unsigned r = rand_r(seed) % 64;
  if (r < 32) {
    struct timespec ts = {0, (long)(r * 1000)};
    nanosleep(&ts, NULL);
  }
}

static void *race_writer(void *arg) {
  struct race *r = arg;
  unsigned seed = 1;
  for (long i = 0; i < r->n; i++) {
    unsigned char c = (unsigned char)i;
    while (send(r->sv[0], &c, 1, MSG_NOSIGNAL) != 1)
      sched_yield();
    pause_random(&seed);
  }
  return NULL;
}

static void *race_reader(void *arg) {
  struct race *r = arg;
  unsigned seed = 7;
  long got = 0;
  while (got < r->n) {
    unsigned char buf[16];
    ssize_t n = fib_recv_until(r->sv[1], buf, sizeof buf, 0,
                               fib_now_ns() + rand_r(&seed) % 40000);
    if (n == FIB_ETIMEDOUT) {
      r->timeouts++;
      continue;
    }
    if (n == FIB_ECANCELED) {
      r->cancels++;
      continue;
    }
    CHECK(n > 0);
    r->reads++;
    for (ssize_t i = 0; i < n; i++)
      CHECK_EQ(buf[i], (unsigned char)(got + i));
    got += n;
  }
  r->done = 1;
  return NULL;
}

/* fib_cancel makes every later blocking call fail too: the canceller
 * cancels a disposable reader instead, one read each. The readers run one
 * at a time, so the bytes are checked in order across them. */
static long race_got;
static void *one_read(void *arg) {
  struct race *r = arg;
  unsigned char buf[16];
  ssize_t n = fib_recv(r->sv[1], buf, sizeof buf, 0);
  for (ssize_t i = 0; i < n; i++)
    CHECK_EQ(buf[i], (unsigned char)(race_got + i));
  if (n > 0)
    race_got += n;
  return (void *)(intptr_t)n;
}

static void race_on(unsigned backend, int with_cancel) {
  struct race r;
  memset(&r, 0, sizeof r);
  r.n = scaled(RACE_BYTES);
  socket_pair(r.sv);
  fib_runtime *rt = runtime_with(backend);
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, race_writer, &r));
  if (!with_cancel) {
    CHECK_OK(fib_spawn(rt, race_reader, &r, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK(r.done);
  } else {
    /* readers cancelled after a random number of rounds; the bytes each
     * got are checked in order across them */
    unsigned seed = 3;
    race_got = 0;
    while (race_got < r.n) {
      fib_id id;
      CHECK_OK(fib_spawn(rt, one_read, &r, NULL, &id));
      int rounds = (int)(rand_r(&seed) % 4);
      for (int i = 0; i < rounds; i++)
        (void)fib_run_once(rt);
      (void)fib_cancel(rt, id);
      void *res;
      CHECK_OK(fib_run_join(rt, id, &res));
      ssize_t n = (ssize_t)(intptr_t)res;
      if (n == FIB_ECANCELED) {
        r.cancels++;
        continue;
      }
      CHECK(n > 0);
      r.reads++;
    }
    CHECK_EQ(race_got, r.n);
  }
  CHECK_OK(pthread_join(t, NULL));
  /* nothing left behind, nothing lost: the socket is empty */
  char extra;
  CHECK_EQ(recv(r.sv[1], &extra, 1, MSG_DONTWAIT), -1);
  CHECK_EQ(errno, EAGAIN);
  CHECK_OK(fib_runtime_destroy(rt));
  fib_close(r.sv[0]);
  fib_close(r.sv[1]);
  if (r.n >= 1000) /* the race was run, not only the easy halves of it */
    CHECK(r.reads > 0 && (r.timeouts + r.cancels) > 0);
#ifdef FIB__HAVE_IO_URING
  if (getenv("FIB_TEST_VERBOSE"))
    fprintf(stderr, "race %u/%d: %ld reads, %ld timeouts, %ld cancels, "
            "%ld completions won over a cancel\n", backend, with_cancel,
            r.reads, r.timeouts, r.cancels, fib__uring_cancel_lost);
#endif
}


TEST(deadline_racing_completion_loses_no_data) {
  unsetenv("FIBERS_IO");
  race_on(FIB_IO_EPOLL, 0);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  race_on(FIB_IO_URING, 0);
}

/* The race made on purpose. The reader's deadline and the writer's
 * wake-up are the same instant, the writer's timer first: both wake in one
 * pass over the timers, the reader timed out. The writer sends the byte,
 * then closes a third fiber's socket: fib_close waits for the kernel to
 * end that fiber's operation, and the kernel completes the reader's
 * operation meanwhile. The reader then runs: with io_uring its read took
 * the byte, and returns it (not FIB_ETIMEDOUT); with epoll it timed out
 * and the byte is still in the socket. Never both, never neither. */
enum { SAME_INSTANT_ROUNDS = 2000 };

struct instant {
  int sv[2];
  int other[2];
  uint64_t when;
  long won, cancelled;
};

static void *instant_reader(void *arg) {
  struct instant *r = arg;
  char c;
  ssize_t n = fib_recv_until(r->sv[1], &c, 1, 0, r->when);
  if (n == 1) {
    r->won++;
  } else {
    CHECK_EQ(n, FIB_ETIMEDOUT);
    r->cancelled++;
    CHECK_EQ(fib_recv(r->sv[1], &c, 1, 0), 1); /* still there */
  }
  CHECK_EQ(c, 'q');
  return NULL;
}

static void *instant_bystander(void *arg) {
  struct instant *r = arg;
  char c;
  CHECK_EQ(fib_recv(r->other[0], &c, 1, 0), FIB_EBADF);
  return NULL;
}

static void *instant_writer(void *arg) {
  struct instant *r = arg;
  CHECK_OK(fib_sleep_until(r->when));
  CHECK_EQ(send(r->sv[0], "q", 1, 0), 1);
  CHECK_OK(fib_close(r->other[0]));
  return NULL;
}

static void same_instant_on(unsigned backend) {
  struct instant r;
  memset(&r, 0, sizeof r);
  socket_pair(r.sv);
  fib_runtime *rt = runtime_with(backend);
  long rounds = scaled(SAME_INSTANT_ROUNDS);
  for (long i = 0; i < rounds; i++) {
    socket_pair(r.other);
    r.when = fib_now_ns() + 200000;
    CHECK_OK(fib_spawn(rt, instant_bystander, &r, NULL, NULL));
    CHECK_OK(fib_spawn(rt, instant_writer, &r, NULL, NULL));
    CHECK_OK(fib_spawn(rt, instant_reader, &r, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_close(r.other[1]));
  }
  CHECK_EQ(r.won + r.cancelled, rounds);
  if (backend == FIB_IO_EPOLL)
    CHECK_EQ(r.won, 0);
  else
    CHECK(r.won > 0); /* the race was run */
  if (getenv("FIB_TEST_VERBOSE"))
    fprintf(stderr, "same instant, back end %u: %ld returned the byte, "
            "%ld timed out with it left in the socket\n", backend, r.won,
            r.cancelled);
  CHECK_OK(fib_runtime_destroy(rt));
  fib_close(r.sv[0]);
  fib_close(r.sv[1]);
}

TEST(deadline_at_the_completion_instant) {
  unsetenv("FIBERS_IO");
  same_instant_on(FIB_IO_EPOLL);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  same_instant_on(FIB_IO_URING);
}

TEST(cancel_racing_completion_loses_no_data) {
  unsetenv("FIBERS_IO");
  race_on(FIB_IO_EPOLL, 1);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  race_on(FIB_IO_URING, 1);
}

/* A thread connects N times with random pauses; a fiber accepts with
 * deadlines that keep cutting its waits short. Every connection must be
 * accepted exactly once: none lost behind a timeout. */
enum { ACCEPT_CONNS = 2000 };

struct arace {
  int l;
  struct sockaddr_in a;
  long n;
  long accepted, timeouts;
};

static void *arace_connector(void *arg) {
  struct arace *r = arg;
  unsigned seed = 5;
  for (long i = 0; i < r->n; i++) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(c >= 0);
    CHECK_OK(connect(c, (struct sockaddr *)&r->a, sizeof r->a));
    close(c); /* the server side stays in the accept queue */
    pause_random(&seed);
  }
  return NULL;
}

static void *arace_acceptor(void *arg) {
  struct arace *r = arg;
  unsigned seed = 9;
  /* once every connection is made, a lost one shows as this long wait
   * timing out */
  while (r->accepted < r->n) {
    int s = fib_accept_until(r->l, NULL, NULL, SOCK_CLOEXEC,
                             fib_now_ns() + rand_r(&seed) % 40000);
    if (s == FIB_ETIMEDOUT) {
      r->timeouts++;
      if (r->timeouts > 50 * r->n + 100000)
        break; /* lost: fail below rather than hang */
      continue;
    }
    CHECK(s >= 0);
    r->accepted++;
    CHECK_OK(fib_close(s));
  }
  return NULL;
}

static void accept_race_on(unsigned backend) {
  struct arace r;
  memset(&r, 0, sizeof r);
  r.n = scaled(ACCEPT_CONNS);
  r.l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(r.l >= 0);
  r.a.sin_family = AF_INET;
  r.a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_OK(bind(r.l, (struct sockaddr *)&r.a, sizeof r.a));
  CHECK_OK(listen(r.l, 4096));
  socklen_t al = sizeof r.a;
  CHECK_OK(getsockname(r.l, (struct sockaddr *)&r.a, &al));
  fib_runtime *rt = runtime_with(backend);
  pthread_t t;
  CHECK_OK(pthread_create(&t, NULL, arace_connector, &r));
  CHECK_OK(fib_spawn(rt, arace_acceptor, &r, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(pthread_join(t, NULL));
  CHECK_EQ(r.accepted, r.n);
  /* and none is left in the queue */
  CHECK_EQ(accept4(r.l, NULL, NULL, SOCK_NONBLOCK), -1);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_close(r.l));
}

TEST(deadline_racing_accept_leaks_no_descriptor) {
  unsetenv("FIBERS_IO");
  accept_race_on(FIB_IO_EPOLL);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  accept_race_on(FIB_IO_URING);
}

/* -------------------------------------------- close, destroy in flight */

struct parked {
  int fd;
  int kind; /* 0 recv, 1 accept, 2 wait_fd */
  long result;
};

static void *park_on(void *arg) {
  struct parked *p = arg;
  char buf[8];
  if (p->kind == 0)
    p->result = fib_recv(p->fd, buf, sizeof buf, 0);
  else if (p->kind == 1)
    p->result = fib_accept(p->fd, NULL, NULL, 0);
  else
    p->result = fib_wait_fd(p->fd, FIB_IO_READ);
  return NULL;
}

static void *closer(void *arg) {
  struct parked *p = arg;
  CHECK_OK(fib_close(p[0].fd));
  CHECK_OK(fib_close(p[2].fd));
  return NULL;
}

static int listener(void) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_OK(bind(l, (struct sockaddr *)&a, sizeof a));
  CHECK_OK(listen(l, 8));
  return l;
}

static void close_on(unsigned backend) {
  fib_runtime *rt = runtime_with(backend);
  int sv[2], sv2[2];
  socket_pair(sv);
  socket_pair(sv2);
  struct parked p[4] = {
      {sv[0], 0, 1}, {sv[0], 2, 1}, {listener(), 1, 1}, {sv2[0], 0, 1}};
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_spawn(rt, park_on, &p[i], NULL, NULL));
  CHECK_EQ(fib_run_once(rt), 4); /* all four parked */
  /* from a fiber: the recv and the wait on sv[0], the accept */
  CHECK_OK(fib_spawn(rt, closer, p, NULL, NULL));
  CHECK_EQ(fib_run_once(rt), 4);
  /* from outside the runtime */
  CHECK_OK(fib_close(sv2[0]));
  CHECK_OK(fib_run(rt));
  for (int i = 0; i < 4; i++)
    CHECK_EQ(p[i].result, FIB_EBADF);
  /* the numbers, reused, get no stale completion */
  int again[2];
  socket_pair(again);
  /* the old peers are closed: their writes fail, and wake nobody */
  CHECK_EQ(send(sv[1], "a", 1, MSG_NOSIGNAL), -1);
  CHECK_EQ(send(sv2[1], "b", 1, MSG_NOSIGNAL), -1);
  CHECK_OK(fib_spawn(rt, echo_once, again, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  close(sv[1]);
  close(sv2[1]);
  fib_close(again[0]);
  fib_close(again[1]);
}

TEST(close_with_operations_in_flight) {
  unsetenv("FIBERS_IO");
  close_on(FIB_IO_EPOLL);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  close_on(FIB_IO_URING);
}

/* Destroying a runtime whose fibers are parked in operations: the
 * kernel lets go of their buffers before the stacks are freed, so data
 * that arrives afterwards stays in the socket (a read left in flight
 * would take it, into freed memory). ASan watches the user-space half. */
static void destroy_on(unsigned backend) {
  fib_runtime *rt = runtime_with(backend);
  int sv[2];
  socket_pair(sv);
  int l = listener();
  struct parked p[3] = {{sv[0], 0, 1}, {sv[0], 2, 1}, {l, 1, 1}};
  for (int i = 0; i < 3; i++)
    CHECK_OK(fib_spawn(rt, park_on, &p[i], NULL, NULL));
  CHECK_EQ(fib_run_once(rt), 3);
  CHECK_OK(fib_runtime_destroy(rt));
  for (int i = 0; i < 3; i++)
    CHECK_EQ(p[i].result, 1); /* never returned */
  CHECK_EQ(send(sv[1], "late", 4, 0), 4);
  struct pollfd pf = {sv[0], POLLIN, 0};
  CHECK_EQ(poll(&pf, 1, 1000), 1);
  char buf[8];
  CHECK_EQ(recv(sv[0], buf, sizeof buf, MSG_DONTWAIT), 4);
  CHECK(memcmp(buf, "late", 4) == 0);
  /* and a new runtime on the same thread runs I/O as before */
  fib_runtime *rt2 = runtime_with(backend);
  int sv3[2];
  socket_pair(sv3);
  CHECK_OK(fib_spawn(rt2, echo_once, sv3, NULL, NULL));
  CHECK_OK(fib_run(rt2));
  CHECK_OK(fib_runtime_destroy(rt2));
  fib_close(sv[0]);
  fib_close(sv[1]);
  fib_close(sv3[0]);
  fib_close(sv3[1]);
  fib_close(l);
}

TEST(destroy_with_operations_in_flight) {
  unsetenv("FIBERS_IO");
  destroy_on(FIB_IO_EPOLL);
  if (!uring_here())
    SKIP("io_uring not here: epoll checked only");
  destroy_on(FIB_IO_URING);
}

TEST_MAIN(T(option_and_environment_choose),
          T(refused_setup_falls_back_to_epoll), T(every_call),
          T(busy_fibers_do_not_starve_io),
          T(deadline_racing_completion_loses_no_data),
          T(deadline_at_the_completion_instant),
          T(cancel_racing_completion_loses_no_data),
          T(deadline_racing_accept_leaks_no_descriptor),
          T(close_with_operations_in_flight),
          T(destroy_with_operations_in_flight))
