/* SPDX-License-Identifier: MIT */
/*
 * fiber.c -- the calls about one fiber: spawn, join, detach, cancel, exit,
 * identity, sleep. Blocking ones park the caller (sched.c).
 */
#include "fiber.h"
#include "seed.h"
#include "spin.h"
#include "workers.h"
#include "../sys.h"

#include <limits.h>
#include <string.h>

/* rt, or the calling fiber's runtime when rt is NULL. For a multi-worker
 * runtime, the caller's own worker if it runs on one of rt's. */
static struct fib_runtime *runtime_or_current(struct fib_runtime *rt) {
  if (rt) {
    struct fib_runtime *here = fib__tl_runtime;
    return rt->group && here && here->group == rt->group ? here : rt;
  }
  rt = fib__tl_runtime;
  return rt && rt->current ? rt : NULL;
}

/* Fiber `id` of rt (rt NULL: the calling fiber's runtime) into *out, for
 * the calls that name a fiber by runtime and id. 0, FIB_EPERM (rt NULL
 * outside a fiber) or FIB_ESRCH (no such record). */
static int lookup(struct fib_runtime *rt, fib_id id, struct fib__fiber **out) {
  rt = runtime_or_current(rt);
  if (!rt)
    return FIB_EPERM;
  *out = fib__idmap_get(&rt->fibers, id);
  return *out ? 0 : FIB_ESRCH;
}

/* The same in a multi-worker runtime, by a thread whose worker is `own`
 * (NULL: not one of the group's): the id's home worker in *home, locked
 * unless it is `own` (only its own thread writes its map, nor frees a
 * record of it: workers.h, Ids), whatever the result; the caller lets go
 * with home_unlock. A collected record (GONE) is not there. */
static inline __attribute__((always_inline)) int
lookup_home(struct fib_runtime *rt, const struct fib_runtime *own, fib_id id,
            struct fib__fiber **out, struct fib_runtime **home) {
  /* own's map first, told by the id's class alone (a fiber joining what
   * it spawned): no look through the group */
  if (own && fib__idmap_class(&own->fibers, id)) {
    *home = (struct fib_runtime *)own;
  } else {
    *home = fib__id_home(rt, id ? id : 1);
    if (*home != own)
      fib__spin_lock(&(*home)->ids_lock);
  }
  struct fib__fiber *t = id ? fib__idmap_get(&(*home)->fibers, id) : NULL;
  /* relaxed: a look (whoever collects a record first takes its word to
   * GONE with a CAS, so an older value read here only makes the caller
   * fail that CAS or refuse), and the record stays until its home
   * forgets it */
  if (t && __atomic_load_n(&t->joiner, __ATOMIC_RELAXED) == FIB__JOIN_GONE)
    t = NULL;
  *out = t;
  return t ? 0 : FIB_ESRCH;
}

static void home_unlock(const struct fib_runtime *own,
                        struct fib_runtime *home) {
  if (home != own)
    fib__spin_unlock(&home->ids_lock);
}

/* The calling thread's worker if it is one of rt's group, else NULL (read
 * afresh: the caller may be a fiber that has just moved). */
static const struct fib_runtime *own_worker(const struct fib_runtime *rt) {
  const struct fib_runtime *here = fib__tl_runtime_now();
  return here && here->group == rt->group ? here : NULL;
}

static void *fiber_main(void *arg, void *first) {
  (void)first;
  struct fib__fiber *f = arg;
  if (f->rt->group) { /* it may not move from now on (workers.h) */
    f->started = 1;
    if (!f->pinned)
      f->rt->unstarted--;
  }
  fib__fiber_finish(f, f->fn(f->arg)); /* does not return */
}

/* A fiber detached from spawn: nobody joins it, so its record is not
 * needed once it finishes, and it goes on its stack, in the top page the
 * coroutine record is in (no allocation, and ~190 bytes less per idle
 * fiber). Not with several workers, which hand records between threads,
 * nor for a compact fiber, whose frames leave the stack. Out of line: the
 * joinable spawn's path stays as it was. */
static __attribute__((noinline)) int
record_on_stack(struct fib_runtime *rt, const fib_attr *attr, size_t stack,
                struct fib__fiber **out) {
  fib_coro *co;
  void *rec;
  int err = fib__coro_create_rec(
      &co, fiber_main, NULL, stack, attr->guard ? attr->guard : rt->guard,
      (attr->flags | rt->flags) & FIB_SHARED_FP,
      ((sizeof **out + 15) & ~(size_t)15) + FIB__TAIL_SLOT, &rec);
  if (err)
    return err;
  struct fib__fiber *f = rec;
  f->co = co;
  co->arg = f;
  f->in_stack = 1;
  f->claim = FIB__CLAIM_NONE;
  f->timer_armed = 0; /* as every new record (spawn) */
  f->wait = NULL;
  f->holds = NULL;
  fib__fiber_init_tail(f);
  *out = f;
  return 0;
}

