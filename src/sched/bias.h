/* SPDX-License-Identifier: MIT */
/*
 * bias.h -- a spin lock that one worker of a multi-worker runtime may keep
 * ("biased" to it), for the shared channels (src/sync/chan.c).
 *
 * A channel whose every call comes from one worker's fibers (the pipeline
 * whose stages have come together on one worker: docs/multicore.md) pays
 * a locked exchange per call for a lock nobody else wants, half the cost
 * of a buffered message. So after a run of calls from one worker under
 * the lock, that worker keeps the lock: its calls then take it with one
 * plain load (`bias` says so) and no atomic read-modify-write, until
 * another thread wants it and the keeper lets it go.
 *
 * The hand-back is asymmetric, without a fence on the keeper's side: the
 * keeper lets go only where none of its fibers is inside a call (a call
 * never switches or waits while it holds the lock): at its own loop
 * (fib__group_tend, between fibers), before its loop may sleep or
 * return, and while a call on its own thread waits for another keeper
 * (fib__block_lock). Another thread that finds the lock kept (it takes
 * the word, then reads `bias`) marks it WANTED, raises the keeper's flag
 * (fib__bias_wanted), releases the word and waits (a fiber yields, a
 * plain thread spins) until `bias` says the lock is free, then takes it
 * the usual way. The freed `bias` keeps WANTED until another thread has
 * had the lock, and the keeper's calls count no run towards a new keep
 * meanwhile: a slow asker is not beaten to it again. No memory barrier
 * instruction, no signal: only acquire/release pairs that ThreadSanitizer
 * can follow:
 *   - the keeper's writes inside its calls happen before its release
 *     store of the freed `bias`, which the next holder reads with an
 *     acquire load under the word;
 *   - a keeper is made under the word (whose acquire saw every earlier
 *     holder's writes), and reads its own `bias` after that.
 * So at any moment at most one thread may touch what the lock guards: the
 * holder of the word while `bias` is not KEPT, or the keeper's thread.
 *
 * Who keeps: a worker of a multi-worker runtime with a tag (a number
 * unique among the workers alive, from fib__bias_tag_take; 0 = none).
 * Only the keeper writes a kept `bias` (other threads only OR in WANTED),
 * so its plain test of `bias` against its own tag is exact. Every worker
 * lets go of everything before its loop returns, so no `bias` names a
 * worker that is gone, and tags can be reused.
 *
 * When: `bias` also counts, while not kept, the calls made in a row under
 * the word by one worker (its tag and a streak). At 64 << revokes in a
 * row the worker keeps the lock; each time another thread has had to ask
 * for it back, the run needed doubles, up to 64 << 8 = 16384 calls: a
 * lock that two workers take from each other now and then (fibers that
 * move, a consumer that comes and goes) costs one hand-back per 16384
 * calls at most. Locks that two workers use by turns (a producer and a
 * consumer on different workers) never get there and pay nothing but the
 * count.
 *
 * A worker keeps at most FIB__BIAS_SLOTS locks at once (its list, which
 * its loop looks through to let go).
 */
#ifndef FIB__SCHED_BIAS_H
#define FIB__SCHED_BIAS_H

#include "fiber.h"
#include "spin.h"

#include <stdint.h>

/* A spin lock that can be kept: `word` as spin.h's, and `bias`. Both
 * zero: free, counted for nobody. */
struct fib__block {
  uint32_t word;
  uint32_t bias; /* atomic: KEPT | WANTED | revokes | tag | streak */
};

#define FIB__BIAS_KEPT 0x80000000u    /* the tag's worker keeps it */
#define FIB__BIAS_WANTED 0x40000000u  /* another thread asked for it back */
#define FIB__BIAS_REVOKES_SHIFT 26
#define FIB__BIAS_REVOKES (0xfu << FIB__BIAS_REVOKES_SHIFT)
#define FIB__BIAS_TAG_SHIFT 14
#define FIB__BIAS_TAG (0xfffu << FIB__BIAS_TAG_SHIFT)
#define FIB__BIAS_STREAK 0x3fffu
#define FIB__BIAS_TAGS 4096u          /* tags 1 .. 4095 */
#define FIB__BIAS_SLOTS 8u
#define FIB__BIAS_RUN 64u             /* calls in a row before a keep */
#define FIB__BIAS_MAX_REVOKES 8u      /* the run stops doubling there */

/* Each tag's flag, raised by a thread that marked a lock its worker keeps
 * WANTED (release: after the mark), lowered by the worker's loop
 * (fib__bias_tend). One word per tag (not a byte: riscv64 has no
 * one-byte exchange without libatomic), indexed by tag: a thread may raise
 * the flag of a worker that has just let go and gone, which is harmless
 * (a later worker with the tag looks for WANTED marks and finds none). */
extern uint32_t fib__bias_wanted[FIB__BIAS_TAGS];

/* A tag for a new worker (0: all in use; that worker never keeps), and
 * one given back (0: nothing). */
unsigned fib__bias_tag_take(void);
void fib__bias_tag_give(unsigned tag);

/* Whether the worker `rt` (the thread's runtime: NULL for a plain thread)
 * keeps b. A plain load: only rt's thread makes b kept by rt or stops it. */
static inline int fib__block_kept(const struct fib__block *b,
                                  const struct fib_runtime *rt) {
  return rt && (__atomic_load_n(&b->bias, __ATOMIC_RELAXED) &
                (FIB__BIAS_KEPT | FIB__BIAS_TAG)) ==
                   (FIB__BIAS_KEPT | rt->bias_tag_bits);
}

