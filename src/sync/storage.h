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
 * lock word and a pointer (the ABI headroom fibers.h promises)... */
#define FIB__CHECK_FITS(pub, priv)                                             \
  _Static_assert(sizeof(pub) >= sizeof(priv) + 2 * sizeof(uint64_t),         \
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

/* The primitives are not yet shared across the workers of a multi-worker
 * runtime: FIB_ENOTSUP for a call from one of its threads, else 0. One
 * thread-local load, and the runtime's first line. */
static inline int fib__sync_refused(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return __builtin_expect(rt && rt->group, 0) ? FIB_ENOTSUP : 0;
}

/* fib__waiter for the primitives: also FIB_ENOTSUP, as above. */
static inline int fib__sync_waiter(struct fib__fiber **self) {
  int err = fib__waiter(self);
  if (!err && __builtin_expect((*self)->rt->group != NULL, 0))
    return FIB_ENOTSUP;
  return err;
}

#endif
