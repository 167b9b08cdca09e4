/* SPDX-License-Identifier: MIT */
/* sys.c -- system calls and allocation behind a fault-injection seam. */
#include "sys.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_process_madvise
#define SYS_process_madvise 440 /* the same number on every architecture */
#endif
/* The calling process, for pidfd calls (Linux 6.14): no descriptor to open,
 * and none to go stale across fork. */
#define FIB__PIDFD_SELF (-10000)

static atomic_int fault_mask;   /* kinds counted; 0: injection off */
static atomic_long fault_nth;   /* the call that fails */
static atomic_long fault_count; /* calls counted so far */
static atomic_int fault_sticky; /* later calls fail too */
static atomic_int fault_err = ENOMEM; /* the errno a failed call sets */

void fib__fault_inject_err(int mask, long nth, int sticky, int err) {
  atomic_store(&fault_mask, 0);
  atomic_store(&fault_err, err);
  atomic_store(&fault_count, 0);
  atomic_store(&fault_nth, nth);
  atomic_store(&fault_sticky, sticky);
  atomic_store(&fault_mask, nth > 0 ? mask : 0);
}

void fib__fault_inject(int mask, long nth, int sticky) {
  fib__fault_inject_err(mask, nth, sticky, ENOMEM);
}

long fib__fault_calls(void) { return atomic_load(&fault_count); }

/* True if this call (of kind `kind`) is to fail. Relaxed: the counter only
 * has to be exact in single-threaded tests. */
static int should_fail(int kind) {
  if (!(atomic_load_explicit(&fault_mask, memory_order_relaxed) & kind))
    return 0;
  long n = atomic_fetch_add_explicit(&fault_count, 1, memory_order_relaxed) + 1;
  long nth = atomic_load_explicit(&fault_nth, memory_order_relaxed);
  return n == nth || (n > nth && atomic_load(&fault_sticky));
}

/* The errno of an injected failure. */
static int injected_err(void) {
  return atomic_load_explicit(&fault_err, memory_order_relaxed);
}

int fib__sys_injected(int kind) {
  return should_fail(kind) ? injected_err() : 0;
}

void *fib__sys_mmap(void *addr, size_t len, int prot, int flags) {
  if (should_fail(FIB__FAULT_MMAP)) {
    errno = injected_err();
    return MAP_FAILED;
  }
  return mmap(addr, len, prot, flags, -1, 0);
}

int fib__sys_munmap(void *addr, size_t len) {
  if (should_fail(FIB__FAULT_MUNMAP)) {
    errno = injected_err();
    return -1;
  }
  return munmap(addr, len);
}

int fib__sys_madvise(void *addr, size_t len, int advice) {
  if (should_fail(FIB__FAULT_MADVISE)) {
    errno = injected_err();
    return -1;
  }
  return madvise(addr, len, advice);
}

long fib__sys_madvise_vec(const struct iovec *iov, size_t n, int advice) {
  if (should_fail(FIB__FAULT_MADVISE)) {
    errno = injected_err();
    return -1;
  }
  return syscall(SYS_process_madvise, FIB__PIDFD_SELF, iov, n, advice, 0);
}

int fib__sys_mprotect(void *addr, size_t len, int prot) {
  if (should_fail(FIB__FAULT_MPROTECT)) {
    errno = injected_err();
    return -1;
  }
  return mprotect(addr, len, prot);
}

int fib__sys_sigaltstack(const stack_t *ss, stack_t *old) {
  if (ss && should_fail(FIB__FAULT_SIGALTSTACK)) {
    errno = injected_err();
    return -1;
  }
  return sigaltstack(ss, old);
}

void *fib__sys_malloc(size_t size) {
  return should_fail(FIB__FAULT_MALLOC) ? NULL : malloc(size);
}

void *fib__sys_calloc(size_t n, size_t size) {
  return should_fail(FIB__FAULT_MALLOC) ? NULL : calloc(n, size);
}

void *fib__sys_realloc(void *p, size_t size) {
  return should_fail(FIB__FAULT_MALLOC) ? NULL : realloc(p, size);
}

void fib__sys_free(void *p) { free(p); }

int fib__sys_eventfd(unsigned initval, int flags) {
  if (should_fail(FIB__FAULT_EVENTFD)) {
    errno = injected_err();
    return -1;
  }
  return eventfd(initval, flags);
}

FIB__TLS const char *fib__fatal_note;

_Noreturn void fib__fatal(const char *what) {
  static const char prefix[] = "fibers: fatal: ";
  /* write(2) only: this may run where stdio is unusable. */
  ssize_t r = write(STDERR_FILENO, prefix, sizeof prefix - 1);
  r = write(STDERR_FILENO, what, strlen(what));
  r = write(STDERR_FILENO, "\n", 1);
  const char *note = fib__fatal_note;
  if (note) {
    r = write(STDERR_FILENO, "fibers: ", 8);
    r = write(STDERR_FILENO, note, strlen(note));
    r = write(STDERR_FILENO, "\n", 1);
  }
  (void)r;
  abort();
}

size_t fib__sys_page_size(void) {
  static atomic_size_t cached;
  size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
  if (!p) {
    long v = sysconf(_SC_PAGESIZE);
    p = v > 0 ? (size_t)v : 4096;
    atomic_store_explicit(&cached, p, memory_order_relaxed);
  }
  return p;
}
