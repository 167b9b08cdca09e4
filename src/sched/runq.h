/*
 * runq.h -- the run queue: the fibers ready to run, in FIFO order.
 *
 * This is the interface the scheduler loop uses and the one a multi-threaded
 * work-stealing queue will implement: push a ready fiber, pop the next one,
 * ask the length. Today it is an intrusive singly linked list: no
 * allocation, O(1) each way, owned by one thread.
 */
#ifndef FIB_SCHED_RUNQ_H
#define FIB_SCHED_RUNQ_H

#include <stddef.h>

struct fib__runq_node {
  struct fib__runq_node *next;
};

struct fib__runq {
  struct fib__runq_node *head; /* popped next; NULL when empty */
  struct fib__runq_node *tail; /* valid only when head is not NULL */
  size_t len;
};

static inline void fib__runq_init(struct fib__runq *q) {
  q->head = q->tail = NULL;
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

static inline struct fib__runq_node *fib__runq_pop(struct fib__runq *q) {
  struct fib__runq_node *n = q->head;
  if (n) {
    q->head = n->next;
    q->len--;
  }
  return n;
}

static inline size_t fib__runq_len(const struct fib__runq *q) { return q->len; }

#endif
