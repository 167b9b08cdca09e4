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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#if FIB__VALGRIND
#include <valgrind/memcheck.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

size_t fib__stack_page_mask;

/* fib__stack_round_size's first call: `size` is in range. */
__attribute__((noinline, cold)) size_t fib__stack_round_first(size_t size) {
  size_t mask = fib__sys_page_size() - 1;
  __atomic_store_n(&fib__stack_page_mask, mask, __ATOMIC_RELAXED);
  return (size + mask) & ~mask;
}

/* A class of stack, (usable size, guard mode), as one word: usable sizes
 * fit in 32 bits (FIB_STACK_MAX), and 0 is no class. */
static inline uint64_t class_key(size_t usable, fib_guard_mode mode) {
  return fib__stack_class(usable, mode);
}
_Static_assert(FIB_STACK_MAX <= UINT32_MAX, "a usable size fits 32 bits");

/* The guard must be at least a page and at least the compiler's probe
 * interval, so no probed frame can step over it. */
static size_t guard_size(void) {
  size_t page = fib__sys_page_size(), probe = fib__ctx_probe_interval();
  return probe > page ? (probe + page - 1) & ~(page - 1) : page;
}

/* ---- AUTO mode: probed on the first stack that asks for it */

enum { PROBE_UNKNOWN = 0 };
int fib__stack_auto_known; /* PROBE_UNKNOWN or a fib_guard_mode (atomic) */

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
  int m = __atomic_load_n(&fib__stack_auto_known, __ATOMIC_RELAXED);
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
  __atomic_store_n(&fib__stack_auto_known, m, __ATOMIC_SEQ_CST);
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
  s->pool_key = class_key(usable, mode);
  s->owner_id = 0;
  s->owner_kind = "coroutine";
  s->owner_name = NULL;
  s->pool_next = NULL;
  s->slab = NULL;
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

/* ---- slabs: many stacks of one class in one mapping
 *
 * A fresh stack used to cost an mmap, a madvise for its guard, a page
 * fault for its top page and, past the pool, a munmap: with a million
 * fibers alive at once, four kernel entries per fiber. A slab is one
 * mapping cut into `n` stacks of one class (usable size, guard mode) side
 * by side, each with its guard at its bottom:
 *
 *     map
 *      | guard | stack 0 ... |desc| guard | stack 1 ... |desc| ...
 *
 * Its guards are installed when it is mapped, all of them in one vectored
 * madvise (process_madvise), before anyone has an address in it; the top
 * pages of the stacks a pool takes together are populated together
 * (MADV_POPULATE_WRITE, vectored again) instead of faulting one by one.
 * Slabs start small and double (SLAB_FIRST up to SLAB_BYTES_MAX), so a
 * program pays for slabs in proportion to the stacks it uses.
 *
 * Only MADVISE and NONE stacks come from slabs: an mprotect guard splits
 * the mapping at every stack whatever we do (two mappings per stack), so
 * an MPROTECT stack keeps a mapping of its own and the budget counts it as
 * before.
 *
 * Slabs are the process's, under one mutex taken only on the slow paths:
 * a pool takes stacks in batches (up to SLAB_BATCH_MAX at once) and gives
 * them back in batches, when it trims or drains. A stack given back has
 * its memory returned (MADV_DONTNEED, vectored: the guard markers stay) and
 * waits in its slab's free list for the next pool that needs one; a slab
 * whose stacks are all given back is unmapped. */

/* The batch arrays live in the frame of whoever spawns, a fiber most of
 * the time: kept to ~400 bytes so they stay in the page its frames already
 * use (a 64-entry batch cost a parent fiber a second stack page). */
enum {
  SLAB_FIRST = 16,     /* stacks in a class's first slab */
  SLAB_BATCH_MAX = 16, /* stacks a pool takes at once, at most */
  SLAB_IOV = 16,       /* ranges per vectored madvise from a frame */
  GUARD_IOV = 512,     /* ranges per vectored guard install (slab_map's
                          static array, under slab_lock; the kernel takes
                          up to IOV_MAX, 1024) */
};
#define SLAB_BYTES_MAX ((size_t)64 << 20) /* a slab's size, at most (unless
                                             one stack is bigger) */

struct slab_class;

struct fib__slab {
  char *map;
  size_t size;            /* bytes mapped: n * stride */
  size_t stride;          /* guard + usable */
  struct slab_class *cls;
  struct fib__slab *prev, *next; /* in cls->slabs; those with stacks to hand
                                    out come first */
  uint32_t n;             /* stacks it holds */
  uint32_t carved;        /* the top `carved` stacks have been handed out */
  uint32_t out;           /* handed out and not given back: 0 = wholly free */
  uint32_t free_head;     /* given back: index + 1, linked by link[]; 0 none */
  int sealed;             /* test seam: hands out nothing more */
  uint32_t link[];        /* the free list's links, one per stack */
};

/* The depot: pooled stacks in whole batches that any thread's pool may
 * take (see "the depot" below). */
enum {
  DEPOT_BATCH = 32, /* stacks in a batch */
  DEPOT_MAX = 16,   /* batches a class's depot holds, at most */
};

