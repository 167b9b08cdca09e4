/* SPDX-License-Identifier: MIT */
/*
 * io.c -- the calls of <fibers/io.h>: try the operation, and if the kernel
 * says it would block, park the fiber until the descriptor is ready
 * (poller.h) and try again.
 */
#include "poller.h"
#include "uring.h"
#include "../sched/seed.h"
#include "../sanitize.h"
#include "fibers/io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* io_uring (uring.h): if the calling fiber's runtime uses it, the call is
 * its, unless it passes (a regular file). The one line at the top of each
 * call; without liburing, nothing. */
#ifdef FIB__HAVE_IO_URING
#define URING(call)                                                            \
  do {                                                                         \
    if (fib__uring_on()) {                                                     \
      ssize_t u_ = (call);                                                     \
      if (u_ != FIB__URING_PASS)                                               \
        return u_;                                                             \
    }                                                                          \
  } while (0)
#else
#define URING(call) ((void)0)
#endif

/* The runtime's poll hook (sched's run loop calls it). */
static int runtime_poll(struct fib_runtime *rt, uint64_t deadline) {
  (void)rt;
  struct fib__poller *p = fib__poller_peek();
  return p ? fib__poller_poll(p, deadline) : 0;
}

int fib__io_wake_fd(void) {
  int err;
  struct fib__poller *p = fib__poller_get(&err);
  return p ? fib__poller_wake_fd(p) : err;
}

/* fib_runtime_destroy's hook (rt->io_discard): before the stacks of rt's
 * parked fibers are freed, let go of what still points into them: io_uring
 * operations the kernel owns, and wait nodes left in the poller of a
 * thread that has exited (poller.h). */
void fib__io_discard(struct fib_runtime *rt) {
#ifdef FIB__HAVE_IO_URING
  fib__uring_discard(rt);
#endif
  fib__poller_discard(rt);
}

/* A fiber of rt is about to wait outside its run queue (a descriptor,
 * an offload job): the loop must poll, with the back end rt uses. */
void fib__io_hooks(struct fib_runtime *rt) {
#ifdef FIB__HAVE_IO_URING
  if (fib__uring_on()) {
    rt->poll = fib__uring_poll;
    rt->io_wake_fd = fib__io_wake_fd;
    rt->io_discard = fib__io_discard;
    return;
  }
#endif
  rt->poll = runtime_poll;
  rt->io_wake_fd = fib__io_wake_fd;
  rt->io_discard = fib__io_discard;
  rt->io_backend = "epoll";
}

/* What the first call on a descriptor learns: its kind, and O_NONBLOCK set
 * (regular files are left as they are); and its close generation, with
 * the poller's bit set in its slot (poller.h). A record that was known is
 * stale: fib_close closed its descriptor on another thread (and the
 * number may be a new descriptor's now). Its waiters get FIB_EBADF, and
 * it starts afresh: the new descriptor is learned and, at its first wait,
 * added to the epoll set. */
static int learn(int fd, struct fib__fdrec *r) {
  struct fib__poller *p = fib__poller_peek(); /* (begin need not keep it) */
  if (r->kind != FIB__FD_UNKNOWN)
    fib__poller_stale(p, fd);
  fib__poller_enlist(p, r);
  struct stat st;
  if (fstat(fd, &st) != 0)
    return -errno;
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
    r->kind = FIB__FD_FILE;
    return 0;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK)))
    return -errno;
  r->kind = S_ISSOCK(st.st_mode) ? FIB__FD_SOCKET : FIB__FD_OTHER;
  if (r->kind == FIB__FD_SOCKET) {
    int type = 0;
    socklen_t len = sizeof type;
    r->stream = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
                type == SOCK_STREAM;
  }
  return 0;
}

/* The start of every call: the calling fiber (it may have to wait), and
 * fd's record, known. 0 or an error, before any side effect. */
