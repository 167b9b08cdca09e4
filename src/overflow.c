/* SPDX-License-Identifier: MIT */
/*
 * overflow.c -- turn a fault in a stack's guard region into a one-line
 * report naming the fiber, then die by the default action. (A
 * FIB_GUARD_NONE stack's overwritten canary is reported in the same words,
 * then fib__fatal: fib__stack_canary_fail.)
 *
 * The handler runs on a per-thread alternate signal stack (the faulting
 * stack is, by definition, full). It uses only async-signal-safe calls:
 * write(2), sigaction(2), pthread_sigmask(3), raise(3). It knows which
 * stack the thread is running on from a thread-local pointer that every
 * switch updates (fib__tl_running; initial-exec TLS, so reading it in a
 * handler never allocates). Faults that are not stack overflows go to
 * whatever action was in place before ours, run as the kernel would have
 * run it. A handler installed after ours may call ours as a function for
 * faults it does not want; a host that wants no handler of ours at all
 * says so with fib_overflow_signals(FIB_SIGNALS_NONE) and may ask
 * fib_overflow_check() from its own.
 */
#include "arch/context.h"
#include "overflow.h"
#include "sys.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

FIB__TLS struct fib__stack *const *fib__tl_running;
FIB__TLS int fib__tl_overflow_ready;

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
   * than the guard, or a fault just past it). No stack pointer (a caller
   * without the context) proves nothing: NULL is below every stack, and
   * near enough to one mapped low (as valgrind maps them) to pass. */
  return sp && sp < s->lo && (size_t)(s->lo - sp) <= FIB_STACK_MAX &&
         addr < s->lo;
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

/* ---- dying, and handing faults on */

static void on_fault(int sig, siginfo_t *si, void *uctx);

/* Whether our handler is sig's installed action. If it is, the kernel
 * called it for this signal, and returning from it resumes the faulting
 * code. If not, a handler installed after ours has called it as a
 * function (signal chaining, as libjsig or Go's forwarding do): what that
 * handler does once we return is its business, so we cannot rely on
 * returning to make the fault recur. */
static int ours_is_installed(int sig) {
  struct sigaction cur;
  return sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
         cur.sa_sigaction == on_fault;
}

static void set_default(int sig) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
}

/* Die by sig's default action now, from wherever we are: the signal is
 * unblocked first (it is blocked in the handler that called us, unless
 * that one had SA_NODEFER), so raise() does not return. */
static _Noreturn void die_now(int sig) {
  set_default(sig);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
  /* Only reached if a tracer swallowed the signal. */
  _exit(128 + sig);
}

/* Whether returning from the handler re-runs the instruction that faulted
 * (so the fault recurs): a fault the kernel raised as it happened, not a
 * kill() or raise(), nor one of the kernel's asynchronous reports. */
static int fault_recurs(const siginfo_t *si) {
  if (!si || si->si_code <= 0)
    return 0;
#ifdef SEGV_MTEAERR
  if (si->si_signo == SIGSEGV && si->si_code == SEGV_MTEAERR)
    return 0; /* arm64 MTE, asynchronous: reported after the fact */
#endif
#ifdef BUS_MCEERR_AO
  if (si->si_signo == SIGBUS && si->si_code == BUS_MCEERR_AO)
    return 0; /* a memory error found in the background */
#endif
  return 1;
}

/* End the process by sig's default action, with a core dump where enabled.
 * Called by the kernel for a fault that recurs, we only restore the
 * default action and return: the instruction faults again and the kernel
 * kills, so the core shows the fault as it was (its siginfo, the faulting
 * frame on top), as if we had never been there. Otherwise die now. */
static void die_by_default(int sig, const siginfo_t *si, int from_kernel) {
  if (from_kernel && fault_recurs(si)) {
    set_default(sig);
    return;
  }
  die_now(sig);
}

/* The actions SIGSEGV ([0]) and SIGBUS ([1]) had before ours, read just
 * before ours went in. A handler with SA_RESETHAND is one-shot, as the
 * kernel would have made it: once it has been called, `spent` says to
 * treat it as SIG_DFL. (Without that, such a handler that returns -- the
 * usual crash reporter: report, return, let the fault recur and kill --
 * would be called again for the recurring fault, forever.) A lock-free
 * atomic: safe in a handler, and two threads may fault at once. */
static struct sigaction old_action[2];
static atomic_int old_spent[2];

/* A fault that is not an overflow: do what the action before ours would
 * have done, had the kernel run it. */