struct slab_class {
  size_t usable;
  fib_guard_mode mode;
  struct fib__slab *slabs;
  size_t avail;           /* stacks its unsealed slabs could hand out now */
  uint32_t next_n;        /* stacks in its next slab */
  uint32_t ndepot;        /* batches in the depot */
  uint32_t depot_low;     /* the fewest since the last trim (trim_check) */
  struct slab_class *next;
  struct fib__stack *depot[DEPOT_MAX]; /* DEPOT_BATCH stacks each, through
                                          pool_next, the last's NULL */
};

static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under TSan, the lock is the allocator's, not the program's: taking it
 * must not order two threads' fibers (it would hide their races, as a
 * malloc that synchronised would), so TSan ignores its synchronisation
 * and the accesses it protects, and a stack handed out is new memory to
 * it (whoever ran on it before). */
#if FIB__TSAN
void AnnotateIgnoreSyncBegin(const char *file, int line);
void AnnotateIgnoreSyncEnd(const char *file, int line);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#endif

static void slab_lock_enter(void) {
#if FIB__TSAN
  AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
  AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  pthread_mutex_lock(&slab_lock);
}

static void slab_lock_leave(void) {
  pthread_mutex_unlock(&slab_lock);
#if FIB__TSAN
  AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
  AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#endif
}
static struct slab_class *slab_classes; /* under slab_lock, never freed */
static atomic_long slab_count;
static pthread_once_t slab_fork_once = PTHREAD_ONCE_INIT;

/* fork() from a thread while another holds the lock would leave the child
 * a lock nobody unlocks: hold it across fork. */
static void slab_lock_take(void) { slab_lock_enter(); }
static void slab_lock_drop(void) { slab_lock_leave(); }
static void slab_fork_hooks(void) {
  (void)pthread_atfork(slab_lock_take, slab_lock_drop, slab_lock_drop);
}

/* A statistic: relaxed, so that it orders nothing (under TSan an
 * ordering here would hide races between threads that make stacks). */
long fib__stack_slab_count(void) {
  return atomic_load_explicit(&slab_count, memory_order_relaxed);
}

static size_t slab_guard(fib_guard_mode mode) {
  return mode == FIB_GUARD_NONE ? 0 : guard_size();
}

/* Whether the kernel takes vectored madvise (process_madvise on oneself):
 * 0 unknown, 1 yes, -1 no (one madvise per range from then on). */
static atomic_int vec_ok;
/* Whether MADV_POPULATE_WRITE exists (Linux 5.14): 0 unknown, -1 no. */
static atomic_int populate_ok;

int fib__stack_vectored_madvise(void) {
  return atomic_load_explicit(&vec_ok, memory_order_relaxed);
}

/* madvise(advice) over the n ranges; 0, or -1 with errno. One system call
 * per GUARD_IOV ranges where the kernel can, else one per range. */
static int madvise_ranges(struct iovec *iov, size_t n, int advice) {
  size_t done = 0;
  if (atomic_load_explicit(&vec_ok, memory_order_relaxed) >= 0) {
    while (done < n) {
      size_t k = n - done < GUARD_IOV ? n - done : GUARD_IOV;
      size_t want = 0;
      for (size_t i = 0; i < k; i++)
        want += iov[done + i].iov_len;
      long r = fib__sys_madvise_vec(iov + done, k, advice);
      if (r == (long)want) {
        atomic_store_explicit(&vec_ok, 1, memory_order_relaxed);
        done += k;
        continue;
      }
      if (r < 0 && errno == ENOMEM)
        return -1; /* a real failure: no point in trying range by range */
      if (r < 0 && atomic_load_explicit(&vec_ok, memory_order_relaxed) == 0 &&
          (errno == EINVAL || errno == ENOSYS || errno == EBADF ||
           errno == EPERM))
        atomic_store_explicit(&vec_ok, -1, memory_order_relaxed);
      break; /* the rest one by one (the advice is idempotent) */
    }
  }
  for (; done < n; done++)
    if (fib__sys_madvise(iov[done].iov_base, iov[done].iov_len, advice) != 0)
      return -1;
  return 0;
}

static char *slab_stack_map(const struct fib__slab *sl, uint32_t i) {
  return sl->map + (size_t)i * sl->stride;
}

/* Map a slab for `cls` and install its guards; NULL if it cannot (errno
 * set: EINVAL from the guard install means no guard markers here). Under
 * slab_lock. */
