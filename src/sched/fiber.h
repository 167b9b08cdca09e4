/* SPDX-License-Identifier: MIT */
/*
 * fiber.h -- the fiber record and the runtime, shared by the scheduler's
 * files and by the blocking primitives built on park/ready (waitq.h,
 * src/sync/).
 *
 * Fiber state machine (one thread; every transition happens on it):
 *
 *     spawn --> READY --(scheduler or a switching fiber picks it)--> RUNNING
 *     RUNNING --fib_yield--> READY
 *     RUNNING --park (join, sync primitives)--> BLOCKED
 *     RUNNING --park_nocancel (cond_wait's relock)--> BLOCKED, uncancellable
 *     RUNNING --fib_sleep_*--> SLEEPING
 *     BLOCKED / SLEEPING --ready, deadline, or cancel--> READY
 *     BLOCKED, uncancellable --ready only--> READY (fib_cancel just sets
 *                                           `cancelled` for the next call)
 *     RUNNING --returns / fib_exit--> FINISHED (record kept until joined,
 *                                     freed at once if detached)
 *
 * Park/ready is the one mechanism under every blocking call. Its contract:
 * a fiber registers itself where its waker will find it (a wait list, a
 * joiner slot) and then parks, with no switch in between; the runtime is
 * cooperative and single-threaded, so no wake-up can be lost in that gap.
 * park returns why it woke: 0 (readied), FIB_ETIMEDOUT or FIB_ECANCELED;
 * on the last two the caller takes itself off its wait list. An
 * uncancellable park has no deadline and ignores cancellation, so it ends
 * only when its waker readies it: for a wait that must complete whatever
 * happens (the caller of fib_cond_wait must hold the mutex on return).
 */
#ifndef FIB__SCHED_FIBER_H
#define FIB__SCHED_FIBER_H

#include "../coro.h"
#include "../sys.h"
#include "../tls.h"
#include "fibers.h"
#include "idmap.h"
#include "runq.h"
#include "timers.h"

#include <pthread.h>

enum fib__fiber_state {
  FIB__FIBER_READY,    /* in the run queue */
  FIB__FIBER_RUNNING,  /* the runtime's current fiber */
  FIB__FIBER_BLOCKED,  /* parked: waits for another fiber to ready it */
  FIB__FIBER_SLEEPING, /* parked with its timer armed */
  FIB__FIBER_FINISHED  /* returned; co is NULL, result is set */
};

/* The records of the wait queues (waitq.h), here for the one a fiber's
 * record holds (fib__fiber.tail) and the runtime's sink for it. */
struct fib__waitq;
struct fib__wnode;

/* One blocking call of one fiber. While the call lasts, fiber->wait points
 * at it, so that a runtime destroyed with the fiber parked can unlink the
 * nodes (which live on the stack it frees): fib__wait_discard. */
struct fib__wait {
  struct fib__fiber *fiber; /* the parked fiber (not set when nodes is
                               NULL) */
  size_t fired;             /* index of the node that completed it */
  int result;               /* what the completer reports (0, FIB_EPIPE) */
  int nodes_on_heap;        /* nodes came from fib__sys_malloc */
  struct fib__wnode *nodes; /* its nodes, an array of count; NULL: one
                               node, the `n` of the fib__wait_one this is
                               the `w` of, and none of the fields below
                               or above is set (fib__waitq_wait_local:
                               four stores fewer on every wait) */
  size_t count;
  void *heap_extra;         /* another block the call allocated (a shared
                               select's channel set), or NULL */
};

struct fib__wnode {
  struct fib__wnode *next, *prev; /* valid while q != NULL */
  struct fib__waitq *q;           /* the queue it is on; NULL when unlinked */
  struct fib__fiber *fiber;       /* wait->fiber, one load nearer */
  struct fib__wait *wait;         /* the call it belongs to */
  size_t idx;                     /* its case index (select), else 0 */
  void *elem;                     /* channels: value to send / slot to fill */
};


/*
 * Something a fiber holds that others may wait for: a mutex it owns, a
 * fib_once whose function it runs, an offload job in flight (the pool
 * must learn that nobody waits for it). Linked in its holder's list while
 * held, so that fib_runtime_destroy, which discards fibers without
 * unwinding them, can give each up (`discard`: the primitive's own way,
 * e.g. hand the mutex to its next waiter) instead of leaving it held by a
 * freed record.
 */
