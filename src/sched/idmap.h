/* SPDX-License-Identifier: MIT */
/*
 * idmap.h -- fiber id -> fiber record, for the runtime.
 *
 * Ids are handles that stay safe after the fiber is gone: a lookup of a
 * joined or freed fiber finds nothing instead of touching freed memory.
 * An id names a slot of a dense table and a generation of that slot:
 *
 *   id = generation << 32 | (index * stride + first)
 *
 * so a lookup is an index and one comparison (no hashing), and the table
 * grows by copying, never by rehashing. A freed slot is reused first (the
 * most recently freed first: its line is warm), with its generation one
 * higher, so an id is never handed out twice: a slot whose generation
 * would wrap is retired instead (never reused; 16 bytes per 2^32 reuses
 * of one slot). The low word is never 0, so 0 is never an id.
 *
 * stride and first: a runtime with n workers gives worker k the low words
 * k + 1, k + 1 + stride, ..., stride the power of two at or above n
 * (workers.h, Ids); one worker: 1, 2, 3, ...
 *
 * One thread writes a map: its worker's. With several workers, others
 * look up in it under the worker's ids_lock while it puts without the
 * lock (workers.h, Ids), so the words a lookup reads (top, a slot's id and
 * value) are written and read as relaxed atomics, and put stores a
 * slot's id last, with release: a lookup that finds the id reads the
 * value put with it. On every target these are plain loads and stores.
 */
#ifndef FIB__SCHED_IDMAP_H
#define FIB__SCHED_IDMAP_H

#include <stddef.h>
#include <stdint.h>

/* The layout a debugger reads (fibers/debug.h): a slot with a non-zero id
 * holds the record. A free slot has id 0 and, in `value`, its next
 * generation (high word) and the next free slot plus one (low word). */
struct fib__idmap_slot {
  uint64_t id; /* 0: free, retired, or never used */
  void *value;
};

struct fib__idmap {
  struct fib__idmap_slot *slots;
  size_t mask;     /* capacity - 1 (the name the debugger layout has);
                      capacity is 0 while slots is NULL */
  size_t count;    /* slots holding a record */
  size_t top;      /* slots ever used: [top, capacity) never were */
  size_t free;     /* the first free slot to reuse, plus one; 0: none */
  uint32_t stride; /* low word = index * stride + first: a power of two */
  uint32_t first;
  unsigned shift;  /* log2(stride) */
  uint32_t cmask;  /* stride - 1: the class test's mask (fib__idmap_class) */
};

/* The slot of a low word of this map (low >= first): (low - first) /
 * stride, a shift (stride is a power of two: no division, and no
 * multiplication either, on every lookup and forget). One worker's
 * first, with one load. */
static inline size_t fib__idmap_slot_of(const struct fib__idmap *m,
                                        uint32_t low) {
  if (m->stride == 1) /* first is 1 then */
    return (size_t)low - 1;
  return (size_t)((low - m->first) >> m->shift);
}

/* An empty map whose ids have low words first, first + stride, ...
 * (stride a power of two, 1 <= first <= stride). */
void fib__idmap_init(struct fib__idmap *m, uint32_t stride, uint32_t first);
void fib__idmap_free(struct fib__idmap *m);
/* Make room for one more entry, so that the next put cannot fail. 0 or
 * FIB_ENOMEM. Inline: on every spawn, and nearly always a comparison. */
int fib__idmap_grow(struct fib__idmap *m);
static inline int fib__idmap_room(const struct fib__idmap *m) {
  return m->free || (m->slots && m->top <= m->mask);
}
static inline int fib__idmap_reserve(struct fib__idmap *m) {
  return fib__idmap_room(m) ? 0 : fib__idmap_grow(m);
}

/* The slot an id names, or SIZE_MAX if it can name none of this map. */
static inline size_t fib__idmap_index(const struct fib__idmap *m,
                                      uint64_t id) {
  uint32_t low = (uint32_t)id;
  size_t i = fib__idmap_slot_of(m, low);
  return low >= m->first && i < __atomic_load_n(&m->top, __ATOMIC_RELAXED)
             ? i
             : SIZE_MAX;
}