static struct fib__slab *slab_map(struct slab_class *cls) {
  size_t guard = slab_guard(cls->mode), stride = guard + cls->usable;
  uint32_t n = cls->next_n;
  if ((size_t)n * stride > SLAB_BYTES_MAX)
    n = SLAB_BYTES_MAX / stride > 0 ? (uint32_t)(SLAB_BYTES_MAX / stride) : 1;
  struct fib__slab *sl =
      fib__sys_malloc(sizeof *sl + (size_t)n * sizeof sl->link[0]);
  if (!sl) {
    errno = ENOMEM;
    return NULL;
  }
  char *map = fib__sys_mmap(NULL, (size_t)n * stride, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                                MAP_STACK);
  if (map == MAP_FAILED) {
    fib__sys_free(sl);
    errno = ENOMEM;
    return NULL;
  }
  if (guard) {
    /* Every guard before anyone has an address in the slab: no stack is
     * ever reachable unguarded. Many per call: a million stacks took
     * 62,500 calls of 16 ranges. The array is static, under slab_lock,
     * not in the frame of whoever spawns (a fiber's stack). */
    static struct iovec iov[GUARD_IOV];
    for (uint32_t i = 0; i < n; i += GUARD_IOV) {
      uint32_t k = n - i < GUARD_IOV ? n - i : GUARD_IOV;
      for (uint32_t j = 0; j < k; j++) {
        iov[j].iov_base = map + (size_t)(i + j) * stride;
        iov[j].iov_len = guard;
      }
      if (madvise_ranges(iov, k, MADV_GUARD_INSTALL) != 0) {
        int err = errno;
        fib__sys_munmap(map, (size_t)n * stride);
        fib__sys_free(sl);
        errno = err;
        return NULL;
      }
    }
  }
  sl->map = map;
  sl->size = (size_t)n * stride;
  sl->stride = stride;
  sl->cls = cls;
  sl->n = n;
  sl->carved = 0;
  sl->out = 0;
  sl->free_head = 0;
  sl->sealed = 0;
  sl->prev = NULL;
  sl->next = cls->slabs;
  if (cls->slabs)
    cls->slabs->prev = sl;
  cls->slabs = sl;
  cls->avail += n;
  if (cls->next_n < UINT32_MAX / 2)
    cls->next_n *= 2;
  atomic_fetch_add_explicit(&slab_count, 1, memory_order_relaxed);
  return sl;
}

static void slab_unlink(struct fib__slab *sl) {
  struct slab_class *cls = sl->cls;
  if (sl->prev)
    sl->prev->next = sl->next;
  else
    cls->slabs = sl->next;
  if (sl->next)
    sl->next->prev = sl->prev;
  sl->prev = sl->next = NULL;
}

static void slab_to_front(struct fib__slab *sl) {
  struct slab_class *cls = sl->cls;
  if (cls->slabs == sl)
    return;
  slab_unlink(sl);
  sl->next = cls->slabs;
  if (cls->slabs)
    cls->slabs->prev = sl;
  cls->slabs = sl;
}

/* What a slab could hand out now. */
static size_t slab_avail(const struct fib__slab *sl) {
  return sl->sealed ? 0 : (size_t)(sl->n - sl->out);
}

/* Unmap a wholly free slab, unlinked already; 0, or -1 if munmap refused
 * (then the caller links it back). Outside slab_lock. */
static int slab_unmap(struct fib__slab *sl) {
  if (fib__sys_munmap(sl->map, sl->size) != 0)
    return -1;
  atomic_fetch_sub_explicit(&slab_count, 1, memory_order_relaxed);
#if FIB__TSAN /* its header was read under the lock TSan ignores */
  AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  fib__sys_free(sl);
#if FIB__TSAN
  AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
  return 0;
}

static struct slab_class *slab_class_of(size_t usable, fib_guard_mode mode) {
  for (struct slab_class *c = slab_classes; c; c = c->next)
    if (c->usable == usable && c->mode == mode)
      return c;
  struct slab_class *c = fib__sys_malloc(sizeof *c);
  if (!c)
    return NULL;
  c->usable = usable;
  c->mode = mode;
  c->slabs = NULL;
  c->avail = 0;
  c->next_n = SLAB_FIRST;
  c->ndepot = 0;
  c->depot_low = 0;
  c->next = slab_classes;
  slab_classes = c;
  return c;
}

/* The descriptor of a stack just taken from its slab. */
static struct fib__stack *slab_stack_init(struct fib__slab *sl, uint32_t i) {
  char *map = slab_stack_map(sl, i);
#if FIB__TSAN
  /* Fresh memory for TSan: its mmap resets the shadow, as from this
   * thread, so the stack's last user (maybe another thread's fiber, the
   * handing over unseen: see slab_lock_enter) races with nobody. The
   * guard goes back in. Outside the seam: a TSan-only step, which tests
   * counting calls must not see. */
  if (mmap(map, sl->stride, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK | MAP_FIXED,
           -1, 0) == MAP_FAILED ||
      (sl->stride > sl->cls->usable &&
       madvise(map, sl->stride - sl->cls->usable, MADV_GUARD_INSTALL) != 0))
    fib__fatal("TSan build: cannot renew a stack's memory");
#endif
  size_t guard = sl->stride - sl->cls->usable;
  struct fib__stack *s =
      (struct fib__stack *)((uintptr_t)(map + sl->stride - sizeof *s) &
                            ~(uintptr_t)15);
  s->map = map;
  s->map_size = sl->stride;
  s->guard_size = guard;
  s->usable_size = sl->cls->usable;
  s->lo = map + guard;
  s->mode = sl->cls->mode;
  s->pool_key = class_key(s->usable_size, s->mode);
  s->owner_id = 0;
  s->owner_kind = "coroutine";
  s->owner_name = NULL;
  s->pool_next = NULL;
  s->slab = sl;
  s->vg_id = 0;
#if FIB__VALGRIND
  s->vg_id = VALGRIND_STACK_REGISTER(s->lo, fib__stack_end(s));
#endif
  return s;
}

/*
 * Take up to `want` stacks of (usable, mode) from the slabs (at least one,
 * mapping a new slab if none has one to give), linked through pool_next.
 * Returns how many, or FIB_ENOMEM / FIB_EINVAL (no guard markers).
 */