struct fib__hold {
  struct fib__hold *next;   /* valid while held */
  struct fib__hold **pprev; /* the link that points at it, while held */
  /* Give it up for a discarded holder; it drops h (fib__hold_drop). */
  void (*discard)(struct fib__hold *h);
};

/* The deepest fib_nomigrate_begin nesting: the library's own guards
 * (around an I/O wait) go one deeper, and the depth is 16 bits (the record
 * stays within its malloc size class: idle memory per fiber). */
#define FIB__NOMIGRATE_MAX 65000u
_Static_assert(FIB__NOMIGRATE_MAX + 8 <= 0xffffu, "nomigrate headroom");
_Static_assert(FIB_WORKERS_MAX + 1 <= 0xffffu, "move_to fits");

struct fib__fiber {
  struct fib__runq_node runq; /* link while READY */
  fib_coro *co;               /* its coroutine; NULL once FINISHED */
  struct fib_runtime *rt;
  fib_id id;
  enum fib__fiber_state state;
  int wake;                   /* why the last park ended (0 or error); a
                                 switch into the fiber hands it over, so
                                 it is 0 for a fiber that yielded. Beside
                                 `state`: a ready sets both in one store */
  unsigned char cancelled;    /* fib_cancel was called: blocking calls
                                 return FIB_ECANCELED from now on (read
                                 and written with fib__cancelled /
                                 fib__set_cancelled: another worker may
                                 set it; a byte: loads and stores only) */
  /* Flags as bytes, side by side (a compact fiber's idle cost counts
   * every 16 bytes of this record): */
  unsigned char detached;     /* nobody will join; free when FINISHED */
  unsigned char timer_armed;  /* timer is in the runtime's heap */
  unsigned char nocancel;     /* written by every park: 1 while parked by
                                 fib__fiber_park_nocancel (fib_cancel
                                 must not wake it) */
  unsigned short nomigrate;   /* fib_nomigrate_begin depth: the runtime
                                 does not move it while non-zero (also held
                                 by the library around I/O waits, whose
                                 records are its worker's; the user's depth
                                 stops at FIB__NOMIGRATE_MAX) */
  unsigned short move_to;     /* fib_move_to: the worker it asked for,
                                 plus one, while it goes there; 0 else
                                 (FIB_WORKERS_MAX + 1 fits) */
  struct fib__fiber *joiner;  /* the fiber blocked in fib_join on us;
                                 with several workers, the join word
                                 (atomic; FIB__JOIN_*, workers.h) */
  struct fib__wait *wait;     /* the wait-queue call it is inside, from
                                 before it parks until it returns (its
                                 nodes may stay linked after a timeout
                                 until then); NULL otherwise */
  struct fib__hold *holds;    /* what it holds (struct fib__hold) */
  union {                     /* one word: never both in use */
    fib_fn fn;                  /* until it starts */
    void *result;               /* valid when FINISHED */
  };
  void *arg;
  struct fib__timer timer;    /* armed while parked with a deadline */
  /* Multi-worker runtimes only (workers.h); untouched with one worker: */
  int claim;                  /* FIB__CLAIM_*: who may wake it (atomic) */
  int remote_reason;          /* its wake reason, from a waker on another
                                 worker's thread, while in an inbox */
  unsigned char pinned;       /* does not move before it first runs: it
                                 starts on the worker it was spawned on or
                                 placed on (FIB_PINNED, fib_attr.worker,
                                 FIB_COMPACT, the first fiber) */
  unsigned char started;      /* has run: from now on it moves only if
                                 `migratable` (its stack may hold
                                 thread-local addresses) */
  unsigned char in_stack;     /* the record is on its own stack, below its
                                 coroutine record (a fiber detached from
                                 spawn, one worker, not compact): never in
                                 the spares, gone with the stack */
  unsigned char migratable;   /* once started, the runtime may move it
                                 while READY (FIB_MIGRATABLE, or the forced
                                 mode: workers.h); never a compact one */
  unsigned char force_due;    /* forced mode: it has run on its worker
                                 since it last moved, so the loop moves it
                                 the next time it is about to run it */
  unsigned char join_from;    /* as a join's target: its joiner's worker
                                 (fib__join_from), or 0 (workers.h, the
                                 join word; atomic) */
  unsigned short wake_to;     /* while in an inbox: the waker's worker plus
                                 one if it may follow its waker there (a
                                 migratable fiber woken by a channel
                                 partner or a finishing child: workers.c,
                                 inbox_drain), else 0; kept while it goes
                                 there, to be run next (take_placed) */
  struct fib__fiber *joining; /* the fiber whose join word holds it while
                                 it waits in fib_join (FIB__CLAIM_JOIN);
                                 NULL otherwise (atomic: its owner's
                                 fib__join_take reads it, for a deadline or
                                 a cancel) */
  char name[FIB_NAME_MAX + 1];
};

