/* SPDX-License-Identifier: MIT */
/* coro.c -- stackful asymmetric coroutines on top of the context switch. */
#include "coro.h"
#include "arch/context.h"
#include "sanitize.h"
#include "sys.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#if FIB__VALGRIND
#include <valgrind/memcheck.h>
#endif

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

#if FIB__ASAN
/* The switch that just ended left this thread's own stack (lo, size): note
 * them, for the switches back to it. Out of line: it runs after the
 * switch, in a fiber that may have moved to another thread since the
 * caller last computed a thread-local address (the TLS rule). */
__attribute__((noinline)) static void san_note_thread_stack(const void *lo,
                                                            size_t size) {
  if (tl_leaving_thread) {
    tl_thread_stack_lo = lo;
    tl_thread_stack_size = size;
  }
  __asm__ volatile("");
}
#endif

/* First thing after a switch into `self` (NULL: the thread's context). */
FIB__HOOK void san_finish(fib_coro *self) {
#if FIB__ASAN
  const void *lo;
  size_t size;
  /* tl_thread_fake only for the thread's own context, which never moves */
  __sanitizer_finish_switch_fiber(self ? self->san_fake : tl_thread_fake, &lo,
                                  &size);
  san_note_thread_stack(lo, size);
#endif
  (void)self;
}
#endif

/* ---- compact coroutines (FIB_COMPACT)
 *
 * A compact coroutine has no stack of its own. It runs on a stack its
 * thread shares with every compact coroutine of the same class (usable
 * size, guard mode): an ordinary guarded stack from the stack layer. Its
 * record is on the heap, and while it is suspended its live frames, from
 * its saved stack pointer up to the shared stack's top, are kept in a
 * heap buffer of their size; they go back to the same addresses before it
 * runs again, so pointers within its own frames stay right. (libaco's
 * copying "shared stack" is the model; this one saves eagerly, on every
 * switch out, so the shared stack holds nobody's frames but the running
 * one's, and there is no owner to evict later.)
 *
 * Frames can be copied out only after the switch has saved the context
 * onto them, and a coroutine's frames can be copied in only by code that
 * is not running on the shared stack. So a switch out of a compact
 * coroutine goes through a small per-thread switching stack (`helper`):
 * the leaving side saves its context as any switch does, into a context
 * made fresh on the helper stack; there helper_entry copies the leaving
 * frames out and the arriving ones in, and jumps to the arriving context.
 * A switch into a compact coroutine from elsewhere copies in first and
 * switches directly. A finished compact coroutine's frames are dead:
 * nothing is saved.
 *
 * Under AddressSanitizer the frames' shadow is saved and restored with
 * them (their redzones stay true), and a vacated stretch is poisoned, so a
 * pointer into a suspended compact coroutine's stack is reported when
 * used. Without NDEBUG the stretch is filled with 0xdb bytes for the same
 * reason (a pointer read from it is non-canonical and faults). */

/* What the compact coroutines of one shared stack point to as their
 * stack (co.stack): a copy of its descriptor, whose owner fields are those
 * of the coroutine running on it (copy_in writes them), for the overflow
 * report. On the heap, counted: it outlives its thread's exit while
 * compact coroutines of that thread exist (they can never run again, but
 * fib_coro_stack and fib_fiber_stack may still describe them). */
struct shared_desc {
  struct fib__stack desc;  /* first: what co.stack points to */
  char *top;               /* the shared stack's top: frames are
                              [top - len, top) */
  struct compact_tl *home; /* its thread's */
  unsigned refs;           /* compact coroutines, + 1 while its thread
                              lives (atomic: one may be freed elsewhere) */
};

struct shared_stack {
  struct fib__stack *st; /* NULL: slot free */
  struct shared_desc *sd;
  size_t usable;
  fib_guard_mode mode;   /* as asked for (AUTO and MADVISE are two slots) */
};
#define SHARED_SLOTS 4

/* The first frame of a compact coroutine (fib__ctx_make's, and under ASan
 * its shadow), at most: held in the thread's cache below. */
#define FIRST_FRAME_MAX 256

struct compact_tl {
  struct shared_stack shared[SHARED_SLOTS];
  struct fib__stack *helper; /* the switching stack; NULL until needed */
  /* The switch helper_entry is to finish (set by compact_switch): */
  fib_coro *from, *to;       /* from: NULL if nothing is to be saved */
  void **save_sp;            /* where from's context was saved */
  void *load_sp;
  int nofp;
  int exit_hook;
#if FIB__TSAN
  void *helper_tsan;
#endif
  /* The first frame of the first compact coroutine made here, shared by
   * every one made since with the same bytes (the same FP control state;
   * others get a buffer of their own): until it first runs, such a
   * coroutine's buffer is this one (cap 0), so a coroutine made and not
   * yet run holds no buffer of its own. Never changes once set. */
  _Alignas(16) unsigned char first[FIRST_FRAME_MAX];
  size_t first_len; /* 0: none yet */
};
static FIB__TLS struct compact_tl tl_compact;

/* A compact coroutine: one allocation, kept small (a million idle ones
 * are what the mode is for). */