static int slab_take(size_t usable, fib_guard_mode mode, uint32_t want,
                     struct fib__stack **list) {
  struct {
    struct fib__slab *sl;
    uint32_t i;
  } got[SLAB_BATCH_MAX];
  if (want > SLAB_BATCH_MAX)
    want = SLAB_BATCH_MAX;
  pthread_once(&slab_fork_once, slab_fork_hooks);
  slab_lock_enter();
  struct slab_class *cls = slab_class_of(usable, mode);
  if (!cls) {
    slab_lock_leave();
    return FIB_ENOMEM;
  }
  if (!cls->avail && !slab_map(cls)) {
    int err = errno == EINVAL ? FIB_EINVAL : FIB_ENOMEM;
    slab_lock_leave();
    return err;
  }
  /* Slabs with stacks to hand out are at the front (a new one, or one that
   * was given a stack back). Given-back stacks first: the memory of the
   * uncarved ones has never been touched. */
  uint32_t n = 0;
  for (struct fib__slab *sl = cls->slabs; sl && n < want && cls->avail;
       sl = sl->next) {
    if (sl->sealed)
      continue;
    while (n < want && sl->free_head) {
      uint32_t i = sl->free_head - 1;
      sl->free_head = sl->link[i];
      got[n].sl = sl;
      got[n++].i = i;
      sl->out++;
      cls->avail--;
    }
    while (n < want && sl->carved < sl->n) {
      /* From the top down, as separate mappings (placed top-down) came:
       * a later stack lies below an earlier one. gdb, following `fiber bt`
       * from the running fiber into a suspended one, takes a frame that
       * lies below the running one for a corrupt stack and stops. */
      got[n].sl = sl;
      got[n++].i = sl->n - 1 - sl->carved++;
      sl->out++;
      cls->avail--;
    }
  }
  slab_lock_leave();

  /* Their top pages (descriptor, records, first frames) in one go rather
   * than a fault each. Best effort: a failure only means the faults come
   * after all. A lone stack is left to its fault (one kernel entry
   * either way). */
  if (n > 1 && atomic_load_explicit(&populate_ok, memory_order_relaxed) >= 0) {
    size_t page = fib__sys_page_size();
    struct iovec iov[SLAB_BATCH_MAX];
    for (uint32_t k = 0; k < n; k++) {
      iov[k].iov_base = slab_stack_map(got[k].sl, got[k].i) +
                        got[k].sl->stride - page;
      iov[k].iov_len = page;
    }
    if (madvise_ranges(iov, n, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
      atomic_store_explicit(&populate_ok, -1, memory_order_relaxed);
  }
  struct fib__stack *head = NULL;
  for (uint32_t k = n; k-- > 0;) {
    struct fib__stack *s = slab_stack_init(got[k].sl, got[k].i);
    s->pool_next = head;
    head = s;
  }
  *list = head;
  return (int)n;
}

/*
 * Give back the stacks on `list` (through pool_next; all from slabs):
 * their memory goes back to the kernel, they wait in their slabs for the
 * next taker, and a slab left wholly free is unmapped.
 */
static void slab_give(struct fib__stack *list) {
  while (list) {
    struct fib__slab *sl[SLAB_IOV];
    uint32_t idx[SLAB_IOV];
    struct iovec iov[SLAB_IOV];
    size_t n = 0;
    for (; list && n < SLAB_IOV; list = list->pool_next, n++) {
      struct fib__stack *s = list;
      sl[n] = s->slab;
      idx[n] = (uint32_t)((size_t)(s->map - s->slab->map) / s->slab->stride);
      iov[n].iov_base = s->lo;
      iov[n].iov_len = (size_t)(fib__stack_end(s) - s->lo);
#if FIB__ASAN
      /* Frames that never returned leave poisoned shadow behind; the
       * next taker of this stretch must not inherit it. */
      ASAN_UNPOISON_MEMORY_REGION(s->lo, iov[n].iov_len);
#endif
#if FIB__VALGRIND
      VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
    }
    /* Before the stacks are published again: once in a free list another
     * thread may take one. The descriptors are gone after this. A failure
     * leaves the memory in place: still correct, only not returned. */
    (void)madvise_ranges(iov, n, MADV_DONTNEED);

    struct fib__slab *unmap[SLAB_IOV];
    size_t nunmap = 0;
    slab_lock_enter();
    for (size_t k = 0; k < n; k++) {
      struct fib__slab *s = sl[k];
      s->link[idx[k]] = s->free_head;
      s->free_head = idx[k] + 1;
      s->out--;
      if (!s->sealed)
        s->cls->avail++;
      if (s->out == 0) { /* wholly free: back to the kernel */
        s->cls->avail -= slab_avail(s);
        slab_unlink(s);
        unmap[nunmap++] = s;
      } else {
        slab_to_front(s);
      }
    }
    slab_lock_leave();
    for (size_t k = 0; k < nunmap; k++)
      if (slab_unmap(unmap[k]) != 0) {
        /* munmap refused (the mapping limit): keep it, every stack free;
         * the next taker, or a later drain, finds it */
        slab_lock_enter();
        struct slab_class *cls = unmap[k]->cls;
        unmap[k]->next = cls->slabs;
        unmap[k]->prev = NULL;
        if (cls->slabs)
          cls->slabs->prev = unmap[k];
        cls->slabs = unmap[k];
        cls->avail += slab_avail(unmap[k]);
        slab_lock_leave();
      }
  }
}

/* ---- the depot
 *
 * A stack goes back to the pool of the thread that frees it, so where one
 * thread spawns and another finishes what it spawned (two workers, one
 * stealing), one pool runs dry and takes fresh stacks from the slabs
 * (pages populated, zeroed by the kernel) while the other fills up. The
 * depot evens that out without giving pages back: a pool over its bound
 * (FIB__STACK_POOL_MAX) hands the top DEPOT_BATCH stacks of a slab class
 * to the depot, whole, once another thread's pool has gone to the slabs
 * for want of stacks (depot_misses), and a pool that misses takes a
 * batch from it before it goes to the slabs. Both take slab_lock once per
 * batch. The depot holds at most DEPOT_MAX batches a class (a pool keeps
 * what does not fit, as before); batches nobody took during a quiet
 * period go back to their slabs with the trim, and a drain or a thread's
 * exit gives the depot back whole. Stacks of their own mappings
 * (FIB_GUARD_MPROTECT) stay with their thread's pool. */

/* ndepot is written under slab_lock and read without it (whether a pool
 * should try to hand a batch over: a hint, so relaxed). */
static void depot_set(struct slab_class *cls, uint32_t n) {
  __atomic_store_n(&cls->ndepot, n, __ATOMIC_RELAXED);
}

static int depot_full(const struct slab_class *cls) {
  return __atomic_load_n(&cls->ndepot, __ATOMIC_RELAXED) >= DEPOT_MAX;
}

/* Under TSan: `s`, just taken from the depot, as new memory (as
 * slab_take's stacks): another thread's fibers ran on it, the handing
 * over unseen (slab_lock_enter). Under the lock: its accesses are
 * ignored. */
static struct fib__stack *depot_renew(struct fib__stack *s) {
#if FIB__TSAN
  struct fib__slab *sl = s->slab;
  uint32_t i = (uint32_t)((size_t)(s->map - sl->map) / sl->stride);
  return slab_stack_init(sl, i);
#else
  return s;
#endif
}

/* A batch of `usable`/`mode` stacks from the depot, linked through
 * pool_next (DEPOT_BATCH of them), or NULL. */
static struct fib__stack *depot_take(size_t usable, fib_guard_mode mode) {
  struct fib__stack *batch = NULL;
  pthread_once(&slab_fork_once, slab_fork_hooks);
  slab_lock_enter();
  struct slab_class *cls = slab_classes;
  while (cls && (cls->usable != usable || cls->mode != mode))
    cls = cls->next;
  if (cls && cls->ndepot) {
    uint32_t n = cls->ndepot - 1;
    batch = cls->depot[n];
    depot_set(cls, n);
    if (n < cls->depot_low)
      cls->depot_low = n;
#if FIB__TSAN
    struct fib__stack **link = &batch;
    while (*link) {
      struct fib__stack *next = (*link)->pool_next;
      *link = depot_renew(*link);
      link = &(*link)->pool_next;
      *link = next;
    }
#else
    (void)depot_renew;
#endif
  }
  slab_lock_leave();
  return batch;
}

/* Hand `batch` (DEPOT_BATCH stacks of one slab class, through pool_next,
 * the last's NULL) to the depot: 0, or -1 if it is full. */
static int depot_give(struct fib__stack *batch) {
  struct slab_class *cls = batch->slab->cls;
  int ok = 0;
  slab_lock_enter();
  if (cls->ndepot < DEPOT_MAX) {
    cls->depot[cls->ndepot] = batch;
    depot_set(cls, cls->ndepot + 1);
  } else {
    ok = -1;
  }
  slab_lock_leave();
  return ok;
}

/* Give back to the slabs the depot's batches that nobody took during the
 * last quiet period (`now`: a look at the clock, see trim_check), or all
 * of them (`now` 0). */
static void depot_trim(uint64_t now, uint64_t quiet) {
  static uint64_t window; /* under slab_lock: when the period began */
  struct fib__stack *give = NULL;
  slab_lock_enter();
  if (now && now - window < quiet) {
    slab_lock_leave();
    return;
  }
  window = now;
  for (struct slab_class *cls = slab_classes; cls; cls = cls->next) {
    uint32_t n = now ? cls->depot_low : cls->ndepot;
    for (uint32_t k = 0; k < n; k++) {
      struct fib__stack *b = cls->depot[cls->ndepot - 1];
      depot_set(cls, cls->ndepot - 1);
      struct fib__stack *last = b;
      while (last->pool_next)
        last = last->pool_next;
      last->pool_next = give;
      give = b;
    }
    cls->depot_low = cls->ndepot;
  }
  slab_lock_leave();
  slab_give(give);
}

size_t fib__stack_depot_size(void) {
  size_t n = 0;
  slab_lock_enter();
  for (struct slab_class *cls = slab_classes; cls; cls = cls->next)
    n += (size_t)cls->ndepot * DEPOT_BATCH;
  slab_lock_leave();
  return n;
}

/* Unmap every wholly free slab (one whose munmap was refused before). */
static void slab_reap(void) {
  slab_lock_enter();
  for (struct slab_class *c = slab_classes; c; c = c->next) {
    struct fib__slab *sl = c->slabs;
    while (sl) {
      struct fib__slab *next = sl->next;
      if (sl->out == 0 && fib__sys_munmap(sl->map, sl->size) == 0) {
        c->avail -= slab_avail(sl);
        slab_unlink(sl);
        atomic_fetch_sub_explicit(&slab_count, 1, memory_order_relaxed);
        fib__sys_free(sl);
      }
      sl = next;
    }
  }
  slab_lock_leave();
}

void fib__stack_seal_slabs(void) {
  slab_lock_enter();
  for (struct slab_class *c = slab_classes; c; c = c->next) {
    for (struct fib__slab *sl = c->slabs; sl; sl = sl->next)
      sl->sealed = 1;
    c->avail = 0;
  }
  slab_lock_leave();
}

/* ---- the per-thread pool
 *
 * A list for each class of stack, a class being a (usable size, guard
 * mode) pair, so a program that mixes sizes or modes finds each kind in
 * its own list instead of behind stacks of another kind. The classes in
 * the first FIB__POOL_HOT slots are "hot": the fast paths of get and put look
 * only at them, so a program with one stack size, or two in turn (a
 * fiber size and a coroutine size, say), never leaves them; a get for a
 * class further back moves it to the front (get_slow), and the hot class
 * in the last hot slot becomes the first cold one. A get served by the
 * second hot slot moves nothing: two classes taking turns stay where they
 * are, which keeps the fast path to a compare more than with one. The
 * order among the two hot classes is therefore not strictly the order of
 * use (the one in slot 1 may have been used last); the eviction and the
 * trim, which take the last classes first, see it that way.
 *
 * Pooled stacks keep their touched pages (no madvise on the spawn/exit
 * path). FIB__STACK_POOL_MAX stacks, all classes together, are kept for
 * good; more are kept while the program uses them, and trimmed after a
 * quiet period (see trim_check). The pool lives in static TLS (tls.h),
 * which glibc reserves sparingly for dlopen'ed libraries: a handful of
 * classes, not a table. */

FIB__TLS struct fib__pool fib__tl_pool;

/* How many times a pool went to the slabs for want of stacks with the
 * depot empty (each pool counts its own in `misses`): a pool over its
 * bound hands batches to the depot only once another thread's pool has
 * (a program of one thread would only move its own stacks back and
 * forth). A hint, so relaxed. */
static unsigned long depot_misses;
static pthread_key_t pool_key;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

static void spill(struct fib__pool *p, struct fib__stack *s) {
  s->pool_next = p->spill;
  p->spill = s;
  p->spilled++;
}

/* A stack of its own mapping: unmap, or if munmap refuses, keep it on the
 * spill list. A slab's stack: onto *give, for slab_give. */
static void release(struct fib__pool *p, struct fib__stack *s,
                    struct fib__stack **give) {
  if (s->slab) {
    s->pool_next = *give;
    *give = s;
  } else if (unmap_stack(s) != 0) {
    spill(p, s);
  }
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

/* What a stack handed out (got or renewed) is to memcheck: fresh,
 * never-written memory, undefined. It took the bytes below the last stack
 * pointer of whoever ran on these addresses before (a pooled stack's
 * previous user, or another stack of a slab) as gone, no access; the next
 * user's first frame and records (a fiber record may lie on its stack)
 * can be lower than that. */
static inline void hand_out(struct fib__stack *s) {
#if FIB__VALGRIND
  VALGRIND_MAKE_MEM_UNDEFINED(s->lo, (size_t)(fib__stack_top(s) - s->lo));
#else
  (void)s;
#endif
}

/* Give back up to `max` stacks of class c (from the top of its list). */
static size_t shed(struct fib__pool *p, struct fib__pool_class *c, size_t max,
                   struct fib__stack **give) {
  size_t n = 0;
  while (c->head && n < max) {
    struct fib__stack *s = c->head;
    c->head = s->pool_next;
    p->count--;
    release(p, s, give);
    n++;
  }
  return n;
}

/* Give back a class's stacks and free its slot. */
static void evict(struct fib__pool *p, struct fib__pool_class *c,
                  struct fib__stack **give) {
  (void)shed(p, c, SIZE_MAX, give);
  memset(c, 0, sizeof *c);
}

static void pool_free_all(struct fib__pool *p) {
  struct fib__stack *retry = p->spill, *give = NULL;
  p->spill = NULL;
  p->spilled = 0;
  for (int i = 0; i < FIB__STACK_POOL_CLASSES; i++)
    evict(p, &p->cls[i], &give);
  while (retry) {
    struct fib__stack *next = retry->pool_next;
    release(p, retry, &give);
    retry = next;
  }
  slab_give(give);
  p->low = 0;
  p->give_skip = 0;
  depot_trim(0, 0); /* and the spare stacks of every thread */
  slab_reap(); /* slabs whose munmap was refused before */
}

/* ---- trimming after a quiet period
 *
 * Past FIB__STACK_POOL_MAX the pool keeps what it is given: a program
 * that had a million fibers alive will likely have them again, and
 * handing the stacks back only to take them again costs a fault per page.
 * What it never dips into for a quiet period goes back: every
 * `quiet_every` puts over the bound look at the clock, and once a window
 * of `quiet_ns` has passed, the stacks above both the bound and the
 * window's low-water mark (`low`, kept by every get) go back to their
 * slabs, least recently used classes first. A program that stops freeing
 * stacks altogether keeps its pool until it drains it or the thread exits
 * (no timer thread does this behind its back). */

static atomic_ullong quiet_ns = FIB__STACK_QUIET_NS;
static atomic_uint quiet_every = 64;

void fib__stack_set_quiet(uint64_t ns, unsigned every) {
  atomic_store(&quiet_ns, every ? ns : FIB__STACK_QUIET_NS);
  atomic_store(&quiet_every, every ? every : 64);
  fib__tl_pool.ticks = 0;
}

static uint64_t coarse_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) static void trim_check(struct fib__pool *p) {
  p->ticks = atomic_load_explicit(&quiet_every, memory_order_relaxed);
  uint64_t now = coarse_ns();
  if (now - p->window < atomic_load_explicit(&quiet_ns, memory_order_relaxed))
    return;
  size_t excess = p->low > FIB__STACK_POOL_MAX ? p->low - FIB__STACK_POOL_MAX
                                                : 0;
  struct fib__stack *give = NULL;
  for (int i = FIB__STACK_POOL_CLASSES - 1; i >= 0 && excess; i--)
    excess -= shed(p, &p->cls[i], excess, &give);
  slab_give(give);
  p->low = p->count;
  p->window = now;
  depot_trim(now, atomic_load_explicit(&quiet_ns, memory_order_relaxed));
}

static void pool_thread_exit(void *arg) { pool_free_all(arg); }

static void pool_key_create(void) {
  (void)pthread_key_create(&pool_key, pool_thread_exit);
}

/* The slot of class `key` from slot `from` on, or NULL. */
static struct fib__pool_class *find_class(struct fib__pool *p, int from, uint64_t key) {
  for (int i = from; i < FIB__STACK_POOL_CLASSES; i++)
    if (p->cls[i].key == key)
      return &p->cls[i];
  return NULL;
}

/* Room at slot `at`: the classes from there up to `upto` move one place
 * back, over it. (A loop, not memmove: it moves a few slots at most, and
 * a call would cost the get of a program with three classes in turn a
 * full frame.) */
static void shift_slots(struct fib__pool_class *at, struct fib__pool_class *upto) {
  for (struct fib__pool_class *c = upto; c > at; c--)
    c[0] = c[-1];
}

/* Room at slot `at` for a new class: the last class gives way if every
 * slot is in use (its stacks given back), the ones from `at` on move one
 * place back. The class that leaves the hot slots gets no more batches. */
static void open_slot(struct fib__pool *p, struct fib__pool_class *at) {
  struct fib__pool_class *last = &p->cls[FIB__STACK_POOL_CLASSES - 1];
  if (last->key) {
    struct fib__stack *give = NULL;
    evict(p, last, &give);
    slab_give(give);
  }
  shift_slots(at, last);
  if (at < &p->cls[FIB__POOL_HOT])
    p->cls[FIB__POOL_HOT].batch = 0;
}

/* Nothing pooled for this request: the spill list, else a new stack. `c`
 * is the request's class if it is hot (its list empty), else NULL. The
 * checks here do not change once AUTO is probed, so a pooled stack, made
 * under them, needs none. */
__attribute__((noinline)) static int get_fresh(struct fib__pool *p,
                                               struct fib__pool_class *c,
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
  if (mode == FIB_GUARD_MPROTECT)
    return map_stack(out, usable, mode); /* a mapping each: no batches */
  /* From a slab: a batch for the class (the rest go on its list), growing
   * while the misses go on. The request's class becomes the first hot one
   * if it was not hot (a program that spawns a million fibers before any
   * finishes has never given a stack back to make it one). */
  if (!c) {
    c = &p->cls[0];
    if (c->key)
      open_slot(p, c);
    c->head = NULL;
    c->key = class_key(usable, mode);
    c->batch = 0;
  }
  /* What another thread's pool handed over, before fresh stacks: their
   * pages are still there. */
  struct fib__stack *list = depot_take(usable, mode);
  if (list) {
    c->head = list->pool_next;
    p->count += DEPOT_BATCH - 1;
    reuse(list);
    *out = list;
    return 0;
  }
  __atomic_fetch_add(&depot_misses, 1, __ATOMIC_RELAXED);
  p->misses++;
  uint32_t want = c->batch ? c->batch : 1;
  int n = slab_take(usable, mode, want, &list);
  if (n < 0)
    return n;
  c->batch = want < SLAB_BATCH_MAX ? 2 * want : SLAB_BATCH_MAX;
  c->head = list->pool_next;
  p->count += (size_t)n - 1;
  list->pool_next = NULL;
  *out = list;
  return 0;
}

/* Not a stack of a hot class: a hot class with an empty list gets its
 * stack from get_fresh; a cold class moves to the front, the hot ones one
 * place back (the second becoming the first cold one), even if its list
 * is empty (its puts then take the fast path); no class: get_fresh. Calls
 * only as tail calls, so no call frame. */
__attribute__((noinline)) static int get_slow(struct fib__pool *p,
                                              struct fib__stack **out,
                                              size_t usable,
                                              fib_guard_mode mode) {
  uint64_t key = class_key(usable, mode);
  for (int i = 0; i < FIB__POOL_HOT; i++)
    if (p->cls[i].key == key)
      return get_fresh(p, &p->cls[i], out, usable, mode);
  struct fib__pool_class *c = find_class(p, FIB__POOL_HOT, key);
  if (!c)
    return get_fresh(p, NULL, out, usable, mode);
  struct fib__pool_class moved = *c;
  shift_slots(&p->cls[0], c);
  p->cls[FIB__POOL_HOT].batch = 0; /* out of the hot slots: no batches */
  p->cls[0] = moved;
  struct fib__stack *s = moved.head;
  if (!s)
    return get_fresh(p, &p->cls[0], out, usable, mode);
  p->cls[0].head = s->pool_next;
  if (--p->count < p->low)
    p->low = p->count;
  reuse(s);
  *out = s;
  return 0;
}

int fib__stack_get(struct fib__stack **out, size_t usable,
                   fib_guard_mode mode) {
  if (mode == FIB_GUARD_AUTO) /* MADVISE or MPROTECT, never NONE */
    mode = fib__stack_auto_mode();
  /* The hot path: the request's class is a hot one and has a stack (which
   * was made under get_fresh's checks: none needed here). */
  struct fib__stack *s = fib__stack_pop_hot(class_key(usable, mode));
  if (s) {
#if FIB__ASAN
    reuse(s); /* its unpoisoning */
#endif
    *out = s;
  } else {
    int err = get_slow(&fib__tl_pool, out, usable, mode);
    if (err)
      return err;
  }
  hand_out(*out);
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

#if FIB__STACK_TELLS
int fib__stack_renew(struct fib__stack *s, size_t usable,
                     fib_guard_mode mode) {
  if (mode == FIB_GUARD_AUTO)
    mode = fib__stack_auto_mode();
  if (s->usable_size != usable || s->mode != mode)
    return 1;
  /* LeakSanitizer's root region stays registered: it is in use throughout */
  reuse(s);
  hand_out(s);
  if (mode == FIB_GUARD_NONE)
    *(uint64_t *)(void *)s->lo = FIB__STACK_CANARY;
  return 0;
}
#endif

/* The top DEPOT_BATCH stacks of class c (a slab class) to the depot: the
 * ones put last, whose descriptors are still in this CPU's cache. */
static void hand_off(struct fib__pool *p, struct fib__pool_class *c) {
  struct fib__stack *last = c->head;
  for (int k = 1; k < DEPOT_BATCH && last; k++)
    last = last->pool_next;
  if (!last) { /* a shorter list: not again for DEPOT_BATCH puts */
    p->give_skip = DEPOT_BATCH;
    return;
  }
  struct fib__stack *batch = c->head;
  c->head = last->pool_next;
  last->pool_next = NULL;
  if (depot_give(batch) != 0) { /* filled up meanwhile: kept */
    last->pool_next = c->head;
    c->head = batch;
    return;
  }
  p->count -= DEPOT_BATCH;
  if (p->count < p->low)
    p->low = p->count;
}

/* Not a hot class, or the pool is full. */
__attribute__((noinline)) static void put_slow(struct fib__pool *p,
                                               struct fib__stack *s) {
  if (!p->exit_hook) {
    /* First stack pooled on this thread: free the pool at thread exit. */
    pthread_once(&pool_key_once, pool_key_create);
    p->exit_hook = pthread_setspecific(pool_key, p) == 0;
  }
  struct fib__pool_class *c = find_class(p, 0, s->pool_key);
  if (!c) {
    /* A new class takes a free hot slot if there is one; else it goes
     * first among the cold ones, and if every slot is in use the least
     * recently used (the last) gives way, its stacks unmapped. Never a
     * hot one: a get asked for it lately. */
    c = &p->cls[0];
    while (c < &p->cls[FIB__POOL_HOT] && c->key)
      c++;
    if (c->key)
      open_slot(p, c);
    c->head = NULL;
    c->key = s->pool_key;
    c->batch = 0;
  }
  s->pool_next = c->head;
  c->head = s;
  p->count++;
  if (p->count <= FIB__STACK_POOL_MAX)
    return;
  /* Over the bound: a batch to the depot for other threads' pools, if
   * there is room; what stays is kept, and now and then a look at the
   * clock. */
  if (p->give_skip)
    p->give_skip--;
  else if (s->slab && p->count >= FIB__STACK_POOL_MAX + DEPOT_BATCH &&
           __atomic_load_n(&depot_misses, __ATOMIC_RELAXED) != p->misses &&
           !depot_full(s->slab->cls))
    hand_off(p, c);
  if (p->count > FIB__STACK_POOL_MAX && (p->ticks == 0 || --p->ticks == 0))
    trim_check(p);
}

void fib__stack_put(struct fib__stack *s) {
  struct fib__pool *p = &fib__tl_pool;
#if FIB__ASAN
  __lsan_unregister_root_region(s->lo, (size_t)(fib__stack_end(s) - s->lo));
#endif
  if (!fib__stack_push_hot(s))
    put_slow(p, s);
}

size_t fib__stack_pool_size(void) { return fib__tl_pool.count + fib__tl_pool.spilled; }

size_t fib__stack_pool_classes(void) {
  size_t n = 0;
  for (int i = 0; i < FIB__STACK_POOL_CLASSES; i++)
    n += fib__tl_pool.cls[i].key != 0;
  return n;
}

void fib__stack_pool_drain(void) { pool_free_all(&fib__tl_pool); }

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