/* fiber->cancelled: another worker may set it while its owner reads it.
 * Relaxed: the flag carries no data; the claim protocol (workers.h) orders
 * what must be ordered. On every target this is a plain load or store. */
static inline int fib__cancelled(const struct fib__fiber *f) {
  return __atomic_load_n(&f->cancelled, __ATOMIC_RELAXED);
}
static inline void fib__set_cancelled(struct fib__fiber *f, int v) {
  __atomic_store_n(&f->cancelled, (unsigned char)(v != 0), __ATOMIC_RELAXED);
}

struct fib__group; /* workers.h */
struct fib__block; /* bias.h */
struct fib__post;  /* post.c */

/*
 * A runtime, or one worker of a multi-worker runtime: each worker is this
 * same scheduler, owned by the thread that runs it (see workers.h for what
 * the workers share and how they reach each other).
 */
struct fib_runtime {
  struct fib__runq runq;         /* READY fibers, FIFO */
  struct fib__group *group;      /* NULL: a one-worker runtime, and none
                                    of the multi-worker code runs */
  struct fib__timers timers;     /* SLEEPING fibers by deadline */
  struct fib__idmap fibers;      /* every record not yet freed, by id */
  struct fib__fiber *current;    /* RUNNING fiber, or NULL in the loop */
  fib_coro *zombie;              /* a finished fiber's coroutine, freed by
                                    the next one to finish or the loop:
                                    not on its own stack */
  size_t unfinished;             /* fibers not yet FINISHED */
  size_t until_loop;             /* dispatches fibers may make among
                                    themselves (direct hand-offs) before
                                    control must go back to the loop: to
                                    look at the timers after one round of
                                    the fibers that were ready (fairness to
                                    sleepers without a clock read per
                                    dispatch), or to end a bounded run
                                    (fib_run_once, fib_run_nowait); huge
                                    when there is no reason */
  struct fib__fiber *awaited;    /* fib_run_join's target: its finish goes
                                    back to the loop; NULL otherwise */
  /* I/O (src/io/), set by the I/O layer the first time one of this
   * runtime's fibers waits on a descriptor: */
  int (*poll)(struct fib_runtime *rt, uint64_t deadline); /* wait for
                                    I/O events until deadline (0: do not
                                    block; FIB__NO_DEADLINE: until one
                                    comes) and ready their fibers */
  size_t io_waiting;             /* its fibers inside an I/O wait: while
                                    any, the loop polls (after each round,
                                    and when idle) and no run is a
                                    deadlock */
  const char *io_backend;        /* "epoll", "io_uring", or NULL before
                                    any I/O */
  unsigned io_pref;              /* fib_runtime_opts.io_backend: FIB_IO_* */
  unsigned io_mode;              /* the I/O layer's choice, made at the
                                    first I/O call: FIB_IO_EPOLL or
                                    FIB_IO_URING; 0 before */
  int (*io_wake_fd)(void);       /* set by the I/O layer with `poll`: the
                                    wake-up eventfd of this thread's
                                    poller, made on first use, or a
                                    negative errno (workers.h) */
  void (*io_discard)(struct fib_runtime *rt); /* set by the I/O layer
                                    while its fibers may be parked in an
                                    operation the kernel owns (io_uring:
                                    it writes into their stacks): destroy
                                    calls it before it frees the stacks, to
                                    cancel those operations and wait until
                                    the kernel has let go */
  void (*io_rest)(struct fib_runtime *rt); /* set by the I/O layer when
                                    a host watches fib_runtime_io_fd on a
                                    back end that needs it (io_uring):
                                    called at the end of each bounded call
                                    and fib_run_join, inside the run, to
                                    reset the descriptor and take what has
                                    completed */
  int (*io_host_wake_fd)(void);  /* set with io_rest: the eventfd that the
                                    wakers of worker 0 write between the
                                    host's calls (workers.h,
                                    FIB__PARKED_HOST); NULL: io_wake_fd's,
                                    in the epoll set the host watches */
  struct fib__fiber *spare;      /* freed records kept for reuse (linked
                                    through runq.next), at most
                                    FIB__SPARE_MAX with one worker, a few
                                    times that with several (workers.h) */
  size_t spare_count;
  size_t stack_size;             /* defaults for new fibers */
  fib_guard_mode guard;
  unsigned flags;                /* FIB_SHARED_FP for all its fibers */
  int running;                   /* inside fib_run */
  struct fib_runtime *next_live; /* the list of live runtimes (sched.c) */
  /* Multi-worker runtimes only (workers.h): */
  unsigned worker;               /* its index in group->w */
  struct fib__runq_node *inbox;  /* fibers other workers readied for it
                                    (atomic; a stack, newest first) */
  int parked;                    /* how it sleeps, FIB__PARKED_* (atomic;
                                    workers.h): 0 awake; its futex word
                                    while FIB__PARKED_FUTEX. Also for a
                                    one-worker runtime posted to */
  int wake_fd;                   /* the eventfd a waker writes while it
                                    sleeps in its poller (FIB__PARKED_POLLER):
                                    written by the sleeper before it
                                    announces that sleep */
  size_t owned;                  /* fibers it owns, not finished: its
                                    timer heap's reservation */
  size_t spawned, finished;      /* fibers spawned on it, and finished on
                                    it (atomic: others sum them) */
  size_t unstarted;              /* of its READY fibers, how many never ran
                                    and may move (what it can offer) */
  size_t migratable;             /* of the fibers it owns, how many may move
                                    once started (fiber->migratable): while
                                    any, its READY ones are offered too */
  uint64_t offer_look_ns;        /* the start of slow_turns' window
                                    (workers.c) */
  int force_migrate;             /* FIBERS_FORCE_MIGRATE: move every
                                    migratable fiber at each turn (workers.h) */
  unsigned force_next;           /* the forced mode's next target, in turn */
  /* Locks this worker keeps (bias.h): its tag (0: none, it keeps
   * nothing), the tag where a lock's `bias` holds it, and the list. */
  unsigned bias_tag;
  uint32_t bias_tag_bits;
  unsigned bias_n;
  struct fib__block *bias_kept[8]; /* FIB__BIAS_SLOTS (a static assert
                                    in bias.c says so) */
  struct fib__fiber *outgoing;   /* a fiber in fib_move_to that has
                                    switched away to the loop, which hands it
                                    to its target (its own thread's) */
  uint32_t ids_lock;             /* spin lock (spin.h): taken by other
                                    workers to look up in `fibers` (which
                                    only its own thread writes: it puts
                                    without the lock, and grows and forgets
                                    with it), and for their write of the
                                    join word of a fiber whose id it
                                    handed out (workers.h, Ids) */
  struct fib__fiber *dead;       /* collected records whose ids it handed
                                    out, still in `fibers` until its next
                                    flush (fib__group_flush), linked
                                    through runq.next; its thread's */
  size_t dead_count;
  struct fib__runq_node *dead_in; /* the same, collected on other workers
                                    (atomic: inbox.h's stack) */
  struct fib__runq_node *cancels; /* cancels of its fibers parked in
                                    fib_join, carried here from other
                                    threads (atomic: inbox.h's stack of
                                    notes; workers.h, the join word) */
  /* Posts (fib_post, fib_call: post.c), for every runtime: */
  struct fib__runq_node *posts;      /* posted calls (inbox.h's stack) */
  struct fib__runq_node *posts_held; /* taken but not yet spawned (beyond
                                    a turn's batch, or no memory then),
                                    oldest first; its own thread's */
  int posted;                    /* set for good once a call was posted to
                                    it, or one of its fibers waits for a
                                    reply, or another thread pushed onto
                                    its inbox: wake-ups may come from
                                    other threads (atomic) */
  unsigned wakers;               /* threads between their push onto its
                                    inbox or posts and the end of the
                                    wake-up that follows (atomic):
                                    fib_runtime_destroy waits for them,
                                    because what they pushed may have run
                                    to the end of the run already */
  uint32_t offer_lock;           /* spin lock: guards offer, placed */
  struct fib__list offer;        /* unstarted fibers others may take */
  struct fib__list placed;       /* fibers spawned for it elsewhere
                                    (fib_attr.worker): only it takes them;
                                    under offer_lock */
  size_t placed_len;             /* placed's length (atomic reads) */
  size_t offer_len;              /* offer's length (atomic reads) */
  /* The seeded test mode (seed.c; FIB_SEEDED), its own thread's only: */
  int seeded;                    /* choices from `rng`, time from `vnow` */
  int preempt;                   /* FIB_SEED_PREEMPT: preemption points */
  unsigned logical_workers;      /* fib_runtime_opts.workers, run here */
  uint64_t seed;                 /* as given: fib_runtime_seed */
  uint64_t rng;                  /* the generator's state (splitmix64) */
  uint64_t vnow;                 /* the virtual clock: fib_now_ns() */
  size_t io_inflight;            /* operations that finish by themselves
                                    (offload jobs): time waits for them */
  char seed_note[80];            /* the line a fatal error adds: how to
                                    replay this run */
  struct fib__wait tail_sink;    /* the wait of its fibers' tail nodes
                                    (fib__fiber_tail): completers write
                                    `fired` and `result` there, read by
                                    nobody (the result goes to the fiber's
                                    `wake`); `nodes` stays NULL */
  /* A host between bounded calls (workers.h, FIB__PARKED_HOST): a
   * one-worker runtime, or worker 0 of several; written by the thread
   * that makes the calls (and destroy), between them: */
  int host_parked;               /* announced at the end of the last call */
  int host_wake_fd;              /* the runtime's own descriptor (a dup)
                                    for the host thread's wake-up eventfd,
                                    which the announcement names: -1 if
                                    none. The thread's poller or ring
                                    closes its own at the thread's exit,
                                    and that number may then be the
                                    program's; wakers may write this one
                                    until the next call, or destroy */
  int host_wake_src;             /* the descriptor it is a dup of */
  uint64_t host_wake_thread;     /* and the thread it was made for (a
                                    token no other thread has, ever) */
};

