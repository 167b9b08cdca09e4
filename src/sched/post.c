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
 */
#include "inbox.h"
#include "workers.h"
#include "../sys.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* fib_call's reply, on its caller's stack. */
struct fib__reply {
  void *result;
  int done;                  /* plain-thread caller: 1 once result is set
                                (atomic; its futex word) */
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
   * to sleep (workers.h: seq_cst, the sleeper's half looks again). */
  __atomic_store_n(&rt->posted, 1, __ATOMIC_SEQ_CST);
  fib__waker_enter(rt);
  fib__inbox_push(&rt->posts, &p->link);
  fib__runtime_wake(rt);
  fib__waker_leave(rt); /* rt may be gone from here on: workers.h */
}

static void *post_main(void *arg) {
  struct fib__post *p = arg;
  void *result = p->fn(p->arg);
  struct fib__reply *r = p->reply;
  fib__sys_free(p);
  if (!r)
    return NULL;
  r->result = result;
  struct fib__fiber *f = r->waiter;
  if (f) {
    /* Its claim is armed (COMPLETE) and only we may take it. */
    if (fib__claim_take(f, 1))
      fib__group_wake(f, 0, 0);
    return NULL;
  }
  /* release: the caller reads result after it sees done */
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
  (void)syscall(SYS_futex, &r->done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  return NULL;
}

void fib__post_take(struct fib_runtime *rt) {
  /* The ones held back last time first, then the new ones, oldest first. */
  struct fib__runq_node *fifo = rt->posts_held, **end = &fifo;
  rt->posts_held = NULL;
  while (*end)
    end = &(*end)->next;
  *end = fib__inbox_take(&rt->posts);
  static const fib_attr detached = {.flags = FIB_DETACHED};
  while (fifo) {
    /* Read first: once spawned, it may run on another worker and go. */
    struct fib__runq_node *next = fifo->next;
    if (fib_spawn(rt, post_main, fifo, &detached, NULL) != 0) {
      /* No memory now: hold the rest back for a later turn (the sleep is
       * short while any are held). Nothing is lost, the order is kept. */
      rt->posts_held = fifo;
      return;
    }
    fifo = next;
  }
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
    while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE))
      (void)syscall(SYS_futex, &r.done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL,
                    0);
  }
  if (result)
    *result = r.result;
  return 0;
}
