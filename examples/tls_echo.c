/* SPDX-License-Identifier: MIT */
/*
 * tls_echo.c -- a TLS echo server and its checking client, OpenSSL over
 * non-blocking sockets, one fiber per connection (examples/tls_io.h holds
 * the few lines that make an SSL call park only its fiber).
 *
 *   tls_echo server CERT KEY [PORT]
 *       listens on 127.0.0.1:PORT (default 7443; 0: any free port) with the
 *       PEM certificate CERT and key KEY, prints the port, serves until
 *       killed. Each connection: handshake (HANDSHAKE_TIMEOUT_S), then
 *       read and write back whatever comes until the client closes or is
 *       idle for IDLE_TIMEOUT_S. A failure -- a handshake that is not TLS,
 *       a bad record, a peer that vanished or stalls -- ends that
 *       connection only (one line on stderr says why); the others go on.
 *
 *   tls_echo client [-p PORT] [-c CONNS] [-m MSGS] [-s SIZE] [-t TIMEOUT]
 *                   [-C CAFILE]
 *       CONNS connections (default 100) to 127.0.0.1:PORT (default 7443),
 *       each a fiber: handshake, MSGS messages (default 20) of SIZE bytes
 *       (default 100, at most 1 MiB) sent one at a time and checked byte
 *       for byte as they come back, then close_notify. -C: verify the
 *       server's certificate against CAFILE (and that it is for
 *       127.0.0.1); without it the certificate is not checked. -t: every
 *       call's deadline, in seconds from the start (default 30). Prints
 *         ok: C connections, N messages of S bytes echoed over TLS and checked
 *       or what failed; exit status 0 only if every message came back.
 *
 * Against the real OpenSSL client, from the build dir (a throwaway
 * self-signed certificate for 127.0.0.1):
 *   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
 *       -nodes -days 1 -subj /CN=127.0.0.1 \
 *       -addext subjectAltName=IP:127.0.0.1 -keyout key.pem -out cert.pem
 *   ./examples/tls_echo server cert.pem key.pem 7443 &
 *   openssl s_client -connect 127.0.0.1:7443 -CAfile cert.pem \
 *       -verify_ip 127.0.0.1 -verify_return_error -quiet
 *       (type lines: each comes back; a line "K" alone is s_client's
 *       command for a TLS 1.3 KeyUpdate; Ctrl-C ends it), or scripted:
 *   (echo hello; sleep 1) | openssl s_client -connect 127.0.0.1:7443 \
 *       -CAfile cert.pem -verify_ip 127.0.0.1 -verify_return_error \
 *       -quiet -no_ign_eof
 *   ./examples/tls_echo client -p 7443 -C cert.pem -c 500 -m 20 -s 1000
 *   kill %1
 * tests/tools/net_check.py (check "tls") does all of this, plus garbage.
 */
#define _GNU_SOURCE
#include "net_common.h"
#include "tls_io.h"

#include <fibers/io.h>

#include <getopt.h>
#include <signal.h>

#include <openssl/x509v3.h>

#define BUF_SIZE 16384 /* one TLS record's worth of plain text */
#define HANDSHAKE_TIMEOUT_S 5
#define IDLE_TIMEOUT_S 30
#define WRITE_TIMEOUT_S 10

#define SEC 1000000000ull

static SSL_CTX *ctx;

/* ------------------------------------------------------------------ server */

static unsigned long conn_count;

static void drop(unsigned long id, const char *what, int err) {
  char why[256] = "";
  if (err == TLS_EPROTO)
    tls_error_text(why, sizeof why);
  fprintf(stderr, "tls_echo: connection %lu: %s: %s%s%s\n", id, what,
          tls_strerror(err), *why ? ": " : "", why);
}

static void serve_conn(int fd) {
  unsigned long id = ++conn_count;
  SSL *ssl = SSL_new(ctx);
  if (!ssl || !SSL_set_fd(ssl, fd)) {
    fprintf(stderr, "tls_echo: connection %lu: no memory for TLS\n", id);
    goto out;
  }
  SSL_set_accept_state(ssl);
  int err = tls_handshake(ssl, fib_now_ns() + HANDSHAKE_TIMEOUT_S * SEC);
  if (err) {
    drop(id, "handshake", err);
    goto out;
  }
  char *buf = malloc(BUF_SIZE); /* off the fiber's stack: OpenSSL uses it */
  if (!buf)
    goto out;
  for (;;) {
    ssize_t n = tls_read(ssl, buf, BUF_SIZE,
                         fib_now_ns() + IDLE_TIMEOUT_S * SEC);
    if (n == 0) { /* close_notify: answer it, then close */
      tls_shutdown(ssl, fib_now_ns() + SEC);
      break;
    }
    if (n < 0) {
      drop(id, "read", (int)n);
      break;
    }
    err = tls_write_all(ssl, buf, (size_t)n,
                        fib_now_ns() + WRITE_TIMEOUT_S * SEC);
    if (err) {
      drop(id, "write", err);
      break;
    }
  }
  free(buf);
out:
  SSL_free(ssl);
  fib_close(fd);
}

static int run_server(int argc, char **argv) {
  int port = argc > 4 ? net_parse_port(argv[4]) : 7443;
  if (argc < 4 || argc > 5 || port < 0) {
    fprintf(stderr, "usage: %s server CERT KEY [PORT]\n", argv[0]);
    return 2;
  }
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    char why[256];
    fprintf(stderr, "tls_echo: %s, %s: %s\n", argv[2], argv[3],
            tls_error_text(why, sizeof why));
    return EXIT_FAILURE;
  }
  return net_serve("tls_echo", port, serve_conn);
}

