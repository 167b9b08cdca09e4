/*
 * fiber.h -- the fiber record and the runtime, shared by the scheduler's
 * files (and, later, the blocking primitives built on park/ready).
 *
 * Fiber state machine (one thread; every transition happens on it):
 *
 *     spawn --> READY --(scheduler resumes it)--> RUNNING
 *     RUNNING --fib_yield--> READY
 *     RUNNING --fib_join (target not finished)--> BLOCKED --target ends--> READY
 *     RUNNING --fib_sleep_*--> SLEEPING --deadline passes--> READY
 *     RUNNING --returns / fib_exit--> FINISHED (record kept until joined,
 *                                     freed at once if detached)
 */
#ifndef FIB_SCHED_FIBER_H
#define FIB_SCHED_FIBER_H

#include "../coro.h"
#include "fibers.h"
#include "idmap.h"
#include "runq.h"
#include "timers.h"

enum fib__fiber_state {
  FIB_FIBER_READY,    /* in the run queue */
  FIB_FIBER_RUNNING,  /* the runtime's current fiber */
  FIB_FIBER_BLOCKED,  /* parked: waits for another fiber to ready it */
  FIB_FIBER_SLEEPING, /* parked with its timer armed */
  FIB_FIBER_FINISHED  /* returned; co is NULL, result is set */
};

struct fib__fiber {
  struct fib__runq_node runq; /* link while READY */
  fib_coro *co;               /* its coroutine; NULL once FINISHED */
  struct fib_runtime *rt;
  fib_id id;
  enum fib__fiber_state state;
  int detached;               /* nobody will join; free when FINISHED */
  struct fib__fiber *joiner;  /* the fiber blocked in fib_join on us */
  void *result;               /* valid when FINISHED */
  fib_fn fn;
  void *arg;
  struct fib__timer timer;    /* armed while SLEEPING */
  char name[FIB_NAME_MAX + 1];
};

struct fib_runtime {
  struct fib__runq runq;         /* READY fibers, FIFO */
  struct fib__timers timers;     /* SLEEPING fibers by deadline */
  struct fib__idmap fibers;      /* every record not yet freed, by id */
  struct fib__fiber *current;    /* RUNNING fiber, or NULL in the loop */
  size_t unfinished;             /* fibers not yet FINISHED */
  size_t until_timer_check;      /* dispatches left before timers are
                                    looked at again (fairness to sleepers
                                    without a clock read per dispatch) */
  fib_id last_id;                /* ids are handed out in order from 1 */
  struct fib__fiber *spare;      /* freed records kept for reuse (linked
                                    through runq.next), at most SPARE_MAX */
  size_t spare_count;
  size_t stack_size;             /* defaults for new fibers */
  fib_guard_mode guard;
  unsigned flags;                /* FIB_SHARED_FP for all its fibers */
  int running;                   /* inside fib_run */
};

#endif
