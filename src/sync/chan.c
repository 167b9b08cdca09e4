/* SPDX-License-Identifier: MIT */
/*
 * chan.c -- channels of fixed-size elements and fib_select, built on
 * park/ready (sched/fiber.h) and the wait queues of sched/waitq.h.
 *
 * A channel has a ring buffer (capacity 0: none) and two wait queues:
 * senders (node->elem: the value to send) and receivers (node->elem: where
 * to put the value). Invariants, outside any call:
 *   - live receivers wait only if the buffer is empty;
 *   - live senders wait only if the buffer is full (for capacity 0: always);
 *   - nobody waits on a closed channel.
 * A value goes straight from sender to receiver when the other side waits
 * (no copy through the buffer), and a receive that frees a slot pulls the
 * longest-waiting sender's value in, so FIFO order holds.
 *
 * A waiter that a send or receive completes is readied at the front of the
 * run queue, to run next (runq.h; Go's runnext): the receiver a value was
 * handed to uses it at once, before the fibers queued earlier are run.
 * That keeps trees of fibers that report through channels (the canonical
 * skynet) depth-first, with few alive at once, as join does. Close wakes
 * its waiters at the back.
 *
 * fib_select links one node per case, all pointing at one fib__wait: the
 * first peer to complete any of them readies the fiber, which makes the
 * other nodes stale at once (waitq.h); the fiber unlinks them when it runs.
 */
#include "storage.h"
#include "../sched/seed.h"
#include "../sched/waitq.h"
#include "../sys.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#define CHAN_MAGIC 0x6368616eu /* "chan" */

struct chan {
  uint32_t magic;
  uint32_t closed;
  struct fib__block lock;    /* shared mode (storage.h): guards the rest;
                                a worker whose fibers alone use the
                                channel keeps it (sched/bias.h) */
  size_t elem_size;
  size_t cap;                /* 0: unbuffered */
  size_t count;              /* values buffered, <= cap */
  /* The ring, by pointers so that a step is an add and a compare (no
   * multiply, no modulo); all NULL when it has no bytes: */
  unsigned char *buf;        /* cap * elem_size bytes */
  unsigned char *end;        /* buf + cap * elem_size */
  unsigned char *head;       /* the oldest buffered value */
  unsigned char *tail;       /* where the next value goes */
  struct fib__waitq sendq;
  struct fib__waitq recvq;
};
FIB__CHECK_STORAGE(fib_chan, struct chan);

static struct chan *chan_of(const fib_chan *ch) {
  return fib__live(ch, CHAN_MAGIC);
}

/* Either mode; *shared says which. */
static struct chan *chan_of_in(const fib_chan *ch, int *shared) {
  return fib__live_in(ch, CHAN_MAGIC, shared);
}

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define SHARED_PATH __attribute__((noinline))

/* The lock of the calls that never wait, from a fiber or not (a plain
 * thread, or a coroutine a fiber resumed, which waits for a keeper by
 * spinning): they do not wait for a value, but a fiber may wait for a
 * keeper to let go, and move meanwhile. Returns the worker it holds the
 * lock as (sched/bias.h), for unlock_in. */
static ALWAYS_INLINE struct fib_runtime *lock_in(struct chan *c, int shared) {
  return shared ? fib__block_lock(&c->lock, fib__fiber_self()) : NULL;
}

static ALWAYS_INLINE void unlock_in(struct chan *c, int shared,
                                    struct fib_runtime *rt) {
  if (shared)
    fib__block_unlock(&c->lock, rt);
}

int fib_chan_init(fib_chan *ch, size_t elem_size, size_t capacity) {
  if (!ch || (elem_size && capacity > SIZE_MAX / elem_size))
    return FIB_EINVAL;
  unsigned char *buf = NULL;
  if (elem_size && capacity) {
    buf = fib__sys_malloc(elem_size * capacity);
    if (!buf)
      return FIB_ENOMEM; /* the storage is left as it was */
  }
  struct chan *c = fib__start(ch, fib__mode_magic(CHAN_MAGIC), sizeof *c);
  c->elem_size = elem_size;
  c->cap = capacity;
  c->buf = c->head = c->tail = buf;
  c->end = buf ? buf + elem_size * capacity : NULL;
  return 0;
}

