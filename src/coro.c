/* SPDX-License-Identifier: MIT */
/* coro.c -- stackful asymmetric coroutines on top of the context switch. */
#include "coro.h"
#include "arch/context.h"
#include "sanitize.h"
#include "sys.h"

fib_coro *fib_coro_current(void) {
  fib_coro *co = fib__coro_self();
  return co && !co->owner ? co : NULL; /* a fiber's own is not for users */
}

/* ---- sanitizer hooks (sanitize.h): compiled in only under ASan or TSan */

#if FIB__ASAN
/* The thread's own stack, learnt from ASan on the thread's first switch
 * into a coroutine (finish_switch_fiber reports the stack it came from),
 * so that switches back to the thread can name it. */
static FIB__TLS const void *tl_thread_stack_lo;
static FIB__TLS size_t tl_thread_stack_size;
static FIB__TLS void *tl_thread_fake;  /* the thread's fake stack, saved */
static FIB__TLS int tl_leaving_thread; /* this switch left the thread's stack */
#endif
#if FIB__TSAN
static FIB__TLS void *tl_thread_tsan; /* the thread's own TSan fiber */
#endif

#if FIB__SAN_HOOKS
/* The hooks and the switch wrappers below are always inlined: under TSan
 * an out-of-line san_start would enter on one fiber's shadow stack and
 * exit on the other's (it switches TSan's fiber), and a finished fiber's
 * last switch would leave one frame too few on the fiber it goes to, per
 * finished fiber, until that shadow stack underflows. */
#define FIB__HOOK static inline __attribute__((always_inline))

/* Just before the switch from `from` to `to` (NULL: the thread's own
 * context). `final`: `from` has finished and never runs again. */
FIB__HOOK void san_start(fib_coro *from, fib_coro *to, int final) {
#if FIB__ASAN
  tl_leaving_thread = from == NULL;
  void **fake = final ? NULL : from ? &from->san_fake : &tl_thread_fake;
  if (to) /* the usable stack: from its lowest byte up to the mapping end */
    __sanitizer_start_switch_fiber(fake, to->stack->lo,
                                   (size_t)(fib__stack_end(to->stack) -
                                            to->stack->lo));
  else
    __sanitizer_start_switch_fiber(fake, tl_thread_stack_lo,
                                   tl_thread_stack_size);
#endif
#if FIB__TSAN
  if (!from)
    tl_thread_tsan = __tsan_get_current_fiber();
  if (to && !to->san_fiber) /* a plain coroutine's first switch in: TSan
                               fibers are threads to TSan (at most 8128
                               at once), and many coroutines never run */
    fib__coro_announce(to, to->stack->owner_kind);
  __tsan_switch_to_fiber(to ? to->san_fiber : tl_thread_tsan, 0);
#endif
  (void)from;
  (void)to;
  (void)final;
}

/* First thing after a switch into `self` (NULL: the thread's context). */
FIB__HOOK void san_finish(fib_coro *self) {
#if FIB__ASAN
  const void *lo;
  size_t size;
  __sanitizer_finish_switch_fiber(self ? self->san_fake : tl_thread_fake, &lo,
                                  &size);
  if (tl_leaving_thread) {
    tl_thread_stack_lo = lo;
    tl_thread_stack_size = size;
  }
#endif
  (void)self;
}
#endif

/*
 * Every switch into or out of a coroutine goes through here (except the
 * first entry into a new one, which starts in coro_entry, and the last
 * exit from a finished one, coro_jump), so both ends of it use the same
 * variant and the sanitizer hooks have one home.
 *
 * The protocol: the side that switches does all the bookkeeping for the
 * side it wakes (current coroutine, statuses, the value it is waiting for)
 * and then switches as its very last act, a tail call. The side that wakes
 * up returns straight to its caller with 0. See fib__ctx_switch_int.
 *
 * Under a sanitizer the switch is bracketed by the hooks instead (start,
 * switch, finish: no tail call then); `from` and `to` are for the hooks,
 * `fp` picks the variant.
 */
static inline __attribute__((always_inline)) int
coro_switch(const fib_coro *fp, fib_coro *from, fib_coro *to, void **save_sp,
            void *load_sp) {
#if FIB__SAN_HOOKS
  san_start(from, to, 0);
  if (fp->shared_fp)
    (void)fib__ctx_switch_nofp(save_sp, load_sp, NULL);
  else
    (void)fib__ctx_switch(save_sp, load_sp, NULL);
  san_finish(from);
  return 0;
#else
  (void)from;
  (void)to;
  return fp->shared_fp ? fib__ctx_switch_nofp_int(save_sp, load_sp, NULL)
                       : fib__ctx_switch_int(save_sp, load_sp, NULL);
#endif
}

