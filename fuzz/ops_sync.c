/* SPDX-License-Identifier: MIT */
/*
 * ops_sync.c -- mutex, condition variable, semaphore, wait group and once
 * from the fibers' programs, each call checked against the model
 * (fuzz.h): mutual exclusion, FIFO hand-off's consequences, no spurious
 * wake-up, units conserved, once runs fn once, the documented codes.
 */
#include "fuzz.h"

#include <string.h>

enum { OPN_LOCK = 8, OPN_TRYLOCK, OPN_UNLOCK, OPN_CWAIT, OPN_CSIGNAL,
       OPN_POST, OPN_WAIT, OPN_TRYWAIT, OPN_WGADD, OPN_WGWAIT, OPN_ONCE,
       OPN_DESTROY = 26 };

/* A may-wait call on a primitive: what it may return. `dead`: the
 * primitive was destroyed (EINVAL, or ECANCELED: the header does not say
 * which check comes first); `was`: cancelled before the call. */
static unsigned may_wait_allow(int dead, int was, int has, int now) {
  if (dead)
    return A_EINVAL | (was ? A_ECANCELED : 0);
  if (was)
    return A_ECANCELED;
  return A_OK | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0);
}

/* ---- mutex */

void fz_op_mutex_lock(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NM);
  struct fz_mutex *M = &G.mm[i];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int dead = M->destroyed, mine = M->owner == me->slot;
  int was = fz_enter(me, has, "fib_mutex_lock");
  me->call_kind = FZ_W_MUTEX;
  me->call_idx = i;
  M->in_lock++;
  int r = (b & 3) ? fib_mutex_lock_until(&G.m[i], dl) : fib_mutex_lock(&G.m[i]);
  M->in_lock--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_LOCK, i, (int)b, r);
  unsigned allow = may_wait_allow(dead, was, has, now);
  if (!dead && !was && mine)
    allow = A_EDEADLK;
  fz_expect(r, allow, "fib_mutex_lock", me->slot);
  if (r == 0) {
    FZ_CHECK(!M->destroyed, "fib_mutex_lock took mutex %d, destroyed "
             "while the fiber waited", i);
    FZ_CHECK(M->owner == -1, "mutual exclusion: fiber %d locked mutex %d, "
             "held by fiber %d", me->slot, i, M->owner);
    M->owner = me->slot;
  }
}

void fz_op_mutex_trylock(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NM);
  struct fz_mutex *M = &G.mm[i];
  unsigned allow;
  if (M->destroyed)
    allow = A_EINVAL;
  else if (M->owner != -1)
    allow = A_EBUSY;
  else if (M->in_lock)
    allow = A_OK | A_EBUSY; /* a waiter may own it already, or be dead */
  else
    allow = A_OK;
  int r = fib_mutex_trylock(&G.m[i]);
  fz_log(me->slot, OPN_TRYLOCK, i, (int)b, r);
  fz_expect(r, allow, "fib_mutex_trylock", me->slot);
  if (r == 0)
    M->owner = me->slot;
}

void fz_op_mutex_unlock(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NM);
  struct fz_mutex *M = &G.mm[i];
  unsigned allow = M->destroyed ? A_EINVAL
                   : M->owner == me->slot ? A_OK : A_EPERM;
  int r = fib_mutex_unlock(&G.m[i]);
  fz_log(me->slot, OPN_UNLOCK, i, (int)b, r);
  fz_expect(r, allow, "fib_mutex_unlock", me->slot);
  if (r == 0)
    M->owner = -1;
}

/* ---- condition variable */