struct compact {
  fib_coro co; /* first: the record the layers above see; co.stack is its
                  shared stack's struct shared_desc */
  unsigned char *buf; /* saved frames (then, under ASan, their shadow) */
  uint32_t len;       /* bytes of frames saved (< FIB_STACK_MAX) */
  uint32_t cap;       /* buf's size; 0: buf is the thread's shared first
                         frame (compact_tl.first), not ours */
  uint32_t peak;      /* the most bytes of frames it has had saved */
  /* Who it is, for the overflow report, copied into the shared
   * descriptor each time it is switched in: where its id and name are in
   * its owner's record (co.owner; fib__coro_set_owner), or NO_FIELD.
   * Offsets, not copies: the record stays 120 bytes. */
  uint16_t id_at, name_at;
};
#define NO_FIELD UINT16_MAX
_Static_assert(FIB_STACK_MAX <= UINT32_MAX, "frame lengths fit 32 bits");

static inline struct compact *compact_of(fib_coro *co) {
  return (struct compact *)(void *)co;
}

static inline struct shared_desc *shared_of(const struct compact *c) {
  return (struct shared_desc *)(void *)c->co.stack;
}

static inline char *compact_top(const struct compact *c) {
  return shared_of(c)->top;
}

/* Buffer bytes for `len` bytes of frames: under ASan, their shadow too. */
static size_t saved_size(size_t len) {
#if FIB__ASAN
  return len + (len >> 3);
#else
  return len;
#endif
}

#if FIB__ASAN
static unsigned char *shadow_of(const void *p) {
  static size_t scale, offset;
  if (!scale)
    __asan_get_shadow_mapping(&scale, &offset);
  return (unsigned char *)(((uintptr_t)p >> scale) + offset);
}

/* Copies that ASan does not check: the frames hold redzones, which are
 * poisoned by design. volatile keeps the compiler from turning the loop
 * into a call to memcpy, which ASan intercepts. */
__attribute__((no_sanitize("address"))) static void
raw_copy(void *dst, const void *src, size_t n) {
  volatile unsigned char *d = dst;
  const volatile unsigned char *s = src;
  for (size_t i = 0; i < n; i++)
    d[i] = s[i];
}

__attribute__((no_sanitize("address"), unused)) static void
raw_fill(void *dst, unsigned char v, size_t n) {
  volatile unsigned char *d = dst;
  for (size_t i = 0; i < n; i++)
    d[i] = v;
}
#else
#define raw_copy memcpy
#define raw_fill memset
#endif

/* Save c's frames, [lo, top), into its buffer; called on the helper
 * stack, after its context was saved at lo. */
static void copy_out(struct compact *c, char *lo) {
  size_t len = (size_t)(compact_top(c) - lo), need = saved_size(len);
  /* Right-sized: grown to fit, shrunk when it is far too big, so an idle
   * coroutine keeps about what its frames need: to the end of malloc's
   * chunk (glibc: 8 bytes of header, sizes in steps of 16). */
  if (need > c->cap || need < c->cap / 4) {
    size_t cap = ((need + 8 + 15) & ~(size_t)15) - 8;
    /* the shared first frame is not ours to resize */
    unsigned char *buf = fib__sys_realloc(c->cap ? c->buf : NULL, cap);
    if (!buf) {
      if (need > c->cap) /* nowhere to put them: no caller to tell */
        fib__fatal("out of memory saving a compact fiber's stack");
    } else {
      c->buf = buf;
      c->cap = (uint32_t)cap;
    }
  }
  raw_copy(c->buf, lo, len);
#if FIB__ASAN
  raw_copy(c->buf + len, shadow_of(lo), len >> 3);
#endif
  c->len = (uint32_t)len;
  if (len > c->peak)
    c->peak = (uint32_t)len;
#ifndef NDEBUG
  raw_fill(lo, 0xdb, len); /* a stale pointer into it reads 0xdbdb... */
#endif
#if FIB__ASAN
  ASAN_POISON_MEMORY_REGION(lo, len); /* and ASan reports its use */
#endif
#if FIB__VALGRIND
  VALGRIND_MAKE_MEM_NOACCESS(lo, len); /* and so does memcheck */
#endif
}

/* Put c's frames back where they were, and name it as the shared
 * stack's owner. */
static void copy_in(struct compact *c) {
  struct fib__stack *d = c->co.stack;
  const char *owner = c->co.owner;
  d->owner_id = 0;
  d->owner_kind = "coroutine";
  d->owner_name = NULL;
  if (owner && c->id_at != NO_FIELD) {
    memcpy(&d->owner_id, owner + c->id_at, sizeof d->owner_id);
    d->owner_kind = "fiber";
  }
  if (owner && c->name_at != NO_FIELD)
    d->owner_name = owner + c->name_at;
  char *lo = compact_top(c) - c->len;
#if FIB__VALGRIND
  /* memcheck took the stretch for dead stack (below the shared stack's
   * last stack pointer): addressable again, its contents from the copy */
  VALGRIND_MAKE_MEM_UNDEFINED(lo, c->len);
#endif
  raw_copy(lo, c->buf, c->len);
#if FIB__ASAN
  raw_copy(shadow_of(lo), c->buf + c->len, c->len >> 3);
  /* Below its frames, where they will grow: clean, as the stack below a
   * running function is (another's vacated stretch was poisoned). */
  ASAN_UNPOISON_MEMORY_REGION(d->lo, (size_t)(lo - d->lo));
#endif
}

/* Where a value meant for `p`, an address in the frames of `owner` (a
 * suspended compact coroutine), is to go: its frames are in its buffer. */
__attribute__((noinline)) static void **compact_slot(fib_coro *owner,
                                                    void **p) {
  struct compact *c = compact_of(owner);
  char *lo = compact_top(c) - c->len;
  if ((char *)p >= lo && (char *)p < compact_top(c))
    return (void **)(void *)(c->buf + ((char *)p - lo));
  return p; /* its record (first), or elsewhere */
}

