/* SPDX-License-Identifier: MIT */
/*
 * workers.c -- the N workers of one runtime: their threads, inboxes,
 * offers and stealing, sleep and wake-up, the end of a run. The protocol
 * and its orderings are described in workers.h; each atomic below says why
 * it has the ordering it has.
 */
#include "workers.h"
#include "bias.h"
#include "inbox.h"
#include "spin.h"
#include "waitq.h"
#include "../sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FIBER_OF(node) ((struct fib__fiber *)(node))

/* ---- creation */

unsigned fib__group_live;

static void worker_init(struct fib_runtime *w, struct fib__group *g,
                        unsigned index) {
  w->group = g;
  w->worker = index;
  /* Still empty: its ids from now on are index + 1 modulo the stride
   * (Ids). */
  fib__idmap_init(&w->fibers, g->home_mask + 1, index + 1);
  w->offer.head = w->offer.tail = NULL;
  w->placed.head = w->placed.tail = NULL;
  w->bias_tag = fib__bias_tag_take(); /* 0: it keeps no lock (bias.h) */
  w->bias_tag_bits = (uint32_t)w->bias_tag << FIB__BIAS_TAG_SHIFT;
}

int fib__group_create(struct fib_runtime *rt, unsigned n) {
  unsigned stride = 1; /* the ids' (Ids): a power of two, >= n */
  while (stride < n)
    stride *= 2;
  struct fib__group *g = fib__sys_calloc(1, sizeof *g);
  struct fib_runtime **w = fib__sys_calloc(stride, sizeof *w);
  pthread_t *threads = fib__sys_calloc(n, sizeof *threads);
  if (!g || !w || !threads)
    goto fail;
  w[0] = rt;
  for (unsigned i = 1; i < n; i++) {
    w[i] = fib__sys_calloc(1, sizeof *w[i]);
    if (!w[i])
      goto fail;
    fib__runq_init(&w[i]->runq);
    fib__timers_init(&w[i]->timers);
    w[i]->stack_size = rt->stack_size;
    w[i]->guard = rt->guard;
    w[i]->flags = rt->flags;
    w[i]->io_pref = rt->io_pref;
    w[i]->posted = rt->posted;
    w[i]->force_migrate = rt->force_migrate;
  }
  for (unsigned i = n; i < stride; i++)
    w[i] = rt; /* fib__id_home of an id that names no worker */
  g->n = n;
  g->home_mask = stride - 1;
  g->w = w;
  g->threads = threads;
  pthread_mutex_init(&g->lock, NULL);
  for (unsigned i = 0; i < n; i++)
    worker_init(w[i], g, i);
  __atomic_add_fetch(&fib__group_live, 1, __ATOMIC_RELEASE);
  return 0;
fail:
  if (w)
    for (unsigned i = 1; i < n; i++)
      fib__sys_free(w[i]);
  fib__sys_free(w);
  fib__sys_free(threads);
  fib__sys_free(g);
  return FIB_ENOMEM;
}

void fib__group_free(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  /* Cancel notes no worker read (the run ended first): nothing to do but
   * free them; every thread that could push one has left the run. */
  for (unsigned i = 0; i < g->n; i++) {
    struct fib__runq_node *n = fib__inbox_take(&g->w[i]->cancels);
    while (n) {
      struct fib__runq_node *next = n->next;
      fib__sys_free(n);
      n = next;
    }
  }
  for (unsigned i = 0; i < g->n; i++) {
    struct fib_runtime *w = g->w[i];
    /* every loop let go of its locks as it returned (bias.h) */
    fib__bias_tag_give(w->bias_tag);
    w->bias_tag = w->bias_tag_bits = 0;
    if (i == 0)
      continue; /* the handle: sched.c frees the rest of it */
    struct fib__fiber *f;
    while ((f = w->spare) != NULL) {
      w->spare = FIBER_OF(f->runq.next);
      fib__sys_free(f);
    }
    fib__idmap_free(&w->fibers);
    fib__timers_free(&w->timers);
    fib__sys_free(w);
  }
  pthread_mutex_destroy(&g->lock);
  __atomic_sub_fetch(&fib__group_live, 1, __ATOMIC_RELEASE);
  fib__sys_free(g->threads);
  fib__sys_free(g->w);
  fib__sys_free(g);
  rt->group = NULL;
}

int fib__group_force_env(void) {
  const char *e = getenv("FIBERS_FORCE_MIGRATE");
  if (!e || !*e || strcmp(e, "0") == 0)
    return 0;
  return strcmp(e, "1") == 0 ? 1 : -1; /* a test mode that silently did
                                          not run would pass for nothing */
}

/* ---- sleep and wake-up */

/* Sleep on *word while it is FIB__PARKED_FUTEX, until `deadline`
 * (CLOCK_MONOTONIC, the clock of fib_now_ns: FUTEX_WAIT_BITSET's default).
 * Spurious returns are fine: the caller looks again. */
static void futex_sleep(int *word, uint64_t deadline) {
  struct timespec ts, *tp = NULL;
  if (deadline != FIB__NO_DEADLINE) {
    ts.tv_sec = (time_t)(deadline / 1000000000u);
    ts.tv_nsec = (long)(deadline % 1000000000u);
    tp = &ts;
  }
  (void)syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, FIB__PARKED_FUTEX,
                tp, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Wake w if it sleeps, once per sleep, the way it sleeps (workers.h).
 * The load is seq_cst: it must not move before the caller's push (the
 * StoreLoad half of the pair in workers.h). The CAS makes one waker of
 * many do the system call; seq_cst too, as the load. For a poller sleep,
 * its success (acquire) also makes the sleeper's wake_fd, written before
 * it announced the sleep, visible here; and the store of AWAKE (release)
 * tells the sleeper the write is over (it waits for it in sleep_end). */
