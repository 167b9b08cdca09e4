/* SPDX-License-Identifier: MIT */
/*
 * coro.h -- the coroutine layer's internals, for the scheduler above it.
 *
 * A coroutine is a context on a stack of its own, resumed and suspended
 * asymmetrically: a yield always returns to whoever resumed it. Its record
 * lives at the top of its stack, under the stack's descriptor, so creating
 * one allocates nothing when the stack pool has a stack.
 */
#ifndef FIB__CORO_H
#define FIB__CORO_H

#include "fibers.h"
#include "sanitize.h"
#include "overflow.h"
#include "coro_layout.h"
#include "arch/context.h"

struct fib_coro {
  struct fib__stack *stack; /* the stack it runs on (owns it); first, so a
                               coroutine is the owner record the overflow
                               handler reads (fib__tl_running, stack.h) */
  void *sp;                 /* saved context; valid while SUSPENDED */
  void *resumer_sp;         /* saved context of the resumer; valid while
                               RUNNING or NORMAL */
  struct fib_coro *resumer; /* who resumed it; NULL: the thread's stack */
  /* The layer above's record (a fiber) if this is a fiber's own
   * coroutine, else NULL. Such a coroutine is the scheduler's: the public
   * coroutine calls refuse it (FIB_EPERM), and fib_coro_current() does not
   * hand it out. Kept in the cache line a yield reads anyway. */
  void *owner;
  void *arg;
  /* SUSPENDED, RUNNING or DEAD. RUNNING stays while it waits on a
   * coroutine it resumed: NORMAL is RUNNING and not the thread's current
   * coroutine (fib_coro_status), so a resume and a yield write one status,
   * their own, and never the resumer's. */
  fib_coro_state status;
  union {
    struct {
      /* How switches into and out of it go (FIB__CORO_NOFP, _COMPACT,
       * _RESUMER_COMPACT below): the assembly variant, and whether the
       * compact path is needed. The scheduler transfers directly only
       * between fibers whose values are equal (sched.c), so a transfer is
       * never between a compact fiber and one that is not. */
      uint16_t shared_fp;
      /* What else sends a switch off the hot path (FIB__CORO_OWNED,
       * _CANARY below): kept apart from shared_fp, which the scheduler
       * compares. */
      uint16_t slow;
    };
    /* Both at once (FIB__CORO_KIND below): one load and one test of a
     * word no switch writes decide whether a switch takes the hot path.
     * Written whole, never by halves: a 32-bit load of what two 16-bit
     * stores still in flight wrote waits for them to reach the cache
     * (it made create ~20 % slower here). */
    uint32_t kind;
  };
  /* FIB_GUARD_NONE: the stack's canary word, checked at every switch away
   * (coro.c); NULL on a guarded stack. Kept here, not reached through
   * `stack`, so a guarded switch pays one load from this record, which the
   * switch touches anyway. */
  const uint64_t *canary;
  /* Values are delivered by the side that switches, before it switches,
   * so the side that wakes up has nothing left to do (see coro.c): */
  void **out;  /* where the resumer wants the yielded/returned value */
  void **in;   /* where the suspended coroutine wants the next resume's
                  value; &first before the first resume */
  /* The first resume's value, for the entry; once the entry has read
   * it, the sink: `in` and `out` point here when the caller wants no
   * value (NULL), so a switch stores without a test, never NULL. */
  void *first;
  /* Below the fields a switch touches, which it keeps in two cache lines
   * (the record sits 192 bytes below a page end); set once, never read by
   * a switch. */
  fib_coro_fn fn;
#if FIB__SAN_HOOKS
  /* Sanitizer state (sanitize.h); not in a normal build, where every
   * coroutine record is 16 bytes smaller: */
  void *san_fake;  /* ASan: its fake stack while it is switched out */
  void *san_fiber; /* TSan: its TSan fiber, from create to free */
#endif
};

_Static_assert(offsetof(struct fib_coro, stack) == 0, "stack first");

/* fib_coro.shared_fp: */
enum {
  /* switches skip the FP control state (FIB_SHARED_FP) */
  FIB__CORO_NOFP = 1,
  /* FIB_COMPACT: it runs on its thread's shared stack, and its frames are
   * copied out when it is suspended and back when it resumes (coro.c) */
  FIB__CORO_COMPACT = 2,
  /* a plain coroutine whose resumer is compact: its yield or return must
   * put the resumer's frames back (set while such a resume lasts) */
  FIB__CORO_RESUMER_COMPACT = 4
};

/* fib_coro.slow: */
enum {
  /* owner is set: a fiber's own, refused by the public calls */
  FIB__CORO_OWNED = 1,
  /* canary is set (FIB_GUARD_NONE): checked at every switch away */
  FIB__CORO_CANARY = 2
};

/* A shared_fp bit or a slow bit as a bit of fib_coro.kind. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fib_coro.kind puts shared_fp in its low half: little-endian only"
#endif
#define FIB__CORO_KIND(shared_fp, slow)                                     \
  ((uint32_t)(shared_fp) | (uint32_t)(slow) << 16)

/* What the assembly hot paths assume (coro_layout.h). */
_Static_assert(offsetof(fib_coro, sp) == FIB__CORO_OFF_SP, "sp");
_Static_assert(offsetof(fib_coro, resumer_sp) == FIB__CORO_OFF_RESUMER_SP,
               "resumer_sp");