static int begin(int fd, struct fib__fiber **self, struct fib__fdrec **rec) {
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  int err = fib__waiter(self);
  if (err)
    return err;
  struct fib__poller *p = fib__poller_get(&err);
  if (!p)
    return err;
  struct fib__fdrec *r = fib__poller_rec(p, fd, &err);
  if (!r)
    return err;
  /* A known record is checked against its slot (closed since, on any
   * thread?): the record's pointer, a relaxed load through it, a compare. */
  if (__builtin_expect(r->kind == FIB__FD_UNKNOWN || fib__fdrec_stale(r), 0) &&
      (err = learn(fd, r)) != 0)
    return err;
  *rec = r;
  return 0;
}

/* Park `self` on r's queue for `dirs` (one direction, or both: then on
 * both queues, as fib_select waits on several). 0 and the direction that
 * woke it in *got, or why not. */
static int park(struct fib__fiber *self, struct fib__fdrec *r, unsigned dirs,
                uint64_t deadline, unsigned *got) {
  if (dirs != (FIB_IO_READ | FIB_IO_WRITE)) {
    *got = dirs;
    return fib__waitq_wait(dirs == FIB_IO_READ ? &r->readers : &r->writers,
                           self, NULL, deadline);
  }
  struct fib__wnode n[2] = {{.fiber = self, .idx = 0},
                            {.fiber = self, .idx = 1}};
  struct fib__wait w = {.fiber = self, .nodes = n, .count = 2};
  n[0].wait = n[1].wait = &w;
  fib__waitq_push(&r->readers, &n[0]);
  fib__waitq_push(&r->writers, &n[1]);
  self->wait = &w;
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend(self, FIB__FIBER_BLOCKED);
  self->wait = NULL;
  for (int i = 0; i < 2; i++) /* the one not completed, or both */
    if (n[i].q)
      fib__waitq_unlink(&n[i]);
  if (self->wake)
    return self->wake;
  *got = w.fired == 0 ? FIB_IO_READ : FIB_IO_WRITE;
  return w.result;
}

/*
 * The kernel said EAGAIN for `dirs`: wait until fd is ready for it (or an
 * edge already came), then the caller tries again. 0 and the ready
 * direction(s) in *got (if not NULL), or why not: the deadline, a cancel,
 * fib_close (FIB_EBADF), or a descriptor the kernel cannot watch.
 */
static int wait_for(struct fib__fiber *self, int fd, struct fib__fdrec *r,
                    unsigned dirs, uint64_t deadline, unsigned *got) {
  unsigned dummy;
  if (!got)
    got = &dummy;
  if (r->ready & dirs) { /* an edge came while nobody waited */
    *got = r->ready & dirs;
    r->ready &= ~dirs;
    return 0;
  }
  if (r->kind == FIB__FD_FILE) {
    *got = dirs;
    return 0; /* a regular file is always ready: try again */
  }
  if (!r->watched) {
    int err = fib__poller_watch(fib__poller_peek(), fd, r);
    if (err)
      return err;
  }
  if (fib__cancelled(self)) /* a wait started after a cancel */
    return FIB_ECANCELED;
  struct fib_runtime *rt = self->rt;
  rt->poll = runtime_poll;
  rt->io_wake_fd = fib__io_wake_fd;
  rt->io_discard = fib__io_discard;
  rt->io_backend = "epoll";
  rt->io_waiting++;
  fib__runtime_look_soon(rt);
  uint32_t gen = r->gen;
  /* Its record and its wait are this worker's poller's, and so is
   * io_waiting: the fiber must not move until the call is over (it makes
   * no other switch). */
  self->nomigrate++;
  int err = park(self, r, dirs, deadline, got);
  self->nomigrate--;
  rt->io_waiting--;
  /* Woken by readiness, but fib_close closed fd before we ran, on this
   * thread (the record's generation) or another (the slot's), and the
   * number may be someone else's now: the call is over. */
  if (!err && (r->gen != gen || fib__fdrec_stale(r)))
    err = FIB_EBADF;
  return err;
}

/* The operation is a call that answers -errno, EAGAIN meaning "would
 * block"; `dir` is the readiness it waits for. */
