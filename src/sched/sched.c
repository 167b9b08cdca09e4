/* SPDX-License-Identifier: MIT */
/*
 * sched.c -- the runtime and its scheduler: the loop, park / ready, and
 * the switch from one fiber to the next.
 *
 * The scheduler loop runs on the OS thread's own stack. It resumes a ready
 * fiber's coroutine; from then on fibers hand the CPU to each other
 * directly (a coroutine transfer: one switch per hop; a finishing fiber
 * hands over and leaves its stack for the next to free) while there is a
 * ready fiber to go to, and come back to the loop only when none is ready,
 * when the next one keeps the other FP variant, when the timers are due
 * for a look, when a bounded run's round is over, or when the fiber that
 * fib_run_join waits for has finished.
 */
#include "fiber.h"
#include "bias.h"
#include "fibers/debug.h"
#include "seed.h"
#include "waitq.h"
#include "spin.h"
#include "workers.h"
#include "../sys.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

FIB__TLS struct fib_runtime *fib__tl_runtime;

/* noinline: the thread pointer is read in this call's own body; the empty
 * volatile asm makes the call neither const nor pure to the optimiser, so
 * no two calls are merged (QEMU's coroutine-tls.h does the same). */
__attribute__((noinline)) struct fib_runtime *fib__tl_runtime_now(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  __asm__ volatile("" : "+r"(rt));
  return rt;
}

/* fib_runtime_opts keeps its size (ABI): io_backend and workers took
 * one of the reserved words, seed another (LP64: every architecture we
 * build for). */
_Static_assert(sizeof(fib_runtime_opts) ==
                   sizeof(size_t) + 2 * sizeof(unsigned) + 6 * sizeof(uintptr_t),
               "fib_runtime_opts changed size");
_Static_assert(sizeof(uint64_t) == sizeof(uintptr_t), "seed: one word");

#define FIBER_OF(node) ((struct fib__fiber *)(node))
_Static_assert(offsetof(struct fib__fiber, runq) == 0, "runq link first");

/* ---- records */

/* A record when the runtime has no spare (fiber.h's new_record). */
struct fib__fiber *fib__fiber_new_record_slow(void) {
  struct fib__fiber *f = fib__sys_malloc(sizeof *f);
  if (f) { /* a record between fibers has no claim armed: keep it so */
    f->claim = FIB__CLAIM_NONE;
    f->joining = NULL; /* nobody's yet: no canceller can find it */
    f->in_stack = 0; /* for good: a heap record */
    /* not parked, in no wait, holding nothing: what a finished fiber
     * leaves, so spawn need not set them (fiber.c) */
    f->timer_armed = 0;
    f->wait = NULL;
    f->holds = NULL;
  }
  return f;
}

void fib__fiber_drop_record(struct fib_runtime *rt, struct fib__fiber *f) {
  fib__fiber_keep_record(rt, f);
}

/* One worker only: a multi-worker runtime's ids live in their home
 * workers' maps, under their locks (fiber.c's group_join and fib_detach,
 * group_finish below). */
void fib__fiber_free_record(struct fib_runtime *rt, struct fib__fiber *f) {
  fib__idmap_forget(&rt->fibers, f->id);
  if (f->co)
    fib__coro_free(f->co);
  fib__fiber_keep_record(rt, f);
}

/* ---- the list of live runtimes, for debuggers */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
/* volatile: the stores are in memory whenever a debugger stops us. */
struct fib_runtime *volatile fib__runtimes;

/* A program that runs fibers must carry the layout a debugger reads
 * (debug.c), also when it links the static library and never names it. */
__attribute__((used)) static const void *const keep_debug_layout =
    &fib_debug_layout;

static void live_add(struct fib_runtime *rt) {
  pthread_mutex_lock(&live_lock);
  rt->next_live = fib__runtimes;
  fib__runtimes = rt;
  pthread_mutex_unlock(&live_lock);
}

static void live_remove(struct fib_runtime *rt) {
  pthread_mutex_lock(&live_lock);
  struct fib_runtime *volatile *p = &fib__runtimes;
  while (*p && *p != rt)
    p = &(*p)->next_live;
  if (*p)
    *p = rt->next_live;
  pthread_mutex_unlock(&live_lock);
}

/* ---- runtime */

int fib_runtime_create(fib_runtime **out, const fib_runtime_opts *opts) {
  if (!out)
    return FIB_EINVAL;
  static const fib_runtime_opts defaults;
  if (!opts)
    opts = &defaults;
  size_t stack = fib__stack_check(opts->stack_size, FIB_STACK_DEFAULT,
                                  opts->guard);
  const unsigned known_flags =
      FIB_SHARED_FP | FIB_ACCEPT_POSTS | FIB_SEEDED | FIB_SEED_PREEMPT;
  if (!stack || (opts->flags & ~known_flags) ||
      opts->io_backend > FIB_IO_URING || opts->workers > FIB_WORKERS_MAX ||
      !fib__all_zero(opts->reserved, sizeof opts->reserved / sizeof(uintptr_t)))
    return FIB_EINVAL;
  struct fib_runtime *rt = fib__sys_calloc(1, sizeof *rt);
  if (!rt)
    return FIB_ENOMEM;
  fib__runq_init(&rt->runq);
  fib__timers_init(&rt->timers);
  fib__idmap_init(&rt->fibers, 1, 1);
  rt->stack_size = stack;
  rt->guard = opts->guard;
  rt->flags = opts->flags & FIB_SHARED_FP;
  rt->posted = (opts->flags & FIB_ACCEPT_POSTS) != 0;
  rt->io_pref = opts->io_backend; /* the I/O layer decides at first use */
  rt->host_wake_fd = -1;
  int force = fib__group_force_env();
  int err = force < 0 ? FIB_EINVAL : fib__seed_setup(rt, opts);
  if (err) {
    fib__idmap_free(&rt->fibers);
    fib__timers_free(&rt->timers);
    fib__sys_free(rt);
    return err;
  }
  /* A seeded runtime runs its workers as logical ones, on one thread. */
  rt->force_migrate = force && opts->workers > 1 && !rt->seeded;
  if (opts->workers > 1 && !rt->seeded &&
      fib__group_create(rt, opts->workers) != 0) {
    fib__idmap_free(&rt->fibers);
    fib__timers_free(&rt->timers);
    fib__sys_free(rt);
    return FIB_ENOMEM;
  }
  live_add(rt);
  /* Workers 1..n-1 are runtimes of their own, with fibers in their own id
   * maps: in the list too, so that a debugger finds every fiber (the gdb
   * script shows them right after the handle). */
  for (unsigned i = 1; rt->group && i < rt->group->n; i++)
    live_add(rt->group->w[i]);
  *out = rt;
  return 0;
}