_Static_assert(offsetof(fib_coro, resumer) == FIB__CORO_OFF_RESUMER,
               "resumer");
_Static_assert(offsetof(fib_coro, status) == FIB__CORO_OFF_STATUS, "status");
_Static_assert(sizeof(fib_coro_state) == 4, "status: a 32-bit word");
_Static_assert(offsetof(fib_coro, kind) == FIB__CORO_OFF_KIND, "kind");
_Static_assert(offsetof(fib_coro, out) == FIB__CORO_OFF_OUT, "out");
_Static_assert(offsetof(fib_coro, in) == FIB__CORO_OFF_IN, "in");
_Static_assert(offsetof(fib_coro, first) == FIB__CORO_OFF_FIRST, "first");
_Static_assert(FIB_CORO_SUSPENDED == 0 && FIB_CORO_RUNNING == 1,
               "the statuses the hot paths store");
_Static_assert(FIB__CORO_RESUME_SLOW ==
                   ~FIB__CORO_KIND(FIB__CORO_NOFP, FIB__CORO_CANARY),
               "resume mask");
_Static_assert(FIB__CORO_RESUMER_SLOW ==
                   FIB__CORO_KIND(FIB__CORO_COMPACT, FIB__CORO_CANARY),
               "resumer mask");
_Static_assert(FIB__CORO_YIELD_SLOW == ~FIB__CORO_KIND(FIB__CORO_NOFP, 0),
               "yield mask");
_Static_assert(FIB__CORO_KIND_NOFP == FIB__CORO_KIND(FIB__CORO_NOFP, 0),
               "nofp bit");

/* Set when the layer above makes co its own record's coroutine. */
static inline void fib__coro_set_owner_record(fib_coro *co, void *owner) {
  co->owner = owner;
  co->kind |= FIB__CORO_KIND(0, FIB__CORO_OWNED);
}

/* The coroutine running on this thread, NULL on the thread's own stack
 * (see the TLS rule in tls.h). It lives in the stack layer's
 * fib__tl_running, which the overflow handler reads: one store per switch
 * serves both. */
static inline fib_coro *fib__coro_self(void) {
  return (fib_coro *)fib__tl_running;
}

static inline void fib__coro_set_self(fib_coro *co) {
  fib__tl_running = co ? &co->stack : NULL;
}

/* Create a suspended coroutine on a stack of `usable` bytes (already
 * rounded) guarded per `mode`; flags: FIB_SHARED_FP, FIB_COMPACT or 0.
 * 0, FIB_EINVAL or FIB_ENOMEM. */
int fib__coro_create(fib_coro **out, fib_coro_fn fn, void *arg, size_t usable,
                     fib_guard_mode mode, unsigned flags);

/* The same, not compact, with room for the layer above's record of
 * `rec_size` bytes on the stack too, just below the coroutine record (the
 * first frame starts below it): *rec gets its address, 16-byte aligned.
 * The record lives and dies with the stack (fib__coro_free), for an owner
 * whose record is not needed once the coroutine is done: no allocation of
 * its own, and it shares the stack's top page. */
int fib__coro_create_rec(fib_coro **out, fib_coro_fn fn, void *arg,
                         size_t usable, fib_guard_mode mode, unsigned flags,
                         size_t rec_size, void **rec);

/*
 * Symmetric transfer, for the scheduler: suspend the running coroutine
 * `from` and run `to` in its place. `to` takes over from's resumer, so a
 * later yield in `to` returns where a yield in `from` would have. Both must
 * use the same FP variant (shared_fp); the caller checks. `to`'s own
 * switch returns `value` (a plain coroutine on a stack of its own; a
 * compact one gets 0). Returns, in turn, the value of the switch that
 * resumes or transfers back to `from`: a scheduler whose every switch
 * into a context hands over what that context waits for can end a wait
 * with the switch as its tail call, and the woken side has nothing left
 * to do but return it.
 */
int fib__coro_transfer(fib_coro *from, fib_coro *to, int value);

/* Tell the sanitizers about a coroutine before it first runs: under TSan,
 * make its TSan fiber, named `name` (fibers: at spawn, so the cost is not
 * paid at its first switch). Plain coroutines get theirs at their first
 * switch in (coro.c). No-op without TSan. */
static inline void fib__coro_announce(fib_coro *co, const char *name) {
#if FIB__TSAN
  if (!co->san_fiber) {
    co->san_fiber = __tsan_create_fiber(0);
    __tsan_set_fiber_name(co->san_fiber, name);
  }
#endif
  (void)co;
  (void)name;
}

/* The scheduler's resume and yield: fib_coro_resume / fib_coro_yield
 * without the check that keeps a fiber's own coroutine out of reach. The
 * resume passes no values through `in` and `out`; co's switch returns
 * `value`, as in fib__coro_transfer. */
int fib__coro_resume(fib_coro *co, int value);
int fib__coro_yield(void *value, void **in);