int fib_chan_destroy(fib_chan *ch) {
  int shared;
  struct chan *c = chan_of_in(ch, &shared);
  if (!c)
    return FIB_EINVAL;
  struct fib_runtime *rt = lock_in(c, shared);
  int err = fib__retire_in(&c->magic, &c->sendq,
                           fib__waitq_busy_in(&c->recvq, shared), shared);
  if (!err && shared && fib__block_kept(&c->lock, rt))
    fib__block_forget(&c->lock, rt); /* off its keeper's list */
  else
    unlock_in(c, shared, rt);
  if (!err) {
    fib__sys_free(c->buf);
    c->buf = NULL;
  }
  return err;
}

size_t fib_chan_len(const fib_chan *ch) {
  int shared;
  struct chan *c = chan_of_in(ch, &shared);
  if (!c)
    return 0;
  /* shared: others write it under the lock */
  struct fib_runtime *rt = lock_in(c, shared);
  size_t n = c->count;
  unlock_in(c, shared, rt);
  return n;
}

int fib_chan_close(fib_chan *ch) {
  int shared;
  struct chan *c = chan_of_in(ch, &shared);
  if (!c)
    return FIB_EINVAL;
  int refused = shared ? 0 : fib__sync_refused();
  if (refused)
    return refused;
  struct fib_runtime *rt = lock_in(c, shared);
  int err = FIB_EPIPE;
  if (!c->closed) {
    c->closed = 1;
    fib__waitq_complete_every(&c->recvq, FIB_EPIPE, shared);
    fib__waitq_complete_every(&c->sendq, FIB_EPIPE, shared);
    err = 0;
  }
  unlock_in(c, shared, rt);
  return err;
}

/* ---- the operations, when they need not wait */

/* Any other size, out of line: a call to memcpy in the inline copy would
 * make every send and receive set up a stack frame for it. */
static __attribute__((noinline, cold)) void copy_bytes(void *dst,
                                                       const void *src,
                                                       size_t len) {
  memcpy(dst, src, len);
}

/* Constant-size copies for the common element sizes: the compiler turns
 * them into one load and store instead of a call to memcpy. With `small`
 * (a constant where it is inlined) the caller has found copy_inline(len)
 * true, so no call is left in the code at all. */
static ALWAYS_INLINE void copy_in(void *dst, const void *src, size_t len,
                                  int small) {
  /* Tests in this order, not a switch: a switch let the compiler test 4
   * before 8, two instructions more on every copy of a word. */
  if (len == 8)
    memcpy(dst, src, 8);
  else if (len == 4)
    memcpy(dst, src, 4);
  else if (len && !small)
    copy_bytes(dst, src, len);
}

static inline void copy(void *dst, const void *src, size_t len) {
  copy_in(dst, src, len, 0);
}

/* Whether copy() of len bytes makes no call: a hand-off done inline in
 * send or receive only copies such sizes, so that no call there makes
 * every send and receive set up a stack frame (the others go to the slow
 * half). */
static inline int copy_inline(size_t len) {
  /* a word first: one compare, not a bit test of a mask */
  return __builtin_expect(len == 8, 1) || len == 4 || len == 0;
}

/* The ring's fields are read before the copy and written after it: the
 * copy's store may alias anything as far as the compiler knows, and would
 * make it load them all again (the caller's bytes are never the
 * channel's record). */

/* Append a value to the ring (count < cap); `small` as in copy_in. */
static ALWAYS_INLINE void ring_put_in(struct chan *c, const void *elem,
                                      int small) {
  unsigned char *at = c->tail;
  size_t size = c->elem_size, count = c->count;
  copy_in(at, elem, size, small);
  at += size;
  c->tail = at == c->end ? c->buf : at;
  c->count = count + 1;
}

static inline void ring_put(struct chan *c, const void *elem) {
  ring_put_in(c, elem, 0);
}

/* Take the oldest value out of the ring (count > 0) into out (NULL:
 * drop it); `small` as in copy_in. */
static ALWAYS_INLINE void ring_take_in(struct chan *c, void *out, int small) {
  unsigned char *at = c->head;
  size_t size = c->elem_size, count = c->count;
  if (out)
    copy_in(out, at, size, small);
  at += size;
  c->head = at == c->end ? c->buf : at;
  c->count = count - 1;
}

static inline void ring_take(struct chan *c, void *out) {
  ring_take_in(c, out, 0);
}

static ALWAYS_INLINE int send_ready(struct chan *c, int shared) {
  return c->closed || c->count < c->cap || fib__waitq_peek(&c->recvq, shared);
}

static ALWAYS_INLINE int recv_ready(struct chan *c, int shared) {
  return c->count || c->closed || fib__waitq_peek(&c->sendq, shared);
}