/* *where = value, for the value a switch delivers to the suspended
 * `owner` (NULL: the thread's own context): straight through, unless the
 * owner is compact and its frames are saved. */
static inline void put_value(fib_coro *owner, void **where, void *value) {
  if (__builtin_expect(owner && (owner->shared_fp & FIB__CORO_COMPACT), 0))
    where = compact_slot(owner, where);
  *where = value;
}

static void helper_entry(void *unused);

/*
 * A switch that involves a compact coroutine: `from` leaves (NULL: the
 * thread's own context; `final`: it has finished, save_sp unused), `to`
 * arrives (NULL: the thread's context), `nofp` picks the assembly
 * variant. Returns 0 when `from` runs again, as coro_switch does.
 */
__attribute__((noinline)) static int compact_switch(int nofp, fib_coro *from,
                                                    fib_coro *to,
                                                    void **save_sp,
                                                    void *load_sp, int final) {
  int from_c = from && (from->shared_fp & FIB__CORO_COMPACT);
  int to_c = to && (to->shared_fp & FIB__CORO_COMPACT);
  if (from && to == from->resumer) /* going back: this switch restores it */
    from->kind &= ~FIB__CORO_KIND(FIB__CORO_RESUMER_COMPACT, 0);
  if (!from_c || (final && !to_c)) {
    /* Not running on a shared stack, or leaving it for good for a context
     * elsewhere: nothing to save, and the copy in cannot hit our frames. */
    if (to_c)
      copy_in(compact_of(to));
#if FIB__SAN_HOOKS
    san_start(from, to, final);
#endif
    if (final) {
      if (nofp)
        fib__ctx_jump_nofp(load_sp, NULL);
      fib__ctx_jump(load_sp, NULL);
    }
    if (nofp)
      (void)fib__ctx_switch_nofp(save_sp, load_sp, NULL);
    else
      (void)fib__ctx_switch(save_sp, load_sp, NULL);
#if FIB__SAN_HOOKS
    san_finish(from);
#endif
    return 0;
  }
  /* Leaving the shared stack with frames to keep, or overwriting it: the
   * copies run on the helper stack (made in compact_create). */
  struct compact_tl *t = &tl_compact;
  t->from = final ? NULL : from;
  t->save_sp = save_sp;
  t->to = to;
  t->load_sp = load_sp;
  t->nofp = nofp;
  void *hsp = fib__ctx_make(fib__stack_top(t->helper), helper_entry);
#if FIB__ASAN
  tl_leaving_thread = 0;
  __sanitizer_start_switch_fiber(final ? NULL : &from->san_fake,
                                 t->helper->lo,
                                 (size_t)(fib__stack_end(t->helper) -
                                          t->helper->lo));
#endif
#if FIB__TSAN
  if (!t->helper_tsan)
    t->helper_tsan = __tsan_create_fiber(0);
  __tsan_switch_to_fiber(t->helper_tsan, 0);
#endif
  if (final) /* a fresh context: either variant enters it */
    fib__ctx_jump(hsp, NULL);
  /* from's context is saved with the variant it will be resumed with */
#if FIB__SAN_HOOKS
  if (nofp)
    (void)fib__ctx_switch_nofp(save_sp, hsp, NULL);
  else
    (void)fib__ctx_switch(save_sp, hsp, NULL);
  san_finish(from);
  return 0;
#else
  /* A tail call (the value handed back is NULL: 0): this function's
   * frame is gone before the context is saved, so the frames helper_entry
   * copies out, which every switch away of a suspended compact coroutine
   * keeps, do not include it. */
  if (nofp)
    return fib__ctx_switch_nofp_int(save_sp, hsp, NULL);
  return fib__ctx_switch_int(save_sp, hsp, NULL);
#endif
}

/* On the helper stack: finish the switch compact_switch began. */
static void helper_entry(void *unused) {
  (void)unused;
  struct compact_tl *t = &tl_compact; /* afresh: see the TLS rule */
#if FIB__ASAN
  __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
  fib_coro *from = t->from, *to = t->to;
  if (from)
    copy_out(compact_of(from), (char *)*t->save_sp);
  if (to && (to->shared_fp & FIB__CORO_COMPACT))
    copy_in(compact_of(to));
#if FIB__ASAN
  /* the helper's context is never resumed: no fake stack to keep */
  if (to)
    __sanitizer_start_switch_fiber(NULL, to->stack->lo,
                                   (size_t)(fib__stack_end(to->stack) -
                                            to->stack->lo));
  else
    __sanitizer_start_switch_fiber(NULL, tl_thread_stack_lo,
                                   tl_thread_stack_size);
#endif
#if FIB__TSAN
  if (to && !to->san_fiber)
    fib__coro_announce(to, to->stack->owner_kind);
  __tsan_switch_to_fiber(to ? to->san_fiber : tl_thread_tsan, 0);
#endif
  if (t->nofp)
    fib__ctx_jump_nofp(t->load_sp, NULL);
  fib__ctx_jump(t->load_sp, NULL);
}

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
 * `nofp` picks the variant, `back` the copy for a switch back to a resumer
 * (fib__ctx_switch_back). A switch that involves a compact coroutine
 * goes through compact_switch instead: each caller tests the switch kind
 * (fib_coro.shared_fp) once, before its bookkeeping, full FP state first,
 * so the common case pays no more than the one test it always made.
 */
