/* SPDX-License-Identifier: MIT */
/*
 * io_helpers.h -- descriptors for the I/O tests (test_io.c, test_io_net.c):
 * socket pairs, pipes and loopback TCP, made with plain system calls so
 * that the library under test learns each descriptor on its first call.
 */
#ifndef FIB__TEST_IO_HELPERS_H
#define FIB__TEST_IO_HELPERS_H

#include "fiber_helpers.h"

#include <fibers.h>
#include <fibers/io.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* A call that returns a descriptor or -1 with errno: the descriptor. */
#define CHECK_FD(call) check_fd((call), #call, __FILE__, __LINE__)

HARNESS_UNUSED static int check_fd(int fd, const char *call, const char *file,
                                   int line) {
  if (fd < 0)
    check_failed(file, line, "%s: %s", call, strerror(errno));
  return fd;
}

/* A connected AF_UNIX stream pair, blocking (the library makes it not). */
HARNESS_UNUSED static void make_socketpair(int sv[2]) {
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* A pipe, blocking: p[0] reads, p[1] writes. */
HARNESS_UNUSED static void make_pipe(int p[2]) {
  CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
}

HARNESS_UNUSED static int is_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  CHECK(fl >= 0);
  return (fl & O_NONBLOCK) != 0;
}

HARNESS_UNUSED static void set_nonblocking(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  CHECK(fl >= 0);
  CHECK_EQ(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

/* Bytes waiting to be read on a socket or pipe (FIONREAD). */
HARNESS_UNUSED static int pending_bytes(int fd) {
  int n = -1;
  CHECK_EQ(ioctl(fd, FIONREAD, &n), 0);
  return n;
}

/* A TCP socket listening on 127.0.0.1 at a port the kernel picks; its
 * address in *addr. */
HARNESS_UNUSED static int tcp_listener(int backlog, struct sockaddr_in *addr) {
  int fd = CHECK_FD(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  CHECK_EQ(listen(fd, backlog), 0);
  socklen_t len = sizeof *addr;
  CHECK_EQ(getsockname(fd, (struct sockaddr *)addr, &len), 0);
  return fd;
}

HARNESS_UNUSED static int tcp_socket(void) {
  return CHECK_FD(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
}

/* Fill the send buffer of a stream socket (made non-blocking) until the
 * kernel says EAGAIN; the bytes written. Small buffers keep it quick. */
HARNESS_UNUSED static size_t fill_send_buffer(int fd) {
  int small = 4096;
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  set_nonblocking(fd, 1);
  static char junk[65536];
  size_t total = 0;
  for (int i = 0; i < 100000; i++) {
    ssize_t n = send(fd, junk, sizeof junk, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
      return total;
    }
    total += (size_t)n;
  }
  check_failed(__FILE__, __LINE__, "the send buffer never filled");
  return 0;
}

/* Deterministic bytes: the pattern of stream `id` at offset `off`. */
HARNESS_UNUSED static unsigned char pattern_byte(unsigned id, size_t off) {
  return (unsigned char)((id * 131u + off * 7u + (off >> 8)) & 0xff);
}

/* The soft limit on open descriptors raised to at least `want` if the
 * hard limit allows; the soft limit in force afterwards. */
HARNESS_UNUSED static long raise_nofile(long want) {
  struct rlimit rl;
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if ((rlim_t)want > rl.rlim_cur) {
    rlim_t cur = rl.rlim_cur;
    rl.rlim_cur = (rlim_t)want < rl.rlim_max ? (rlim_t)want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rl.rlim_cur = cur;
  }
  return (long)rl.rlim_cur;
}

/* A case that asks for io_uring (FIBERS_IO=io_uring, its @io_uring copy)
 * skips where the kernel or a sandbox refuses io_uring: the runtime then
 * runs epoll, which the case's plain copy covers already. */
HARNESS_UNUSED static void *probe_backend_fiber(void *arg) {
  int *sv = arg;
  (void)fib_wait_fd_until(sv[0], FIB_IO_READ, 0); /* first I/O: choose */
  return NULL;
}

HARNESS_UNUSED static void require_backend(void) {
  const char *io = getenv("FIBERS_IO");
  if (!io || strcmp(io, "io_uring") != 0)
    return;
  int sv[2];
  make_socketpair(sv);
  fib_runtime *rt;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_OK(fib_spawn(rt, probe_backend_fiber, sv, NULL, NULL));
  CHECK_OK(fib_run(rt));
  int refused = strcmp(fib_runtime_io_backend(rt), "io_uring") != 0;
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_EQ(close(sv[0]), 0);
  CHECK_EQ(close(sv[1]), 0);
  if (refused)
    SKIP("FIBERS_IO=io_uring, but this kernel refuses io_uring: the epoll "
         "run covers this case");
}

#endif