void fz_op_cond_wait(struct fz_fiber *me, unsigned a, unsigned b) {
  int ci = (int)(a % FZ_NC), mi = (int)((a >> 1) % FZ_NM);
  struct fz_cond *C = &G.mc[ci];
  struct fz_mutex *M = &G.mm[mi];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int dead = C->destroyed || M->destroyed, holder = M->owner == me->slot;
  int was = fz_enter(me, has, "fib_cond_wait");
  int early = dead || !holder || was; /* returns at once, doing nothing */
  uint64_t epoch = C->epoch;
  if (!early) { /* it gives the mutex up, waits, then relocks */
    M->owner = -1;
    M->in_lock++;
    M->cond_users++;
    C->in_wait++;
    me->call_relock = 1;
    me->call_kind = FZ_W_COND;
    me->call_idx = ci | mi << 8;
    me->call_bcasts = C->bcasts;
  }
  int r = (b & 3) ? fib_cond_wait_until(&G.c[ci], &G.m[mi], dl)
                  : fib_cond_wait(&G.c[ci], &G.m[mi]);
  if (!early) {
    M->in_lock--;
    M->cond_users--;
    C->in_wait--;
  }
  int now = fz_leave(me);
  fz_log(me->slot, OPN_CWAIT, (int)a, (int)b, r);
  unsigned allow;
  if (dead)
    allow = A_EINVAL | (holder ? 0 : A_EPERM) | (was ? A_ECANCELED : 0);
  else if (!holder)
    allow = A_EPERM;
  else if (was)
    allow = A_ECANCELED;
  else
    allow = A_OK | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0);
  fz_expect(r, allow, "fib_cond_wait", me->slot);
  if (!early) {
    /* whatever the result, the mutex is held again */
    FZ_CHECK(M->owner == -1, "fib_cond_wait returned in fiber %d with "
             "mutex %d relocked, but fiber %d holds it", me->slot, mi,
             M->owner);
    M->owner = me->slot;
    FZ_CHECK(r != 0 || C->epoch != epoch, "fib_cond_wait returned 0 in "
             "fiber %d with no signal or broadcast since it began (a "
             "spurious wake-up)", me->slot);
  }
}

void fz_op_cond_signal(struct fz_fiber *me, unsigned a, unsigned b) {
  int ci = (int)(a % FZ_NC);
  struct fz_cond *C = &G.mc[ci];
  int r = (a & 2) ? fib_cond_broadcast(&G.c[ci]) : fib_cond_signal(&G.c[ci]);
  fz_log(me->slot, OPN_CSIGNAL, (int)a, (int)b, r);
  fz_expect(r, C->destroyed ? A_EINVAL : A_OK, "fib_cond_signal/broadcast",
            me->slot);
  if (r == 0) {
    C->epoch++;
    C->bcasts += (a & 2) != 0;
  }
}

/* ---- semaphore */

/* Units are conserved: what is left plus what was taken is what there was
 * plus what was posted, less the units handed to waiters that have not
 * returned yet (at most one each). */
static void sem_check(int i) {
  struct fz_sem *S = &G.ms[i];
  if (S->destroyed)
    return;
  uint64_t v = fib_sem_value(&G.s[i]);
  uint64_t expect = S->init + S->posts - S->takes;
  FZ_CHECK(v <= expect && expect - v <= (uint64_t)S->in_wait,
           "semaphore %d: value %llu, expected %llu (init %llu + %llu posts "
           "- %llu taken; %d fibers in wait)", i, (unsigned long long)v,
           (unsigned long long)expect, (unsigned long long)S->init,
           (unsigned long long)S->posts, (unsigned long long)S->takes,
           S->in_wait);
}

static void sem_post_as(int slot, int i, unsigned b) {
  struct fz_sem *S = &G.ms[i];
  uint64_t v = fib_sem_value(&G.s[i]);
  int r = fib_sem_post(&G.s[i]);
  fz_log(slot, OPN_POST, i, (int)b, r);
  fz_expect(r, S->destroyed ? A_EINVAL
               : v == UINT64_MAX ? A_EOVERFLOW : A_OK, "fib_sem_post", slot);
  if (r == 0)
    S->posts++;
  sem_check(i);
}

void fz_op_sem_post(struct fz_fiber *me, unsigned a, unsigned b) {
  sem_post_as(me->slot, (int)(a % FZ_NS), b);
}

