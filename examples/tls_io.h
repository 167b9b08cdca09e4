/* SPDX-License-Identifier: MIT */
/*
 * tls_io.h -- OpenSSL in a fiber: the few lines that make SSL_do_handshake,
 * SSL_read, SSL_write and SSL_shutdown park only the calling fiber. Used
 * by examples/tls_echo.c; header-only (static functions). The library
 * itself knows nothing of OpenSSL: this is user code over fib_wait_fd.
 *
 * The pattern. The SSL object reads and writes the socket itself
 * (SSL_set_fd), and the socket is non-blocking (fib_accept's descriptors
 * are; fib_connect makes a socket so), so an SSL call never blocks the
 * thread: when it needs the network it fails with SSL_ERROR_WANT_READ or
 * SSL_ERROR_WANT_WRITE. Then the fiber waits for that readiness with
 * fib_wait_fd_until and makes THE SAME CALL AGAIN, with the same arguments
 * (OpenSSL requires it: a half-done SSL_write remembers its buffer). Note
 * that the direction follows what OpenSSL asked for, not what the call
 * is: a read may want a write (a TLS 1.3 KeyUpdate or a renegotiation to
 * answer) and a write may want a read. Every wait has a deadline, so a
 * peer that stops talking holds only its own fiber, and only until then.
 *
 * Two things are easy to get wrong with fibers:
 *   - OpenSSL's error queue is per thread, and so shared by every fiber of
 *     the thread. The helpers clear it before each SSL call and read
 *     SSL_get_error right after it, before the fiber can park. After a
 *     call returns TLS_EPROTO, read the reason with tls_error_text before
 *     the fiber's next blocking call (another fiber may run then).
 *   - OpenSSL writes to the socket with write(2), so a peer that has gone
 *     raises SIGPIPE: ignore SIGPIPE in the process (signal(SIGPIPE,
 *     SIG_IGN) in main) -- fibers' own calls never raise it, OpenSSL's do.
 *
 * Close a connection with SSL_free, then fib_close on the descriptor (not
 * close(2): the runtime has watched it).
 *
 * Results: 0 or a byte count on success; a negative code on failure: the
 * fiber calls' codes (FIB_ETIMEDOUT, FIB_ECANCELED, FIB_EBADF, ...), the
 * kernel's error for the socket (FIB_ECONNRESET, FIB_EPIPE, ...), or
 * TLS_EPROTO for a TLS failure (a bad handshake, a certificate that does
 * not verify, garbage that is not TLS).
 */
#ifndef TLS_IO_H
#define TLS_IO_H

#include <fibers.h>
#include <fibers/io.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_EPROTO (-EPROTO) /* the TLS protocol failed: tls_error_text */

/* A readable name for a result of the helpers below. */
static inline const char *tls_strerror(int err) {
  return err == TLS_EPROTO ? "TLS protocol error" : fib_strerror(err);
}

/* What OpenSSL said about the last TLS_EPROTO (the oldest error in the
 * thread's queue), into buf; clears the queue. Call it before the fiber's
 * next blocking call. */
static inline const char *tls_error_text(char *buf, size_t size) {
  unsigned long e = ERR_get_error();
  if (!e)
    snprintf(buf, size, "no OpenSSL reason");
  else
    ERR_error_string_n(e, buf, size);
  ERR_clear_error();
  return buf;
}

/*
 * The heart of it: ret is what an SSL call on ssl just returned (<= 0 for
 * a failure), err_no the errno right after it. If OpenSSL wants the socket
 * readable or writable, wait for that (until deadline_ns) and return 1:
 * make the same call again. Otherwise return why the connection ends: 0
 * for the peer's close_notify (a clean end of the stream), or a negative
 * code (see the top).
 */
static inline int tls_wait(SSL *ssl, int ret, int err_no,
                           uint64_t deadline_ns) {
  unsigned events;
  switch (SSL_get_error(ssl, ret)) {
  case SSL_ERROR_WANT_READ:
    events = FIB_IO_READ;
    break;
  case SSL_ERROR_WANT_WRITE:
    events = FIB_IO_WRITE;
    break;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  case SSL_ERROR_SYSCALL: /* the socket failed, or EOF inside a record */
    ERR_clear_error();
    return err_no ? -err_no : FIB_ECONNRESET;
  case SSL_ERROR_SSL:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING /* OpenSSL 3: the peer just left */
    if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      return FIB_ECONNRESET;
    }
#endif
    return TLS_EPROTO; /* the reason stays queued for tls_error_text */
  default:
    return TLS_EPROTO;
  }
  if (fib_now_ns() >= deadline_ns)
    return FIB_ETIMEDOUT; /* bounds a peer that keeps us waking for nothing */
  int r = fib_wait_fd_until(SSL_get_fd(ssl), events, deadline_ns);
  return r < 0 ? r : 1;
}

/* The handshake, either side (SSL_set_accept_state or
 * SSL_set_connect_state first). 0, or why it failed; a peer that closes
 * during the handshake is FIB_ECONNRESET. */
static inline int tls_handshake(SSL *ssl, uint64_t deadline_ns) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
      return 0;
    int w = tls_wait(ssl, r, errno, deadline_ns);
    if (w <= 0)
      return w == 0 ? FIB_ECONNRESET : w;
  }
}

/* SSL_read: up to len bytes (> 0), 0 at the peer's close_notify, or a
 * negative code. */
static inline ssize_t tls_read(SSL *ssl, void *buf, size_t len,
                               uint64_t deadline_ns) {
  int n = len > INT_MAX ? INT_MAX : (int)len;
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(ssl, buf, n);
    if (r > 0)
      return r;
    int w = tls_wait(ssl, r, errno, deadline_ns);
    if (w <= 0)
      return w;
  }
}

/* SSL_write of all of buf (without SSL_MODE_ENABLE_PARTIAL_WRITE,
 * SSL_write completes only when all of it is sent): 0, or a negative code
 * (the peer's close_notify while we write: FIB_EPIPE). */
static inline int tls_write_all(SSL *ssl, const void *buf, size_t len,
                                uint64_t deadline_ns) {
  const char *p = buf;
  while (len > 0) {
    int n = len > INT_MAX ? INT_MAX : (int)len;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(ssl, p, n); /* retried below with the same p, n */
    if (r > 0) {
      p += r;
      len -= (size_t)r;
      continue;
    }
    int w = tls_wait(ssl, r, errno, deadline_ns);
    if (w <= 0)
      return w == 0 ? FIB_EPIPE : w;
  }
  return 0;
}

/* Send our close_notify (SSL_shutdown until it has gone out). It does not
 * wait for the peer's: a server closes the socket next. 0 or a negative
 * code. Only for a connection that has not failed: after a failure, just
 * SSL_free and close. */
static inline int tls_shutdown(SSL *ssl, uint64_t deadline_ns) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_shutdown(ssl); /* 0: ours sent; 1: both sides done */
    if (r >= 0)
      return 0;
    int w = tls_wait(ssl, r, errno, deadline_ns);
    if (w <= 0)
      return w == 0 ? 0 : w;
  }
}

#endif /* TLS_IO_H */
