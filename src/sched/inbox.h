/* SPDX-License-Identifier: MIT */
/*
 * inbox.h -- an intrusive lock-free stack of links in one word: a
 * worker's inbox of fibers (workers.h) and a runtime's posted calls
 * (post.c). Any thread pushes one node at a time with a CAS; its one owner
 * takes the whole stack at once (an exchange with NULL, so there is no pop
 * and no ABA) and reverses it, so that the nodes come out oldest first: in
 * push order for each pusher.
 *
 * The stack only moves nodes; what a push means (waking the owner, the
 * fiber's wake reason, the call to make) is its user's. Apart so that
 * tests/test_model.c hammers this very code on plain threads.
 */
#ifndef FIB__SCHED_INBOX_H
#define FIB__SCHED_INBOX_H

#include "runq.h"

/* Push n onto the stack at *head, from any thread. */
static inline void fib__inbox_push(struct fib__runq_node **head,
                                   struct fib__runq_node *n) {
  struct fib__runq_node *old = __atomic_load_n(head, __ATOMIC_RELAXED);
  do
    n->next = old;
  /* seq_cst: release publishes the node (and what the pusher wrote before,
   * e.g. the fiber's remote_reason); the store half of the pair with
   * the wake-up's load of `parked` (workers.h) */
  while (!__atomic_compare_exchange_n(head, &old, n, 1, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED));
}

/* Take every node pushed so far, oldest first, as a NULL-terminated list
 * through their next links; NULL if there is none. Its owner only. The
 * first look is relaxed: a push it misses is taken at the next turn (the
 * sleeper looks again with seq_cst loads before it sleeps). */
static inline struct fib__runq_node *
fib__inbox_take(struct fib__runq_node **head) {
  if (!__atomic_load_n(head, __ATOMIC_RELAXED))
    return NULL;
  /* acquire: the pushers' writes to the nodes happened before */
  struct fib__runq_node *n = __atomic_exchange_n(head, NULL, __ATOMIC_ACQUIRE);
  struct fib__runq_node *fifo = NULL;
  while (n) { /* newest first: reverse */
    struct fib__runq_node *next = n->next;
    n->next = fifo;
    fifo = n;
    n = next;
  }
  return fifo;
}

#endif
