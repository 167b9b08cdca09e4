/* coro.c -- stackful asymmetric coroutines on top of the context switch. */
#include "coro.h"
#include "arch/context.h"
#include "sys.h"

/* Read afresh after every switch, never cached across one: see tls.h. */
FIB_TLS fib_coro *fib__tl_current_coro;

fib_coro *fib_coro_current(void) { return fib__tl_current_coro; }

/*
 * Every switch into or out of a coroutine goes through here, so both ends
 * of it use the same variant (and the sanitizer hooks have one home).
 *
 * The protocol: the side that switches does all the bookkeeping for the
 * side it wakes (current coroutine, statuses, the value it is waiting for)
 * and then switches as its very last act, a tail call. The side that wakes
 * up returns straight to its caller with 0. See fib__ctx_switch_int.
 */
static inline int coro_switch(const fib_coro *co, void **save_sp,
                              void *load_sp) {
  return co->shared_fp ? fib__ctx_switch_nofp_int(save_sp, load_sp, NULL)
                       : fib__ctx_switch_int(save_sp, load_sp, NULL);
}

/* Make `co` the running coroutine of this thread. */
static inline void enter(fib_coro *co) {
  co->status = FIB_CORO_RUNNING;
  fib__tl_current_coro = co;
  fib__stack_set_running(co->stack);
}

/* `co` stops running: give the thread back to its resumer. */
static inline void leave(fib_coro *co, void *value) {
  fib_coro *prev = co->resumer;
  if (co->out)
    *co->out = value;
  fib__tl_current_coro = prev;
  if (prev) {
    prev->status = FIB_CORO_RUNNING;
    fib__stack_set_running(prev->stack);
  } else {
    fib__stack_set_running(NULL);
  }
}

static void coro_entry(void *unused) {
  (void)unused;
  fib_coro *co = fib__tl_current_coro;
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
  co->owner = NULL;
  co->out = NULL;
  co->first = NULL;
  co->in = &co->first;
  *out = co;
  return 0;
}

void fib__coro_free(fib_coro *co) { fib__stack_put(co->stack); }

int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                    const fib_attr *attr) {
  if (!out || !fn)
    return FIB_EINVAL;
  static const fib_attr no_attr;
  if (!attr)
    attr = &no_attr;
  size_t usable = fib__stack_round_size(attr->stack_size, FIB_STACK_DEFAULT);
  if (!usable || (attr->flags & ~FIB_SHARED_FP))
    return FIB_EINVAL;
  return fib__coro_create(out, fn, arg, usable, attr->guard, attr->flags);
}

int fib_coro_resume(fib_coro *co, void *in, void **out) {
  if (!co)
    return FIB_EINVAL;
  if (co->status != FIB_CORO_SUSPENDED)
    return co->status == FIB_CORO_DEAD ? FIB_EINVAL : FIB_EBUSY;

  fib_coro *prev = fib__tl_current_coro;
  if (!prev) /* a coroutine may be resumed on a thread that never made one */
    (void)fib__overflow_prepare_thread();
  else
    prev->status = FIB_CORO_NORMAL;
  co->resumer = prev;
  co->out = out;
  if (co->in)
    *co->in = in;
  enter(co);
  /* Returns 0 here when co yields or finishes; leave() did the rest. */
  return coro_switch(co, &co->resumer_sp, co->sp);
}

int fib__coro_transfer(fib_coro *from, fib_coro *to) {
  to->resumer = from->resumer;
  to->resumer_sp = from->resumer_sp;
  to->out = from->out;
  if (to->in)
    *to->in = NULL;
  from->in = NULL;
  from->status = FIB_CORO_SUSPENDED;
  enter(to);
  /* Returns 0 when something resumes or transfers back to `from`. */
  return coro_switch(to, &from->sp, to->sp);
}

int fib_coro_yield(void *value, void **in) {
  fib_coro *co = fib__tl_current_coro;
  if (!co)
    return FIB_EPERM;
  co->in = in;
  co->status = FIB_CORO_SUSPENDED;
  leave(co, value);
  /* Returns 0 here when resumed; the resumer stored *in. */
  return coro_switch(co, &co->sp, co->resumer_sp);
}

_Noreturn void fib__coro_exit(void *value) {
  fib_coro *co = fib__tl_current_coro;
  co->in = NULL;
  co->status = FIB_CORO_DEAD;
  leave(co, value);
  (void)coro_switch(co, &co->sp, co->resumer_sp);
  fib__fatal("a finished coroutine was switched to"); /* cannot happen */
}

int fib_coro_status(const fib_coro *co) {
  return co ? (int)co->status : FIB_EINVAL;
}

int fib_coro_destroy(fib_coro *co) {
  if (!co)
    return FIB_EINVAL;
  if (co->status == FIB_CORO_RUNNING || co->status == FIB_CORO_NORMAL)
    return FIB_EBUSY;
  fib__coro_free(co);
  return 0;
}
