/*
 * runq.h -- the run queue: the fibers ready to run, in FIFO order.
 *
 * This is the interface the scheduler loop uses and the one a multi-threaded
 * work-stealing queue will implement: push a ready fiber at the back, or
 * into the "next" slot; peek at and pop the next one; ask the length. Today
 * it is an intrusive singly linked list plus the slot: no allocation, O(1)
 * each way, owned by one thread.
 *
 * The next slot (Go's runnext): a fiber spawned by a running fiber runs
 * next, when its spawner gives way, instead of after everything queued.
 * Trees of fibers (fork/join, skynet) then run depth-first and keep few
 * fibers alive at once, each with its stack still hot. A fiber pushed into
 * the slot moves its previous occupant to the back of the queue, so nothing
 * waits behind more than one newcomer: the order stays fair.
 */
#ifndef FIB_SCHED_RUNQ_H
#define FIB_SCHED_RUNQ_H

#include <stddef.h>

struct fib__runq_node {
  struct fib__runq_node *next;
};

struct fib__runq {
  struct fib__runq_node *next; /* popped first, if not NULL */
  struct fib__runq_node *head; /* then the FIFO; NULL when empty */
  struct fib__runq_node *tail; /* valid only when head is not NULL */
  size_t len;                  /* both together */
};

static inline void fib__runq_init(struct fib__runq *q) {
  q->next = q->head = q->tail = NULL;
  q->len = 0;
}

static inline void fib__runq_push(struct fib__runq *q,
                                  struct fib__runq_node *n) {
  n->next = NULL;
  if (q->head)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
  q->len++;
}

/* Put n in the next slot; a fiber already there goes to the back. */
static inline void fib__runq_push_next(struct fib__runq *q,
                                       struct fib__runq_node *n) {
  struct fib__runq_node *old = q->next;
  q->next = n;
  q->len++;
  if (old) {
    q->len--; /* fib__runq_push counts it again */
    fib__runq_push(q, old);
  }
}

static inline struct fib__runq_node *fib__runq_peek(const struct fib__runq *q) {
  return q->next ? q->next : q->head;
}

static inline struct fib__runq_node *fib__runq_pop(struct fib__runq *q) {
  struct fib__runq_node *n = q->next;
  if (n) {
    q->next = NULL;
    q->len--;
    return n;
  }
  n = q->head;
  if (n) {
    q->head = n->next;
    q->len--;
  }
  return n;
}

static inline size_t fib__runq_len(const struct fib__runq *q) { return q->len; }

#endif