/* f is discarded: take its wait nodes off the primitives' queues. */
static void discard_wait(struct fib__fiber *f) {
  if (f->wait)
    fib__wait_discard(f, f->wait);
  if (fib__fiber_has_tail(f) && fib__fiber_tail(f)->q)
    fib__waitq_unlink(fib__fiber_tail(f));
}

/* Give up whatever f holds (struct fib__hold): its runtime discards it,
 * or it finished holding something. */
static void discard_holds(struct fib__fiber *f) {
  struct fib__hold *h;
  while ((h = f->holds) != NULL)
    h->discard(h); /* drops h */
}

int fib_runtime_destroy(fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  /* Also from a fiber of another worker, which runs between bounded
   * calls while worker 0 does not. */
  const struct fib_runtime *here = fib__tl_runtime;
  if ((rt->group && here && here->group == rt->group) || rt->running)
    return FIB_EBUSY;
  if (rt->group) /* its workers serving bounded calls stop first */
    fib__group_stop(rt);
  fib__host_close(rt);
  live_remove(rt);
  for (unsigned i = 1; rt->group && i < rt->group->n; i++)
    live_remove(rt->group->w[i]);
  /* Threads still waking it (workers.h, fib__waker_enter) finish first. */
  for (unsigned i = 0; i < (rt->group ? rt->group->n : 1); i++)
    fib__runtime_unwaked(rt->group ? rt->group->w[i] : rt);
  /* Operations the kernel still owns (io_uring) write into the stacks
   * freed below: the I/O layer cancels them and waits until they end. */
  for (unsigned i = 0; i < (rt->group ? rt->group->n : 1); i++) {
    struct fib_runtime *w = rt->group ? rt->group->w[i] : rt;
    if (w->io_discard)
      w->io_discard(w);
  }
  /* Posts it has not finished are cancelled (post.c): the queued ones
   * here, those whose fiber has started as their holds (pass 1). */
  fib__post_discard_queued(rt);
  /* The unfinished fibers are discarded: first take every wait node they
   * left on a primitive's queue off it (the nodes live on the stacks freed
   * below), and only then give up what they hold, so that a mutex goes
   * to a live waiter, never to a discarded one. Walk without deleting,
   * then free the maps. A multi-worker runtime's fibers are in its
   * workers' maps. */
  unsigned workers = rt->group ? rt->group->n : 1;
  for (int pass = 0; pass < 4; pass++)
    for (unsigned i = 0; i < workers; i++) {
      struct fib_runtime *w = rt->group ? rt->group->w[i] : rt;
      size_t pos = 0;
      struct fib__fiber *f;
      while ((f = fib__idmap_next(&w->fibers, &pos)) != NULL)
        if (pass == 0)
          discard_wait(f);
        else if (pass == 1)
          discard_holds(f);
        else if (pass == 2 && f->co && !f->in_stack)
          fib__coro_free(f->co);
        else if (pass == 3 && f->in_stack)
          fib__coro_free(f->co); /* and f with it (never FINISHED here) */
        else if (pass == 3)
          fib__sys_free(f);
    }
  if (rt->group)
    fib__group_free(rt);
  fib__seed_teardown(rt);
  struct fib__fiber *f;
  while ((f = rt->spare) != NULL) {
    rt->spare = FIBER_OF(f->runq.next);
    fib__sys_free(f);
  }
  fib__idmap_free(&rt->fibers);
  fib__timers_free(&rt->timers);
  fib__sys_free(rt);
  return 0;
}

fib_runtime *fib_runtime_current(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  return rt && rt->group ? rt->group->w[0] : rt; /* the handle */
}

int fib_runtime_seed(const fib_runtime *rt, uint64_t *seed) {
  if (!rt)
    return FIB_EINVAL;
  if (rt->seeded && seed)
    *seed = rt->seed;
  return rt->seeded;
}

/* ---- park / ready */

void fib__fiber_disarm(struct fib__fiber *f) {
  fib__timers_remove(&f->rt->timers, &f->timer);
  f->timer_armed = 0;
}

void fib__fiber_ready_front_timed(struct fib__fiber *f) {
  fib__fiber_unpark(f);
  fib__runq_push_front(&f->rt->runq, &f->runq);
}

/* Wake a parked fiber for `reason` (a deadline, a cancel): its park
 * returns that. In a multi-worker runtime only if it wins the fiber's
 * claim; a deadline that loses is dropped (the winner's wake-up comes). */
static void wake(struct fib__fiber *f, int reason) {
  /* Also a one-worker runtime's fiber parked on a shared primitive. */
  if (f->rt->group || __atomic_load_n(&f->claim, __ATOMIC_RELAXED)) {
    if (fib__claim_take(f, 0))
      fib__group_wake(f, reason, 0);
    else if (f->timer_armed)
      fib__fiber_disarm(f);
    return;
  }
  fib__fiber_ready(f);
  f->wake = reason;
  /* A tail wait does not unlink its node when it wakes (it resumes in its
   * caller's caller): the node goes off its queue here. A frameless join
   * (fiber.h, FIB__JOIN_TAIL) leaves its target joinable when it runs. */
  if (fib__fiber_has_tail(f)) {
    struct fib__wnode *n = fib__fiber_tail(f);
    if (n->q) {
      fib__waitq_unlink(n);
    } else if (n->idx == FIB__JOIN_TAIL) {
      /* its target is left joinable once it runs (till then, it is
       * still being joined, as with a frame) */
      fib__join_tail_defer(f, 0);
    }
  }
}

void fib__fiber_interrupt(struct fib__fiber *f) {
  if ((f->state == FIB__FIBER_BLOCKED || f->state == FIB__FIBER_SLEEPING) &&
      !f->nocancel)
    wake(f, FIB_ECANCELED);
}

/*
 * The fiber to run in place of one whose coroutine is `from`, without going
 * back to the loop: the next ready one, if it uses the same FP variant and
 * the timers need no look yet. It is taken off the queue, made current and
 * RUNNING. NULL: go through the loop. `ahead` (a constant where inlined):
 * also start fetching the one after it (below).
 */
static inline struct fib__fiber *take_next(struct fib_runtime *rt,
                                           const fib_coro *from, int ahead) {
  struct fib__list *l = fib__runq_source(&rt->runq);
  if (!l || rt->until_loop == 0 ||
      FIBER_OF(l->head)->co->shared_fp != from->shared_fp)
    return NULL;
  struct fib__fiber *next = FIBER_OF(fib__runq_take(&rt->runq, l));
  /* With many fibers ready their records (on their stacks, or near them)
   * are cold: start fetching the one switched to after this one (and so
   * its page's translation). For a park and a finish (a million fibers
   * woken at once run through here), not a yield: between two yielding
   * fibers the one after is the yielder itself, and the check and the
   * prefetch cost its hop ~3 instructions. Not NULL: a prefetch of an
   * unmapped address is a page walk that finds nothing. */
  if (ahead && l->head) {
    __builtin_prefetch(l->head);
    fib__prefetch_stride(next, l->head); /* and further on */
  }
  rt->until_loop--;
  next->state = FIB__FIBER_RUNNING;
  rt->current = next;
  return next;
}

