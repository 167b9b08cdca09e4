/* SPDX-License-Identifier: MIT */
/*
 * workers.h -- a runtime with N workers (fib_runtime_opts.workers > 1).
 *
 * Each worker is today's one-thread scheduler (struct fib_runtime, fiber.h)
 * run by a thread of its own; worker 0 is the handle the program holds and
 * runs on the thread that calls fib_run. A one-worker runtime has no group
 * (rt->group == NULL) and none of this code runs for it.
 *
 * Ownership. Every fiber has one owner worker (fiber->rt). Only the owner's
 * thread touches the fiber's scheduling state (state, runq link, timer,
 * wake reason) and its own run queue and timer heap, without atomics, as
 * with one worker. What other workers may do to it:
 *
 *   - ready it (a child finished that it joins, fib_cancel, a hand-off
 *     of a shared primitive, a reply to its fib_call): they win its claim
 *     (below), set its wake reason and push it onto its owner's inbox (an
 *     atomic stack); the owner moves the inbox into its run queue at its
 *     next turn through its loop, or is woken if it sleeps;
 *   - take it, if it has never run and is not pinned, or if it has run,
 *     is migratable (FIB_MIGRATABLE, or the forced mode) and is not
 *     inside a guard (fib_nomigrate_begin, or an I/O wait): an owner puts
 *     such READY fibers on its offer list while another worker is idle
 *     (of those that have run, the partners readied to run next only if
 *     its hand-offs are slow: workers.c, offer_due),
 *     and an idle worker takes half of a list at a time (stealing). A
 *     fiber that never ran has no stack contents and has cached no
 *     thread-local address; one that has run asked to move, and keeps the
 *     TLS rule (fibers.h). Other fibers that have run never move unless
 *     they ask (below).
 *
 * Migration. A fiber's owner changes only while it is READY and switched
 * out, and only by a hand-over its old owner's thread makes (offer, or
 * the placed list below) under the receiving list's spin lock, whose
 * release publishes the fiber's saved context and fields; the new owner
 * sets nothing but adopts it at its next turn. So `rt` is written only
 * while nobody else may read it: a parked fiber (the one state in which
 * wakers on other threads find it) never moves, and a waker reads `rt`
 * only after it has won the claim. What moves with the fiber, and what
 * does not:
 *   - its owner (`rt`), and its share of the owners' counts: `owned` (the
 *     timer heap's reservation: the new owner reserves room before it
 *     takes the fiber), `unstarted`, `migratable` (disown/adopt in
 *     workers.c). `spawned` and `finished` stay where they were counted:
 *     the end of a run looks only at their sums;
 *   - not its timer: a READY fiber has none armed (heap entries are per
 *     worker), and a fiber that waits with a deadline is parked, so it
 *     does not move;
 *   - not its id: the id's home worker (ids) never changes;
 *   - compact fibers never move (their frames belong at their thread's
 *     shared stack): they are pinned and never migratable, and fib_move_to
 *     refuses them;
 *   - an I/O wait's records (the poller's, the ring's, the offload port)
 *     are its worker's thread's: the wait holds the fiber's guard
 *     (`nomigrate`) from before it parks until it is done.
 * Explicit moves (fib_move_to): the fiber marks itself (move_to),
 * switches away to its loop (never straight to another fiber) through
 * rt->outgoing, and the loop, off its stack, hands it to the target's
 * placed list. It holds its guard (`nomigrate`) on the way, until it runs
 * on the target: a migratable fiber READY there would otherwise be
 * offered on (to the worker it left, idle now) before the call returned
 * there. The forced mode (FIBERS_FORCE_MIGRATE): every dispatch
 * goes through the loop (no direct hand-off), and the loop sends a
 * migratable fiber that has run on it since it last moved to the next
 * worker in turn instead of running it (fib__group_force), so every turn
 * it gives way or waits ends with a move where the guard allows.
 *
 * The claim. One parked fiber may have several would-be wakers on several
 * threads: its owner's timer, a canceller, the child it joins. Exactly one
 * wins: a parked fiber's `claim` word is FIB__CLAIM_ANY (a completer, a
 * deadline or a cancel may wake it) or FIB__CLAIM_COMPLETE (only a
 * completer: an uncancellable park), or FIB__CLAIM_JOIN in fib_join
 * (its claim is then its child's join word, below), armed by the fiber
 * itself before it can be found by a waker on another thread (before it
 * sets a joiner slot) and before it checks for a cancel; a waker takes it
 * with a CAS to FIB__CLAIM_NONE (or of the join word) and only the
 * winner readies the fiber. A loser leaves it
 * alone: the winner's wake-up is on its way (a timer that loses is simply
 * dropped). The cancel check is a Dekker pair: the fiber stores its claim
 * then loads `cancelled`; fib_cancel stores `cancelled` then CASes the
 * claim; both sequentially consistent, so at least one of them sees the
 * other, and the CAS decides who acts.
 *
 * Sleep and wake-up of a worker. A worker with nothing to run announces
 * itself idle (group->idle, which busy workers read, relaxed, at least
 * every FIB__GROUP_TURNS hand-offs (fib__group_turn), to decide whether to
 * offer fibers), spins a little looking for work, then announces how it
 * is about to sleep in `parked` (FIB__PARKED_*, below), looks once more
 * at its inbox and at every offer list, and only then sleeps, until its
 * earliest deadline: on the futex word `parked` if none of its fibers
 * waits on I/O, else in its I/O poller (epoll_wait, or the io_uring wait,
 * which watches the thread's epoll set). A waker pushes first, then loads
 * `parked`; seq_cst on both sides, so either the sleeper sees the push or
 * the waker sees it asleep. The waker then wakes it the way it sleeps,
 * once per sleep: it takes the sleep with a CAS (a second waker's CAS
 * fails) and does a FUTEX_WAKE, or writes the eventfd that sits in the
 * sleeper's epoll set (the poller's wake-up fd, poller.h, Go's
 * netpollBreak). The eventfd is written only for a sleep that announced
 * it, at most once per sleep, and the sleeper reads it back to 0 before
 * the sleep ends: it is never written on the busy path, and never left
 * readable to wake a later poll. A one-worker runtime that has been
 * posted to (post.c) sleeps and is woken the same way, as worker 0 of a
 * group is for posts. The same protocol for either: fib__runtime_sleep,
 * fib__group_idle.
 *
 * The eventfd belongs to the sleeper's thread's poller and is made at its
 * first sleep in the poller with wake-ups possible from elsewhere (a
 * worker of a group, a runtime posted to): a one-worker runtime that is
 * never posted to has none. If it cannot be made (EMFILE), the sleeper
 * naps in its poller instead, FIB__WORKER_IO_NAP_NS at a time
 * (FIB__PARKED_NAP: wakers leave it alone, and it looks again after each
 * nap), and tries to make it again at its next sleep.
 *
 * A waker of a poller sleep writes the eventfd between its CAS (POLLER to
 * WAKING) and its store of AWAKE; a sleeper that finds its sleep taken
 * waits for that store before it reads the eventfd and goes on, so no
 * write is in flight once the sleep is over: the eventfd, which closes
 * with the poller at the thread's exit, is never written after.
 *
 * The join word. In a multi-worker runtime a fiber's `joiner` field is a
 * word that its joiner, fib_detach and its own finish meet in, without a
 * lock (FIB__JOIN_*, below): NULL (it runs, nobody waits), a joiner
 * (parked on it), ENDING (its finisher ends that join: below), DETACHED,
 * DONE (finished, joinable) or GONE (collected, or being collected by its
 * joiner: lookups find nothing). A joiner
 * parked on it has no claim of its own: its `claim` says FIB__CLAIM_JOIN
 * and `joining` names the fiber it joins, whose join word is its claim:
 * whoever moves the word from the joiner's address to something else is
 * its one waker. The finisher moves NULL to DONE, or the joiner to GONE
 * (the joiner is then parked and ours, and the finisher touches the
 * record no more, unless the joiner waits with no frame: then the
 * finisher completes its join, fiber.h's FIB__JOIN_TAIL, and collects
 * the record itself); the joiner's deadline or a cancel moves it back to
 * NULL (fib__join_take: the child goes on, joinable) and wakes the joiner
 * with its reason. Whoever collects a DONE record (a later join, a
 * detach) first takes it to GONE with a CAS, so of two that find it DONE
 * one does. A joiner writes itself in, and fib_detach writes DETACHED,
 * after a lookup that keeps the record from being freed under them (Ids,
 * below); the finisher needs no lock (a detached one collects its own
 * record).
 *
 * Only the joiner's owner's thread takes a joiner out of the word
 * (fib__join_take: its deadline, its own cancel check, and a cancel
 * carried to it, below), and the joiner's claim names that owner while it
 * waits (fib__claim_join: armed on its thread before it writes itself
 * into the word, and set back to NONE by whoever wakes it, before it can
 * run or move). Failed CASes of other joins and detaches write nothing.
 * The owner reads the joiner's `joining` and CASes the word of the record
 * it names without a lock: a joiner whose claim still names its join has
 * not run since it parked, so the record is the one it joins; and the
 * owner counts itself in `cancels_out` meanwhile (below), as that record
 * may be collected by someone else all the same (its finisher collects it
 * for a joiner with no frame, or leaves it joinable by anyone when the
 * joiner was cancelled), but not freed.
 *
 * The finisher touches nothing of a joiner it has read from the word
 * before it knows the joiner is still there: its owner may have taken it
 * out meanwhile, and it may have run, finished and been freed. The
 * target's `join_from` tells it, in its own record: a joiner writes its
 * worker there (fib__join_from) before it writes itself into the word,
 * and writes 0 there after a CAS that failed; its owner's taker writes 0
 * there before its CAS. So every write of worker w's mark comes from w's
 * thread, and each is followed on that thread by a 0 unless the joiner
 * that wrote it is still in the word. A finisher on w that reads its own
 * mark (after the word, whose load acquires the joiner's writes) read
 * the last write of its own thread, not followed by a 0: the joiner it
 * read from the word waits on w, alive, and nobody else may move the
 * word, so it stores GONE with a plain (release) store, no locked
 * instruction. Any other mark (another worker, 0 for a worker past 254)
 * and it takes the word with a CAS first, against that worker's deadline
 * or cancel, to ENDING (a winner that has not yet decided: lookups take
 * it for a joiner still there), and reads the joiner only once the CAS
 * has won it (parked, and ours).
 *
 * A cancel from another thread (fib_cancel) that finds the claim naming a
 * join on another worker cannot move the word itself: it leaves a note
 * naming the fiber on that worker's `cancels` stack (allocated per such
 * cancel: FIB_ENOMEM if it cannot be) and wakes it; the owner, at its next
 * turn, takes the fiber out of its join if its claim still names a join
 * on it and it is cancelled (the flag, stored before the note was pushed,
 * is sticky: a fiber that left that join and parks in another one here is
 * rightly cancelled there; a record reused by a fiber nobody cancelled is
 * left alone). Meanwhile the finisher of the fiber it joins, reading the
 * flag, ends the join with FIB_ECANCELED itself (group_finish: the word
 * to DONE, the rare path), so a finish after the cancel never beats the
 * note. The note keeps the record from being freed until the owner
 * has read it: the group counts notes in flight (`cancels_out`, raised
 * under the fiber's home's lookup, which keeps the record in its map),
 * and takes under way (fib__join_take, for the record it joins), and a
 * worker gives spare records beyond a cap back to malloc only when the
 * count is 0 (fib__group_flush). Every store into a join word and into a claim is
 * atomic (spawn's too).
 *
 * The end of a run: an idle worker that finds every fiber spawned so far
 * finished (each worker counts what it spawned and what finished on it)
 * sets `over` and wakes every worker. A deadlock: every worker asleep with
 * no timer, no I/O wait, nothing in any inbox, offer or placed list, no
 * post possible (posted), while fibers remain (the census under
 * group->lock); the last to fall asleep ends the run with FIB_EDEADLK.
 * `posted` says that a thread outside the group may still push or post:
 * set by a post, a fiber's fib_call, and a push onto an inbox from such
 * a thread. Not by the host's own thread between its calls (host_thread
 * below): during the run that the census is for, it is inside a call,
 * and can push nothing more. If the next call comes from another thread,
 * what the old host pushed counts as any thread's from then on (that
 * thread is outside now, and may push again): host_pushed carries it to
 * worker 0's `posted`.
 *
 * Ids: worker k hands out ids whose low words are k + 1, k + 1 + s,
 * k + 1 + 2s, ... (s the power of two at or above n; its map's slots 0,
 * 1, 2, ..., each with a generation in the high word: idmap.h) from its
 * own id map, so the worker whose map holds an id (its home) is
 * (low word - 1) & (s - 1), found without a lock and without a shared
 * counter. Only the home's thread writes its map: it
 * puts without a lock (a spawn), and grows the table and forgets ids
 * under its ids_lock; other workers look up in it under that lock. So
 * the home looks up its own ids without the lock (nobody else changes
 * its map, nor frees a record it holds), and a record that another
 * worker finds under the lock is not freed before it lets go. A record
 * collected (joined, or detached and finished, anywhere) is marked GONE
 * in its join word and handed to its home (its dead list, or from
 * another worker its dead_in stack), which forgets a batch of them under
 * one lock and only then reuses them (fib__group_flush): the spawn, the
 * join and the collect of a fiber on its home worker take no lock.
 */
