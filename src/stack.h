/* SPDX-License-Identifier: MIT */
/*
 * stack.h -- the stack layer: guarded, lazily committed, pooled stacks, and
 * the overflow report (overflow.h).
 *
 * A stack is a stretch of an anonymous mapping:
 *
 *     map                lo                                    hi
 *      | guard region    | usable stack (grows down) ...  |desc|
 *
 * FIB_GUARD_MADVISE and FIB_GUARD_NONE stacks are carved from slabs, one
 * mapping holding many stacks of one class side by side (stack.c, "slabs"):
 * a stack's `map` is then the start of its stretch of the slab. An
 * FIB_GUARD_MPROTECT stack is a mapping of its own (its guard splits the
 * mapping anyway).
 *
 * The guard region is never accessible (MADV_GUARD_INSTALL markers, or
 * PROT_NONE). A FIB_GUARD_NONE stack has no guard region (map == lo); a
 * canary word at lo stands in for it, checked at every switch away from
 * the stack (coro.c). The stack's descriptor, struct fib__stack, lives at
 * the very top of the mapping, so a stack needs no other allocation and a
 * pooled stack carries its own list link. Upper layers place their own records just
 * below the descriptor (fib__stack_top) and start the context below those.
 */
#ifndef FIB__STACK_H
#define FIB__STACK_H

#include "fibers.h"
#include "sanitize.h"
#include "tls.h"

#include <stddef.h>
#include <stdint.h>

struct fib__stack {
  char *map;            /* start of the mapping: the guard's first byte */
  size_t map_size;      /* bytes mapped: guard + usable */
  size_t guard_size;    /* bytes of guard region */
  size_t usable_size;   /* what was asked for, rounded to pages */
  char *lo;             /* lowest usable byte (map + guard_size) */
  uint64_t pool_key;    /* (usable_size, mode) as one word: the pool's
                           class compare on every put is one load */
  /* Who runs on the stack, for the overflow report. Upper layers set them;
   * owner_name points into memory that lives as long as the owner does. */
  uint64_t owner_id;
  const char *owner_kind; /* "fiber" or "coroutine" */
  const char *owner_name; /* may be NULL */
  struct fib__stack *pool_next; /* link while in the pool */
  struct fib__slab *slab; /* the slab it was carved from; NULL: a mapping
                             of its own (FIB_GUARD_MPROTECT) */
  fib_guard_mode mode;  /* the mode in force: MADVISE, MPROTECT or NONE */
  unsigned vg_id;       /* valgrind's stack id (sanitize.h), or 0 */
};

/* Whether g is one of the fib_guard_mode values. */
static inline int fib__guard_mode_known(fib_guard_mode g) {
  _Static_assert(FIB_GUARD_AUTO == 0 && FIB_GUARD_MADVISE == 1 &&
                     FIB_GUARD_MPROTECT == 2 && FIB_GUARD_NONE == 3,
                 "the modes are 0..3: one unsigned comparison checks them");
  return (unsigned)g <= (unsigned)FIB_GUARD_NONE;
}

/* The page size less one, once a size has been rounded (0 before): every
 * spawn or create that passes a size rounds it, and a load is cheaper
 * than a call. Racing threads store the same value. */
extern size_t fib__stack_page_mask;
size_t fib__stack_round_first(size_t size);

/*
 * Check and round a requested usable size: 0 means `fallback`. Returns the
 * rounded size, or 0 if out of [FIB_STACK_MIN, FIB_STACK_MAX].
 */
static inline size_t fib__stack_round_size(size_t requested, size_t fallback) {
  size_t size = requested ? requested : fallback;
  if (size - FIB_STACK_MIN > FIB_STACK_MAX - FIB_STACK_MIN) /* both bounds */
    return 0;
  size_t mask = __atomic_load_n(&fib__stack_page_mask, __ATOMIC_RELAXED);
  if (__builtin_expect(mask == 0, 0))
    return fib__stack_round_first(size);
  return (size + mask) & ~mask;
}

/* The one check of a stack request (fib_attr, fib_runtime_opts): the
 * rounded size as fib__stack_round_size gives it, or 0 if the size is out
 * of range or `mode` is not a known guard mode. */
