/* SPDX-License-Identifier: MIT */
/*
 * waitq.h -- wait queues: the park/ready plumbing under the blocking
 * primitives of src/sync/ (locks, conditions, channels, select).
 *
 * A wait queue is an intrusive, doubly linked FIFO of nodes that live on
 * the waiting fibers' stacks, so waiting never allocates. One blocking call
 * is one `struct fib__wait` (the fiber, and what woke it) and one node per
 * queue it waits on: one for a lock or a single send/receive, one per case
 * for fib_select.
 *
 * The park/ready contract as these primitives use it (fiber.h):
 *
 *   - A fiber links its node(s) and then parks in BLOCKED, with no switch in
 *     between, so no wake-up can come before the park.
 *   - A node is *claimable* only while its fiber is BLOCKED. A waker that
 *     completes a node sets wait->fired and wait->result, unlinks the node
 *     and readies the fiber; the fiber is then READY, so every other node of
 *     the same wait (the other cases of a select) stops being claimable at
 *     once, and no second waker can complete it.
 *   - A timeout or fib_cancel also readies the fiber (park returns
 *     FIB_ETIMEDOUT / FIB_ECANCELED; not for an uncancellable park, which
 *     only its completer ends) but leaves its nodes linked. They are
 *     not claimable any more: a waker that meets one unlinks it and looks at
 *     the next ("stale" nodes). When the fiber runs again it unlinks whatever
 *     is still linked (node->q != NULL) before it does anything else.
 *   - So a node is completed at most once, and a fiber whose park returned
 *     an error was never completed: a timed-out lock was not handed over, a
 *     timed-out send did not deliver its value.
 */
#ifndef FIB__SCHED_WAITQ_H
#define FIB__SCHED_WAITQ_H

#include "bias.h"
#include "fiber.h"
#include "spin.h"
#include "workers.h"
#include "../sys.h"

#include <stddef.h>

struct fib__waitq {
  struct fib__wnode *head, *tail; /* NULL when empty */
};

/* A call's wait with its one node (w.nodes NULL says so). */
struct fib__wait_one {
  struct fib__wait w; /* first: a struct fib__wait * to it is one to this */
  struct fib__wnode n;
};

static inline void fib__waitq_init(struct fib__waitq *q) {
  q->head = q->tail = NULL;
}

static inline int fib__waitq_empty(const struct fib__waitq *q) {
  return q->head == NULL;
}

static inline void fib__waitq_push(struct fib__waitq *q, struct fib__wnode *n) {
  n->q = q;
  n->next = NULL;
  n->prev = q->tail;
  if (q->tail)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
}

static inline void fib__waitq_unlink(struct fib__wnode *n) {
  struct fib__waitq *q = n->q;
  if (n->prev)
    n->prev->next = n->next;
  else
    q->head = n->next;
  if (n->next)
    n->next->prev = n->prev;
  else
    q->tail = n->prev;
  n->q = NULL;
}

/* Unlink q's first node (the cheap case of fib__waitq_unlink). */
static inline void fib__waitq_shift(struct fib__waitq *q) {
  struct fib__wnode *n = q->head;
  q->head = n->next;
  if (n->next)
    n->next->prev = NULL;
  else
    q->tail = NULL;
  n->q = NULL;
}

static inline int fib__wnode_claimable(const struct fib__wnode *n) {
  return n->fiber->state == FIB__FIBER_BLOCKED;
}

/* The first claimable node, unlinking the stale ones in front of it. */
static inline struct fib__wnode *fib__waitq_first(struct fib__waitq *q) {
  struct fib__wnode *n;
  while ((n = q->head) != NULL && !fib__wnode_claimable(n))
    fib__waitq_shift(q);
  return n;
}

/* Destroy's test: drop the stale nodes, then non-zero if live waiters
 * remain. */
static inline int fib__waitq_busy(struct fib__waitq *q) {
  struct fib__wnode *n = q->head;
  while (n) {
    struct fib__wnode *next = n->next;
    if (!fib__wnode_claimable(n))
      fib__waitq_unlink(n);
    n = next;
  }
  return !fib__waitq_empty(q);
}

/* Complete the node fib__waitq_first(q) returned: its fiber's park
 * returns 0 and it finds `result` in its wait. It is readied at the back
 * of the run queue, or with `front` (a constant where it is inlined) at
 * the front, to run next (runq.h); `front` is for local primitives only
 * (their waiters are fibers of one-worker runtimes: not asked again). */
