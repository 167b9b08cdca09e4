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
 * reused, on every thread (below). (A number closed behind the runtime's
 * back and reused for a new descriptor would not be watched: the fibers
 * waiting on the new one would wait until their deadline.) Descriptors
 * that fib_accept returns are new to the runtime, whatever their number.
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
 * thread (each worker of a runtime with several watches its own); the
 * runtime on that thread runs them. A descriptor may be used from fibers
 * on several threads (a reader on one worker and a writer on another, a
 * fiber that moves between workers) and closed with fib_close on any of
 * them: the fibers then waiting on it on other threads are woken with
 * FIB_EBADF too, by their own thread at its next look at its I/O (within
 * one poll: the close wakes a thread that sleeps), and the number's next
 * descriptor is learned and watched afresh on every thread that had seen
 * the old one. As with one thread, a call that is under way on one thread
 * while fib_close closes the descriptor on another may also see the close
 * as the kernel does (EBADF, or the operation made just before it).
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
 * closed. Works anywhere (a fiber, main, another thread); returns close's
 * result. The fibers waiting on it on the calling thread are woken before
 * it returns; those waiting on other threads (other workers) are woken by
 * their thread at its next poll, with FIB_EBADF as well (on io_uring:
 * their operations are cancelled, and one the kernel completed first
 * returns its result). Every thread's record of the descriptor is stale
 * from the close on: the next call there on the number learns the new
 * descriptor and watches it. If a thread's close-notice eventfd could
 * not be made (EMFILE when its poller was made), its waiters are not
 * woken and wait for their deadline; its record is still refreshed.
 */
FIB_API int fib_close(int fd);

/* ------------------------------------------------------------ offload
 *
 * Blocking work the kernel has no asynchronous form for (a file read that
 * may wait for the disk, fsync, a name lookup, a library call that
 * blocks) runs on a small pool of threads while only the calling fiber
 * parks; the other fibers run on. The pool is shared by the process:
 *
 *   - at most FIB_OFFLOAD_THREADS threads, started on demand (the first
 *     call starts one; a call that finds every thread busy starts another,
 *     up to the bound); more jobs than threads wait their turn, first come
 *     first served. A thread idle for a few seconds leaves. The threads
 *     block every signal, so a signal sent to the process never lands on
 *     one. At exit, idle threads are told to leave; a thread that is
 *     inside a job then is not waited for.
 *   - a finished job wakes its fiber through the runtime's poller (the
 *     thread's epoll set, as for descriptors): run the runtime on the
 *     thread that made the call. While a job is in flight the run loop
 *     waits for it and never reports FIB_EDEADLK because of it.
 *
 * Deadlines and cancellation: a job that has not started when the
 * deadline passes or the fiber is cancelled is taken back: it never runs,
 * and the call returns FIB_ETIMEDOUT or FIB_ECANCELED (no effect). A job
 * that has started cannot be stopped: the call waits for it to finish,
 * whatever the deadline or a cancel says, and returns its result (so a
 * buffer the job writes is never written after the call returns). A
 * cancel that came meanwhile is seen by the fiber's next blocking call.
 *
 * fib_runtime_destroy with a fiber inside one of these calls: a job not
 * yet started is dropped; a job that is running and may touch the
 * caller's memory (fib_offload's fn, fib_pread's and fib_pwrite's
 * buffers) is waited for before destroy frees the fiber's stack, so
 * destroy may block for as long as that job takes; fib_fsync and
 * fib_getaddrinfo touch only the library's own copies, so their jobs are
 * left to finish and cleaned up by the pool (a lookup's result is freed).
 *
 * A descriptor passed to fib_pread/fib_pwrite/fib_fsync is used by a pool
 * thread: do not close it while the call is in flight.
 *
 * fork(): the child has no pool threads (new ones start on demand); calls
 * in flight in the parent at the fork never complete in the child. Like
 * the thread's epoll set, the pool's wake-up descriptor of each thread is
 * shared with the parent after a fork: in a child, use these calls from
 * threads and runtimes made after the fork.
 *
 * Errors common to these calls: FIB_EPERM, FIB_ECANCELED (as every call
 * that may wait; a cancelled fiber's call returns at once), FIB_ETIMEDOUT
 * (_until, the job had not started), FIB_ENOMEM (no memory for the job or
 * the thread's wake-up record), FIB_EAGAIN (no pool thread could be
 * started and none is running), or the kernel's error from making the
 * thread's wake-up descriptor (FIB_EMFILE, ...).
 */

struct addrinfo; /* <netdb.h> */

/* The most threads the offload pool runs at once. */
#define FIB_OFFLOAD_THREADS 4

/*
 * Run fn(arg) on a pool thread and wait for it to return: 0 then. fn runs
 * outside every runtime: it must not call the library's fiber calls (they
 * return FIB_EPERM there), and what it shares with fibers needs the
 * care of any code that runs on another thread. Errors: FIB_EINVAL (fn
 * NULL), and the common ones above.
 */
FIB_API int fib_offload(void (*fn)(void *arg), void *arg);
FIB_API int fib_offload_until(void (*fn)(void *arg), void *arg,
                              uint64_t deadline_ns);

/* pread(2), pwrite(2), fsync(2) on a pool thread (EINTR retried there):
 * the count or 0, or the kernel's error as -errno (FIB_EBADF, FIB_EIO,
 * FIB_ENOSPC, -ESPIPE for a pipe, ...), or a common error above. */
FIB_API ssize_t fib_pread(int fd, void *buf, size_t count, off_t offset);
FIB_API ssize_t fib_pread_until(int fd, void *buf, size_t count, off_t offset,
                                uint64_t deadline_ns);