static inline size_t fib__stack_check(size_t requested, size_t fallback,
                                      fib_guard_mode mode) {
  return fib__guard_mode_known(mode) ? fib__stack_round_size(requested, fallback)
                                     : 0;
}

/*
 * A stack of `usable` bytes (already rounded) with a guard made per `mode`,
 * from this thread's pool when one of the same size and mode is there.
 * Returns 0 or FIB_EINVAL (mode unknown, or MADVISE without kernel support)
 * or FIB_ENOMEM (no memory, no mappings, or the mprotect budget is spent).
 */
int fib__stack_get(struct fib__stack **out, size_t usable, fib_guard_mode mode);

/* Give a stack back: to this thread's pool if there is room, else unmap. */
void fib__stack_put(struct fib__stack *s);


/* The highest usable address below the descriptor, 16-byte aligned. */
static inline char *fib__stack_top(struct fib__stack *s) {
  return (char *)((uintptr_t)s & ~(uintptr_t)15);
}

/* One past the mapping's last byte: the usable stack is [lo, end). */
static inline char *fib__stack_end(const struct fib__stack *s) {
  return s->map + s->map_size;
}

/* FIB_GUARD_NONE: the value of the canary word at lo. Not zero, not a
 * canonical user-space address, not a small number: what an overflowing
 * frame writes there is unlikely to be it. (It finds accidents; it is not
 * a secret against attacks.) */
#define FIB__STACK_CANARY UINT64_C(0xc4a2f1be5d0e7a11)

/* The canary word of a FIB_GUARD_NONE stack; NULL for a guarded one. */
static inline const uint64_t *fib__stack_canary(const struct fib__stack *s) {
  return s->mode == FIB_GUARD_NONE ? (const uint64_t *)(void *)s->lo : NULL;
}

/* A class of stack, (usable size, guard mode resolved), as one word: the
 * pool's lists and the descriptor's pool_key. Usable sizes fit 32 bits
 * (FIB_STACK_MAX); mode 0 (AUTO) is no class. */
static inline uint64_t fib__stack_class(size_t usable, fib_guard_mode mode) {
  return (uint64_t)usable | (uint64_t)mode << 32;
}

/* The guard mode FIB_GUARD_AUTO stands for, once the first stack that
 * asked for it has probed the kernel; 0 before (atomic). */
extern int fib__stack_auto_known;

/*
 * s, which this thread would put back now, for a new user at once, if it
 * is of the class fib__stack_get(usable, mode) would take from: s as that
 * get would hand it out, without the round trip through the pool, and 0.
 * 1: another class, s untouched. Its owner fields are the last owner's
 * until the caller names the new one (the one caller, spawn, does at once).
 * Inline unless ASan or memcheck is told of the renewal (a spawn after
 * a join takes this on every spawn).
 */
/* Whether stack.c tells ASan or memcheck of each get, put and renewal:
 * then the inline hot paths here stand aside. */
#define FIB__STACK_TELLS (FIB__ASAN || FIB__VALGRIND)
#if FIB__STACK_TELLS
int fib__stack_renew(struct fib__stack *s, size_t usable, fib_guard_mode mode);
#else
static inline int fib__stack_renew(struct fib__stack *s, size_t usable,
                                   fib_guard_mode mode) {
  /* Not probed yet (0): no stack has the class, s included. */
  if (mode == FIB_GUARD_AUTO)
    mode = (fib_guard_mode)__atomic_load_n(&fib__stack_auto_known,
                                           __ATOMIC_RELAXED);
  if (s->pool_key != fib__stack_class(usable, mode))
    return 1;
  /* pool_next is NULL already: a stack in use is on no list */
  if (mode == FIB_GUARD_NONE)
    *(uint64_t *)(void *)s->lo = FIB__STACK_CANARY;
  return 0;
}
#endif

/* The guard mode AUTO resolves to on this kernel (probed once). */
fib_guard_mode fib__stack_auto_mode(void);

/* How many mprotect-guarded stacks may exist at once in this process (from
 * vm.max_map_count), and how many do now. */