void fz_op_sem_wait(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NS);
  struct fz_sem *S = &G.ms[i];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int dead = S->destroyed;
  int avail = !dead && fib_sem_value(&G.s[i]) > 0;
  int was = fz_enter(me, has, "fib_sem_wait");
  me->call_kind = FZ_W_SEM;
  me->call_idx = i;
  S->in_wait++;
  int r = (b & 3) ? fib_sem_wait_until(&G.s[i], dl) : fib_sem_wait(&G.s[i]);
  S->in_wait--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_WAIT, i, (int)b, r);
  unsigned allow = may_wait_allow(dead, was, has, now);
  if (!dead && !was && avail)
    allow = A_OK; /* a unit is there: taken at once */
  fz_expect(r, allow, "fib_sem_wait", me->slot);
  if (r == 0)
    S->takes++;
  sem_check(i);
}

void fz_op_sem_trywait(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NS);
  struct fz_sem *S = &G.ms[i];
  uint64_t v = fib_sem_value(&G.s[i]);
  int r = fib_sem_trywait(&G.s[i]);
  fz_log(me->slot, OPN_TRYWAIT, i, (int)b, r);
  fz_expect(r, S->destroyed ? A_EINVAL : v ? A_OK : A_EAGAIN,
            "fib_sem_trywait", me->slot);
  if (r == 0)
    S->takes++;
  sem_check(i);
}

/* ---- wait group */

static const int64_t wg_deltas[8] = {1, -1, 2, -2, 1, -1, INT64_MAX,
                                     INT64_MIN};

static void wg_add_as(int slot, int i, int64_t d, int done) {
  struct fz_wg *W = &G.mw[i];
  unsigned allow;
  if (W->destroyed)
    allow = A_EINVAL;
  else if (d < 0 && d < -W->count)
    allow = A_EINVAL; /* below zero: refused, left as it was */
  else if (d > 0 && W->count > INT64_MAX - d)
    allow = A_EOVERFLOW;
  else
    allow = A_OK;
  int r = done ? fib_wg_done(&G.w[i]) : fib_wg_add(&G.w[i], d);
  fz_log(slot, OPN_WGADD, i, (int)(d > 100 ? 100 : d < -100 ? -100 : d), r);
  fz_expect(r, allow, "fib_wg_add", slot);
  if (r == 0 && (W->count += d) == 0)
    W->epoch++;
}

void fz_op_wg_add(struct fz_fiber *me, unsigned a, unsigned b) {
  int64_t d = wg_deltas[(a >> 1) & 7];
  wg_add_as(me->slot, (int)(a % FZ_NW), d, d == -1 && (b & 1));
}

void fz_op_wg_wait(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NW);
  struct fz_wg *W = &G.mw[i];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int dead = W->destroyed;
  int64_t count = W->count;
  uint64_t epoch = W->epoch;
  int was = fz_enter(me, has, "fib_wg_wait");
  me->call_kind = FZ_W_WG;
  me->call_idx = i;
  W->in_wait++;
  int r = (b & 3) ? fib_wg_wait_until(&G.w[i], dl) : fib_wg_wait(&G.w[i]);
  W->in_wait--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_WGWAIT, i, (int)b, r);
  unsigned allow = may_wait_allow(dead, was, has, now);
  if (!dead && !was && count == 0)
    allow = A_OK; /* zero: returns at once */
  fz_expect(r, allow, "fib_wg_wait", me->slot);
  FZ_CHECK(r != 0 || count == 0 || W->epoch != epoch, "fib_wg_wait returned "
           "0 in fiber %d but wait group %d never reached zero", me->slot, i);
}

/* ---- once */

struct once_arg { int i, slot; unsigned flags; };

