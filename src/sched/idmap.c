/* SPDX-License-Identifier: MIT */
/* idmap.c -- the dense table of fiber records by id: growth, iteration. */
#include "idmap.h"
#include "../sys.h"
#include "fibers.h"

#include <string.h>

void fib__idmap_init(struct fib__idmap *m, uint32_t stride, uint32_t first) {
  m->slots = NULL;
  m->mask = 0;
  m->count = 0;
  m->top = 0;
  m->free = 0;
  m->stride = stride;
  m->first = first;
  m->shift = (unsigned)__builtin_ctz(stride);
  m->cmask = stride - 1;
}

void fib__idmap_free(struct fib__idmap *m) {
  fib__sys_free(m->slots);
  fib__idmap_init(m, m->stride, m->first);
}

int fib__idmap_grow(struct fib__idmap *m) {
  size_t cap = m->slots ? m->mask + 1 : 0;
  if (m->free || m->top < cap)
    return 0;
  /* Every index must give a low word that fits in 32 bits. */
  size_t most = (size_t)(UINT32_MAX - m->first) / m->stride + 1;
  if (cap >= most)
    return FIB_ENOMEM;
  size_t new_cap = cap ? 2 * cap : 64;
  if (new_cap > most)
    new_cap = most;
  struct fib__idmap_slot *slots =
      fib__sys_realloc(m->slots, new_cap * sizeof *slots);
  if (!slots)
    return FIB_ENOMEM;
  /* A debugger reads every slot up to the capacity: the new ones empty. */
  memset(slots + cap, 0, (new_cap - cap) * sizeof *slots);
  m->slots = slots;
  m->mask = new_cap - 1;
  return 0;
}

void *fib__idmap_next(const struct fib__idmap *m, size_t *pos) {
  for (size_t i = *pos; i < m->top; i++)
    if (m->slots[i].id) {
      *pos = i + 1;
      return m->slots[i].value;
    }
  *pos = m->top;
  return NULL;
}