/* Every runtime between create and destroy, newest first, linked through
 * next_live: what a debugger walks (fib_debug_layout.runtimes). Changed
 * under a lock in sched.c; read only by a debugger, with the process
 * stopped. */
extern struct fib_runtime *volatile fib__runtimes;

/* The runtime fib_run is running on this thread (see tls.h's rule). */
extern FIB__TLS struct fib_runtime *fib__tl_runtime;

/* fib__tl_runtime read in a call of its own, for code that may run after
 * a switch of a fiber that may have moved to another thread since it last
 * read a thread-local: no thread pointer or address computed before the
 * switch can be reused for it, even when the caller is inlined (LTO). */
struct fib_runtime *fib__tl_runtime_now(void);

/* Fiber records: taken from the runtime's spares or malloc; given back
 * (free_record also forgets the id and frees the stack, if any). Not for
 * a record on its fiber's stack (in_stack), which goes with the stack:
 * its finish only forgets the id, destroy frees its stack. */
struct fib__fiber *fib__fiber_new_record_slow(void);
void fib__fiber_drop_record(struct fib_runtime *rt, struct fib__fiber *f);
void fib__fiber_free_record(struct fib_runtime *rt, struct fib__fiber *f);

/*
 * The node of a fiber's single waits on local primitives with no deadline
 * (waitq.h's fib__waitq_wait_tail): in the FIB__TAIL_SLOT bytes its own
 * stack keeps between the coroutine record and the first frame
 * (fib__coro_create_rec; for a record on the stack, between the two
 * records), so that the wait leaves no frame of its own open across the
 * switch, and the stack's top page, which every switch touches, holds it.
 * A compact fiber has none (its waits are refused: sched.c). Linked on a
 * primitive's queue while the fiber waits there, else q is NULL (set when
 * the coroutine is made); the rest is set by each wait.
 */
