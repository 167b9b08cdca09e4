/* SPDX-License-Identifier: MIT */
/*
 * runq.h -- the run queue: the fibers ready to run.
 *
 * This is the interface the scheduler loop uses and the one a multi-threaded
 * work-stealing queue will implement: push a ready fiber at the back or at
 * the front; choose, look at and take the next one, or pop it; ask the
 * length. Today it is two intrusive singly linked lists: no allocation,
 * O(1) each way, owned by one thread.
 *
 * The front (work-first order, as in Cilk and Go's runnext): a fiber spawned
 * by a running fiber, a joiner whose child has just finished, and a fiber
 * whose channel send or receive a partner has just completed, run before
 * the fibers already queued. Trees of fibers (fork/join, and those that
 * report through channels, as the canonical skynet does) then run
 * depth-first: few fibers are alive at once, their stacks come hot from the
 * pool, and a result reaches its joiner or receiver at once. Fibers pushed to the front
 * while one fiber runs keep their order among themselves (a fiber that
 * spawns a, b, c runs them in that order). A worker of several appends
 * the never-run fibers it takes from an offer list at the front's end
 * (workers.c, take_offer): at the back, the budget below would start one
 * of them every FIB__RUNQ_FRONT_BUDGET pops.
 *
 * Fairness: the front can only grow while fibers run without giving way
 * for good, but a fiber that spawns-and-joins in a loop, or two fibers that
 * ping-pong through a channel, would keep the back waiting forever. So after FIB__RUNQ_FRONT_BUDGET front pops in a row with
 * fibers waiting at the back, the back's first fiber goes first once.
 */
#ifndef FIB__SCHED_RUNQ_H
#define FIB__SCHED_RUNQ_H

#include <stddef.h>

#define FIB__RUNQ_FRONT_BUDGET 64

struct fib__runq_node {
  struct fib__runq_node *next;
};

struct fib__list {
  struct fib__runq_node *head; /* NULL when empty */
  struct fib__runq_node *tail; /* valid only when head is not NULL */
};

struct fib__runq {
  struct fib__list front;      /* popped first (within the budget) */
  struct fib__list back;       /* FIFO */
  struct fib__runq_node *last_front; /* the last node pushed to the front
                                        since the last pop, or NULL */
  unsigned front_streak;       /* front pops in a row while back waited */
  size_t len;                  /* both together */
};

static inline void fib__runq_init(struct fib__runq *q) {
  q->front.head = q->back.head = NULL;
  q->front.tail = q->back.tail = NULL;
  q->last_front = NULL;
  q->front_streak = 0;
  q->len = 0;
}

static inline void fib__list_push(struct fib__list *l,
                                  struct fib__runq_node *n) {
  n->next = NULL;
  if (l->head)
    l->tail->next = n;
  else
    l->head = n;
  l->tail = n;
}

/* At the back: after everything queued. */
static inline void fib__runq_push(struct fib__runq *q,
                                  struct fib__runq_node *n) {
  fib__list_push(&q->back, n);
  q->len++;
}

/* At the front: before everything queued, except what was pushed to the
 * front since the last pop (which keeps its place before n). */
static inline void fib__runq_push_front(struct fib__runq *q,
                                        struct fib__runq_node *n) {
  struct fib__runq_node *after = q->last_front;
  if (after) {
    n->next = after->next;
    after->next = n;
    if (q->front.tail == after)
      q->front.tail = n;
  } else {
    n->next = q->front.head;
    if (!q->front.head)
      q->front.tail = n;
    q->front.head = n;
  }
  q->last_front = n;
  q->len++;
}

/* The list first..last (k nodes, linked through next, last->next NULL)
 * at the front's end: after every fiber at the front, before the back
 * (within the budget). last_front, if any, keeps its place: fibers pushed
 * to the front later still go before these. */
static inline void fib__runq_append_front(struct fib__runq *q,
                                          struct fib__runq_node *first,
                                          struct fib__runq_node *last,
                                          size_t k) {
  if (q->front.head)
    q->front.tail->next = first;
  else
    q->front.head = first;
  q->front.tail = last;
  q->len += k;
}

