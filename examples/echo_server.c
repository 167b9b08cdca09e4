/* SPDX-License-Identifier: MIT */
/*
 * echo_server.c -- a TCP echo server: one fiber per connection, each a
 * plain blocking-style loop (read, write back) over <fibers/io.h>.
 *
 *   echo_server [PORT]        listens on 127.0.0.1:PORT (default 7007;
 *                             0: any free port), prints the port, serves
 *                             until killed.
 *
 * Each connection echoes through a 4 KiB buffer on its fiber's stack: the
 * server never holds more than that per connection, whatever a client
 * sends. A client that sends and never reads stops its own fiber in the
 * write, and only for WRITE_TIMEOUT_S seconds: then it is disconnected.
 * The bytes are never interpreted, so garbage is echoed like anything else.
 *
 * Try it with its client (examples/echo_client.c), from the build dir:
 *   ./examples/echo_server 7007 &
 *   ./examples/echo_client -p 7007 -c 2000 -m 100 -s 64   # check 200000 echoes
 *   ./examples/echo_client -p 7007 -c 100 -s 512 -d 5     # ping-pong for 5 s
 *   kill %1
 * or by hand: `nc 127.0.0.1 7007` (or `socat - TCP:127.0.0.1:7007`).
 */
#define _GNU_SOURCE
#include "net_common.h"

#include <fibers/io.h>

#define BUF_SIZE 4096
#define WRITE_TIMEOUT_S 10

static void echo(int fd) {
  char buf[BUF_SIZE];
  for (;;) {
    ssize_t n = fib_read(fd, buf, sizeof buf);
    if (n <= 0) /* 0: the client closed; < 0: reset or error */
      break;
    uint64_t deadline = fib_now_ns() + (uint64_t)WRITE_TIMEOUT_S * 1000000000u;
    if (net_write_all(fd, buf, (size_t)n, deadline) != 0)
      break; /* gone, or not reading: drop it */
  }
  fib_close(fd);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? net_parse_port(argv[1]) : 7007;
  if (argc > 2 || port < 0) {
    fprintf(stderr, "usage: %s [PORT]   (default 7007; 0: any free port)\n",
            argv[0]);
    return 2;
  }
  return net_serve("echo_server", port, echo);
}
