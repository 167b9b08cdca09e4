/* SPDX-License-Identifier: MIT */
/*
 * sync.c -- mutex, condition variable, semaphore, wait group and once,
 * built on park/ready (sched/fiber.h) and the wait queues of waitq.h.
 *
 * Each public struct (fibers.h) is storage for one of the records below;
 * `magic` says which, and whether it is initialised (storage.h).
 */
#include "storage.h"
#include "../sched/waitq.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- mutex */

#define MUTEX_MAGIC 0x6d757478u /* "mutx" */

struct mutex {
  uint32_t magic;
  struct fib__fiber *owner; /* NULL: unlocked */
  struct fib__waitq waiters; /* fibers in lock; owner != NULL if any live */
  struct fib__hold held;     /* in owner's holds while locked */
};
FIB__CHECK_STORAGE(fib_mutex, struct mutex);

static void mutex_discard(struct fib__hold *h);

/* x is locked by f from now on. */
static inline void mutex_own(struct mutex *x, struct fib__fiber *f) {
  x->owner = f;
  fib__hold_add(f, &x->held);
}

int fib_mutex_init(fib_mutex *m) {
  struct mutex *x = fib__start(m, MUTEX_MAGIC, sizeof *x);
  if (!x)
    return FIB_EINVAL;
  x->held.discard = mutex_discard;
  return 0;
}

int fib_mutex_destroy(fib_mutex *m) {
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  return x ? fib__retire(&x->magic, &x->waiters, x->owner != NULL)
           : FIB_EINVAL;
}

int fib_mutex_lock_until(fib_mutex *m, uint64_t deadline_ns) {
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  if (!x)
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  if (!x->owner) {
    mutex_own(x, self);
    return 0;
  }
  if (x->owner == self)
    return FIB_EDEADLK;
  /* 0: the unlocker made us the owner (hand-off). */
  return fib__waitq_wait(&x->waiters, self, NULL, deadline_ns);
}

int fib_mutex_lock(fib_mutex *m) {
  return fib_mutex_lock_until(m, FIB__NO_DEADLINE);
}

int fib_mutex_trylock(fib_mutex *m) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  if (!x)
    return FIB_EINVAL;
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  if (x->owner)
    return FIB_EBUSY;
  mutex_own(x, self);
  return 0;
}

/* Hand x to its longest live waiter, or leave it unlocked. */
static void mutex_release(struct mutex *x) {
  fib__hold_drop(&x->held);
  struct fib__wnode *n = fib__waitq_first(&x->waiters);
  if (n) {
    mutex_own(x, n->fiber);
    fib__waitq_complete_first(&x->waiters, 0);
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
  mutex_release(x); /* drops h */
}

int fib_mutex_unlock(fib_mutex *m) {
  struct mutex *x = fib__live(m, MUTEX_MAGIC);
  if (!x)
    return FIB_EINVAL;
  struct fib__fiber *self = fib__fiber_self();
  if (!self || x->owner != self)
    return FIB_EPERM;
  mutex_release(x);
  return 0;
}

/*
 * Lock for fib_cond_wait's return: the caller must hold the mutex again
 * whatever happens, so this wait is uncancellable. It waits in line like
 * any lock, and only the unlocker's hand-off ends it; a fib_cancel that
 * arrives meanwhile is left for the fiber's next blocking call.
 */
static void mutex_relock(struct mutex *x, struct fib__fiber *self) {
  if (!x->owner) {
    mutex_own(x, self);
    return;
  }
  struct fib__wnode n = {.fiber = self};
  struct fib__wait w = {.fiber = self, .nodes = &n, .count = 1};
  n.wait = &w;
  fib__waitq_push(&x->waiters, &n);
  self->wait = &w;
  fib__fiber_park_nocancel(self); /* mutex_release made us the owner */
  self->wait = NULL;
}

/* -------------------------------------------------------------- cond */

#define COND_MAGIC 0x636f6e64u /* "cond" */

struct cond {
  uint32_t magic;
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_cond, struct cond);

int fib_cond_init(fib_cond *c) {
  return fib__start(c, COND_MAGIC, sizeof(struct cond)) ? 0 : FIB_EINVAL;
}

int fib_cond_destroy(fib_cond *c) {
  struct cond *x = fib__live(c, COND_MAGIC);
  return x ? fib__retire(&x->magic, &x->waiters, 0) : FIB_EINVAL;
}

int fib_cond_wait_until(fib_cond *c, fib_mutex *m, uint64_t deadline_ns) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct cond *x = fib__live(c, COND_MAGIC);
  struct mutex *mx = fib__live(m, MUTEX_MAGIC);
  if (!x || !mx)
    return FIB_EINVAL;
  struct fib__fiber *self = fib__fiber_self();
  if (!self || mx->owner != self)
    return FIB_EPERM;
  if (fib__cancelled(self))
    return FIB_ECANCELED;
  /* No switch between releasing the mutex and linking the node, so a
   * signal sent by the next owner cannot come before we wait. */
  mutex_release(mx);
  int err = fib__waitq_wait(&x->waiters, self, NULL, deadline_ns);
  mutex_relock(mx, self);
  return err; /* the wait's result: a cancel during the relock waits */
}