static inline __attribute__((always_inline)) int
coro_switch(int nofp, int back, fib_coro *from, fib_coro *to, void **save_sp,
            void *load_sp, int value) {
  void *v = (void *)(intptr_t)value;
#if FIB__SAN_HOOKS
  (void)back;
  san_start(from, to, 0);
  if (nofp)
    v = fib__ctx_switch_nofp(save_sp, load_sp, v);
  else
    v = fib__ctx_switch(save_sp, load_sp, v);
  san_finish(from);
  return (int)(intptr_t)v;
#else
  (void)from;
  (void)to;
  if (back) /* a yield's or a return's: see fib__ctx_switch_back */
    return nofp ? fib__ctx_switch_back_nofp_int(save_sp, load_sp, v)
                : fib__ctx_switch_back_int(save_sp, load_sp, v);
  return nofp ? fib__ctx_switch_nofp_int(save_sp, load_sp, v)
              : fib__ctx_switch_int(save_sp, load_sp, v);
#endif
}

/* The last switch out of `from`, which has finished: nothing of it is
 * saved. `fp` picks the variant, as in coro_switch. */
_Noreturn static inline __attribute__((always_inline)) void
coro_jump(int nofp, fib_coro *from, fib_coro *to, void *load_sp, int value) {
#if FIB__SAN_HOOKS
  san_start(from, to, 1);
#endif
  (void)from;
  (void)to;
  void *v = (void *)(intptr_t)value;
  if (nofp)
    fib__ctx_jump_nofp(load_sp, v);
  fib__ctx_jump(load_sp, v);
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

/* Where a value nobody asked for goes (fib_coro.first). */
static inline void **sink(fib_coro *co) { return &co->first; }

/* Where `to`, taking over from `from`, delivers its value: where from's
 * was to go, but never from's sink, which is in from's record: from may be
 * finished, and its stack and record reused, before `to` yields. */
static inline void **out_for(fib_coro *from, fib_coro *to) {
  return from->out == sink(from) ? sink(to) : from->out;
}

/* `co` stops running: give the thread back to its resumer, whose status
 * is RUNNING still (see fib_coro.status). */
static inline void leave(fib_coro *co, void *value) {
  *co->out = value;
  fib__coro_set_self(co->resumer);
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

/* ---- compact coroutines: making and freeing them */

static pthread_key_t compact_key;
static pthread_once_t compact_key_once = PTHREAD_ONCE_INIT;

/* Drop a reference to a shared descriptor: the last one frees it. */
static void shared_desc_drop(struct shared_desc *sd) {
  /* acq_rel: the last dropper sees every other's use of it done */
  if (__atomic_sub_fetch(&sd->refs, 1, __ATOMIC_ACQ_REL) == 0)
    fib__sys_free(sd);
}

/* Thread exit: the shared stacks and the helper go back. Compact
 * coroutines of this thread that still exist can never run again. */

static void compact_thread_exit(void *arg) {
  struct compact_tl *t = arg;
  for (int i = 0; i < SHARED_SLOTS; i++)
    if (t->shared[i].st) {
      fib__stack_put(t->shared[i].st);
      shared_desc_drop(t->shared[i].sd); /* the thread's reference */
    }
  if (t->helper)
    fib__stack_put(t->helper);
#if FIB__TSAN
  if (t->helper_tsan)
    __tsan_destroy_fiber(t->helper_tsan);
#endif
  memset(t, 0, sizeof *t);
  /* the pool's own exit hook may have run already */
  fib__stack_pool_drain();
}

static void compact_key_create(void) {
  (void)pthread_key_create(&compact_key, compact_thread_exit);
}

/* This thread's shared stack for (usable, mode), made if need be. */
static int shared_stack(struct compact_tl *t, size_t usable,
                        fib_guard_mode mode, struct shared_stack **out) {
  struct shared_stack *free_slot = NULL;
  for (int i = 0; i < SHARED_SLOTS; i++) {
    struct shared_stack *sh = &t->shared[i];
    if (sh->st && sh->usable == usable && sh->mode == mode) {
      *out = sh;
      return 0;
    }
    if (!sh->st && !free_slot)
      free_slot = sh;
  }
  if (!free_slot)
    return FIB_ENOMEM;
  struct shared_desc *sd = fib__sys_malloc(sizeof *sd);
  if (!sd)
    return FIB_ENOMEM;
  int err = fib__stack_get(&free_slot->st, usable, mode);
  if (err) {
    fib__sys_free(sd);
    return err;
  }
  free_slot->usable = usable;
  free_slot->mode = mode;
  free_slot->st->owner_kind = "compact stack";
  sd->desc = *free_slot->st;
  sd->desc.pool_next = NULL;
  sd->desc.vg_id = 0;
  sd->top = fib__stack_top(free_slot->st);
  sd->home = t;
  sd->refs = 1; /* the thread's, dropped at its exit */
  free_slot->sd = sd;
  *out = free_slot;
  return 0;
}

static int compact_create(fib_coro **out, fib_coro_fn fn, void *arg,
                          size_t usable, fib_guard_mode mode, unsigned flags) {
  if (mode == FIB_GUARD_NONE)
    return FIB_EINVAL; /* the shared stack is always guarded */
  struct compact_tl *t = &tl_compact;
  if (!t->exit_hook) {
    pthread_once(&compact_key_once, compact_key_create);
    t->exit_hook = pthread_setspecific(compact_key, t) == 0;
  }
  int err = 0;
  if (!t->helper) /* copies only: the smallest stack does */
    err = fib__stack_get(&t->helper, FIB_STACK_MIN, FIB_GUARD_AUTO);
  struct shared_stack *sh = NULL;
  if (!err)
    err = shared_stack(t, usable, mode, &sh);
  if (err)
    return err;
  /* The first frame, made in a scratch buffer: it holds no address of
   * the stack it is on, so it can be copied to the shared stack's top.
   * If it is the one the thread's cache holds (the same FP control
   * state), that one serves until the coroutine first runs. */
  _Alignas(16) unsigned char scratch[FIRST_FRAME_MAX];
  unsigned char *sp = fib__ctx_make(scratch + sizeof scratch, coro_entry);
  size_t len = (size_t)(scratch + sizeof scratch - sp);
  unsigned char *buf = NULL; /* NULL: the cache's */
  if (!t->first_len && saved_size(len) <= sizeof t->first) {
    /* Set once: coroutines not yet run read it, so it never changes. */
    memcpy(t->first, sp, len);
#if FIB__ASAN
    memset(t->first + len, 0, len >> 3); /* its shadow: all addressable */
#endif
    t->first_len = len;
  }
  if (t->first_len != len || memcmp(t->first, sp, len) != 0) {
    buf = fib__sys_malloc(saved_size(len)); /* another FP control state */
    if (!buf)
      return FIB_ENOMEM;
  }
  struct compact *c = fib__sys_malloc(sizeof *c);
  if (!c) {
    fib__sys_free(buf);
    return FIB_ENOMEM;
  }
  if (buf) {
    memcpy(buf, sp, len);
#if FIB__ASAN
    memset(buf + len, 0, len >> 3);
#endif
  }
  struct shared_desc *sd = sh->sd;
  __atomic_add_fetch(&sd->refs, 1, __ATOMIC_RELAXED); /* ours */
  c->id_at = c->name_at = NO_FIELD;
  c->buf = buf ? buf : t->first;
  c->len = c->peak = (uint32_t)len;
  /* 0: the cache's, not ours: copy_out takes a buffer of its own */
  c->cap = buf ? (uint32_t)saved_size(len) : 0;

  fib_coro *co = &c->co;
  co->stack = &sd->desc;
  co->sp = sd->top - len;
  co->resumer_sp = NULL;
  co->resumer = NULL;
  co->fn = fn;
  co->arg = arg;
  co->status = FIB_CORO_SUSPENDED;
  co->kind = FIB__CORO_KIND(
      FIB__CORO_COMPACT | ((flags & FIB_SHARED_FP) ? FIB__CORO_NOFP : 0), 0);
  co->canary = NULL;
  co->owner = NULL;
  co->first = NULL;
  co->out = co->in = sink(co);
#if FIB__SAN_HOOKS
  co->san_fake = NULL;
  co->san_fiber = NULL;
#endif
  *out = co;
  return 0;
}



/* Where a coroutine record sits on its own stack: this far below the
 * stack's descriptor, as when every build's record carried the sanitizer
 * words (112 bytes). Placing the smaller record 96 bytes below made a
 * yield between two fibers ~1 ns (~8 %) slower here: the layout the
 * switch's cache lines were tuned for stays. */
#define CORO_SLOT 112
_Static_assert(sizeof(fib_coro) <= CORO_SLOT, "the record fits its slot");

/* A coroutine on the stack s, just taken, with `rec_size` bytes for the
 * layer above between its record and its first frame (0: none). */
static inline __attribute__((always_inline)) void
stack_init(fib_coro **out, struct fib__stack *s, fib_coro_fn fn, void *arg,
           unsigned flags, size_t rec_size, void **rec) {
  fib_coro *co = (fib_coro *)(fib__stack_top(s) - CORO_SLOT);
  char *first = (char *)co - ((rec_size + 15) & ~(size_t)15);
  if (rec)
    *rec = first;
  co->sp = fib__ctx_make(first, coro_entry);
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
  co->out = co->in = sink(co);
#if FIB__SAN_HOOKS
  co->san_fake = NULL;
  co->san_fiber = NULL; /* TSan: see fib__coro_announce */
#endif
  *out = co;
}

/* A coroutine on a stack of its own (stack_init). */
static inline __attribute__((always_inline)) int
stack_create(fib_coro **out, fib_coro_fn fn, void *arg, size_t usable,
             fib_guard_mode mode, unsigned flags, size_t rec_size,
             void **rec) {
  struct fib__stack *s;
  int err = fib__stack_get(&s, usable, mode);
  if (err)
    return err;
  stack_init(out, s, fn, arg, flags, rec_size, rec);
  return 0;
}

int fib__coro_create(fib_coro **out, fib_coro_fn fn, void *arg, size_t usable,
                     fib_guard_mode mode, unsigned flags) {
  /* The handler that reports overflows must be in place before any code
   * runs on a guarded stack; this is a flag check after the first time. */
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  if (flags & FIB_COMPACT)
    return compact_create(out, fn, arg, usable, mode, flags);
  return stack_create(out, fn, arg, usable, mode, flags, 0, NULL);
}

int fib__coro_create_rec(fib_coro **out, fib_coro_fn fn, void *arg,
                         size_t usable, fib_guard_mode mode, unsigned flags,
                         size_t rec_size, void **rec) {
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  return stack_create(out, fn, arg, usable, mode, flags & ~FIB_COMPACT,
                      rec_size, rec);
}

/* Where p lies in the record at `base` (of at most NO_FIELD bytes), or
 * NO_FIELD. */
static uint16_t field_at(const void *base, const void *p) {
  uintptr_t b = (uintptr_t)base, a = (uintptr_t)p;
  return base && p && a >= b && a - b < NO_FIELD ? (uint16_t)(a - b)
                                                  : NO_FIELD;
}

void fib__coro_set_owner_compact(fib_coro *co, const uint64_t *id,
                                 const char *name) {
  struct compact *c = compact_of(co); /* copy_in names it */
  c->id_at = field_at(co->owner, id);
  c->name_at = field_at(co->owner, name);
}

fib_coro *fib__coro_renew(fib_coro *dead, fib_coro_fn fn, void *arg,
                          size_t usable, fib_guard_mode mode, unsigned flags) {
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
  stack_init(&co, s, fn, arg, flags, FIB__CORO_RENEW_ROOM, NULL);
  return co;
}

void fib__coro_free(fib_coro *co) {
#if FIB__TSAN
  if (co->san_fiber) /* it has been switched away from for good */
    __tsan_destroy_fiber(co->san_fiber);
#endif
  if (co->shared_fp & FIB__CORO_COMPACT) {
    struct compact *c = compact_of(co);
    if (c->cap)
      fib__sys_free(c->buf);
    shared_desc_drop(shared_of(c));
    fib__sys_free(c);
    return;
  }
  fib__stack_put(co->stack);
}

/* The default stack's usable size, rounded: the page size never changes,
 * so it is computed once (racing threads store the same value). */
static size_t default_usable_cached;

__attribute__((noinline, cold)) static size_t default_usable_first(void) {
  size_t usable = fib__stack_round_size(0, FIB_STACK_DEFAULT);
  __atomic_store_n(&default_usable_cached, usable, __ATOMIC_RELAXED);
  return usable;
}

static inline size_t default_usable(void) {
  size_t usable = __atomic_load_n(&default_usable_cached, __ATOMIC_RELAXED);
  return __builtin_expect(usable != 0, 1) ? usable : default_usable_first();
}

/* fib_coro_create with attributes: each one checked. Out of line, so
 * that the default path below is a tail call with no frame of its own. */
__attribute__((noinline)) static int create_attr(fib_coro **out,
                                                 fib_coro_fn fn, void *arg,
                                                 const fib_attr *attr) {
  size_t usable =
      fib__stack_check(attr->stack_size, FIB_STACK_DEFAULT, attr->guard);
  if (!usable || (attr->flags & ~(FIB_SHARED_FP | FIB_COMPACT)) ||
      attr->worker ||
      !fib__all_zero(attr->reserved, sizeof attr->reserved / sizeof(uintptr_t)))
    return FIB_EINVAL;
  return fib__coro_create(out, fn, arg, usable, attr->guard, attr->flags);
}

int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                    const fib_attr *attr) {
  if (!out || !fn)
    return FIB_EINVAL;
  /* No attributes: the defaults, which need no check. */
  if (!attr)
    return fib__coro_create(out, fn, arg, default_usable(), FIB_GUARD_AUTO,
                            0);
  return create_attr(out, fn, arg, attr);
}

/* ---- the compact halves of the switches below: out of line, reached
 * after one test of the switch kind. Values go through put_value (the
 * receiver's frames may be in its buffer), and the switch through
 * compact_switch. */

/* co (compact, or plain with a compact resumer `prev`), resumed by prev. */
__attribute__((noinline)) static int
resume_compact(fib_coro *co, fib_coro *prev, void *in, void **out) {
  if ((co->shared_fp & FIB__CORO_COMPACT) &&
      shared_of(compact_of(co))->home != &tl_compact)
    return FIB_EPERM; /* its frames belong at another thread's addresses */
  co->resumer = prev;
  co->out = out ? out : sink(co);
  put_value(co, co->in, in);
  enter(co);
  if (prev && (prev->shared_fp & FIB__CORO_COMPACT))
    co->kind |= FIB__CORO_KIND(FIB__CORO_RESUMER_COMPACT, 0);
  return compact_switch(co->shared_fp & FIB__CORO_NOFP, prev, co,
                        &co->resumer_sp, co->sp, 0);
}

__attribute__((noinline)) static int yield_compact(fib_coro *co, void *value,
                                                   void **in) {
  fib_coro *prev = co->resumer;
  co->in = in ? in : sink(co);
  co->status = FIB_CORO_SUSPENDED;
  put_value(prev, co->out, value);
  fib__coro_set_self(prev);
  return compact_switch(co->shared_fp & FIB__CORO_NOFP, co, prev, &co->sp,
                        co->resumer_sp, 0);
}

__attribute__((noinline, noreturn)) static void exit_compact(fib_coro *co,
                                                            void *value) {
  fib_coro *prev = co->resumer;
  co->status = FIB_CORO_DEAD;
  put_value(prev, co->out, value);
  fib__coro_set_self(prev);
  (void)compact_switch(co->shared_fp & FIB__CORO_NOFP, co, prev, NULL,
                       co->resumer_sp, 1);
  __builtin_unreachable();
}

/* transfer and finish_into between compact fibers (the scheduler pairs
 * only equal kinds) */
__attribute__((noinline)) static int
transfer_compact(fib_coro *from, fib_coro *to, int final) {
  to->resumer = from->resumer;
  to->resumer_sp = from->resumer_sp;
  to->out = out_for(from, to);
  put_value(to, to->in, NULL);
  from->in = sink(from);
  from->status = final ? FIB_CORO_DEAD : FIB_CORO_SUSPENDED;
  enter(to);
  return compact_switch(to->shared_fp & FIB__CORO_NOFP, from, to,
                        final ? NULL : &from->sp, to->sp, final);
}

/* The plain half of resume: `nofp` is a constant where it is inlined. */
static inline __attribute__((always_inline)) int
resume_plain(int nofp, fib_coro *co, fib_coro *prev, void *in, void **out,
             int value) {
  co->resumer = prev;
  co->out = out ? out : sink(co);
  *co->in = in;
  enter(co);
  /* Returns 0 here when co yields or finishes; leave() did the rest. */
  return coro_switch(nofp, 0, prev, co, &co->resumer_sp, co->sp, value);
}

/* Run `co` (suspended) on behalf of `prev`, the running coroutine or NULL. */
static inline int resume(fib_coro *co, fib_coro *prev, void *in, void **out,
                         int value) {
  int kind = co->shared_fp;
  if (__builtin_expect(kind == 0, 1))
    return resume_plain(0, co, prev, in, out, value);
  if (kind == FIB__CORO_NOFP)
    return resume_plain(1, co, prev, in, out, value);
  return resume_compact(co, prev, in, out);
}

/* The first resume on a thread that never made a coroutine: put the
 * overflow handler's stack in place (best effort; a failure here only
 * means an overflow there would not be named). Out of line, so that the
 * hot path saves no registers around the call. */
__attribute__((noinline, cold)) static int
resume_on_new_thread(fib_coro *co, void *in, void **out, int value) {
  (void)fib__overflow_setup_thread();
  return resume(co, NULL, in, out, value);
}

/* Resume co: every case, each check in the documented order. `owned`:
 * refuse a fiber's own (the public call). Out of line: the hot path below
 * sends here whatever it does not take itself. */
__attribute__((noinline)) static int
resume_checked(fib_coro *co, void *in, void **out, int owned, int value) {
  if (!co)
    return FIB_EINVAL;
  if (owned && co->owner)
    return FIB_EPERM; /* a fiber's own: only its scheduler resumes it */
  if (co->status != FIB_CORO_SUSPENDED)
    return co->status == FIB_CORO_DEAD ? FIB_EINVAL : FIB_EBUSY;

  fib_coro *prev = fib__coro_self();
  if (prev) {
    check_canary(prev); /* resuming another switches away from it */
    if (__builtin_expect(prev->shared_fp & FIB__CORO_COMPACT, 0))
      return resume_compact(co, prev, in, out);
  } else if (!fib__tl_overflow_ready) {
    return resume_on_new_thread(co, in, out, value);
  }
  return resume(co, prev, in, out, value);
}

/*
 * The hot path of both resumes: a suspended plain coroutine (not a
 * fiber's own, for the public call: `owned` adds FIB__CORO_OWNED to what
 * is refused here) resumed from the thread's own context on a thread
 * ready for overflow reports, or from a running plain coroutine on a
 * guarded stack. One test of co's kind, one of the resumer's; anything
 * else goes to resume_checked, which makes every check in full.
 */
static inline __attribute__((always_inline)) int
resume_hot(fib_coro *co, void *in, void **out, int owned, int value) {
  if (__builtin_expect(co != NULL, 1)) {
    fib_coro *prev = fib__coro_self();
    uint32_t kind = co->kind;
    uint32_t other = kind & ~FIB__CORO_KIND(FIB__CORO_NOFP,
                                            owned ? FIB__CORO_CANARY
                                                  : FIB__CORO_CANARY |
                                                        FIB__CORO_OWNED);
    /* The kind first: it is fixed before co is published, while the
     * status of a fiber's context that another thread runs is that
     * thread's to write (the call is refused by the kind alone). */
    if (__builtin_expect(!other && co->status == FIB_CORO_SUSPENDED, 1)) {
      /* From the thread's own context (laid out straight), or from a
       * coroutine, which switches away: its canary and stack kind count. */
      int prev_ok = __builtin_expect(prev == NULL, 1)
                        ? fib__tl_overflow_ready
                        : !(prev->kind & FIB__CORO_KIND(FIB__CORO_COMPACT,
                                                        FIB__CORO_CANARY));
      if (__builtin_expect(prev_ok, 1)) {
        if (kind & FIB__CORO_NOFP)
          return resume_plain(1, co, prev, in, out, value);
        return resume_plain(0, co, prev, in, out, value);
      }
    }
  }
  return resume_checked(co, in, out, owned, value);
}

#if FIB__CORO_ASM
/* The rest of fib_coro_resume, whose hot path is in switch.S. */
__attribute__((visibility("hidden"))) int
fib__coro_resume_checked(fib_coro *co, void *in, void **out);
int fib__coro_resume_checked(fib_coro *co, void *in, void **out) {
  return resume_checked(co, in, out, 1, 0);
}
#else
int fib_coro_resume(fib_coro *co, void *in, void **out) {
  return resume_hot(co, in, out, 1, 0);
}
#endif

int fib__coro_resume(fib_coro *co, int value) {
  return resume_hot(co, NULL, NULL, 0, value);
}

/* `to` runs in place of `from`: it takes over from's resumer, and where
 * from's value would have gone. `to` gets no value (NULL). */
static inline void take_over(fib_coro *from, fib_coro *to) {
  to->resumer = from->resumer;
  to->resumer_sp = from->resumer_sp;
  to->out = out_for(from, to);
  *to->in = NULL;
  from->in = sink(from);
}

static inline __attribute__((always_inline)) int
transfer_plain(int nofp, fib_coro *from, fib_coro *to, int value) {
  take_over(from, to);
  from->status = FIB_CORO_SUSPENDED;
  enter(to);
  /* Returns what the switch back to `from` hands it. */
  return coro_switch(nofp, 0, from, to, &from->sp, to->sp, value);
}

int fib__coro_transfer(fib_coro *from, fib_coro *to, int value) {
  check_canary(from);
  int kind = to->shared_fp;
  if (__builtin_expect(kind == 0, 1))
    return transfer_plain(0, from, to, value);
  if (kind == FIB__CORO_NOFP)
    return transfer_plain(1, from, to, value);
  return transfer_compact(from, to, 0);
}

_Noreturn void fib__coro_finish_into(fib_coro *from, fib_coro *to,
                                     int value) {
  check_canary(from);
  int kind = to->shared_fp;
  if (kind > FIB__CORO_NOFP) {
    (void)transfer_compact(from, to, 1);
    __builtin_unreachable();
  }
  take_over(from, to);
  from->status = FIB_CORO_DEAD;
  enter(to);
  coro_jump(kind, from, to, to->sp, value);
}

static inline __attribute__((always_inline)) int
yield_plain(int nofp, fib_coro *co, void *value, void **in) {
  co->in = in ? in : sink(co);
  co->status = FIB_CORO_SUSPENDED;
  leave(co, value);
  /* Returns 0 here when resumed; the resumer stored *in. */
  return coro_switch(nofp, 1, co, co->resumer, &co->sp, co->resumer_sp, 0);
}

/* Suspend the running co (the caller has checked it may yield). */
static inline __attribute__((always_inline)) int
yield_running(fib_coro *co, void *value, void **in) {
  check_canary(co);
  int kind = co->shared_fp;
  if (__builtin_expect(kind == 0, 1))
    return yield_plain(0, co, value, in);
  if (kind == FIB__CORO_NOFP)
    return yield_plain(1, co, value, in);
  return yield_compact(co, value, in);
}

/* Every case of both yields; `owned`: refuse a fiber's own body. */
__attribute__((noinline)) static int yield_checked(void *value, void **in,
                                                   int owned) {
  fib_coro *co = fib__coro_self();
  /* Outside any coroutine, or in a fiber's own body: a yield there would
   * go back to the scheduler loop and strand the fiber (fib_yield is the
   * fiber's way to give way). */
  if (!co || (owned && co->owner))
    return FIB_EPERM;
  return yield_running(co, value, in);
}

/* The hot path of both yields: a plain coroutine on a guarded stack (and,
 * for the public call, not a fiber's own) in one test of its kind. */
static inline __attribute__((always_inline)) int
yield_hot(void *value, void **in, int owned) {
  fib_coro *co = fib__coro_self();
  if (__builtin_expect(co != NULL, 1)) {
    uint32_t kind = co->kind;
    uint32_t other =
        kind & ~FIB__CORO_KIND(FIB__CORO_NOFP, owned ? 0 : FIB__CORO_OWNED);
    if (__builtin_expect(!other, 1)) {
      if (kind & FIB__CORO_NOFP)
        return yield_plain(1, co, value, in);
      return yield_plain(0, co, value, in);
    }
  }
  return yield_checked(value, in, owned);
}

#if FIB__CORO_ASM
/* The rest of fib_coro_yield, whose hot path is in switch.S. */
__attribute__((visibility("hidden"))) int
fib__coro_yield_checked(void *value, void **in);
int fib__coro_yield_checked(void *value, void **in) {
  return yield_checked(value, in, 1);
}
#else
int fib_coro_yield(void *value, void **in) { return yield_hot(value, in, 1); }
#endif

int fib__coro_yield(void *value, void **in) {
  return yield_hot(value, in, 0);
}

_Noreturn void fib__coro_exit(void *value) {
  fib_coro *co = fib__coro_self();
  check_canary(co);
  if (co->shared_fp > FIB__CORO_NOFP)
    exit_compact(co, value);
  co->status = FIB_CORO_DEAD;
  leave(co, value);
  coro_jump(co->shared_fp, co, co->resumer, co->resumer_sp, 0);
}

int fib_coro_status(const fib_coro *co) {
  if (!co)
    return FIB_EINVAL;
  /* RUNNING is stored for the resumers too (see fib_coro.status) */
  if (co->status == FIB_CORO_RUNNING && co != fib__coro_self())
    return FIB_CORO_NORMAL;
  return (int)co->status;
}

int fib_coro_destroy(fib_coro *co) {
  if (!co)
    return FIB_EINVAL;
  if (co->owner)
    return FIB_EPERM; /* a fiber's own: freed with the fiber */
  if (co->status == FIB_CORO_RUNNING) /* running, or normal */
    return FIB_EBUSY;
  fib__coro_free(co);
  return 0;
}

/* ---- stack information */

int fib_coro_stack(const fib_coro *co, fib_stack_info *out) {
  if (!co || !out || co->status == FIB_CORO_DEAD)
    return FIB_EINVAL;
  fib__stack_describe(co->stack, out);
  if (co->shared_fp & FIB__CORO_COMPACT) /* the shared stack's residency */
    out->high_water = compact_of((fib_coro *)co)->peak; /* says nothing */
  return 0;
}

int fib_self_stack(fib_stack_info *out) {
  if (!out)
    return FIB_EINVAL;
  fib_coro *co = fib__coro_self();
  if (!co)
    return FIB_EPERM;
  fib__stack_describe(co->stack, out);
  if (co->shared_fp & FIB__CORO_COMPACT) /* its frames: from here to the top */
    out->high_water = (size_t)(compact_top(compact_of(co)) - (char *)&co) >
                              compact_of(co)->peak
                          ? (size_t)(compact_top(compact_of(co)) - (char *)&co)
                          : compact_of(co)->peak;
  return 0;
}