/* Which list the next pop takes from (NULL: the queue is empty). The
 * common cases first: an empty front costs one test. */
static inline struct fib__list *fib__runq_source(struct fib__runq *q) {
  if (!q->front.head)
    return q->back.head ? &q->back : NULL;
  if (!q->back.head || q->front_streak < FIB__RUNQ_FRONT_BUDGET)
    return &q->front;
  return &q->back;
}

/* Pop from `l`, which fib__runq_source has just chosen (look at its head,
 * decide, then take, with the choice made once). */
static inline struct fib__runq_node *fib__runq_take(struct fib__runq *q,
                                                    struct fib__list *l) {
  struct fib__runq_node *n = l->head;
  l->head = n->next;
  q->len--;
  q->last_front = NULL;
  if (l == &q->back)
    q->front_streak = 0;
  else if (q->back.head)
    q->front_streak++;
  return n;
}

static inline struct fib__runq_node *fib__runq_pop(struct fib__runq *q) {
  struct fib__list *l = fib__runq_source(q);
  return l ? fib__runq_take(q, l) : NULL;
}

/* push(n) then pop, for a yield, when the front is empty and the back is
 * not: the back's head comes off and n goes behind the rest; the length
 * does not change. (An empty front has no last_front: every pop clears
 * it, and so does an extract that empties the front.) */
static inline void fib__runq_rotate(struct fib__runq *q,
                                    struct fib__runq_node *n) {
  struct fib__runq_node *h = q->back.head;
  n->next = NULL;
  q->back.tail->next = n; /* first: h may be the only node */
  q->back.tail = n;
  q->back.head = h->next;
  q->front_streak = 0;
}

static inline size_t fib__runq_len(const struct fib__runq *q) { return q->len; }

/* Take the k-th node (k < length) in pop order: the front, then the back.
 * For the seeded mode's random choice (seed.c), which does not use the
 * front's budget. O(k). */
static inline struct fib__runq_node *fib__runq_take_nth(struct fib__runq *q,
                                                        size_t k) {
  struct fib__list *l = &q->front;
  struct fib__runq_node *prev = NULL, *n = l->head;
  if (!n) {
    l = &q->back;
    n = l->head;
  }
  for (; k; k--) {
    prev = n;
    n = n->next;
    if (!n && l == &q->front) { /* past the front's end: into the back */
      l = &q->back;
      prev = NULL;
      n = l->head;
    }
  }
  if (prev)
    prev->next = n->next;
  else
    l->head = n->next;
  if (l->tail == n)
    l->tail = prev; /* unused when head becomes NULL */
  q->last_front = NULL;
  q->len--;
  return n;
}

/* Move up to `max` of l's nodes that `pick` accepts to `out`, in order. */
static inline size_t fib__list_extract(
    struct fib__list *l, int (*pick)(const struct fib__runq_node *, void *),
    void *ctx, size_t max, struct fib__list *out,
    struct fib__runq_node **last_front) {
  size_t got = 0;
  struct fib__runq_node *prev = NULL, *n = l->head;
  while (n && got < max) {
    struct fib__runq_node *next = n->next;
    if (pick(n, ctx)) {
      if (prev)
        prev->next = next;
      else
        l->head = next;
      if (l->tail == n)
        l->tail = prev;
      if (*last_front == n) /* push_front would link after a moved node */
        *last_front = NULL;
      fib__list_push(out, n);
      got++;
    } else {
      prev = n;
    }
    n = next;
  }
  return got;
}

/* Take up to `max` nodes that `pick` accepts out of q, the back (the
 * oldest) first; the others keep their order. For work stealing: how many
 * were appended to `out`. */
static inline size_t fib__runq_extract(
    struct fib__runq *q, int (*pick)(const struct fib__runq_node *, void *),
    void *ctx, size_t max, struct fib__list *out) {
  size_t got = fib__list_extract(&q->back, pick, ctx, max, out, &q->last_front);
  got += fib__list_extract(&q->front, pick, ctx, max - got, out,
                           &q->last_front);
  q->len -= got;
  return got;
}

#endif