/* try_send / try_recv: 0 or FIB_EPIPE if the operation is done, or this
 * (not an error code: positive) if it would have to wait. Forced inline:
 * each is used by its call's slow half and by select, and a call here
 * would cost a frame on every hand-off. In shared mode a waiter it
 * completes is left in *wake, for the caller to wake (fib__wake_claimed,
 * at the front: it runs next) once it has released the channel's lock;
 * `wake` is NULL in local mode, which wakes it at once. */
#define WOULD_WAIT 1

/* Complete q's head node, claimed by fib__waitq_claim: see try_send. */
static ALWAYS_INLINE void complete_head(struct fib__waitq *q, int shared,
                                        struct fib__fiber **wake) {
  if (shared)
    *wake = fib__waitq_complete_claimed(q, 0);
  else
    fib__waitq_complete_at(q, 0, 0, 1);
}

/* `small` as in copy_in: the shared send's and receive's common case. */
static ALWAYS_INLINE int try_send_in(struct chan *c, const void *elem,
                                     int shared, struct fib__fiber **wake,
                                     int small) {
  if (c->closed)
    return FIB_EPIPE;
  struct fib__wnode *n = fib__waitq_claim(&c->recvq, shared);
  if (n) { /* the buffer is empty: hand the value over; it runs next */
    if (n->elem)
      copy_in(n->elem, elem, c->elem_size, small);
    complete_head(&c->recvq, shared, wake);
    return 0;
  }
  if (c->count < c->cap) {
    ring_put_in(c, elem, small);
    return 0;
  }
  return WOULD_WAIT;
}

static ALWAYS_INLINE int try_send(struct chan *c, const void *elem,
                                  int shared, struct fib__fiber **wake) {
  return try_send_in(c, elem, shared, wake, 0);
}

static ALWAYS_INLINE int try_recv_in(struct chan *c, void *out, int shared,
                                     struct fib__fiber **wake, int small) {
  struct fib__wnode *n;
  if (c->count) {
    ring_take_in(c, out, small);
    n = fib__waitq_claim(&c->sendq, shared);
    if (n) { /* a slot is free: the longest waiter's value goes in */
      ring_put_in(c, n->elem, small);
      complete_head(&c->sendq, shared, wake);
    }
    return 0;
  }
  n = fib__waitq_claim(&c->sendq, shared);
  if (n) { /* unbuffered: take it from the sender */
    if (out)
      copy_in(out, n->elem, c->elem_size, small);
    complete_head(&c->sendq, shared, wake);
    return 0;
  }
  return c->closed ? FIB_EPIPE : WOULD_WAIT;
}

static ALWAYS_INLINE int try_recv(struct chan *c, void *out, int shared,
                                  struct fib__fiber **wake) {
  return try_recv_in(c, out, shared, wake, 0);
}

/* ---- send and receive
 *
 * Each call is split: the common cases are done inline in the call, which
 * then needs no stack frame (it makes no call but a last one): room to
 * put or a value to take with nobody on the other side to serve; a
 * hand-off to a live waiter with no timer armed, of a word-sized or empty
 * element; and, with nobody on the other side and no room or value, the
 * decision to wait (a tail call to the wait). Everything else (a waiter's
 * timer, other sizes, batching a waiting sender into a buffer, close) is
 * in the out-of-line slow half. Stale nodes make the inline tests fail,
 * never pass wrongly. */

/* The waits, out of line from the hand-offs: the wait's node and record
 * are on the stack, and a frame set up for them on entry to the slow half
 * would cost every hand-off too (the slow half tail-calls these). */
static __attribute__((noinline)) int send_wait(struct chan *c,
                                               struct fib__fiber *self,
                                               const void *elem,
                                               uint64_t deadline_ns) {
  return fib__waitq_wait_local(&c->sendq, self, (void *)(uintptr_t)elem,
                               deadline_ns);
}

static __attribute__((noinline)) int recv_wait(struct chan *c,
                                               struct fib__fiber *self,
                                               void *out,
                                               uint64_t deadline_ns) {
  return fib__waitq_wait_local(&c->recvq, self, out, deadline_ns);
}


static __attribute__((noinline)) int send_slow(struct chan *c,
                                               struct fib__fiber *self,
                                               const void *elem,
                                               uint64_t deadline_ns) {
  int err = try_send(c, elem, 0, NULL);
  if (err != WOULD_WAIT)
    return err;
  return send_wait(c, self, elem, deadline_ns);
}