#define IO_LOOP(fd, dir, deadline, call)                                       \
  do {                                                                         \
    struct fib__fiber *self_;                                                  \
    struct fib__fdrec *rec_;                                                   \
    int err_ = begin((fd), &self_, &rec_);                                     \
    if (err_)                                                                  \
      return err_;                                                             \
    for (;;) {                                                                 \
      ssize_t n_ = (call);                                                     \
      if (n_ >= 0)                                                             \
        return n_;                                                             \
      if (errno == EINTR)                                                      \
        continue;                                                              \
      if (errno != EAGAIN && errno != EWOULDBLOCK)                             \
        return -errno;                                                         \
      err_ = wait_for(self_, (fd), rec_, (dir), (deadline), NULL);             \
      if (err_)                                                                \
        return err_;                                                           \
    }                                                                          \
  } while (0)

/*
 * Reads from stream sockets: as IO_LOOP, but a read that comes back short
 * (fewer bytes than asked, not 0) marks the record drained, and the next
 * read on it, unless a read edge has come since, waits for one instead of
 * trying first. A short read from a stream socket means its receive queue
 * was empty when the kernel returned (tcp_recvmsg and unix_stream_recvmsg
 * copy what is queued until the buffer is full), and whatever comes after
 * that sends a new edge to the epoll set (an edge-triggered item is
 * queued again by every wake-up once epoll_wait has taken it; a
 * descriptor not yet watched reports its state when it is added). So the
 * try would say EAGAIN, unless an end of file or an error waits behind
 * the data (tcp_recvmsg returns the data first): the event that says so
 * marks the record `hup` (poller.c, deliver), and then short reads mark
 * nothing; if it has not come yet, it is still to come as an edge. The
 * saving is that system call, one per message in a request/response loop
 * (examples/echo_server at 1000 connections: 3.07 system calls per
 * message before, 2.07 after, as many as bench/net/epoll_echo.c's plain
 * loop). Not for datagram or seqpacket sockets (a short read is one small
 * message; more may be queued) nor for flags (MSG_PEEK reads nothing
 * away).
 */
#define READ_LOOP(fd, want, deadline, call)                                    \
  do {                                                                         \
    struct fib__fiber *self_;                                                  \
    struct fib__fdrec *rec_;                                                   \
    int err_ = begin((fd), &self_, &rec_);                                     \
    if (err_)                                                                  \
      return err_;                                                             \
    if (rec_->drained && !(rec_->ready & FIB_IO_READ) &&                       \
        (err_ = wait_for(self_, (fd), rec_, FIB_IO_READ, (deadline), NULL)))   \
      return err_;                                                             \
    for (;;) {                                                                 \
      ssize_t n_ = (call);                                                     \
      if (n_ >= 0) {                                                           \
        if (rec_->stream && !rec_->hup && n_ > 0 && (size_t)n_ < (want)) {     \
          rec_->drained = 1; /* an edge kept from before is stale too */      \
          rec_->ready &= ~(unsigned)FIB_IO_READ;                               \
        }                                                                      \
        return n_;                                                             \
      }                                                                        \
      if (errno == EINTR)                                                      \
        continue;                                                              \
      if (errno != EAGAIN && errno != EWOULDBLOCK)                             \
        return -errno;                                                         \
      err_ = wait_for(self_, (fd), rec_, FIB_IO_READ, (deadline), NULL);       \
      if (err_)                                                                \
        return err_;                                                           \
    }                                                                          \
  } while (0)

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t t = 0;
  for (int i = 0; i < iovcnt; i++)
    t += iov[i].iov_len;
  return t;
}

/* ------------------------------------------------------------ readiness */