/* The new record f, its coroutine made: its fields, its id and its
 * coroutine's owner. */
static inline __attribute__((always_inline)) void
spawn_fill(struct fib_runtime *rt, struct fib__fiber *f, fib_fn fn, void *arg,
           const fib_attr *attr) {
  f->rt = rt;
  f->detached = (attr->flags & FIB_DETACHED) != 0;
  fib__set_cancelled(f, 0);
  f->wake = 0;
  /* timer_armed, wait and holds are 0 / NULL already: so is every record
   * made (fib__fiber_new_record, record_on_stack), and a fiber leaves them
   * so when it finishes (it is not parked then, and its holds are given
   * up), before its record can be used again */
  /* atomic: with several workers a canceller may compare-and-swap the
   * word of a reused record (workers.h, the join word); a plain store
   * on every target */
  __atomic_store_n(&f->joiner, NULL, __ATOMIC_RELAXED);
  f->nomigrate = 0;
  f->move_to = 0;
  f->id = fib__idmap_put(&rt->fibers, f);

  f->fn = fn;
  f->arg = arg;
  f->name[0] = 0;
  if (attr->name) {
    strncpy(f->name, attr->name, FIB_NAME_MAX);
    f->name[FIB_NAME_MAX] = 0;
  }
  fib__coro_set_owner_record(f->co, f);
  fib__coro_set_owner(f->co, &f->id, "fiber", f->name);
  fib__coro_announce(f->co, f->name[0] ? f->name : "fiber"); /* TSan only */

  f->state = FIB__FIBER_READY;
}

/* fib_spawn once its arguments are checked: `attr` is never NULL (the
 * zero attributes stand for none), `stack` the usable size, `on_stack`
 * record_on_stack's choice. Inlined twice, once with the zero attributes,
 * where every test of them folds away. */