#ifndef FIB__SCHED_WORKERS_H
#define FIB__SCHED_WORKERS_H

#include "fiber.h"
#include "placement.h"
#include "spin.h"

#include <pthread.h>
#include <stdint.h>

/* fiber->claim */
enum {
  FIB__CLAIM_NONE = 0,     /* not parked, or its waker is chosen */
  FIB__CLAIM_ANY = 1,      /* parked: completer, deadline or cancel */
  FIB__CLAIM_COMPLETE = 2, /* parked uncancellably: its completer only */
  FIB__CLAIM_JOIN = 3      /* in fib_join: the claim is the join word of
                              `joining` (the join word, above); the owner
                              worker's index above the two low bits
                              (fib__claim_join) */
};

/* The claim of a fiber waiting in fib_join on worker `w` (its owner while
 * it waits: a parked fiber does not move). */
static inline int fib__claim_join(unsigned w) {
  return (int)(FIB__CLAIM_JOIN | (w << 2));
}

static inline int fib__claim_is_join(int c) {
  return (c & 3) == FIB__CLAIM_JOIN;
}

/* A joiner's mark in its target's `join_from` (the join word, above):
 * its worker `w` plus one, or 0 where that does not fit (a finisher then
 * takes the slow road). */
static inline unsigned char fib__join_from(unsigned w) {
  return w < 255 ? (unsigned char)(w + 1) : 0;
}