int fib_wait_fd_until(int fd, unsigned events, uint64_t deadline_ns) {
  if (!events || (events & ~(unsigned)(FIB_IO_READ | FIB_IO_WRITE)))
    return FIB_EINVAL;
  URING(fib__uring_wait_fd(fd, events, deadline_ns));
  struct fib__fiber *self;
  struct fib__fdrec *r;
  int err = begin(fd, &self, &r);
  if (err)
    return err;
  if (r->kind == FIB__FD_FILE)
    return (int)events;
  /* The state first, as the other calls try the operation first: an fd
   * that is ready now may send no new edge. */
  short asked = (short)((events & FIB_IO_READ ? POLLIN : 0) |
                        (events & FIB_IO_WRITE ? POLLOUT : 0));
  struct pollfd pfd = {.fd = fd, .events = asked};
  int n;
  while ((n = poll(&pfd, 1, 0)) < 0 && errno == EINTR)
    ;
  if (n < 0)
    return -errno;
  if (pfd.revents & POLLNVAL)
    return FIB_EBADF;
  unsigned now = 0;
  if (pfd.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))
    now |= FIB_IO_READ;
  if (pfd.revents & (POLLOUT | POLLHUP | POLLERR))
    now |= FIB_IO_WRITE;
  if (now & events)
    return (int)(now & events);
  /* Not ready: an edge kept from before is stale, and the change to ready
   * will send a new one. Wait for either direction asked. */
  r->ready &= ~events;
  unsigned got = 0;
  err = wait_for(self, fd, r, events, deadline_ns, &got);
  return err ? err : (int)got;
}

int fib_wait_fd(int fd, unsigned events) {
  return fib_wait_fd_until(fd, events, FIB__NO_DEADLINE);
}

/* ---------------------------------------------------------- read, write */

/* SIGPIPE: a write to a pipe whose reader has gone raises it at the
 * writing thread. Hold it off for the call and take back the one the write
 * raised, unless the thread held it off already (then it is the
 * program's). Sockets need none of this: they send with MSG_NOSIGNAL. */
static ssize_t write_nosigpipe(int fd, const struct iovec *iov, int iovcnt) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ssize_t n = writev(fd, iov, iovcnt);
  int saved = errno;
  if (n < 0 && saved == EPIPE && !sigismember(&old, SIGPIPE)) {
    static const struct timespec now = {0, 0};
    while (sigtimedwait(&pipe_only, NULL, &now) < 0 && errno == EINTR)
      ;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = saved;
  return n;
}

static ssize_t sock_recv(int fd, const struct iovec *iov, int iovcnt,
                         int flags) {
  struct msghdr m = {.msg_iov = (struct iovec *)iov,
                     .msg_iovlen = (size_t)iovcnt};
  return recvmsg(fd, &m, flags | MSG_DONTWAIT);
}