static inline __attribute__((always_inline)) int
spawn(struct fib_runtime *rt, fib_fn fn, void *arg, const fib_attr *attr,
      size_t stack, int on_stack, fib_id *id) {
  /* Everything that can fail comes first; the runtime is untouched on
   * failure. The reservations make parking with a deadline and registering
   * the id allocation-free later. */
  int err;
  if (rt->group) { /* the id map is reserved below, under its lock */
    err = fib__timers_reserve(&rt->timers, rt->owned + 1);
  } else {
    err = fib__idmap_reserve(&rt->fibers);
    if (!err)
      err = fib__timers_reserve(&rt->timers, rt->fibers.count + 1);
  }
  if (err)
    return err;
  struct fib__fiber *f;
  if (on_stack) {
    err = record_on_stack(rt, attr, stack, &f);
    if (err)
      return err;
  } else {
    f = fib__fiber_new_record(rt);
    if (!f)
      return FIB_ENOMEM;
    fib_guard_mode guard = attr->guard ? attr->guard : rt->guard;
    unsigned fp = (attr->flags | rt->flags) & FIB_SHARED_FP;
    /* The last fiber to finish left its coroutine to be freed (zombie):
     * if its stack is of our class, it is ours at once, without a trip
     * through the stack pool (a spawn after a join, in a loop or a tree) */
    fib_coro *z = rt->zombie;
    if (z && !(attr->flags & FIB_COMPACT) &&
        (f->co = fib__coro_renew(z, fiber_main, f, stack, guard, fp))) {
      rt->zombie = NULL;
      err = 0;
    } else if (attr->flags & FIB_COMPACT) {
      err = fib__coro_create(&f->co, fiber_main, f, stack, guard,
                             fp | FIB_COMPACT);
    } else {
      void *tail;
      err = fib__coro_create_rec(&f->co, fiber_main, f, stack, guard, fp,
                                 FIB__TAIL_SLOT, &tail);
    }
    if (err) {
      fib__fiber_drop_record(rt, f);
      return err;
    }
    if (!(attr->flags & FIB_COMPACT))
      fib__fiber_init_tail(f);
  }

  if (rt->group && !fib__idmap_room(&rt->fibers)) {
    /* Growing moves the table: not under another worker's lookup. */
    fib__spin_lock(&rt->ids_lock);
    err = fib__idmap_grow(&rt->fibers);
    fib__spin_unlock(&rt->ids_lock);
    if (err) {
      fib__coro_free(f->co);
      fib__fiber_drop_record(rt, f);
      return err;
    }
  }
  /* Its id names its slot in the map (idmap.h); with several workers,
   * worker k's map hands out low words k + 1 modulo n, and only its
   * thread writes the map (workers.h, Ids): another worker finds the
   * record once the id is stored (put's release) and the spawn has
   * returned it. */
  spawn_fill(rt, f, fn, arg, attr);
  if (rt->group) {
    /* atomic: a cancel note's worker may read the claim of a record that
     * is reused meanwhile (workers.h, the join word) */
    __atomic_store_n(&f->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
    /* the join word (workers.h): nobody else finds f before its id is
     * returned, but a canceller's CAS may still look (above) */
    /* the flags from attr and locals, not reloaded from the bytes just
     * stored (atomic stores come between, which the compiler does not
     * look past) */
    if (attr->flags & FIB_DETACHED)
      __atomic_store_n(&f->joiner, FIB__JOIN_DETACHED, __ATOMIC_RELAXED);
    f->started = 0;
    f->wake_to = 0; /* read when it arrives placed (take_placed) */
    /* The first fiber of a runtime stays on the thread that runs it; a
     * compact fiber's frames belong at its thread's shared stack, so it
     * stays on the worker that made it (coro.c). */
    int pinned = (attr->flags & (FIB_PINNED | FIB_COMPACT)) || f->id == 1 ||
                 attr->worker;
    f->pinned = (unsigned char)pinned;
    /* Once it has run it may move if asked for, or in the forced mode if
     * it is not pinned (the first fiber, FIB_PINNED, fib_attr.worker and
     * compact fibers stay). */
    int migratable = (attr->flags & FIB_MIGRATABLE) ||
                     (rt->force_migrate && !pinned);
    f->migratable = (unsigned char)migratable;
    f->force_due = 0;
    fib__group_count(&rt->spawned);
    if (id) /* before it can run elsewhere and be gone */
      *id = f->id;
    struct fib_runtime *there = attr->worker ? rt->group->w[attr->worker - 1]
                                             : rt;
    if (there != rt)
      fib__group_send(there, f); /* its owner queues it */
    else
      fib__group_place(rt, f, pinned, migratable, rt->current != NULL);
    return 0;
  }
  rt->unfinished++;
  if (rt->current) /* spawned by one of its fibers: runs first (runq.h) */
    fib__runq_push_front(&rt->runq, &f->runq);
  else /* before fib_run, or from outside: strict FIFO */
    fib__runq_push(&rt->runq, &f->runq);
  if (id)
    *id = f->id;
  return 0;
}

/* The zero attributes, which stand for none. */
static const fib_attr no_attr;

/*
 * spawn with no attributes on one worker, when the last fiber to finish
 * left a stack of the runtime's class (the zombie) and a spare record is
 * at hand, and the id map and the timer heap have room: a spawn after a
 * join, in a loop or a fork-join tree. Nothing here can fail or calls
 * anything, so fib_spawn's common path saves no registers. 0: not this
 * case, nothing done.
 */
static inline __attribute__((always_inline)) int
spawn_renewed(struct fib_runtime *rt, fib_fn fn, void *arg, fib_id *id) {
  fib_coro *z = rt->zombie;
  struct fib__fiber *f = rt->spare;
  /* fib__idmap_reserve's and fib__timers_reserve's tests */
  if (rt->group || !z || !f || !fib__idmap_room(&rt->fibers) ||
      rt->fibers.count + 1 > rt->timers.cap)
    return 0;
  fib_coro *co = fib__coro_renew(z, fiber_main, f, rt->stack_size, rt->guard,
                                 rt->flags & FIB_SHARED_FP);
  if (!co)
    return 0;
  rt->zombie = NULL;
  (void)fib__fiber_new_record(rt); /* f */
  f->co = co;
  fib__fiber_init_tail(f);
  spawn_fill(rt, f, fn, arg, &no_attr);
  rt->unfinished++;
  if (rt->current) /* as spawn's */
    fib__runq_push_front(&rt->runq, &f->runq);
  else
    fib__runq_push(&rt->runq, &f->runq);
  if (id)
    *id = f->id;
  return 1;
}

/* spawn with no attributes otherwise. */
static __attribute__((noinline)) int spawn_default(struct fib_runtime *rt,
                                                   fib_fn fn, void *arg,
                                                   fib_id *id) {
  /* the runtime's stack size is rounded already */
  return spawn(rt, fn, arg, &no_attr, rt->stack_size, 0, id);
}

/* fib_spawn with attributes: their checks, then spawn. */
static __attribute__((noinline)) int spawn_attr(struct fib_runtime *rt,
                                                fib_fn fn, void *arg,
                                                const fib_attr *attr,
                                                fib_id *id) {
  size_t stack =
      fib__stack_check(attr->stack_size, rt->stack_size, attr->guard);
  unsigned known_flags = FIB_DETACHED | FIB_SHARED_FP | FIB_PINNED |
                         FIB_COMPACT | FIB_MIGRATABLE;
  unsigned workers = rt->group ? rt->group->n : rt->logical_workers;
  if (!workers)
    workers = 1;
  if (!stack || (attr->flags & ~known_flags) || attr->worker > workers ||
      ((attr->flags & FIB_COMPACT) && attr->worker) ||
      ((attr->flags & FIB_MIGRATABLE) &&
       (attr->flags & (FIB_PINNED | FIB_COMPACT))) ||
      !fib__all_zero(attr->reserved,
                     sizeof attr->reserved / sizeof(uintptr_t)))
    return FIB_EINVAL;
  /* its record goes on its stack (record_on_stack) */
  int on_stack = (attr->flags & (FIB_DETACHED | FIB_COMPACT)) ==
                     FIB_DETACHED &&
                 !rt->group;
  return spawn(rt, fn, arg, attr, stack, on_stack, id);
}

int fib_spawn(fib_runtime *rt, fib_fn fn, void *arg, const fib_attr *attr,
              fib_id *id) {
  rt = runtime_or_current(rt);
  if (!rt)
    return FIB_EPERM;
  if (!fn)
    return FIB_EINVAL;
  if (attr)
    return spawn_attr(rt, fn, arg, attr, id);
  if (spawn_renewed(rt, fn, arg, id))
    return 0;
  return spawn_default(rt, fn, arg, id);
}

/* A join that waits with no frame says in its tail node what it joins
 * and where the result goes, for whoever ends it (fiber.h,
 * FIB__JOIN_TAIL). */
static inline void join_tail_arm(struct fib__fiber *self,
                                 struct fib__fiber *t, void **result) {
  struct fib__wnode *n = fib__fiber_tail(self);
  n->idx = FIB__JOIN_TAIL;
  n->fiber = t;
  n->elem = result;
}

/* Sanitizer and memcheck builds keep the join's frame: fib__join_tail_defer
 * writes below a suspended context's stack pointer, which memcheck takes
 * for freed stack, and runs code on a context the sanitizers' switch
 * annotations were not told of. */
#define FIB__JOIN_TAIL_FRAMED (FIB__SAN_HOOKS || FIB__VALGRIND)

/* fib_join in a multi-worker runtime: the target may finish on another
 * worker at any moment; the two meet in its join word (workers.h). The
 * joiner finds the record on its home worker, under the home's ids_lock
 * unless it is its own (workers.h, Ids: either way the record is not
 * freed meanwhile), and writes itself into the word, its claim armed
 * first, so that a finisher that reads it may claim it (the claim). */
static __attribute__((noinline)) int group_join(struct fib__fiber *self,
                                                fib_id id, void **result,
                                                uint64_t deadline) {
  struct fib_runtime *own = self->rt, *home;
  struct fib__fiber *t, *w = NULL;
  int err = lookup_home(own, own, id, &t, &home);
  if (!err) {
    /* acquire: if DONE, the result and the finisher's last touch of the
     * record happened before (its release stores) */
    w = __atomic_load_n(&t->joiner, __ATOMIC_ACQUIRE);
    if (w != NULL && w != FIB__JOIN_DONE) /* joined or detached */
      err = FIB_EINVAL;
  }
  if (!err && fib__cancelled(self)) /* as above */
    err = FIB_ECANCELED;
  if (!err && w == NULL) {
    /* Our claim is the join word from now on (workers.h), and names our
     * worker, the one thread that may take us out of the word (a
     * canceller elsewhere carries its cancel there); what we join
     * first, for that taker. The claim armed by a
     * store, not fib__claim_arm's exchange: the CAS below is a
     * read-modify-write between it and the cancel check's load
     * (group_suspend), which orders the two on every target (a locked
     * instruction on x86-64; on aarch64 and riscv64 a release RMW, which
     * a later seq_cst load does not pass; under qemu-user, a host
     * atomic): the store half of the Dekker pair (workers.h) at one
     * locked instruction per join instead of two. release: a finisher
     * that reads the claim through the word reads it as we wrote it. */
    __atomic_store_n(&self->joining, t, __ATOMIC_RELAXED);
    /* With no deadline (and a tail slot) we wait with no frame, as one
     * worker's join does (fiber.h, FIB__JOIN_TAIL): whoever wins us
     * completes the join (the finisher: the result, `joining`, the
     * collection) or leaves t joinable (fib__join_take), and the switch
     * back returns straight into fib_join's caller, not into a frame of
     * ours that the calls made meanwhile have hidden from the
     * return-stack predictor. Written before the CAS below publishes
     * us, for a finisher on another thread. */
    int frameless = deadline == FIB__NO_DEADLINE &&
                    fib__fiber_has_tail(self) && !FIB__JOIN_TAIL_FRAMED;
    if (frameless)
      join_tail_arm(self, t, result);
    __atomic_store_n(&self->claim, fib__claim_join(own->worker),
                     __ATOMIC_RELEASE);
    /* our worker's mark, for the finisher (workers.h, the join word) */
    __atomic_store_n(&t->join_from, fib__join_from(own->worker),
                     __ATOMIC_RELAXED);
    /* seq_cst: release, so whoever takes us out of the word (finisher,
     * deadline, canceller: their CAS acquires) reads what we wrote
     * before, our owner included; and the order above; acquire, for the
     * DONE a failure may read, as above. Meanwhile the word may change
     * from NULL to DONE (its finisher), to DETACHED or to another joiner
     * (a detach or a join from another worker, under the lock): the CAS
     * decides. */
    if (__atomic_compare_exchange_n(&t->joiner, &w, self, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
      home_unlock(own, home);
      if (frameless)
        return fib__fiber_suspend_join(self); /* a tail call */
      if (deadline != FIB__NO_DEADLINE)
        fib__fiber_arm(self, deadline);
      (void)fib__fiber_suspend_armed(self, FIB__FIBER_BLOCKED);
      /* Out of the join (our waker has set our claim back to NONE): t
       * is not to be found through us from now on, before it can be
       * collected and its record freed (workers.h, the join word).
       * relaxed: only our owner's thread reads it, and it is ours. */
      __atomic_store_n(&self->joining, NULL, __ATOMIC_RELAXED);
      /* Timed out or cancelled: our waker has taken us out of the word
       * (fib__join_take), and t goes on unjoined. */
      if (self->wake)
        return self->wake;
      /* Its finisher took us out (GONE) and woke us: t is ours alone
       * (lookups find nothing), so no lock, and its result happened
       * before our wake-up (the finisher's release CAS, then its push
       * or its own thread's hand-off): collected where we run now (we
       * may have moved meanwhile). */
      if (result)
        *result = t->result;
      fib__group_collect(home, self->rt, t);
      return 0;
    }
    /* w is not NULL any more: nobody acts on our claim (only this
     * thread takes a joiner whose claim names this worker), and our mark
     * is withdrawn (t is still found under the lock) */
    if (frameless)
      fib__fiber_tail(self)->idx = 0;
    __atomic_store_n(&t->join_from, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&self->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
    __atomic_store_n(&self->joining, NULL, __ATOMIC_RELAXED);
    if (w != FIB__JOIN_DONE)
      err = FIB_EINVAL;
  }
  /* DONE: ours to collect if we take it to GONE first (another join or a
   * detach may find it DONE too, one under the lock, one without).
   * acquire: the finisher's result, as above. */
  if (!err && !__atomic_compare_exchange_n(&t->joiner, &w, FIB__JOIN_GONE, 0,
                                           __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED))
    err = w == FIB__JOIN_GONE ? FIB_ESRCH : FIB_EINVAL;
  if (!err) {
    if (result)
      *result = t->result;
    fib__group_collect(home, own, t);
  }
  home_unlock(own, home);
  return err;
}

/* group_join's common case, inline in fib_join: no deadline, a joiner
 * with a tail slot, and a target that its own worker's map holds (a
 * fiber joining what it spawned, on the worker it spawned it on), running
 * and not joined: the same steps as group_join's (its comments say why
 * each), without the look through the group and the lock, and without a
 * frame of its own; anything else, or a failed CAS once undone, goes to
 * group_join. */
static inline __attribute__((always_inline)) int
group_join_own(struct fib__fiber *self, fib_id id, void **result) {
  struct fib_runtime *own = self->rt;
  if (!FIB__JOIN_TAIL_FRAMED && fib__fiber_has_tail(self)) {
    /* No test of the id's class first: every id in own's map is of its
     * class, so get finds nothing for another worker's id (idmap.h) */
    struct fib__fiber *t = fib__idmap_get_strided(&own->fibers, id);
    /* relaxed: a look (the CAS decides); not GONE, DONE or joined */
    if (t && !__atomic_load_n(&t->joiner, __ATOMIC_RELAXED) &&
        !fib__cancelled(self)) {
      __atomic_store_n(&self->joining, t, __ATOMIC_RELAXED);
      join_tail_arm(self, t, result);
      __atomic_store_n(&self->claim, fib__claim_join(own->worker),
                       __ATOMIC_RELEASE);
      __atomic_store_n(&t->join_from, fib__join_from(own->worker),
                       __ATOMIC_RELAXED);
      struct fib__fiber *w = NULL;
      /* seq_cst, as group_join's */
      if (__atomic_compare_exchange_n(&t->joiner, &w, self, 0,
                                      __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
        return fib__fiber_suspend_join(self); /* a tail call */
      /* as group_join's failure: nobody acts on our claim or mark */
      __atomic_store_n(&t->join_from, 0, __ATOMIC_RELAXED);
      fib__fiber_tail(self)->idx = 0;
      __atomic_store_n(&self->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
      __atomic_store_n(&self->joining, NULL, __ATOMIC_RELAXED);
    }
  }
  return group_join(self, id, result, FIB__NO_DEADLINE); /* a tail call */
}

/* join_wait's collection of a finished target, kept out of it: inlined,
 * its registers made join_wait's frame, which a suspended compact joiner
 * keeps, 16 bytes larger. */
static __attribute__((noinline)) int join_collect(struct fib_runtime *rt,
                                                  struct fib__fiber *t,
                                                  void **result) {
  if (result)
    *result = t->result;
  fib__fiber_collect(rt, t);
  return 0;
}

/* fib_join_until's wait, one worker: park until t finishes, then collect
 * it. Out of line and tail-called, so that what stays on the stack while
 * the joiner waits is this small frame (only self, t and result live
 * across the park) rather than the caller's: a compact fiber's suspension
 * saves fewer bytes. */
static __attribute__((noinline)) int join_wait(struct fib__fiber *self,
                                               struct fib__fiber *t,
                                               void **result,
                                               uint64_t deadline) {
  t->joiner = self;
  /* park without its cancel check: the caller has just made it */
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend(self, FIB__FIBER_BLOCKED);
  int err = self->wake;
  if (err) { /* timed out or cancelled: the target goes on, unjoined */
    t->joiner = NULL;
    return err;
  }
  return join_collect(self->rt, t, result); /* a tail call */
}

/* The tail node's idx once the join has ended, till the joiner runs. */
#define JOIN_TAIL_COLLECT (FIB__JOIN_TAIL - 1)
#define JOIN_TAIL_RELEASE (FIB__JOIN_TAIL - 2)

/* The frame fib__join_tail_defer puts on a joiner's stack: the first
 * thing the joiner runs when it is switched to. It collects the target
 * (the tail node names it; its record, FINISHED, was kept till now) or
 * leaves it joinable (the join was cancelled), and resumes the joiner's
 * own context, saved by its park, with the value it was switched to with
 * (its wake: 0, or FIB_ECANCELED). */
static void join_tail_resume(void *value) {
  struct fib__fiber *self = fib__fiber_self();
  struct fib__wnode *n = fib__fiber_tail(self);
  void *sp = n->elem;
  if (n->idx == JOIN_TAIL_COLLECT)
    fib__fiber_collect(self->rt, n->fiber);
  else
    n->fiber->joiner = NULL;
  n->idx = 0;
  if (self->co->shared_fp & FIB__CORO_NOFP) /* the variant it parked by */
    fib__ctx_jump_nofp(sp, value);
  fib__ctx_jump(sp, value);
}

void fib__join_tail_defer(struct fib__fiber *joiner, int collect) {
  fib_coro *co = joiner->co;
  struct fib__wnode *n = fib__fiber_tail(joiner);
  n->idx = collect ? JOIN_TAIL_COLLECT : JOIN_TAIL_RELEASE;
  /* elem held where the result went (stored already, if any): now the
   * saved context */
  n->elem = co->sp;
  /* Below the saved context nothing of the joiner's is live. */
  co->sp = fib__ctx_make_inline(co->sp, join_tail_resume);
}

/* fib_join_until after its preemption point. Inlined in the call, whose
 * common path then saves no registers: what it calls is a tail call or
 * out of line. */
static inline __attribute__((always_inline)) int
join_body(struct fib__fiber *self, fib_id id, void **result,
          uint64_t deadline_ns) {
  if (id == self->id)
    return FIB_EDEADLK;
  struct fib_runtime *rt = self->rt;
  if (rt->group) {
    if (deadline_ns == FIB__NO_DEADLINE)
      return group_join_own(self, id, result);
    return group_join(self, id, result, deadline_ns);
  }
  struct fib__fiber *t = fib__idmap_get(&rt->fibers, id);
  if (!t)
    return FIB_ESRCH;
  if (t->detached || t->joiner || t == rt->awaited)
    return FIB_EINVAL;
  /* After the argument checks, as every call that may wait does: a
   * cancelled fiber's join fails even if it need not wait. */
  if (fib__cancelled(self))
    return FIB_ECANCELED;
  if (t->state != FIB__FIBER_FINISHED) {
    /* With no deadline (and a tail slot: not a compact joiner) the join
     * waits with no frame: the context it saves returns straight into
     * fib_join's caller, so the first `ret` after the switch back returns
     * where the return-stack predictor expects, not into a frame of the
     * join's that the finished child's calls have since hidden (that
     * mispredict was ~a third of a spawn and join here). */
    if (deadline_ns == FIB__NO_DEADLINE && fib__fiber_has_tail(self) &&
        !FIB__JOIN_TAIL_FRAMED) {
      join_tail_arm(self, t, result);
      t->joiner = self;
      return fib__fiber_suspend_tail(self); /* a tail call */
    }
    return join_wait(self, t, result, deadline_ns); /* a tail call */
  }
  if (result)
    *result = t->result;
  fib__fiber_collect(rt, t);
  return 0;
}

/* The preemption point of the seeded test mode, out of the way (seed.h). */
FIB__PREEMPTED(int, join_preempted, join_body,
               (struct fib__fiber *self, fib_id id, void **result,
                uint64_t deadline_ns),
               (self, id, result, deadline_ns))

int fib_join_until(fib_id id, void **result, uint64_t deadline_ns) {
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  if (fib__preempt_any())
    return join_preempted(self, id, result, deadline_ns);
  return join_body(self, id, result, deadline_ns);
}

int fib_join(fib_id id, void **result) {
  return fib_join_until(id, result, FIB__NO_DEADLINE);
}

int fib_detach(fib_runtime *rt, fib_id id) {
  struct fib__fiber *t;
  struct fib_runtime *here = runtime_or_current(rt);
  if (here && here->group) {
    struct fib_runtime *home;
    const struct fib_runtime *own = own_worker(here);
    int err = lookup_home(here, own, id, &t, &home);
    int freed = 0;
    if (!err) {
      /* The join word (workers.h): NULL to DETACHED, unless its finisher
       * has just made it DONE (then it is ours to free). acq_rel:
       * release, so a finisher that reads DETACHED frees a record we no
       * longer touch; acquire, for the finisher's last touch on DONE. */
      struct fib__fiber *w = NULL;
      if (!__atomic_compare_exchange_n(&t->joiner, &w, FIB__JOIN_DETACHED, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        /* DONE: ours to free once we take it to GONE (as a join does) */
        if (w == FIB__JOIN_DONE &&
            __atomic_compare_exchange_n(&t->joiner, &w, FIB__JOIN_GONE, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
          freed = 1;
        else /* joined, detached, or gone */
          err = w == FIB__JOIN_GONE ? FIB_ESRCH : FIB_EINVAL;
      }
    }
    if (freed) /* GONE under the lock (if taken): to its home */
      fib__group_collect(home, own, t);
    home_unlock(own, home);
    return err;
  }
  int err = lookup(rt, id, &t);
  if (err)
    return err;
  if (t->detached || t->joiner || t == t->rt->awaited)
    return FIB_EINVAL;
  if (t->state == FIB__FIBER_FINISHED)
    fib__fiber_free_record(t->rt, t);
  else
    t->detached = 1;
  return 0;
}

int fib_cancel(fib_runtime *rt, fib_id id) {
  struct fib__fiber *t;
  struct fib_runtime *here = runtime_or_current(rt);
  if (here && here->group) {
    /* Found so that t is not freed meanwhile (lookup_home); the
     * canceller's half of the claim protocol (workers.h). */
    struct fib_runtime *home;
    const struct fib_runtime *own = own_worker(here);
    int err = lookup_home(here, own, id, &t, &home);
    if (!err && __atomic_load_n(&t->joiner, __ATOMIC_RELAXED) !=
                    FIB__JOIN_DONE) { /* a look: the claim decides */
      __atomic_store_n(&t->cancelled, 1, __ATOMIC_SEQ_CST);
      int won = fib__claim_take_cancel(here->group, t, own);
      if (won > 0)
        fib__group_wake(t, FIB_ECANCELED, 0);
      else if (won < 0) /* marked: its next wait fails, not this join */
        err = won;
    }
    home_unlock(own, home);
    return err;
  }
  int err = lookup(rt, id, &t);
  if (err)
    return err;
  if (t->state == FIB__FIBER_FINISHED)
    return 0; /* nothing left to cancel */
  fib__set_cancelled(t, 1);
  fib__fiber_interrupt(t); /* wakes it if it is parked, and cancellably */
  return 0;
}

int fib_cancelled(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return rt && rt->current && fib__cancelled(rt->current);
}

void fib_exit(void *result) {
  if (!fib__fiber_self())
    fib__fatal(fib__tl_runtime && fib__tl_runtime->current
                   ? "fib_exit called inside a coroutine resumed by a fiber"
                   : "fib_exit called outside a fiber");
  fib__fiber_finish(fib__tl_runtime->current, result);
}

/* ---- migration (workers.h): explicit moves and the guard */

int fib_move_to(unsigned worker) {
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  struct fib_runtime *rt = self->rt;
  unsigned n = rt->group ? rt->group->n : rt->logical_workers;
  if (worker >= (n ? n : 1) || (self->co->shared_fp & FIB__CORO_COMPACT))
    return FIB_EINVAL;
  if (self->nomigrate)
    return FIB_EBUSY;
  if (!rt->group || worker == rt->worker)
    return 0; /* there already (or logical workers: one thread) */
  /* Switch away to the loop (never straight to another fiber, which could
   * hand the CPU back to us here): only once we are off this stack may it
   * publish us to the target (fib__group_send_out). */
  self->move_to = (unsigned short)(worker + 1);
  self->state = FIB__FIBER_READY;
  self->wake = 0; /* what the loop's resume hands back: our 0 */
  rt->outgoing = self;
  /* The guard, while on the way: READY in the target's queue, a fiber
   * that may move would otherwise be offered from there to a worker that
   * is idle (the one we left, often) before it has run there, and the
   * call would return elsewhere. Besides us, only our owner's thread
   * reads `nomigrate`, while we are switched out: no atomics. */
  self->nomigrate++;
  int err = fib__coro_yield(NULL, NULL);
  /* Running on the target's thread now: nothing read before the switch
   * that belongs to the old thread is used after it (`self` is the
   * fiber's record, not the thread's). */
  self->nomigrate--;
  return err;
}

int fib_nomigrate_begin(void) {
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  if (self->nomigrate >= FIB__NOMIGRATE_MAX)
    return FIB_EOVERFLOW;
  self->nomigrate++; /* only its owner's thread reads it: no atomics */
  return 0;
}

int fib_nomigrate_end(void) {
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  if (!self->nomigrate)
    return FIB_EINVAL;
  self->nomigrate--;
  return 0;
}

fib_id fib_self(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return rt && rt->current ? rt->current->id : 0;
}

const char *fib_self_name(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return rt && rt->current ? rt->current->name : NULL;
}

int fib_sleep_until(uint64_t deadline_ns) {
  struct fib__fiber *f = fib__fiber_self();
  if (!f)
    return FIB_EPERM;
  if (deadline_ns == FIB__NO_DEADLINE)
    deadline_ns--; /* "never" is still a deadline here */
  int err = fib__fiber_park(f, FIB__FIBER_SLEEPING, deadline_ns);
  return err == FIB_ETIMEDOUT ? 0 : err; /* reaching it is the point */
}

int fib_sleep_ns(uint64_t ns) {
  uint64_t now = fib_now_ns();
  return fib_sleep_until(ns > UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + ns);
}

int fib_fiber_stack(fib_runtime *rt, fib_id id, fib_stack_info *out) {
  if (!out)
    return FIB_EINVAL;
  struct fib__fiber *f;
  struct fib_runtime *here = runtime_or_current(rt);
  if (here && here->group) { /* not freed meanwhile (lookup_home) */
    struct fib_runtime *home;
    const struct fib_runtime *own = own_worker(here);
    int err = lookup_home(here, own, id, &f, &home);
    struct fib__fiber *w = err ? NULL
                               : __atomic_load_n(&f->joiner, __ATOMIC_ACQUIRE);
    if (!err && (w == FIB__JOIN_DONE || w == FIB__JOIN_GONE || !f->co))
      err = FIB_ESRCH;
    if (!err)
      fib__stack_describe(f->co->stack, out);
    home_unlock(own, home);
    return err;
  }
  int err = lookup(rt, id, &f);
  if (err)
    return err;
  if (!f->co)
    return FIB_ESRCH; /* finished: its stack is gone */
  fib__stack_describe(f->co->stack, out);
  return 0;
}
