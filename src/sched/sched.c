/*
 * sched.c -- the runtime: spawn, the scheduler loop, yield, join, detach,
 * exit, sleep.
 *
 * The scheduler loop runs on the OS thread's own stack and resumes one
 * fiber's coroutine at a time; a fiber gives control back by yielding its
 * coroutine. park() and ready() are the only ways a fiber leaves and
 * re-enters the run queue; every blocking call is built on them.
 */
#include "fiber.h"
#include "../sys.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* The runtime that fib_run is running on this thread. */
static FIB_TLS struct fib_runtime *tl_runtime;

#define FIBER_OF(node) ((struct fib__fiber *)(node))
_Static_assert(offsetof(struct fib__fiber, runq) == 0, "runq link first");

/* ---- park / ready */

static void ready(struct fib_runtime *rt, struct fib__fiber *f) {
  f->state = FIB_FIBER_READY;
  fib__runq_push(&rt->runq, &f->runq);
}

/* Suspend the running fiber in `state` until someone readies it. */
static void park(struct fib__fiber *f, enum fib__fiber_state state) {
  f->state = state;
  (void)fib_coro_yield(NULL, NULL);
}

/* The running fiber, if the caller may block it: it is on this thread's
 * runtime and not inside a coroutine that the fiber resumed (only the
 * fiber's own coroutine can be suspended by the scheduler). */
static struct fib__fiber *blockable_self(void) {
  struct fib_runtime *rt = tl_runtime;
  struct fib__fiber *f = rt ? rt->current : NULL;
  return f && fib__coro_self() == f->co ? f : NULL;
}

/* ---- records */

/* Freed fiber records kept per runtime, so spawn and join do not go to
 * malloc in the steady state. */
#define SPARE_MAX 64

static struct fib__fiber *new_record(struct fib_runtime *rt) {
  struct fib__fiber *f = rt->spare;
  if (!f)
    return fib__sys_malloc(sizeof *f);
  rt->spare = FIBER_OF(f->runq.next);
  rt->spare_count--;
  return f;
}

static void drop_record(struct fib_runtime *rt, struct fib__fiber *f) {
  if (rt->spare_count >= SPARE_MAX) {
    fib__sys_free(f);
    return;
  }
  f->runq.next = &rt->spare->runq;
  rt->spare = f;
  rt->spare_count++;
}

static void free_record(struct fib_runtime *rt, struct fib__fiber *f) {
  fib__idmap_del(&rt->fibers, f->id);
  if (f->co)
    fib__coro_free(f->co);
  drop_record(rt, f);
}

static void *fiber_main(void *arg, void *first) {
  (void)first;
  struct fib__fiber *f = arg;
  return f->fn(f->arg);
}

/* ---- runtime */

static int check_guard(fib_guard_mode g) {
  return g == FIB_GUARD_AUTO || g == FIB_GUARD_MADVISE ||
         g == FIB_GUARD_MPROTECT;
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
  *out = rt;
  return 0;
}

