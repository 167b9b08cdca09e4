/* SPDX-License-Identifier: MIT */
/* stack.c -- mapping, guarding, pooling and budgeting stacks. */
#include "stack.h"
#include "arch/context.h"
#include "sanitize.h"
#include "sys.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif

size_t fib__stack_round_size(size_t requested, size_t fallback) {
  size_t size = requested ? requested : fallback;
  if (size < FIB_STACK_MIN || size > FIB_STACK_MAX)
    return 0;
  size_t page = fib__sys_page_size();
  return (size + page - 1) & ~(page - 1);
}

/* The guard must be at least a page and at least the compiler's probe
 * interval, so no probed frame can step over it. */
static size_t guard_size(void) {
  size_t page = fib__sys_page_size(), probe = fib__ctx_probe_interval();
  return probe > page ? (probe + page - 1) & ~(page - 1) : page;
}

/* ---- AUTO mode: probed on the first stack that asks for it */

enum { PROBE_UNKNOWN = 0 };
static atomic_int auto_mode; /* PROBE_UNKNOWN or a fib_guard_mode */

/* Whether the guard marker on page p really keeps it from being read.
 * qemu-user answers 0 to every madvise and installs nothing; a real guard
 * makes the kernel's own read of the page (write(2) from it) fail with
 * EFAULT. */
static int guard_is_real(const char *p) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return 0;
  ssize_t n = write(fds[1], p, 1);
  int real = n < 0 && errno == EFAULT;
  close(fds[0]);
  close(fds[1]);
  return real;
}

static fib_guard_mode probe_auto_mode(void);

fib_guard_mode fib__stack_auto_mode(void) {
  int m = atomic_load_explicit(&auto_mode, memory_order_relaxed);
  return m != PROBE_UNKNOWN ? (fib_guard_mode)m : probe_auto_mode();
}

__attribute__((noinline)) static fib_guard_mode probe_auto_mode(void) {
  int m;
  /* Probe on a scratch mapping, outside the fault-injection seam's count so
   * tests see the same call sequence whether or not this ran first. */
  size_t page = fib__sys_page_size();
  void *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return FIB_GUARD_MPROTECT; /* undecided; ask again next time */
  m = madvise(p, page, MADV_GUARD_INSTALL) == 0 && guard_is_real(p)
          ? FIB_GUARD_MADVISE
          : FIB_GUARD_MPROTECT;
  munmap(p, 2 * page);
  atomic_store(&auto_mode, m);
  return (fib_guard_mode)m;
}

/* ---- the mprotect mapping budget */

static pthread_once_t budget_once = PTHREAD_ONCE_INIT;
static long mprotect_budget;
static atomic_long mprotect_stacks;
static atomic_long budget_cap; /* test seam: 0, or a lower budget */

static void read_budget(void) {
  long max = 65530; /* the kernel's default, if /proc is not there */
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0) {
      buf[n] = 0;
      long v = strtol(buf, NULL, 10);
      if (v > 0)
        max = v;
    }
    close(fd);
  }
  /* Each guarded stack costs two mappings (guard + usable); leave an eighth
   * of the limit to the rest of the program (libraries, malloc arenas). */
  mprotect_budget = (max - max / 8) / 2;
}

long fib__stack_mprotect_budget(void) {
  pthread_once(&budget_once, read_budget);
  long cap = atomic_load_explicit(&budget_cap, memory_order_relaxed);
  return cap > 0 && cap < mprotect_budget ? cap : mprotect_budget;
}

void fib__stack_cap_mprotect_budget(long cap) {
  atomic_store_explicit(&budget_cap, cap, memory_order_relaxed);
}

long fib__stack_mprotect_count(void) { return atomic_load(&mprotect_stacks); }

/* ---- mapping */

