/* SPDX-License-Identifier: MIT */
/*
 * fibers/io.h -- I/O that blocks only the calling fiber. <fibers.h>
 * includes it; the conventions there hold here too.
 *
 * Each call is shaped like the POSIX call it replaces: the same arguments,
 * the same result (a byte count, a new descriptor, 0), except that an error
 * is returned as a negative errno code instead of -1 and errno: kernel
 * errors come back unchanged (-ECONNRESET, -EBADF, ...; fibers.h names the
 * common ones), and a short count is a short count, as it would be. So
 * porting a blocking program is mechanical:
 *
 *     n = read(fd, buf, len);          n = fib_read(fd, buf, len);
 *     if (n < 0) err = errno;          if (n < 0) err = (int)-n;
 *
 * A call that can complete now completes now, with one system call: the
 * operation is tried first, and only if the kernel says it would block
 * (EAGAIN) does the fiber park until the descriptor is ready, then try
 * again. While it is parked the other fibers run. EINTR is retried inside.
 *
 * Every call that may wait has an _until twin with an absolute deadline in
 * fib_now_ns() time; it returns FIB_ETIMEDOUT when the deadline passes
 * first. A call that may wait follows the rules of the blocking
 * primitives (fibers.h): outside a fiber, or inside a coroutine a fiber
 * resumed, it returns FIB_EPERM; in a cancelled fiber, FIB_ECANCELED. A
 * call that timed out or was cancelled while parked had no effect: nothing
 * was read, written, accepted or connected (the fiber waited only for
 * readiness; the operation itself is made only when the fiber runs).
 *
 * Descriptors. Any descriptor may be passed: a socket, a pipe, a FIFO, a
 * terminal, an eventfd, a regular file, made blocking or not. The first
 * call on a descriptor looks at what it is and, unless it is a regular
 * file, sets O_NONBLOCK on it (on the open file description: shared by its
 * dup()s and by other processes that hold it), so no call ever blocks the
 * thread; calls on sockets also pass MSG_DONTWAIT where the call has
 * flags. The first call that has to wait makes the runtime watch it
 * (epoll, edge-triggered, once for the descriptor's whole life). Regular
 * files are always ready to the kernel: calls on them do not park (a read
 * may still wait for the disk).
 *
 * Close descriptors the runtime has seen with fib_close, not close(2): it
 * wakes the fibers waiting on the descriptor (their calls return
 * FIB_EBADF) and makes the runtime forget it before the number can be
 * reused. (A number closed behind the runtime's back and reused for a new
 * descriptor would not be watched: the fibers waiting on the new one
 * would wait until their deadline.) Descriptors that fib_accept returns
 * are new to the runtime, whatever their number.
 *
 * SIGPIPE: no call here ever raises it. Writes to sockets are sent with
 * MSG_NOSIGNAL; a write to a pipe whose reader has gone returns FIB_EPIPE
 * with SIGPIPE held off for that call only. The process's disposition is
 * never changed.
 *
 * Several fibers may wait on one descriptor, in either direction (an
 * accept loop in several fibers, a reader and a writer): readiness wakes
 * every fiber waiting for it, each tries again, and those that find
 * nothing wait again.
 *
 * Threads: the descriptors a thread's fibers wait on are watched by that
 * thread; the runtime on that thread runs them. Use a descriptor from one
 * thread's fibers at a time.
 */
#ifndef FIBERS_IO_H
#define FIBERS_IO_H

#include <fibers.h>

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Readiness, for fib_wait_fd. */
enum {
  FIB_IO_READ = 1u << 0, /* readable, or end of file / hang-up / error */
  FIB_IO_WRITE = 1u << 1 /* writable, or hang-up / error */
};

/*
 * Wait until fd is ready for what `events` asks (FIB_IO_READ, FIB_IO_WRITE
 * or both), for code that makes the calls itself (OpenSSL, a protocol
 * library). Returns the ready subset of `events` (> 0). It may return on
 * readiness that the next call finds gone again (another fiber took it):
 * that call then says EAGAIN, and the code waits again.
 * Errors: FIB_EINVAL (events has no known bit), FIB_EBADF (fd is not open,
 * or fib_close closed it while waiting), FIB_EPERM, FIB_ECANCELED,
 * FIB_ETIMEDOUT (_until), FIB_ENOMEM (no memory to watch fd), or the
 * kernel's error for a descriptor it cannot watch.
 */
