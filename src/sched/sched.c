/*
 * sched.c -- the runtime and its scheduler: the loop, park / ready, and
 * the switch from one fiber to the next.
 *
 * The scheduler loop runs on the OS thread's own stack. It resumes a ready
 * fiber's coroutine; from then on fibers hand the CPU to each other
 * directly (a coroutine transfer: one switch per hop) while there is a
 * ready fiber to go to, and come back to the loop only when none is ready,
 * when the timers are due for a look, or when a fiber finishes (its stack
 * must be freed from another stack).
 */
#include "fiber.h"
#include "../debug.h"
#include "../sys.h"

#include <errno.h>
#include <string.h>
#include <time.h>

FIB_TLS struct fib_runtime *fib__tl_runtime;

#define FIBER_OF(node) ((struct fib__fiber *)(node))
_Static_assert(offsetof(struct fib__fiber, runq) == 0, "runq link first");

/* ---- records */

/* Freed fiber records kept per runtime, so spawn and join do not go to
 * malloc in the steady state. */
#define SPARE_MAX 64

struct fib__fiber *fib__fiber_new_record(struct fib_runtime *rt) {
  struct fib__fiber *f = rt->spare;
  if (!f)
    return fib__sys_malloc(sizeof *f);
  rt->spare = FIBER_OF(f->runq.next);
  rt->spare_count--;
  return f;
}

void fib__fiber_drop_record(struct fib_runtime *rt, struct fib__fiber *f) {
  if (rt->spare_count >= SPARE_MAX) {
    fib__sys_free(f);
    return;
  }
  f->runq.next = (struct fib__runq_node *)rt->spare; /* runq is first */
  rt->spare = f;
  rt->spare_count++;
}

void fib__fiber_free_record(struct fib_runtime *rt, struct fib__fiber *f) {
  fib__idmap_del(&rt->fibers, f->id);
  if (f->co)
    fib__coro_free(f->co);
  fib__fiber_drop_record(rt, f);
}

/* ---- runtime */

static int check_guard(fib_guard_mode g) {
  return g == FIB_GUARD_AUTO || g == FIB_GUARD_MADVISE ||
         g == FIB_GUARD_MPROTECT || g == FIB_GUARD_NONE;
}

int fib_runtime_create(fib_runtime **out, const fib_runtime_opts *opts) {
  if (!out)
    return FIB_EINVAL;
  size_t stack = fib__stack_round_size(opts ? opts->stack_size : 0,
                                       FIB_STACK_DEFAULT);
  fib_guard_mode guard = opts ? opts->guard : FIB_GUARD_AUTO;
  unsigned flags = opts ? opts->flags : 0;
  if (!stack || !check_guard(guard) || (flags & ~FIB_SHARED_FP))
    return FIB_EINVAL;
  struct fib_runtime *rt = fib__sys_calloc(1, sizeof *rt);
  if (!rt)
    return FIB_ENOMEM;
  fib__runq_init(&rt->runq);
  fib__timers_init(&rt->timers);
  fib__idmap_init(&rt->fibers);
  rt->stack_size = stack;
  rt->guard = guard;
  rt->flags = flags;
  fib__debug_runtime_add(rt);
  *out = rt;
  return 0;
}

int fib_runtime_destroy(fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  if (rt->running)
    return FIB_EBUSY;
  fib__debug_runtime_remove(rt);
  size_t pos = 0;
  struct fib__fiber *f;
  /* Walk without deleting (deleting would move entries), then free. */
  while ((f = fib__idmap_next(&rt->fibers, &pos)) != NULL)
    if (f->co)
      fib__coro_free(f->co);
  pos = 0;
  while ((f = fib__idmap_next(&rt->fibers, &pos)) != NULL)
    fib__sys_free(f);
  while ((f = rt->spare) != NULL) {
    rt->spare = FIBER_OF(f->runq.next);
    fib__sys_free(f);
  }
  fib__idmap_free(&rt->fibers);
  fib__timers_free(&rt->timers);
  fib__sys_free(rt);
  return 0;
}

fib_runtime *fib_runtime_current(void) { return fib__tl_runtime; }

/* ---- park / ready */

void fib__fiber_enqueue(struct fib_runtime *rt, struct fib__fiber *f) {
  f->state = FIB_FIBER_READY;
  fib__runq_push(&rt->runq, &f->runq);
}

/* Wake a parked fiber for `reason`: its park returns that. */
static void wake(struct fib_runtime *rt, struct fib__fiber *f, int reason) {
  if (f->timer_armed) {
    fib__timers_remove(&rt->timers, &f->timer);
    f->timer_armed = 0;
  }
  f->wake = reason;
  fib__fiber_enqueue(rt, f);
}

void fib__fiber_ready(struct fib__fiber *f) { wake(f->rt, f, 0); }