/* fiber->joiner in a multi-worker runtime: the join word (above); else a
 * joiner's address or NULL. Tags below any record's address. */
#define FIB__JOIN_DONE ((struct fib__fiber *)1)
#define FIB__JOIN_DETACHED ((struct fib__fiber *)2)
#define FIB__JOIN_ENDING ((struct fib__fiber *)3) /* its finisher has won a
                                    joiner on another worker and ends the
                                    join (group_finish): still joined */
#define FIB__JOIN_GONE ((struct fib__fiber *)4) /* collected: the record
                                    waits in its home's dead list, looked
                                    up as if it were not there */

/* How many collected records a worker keeps before it forgets them. */
#define FIB__DEAD_BATCH 32u

/* A worker's spare records (fiber.h) past which its flush gives all but
 * FIB__SPARE_MAX back to malloc, when no cancel note is in flight (the
 * join word, above): rarely, and in one batch. */
#define FIB__GROUP_SPARE_TRIM (4 * FIB__SPARE_MAX)

/* Forget the ids of the records collected for rt and keep the records
 * (rt's thread). */
void fib__group_flush(struct fib_runtime *rt);

/* fib__group_collect for a home that is not the caller's worker. */
void fib__group_collect_far(struct fib_runtime *home, struct fib__fiber *f);

