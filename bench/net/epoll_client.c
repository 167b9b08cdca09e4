/* SPDX-License-Identifier: MIT */
/*
 * epoll_client.c -- the echo load generator of make bench-net: the same
 * ping-pong as examples/echo_client.c (each connection sends SIZE bytes,
 * waits for all of them back, sends again), in one thread with one
 * level-triggered epoll loop and no fibers library, so the client is
 * independent of the code it measures and spends as little CPU per message
 * as a plain C program can (no per-message timers, one fixed message per
 * connection, compared with memcmp when it is back).
 *
 *   epoll_client -p PORT [-c CONNS] [-s SIZE] -d SECONDS [-t TIMEOUT]
 *
 * Connects CONNS sockets to 127.0.0.1:PORT (blocking connects, then
 * non-blocking), starts the clock, runs for SECONDS, and prints
 *   RESULT conns=C msgs=N bytes=B secs=T rate=R
 * (N: replies that came back whole and intact within the run; rate =
 * N / T). Any error, short write, closed connection or wrong byte: a
 * message on stderr and exit status 1. SIGALRM after TIMEOUT seconds
 * (default SECONDS + 30) ends it whatever happens.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
  int fd, got;
  unsigned char *msg, *in;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int id) {
  fprintf(stderr, "epoll_client: connection %d: %s: %s\n", id, what,
          errno ? strerror(errno) : "no");
  exit(1);
}

int main(int argc, char **argv) {
  int port = 0, conns = 100, size = 512, opt;
  double secs = 0, timeout = 0;
  while ((opt = getopt(argc, argv, "p:c:s:d:t:")) != -1) {
    switch (opt) {
    case 'p': port = atoi(optarg); break;
    case 'c': conns = atoi(optarg); break;
    case 's': size = atoi(optarg); break;
    case 'd': secs = atof(optarg); break;
    case 't': timeout = atof(optarg); break;
    default: goto usage;
    }
  }
  if (optind != argc || port <= 0 || port > 65535 || conns < 1 ||
      size < 1 || size > 65536 || secs <= 0) {
  usage:
    fprintf(stderr, "usage: %s -p PORT [-c CONNS] [-s SIZE] -d SECONDS "
                    "[-t TIMEOUT]\n", argv[0]);
    return 2;
  }
  alarm((unsigned)(timeout > 0 ? timeout : secs + 30));
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct conn *c = calloc((size_t)conns, sizeof *c);
  if (ep < 0 || !c)
    die("setup", -1);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < conns; i++) {
    c[i].msg = malloc((size_t)size);
    c[i].in = malloc((size_t)size);
    if (!c[i].msg || !c[i].in)
      die("out of memory", i);
    for (int k = 0; k < size; k++) /* differs by connection and position */
      c[i].msg[k] = (unsigned char)((i * 131 + k * 7) ^ (k >> 8));
    c[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (c[i].fd < 0 ||
        setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        connect(c[i].fd, (struct sockaddr *)&a, sizeof a))
      die("connect", i);
  }
  double t0 = now(), stop = t0 + secs;
  for (int i = 0; i < conns; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) ||
        write(c[i].fd, c[i].msg, (size_t)size) != size)
      die("first write", i);
  }
  unsigned long long msgs = 0;
  struct epoll_event evs[256];
  double t = t0;
  while (t < stop) {
    int n = epoll_wait(ep, evs, 256, 100);
    if (n < 0 && errno != EINTR)
      die("epoll_wait", -1);
    for (int e = 0; e < n; e++) {
      struct conn *k = &c[evs[e].data.u32];
      ssize_t r = recv(k->fd, k->in + k->got, (size_t)(size - k->got),
                       MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      if (r <= 0)
        die(r ? "read" : "the server closed the connection",
            (int)evs[e].data.u32);
      k->got += (int)r;
      if (k->got < size)
        continue;
      if (memcmp(k->in, k->msg, (size_t)size) != 0) {
        errno = 0;
        die("the echo differs from what was sent", (int)evs[e].data.u32);
      }
      msgs++;
      k->got = 0;
      if (send(k->fd, k->msg, (size_t)size, MSG_DONTWAIT) != size)
        die("write (short or failed)", (int)evs[e].data.u32);
    }
    t = now();
  }
  for (int i = 0; i < conns; i++)
    close(c[i].fd);
  printf("RESULT conns=%d msgs=%llu bytes=%llu secs=%.3f rate=%.0f\n", conns,
         msgs, msgs * (unsigned long long)size, t - t0, (double)msgs / (t - t0));
  return 0;
}