static inline void fib__waitq_complete_first_at(struct fib__waitq *q,
                                                int result, int front) {
  struct fib__wnode *n = q->head;
  struct fib__wait *w = n->wait;
  w->fired = n->idx;
  w->result = result;
  fib__waitq_shift(q);
  if (front)
    fib__fiber_ready_front_local(n->fiber);
  else
    fib__fiber_ready(n->fiber);
  /* A single wait returns its result as the reason it woke (0 by the
   * ready): the tail wait gets it from the switch, handed `wake`. */
  if (result && !w->nodes)
    n->fiber->wake = result;
}

/* fib__waitq_complete_first_at(q, 0, 1) when the caller has found q's
 * head node's fiber `f` claimable with no timer armed (a local
 * primitive's, so of a one-worker runtime): what is left of it, with no
 * call that would make the caller set up a stack frame. */
static inline void fib__waitq_hand_first(struct fib__waitq *q,
                                         struct fib__fiber *f) {
  struct fib__wnode *n = q->head;
  struct fib__wait *w = n->wait;
  w->fired = n->idx;
  w->result = 0;
  fib__waitq_shift(q);
  f->wake = 0;
  f->state = FIB__FIBER_READY;
  fib__runq_push_front(&f->rt->runq, &f->runq);
}

static inline void fib__waitq_complete_first(struct fib__waitq *q,
                                             int result) {
  fib__waitq_complete_first_at(q, result, 0);
}

/* Complete every live node of q with `result` (broadcast, close). */
static inline void fib__waitq_complete_all(struct fib__waitq *q, int result) {
  while (fib__waitq_first(q))
    fib__waitq_complete_first(q, result);
}

/* The fiber of `w` is discarded (fib_runtime_destroy) in the middle of
 * its call: take its nodes off their queues and free what the call
 * allocated. Nothing of the call runs again. */
static inline void fib__wait_discard(struct fib__fiber *f,
                                     struct fib__wait *w) {
  if (!w->nodes) { /* a fib__wait_one */
    struct fib__wnode *n = &((struct fib__wait_one *)(void *)w)->n;
    if (n->q)
      fib__waitq_unlink(n);
  } else {
    for (size_t i = 0; i < w->count; i++)
      if (w->nodes[i].q)
        fib__waitq_unlink(&w->nodes[i]);
    if (w->nodes_on_heap)
      fib__sys_free(w->nodes);
    fib__sys_free(w->heap_extra);
  }
  f->wait = NULL;
}

/* The start of every call that may wait, even one that will not have to:
 * 0 and the calling fiber in *self, or FIB_EPERM (not a fiber that may
 * block) or FIB_ECANCELED (cancelled), before any side effect. */
static inline int fib__waiter(struct fib__fiber **self) {
  struct fib__fiber *f = fib__fiber_self();
  *self = f;
  if (!f)
    return FIB_EPERM;
  return fib__cancelled(f) ? FIB_ECANCELED : 0;
}

/* Wait on q as one node (`elem`: channels' value or slot) until a waker
 * completes it, the deadline passes or the fiber is cancelled. Returns the
 * completer's result (0, FIB_EPIPE), or park's error with the node off the
 * queue (the call had no effect). The caller has found `self` not
 * cancelled (fib__waiter) and not switched since, so this parks without
 * park's own check. */
static inline int fib__waitq_wait(struct fib__waitq *q,
                                  struct fib__fiber *self, void *elem,
                                  uint64_t deadline) {
  /* Field by field, not an initializer that zeroes the rest: the push
   * sets the links, and the completer `fired` and `result` (read only
   * when it completed the wait). On every channel or lock wait. */
  struct fib__wnode n;
  struct fib__wait w;
  n.fiber = self;
  n.wait = &w;
  n.idx = 0;
  n.elem = elem;
  w.fiber = self;
  w.nodes_on_heap = 0;
  w.nodes = &n;
  w.count = 1;
  w.heap_extra = NULL;
  fib__waitq_push(q, &n);
  self->wait = &w;
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend(self, FIB__FIBER_BLOCKED);
  self->wait = NULL;
  int err = self->wake;
  if (err) {
    if (n.q)
      fib__waitq_unlink(&n);
    return err;
  }
  return w.result;
}

/* fib__waitq_wait for a local primitive (storage.h: its caller's
 * fib__sync_waiter has found the runtime one-worker): the wait and its node
 * in one record that says so (fib__wait_one), and a park that does not ask
 * about workers again. */