#define FIB__TAIL_SLOT FIB__CORO_RENEW_ROOM
_Static_assert(sizeof(struct fib__wnode) <= FIB__TAIL_SLOT, "tail node");

static inline struct fib__wnode *fib__fiber_tail(const struct fib__fiber *f) {
  return (struct fib__wnode *)(void *)((char *)f->co - FIB__TAIL_SLOT);
}

/* Whether f has a tail node (a coroutine on a stack of its own). */
static inline int fib__fiber_has_tail(const struct fib__fiber *f) {
  return f->co && !(f->co->shared_fp & FIB__CORO_COMPACT);
}

/* f has a new coroutine (not compact): its tail node, unlinked. */
static inline void fib__fiber_init_tail(struct fib__fiber *f) {
  fib__fiber_tail(f)->q = NULL;
  fib__fiber_tail(f)->idx = 0; /* not FIB__JOIN_TAIL */
}

/*
 * A join with no deadline waits with no frame (fiber.c, join_tail; with
 * several workers, group_join) and its tail node, on no queue meanwhile
 * (q NULL), says so:
 * idx FIB__JOIN_TAIL, `fiber` the target, `elem` where its result goes
 * (NULL: nowhere). Whoever readies the joiner completes the join, as no
 * frame is left to: the target's finish (the result; the collection, at
 * once if it hands over to the joiner, else fib__join_tail_defer) or a
 * cancel (sched.c's wake: the target left joinable, by
 * fib__join_tail_defer). idx leaves FIB__JOIN_TAIL then, and a spawn sets
 * it to 0, so a stale FIB__JOIN_TAIL is never read.
 */