/* A plain thread may use a shared channel (it blocks); a thread that
 * runs a runtime may not, outside that runtime's fibers (FIB_EPERM). */
static int plain_thread(void) { return fib__tl_runtime == NULL; }

/* The shared send's and receive's two ends out of line, each a tail
 * call, so that the common call (the lock, a value put in or taken out
 * of the ring, the unlock) sets up no stack frame: the wait's node and
 * record, and the registers kept across the wake-up's call, cost every
 * call ~20 instructions when they were inline (callgrind,
 * fanout_2w_buf). */

/* Wake f, the partner whose claim the call won, once the channel's lock
 * is released (the claim makes us its one waker whenever we wake it:
 * try_send above), to run next; the call's result is 0. `self` is the
 * calling fiber (NULL: a plain thread). A partner on the caller's own
 * worker, the common case once fibers that hand values to each other
 * have come together (docs/multicore.md), goes straight into its run
 * queue, as fib__group_wake would put it, without that call and its
 * look at the thread's runtime: a running fiber's `rt` is the worker
 * whose thread runs it, and f's is read only now that f is ours
 * (workers.h: a parked fiber does not move). */
static __attribute__((noinline)) int wake_partner(struct fib__fiber *self,
                                                  struct fib__fiber *f) {
  if (self && f->rt == self->rt) {
    fib__fiber_unpark(f);
    fib__runq_push_front(&self->rt->runq, &f->runq);
    return 0;
  }
  fib__wake_claimed(f, 1);
  return 0;
}

/* Wait on q (the channel's lock held: released once linked). */
static __attribute__((noinline)) int wait_shared(struct chan *c,
                                                 struct fib__waitq *q,
                                                 struct fib__fiber *self,
                                                 void *elem,
                                                 uint64_t deadline_ns) {
  if (!self) /* a plain thread */
    return fib__thread_wait(q, elem, deadline_ns, &c->lock);
  return fib__waitq_wait_block(q, self, elem, deadline_ns, &c->lock);
}

static __attribute__((noinline)) int send_shared_any(struct chan *c,
                                                     const void *elem,
                                                     uint64_t deadline_ns);

/* A shared channel's send (storage.h): the same under its lock. `fast`
 * (a constant) for the common call, which makes no call but a last one
 * and so sets up no frame: copy_inline(elem_size) holds (copy_in's
 * `small`), and a lock found held starts the call again as
 * send_shared_any, whose wait for it may call sched_yield. */
static ALWAYS_INLINE int send_shared_in(struct chan *c, const void *elem,
                                        uint64_t deadline_ns, int fast) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  if (err && !(err == FIB_EPERM && plain_thread()))
    return err;
  /* the thread's worker (a fiber's is its `rt`): read after a lock that
   * may have waited, during which a fiber may have moved */
  struct fib_runtime *rt = self ? self->rt : NULL;
  int held; /* how (sched/bias.h): the unlock need not look again */
  if (!fast) {
    rt = fib__block_lock(&c->lock, self);
    held = fib__block_held(&c->lock, rt);
  } else if (!(held = fib__block_trylock(&c->lock, rt))) {
    return send_shared_any(c, elem, deadline_ns); /* nothing done yet */
  }
  struct fib__fiber *wake = NULL;
  err = try_send_in(c, elem, 1, &wake, fast);
  if (err != WOULD_WAIT) {
    fib__block_release(&c->lock, held);
    if (wake) /* err is 0 */
      return wake_partner(self, wake);
    return err;
  }
  return wait_shared(c, &c->sendq, self, (void *)(uintptr_t)elem,
                     deadline_ns); /* unlocks */
}

/* Any element size, and a lock that may be held: send_shared_in's
 * `fast` off. */
static __attribute__((noinline)) int send_shared_any(struct chan *c,
                                                     const void *elem,
                                                     uint64_t deadline_ns) {
  return send_shared_in(c, elem, deadline_ns, 0);
}

static SHARED_PATH int send_shared(struct chan *c, const void *elem,
                                   uint64_t deadline_ns) {
  if (!elem && c->elem_size)
    return FIB_EINVAL;
  if (!copy_inline(c->elem_size))
    return send_shared_any(c, elem, deadline_ns);
  return send_shared_in(c, elem, deadline_ns, 1);
}