/* f, FINISHED and now nobody's (joined, or detached), whose join word
 * the caller has made GONE, and whose id's home is `home`, is collected
 * by a thread whose worker is `here` (NULL: none of the group's): to its
 * home, which forgets its id and reuses the record at its next flush.
 * The home's own half inline: on every join. */
static inline __attribute__((always_inline)) void
fib__group_collect(struct fib_runtime *home, const struct fib_runtime *here,
                   struct fib__fiber *f) {
  if (home != here) {
    fib__group_collect_far(home, f);
    return;
  }
  f->runq.next = (struct fib__runq_node *)(void *)home->dead;
  home->dead = f;
  if (++home->dead_count >= FIB__DEAD_BATCH)
    fib__group_flush(home);
}

/* fib_runtime.parked: whether and how a worker (or a runtime that has
 * been posted to) sleeps, and so how it is woken. */
enum {
  FIB__PARKED_AWAKE = 0,  /* running or looking for work: wake nothing */
  FIB__PARKED_FUTEX = 1,  /* on the futex word `parked` (so this value is
                             the one FUTEX_WAIT compares): FUTEX_WAKE */
  FIB__PARKED_POLLER = 2, /* in its poller: write its wake_fd */
  FIB__PARKED_WAKING = 3, /* a waker took the poller sleep and writes the
                             eventfd; it stores AWAKE once written */
  FIB__PARKED_NAP = 4,    /* in its poller without a wake-up fd (it could
                             not be made): back within
                             FIB__WORKER_IO_NAP_NS, wakers leave it be */
  FIB__PARKED_HOST = 5    /* a one-worker runtime or worker 0 between a
                             host's calls, the host perhaps blocked in its
                             own wait on fib_runtime_io_fd
                             (fib__host_leave): a waker writes
                             its wake_fd as for POLLER (the poller's
                             eventfd, in the epoll set the host watches;
                             on io_uring the host's own eventfd,
                             io_host_wake_fd); never chosen to take
                             offers (wake_one_idle) */
};

