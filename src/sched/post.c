/* SPDX-License-Identifier: MIT */
/*
 * post.c -- the thread-safe way into a runtime: fib_post runs a function
 * in a new fiber of a runtime, from any thread, fiber or not; fib_call
 * also waits for its return value (a fiber parks, a plain thread blocks on
 * a futex).
 *
 * A post is a small node pushed onto the runtime's `posts` stack (the
 * lock-free stack of inbox.h, as the workers' inboxes); the poster then
 * wakes the runtime if it sleeps. The runtime (worker 0 of a multi-worker
 * one) takes the whole stack at its next turn through its loop and spawns
 * a detached fiber per post, oldest first. A runtime that has been posted
 * to (`posted`, set for good) goes back to its loop at least every
 * FIB__GROUP_TURNS hand-offs, sleeps where a poster can wake it (its
 * futex word, or its poller with the wake-up eventfd: workers.h) instead
 * of clock_nanosleep or a plain poll, and does not end a run as
 * deadlocked: more posts, or
 * the reply a fiber of it waits for, may come from another thread.
 *
 * A fiber in fib_call waits uncancellably: its reply lives on its stack,
 * and the called function runs whatever happens. Its caller's runtime is
 * marked `posted` first, since the reply wakes the caller from the thread
 * that ran the function, through the caller's owner's inbox.
 *
 * A runtime destroyed with posts it has not finished (fib_runtime_destroy)
 * cancels them, as libuv completes a closed handle's pending requests with
 * UV_ECANCELED: the nodes still queued are freed unrun, a post fiber that
 * has started is discarded with the rest (its node is a hold of its, given
 * up with it), and each call among them is answered with FIB_ECANCELED,
 * unless its caller is a fiber of the same runtime (discarded too: nobody
 * waits any more). A post whose fn ends its fiber with fib_exit is given
 * up the same way, at its finish.
 */
#include "inbox.h"
#include "workers.h"
#include "../sys.h"

#include <linux/futex.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A plain thread's fib_call: its reply's `done` (atomic; its futex
 * word). */
enum {
  REPLY_WAITING = 0, /* the caller has not yet said it sleeps */
  REPLY_DONE = 1,    /* result is set */
  REPLY_ASLEEP = 2   /* the caller sleeps on the word: the replier wakes it */
};

/* fib_call's reply, on its caller's stack. */
struct fib__reply {
  void *result;
  int err;                   /* 0, or FIB_ECANCELED: fn did not return */
  int done;                  /* plain-thread caller: REPLY_* */
  struct fib__fiber *waiter; /* fiber caller, parked with its claim armed */
};

struct fib__post {
  struct fib__runq_node link; /* first: the node is the post */
  fib_fn fn;
  void *arg;
  struct fib__reply *reply;  /* fib_call's, or NULL */
};

/* The worker that takes posts. */
static struct fib_runtime *post_target(struct fib_runtime *rt) {
  return rt->group ? rt->group->w[0] : rt;
}

static void push_post(struct fib_runtime *rt, struct fib__post *p) {
  /* The flag first: a sleeper that reads it as 0 has not yet chosen how
   * to sleep (workers.h: seq_cst, the sleeper's half looks again). Set
   * for good, so stored only by the first post (as inbox_push does in
   * workers.c): a store at every post was a locked instruction on a line
   * the runtime's loop reads at every turn, taken back at every post. A
   * relaxed look is enough: seeing 1, the store that made it was some
   * earlier poster's, which its own push and wake-up followed. */
  if (!__atomic_load_n(&rt->posted, __ATOMIC_RELAXED))
    __atomic_store_n(&rt->posted, 1, __ATOMIC_SEQ_CST);
  fib__waker_enter(rt);
  fib__inbox_push(&rt->posts, &p->link);
  fib__runtime_wake(rt);
  fib__waker_leave(rt); /* rt may be gone from here on: workers.h */
}