static ALWAYS_INLINE int chan_send_until_body(fib_chan *ch, const void *elem,
                                              uint64_t deadline_ns) {
  struct chan *c = chan_of(ch);
  if (!c) {
    c = fib__live(ch, FIB__SHARED_MAGIC(CHAN_MAGIC));
    return c ? send_shared(c, elem, deadline_ns) : FIB_EINVAL;
  }
  if (!elem && c->elem_size)
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  struct fib__wnode *n = c->recvq.head;
  if (!n) {
    if (!c->closed) {
      if (c->count < c->cap) {
        ring_put(c, elem);
        return 0;
      }
      /* nobody to hand the value to and no room: wait, without the slow
       * half's second look at the same fields */
      if (deadline_ns == FIB__NO_DEADLINE) /* no frame: waitq.h */
        return fib__waitq_wait_tail(&c->sendq, self,
                                    (void *)(uintptr_t)elem);
      return send_wait(c, self, elem, deadline_ns);
    }
  } else if (n->fiber->state == FIB__FIBER_BLOCKED &&
             !n->fiber->timer_armed && copy_inline(c->elem_size)) {
    /* A live receiver waits, so the buffer is empty and the channel open
     * (the invariants above): hand the value over here, as try_send
     * would, without a call and the slow half's second look. (With a
     * timer to disarm, in the slow half: a call here would cost every
     * call a stack frame.) */
    struct fib__fiber *f = n->fiber;
    if (n->elem)
      copy(n->elem, elem, c->elem_size);
    fib__waitq_hand_first(&c->recvq, f);
    return 0;
  }
  return send_slow(c, self, elem, deadline_ns);
}

/* The preemption point of the seeded test mode, out of the way (seed.h). */
FIB__PREEMPTED(int, chan_send_until_preempted, chan_send_until_body,
               (fib_chan *ch, const void *elem, uint64_t deadline_ns),
               (ch, elem, deadline_ns))

int fib_chan_send_until(fib_chan *ch, const void *elem, uint64_t deadline_ns) {
  if (fib__preempt_any())
    return chan_send_until_preempted(ch, elem, deadline_ns);
  return chan_send_until_body(ch, elem, deadline_ns);
}

/* The body again, with no deadline, rather than a jump to the call above:
 * on every send. */
int fib_chan_send(fib_chan *ch, const void *elem) {
  if (fib__preempt_any())
    return chan_send_until_preempted(ch, elem, FIB__NO_DEADLINE);
  return chan_send_until_body(ch, elem, FIB__NO_DEADLINE);
}

static __attribute__((noinline)) int recv_slow(struct chan *c,
                                               struct fib__fiber *self,
                                               void *out,
                                               uint64_t deadline_ns) {
  int err = try_recv(c, out, 0, NULL);
  if (err != WOULD_WAIT)
    return err;
  return recv_wait(c, self, out, deadline_ns);
}

static __attribute__((noinline)) int recv_shared_any(struct chan *c,
                                                     void *out,
                                                     uint64_t deadline_ns);

/* A shared channel's receive (storage.h): the same under its lock;
 * `fast` as in send_shared_in. */
static ALWAYS_INLINE int recv_shared_in(struct chan *c, void *out,
                                        uint64_t deadline_ns, int fast) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  if (err && !(err == FIB_EPERM && plain_thread()))
    return err;
  struct fib_runtime *rt = self ? self->rt : NULL; /* as in send */
  int held;
  if (!fast) {
    rt = fib__block_lock(&c->lock, self);
    held = fib__block_held(&c->lock, rt);
  } else if (!(held = fib__block_trylock(&c->lock, rt))) {
    return recv_shared_any(c, out, deadline_ns); /* nothing done yet */
  }
  struct fib__fiber *wake = NULL;
  err = try_recv_in(c, out, 1, &wake, fast);
  if (err != WOULD_WAIT) {
    fib__block_release(&c->lock, held);
    if (wake) /* err is 0 */
      return wake_partner(self, wake);
    return err;
  }
  return wait_shared(c, &c->recvq, self, out, deadline_ns); /* unlocks */
}

/* As send_shared_any. */
static __attribute__((noinline)) int recv_shared_any(struct chan *c,
                                                     void *out,
                                                     uint64_t deadline_ns) {
  return recv_shared_in(c, out, deadline_ns, 0);
}

static SHARED_PATH int recv_shared(struct chan *c, void *out,
                                   uint64_t deadline_ns) {
  if (!copy_inline(c->elem_size))
    return recv_shared_any(c, out, deadline_ns);
  return recv_shared_in(c, out, deadline_ns, 1);
}

