/* SPDX-License-Identifier: MIT */
/*
 * echo_client.c -- a load generator and checker for echo servers: N
 * connections to 127.0.0.1:PORT, each driven by a fiber of its own, each
 * sending messages one at a time (ping-pong) and checking that every byte
 * comes back as sent.
 *
 *   echo_client [-p PORT] [-c CONNS] [-m MSGS] [-s SIZE] [-d SECONDS]
 *               [-t TIMEOUT]
 *     -p  server port on 127.0.0.1 (default 7007)
 *     -c  connections, each a fiber (default 100; thousands are fine, up to
 *         the descriptor limit, `ulimit -n`)
 *     -m  messages per connection (default 100), or
 *     -d  send for this many seconds instead (a timed run; -m is ignored)
 *     -s  message size in bytes (default 64, at most 1 MiB)
 *     -t  give up after this many seconds in all (default 60): every call
 *         has that deadline, so the client always ends
 *
 * Each message is made from its connection's and message's numbers, so a
 * byte echoed to the wrong connection, lost, or reordered is caught. Prints
 *   ok: C connections, N messages of S bytes echoed and checked
 *   RESULT conns=C msgs=N bytes=B secs=T rate=R
 * (rate: messages per second, over the time from the first connect to the
 * last reply), or what failed; exit status 0 only if every connection
 * connected and every message came back intact.
 *
 * Against examples/echo_server.c, from the build dir:
 *   ./examples/echo_server 7007 &
 *   ./examples/echo_client -p 7007 -c 5000 -m 20 -s 128
 *   kill %1
 */
#define _GNU_SOURCE
#include "net_common.h"

#include <fibers/io.h>

#include <getopt.h>

static int port = 7007, conns = 100, msgs = 100, size = 64;
static double seconds, timeout_s = 60;
static uint64_t deadline, stop_at;

static unsigned long long sent_total, bytes_total;
static int connected, failed;
static char first_error[160];

static void fail(int id, const char *what, int err) {
  if (!failed++)
    snprintf(first_error, sizeof first_error, "connection %d: %s%s%s", id,
             what, err ? ": " : "", err ? fib_strerror(err) : "");
}

static void *conn_fiber(void *arg) {
  int id = (int)(intptr_t)arg;
  unsigned char *out = malloc((size_t)size), *in = malloc((size_t)size);
  const char *what = "out of memory";
  int fd = out && in ? net_dial_loopback(port, deadline, &what) : 0;
  if (!out || !in || fd < 0) {
    fail(id, what, fd);
    fd = -1;
    goto done;
  }
  int err;
  connected++;
  for (unsigned long m = 0; seconds > 0 ? fib_now_ns() < stop_at
                                        : m < (unsigned long)msgs;
       m++) {
    net_pattern(out, size, id, m);
    err = net_write_all(fd, out, (size_t)size, deadline);
    if (err) {
      fail(id, "write", err);
      goto done;
    }
    for (int got = 0; got < size;) {
      ssize_t n = fib_read_until(fd, in + got, (size_t)(size - got), deadline);
      if (n <= 0) {
        fail(id, n == 0 ? "the server closed the connection" : "read",
             (int)n);
        goto done;
      }
      got += (int)n;
    }
    if (memcmp(in, out, (size_t)size) != 0) {
      fail(id, "the echo differs from what was sent", 0);
      goto done;
    }
    sent_total++;
    bytes_total += (unsigned long long)size;
  }
done:
  if (fd >= 0)
    fib_close(fd);
  free(out);
  free(in);
  return NULL;
}

static void *start(void *arg) {
  (void)arg;
  fib_attr detached = {.flags = FIB_DETACHED, .stack_size = 32 * 1024};
  for (int i = 0; i < conns; i++) {
    int err = fib_spawn(NULL, conn_fiber, (void *)(intptr_t)i, &detached, NULL);
    if (err)
      fail(i, "spawn", err);
  }
  return NULL;
}

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [-p PORT] [-c CONNS] [-m MSGS] [-s SIZE] [-d SECONDS] "
          "[-t TIMEOUT]\n",
          prog);
  return 2;
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "p:c:m:s:d:t:")) != -1) {
    char *end = NULL;
    switch (opt) {
    case 'p': port = net_parse_port(optarg); break;
    case 'c': conns = (int)strtol(optarg, &end, 10); break;
    case 'm': msgs = (int)strtol(optarg, &end, 10); break;
    case 's': size = (int)strtol(optarg, &end, 10); break;
    case 'd': seconds = strtod(optarg, &end); break;
    case 't': timeout_s = strtod(optarg, &end); break;
    default: return usage(argv[0]);
    }
    if (end && *end)
      return usage(argv[0]);
  }
  if (optind != argc || port <= 0 || conns < 1 || msgs < 0 || size < 1 ||
      size > (1 << 20) || seconds < 0 || timeout_s <= 0 ||
      (seconds > 0 && seconds >= timeout_s))
    return usage(argv[0]);

  uint64_t t0 = fib_now_ns();
  deadline = t0 + (uint64_t)(timeout_s * 1e9);
  stop_at = t0 + (uint64_t)(seconds * 1e9);
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, NULL);
  if (!err)
    err = fib_spawn(rt, start, NULL, NULL, NULL);
  if (!err)
    err = fib_run(rt);
  if (err) {
    fprintf(stderr, "echo_client: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  double secs = (double)(fib_now_ns() - t0) / 1e9;
  if (failed) {
    printf("FAILED: %d of %d connections failed (%d connected); first: %s\n",
           failed, conns, connected, first_error);
    return EXIT_FAILURE;
  }
  printf("ok: %d connections, %llu messages of %d bytes echoed and checked\n",
         conns, sent_total, size);
  printf("RESULT conns=%d msgs=%llu bytes=%llu secs=%.3f rate=%.0f\n", conns,
         sent_total, bytes_total, secs, (double)sent_total / secs);
  return EXIT_SUCCESS;
}