/*
 * A fiber `f` that its waker readies to run next (fib__fiber_ready_front),
 * when the waker is about to switch away for good (a finishing child
 * waking its joiner): if f would be the very next pop, and the hand-off
 * may be direct (take_next's conditions), make it current and RUNNING
 * now, with the queue's bookkeeping as if it had been pushed to the front
 * and popped, and return 1: the caller transfers to it. 0: ready it the
 * usual way. f is rt's: with several workers, one whose claim the caller
 * has won (group_finish).
 */
static inline int hand_to_front(struct fib_runtime *rt, const fib_coro *from,
                                struct fib__fiber *f) {
  struct fib__runq *q = &rt->runq;
  /* pushed now, f would go after last_front; popped, the back would go
   * first once the front's budget is spent (runq.h) */
  if (q->last_front || rt->until_loop == 0 ||
      f->co->shared_fp != from->shared_fp)
    return 0;
  if (q->back.head) {
    if (q->front_streak >= FIB__RUNQ_FRONT_BUDGET)
      return 0;
    q->front_streak++;
  }
  if (f->timer_armed)
    fib__fiber_disarm(f);
  f->wake = 0;
  rt->until_loop--;
  f->state = FIB__FIBER_RUNNING;
  rt->current = f;
  return 1;
}

/*
 * switch_away found no fiber to hand the CPU to directly: back to the
 * loop. Unless this is a worker of several that has used up its turns
 * between visits to its loop and the loop has nothing to do
 * (fib__group_turn): the next turns start here and the hand-off goes on
 * directly, with no round trip through the loop (two switches and its
 * bookkeeping every FIB__GROUP_TURNS hand-offs: ~3 % of a yield). Out of
 * line, with `from` first as the switch's own calls have it and the
 * runtime found from it: the hand-off paths it is a tail call of keep
 * their code and registers as they were.
 */
static __attribute__((noinline)) int to_loop(fib_coro *from, int parked) {
  struct fib_runtime *rt = ((struct fib__fiber *)from->owner)->rt;
  if (rt->until_loop == 0 && rt->group && fib__group_turn(rt)) {
    struct fib__fiber *next = take_next(rt, from, parked);
    if (!parked && next && next->co == from)
      return 0; /* switch_away's case of the only ready fiber */
    if (next)
      return fib__coro_transfer(from, next->co, next->wake);
  }
  return fib__coro_yield(NULL, NULL);
}

/*
 * The running fiber `self` has put itself in the run queue (`parked` 0: a
 * yield) or parked (1): run the next ready fiber, directly by a coroutine
 * transfer when take_next allows, otherwise through the scheduler loop.
 * Returns 0 when `self` runs again (callers return it, so the switch stays
 * a tail call: see fib__ctx_switch_int).
 */
static inline int switch_away(struct fib_runtime *rt,
                              struct fib__fiber *self, int parked) {
  /* a parked fiber is not in the queue: the next is another, and the one
   * after it is worth fetching (take_next) */
  struct fib__fiber *next = take_next(rt, self->co, parked);
  if (!parked && next == self)
    return 0; /* it was the only ready fiber: carry on */
  if (next)
    return fib__coro_transfer(self->co, next->co, next->wake);
  return to_loop(self->co, parked); /* a tail call */
  /* Running again: whoever switched to us made us current and RUNNING. */
}

void fib__fiber_arm(struct fib__fiber *self, uint64_t deadline) {
  /* Capacity for one timer per record was reserved at spawn. */
  struct fib_runtime *rt = self->rt;
  fib__timers_add(&rt->timers, &self->timer, deadline);
  self->timer_armed = 1;
  /* The loop looks at the timers after one round of the fibers ready now
   * (there may have been no timer, and so no reason to look, until now). */
  fib__runtime_look_soon(rt);
}

/* A FIB_COMPACT fiber's frames leave its stack while it is suspended, so
 * a wait whose records are on its stack (f->wait: wait queues, select,
 * I/O) would have its wakers write into another fiber's frames. Refused
 * loudly rather than corrupting (see FIB_COMPACT in fibers.h). */
void fib__compact_wait_fatal(void) {
  fib__fatal("a FIB_COMPACT fiber blocked in a wait whose records are on "
             "its stack (mutex, cond, sem, wait group, once, channel, "
             "select, I/O)");
}

__attribute__((cold)) int fib__compact_wait_refused(void) {
  fib__compact_wait_fatal();
}

static inline void check_compact_wait(const struct fib__fiber *self) {
  if (__builtin_expect(self->wait != NULL, 0) &&
      __builtin_expect(self->co->shared_fp & FIB__CORO_COMPACT, 0))
    fib__compact_wait_fatal();
}

/* A multi-worker runtime's park, its claim armed: the fiber's half of the
 * cancel check (workers.h). A cancel it sees and takes back its claim
 * from ends the park before it starts; one whose canceller took the claim
 * first wakes it in the usual way. */
static int group_suspend(struct fib__fiber *self) {
  if (!self->nocancel && __atomic_load_n(&self->cancelled, __ATOMIC_SEQ_CST)) {
    /* as a canceller takes it: the claim from ANY, or out of the join
     * word (FIB__CLAIM_JOIN) */
    if (fib__claim_take(self, 0)) {
      if (self->timer_armed)
        fib__fiber_disarm(self);
      self->state = FIB__FIBER_RUNNING;
      self->wake = FIB_ECANCELED;
      return 0;
    }
  }
  return switch_away(self->rt, self, 1);
}

int fib__fiber_suspend(struct fib__fiber *self, enum fib__fiber_state state) {
  struct fib_runtime *rt = self->rt;
  check_compact_wait(self);
  self->state = state;
  self->nocancel = 0; /* records are not zeroed: every park says */
  /* No `wake = 0`: every ready writes it (fib__fiber_unpark and the
   * readies built on it, wake()'s reason, the hand-offs' own stores), and
   * nothing else makes a parked fiber run. */
  if (__builtin_expect(rt->group != NULL, 0)) {
    fib__claim_arm(self, FIB__CLAIM_ANY);
    return group_suspend(self);
  }
  return switch_away(rt, self, 1);
}

/* fib__fiber_suspend_local, and with `compact` 0 fib__fiber_suspend_tail,
 * whose caller has refused a compact fiber itself. */