static ALWAYS_INLINE int chan_recv_until_body(fib_chan *ch, void *out,
                                              uint64_t deadline_ns) {
  struct chan *c = chan_of(ch);
  if (!c) {
    c = fib__live(ch, FIB__SHARED_MAGIC(CHAN_MAGIC));
    return c ? recv_shared(c, out, deadline_ns) : FIB_EINVAL;
  }
  struct fib__fiber *self;
  int err = fib__sync_waiter(&self);
  if (err)
    return err;
  struct fib__wnode *n = c->sendq.head;
  if (!n) {
    if (c->count) {
      ring_take(c, out);
      return 0;
    }
    if (!c->closed) { /* nothing to take: wait (as in send) */
      if (deadline_ns == FIB__NO_DEADLINE) /* no frame: waitq.h */
        return fib__waitq_wait_tail(&c->recvq, self, out);
      return recv_wait(c, self, out, deadline_ns);
    }
  } else if (!c->count && n->fiber->state == FIB__FIBER_BLOCKED &&
             !n->fiber->timer_armed && copy_inline(c->elem_size)) {
    /* unbuffered: take the value from the live sender, as try_recv
     * would (as in send) */
    struct fib__fiber *f = n->fiber;
    if (out)
      copy(out, n->elem, c->elem_size);
    fib__waitq_hand_first(&c->sendq, f);
    return 0;
  }
  return recv_slow(c, self, out, deadline_ns);
}

/* The preemption point of the seeded test mode, out of the way (seed.h). */
FIB__PREEMPTED(int, chan_recv_until_preempted, chan_recv_until_body,
               (fib_chan *ch, void *out, uint64_t deadline_ns),
               (ch, out, deadline_ns))

int fib_chan_recv_until(fib_chan *ch, void *out, uint64_t deadline_ns) {
  if (fib__preempt_any())
    return chan_recv_until_preempted(ch, out, deadline_ns);
  return chan_recv_until_body(ch, out, deadline_ns);
}

/* The body again, as for fib_chan_send. */
int fib_chan_recv(fib_chan *ch, void *out) {
  if (fib__preempt_any())
    return chan_recv_until_preempted(ch, out, FIB__NO_DEADLINE);
  return chan_recv_until_body(ch, out, FIB__NO_DEADLINE);
}

/* ---- select */

#define SELECT_NODES_ON_STACK 8

/* The channels of a shared select, each once, in address order: the
 * order every select takes their locks in, so two selects cannot
 * deadlock. */
struct chan_set {
  struct chan *on_stack[SELECT_NODES_ON_STACK];
  struct chan **c;
  size_t n;
};

static int chan_set_make(struct chan_set *set, fib_select_case *cases,
                         size_t n, size_t live) {
  set->c = set->on_stack;
  set->n = 0;
  if (live > SELECT_NODES_ON_STACK) {
    set->c = fib__sys_malloc(live * sizeof *set->c);
    if (!set->c)
      return FIB_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    if (cases[i].op == FIB_SELECT_DEFAULT || !cases[i].chan)
      continue;
    struct chan *c = fib__live(cases[i].chan, FIB__SHARED_MAGIC(CHAN_MAGIC));
    size_t at = set->n;
    while (at && set->c[at - 1] > c)
      at--;
    if (at && set->c[at - 1] == c)
      continue; /* already in */
    memmove(&set->c[at + 1], &set->c[at], (set->n - at) * sizeof *set->c);
    set->c[at] = c;
    set->n++;
  }
  return 0;
}

static void chan_set_unlock_first(struct chan_set *set, size_t n,
                                  struct fib_runtime *rt) {
  for (size_t i = n; i-- > 0;)
    fib__block_unlock(&set->c[i]->lock, rt);
}

/* Hold every channel's lock. One kept by another worker is waited for
 * holding none (its keeper may be spinning on one we hold), then all
 * are taken again. */
static void chan_set_lock(struct chan_set *set, struct fib__fiber *self) {
  for (;;) {
    struct fib_runtime *rt = self->rt; /* again after a wait */
    size_t i;
    for (i = 0; i < set->n; i++) {
      struct fib__block *b = &set->c[i]->lock;
      if (fib__block_kept(b, rt))
        continue;
      fib__spin_lock(&b->word);
      if (!fib__block_enter(b, rt))
        break; /* kept elsewhere, and asked back */
    }
    if (i == set->n)
      return;
    chan_set_unlock_first(set, i, rt);
    /* the wait for its keeper to let go, alone */
    struct fib__block *b = &set->c[i]->lock;
    fib__block_unlock(b, fib__block_lock(b, self));
  }
}