static ssize_t sock_send(int fd, const struct iovec *iov, int iovcnt,
                         int flags) {
  struct msghdr m = {.msg_iov = (struct iovec *)iov,
                     .msg_iovlen = (size_t)iovcnt};
  return sendmsg(fd, &m, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* One read as the descriptor's kind wants it. */
static ssize_t do_readv(int fd, const struct fib__fdrec *r,
                        const struct iovec *iov, int iovcnt) {
  if (r->kind == FIB__FD_SOCKET)
    return sock_recv(fd, iov, iovcnt, 0);
  return readv(fd, iov, iovcnt);
}

static ssize_t do_writev(int fd, const struct fib__fdrec *r,
                         const struct iovec *iov, int iovcnt) {
  if (r->kind == FIB__FD_SOCKET)
    return sock_send(fd, iov, iovcnt, 0);
  if (r->kind == FIB__FD_FILE)
    return writev(fd, iov, iovcnt);
  return write_nosigpipe(fd, iov, iovcnt);
}

ssize_t fib_readv_until(int fd, const struct iovec *iov, int iovcnt,
                        uint64_t deadline_ns) {
  URING(fib__uring_readv(fd, NULL, 0, iov, iovcnt, deadline_ns));
  READ_LOOP(fd, iov_total(iov, iovcnt), deadline_ns,
            do_readv(fd, rec_, iov, iovcnt));
}

ssize_t fib_writev_until(int fd, const struct iovec *iov, int iovcnt,
                         uint64_t deadline_ns) {
  URING(fib__uring_writev(fd, NULL, 0, iov, iovcnt, deadline_ns));
  IO_LOOP(fd, FIB_IO_WRITE, deadline_ns, do_writev(fd, rec_, iov, iovcnt));
}

ssize_t fib_read_until(int fd, void *buf, size_t count, uint64_t deadline_ns) {
  URING(fib__uring_readv(fd, buf, count, NULL, 0, deadline_ns));
  READ_LOOP(fd, count, deadline_ns,
            rec_->kind == FIB__FD_SOCKET ? recv(fd, buf, count, MSG_DONTWAIT)
                                         : read(fd, buf, count));
}

ssize_t fib_write_until(int fd, const void *buf, size_t count,
                        uint64_t deadline_ns) {
  URING(fib__uring_writev(fd, buf, count, NULL, 0, deadline_ns));
  struct iovec v = {(void *)buf, count};
  IO_LOOP(fd, FIB_IO_WRITE, deadline_ns,
          rec_->kind == FIB__FD_SOCKET
              ? send(fd, buf, count, MSG_DONTWAIT | MSG_NOSIGNAL)
              : do_writev(fd, rec_, &v, 1));
}

ssize_t fib_read(int fd, void *buf, size_t count) {
  return fib_read_until(fd, buf, count, FIB__NO_DEADLINE);
}
ssize_t fib_write(int fd, const void *buf, size_t count) {
  return fib_write_until(fd, buf, count, FIB__NO_DEADLINE);
}
ssize_t fib_readv(int fd, const struct iovec *iov, int iovcnt) {
  return fib_readv_until(fd, iov, iovcnt, FIB__NO_DEADLINE);
}
ssize_t fib_writev(int fd, const struct iovec *iov, int iovcnt) {
  return fib_writev_until(fd, iov, iovcnt, FIB__NO_DEADLINE);
}

/* ------------------------------------------------------------- sockets */

ssize_t fib_recv_until(int fd, void *buf, size_t len, int flags,
                       uint64_t deadline_ns) {
  URING(fib__uring_recvmsg(fd, buf, len, NULL, flags, deadline_ns));
  if (flags == 0)
    READ_LOOP(fd, len, deadline_ns, recv(fd, buf, len, MSG_DONTWAIT));
  IO_LOOP(fd, FIB_IO_READ, deadline_ns,
          recv(fd, buf, len, flags | MSG_DONTWAIT));
}

ssize_t fib_send_until(int fd, const void *buf, size_t len, int flags,
                       uint64_t deadline_ns) {
  URING(fib__uring_sendmsg(fd, buf, len, NULL, flags, deadline_ns));
  IO_LOOP(fd, FIB_IO_WRITE, deadline_ns,
          send(fd, buf, len, flags | MSG_DONTWAIT | MSG_NOSIGNAL));
}

ssize_t fib_recvmsg_until(int fd, struct msghdr *msg, int flags,
                          uint64_t deadline_ns) {
  URING(fib__uring_recvmsg(fd, NULL, 0, msg, flags, deadline_ns));
  IO_LOOP(fd, FIB_IO_READ, deadline_ns,
          recvmsg(fd, msg, flags | MSG_DONTWAIT));
}

ssize_t fib_sendmsg_until(int fd, const struct msghdr *msg, int flags,
                          uint64_t deadline_ns) {
  URING(fib__uring_sendmsg(fd, NULL, 0, msg, flags, deadline_ns));
  IO_LOOP(fd, FIB_IO_WRITE, deadline_ns,
          sendmsg(fd, msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL));
}

ssize_t fib_recv(int fd, void *buf, size_t len, int flags) {
  return fib_recv_until(fd, buf, len, flags, FIB__NO_DEADLINE);
}
ssize_t fib_send(int fd, const void *buf, size_t len, int flags) {
  return fib_send_until(fd, buf, len, flags, FIB__NO_DEADLINE);
}
ssize_t fib_recvmsg(int fd, struct msghdr *msg, int flags) {
  return fib_recvmsg_until(fd, msg, flags, FIB__NO_DEADLINE);
}
ssize_t fib_sendmsg(int fd, const struct msghdr *msg, int flags) {
  return fib_sendmsg_until(fd, msg, flags, FIB__NO_DEADLINE);
}

/* A descriptor fib_accept made: new to the runtime whatever its number
 * (one closed behind the runtime's back may have had it), a non-blocking
 * socket. Its generation is bumped, as by a close, so that any thread's
 * record of the number goes stale. */
static int adopt_socket(int fd, int stream) {
  int err;
  struct fib__poller *p = fib__poller_peek();
  struct fib__fdrec *r = p ? fib__poller_rec(p, fd, &err) : NULL;
  if (!r) {
    fib__fdgen_close(fd, p, NULL);
    return fd; /* its first call will learn it */
  }
  if (r->watched || r->kind != FIB__FD_UNKNOWN)
    fib__poller_forget(p, fd, FIB_EBADF, 0);
  fib__fdgen_close(fd, p, r);
  r->kind = FIB__FD_SOCKET;
  r->stream = (unsigned char)stream; /* the listener's type */
  return fd;
}

int fib_accept_until(int fd, struct sockaddr *addr, socklen_t *addrlen,
                     int flags, uint64_t deadline_ns) {
  URING(fib__uring_accept(fd, addr, addrlen, flags, deadline_ns));
  struct fib__fiber *self;
  struct fib__fdrec *r;
  int err = begin(fd, &self, &r);
  if (err)
    return err;
  for (;;) {
    int c = accept4(fd, addr, addrlen, flags | SOCK_NONBLOCK);
    if (c >= 0)
      return adopt_socket(c, r->stream);
    if (errno == EINTR || errno == ECONNABORTED)
      continue; /* a connection reset before we took it: take the next */
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    err = wait_for(self, fd, r, FIB_IO_READ, deadline_ns, NULL);
    if (err)
      return err;
  }
}

int fib_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags) {
  return fib_accept_until(fd, addr, addrlen, flags, FIB__NO_DEADLINE);
}

int fib_connect_until(int fd, const struct sockaddr *addr, socklen_t addrlen,
                      uint64_t deadline_ns) {
  URING(fib__uring_connect(fd, addr, addrlen, deadline_ns));
  struct fib__fiber *self;
  struct fib__fdrec *r;
  int err = begin(fd, &self, &r);
  if (err)
    return err;
  uint64_t delay = 0;
  for (;;) {
    if (connect(fd, addr, addrlen) == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN) { /* a Unix socket's backlog is full */
      if ((err = fib__connect_backoff(&delay, deadline_ns)) != 0)
        return err;
      continue;
    }
    if (errno != EINPROGRESS)
      return -errno;
    break;
  }
  /* Under way: writable when it is made or has failed; SO_ERROR says. */
  for (;;) {
    err = wait_for(self, fd, r, FIB_IO_WRITE, deadline_ns, NULL);
    if (err)
      return err;
    err = fib__connect_outcome(fd);
    if (err != FIB__CONNECT_PENDING)
      return err;
  }
}

/* A non-blocking connect(2) on an AF_UNIX stream socket whose listener's
 * backlog is full fails with EAGAIN, and nothing the runtime can watch
 * says when there is room: the connecting socket is writable all along
 * (so a wait for writability returns at once, for ever), and the room is
 * made by the listener's accept, which wakes only a connect(2) blocked in
 * the kernel. So the fiber sleeps on the runtime's timer and tries
 * again: first after CONNECT_BACKOFF_MIN, doubling up to
 * CONNECT_BACKOFF_MAX (a connect made at most that long after room was
 * made; a full backlog is an overloaded server, where a little latency
 * is the point), never past the deadline. 0: try again; FIB_ETIMEDOUT
 * (the deadline has passed), FIB_ECANCELED. */
#define CONNECT_BACKOFF_MIN 250000u   /* ns */
#define CONNECT_BACKOFF_MAX 20000000u /* ns */
int fib__connect_backoff(uint64_t *delay, uint64_t deadline) {
  uint64_t now = fib_now_ns();
  if (now >= deadline)
    return FIB_ETIMEDOUT;
  *delay = *delay ? *delay * 2 : CONNECT_BACKOFF_MIN;
  if (*delay > CONNECT_BACKOFF_MAX)
    *delay = CONNECT_BACKOFF_MAX;
  uint64_t until = deadline - now > *delay ? now + *delay : deadline;
  return fib_sleep_until(until);
}

int fib__connect_outcome(int fd) {
  int so_error = 0;
  socklen_t len = sizeof so_error;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0)
    return -errno;
  if (so_error == EINPROGRESS || so_error == EALREADY)
    return FIB__CONNECT_PENDING;
  if (so_error)
    return -so_error;
  /* SO_ERROR 0: made, unless the writability was an edge from before. */
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
    return 0;
  return errno == ENOTCONN ? FIB__CONNECT_PENDING : -errno;
}