/* How long a sleeper without a wake-up fd naps in its poller at a time;
 * also how soon a runtime whose posts could not be spawned tries again. */
#define FIB__WORKER_IO_NAP_NS 1000000u

/* Hand-offs a worker's fibers make among themselves before it goes back
 * to its loop (fib__group_tend): how long a fiber readied from another
 * worker, or an idle worker, may wait for it. */
#define FIB__GROUP_TURNS 64u

/* How long a turn of a worker's hand-offs (at most FIB__GROUP_TURNS of
 * them) must have taken before it offers the fibers at the front of its
 * run queue that have run (workers.c, offer_due): ~8 us a hand-off. */
#define FIB__GROUP_SLOW_NS 500000u

/* How many times an idle worker looks for work before it sleeps: with a
 * pause between looks, some tens of microseconds. */
#define FIB__WORKER_SPINS 2000u

struct fib__group {
  unsigned n;             /* workers */
  uint32_t home_mask;     /* the ids' stride (a power of two >= n) - 1 */
  struct fib_runtime **w; /* w[0] is the handle; each its own record;
                             then up to home_mask + 1 entries, all w[0]:
                             the home of an id that names no worker */
  pthread_t *threads;     /* w[1..n-1]'s threads during a run */
  int (*worker_main)(struct fib_runtime *w); /* what they run (sched.c):
                             enter, loop, leave; 0 or why it could not */
  unsigned idle;          /* workers looking for work or asleep (atomic) */
  int over;               /* the run has ended (atomic) */
  unsigned cancels_out;   /* cancel notes pushed and not yet read by
                             their worker, and takes out of a join word
                             under way (atomic; the join word above):
                             while any, no spare record is freed */
  pthread_mutex_t lock;   /* guards what follows */
  unsigned blocked;       /* asleep with no deadline and no I/O */
  int result;             /* the run's result, once over */
  int hosted;             /* the threads serve bounded calls (the host,
                             below): an idle worker that finds every
                             fiber finished, or the census that finds
                             every worker blocked, wakes worker 0 instead
                             of ending the run */
  unsigned threads_up;    /* w[1..threads_up-1] have threads, 0 if none
                             (worker 0's thread only: the host's) */
  uintptr_t host_thread;  /* the thread (pthread_self) that made the last
                             call on worker 0, 0 before any (atomic):
                             its pushes mark no worker posted */
  int host_pushed;        /* host_thread pushed onto an inbox between its
                             calls (atomic): posted, if the next call's
                             thread is another */
  struct fib__placement place; /* where w[1..n-1]'s threads start
                             (placement.h): planned by the thread that
                             starts them, before it does */
};

/* The worker whose id map holds `id` (see Ids above): a mask, as the
 * stride is a power of two (no division or multiplication on every
 * join). An id whose low bits name no worker (a stride above n) goes to
 * w[0], whose map does not hold it: the lookup finds nothing. */
static inline struct fib_runtime *fib__id_home(const struct fib_runtime *rt,
                                               fib_id id) {
  const struct fib__group *g = rt->group;
  return g->w[((uint32_t)id - 1u) & g->home_mask];
}

/* fib__group_collect by worker rt's thread of f, its home found from
 * its id: rt's own map's class first (a finish on the worker that
 * spawned it, the usual case), with no look through the group. */
static inline __attribute__((always_inline)) void
fib__group_collect_here(struct fib_runtime *rt, struct fib__fiber *f) {
  if (fib__idmap_class(&rt->fibers, f->id))
    fib__group_collect(rt, rt, f);
  else
    fib__group_collect_far(fib__id_home(rt, f->id), f);
}

/* How many multi-worker runtimes exist (atomic): primitives initialised
 * while there is one are shared (src/sync/storage.h). */
extern unsigned fib__group_live;

/* ---- creation (sched.c's fib_runtime_create / destroy) */

/* Make rt (worker 0, already set up as a one-worker runtime) the handle of
 * a group of n workers. 0 or FIB_ENOMEM (rt unchanged). */
int fib__group_create(struct fib_runtime *rt, unsigned n);