/* ------------------------------------------------------------------ client */

static int port = 7443, conns = 100, msgs = 20, size = 100;
static double timeout_s = 30;
static uint64_t deadline;
static unsigned long long echoed;
static int failed;
static char first_error[320];

static void fail(int id, const char *what, int err) {
  char why[256] = "";
  if (err == TLS_EPROTO)
    tls_error_text(why, sizeof why); /* now: before another fiber runs */
  if (!failed++)
    snprintf(first_error, sizeof first_error, "connection %d: %s%s%s%s%s", id,
             what, err ? ": " : "", err ? tls_strerror(err) : "",
             *why ? ": " : "", why);
}

static void *client_conn(void *arg) {
  int id = (int)(intptr_t)arg;
  unsigned char *out = malloc((size_t)size), *in = malloc((size_t)size);
  SSL *ssl = NULL;
  const char *what = "out of memory";
  int fd = out && in ? net_dial_loopback(port, deadline, &what) : 0;
  if (!out || !in || fd < 0) {
    fail(id, what, fd);
    fd = -1;
    goto done;
  }
  int err;
  ssl = SSL_new(ctx);
  if (!ssl || !SSL_set_fd(ssl, fd) ||
      !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1")) {
    fail(id, "no memory for TLS", 0);
    goto done;
  }
  SSL_set_connect_state(ssl);
  err = tls_handshake(ssl, deadline);
  if (err) {
    fail(id, "handshake", err);
    goto done;
  }
  for (int m = 0; m < msgs; m++) {
    net_pattern(out, size, id, (unsigned long)m);
    err = tls_write_all(ssl, out, (size_t)size, deadline);
    if (err) {
      fail(id, "write", err);
      goto done;
    }
    for (int got = 0; got < size;) {
      ssize_t n = tls_read(ssl, in + got, (size_t)(size - got), deadline);
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
    echoed++;
  }
  tls_shutdown(ssl, deadline);
done:
  SSL_free(ssl);
  if (fd >= 0)
    fib_close(fd);
  free(out);
  free(in);
  return NULL;
}

static void *start_clients(void *arg) {
  (void)arg;
  /* OpenSSL's handshake wants more stack than a plain echo: 64 KiB */
  fib_attr detached = {.flags = FIB_DETACHED, .stack_size = 64 * 1024};
  for (int i = 0; i < conns; i++) {
    int err =
        fib_spawn(NULL, client_conn, (void *)(intptr_t)i, &detached, NULL);
    if (err)
      fail(i, "spawn", err);
  }
  return NULL;
}

static int client_usage(const char *prog) {
  fprintf(stderr,
          "usage: %s client [-p PORT] [-c CONNS] [-m MSGS] [-s SIZE] "
          "[-t TIMEOUT] [-C CAFILE]\n",
          prog);
  return 2;
}

static int run_client(int argc, char **argv) {
  const char *cafile = NULL;
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "p:c:m:s:t:C:")) != -1) {
    char *end = NULL;
    switch (opt) {
    case 'p': port = net_parse_port(optarg); break;
    case 'c': conns = (int)strtol(optarg, &end, 10); break;
    case 'm': msgs = (int)strtol(optarg, &end, 10); break;
    case 's': size = (int)strtol(optarg, &end, 10); break;
    case 't': timeout_s = strtod(optarg, &end); break;
    case 'C': cafile = optarg; break;
    default: return client_usage(argv[0]);
    }
    if (end && *end)
      return client_usage(argv[0]);
  }
  if (optind != argc || port <= 0 || conns < 1 || msgs < 0 || size < 1 ||
      size > (1 << 20) || timeout_s <= 0)
    return client_usage(argv[0]);

  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      (cafile && SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1)) {
    char why[256];
    fprintf(stderr, "tls_echo: %s: %s\n", cafile ? cafile : "TLS",
            tls_error_text(why, sizeof why));
    return EXIT_FAILURE;
  }
  if (cafile)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

  deadline = fib_now_ns() + (uint64_t)(timeout_s * 1e9);
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, NULL);
  if (!err)
    err = fib_spawn(rt, start_clients, NULL, NULL, NULL);
  if (!err)
    err = fib_run(rt);
  if (err) {
    fprintf(stderr, "tls_echo: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  SSL_CTX_free(ctx);
  if (failed) {
    printf("FAILED: %d of %d connections failed; first: %s\n", failed, conns,
           first_error);
    return EXIT_FAILURE;
  }
  printf("ok: %d connections, %llu messages of %d bytes echoed over TLS and "
         "checked\n",
         conns, echoed, size);
  return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
  /* OpenSSL writes to the socket with write(2): a peer that has gone would
   * raise SIGPIPE and kill the process (tls_io.h). */
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "server") == 0)
    return run_server(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "client") == 0)
    return run_client(argc, argv);
  fprintf(stderr,
          "usage: %s server CERT KEY [PORT]\n"
          "       %s client [-p PORT] [-c CONNS] [-m MSGS] [-s SIZE] "
          "[-t TIMEOUT] [-C CAFILE]\n",
          argv[0], argv[0]);
  return 2;
}