int fib_connect(int fd, const struct sockaddr *addr, socklen_t addrlen) {
  return fib_connect_until(fd, addr, addrlen, FIB__NO_DEADLINE);
}

/* ------------------------------------------------------------- closing */

/* close(fd), not recorded under TSan, whose model of a descriptor makes
 * close(2) a write that races with any call on the number in another
 * thread that nothing orders before it. fib_close is made to run while
 * fibers of other workers use the descriptor (they are woken with
 * FIB_EBADF: docs/io.md, "The close's window"); the kernel orders the
 * calls, and the generations order what the library does around them, so
 * such a report would be about the kernel's part. TSan forgets the
 * descriptor at a close, so calls on the number after it are seen as
 * before. */
static int close_unrecorded(int fd) {
#if FIB__TSAN
  __tsan_ignore_thread_begin();
  int r = close(fd);
  int saved = errno;
  __tsan_ignore_thread_end();
  errno = saved;
  return r;
#else
  return close(fd);
#endif
}

int fib_close(int fd) {
#ifdef FIB__HAVE_IO_URING
  fib__uring_close(fd); /* the kernel lets go of the fd's operations */
#endif
  struct fib__poller *p = fib__poller_peek();
  if (p)
    fib__poller_forget(p, fd, FIB_EBADF, 1);
  /* Before close(2) frees the number: every record of it on other threads
   * is stale from now on, and their pollers are told (poller.h); until
   * fib__fdgen_closed, a thread that learns the number waits. */
  fib__fdgen_closing(fd, p);
  /* close(2) frees the number even when it reports an error (EINTR
   * included, on Linux): never retry it. */
  int err = close_unrecorded(fd) == 0 ? 0 : -errno;
  fib__fdgen_closed(fd);
  return err;
}