/* Free the group and workers 1..n-1 (their fibers are already freed). */
void fib__group_free(struct fib_runtime *rt);

/* ---- a run */

/* fib_run of a group: start workers 1..n-1 on threads of their own, run
 * worker 0 here, wait for them. Returns 0 or FIB_EDEADLK, or an error
 * from starting the threads (FIB_ENOMEM; nothing ran then). */
int fib__group_run(struct fib_runtime *rt,
                   int (*loop)(struct fib_runtime *w));

/* The host: a program that runs a group with fib_run_once,
 * fib_run_nowait and fib_run_join. Its thread is worker 0 during each
 * call (and owns worker 0 between calls, as a worker's thread does);
 * workers 1..n-1 run on threads that the first such call starts and that
 * go on running their fibers between calls, until fib_run takes them
 * over (and joins them when its run ends) or fib_runtime_destroy stops
 * them. Between calls worker 0 is nobody's sleeper: what other workers
 * push for it waits in its inbox and lists for the next call. */

/* Start workers 1..n-1 for bounded calls if they are not running. 0; or
 * the error that stopped them since the last call (reported once; the
 * next call starts them again), or FIB_ENOMEM (none started). */
int fib__group_host(struct fib_runtime *rt,
                    int (*loop)(struct fib_runtime *w));

/* The workers were stopped (fib__group_host_idle's -1) and the caller
 * reports why now: join their threads and take the error (0 if none), so
 * that the next call starts them again instead of reporting it twice. */
int fib__group_host_take_error(struct fib_runtime *rt);

/* fib_runtime_destroy: stop workers 1..n-1 if they run between bounded
 * calls, once each is back in its loop (a fiber that never gives way
 * holds its worker, and so this call, until it does), and join them. */
void fib__group_stop(struct fib_runtime *rt);

/* What worker 0 does with nothing ready in a bounded call or
 * fib_run_join (`how`): */
enum {
  FIB__HOST_LOOK = 0, /* take what is there for it (inbox, placed, posts,
                         offers), never sleep */
  FIB__HOST_ONCE = 1, /* that, else sleep until its earliest deadline, an
                         I/O event or work for it; give up once nothing
                         can come (every fiber finished, or every worker
                         blocked with nothing queued anywhere) */
  FIB__HOST_JOIN = 2  /* as ONCE, but a runtime that has been posted to
                         waits on (a post or a reply may still come) */
};

/* 2: work was taken (it may have gone on to another worker meanwhile:
 * a post's fiber offered, a fiber following its waker); 1: it slept, go
 * round the loop again; 0: nothing came and (but for LOOK) nothing can;
 * -1: the workers were stopped (an error, reported by the next call). */
int fib__group_host_idle(struct fib_runtime *rt, int how);

/* The start of a host's call on a group (or of fib_run, fib_run_join,
 * or destroy): fib__host_enter, and note the calling thread as the
 * host's (host_thread). */
void fib__group_host_enter(struct fib_runtime *rt);

/* Fibers spawned and not yet finished, over every worker (an over-count
 * while some finish meanwhile). */
size_t fib__group_unfinished(const struct fib__group *g);

/* Count a fiber spawned or finished on rt (its own counters: no shared
 * line is written per spawn; release, for all_finished in workers.c). */
static inline void fib__group_count(size_t *counter) {
  __atomic_store_n(counter, *counter + 1, __ATOMIC_RELEASE);
}

/* The run loop found nothing ready on worker rt: take the inbox, steal,
 * or sleep (until the earliest deadline, I/O or a wake-up). 1: go round
 * again; 0: the run is over. */
int fib__group_idle(struct fib_runtime *rt);

/* A fiber spawned on rt for worker w (fib_attr.worker), never run, or a
 * READY fiber that moves to w (switched out, already disowned by its old
 * owner): to w's `placed` list, which w moves into its run queue at its
 * next turn. */
void fib__group_send(struct fib_runtime *w, struct fib__fiber *f);

/* A fiber in fib_move_to has switched away to rt's loop (rt->outgoing):
 * hand it to the worker it asked for. */
void fib__group_send_out(struct fib_runtime *rt);

/* The forced mode (rt->force_migrate): the loop is about to run f. 1 if
 * f went to another worker instead (it is migratable, not in a guard, and
 * has run here since it last moved); 0: run it. */
int fib__group_force(struct fib_runtime *rt, struct fib__fiber *f);

/* FIBERS_FORCE_MIGRATE: 1 set to 1, 0 unset, empty or 0, -1 anything
 * else. */
int fib__group_force_env(void);

