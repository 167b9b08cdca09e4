/*
 * overflow.c -- turn a fault in a stack's guard region into a one-line
 * report naming the fiber, then die by the default action. (A
 * FIB_GUARD_NONE stack's overwritten canary is reported in the same words,
 * then fib__fatal: fib__stack_canary_fail.)
 *
 * The handler runs on a per-thread alternate signal stack (the faulting
 * stack is, by definition, full). It uses only async-signal-safe calls:
 * write(2) and sigaction(2). It knows which stack the thread is running on
 * from a thread-local pointer that every switch updates (fib__tl_running;
 * initial-exec TLS, so reading it in a handler never allocates). Faults
 * that are not stack overflows go to whatever handler was installed
 * before ours.
 */
#include "arch/context.h"
#include "overflow.h"
#include "sys.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

FIB__TLS struct fib__stack *const *fib__tl_running;
FIB__TLS int fib__tl_overflow_ready;

static struct sigaction old_segv, old_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_error;

/* ---- async-signal-safe formatting */

struct line {
  char buf[256];
  size_t len;
};

static void put_str(struct line *l, const char *s) {
  while (*s && l->len < sizeof l->buf - 1)
    l->buf[l->len++] = *s++;
}

static void put_dec(struct line *l, uint64_t v) {
  char tmp[24];
  int n = 0;
  do
    tmp[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n > 0 && l->len < sizeof l->buf - 1)
    l->buf[l->len++] = tmp[--n];
}

static void put_hex(struct line *l, uintptr_t v) {
  char tmp[2 * sizeof v];
  int n = 0;
  do
    tmp[n++] = "0123456789abcdef"[v & 15];
  while ((v >>= 4) != 0);
  put_str(l, "0x");
  while (n > 0 && l->len < sizeof l->buf - 1)
    l->buf[l->len++] = tmp[--n];
}

/* ---- the handler */

static int is_overflow(const struct fib__stack *s, const char *addr,
                       const char *sp) {
  /* Touched the guard region; without one (FIB_GUARD_NONE), the page just
   * below the stack: a call's push with the stack pointer exactly at the
   * bottom faults there with the stack pointer still inside. (The page
   * size is cached by the time a stack exists.) */
  size_t below = s->guard_size ? s->guard_size : fib__sys_page_size();
  if (addr >= s->lo - below && addr < s->lo)
    return 1;
  /* The stack pointer itself has left the stack downwards (a frame larger
   * than the guard, or a fault just past it). */
  return sp < s->lo && (size_t)(s->lo - sp) <= FIB_STACK_MAX && addr < s->lo;
}

/* "stack overflow in fiber 2 "name" (stack 65536 bytes, ": the part the
 * fault report and the canary report share. */
static void put_owner(struct line *l, const struct fib__stack *s) {
  put_str(l, "stack overflow in ");
  put_str(l, s->owner_kind);
  if (s->owner_id) { /* fibers: id and name; plain coroutines have neither */
    put_str(l, " ");
    put_dec(l, s->owner_id);
    put_str(l, " \"");
    put_str(l, s->owner_name ? s->owner_name : "");
    put_str(l, "\"");
  }
  put_str(l, " (stack ");
  put_dec(l, s->usable_size);
  put_str(l, " bytes, ");
}

static void report(const struct fib__stack *s, const void *addr) {
  struct line l = {.len = 0};
  put_str(&l, "fibers: ");
  put_owner(&l, s);
  if (s->guard_size) {
    put_str(&l, "guard ");
    put_dec(&l, s->guard_size);
    put_str(&l, " bytes, ");
  } else {
    put_str(&l, "no guard, "); /* FIB_GUARD_NONE: the stack pointer left it */
  }
  put_str(&l, "fault address ");
  put_hex(&l, (uintptr_t)addr);
  put_str(&l, ")\n");
  ssize_t r = write(STDERR_FILENO, l.buf, l.len);
  (void)r;
}

/* Runs on the stack whose bottom was just found overwritten, so as little
 * as the fault report: a small buffer, no stdio (whatever the overflow hit
 * may be stdio's), and fib__fatal's write(2) and abort(). */