#define FIB__JOIN_TAIL SIZE_MAX

/* A frameless join ended while its joiner is not the next to run: by its
 * target's finish (`collect` 1) or a cancel (0). Till the joiner runs
 * the join is under way, as with a frame (the target's id finds it being
 * joined); then a frame put on the joiner's stack below its saved
 * context (fiber.c) collects the target, or leaves it joinable. */
void fib__join_tail_defer(struct fib__fiber *joiner, int collect);

/* A multi-worker joiner j, parked and won by the caller (its target's
 * finisher, which has made the join word GONE or is about to): if it
 * waits with no frame, complete its join as the frame would have (its
 * result stored, `joining` cleared) and return 1: the caller collects
 * the target; 0: it has a frame, which does that. Whatever thread the
 * caller runs on: j runs only once woken. */
static inline __attribute__((always_inline)) int
fib__join_tail_complete(struct fib__fiber *j, void *result) {
  if (!fib__fiber_has_tail(j))
    return 0;
  struct fib__wnode *n = fib__fiber_tail(j);
  if (n->idx != FIB__JOIN_TAIL)
    return 0;
  n->idx = 0;
  if (n->elem)
    *(void **)n->elem = result;
  /* relaxed: j's own thread reads it after its wake-up, which orders it */
  __atomic_store_n(&j->joining, NULL, __ATOMIC_RELAXED);
  return 1;
}


/* Freed fiber records kept per runtime, so spawn and join do not go to
 * malloc in the steady state. The spares' halves are inline: on every
 * spawn and join. */
#define FIB__SPARE_MAX 64

static inline struct fib__fiber *fib__fiber_new_record(struct fib_runtime *rt) {
  struct fib__fiber *f = rt->spare;
  if (__builtin_expect(!f, 0))
    return fib__fiber_new_record_slow();
  rt->spare = (struct fib__fiber *)(void *)f->runq.next; /* runq is first */
  rt->spare_count--;
  return f;
}

/* fib__fiber_drop_record's body, inline for join. */
static inline void fib__fiber_keep_record(struct fib_runtime *rt,
                                          struct fib__fiber *f) {
  /* A worker of several keeps them all here: its flush gives those
   * past a cap back under the group's lock (workers.h, the join word) */
  if (__builtin_expect(rt->spare_count >= FIB__SPARE_MAX, 0) && !rt->group) {
    fib__sys_free(f);
    return;
  }
  f->runq.next = (struct fib__runq_node *)(void *)rt->spare;
  rt->spare = f;
  rt->spare_count++;
}

/* A FINISHED fiber's record, one worker: forget its id and keep the
 * record (its coroutine is gone: fib__fiber_free_record without the
 * test). For a join. */
static inline void fib__fiber_collect(struct fib_runtime *rt,
                                      struct fib__fiber *f) {
  fib__idmap_forget(&rt->fibers, f->id);
  fib__fiber_keep_record(rt, f);
}

/* ---- park / ready: the API of the blocking primitives (waitq.h,
 * src/sync/). The calls on the hot path of every hand-off are inline. */

/* No deadline, for fib__fiber_park. */
#define FIB__NO_DEADLINE UINT64_MAX

/* Many fibers alive at once usually lie at one distance from each other:
 * their stacks come one after another from a slab, and their records and
 * wait nodes sit at the same depth on each. No hardware prefetcher
 * follows that across pages, and a list through them (the run queue, a
 * wait queue) is walked one dependent miss at a time. Given two in a row,
 * `a` then `b`, start fetching the one FIB__AHEAD further on at that
 * distance, if the distance is one a slab's stacks can have: at least the
 * smallest stack. A trade-off: records on the heap (a fiber that is
 * joined) mostly lie closer, recycled by malloc and our spare lists in
 * any order, where the guess fetched lines nobody used (skynet_1m spent
 * a sixth of its time on those fetches), so heap records that do lie at
 * one small distance go without. An address that is not mapped costs a
 * futile page walk, nothing else. */