static int map_stack(struct fib__stack **out, size_t usable,
                     fib_guard_mode mode) {
  size_t guard = mode == FIB_GUARD_NONE ? 0 : guard_size();
  size_t total = guard + usable;
  char *map;

  if (mode == FIB_GUARD_NONE) {
    /* Asked for by name: no guard, the canary (fib__stack_get) instead. */
    map = fib__sys_mmap(NULL, total, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK);
    if (map == MAP_FAILED)
      return FIB_ENOMEM;
  } else if (mode == FIB_GUARD_MPROTECT) {
    long budget = fib__stack_mprotect_budget();
    if (atomic_fetch_add(&mprotect_stacks, 1) >= budget) {
      atomic_fetch_sub(&mprotect_stacks, 1);
      return FIB_ENOMEM;
    }
    /* Map everything inaccessible, then open the usable part, so the guard
     * is never writable, not even for a moment. */
    map = fib__sys_mmap(NULL, total, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK);
    if (map == MAP_FAILED) {
      atomic_fetch_sub(&mprotect_stacks, 1);
      return FIB_ENOMEM;
    }
    if (fib__sys_mprotect(map + guard, usable, PROT_READ | PROT_WRITE) != 0) {
      fib__sys_munmap(map, total);
      atomic_fetch_sub(&mprotect_stacks, 1);
      return FIB_ENOMEM;
    }
  } else {
    /* Guard markers live in the page tables, not in a separate mapping:
     * neighbouring stacks merge into one VMA. Nobody has the address
     * between the two calls, so the guard is never reachable unguarded. */
    map = fib__sys_mmap(NULL, total, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK);
    if (map == MAP_FAILED)
      return FIB_ENOMEM;
    if (fib__sys_madvise(map, guard, MADV_GUARD_INSTALL) != 0) {
      int err = errno;
      fib__sys_munmap(map, total);
      /* EINVAL: this kernel has no guard markers (caller asked for them). */
      return err == EINVAL ? FIB_EINVAL : FIB_ENOMEM;
    }
  }

  struct fib__stack *s =
      (struct fib__stack *)((uintptr_t)(map + total - sizeof *s) &
                            ~(uintptr_t)15);
  s->map = map;
  s->map_size = total;
  s->guard_size = guard;
  s->usable_size = usable;
  s->lo = map + guard;
  s->mode = mode;
  s->owner_id = 0;
  s->owner_kind = "coroutine";
  s->owner_name = NULL;
  s->pool_next = NULL;
  s->vg_id = 0;
#if FIB__VALGRIND
  /* Tell memcheck this is a stack, so a switch onto it is not taken for a
   * huge stack-pointer move (pooled stacks stay registered). */
  s->vg_id = VALGRIND_STACK_REGISTER(s->lo, fib__stack_end(s));
#endif
  *out = s;
  return 0;
}

/* Unmap; 0 or -1. The descriptor is gone afterwards. */
static int unmap_stack(struct fib__stack *s) {
  fib_guard_mode mode = s->mode;
#if FIB__VALGRIND
  unsigned vg_id = s->vg_id;
#endif
#if FIB__ASAN
  /* Frames that never returned leave poisoned shadow behind; a later
   * mapping at this address must not inherit it. */
  ASAN_UNPOISON_MEMORY_REGION(s->lo, (size_t)(fib__stack_end(s) - s->lo));
#endif
  if (fib__sys_munmap(s->map, s->map_size) != 0)
    return -1; /* e.g. splitting a merged VMA past the mapping limit */
  if (mode == FIB_GUARD_MPROTECT)
    atomic_fetch_sub(&mprotect_stacks, 1);
#if FIB__VALGRIND
  VALGRIND_STACK_DEREGISTER(vg_id);
  (void)vg_id; /* the client request is empty on some arches */
#endif
  return 0;
}

/* ---- the per-thread pool
 *
 * A list for each class of stack, a class being a (usable size, guard
 * mode) pair, so a program that mixes sizes or modes finds each kind in
 * its own list instead of behind stacks of another kind. The class the
 * last get asked for is "hot": it sits at a fixed place in the pool, and
 * the fast paths of get and put look only at it, as they did when there
 * was one list; a get for another class swaps that class into the hot
 * place (get_slow).
 *
 * Pooled stacks keep their touched pages (no madvise on the spawn/exit
 * path); FIB__STACK_POOL_MAX bounds that memory, all classes together.
 * The pool lives in static TLS (tls.h), which glibc reserves sparingly for
 * dlopen'ed libraries: a handful of classes, not a table. */