/* Answer a call: its caller may return from here on, and r go. */
static void answer(struct fib__reply *r, void *result, int err) {
  r->result = result;
  r->err = err;
  struct fib__fiber *f = r->waiter;
  if (f) {
    /* Its claim is armed (COMPLETE) and only we may take it. */
    if (fib__claim_take(f, 1))
      fib__group_wake(f, 0, 0);
    return;
  }
  /* release: the caller reads result after it sees REPLY_DONE; acquire
   * is not needed (nothing of the caller's is read after). The caller
   * may return at once and its stack go: FUTEX_WAKE reads nothing at the
   * address, so waking a dead word is harmless. Only a caller that said
   * it sleeps is woken (one system call saved per call otherwise). */
  if (__atomic_exchange_n(&r->done, REPLY_DONE, __ATOMIC_RELEASE) ==
      REPLY_ASLEEP)
    (void)syscall(SYS_futex, &r->done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* A post whose fn will not come back to post_main: free its node, and
 * answer its call with FIB_ECANCELED. `gone`: the runtime being destroyed
 * (fib_runtime_destroy), whose own fibers, discarded with it, are not
 * answered (a caller's reply, on its stack, is still mapped: the stacks
 * are freed last); NULL: the post's fiber ended in fib_exit. */
static void cancel(const struct fib_runtime *gone, struct fib__post *p) {
  struct fib__reply *r = p->reply;
  fib__sys_free(p);
  if (!r)
    return;
  const struct fib_runtime *caller = r->waiter ? r->waiter->rt : NULL;
  if (gone && caller &&
      (caller == gone || (gone->group && caller->group == gone->group)))
    return;
  answer(r, NULL, FIB_ECANCELED);
}

/* What a post fiber holds while fn runs (fiber.h, struct fib__hold): its
 * node, given up if fn never comes back, because fib_runtime_destroy
 * discards the fiber or fn ends it with fib_exit. */
struct post_run {
  struct fib__hold hold;
  struct fib__post *p;
  struct fib__fiber *self;
};

static void post_abandon(struct fib__hold *h) {
  struct post_run *run =
      (struct post_run *)((char *)h - offsetof(struct post_run, hold));
  fib__hold_drop(h);
  /* From its own fiber: fib_exit's finish; else destroy's discard. */
  const struct fib__fiber *f = run->self;
  cancel(f == fib__fiber_self() ? NULL : f->rt, run->p);
}

static void *post_main(void *arg) {
  struct post_run run = {.p = arg, .self = fib__fiber_self()};
  run.hold.discard = post_abandon;
  fib__hold_add(run.self, &run.hold);
  void *result = run.p->fn(run.p->arg);
  fib__hold_drop(&run.hold); /* the record's list, wherever it runs now */
  struct fib__reply *r = run.p->reply;
  fib__sys_free(run.p);
  if (r)
    answer(r, result, 0);
  return NULL;
}

void fib__post_discard_queued(struct fib_runtime *rt) {
  struct fib_runtime *t = post_target(rt);
  /* The held ones are older than those still on the stack: answered in
   * the order they were posted. */
  struct fib__runq_node *fifo = t->posts_held;
  t->posts_held = NULL;
  for (int round = 0; round < 2; round++) {
    while (fifo) {
      struct fib__runq_node *next = fifo->next;
      cancel(rt, (struct fib__post *)fifo);
      fifo = next;
    }
    fifo = fib__inbox_take(&t->posts);
  }
}

/* How many posts a turn of the loop spawns fibers for. The rest wait for
 * the next turn, which comes once these have run (or every
 * FIB__GROUP_TURNS hand-offs): so a burst of posts has a few dozen fibers
 * alive at once, whose stacks go back to the pool and come out again
 * warm, instead of one fresh stack per post of the burst (thousands,
 * whose pages were populated and given back batch after batch). Posts
 * that wait for later ones cannot hang: every turn starts more. */
#define POST_BATCH 32

void fib__post_take(struct fib_runtime *rt) {
  /* The ones held back first (all older than any still on the stack);
   * the stack is taken only once they are gone, so each node is walked
   * once on the way in. */
  struct fib__runq_node *fifo = rt->posts_held;
  if (!fifo) {
    fifo = fib__inbox_take(&rt->posts);
    if (!fifo)
      return;
    if (rt->group) {
      /* Each post counts as spawned from now on (its fiber's own count
       * replaces it below), so that no idle worker finds every fiber
       * finished and ends the run while posts wait here for a turn.
       * Release, as every store of the count (workers.h). */
      size_t m = 0;
      for (const struct fib__runq_node *n = fifo; n; n = n->next)
        m++;
      __atomic_store_n(&rt->spawned, rt->spawned + m, __ATOMIC_RELEASE);
    }
  }
  static const fib_attr detached = {.flags = FIB_DETACHED};
  size_t started = 0;
  while (fifo && started < POST_BATCH) {
    /* Read first: once spawned, it may run on another worker and go. */
    struct fib__runq_node *next = fifo->next;
    /* On failure (no memory now) the rest wait for a later turn (the
     * sleep is short while any are held). Nothing is lost, the order is
     * kept. */
    if (fib_spawn(rt, post_main, fifo, &detached, NULL) != 0)
      break;
    started++;
    fifo = next;
  }
  rt->posts_held = fifo;
  if (rt->group && started) /* each spawn counted its fiber again */
    __atomic_store_n(&rt->spawned, rt->spawned - started, __ATOMIC_RELEASE);
}

int fib_post(fib_runtime *rt, fib_fn fn, void *arg) {
  if (!rt || !fn)
    return FIB_EINVAL;
  struct fib__post *p = fib__sys_malloc(sizeof *p);
  if (!p)
    return FIB_ENOMEM;
  p->fn = fn;
  p->arg = arg;
  p->reply = NULL;
  push_post(post_target(rt), p);
  return 0;
}

int fib_call(fib_runtime *rt, fib_fn fn, void *arg, void **result) {
  if (!rt || !fn)
    return FIB_EINVAL;
  struct fib__post *p = fib__sys_malloc(sizeof *p);
  if (!p)
    return FIB_ENOMEM;
  struct fib__reply r = {0};
  p->fn = fn;
  p->arg = arg;
  p->reply = &r;
  struct fib__fiber *self = fib__fiber_self();
  if (self) {
    r.waiter = self;
    /* Our runtime will be woken from another thread. */
    __atomic_store_n(&self->rt->posted, 1, __ATOMIC_SEQ_CST);
    fib__claim_arm(self, FIB__CLAIM_COMPLETE); /* before anyone sees r */
    push_post(post_target(rt), p);
    fib__fiber_park_nocancel_armed(self);
  } else {
    push_post(post_target(rt), p);
    /* Say we sleep: a CAS, so that either the replier's exchange finds
     * REPLY_ASLEEP and wakes us, or we find REPLY_DONE here (acquire,
     * here and below: the replier's result is then visible). No spin
     * first: on this 2-vCPU guest a caller that spun (1 to 1,000 looks,
     * pauses or sched_yield) made call_rtt no faster and call_rtt_io
     * 1.3-3x slower (the runtime, woken on the caller's CPU, waited for
     * the spin to give it away). */
    int seen = REPLY_WAITING;
    if (__atomic_compare_exchange_n(&r.done, &seen, REPLY_ASLEEP, 0,
                                    __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
      while (__atomic_load_n(&r.done, __ATOMIC_ACQUIRE) != REPLY_DONE)
        (void)syscall(SYS_futex, &r.done, FUTEX_WAIT_PRIVATE, REPLY_ASLEEP,
                      NULL, NULL, 0);
  }
  if (r.err)
    return r.err;
  if (result)
    *result = r.result;
  return 0;
}