FIB_API int fib_wait_fd(int fd, unsigned events);
FIB_API int fib_wait_fd_until(int fd, unsigned events, uint64_t deadline_ns);

/* read(2), write(2), readv(2), writev(2). */
FIB_API ssize_t fib_read(int fd, void *buf, size_t count);
FIB_API ssize_t fib_read_until(int fd, void *buf, size_t count,
                               uint64_t deadline_ns);
FIB_API ssize_t fib_write(int fd, const void *buf, size_t count);
FIB_API ssize_t fib_write_until(int fd, const void *buf, size_t count,
                                uint64_t deadline_ns);
FIB_API ssize_t fib_readv(int fd, const struct iovec *iov, int iovcnt);
FIB_API ssize_t fib_readv_until(int fd, const struct iovec *iov, int iovcnt,
                                uint64_t deadline_ns);
FIB_API ssize_t fib_writev(int fd, const struct iovec *iov, int iovcnt);
FIB_API ssize_t fib_writev_until(int fd, const struct iovec *iov, int iovcnt,
                                 uint64_t deadline_ns);

/* recv(2), send(2), recvmsg(2), sendmsg(2): flags as there (MSG_NOSIGNAL
 * and MSG_DONTWAIT are added by the call). */
FIB_API ssize_t fib_recv(int fd, void *buf, size_t len, int flags);
FIB_API ssize_t fib_recv_until(int fd, void *buf, size_t len, int flags,
                               uint64_t deadline_ns);
FIB_API ssize_t fib_send(int fd, const void *buf, size_t len, int flags);
FIB_API ssize_t fib_send_until(int fd, const void *buf, size_t len, int flags,
                               uint64_t deadline_ns);
FIB_API ssize_t fib_recvmsg(int fd, struct msghdr *msg, int flags);
FIB_API ssize_t fib_recvmsg_until(int fd, struct msghdr *msg, int flags,
                                  uint64_t deadline_ns);
FIB_API ssize_t fib_sendmsg(int fd, const struct msghdr *msg, int flags);
FIB_API ssize_t fib_sendmsg_until(int fd, const struct msghdr *msg, int flags,
                                  uint64_t deadline_ns);

/*
 * accept4(2): a new connection's descriptor (flags: SOCK_CLOEXEC as there;
 * the new descriptor is always made non-blocking, as the first call on it
 * would make it). A descriptor accepted by the kernel is never lost: a
 * deadline or a cancel that comes while the fiber waits means no
 * connection was taken.
 */
FIB_API int fib_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                       int flags);
FIB_API int fib_accept_until(int fd, struct sockaddr *addr, socklen_t *addrlen,
                             int flags, uint64_t deadline_ns);

/*
 * connect(2), waiting for the connection to be made: 0, or the error that
 * ended it (FIB_ECONNREFUSED, ...). On FIB_ETIMEDOUT or FIB_ECANCELED the
 * connection attempt may still be under way in the kernel: close the
 * socket.
 */
FIB_API int fib_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
FIB_API int fib_connect_until(int fd, const struct sockaddr *addr,
                              socklen_t addrlen, uint64_t deadline_ns);

/*
 * close(2) for a descriptor the fibers may have waited on: the fibers
 * waiting on it now get FIB_EBADF, the runtime forgets it, then it is
 * closed. Works anywhere (a fiber, main); returns close's result.
 */
FIB_API int fib_close(int fd);

/* Which I/O back end rt uses: "io_uring" (chosen at its first I/O call:
 * fib_runtime_opts.io_backend or FIBERS_IO asked for it and the kernel
 * gave it), "epoll" (it has watched a descriptor), or "none" (it has not
 * needed one yet). Never NULL. With io_uring the calls keep every promise
 * above, except that an operation the kernel completed when a deadline,
 * a cancel or fib_close came returns its result (the data it read, the
 * connection it accepted), never losing it: docs/io-uring.md. */
FIB_API const char *fib_runtime_io_backend(const fib_runtime *rt);

#ifdef __cplusplus
}
#endif

#endif /* FIBERS_IO_H */