static void once_fn(void *p) {
  struct once_arg *x = p;
  struct fz_once *O = &G.mo[x->i];
  FZ_CHECK(!O->done && O->runner == -1, "once %d: fn runs in %d while %s",
           x->i, x->slot, O->done ? "done" : "another runs it");
  O->runner = x->slot;
  int in_fiber = x->slot != FZ_MAIN;
  if (x->flags & 1) {
    int r = fib_yield(); /* others call it meanwhile, and wait */
    fz_expect(r, in_fiber ? A_OK : A_EPERM, "fib_yield in once fn", x->slot);
  }
  if (x->flags & 2) {
    int r = fib_once_call(&G.o[x->i], once_fn, p);
    fz_expect(r, A_EDEADLK, "fib_once_call from its own fn", x->slot);
  }
  if (in_fiber && (x->flags & 12) == 12) { /* finish inside fn */
    struct fz_fiber *me = &G.f[x->slot];
    fz_log(x->slot, 6, x->i, -1, -1000);
    fz_finish(me); /* resets the model's runner: as if never called */
    fib_exit(fz_token_of(x->slot));
  }
  O->runner = -1;
  O->done = 1;
  O->completions++;
}

static void once_call_as(struct fz_fiber *me, int slot, int i, unsigned b) {
  struct fz_once *O = &G.mo[i];
  int has = 0;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int waits = !O->done && O->runner != -1;
  int was = me ? fz_enter(me, has, "fib_once_call") : 0;
  if (me && waits) {
    me->call_kind = FZ_W_ONCE;
    me->call_idx = i;
  }
  struct once_arg x = {i, slot, b >> 4};
  int r = (b & 3) ? fib_once_call_until(&G.o[i], once_fn, &x, dl)
                  : fib_once_call(&G.o[i], once_fn, &x);
  int now = me ? fz_leave(me) : 0;
  fz_log(slot, OPN_ONCE, i, (int)b, r);
  unsigned allow = A_OK;
  if (waits) /* someone else runs fn: waits for it (or runs it itself, if
                that one goes away) */
    allow = was ? A_ECANCELED
                : A_OK | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0);
  fz_expect(r, allow, "fib_once_call", slot);
  if (r == 0)
    FZ_CHECK(O->done, "fib_once_call returned 0 in %d before fn "
             "completed", slot);
  FZ_CHECK(O->completions <= 1, "once %d: fn completed %d times", i,
           O->completions);
}

void fz_op_once(struct fz_fiber *me, unsigned a, unsigned b) {
  once_call_as(me, me->slot, (int)(a % FZ_NO), b);
}

/* ---- destroy (or, once destroyed and idle, init afresh) */

void fz_op_destroy(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)((a >> 3) & 1), r;
  unsigned allow;
  switch (a % 4) {
  case 0: {
    struct fz_mutex *M = &G.mm[i];
    if (M->destroyed) {
      if (M->in_lock)
        return; /* a call may still be on it: no init under it */
      r = fib_mutex_init(&G.m[i]);
      fz_expect(r, A_OK, "fib_mutex_init", me->slot);
      M->destroyed = 0;
      M->owner = -1;
      break;
    }
    if (M->cond_users)
      return; /* a cond wait will relock it: destroying it is the
                 program's bug, with no documented outcome */
    allow = M->owner != -1 ? A_EBUSY : M->in_lock ? A_OK | A_EBUSY : A_OK;
    r = fib_mutex_destroy(&G.m[i]);
    fz_expect(r, allow, "fib_mutex_destroy", me->slot);
    M->destroyed = r == 0;
    break;
  }
  case 1: {
    struct fz_cond *C = &G.mc[i];
    if (C->destroyed) {
      if (C->in_wait)
        return;
      r = fib_cond_init(&G.c[i]);
      fz_expect(r, A_OK, "fib_cond_init", me->slot);
      C->destroyed = 0;
      break;
    }
    r = fib_cond_destroy(&G.c[i]);
    fz_expect(r, C->in_wait ? A_OK | A_EBUSY : A_OK, "fib_cond_destroy",
              me->slot);
    C->destroyed = r == 0;
    break;
  }
  case 2: {
    struct fz_sem *S = &G.ms[i];
    if (S->destroyed) {
      if (S->in_wait)
        return;
      r = fib_sem_init(&G.s[i], b & 3);
      fz_expect(r, A_OK, "fib_sem_init", me->slot);
      S->destroyed = 0;
      S->init = b & 3;
      S->posts = S->takes = 0;
      break;
    }
    r = fib_sem_destroy(&G.s[i]);
    fz_expect(r, S->in_wait ? A_OK | A_EBUSY : A_OK, "fib_sem_destroy",
              me->slot);
    S->destroyed = r == 0;
    if (r == 0) /* refused from now on, and it reads as empty */
      FZ_CHECK(fib_sem_value(&G.s[i]) == 0, "fib_sem_value of a destroyed "
               "semaphore is not 0");
    break;
  }
  default: {
    struct fz_wg *W = &G.mw[i];
    if (W->destroyed) {
      if (W->in_wait)
        return;
      r = fib_wg_init(&G.w[i]);
      fz_expect(r, A_OK, "fib_wg_init", me->slot);
      W->destroyed = 0;
      W->count = 0;
      break;
    }
    r = fib_wg_destroy(&G.w[i]);
    fz_expect(r, W->in_wait ? A_OK | A_EBUSY : A_OK, "fib_wg_destroy",
              me->slot);
    W->destroyed = r == 0;
    break;
  }
  }
  fz_log(me->slot, OPN_DESTROY, (int)a, (int)b, r);
}

