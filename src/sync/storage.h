/* SPDX-License-Identifier: MIT */
/*
 * storage.h -- the caller-allocated storage of the blocking primitives
 * (fib_mutex, fib_cond, fib_sem, fib_wg, fib_chan): how the library finds
 * its record in it, and how a destroy ends it.
 *
 * Each record begins with a uint32_t magic number of its kind. Zero bits
 * (never initialised) and FIB__DEAD_MAGIC (destroyed) are no kind's magic,
 * so every call on such storage is refused with FIB_EINVAL; reading the
 * word is defined, because the storage stays the caller's. (fib_once has no
 * magic: FIB_ONCE_INIT is all zeros, so its state word checks itself.)
 */
#ifndef FIB__SYNC_STORAGE_H
#define FIB__SYNC_STORAGE_H

#include "../sched/waitq.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FIB__DEAD_MAGIC 0xdeadf1b0u

/* The record `priv` must fit the public struct `pub`, leaving room for a
 * pointer (the ABI headroom fibers.h promised was a lock word and a
 * pointer: the lock word is now in the records, for the shared mode)... */
#define FIB__CHECK_FITS(pub, priv)                                             \
  _Static_assert(sizeof(pub) >= sizeof(priv) + sizeof(uint64_t),             \
                 #priv " fits " #pub " with room to spare");                   \
  _Static_assert(alignof(pub) >= alignof(priv), #priv " aligned in " #pub)

/* ...and, for fib__live, start with its magic. */
#define FIB__CHECK_STORAGE(pub, priv)                                          \
  FIB__CHECK_FITS(pub, priv);                                                  \
  _Static_assert(offsetof(priv, magic) == 0, #priv " starts with its magic")

/* The record in `storage` (a public struct, whose opaque words come first)
 * if it is a live primitive of kind `magic`; NULL otherwise, also for a
 * NULL storage. */
static inline void *fib__live(const void *storage, uint32_t magic) {
  return storage && *(const uint32_t *)storage == magic ? (void *)storage
                                                          : NULL;
}

/* The start of an init: the record in `storage` (of `size` bytes) with
 * every field zero -- an empty wait queue, no owner, a count of 0 (a NULL
 * pointer is zero bits on every target the library supports; the
 * runtime's calloc'd records rely on it too) -- and its magic set. NULL if
 * storage is NULL. */
static inline void *fib__start(void *storage, uint32_t magic, size_t size) {
  if (!storage)
    return NULL;
  memset(storage, 0, size);
  *(uint32_t *)storage = magic;
  return storage;
}

/* The end of a destroy: FIB_EBUSY, changing nothing, if live fibers wait
 * on `q` (stale nodes are dropped first, so only live ones count) or if
 * `busy` says the caller found another reason; else the storage is marked
 * destroyed. */
static inline int fib__retire(uint32_t *magic, struct fib__waitq *q,
                              int busy) {
  if (fib__waitq_busy(q) || busy)
    return FIB_EBUSY;
  *magic = FIB__DEAD_MAGIC;
  return 0;
}

/* ---- modes (sync.c, chan.c): a primitive is local (today's one-thread
 * code) or shared (a spin lock and the claim protocol: usable by the
 * workers of multi-worker runtimes), chosen at init: shared if a runtime
 * with several workers exists then (fib__group_live, workers.c). The mode
 * is in the magic number, so a local call tests one word as before. */

/* The magic of the shared mode of the primitive whose magic is m. */
#define FIB__SHARED_MAGIC(m) ((m) ^ 0x20202020u) /* "mutx" -> "MUTX" */

/* The magic a primitive initialised now gets. */
static inline uint32_t fib__mode_magic(uint32_t local) {
  return __atomic_load_n(&fib__group_live, __ATOMIC_ACQUIRE)
             ? FIB__SHARED_MAGIC(local)
             : local;
}

/* The record in `storage` if it is a live primitive of kind `magic` in
 * either mode (*shared says which), else NULL. */
static inline void *fib__live_in(const void *storage, uint32_t magic,
                                 int *shared) {
  void *x = fib__live(storage, magic);
  *shared = 0;
  if (!x && (x = fib__live(storage, FIB__SHARED_MAGIC(magic))) != NULL)
    *shared = 1;
  return x;
}

/* fib__retire in either mode (shared: the caller holds the lock). */
static inline int fib__retire_in(uint32_t *magic, struct fib__waitq *q,
                                 int busy, int shared) {
  if (fib__waitq_busy_in(q, shared) || busy)
    return FIB_EBUSY;
  *magic = FIB__DEAD_MAGIC;
  return 0;
}

/* A local primitive is not for the workers of a multi-worker runtime:
 * FIB_ENOTSUP for a call from one of their threads, else 0. One
 * thread-local load, and the runtime's first line. */
static inline int fib__sync_refused(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return __builtin_expect(rt && rt->group, 0) ? FIB_ENOTSUP : 0;
}

/* fib__waiter for a local primitive: also FIB_ENOTSUP, as above. */
static inline int fib__sync_waiter(struct fib__fiber **self) {
  struct fib__fiber *f = fib__fiber_self();
  *self = f;
  if (!f)
    return FIB_EPERM;
  /* f->rt is this thread's runtime (fib__fiber_self) */
  if (__builtin_expect(f->rt->group != NULL, 0))
    return FIB_ENOTSUP;
  return fib__cancelled(f) ? FIB_ECANCELED : 0;
}

#endif