struct pool_class {
  struct fib__stack *head; /* LIFO through pool_next; NULL: empty */
  uint32_t usable;         /* usable bytes of its stacks; 0: slot free */
  fib_guard_mode mode;     /* resolved: MADVISE, MPROTECT or NONE */
};
_Static_assert(FIB_STACK_MAX <= UINT32_MAX, "a class's size fits its field");

struct pool {
  struct pool_class hot; /* free only while every slot is */
  /* The other classes, most recently used first (made hot, or created by
   * a put), the free slots last: the last class in use is the least
   * recently used. */
  struct pool_class cold[FIB__STACK_POOL_CLASSES - 1];
  size_t count; /* stacks on the class lists: <= FIB__STACK_POOL_MAX */
  /* Stacks that munmap refused (a merged VMA that would split past the
   * mapping limit): kept, not lost, and tried again by the drain. Not
   * bounded: each one is a failed munmap. */
  struct fib__stack *spill;
  size_t spilled;
  int exit_hook; /* the thread-exit destructor is registered */
};

static FIB__TLS struct pool tl_pool;
static pthread_key_t pool_key;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

static int class_is(const struct pool_class *c, size_t usable,
                    fib_guard_mode mode) {
  return c->usable == usable && c->mode == mode;
}

static void spill(struct pool *p, struct fib__stack *s) {
  s->pool_next = p->spill;
  p->spill = s;
  p->spilled++;
}

/* Unmap, or if munmap refuses, keep it on the spill list. */
static void release(struct pool *p, struct fib__stack *s) {
  if (unmap_stack(s) != 0)
    spill(p, s);
}

/* A pooled stack handed out again: as map_stack leaves a fresh one. */
static void reuse(struct fib__stack *s) {
  s->pool_next = NULL;
  s->owner_id = 0;
  s->owner_kind = "coroutine";
  s->owner_name = NULL;
#if FIB__ASAN
  /* The previous user's frames that never returned (fib_exit, a
   * destroyed suspended coroutine) left poisoned redzones. */
  ASAN_UNPOISON_MEMORY_REGION(s->lo, (size_t)(fib__stack_end(s) - s->lo));
#endif
}

/* Unmap a class's stacks and free its slot. */
static void evict(struct pool *p, struct pool_class *c) {
  struct fib__stack *s = c->head;
  while (s) {
    struct fib__stack *next = s->pool_next;
    p->count--;
    release(p, s);
    s = next;
  }
  memset(c, 0, sizeof *c);
}

static void pool_free_all(struct pool *p) {
  struct fib__stack *retry = p->spill;
  p->spill = NULL;
  p->spilled = 0;
  evict(p, &p->hot);
  for (int i = 0; i < FIB__STACK_POOL_CLASSES - 1; i++)
    evict(p, &p->cold[i]);
  while (retry) {
    struct fib__stack *next = retry->pool_next;
    release(p, retry);
    retry = next;
  }
}

static void pool_thread_exit(void *arg) { pool_free_all(arg); }

static void pool_key_create(void) {
  (void)pthread_key_create(&pool_key, pool_thread_exit);
}

/* The cold class for (usable, mode), or NULL. */
static struct pool_class *find_cold(struct pool *p, size_t usable,
                                    fib_guard_mode mode) {
  for (int i = 0; i < FIB__STACK_POOL_CLASSES - 1; i++)
    if (class_is(&p->cold[i], usable, mode))
      return &p->cold[i];
  return NULL;
}

/* Room at the front of the cold classes: the ones before `upto` move one
 * place back, over it. (A loop, not memmove: usually it moves nothing, and
 * a call would cost the alternating program's get a full frame.) */
static void shift_cold(struct pool *p, struct pool_class *upto) {
  for (struct pool_class *c = upto; c > p->cold; c--)
    c[0] = c[-1];
}

/* Nothing pooled for this request: the spill list, else a new stack. The
 * checks here do not change once AUTO is probed, so a pooled stack, made
 * under them, needs none. */
