/* SPDX-License-Identifier: MIT */
/*
 * uring.h -- the io_uring back end (uring.c; docs/io-uring.md), behind the
 * calls of <fibers/io.h>. Built only when liburing was found
 * (FIB__HAVE_IO_URING); io.c then asks at the top of each call whether the
 * calling fiber's runtime uses it (fib__uring_on) and, if so, hands the
 * call over. A call that returns FIB__URING_PASS is not one the back end
 * takes (a regular file: it never parks), and io.c carries on as with
 * epoll.
 *
 * The ring is the thread's, like the epoll poller (one thread submits to
 * it: SINGLE_ISSUER), made on the first call of a runtime that chose it.
 * Each operation is one record on the waiting fiber's stack, whose
 * address is the SQE's user_data; the fiber stays parked, uncancellably
 * once a deadline or a cancel has asked the kernel to cancel it, until
 * the operation's CQE has come: the kernel never writes into a stack
 * after its fiber has moved on.
 */
#ifndef FIB__IO_URING_H
#define FIB__IO_URING_H

#include "poller.h"

#include <limits.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* "Not mine": io.c does the call the epoll way. */
#define FIB__URING_PASS INT_MIN

/* Make the choice for rt (env FIBERS_IO, rt->io_pref, the AUTO default,
 * whether the thread's ring can be made): sets rt->io_mode, and
 * rt->io_backend to "io_uring" when it is chosen. */
void fib__uring_choose(struct fib_runtime *rt);

/* Whether the calling fiber's runtime uses io_uring (choosing at its first
 * call). 0 outside a runtime: the epoll path then answers FIB_EPERM. */
static inline int fib__uring_on(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  if (!rt)
    return 0;
  if (__builtin_expect(rt->io_mode == 0, 0))
    fib__uring_choose(rt);
  return rt->io_mode == FIB_IO_URING;
}

/* The calls. buf != NULL: one buffer (read, recv, ...), else iov/msg. */
ssize_t fib__uring_readv(int fd, void *buf, size_t len,
                         const struct iovec *iov, int iovcnt,
                         uint64_t deadline);
ssize_t fib__uring_writev(int fd, const void *buf, size_t len,
                          const struct iovec *iov, int iovcnt,
                          uint64_t deadline);
ssize_t fib__uring_recvmsg(int fd, void *buf, size_t len, struct msghdr *msg,
                           int flags, uint64_t deadline);
ssize_t fib__uring_sendmsg(int fd, const void *buf, size_t len,
                           const struct msghdr *msg, int flags,
                           uint64_t deadline);
int fib__uring_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                      int flags, uint64_t deadline);
int fib__uring_connect(int fd, const struct sockaddr *addr, socklen_t addrlen,
                       uint64_t deadline);
int fib__uring_wait_fd(int fd, unsigned events, uint64_t deadline);

/* fib_close's first step: cancel every operation in flight on fd in this
 * thread's ring (their callers get FIB_EBADF, or their result if they
 * completed first) and wait until the kernel has ended them all. */
void fib__uring_close(int fd);

/* fd was closed on another thread (poller.h, fib__poller_stale): ask the
 * kernel to cancel every operation on it in this thread's ring (their
 * callers get FIB_EBADF, or their result if they completed first),
 * without waiting for the cancels: close(2) has been made already, and
 * the fibers wake when the CQEs come. */
void fib__uring_cancel_fd(int fd);

/* fib_runtime_destroy's part for io_uring (called by fib__io_discard):
 * cancel the operations of rt's fibers in this thread's ring and wait
 * until the kernel has let go of their buffers. */
void fib__uring_discard(struct fib_runtime *rt);

/* The runtime's poll hook on io_uring: submit what the round queued and
 * take the completions (and the thread's epoll set's events, when it
 * signals); with a deadline, wait for one until then. */
int fib__uring_poll(struct fib_runtime *rt, uint64_t deadline);

/* fib_runtime_io_fd on io_uring: an eventfd registered with this
 * thread's ring (made on first use), readable when a CQE has come; the
 * ring's poll hook resets it. Or a negative errno. */
int fib__uring_host_fd(void);

/* rt->io_rest on io_uring, for a host that waits on fib__uring_host_fd
 * between its calls: at the end of each call, inside the run, reset the
 * eventfd, take what has completed and arm the ring's watch of the
 * thread's epoll set again, so that whatever comes next signals it. */
void fib__uring_host_rest(struct fib_runtime *rt);

/* rt->io_host_wake_fd on io_uring: the eventfd fib__uring_host_fd made,
 * which wakers of worker 0 write while the host waits on it between
 * calls (workers.h, FIB__PARKED_HOST); -ENOENT if there is none. */
int fib__uring_host_wake_fd(void);

/* For tests: the ring's setup flags on this thread, or -1 if it has none;
 * how many operations completed after a cancel was asked for (the caller
 * got their result). */
long fib__uring_setup_flags(void);
extern long fib__uring_cancel_lost;

/* Shared with io.c (defined there): the start of every call (the calling
 * fiber, fd's record, known), the pipe write that holds SIGPIPE off, and a
 * descriptor fib_accept made. */
int fib__io_begin(int fd, struct fib__fiber **self, struct fib__fdrec **rec);

/* A connect under way has signalled writability: 0 (made), the error that
 * ended it (-errno), or FIB__CONNECT_PENDING (not yet: wait again; the
 * writability may be an edge left from before). Both back ends use it. */
#define FIB__CONNECT_PENDING 1
int fib__connect_outcome(int fd);

/* connect(2) said EAGAIN (an AF_UNIX listener's backlog is full, and no
 * readiness will say when it is not): sleep a while, longer each time
 * (*delay, 0 at first), then the caller tries again. 0, FIB_ETIMEDOUT
 * (deadline passed) or FIB_ECANCELED. Both back ends use it. */
int fib__connect_backoff(uint64_t *delay, uint64_t deadline);
ssize_t fib__io_write_nosigpipe(int fd, const struct iovec *iov, int iovcnt);
int fib__io_adopt_socket(int fd, int stream);

#endif
