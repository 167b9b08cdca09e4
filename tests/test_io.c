/* SPDX-License-Identifier: MIT */
/*
 * test_io.c -- <fibers/io.h> on socket pairs, pipes and files: a reader
 * parks and the writer wakes it; scatter/gather and socket flags; short
 * counts and EOF; files never park; blocking descriptors are made
 * non-blocking; deadlines and cancels have no effect and never lose data,
 * also when they race readiness; fib_close wakes waiters and the number's
 * next owner gets no stale wake-up; the run loop with I/O waiters (no
 * false deadlock, fairness, run_once / run_nowait); a runtime destroyed
 * with fibers parked on descriptors; errors; fork. TCP is in
 * test_io_net.c.
 */
#include "io_helpers.h"

#include <fibers.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* The back end these cases run on: CTest runs each case once per back end
 * built in, choosing it with FIBERS_IO (tests/CMakeLists.txt). A kernel or
 * sandbox that refuses io_uring gets epoll instead (io.h): then a case
 * that depends on the back end is skipped, the epoll run covering it. */
static void *probe_fiber(void *arg) {
  int *sv = arg;
  (void)fib_wait_fd_until(sv[0], FIB_IO_READ, 0); /* first I/O: choose */
  return NULL;
}

static const char *expected_backend(void) {
  const char *io = getenv("FIBERS_IO");
  if (!io || strcmp(io, "io_uring") != 0)
    return "epoll";
  int sv[2];
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, probe_fiber, sv, NULL, NULL));
  CHECK_OK(fib_run(rt));
  int refused = strcmp(fib_runtime_io_backend(rt), "io_uring") != 0;
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  if (refused)
    SKIP("FIBERS_IO=io_uring, but this kernel refuses io_uring: the epoll "
         "run covers this case");
  return "io_uring";
}

/* ------------------------------------------------- parking and waking */

/* The reader parks on an empty descriptor; the writer, a fiber that runs
 * only because the reader parked, wakes it. */
struct park_wake {
  int rfd, wfd;
  atomic_int reader_started, reader_done;
  int writer_saw_reader_parked;
  char got[16];
};

static void *pw_reader(void *arg) {
  struct park_wake *s = arg;
  atomic_store(&s->reader_started, 1);
  ssize_t n = fib_read(s->rfd, s->got, sizeof s->got);
  CHECK_EQ(n, 5);
  atomic_store(&s->reader_done, 1);
  return NULL;
}

static void *pw_writer(void *arg) {
  struct park_wake *s = arg;
  /* On several workers the writer may be taken by another worker and run
   * first: it waits for the reader to begin (on one thread the reader,
   * spawned first, has run until it parked). */
  while (!atomic_load(&s->reader_started))
    CHECK_OK(fib_yield());
  /* One thread: if we run while the reader has started and not finished,
   * its read parked the fiber, not the thread. */
  s->writer_saw_reader_parked = !atomic_load(&s->reader_done);
  CHECK_EQ(fib_write(s->wfd, "hello", 5), 5);
  return NULL;
}

static void park_and_wake(int rfd, int wfd) {
  struct park_wake s = {.rfd = rfd, .wfd = wfd};
  fib_runtime *rt = new_runtime();
  CHECK_STR_EQ(fib_runtime_io_backend(rt), "none");
  CHECK_OK(fib_spawn(rt, pw_reader, &s, NULL, NULL));
  CHECK_OK(fib_spawn(rt, pw_writer, &s, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK(s.writer_saw_reader_parked);
  CHECK(s.reader_done);
  CHECK(memcmp(s.got, "hello", 5) == 0);
  CHECK_STR_EQ(fib_runtime_io_backend(rt), expected_backend());
  CHECK_OK(fib_runtime_destroy(rt));
}

/* fib_runtime_io_fd chooses the back end if no I/O call has: the name
 * says which from then on, before any fiber has watched a descriptor. */
TEST(io_fd_names_the_back_end_it_chose) {
  fib_runtime *rt = new_runtime();
  CHECK_STR_EQ(fib_runtime_io_backend(rt), "none");
  CHECK(fib_runtime_io_fd(rt) >= 0);
  CHECK_STR_EQ(fib_runtime_io_backend(rt), expected_backend());
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(socketpair_reader_parks_writer_wakes) {
  int sv[2];
  make_socketpair(sv);
  park_and_wake(sv[0], sv[1]);
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
}

TEST(pipe_reader_parks_writer_wakes) {
  int p[2];
  make_pipe(p);
  park_and_wake(p[0], p[1]);
  CHECK_EQ(fib_close(p[0]), 0);
  CHECK_EQ(fib_close(p[1]), 0);
}

/* Scatter/gather: writev of three pieces, readv into two buffers. */
static int sg_fds[2];

static void *sg_reader(void *arg) {
  (void)arg;
  char a[4], b[16];
  memset(b, 'x', sizeof b);
  struct iovec v[2] = {{a, sizeof a}, {b, sizeof b}};
  ssize_t n = fib_readv(sg_fds[0], v, 2); /* parks: nothing yet */
  CHECK_EQ(n, 11);
  CHECK(memcmp(a, "abcd", 4) == 0);
  CHECK(memcmp(b, "efghijk", 7) == 0);
  CHECK_EQ(b[7], 'x'); /* nothing past the count */
  return NULL;
}

static void *sg_writer(void *arg) {
  (void)arg;
  struct iovec v[3] = {{"ab", 2}, {"cdefg", 5}, {"hijk", 4}};
  CHECK_EQ(fib_writev(sg_fds[1], v, 3), 11);
  return NULL;
}

static void scatter_gather(void) {
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, sg_reader, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, sg_writer, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(fib_close(sg_fds[0]), 0);
  CHECK_EQ(fib_close(sg_fds[1]), 0);
}

TEST(readv_writev_socketpair_and_pipe) {
  make_socketpair(sg_fds);
  scatter_gather();
  make_pipe(sg_fds);
  scatter_gather();
}

/* recv/send flags pass through: MSG_PEEK leaves the data, MSG_TRUNC on a
 * datagram says its real length; recvmsg/sendmsg carry control data (a
 * descriptor passed with SCM_RIGHTS). */
static void *flags_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  char buf[16] = {0};
  CHECK_EQ(fib_send(sv[1], "peekaboo", 8, 0), 8);
  CHECK_EQ(fib_recv(sv[0], buf, 4, MSG_PEEK), 4);
  CHECK(memcmp(buf, "peek", 4) == 0);
  CHECK_EQ(fib_recv(sv[0], buf, sizeof buf, 0), 8); /* still all there */
  CHECK(memcmp(buf, "peekaboo", 8) == 0);

  int dg[2];
  CHECK_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dg), 0);
  CHECK_EQ(fib_send(dg[1], "0123456789", 10, 0), 10);
  CHECK_EQ(fib_recv(dg[0], buf, 3, MSG_TRUNC), 10); /* the real length */
  CHECK(memcmp(buf, "012", 3) == 0);

  /* sendmsg with a descriptor; recvmsg in another fiber would park, here
   * the message is already there. */
  int p[2];
  make_pipe(p);
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec v = {"fd", 2};
  struct msghdr m = {.msg_iov = &v,
                     .msg_iovlen = 1,
                     .msg_control = ctl.space,
                     .msg_controllen = sizeof ctl.space};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &p[1], sizeof(int));
  CHECK_EQ(fib_sendmsg(sv[1], &m, 0), 2);

  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
  } rctl;
  memset(&rctl, 0, sizeof rctl);
  char rb[8];
  struct iovec rv = {rb, sizeof rb};
  struct msghdr rm = {.msg_iov = &rv,
                      .msg_iovlen = 1,
                      .msg_control = rctl.space,
                      .msg_controllen = sizeof rctl.space};
  CHECK_EQ(fib_recvmsg(sv[0], &rm, MSG_CMSG_CLOEXEC), 2);
  struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
  CHECK(rc != NULL);
  CHECK_EQ(rc->cmsg_type, SCM_RIGHTS);
  int passed;
  memcpy(&passed, CMSG_DATA(rc), sizeof passed);
  CHECK(passed >= 0 && passed != p[1]);
  CHECK_EQ(fib_write(passed, "x", 1), 1); /* the pipe's writing end */
  CHECK_EQ(fib_read(p[0], buf, sizeof buf), 1);
  CHECK_EQ(buf[0], 'x');

  int fds[] = {sv[0], sv[1], dg[0], dg[1], p[0], p[1], passed};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(recv_send_recvmsg_sendmsg_flags) { run_main(flags_main, NULL); }