long fib__stack_mprotect_budget(void);
long fib__stack_mprotect_count(void);

/* Test seam: lower the budget to `cap` stacks (0: back to the one from
 * vm.max_map_count; never raised above it). For tests that must fill the
 * budget where ~28,000 guarded stacks are too many for the tool running
 * them (valgrind's segment table; tests/test_stack.c). Process-wide. */
void fib__stack_cap_mprotect_budget(long cap);

/* Fill *out for fib_stack_info's users: bounds, guard, and the high-water
 * mark (one mincore call). */
void fib__stack_describe(const struct fib__stack *s, fib_stack_info *out);

/* The per-thread pool keeps a list for each class of stack, a class being
 * a (usable size, guard mode) pair, and at most FIB__STACK_POOL_CLASSES
 * classes (a new class beyond that evicts the least recently used one,
 * giving its stacks back). It holds FIB__STACK_POOL_MAX stacks in all for
 * good; beyond that it keeps what the program has freed until a quiet
 * period (FIB__STACK_QUIET_NS) shows they are not needed: then the stacks
 * it never dipped into during that period go back to their slabs (their
 * memory to the kernel), and a slab that is wholly free is unmapped. A
 * stack freed on another thread than the one that made it goes to the
 * freeing thread's pool: a stack belongs to no thread. A pool over its
 * bound hands slab stacks, in whole batches, to a process-wide depot
 * (bounded) that a pool which runs out takes from before it makes new
 * stacks, so stacks that flow from one thread to another come back
 * without their pages being given back and faulted in again. */
#define FIB__STACK_POOL_MAX 256
#define FIB__STACK_POOL_CLASSES 8
#define FIB__STACK_QUIET_NS 1000000000ull

/* The pool's layout (stack.c has the rest of it), here for the hot paths
 * of get and put, which the coroutine layer inlines. */
struct fib__pool_class {
  struct fib__stack *head; /* LIFO through pool_next; NULL: empty */
  uint64_t key;            /* class_key of its stacks (the mode resolved:
                              MADVISE, MPROTECT or NONE); 0: slot free */
  uint32_t batch;          /* stacks its next miss takes from a slab:
                              doubles with each miss, up to SLAB_BATCH_MAX;
                              back to one when it leaves the hot slots
                              (classes taking turns beyond the hot ones get
                              no batches) */
};
/* The slots the fast paths look at: two, for a program with two sizes in
 * turn; a third would cost every get and put that misses the first two
 * another compare. */
#define FIB__POOL_HOT 2
_Static_assert(FIB__POOL_HOT == 2 && FIB__POOL_HOT < FIB__STACK_POOL_CLASSES,
               "the fast paths write out two slots; cold slots exist");

struct fib__pool {
  /* The classes, the hot ones first, then the cold ones most recently
   * used first (made hot, or created by a put), the free slots last: the
   * last class in use is the least recently used (up to the order among
   * the hot ones, above). */
  struct fib__pool_class cls[FIB__STACK_POOL_CLASSES];
  size_t count; /* stacks on the class lists */
  /* The quiet-period trim (trim_check): the fewest stacks pooled since
   * the window began, when it began (CLOCK_MONOTONIC_COARSE, ns), and the
   * puts over the bound left before the next look at the clock. */
  size_t low;
  uint64_t window;
  unsigned ticks;
  /* Puts over the bound that pass before the next try to hand a batch to
   * the depot, after a class's list was too short for one. */
  unsigned give_skip;
  unsigned long misses; /* its share of depot_misses */
  /* Stacks that munmap refused (a merged VMA that would split past the
   * mapping limit): kept, not lost, and tried again by the drain. Not
   * bounded: each one is a failed munmap. */
  struct fib__stack *spill;
  size_t spilled;
  int exit_hook; /* the thread-exit destructor is registered */
};

extern FIB__TLS struct fib__pool fib__tl_pool;

/* A stack of class `key` off this thread's pool's hot lists, handed out
 * as a get does (off any list, a plain coroutine's owner fields), or NULL
 * if neither hot class is `key` or its list is empty. Each slot written
 * out, not through a pointer to it: its fields are then addressed off the
 * thread pointer directly. */
