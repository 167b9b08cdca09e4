/* SPDX-License-Identifier: MIT */
/*
 * sync.c -- mutex, condition variable, semaphore, wait group and once,
 * built on park/ready (sched/fiber.h) and the wait queues of waitq.h.
 *
 * Each public struct (fibers.h) is storage for one of the records below;
 * `magic` says which, and whether it is initialised (storage.h).
 */
#include "storage.h"
#include "../sched/seed.h"
#include "../sched/waitq.h"

#include <stddef.h>
#include <stdint.h>

/* Each primitive has two modes, chosen at init (storage.h): local (the
 * code of a one-thread runtime) and shared (a spin lock around every call
 * and the claim protocol for wake-ups, for the workers of multi-worker
 * runtimes). The calls are written once: an always-inline body takes the
 * mode as a constant, and each public call runs the local body or, when
 * the magic number says so, an out-of-line shared one. */
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define SHARED_PATH __attribute__((noinline))

static ALWAYS_INLINE void lock_in(uint32_t *l, int shared) {
  if (shared)
    fib__spin_lock(l);
}

static ALWAYS_INLINE void unlock_in(uint32_t *l, int shared) {
  if (shared)
    fib__spin_unlock(l);
}

/* fib__waitq_wait_in's lock argument: the lock in shared mode, else NULL. */
#define WAIT_LOCK(l, shared) ((shared) ? (l) : NULL)

/* ------------------------------------------------------------- mutex */

#define MUTEX_MAGIC 0x6d757478u /* "mutx" */

struct mutex {
  uint32_t magic;
  uint32_t lock;             /* shared mode: guards what follows */
  struct fib__fiber *owner; /* NULL: unlocked */
  struct fib__waitq waiters; /* fibers in lock; owner != NULL if any live */
  struct fib__hold held;     /* in owner's holds while locked */
};
FIB__CHECK_STORAGE(fib_mutex, struct mutex);

static void mutex_discard(struct fib__hold *h);

/* x is locked by f from now on. (Shared mode: f is this thread's running
 * fiber, or a waiter whose claim the caller won, which is not running.) */
static inline void mutex_own(struct mutex *x, struct fib__fiber *f) {
  x->owner = f;
  fib__hold_add(f, &x->held);
}

int fib_mutex_init(fib_mutex *m) {
  struct mutex *x = fib__start(m, fib__mode_magic(MUTEX_MAGIC), sizeof *x);
  if (!x)
    return FIB_EINVAL;
  x->held.discard = mutex_discard;
  return 0;
}

/* The record in m, in either mode: *shared says which. NULL: not a live
 * mutex. */
static inline struct mutex *mutex_of(fib_mutex *m, int *shared) {
  return fib__live_in(m, MUTEX_MAGIC, shared);
}

int fib_mutex_destroy(fib_mutex *m) {
  int shared;
  struct mutex *x = mutex_of(m, &shared);
  if (!x)
    return FIB_EINVAL;
  lock_in(&x->lock, shared);
  int err = fib__retire_in(&x->magic, &x->waiters, x->owner != NULL, shared);
  unlock_in(&x->lock, shared);
  return err;
}

static ALWAYS_INLINE int mutex_lock(struct mutex *x, struct fib__fiber *self,
                                    uint64_t deadline, int shared) {
  lock_in(&x->lock, shared);
  if (!x->owner) {
    mutex_own(x, self);
    unlock_in(&x->lock, shared);
    return 0;
  }
  if (x->owner == self) {
    unlock_in(&x->lock, shared);
    return FIB_EDEADLK;
  }
  /* 0: the unlocker made us the owner (hand-off). Unlocks. */
  return fib__waitq_wait_in(&x->waiters, self, NULL, deadline,
                            WAIT_LOCK(&x->lock, shared));
}

static SHARED_PATH int mutex_lock_shared(struct mutex *x, uint64_t deadline) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  return err ? err : mutex_lock(x, self, deadline, 1);
}

static ALWAYS_INLINE int mutex_lock_until_body(fib_mutex *m,
                                               uint64_t deadline_ns) {
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  if (!x) {
    x = fib__live(m, FIB__SHARED_MAGIC(MUTEX_MAGIC));
    return x ? mutex_lock_shared(x, deadline_ns) : FIB_EINVAL;
  }
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  return mutex_lock(x, self, deadline_ns, 0);
}