#define FIB__AHEAD 8
#define FIB__STRIDE_MAX ((uintptr_t)1 << 22)
static inline void fib__prefetch_stride(const void *a, const void *b) {
  /* in integers: the address may lie outside any object */
  uintptr_t d = (uintptr_t)b - (uintptr_t)a;
  uintptr_t dist = (intptr_t)d < 0 ? 0 - d : d;
  if (dist - FIB_STACK_MIN < FIB__STRIDE_MAX - FIB_STACK_MIN) /* both bounds */
    __builtin_prefetch((const void *)((uintptr_t)b + FIB__AHEAD * d));
}

/* The running fiber if it may block: on this thread's runtime, and not
 * inside a coroutine the fiber resumed. NULL otherwise. A fiber's own
 * coroutine names its record (fib_coro.owner, set at spawn, kept until
 * the coroutine is freed), and only the runtime that runs on this thread
 * switches into it, with f->rt naming that runtime (a fiber moves only
 * while it is not running): so the running coroutine answers both
 * questions, one thread-local read (not fib__tl_runtime as well) and one
 * load from the record a switch has just touched. */
static inline struct fib__fiber *fib__fiber_self(void) {
  fib_coro *co = fib__coro_self();
  return co ? (struct fib__fiber *)co->owner : NULL;
}

/* Arm `self`'s timer for a park with a deadline (sched.c; out of line so
 * that the switching half below makes no call but its last). */
void fib__fiber_arm(struct fib__fiber *self, uint64_t deadline);

/* park's switching half (sched.c): set the state, switch away. Returns
 * self->wake when `self` runs again (why it woke): every switch into a
 * fiber hands it its `wake` (a yielder's is 0), and a ready always writes
 * it. The switch is its tail call, so the frame the switch saves returns
 * straight into park's caller, and the fiber switched to, which parked
 * through the same call, returns out of it as the return-stack predictor
 * expects (a call left open across the switch costs a mispredicted ret
 * per frame on the way out; a wait with no frame of its own,
 * fib__waitq_wait_tail, leaves none). */
int fib__fiber_suspend(struct fib__fiber *self, enum fib__fiber_state state);

/* The same in BLOCKED for a fiber of a one-worker runtime inside a wait
 * queue call (self->wait set, or its tail node linked): a local
 * primitive's wait, whose caller has found rt->group NULL (storage.h's
 * fib__sync_waiter), so the park tests neither again. */
int fib__fiber_suspend_local(struct fib__fiber *self);

/* The same for a tail wait (waitq.h), whose caller has refused a compact
 * fiber (fib__compact_wait_fatal) before it wrote the tail node. */
int fib__fiber_suspend_tail(struct fib__fiber *self);

/* A FIB_COMPACT fiber is about to block in a wait whose records are on its
 * stack (or in its tail slot, which it does not have): the fatal error. */
__attribute__((noreturn, cold)) void fib__compact_wait_fatal(void);

/* The same, typed as a wait's result: a caller with no frame ends with
 * `return fib__compact_wait_refused()`, a jump, where a call to a
 * function that does not return would make it align the stack for the
 * call on every path. It never returns. */
int fib__compact_wait_refused(void);

/* A multi-worker join's park with no frame (its tail node says
 * FIB__JOIN_TAIL, its claim is the join word): the cancel check, then
 * the switch, in tail position; returns what its waker hands it (0, or
 * FIB_ECANCELED), straight to fib_join's caller. */
int fib__fiber_suspend_join(struct fib__fiber *self);

/* The same, for a multi-worker runtime's fiber that has armed its claim
 * itself (workers.h), before it let wakers on other threads find it. */
int fib__fiber_suspend_armed(struct fib__fiber *self,
                             enum fib__fiber_state state);

/* Park the running fiber `self` in `state` (BLOCKED or SLEEPING) until
 * fib__fiber_ready, the deadline, or cancellation. Returns 0, FIB_ETIMEDOUT
 * or FIB_ECANCELED (at once, without parking, if already cancelled). */