static inline int fib__waitq_wait_local(struct fib__waitq *q,
                                        struct fib__fiber *self, void *elem,
                                        uint64_t deadline) {
  struct fib__wait_one one;
  one.n.fiber = self;
  one.n.wait = &one.w;
  one.n.idx = 0;
  one.n.elem = elem;
  one.w.nodes = NULL; /* the rest of one.w is the completer's to write */
  fib__waitq_push(q, &one.n);
  self->wait = &one.w;
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend_local(self);
  self->wait = NULL;
  int err = self->wake;
  if (err) {
    if (one.n.q)
      fib__waitq_unlink(&one.n);
    return err;
  }
  return one.w.result;
}

/* fib__waitq_wait_local with no deadline, with the fiber's tail node
 * (fiber.h): nothing of the call is left to do after the switch,
 * so the switch is its tail call, and the fiber resumes straight in its
 * caller's caller with the result handed over by the switch (the `wake`
 * its completer, canceller or close wrote: sched.c). The caller has done
 * what fib__waitq_wait_local's has. */
static inline int fib__waitq_wait_tail(struct fib__waitq *q,
                                       struct fib__fiber *self, void *elem) {
  /* a compact fiber has no tail slot (fiber.h), nor waits on its stack */
  if (__builtin_expect(self->co->shared_fp & FIB__CORO_COMPACT, 0))
    return fib__compact_wait_refused();
  struct fib__wnode *n = fib__fiber_tail(self);
  n->fiber = self;
  n->wait = &self->rt->tail_sink;
  n->idx = 0;
  n->elem = elem;
  fib__waitq_push(q, n);
  return fib__fiber_suspend_tail(self);
}

/* ---- shared mode: a primitive shared by the workers of multi-worker
 * runtimes (src/sync/). Its queue is guarded by the primitive's spin lock
 * (held by the caller of each helper below), and a node's fiber is woken
 * only by whoever wins its claim (workers.h): its deadline or a cancel
 * may fire on its owner's thread at any moment, without that lock. A
 * node whose claim is taken or not open is stale, as above. Each helper
 * takes `shared` as a constant, so the primitives' local variant, where it
 * is 0, compiles to the code above. */

/* A plain thread (no runtime runs on it) waiting on a shared channel
 * stands in a fiber record of its own on its stack, with rt == NULL, so
 * that wakers treat its node like any other: they win its claim, fill in
 * its wait, and wake it through its futex word (`remote_reason`: 1 once
 * woken). fib__thread_wait is the waiting side (workers.c). */
void fib__thread_waiter_wake(struct fib__fiber *f);

/* Wait as a plain thread on q (a shared channel's, its lock `b` held:
 * released once linked) until a waker completes the node or `deadline`
 * passes. Returns the completer's result, or FIB_ETIMEDOUT with the node
 * off the queue. */
int fib__thread_wait(struct fib__waitq *q, void *elem, uint64_t deadline,
                     struct fib__block *b);

/* The first live node, without claiming it (a look, e.g. select's test). */
static inline struct fib__wnode *fib__waitq_peek(struct fib__waitq *q,
                                                 int shared) {
  if (!shared)
    return fib__waitq_first(q);
  struct fib__wnode *n;
  while ((n = q->head) != NULL && !fib__claim_open(n->fiber))
    fib__waitq_shift(q);
  return n;
}

/* The first node whose fiber the caller may wake, now its one waker (in
 * shared mode: the first whose claim it wins; those it loses are
 * unlinked). The caller completes it with fib__waitq_complete. */
static inline struct fib__wnode *fib__waitq_claim(struct fib__waitq *q,
                                                  int shared) {
  if (!shared)
    return fib__waitq_first(q);
  struct fib__wnode *n;
  while ((n = q->head) != NULL && !fib__claim_take(n->fiber, 1))
    fib__waitq_shift(q);
  return n;
}

/* Wake a fiber whose claim the caller won: into its runtime's run queue
 * (at the front with `front`) if the caller runs on that runtime's (or
 * worker's) thread, else through its inbox; or a plain thread, through its
 * futex word. */
static inline void fib__wake_claimed(struct fib__fiber *f, int front) {
  if (__builtin_expect(f->rt == NULL, 0)) { /* a plain thread's waiter */
    fib__thread_waiter_wake(f);
    return;
  }
  fib__group_wake(f, 0, front); /* its runtime's queue, or inbox if remote */
}

/* Shared mode: complete the node fib__waitq_claim returned (q's head)
 * but for the wake-up, which the caller makes with fib__wake_claimed,
 * after it has released the primitive's lock if it likes: having won
 * the claim, it is the fiber's one waker, whenever it wakes it (a
 * deadline or cancel that fires meanwhile loses the claim and leaves the
 * fiber alone), and a wake-up that crosses workers (an inbox push, maybe
 * a system call) is then no longer done with the lock held. Returns the
 * fiber. */
