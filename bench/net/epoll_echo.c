/* SPDX-License-Identifier: MIT */
/*
 * epoll_echo.c -- the floor for echo_server: a plain single-threaded epoll
 * echo loop in C, no fibers, no library, written for the comparison only
 * (bench/net/run_net.py). Level-triggered; each readable socket is read
 * into one shared 4 KiB buffer and written straight back; a short write
 * (the client is slow to read) keeps the rest in a per-connection buffer
 * and waits for EPOLLOUT, reading nothing more from that client until it
 * has gone out.
 *
 *   epoll_echo PORT     listens on 127.0.0.1:PORT (0: any free port) and
 *                       prints "listening on 127.0.0.1:PORT"
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
#include <sys/socket.h>
#include <unistd.h>

#define BUF 4096

struct conn {
  int fd;
  size_t pend, off; /* unsent bytes in buf[off..off+pend) */
  char buf[BUF];
};

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7007;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(lfd, SOMAXCONN) < 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &len) < 0) {
    perror("epoll_echo");
    return 1;
  }
  printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static char buf[BUF];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) { /* the listener */
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0)
            break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          c = malloc(sizeof *c);
          if (!c) {
            close(fd);
            continue;
          }
          c->fd = fd;
          c->pend = c->off = 0;
          ev.events = EPOLLIN;
          ev.data.ptr = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (c->pend) { /* EPOLLOUT: finish the short write */
        ssize_t w = send(c->fd, c->buf + c->off, c->pend, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
          goto drop;
        if (w > 0) {
          c->off += (size_t)w;
          c->pend -= (size_t)w;
        }
        if (!c->pend) {
          ev.events = EPOLLIN;
          ev.data.ptr = c;
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
        continue;
      }
      ssize_t r = recv(c->fd, buf, BUF, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN))
        goto drop;
      if (r < 0)
        continue;
      ssize_t w = send(c->fd, buf, (size_t)r, MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN)
        goto drop;
      if (w < 0)
        w = 0;
      if (w < r) {
        memcpy(c->buf, buf + w, (size_t)(r - w));
        c->off = 0;
        c->pend = (size_t)(r - w);
        ev.events = EPOLLOUT;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      }
      continue;
    drop:
      close(c->fd);
      free(c);
    }
  }
}