static void chain(int sig, siginfo_t *si, void *uctx, int from_kernel) {
  int i = sig == SIGBUS;
  const struct sigaction *old = &old_action[i];
  /* SIG_DFL and SIG_IGN are values of the handler whatever the flags say
   * (SA_SIGINFO too): the kernel looks at the pointer, so do we. */
  void (*h)(int) = old->sa_handler;
  if (atomic_load(&old_spent[i]))
    h = SIG_DFL;
  if (h == SIG_DFL) {
    die_by_default(sig, si, from_kernel);
    return;
  }
  if (h == SIG_IGN) {
    /* A signal sent by kill() or raise() is ignored, as it would have
     * been. A real fault cannot be: returning would re-run the faulting
     * instruction forever. The kernel itself gives a fault that is ignored
     * (or blocked) the default action, so we do the same. */
    if (si && si->si_code <= 0)
      return;
    die_by_default(sig, si, from_kernel);
    return;
  }
  /* Run it as the kernel would have: its sa_mask blocked, and sig too
   * unless it asked for SA_NODEFER (then sig is unblocked: it may rely on
   * a nested fault reaching it, as handlers that probe memory do). The
   * mask is put back afterwards for whoever called us; on a return to the
   * kernel sigreturn restores it anyway. */
  if (old->sa_flags & SA_RESETHAND)
    atomic_store(&old_spent[i], 1);
  sigset_t saved, self;
  sigemptyset(&self);
  sigaddset(&self, sig);
  pthread_sigmask(SIG_BLOCK, &old->sa_mask, &saved);
  pthread_sigmask((old->sa_flags & SA_NODEFER) ? SIG_UNBLOCK : SIG_BLOCK,
                  &self, NULL);
  if (old->sa_flags & SA_SIGINFO)
    old->sa_sigaction(sig, si, uctx);
  else
    h(sig);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

/* The running stack, if this fault is its overflow; NULL if not (or if
 * nothing runs on a fiber or coroutine stack on this thread). uctx may be
 * NULL: then only a fault address in the guard region counts. */
static const struct fib__stack *overflowed(const siginfo_t *si,
                                           const void *uctx) {
  struct fib__stack *const *owner = fib__tl_running;
  const struct fib__stack *s = owner ? *owner : NULL;
  if (!s || !si || si->si_code <= 0)
    return NULL;
  const char *sp = uctx ? fib__ctx_fault_sp(uctx) : NULL;
  return is_overflow(s, si->si_addr, sp) ? s : NULL;
}

/* Also called as a plain function, by a handler installed after ours that
 * saved it with sigaction() and forwards the faults it does not want; si
 * and uctx are then whatever it passes (NULL from a handler without
 * SA_SIGINFO), and we may be on any stack, with any signals blocked. */
static void on_fault(int sig, siginfo_t *si, void *uctx) {
  int from_kernel = ours_is_installed(sig);
  const struct fib__stack *s = overflowed(si, uctx);
  if (s) {
    report(s, si->si_addr);
    die_by_default(sig, si, from_kernel);
    return;
  }
  chain(sig, si, uctx, from_kernel);
}

int fib_overflow_check(int sig, const void *info, const void *ucontext) {
  if (sig != SIGSEGV && sig != SIGBUS)
    return 0;
  const siginfo_t *si = info;
  const struct fib__stack *s = overflowed(si, ucontext);
  if (!s)
    return 0;
  report(s, si->si_addr);
  die_now(sig); /* the host's handler could do anything after a return */
}

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  /* Read the previous actions before ours goes in: from then on a fault on
   * another thread may chain to them. (Reading them out of the call that
   * installs ours would leave a moment where ours was in and they were not
   * yet copied out.) */
  if (sigaction(SIGSEGV, NULL, &old_action[0]) != 0 ||
      sigaction(SIGBUS, NULL, &old_action[1]) != 0 ||
      sigaction(SIGSEGV, &sa, NULL) != 0 || sigaction(SIGBUS, &sa, NULL) != 0)
    handler_error = 1;
}

/* ---- the mode (fib_overflow_signals) */

/* What was asked for (FIB_SIGNALS_INSTALL or FIB_SIGNALS_NONE), plus FIXED
 * once the first setup in the process has acted on it. */
enum { FIXED = 1 << 4 };
static atomic_int signal_mode; /* FIB_SIGNALS_INSTALL until asked */

int fib_overflow_signals(int mode) {
  if (mode != FIB_SIGNALS_INSTALL && mode != FIB_SIGNALS_NONE)
    return FIB_EINVAL;
  int cur = atomic_load(&signal_mode);
  /* A compare-and-swap, so that a call racing with the first setup on
   * another thread either lands before it (and is obeyed) or sees the
   * mode fixed. */
  while (!(cur & FIXED))
    if (atomic_compare_exchange_weak(&signal_mode, &cur, mode))
      return 0;
  return (cur & ~FIXED) == mode ? 0 : FIB_EBUSY;
}

/* Once per process, at the first setup: fix the mode, and act on it. */
static void fix_mode(void) {
  if (atomic_fetch_or(&signal_mode, FIXED) == FIB_SIGNALS_INSTALL)
    install_handler();
}

static int signals_off(void) {
  return atomic_load_explicit(&signal_mode, memory_order_relaxed) ==
         (FIXED | FIB_SIGNALS_NONE);
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
  pthread_once(&handler_once, fix_mode);
  if (handler_error)
    return FIB_ENOMEM;
  if (signals_off()) { /* the host owns the signals: nothing to set up */
    fib__tl_overflow_ready = 1;
    return 0;
  }
  int err = install_altstack();
  if (err == 0)
    fib__tl_overflow_ready = 1;
  return err;
}