int fib_runtime_io_fd(fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  if (fib__tl_runtime && fib__tl_runtime != rt)
    return FIB_EBUSY; /* another runtime runs on this thread */
#ifdef FIB__HAVE_IO_URING
  if (rt->io_mode == 0)
    fib__uring_choose(rt);
  if (rt->io_mode == FIB_IO_URING) {
    int fd = fib__uring_host_fd();
    /* The host waits on the ring's eventfd: each call's end resets it
     * and takes what completed, and worker 0 of several has its wakers
     * between calls write it (uring.c, fib__uring_host_rest). */
    if (fd >= 0) {
      rt->io_rest = fib__uring_host_rest;
      rt->io_host_wake_fd = fib__uring_host_wake_fd;
    }
    return fd;
  }
#endif
  int err;
  struct fib__poller *p = fib__poller_get(&err);
  /* Worker 0 of several tells its wakers between the host's calls to
   * write the poller's wake-up eventfd, which is in this epoll set
   * (workers.h, FIB__PARKED_HOST): it needs the way to make it. */
  if (p && !rt->io_wake_fd)
    rt->io_wake_fd = fib__io_wake_fd;
  if (p && !rt->io_backend) /* chosen: say so before any fiber watches */
    rt->io_backend = "epoll";
  return p ? p->epfd : err;
}

const char *fib_runtime_io_backend(const fib_runtime *rt) {
  return rt && rt->io_backend ? rt->io_backend : "none";
}

/* ------------------------------------------ shared with uring.c (uring.h) */

int fib__io_begin(int fd, struct fib__fiber **self, struct fib__fdrec **rec) {
  return begin(fd, self, rec);
}

ssize_t fib__io_write_nosigpipe(int fd, const struct iovec *iov, int iovcnt) {
  return write_nosigpipe(fd, iov, iovcnt);
}

int fib__io_adopt_socket(int fd, int stream) {
  return adopt_socket(fd, stream);
}