static void chan_set_unlock(struct chan_set *set, struct fib_runtime *rt) {
  chan_set_unlock_first(set, set->n, rt);
}

/* Choose uniformly among the ready cases: the k-th ready one replaces the
 * choice with probability 1/k (reservoir sampling, one pass). */
/* The record of a case's channel, which fib_select_until has checked
 * (live, and of the select's one mode) before it looks at any: the
 * storage is the record (fib__live), with no magic to test again. */
static inline struct chan *chan_checked(fib_chan *ch) {
  return (struct chan *)(void *)ch;
}

static ALWAYS_INLINE size_t choose_ready(fib_select_case *cases, size_t n,
                                         int shared) {
  size_t chosen = SIZE_MAX, ready = 0;
  for (size_t i = 0; i < n; i++) {
    fib_select_case *k = &cases[i];
    if (k->op == FIB_SELECT_DEFAULT || !k->chan)
      continue;
    struct chan *c = chan_checked(k->chan);
    if (k->op == FIB_SELECT_SEND ? send_ready(c, shared)
                                 : recv_ready(c, shared)) {
      ready++;
      if (ready == 1 || fib__rand_below(ready) == 0)
        chosen = i;
    }
  }
  return chosen;
}

/* Link one node per case into its queue: the wait of select's fiber. */
static void link_nodes(fib_select_case *cases, size_t n,
                       struct fib__wnode *nodes, struct fib__wait *w) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    fib_select_case *k = &cases[i];
    if (k->op == FIB_SELECT_DEFAULT || !k->chan)
      continue;
    struct chan *c = chan_checked(k->chan);
    struct fib__wnode *nd = &nodes[m++];
    nd->fiber = w->fiber;
    nd->wait = w;
    nd->idx = i;
    nd->elem = k->elem;
    fib__waitq_push(k->op == FIB_SELECT_SEND ? &c->sendq : &c->recvq, nd);
  }
  w->count = m;
}

/* fib_select over shared channels (all of them: storage.h). The same as
 * the local select below, under the locks of all its channels at once;
 * after the park, each channel's lock is taken alone to unlink a node. */
static SHARED_PATH int select_shared(fib_select_case *cases, size_t n,
                                     size_t def, size_t live,
                                     struct fib__fiber *self,
                                     uint64_t deadline_ns) {
  struct chan_set set;
  int err = chan_set_make(&set, cases, n, live);
  if (err)
    return err;
  struct fib__wnode on_stack[SELECT_NODES_ON_STACK];
  struct fib__wnode *nodes = on_stack;
  if (live > SELECT_NODES_ON_STACK) {
    nodes = fib__sys_malloc(live * sizeof *nodes);
    if (!nodes) {
      if (set.c != set.on_stack)
        fib__sys_free(set.c);
      return FIB_ENOMEM;
    }
  }
  int result = 0;
  struct fib__fiber *wake = NULL; /* woken once the locks are released */
  chan_set_lock(&set, self);
  for (;;) {
    size_t chosen = choose_ready(cases, n, 1);
    if (chosen == SIZE_MAX)
      break;
    fib_select_case *k = &cases[chosen];
    struct chan *c = fib__live(k->chan, FIB__SHARED_MAGIC(CHAN_MAGIC));
    /* A peer seen ready may have timed out since (its claim lost): then
     * the case was not ready after all; look again. */
    err = k->op == FIB_SELECT_SEND ? try_send(c, k->elem, 1, &wake)
                                   : try_recv(c, k->elem, 1, &wake);
    if (err != WOULD_WAIT) {
      k->err = err;
      result = (int)chosen;
      goto done;
    }
  }
  if (def != SIZE_MAX) {
    cases[def].err = 0;
    result = (int)def;
    goto done;
  }
  if (!live && deadline_ns == FIB__NO_DEADLINE) {
    result = FIB_EDEADLK;
    goto done;
  }
  struct fib__wait w = {.fiber = self, .nodes = nodes,
                        .nodes_on_heap = nodes != on_stack,
                        .heap_extra = set.c != set.on_stack ? set.c : NULL};
  link_nodes(cases, n, nodes, &w);
  self->wait = &w;
  fib__claim_arm(self, FIB__CLAIM_ANY); /* before the nodes can be seen */
  chan_set_unlock(&set, self->rt);
  if (deadline_ns != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline_ns);
  (void)fib__fiber_suspend_armed(self, FIB__FIBER_BLOCKED);
  self->wait = NULL;
  /* why it woke, before the unlinks: a lock kept elsewhere is waited
   * for by yielding, and a yield writes `wake` */
  result = self->wake;
  for (size_t j = 0; j < w.count; j++) {
    struct chan *c =
        fib__live(cases[nodes[j].idx].chan, FIB__SHARED_MAGIC(CHAN_MAGIC));
    struct fib_runtime *rt = fib__block_lock(&c->lock, self);
    if (nodes[j].q)
      fib__waitq_unlink(&nodes[j]);
    fib__block_unlock(&c->lock, rt);
  }
  if (!result) {
    cases[w.fired].err = w.result;
    result = (int)w.fired;
  }
  goto out;
done:
  chan_set_unlock(&set, self->rt);
  if (wake)
    fib__wake_claimed(wake, 1);
out:
  if (nodes != on_stack)
    fib__sys_free(nodes);
  if (set.c != set.on_stack)
    fib__sys_free(set.c);
  return result;
}

