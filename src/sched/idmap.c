/* SPDX-License-Identifier: MIT */
/* idmap.c -- open-addressing hash map from fiber ids to records. */
#include "idmap.h"
#include "../sys.h"
#include "fibers.h"

static size_t home(const struct fib__idmap *m, uint64_t id) {
  /* Ids are sequential: multiply by 2^64 / phi to spread them. */
  return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 17) & m->mask;
}

void fib__idmap_init(struct fib__idmap *m) {
  m->slots = NULL;
  m->mask = 0;
  m->count = 0;
}

void fib__idmap_free(struct fib__idmap *m) {
  fib__sys_free(m->slots);
  fib__idmap_init(m);
}

static void insert(struct fib__idmap *m, uint64_t id, void *value) {
  size_t i = home(m, id);
  while (m->slots[i].id)
    i = (i + 1) & m->mask;
  m->slots[i].id = id;
  m->slots[i].value = value;
}

int fib__idmap_grow(struct fib__idmap *m, size_t n) {
  size_t cap = m->slots ? m->mask + 1 : 0;
  if (2 * n <= cap)
    return 0;
  size_t new_cap = cap ? cap : 64;
  while (2 * n > new_cap)
    new_cap *= 2;
  struct fib__idmap_slot *slots = fib__sys_calloc(new_cap, sizeof *slots);
  if (!slots)
    return FIB_ENOMEM;
  struct fib__idmap old = *m;
  m->slots = slots;
  m->mask = new_cap - 1;
  for (size_t i = 0; i < cap; i++)
    if (old.slots[i].id)
      insert(m, old.slots[i].id, old.slots[i].value);
  fib__sys_free(old.slots);
  return 0;
}

void fib__idmap_put(struct fib__idmap *m, uint64_t id, void *value) {
  insert(m, id, value);
  m->count++;
}

void *fib__idmap_get(const struct fib__idmap *m, uint64_t id) {
  if (!m->slots || id == 0)
    return NULL;
  for (size_t i = home(m, id); m->slots[i].id; i = (i + 1) & m->mask)
    if (m->slots[i].id == id)
      return m->slots[i].value;
  return NULL;
}

void fib__idmap_del(struct fib__idmap *m, uint64_t id) {
  if (!m->slots || id == 0)
    return;
  size_t i = home(m, id);
  while (m->slots[i].id != id) {
    if (!m->slots[i].id)
      return;
    i = (i + 1) & m->mask;
  }
  /* Backward-shift: pull later entries of the probe run into the hole, so
   * every entry stays reachable from its home slot without tombstones. */
  size_t hole = i;
  for (size_t j = (i + 1) & m->mask; m->slots[j].id; j = (j + 1) & m->mask) {
    size_t h = home(m, m->slots[j].id);
    /* Move j into the hole unless its home lies cyclically in (hole, j]. */
    int stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
    if (!stays) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].id = 0;
  m->slots[hole].value = NULL;
  m->count--;
}

void *fib__idmap_next(const struct fib__idmap *m, size_t *pos) {
  size_t cap = m->slots ? m->mask + 1 : 0;
  for (size_t i = *pos; i < cap; i++)
    if (m->slots[i].id) {
      *pos = i + 1;
      return m->slots[i].value;
    }
  *pos = cap;
  return NULL;
}