/* ---- set-up, main's wake-ups, discard, tear-down */

void fz_sync_setup(unsigned sem_bits) {
  static const uint64_t inits[4] = {0, 1, 2, UINT64_MAX - 1};
  for (int i = 0; i < FZ_NM; i++) {
    fz_expect(fib_mutex_init(&G.m[i]), A_OK, "fib_mutex_init", FZ_MAIN);
    G.mm[i].owner = -1;
  }
  for (int i = 0; i < FZ_NC; i++)
    fz_expect(fib_cond_init(&G.c[i]), A_OK, "fib_cond_init", FZ_MAIN);
  for (int i = 0; i < FZ_NS; i++) {
    G.ms[i].init = inits[(sem_bits >> (2 * i)) & 3];
    fz_expect(fib_sem_init(&G.s[i], G.ms[i].init), A_OK, "fib_sem_init",
              FZ_MAIN);
  }
  for (int i = 0; i < FZ_NW; i++)
    fz_expect(fib_wg_init(&G.w[i]), A_OK, "fib_wg_init", FZ_MAIN);
  memset(G.o, 0, sizeof G.o); /* FIB_ONCE_INIT */
  for (int i = 0; i < FZ_NO; i++)
    G.mo[i].runner = -1;
  /* Outside a fiber a call that may wait is refused, even one that would
   * not wait; calls that never wait work. */
  fz_expect(fib_mutex_lock(&G.m[0]), A_EPERM, "fib_mutex_lock from main",
            FZ_MAIN);
  fz_expect(fib_mutex_trylock(&G.m[0]), A_EPERM,
            "fib_mutex_trylock from main", FZ_MAIN);
  fz_expect(fib_mutex_unlock(&G.m[0]), A_EPERM, "fib_mutex_unlock from main",
            FZ_MAIN);
  fz_expect(fib_wg_wait(&G.w[0]), A_EPERM, "fib_wg_wait from main", FZ_MAIN);
  fz_expect(fib_cond_signal(&G.c[0]), A_OK, "fib_cond_signal from main",
            FZ_MAIN);
}

void fz_sync_wake_from_main(void) {
  for (int i = 0; i < FZ_NC; i++) {
    int r = fib_cond_broadcast(&G.c[i]);
    fz_expect(r, G.mc[i].destroyed ? A_EINVAL : A_OK,
              "fib_cond_broadcast from main", FZ_MAIN);
    if (r == 0) {
      G.mc[i].epoch++;
      G.mc[i].bcasts++;
    }
  }
  for (int i = 0; i < FZ_NS; i++)
    for (int k = 0; k < G.ms[i].in_wait; k++)
      sem_post_as(FZ_MAIN, i, 0);
  for (int i = 0; i < FZ_NW; i++)
    if (!G.mw[i].destroyed && G.mw[i].count > 0)
      wg_add_as(FZ_MAIN, i, -G.mw[i].count, 0);
}

