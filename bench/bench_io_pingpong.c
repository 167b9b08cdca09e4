/* SPDX-License-Identifier: MIT */
/*
 * bench_io_pingpong.c -- the I/O back ends side by side, in one run:
 * PAIRS fiber pairs ping-pong a MSG-byte message over a socketpair (or
 * loopback TCP), ROUNDS times each, on one thread. Prints round trips per
 * second for epoll and io_uring, alternating runs (docs/io-uring.md).
 *
 *   bench_io_pingpong [unix|tcp] [pairs] [rounds] [msg] [runs]
 */
#include <fibers.h>
#include <fibers/io.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long rounds;
static size_t msg;

static void *pinger(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  memset(buf, 'p', msg);
  for (long i = 0; i < rounds; i++) {
    if (fib_write(fd, buf, msg) != (ssize_t)msg)
      abort();
    for (size_t got = 0; got < msg;) {
      ssize_t n = fib_read(fd, buf + got, msg - got);
      if (n <= 0)
        abort();
      got += (size_t)n;
    }
  }
  return NULL;
}

static void *ponger(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  for (;;) {
    size_t got = 0;
    while (got < msg) {
      ssize_t n = fib_read(fd, buf + got, msg - got);
      if (n == 0)
        return NULL;
      if (n < 0)
        abort();
      got += (size_t)n;
    }
    if (fib_write(fd, buf, msg) != (ssize_t)msg)
      abort();
  }
}

static void tcp_pair(int sv[2]) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
      getsockname(l, (struct sockaddr *)&a, &al))
    abort();
  sv[0] = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(sv[0], (struct sockaddr *)&a, sizeof a))
    abort();
  sv[1] = accept(l, NULL, NULL);
  int one = 1;
  setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  close(l);
}

static double run(unsigned backend, int tcp, int pairs, const char **name) {
  fib_runtime_opts o;
  memset(&o, 0, sizeof o);
  o.io_backend = backend;
  fib_runtime *rt;
  if (fib_runtime_create(&rt, &o))
    abort();
  int (*sv)[2] = calloc((size_t)pairs, sizeof *sv);
  for (int i = 0; i < pairs; i++) {
    if (tcp)
      tcp_pair(sv[i]);
    else if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]))
      abort();
    fib_spawn(rt, pinger, (void *)(intptr_t)sv[i][0], NULL, NULL);
    fib_spawn(rt, ponger, (void *)(intptr_t)sv[i][1], NULL, NULL);
  }
  /* the pongers end when the pingers close: a closer fiber joins none,
   * so close from main after the pingers' rounds */
  uint64_t t0 = fib_now_ns();
  while (fib_run_once(rt) > pairs) /* until only the pongers are left */
    ;
  uint64_t t1 = fib_now_ns();
  *name = fib_runtime_io_backend(rt);
  for (int i = 0; i < pairs; i++)
    fib_close(sv[i][0]);
  fib_run(rt);
  for (int i = 0; i < pairs; i++)
    fib_close(sv[i][1]);
  fib_runtime_destroy(rt);
  free(sv);
  return (double)pairs * (double)rounds / ((double)(t1 - t0) / 1e9);
}

int main(int argc, char **argv) {
  int tcp = argc > 1 && strcmp(argv[1], "tcp") == 0;
  int pairs = argc > 2 ? atoi(argv[2]) : 1;
  rounds = argc > 3 ? atol(argv[3]) : 100000;
  msg = argc > 4 ? (size_t)atol(argv[4]) : 64;
  int runs = argc > 5 ? atoi(argv[5]) : 5;
  if (msg == 0 || msg > 4096)
    msg = 64;
  unsigned backends[2] = {FIB_IO_EPOLL, FIB_IO_URING};
  for (int r = 0; r < runs; r++)
    for (int b = 0; b < 2; b++) {
      const char *name;
      double rps = run(backends[b], tcp, pairs, &name);
      printf("%s %s pairs=%d msg=%zu: %.0f round trips/s\n",
             tcp ? "tcp" : "unix", name, pairs, msg, rps);
      fflush(stdout);
    }
  return 0;
}