FIB_API ssize_t fib_pwrite(int fd, const void *buf, size_t count,
                           off_t offset);
FIB_API ssize_t fib_pwrite_until(int fd, const void *buf, size_t count,
                                 off_t offset, uint64_t deadline_ns);
FIB_API int fib_fsync(int fd);
FIB_API int fib_fsync_until(int fd, uint64_t deadline_ns);

/*
 * Name lookup failures (fib_getaddrinfo). Their own codes, below -5000,
 * apart from every errno code: FIB_EAI_x stands for getaddrinfo's EAI_x.
 * fib_strerror gives the C library's text for them (gai_strerror),
 * fib_err_name "EAI_NONAME" and so on.
 */
#define FIB_EAI_MAP(X)                                                       \
  X(BADFLAGS, 1)   /* bad hints->ai_flags */                                 \
  X(NONAME, 2)     /* no such name (or service), or AI_NUMERICHOST and node   \
                      is not a numeric address */                            \
  X(AGAIN, 3)      /* temporary failure of the name server: try later */     \
  X(FAIL, 4)       /* permanent failure of the name server */                \
  X(NODATA, 5)     /* the name has no address */                             \
  X(FAMILY, 6)     /* hints->ai_family not supported */                      \
  X(SOCKTYPE, 7)   /* hints->ai_socktype not supported */                    \
  X(SERVICE, 8)    /* the service is not available for the socket type */    \
  X(ADDRFAMILY, 9) /* the name has no address in the requested family */

enum {
#define FIB_EAI_ENUM(name, n) FIB_EAI_##name = -(5000 + (n)),
  FIB_EAI_MAP(FIB_EAI_ENUM)
#undef FIB_EAI_ENUM
  FIB_EAI_END_ = 0
};

/*
 * getaddrinfo(3) on a pool thread (node, service and hints are copied
 * when the call starts; <netdb.h> declares struct addrinfo and the
 * AI_* flags). 0 and the list in *res, to be freed with
 * fib_freeaddrinfo; or a FIB_EAI_* code above, FIB_ENOMEM (EAI_MEMORY),
 * the system error as -errno (EAI_SYSTEM), FIB_EINVAL (res NULL, or node
 * and service both NULL), or a common error above. *res is set only on
 * success. A lookup may ask the network (DNS): it takes as long as the
 * resolver's own timeouts, and a deadline that passes once it has
 * started does not shorten it (see above); AI_NUMERICHOST never asks.
 */
FIB_API int fib_getaddrinfo(const char *node, const char *service,
                            const struct addrinfo *hints,
                            struct addrinfo **res);
FIB_API int fib_getaddrinfo_until(const char *node, const char *service,
                                  const struct addrinfo *hints,
                                  struct addrinfo **res, uint64_t deadline_ns);
/* freeaddrinfo(3) for a list fib_getaddrinfo made; NULL is allowed. */
FIB_API void fib_freeaddrinfo(struct addrinfo *res);

/*
 * For a host event loop that runs rt with fib_run_nowait (fibers.h): a
 * descriptor that becomes readable when I/O that rt's fibers wait for
 * may have completed (a descriptor, an offload job). Watch it for
 * reading (poll, epoll, select, a GUI toolkit's fd source) together with
 * the host's own, with a timeout from fib_runtime_next_ns, and call
 * fib_run_nowait when it is readable; that call takes the events and
 * resets the descriptor. It may wake the host once for nothing; it never
 * misses: readiness that comes after a fib_run_nowait returned makes it
 * readable. Do not read it, close it, or change it: the runtime owns it.
 *
 * Call it on the thread that runs rt (the I/O of a thread's fibers is
 * watched by that thread), from outside rt's fibers, and run rt on that
 * thread. It chooses rt's back end if no I/O call has: epoll returns the
 * thread's epoll descriptor itself; io_uring an eventfd registered with
 * the thread's ring. The descriptor stays the same for the thread's life
 * (every runtime on the thread shares it). It also becomes readable
 * when other threads send rt work after a call (fib_run_nowait,
 * fib_run_once, fib_run_join) returned: posts and fib_call, fibers
 * readied from another thread, and each offload job that ends; the next
 * call resets that. With several workers it is worker 0's, the share
 * that thread runs (the other workers wait for their fibers' I/O on
 * their own threads), and what the other workers send worker 0 (fibers
 * they ready or place there, cancels) makes it readable too. A host that
 * runs several runtimes on one thread shares one descriptor among them,
 * and a call on one of them may reset what was meant for another: take
 * every runtime's fib_runtime_next_ns after the last of the calls, and
 * block on the descriptor only if none says 0.
 * Errors: FIB_EINVAL (rt NULL), FIB_EBUSY (called from inside another
 * runtime's fiber), FIB_ENOMEM, or the kernel's error making it.
 */
FIB_API int fib_runtime_io_fd(fib_runtime *rt);

/* Which I/O back end rt uses: "io_uring" (chosen at its first I/O call:
 * fib_runtime_opts.io_backend or FIBERS_IO asked for it and the kernel
 * gave it), "epoll" (it has watched a descriptor, or fib_runtime_io_fd
 * chose it), or "none" (it has not needed one yet). Never NULL. With io_uring the calls keep every promise
 * above, except that an operation the kernel completed when a deadline,
 * a cancel or fib_close came returns its result (the data it read, the
 * connection it accepted), never losing it: docs/io-uring.md. */
FIB_API const char *fib_runtime_io_backend(const fib_runtime *rt);

#ifdef __cplusplus
}
#endif

#endif /* FIBERS_IO_H */