void fz_sync_discard(void) {
  /* What fib_runtime_destroy undoes: mutexes held by discarded fibers are
   * unlocked (no live waiter is left), a once fn they ran is as if never
   * called; every wait they were in is gone. Units handed to a discarded
   * waiter stay taken: sem_check allows for them until then. */
  for (int i = 0; i < FZ_NS; i++)
    sem_check(i);
  for (int i = 0; i < FZ_NM; i++) {
    struct fz_mutex *M = &G.mm[i];
    if (M->owner >= 0 && G.f[M->owner].discarded)
      M->owner = -1;
    FZ_CHECK(M->owner == -1, "mutex %d still held by fiber %d after the "
             "runtime is gone", i, M->owner);
  }
  for (int i = 0; i < FZ_NO; i++)
    if (G.mo[i].runner >= 0 && G.f[G.mo[i].runner].discarded)
      G.mo[i].runner = -1;
  for (int i = 0; i < FZ_NM; i++)
    G.mm[i].in_lock = G.mm[i].cond_users = 0;
  for (int i = 0; i < FZ_NC; i++)
    G.mc[i].in_wait = 0;
  for (int i = 0; i < FZ_NS; i++) {
    /* units handed to discarded waiters are gone: resynchronise */
    if (!G.ms[i].destroyed)
      G.ms[i].takes = G.ms[i].init + G.ms[i].posts - fib_sem_value(&G.s[i]);
    G.ms[i].in_wait = 0;
  }
  for (int i = 0; i < FZ_NW; i++)
    G.mw[i].in_wait = 0;
}

void fz_sync_teardown(void) {
  /* No fiber is left: every wait has ended, so every destroy succeeds (or
   * is refused as a second destroy). */
  for (int i = 0; i < FZ_NS; i++)
    sem_check(i);
  for (int i = 0; i < FZ_NO; i++) {
    /* a once whose fn was cut short is callable again, and runs it */
    once_call_as(NULL, FZ_MAIN, i, 0x10); /* fn yields: EPERM in main */
    FZ_CHECK(G.mo[i].completions == 1, "once %d: fn completed %d times "
             "after a call from main", i, G.mo[i].completions);
  }
  for (int i = 0; i < FZ_NM; i++)
    fz_expect(fib_mutex_destroy(&G.m[i]), G.mm[i].destroyed ? A_EINVAL : A_OK,
              "fib_mutex_destroy at the end", FZ_MAIN);
  for (int i = 0; i < FZ_NC; i++)
    fz_expect(fib_cond_destroy(&G.c[i]), G.mc[i].destroyed ? A_EINVAL : A_OK,
              "fib_cond_destroy at the end", FZ_MAIN);
  for (int i = 0; i < FZ_NS; i++)
    fz_expect(fib_sem_destroy(&G.s[i]), G.ms[i].destroyed ? A_EINVAL : A_OK,
              "fib_sem_destroy at the end", FZ_MAIN);
  for (int i = 0; i < FZ_NW; i++)
    fz_expect(fib_wg_destroy(&G.w[i]), G.mw[i].destroyed ? A_EINVAL : A_OK,
              "fib_wg_destroy at the end", FZ_MAIN);
  /* and a destroyed primitive refuses every call */
  fz_expect(fib_sem_post(&G.s[0]), A_EINVAL, "fib_sem_post after destroy",
            FZ_MAIN);
  fz_expect(fib_cond_signal(&G.c[0]), A_EINVAL,
            "fib_cond_signal after destroy", FZ_MAIN);
  fz_expect(fib_wg_add(&G.w[0], 1), A_EINVAL, "fib_wg_add after destroy",
            FZ_MAIN);
}