static inline __attribute__((always_inline)) int
suspend_local(struct fib__fiber *self, int compact) {
  fib_coro *co = self->co;
  /* check_compact_wait without its first test: self->wait is set */
  if (compact && __builtin_expect(co->shared_fp & FIB__CORO_COMPACT, 0))
    fib__compact_wait_fatal();
  self->state = FIB__FIBER_BLOCKED;
  self->nocancel = 0;
  /* No `wake = 0`: whatever readies a local wait writes it (unpark, the
   * hand-off's fib__waitq_hand_first, wake()'s reason), and nothing else
   * runs a BLOCKED fiber of a one-worker runtime. */
  struct fib_runtime *rt = self->rt;
  struct fib__runq *q = &rt->runq;
  struct fib__runq_node *h = q->front.head;
  /* The common case, the partner a hand-off has just readied at the
   * front and nothing at the back: take_next's outcome without its
   * choice of list and the back's budget bookkeeping (an empty back has
   * no streak to count). */
  if (h && !q->back.head && rt->until_loop &&
      FIBER_OF(h)->co->shared_fp == co->shared_fp) {
    struct fib__fiber *next = FIBER_OF(h);
    q->front.head = h->next;
    q->len--;
    q->last_front = NULL;
    if (h->next) { /* as take_next: the one after, cold when many wait */
      __builtin_prefetch(h->next);
      fib__prefetch_stride(next, h->next);
    }
    rt->until_loop--;
    next->state = FIB__FIBER_RUNNING;
    rt->current = next;
    return fib__coro_transfer(co, next->co, next->wake);
  }
  return switch_away(rt, self, 1);
}

int fib__fiber_suspend_local(struct fib__fiber *self) {
  return suspend_local(self, 1);
}

int fib__fiber_suspend_tail(struct fib__fiber *self) {
  return suspend_local(self, 0);
}

/* A frameless joiner's own cancel check found it cancelled: take itself
 * out of its target's word and return FIB_ECANCELED, or park if its
 * finisher won the word first (fib__join_take keeps the target from
 * being freed under it meanwhile). Rare: the cancel came between the
 * join's own check and its park. */
static __attribute__((noinline)) int
join_take_own_cancel(struct fib__fiber *self) {
  int won = fib__claim_take(self, 0);
  if (won)
    return FIB_ECANCELED;
  /* a finisher on another worker won the word first: park as if there
   * had been no cancel (its wake-up comes through our inbox, which this
   * thread reads only once we are off our stack) */
  return fib__fiber_suspend_tail(self); /* a tail call */
}

int fib__fiber_suspend_join(struct fib__fiber *self) {
  /* group_suspend's cancel check, returning the cancel itself: there is
   * no frame to read `wake` after (no timer either: no deadline). Before
   * the park's stores (suspend_local's): a cancel found here leaves the
   * fiber RUNNING, as it was, and only this thread reads its state. No
   * `wake = 0` either: whoever ends a frameless join writes it
   * (hand_to_front, fib__fiber_unpark, fib__group_wake's reason). */
  if (__atomic_load_n(&self->cancelled, __ATOMIC_SEQ_CST))
    return join_take_own_cancel(self); /* a tail call: the park's
                                          registers stay unsaved */
  /* a joiner with a tail slot is no compact fiber: one worker's tail
   * park, whose common hand-off (the child it has just spawned, at the
   * front) is inline */
  return suspend_local(self, 0);
}

int fib__fiber_suspend_armed(struct fib__fiber *self,
                             enum fib__fiber_state state) {
  check_compact_wait(self);
  self->state = state;
  self->nocancel = 0;
  self->wake = 0;
  return group_suspend(self);
}

void fib__fiber_park_nocancel_armed(struct fib__fiber *self) {
  check_compact_wait(self);
  self->state = FIB__FIBER_BLOCKED;
  self->nocancel = 1;
  self->wake = 0;
  (void)switch_away(self->rt, self, 1);
}

void fib__fiber_park_nocancel(struct fib__fiber *self) {
  check_compact_wait(self);
  self->state = FIB__FIBER_BLOCKED;
  self->nocancel = 1;
  self->wake = 0;
  if (self->rt->group)
    fib__claim_arm(self, FIB__CLAIM_COMPLETE);
  (void)switch_away(self->rt, self, 1);
  /* Only fib__fiber_ready wakes it: no timer, and fib__fiber_interrupt
   * passes it by. */
}

int fib_yield(void) {
  /* fib__fiber_self, spelled out to keep the coroutine; the runtime is
   * read from its own thread-local, equal to f->rt (fiber.h), but not
   * behind two dependent loads: the run queue's loads start at once. */
  fib_coro *co = fib__coro_self();
  struct fib__fiber *f = co ? co->owner : NULL;
  if (!f)
    return FIB_EPERM;
  struct fib_runtime *rt = fib__tl_runtime;
  /* The common cases, with nothing at the front and no reason to go back
   * to the loop, each with the outcome of the general path below but
   * without its choice of list, length and budget bookkeeping (a yield
   * leaves the length as it was): */
  if (__builtin_expect(!rt->runq.front.head && rt->until_loop, 1)) {
    struct fib__runq_node *h = rt->runq.back.head;
    if (!h) { /* nobody else is ready: it would pop itself and go on */
      rt->until_loop--;
      return 0;
    }
    /* another fiber at the back's head, with our FP variant: push at the
     * back and pop in one (runq.h's rotate) */
    struct fib__fiber *next = FIBER_OF(h);
    fib_coro *to = next->co;
    if (__builtin_expect(to->shared_fp == co->shared_fp, 1)) {
      f->state = FIB__FIBER_READY;
      f->wake = 0; /* what the switch back hands it: fib_yield's 0 */
      fib__runq_rotate(&rt->runq, &f->runq);
      rt->until_loop--;
      next->state = FIB__FIBER_RUNNING;
      rt->current = next;
      return fib__coro_transfer(co, to, next->wake);
    }
  }
  f->state = FIB__FIBER_READY;
  f->wake = 0;
  fib__runq_push(&rt->runq, &f->runq);
  return switch_away(rt, f, 0);
}

/* ---- finishing */

/* The coroutine of the last fiber that finished, if the thread has left
 * its stack since: give the stack back. */
static void free_zombie(struct fib_runtime *rt) {
  if (rt->zombie) {
    fib__coro_free(rt->zombie);
    rt->zombie = NULL;
  }
}

/* A finished fiber of a multi-worker runtime leaves its owner's counts.
 * The finish is counted before the joiner is woken: a host's fib_run_join
 * that it returns to counts it finished (fib_run_nowait's count just
 * after says so). No worker can find every fiber finished meanwhile while
 * a joiner waits: the joiner is not. */
static inline void group_finish_count(struct fib_runtime *rt,
                                      const struct fib__fiber *self) {
  rt->owned--;
  if (self->migratable)
    rt->migratable--;
  fib__group_count(&rt->finished);
}

/* Whether the joiner that the finisher `self` read from its join word
 * waits on rt, the finisher's worker: its mark in self (workers.h, the
 * join word). Read after the word. relaxed: the word's acquire load
 * ordered it, and only rt's thread writes rt's mark. */
