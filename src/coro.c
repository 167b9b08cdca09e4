/* coro.c -- stackful asymmetric coroutines on top of the context switch. */
#include "coro.h"
#include "arch/context.h"
#include "sys.h"

/* The coroutine running on this thread. The thread-local pointer is read
 * afresh after every switch (never cached across one): see the TLS rule in
 * docs/internals.md. */
static _Thread_local fib_coro *tl_current;

fib_coro *fib_coro_current(void) { return tl_current; }

static void coro_entry(void *first) {
  fib_coro *co = tl_current;
  void *result = co->fn(co->arg, first);
  fib__coro_exit(result);
}

int fib__coro_create(fib_coro **out, fib_coro_fn fn, void *arg, size_t usable,
                     fib_guard_mode mode) {
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
  co->owner = NULL;
  *out = co;
  return 0;
}

void fib__coro_free(fib_coro *co) { fib__stack_put(co->stack); }

int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                    const fib_attr *attr) {
  if (!out || !fn)
    return FIB_EINVAL;
  size_t usable = fib__stack_round_size(attr ? attr->stack_size : 0,
                                        FIB_STACK_DEFAULT);
  if (!usable)
    return FIB_EINVAL;
  return fib__coro_create(out, fn, arg, usable,
                          attr ? attr->guard : FIB_GUARD_AUTO);
}

int fib_coro_resume(fib_coro *co, void *in, void **out) {
  if (!co)
    return FIB_EINVAL;
  if (co->status != FIB_CORO_SUSPENDED)
    return co->status == FIB_CORO_DEAD ? FIB_EINVAL : FIB_EBUSY;

  fib_coro *prev = tl_current;
  if (!prev) /* a coroutine may be resumed on a thread that never made one */
    (void)fib__overflow_prepare_thread();
  else
    prev->status = FIB_CORO_NORMAL;
  co->resumer = prev;
  co->status = FIB_CORO_RUNNING;
  tl_current = co;
  fib__stack_set_running(co->stack);

  void *value = fib__ctx_switch(&co->resumer_sp, co->sp, in);

  /* Back: co yielded or finished (and set its own status). */
  tl_current = prev;
  if (prev) {
    prev->status = FIB_CORO_RUNNING;
    fib__stack_set_running(prev->stack);
  } else {
    fib__stack_set_running(NULL);
  }
  if (out)
    *out = value;
  return 0;
}

int fib_coro_yield(void *value, void **in) {
  fib_coro *co = tl_current;
  if (!co)
    return FIB_EPERM;
  co->status = FIB_CORO_SUSPENDED;
  void *resumed_with = fib__ctx_switch(&co->sp, co->resumer_sp, value);
  /* The resumer has made us current and RUNNING again. */
  if (in)
    *in = resumed_with;
  return 0;
}

_Noreturn void fib__coro_exit(void *value) {
  fib_coro *co = tl_current;
  co->status = FIB_CORO_DEAD;
  fib__ctx_switch(&co->sp, co->resumer_sp, value);
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
