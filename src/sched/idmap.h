/* SPDX-License-Identifier: MIT */
/*
 * idmap.h -- fiber id -> fiber record, for the runtime.
 *
 * Ids are handles that stay safe after the fiber is gone: a lookup of a
 * joined or freed fiber finds nothing instead of touching freed memory.
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones); the table is kept at most half full.
 */
#ifndef FIB__SCHED_IDMAP_H
#define FIB__SCHED_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct fib__idmap_slot {
  uint64_t id; /* 0: empty */
  void *value;
};

struct fib__idmap {
  struct fib__idmap_slot *slots;
  size_t mask; /* capacity - 1; capacity is a power of two */
  size_t count;
};

void fib__idmap_init(struct fib__idmap *m);
void fib__idmap_free(struct fib__idmap *m);
/* Make room for `n` entries in all, so that puts cannot fail. 0 or
 * FIB_ENOMEM. Inline: on every spawn, and nearly always a comparison. */
int fib__idmap_grow(struct fib__idmap *m, size_t n);
static inline int fib__idmap_reserve(struct fib__idmap *m, size_t n) {
  return m->slots && 2 * n <= m->mask + 1 ? 0 : fib__idmap_grow(m, n);
}
/* Insert (id must be new, non-zero, and room reserved). */
void fib__idmap_put(struct fib__idmap *m, uint64_t id, void *value);
void *fib__idmap_get(const struct fib__idmap *m, uint64_t id);
void fib__idmap_del(struct fib__idmap *m, uint64_t id);

/* Iterate: returns the value in slot *pos or later, advancing *pos past it;
 * NULL at the end. The map must not change during the walk. */
void *fib__idmap_next(const struct fib__idmap *m, size_t *pos);

#endif