/* Whether id's low word is of this map's class (first modulo stride):
 * with several workers, whether this map is the id's home (workers.h,
 * Ids), told from the map alone, without a look through the group. An
 * id of the class that the map does not hold is not found by get. */
static inline int fib__idmap_class(const struct fib__idmap *m, uint64_t id) {
  return (((uint32_t)id - m->first) & m->cmask) == 0;
}

/* Insert `value` (room reserved): returns its new id. */
static inline uint64_t fib__idmap_put(struct fib__idmap *m, void *value) {
  size_t i;
  uint64_t gen = 0;
  if (m->free) {
    i = m->free - 1;
    uint64_t link = (uint64_t)(uintptr_t)m->slots[i].value;
    m->free = (uint32_t)link;
    gen = link >> 32;
  } else {
    i = m->top;
    __atomic_store_n(&m->top, i + 1, __ATOMIC_RELAXED);
  }
  uint64_t id = gen << 32 | (uint32_t)(i * m->stride + m->first);
  __atomic_store_n(&m->slots[i].value, value, __ATOMIC_RELAXED);
  __atomic_store_n(&m->slots[i].id, id, __ATOMIC_RELEASE);
  m->count++;
  return id;
}

/* get for a map whose stride is above 1 (a worker of several: workers.h,
 * Ids), without slot_of's test for one worker's map. */
static inline void *fib__idmap_get_strided(const struct fib__idmap *m,
                                           uint64_t id) {
  uint32_t low = (uint32_t)id;
  size_t i = (size_t)((low - m->first) >> m->shift);
  /* acquire: pairs with put's release of the id */
  return low >= m->first && i < __atomic_load_n(&m->top, __ATOMIC_RELAXED) &&
                 __atomic_load_n(&m->slots[i].id, __ATOMIC_ACQUIRE) == id
             ? __atomic_load_n(&m->slots[i].value, __ATOMIC_RELAXED)
             : NULL;
}

static inline void *fib__idmap_get(const struct fib__idmap *m, uint64_t id) {
  size_t i = fib__idmap_index(m, id);
  /* acquire: pairs with put's release of the id */
  return i != SIZE_MAX && __atomic_load_n(&m->slots[i].id, __ATOMIC_ACQUIRE) ==
                              id
             ? __atomic_load_n(&m->slots[i].value, __ATOMIC_RELAXED)
             : NULL;
}

/* Forget `id`, which is in the map at slot i: the slot is free for the
 * next put, under the next generation. */
static inline void fib__idmap_forget_at(struct fib__idmap *m, uint64_t id,
                                        size_t i) {
  uint64_t gen = (id >> 32) + 1;
  __atomic_store_n(&m->slots[i].id, 0, __ATOMIC_RELAXED);
  m->count--;
  if (__builtin_expect(gen > UINT32_MAX, 0)) { /* every id spent: retired */
    __atomic_store_n(&m->slots[i].value, NULL, __ATOMIC_RELAXED);
    return;
  }
  __atomic_store_n(&m->slots[i].value, (void *)(uintptr_t)(gen << 32 | m->free),
                   __ATOMIC_RELAXED);
  m->free = i + 1;
}

/* Forget `id`, which is in the map. Inline: on every join and detached
 * finish. */
static inline void fib__idmap_forget(struct fib__idmap *m, uint64_t id) {
  fib__idmap_forget_at(m, id, fib__idmap_slot_of(m, (uint32_t)id));
}

/* forget for a map whose stride is above 1 (fib__idmap_get_strided). */
static inline void fib__idmap_forget_strided(struct fib__idmap *m,
                                             uint64_t id) {
  fib__idmap_forget_at(m, id, (size_t)(((uint32_t)id - m->first) >> m->shift));
}

/* The same for any id: nothing if it is not in the map. */
static inline void fib__idmap_del(struct fib__idmap *m, uint64_t id) {
  size_t i = fib__idmap_index(m, id);
  if (i != SIZE_MAX && m->slots[i].id == id)
    fib__idmap_forget(m, id);
}

/* Iterate: returns the value in slot *pos or later, advancing *pos past it;
 * NULL at the end. Deleting the value just returned is allowed. */
void *fib__idmap_next(const struct fib__idmap *m, size_t *pos);

#endif