static void wake_worker(struct fib_runtime *w) {
  int how = __atomic_load_n(&w->parked, __ATOMIC_SEQ_CST);
  if (how == FIB__PARKED_FUTEX) {
    if (__atomic_compare_exchange_n(&w->parked, &how, FIB__PARKED_AWAKE, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
      (void)syscall(SYS_futex, &w->parked, FUTEX_WAKE_PRIVATE, 1, NULL, NULL,
                    0);
  } else if (how == FIB__PARKED_POLLER || how == FIB__PARKED_HOST) {
    if (__atomic_compare_exchange_n(&w->parked, &how, FIB__PARKED_WAKING, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
      int saved = errno; /* the waker may be the program's own thread */
      uint64_t one = 1;
      /* Cannot say EAGAIN: the counter is 0 (or 1) until the sleeper,
       * which waits for us, reads it. */
      while (write(w->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
      errno = saved;
      __atomic_store_n(&w->parked, FIB__PARKED_AWAKE, __ATOMIC_RELEASE);
    }
  }
  /* AWAKE: it will look before it sleeps; WAKING: a waker is on it; NAP:
   * it looks again within FIB__WORKER_IO_NAP_NS. */
}

/* Whether w sleeps and a waker could wake it now. */
static int wakeable(const struct fib_runtime *w) {
  int how = __atomic_load_n(&w->parked, __ATOMIC_SEQ_CST);
  return how == FIB__PARKED_FUTEX || how == FIB__PARKED_POLLER;
}

/* Someone has offered fibers: wake one sleeping worker to take them (not
 * all: the herd would find one list). */
static void wake_one_idle(struct fib__group *g) {
  for (unsigned i = 0; i < g->n; i++)
    if (wakeable(g->w[i])) {
      wake_worker(g->w[i]);
      return;
    }
}

/* ---- a sleep: announce it, sleep, end it (the sleeper's half of the pair
 * in workers.h; fib__runtime_sleep and fib__group_idle) */

/* How rt is to sleep, and announce it: on its futex word if none of its
 * fibers waits on I/O; else in its poller, with the poller's wake-up
 * eventfd (made now if this is the first such sleep), or napping if there
 * can be none. seq_cst: the store half of the sleeper's pair (the caller
 * looks for work next); it also publishes wake_fd to the waker that takes
 * the sleep. */
static int sleep_announce(struct fib_runtime *rt) {
  int how = FIB__PARKED_FUTEX;
  if (rt->io_waiting) {
    int fd = rt->io_wake_fd ? rt->io_wake_fd() : -ENOSYS;
    how = fd >= 0 ? FIB__PARKED_POLLER : FIB__PARKED_NAP;
    if (fd >= 0)
      rt->wake_fd = fd; /* no waker reads it until the store below */
  }
  /* An exchange rather than a store, as fib__claim_arm: the store half
   * of a store/load pair must not pass the load after it, also under an
   * emulator (workers.h) */
  (void)__atomic_exchange_n(&rt->parked, how, __ATOMIC_SEQ_CST);
  return how;
}

/* Sleep as announced, until `deadline` or a wake-up (spurious returns
 * are fine: the caller looks again). */
static void sleep_wait(struct fib_runtime *rt, int how, uint64_t deadline) {
  if (how == FIB__PARKED_FUTEX) {
    futex_sleep(&rt->parked, deadline);
  } else if (how == FIB__PARKED_POLLER) {
    (void)rt->poll(rt, deadline);
  } else { /* no wake-up fd: nap, then look again */
    uint64_t nap = fib_now_ns() + FIB__WORKER_IO_NAP_NS;
    (void)rt->poll(rt, nap < deadline ? nap : deadline);
  }
}

/* The sleep is over (woken, a deadline, or work found before it began). */
static void sleep_end(struct fib_runtime *rt, int how) {
  if (how != FIB__PARKED_POLLER && how != FIB__PARKED_HOST) {
    /* seq_cst, as before the eventfd: a FUTEX waker may have stored
     * AWAKE already; nobody acts on a NAP */
    __atomic_store_n(&rt->parked, FIB__PARKED_AWAKE, __ATOMIC_SEQ_CST);
    return;
  }
  int v = how;
  /* seq_cst as the waker's CAS: exactly one of the two takes the sleep */
  if (__atomic_compare_exchange_n(&rt->parked, &v, FIB__PARKED_AWAKE, 0,
                                  __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
    return; /* nobody woke it: the eventfd was not written */
  /* A waker took it: wait until its write is over (acquire: pairs with its
   * release store of AWAKE; a few hundred nanoseconds, unless the waker's
   * thread was preempted in between), then read the eventfd back to 0 so
   * that no later poll wakes for it. */
  for (unsigned i = 0; __atomic_load_n(&rt->parked, __ATOMIC_ACQUIRE) ==
                       FIB__PARKED_WAKING;
       i++) {
    if (i < 100)
      fib__cpu_relax();
    else
      sched_yield();
  }
  uint64_t n;
  while (read(rt->wake_fd, &n, sizeof n) < 0 && errno == EINTR)
    ;
}

/* The run is over with `result`: every worker leaves its loop. */
static void end_run(struct fib__group *g, int result) {
  g->result = result; /* under g->lock or before any reader: see callers */
  /* release: a worker that sees `over` sees the result */
  __atomic_store_n(&g->over, 1, __ATOMIC_SEQ_CST);
  for (unsigned i = 0; i < g->n; i++)
    wake_worker(g->w[i]);
}

/* ---- the inbox: an intrusive stack through the fibers' runq links */

/* Whether the calling thread, which runs no runtime now, is the host's
 * (workers.h, posted: host_thread). The store and load after the first
 * look are the pusher's half of a pair with fib__group_host_enter's
 * exchange of host_thread and of host_pushed, all seq_cst: either this
 * second look sees the new host (and the push marks posted itself), or
 * the new host's exchange of host_pushed sees our 1 (and it marks). */
static int host_push(struct fib__group *g) {
  uintptr_t me = (uintptr_t)pthread_self();
  if (__atomic_load_n(&g->host_thread, __ATOMIC_SEQ_CST) != me)
    return 0;
  /* an exchange, as sleep_announce's: the store half of a store/load pair */
  (void)__atomic_exchange_n(&g->host_pushed, 1, __ATOMIC_SEQ_CST);
  return __atomic_load_n(&g->host_thread, __ATOMIC_SEQ_CST) == me;
}

/* Push n onto one of w's stacks (its inbox, its cancels) and wake w. */
static void push_note(struct fib_runtime *w, struct fib__runq_node **head,
                      struct fib__runq_node *n) {
  /* Woken from outside its group (a plain thread, another runtime): it
   * may be again from now on, so it is posted (see post.c). Not for a
   * push from a worker of its own group, which the deadlock census sees,
   * nor from the host's thread between its calls (workers.h): a posted
   * worker would turn every later deadlock into a hang. (The thread's
   * runtime read afresh: the pusher may be a fiber that has just moved
   * to another worker.) */
  const struct fib_runtime *here = fib__tl_runtime_now();
  int sibling = w->group && here && here->group == w->group;
  if (sibling) {
    /* A worker of w's group runs this, inside the run, which does not
     * end (nor can the program destroy w) before this thread has left
     * its loop: no count of wakers is needed, and the two locked
     * instructions it costs are saved on every hop between workers. */
    fib__inbox_push(head, n);
    wake_worker(w);
    return;
  }
  if (!__atomic_load_n(&w->posted, __ATOMIC_RELAXED) &&
      !(w->group && !here && host_push(w->group)))
    __atomic_store_n(&w->posted, 1, __ATOMIC_SEQ_CST);
  fib__waker_enter(w);
  fib__inbox_push(head, n);
  wake_worker(w);
  fib__waker_leave(w); /* w may be gone from here on */
}

static void inbox_push(struct fib_runtime *w, struct fib__fiber *f) {
  push_note(w, &w->inbox, &f->runq); /* publishes remote_reason */
}

void fib__runtime_unwaked(struct fib_runtime *rt) {
  /* seq_cst (acquire at least): pairs with fib__waker_leave; a waker
   * holds it for a push, a load and at most a system call */
  while (__atomic_load_n(&rt->wakers, __ATOMIC_SEQ_CST))
    sched_yield();
}

static void move_fiber(struct fib_runtime *rt, struct fib__fiber *f,
                       struct fib_runtime *w);

/* Move the inbox into the run queue, oldest first. 1 if it had fibers. */
static int inbox_drain(struct fib_runtime *rt) {
  struct fib__runq_node *fifo = fib__inbox_take(&rt->inbox);
  if (!fifo)
    return 0;
  while (fifo) {
    struct fib__fiber *f = FIBER_OF(fifo);
    fifo = fifo->next;
    int reason = f->remote_reason;
    unsigned to = f->wake_to;
    fib__fiber_unpark(f);
    f->wake = reason;
    if (__builtin_expect(to != 0, 0)) {
      /* Its waker's worker runs it (Go's rule: a goroutine readied by a
       * channel operation runs on the waker's P), so that two fibers
       * that hand values back and forth end up on one worker instead of
       * crossing cores at every hop. Moved by this, its owner's, thread,
       * READY and switched out (we are in the loop, off every fiber's
       * stack), as fib_move_to moves: a parked fiber never moves, and the
       * waker could not know that the old thread was off its stack yet.
       * Not inside a guard, nor in the forced mode (which moves fibers by
       * its own rule). wake_to stays set on the way: take_placed puts the
       * fiber at the front there, as its waker would have, where it is
       * not offered back (offer_due). */
      if (!f->nomigrate && !rt->force_migrate) {
        move_fiber(rt, f, rt->group->w[to - 1]);
        continue;
      }
      f->wake_to = 0;
    }
    fib__runq_push(&rt->runq, &f->runq);
  }
  return 1;
}

void fib__group_wake(struct fib__fiber *f, int reason, int front) {
  /* The waker may be a fiber that has just come back from a park, and
   * moved: out of line, so no thread pointer from before it is reused. */
  struct fib_runtime *here = fib__tl_runtime_now();
  if (f->rt == here) {
    fib__fiber_unpark(f);
    f->wake = reason;
    if (front)
      fib__runq_push_front(&here->runq, &f->runq);
    else
      fib__runq_push(&here->runq, &f->runq);
    return;
  }
  f->remote_reason = reason;
  /* A migratable fiber readied to run next (a channel partner completed
   * it, its child finished) follows its waker to this worker (inbox_drain
   * moves it). f->migratable and rt never change while it is parked. */
  f->wake_to = front && f->migratable && here && here->group &&
                       here->group == f->rt->group
                   ? (unsigned short)(here->worker + 1)
                   : 0;
  inbox_push(f->rt, f); /* publishes remote_reason and wake_to */
}

void fib__group_ready(struct fib__fiber *f, int front) {
  if (fib__claim_take(f, 1))
    fib__group_wake(f, 0, front);
}

/* ---- collected records (workers.h, Ids) */

void fib__group_collect_far(struct fib_runtime *home, struct fib__fiber *f) {
  fib__inbox_push(&home->dead_in, &f->runq); /* no wake-up: at its turn */
}

void fib__group_flush(struct fib_runtime *rt) {
  struct fib__runq_node *in = fib__inbox_take(&rt->dead_in);
  struct fib__fiber *mine = rt->dead;
  if (!in && !mine)
    return;
  size_t n = rt->dead_count;
  rt->dead = NULL;
  rt->dead_count = 0;
  /* One pass under the lock (no lookup under it holds one of them): each
   * id forgotten, a few instructions, so the lock is not held for long.
   * The records stay linked as they came (the dead list and the far ones
   * through the same link as the spares), and the two lists join the
   * spares after it in one splice each, not one push per record. */
  struct fib__fiber *in_last = NULL, *mine_last = NULL;
  size_t far = 0;
  /* The map's words in a copy, which the loops keep in registers: forget
   * changes only the slots (shared with the map: what lookups read) and
   * the count and the free list, written back (this thread's alone). */
  struct fib__idmap m = rt->fibers;
  fib__spin_lock(&rt->ids_lock);
  for (struct fib__runq_node *l = in; l; l = l->next, far++) {
    in_last = FIBER_OF(l);
    fib__idmap_forget_strided(&m, in_last->id);
  }
  for (struct fib__fiber *f = mine; f; f = FIBER_OF(f->runq.next)) {
    mine_last = f;
    fib__idmap_forget_strided(&m, f->id);
  }
  fib__spin_unlock(&rt->ids_lock);
  rt->fibers.count = m.count;
  rt->fibers.free = m.free;
  if (in) {
    in_last->runq.next = (struct fib__runq_node *)(void *)rt->spare;
    rt->spare = FIBER_OF(in);
  }
  if (mine) {
    mine_last->runq.next = (struct fib__runq_node *)(void *)rt->spare;
    rt->spare = mine;
  }
  rt->spare_count += n + far;
  /* Spares past the cap (fiber.h keeps them all for a worker of several)
   * go back to malloc, unless a cancel note is in flight, which may name
   * one of them (workers.h, the join word): then at a later flush.
   * A read-modify-write (of nothing), not a load, seq_cst: acquire pairs
   * with the release by which a worker that has read its note, or a taker
   * that has done with a target, lets go of it; and a count raised after
   * it reads from it, so that what came before it here (the dead list's
   * take, after the finisher's NULL in its joiner's `joining`) happens
   * before that taker's load of `joining`, which then sees the NULL and
   * leaves the record alone (fib__join_take). A load would order that
   * only with a fence, which ThreadSanitizer cannot model; this runs only
   * when the spares are past the cap. A note raised after it names a
   * record that its canceller found in our map (under our ids_lock, or on
   * this thread), not one of these spares: its id is forgotten only at a
   * later flush, whose lock shows us the count. */
  if (__builtin_expect(rt->spare_count > FIB__GROUP_SPARE_TRIM, 0) &&
      !__atomic_fetch_add(&rt->group->cancels_out, 0, __ATOMIC_SEQ_CST)) {
    while (rt->spare_count > FIB__SPARE_MAX) {
      struct fib__fiber *f = rt->spare;
      rt->spare = FIBER_OF(f->runq.next);
      rt->spare_count--;
      fib__sys_free(f);
    }
  }
}

/* A cancel carried to the worker that owns a fiber waiting in fib_join
 * (workers.h, the join word), on its `cancels` stack. */
struct cancel_note {
  struct fib__runq_node link; /* inbox.h's stack */
  struct fib__fiber *fiber;
};

int fib__claim_take_cancel(struct fib__group *g, struct fib__fiber *f,
                           const struct fib_runtime *own) {
  int c = FIB__CLAIM_ANY;
  /* seq_cst: as fib__claim_take (the load half of the cancel check's
   * pair, on success and failure alike: the caller stored `cancelled`
   * before) */
  if (__atomic_compare_exchange_n(&f->claim, &c, FIB__CLAIM_NONE, 0,
                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    return 1;
  if (!fib__claim_is_join(c))
    return 0;
  unsigned k = (unsigned)c >> 2;
  if (own && own->worker == k) /* its owner's thread: take it here */
    return fib__join_take(f);
  /* Carried to its owner, which alone may move the word. Either f still
   * waits there when the owner reads the note, or it has left that join
   * (the owner then finds its claim changed, or f cancelled in a new join
   * of its own, and acts accordingly). */
  struct cancel_note *note = fib__sys_malloc(sizeof *note);
  if (!note)
    return FIB_ENOMEM;
  note->fiber = f;
  /* seq_cst: f's record is kept by f's home's ids_lock, which the caller
   * holds (or is its thread) and the home's next flush takes before it
   * could make the record a spare; and the target f joins, which a
   * finisher elsewhere may collect meanwhile, by the order of this count
   * with the trim's load and the worker's load of `joining` (as above) */
  __atomic_add_fetch(&g->cancels_out, 1, __ATOMIC_SEQ_CST);
  push_note(g->w[k], &g->w[k]->cancels, &note->link);
  return 0;
}

/* fib__join_take's work, with the target kept from being freed. */
static int join_take_counted(struct fib__fiber *f) {
  /* f's claim names a join on this thread's worker, so f has not run
   * since it wrote `joining`, here (workers.h, the join word). But the
   * target t may be collected by someone else meanwhile: a finisher
   * elsewhere that wins the word collects t itself for a joiner with no
   * frame, and ends a cancelled joiner's join leaving t joinable by
   * anyone; either writes NULL here before t can be collected. Our
   * caller's count in `cancels_out` orders this load with the trim's
   * read-modify-write of the count (fib__group_flush): either the trim
   * sees the count and frees nothing, or the count reads from it and
   * this load sees the NULL. The CAS decides. */
  struct fib__fiber *t = __atomic_load_n(&f->joining, __ATOMIC_SEQ_CST);
  struct fib__fiber *me = f;
  if (!t)
    return 0;
  /* Our worker's mark withdrawn first, whether we win or not (workers.h,
   * the join word: a 0 is never wrong, and once we have won, t may
   * finish, be collected and be freed at once). */
  __atomic_store_n(&t->join_from, 0, __ATOMIC_RELAXED);
  /* seq_cst: f's own cancel check calls this as the load half of the
   * cancel check's pair (workers.h, the claim); acquire, from f's own CAS
   * that wrote itself there: what f wrote before it parked happened. */
  int won = __atomic_compare_exchange_n(&t->joiner, &me, NULL, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
  if (won) {
    /* f is parked and ours; t goes on, joinable by others. relaxed: only
     * this thread acts on a claim that names this worker's join, and a
     * canceller elsewhere only looks */
    __atomic_store_n(&f->joining, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&f->claim, FIB__CLAIM_NONE, __ATOMIC_RELAXED);
    /* a join with no frame (fiber.h, FIB__JOIN_TAIL) ends with t
     * joinable, which the word now says: nothing more to complete */
    if (fib__fiber_has_tail(f) && fib__fiber_tail(f)->idx == FIB__JOIN_TAIL)
      fib__fiber_tail(f)->idx = 0;
  }
  return won;
}

int fib__join_take(struct fib__fiber *f) {
  /* Counted as a cancel note is, while we hold the target's address (a
   * deadline's take, a cancel's on this thread, f's own cancel check, a
   * note's: rare paths, each a pair of read-modify-writes). seq_cst: the
   * order with the trim's read-modify-write (join_take_counted). */
  struct fib__group *g = f->rt->group;
  __atomic_add_fetch(&g->cancels_out, 1, __ATOMIC_SEQ_CST);
  int won = join_take_counted(f);
  /* release: our touches of the target happen before a flush that sees
   * the count fall frees it */
  __atomic_sub_fetch(&g->cancels_out, 1, __ATOMIC_RELEASE);
  return won;
}

/* The cancel notes carried to rt (its thread): each fiber still waiting
 * in a join on rt, and cancelled, is taken out of it and woken. 1 if any
 * note came. */
static int cancels_take(struct fib_runtime *rt) {
  struct fib__runq_node *n = fib__inbox_take(&rt->cancels);
  if (!n)
    return 0;
  struct fib__group *g = rt->group;
  while (n) {
    struct cancel_note *note = (struct cancel_note *)(void *)n;
    struct fib__fiber *f = note->fiber;
    n = n->next;
    /* acquire: a claim that names our join was armed on this thread; any
     * other value means f left that join (or the record is another
     * fiber's now), and is not ours to touch. `cancelled` was stored
     * before the note was pushed (the take's acquire): a fiber whose
     * claim names a join here and that is not cancelled is a reuse of
     * the record, left alone. */
    if (__atomic_load_n(&f->claim, __ATOMIC_ACQUIRE) ==
            fib__claim_join(rt->worker) &&
        fib__cancelled(f) && fib__join_take(f))
      fib__group_wake(f, FIB_ECANCELED, 0);
    fib__sys_free(note);
    /* release: our reads of f happen before a flush that sees the count
     * fall frees its record */
    __atomic_sub_fetch(&g->cancels_out, 1, __ATOMIC_RELEASE);
  }
  return 1;
}

/* ---- a one-worker runtime woken from other threads (post.c) */

void fib__runtime_wake(struct fib_runtime *rt) { wake_worker(rt); }

void fib__runtime_tend(struct fib_runtime *rt) {
  inbox_drain(rt);
  fib__post_take(rt);
}

/* Something for rt came from another thread. */
static int arrived(const struct fib_runtime *rt) {
  return __atomic_load_n(&rt->inbox, __ATOMIC_SEQ_CST) ||
         __atomic_load_n(&rt->cancels, __ATOMIC_SEQ_CST) ||
         __atomic_load_n(&rt->posts, __ATOMIC_SEQ_CST);
}

void fib__runtime_sleep(struct fib_runtime *rt, uint64_t deadline) {
  if (rt->posts_held) { /* spawns failed: try again soon */
    uint64_t soon = fib_now_ns() + FIB__WORKER_IO_NAP_NS;
    deadline = soon < deadline ? soon : deadline;
  }
  int how = sleep_announce(rt);
  if (!arrived(rt))
    sleep_wait(rt, how, deadline);
  sleep_end(rt, how);
}

/* ---- plain threads waiting on shared channels (waitq.h) */

void fib__thread_waiter_wake(struct fib__fiber *f) {
  /* release: the waiter reads its wait's result after it sees 1. The
   * waiter may return at once and its stack go: FUTEX_WAKE reads nothing
   * at the address, so waking a dead word is harmless. */
  __atomic_store_n(&f->remote_reason, 1, __ATOMIC_RELEASE);
  (void)syscall(SYS_futex, &f->remote_reason, FUTEX_WAKE_PRIVATE, 1, NULL,
                NULL, 0);
}

int fib__thread_wait(struct fib__waitq *q, void *elem, uint64_t deadline,
                     struct fib__block *b) {
  struct fib__fiber me; /* only the fields a waker reads */
  me.rt = NULL;
  me.remote_reason = 0;
  struct fib__wnode n = {.fiber = &me, .elem = elem};
  struct fib__wait w = {.fiber = &me, .nodes = &n, .count = 1};
  n.wait = &w;
  fib__waitq_push(q, &n);
  fib__claim_arm(&me, FIB__CLAIM_ANY);
  fib__block_unlock(b, NULL); /* a plain thread keeps no lock */
  for (;;) {
    if (__atomic_load_n(&me.remote_reason, __ATOMIC_ACQUIRE))
      return w.result;
    if (deadline != FIB__NO_DEADLINE && fib_now_ns() >= deadline) {
      int c = FIB__CLAIM_ANY;
      if (__atomic_compare_exchange_n(&me.claim, &c, FIB__CLAIM_NONE, 0,
                                      __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        /* the deadline won: take the node back (a plain thread: it holds
         * the lock through the word, as NULL) */
        (void)fib__block_lock(b, NULL);
        if (n.q)
          fib__waitq_unlink(&n);
        fib__block_unlock(b, NULL);
        return FIB_ETIMEDOUT;
      }
      deadline = FIB__NO_DEADLINE; /* a waker won: its wake-up comes */
    }
    struct timespec ts, *tp = NULL;
    if (deadline != FIB__NO_DEADLINE) {
      ts.tv_sec = (time_t)(deadline / 1000000000u);
      ts.tv_nsec = (long)(deadline % 1000000000u);
      tp = &ts;
    }
    (void)syscall(SYS_futex, &me.remote_reason, FUTEX_WAIT_BITSET_PRIVATE, 0,
                  tp, NULL, FUTEX_BITSET_MATCH_ANY);
  }
}

/* ---- offers and stealing */

/* Which ready fibers an offer may move besides the never-run ones
 * (offer_due): none, those that have run at the back of the run queue,
 * or those at the front too. */
enum { OFFER_NEW = 1, OFFER_BACK = 2, OFFER_ALL = 3 };

/* Whether f may be offered: it has never run and is not pinned, or it
 * has run, is migratable and not inside fib_nomigrate_begin (nor an I/O
 * wait, which holds the same guard), and `started` (non-NULL) says that
 * such fibers may go from the list it is on (offer_due). */
static int movable(const struct fib__runq_node *n, void *started) {
  const struct fib__fiber *f = (const struct fib__fiber *)n;
  if (!f->started)
    return !f->pinned;
  return started && f->migratable && !f->nomigrate;
}

/* Whether rt's hand-offs have been slow since it last asked (at most
 * FIB__GROUP_TURNS of them: one turn), asked only when fibers that have
 * run could be offered otherwise. The window restarts
 * at a look that finds them quick, at an offer of them, and when rt
 * leaves its idle loop (so that a worker that has just become busy does
 * not offer them at its first look); a look that finds them slow leaves
 * it, so that the loop's look after fib__group_turn's agrees with it. */
static int slow_turns(struct fib_runtime *rt) {
  uint64_t now = fib_now_ns();
  if (now - rt->offer_look_ns >= FIB__GROUP_SLOW_NS)
    return 1;
  rt->offer_look_ns = now;
  return 0;
}

/* What rt, with a worker idle and nothing on offer, has to offer: with
 * migratable fibers and more than one fiber ready, OFFER_ALL if its
 * turns are slow (slow_turns), else OFFER_BACK if some are at the back of
 * its run queue; else OFFER_NEW if more than one never-run fiber waits;
 * else 0.
 *
 * The front holds the fibers a running one has just readied to run next
 * (runq.h): the partner of a channel hand-off, a joiner whose child
 * finished. Fibers that hand values to each other quickly (a pipeline)
 * keep each other there; one taken to another worker pays more in hops
 * across the cores (the channel's lines, an inbox push and a wake-up at
 * every message, ~1 us each) than it gains, then follows its waker back
 * (inbox_drain), to be offered again: such a pipeline on two workers
 * moved its fibers tens of thousands of times a run and spent most of its
 * time in those hops. So they are offered only when the hand-offs are
 * slow, FIB__GROUP_SLOW_NS for a turn: fibers readied by a channel that
 * then compute for tens of microseconds each (a pool of consumers) are
 * worth spreading. Go keeps the goroutine it readied to run next
 * (runnext) from thieves for the same reason, for ~3 us. The back holds
 * those that yielded or were woken from elsewhere, which an idle worker
 * may take as before, and never-run fibers are offered from both lists
 * whatever the turns. */
static int offer_due(struct fib_runtime *rt) {
  if (rt->migratable && fib__runq_len(&rt->runq) > 1) {
    if (slow_turns(rt)) /* first: the back may hold only fibers that stay */
      return OFFER_ALL;
    if (rt->runq.back.head)
      return OFFER_BACK;
  }
  return rt->unstarted > 1 ? OFFER_NEW : 0;
}

/* f, one of rt's, leaves it (offered, or sent to another worker): its
 * counts go with it. */
static void disown(struct fib_runtime *rt, const struct fib__fiber *f) {
  rt->owned--;
  if (!f->started && !f->pinned)
    rt->unstarted--;
  if (f->migratable)
    rt->migratable--;
}

/* f has come to rt (taken from an offer list or its placed list). */
static void adopt(struct fib_runtime *rt, const struct fib__fiber *f) {
  rt->owned++;
  if (!f->started && !f->pinned)
    rt->unstarted++;
  if (f->migratable)
    rt->migratable++;
}

/* movable, but passing over the first `skip` movable nodes it is
 * shown. */
struct movable_skip {
  void *started; /* movable's */
  size_t skip;
};

static int movable_after(const struct fib__runq_node *n, void *arg) {
  struct movable_skip *m = arg;
  if (!movable(n, m->started))
    return 0;
  if (m->skip) {
    m->skip--;
    return 0;
  }
  return 1;
}

/* Take up to `want` movable fibers out of q into `out`, the oldest first:
 * the back's from its head (a FIFO), then the front's from its end; of
 * those that have run, the back's if `back`, the front's if `front` is
 * non-NULL (offer_due says which). The
 * front holds the newest first (each batch a running fiber spawns goes
 * before the batches pushed earlier: runq.h), so in a tree that runs
 * depth-first its head is the deepest, smallest work and its end the
 * nearest the root: a thief that takes from there gets whole subtrees
 * and comes back seldom, where the head's leaves sent it back at once.
 * A batch taken from an offer list sits at the front's end oldest first
 * (take_offer), so one offered again comes out in the reverse of that
 * order, its newest first: it is still the front's end, its subtrees
 * the nearest the root. */
static size_t extract_oldest(struct fib__runq *q, size_t want, void *back,
                             void *front, struct fib__list *out) {
  size_t got = fib__list_extract(&q->back, movable, back, want, out,
                                 &q->last_front);
  if (got < want) {
    size_t m = 0;
    for (const struct fib__runq_node *n = q->front.head; n; n = n->next)
      m += (size_t)movable(n, front);
    struct movable_skip skip = {front,
                                m > want - got ? m - (want - got) : 0};
    struct fib__list tail = {NULL, NULL};
    size_t more = fib__list_extract(&q->front, movable_after, &skip,
                                    want - got, &tail, &q->last_front);
    /* reversed, so that the list comes out oldest first */
    struct fib__runq_node *rev = NULL, *n = tail.head;
    while (n) {
      struct fib__runq_node *next = n->next;
      n->next = rev;
      rev = n;
      n = next;
    }
    if (rev) {
      if (out->head)
        out->tail->next = rev;
      else
        out->head = rev;
      out->tail = tail.head;
    }
    got += more;
  }
  q->len -= got;
  return got;
}

/* Put half of rt's movable ready fibers on its offer list (oldest first:
 * near a tree's root, the biggest pieces of work) and wake a sleeper.
 * `due` is offer_due's answer: with OFFER_BACK or OFFER_ALL, ready ones
 * that have run may be movable too, so half of the queue is the aim;
 * else half of the never-run ones. */
static void offer(struct fib_runtime *rt, int due) {
  size_t want = due >= OFFER_BACK ? fib__runq_len(&rt->runq) / 2
                                  : rt->unstarted / 2;
  if (!want)
    return;
  if (due == OFFER_ALL) /* slow_turns' next window */
    rt->offer_look_ns = fib_now_ns();
  struct fib__list taken = {NULL, NULL};
  size_t got = extract_oldest(&rt->runq, want, due >= OFFER_BACK ? rt : NULL,
                              due == OFFER_ALL ? rt : NULL, &taken);
  if (!got)
    return;
  struct fib__runq_node *n = taken.head;
  for (size_t i = 0; i < got; i++, n = n->next)
    disown(rt, FIBER_OF(n));
  fib__spin_lock(&rt->offer_lock);
  if (rt->offer.head)
    rt->offer.tail->next = taken.head;
  else
    rt->offer.head = taken.head;
  rt->offer.tail = taken.tail;
  /* relaxed: a hint for lock-free looks; the lock orders the list */
  __atomic_store_n(&rt->offer_len, rt->offer_len + got, __ATOMIC_RELAXED);
  fib__spin_unlock(&rt->offer_lock);
  wake_one_idle(rt->group);
}

/* Take fibers from v's offer list into rt's run queue: all of them from
 * its own, half from another's. 1 if any.
 *
 * The never-run ones go to the front's end, not the back. An offer holds
 * the oldest never-run fibers, in a tree the subtrees nearest its root;
 * at the back, the front's budget (runq.h) started one of them every
 * FIB__RUNQ_FRONT_BUDGET pops while the front's own subtree was still
 * under way, so the subtrees ran interleaved, each leaving a path of
 * parked joiners and their never-run children, every one with its stack
 * (skynet_1m_2w: 600-1,900 fibers owned by a worker at once, ~60 now
 * as on one worker, and 1,100-2,600 fresh stacks a run, 128-160 now and
 * 64 on one worker). At
 * the front's end each runs once the one before it is done, depth-first
 * as on one worker. They keep the order they were offered in (oldest
 * first), the order they had at the back: so the start of a pipeline
 * (fanout_2w, whose first fibers go through an offer and back) is as it
 * was, where taking them newest first cost it ~7 % (skynet_1m_2w ran
 * the same either way). Those that have run go to the back, as fibers
 * readied elsewhere do. */
static int take_offer(struct fib_runtime *rt, struct fib_runtime *v) {
  if (!__atomic_load_n(&v->offer_len, __ATOMIC_RELAXED))
    return 0;
  fib__spin_lock(&v->offer_lock);
  size_t len = v->offer_len;
  size_t take = v == rt ? len : len - len / 2;
  /* Their deadlines will live in rt's timer heap: room first. */
  if (!take || fib__timers_reserve(&rt->timers, rt->owned + take) != 0) {
    fib__spin_unlock(&v->offer_lock);
    return 0;
  }
  struct fib__runq_node *first = v->offer.head, *n = first;
  for (size_t i = 1; i < take; i++)
    n = n->next;
  v->offer.head = n->next;
  n->next = NULL;
  __atomic_store_n(&v->offer_len, len - take, __ATOMIC_RELAXED);
  fib__spin_unlock(&v->offer_lock);
  struct fib__runq_node *fresh = NULL, *fresh_last = NULL;
  size_t fresh_n = 0;
  while (first) {
    struct fib__fiber *f = FIBER_OF(first);
    first = first->next;
    /* READY, parked nowhere (never ran, or switched out for good on its
     * old worker's thread before that worker offered it, under the lock
     * we took): nobody else reads it */
    f->rt = rt;
    adopt(rt, f);
    if (f->started) {
      fib__runq_push(&rt->runq, &f->runq);
    } else {
      f->runq.next = NULL;
      if (fresh)
        fresh_last->next = &f->runq;
      else
        fresh = &f->runq;
      fresh_last = &f->runq;
      fresh_n++;
    }
  }
  if (fresh)
    fib__runq_append_front(&rt->runq, fresh, fresh_last, fresh_n);
  return 1;
}

/* Look at every offer list, rt's own first, then the others in turn. */
static int steal(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  for (unsigned k = 0; k < g->n; k++)
    if (take_offer(rt, g->w[(rt->worker + k) % g->n]))
      return 1;
  return 0;
}

static int any_offer(const struct fib__group *g) {
  for (unsigned i = 0; i < g->n; i++)
    if (__atomic_load_n(&g->w[i]->offer_len, __ATOMIC_SEQ_CST))
      return 1;
  return 0;
}

void fib__group_offer_new(struct fib_runtime *rt, struct fib__fiber *f) {
  fib__spin_lock(&rt->offer_lock);
  fib__list_push(&rt->offer, &f->runq);
  __atomic_store_n(&rt->offer_len, rt->offer_len + 1, __ATOMIC_RELAXED);
  fib__spin_unlock(&rt->offer_lock);
  wake_one_idle(rt->group);
}

void fib__group_send(struct fib_runtime *w, struct fib__fiber *f) {
  f->rt = w; /* never ran, parked nowhere: nobody else reads it yet */
  fib__spin_lock(&w->offer_lock);
  fib__list_push(&w->placed, &f->runq);
  __atomic_store_n(&w->placed_len, w->placed_len + 1, __ATOMIC_SEQ_CST);
  fib__spin_unlock(&w->offer_lock);
  wake_worker(w);
}

/* Move the fibers placed on rt into its run queue. 1 if any. */
static int take_placed(struct fib_runtime *rt) {
  if (!__atomic_load_n(&rt->placed_len, __ATOMIC_RELAXED))
    return 0;
  fib__spin_lock(&rt->offer_lock);
  size_t n = rt->placed_len;
  struct fib__runq_node *first = rt->placed.head;
  /* Their deadlines will live in rt's timer heap: room first (if there
   * is none now, they wait for a later turn). */
  if (fib__timers_reserve(&rt->timers, rt->owned + n) != 0) {
    fib__spin_unlock(&rt->offer_lock);
    return 0;
  }
  rt->placed.head = NULL;
  __atomic_store_n(&rt->placed_len, 0, __ATOMIC_RELAXED);
  fib__spin_unlock(&rt->offer_lock);
  while (first) {
    struct fib__fiber *f = FIBER_OF(first);
    first = first->next;
    adopt(rt, f);
    if (f->wake_to) { /* it followed its waker here (inbox_drain) */
      f->wake_to = 0;
      fib__runq_push_front(&rt->runq, &f->runq);
    } else {
      fib__runq_push(&rt->runq, &f->runq);
    }
  }
  return 1;
}

/* ---- moving fibers that have run (FIB_MIGRATABLE, fib_move_to, the
 * forced mode) */

/* f, READY and owned by rt, whose thread runs this (so f is switched out:
 * nothing of it runs anywhere), goes to worker w: the same road as a
 * fiber spawned for w (its placed list, under w's offer lock, whose
 * release publishes f's saved context and fields to w). */
static void move_fiber(struct fib_runtime *rt, struct fib__fiber *f,
                       struct fib_runtime *w) {
  disown(rt, f);
  fib__group_send(w, f);
}

void fib__group_send_out(struct fib_runtime *rt) {
  struct fib__fiber *f = rt->outgoing;
  struct fib_runtime *w = rt->group->w[f->move_to - 1];
  rt->outgoing = NULL;
  f->move_to = 0;
  f->force_due = 0; /* the forced mode lets it run there first: the call
                       returns on the worker it asked for */
  move_fiber(rt, f, w);
}

int fib__group_force(struct fib_runtime *rt, struct fib__fiber *f) {
  if (!f->migratable || f->nomigrate)
    return 0;
  if (!f->force_due) { /* it is to run here once first */
    f->force_due = 1;
    return 0;
  }
  f->force_due = 0;
  const struct fib__group *g = rt->group;
  unsigned k = rt->worker + 1 + rt->force_next++ % (g->n - 1);
  move_fiber(rt, f, g->w[k % g->n]);
  return 1;
}

void fib__group_tend(struct fib_runtime *rt) {
  fib__bias_tend(rt);
  cancels_take(rt);
  inbox_drain(rt);
  if (rt->dead || __atomic_load_n(&rt->dead_in, __ATOMIC_RELAXED))
    fib__group_flush(rt);
  take_placed(rt);
  fib__post_take(rt);
  if (!__atomic_load_n(&rt->group->idle, __ATOMIC_RELAXED)) {
    /* Nobody idle to take what is on offer (a thief took half and got
     * busy): take it back, or it waits until some worker goes idle, which
     * fibers that wait for each other by yielding never let happen. */
    take_offer(rt, rt);
  } else if (!__atomic_load_n(&rt->offer_len, __ATOMIC_RELAXED)) {
    int due = offer_due(rt);
    if (due)
      offer(rt, due);
  }
}

int fib__group_turn(struct fib_runtime *rt) {
  /* What the loop would do at this turn, each test that of its step in
   * fib__group_tend or run_loop, every load relaxed: a look (anything
   * pushed that it misses is seen at the next turn, as the loop's own
   * relaxed looks would). Timers, I/O and the forced mode want the loop
   * itself, and so does worker 0 in a host's call (a bounded round, or
   * fib_run_join's look at its fiber; `hosted` is written by worker 0's
   * thread alone), and any worker once the run is over. */
  if (rt->timers.count || rt->io_waiting || rt->force_migrate ||
      (rt->worker == 0 && rt->group->hosted) ||
      __atomic_load_n(&rt->group->over, __ATOMIC_RELAXED) ||
      __atomic_load_n(&rt->inbox, __ATOMIC_RELAXED) ||
      __atomic_load_n(&rt->cancels, __ATOMIC_RELAXED) ||
      __atomic_load_n(&rt->dead_in, __ATOMIC_RELAXED) ||
      __atomic_load_n(&rt->placed_len, __ATOMIC_RELAXED) ||
      __atomic_load_n(&rt->posts, __ATOMIC_RELAXED) || rt->posts_held ||
      fib__bias_asked(rt))
    return 0;
  size_t offered = __atomic_load_n(&rt->offer_len, __ATOMIC_RELAXED);
  if (!__atomic_load_n(&rt->group->idle, __ATOMIC_RELAXED)) {
    if (offered) /* to take back */
      return 0;
  } else if (!offered && offer_due(rt)) {
    return 0; /* to offer */
  }
  rt->until_loop = FIB__GROUP_TURNS;
  return 1;
}

/* ---- idle */

/* Every fiber spawned so far has finished. Read `finished` everywhere
 * first, then `spawned`: a fiber counted finished was counted spawned
 * before (its spawn happened before its end, and these are acquire loads
 * of release stores), so the sums are equal only if none counted spawned
 * is still running; a fiber that ends between the two passes makes them
 * differ, and the check is simply made again at the next idle. */
static int all_finished(const struct fib__group *g) {
  size_t finished = 0, spawned = 0;
  for (unsigned i = 0; i < g->n; i++)
    finished += __atomic_load_n(&g->w[i]->finished, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < g->n; i++)
    spawned += __atomic_load_n(&g->w[i]->spawned, __ATOMIC_ACQUIRE);
  return finished == spawned;
}

/* Whether anything has come for an idle worker. */
static int work_came(const struct fib_runtime *rt) {
  return arrived(rt) || any_offer(rt->group) ||
         __atomic_load_n(&rt->placed_len, __ATOMIC_SEQ_CST) ||
         __atomic_load_n(&rt->group->over, __ATOMIC_SEQ_CST);
}

/* Nothing in any inbox, placed or offer list. */
static int nothing_queued(const struct fib__group *g) {
  for (unsigned i = 0; i < g->n; i++)
    if (arrived(g->w[i]) ||
        __atomic_load_n(&g->w[i]->placed_len, __ATOMIC_SEQ_CST))
      return 0;
  return !any_offer(g);
}

/* Nothing anywhere for anyone (the deadlock census, under g->lock). */
static int all_quiet(const struct fib__group *g) {
  for (unsigned i = 0; i < g->n; i++)
    if (arrived(g->w[i]) ||
        __atomic_load_n(&g->w[i]->placed_len, __ATOMIC_SEQ_CST) ||
        /* posted to: more may come from another thread, no deadlock */
        __atomic_load_n(&g->w[i]->posted, __ATOMIC_SEQ_CST))
      return 0;
  return !any_offer(g);
}

static int any_posted(const struct fib__group *g) {
  for (unsigned i = 0; i < g->n; i++)
    if (__atomic_load_n(&g->w[i]->posted, __ATOMIC_SEQ_CST))
      return 1;
  return 0;
}

/* What a census under g->lock decides for a sleep that no deadline and
 * no I/O would end (idle_sleep). */
enum {
  CENSUS_SLEEP = 1,   /* sleep; else return: nothing can come */
  CENSUS_COUNTED = 2, /* counted in g->blocked: uncounted after the sleep */
  CENSUS_WAKE_0 = 4   /* wake worker 0's call, asleep: it decides */
};

/* A worker's census: it blocks; the last to block ends the run with
 * FIB_EDEADLK if nothing can come, or, while the threads serve a host's
 * calls, has worker 0 decide (its call is asleep, counted). */
static int worker_census(struct fib_runtime *rt, int unused) {
  (void)unused;
  struct fib__group *g = rt->group;
  int c = CENSUS_SLEEP | CENSUS_COUNTED;
  if (++g->blocked == g->n) {
    if (g->hosted) /* worker 0 is asleep in a call: it decides */
      c |= nothing_queued(g) ? CENSUS_WAKE_0 : 0;
    else if (all_quiet(g) && !all_finished(g))
      end_run(g, FIB_EDEADLK);
  }
  return c;
}

/* Worker 0's in a host's call (`how`, FIB__HOST_*): nothing can come if
 * every fiber has finished, or it is the last to block with nothing
 * queued and (for fib_run_join) nothing posted. Under the lock, as a
 * finisher's idle looks at the counts and the last worker to block at
 * `blocked`: whichever comes second sees the other (and wakes this call,
 * announced, if it comes second). */
static int host_census(struct fib_runtime *rt, int how) {
  struct fib__group *g = rt->group;
  if (all_finished(g))
    return 0;
  if (++g->blocked == g->n && nothing_queued(g) &&
      !(how == FIB__HOST_JOIN && any_posted(g))) {
    g->blocked--; /* every worker waits for the program */
    return 0;
  }
  return CENSUS_SLEEP | CENSUS_COUNTED;
}

/* The sleep of an idle worker, or of worker 0 in a host's call: announce
 * it, look once more (workers.h: the sleeper's half of the pair), and
 * sleep until rt's earliest deadline or a wake-up. A sleep with neither a
 * deadline nor I/O to wait for is blocked: `census` (under g->lock, with
 * `arg`) counts it and says whether to sleep at all. 0 if it said not
 * to, else 1. */
static int idle_sleep(struct fib_runtime *rt,
                      int (*census)(struct fib_runtime *rt, int arg),
                      int arg) {
  struct fib__group *g = rt->group;
  int slept = 1;
  int how = sleep_announce(rt);
  if (!work_came(rt)) {
    const struct fib__timer *first = fib__timers_first(&rt->timers);
    uint64_t deadline = first ? first->deadline : FIB__NO_DEADLINE;
    int c = CENSUS_SLEEP;
    if (deadline == FIB__NO_DEADLINE && !rt->io_waiting) {
      pthread_mutex_lock(&g->lock);
      c = census(rt, arg);
      pthread_mutex_unlock(&g->lock);
      if ((c & CENSUS_WAKE_0) && wakeable(g->w[0]))
        wake_worker(g->w[0]);
    }
    if (c & CENSUS_SLEEP)
      sleep_wait(rt, how, deadline);
    else
      slept = 0;
    if (c & CENSUS_COUNTED) {
      pthread_mutex_lock(&g->lock);
      g->blocked--;
      pthread_mutex_unlock(&g->lock);
    }
  }
  sleep_end(rt, how);
  return slept;
}

int fib__group_idle(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  /* `|`: a note's wake-up lands in the run queue only with the inbox */
  if (cancels_take(rt) | inbox_drain(rt) || take_placed(rt) || steal(rt))
    return 1;
  /* Posts, new or held back from a batch (post.c): held ones too, or a
   * worker whose batch the others took could sleep with posts held and
   * every fiber they started waiting for a later one. */
  if (rt->posts_held || __atomic_load_n(&rt->posts, __ATOMIC_RELAXED)) {
    fib__post_take(rt);
    return 1;
  }
  if (__atomic_load_n(&g->over, __ATOMIC_ACQUIRE))
    return 0;
  if (all_finished(g)) {
    pthread_mutex_lock(&g->lock);
    int hosted = g->hosted;
    /* Counted again under the lock before the run is ended: the counts
     * above may be older than a host's spawns between bounded calls and
     * its fib_run that took the workers over (hosted to 0 under this
     * lock, after those spawns), and would end that run with its fibers
     * still to run. */
    if (!hosted && !__atomic_load_n(&g->over, __ATOMIC_ACQUIRE) &&
        all_finished(g))
      end_run(g, 0);
    int over = __atomic_load_n(&g->over, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&g->lock);
    if (over)
      return 0;
    /* Serving bounded calls: the host may spawn more. A call asleep on
     * worker 0 returns (only a call's sleep: a host between calls,
     * FIB__PARKED_HOST, has nothing to learn from it); this worker
     * sleeps until there is work. Not hosted: fibers came since the
     * first count, idle as any worker. */
    if (hosted && wakeable(g->w[0]))
      wake_worker(g->w[0]);
  }
  /* Idle: busy workers offer fibers from now on. Spin a little first:
   * work often comes within microseconds (a child offered, a joiner
   * readied), sooner than a futex sleep and wake-up would take. Every
   * FIB__SPIN_BEFORE_YIELD looks the spinner gives its CPU away once
   * (spin.h): on a machine with more runnable threads than CPUs the work
   * it waits for is often a thread that waits for that CPU (the other
   * side of a channel hand-off), and a spin that keeps the CPU for its
   * whole length delays it by as much; with a CPU to spare, sched_yield
   * returns at once. */
  __atomic_fetch_add(&g->idle, 1, __ATOMIC_SEQ_CST);
  for (unsigned i = 1; i <= FIB__WORKER_SPINS; i++) {
    if (work_came(rt))
      goto found;
    fib__spin_step(i);
  }
  (void)idle_sleep(rt, worker_census, 0);
found:
  __atomic_fetch_sub(&g->idle, 1, __ATOMIC_SEQ_CST);
  rt->offer_look_ns = fib_now_ns(); /* busy again: slow_turns' window */
  return 1;
}

/* ---- a run */

static void *thread_main(void *arg) {
  struct fib_runtime *w = arg;
  struct fib__group *g = w->group;
  fib__placement_enter(&g->place, w->worker); /* a CPU of its own */
  int err = g->worker_main(w);
  if (err && err != g->result) { /* it could not start: end the run */
    pthread_mutex_lock(&g->lock);
    end_run(g, err);
    pthread_mutex_unlock(&g->lock);
  }
  return NULL;
}

static void join_threads(struct fib__group *g) {
  for (unsigned i = 1; i < g->threads_up; i++)
    pthread_join(g->threads[i], NULL);
  g->threads_up = 0;
}

/* Start workers 1..n-1 on threads of their own, for a run (hosted 0: it
 * ends when every fiber has finished, or in a deadlock) or for bounded
 * calls (1: they run until stopped). 0, or FIB_ENOMEM: none runs. */
static int start_threads(struct fib__group *g, int hosted) {
  g->result = 0;
  g->blocked = 0;
  g->hosted = hosted; /* no thread reads it yet */
  __atomic_store_n(&g->over, !hosted && all_finished(g), __ATOMIC_SEQ_CST);
  unsigned up = 1;
  fib__placement_plan(&g->place); /* each on a CPU of its own at first */
  while (up < g->n &&
         pthread_create(&g->threads[up], NULL, thread_main, g->w[up]) == 0)
    up++;
  g->threads_up = up;
  if (up == g->n)
    return 0;
  pthread_mutex_lock(&g->lock);
  end_run(g, FIB_ENOMEM);
  pthread_mutex_unlock(&g->lock);
  join_threads(g);
  return FIB_ENOMEM;
}

int fib__group_run(struct fib_runtime *rt,
                   int (*worker_main)(struct fib_runtime *w)) {
  struct fib__group *g = rt->group;
  if (g->threads_up) {
    /* Bounded calls left them running: this run takes them over and ends
     * as any run does (under the lock: their idle reads it there). */
    pthread_mutex_lock(&g->lock);
    g->hosted = 0;
    pthread_mutex_unlock(&g->lock);
  } else {
    g->worker_main = worker_main; /* no thread reads it yet */
    int err = start_threads(g, 0);
    if (err)
      return err;
  }
  int mine = worker_main(rt);
  join_threads(g);
  return mine ? mine : g->result;
}

int fib__group_host(struct fib_runtime *rt,
                    int (*worker_main)(struct fib_runtime *w)) {
  struct fib__group *g = rt->group;
  if (g->threads_up) {
    /* acquire: end_run's result */
    if (!__atomic_load_n(&g->over, __ATOMIC_ACQUIRE))
      return 0;
    int err = fib__group_host_take_error(rt);
    if (err)
      return err;
  }
  g->worker_main = worker_main;
  return start_threads(g, 1);
}

int fib__group_host_take_error(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  if (g->threads_up)
    join_threads(g); /* after their last read of the result */
  int err = g->result;
  g->result = 0;
  return err;
}

/* A number for the calling thread that no other thread gets, even once
 * this one has exited (a pthread_t may be reused). */
static uint64_t thread_token(void) {
  static uint64_t last;
  static FIB__TLS uint64_t mine;
  if (!mine)
    mine = __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
  return mine;
}

void fib__host_leave(struct fib_runtime *rt) {
  /* The eventfd the host waits on, or one in the epoll set it waits on */
  int (*wake_fd)(void) = rt->io_host_wake_fd ? rt->io_host_wake_fd
                                             : rt->io_wake_fd;
  if (!wake_fd)
    return;
  int fd = wake_fd();
  if (fd < 0)
    return;
  /* Announced with a descriptor of the runtime's own for the same
   * eventfd, made once per host thread and source (a thread's poller and
   * ring, and so their eventfds, last as long as the thread; the source
   * changes when the ring comes): a waker may write it long after this
   * call, when the thread may have exited and its poller closed its
   * descriptor, whose number the program may have been given again.
   * Closing the last one is safe here: nobody is announced on it (the
   * call's start ended that). Without a descriptor (EMFILE) the host is
   * not announced, as a thread with no I/O is not. */
  uint64_t me = thread_token();
  if (rt->host_wake_fd < 0 || rt->host_wake_thread != me ||
      rt->host_wake_src != fd) {
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
      return;
    if (rt->host_wake_fd >= 0)
      close(rt->host_wake_fd);
    rt->host_wake_fd = own;
    rt->host_wake_thread = me;
    rt->host_wake_src = fd;
  }
  rt->wake_fd = rt->host_wake_fd; /* no waker reads it until the exchange
                                     below */
  /* seq_cst, an exchange: the store half of the pair with a waker's push
   * and load of `parked` (sleep_announce); the host's look after it
   * (fib_runtime_next_ns) is the load half */
  (void)__atomic_exchange_n(&rt->parked, FIB__PARKED_HOST, __ATOMIC_SEQ_CST);
  rt->host_parked = 1;
}

void fib__host_enter_slow(struct fib_runtime *rt) {
  rt->host_parked = 0;
  sleep_end(rt, FIB__PARKED_HOST);
}

void fib__host_close(struct fib_runtime *rt) {
  fib__host_enter(rt); /* no waker writes the descriptor from here on */
  if (rt->host_wake_fd >= 0)
    close(rt->host_wake_fd);
  rt->host_wake_fd = -1;
}

void fib__runtime_wake_host(struct fib_runtime *rt) {
  /* seq_cst, as wake_worker's own load: after the caller's push */
  if (__atomic_load_n(&rt->parked, __ATOMIC_SEQ_CST) == FIB__PARKED_HOST)
    wake_worker(rt);
}

void fib__group_host_enter(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  uintptr_t me = (uintptr_t)pthread_self();
  /* relaxed: only host threads store it, and this one is the last, or
   * another whose store is ordered before this call by the program */
  if (__atomic_load_n(&g->host_thread, __ATOMIC_RELAXED) != me) {
    /* the pair with host_push: an exchange, then the load (an exchange
     * too: it takes the mark) */
    (void)__atomic_exchange_n(&g->host_thread, me, __ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&g->host_pushed, 0, __ATOMIC_SEQ_CST))
      __atomic_store_n(&g->w[0]->posted, 1, __ATOMIC_SEQ_CST);
  }
  fib__host_enter(rt);
}

void fib__group_stop(struct fib_runtime *rt) {
  struct fib__group *g = rt->group;
  fib__group_host_enter(rt); /* end_run's wake-ups write no eventfd */
  if (!g->threads_up)
    return;
  pthread_mutex_lock(&g->lock);
  if (!__atomic_load_n(&g->over, __ATOMIC_ACQUIRE))
    end_run(g, 0);
  pthread_mutex_unlock(&g->lock);
  join_threads(g);
}

size_t fib__group_unfinished(const struct fib__group *g) {
  size_t finished = 0, spawned = 0; /* in all_finished's order */
  for (unsigned i = 0; i < g->n; i++)
    finished += __atomic_load_n(&g->w[i]->finished, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < g->n; i++)
    spawned += __atomic_load_n(&g->w[i]->spawned, __ATOMIC_ACQUIRE);
  return spawned - finished;
}

int fib__group_host_idle(struct fib_runtime *rt, int how) {
  struct fib__group *g = rt->group;
  if (inbox_drain(rt) || take_placed(rt) || steal(rt))
    return 2;
  if (rt->posts_held || __atomic_load_n(&rt->posts, __ATOMIC_RELAXED)) {
    fib__post_take(rt);
    return 2;
  }
  if (__atomic_load_n(&g->over, __ATOMIC_ACQUIRE))
    return -1;
  if (how == FIB__HOST_LOOK)
    return 0;
  /* fib__group_idle's sleep, without its spin (the host may wait), and
   * with worker 0's own census: it is the last to block, or the worker
   * that is wakes it (worker_census) */
  __atomic_fetch_add(&g->idle, 1, __ATOMIC_SEQ_CST);
  int r = idle_sleep(rt, host_census, how);
  __atomic_fetch_sub(&g->idle, 1, __ATOMIC_SEQ_CST);
  return r;
}