int fib_select_until(fib_select_case *cases, size_t n, uint64_t deadline_ns) {
  fib__preempt_point(); /* seeded test mode (sched/seed.h) */
  if ((n && !cases) || n > INT_MAX)
    return FIB_EINVAL;
  size_t def = SIZE_MAX, live = 0, shared = 0;
  for (size_t i = 0; i < n; i++) {
    fib_select_case *k = &cases[i];
    struct chan *c;
    int sh;
    switch (k->op) {
    case FIB_SELECT_DEFAULT:
      if (def != SIZE_MAX)
        return FIB_EINVAL;
      def = i;
      break;
    case FIB_SELECT_SEND:
    case FIB_SELECT_RECV:
      if (!k->chan)
        break; /* never ready */
      c = chan_of_in(k->chan, &sh);
      if (!c || (k->op == FIB_SELECT_SEND && !k->elem && c->elem_size))
        return FIB_EINVAL;
      live++;
      shared += (size_t)sh;
      break;
    default:
      return FIB_EINVAL;
    }
  }
  if (shared && shared != live)
    return FIB_EINVAL; /* one mode for all its channels */
  if (!shared && live) { /* no channel at all is no local one either */
    int refused = fib__sync_refused();
    if (refused)
      return refused;
  }
  struct fib__fiber *self = fib__fiber_self();
  if (!self)
    return FIB_EPERM;
  if (def == SIZE_MAX && fib__cancelled(self))
    return FIB_ECANCELED;
  if (shared)
    return select_shared(cases, n, def, live, self, deadline_ns);

  size_t chosen = choose_ready(cases, n, 0);
  if (chosen != SIZE_MAX) {
    fib_select_case *k = &cases[chosen];
    struct chan *c = chan_of(k->chan);
    /* ready: it completes */
    k->err = k->op == FIB_SELECT_SEND ? try_send(c, k->elem, 0, NULL)
                                      : try_recv(c, k->elem, 0, NULL);
    return (int)chosen;
  }
  if (def != SIZE_MAX) {
    cases[def].err = 0;
    return (int)def;
  }
  if (!live && deadline_ns == FIB__NO_DEADLINE)
    return FIB_EDEADLK;

  /* Wait on every case at once. */
  struct fib__wnode on_stack[SELECT_NODES_ON_STACK];
  struct fib__wnode *nodes = on_stack;
  if (live > SELECT_NODES_ON_STACK) {
    nodes = fib__sys_malloc(live * sizeof *nodes);
    if (!nodes)
      return FIB_ENOMEM;
  }
  struct fib__wait w = {.fiber = self, .nodes = nodes,
                        .nodes_on_heap = nodes != on_stack};
  link_nodes(cases, n, nodes, &w);
  self->wait = &w;
  int err = fib__fiber_park(self, FIB__FIBER_BLOCKED, deadline_ns);
  self->wait = NULL;
  for (size_t j = 0; j < w.count; j++)
    if (nodes[j].q)
      fib__waitq_unlink(&nodes[j]);
  if (nodes != on_stack)
    fib__sys_free(nodes);
  if (err)
    return err;
  cases[w.fired].err = w.result;
  return (int)w.fired;
}

int fib_select(fib_select_case *cases, size_t n) {
  return fib_select_until(cases, n, FIB__NO_DEADLINE);
}