/* The last switch out of `from`, which has finished: nothing of it is
 * saved. `fp` picks the variant, as in coro_switch. */
_Noreturn static inline __attribute__((always_inline)) void
coro_jump(const fib_coro *fp, fib_coro *from, fib_coro *to, void *load_sp) {
#if FIB__SAN_HOOKS
  san_start(from, to, 1);
#endif
  (void)from;
  (void)to;
  if (fp->shared_fp)
    fib__ctx_jump_nofp(load_sp, NULL);
  fib__ctx_jump(load_sp, NULL);
}

/* Every switch away from a running coroutine (yield, transfer, exit, and
 * resuming another) first checks its FIB_GUARD_NONE canary: a load and a
 * branch not taken on a guarded stack; the report is out of line. */
static inline void check_canary(const fib_coro *co) {
  if (__builtin_expect(co->canary != NULL, 0) &&
      __builtin_expect(*co->canary != FIB__STACK_CANARY, 0))
    fib__stack_canary_fail(co->stack);
}

/* Make `co` the running coroutine of this thread. */
static inline void enter(fib_coro *co) {
  co->status = FIB_CORO_RUNNING;
  fib__coro_set_self(co);
}

/* `co` stops running: give the thread back to its resumer. */
static inline void leave(fib_coro *co, void *value) {
  fib_coro *prev = co->resumer;
  if (co->out)
    *co->out = value;
  fib__coro_set_self(prev);
  if (prev)
    prev->status = FIB_CORO_RUNNING;
}

static void coro_entry(void *unused) {
  (void)unused;
  fib_coro *co = fib__coro_self();
#if FIB__SAN_HOOKS
  san_finish(co); /* a new context: no fake stack to restore yet */
#endif
  void *result = co->fn(co->arg, co->first);
  fib__coro_exit(result);
}

int fib__coro_create(fib_coro **out, fib_coro_fn fn, void *arg, size_t usable,
                     fib_guard_mode mode, unsigned flags) {
  /* The handler that reports overflows must be in place before any code
   * runs on a guarded stack; this is a flag check after the first time. */
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  struct fib__stack *s;
  err = fib__stack_get(&s, usable, mode);
  if (err)
    return err;

  fib_coro *co = (fib_coro *)(fib__stack_top(s) - ((sizeof *co + 15) & ~15u));
  co->sp = fib__ctx_make(co, coro_entry);
  co->resumer_sp = NULL;
  co->resumer = NULL;
  co->stack = s;
  co->fn = fn;
  co->arg = arg;
  co->status = FIB_CORO_SUSPENDED;
  co->shared_fp = (flags & FIB_SHARED_FP) != 0;
  co->canary = fib__stack_canary(s);
  co->owner = NULL;
  co->out = NULL;
  co->first = NULL;
  co->in = &co->first;
  co->san_fake = NULL;
  co->san_fiber = NULL; /* TSan: see fib__coro_announce */
  *out = co;
  return 0;
}

void fib__coro_free(fib_coro *co) {
#if FIB__TSAN
  if (co->san_fiber) /* it has been switched away from for good */
    __tsan_destroy_fiber(co->san_fiber);
#endif
  fib__stack_put(co->stack);
}

int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                    const fib_attr *attr) {
  if (!out || !fn)
    return FIB_EINVAL;
  static const fib_attr no_attr;
  if (!attr)
    attr = &no_attr;
  size_t usable =
      fib__stack_check(attr->stack_size, FIB_STACK_DEFAULT, attr->guard);
  if (!usable || (attr->flags & ~FIB_SHARED_FP) || attr->worker ||
      !fib__all_zero(attr->reserved, sizeof attr->reserved / sizeof(uintptr_t)))
    return FIB_EINVAL;
  return fib__coro_create(out, fn, arg, usable, attr->guard, attr->flags);
}

/* Run `co` (suspended) on behalf of `prev`, the running coroutine or NULL. */
static inline int resume(fib_coro *co, fib_coro *prev, void *in, void **out) {
  co->resumer = prev;
  co->out = out;
  if (co->in)
    *co->in = in;
  enter(co);
  /* Returns 0 here when co yields or finishes; leave() did the rest. */
  return coro_switch(co, prev, co, &co->resumer_sp, co->sp);
}

/* The first resume on a thread that never made a coroutine: put the
 * overflow handler's stack in place (best effort; a failure here only
 * means an overflow there would not be named). Out of line, so that the
 * hot path saves no registers around the call. */