/* The preemption point of the seeded test mode, out of the way (seed.h). */
FIB__PREEMPTED(int, mutex_lock_until_preempted, mutex_lock_until_body,
               (fib_mutex *m, uint64_t deadline_ns), (m, deadline_ns))

int fib_mutex_lock_until(fib_mutex *m, uint64_t deadline_ns) {
  if (fib__preempt_any())
    return mutex_lock_until_preempted(m, deadline_ns);
  return mutex_lock_until_body(m, deadline_ns);
}

int fib_mutex_lock(fib_mutex *m) {
  return fib_mutex_lock_until(m, FIB__NO_DEADLINE);
}

int fib_mutex_trylock(fib_mutex *m) {
  int shared;
  struct mutex *x = mutex_of(m, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  lock_in(&x->lock, shared);
  int err = FIB_EBUSY;
  if (!x->owner) {
    mutex_own(x, self);
    err = 0;
  }
  unlock_in(&x->lock, shared);
  return err;
}

/* Hand x to its longest live waiter, or leave it unlocked (x's lock
 * held in shared mode). */
static ALWAYS_INLINE void mutex_release(struct mutex *x, int shared) {
  fib__hold_drop(&x->held);
  struct fib__wnode *n = fib__waitq_claim(&x->waiters, shared);
  if (n) {
    mutex_own(x, n->fiber);
    fib__waitq_complete(&x->waiters, 0, shared);
  } else {
    x->owner = NULL;
  }
}

/* Its owner is discarded with its runtime (fib_runtime_destroy, which has
 * already unlinked the discarded fibers' waits): the next live waiter, if
 * any (a fiber of another runtime), gets it, as from an unlock. */
static void mutex_discard(struct fib__hold *h) {
  struct mutex *x =
      (struct mutex *)(void *)((char *)h - offsetof(struct mutex, held));
  if (x->magic == MUTEX_MAGIC) {
    mutex_release(x, 0); /* drops h */
    return;
  }
  lock_in(&x->lock, 1);
  mutex_release(x, 1);
  unlock_in(&x->lock, 1);
}

static ALWAYS_INLINE int mutex_unlock(struct mutex *x, int shared) {
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  lock_in(&x->lock, shared);
  int err = FIB_EPERM;
  if (x->owner == self) {
    mutex_release(x, shared);
    err = 0;
  }
  unlock_in(&x->lock, shared);
  return err;
}

static SHARED_PATH int mutex_unlock_shared(struct mutex *x) {
  return mutex_unlock(x, 1);
}

int fib_mutex_unlock(fib_mutex *m) {
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  if (!x) {
    x = fib__live(m, FIB__SHARED_MAGIC(MUTEX_MAGIC));
    return x ? mutex_unlock_shared(x) : FIB_EINVAL;
  }
  return mutex_unlock(x, 0);
}

/*
 * Lock for fib_cond_wait's return: the caller must hold the mutex again
 * whatever happens, so this wait is uncancellable. It waits in line like
 * any lock, and only the unlocker's hand-off ends it; a fib_cancel that
 * arrives meanwhile is left for the fiber's next blocking call.
 */
static ALWAYS_INLINE void mutex_relock(struct mutex *x, struct fib__fiber *self,
                                       int shared) {
  lock_in(&x->lock, shared);
  if (!x->owner) {
    mutex_own(x, self);
    unlock_in(&x->lock, shared);
    return;
  }
  struct fib__wnode n = {.fiber = self};
  struct fib__wait w = {.fiber = self, .nodes = &n, .count = 1};
  n.wait = &w;
  fib__waitq_push(&x->waiters, &n);
  self->wait = &w;
  if (shared) {
    fib__claim_arm(self, FIB__CLAIM_COMPLETE); /* before the unlock */
    unlock_in(&x->lock, 1);
    fib__fiber_park_nocancel_armed(self); /* mutex_release made us owner */
  } else {
    fib__fiber_park_nocancel(self);
  }
  self->wait = NULL;
}

/* -------------------------------------------------------------- cond */

#define COND_MAGIC 0x636f6e64u /* "cond" */

struct cond {
  uint32_t magic;
  uint32_t lock;             /* shared mode: guards what follows */
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_cond, struct cond);

int fib_cond_init(fib_cond *c) {
  return fib__start(c, fib__mode_magic(COND_MAGIC), sizeof(struct cond))
             ? 0
             : FIB_EINVAL;
}

int fib_cond_destroy(fib_cond *c) {
  int shared;
  struct cond *x = fib__live_in(c, COND_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  lock_in(&x->lock, shared);
  int err = fib__retire_in(&x->magic, &x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return err;
}

static ALWAYS_INLINE int cond_wait(struct cond *x, struct mutex *mx,
                                   struct fib__fiber *self, uint64_t deadline,
                                   int shared) {
  /* Shared: the cond's lock is taken before the mutex is given up and
   * released only once the node is linked (fib__waitq_wait_in), so a
   * signal sent by the next owner cannot come before we wait. Local: no
   * switch in between does the same. */
  lock_in(&x->lock, shared);
  lock_in(&mx->lock, shared);
  mutex_release(mx, shared);
  unlock_in(&mx->lock, shared);
  int err = fib__waitq_wait_in(&x->waiters, self, NULL, deadline,
                               WAIT_LOCK(&x->lock, shared));
  mutex_relock(mx, self, shared);
  return err; /* the wait's result: a cancel during the relock waits */
}

static SHARED_PATH int cond_wait_shared(struct cond *x, struct mutex *mx,
                                        struct fib__fiber *self,
                                        uint64_t deadline) {
  return cond_wait(x, mx, self, deadline, 1);
}

int fib_cond_wait_until(fib_cond *c, fib_mutex *m, uint64_t deadline_ns) {
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  int shared, mshared;
  struct cond *x = fib__live_in(c, COND_MAGIC, &shared);
  struct mutex *mx = mutex_of(m, &mshared);
  if (!x || !mx || shared != mshared) /* one mode for both */
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  struct fib__fiber *self = fib__fiber_self();
  lock_in(&mx->lock, shared);
  int owner = self && mx->owner == self;
  unlock_in(&mx->lock, shared);
  if (!owner)
    return FIB_EPERM;
  if (fib__cancelled(self))
    return FIB_ECANCELED;
  if (shared)
    return cond_wait_shared(x, mx, self, deadline_ns);
  return cond_wait(x, mx, self, deadline_ns, 0);
}

int fib_cond_wait(fib_cond *c, fib_mutex *m) {
  return fib_cond_wait_until(c, m, FIB__NO_DEADLINE);
}

int fib_cond_signal(fib_cond *c) {
  int shared;
  struct cond *x = fib__live_in(c, COND_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  lock_in(&x->lock, shared);
  if (fib__waitq_claim(&x->waiters, shared))
    fib__waitq_complete(&x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return 0;
}

int fib_cond_broadcast(fib_cond *c) {
  int shared;
  struct cond *x = fib__live_in(c, COND_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  lock_in(&x->lock, shared);
  fib__waitq_complete_every(&x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return 0;
}

/* --------------------------------------------------------- semaphore */

#define SEM_MAGIC 0x73656d61u /* "sema" */

struct sem {
  uint32_t magic;
  uint32_t lock;             /* shared mode: guards what follows */
  uint64_t value;            /* 0 while live waiters exist */
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_sem, struct sem);

int fib_sem_init(fib_sem *s, uint64_t value) {
  struct sem *x = fib__start(s, fib__mode_magic(SEM_MAGIC), sizeof *x);
  if (!x)
    return FIB_EINVAL;
  x->value = value;
  return 0;
}

int fib_sem_destroy(fib_sem *s) {
  int shared;
  struct sem *x = fib__live_in(s, SEM_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  lock_in(&x->lock, shared);
  int err = fib__retire_in(&x->magic, &x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return err;
}

int fib_sem_post(fib_sem *s) {
  int shared;
  struct sem *x = fib__live_in(s, SEM_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  lock_in(&x->lock, shared);
  int err = 0;
  if (fib__waitq_claim(&x->waiters, shared)) /* the unit goes to it */
    fib__waitq_complete(&x->waiters, 0, shared);
  else if (x->value == UINT64_MAX)
    err = FIB_EOVERFLOW;
  else
    x->value++;
  unlock_in(&x->lock, shared);
  return err;
}

static ALWAYS_INLINE int sem_wait(struct sem *x, struct fib__fiber *self,
                                  uint64_t deadline, int shared) {
  lock_in(&x->lock, shared);
  if (x->value) {
    x->value--;
    unlock_in(&x->lock, shared);
    return 0;
  }
  /* 0: a post handed its unit straight to us. Unlocks. */
  return fib__waitq_wait_in(&x->waiters, self, NULL, deadline,
                            WAIT_LOCK(&x->lock, shared));
}

static SHARED_PATH int sem_wait_shared(struct sem *x, uint64_t deadline) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  return err ? err : sem_wait(x, self, deadline, 1);
}

int fib_sem_wait_until(fib_sem *s, uint64_t deadline_ns) {
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  struct sem *x = fib__live(s, SEM_MAGIC);
  if (!x) {
    x = fib__live(s, FIB__SHARED_MAGIC(SEM_MAGIC));
    return x ? sem_wait_shared(x, deadline_ns) : FIB_EINVAL;
  }
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  return sem_wait(x, self, deadline_ns, 0);
}

int fib_sem_wait(fib_sem *s) { return fib_sem_wait_until(s, FIB__NO_DEADLINE); }

int fib_sem_trywait(fib_sem *s) {
  int shared;
  struct sem *x = fib__live_in(s, SEM_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  lock_in(&x->lock, shared);
  int err = FIB_EAGAIN;
  if (x->value) {
    x->value--;
    err = 0;
  }
  unlock_in(&x->lock, shared);
  return err;
}

uint64_t fib_sem_value(const fib_sem *s) {
  int shared;
  struct sem *x = fib__live_in(s, SEM_MAGIC, &shared);
  if (!x)
    return 0;
  lock_in(&x->lock, shared); /* shared: others write it under the lock */
  uint64_t v = x->value;
  unlock_in(&x->lock, shared);
  return v;
}

/* -------------------------------------------------------- wait group */

#define WG_MAGIC 0x77677270u /* "wgrp" */

struct wg {
  uint32_t magic;
  uint32_t lock;             /* shared mode: guards what follows */
  int64_t count;             /* >= 0; no live waiters while 0 */
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_wg, struct wg);

int fib_wg_init(fib_wg *g) {
  return fib__start(g, fib__mode_magic(WG_MAGIC), sizeof(struct wg))
             ? 0
             : FIB_EINVAL;
}

int fib_wg_destroy(fib_wg *g) {
  int shared;
  struct wg *x = fib__live_in(g, WG_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  lock_in(&x->lock, shared);
  int err = fib__retire_in(&x->magic, &x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return err;
}

int fib_wg_add(fib_wg *g, int64_t delta) {
  int shared;
  struct wg *x = fib__live_in(g, WG_MAGIC, &shared);
  if (!x)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  lock_in(&x->lock, shared);
  int err = 0;
  /* -count, not -delta: count >= 0, while -INT64_MIN overflows. */
  if (delta < 0 && delta < -x->count)
    err = FIB_EINVAL;
  else if (delta > 0 && x->count > INT64_MAX - delta)
    err = FIB_EOVERFLOW;
  else if ((x->count += delta) == 0)
    fib__waitq_complete_every(&x->waiters, 0, shared);
  unlock_in(&x->lock, shared);
  return err;
}

int fib_wg_done(fib_wg *g) { return fib_wg_add(g, -1); }

static ALWAYS_INLINE int wg_wait(struct wg *x, struct fib__fiber *self,
                                 uint64_t deadline, int shared) {
  lock_in(&x->lock, shared);
  if (x->count == 0) {
    unlock_in(&x->lock, shared);
    return 0;
  }
  return fib__waitq_wait_in(&x->waiters, self, NULL, deadline,
                            WAIT_LOCK(&x->lock, shared));
}

static SHARED_PATH int wg_wait_shared(struct wg *x, uint64_t deadline) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  return err ? err : wg_wait(x, self, deadline, 1);
}

int fib_wg_wait_until(fib_wg *g, uint64_t deadline_ns) {
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  struct wg *x = fib__live(g, WG_MAGIC);
  if (!x) {
    x = fib__live(g, FIB__SHARED_MAGIC(WG_MAGIC));
    return x ? wg_wait_shared(x, deadline_ns) : FIB_EINVAL;
  }
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  return wg_wait(x, self, deadline_ns, 0);
}

int fib_wg_wait(fib_wg *g) { return fib_wg_wait_until(g, FIB__NO_DEADLINE); }

/* -------------------------------------------------------------- once */

/* A fib_once has no init call to choose a mode, so it always takes its
 * lock, off its fast path: once fn has returned, a call is one acquire
 * load. */
enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

struct once {
  uint32_t state;            /* ONCE_*; zero bits: not run yet. Written
                                under `lock`; DONE is read without it */
  uint32_t lock;             /* guards what follows, and state's changes */
  struct fib__fiber *runner; /* while RUNNING: who runs fn (NULL: no fiber) */
  struct fib__waitq waiters; /* fibers waiting for fn to return */
  struct fib__hold held;     /* in runner's holds while it runs fn */
};
FIB__CHECK_FITS(fib_once, struct once);

/* Run fn is over, or given up: DONE or NEW again, and the waiters look. */
static void once_settle(struct once *x, uint32_t state) {
  fib__spin_lock(&x->lock);
  if (x->runner)
    fib__hold_drop(&x->held);
  /* release: whoever sees DONE without the lock sees what fn did */
  __atomic_store_n(&x->state, state, __ATOMIC_RELEASE);
  x->runner = NULL;
  fib__waitq_complete_every(&x->waiters, 0, 1);
  fib__spin_unlock(&x->lock);
}

/* The fiber running fn finished inside it (fib_exit) or was discarded
 * with its runtime: as if the call had never been made (what pthread_once
 * does for a cancelled init routine). The waiters look again, and the
 * first of them runs fn. */
static void once_discard(struct fib__hold *h) {
  once_settle((struct once *)(void *)((char *)h - offsetof(struct once, held)),
              ONCE_NEW);
}

int fib_once_call_until(fib_once *o, void (*fn)(void *), void *arg,
                        uint64_t deadline_ns) {
  if (!o || !fn)
    return FIB_EINVAL;
  struct once *x = (struct once *)(void *)&o->opaque;
  if (__atomic_load_n(&x->state, __ATOMIC_ACQUIRE) == ONCE_DONE)
    return 0;
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  for (;;) {
    struct fib__fiber *self = fib__fiber_self();
    fib__spin_lock(&x->lock);
    switch (x->state) {
    case ONCE_DONE:
      fib__spin_unlock(&x->lock);
      return 0;
    case ONCE_NEW:
      /* atomic: the fast path reads state without the lock */
      __atomic_store_n(&x->state, ONCE_RUNNING, __ATOMIC_RELAXED);
      x->runner = self;
      if (self) {
        x->held.discard = once_discard;
        fib__hold_add(self, &x->held);
      }
      fib__spin_unlock(&x->lock);
      fn(arg); /* on the caller's stack: self is still it after */
      once_settle(x, ONCE_DONE);
      return 0;
    case ONCE_RUNNING:
      break;
    default:
      fib__spin_unlock(&x->lock);
      return FIB_EINVAL; /* not a fib_once */
    }
    if (x->runner == self) { /* also outside fibers: NULL == NULL */
      fib__spin_unlock(&x->lock);
      return FIB_EDEADLK;
    }
    int err = fib__waiter(&self);
    if (err) {
      fib__spin_unlock(&x->lock);
      return err;
    }
    err = fib__waitq_wait_in(&x->waiters, self, NULL, deadline_ns, &x->lock);
    if (err)
      return err;
    /* Woken: fn returned, or its runner went away; look again. */
  }
}

int fib_once_call(fib_once *o, void (*fn)(void *), void *arg) {
  return fib_once_call_until(o, fn, arg, FIB__NO_DEADLINE);
}