/* The loop's turn at a scheduling point: move the inbox into the run
 * queue, and offer fibers if a worker is idle. */
void fib__group_tend(struct fib_runtime *rt);

/* A hand-off between rt's fibers has used up the turns it may make
 * without going back to its loop (rt->until_loop is 0, no timer, no I/O).
 * If the loop would find nothing to do (nothing in the inbox, placed or
 * posted, nothing to offer or take back), start the next FIB__GROUP_TURNS
 * here and return 1: the hand-off goes on directly, without the two
 * switches through the loop; else 0, go to the loop. The caller is a
 * fiber about to switch away (the one running may be in the run queue
 * already): it only looks. */
int fib__group_turn(struct fib_runtime *rt);

/* fib__group_place's offer: f on rt's offer list, and a sleeper woken. */
void fib__group_offer_new(struct fib_runtime *rt, struct fib__fiber *f);

/* A fiber was spawned on rt (its owner), from one of its fibers when
 * `inside`: queue it, on the offer list if a worker is idle and f may
 * move, else as with one worker. `pinned` and `migratable` are f's
 * flags, as spawn has just stored them. Inline: on every spawn. */
static inline void fib__group_place(struct fib_runtime *rt,
                                    struct fib__fiber *f, int pinned,
                                    int migratable, int inside) {
  if (!pinned && !rt->unstarted &&
      __atomic_load_n(&rt->group->idle, __ATOMIC_RELAXED)) {
    /* Someone is idle and rt has no older fiber it could take instead:
     * help-first, the child goes where it can be taken. With older ones
     * queued (a tree: the siblings of every fiber on the path from the
     * root), the child goes first here and the loop offers the oldest
     * (fib__group_tend, extract_oldest), which are the bigger pieces. */
    fib__group_offer_new(rt, f);
    return;
  }
  /* adopt's counts (workers.c), for a fiber that has not started (its
   * flags as passed, not loaded back from the bytes just stored: a
   * store-forward stall on every spawn if loaded as one word) */
  rt->owned++;
  if (!pinned)
    rt->unstarted++;
  if (migratable)
    rt->migratable++;
  if (inside)
    fib__runq_push_front(&rt->runq, &f->runq);
  else
    fib__runq_push(&rt->runq, &f->runq);
}

/* ---- any runtime that may be woken from another thread (post.c) */

/* Take the posts (post.c): spawn a fiber for each. */
void fib__post_take(struct fib_runtime *rt);

/* fib_runtime_destroy of rt (the handle; its workers stopped, nobody
 * pushing): cancel the posts still queued (post.c: nodes freed, calls
 * answered with FIB_ECANCELED). Those whose fibers have started are
 * holds of theirs, given up with the other holds. */
void fib__post_discard_queued(struct fib_runtime *rt);

/* A one-worker runtime that has been posted to, at its loop: move its
 * inbox into its run queue, take its posts. */
void fib__runtime_tend(struct fib_runtime *rt);

/* Wake rt (a runtime, or a worker) if it sleeps, on its futex word or in
 * its poller. */
void fib__runtime_wake(struct fib_runtime *rt);

/* ---- a host between bounded calls (a one-worker runtime, or worker 0 of
 * several): its wait on fib_runtime_io_fd woken from other threads */

/* The end of a host's bounded call (fib_run_once, fib_run_nowait,
 * fib_run_join): if the thread has an I/O layer in use
 * (fib_runtime_io_fd was called, or the runtime's fibers did I/O),
 * announce FIB__PARKED_HOST, so that work other threads push for rt
 * until the next call (posts, its inbox, and for worker 0 of several its
 * cancel notes and placed fibers; offload jobs' ends) makes the
 * descriptor the host watches readable: the eventfd rt->io_host_wake_fd
 * names (io_uring), else the poller's wake-up eventfd, which is in the
 * epoll set (epoll). Written through rt->host_wake_fd, a dup of the
 * runtime's own. */
void fib__host_leave(struct fib_runtime *rt);

void fib__host_enter_slow(struct fib_runtime *rt);

/* The start of any call on rt, and destroy: end that announcement, and
 * read the eventfd back to 0 if a waker wrote it. Inline: a call with
 * nothing announced pays a load and a branch. */
static inline void fib__host_enter(struct fib_runtime *rt) {
  if (__builtin_expect(rt->host_parked, 0))
    fib__host_enter_slow(rt);
}

/* fib_runtime_destroy: end the announcement and close rt's own
 * descriptor. */
void fib__host_close(struct fib_runtime *rt);