struct fib__fiber *fib__fiber_self(void) {
  struct fib_runtime *rt = fib__tl_runtime;
  struct fib__fiber *f = rt ? rt->current : NULL;
  return f && fib__coro_self() == f->co ? f : NULL;
}

/*
 * The running fiber `self` has put itself in the run queue or parked: run
 * the next ready fiber. Directly, by a coroutine transfer, when there is
 * one with the same FP variant and the timers need no look yet; otherwise
 * through the scheduler loop. Returns 0 when `self` runs again (callers
 * return it, so the switch stays a tail call: see fib__ctx_switch_int).
 */
static inline int switch_away(struct fib_runtime *rt,
                              struct fib__fiber *self) {
  struct fib__runq_node *n = fib__runq_peek(&rt->runq);
  int timers_due = rt->timers.count && rt->until_timer_check == 0;
  if (n && !timers_due &&
      FIBER_OF(n)->co->shared_fp == self->co->shared_fp) {
    fib__runq_pop(&rt->runq);
    if (rt->until_timer_check)
      rt->until_timer_check--;
    struct fib__fiber *next = FIBER_OF(n);
    next->state = FIB_FIBER_RUNNING;
    if (next == self)
      return 0; /* it was the only ready fiber: carry on */
    rt->current = next;
    return fib__coro_transfer(self->co, next->co);
  }
  return fib_coro_yield(NULL, NULL);
  /* Running again: whoever switched to us made us current and RUNNING. */
}

int fib__fiber_park(struct fib__fiber *self, enum fib__fiber_state state,
                    uint64_t deadline) {
  if (self->cancelled)
    return FIB_ECANCELED;
  struct fib_runtime *rt = self->rt;
  if (deadline != FIB__NO_DEADLINE) {
    /* Capacity for one timer per record was reserved at spawn. */
    fib__timers_add(&rt->timers, &self->timer, deadline);
    self->timer_armed = 1;
  }
  self->state = state;
  self->wake = 0;
  (void)switch_away(rt, self);
  return self->wake;
}

int fib_yield(void) {
  struct fib__fiber *f = fib__fiber_self();
  if (!f)
    return FIB_EPERM;
  fib__fiber_enqueue(f->rt, f);
  return switch_away(f->rt, f);
}

/* ---- the scheduler loop */

static void finish(struct fib_runtime *rt, struct fib__fiber *f, void *result) {
  f->state = FIB_FIBER_FINISHED;
  f->result = result;
  fib__coro_free(f->co); /* its stack goes back to the pool */
  f->co = NULL;
  rt->unfinished--;
  if (f->joiner)
    fib__fiber_ready(f->joiner); /* the joiner collects and frees it */
  else if (f->detached)
    fib__fiber_free_record(rt, f);
}

/* Wake every fiber whose deadline has passed. */
static void expire_timers(struct fib_runtime *rt, uint64_t now) {
  struct fib__timer *tm;
  while ((tm = fib__timers_first(&rt->timers)) && tm->deadline <= now) {
    struct fib__fiber *f = (struct fib__fiber *)((char *)tm -
                                      offsetof(struct fib__fiber, timer));
    wake(rt, f, FIB_ETIMEDOUT);
  }
}

/* Nothing is ready: block the thread until the earliest deadline. */
static void sleep_thread(const struct fib_runtime *rt) {
  uint64_t deadline = fib__timers_first(&rt->timers)->deadline;
  struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                        .tv_nsec = (long)(deadline % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

int fib_run(fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  if (rt->running || fib__tl_runtime)
    return FIB_EBUSY;
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  rt->running = 1;
  fib__tl_runtime = rt;

  int result = 0;
  for (;;) {
    if (rt->timers.count &&
        (rt->until_timer_check == 0 || fib__runq_len(&rt->runq) == 0)) {
      expire_timers(rt, fib_now_ns());
      /* Look again after one round of the fibers ready now: sleepers are
       * never starved by fibers that keep yielding. */
      rt->until_timer_check = fib__runq_len(&rt->runq);
      if (rt->until_timer_check == 0) {
        sleep_thread(rt);
        continue;
      }
    }
    struct fib__runq_node *n = fib__runq_pop(&rt->runq);
    if (!n) {
      result = rt->unfinished ? FIB_EDEADLK : 0;
      break;
    }
    if (rt->until_timer_check)
      rt->until_timer_check--;

    struct fib__fiber *f = FIBER_OF(n);
    void *value;
    f->state = FIB_FIBER_RUNNING;
    rt->current = f;
    (void)fib_coro_resume(f->co, NULL, &value);
    /* Back from whichever fiber ran last (fibers switch among themselves). */
    f = rt->current;
    rt->current = NULL;
    if (f->co->status == FIB_CORO_DEAD)
      finish(rt, f, value);
  }

  rt->running = 0;
  fib__tl_runtime = NULL;
  return result;
}