/* A short count is returned as it is: the call neither waits for more nor
 * writes everything before it returns. */
static void *short_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  char buf[100];
  CHECK_EQ(fib_write(sv[1], "abc", 3), 3);
  CHECK_EQ(fib_read(sv[0], buf, sizeof buf), 3);
  /* A write bigger than the buffer room: the part that fits, now. */
  int small = 4096;
  CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  size_t big = 4u << 20;
  char *src = malloc(big);
  CHECK(src != NULL);
  memset(src, 'z', big);
  ssize_t n = fib_write(sv[1], src, big);
  CHECK(n > 0 && (size_t)n < big);
  CHECK_EQ(pending_bytes(sv[0]), n);
  /* the same through a pipe */
  int p[2];
  make_pipe(p);
  ssize_t m = fib_write(p[1], src, big);
  CHECK(m > 0 && (size_t)m < big);
  ssize_t r = fib_read(p[0], src, big);
  CHECK_EQ(r, m);
  free(src);
  int fds[] = {sv[0], sv[1], p[0], p[1]};
  for (int i = 0; i < 4; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(short_counts_stay_short) { run_main(short_main, NULL); }

/* End of file is 0, also for a reader that parked before it came. */
struct eof_state {
  int fd;
  ssize_t got;
};

static void *eof_reader(void *arg) {
  struct eof_state *s = arg;
  char buf[8];
  /* atomic: the main fiber looks before the join, and with several
   * workers this may run beside it */
  __atomic_store_n(&s->got, fib_read(s->fd, buf, sizeof buf),
                   __ATOMIC_RELAXED);
  return NULL;
}

static void *eof_main(void *arg) {
  (void)arg;
  int p[2], sv[2];
  make_pipe(p);
  make_socketpair(sv);
  struct eof_state a = {p[0], -1}, b = {sv[0], -1};
  fib_id ra = spawn(eof_reader, &a), rb = spawn(eof_reader, &b);
  CHECK_OK(fib_yield()); /* both park (one worker; others: may not have yet) */
  CHECK_EQ(__atomic_load_n(&a.got, __ATOMIC_RELAXED), -1);
  CHECK_EQ(__atomic_load_n(&b.got, __ATOMIC_RELAXED), -1);
  CHECK_EQ(fib_close(p[1]), 0);
  CHECK_EQ(shutdown(sv[1], SHUT_WR), 0);
  CHECK_OK(fib_join(ra, NULL));
  CHECK_OK(fib_join(rb, NULL));
  CHECK_EQ(a.got, 0);
  CHECK_EQ(b.got, 0);
  char c;
  CHECK_EQ(fib_read(p[0], &c, 1), 0); /* and again, at once */
  CHECK_EQ(fib_recv(sv[0], &c, 1, 0), 0);
  CHECK_EQ(fib_close(p[0]), 0);
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(eof_returns_zero) { run_main(eof_main, NULL); }

/* A regular file is always ready: calls on it complete without parking
 * (no other fiber runs during them), and it is left as it was opened. */
static int file_ticks;

static void *ticker(void *arg) {
  int n = (int)(intptr_t)arg;
  for (int i = 0; i < n; i++) {
    file_ticks++;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

static void *file_main(void *arg) {
  (void)arg;
  char path[] = "/tmp/fibers-io-XXXXXX";
  int fd = CHECK_FD(mkostemp(path, O_CLOEXEC));
  unlink(path);
  spawn(ticker, (void *)(intptr_t)1000); /* runs first, then gives way */
  int before = file_ticks;
  static char data[1 << 20];
  memset(data, 'f', sizeof data);
  for (int i = 0; i < 8; i++)
    CHECK_EQ(fib_write(fd, data, sizeof data), (ssize_t)sizeof data);
  CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
  for (int i = 0; i < 8; i++)
    CHECK_EQ(fib_read(fd, data, sizeof data), (ssize_t)sizeof data);
  CHECK_EQ(fib_read(fd, data, sizeof data), 0); /* end of file */
  CHECK_EQ(fib_wait_fd(fd, FIB_IO_READ | FIB_IO_WRITE),
           FIB_IO_READ | FIB_IO_WRITE);
  CHECK_EQ(file_ticks, before); /* nothing parked: nobody else ran */
  CHECK(!is_nonblocking(fd));   /* left as it was */
  CHECK_EQ(fib_close(fd), 0);
  return NULL;
}

TEST(regular_file_does_not_park) { run_main(file_main, NULL); }

/* A descriptor the caller left blocking is made non-blocking by the
 * first call: a fiber reading an empty blocking pipe parks, and another
 * keeps running. A watchdog thread writes to the pipe after 10 s, so a
 * read that blocked the thread fails the checks instead of hanging. */
struct blocking_state {
  int p[2];
  int ticks_before_data;
  int reader_done;
};
static struct blocking_state bs;

static void *watchdog(void *arg) {
  int fd = *(int *)arg;
  struct timespec ts = {10, 0};
  nanosleep(&ts, NULL);
  ssize_t n = write(fd, "W", 1);
  (void)n;
  return NULL;
}

static void *bs_reader(void *arg) {
  (void)arg;
  char c = 0;
  CHECK_EQ(fib_read(bs.p[0], &c, 1), 1);
  CHECK_EQ(c, 'D');
  bs.reader_done = 1;
  return NULL;
}

static void *bs_ticker(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++)
    CHECK_OK(fib_yield());
  bs.ticks_before_data = 100;
  CHECK(!bs.reader_done);
  CHECK_EQ(write(bs.p[1], "D", 1), 1); /* the pipe's other end, plainly */
  return NULL;
}

TEST(blocking_fd_is_made_nonblocking) {
  make_pipe(bs.p);
  CHECK(!is_nonblocking(bs.p[0]));
  int wd_fd = dup(bs.p[1]);
  pthread_t wd;
  CHECK_EQ(pthread_create(&wd, NULL, watchdog, &wd_fd), 0);
  CHECK_EQ(pthread_detach(wd), 0);
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, bs_reader, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, bs_ticker, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_EQ(bs.ticks_before_data, 100);
  CHECK(bs.reader_done);
  CHECK(is_nonblocking(bs.p[0])); /* on the open file description */
  _exit(0);                       /* the watchdog may still sleep */
}

/* ------------------------------------------------- deadlines, cancel */

/* A read that times out had no effect: the canary buffer is unchanged,
 * and data that comes afterwards is all there for the next read. */
static void *deadline_main(void *arg) {
  (void)arg;
  int sv[2], p[2];
  make_socketpair(sv);
  make_pipe(p);
  int rfds[] = {sv[0], p[0]}, wfds[] = {sv[1], p[1]};
  for (int i = 0; i < 2; i++) {
    char canary[32];
    memset(canary, 0xA5, sizeof canary);
    uint64_t t0 = fib_now_ns();
    CHECK_EQ(fib_read_until(rfds[i], canary, sizeof canary, t0 + 20 * MS),
             FIB_ETIMEDOUT);
    CHECK(fib_now_ns() >= t0 + 20 * MS);
    for (size_t k = 0; k < sizeof canary; k++)
      CHECK_EQ((unsigned char)canary[k], 0xA5);
    /* a deadline that has passed: tries once, then times out */
    CHECK_EQ(fib_read_until(rfds[i], canary, 1, 0), FIB_ETIMEDOUT);
    struct iovec v = {canary, sizeof canary};
    CHECK_EQ(fib_readv_until(rfds[i], &v, 1, fib_now_ns() + MS), FIB_ETIMEDOUT);
    CHECK_EQ(fib_wait_fd_until(rfds[i], FIB_IO_READ, fib_now_ns() + MS),
             FIB_ETIMEDOUT);
    CHECK_EQ((unsigned char)canary[0], 0xA5);
    CHECK_EQ(fib_write(wfds[i], "late data", 9), 9);
    /* ready now: a passed deadline does not stop a call that can be made */
    CHECK_EQ(fib_read_until(rfds[i], canary, sizeof canary, 0), 9);
    CHECK(memcmp(canary, "late data", 9) == 0);
  }
  if (1) {
    char canary[8];
    memset(canary, 0x5A, sizeof canary);
    CHECK_EQ(
        fib_recv_until(sv[0], canary, sizeof canary, 0, fib_now_ns() + 5 * MS),
        FIB_ETIMEDOUT);
    struct iovec v = {canary, sizeof canary};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    CHECK_EQ(fib_recvmsg_until(sv[0], &m, 0, fib_now_ns() + 5 * MS),
             FIB_ETIMEDOUT);
    CHECK_EQ((unsigned char)canary[0], 0x5A);
  }
  /* a write that times out wrote nothing */
  size_t filled = fill_send_buffer(sv[1]);
  CHECK_EQ(fib_write_until(sv[1], "w", 1, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(fib_send_until(sv[1], "w", 1, 0, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  struct iovec wv = {"w", 1};
  CHECK_EQ(fib_writev_until(sv[1], &wv, 1, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  struct msghdr wm = {.msg_iov = &wv, .msg_iovlen = 1};
  CHECK_EQ(fib_sendmsg_until(sv[1], &wm, 0, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(pending_bytes(sv[0]), (int)filled);
  int fds[] = {sv[0], sv[1], p[0], p[1]};
  for (int i = 0; i < 4; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(deadline_has_no_effect_and_loses_nothing) {
  run_main(deadline_main, NULL);
}

/* A cancel while parked: FIB_ECANCELED, nothing read; the data that comes
 * next is read by another fiber. */
struct cancel_state {
  int fd;
  ssize_t got;
  char buf[8];
};

static void *cancel_reader(void *arg) {
  struct cancel_state *s = arg;
  memset(s->buf, 0x33, sizeof s->buf);
  s->got = fib_recv(s->fd, s->buf, 1, 0);
  return NULL;
}

static void *cancel_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  struct cancel_state s = {.fd = sv[0], .got = 99};
  fib_id r = spawn(cancel_reader, &s);
  CHECK_OK(fib_yield());
  CHECK_EQ(s.got, 99); /* parked */
  CHECK_OK(fib_cancel(NULL, r));
  CHECK_OK(fib_join(r, NULL));
  CHECK_EQ(s.got, FIB_ECANCELED);
  CHECK_EQ((unsigned char)s.buf[0], 0x33);
  CHECK_EQ(fib_write(sv[1], "k", 1), 1);
  char c;
  CHECK_EQ(fib_read(sv[0], &c, 1), 1);
  CHECK_EQ(c, 'k');
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(cancel_while_parked_has_no_effect) { run_main(cancel_main, NULL); }

/* Cancel and readiness in the same round, many times and in every order:
 * the reader gets the byte or FIB_ECANCELED, and in the latter case the
 * byte is still there. Never lost, never read twice. */
static void *race_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  long iters = scaled(3000);
  long got_data = 0, got_cancel = 0;
  for (long i = 0; i < iters; i++) {
    struct cancel_state s = {.fd = sv[0], .got = 99};
    fib_id r = spawn(cancel_reader, &s);
    CHECK_OK(fib_yield()); /* it parks */
    char byte = (char)('a' + i % 26);
    switch (i % 4) {
    case 0: /* write then cancel, in one turn */
      CHECK_EQ(write(sv[1], &byte, 1), 1);
      CHECK_OK(fib_cancel(NULL, r));
      break;
    case 1: /* cancel then write */
      CHECK_OK(fib_cancel(NULL, r));
      CHECK_EQ(write(sv[1], &byte, 1), 1);
      break;
    case 2: /* write, let the loop poll (the reader is woken), cancel */
      CHECK_EQ(write(sv[1], &byte, 1), 1);
      CHECK_OK(fib_yield());
      CHECK_OK(fib_cancel(NULL, r));
      break;
    default: /* write, then cancel a turn or two later */
      CHECK_EQ(write(sv[1], &byte, 1), 1);
      for (long k = 0; k < i % 3; k++)
        CHECK_OK(fib_yield());
      CHECK_OK(fib_cancel(NULL, r));
      break;
    }
    CHECK_OK(fib_join(r, NULL));
    if (s.got == 1) {
      CHECK_EQ(s.buf[0], byte);
      got_data++;
    } else {
      CHECK_EQ(s.got, FIB_ECANCELED);
      CHECK_EQ((unsigned char)s.buf[0], 0x33);
      char c = 0;
      CHECK_EQ(fib_read(sv[0], &c, 1), 1); /* still there */
      CHECK_EQ(c, byte);
      got_cancel++;
    }
    CHECK_EQ(pending_bytes(sv[0]), 0);
  }
  CHECK_EQ(got_data + got_cancel, iters);
  CHECK(got_cancel > 0); /* case 1 always cancels before the wake */
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(cancel_racing_readiness_loses_no_data) { run_main(race_main, NULL); }

/* The same with deadlines: a writer fiber writes at about the reader's
 * deadline. Data or FIB_ETIMEDOUT; never lost. */
struct dl_race {
  int fd;
  uint64_t at;
};

static void *dl_writer(void *arg) {
  struct dl_race *d = arg;
  CHECK_OK(fib_sleep_until(d->at));
  CHECK_EQ(write(d->fd, "d", 1), 1);
  return NULL;
}

static void *dl_race_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  long iters = scaled(300), timeouts = 0;
  for (long i = 0; i < iters; i++) {
    uint64_t deadline = fib_now_ns() + 200000 + (uint64_t)(i % 5) * 100000;
    struct dl_race d = {sv[1], deadline - 100000 + (uint64_t)(i % 3) * 100000};
    fib_id w = spawn(dl_writer, &d);
    char canary = '#';
    ssize_t n = fib_read_until(sv[0], &canary, 1, deadline);
    if (n == FIB_ETIMEDOUT) {
      timeouts++;
      CHECK_EQ(canary, '#');
      CHECK_OK(fib_join(w, NULL));
      CHECK_EQ(fib_read(sv[0], &canary, 1), 1);
    } else {
      CHECK_EQ(n, 1);
      CHECK_OK(fib_join(w, NULL));
    }
    CHECK_EQ(canary, 'd');
    CHECK_EQ(pending_bytes(sv[0]), 0);
  }
  (void)timeouts; /* either outcome is right; the sum is what counts */
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(deadline_racing_readiness_loses_no_data) { run_main(dl_race_main, NULL); }

/* ---------------------------------------------------------- closing */

struct closer_state {
  int fd, listener;
  int read_res, write_res, accept_res, wait_res;
};
static struct closer_state cs;

static void *cl_reader(void *arg) {
  (void)arg;
  char c;
  cs.read_res = (int)fib_read(cs.fd, &c, 1);
  return NULL;
}
static void *cl_writer(void *arg) {
  (void)arg;
  cs.write_res = (int)fib_write(cs.fd, "x", 1);
  return NULL;
}
static void *cl_waiter(void *arg) {
  (void)arg;
  cs.wait_res = fib_wait_fd(cs.fd, FIB_IO_READ);
  return NULL;
}
static void *cl_acceptor(void *arg) {
  (void)arg;
  cs.accept_res = fib_accept(cs.listener, NULL, NULL, 0);
  return NULL;
}

static void *close_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  fill_send_buffer(sv[0]); /* so its writer parks too */
  cs.fd = sv[0];
  struct sockaddr_in a;
  cs.listener = tcp_listener(4, &a);
  cs.read_res = cs.write_res = cs.accept_res = cs.wait_res = 99;
  fib_id ids[] = {spawn(cl_reader, NULL), spawn(cl_writer, NULL),
                  spawn(cl_waiter, NULL), spawn(cl_acceptor, NULL)};
  CHECK_OK(fib_yield());
  CHECK_EQ(cs.read_res + cs.write_res + cs.wait_res + cs.accept_res, 4 * 99);
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(cs.listener), 0);
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  CHECK_EQ(cs.read_res, FIB_EBADF);
  CHECK_EQ(cs.write_res, FIB_EBADF);
  CHECK_EQ(cs.wait_res, FIB_EBADF);
  CHECK_EQ(cs.accept_res, FIB_EBADF);
  /* the number is free: calls on it now say so too */
  char c;
  CHECK_EQ(fib_read(sv[0], &c, 1), FIB_EBADF);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(close_wakes_reader_writer_acceptor_with_ebadf) {
  run_main(close_main, NULL);
}

/* An edge that the old descriptor left unconsumed (its `ready` bit) must
 * not make the number's next owner look ready. (For the calls that try
 * the operation first, such a bit would only cost one more try; for
 * fib_wait_fd, which does not, it would be a false "ready": fib_close
 * clears it, and fib_wait_fd clears what the kernel says is not ready.) */
static void *reuse_ready_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  /* Leave a readiness edge with nobody waiting: a read that times out
   * has the fd watched; then it becomes readable while nobody waits, and
   * the loop polls (another waiter keeps it polling). */
  char c;
  CHECK_EQ(fib_read_until(sv[0], &c, 1, fib_now_ns() + MS), FIB_ETIMEDOUT);
  int other[2];
  make_socketpair(other);
  CHECK_EQ(write(sv[1], "r", 1), 1);
  /* a wait on another fd keeps the runtime polling while we sleep */
  CHECK_EQ(fib_wait_fd_until(other[0], FIB_IO_READ, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  int old = sv[0];
  CHECK_EQ(fib_close(sv[0]), 0);
  int fresh[2];
  make_socketpair(fresh);
  int newfd = fresh[0] == old ? fresh[0] : fresh[1];
  CHECK_EQ(newfd, old); /* the lowest free number */
  CHECK_EQ(fib_wait_fd_until(newfd, FIB_IO_READ, fib_now_ns() + 20 * MS),
           FIB_ETIMEDOUT); /* nothing to read on the new one */
  int peer = newfd == fresh[0] ? fresh[1] : fresh[0];
  CHECK_EQ(write(peer, "n", 1), 1);
  CHECK_EQ(fib_wait_fd(newfd, FIB_IO_READ), FIB_IO_READ);
  CHECK_EQ(fib_read(newfd, &c, 1), 1);
  CHECK_EQ(c, 'n');
  int fds[] = {sv[1], other[0], other[1], fresh[0], fresh[1]};
  for (int i = 0; i < 5; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(reused_number_gets_no_stale_ready_bit) {
  run_main(reuse_ready_main, NULL);
}

/* A descriptor closed behind the runtime's back while a dup keeps its
 * file in the epoll set; fib_accept hands out the same number for a new
 * socket. Events of the old file carry the old generation: dropped, not
 * delivered to the new socket's waiter. */
static void *reuse_gen_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  /* watched: a read that parks and times out */
  char b;
  CHECK_EQ(fib_read_until(sv[0], &b, 1, fib_now_ns() + MS), FIB_ETIMEDOUT);
  struct sockaddr_in a;
  int l = tcp_listener(4, &a);
  int client = tcp_socket();
  int keep = CHECK_FD(fcntl(sv[0], F_DUPFD_CLOEXEC, 100));
  int old = sv[0];
  CHECK_EQ(close(old), 0); /* behind the runtime's back */
  CHECK_EQ(connect(client, (struct sockaddr *)&a, sizeof a), 0);
  int c = fib_accept(l, NULL, NULL, SOCK_CLOEXEC);
  CHECK_EQ(c, old); /* the lowest free number */
  CHECK(is_nonblocking(c));
  /* the old file gets data: its event must not wake the new socket */
  CHECK_EQ(write(sv[1], "old", 3), 3);
  CHECK_EQ(fib_wait_fd_until(c, FIB_IO_READ, fib_now_ns() + 30 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(write(sv[1], "old", 3), 3);
  CHECK_EQ(fib_wait_fd_until(c, FIB_IO_READ, fib_now_ns() + 30 * MS),
           FIB_ETIMEDOUT);
  /* its own events still come */
  CHECK_EQ(write(client, "new", 3), 3);
  CHECK_EQ(fib_wait_fd(c, FIB_IO_READ), FIB_IO_READ);
  char buf[8];
  CHECK_EQ(fib_read(c, buf, sizeof buf), 3);
  CHECK(memcmp(buf, "new", 3) == 0);
  int fds[] = {c, l, client, keep, sv[1]};
  for (int i = 0; i < 5; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(reused_number_gets_no_stale_event) { run_main(reuse_gen_main, NULL); }

/* A reader woken by readiness but not yet run when another fiber closes
 * the descriptor and the number is reused: it must not go on with the
 * number's new owner (read its data, or wait on it). */
struct woken_state {
  int fd;
  ssize_t got;
  char buf[8];
};
static struct woken_state ws;

static void *ws_reader(void *arg) {
  (void)arg;
  ws.got = fib_read(ws.fd, ws.buf, sizeof ws.buf);
  return NULL;
}

static int ws_fresh[2];

static void *ws_closer(void *arg) {
  (void)arg;
  int old = ws.fd;
  CHECK_EQ(fib_close(old), 0);
  make_socketpair(ws_fresh);
  CHECK_EQ(ws_fresh[0], old);
  CHECK_EQ(write(ws_fresh[1], "new", 3), 3);
  return NULL;
}

TEST(woken_reader_does_not_use_the_reused_number) {
  int sv[2];
  make_socketpair(sv);
  ws.fd = sv[0];
  ws.got = 99;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, ws_reader, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 1); /* the reader parks */
  CHECK_EQ(write(sv[1], "old", 3), 3);
  /* The next round polls first (the reader is readied, behind the
   * closer), then runs the closer, then the reader. */
  CHECK_OK(fib_spawn(rt, ws_closer, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  if (strcmp(expected_backend(), "io_uring") == 0) {
    /* The kernel completed the read into the reader's buffer before the
     * close: its result is kept (io.h), and it is the old data. */
    CHECK_EQ(ws.got, 3);
    CHECK(memcmp(ws.buf, "old", 3) == 0);
  } else { /* readiness only: the reader must not read the new owner's */
    CHECK_EQ(ws.got, FIB_EBADF);
  }
  CHECK_EQ(pending_bytes(ws_fresh[0]), 3); /* the new owner's, untouched */
  CHECK_EQ(fib_close(ws_fresh[0]), 0);
  CHECK_EQ(fib_close(ws_fresh[1]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
}

/* -------------------------------------------------- fib_wait_fd */

static void *wait_fd_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  /* writable, nothing to read: asking for both returns writing, at once
   * and again (the state, not an edge) */
  for (int i = 0; i < 3; i++)
    CHECK_EQ(fib_wait_fd_until(sv[0], FIB_IO_READ | FIB_IO_WRITE,
                               fib_now_ns() + 2000 * MS),
             FIB_IO_WRITE);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(fib_wait_fd_until(sv[0], FIB_IO_WRITE, fib_now_ns() + 2000 * MS),
             FIB_IO_WRITE);
  /* readable: again and again until it is read */
  CHECK_EQ(write(sv[1], "q", 1), 1);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(fib_wait_fd_until(sv[0], FIB_IO_READ, fib_now_ns() + 2000 * MS),
             FIB_IO_READ);
  char q;
  CHECK_EQ(fib_read(sv[0], &q, 1), 1);
  int r;
  /* not writable (buffer full), nothing to read: both asked, then data */
  fill_send_buffer(sv[0]);
  CHECK_EQ(fib_wait_fd_until(sv[0], FIB_IO_READ | FIB_IO_WRITE,
                             fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(write(sv[1], "r", 1), 1);
  r = fib_wait_fd_until(sv[0], FIB_IO_READ | FIB_IO_WRITE,
                        fib_now_ns() + 2000 * MS);
  CHECK(r > 0 && (r & FIB_IO_READ) && !(r & ~(FIB_IO_READ | FIB_IO_WRITE)));
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(wait_fd_returns_the_ready_state_not_only_edges) {
  run_main(wait_fd_main, NULL);
}

/* ------------------------------------------------------ the run loop */

/* Fibers parked only on I/O, with a thread that makes the fd ready: no
 * deadlock, fib_run returns 0 once they are done. */
static void *late_writer(void *arg) {
  int fd = *(int *)arg;
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  CHECK_EQ(write(fd, "t", 1), 1);
  return NULL;
}

static int io_only_fd;

static void *io_only_reader(void *arg) {
  (void)arg;
  char c;
  CHECK_EQ(fib_read(io_only_fd, &c, 1), 1);
  CHECK_EQ(c, 't');
  return NULL;
}

static fib_sem dl_sem;

static void *sem_waiter(void *arg) {
  (void)arg;
  CHECK_OK(fib_sem_wait(&dl_sem));
  return NULL;
}

TEST(io_waiters_are_no_deadlock) {
  int p[2];
  make_pipe(p);
  io_only_fd = p[0];
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, late_writer, &p[1]), 0);
  CHECK_EQ(fib_run(rt), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  /* A fiber that waits for the program is still a deadlock once the
   * I/O waiters are done. */
  rt = new_runtime(); /* first: a semaphore made now is shared by workers */
  CHECK_OK(fib_sem_init(&dl_sem, 0));
  CHECK_OK(fib_spawn(rt, sem_waiter, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  CHECK_EQ(pthread_create(&t, NULL, late_writer, &p[1]), 0);
  CHECK_EQ(fib_run(rt), FIB_EDEADLK);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(pending_bytes(p[0]), 0); /* the reader had its byte */
  CHECK_OK(fib_sem_post(&dl_sem));
  CHECK_EQ(fib_run(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib_close(p[0]), 0);
  CHECK_EQ(fib_close(p[1]), 0);
}

/* fib_run_nowait never blocks with I/O waiters, and runs the reader in
 * the round after its fd became ready; fib_run_once blocks until the I/O
 * comes (docs/io.md). */
TEST(run_nowait_and_run_once_with_io_waiters) {
  int p[2];
  make_pipe(p);
  io_only_fd = p[0];
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  for (int i = 0; i < 3; i++)
    CHECK_EQ(fib_run_nowait(rt), 1); /* parked: at once, every time */
  CHECK_EQ(write(p[1], "t", 1), 1);
  CHECK_EQ(fib_run_nowait(rt), 0); /* polled, ran, finished */
  /* fib_run_once: nothing ready, a reader parked; it waits for the fd */
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 1);
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, late_writer, &p[1]), 0);
  CHECK_EQ(fib_run_once(rt), 0);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib_close(p[0]), 0);
  CHECK_EQ(fib_close(p[1]), 0);
}

/* A fiber that keeps yielding does not keep a ready reader waiting more
 * than a round: the yields made between the write and the reader's
 * return are bounded by the number of ready fibers, not by the loops. */
#define YIELDERS 3
static int fair_fds[2];
static int fair_reader_done;
static long yields_after_write;
static int write_done;

static void *fair_reader(void *arg) {
  (void)arg;
  char c;
  CHECK_EQ(fib_read(fair_fds[0], &c, 1), 1);
  fair_reader_done = 1;
  return NULL;
}

static void *fair_yielder(void *arg) {
  int writer = (int)(intptr_t)arg;
  for (long i = 0; i < 100000 && !fair_reader_done; i++) {
    if (writer && i == 10) {
      CHECK_EQ(write(fair_fds[1], "f", 1), 1);
      write_done = 1;
    }
    if (write_done)
      yields_after_write++;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(yielding_fibers_do_not_starve_a_ready_reader) {
  make_socketpair(fair_fds);
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, fair_reader, NULL, NULL, NULL));
  for (int i = 0; i < YIELDERS; i++)
    CHECK_OK(
        fib_spawn(rt, fair_yielder, (void *)(intptr_t)(i == 0), NULL, NULL));
  run_to_end(rt);
  CHECK(fair_reader_done);
  /* at most two rounds of the yielders: the one in which the write came,
   * and the one before the poll that sees it */
  CHECK(yields_after_write <= 2 * YIELDERS);
  CHECK_EQ(fib_close(fair_fds[0]), 0);
  CHECK_EQ(fib_close(fair_fds[1]), 0);
}

/* A runtime destroyed while fibers wait on descriptors (reading, writing,
 * accepting): nothing leaks or dangles (ASan, valgrind), and the
 * descriptors then work in a new runtime, closed and reused. */
static int dz_sv[2], dz_listener;

static void *dz_read(void *arg) {
  (void)arg;
  char c;
  (void)fib_read(dz_sv[0], &c, 1);
  CHECK(0); /* never resumed */
  return NULL;
}
static void *dz_write(void *arg) {
  (void)arg;
  (void)fib_write(dz_sv[0], "x", 1);
  CHECK(0);
  return NULL;
}
static void *dz_accept(void *arg) {
  (void)arg;
  (void)fib_accept_until(dz_listener, NULL, NULL, 0,
                         fib_now_ns() + 3600000 * MS);
  CHECK(0);
  return NULL;
}

TEST(destroy_with_fibers_parked_on_fds) {
  make_socketpair(dz_sv);
  fill_send_buffer(dz_sv[0]);
  struct sockaddr_in a;
  dz_listener = tcp_listener(4, &a);
  fib_runtime *rt = new_runtime();
  for (int i = 0; i < 3; i++) {
    CHECK_OK(fib_spawn(rt, dz_read, NULL, NULL, NULL));
    CHECK_OK(fib_spawn(rt, dz_write, NULL, NULL, NULL));
    CHECK_OK(fib_spawn(rt, dz_accept, NULL, NULL, NULL));
  }
  CHECK_EQ(fib_run_nowait(rt), 9);
  CHECK_OK(fib_runtime_destroy(rt));
  /* events for the discarded waiters come to nobody */
  int client = tcp_socket();
  CHECK_EQ(connect(client, (struct sockaddr *)&a, sizeof a), 0);
  char drain[65536];
  while (recv(dz_sv[1], drain, sizeof drain, MSG_DONTWAIT) > 0)
    ;
  /* a new runtime uses the same descriptors: they still work */
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  io_only_fd = dz_sv[1];
  CHECK_EQ(write(dz_sv[0], "t", 1), 1);
  CHECK_EQ(fib_run(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  /* closed (nobody waits: nothing to wake) and the numbers reused */
  int old = dz_sv[0];
  CHECK_EQ(fib_close(dz_sv[0]), 0);
  CHECK_EQ(fib_close(dz_sv[1]), 0);
  CHECK_EQ(fib_close(dz_listener), 0);
  CHECK_EQ(fib_close(client), 0);
  int p[2];
  make_pipe(p);
  CHECK(p[0] == old || p[1] == old);
  io_only_fd = p[0];
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, io_only_reader, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(rt), 1);
  CHECK_EQ(write(p[1], "t", 1), 1);
  CHECK_EQ(fib_run(rt), 0);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(fib_close(p[0]), 0);
  CHECK_EQ(fib_close(p[1]), 0);
}

/* A thread that ran a runtime exits while fibers wait in it (the runtime
 * is not destroyed): the thread's poller and ring go, but the waits that
 * point into them must not dangle. The runtime, driven from this thread
 * afterwards, gets a cancelled fiber back (FIB_ECANCELED, nothing read),
 * a fiber with a deadline back (its deadline, or on io_uring the cancel
 * the thread's exit made: FIB_ECANCELED), and is destroyed with a fiber
 * still waiting. ASan and valgrind see no use after free and no leak. */
static int te_sv[2], te_listener;
static int te_cancelled = 1, te_timed = 1;

static void *te_cancel_me(void *arg) {
  (void)arg;
  char c;
  te_cancelled = (int)fib_read(te_sv[0], &c, 1);
  return NULL;
}
static void *te_deadline(void *arg) {
  (void)arg;
  char c;
  te_timed = (int)fib_read_until(te_sv[0], &c, 1, fib_now_ns() + 150 * MS);
  return NULL;
}
static void *te_forever(void *arg) {
  (void)arg;
  (void)fib_accept(te_listener, NULL, NULL, 0);
  CHECK(0); /* destroyed, never resumed */
  return NULL;
}

struct te_start {
  fib_runtime *rt;
  fib_id cancel_me;
};

static void *te_thread(void *arg) {
  struct te_start *t = arg;
  CHECK_OK(fib_spawn(t->rt, te_cancel_me, NULL, NULL, &t->cancel_me));
  CHECK_OK(fib_spawn(t->rt, te_deadline, NULL, NULL, NULL));
  for (int i = 0; i < 2; i++)
    CHECK_OK(fib_spawn(t->rt, te_forever, NULL, NULL, NULL));
  CHECK_EQ(fib_run_nowait(t->rt), 4); /* all four wait on descriptors */
  return NULL; /* exits with the runtime alive */
}

TEST(thread_exit_with_fibers_waiting_then_destroy) {
  const char *backend = expected_backend();
  make_socketpair(te_sv);
  struct sockaddr_in a;
  te_listener = tcp_listener(4, &a);
  struct te_start t = {.rt = new_runtime()};
  pthread_t th;
  CHECK_EQ(pthread_create(&th, NULL, te_thread, &t), 0);
  CHECK_EQ(pthread_join(th, NULL), 0);
  CHECK_STR_EQ(fib_runtime_io_backend(t.rt), backend);
  /* the data that comes now is for nobody: the waits went with the
   * thread (docs/io.md) */
  CHECK_EQ(write(te_sv[1], "x", 1), 1);
  CHECK_OK(fib_cancel(t.rt, t.cancel_me));
  /* never blocking, so that a wait that wrongly never ends fails the
   * checks below instead of hanging */
  uint64_t end = fib_now_ns() + 10000 * MS;
  while (fib_run_nowait(t.rt) > 2 && fib_now_ns() < end)
    usleep(1000);
  CHECK_EQ(te_cancelled, FIB_ECANCELED);
  if (strcmp(backend, "epoll") == 0)
    CHECK_EQ(te_timed, FIB_ETIMEDOUT);
  else
    CHECK_EQ(te_timed, FIB_ECANCELED);
  CHECK_EQ(pending_bytes(te_sv[0]), 1); /* nothing was read */
  CHECK_EQ(fib_run_nowait(t.rt), 2);
  CHECK_OK(fib_runtime_destroy(t.rt));
  CHECK_EQ(fib_close(te_sv[0]), 0);
  CHECK_EQ(fib_close(te_sv[1]), 0);
  CHECK_EQ(fib_close(te_listener), 0);
}

/* A short read from a stream socket makes the next read wait for an edge
 * instead of trying (io.c, READ_LOOP). Nothing may be lost by it: data
 * written after the short read (by the same fiber, so no poll came in
 * between; or by another thread while the reader waits) is read, also
 * with a deadline that has passed; datagram and seqpacket sockets, where a
 * short read is one small message, read the next queued message at once. */
static void *short_read_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  char buf[64];
  CHECK_EQ(fib_write(sv[1], "abc", 3), 3);
  CHECK_EQ(fib_read(sv[0], buf, sizeof buf), 3); /* short: drained */
  CHECK_EQ(write(sv[1], "de", 2), 2);             /* no poll since */
  CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, 0), 2);
  CHECK(memcmp(buf, "de", 2) == 0);
  CHECK_EQ(write(sv[1], "f", 1), 1);
  CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, fib_now_ns() + 5000 * MS),
           1);
  CHECK_EQ(write(sv[1], "gh", 2), 2);
  CHECK_EQ(fib_recv(sv[0], buf, sizeof buf, 0), 2);
  CHECK_EQ(write(sv[1], "ij", 2), 2);
  struct iovec v = {buf, sizeof buf};
  CHECK_EQ(fib_readv(sv[0], &v, 1), 2);
  /* nothing there: a drained socket still times out, reading nothing */
  CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, fib_now_ns() + 5 * MS),
           FIB_ETIMEDOUT);
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  int types[] = {SOCK_DGRAM, SOCK_SEQPACKET};
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(socketpair(AF_UNIX, types[i] | SOCK_CLOEXEC, 0, sv), 0);
    CHECK_EQ(write(sv[1], "one", 3), 3);
    CHECK_EQ(write(sv[1], "two", 3), 3);
    uint64_t dl = fib_now_ns() + 5000 * MS;
    CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, dl), 3);
    uint64_t t0 = fib_now_ns();
    CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, dl), 3);
    CHECK(memcmp(buf, "two", 3) == 0);
    CHECK(fib_now_ns() - t0 < 1000 * MS);
    CHECK_EQ(fib_close(sv[0]), 0);
    CHECK_EQ(fib_close(sv[1]), 0);
  }
  return NULL;
}

struct late_pair {
  int fd;
};
static void *late_write_thread(void *arg) {
  usleep(20000);
  CHECK_EQ(write(*(int *)arg, "late", 4), 4);
  return NULL;
}
static void *short_then_late_main(void *arg) {
  (void)arg;
  int sv[2];
  make_socketpair(sv);
  char buf[64];
  CHECK_EQ(write(sv[1], "x", 1), 1);
  CHECK_EQ(fib_read(sv[0], buf, sizeof buf), 1); /* short: drained */
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, late_write_thread, &sv[1]), 0);
  CHECK_EQ(fib_read_until(sv[0], buf, sizeof buf, fib_now_ns() + 5000 * MS),
           4);
  CHECK_EQ(pthread_join(t, NULL), 0);
  CHECK_EQ(fib_close(sv[0]), 0);
  CHECK_EQ(fib_close(sv[1]), 0);
  return NULL;
}

TEST(short_stream_read_waits_for_an_edge_and_loses_nothing) {
  run_main(short_read_main, NULL);
  run_main(short_then_late_main, NULL);
}

/* ----------------------------------------------------------- errors */

static void *errors_main(void *arg) {
  (void)arg;
  char c = 0;
  CHECK_EQ(fib_read(-1, &c, 1), FIB_EBADF);
  CHECK_EQ(fib_write(-1, &c, 1), FIB_EBADF);
  CHECK_EQ(fib_wait_fd(-1, FIB_IO_READ), FIB_EBADF);
  CHECK_EQ(fib_accept(-1, NULL, NULL, 0), FIB_EBADF);
  int unused = CHECK_FD(dup(0));
  CHECK_EQ(close(unused), 0); /* a number nobody has open */
  CHECK_EQ(fib_read(unused, &c, 1), FIB_EBADF);
  CHECK_EQ(fib_recv(unused, &c, 1, 0), FIB_EBADF);
  CHECK_EQ(fib_close(unused), FIB_EBADF);
  CHECK_EQ(fib_close(-1), FIB_EBADF);
  /* a pipe is no socket: the kernel's error comes back unchanged */
  int p[2];
  make_pipe(p);
  CHECK_EQ(fib_recv(p[0], &c, 1, 0), FIB_ENOTSOCK);
  /* events: 0 or unknown bits */
  CHECK_EQ(fib_wait_fd(p[0], 0), FIB_EINVAL);
  CHECK_EQ(fib_wait_fd(p[0], 4), FIB_EINVAL);
  CHECK_EQ(fib_wait_fd(p[0], FIB_IO_READ | 8), FIB_EINVAL);
  CHECK_EQ(fib_wait_fd_until(p[0], ~0u, 0), FIB_EINVAL);
  /* a cancelled fiber: FIB_ECANCELED before any effect, data left */
  CHECK_EQ(write(p[1], "c", 1), 1);
  CHECK_OK(fib_cancel(NULL, fib_self()));
  CHECK_EQ(fib_read(p[0], &c, 1), FIB_ECANCELED);
  CHECK_EQ(fib_wait_fd(p[0], FIB_IO_READ), FIB_ECANCELED);
  CHECK_EQ(fib_write(p[1], "c", 1), FIB_ECANCELED);
  CHECK_EQ(pending_bytes(p[0]), 1);
  CHECK_EQ(fib_close(p[0]), 0); /* works in a cancelled fiber */
  CHECK_EQ(fib_close(p[1]), 0);
  return NULL;
}

static void *in_coroutine(void *arg, void *first) {
  (void)first;
  int fd = *(int *)arg;
  char c;
  return (void *)(intptr_t)fib_read(fd, &c, 1);
}

static void *coro_main(void *arg) {
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, in_coroutine, arg, NULL));
  void *out = NULL;
  CHECK_OK(fib_coro_resume(co, NULL, &out));
  CHECK_EQ((intptr_t)out, FIB_EPERM);
  CHECK_OK(fib_coro_destroy(co));
  return NULL;
}

TEST(error_codes) {
  run_main(errors_main, NULL);
  /* outside a fiber: FIB_EPERM, and nothing read */
  int p[2];
  make_pipe(p);
  CHECK_EQ(write(p[1], "e", 1), 1);
  char c;
  CHECK_EQ(fib_read(p[0], &c, 1), FIB_EPERM);
  CHECK_EQ(fib_wait_fd(p[0], FIB_IO_READ), FIB_EPERM);
  CHECK_EQ(fib_accept(p[0], NULL, NULL, 0), FIB_EPERM);
  CHECK_EQ(pending_bytes(p[0]), 1);
  run_main(coro_main, &p[0]); /* in a coroutine a fiber resumed */
  CHECK_EQ(pending_bytes(p[0]), 1);
  CHECK_EQ(fib_close(p[0]), 0); /* fib_close works anywhere */
  CHECK_EQ(fib_close(p[1]), 0);
  /* an errno the map does not name: the C library's text */
  CHECK_STR_EQ(fib_strerror(-ENOTDIR), strerror(ENOTDIR));
  CHECK_STR_EQ(fib_strerror(-EROFS), strerror(EROFS));
  CHECK_STR_EQ(fib_strerror(FIB_ECONNRESET), "connection reset by peer");
  CHECK_STR_EQ(fib_err_name(FIB_ENOTSOCK), "ENOTSOCK");
}

/* ------------------------------------------------------------- fork */

/* A fiber forks while others wait on descriptors. The child shares the
 * parent's epoll set (the epoll descriptor is inherited): it must not use
 * the runtime, only _exit or exec. The parent's runtime goes on. */
static int fork_fds[2];

static void *fork_main(void *arg) {
  int use_exec = (int)(intptr_t)arg;
  make_socketpair(fork_fds);
  io_only_fd = fork_fds[0];
  fib_id r = spawn(io_only_reader, NULL);
  CHECK_OK(fib_yield()); /* it parks: the epoll set is in use */
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    if (use_exec) {
      execl("/bin/true", "true", (char *)NULL);
      _exit(127);
    }
    _exit(3);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    CHECK_EQ(errno, EINTR);
  CHECK(WIFEXITED(status));
  CHECK_EQ(WEXITSTATUS(status), use_exec ? 0 : 3);
  CHECK_EQ(write(fork_fds[1], "t", 1), 1);
  CHECK_OK(fib_join(r, NULL)); /* the parent's reader still wakes */
  /* and new descriptors are still watched */
  int p[2];
  make_pipe(p);
  io_only_fd = p[0];
  r = spawn(io_only_reader, NULL);
  CHECK_OK(fib_yield());
  CHECK_EQ(fib_write(p[1], "t", 1), 1);
  CHECK_OK(fib_join(r, NULL));
  int fds[] = {p[0], p[1], fork_fds[0], fork_fds[1]};
  for (int i = 0; i < 4; i++)
    CHECK_EQ(fib_close(fds[i]), 0);
  return NULL;
}

TEST(fork_child_exits_or_execs_parent_goes_on) {
  if (access("/bin/true", X_OK) != 0)
    SKIP("/bin/true is not there to exec");
  run_main(fork_main, (void *)(intptr_t)0);
  run_main(fork_main, (void *)(intptr_t)1);
}

TEST_MAIN(T(io_fd_names_the_back_end_it_chose),
          T(socketpair_reader_parks_writer_wakes),
          T(pipe_reader_parks_writer_wakes),
          T(readv_writev_socketpair_and_pipe),
          T(recv_send_recvmsg_sendmsg_flags), T(short_counts_stay_short),
          T(eof_returns_zero), T_ONE_WORKER(regular_file_does_not_park,
                       "counts the ticks other fibers make meanwhile: on "
                       "several workers they run at the same time"),
          T(blocking_fd_is_made_nonblocking),
          T(deadline_has_no_effect_and_loses_nothing),
          T_ONE_WORKER(cancel_while_parked_has_no_effect,
                       "needs the reader parked after one yield, which only "
                       "one thread promises"),
          T(cancel_racing_readiness_loses_no_data),
          T(deadline_racing_readiness_loses_no_data),
          T_ONE_WORKER(close_wakes_reader_writer_acceptor_with_ebadf,
                       "one yield parks all four only on one thread: on "
                       "several, one not yet started uses the closed number, "
                       "which another worker's poller may hold by then"),
          T(reused_number_gets_no_stale_ready_bit),
          T(reused_number_gets_no_stale_event),
          T_ONE_WORKER(woken_reader_does_not_use_the_reused_number,
                       "steps the run with fib_run_nowait"),
          T(wait_fd_returns_the_ready_state_not_only_edges),
          T(io_waiters_are_no_deadlock),
          T_ONE_WORKER(run_nowait_and_run_once_with_io_waiters,
                       "fib_run_nowait and fib_run_once"),
          T_ONE_WORKER(yielding_fibers_do_not_starve_a_ready_reader,
                       "counts the yields of one run queue"),
          T_ONE_WORKER(destroy_with_fibers_parked_on_fds,
                       "steps the run with fib_run_nowait"),
          T_ONE_WORKER(thread_exit_with_fibers_waiting_then_destroy,
                       "steps the run with fib_run_nowait"),
          T(short_stream_read_waits_for_an_edge_and_loses_nothing),
          T(error_codes),
          T(fork_child_exits_or_execs_parent_goes_on))