void fib__stack_canary_fail(const struct fib__stack *s) {
  struct line l = {.len = 0};
  put_owner(&l, s);
  put_str(&l, "no guard, canary at ");
  put_hex(&l, (uintptr_t)s->lo);
  put_str(&l, " overwritten)");
  l.buf[l.len] = 0;
  fib__fatal(l.buf);
}

/* Let the signal take its default action: on return from the handler the
 * faulting instruction runs again and the kernel kills the process (with a
 * core dump where enabled), as if we had never been there. */
static void die_by_default(int sig, const siginfo_t *si) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  if (si->si_code <= 0) /* sent by kill() or raise(): will not recur */
    raise(sig);
}

static void chain(int sig, siginfo_t *si, void *uctx) {
  const struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
  if (old->sa_flags & SA_SIGINFO) {
    old->sa_sigaction(sig, si, uctx);
  } else if (old->sa_handler == SIG_DFL ||
             (old->sa_handler == SIG_IGN && si->si_code > 0)) {
    /* A real fault cannot be ignored (returning would fault again
     * forever); without our handler the kernel would kill, so do we. */
    die_by_default(sig, si);
  } else if (old->sa_handler != SIG_IGN) {
    old->sa_handler(sig);
  }
}

static void on_fault(int sig, siginfo_t *si, void *uctx) {
  struct fib__stack *const *owner = fib__tl_running;
  const struct fib__stack *s = owner ? *owner : NULL;
  if (s && si->si_code > 0 &&
      is_overflow(s, si->si_addr, fib__ctx_fault_sp(uctx))) {
    report(s, si->si_addr);
    die_by_default(sig, si);
    return;
  }
  chain(sig, si, uctx);
}

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &old_segv) != 0 ||
      sigaction(SIGBUS, &sa, &old_bus) != 0)
    handler_error = 1;
}

/* ---- the per-thread alternate stack */

static pthread_key_t altstack_key;
static pthread_once_t altstack_key_once = PTHREAD_ONCE_INIT;

struct altstack {
  void *map;
  size_t size;
};

static void altstack_thread_exit(void *arg) {
  struct altstack *a = arg;
  stack_t off = {.ss_flags = SS_DISABLE};
  fib__sys_sigaltstack(&off, NULL);
  fib__sys_munmap(a->map, a->size);
}

static void altstack_key_create(void) {
  (void)pthread_key_create(&altstack_key, altstack_thread_exit);
}

static int install_altstack(void) {
  stack_t cur;
  if (fib__sys_sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
    return 0; /* the program set its own: use it */

  size_t page = fib__sys_page_size();
  long min = sysconf(_SC_SIGSTKSZ);
  size_t size = min > 16384 ? (size_t)min : 16384;
  size = (size + page - 1) & ~(page - 1);
  /* One guard page below, so a handler that overflows faults instead of
   * writing over the neighbour mapping. The record sits in the top page. */
  size_t total = page + size;
  char *map = fib__sys_mmap(NULL, total, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
  if (map == MAP_FAILED)
    return FIB_ENOMEM;
  if (fib__sys_mprotect(map + page, size, PROT_READ | PROT_WRITE) != 0) {
    fib__sys_munmap(map, total);
    return FIB_ENOMEM;
  }
  struct altstack *rec = (struct altstack *)(map + total - sizeof *rec);
  rec->map = map;
  rec->size = total;
  stack_t ss = {.ss_sp = map + page, .ss_size = size - sizeof *rec};
  if (fib__sys_sigaltstack(&ss, NULL) != 0) {
    fib__sys_munmap(map, total);
    return FIB_ENOMEM;
  }
  pthread_once(&altstack_key_once, altstack_key_create);
  (void)pthread_setspecific(altstack_key, rec);
  return 0;
}

int fib__overflow_setup_thread(void) {
  pthread_once(&handler_once, install_handler);
  if (handler_error)
    return FIB_ENOMEM;
  int err = install_altstack();
  if (err == 0)
    fib__tl_overflow_ready = 1;
  return err;
}