int fib_runtime_destroy(fib_runtime *rt) {
  if (!rt)
    return FIB_EINVAL;
  if (rt->running)
    return FIB_EBUSY;
  size_t pos = 0;
  struct fib__fiber *f;
  /* Collect first: deleting while walking would move entries. */
  while ((f = fib__idmap_next(&rt->fibers, &pos)) != NULL) {
    if (f->co)
      fib__coro_free(f->co);
    f->co = NULL;
  }
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

fib_runtime *fib_runtime_current(void) { return tl_runtime; }

int fib_spawn(fib_runtime *rt, fib_fn fn, void *arg, const fib_attr *attr,
              fib_id *id) {
  if (!rt) {
    rt = tl_runtime;
    if (!rt || !rt->current)
      return FIB_EPERM;
  }
  if (!fn)
    return FIB_EINVAL;
  static const fib_attr no_attr;
  if (!attr)
    attr = &no_attr;
  size_t stack = fib__stack_round_size(attr->stack_size, rt->stack_size);
  unsigned known_flags = FIB_DETACHED | FIB_SHARED_FP;
  if (!stack || !check_guard(attr->guard) || (attr->flags & ~known_flags))
    return FIB_EINVAL;

  /* Everything that can fail comes first; the runtime is untouched on
   * failure. The reservations make going to sleep and registering the id
   * allocation-free later. */
  size_t records = rt->fibers.count + 1;
  int err = fib__idmap_reserve(&rt->fibers, records);
  if (!err)
    err = fib__timers_reserve(&rt->timers, records);
  if (err)
    return err;
  struct fib__fiber *f = new_record(rt);
  if (!f)
    return FIB_ENOMEM;
  err = fib__coro_create(&f->co, fiber_main, f, stack,
                         attr->guard ? attr->guard : rt->guard,
                         (attr->flags | rt->flags) & FIB_SHARED_FP);
  if (err) {
    drop_record(rt, f);
    return err;
  }

  f->rt = rt;
  f->id = ++rt->last_id;
  f->detached = (attr->flags & FIB_DETACHED) != 0;
  f->joiner = NULL;
  f->result = NULL;
  f->fn = fn;
  f->arg = arg;
  f->name[0] = 0;
  if (attr->name) {
    strncpy(f->name, attr->name, FIB_NAME_MAX);
    f->name[FIB_NAME_MAX] = 0;
  }
  f->co->owner = f;
  f->co->stack->owner_id = f->id;
  f->co->stack->owner_kind = "fiber";
  f->co->stack->owner_name = f->name;

  fib__idmap_put(&rt->fibers, f->id, f);
  rt->unfinished++;
  ready(rt, f);
  if (id)
    *id = f->id;
  return 0;
}

/* ---- the scheduler loop */

static void finish(struct fib_runtime *rt, struct fib__fiber *f, void *result) {
  f->state = FIB_FIBER_FINISHED;
  f->result = result;
  fib__coro_free(f->co); /* its stack goes back to the pool */
  f->co = NULL;
  rt->unfinished--;
  if (f->joiner)
    ready(rt, f->joiner); /* the joiner collects and frees the record */
  else if (f->detached)
    free_record(rt, f);
}

/* Ready every sleeper whose deadline has passed. */
static void wake_sleepers(struct fib_runtime *rt, uint64_t now) {
  struct fib__timer *tm;
  while ((tm = fib__timers_first(&rt->timers)) && tm->deadline <= now) {
    fib__timers_pop(&rt->timers);
    struct fib__fiber *f = (struct fib__fiber *)((char *)tm -
                                      offsetof(struct fib__fiber, timer));
    ready(rt, f);
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
  if (rt->running || tl_runtime)
    return FIB_EBUSY;
  int err = fib__overflow_prepare_thread();
  if (err)
    return err;
  rt->running = 1;
  tl_runtime = rt;

  int result = 0;
  for (;;) {
    if (rt->timers.count &&
        (rt->until_timer_check == 0 || fib__runq_len(&rt->runq) == 0)) {
      wake_sleepers(rt, fib_now_ns());
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
    rt->current = NULL;
    if (f->co->status == FIB_CORO_DEAD)
      finish(rt, f, value);
  }

  rt->running = 0;
  tl_runtime = NULL;
  return result;
}

/* ---- inside a fiber */

int fib_yield(void) {
  struct fib__fiber *f = blockable_self();
  if (!f)
    return FIB_EPERM;
  ready(f->rt, f);
  (void)fib_coro_yield(NULL, NULL);
  return 0;
}

int fib_join(fib_id id, void **result) {
  struct fib__fiber *self = blockable_self();
  if (!self)
    return FIB_EPERM;
  if (id == self->id)
    return FIB_EDEADLK;
  struct fib_runtime *rt = self->rt;
  struct fib__fiber *t = fib__idmap_get(&rt->fibers, id);
  if (!t)
    return FIB_ESRCH;
  if (t->detached || t->joiner)
    return FIB_EINVAL;
  if (t->state != FIB_FIBER_FINISHED) {
    t->joiner = self;
    park(self, FIB_FIBER_BLOCKED);
  }
  if (result)
    *result = t->result;
  free_record(rt, t);
  return 0;
}

int fib_detach(fib_runtime *rt, fib_id id) {
  if (!rt) {
    rt = tl_runtime;
    if (!rt || !rt->current)
      return FIB_EPERM;
  }
  struct fib__fiber *t = fib__idmap_get(&rt->fibers, id);
  if (!t)
    return FIB_ESRCH;
  if (t->detached || t->joiner)
    return FIB_EINVAL;
  if (t->state == FIB_FIBER_FINISHED)
    free_record(rt, t);
  else
    t->detached = 1;
  return 0;
}

void fib_exit(void *result) {
  if (!blockable_self())
    fib__fatal(tl_runtime && tl_runtime->current
                   ? "fib_exit called inside a coroutine resumed by a fiber"
                   : "fib_exit called outside a fiber");
  fib__coro_exit(result);
}

fib_id fib_self(void) {
  struct fib_runtime *rt = tl_runtime;
  return rt && rt->current ? rt->current->id : 0;
}

const char *fib_self_name(void) {
  struct fib_runtime *rt = tl_runtime;
  return rt && rt->current ? rt->current->name : NULL;
}

uint64_t fib_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int fib_sleep_until(uint64_t deadline_ns) {
  struct fib__fiber *f = blockable_self();
  if (!f)
    return FIB_EPERM;
  /* Capacity for one timer per record was reserved at spawn. */
  fib__timers_add(&f->rt->timers, &f->timer, deadline_ns);
  park(f, FIB_FIBER_SLEEPING);
  return 0;
}

int fib_sleep_ns(uint64_t ns) {
  uint64_t now = fib_now_ns();
  return fib_sleep_until(ns > UINT64_MAX - now ? UINT64_MAX : now + ns);
}
