/* SPDX-License-Identifier: MIT */
/* test_idmap.c -- the table of fiber records by id (src/sched/idmap.h):
 * ids as slot + generation, a freed slot reused under the next
 * generation, a spent slot retired, the ids of a worker of n, growth that
 * keeps every entry, and growth that cannot get memory. */
#include "harness.h"

#include <fibers.h>

#include "sched/idmap.h"
#include "sys.h"

#include <stdint.h>

static int v[300]; /* values to store: their addresses */

TEST(ids_are_slots_from_one_with_generation_zero) {
  struct fib__idmap m;
  fib__idmap_init(&m, 1, 1);
  CHECK_PTR_EQ(fib__idmap_get(&m, 1), NULL); /* empty: nothing is found */
  for (int i = 0; i < 3; i++) {
    CHECK_OK(fib__idmap_reserve(&m));
    CHECK_EQ(fib__idmap_put(&m, &v[i]), (uint64_t)i + 1);
  }
  CHECK_EQ(m.count, 3);
  for (int i = 0; i < 3; i++)
    CHECK_PTR_EQ(fib__idmap_get(&m, (uint64_t)i + 1), &v[i]);
  CHECK_PTR_EQ(fib__idmap_get(&m, 0), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 4), NULL);          /* never handed out */
  CHECK_PTR_EQ(fib__idmap_get(&m, 1ull << 32 | 1), NULL); /* a later one */
  fib__idmap_free(&m);
}

TEST(a_freed_slot_comes_back_under_the_next_generation) {
  struct fib__idmap m;
  fib__idmap_init(&m, 1, 1);
  uint64_t id[3];
  for (int i = 0; i < 3; i++) {
    CHECK_OK(fib__idmap_reserve(&m));
    id[i] = fib__idmap_put(&m, &v[i]);
  }
  fib__idmap_del(&m, id[1]);
  fib__idmap_del(&m, id[1]); /* twice: the second finds nothing */
  fib__idmap_del(&m, 99);    /* never handed out: nothing */
  CHECK_EQ(m.count, 2);
  CHECK_PTR_EQ(fib__idmap_get(&m, id[1]), NULL);
  fib__idmap_del(&m, id[0]);
  /* the slot freed last first, then the one before */
  CHECK_OK(fib__idmap_reserve(&m));
  uint64_t a = fib__idmap_put(&m, &v[10]);
  CHECK_OK(fib__idmap_reserve(&m));
  uint64_t b = fib__idmap_put(&m, &v[11]);
  CHECK_EQ(a, 1ull << 32 | 1);
  CHECK_EQ(b, 1ull << 32 | 2);
  CHECK_PTR_EQ(fib__idmap_get(&m, id[0]), NULL); /* stale: found nothing */
  CHECK_PTR_EQ(fib__idmap_get(&m, a), &v[10]);
  CHECK_PTR_EQ(fib__idmap_get(&m, b), &v[11]);
  CHECK_PTR_EQ(fib__idmap_get(&m, id[2]), &v[2]);
  /* then the next unused slot */
  CHECK_OK(fib__idmap_reserve(&m));
  CHECK_EQ(fib__idmap_put(&m, &v[12]), 4);
  fib__idmap_free(&m);
}

TEST(a_slot_whose_generation_is_spent_is_never_reused) {
  struct fib__idmap m;
  fib__idmap_init(&m, 1, 1);
  CHECK_OK(fib__idmap_reserve(&m));
  uint64_t id = fib__idmap_put(&m, &v[0]);
  /* Its last generation, as if it had been reused 2^32 - 1 times. */
  uint64_t last = (uint64_t)UINT32_MAX << 32 | (uint32_t)id;
  m.slots[0].id = last;
  CHECK_PTR_EQ(fib__idmap_get(&m, last), &v[0]);
  fib__idmap_del(&m, last);
  CHECK_EQ(m.count, 0);
  CHECK_PTR_EQ(fib__idmap_get(&m, last), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 1), NULL); /* generation 0 is long gone */
  CHECK_OK(fib__idmap_reserve(&m));
  CHECK_EQ(fib__idmap_put(&m, &v[1]), 2); /* slot 1: slot 0 is retired */
  size_t pos = 0;
  CHECK_PTR_EQ(fib__idmap_next(&m, &pos), &v[1]);
  CHECK_PTR_EQ(fib__idmap_next(&m, &pos), NULL);
  fib__idmap_free(&m);
}

TEST(worker_k_of_n_hands_out_low_words_k_plus_one_modulo_n) {
  struct fib__idmap m;
  fib__idmap_init(&m, 4, 3); /* worker 2 of 4 */
  for (int i = 0; i < 5; i++) {
    CHECK_OK(fib__idmap_reserve(&m));
    uint64_t id = fib__idmap_put(&m, &v[i]);
    CHECK_EQ(id, (uint64_t)(3 + 4 * i));
    CHECK_EQ((id - 1) % 4, 2); /* workers.h: its home is worker 2 */
  }
  fib__idmap_del(&m, 7);
  CHECK_OK(fib__idmap_reserve(&m));
  uint64_t again = fib__idmap_put(&m, &v[9]);
  CHECK_EQ(again, 1ull << 32 | 7);
  CHECK_EQ(((uint32_t)again - 1) % 4, 2);
  /* another worker's ids (another residue), 0, and below `first` */
  CHECK_PTR_EQ(fib__idmap_get(&m, 4), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 5), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 1), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 0), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, 11), &v[2]);
  fib__idmap_free(&m);
}