__attribute__((noinline, cold)) static int
resume_on_new_thread(fib_coro *co, void *in, void **out) {
  (void)fib__overflow_setup_thread();
  return resume(co, NULL, in, out);
}

/* Resume co after the caller's checks; both resumes inline it. */
static inline __attribute__((always_inline)) int
resume_suspended(fib_coro *co, void *in, void **out) {
  if (co->status != FIB_CORO_SUSPENDED)
    return co->status == FIB_CORO_DEAD ? FIB_EINVAL : FIB_EBUSY;

  fib_coro *prev = fib__coro_self();
  if (prev) {
    check_canary(prev); /* resuming another switches away from it */
    prev->status = FIB_CORO_NORMAL;
  } else if (!fib__tl_overflow_ready) {
    return resume_on_new_thread(co, in, out);
  }
  return resume(co, prev, in, out);
}

int fib_coro_resume(fib_coro *co, void *in, void **out) {
  if (!co)
    return FIB_EINVAL;
  if (co->owner)
    return FIB_EPERM; /* a fiber's own: only its scheduler resumes it */
  return resume_suspended(co, in, out);
}

int fib__coro_resume(fib_coro *co, void *in, void **out) {
  return resume_suspended(co, in, out);
}

/* `to` runs in place of `from`: it takes over from's resumer, and where
 * from's value would have gone. `to` gets no value (NULL). */
static inline void take_over(fib_coro *from, fib_coro *to) {
  to->resumer = from->resumer;
  to->resumer_sp = from->resumer_sp;
  to->out = from->out;
  if (to->in)
    *to->in = NULL;
  from->in = NULL;
}

int fib__coro_transfer(fib_coro *from, fib_coro *to) {
  check_canary(from);
  take_over(from, to);
  from->status = FIB_CORO_SUSPENDED;
  enter(to);
  /* Returns 0 when something resumes or transfers back to `from`. */
  return coro_switch(to, from, to, &from->sp, to->sp);
}

_Noreturn void fib__coro_finish_into(fib_coro *from, fib_coro *to) {
  check_canary(from);
  take_over(from, to);
  from->status = FIB_CORO_DEAD;
  enter(to);
  coro_jump(to, from, to, to->sp);
}

/* Suspend the running co; both yields inline it. */
static inline __attribute__((always_inline)) int
yield_running(fib_coro *co, void *value, void **in) {
  check_canary(co);
  co->in = in;
  co->status = FIB_CORO_SUSPENDED;
  leave(co, value);
  /* Returns 0 here when resumed; the resumer stored *in. */
  return coro_switch(co, co, co->resumer, &co->sp, co->resumer_sp);
}

int fib_coro_yield(void *value, void **in) {
  fib_coro *co = fib__coro_self();
  /* Outside any coroutine, or in a fiber's own body: a yield there would
   * go back to the scheduler loop and strand the fiber (fib_yield is the
   * fiber's way to give way). */
  if (!co || co->owner)
    return FIB_EPERM;
  return yield_running(co, value, in);
}

int fib__coro_yield(void *value, void **in) {
  return yield_running(fib__coro_self(), value, in);
}

_Noreturn void fib__coro_exit(void *value) {
  fib_coro *co = fib__coro_self();
  check_canary(co);
  co->in = NULL;
  co->status = FIB_CORO_DEAD;
  leave(co, value);
  coro_jump(co, co, co->resumer, co->resumer_sp);
}

int fib_coro_status(const fib_coro *co) {
  return co ? (int)co->status : FIB_EINVAL;
}

int fib_coro_destroy(fib_coro *co) {
  if (!co)
    return FIB_EINVAL;
  if (co->owner)
    return FIB_EPERM; /* a fiber's own: freed with the fiber */
  if (co->status == FIB_CORO_RUNNING || co->status == FIB_CORO_NORMAL)
    return FIB_EBUSY;
  fib__coro_free(co);
  return 0;
}

/* ---- stack information */

int fib_coro_stack(const fib_coro *co, fib_stack_info *out) {
  if (!co || !out || co->status == FIB_CORO_DEAD)
    return FIB_EINVAL;
  fib__stack_describe(co->stack, out);
  return 0;
}

int fib_self_stack(fib_stack_info *out) {
  if (!out)
    return FIB_EINVAL;
  const fib_coro *co = fib__coro_self();
  if (!co)
    return FIB_EPERM;
  fib__stack_describe(co->stack, out);
  return 0;
}