__attribute__((noinline)) static int get_fresh(struct pool *p,
                                               struct fib__stack **out,
                                               size_t usable,
                                               fib_guard_mode mode) {
  for (struct fib__stack **link = &p->spill; *link; link = &(*link)->pool_next)
    if ((*link)->usable_size == usable && (*link)->mode == mode) {
      struct fib__stack *s = *link;
      *link = s->pool_next;
      p->spilled--;
      reuse(s);
      *out = s;
      return 0;
    }
  if (!fib__guard_mode_known(mode)) /* AUTO is resolved by now */
    return FIB_EINVAL;
  /* Guard markers asked for where they do not work (an old kernel, or
   * qemu-user's madvise that does nothing): refused, never absent. */
  if (mode == FIB_GUARD_MADVISE && fib__stack_auto_mode() != FIB_GUARD_MADVISE)
    return FIB_EINVAL;
  return map_stack(out, usable, mode);
}

/* The class of (usable, mode), whose list was `s`, has just become hot:
 * a stack from it, else from get_fresh. */
static inline int take_hot(struct pool *p, struct fib__stack *s,
                           struct fib__stack **out, size_t usable,
                           fib_guard_mode mode) {
  p->hot.usable = (uint32_t)usable;
  p->hot.mode = mode;
  p->hot.head = s;
  if (!s)
    return get_fresh(p, out, usable, mode);
  p->hot.head = s->pool_next;
  p->count--;
  reuse(s);
  *out = s;
  return 0;
}

/* get_slow for a class further back than cold[0]. */
__attribute__((noinline)) static int
get_promote(struct pool *p, struct pool_class *c, struct fib__stack **out,
            size_t usable, fib_guard_mode mode) {
  struct fib__stack *s = c->head;
  shift_cold(p, c);
  p->cold[0] = p->hot;
  return take_hot(p, s, out, usable, mode);
}

/* Not a stack of the hot class: another class becomes hot if there is
 * one for the request (even if empty: its puts then take the fast path),
 * and the hot one becomes the first cold one. Hot is in use here (else
 * no class is), so cold[0] is too. A program that alternates between two
 * classes finds the other at cold[0]: a swap, and calls only as tail
 * calls, so no call frame either. */
__attribute__((noinline)) static int get_slow(struct pool *p,
                                              struct fib__stack **out,
                                              size_t usable,
                                              fib_guard_mode mode) {
  struct pool_class *c =
      class_is(&p->hot, usable, mode) ? NULL : find_cold(p, usable, mode);
  if (!c)
    return get_fresh(p, out, usable, mode);
  if (c != &p->cold[0])
    return get_promote(p, c, out, usable, mode);
  struct fib__stack *s = c->head;
  p->cold[0] = p->hot;
  return take_hot(p, s, out, usable, mode);
}

int fib__stack_get(struct fib__stack **out, size_t usable,
                   fib_guard_mode mode) {
  if (mode == FIB_GUARD_AUTO) /* MADVISE or MPROTECT, never NONE */
    mode = fib__stack_auto_mode();
  /* The hot path: the request's class is the hot one and has a stack
   * (which was made under get_fresh's checks: none needed here). */
  struct pool *p = &tl_pool;
  struct fib__stack *s = p->hot.head;
  if (s && p->hot.usable == usable && p->hot.mode == mode) {
    p->hot.head = s->pool_next;
    p->count--;
    reuse(s);
    *out = s;
  } else {
    int err = get_slow(p, out, usable, mode);
    if (err)
      return err;
  }
  if (mode == FIB_GUARD_NONE) /* fresh, or from the pool: set it afresh */
    *(uint64_t *)(void *)(*out)->lo = FIB__STACK_CANARY;
#if FIB__ASAN
  /* LeakSanitizer scans only the running stack of each thread: a live
   * stack is a root region, so what only a suspended fiber points to is
   * not reported as leaked. */
  __lsan_register_root_region((*out)->lo,
                              (size_t)(fib__stack_end(*out) - (*out)->lo));
#endif
  return 0;
}