static inline int fib__fiber_park(struct fib__fiber *self,
                                  enum fib__fiber_state state,
                                  uint64_t deadline) {
  if (fib__cancelled(self))
    return FIB_ECANCELED;
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend(self, state);
  return self->wake;
}

/* Park the running fiber `self` BLOCKED until fib__fiber_ready, and only
 * that: no deadline, it parks even if already cancelled, and fib_cancel
 * does not wake it (it only sets `cancelled`, so the next cancellable
 * blocking call returns FIB_ECANCELED). For a wait that must complete. */
void fib__fiber_park_nocancel(struct fib__fiber *self);

/* The same for a fiber that has armed its claim (FIB__CLAIM_COMPLETE)
 * itself, before a waker on another thread could find it. */
void fib__fiber_park_nocancel_armed(struct fib__fiber *self);

/* The runtime has something new to look at outside its run queue (a timer
 * armed, a fiber waiting on I/O): let the fibers ready now have one round
 * at most before control goes back to the loop. */
static inline void fib__runtime_look_soon(struct fib_runtime *rt) {
  if (rt->until_loop > fib__runq_len(&rt->runq))
    rt->until_loop = fib__runq_len(&rt->runq);
}

/* Take a parked fiber's timer out of the heap (for ready). */
void fib__fiber_disarm(struct fib__fiber *f);

/* What every wake-up to run does: off the timer heap, park returns 0. */
static inline void fib__fiber_unpark(struct fib__fiber *f) {
  if (f->timer_armed)
    fib__fiber_disarm(f);
  f->wake = 0;
  f->state = FIB__FIBER_READY;
}

/* Multi-worker runtimes (workers.c): wake f if this waker wins its claim,
 * through its owner's inbox if that is another worker. */
void fib__group_ready(struct fib__fiber *f, int front);

/* Make a parked fiber ready, at the back of the run queue; its park
 * returns 0. */
static inline void fib__fiber_ready(struct fib__fiber *f) {
  if (__builtin_expect(f->rt->group != NULL, 0)) {
    fib__group_ready(f, 0);
    return;
  }
  fib__fiber_unpark(f);
  fib__runq_push(&f->rt->runq, &f->runq);
}

/* The same, to run before the fibers already queued (runq.h's front): for
 * a joiner whose child has finished, and a channel waiter a partner has
 * completed. */
static inline void fib__fiber_ready_front(struct fib__fiber *f) {
  if (__builtin_expect(f->rt->group != NULL, 0)) {
    fib__group_ready(f, 1);
    return;
  }
  fib__fiber_unpark(f);
  fib__runq_push_front(&f->rt->runq, &f->runq);
}

/* fib__fiber_ready_front with its timer armed (sched.c). */
void fib__fiber_ready_front_timed(struct fib__fiber *f);

/* fib__fiber_ready_front for a fiber of a one-worker runtime (a waiter on
 * a local primitive: it passed storage.h's fib__sync_waiter, and a
 * runtime's worker count does not change). The timer's case is a call of
 * its own, so that the common case makes none and the hand-off that
 * inlines this needs no stack frame. */
static inline void fib__fiber_ready_front_local(struct fib__fiber *f) {
  if (__builtin_expect(f->timer_armed, 0)) {
    fib__fiber_ready_front_timed(f);
    return;
  }
  f->wake = 0;
  f->state = FIB__FIBER_READY;
  fib__runq_push_front(&f->rt->runq, &f->runq);
}

/* `h` is held by `f` from now on. */
static inline void fib__hold_add(struct fib__fiber *f, struct fib__hold *h) {
  h->next = f->holds;
  if (h->next)
    h->next->pprev = &h->next;
  h->pprev = &f->holds;
  f->holds = h;
}

/* `h` is no longer held (by whoever held it). */
static inline void fib__hold_drop(struct fib__hold *h) {
  *h->pprev = h->next;
  if (h->next)
    h->next->pprev = h->pprev;
}

/* fib_cancel's wake-up: if `f` is parked and may be cancelled, make it
 * ready with its park returning FIB_ECANCELED. The caller has set
 * f->cancelled. */
void fib__fiber_interrupt(struct fib__fiber *f);

/* The running fiber `self` is done with `result`: wake its joiner (first
 * in line), and run the next ready fiber in its place, or go back to the
 * scheduler loop. Its stack is freed once the thread is off it. */
_Noreturn void fib__fiber_finish(struct fib__fiber *self, void *result);

#endif