static inline struct fib__stack *fib__stack_pop_hot(uint64_t key) {
  struct fib__pool *p = &fib__tl_pool;
  struct fib__stack *s;
  if (p->cls[0].key == key && (s = p->cls[0].head))
    p->cls[0].head = s->pool_next;
  else if (p->cls[1].key == key && (s = p->cls[1].head))
    p->cls[1].head = s->pool_next;
  else
    return NULL;
  if (--p->count < p->low) /* the quiet-period trim's low-water mark */
    p->low = p->count;
  s->pool_next = NULL;
  s->owner_id = 0;
  s->owner_kind = "coroutine";
  s->owner_name = NULL;
  return s;
}

/* s onto its class's list if that is a hot one and the pool has room: 1;
 * else 0, nothing done. */
static inline int fib__stack_push_hot(struct fib__stack *s) {
  struct fib__pool *p = &fib__tl_pool;
  uint64_t key = s->pool_key;
  if (p->count >= FIB__STACK_POOL_MAX)
    return 0;
  if (p->cls[0].key == key) {
    s->pool_next = p->cls[0].head;
    p->cls[0].head = s;
  } else if (p->cls[1].key == key) {
    s->pool_next = p->cls[1].head;
    p->cls[1].head = s;
  } else {
    return 0;
  }
  p->count++;
  return 1;
}

/*
 * fib__stack_get's and fib__stack_put's hot paths, inline where the
 * coroutine layer makes and frees coroutines (a call each, with the
 * caller's registers saved around it, cost as much as the pop or push):
 * take returns a stack of (usable, mode) as fib__stack_get hands it out,
 * or NULL (call fib__stack_get); give returns 1 if s is pooled, or 0
 * (call fib__stack_put). Neither does anything in a build where ASan or
 * memcheck is told of each get and put (stack.c does that).
 */
static inline struct fib__stack *fib__stack_take(size_t usable,
                                                 fib_guard_mode mode) {
#if FIB__STACK_TELLS
  (void)usable;
  (void)mode;
  return NULL;
#else
  /* Not probed yet (0): no class, so NULL, and the get probes. */
  if (mode == FIB_GUARD_AUTO)
    mode = (fib_guard_mode)__atomic_load_n(&fib__stack_auto_known,
                                           __ATOMIC_RELAXED);
  struct fib__stack *s = fib__stack_pop_hot(fib__stack_class(usable, mode));
  if (s && mode == FIB_GUARD_NONE) /* set afresh, as a get does */
    *(uint64_t *)(void *)s->lo = FIB__STACK_CANARY;
  return s;
#endif
}

static inline int fib__stack_give(struct fib__stack *s) {
#if FIB__STACK_TELLS
  (void)s;
  return 0;
#else
  return fib__stack_push_hot(s);
#endif
}

/* Stacks in this thread's pool (with any that munmap refused); how many
 * classes it holds; give them all back, and the depot's (unmapping wholly
 * free slabs). */
size_t fib__stack_pool_size(void);
size_t fib__stack_pool_classes(void);
void fib__stack_pool_drain(void);

/* Stacks in the depot (stack.c: batches that pools over their bound hand
 * over, for any thread's pool to take before it makes new ones). */
size_t fib__stack_depot_size(void);

/* Slabs mapped in the process now. */
long fib__stack_slab_count(void);

/* Whether vectored madvise (process_madvise on oneself) has worked here:
 * 1 yes, -1 no (qemu-user, valgrind, kernels before 5.10: one madvise per
 * range), 0 not tried yet. For tests that count system calls. */
int fib__stack_vectored_madvise(void);

/* Test seams. Seal: the slabs mapped now hand out no more stacks (the next
 * stack a pool lacks comes from a new slab, so a test reaches the system,
 * unless the depot has one: a test of one thread never fills it); they
 * are still unmapped once wholly free. Quiet: the quiet period (0:
 * the next check trims) and how many over-the-bound puts pass between two
 * looks at the clock (0: back to the defaults). Process-wide / per
 * thread. */
void fib__stack_seal_slabs(void);
void fib__stack_set_quiet(uint64_t ns, unsigned every);

#endif