int fib_cond_wait(fib_cond *c, fib_mutex *m) {
  return fib_cond_wait_until(c, m, FIB__NO_DEADLINE);
}

int fib_cond_signal(fib_cond *c) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct cond *x = fib__live(c, COND_MAGIC);
  if (!x)
    return FIB_EINVAL;
  if (fib__waitq_first(&x->waiters))
    fib__waitq_complete_first(&x->waiters, 0);
  return 0;
}

int fib_cond_broadcast(fib_cond *c) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct cond *x = fib__live(c, COND_MAGIC);
  if (!x)
    return FIB_EINVAL;
  fib__waitq_complete_all(&x->waiters, 0);
  return 0;
}

/* --------------------------------------------------------- semaphore */

#define SEM_MAGIC 0x73656d61u /* "sema" */

struct sem {
  uint32_t magic;
  uint64_t value;            /* 0 while live waiters exist */
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_sem, struct sem);

int fib_sem_init(fib_sem *s, uint64_t value) {
  struct sem *x = fib__start(s, SEM_MAGIC, sizeof *x);
  if (!x)
    return FIB_EINVAL;
  x->value = value;
  return 0;
}

int fib_sem_destroy(fib_sem *s) {
  struct sem *x = fib__live(s, SEM_MAGIC);
  return x ? fib__retire(&x->magic, &x->waiters, 0) : FIB_EINVAL;
}

int fib_sem_post(fib_sem *s) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct sem *x = fib__live(s, SEM_MAGIC);
  if (!x)
    return FIB_EINVAL;
  if (fib__waitq_first(&x->waiters)) {
    /* the unit goes straight to it */
    fib__waitq_complete_first(&x->waiters, 0);
    return 0;
  }
  if (x->value == UINT64_MAX)
    return FIB_EOVERFLOW;
  x->value++;
  return 0;
}

int fib_sem_wait_until(fib_sem *s, uint64_t deadline_ns) {
  struct sem *x = fib__live(s, SEM_MAGIC);
  if (!x)
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  if (x->value) {
    x->value--;
    return 0;
  }
  /* 0: a post handed its unit straight to us. */
  return fib__waitq_wait(&x->waiters, self, NULL, deadline_ns);
}

int fib_sem_wait(fib_sem *s) { return fib_sem_wait_until(s, FIB__NO_DEADLINE); }

int fib_sem_trywait(fib_sem *s) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct sem *x = fib__live(s, SEM_MAGIC);
  if (!x)
    return FIB_EINVAL;
  if (!x->value)
    return FIB_EAGAIN;
  x->value--;
  return 0;
}

uint64_t fib_sem_value(const fib_sem *s) {
  struct sem *x = fib__live(s, SEM_MAGIC);
  return x ? x->value : 0;
}

/* -------------------------------------------------------- wait group */

#define WG_MAGIC 0x77677270u /* "wgrp" */

struct wg {
  uint32_t magic;
  int64_t count;             /* >= 0; no live waiters while 0 */
  struct fib__waitq waiters;
};
FIB__CHECK_STORAGE(fib_wg, struct wg);

