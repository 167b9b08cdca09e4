/* SPDX-License-Identifier: MIT */
/*
 * bias.c -- the slow halves of bias.h's lock that a worker may keep: the
 * count that makes a keeper, the wait for a keeper to let go, the
 * keeper's letting go, and the workers' tags.
 */
#include "bias.h"

#include <pthread.h>

uint32_t fib__bias_wanted[FIB__BIAS_TAGS];

_Static_assert(sizeof(((struct fib_runtime *)0)->bias_kept) ==
                   FIB__BIAS_SLOTS * sizeof(struct fib__block *),
               "a worker's list holds FIB__BIAS_SLOTS locks");

/* ---- tags: unique among the workers alive (bias.h) */

static pthread_mutex_t tags_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t tags_used[FIB__BIAS_TAGS / 64]; /* bit t: tag t in use */

unsigned fib__bias_tag_take(void) {
  unsigned tag = 0;
  pthread_mutex_lock(&tags_lock);
  for (unsigned t = 1; t < FIB__BIAS_TAGS; t++) {
    if (!(tags_used[t / 64] >> (t % 64) & 1)) {
      tags_used[t / 64] |= (uint64_t)1 << (t % 64);
      tag = t;
      break;
    }
  }
  pthread_mutex_unlock(&tags_lock);
  return tag;
}

void fib__bias_tag_give(unsigned tag) {
  if (!tag)
    return;
  pthread_mutex_lock(&tags_lock);
  tags_used[tag / 64] &= ~((uint64_t)1 << (tag % 64));
  pthread_mutex_unlock(&tags_lock);
}

/* ---- the holder's side */

/* rt keeps b from now on (the word held; `v` b's bias, not kept), the
 * word released, if its list has room; else the word stays held and the
 * run is counted again from nothing. */
static void keep(struct fib__block *b, struct fib_runtime *rt, uint32_t v) {
  if (rt->bias_n == FIB__BIAS_SLOTS) {
    __atomic_store_n(&b->bias, (v & FIB__BIAS_REVOKES) | rt->bias_tag_bits,
                     __ATOMIC_RELAXED);
    return;
  }
  rt->bias_kept[rt->bias_n++] = b;
  /* relaxed: a thread that takes the word next reads it after the
   * word's release below */
  __atomic_store_n(&b->bias,
                   FIB__BIAS_KEPT | (v & FIB__BIAS_REVOKES) |
                       rt->bias_tag_bits,
                   __ATOMIC_RELAXED);
  fib__spin_unlock(&b->word);
}

int fib__block_enter_slow(struct fib__block *b, struct fib_runtime *rt) {
  uint32_t v = __atomic_load_n(&b->bias, __ATOMIC_ACQUIRE);
  if (!(v & FIB__BIAS_KEPT)) {
    /* Its keeper let go since the count looked (count again), or the
     * run is due: then rt has a tag. Nobody else writes `bias` while we
     * hold the word and it is not kept, so v is what the count saw. */
    if (!fib__block_count(b, rt))
      keep(b, rt, v);
    return 1;
  }
  /* Kept by another worker (never by rt: its own test came first). Ask
   * it back: the mark, then the flag its loop looks at (release: the
   * loop that lowers the flag with acquire then sees the mark). relaxed
   * mark: the keeper's let-go is what this thread waits for. */
  __atomic_fetch_or(&b->bias, FIB__BIAS_WANTED, __ATOMIC_RELAXED);
  unsigned keeper = (v & FIB__BIAS_TAG) >> FIB__BIAS_TAG_SHIFT;
  /* an exchange, not a store: each asker's raise is then in the release
   * sequence the keeper's acquire exchange reads from, so every asker's
   * mark is seen, not only the last one's (C11; the hardware would) */
  (void)__atomic_exchange_n(&fib__bias_wanted[keeper], 1, __ATOMIC_RELEASE);
  fib__spin_unlock(&b->word);
  return 0;
}

/* The thread's worker, read again after each wait: a fiber may have
 * moved meanwhile (and onto the keeper). */
static struct fib_runtime *worker_now(const struct fib__fiber *self) {
  return self ? self->rt : fib__tl_runtime_now();
}

struct fib_runtime *fib__block_lock(struct fib__block *b,
                                    struct fib__fiber *self) {
  unsigned spins = 0;
  for (;;) {
    struct fib_runtime *rt = worker_now(self);
    if (fib__block_kept(b, rt))
      return rt;
    fib__spin_lock(&b->word);
    if (fib__block_enter(b, rt))
      return rt;
    /* Kept by another worker, and asked back: wait for it to reach its
     * loop, looking without writing (the keeper's line stays shared, and
     * it is asked once). A fiber lets its worker's other fibers run
     * meanwhile; every wait also pauses, and now and then gives the CPU
     * away, which a keeper preempted on a crowded machine may need. A
     * keep without WANTED is not the one asked about (another asker had
     * the lock in between, and the keeper kept it again): ask again. */
    do {
      /* This thread is inside no call that holds a lock (none switches
       * or waits so): it may let go of what its own worker keeps and
       * others want, which two waiters that spin (coroutines that fibers
       * resumed, on two keepers' threads) would otherwise wait for from
       * each other forever. */
      if (rt)
        fib__bias_tend(rt);
      if (self)
        (void)fib_yield();
      fib__spin_step(++spins);
      rt = worker_now(self);
    } while ((__atomic_load_n(&b->bias, __ATOMIC_RELAXED) &
              (FIB__BIAS_KEPT | FIB__BIAS_WANTED)) ==
                 (FIB__BIAS_KEPT | FIB__BIAS_WANTED) &&
             !fib__block_kept(b, rt));
  }
}

void fib__block_forget(struct fib__block *b, struct fib_runtime *rt) {
  for (unsigned i = 0; i < rt->bias_n; i++) {
    if (rt->bias_kept[i] == b) {
      rt->bias_kept[i] = rt->bias_kept[--rt->bias_n];
      break;
    }
  }
  __atomic_store_n(&b->bias, 0, __ATOMIC_RELEASE);
}

/* ---- the keeper's side */

void fib__bias_let_go(struct fib_runtime *rt, int all) {
  for (unsigned i = 0; i < rt->bias_n;) {
    struct fib__block *b = rt->bias_kept[i];
    uint32_t v = __atomic_load_n(&b->bias, __ATOMIC_RELAXED);
    if (!all && !(v & FIB__BIAS_WANTED)) {
      i++;
      continue;
    }
    uint32_t revokes = v & FIB__BIAS_REVOKES;
    if ((v & FIB__BIAS_WANTED) &&
        revokes >> FIB__BIAS_REVOKES_SHIFT < FIB__BIAS_MAX_REVOKES)
      revokes += 1u << FIB__BIAS_REVOKES_SHIFT;
    /* release: everything this worker's fibers wrote under the keep
     * happens before the next holder's acquire load of `bias`. WANTED
     * stays in the freed word, with our tag: our fibers' calls count no
     * run towards a new keep until another thread has had the lock
     * (fib__block_count), so an asker does not find it kept again before
     * it looks. A mark ORed in since the load is overwritten, or lands
     * in the freed word: either way the same. */
    __atomic_store_n(&b->bias,
                     (v & FIB__BIAS_WANTED) | revokes | rt->bias_tag_bits,
                     __ATOMIC_RELEASE);
    rt->bias_kept[i] = rt->bias_kept[--rt->bias_n];
  }
}