static inline struct fib__fiber *fib__waitq_complete_claimed(
    struct fib__waitq *q, int result) {
  struct fib__wnode *n = q->head;
  struct fib__fiber *f = n->fiber; /* n is on its stack: read it first */
  n->wait->fired = n->idx;
  n->wait->result = result;
  fib__waitq_shift(q);
  return f;
}

/* Complete the node fib__waitq_claim returned (q's head), its fiber
 * readied at the back, or at the front with `front`. */
static inline void fib__waitq_complete_at(struct fib__waitq *q, int result,
                                          int shared, int front) {
  if (!shared) {
    fib__waitq_complete_first_at(q, result, front);
    return;
  }
  fib__wake_claimed(fib__waitq_complete_claimed(q, result), front);
}

static inline void fib__waitq_complete(struct fib__waitq *q, int result,
                                       int shared) {
  fib__waitq_complete_at(q, result, shared, 0);
}

/* Complete every live node of q (broadcast, close). */
static inline void fib__waitq_complete_every(struct fib__waitq *q, int result,
                                             int shared) {
  struct fib__wnode *n;
  while ((n = fib__waitq_claim(q, shared)) != NULL) {
    /* The nodes are on their fibers' stacks, one cold page each when many
     * wait: fetch ahead while this one is completed, the node after next
     * and the next one's fiber (the next node's line was fetched by the
     * turn before). Never NULL: that prefetch is a futile page walk. */
    struct fib__wnode *m = n->next;
    if (m) {
      if (m->next)
        __builtin_prefetch(m->next, 1);
      __builtin_prefetch(m->fiber, 1);
      fib__prefetch_stride(n, m); /* and further on (fiber.h) */
    }
    fib__waitq_complete(q, result, shared);
  }
}

/* fib__waitq_busy in either mode. */
static inline int fib__waitq_busy_in(struct fib__waitq *q, int shared) {
  if (!shared)
    return fib__waitq_busy(q);
  struct fib__wnode *n = q->head;
  while (n) {
    struct fib__wnode *next = n->next;
    if (!fib__claim_open(n->fiber))
      fib__waitq_unlink(n);
    n = next;
  }
  return !fib__waitq_empty(q);
}

/* The shared wait below, guarded by a spin lock `lock` or by a lock `b`
 * that a worker may keep (bias.h): one of the two; constants where it is
 * inlined. */
static inline __attribute__((always_inline)) int
waitq_wait_guarded(struct fib__waitq *q, struct fib__fiber *self, void *elem,
                   uint64_t deadline, uint32_t *lock, struct fib__block *b) {
  struct fib__wnode n = {.fiber = self, .elem = elem};
  struct fib__wait w = {.fiber = self, .nodes = &n, .count = 1};
  n.wait = &w;
  fib__waitq_push(q, &n);
  self->wait = &w;
  fib__claim_arm(self, FIB__CLAIM_ANY); /* before anyone can see n */
  if (b)
    fib__block_unlock(b, self->rt);
  else
    fib__spin_unlock(lock);
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend_armed(self, FIB__FIBER_BLOCKED);
  self->wait = NULL;
  int err = self->wake;
  if (err) {
    if (b) {
      struct fib_runtime *rt = fib__block_lock(b, self);
      if (n.q)
        fib__waitq_unlink(&n);
      fib__block_unlock(b, rt);
    } else {
      fib__spin_lock(lock);
      if (n.q)
        fib__waitq_unlink(&n);
      fib__spin_unlock(lock);
    }
    return err;
  }
  return w.result;
}

/* fib__waitq_wait in either mode; in shared mode `lock` (the primitive's,
 * held by the caller) is released once the node is linked and the claim
 * armed, and taken again to unlink the node after a deadline or cancel. */
static inline int fib__waitq_wait_in(struct fib__waitq *q,
                                     struct fib__fiber *self, void *elem,
                                     uint64_t deadline, uint32_t *lock) {
  if (!lock)
    return fib__waitq_wait(q, self, elem, deadline);
  return waitq_wait_guarded(q, self, elem, deadline, lock, NULL);
}

/* The same for a shared channel, whose lock `b` its worker may keep. */
static inline int fib__waitq_wait_block(struct fib__waitq *q,
                                        struct fib__fiber *self, void *elem,
                                        uint64_t deadline,
                                        struct fib__block *b) {
  return waitq_wait_guarded(q, self, elem, deadline, NULL, b);
}

#endif