int fib_wg_init(fib_wg *g) {
  return fib__start(g, WG_MAGIC, sizeof(struct wg)) ? 0 : FIB_EINVAL;
}

int fib_wg_destroy(fib_wg *g) {
  struct wg *x = fib__live(g, WG_MAGIC);
  return x ? fib__retire(&x->magic, &x->waiters, 0) : FIB_EINVAL;
}

int fib_wg_add(fib_wg *g, int64_t delta) {
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct wg *x = fib__live(g, WG_MAGIC);
  if (!x)
    return FIB_EINVAL;
  /* -count, not -delta: count >= 0, while -INT64_MIN overflows. */
  if (delta < 0 && delta < -x->count)
    return FIB_EINVAL;
  if (delta > 0 && x->count > INT64_MAX - delta)
    return FIB_EOVERFLOW;
  x->count += delta;
  if (x->count == 0)
    fib__waitq_complete_all(&x->waiters, 0);
  return 0;
}

int fib_wg_done(fib_wg *g) { return fib_wg_add(g, -1); }

int fib_wg_wait_until(fib_wg *g, uint64_t deadline_ns) {
  struct wg *x = fib__live(g, WG_MAGIC);
  if (!x)
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  if (x->count == 0)
    return 0;
  return fib__waitq_wait(&x->waiters, self, NULL, deadline_ns);
}

int fib_wg_wait(fib_wg *g) { return fib_wg_wait_until(g, FIB__NO_DEADLINE); }

/* -------------------------------------------------------------- once */

enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

struct once {
  uint32_t state;            /* ONCE_*; zero bits: not run yet */
  struct fib__fiber *runner; /* while RUNNING: who runs fn (NULL: no fiber) */
  struct fib__waitq waiters; /* fibers waiting for fn to return */
  struct fib__hold held;     /* in runner's holds while it runs fn */
};
FIB__CHECK_FITS(fib_once, struct once);

/* The fiber running fn finished inside it (fib_exit) or was discarded
 * with its runtime: as if the call had never been made (what pthread_once
 * does for a cancelled init routine). The waiters look again, and the
 * first of them runs fn. */
static void once_discard(struct fib__hold *h) {
  struct once *x =
      (struct once *)(void *)((char *)h - offsetof(struct once, held));
  fib__hold_drop(h);
  x->state = ONCE_NEW;
  x->runner = NULL;
  fib__waitq_complete_all(&x->waiters, 0);
}

int fib_once_call_until(fib_once *o, void (*fn)(void *), void *arg,
                        uint64_t deadline_ns) {
  if (!o || !fn)
    return FIB_EINVAL;
  int refused = fib__sync_refused();
  if (refused)
    return refused;
  struct once *x = (struct once *)(void *)&o->opaque;
  for (;;) {
    struct fib__fiber *self = fib__fiber_self();
    switch (x->state) {
    case ONCE_DONE:
      return 0;
    case ONCE_NEW:
      x->state = ONCE_RUNNING;
      x->runner = self;
      if (self) {
        x->held.discard = once_discard;
        fib__hold_add(self, &x->held);
      }
      fn(arg);
      if (self) /* fn runs on the caller's stack: self is still it */
        fib__hold_drop(&x->held);
      x->state = ONCE_DONE;
      x->runner = NULL;
      fib__waitq_complete_all(&x->waiters, 0);
      return 0;
    case ONCE_RUNNING:
      break;
    default:
      return FIB_EINVAL; /* not a fib_once */
    }
    if (x->runner == self) /* also outside fibers: NULL == NULL */
      return FIB_EDEADLK;
    int err = fib__sync_waiter(&self);
    if (!err)
      err = fib__waitq_wait(&x->waiters, self, NULL, deadline_ns);
    if (err)
      return err;
    /* Woken: fn returned, or its runner went away; look again. */
  }
}

int fib_once_call(fib_once *o, void (*fn)(void *), void *arg) {
  return fib_once_call_until(o, fn, arg, FIB__NO_DEADLINE);
}