static inline int joiner_is_here(const struct fib_runtime *rt,
                                 const struct fib__fiber *self) {
  return __atomic_load_n(&self->join_from, __ATOMIC_RELAXED) ==
         rt->worker + 1;
}

/* j, a joiner parked on rt (joiner_is_here), is ours alone to end its
 * join: with self's result (its claim back to NONE before it can run or
 * move, a frameless join completed, the word GONE as our last touch of
 * self unless we collect self for a joiner with no frame). Returns j, to
 * run next. */
static inline __attribute__((always_inline)) struct fib__fiber *
end_join_here(struct fib_runtime *rt, struct fib__fiber *self,
              struct fib__fiber *j) {
  __atomic_store_n(&j->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
  int tail = fib__join_tail_complete(j, self->result);
  /* release: a lookup that reads GONE, or j once it has run, reads
   * nothing of self after this (unless we collect it ourselves) */
  __atomic_store_n(&self->joiner, FIB__JOIN_GONE, __ATOMIC_RELEASE);
  if (tail)
    fib__group_collect_here(rt, self);
  return j;
}

/* j, parked and ours (its claim is our word, which we have moved off its
 * address), was cancelled before we finished: its cancel wins, as it did
 * when every canceller took the joiner out of the word itself (a cancel
 * carried to its worker may still be on its way; a finish that the
 * cancel caused, or that came after it, reads the flag, set before). Its
 * join ends with FIB_ECANCELED and self stays joinable: `word` is what
 * our word says from now on (NULL, for the next turn of group_finish to
 * make DONE; or DONE). What fib__join_take does for a winner. */
static void end_join_cancelled(struct fib__fiber *self, struct fib__fiber *j,
                               struct fib__fiber *word) {
  __atomic_store_n(&j->joining, NULL, __ATOMIC_RELAXED);
  __atomic_store_n(&j->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
  if (fib__fiber_has_tail(j) && fib__fiber_tail(j)->idx == FIB__JOIN_TAIL)
    fib__fiber_tail(j)->idx = 0;
  /* release: the result, to whoever joins self after reading DONE */
  if (word)
    __atomic_store_n(&self->joiner, word, __ATOMIC_RELEASE);
  fib__group_wake(j, FIB_ECANCELED, 0);
}

/* A multi-worker runtime's fiber has finished, `j` its join word as
 * group_finish_own read it: its finish's half of the join word
 * (workers.h). NULL to DONE; or a joiner to GONE, which makes it the
 * joiner's one waker (the word is the joiner's claim), and wakes it; or,
 * detached, collect the record (workers.h, Ids). Returns the joiner if it
 * is rt's to run (parked on rt: the caller hands the CPU to it), else
 * NULL. */
static __attribute__((noinline)) struct fib__fiber *
group_finish(struct fib_runtime *rt, struct fib__fiber *self,
             struct fib__fiber *j) {
  group_finish_count(rt, self);
  for (;;) {
    if (j == FIB__JOIN_DETACHED) { /* nobody will look: ours to collect */
      /* release: a lookup under the home's lock that reads GONE treats
       * the record as gone; nothing of it is read after */
      __atomic_store_n(&self->joiner, FIB__JOIN_GONE, __ATOMIC_RELEASE);
      fib__group_collect_here(rt, self);
      return NULL;
    }
    if (j && joiner_is_here(rt, self)) {
      /* Parked here, so alive and ours alone (workers.h, the join word).
       * Cancelled: the rare path, a CAS of our word back to NULL all the
       * same (a plain store would do: nobody else may move it), after
       * which the next turn makes it DONE. relaxed: the flag carries no
       * data. */
      if (__builtin_expect(!fib__cancelled(j), 1))
        return end_join_here(rt, self, j);
      struct fib__fiber *seen = j;
      /* seq_cst, as fib__join_take's; the failure reloads the word
       * (acquire, as the first load) */
      if (__atomic_compare_exchange_n(&self->joiner, &seen, NULL, 0,
                                      __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
        end_join_cancelled(self, j, NULL);
        seen = NULL;
      }
      j = seen;
      continue;
    }
    /* NULL, or a joiner on another worker (or one we cannot tell), which
     * its owner's deadline or a cancel may take out of the word, and
     * which may then run and be freed: nothing of it is touched before
     * this CAS wins it. acq_rel: release publishes the result to a
     * joiner that reads DONE; acquire, from a joiner's write of itself:
     * what it wrote before it parked (its owner). A failure rereads the
     * word (acquire, as the first load): a joiner has come, or gone. */
    if (!__atomic_compare_exchange_n(&self->joiner, &j,
                                     j ? FIB__JOIN_ENDING : FIB__JOIN_DONE, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      continue;
    if (!j)
      return NULL;
    /* j is parked, and waits for us alone (a parked fiber does not move,
     * so its owner is read now); ENDING keeps self joined meanwhile. */
    if (__builtin_expect(fib__cancelled(j), 0)) {
      end_join_cancelled(self, j, FIB__JOIN_DONE);
      return NULL;
    }
    /* Its claim back to NONE before it can run or move (workers.h, the
     * join word); the inbox push publishes it. A frameless joiner's join
     * completed here, before its wake-up. GONE: our last touch of the
     * record (the joiner, once woken, may collect it anywhere), unless
     * we collect it ourselves for a frameless joiner. */
    __atomic_store_n(&j->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
    int tail = fib__join_tail_complete(j, self->result);
    __atomic_store_n(&self->joiner, FIB__JOIN_GONE, __ATOMIC_RELEASE);
    if (tail)
      fib__group_collect_here(rt, self);
    if (j->rt == rt)
      return j;
    fib__group_wake(j, 0, 1);
    return NULL;
  }
}

/* group_finish's common case, inline in the finish (no call, no frame of
 * its own): a joiner parked on this worker, not cancelled; its steps are
 * group_finish's for that case (its comments say why each), the rest
 * goes there. */
static inline __attribute__((always_inline)) struct fib__fiber *
group_finish_own(struct fib_runtime *rt, struct fib__fiber *self) {
  /* acquire, from a joiner's CAS that wrote itself in: what it wrote
   * before (its claim, and its mark in self) happened */
  struct fib__fiber *j = __atomic_load_n(&self->joiner, __ATOMIC_ACQUIRE);
  /* above the tags: a joiner's address; its mark first, then j */
  if ((uintptr_t)j > (uintptr_t)FIB__JOIN_GONE && joiner_is_here(rt, self) &&
      __builtin_expect(!fib__cancelled(j), 1)) {
    group_finish_count(rt, self);
    return end_join_here(rt, self, j);
  }
  return group_finish(rt, self, j);
}

_Noreturn void fib__fiber_finish(struct fib__fiber *self, void *result) {
  struct fib_runtime *rt = self->rt;
  fib_coro *co = self->co;
  if (__builtin_expect(self->holds != NULL, 0))
    discard_holds(self); /* a mutex it never unlocked goes to its waiter */
  int frameless = 0; /* its joiner waits with no frame (fiber.h) */
  fib_coro *prev = rt->zombie; /* the previous one: we are on another stack */
  rt->zombie = co; /* ours, once we are off it */
  if (prev)
    fib__coro_free(prev);
  self->co = NULL;
  self->state = FIB__FIBER_FINISHED;
  self->result = result;
  int awaited = self == rt->awaited;
  /* Its joiner, parked here, to run next, if any (one hand-off below for
   * both cases, so that hand_to_front stays inline) */
  struct fib__fiber *j;
  if (rt->group) {
    j = group_finish_own(rt, self); /* claimed; self may be freed */
  } else {
    rt->unfinished--;
    /* Its joiner collects and frees us; unless a deadline or a cancel has
     * already readied it (it is then READY, about to find that its join
     * failed): readied twice, it would be queued twice. */
    j = self->joiner;
    if (j && j->state != FIB__FIBER_BLOCKED) {
      j = NULL;
    } else if (j) {
      struct fib__wnode *n = fib__fiber_tail(j);
      if (fib__fiber_has_tail(j) && n->idx == FIB__JOIN_TAIL) {
        /* a frameless join: ours to complete (fiber.h) */
        frameless = 1;
        n->idx = 0;
        if (n->elem)
          *(void **)n->elem = result;
      }
    } else {
      if (self->in_stack) /* freed with its stack (the zombie) */
        fib__idmap_forget(&rt->fibers, self->id);
      else if (self->detached)
        fib__fiber_free_record(rt, self);
    }
  }
  if (j) {
    if (!awaited && hand_to_front(rt, co, j)) {
      if (frameless) /* we touch our record no more after this */
        fib__fiber_collect(rt, self);
      fib__coro_finish_into(co, j->co, 0);
    }
    /* Runs later: till then we are still being joined (our id still
     * finds us, and a join or detach of it is refused), so our record is
     * collected when it runs, by a frame put on its stack for that. */
    if (frameless)
      fib__join_tail_defer(j, 1);
    /* fib__fiber_ready_front's local half: a group's joiner is claimed */
    fib__fiber_unpark(j);
    fib__runq_push_front(&rt->runq, &j->runq);
  }
  struct fib__fiber *next = awaited ? NULL : take_next(rt, co, 1);
  if (!next && rt->until_loop == 0 && rt->group && fib__group_turn(rt))
    next = take_next(rt, co, 1); /* as to_loop */
  if (next)
    fib__coro_finish_into(co, next->co, next->wake);
  rt->current = NULL;
  fib__coro_exit(NULL); /* back to the loop */
}

/* ---- the scheduler loop */

/* Wake every fiber whose deadline has passed. */
static void expire_timers(struct fib_runtime *rt, uint64_t now) {
  struct fib__timer *tm;
  while ((tm = fib__timers_first(&rt->timers)) && tm->deadline <= now) {
    struct fib__fiber *f = (struct fib__fiber *)((char *)tm -
                                      offsetof(struct fib__fiber, timer));
    wake(f, FIB_ETIMEDOUT);
  }
}

/* Nothing is ready: block the thread until the earliest deadline, or
 * until an I/O event if fibers wait for one (then the I/O layer's poll
 * waits for both). */
static void idle_wait(struct fib_runtime *rt) {
  if (rt->seeded) { /* virtual time */
    fib__seed_idle(rt);
    return;
  }
  const struct fib__timer *first = fib__timers_first(&rt->timers);
  uint64_t deadline = first ? first->deadline : FIB__NO_DEADLINE;
  if (__atomic_load_n(&rt->posted, __ATOMIC_SEQ_CST)) {
    fib__runtime_sleep(rt, deadline); /* wakeable from other threads */
    return;
  }
  if (rt->io_waiting) {
    (void)rt->poll(rt, deadline);
    return;
  }
  struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                        .tv_nsec = (long)(deadline % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

/* Clamp a size_t count into a non-negative int result. */
static int count_result(size_t n) { return n > INT_MAX ? INT_MAX : (int)n; }

/* Whether work waits for worker 0 in a host's call that the loop's
 * tend will take: it may go on to other workers there (a post's fiber
 * offered, a fiber following its waker), and the call must not then
 * sleep as if nothing had come (relaxed: a look; what comes after it
 * wakes the call's sleep). */
static int host_pending(const struct fib_runtime *rt) {
  return __atomic_load_n(&rt->inbox, __ATOMIC_RELAXED) ||
         __atomic_load_n(&rt->cancels, __ATOMIC_RELAXED) ||
         __atomic_load_n(&rt->posts, __ATOMIC_RELAXED) || rt->posts_held ||
         __atomic_load_n(&rt->placed_len, __ATOMIC_RELAXED);
}

/* How far a run goes (the public calls that start one). */
enum run_mode {
  RUN_ALL,    /* fib_run, fib_run_join */
  RUN_ONCE,   /* fib_run_once */
  RUN_NOWAIT  /* fib_run_nowait */
};

/*
 * The scheduler loop, on the thread's own stack, for every kind of run:
 *   RUN_ALL          until every fiber has finished, or none can go on;
 *   RUN_ONCE         one round of the fibers ready (after sleeping until
 *                    the earliest deadline if none is);
 *   RUN_NOWAIT       one round of the fibers ready now, never sleeping;
 *   awaited != NULL  (fib_run_join, RUN_ALL) until that fiber finishes.
 * A round is as many dispatches as there were fibers ready when it began
 * (a fiber readied during it may take the place of one that was).
 */
static int loop_rounds(struct fib_runtime *rt, enum run_mode mode,
                       const struct fib__fiber *awaited) {
  const int bounded = mode != RUN_ALL;
  size_t budget = SIZE_MAX; /* dispatches left in a bounded run's round */
  /* worker 0 of several in a bounded call or fib_run_join: the host's
   * round (workers.h); it never ends the run for the other workers */
  const int host = rt->group && (bounded || awaited);
  int took = 0; /* work came for worker 0 in this host's call */
  for (;;) {
    if (awaited && awaited->state == FIB__FIBER_FINISHED)
      return 0;
    /* A worker of several stops here once its run is over, also with
     * fibers ready (fib_runtime_destroy stops the workers that serve
     * bounded calls); the host hears of it in fib__group_host_idle. */
    if (rt->group && !host &&
        __atomic_load_n(&rt->group->over, __ATOMIC_ACQUIRE))
      return rt->group->result;
    int posted = __atomic_load_n(&rt->posted, __ATOMIC_RELAXED);
    if (host && !took)
      took = host_pending(rt);
    if (rt->group)
      fib__group_tend(rt);
    else if (posted) /* fibers readied and calls posted from elsewhere */
      fib__runtime_tend(rt);
    size_t ready = fib__runq_len(&rt->runq);
    /* Timers and I/O are looked at after each round of the fibers that
     * were ready (sleepers and ready sockets are never starved by fibers
     * that keep yielding), and whenever nothing is ready. */
    int outside = rt->timers.count || rt->io_waiting;
    if (outside && (rt->until_loop == 0 || ready == 0)) {
      /* Nothing ready, no timer, and the loop may wait: idle_wait's poll
       * takes the I/O events (at once if there are some); a poll here
       * first would be a second system call for the same events. (With
       * timers, I/O is polled before they expire: an operation that has
       * completed wins over a deadline that has passed.) */
      if (rt->io_waiting && (ready || rt->timers.count ||
                             mode == RUN_NOWAIT || budget != SIZE_MAX))
        (void)rt->poll(rt, 0);
      if (rt->timers.count)
        expire_timers(rt, fib_now_ns());
      rt->until_loop = ready = fib__runq_len(&rt->runq);
    } else if (!outside) {
      rt->until_loop = SIZE_MAX;
    }
    if (ready == 0) {
      /* Nothing to run: what might sleep or return here first lets go
       * of the locks it keeps (bias.h), which no fiber of its own needs
       * now and another thread may (whom it might never hear). */
      if (rt->bias_n)
        fib__bias_let_go(rt, 1);
      if (host) {
        /* A round has run, or work came and went on to other workers
         * (a post's fiber offered): the rest is for the next call (what
         * is on offer, for the other workers meanwhile). */
        if (bounded && (budget != SIZE_MAX || took))
          return count_result(fib__group_unfinished(rt->group));
        int r = fib__group_host_idle(rt, awaited ? FIB__HOST_JOIN
                                         : mode == RUN_ONCE ? FIB__HOST_ONCE
                                                            : FIB__HOST_LOOK);
        took |= r == 2;
        if (r > 0)
          continue;
        if (bounded)
          return count_result(fib__group_unfinished(rt->group));
        return r < 0 && rt->group->result ? rt->group->result : FIB_EDEADLK;
      }
      if (rt->group) { /* take, steal or sleep; 0: the run is over */
        if (fib__group_idle(rt))
          continue;
        return rt->group->result;
      }
      if (!outside) { /* every unfinished fiber waits for another */
        if (bounded) /* the program may yet ready one from outside */
          return count_result(rt->unfinished);
        if (!rt->unfinished)
          return 0;
        if (!posted) /* else a post or a reply may still come */
          return FIB_EDEADLK;
      }
      /* Virtual time: a nowait run with nothing ready moves the clock to
       * the earliest deadline (it waits for nothing real). */
      if (rt->seeded && mode == RUN_NOWAIT && budget == SIZE_MAX &&
          fib__seed_jump(rt))
        continue;
      if (mode == RUN_NOWAIT || budget != SIZE_MAX)
        return count_result(rt->unfinished); /* nowait, or a round ran */
      idle_wait(rt);
      continue;
    }
    if (bounded) {
      if (budget == SIZE_MAX)
        budget = ready; /* the round: the fibers ready now */
      else if (budget == 0)
        return count_result(host ? fib__group_unfinished(rt->group)
                                 : rt->unfinished);
      if (rt->until_loop > budget)
        rt->until_loop = budget;
    }
    /* A worker of several, or a runtime that has been posted to, comes
     * back here every few hand-offs, to take its inbox and posts and offer
     * work to idle workers: no test for that on the hand-off path. */
    if ((rt->group || posted) && rt->until_loop > FIB__GROUP_TURNS)
      rt->until_loop = FIB__GROUP_TURNS;
    /* The forced mode: every dispatch comes through here, none by direct
     * hand-off, so that each can move the fiber (fib__group_force). */
    if (__builtin_expect(rt->force_migrate, 0))
      rt->until_loop = 0;

    struct fib__fiber *f;
    if (__builtin_expect(rt->seeded, 0)) {
      /* Every choice here, none by direct hand-off; time moves on. */
      f = fib__seed_take(rt);
      rt->until_loop = 0;
      rt->vnow += FIB__SEED_TICK_NS;
    } else {
      f = FIBER_OF(fib__runq_pop(&rt->runq));
      if (rt->until_loop)
        rt->until_loop--;
      if (__builtin_expect(rt->force_migrate, 0) && fib__group_force(rt, f))
        continue; /* it went to another worker */
    }
    size_t before = rt->until_loop;
    f->state = FIB__FIBER_RUNNING;
    rt->current = f;
    (void)fib__coro_resume(f->co, f->wake);
    /* Back from whichever fiber ran last (fibers switch among themselves);
     * if it finished, it did its own bookkeeping but left its stack. */
    rt->current = NULL;
    free_zombie(rt);
    if (__builtin_expect(rt->outgoing != NULL, 0)) /* fib_move_to */
      fib__group_send_out(rt);
    if (bounded) { /* this dispatch and the hand-offs the fibers made (an
                      over-count if a timer was armed meanwhile) */
      size_t used = 1 + (before > rt->until_loop ? before - rt->until_loop : 0);
      budget = used < budget ? budget - used : 0;
    }
  }
}

/* Every run's loop. A host's call (bounded, or fib_run_join) then lets
 * the I/O layer make fib_runtime_io_fd readable for what comes before
 * the next call (rt->io_rest: on io_uring), inside the run, where what
 * it takes lands in the run queue. */
static int run_loop(struct fib_runtime *rt, enum run_mode mode,
                    const struct fib__fiber *awaited) {
  int result = loop_rounds(rt, mode, awaited);
  /* A worker keeps no lock once its loop is left (bias.h): a host's
   * worker 0 may not come back for a long time, nor the tag stay its. */
  if (rt->bias_n)
    fib__bias_let_go(rt, 1);
  if (__builtin_expect(rt->io_rest != NULL, 0) && (mode != RUN_ALL || awaited))
    rt->io_rest(rt);
  return result;
}

/* The start and end of every run on this thread. */
static int loop_enter(struct fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  if (rt->running || fib__tl_runtime)
    return FIB_EBUSY;
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  rt->running = 1;
  fib__tl_runtime = rt;
  if (rt->seeded)
    fib__fatal_note = rt->seed_note;
  return 0;
}

static int loop_leave(struct fib_runtime *rt, int result) {
  rt->running = 0;
  fib__tl_runtime = NULL;
  fib__fatal_note = NULL;
  return result;
}

/* One worker of a multi-worker run, on its thread (workers.c). */
static int worker_main(struct fib_runtime *w) {
  int err = loop_enter(w);
  return err ? err : loop_leave(w, run_loop(w, RUN_ALL, NULL));
}

/* Inlined into each public call: `mode` is then a constant. */
static inline __attribute__((always_inline)) int run(struct fib_runtime *rt,
                                                     enum run_mode mode) {
  if (rt && rt->group) {
    /* the thread first: a fiber of another worker must not read
     * worker 0's `running`, which the host's thread writes */
    if (fib__tl_runtime || rt->running)
      return FIB_EBUSY;
    fib__group_host_enter(rt);
    if (mode == RUN_ALL)
      return fib__group_run(rt, worker_main);
    /* The host's call: the other workers run on their threads from the
     * first such call on (workers.h) */
    int err = fib__group_host(rt, worker_main);
    if (!err)
      err = loop_enter(rt);
    if (!err)
      err = loop_leave(rt, run_loop(rt, mode, NULL));
    fib__host_leave(rt);
    return err;
  }
  int err = loop_enter(rt);
  if (err)
    return err;
  fib__host_enter(rt);
  err = loop_leave(rt, run_loop(rt, mode, NULL));
  /* A host between its calls wakes for posts and replies (workers.h) */
  if (mode != RUN_ALL &&
      ((uintptr_t)rt->io_wake_fd | (uintptr_t)rt->io_host_wake_fd))
    fib__host_leave(rt);
  return err;
}

int fib_run(fib_runtime *rt) { return run(rt, RUN_ALL); }
int fib_run_once(fib_runtime *rt) { return run(rt, RUN_ONCE); }
int fib_run_nowait(fib_runtime *rt) { return run(rt, RUN_NOWAIT); }

static int group_join_host(struct fib_runtime *rt, fib_id id, void **result);

/* fib_run_join of several workers: a fiber pinned to worker 0 joins the
 * target wherever it runs, by fib_join's own protocol (the join word, a
 * wake-up through worker 0's inbox), and the host runs worker 0 until
 * that fiber has finished. */
struct host_join {
  fib_id id;
  void *result;
  int err;
};

static void *host_join_main(void *arg) {
  struct host_join *hj = arg;
  hj->err = fib_join(hj->id, &hj->result);
  return NULL;
}

/* Run worker 0 until h, its fiber, has finished, then collect h (its
 * join word, workers.h: DONE to GONE, then to its home, worker 0). */
static int host_join_run(struct fib_runtime *rt, struct fib__fiber *h) {
  rt->awaited = h;
  int err = run_loop(rt, RUN_ALL, h);
  rt->awaited = NULL;
  if (err)
    return err;
  struct fib__fiber *w = FIB__JOIN_DONE;
  /* acquire: its finish's stores (ours: it finished on this thread) */
  if (__atomic_compare_exchange_n(&h->joiner, &w, FIB__JOIN_GONE, 0,
                                  __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    fib__group_collect(rt, rt, h);
  return 0;
}

static int group_run_join(struct fib_runtime *rt, fib_id id, void **result) {
  if (fib__tl_runtime || rt->running) /* as run's */
    return FIB_EBUSY;
  fib__group_host_enter(rt);
  int err = group_join_host(rt, id, result);
  fib__host_leave(rt);
  return err;
}

static int group_join_host(struct fib_runtime *rt, fib_id id, void **result) {
  int err = fib__group_host(rt, worker_main);
  if (!err)
    err = loop_enter(rt);
  if (err)
    return err;
  struct host_join hj = {id, NULL, 0};
  static const fib_attr pinned = {.flags = FIB_PINNED};
  fib_id hid;
  err = fib_spawn(rt, host_join_main, &hj, &pinned, &hid);
  if (err)
    return loop_leave(rt, err);
  /* ours: worker 0's map, written only by this thread */
  struct fib__fiber *h = fib__idmap_get(&rt->fibers, hid);
  err = host_join_run(rt, h);
  if (err) {
    /* A deadlock (it waits in its join with everything else), or the
     * other workers stopped (one could not start its loop): h, which
     * holds the address of hj in this frame, must not outlive the call.
     * Take it out of its join (the target stays joinable) and let it
     * finish here. Its wake-up is certain once the cancel is made: the
     * cancel, made on worker 0's own thread, readied it; or the target's
     * finisher won it first and has pushed it onto worker 0's inbox, or
     * is about to (between its compare-and-swap and its push, on a
     * thread that may be preempted there). Worker 0 runs what is ready
     * before it looks at the other workers, but a run that finds nothing
     * yet ends at once if they have stopped: so run until it finishes.
     * Its target may have finished meanwhile, and been collected by it:
     * then the join succeeded. */
    (void)fib_cancel(rt, hid);
    while (host_join_run(rt, h) != 0)
      sched_yield();
    if (hj.err == 0)
      err = 0; /* a stop's error stays for the next call to report */
    else if (err != FIB_EDEADLK) /* reported now, not again */
      (void)fib__group_host_take_error(rt);
  }
  if (!err)
    err = hj.err;
  if (!err && result)
    *result = hj.result;
  return loop_leave(rt, err);
}

static int one_run_join(struct fib_runtime *rt, fib_id id, void **result);

int fib_run_join(fib_runtime *rt, fib_id id, void **result) {
  if (rt && rt->group)
    return group_run_join(rt, id, result);
  int err = loop_enter(rt);
  if (err)
    return err;
  fib__host_enter(rt);
  err = one_run_join(rt, id, result);
  fib__host_leave(rt);
  return err;
}

static int one_run_join(struct fib_runtime *rt, fib_id id, void **result) {
  int err;
  struct fib__fiber *t = fib__idmap_get(&rt->fibers, id);
  if (!t)
    return loop_leave(rt, FIB_ESRCH);
  if (t->detached || t->joiner)
    return loop_leave(rt, FIB_EINVAL);
  rt->awaited = t;
  err = run_loop(rt, RUN_ALL, t);
  rt->awaited = NULL;
  if (!err) {
    if (result)
      *result = t->result;
    fib__fiber_free_record(rt, t);
  }
  return loop_leave(rt, err);
}

uint64_t fib_runtime_next_ns(const fib_runtime *rt) {
  if (!rt || fib__runq_len(&rt->runq))
    return 0;
  /* Also what other threads (and workers, for worker 0 of several) left
   * for it since the last call (seq_cst: the load half of the pair with
   * a waker, after fib__host_leave's announcement: what this misses wakes
   * the host's descriptor). The lists a one-worker runtime never has
   * stay empty. */
  if (__atomic_load_n(&rt->inbox, __ATOMIC_SEQ_CST) ||
      __atomic_load_n(&rt->cancels, __ATOMIC_SEQ_CST) ||
      __atomic_load_n(&rt->placed_len, __ATOMIC_SEQ_CST) ||
      __atomic_load_n(&rt->posts, __ATOMIC_SEQ_CST) || rt->posts_held ||
      __atomic_load_n(&rt->offer_len, __ATOMIC_SEQ_CST))
    return 0;
  const struct fib__timer *tm = fib__timers_first(&rt->timers);
  return tm ? tm->deadline : UINT64_MAX;
}