/* The lookups a worker of several makes in its own map (no class test:
 * an id of another class finds a slot whose id differs), and its forget:
 * the same answers as the general ones, also for ids of other workers, 0,
 * ids below `first`, ids beyond the top, and a forgotten id. */
TEST(strided_get_and_forget_answer_as_the_general_ones) {
  struct fib__idmap m;
  fib__idmap_init(&m, 4, 3); /* worker 2 of 4: ids 3, 7, 11, ... */
  CHECK(fib__idmap_class(&m, 3) && fib__idmap_class(&m, 7));
  CHECK(!fib__idmap_class(&m, 4) && !fib__idmap_class(&m, 5));
  uint64_t ids[5];
  for (int i = 0; i < 5; i++) {
    CHECK_OK(fib__idmap_reserve(&m));
    ids[i] = fib__idmap_put(&m, &v[i]);
  }
  uint64_t probes[] = {0, 1, 2, 4, 5, 6, 8, 19, 23, 1ull << 32 | 3, ids[4] + 4};
  for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++)
    CHECK_PTR_EQ(fib__idmap_get_strided(&m, probes[k]),
                 fib__idmap_get(&m, probes[k]));
  for (int i = 0; i < 5; i++)
    CHECK_PTR_EQ(fib__idmap_get_strided(&m, ids[i]), &v[i]);
  fib__idmap_forget_strided(&m, ids[1]);
  CHECK_EQ(m.count, 4);
  CHECK_PTR_EQ(fib__idmap_get_strided(&m, ids[1]), NULL);
  CHECK_PTR_EQ(fib__idmap_get(&m, ids[1]), NULL);
  CHECK_OK(fib__idmap_reserve(&m));
  uint64_t again = fib__idmap_put(&m, &v[9]); /* the slot, one generation on */
  CHECK_EQ(again, 1ull << 32 | (uint32_t)ids[1]);
  CHECK_PTR_EQ(fib__idmap_get_strided(&m, again), &v[9]);
  CHECK_PTR_EQ(fib__idmap_get_strided(&m, ids[1]), NULL);
  fib__idmap_free(&m);
}

TEST(growth_keeps_every_entry_and_deleting_in_a_walk_is_allowed) {
  struct fib__idmap m;
  fib__idmap_init(&m, 1, 1);
  uint64_t id[300];
  for (int i = 0; i < 300; i++) { /* 64, 128, 256, 512 slots */
    CHECK_OK(fib__idmap_reserve(&m));
    id[i] = fib__idmap_put(&m, &v[i]);
  }
  CHECK_EQ(m.mask + 1, 512);
  for (int i = 0; i < 300; i++)
    CHECK_PTR_EQ(fib__idmap_get(&m, id[i]), &v[i]);
  /* the never-used slots read as empty (a debugger walks them all) */
  for (size_t i = 300; i <= m.mask; i++)
    CHECK_EQ(m.slots[i].id, 0);
  size_t pos = 0, seen = 0;
  int *p;
  while ((p = fib__idmap_next(&m, &pos)) != NULL) {
    CHECK_PTR_EQ(p, &v[seen]);
    fib__idmap_del(&m, id[seen++]);
  }
  CHECK_EQ(seen, 300);
  CHECK_EQ(m.count, 0);
  fib__idmap_free(&m);
}

TEST(growth_without_memory_fails_and_leaves_the_map_as_it_was) {
  struct fib__idmap m;
  fib__idmap_init(&m, 1, 1);
  for (int i = 0; i < 64; i++) {
    CHECK_OK(fib__idmap_reserve(&m));
    (void)fib__idmap_put(&m, &v[i]);
  }
  fib__fault_inject(FIB__FAULT_MALLOC, 1, 0);
  CHECK_EQ(fib__idmap_reserve(&m), FIB_ENOMEM);
  fib__fault_inject(0, 0, 0);
  CHECK_EQ(m.mask + 1, 64);
  for (int i = 0; i < 64; i++)
    CHECK_PTR_EQ(fib__idmap_get(&m, (uint64_t)i + 1), &v[i]);
  fib__idmap_del(&m, 5); /* a freed slot needs no growth */
  CHECK_OK(fib__idmap_reserve(&m));
  CHECK_EQ(fib__idmap_put(&m, &v[99]), 1ull << 32 | 5);
  fib__idmap_free(&m);
}

TEST_MAIN(T(ids_are_slots_from_one_with_generation_zero),
          T(strided_get_and_forget_answer_as_the_general_ones),
          T(a_freed_slot_comes_back_under_the_next_generation),
          T(a_slot_whose_generation_is_spent_is_never_reused),
          T(worker_k_of_n_hands_out_low_words_k_plus_one_modulo_n),
          T(growth_keeps_every_entry_and_deleting_in_a_walk_is_allowed),
          T(growth_without_memory_fails_and_leaves_the_map_as_it_was))