/* Wake rt if it is a host's runtime announced between calls (and only
 * then): for what reaches the host another way on one back end and not
 * on the other (an offload job's end, offload.c). */
void fib__runtime_wake_host(struct fib_runtime *rt);

/* Around a push onto rt's inbox or posts and the wake-up after it, by a
 * thread that may not be rt's: what it pushed may run, end the run and
 * let the program destroy rt before the wake-up has stopped touching rt,
 * so fib_runtime_destroy waits until no such thread is left
 * (fib__runtime_unwaked). seq_cst: either destroy sees the count, or the
 * push came after destroy began (a program that destroys a runtime while
 * another thread posts to it is wrong anyway). */
static inline void fib__waker_enter(struct fib_runtime *rt) {
  __atomic_add_fetch(&rt->wakers, 1, __ATOMIC_SEQ_CST);
}

/* release: the wake-up's accesses to rt happen before destroy frees it */
static inline void fib__waker_leave(struct fib_runtime *rt) {
  __atomic_sub_fetch(&rt->wakers, 1, __ATOMIC_RELEASE);
}

/* fib_runtime_destroy: wait for the threads still waking rt. */
void fib__runtime_unwaked(struct fib_runtime *rt);

/* A one-worker runtime that has been posted to has nothing to run: sleep
 * until `deadline`, an I/O event, a post or a fiber readied from another
 * thread. */
void fib__runtime_sleep(struct fib_runtime *rt, uint64_t deadline);

/* ---- the claim */

/* Arm self's claim before it can be found by another thread's waker.
 * An exchange, not a store: it is the store half of the cancel check's
 * store/load pair, and a read-modify-write orders it before the load
 * that follows on every machine and emulator (qemu-user's aarch64 turns
 * a seq_cst store and load into stlr/ldar emulations that an x86 host's
 * store buffer lets pass each other: test_model's cancel check lost a
 * cancel there). */
static inline void fib__claim_arm(struct fib__fiber *self, int how) {
  (void)__atomic_exchange_n(&self->claim, how, __ATOMIC_SEQ_CST);
}

/* f waits in fib_join (its claim fib__claim_join of the caller's worker,
 * whose thread runs this): take it out of the join word of the fiber it
 * joins, for its deadline, a cancel or its own cancel check (the join
 * word, above). 1: we did, and are its one waker (its claim is NONE
 * again); 0: its finisher was first. */
int fib__join_take(struct fib__fiber *f);

/* Try to become f's one waker: `any` is 1 for a completer (which may wake
 * an uncancellable park), 0 for a deadline (its owner's thread) or f's
 * own cancel check, which may read f->rt. A canceller calls
 * fib__claim_take_cancel. */
static inline int fib__claim_take(struct fib__fiber *f, int any) {
  int c = FIB__CLAIM_ANY;
  if (__atomic_compare_exchange_n(&f->claim, &c, FIB__CLAIM_NONE, 0,
                                  __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
    return 1;
  if (fib__claim_is_join(c)) /* its claim is a join word; no completer */
    return !any && fib__join_take(f); /* (its finisher); the callers are
                                         on f's owner's thread */
  /* acquire: the fiber's park (and what it published before) happened */
  return any && c == FIB__CLAIM_COMPLETE &&
         __atomic_compare_exchange_n(&f->claim, &c, FIB__CLAIM_NONE, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

/* fib__claim_take for fib_cancel, from any thread, of f, a fiber of
 * group g (f->rt may change under it) that the caller found under its
 * home's lookup (lookup_home: not freed meanwhile), by a thread whose
 * worker is `own` (NULL: none of g's). 1: the caller won and wakes f; 0:
 * nothing to do here (not parked cancellably, another waker won, or f
 * waits in a join on another worker, whose thread will take it: the
 * join word, above); FIB_ENOMEM: that note could not be made. */
int fib__claim_take_cancel(struct fib__group *g, struct fib__fiber *f,
                           const struct fib_runtime *own);

/* Whether a waker could still claim f (a look, for wait queues). */
static inline int fib__claim_open(const struct fib__fiber *f) {
  return __atomic_load_n(&f->claim, __ATOMIC_ACQUIRE) != FIB__CLAIM_NONE;
}

/* Wake f, whose claim the caller won, with park returning `reason`: into
 * the caller's run queue if the caller's thread owns it, else through its
 * owner's inbox. `front`: run it first (a joiner) when local. */
void fib__group_wake(struct fib__fiber *f, int reason, int front);

#endif
