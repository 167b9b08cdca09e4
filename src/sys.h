/* SPDX-License-Identifier: MIT */
/*
 * sys.h -- the seam between the library and the system.
 *
 * Every mmap, munmap, madvise, mprotect, sigaltstack and heap allocation the
 * library makes, and the poller's wake-up eventfd, go through these
 * wrappers, so a test can make the Nth such call fail (fib__fault_inject)
 * and check that the failure is reported and nothing is lost. The check
 * costs one relaxed atomic load per call, next to a system call or malloc.
 */
#ifndef FIB__SYS_H
#define FIB__SYS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tls.h"

void *fib__sys_mmap(void *addr, size_t len, int prot, int flags);
int fib__sys_munmap(void *addr, size_t len);
int fib__sys_madvise(void *addr, size_t len, int advice);
/* madvise over many ranges in one system call: process_madvise(2) on this
 * process (PIDFD_SELF, Linux 6.14+, where every advice is allowed for
 * oneself). Returns the bytes advised (all of them, or fewer if it stopped
 * early) or -1 with errno: EINVAL, ENOSYS, EBADF or EPERM where the kernel
 * cannot (the caller then falls back to one fib__sys_madvise per range).
 * Counted as a FIB__FAULT_MADVISE call. */
struct iovec;
long fib__sys_madvise_vec(const struct iovec *iov, size_t n, int advice);
int fib__sys_mprotect(void *addr, size_t len, int prot);
int fib__sys_sigaltstack(const stack_t *ss, stack_t *old);
void *fib__sys_malloc(size_t size);
void *fib__sys_calloc(size_t n, size_t size);
void *fib__sys_realloc(void *p, size_t size);
void fib__sys_free(void *p);
/* eventfd(2): the descriptor, or -1 with errno. Counted as
 * FIB__FAULT_EVENTFD. */
int fib__sys_eventfd(unsigned initval, int flags);

/* The page size (sysconf, read once). Not a seam: it cannot fail. */
size_t fib__sys_page_size(void);

/* Whether the `n` words at w are all zero (the public structs' reserved
 * fields, which a caller must leave zero). */
static inline int fib__all_zero(const uintptr_t *w, size_t n) {
  uintptr_t any = 0;
  for (size_t i = 0; i < n; i++) /* no branch per word: on every spawn */
    any |= w[i];
  return any == 0;
}

/* Kinds of call, for fib__fault_inject's mask. */
enum {
  FIB__FAULT_MMAP = 1 << 0,
  FIB__FAULT_MUNMAP = 1 << 1,
  FIB__FAULT_MADVISE = 1 << 2,
  FIB__FAULT_MPROTECT = 1 << 3,
  FIB__FAULT_SIGALTSTACK = 1 << 4,
  FIB__FAULT_MALLOC = 1 << 5, /* malloc, calloc and realloc */
  FIB__FAULT_ALL = (1 << 6) - 1, /* the kinds above: failures that are errors */
  /* Each io_uring_setup attempt (src/io/uring.c, fib__sys_injected). Not in
   * FIB__FAULT_ALL: its failure is no error, the runtime falls back to
   * epoll (a test that counts ALL calls is not disturbed by it). */
  FIB__FAULT_IO_URING = 1 << 6,
  /* Each eventfd the poller makes for its wake-up (fib__sys_eventfd). Not
   * in FIB__FAULT_ALL either: its failure is no error, a sleeper without
   * one naps in its poller instead (workers.h). */
  FIB__FAULT_EVENTFD = 1 << 7
};

/*
 * Test seam: from now on, count the calls of the kinds in `mask`; the
 * nth one (1-based) fails with ENOMEM, and so does every later one if
 * `sticky`. nth == 0 turns injection off. Process-wide.
 */
void fib__fault_inject(int mask, long nth, int sticky);
/* The same, failing with `err` (EPERM, ENOSYS, ...) instead of ENOMEM. */
void fib__fault_inject_err(int mask, long nth, int sticky, int err);
/* How many calls of the masked kinds were counted since fib__fault_inject. */
long fib__fault_calls(void);

/* The seam for a call the library makes through a library of its own
 * (io_uring setup, through liburing): counts it as a call of `kind`;
 * returns the errno it is to fail with, or 0 to make the call. */
int fib__sys_injected(int kind);

/* Write "fibers: fatal: <what>\n" to stderr and abort(). For misuse that no
 * caller could handle. */
_Noreturn void fib__fatal(const char *what);

/* A second line fib__fatal writes, if not NULL: set by a seeded run on its
 * thread, to say how to replay it. */
extern FIB__TLS const char *fib__fatal_note;

#endif