/* Who runs on co's stack, for the overflow report (struct fib__stack's
 * owner fields): *id, `kind` and `name`, which are fields of co->owner's
 * record (set first) and live as long as co. A compact coroutine keeps
 * where they are in that record and names itself on its shared stack each
 * time it is switched in, as a "fiber" (`kind` is for the others). */
void fib__coro_set_owner_compact(fib_coro *co, const uint64_t *id,
                                 const char *name);
static inline void fib__coro_set_owner(fib_coro *co, const uint64_t *id,
                                       const char *kind, const char *name) {
  if (__builtin_expect(co->shared_fp & FIB__CORO_COMPACT, 0)) {
    fib__coro_set_owner_compact(co, id, name);
    return;
  }
  co->stack->owner_id = *id;
  co->stack->owner_kind = kind;
  co->stack->owner_name = name;
}

/* Give the stack (and the record on it) back. co must not be running. */
void fib__coro_free(fib_coro *co);

/* The room fib__coro_renew leaves between the new record and its first
 * frame, for the layer above (as fib__coro_create_rec's rec_size; the
 * scheduler keeps its fibers' tail nodes there). */
#define FIB__CORO_RENEW_ROOM 64

/* The first function of every coroutine: it runs fn and finishes. */
void fib__coro_entry(void *unused);

/* Where a coroutine record sits on its own stack: this far below the
 * stack's descriptor, as when every build's record carried the sanitizer
 * words (112 bytes). Placing the smaller record 96 bytes below made a
 * yield between two fibers ~1 ns (~8 %) slower here: the layout the
 * switch's cache lines were tuned for stays. */
#define FIB__CORO_SLOT 112
_Static_assert(sizeof(fib_coro) <= FIB__CORO_SLOT, "the record fits its slot");

/* A coroutine on the stack s, just taken, with `rec_size` bytes for the
 * layer above between its record and its first frame (0: none). */
static inline __attribute__((always_inline)) void
fib__coro_init(fib_coro **out, struct fib__stack *s, fib_coro_fn fn,
               void *arg, unsigned flags, size_t rec_size, void **rec) {
  fib_coro *co = (fib_coro *)(fib__stack_top(s) - FIB__CORO_SLOT);
  char *first = (char *)co - ((rec_size + 15) & ~(size_t)15);
  if (rec)
    *rec = first;
  co->sp = fib__ctx_make_inline(first, fib__coro_entry);
  co->resumer_sp = NULL;
  co->resumer = NULL;
  co->stack = s;
  co->fn = fn;
  co->arg = arg;
  co->status = FIB_CORO_SUSPENDED;
  co->canary = fib__stack_canary(s);
  co->kind = FIB__CORO_KIND((flags & FIB_SHARED_FP) ? FIB__CORO_NOFP : 0,
                            co->canary ? FIB__CORO_CANARY : 0);
  co->owner = NULL;
  co->first = NULL;
  co->out = co->in = &co->first; /* the sink */
#if FIB__SAN_HOOKS
  co->san_fake = NULL;
  co->san_fiber = NULL; /* TSan: see fib__coro_announce */
#endif
  *out = co;
}

/* fib__coro_create (flags: FIB_SHARED_FP or 0) on the stack of `dead`, a
 * coroutine that has finished and that its owner would free now, if that
 * stack is of the class asked for (usable, mode) and `dead` is not
 * compact: the new coroutine, and `dead` is gone (its stack is the new
 * one's, not pooled and taken again). NULL: not of that class, nothing
 * done (free it). Inline, and a leaf: spawn takes it after every join.
 * The stack's owner fields are the last owner's (fib__stack_renew): the
 * caller names the new one. */
static inline __attribute__((always_inline)) fib_coro *
fib__coro_renew(fib_coro *dead, fib_coro_fn fn, void *arg, size_t usable,
                fib_guard_mode mode, unsigned flags) {
  if (dead->shared_fp & FIB__CORO_COMPACT)
    return NULL;
  /* Read first: dead's record lies on the stack, which the renewal hands
   * out as fresh (valgrind: undefined). */
  struct fib__stack *s = dead->stack;
#if FIB__TSAN
  void *san_fiber = dead->san_fiber;
#endif
  if (fib__stack_renew(s, usable, mode))
    return NULL;
#if FIB__TSAN
  if (san_fiber) /* as fib__coro_free */
    __tsan_destroy_fiber(san_fiber);
#endif
  fib_coro *co;
  fib__coro_init(&co, s, fn, arg, flags, FIB__CORO_RENEW_ROOM, NULL);
  return co;
}

/* Finish the running coroutine `from` and run `to` in its place, as
 * fib__coro_transfer does, `to`'s switch returning `value` (from's value,
 * if its resumer wants one, is NULL). For the scheduler: a finished fiber
 * hands over directly. */
_Noreturn void fib__coro_finish_into(fib_coro *from, fib_coro *to,
                                     int value);

/* Finish the running coroutine as if its function returned `value`.
 * The caller has checked that a coroutine is running. */
_Noreturn void fib__coro_exit(void *value);

#endif