/* The word is ours: count this call, without a call of its own (the
 * shared channels' common calls set up no stack frame). 1: b is ours
 * now; 0: the run is due for a keep, or another worker keeps b, which
 * fib__block_enter's slow half sees to. */
static inline int fib__block_count(struct fib__block *b,
                                   const struct fib_runtime *rt) {
  /* acquire: a keeper's writes before it let go (its release store) */
  uint32_t v = __atomic_load_n(&b->bias, __ATOMIC_ACQUIRE);
  uint32_t tag = rt ? rt->bias_tag_bits : 0;
  if (__builtin_expect(v & FIB__BIAS_KEPT, 0))
    return 0;
  /* relaxed stores: published with the word's release */
  if ((v & FIB__BIAS_TAG) != tag) { /* another's run ended: ours starts */
    __atomic_store_n(&b->bias, (v & FIB__BIAS_REVOKES) | tag,
                     __ATOMIC_RELAXED);
    return 1;
  }
  /* Nothing to count for a plain thread or a tagless worker; nor for a
   * keeper that was asked to let go (WANTED left in the freed word: see
   * fib__bias_let_go) until another has had the lock, so that the asker
   * is not kept waiting by a keep made again before it looks. */
  if (!tag || (v & FIB__BIAS_WANTED))
    return 1;
  /* the run this lock needs before a keep (at most 64 << 8: the
   * streak's limit, 16383, is reached one call before it) */
  uint32_t run = FIB__BIAS_RUN << ((v & FIB__BIAS_REVOKES) >>
                                   FIB__BIAS_REVOKES_SHIFT);
  if ((v & FIB__BIAS_STREAK) + 1 < run) {
    __atomic_store_n(&b->bias, v + 1, __ATOMIC_RELAXED);
    return 1;
  }
  return 0;
}

/* fib__block_count's 0, the word held: 1 if b is ours now (kept from now
 * on, the word released; or, the keeper's list full, through the word),
 * 0 if another worker keeps it, which has been asked to let go (the word
 * released). */
int fib__block_enter_slow(struct fib__block *b, struct fib_runtime *rt);

/* The word is ours: 1 if b is ours now (counted, maybe kept from now
 * on), 0 if another worker keeps it: then it has been asked to let go,
 * and the word is released. */
static inline int fib__block_enter(struct fib__block *b,
                                   struct fib_runtime *rt) {
  return fib__block_count(b, rt) || fib__block_enter_slow(b, rt);
}

/* How a caller holds b, for fib__block_release: through the word, or
 * kept by its worker (0: not at all). */
enum { FIB__HELD_WORD = 1, FIB__HELD_KEPT = 2 };

/* One try, for a call that has a slower way to wait, and no call of its
 * own: how the caller (on the thread of runtime rt, NULL: a plain thread)
 * now holds b, or 0 if the word was held, another worker keeps b, or a
 * keep is due (the slower way sees to the last two). */
static inline int fib__block_trylock(struct fib__block *b,
                                     struct fib_runtime *rt) {
  if (fib__block_kept(b, rt))
    return FIB__HELD_KEPT;
  if (!fib__spin_trylock(&b->word))
    return 0;
  if (fib__block_count(b, rt))
    return FIB__HELD_WORD;
  fib__spin_unlock(&b->word);
  return 0;
}

/* How rt holds b, after fib__block_lock returned it. */
static inline int fib__block_held(const struct fib__block *b,
                                  const struct fib_runtime *rt) {
  return fib__block_kept(b, rt) ? FIB__HELD_KEPT : FIB__HELD_WORD;
}

/* Let b go, held as `held` says (no look at `bias` again). */
static inline void fib__block_release(struct fib__block *b, int held) {
  if (held == FIB__HELD_WORD)
    fib__spin_unlock(&b->word);
}

/* Hold b, waiting as long as it takes: `self` the calling fiber (it
 * yields while a keeper lets go, and may move to another worker), NULL
 * for any other caller (it spins). Returns the worker it holds b as (the
 * thread's runtime now; NULL: a plain thread), for the unlock: a caller
 * must not read the thread-local again itself (tls.h). */
struct fib_runtime *fib__block_lock(struct fib__block *b,
                                    struct fib__fiber *self);

/* Let b go; rt as at the lock (no switch since). */
static inline void fib__block_unlock(struct fib__block *b,
                                     struct fib_runtime *rt) {
  if (!fib__block_kept(b, rt))
    fib__spin_unlock(&b->word);
}

/* b, which rt keeps, is being destroyed: off rt's list, free. */
void fib__block_forget(struct fib__block *b, struct fib_runtime *rt);

/* The keeper's side, at its loop: let go of what others asked for back
 * (all: of everything it keeps). */
void fib__bias_let_go(struct fib_runtime *rt, int all);

/* Whether another thread waits for one of rt's kept locks: a look at its
 * loop's turn (relaxed: a flag raised meanwhile is seen next turn). */
static inline int fib__bias_asked(const struct fib_runtime *rt) {
  return rt->bias_n &&
         __atomic_load_n(&fib__bias_wanted[rt->bias_tag], __ATOMIC_RELAXED);
}

/* At rt's loop: let go of what was asked for. */
static inline void fib__bias_tend(struct fib_runtime *rt) {
  /* acquire: the WANTED marks made before the flag's release */
  if (fib__bias_asked(rt) &&
      __atomic_exchange_n(&fib__bias_wanted[rt->bias_tag], 0,
                          __ATOMIC_ACQUIRE))
    fib__bias_let_go(rt, 0);
}

#endif