/* Not the hot class, or the pool is full. */
__attribute__((noinline)) static void put_slow(struct pool *p,
                                               struct fib__stack *s) {
  if (!p->exit_hook) {
    /* First stack pooled on this thread: free the pool at thread exit. */
    pthread_once(&pool_key_once, pool_key_create);
    p->exit_hook = pthread_setspecific(pool_key, p) == 0;
  }
  size_t usable = s->usable_size;
  fib_guard_mode mode = s->mode;
  struct pool_class *c =
      class_is(&p->hot, usable, mode) ? &p->hot : find_cold(p, usable, mode);
  if (!c) {
    if (!p->hot.usable) { /* the first class */
      c = &p->hot;
    } else {
      /* A new class goes first among the cold ones; if they are all in
       * use, the least recently used (the last) gives way, its stacks
       * unmapped. Never the hot one: a get asked for it last. */
      c = &p->cold[FIB__STACK_POOL_CLASSES - 2];
      if (c->usable)
        evict(p, c);
      shift_cold(p, c);
      c = &p->cold[0];
    }
    c->head = NULL;
    c->usable = (uint32_t)usable;
    c->mode = mode;
  }
  if (p->count >= FIB__STACK_POOL_MAX) {
    /* Full: a stack of the least recently used other cold class that has
     * any makes room; if there is none, this stack goes instead. */
    struct pool_class *victim = NULL;
    for (int i = FIB__STACK_POOL_CLASSES - 2; i >= 0 && !victim; i--)
      if (p->cold[i].head && &p->cold[i] != c)
        victim = &p->cold[i];
    if (!victim) {
      release(p, s);
      return;
    }
    struct fib__stack *v = victim->head;
    victim->head = v->pool_next;
    p->count--;
    release(p, v);
  }
  s->pool_next = c->head;
  c->head = s;
  p->count++;
}

void fib__stack_put(struct fib__stack *s) {
  struct pool *p = &tl_pool;
#if FIB__ASAN
  __lsan_unregister_root_region(s->lo, (size_t)(fib__stack_end(s) - s->lo));
#endif
  if (s->usable_size == p->hot.usable && s->mode == p->hot.mode &&
      p->count < FIB__STACK_POOL_MAX) {
    s->pool_next = p->hot.head;
    p->hot.head = s;
    p->count++;
  } else {
    put_slow(p, s);
  }
}

size_t fib__stack_pool_size(void) { return tl_pool.count + tl_pool.spilled; }

size_t fib__stack_pool_classes(void) {
  size_t n = tl_pool.hot.usable != 0;
  for (int i = 0; i < FIB__STACK_POOL_CLASSES - 1; i++)
    n += tl_pool.cold[i].usable != 0;
  return n;
}

void fib__stack_pool_drain(void) { pool_free_all(&tl_pool); }

/* ---- description (fib_stack_info) */

/* Bytes from the top of the stack down to its lowest resident page. */
static size_t high_water(const struct fib__stack *s) {
  size_t page = fib__sys_page_size();
  size_t pages = s->usable_size / page;
  unsigned char vec[256];
  /* FIB_GUARD_NONE: the canary keeps the lowest page resident, so it says
   * nothing; start above it, and count a stack that reached the page just
   * above as having reached it too (an upper bound, never an under-count). */
  size_t start = fib__stack_canary(s) && pages > 1 ? 1 : 0;
  /* From the bottom up, in chunks: the first resident page is the mark. */
  for (size_t first = start; first < pages; first += sizeof vec) {
    size_t n = pages - first < sizeof vec ? pages - first : sizeof vec;
    if (mincore(s->lo + first * page, n * page, vec) != 0)
      return 0; /* cannot tell */
    for (size_t i = 0; i < n; i++)
      if (vec[i] & 1)
        return (first + i == 1 && start ? pages : pages - first - i) * page;
  }
  return 0;
}

void fib__stack_describe(const struct fib__stack *s, fib_stack_info *out) {
  out->lo = s->lo;
  out->hi = s->lo + s->usable_size;
  out->size = s->usable_size;
  out->guard_size = s->guard_size;
  out->guard = s->mode;
  out->high_water = high_water(s);
  out->reserved[0] = out->reserved[1] = 0;
}
