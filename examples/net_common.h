/* SPDX-License-Identifier: MIT */
/*
 * net_common.h -- the few lines every network example shares: parse a
 * port, listen on the loopback address, and run an accept loop that gives
 * each connection a detached fiber of its own; for the servers, an output
 * buffer that grows; for the clients, a loopback connection and the byte
 * pattern they check echoes with. Header-only (static functions), so each
 * example stays one program.
 *
 * The examples listen on 127.0.0.1 only. Port 0 asks the kernel for a free
 * port; the chosen one is printed on stdout, with the I/O back end the
 * runtime runs (fib_runtime_io_backend: "epoll" or "io_uring"; FIBERS_IO=
 * epoll|io_uring picks one, docs/io-uring.md), as
 *     listening on 127.0.0.1:PORT (io: BACKEND)
 * (flushed at once), so a script can start a server on port 0 and read
 * both.
 */
#ifndef NET_COMMON_H
#define NET_COMMON_H

#include <fibers.h>
#include <fibers/io.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* "1234" -> 1234; anything else (or out of 0..65535) -> -1. */
static inline int net_parse_port(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > 65535)
    return -1;
  return (int)v;
}

/* A listening socket on 127.0.0.1:port (port 0: any free port); *bound
 * receives the port actually bound. -1 with errno on failure. */
static inline int net_listen_loopback(int port, int *bound) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(fd, SOMAXCONN) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  *bound = ntohs(a.sin_port);
  return fd;
}

/* What the accept loop runs for each connection, in a fiber of its own. It
 * owns fd and must fib_close it. */
typedef void (*net_handler)(int fd);

struct net_conn_arg {
  net_handler handler;
  int fd;
};

static inline void *net_conn_fiber(void *p) {
  struct net_conn_arg a = *(struct net_conn_arg *)p;
  free(p);
  a.handler(a.fd);
  return NULL;
}

/* The accept loop (the body of a fiber): accept, set TCP_NODELAY, spawn a
 * detached fiber for the connection. Out of descriptors or memory: the
 * connection waits in the backlog while the loop naps 10 ms, the other
 * connections carry on. Runs until the listening socket fails. */
static inline void net_accept_loop(int lfd, net_handler handler) {
  fib_attr detached = {.flags = FIB_DETACHED};
  for (;;) {
    int fd = fib_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == FIB_EMFILE || fd == FIB_ENFILE || fd == FIB_ENOMEM ||
        fd == -ENOBUFS) {
      fib_sleep_ns(10 * 1000 * 1000);
      continue;
    }
    if (fd == FIB_ECONNABORTED || fd == -EPROTO || fd == FIB_EAGAIN)
      continue; /* that connection went away before we took it */
    if (fd < 0) {
      fprintf(stderr, "accept: %s\n", fib_strerror(fd));
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct net_conn_arg *a = malloc(sizeof *a);
    if (a) {
      a->handler = handler;
      a->fd = fd;
    }
    if (!a || fib_spawn(NULL, net_conn_fiber, a, &detached, NULL) != 0) {
      free(a);
      fib_close(fd); /* no room for this one: drop it, keep serving */
    }
  }
}

/* Write all of buf, or fail (negative error, e.g. FIB_ETIMEDOUT when the
 * peer has not read for the deadline: a client that stops reading holds
 * only its own fiber, and only until then). */
static inline int net_write_all(int fd, const void *buf, size_t len,
                         uint64_t deadline_ns) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = fib_write_until(fd, p, len, deadline_ns);
    if (n < 0)
      return (int)n;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

struct net_server {
  int lfd, port;
  net_handler handler;
};

/* The back end is chosen at a runtime's first I/O call, and epoll's is
 * named once it has watched a descriptor: so, before saying which it is,
 * wait 1 ms for the listening socket to be writable. A listening socket
 * never is, so the wait always reaches the back end (a wait for readable
 * would not, if a client were already in the backlog) and times out. */
static inline const char *net_io_backend(int lfd) {
  fib_wait_fd_until(lfd, FIB_IO_WRITE, fib_now_ns() + 1000000u);
  return fib_runtime_io_backend(fib_runtime_current());
}

static inline void *net_acceptor(void *p) {
  struct net_server *s = p;
  printf("listening on 127.0.0.1:%d (io: %s)\n", s->port,
         net_io_backend(s->lfd));
  fflush(stdout);
  net_accept_loop(s->lfd, s->handler);
  return NULL;
}

/* Listen on 127.0.0.1:port, print the "listening on" line (from the
 * acceptor fiber, once the back end is known), and serve until killed (or
 * the listening socket fails). Returns an exit status. */
static inline int net_serve(const char *name, int port, net_handler handler) {
  int bound = 0;
  struct net_server s = {net_listen_loopback(port, &bound), 0, handler};
  if (s.lfd < 0) {
    fprintf(stderr, "%s: 127.0.0.1:%d: %s\n", name, port, strerror(errno));
    return EXIT_FAILURE;
  }
  s.port = bound;
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, NULL);
  if (!err)
    err = fib_spawn(rt, net_acceptor, &s, NULL, NULL);
  if (!err)
    err = fib_run(rt);
  if (err) {
    fprintf(stderr, "%s: %s\n", name, fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  return EXIT_FAILURE; /* the accept loop only ends on an error */
}

/* Close a connection the server ends itself (an error answer, QUIT,
 * Connection: close) so that the client reads the last answer: closing a
 * socket that has unread input makes the kernel send a reset, which may
 * overtake the answer. So: end our side (FIN), drop what the client still
 * sends for up to a second or 1 MiB, then close. */
static inline void net_linger_close(int fd) {
  char drop[1024];
  shutdown(fd, SHUT_WR);
  uint64_t deadline = fib_now_ns() + 1000000000u;
  for (int i = 0; i < 1024; i++)
    if (fib_read_until(fd, drop, sizeof drop, deadline) <= 0)
      break;
  fib_close(fd);
}

/* Room for `need` bytes in a realloc'd buffer (*buf, *cap: NULL, 0 at
 * first): doubles from `first`. 0, or -1 with the buffer as it was. */
static inline int net_reserve(char **buf, size_t *cap, size_t need,
                              size_t first) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : first;
  while (n < need)
    n *= 2;
  char *p = realloc(*buf, n);
  if (!p)
    return -1;
  *buf = p;
  *cap = n;
  return 0;
}

/* A TCP connection to 127.0.0.1:port (TCP_NODELAY: the clients measure
 * round trips), made by deadline. The descriptor, or a negative errno
 * with what failed in *what ("socket", "connect"). */
static inline int net_dial_loopback(int port, uint64_t deadline,
                                    const char **what) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *what = "socket";
    return -errno;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int err = fib_connect_until(fd, (struct sockaddr *)&a, sizeof a, deadline);
  if (err) {
    fib_close(fd);
    *what = "connect";
    return err;
  }
  return fd;
}

/* The clients' message `msg` of connection `id`: `size` bytes that differ
 * from connection to connection and message to message, so an echo that
 * mixes them up is caught. */
static inline void net_pattern(unsigned char *p, int size, int id,
                               unsigned long msg) {
  uint32_t x = (uint32_t)id * 2654435761u ^ (uint32_t)msg * 40503u;
  for (int i = 0; i < size; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (unsigned char)(x >> 16);
  }
}

#endif /* NET_COMMON_H */
