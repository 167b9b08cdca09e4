/* SPDX-License-Identifier: MIT */
/* poller.c -- the thread's epoll set and its descriptor records. */
#include "poller.h"
#include "../sys.h"
#include "../tls.h"
#include "fibers/io.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static FIB__TLS struct fib__poller *tl_poller;
static pthread_key_t poller_key;
static pthread_once_t poller_key_once = PTHREAD_ONCE_INIT;

/* Events handled per epoll_wait: more wait for the next call. */
#define EVENTS_PER_WAIT 128

/* Pollers whose thread has exited with fibers still waiting in them: the
 * fibers' runtime outlived the thread, and the wait nodes on those fibers'
 * stacks are linked into the records. Freeing the records then would
 * leave the nodes pointing into freed memory, which destroy (or the fiber
 * itself, woken by its deadline or a cancel on another thread) would
 * write through. Guarded by orphans_lock (a destroy may run on any
 * thread). */
static pthread_mutex_t orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fib__poller *orphans;

static int has_waiters(const struct fib__poller *p) {
  for (size_t i = 0; i < p->nrecs; i++)
    if (p->recs[i] && (!fib__waitq_empty(&p->recs[i]->readers) ||
                       !fib__waitq_empty(&p->recs[i]->writers)))
      return 1;
  return 0;
}

static void poller_release(struct fib__poller *p) {
  for (size_t i = 0; i < p->nrecs; i++)
    fib__sys_free(p->recs[i]);
  fib__sys_free(p->recs);
  if (p->epfd >= 0)
    close(p->epfd);
  if (p->wake_fd >= 0)
    close(p->wake_fd);
  fib__sys_free(p);
}

/* The thread exits (poller_key's destructor). */
static void poller_free(void *arg) {
  struct fib__poller *p = arg;
  if (tl_poller == p)
    tl_poller = NULL;
  if (!has_waiters(p)) {
    poller_release(p);
    return;
  }
  /* Fibers of a runtime that outlives the thread wait here. Nobody polls
   * this set again (the runtime's poll hook uses the running thread's
   * own poller), so its descriptor goes now; the records stay, nodes
   * and all, until the runtime is destroyed. Waking those fibers here
   * would touch a run queue another thread may be running. */
  close(p->epfd);
  p->epfd = -1;
  if (p->wake_fd >= 0) /* nobody sleeps here any more: nobody writes it */
    close(p->wake_fd);
  p->wake_fd = -1;
  pthread_mutex_lock(&orphans_lock);
  p->next_orphan = orphans;
  orphans = p;
  pthread_mutex_unlock(&orphans_lock);
}

/* Unlink rt's nodes from q. */
static void unlink_runtime(struct fib__waitq *q, const struct fib_runtime *rt) {
  struct fib__wnode *n = q->head;
  while (n) {
    struct fib__wnode *next = n->next;
    if (n->fiber->rt == rt)
      fib__waitq_unlink(n);
    n = next;
  }
}

void fib__poller_discard(struct fib_runtime *rt) {
  pthread_mutex_lock(&orphans_lock);
  struct fib__poller **pp = &orphans;
  while (*pp) {
    struct fib__poller *p = *pp;
    for (size_t i = 0; i < p->nrecs; i++)
      if (p->recs[i]) {
        unlink_runtime(&p->recs[i]->readers, rt);
        unlink_runtime(&p->recs[i]->writers, rt);
      }
    if (has_waiters(p)) {
      pp = &p->next_orphan;
    } else {
      *pp = p->next_orphan;
      poller_release(p);
    }
  }
  pthread_mutex_unlock(&orphans_lock);
}

static void poller_key_create(void) {
  (void)pthread_key_create(&poller_key, poller_free);
}

struct fib__poller *fib__poller_peek(void) { return tl_poller; }

struct fib__poller *fib__poller_get(int *err) {
  struct fib__poller *p = tl_poller;
  if (p)
    return p;
  p = fib__sys_calloc(1, sizeof *p);
  if (!p) {
    *err = FIB_ENOMEM;
    return NULL;
  }
  p->wake_fd = -1;
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) {
    *err = -errno;
    fib__sys_free(p);
    return NULL;
  }
  /* Freed at thread exit: the key's destructor runs for a non-NULL value. */
  pthread_once(&poller_key_once, poller_key_create);
  if (pthread_setspecific(poller_key, p) != 0) {
    close(p->epfd);
    fib__sys_free(p);
    *err = FIB_ENOMEM;
    return NULL;
  }
  tl_poller = p;
  return p;
}

struct fib__fdrec *fib__poller_rec(struct fib__poller *p, int fd, int *err) {
  if (fd < 0) {
    *err = FIB_EBADF;
    return NULL;
  }
  size_t i = (size_t)fd;
  if (i >= p->nrecs) {
    size_t n = p->nrecs ? p->nrecs : 64;
    while (n <= i)
      n *= 2;
    struct fib__fdrec **recs = fib__sys_realloc(p->recs, n * sizeof *recs);
    if (!recs) {
      *err = FIB_ENOMEM;
      return NULL;
    }
    memset(recs + p->nrecs, 0, (n - p->nrecs) * sizeof *recs);
    p->recs = recs;
    p->nrecs = n;
  }
  struct fib__fdrec *r = p->recs[i];
  if (!r) {
    r = fib__sys_calloc(1, sizeof *r); /* unknown, unwatched, queues empty */
    if (!r) {
      *err = FIB_ENOMEM;
      return NULL;
    }
    p->recs[i] = r;
  }
  return r;
}

int fib__poller_wake_fd(struct fib__poller *p) {
  if (p->wake_fd >= 0)
    return p->wake_fd;
  int fd = fib__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return -errno;
  /* Level-triggered: the sleeper reads it back to 0 as it wakes, so it is
   * readable only between a waker's write and that read. */
  struct epoll_event ev = {.events = EPOLLIN,
                           .data.u64 = FIB__POLLER_WAKE_TAG};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  p->wake_fd = fd;
  return fd;
}

/* An event's tag: the descriptor and the generation it was watched in
 * (never FIB__POLLER_WAKE_TAG: a descriptor's number is below 2^31). */
static uint64_t tag(int fd, uint32_t gen) {
  return (uint64_t)gen << 32 | (uint32_t)fd;
}

int fib__poller_watch(struct fib__poller *p, int fd, struct fib__fdrec *r) {
  if (r->watched)
    return 0;
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.u64 = tag(fd, r->gen)};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    if (errno != EEXIST)
      return -errno;
    /* Still in the set from before a close(2) the runtime did not see
     * (another descriptor of the same open file kept it there): take it
     * with this generation. */
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
      return -errno;
  }
  r->watched = 1;
  return 0;
}

void fib__poller_forget(struct fib__poller *p, int fd, int result,
                        int still_open) {
  if (fd < 0 || (size_t)fd >= p->nrecs || !p->recs[fd])
    return;
  struct fib__fdrec *r = p->recs[fd];
  fib__waitq_complete_all(&r->readers, result);
  fib__waitq_complete_all(&r->writers, result);
  if (r->watched && still_open) /* before close: a dup would keep it in */
    (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
  r->watched = 0;
  r->kind = FIB__FD_UNKNOWN;
  r->ready = 0;
  r->stream = 0;
  r->drained = 0;
  r->hup = 0;
  r->gen++;
}

/* What an event means for the record's waiters. */
static void deliver(struct fib__fdrec *r, uint32_t events) {
  if (r->on_event) {
    r->on_event(r->on_event_arg);
    return;
  }
  unsigned dirs = 0;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    r->hup = 1;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    dirs |= FIB_IO_READ;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
    dirs |= FIB_IO_WRITE;
  if (dirs & FIB_IO_READ) {
    r->drained = 0;
    if (fib__waitq_first(&r->readers))
      fib__waitq_complete_all(&r->readers, 0);
    else
      r->ready |= FIB_IO_READ;
  }
  if (dirs & FIB_IO_WRITE) {
    if (fib__waitq_first(&r->writers))
      fib__waitq_complete_all(&r->writers, 0);
    else
      r->ready |= FIB_IO_WRITE;
  }
}

/* epoll_wait's timeout for an absolute deadline: milliseconds, rounded up
 * (a wake-up before the deadline would only poll again). */
static int timeout_ms(uint64_t deadline) {
  if (deadline == 0)
    return 0;
  if (deadline == FIB__NO_DEADLINE)
    return -1;
  uint64_t now = fib_now_ns();
  if (deadline <= now)
    return 0;
  uint64_t ms = (deadline - now + 999999) / 1000000;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int fib__poller_poll(struct fib__poller *p, uint64_t deadline) {
  struct epoll_event evs[EVENTS_PER_WAIT];
  int n;
  /* The loop looks at I/O right after its idle wait (the fibers that wait
   * woke it): that wait has just taken every event there was, and no
   * fiber has run since to make more. */
  if (deadline == 0 && p->just_waited) {
    p->just_waited = 0;
    return 0;
  }
  p->just_waited = deadline != 0;
  do
    n = epoll_wait(p->epfd, evs, EVENTS_PER_WAIT, timeout_ms(deadline));
  while (n < 0 && errno == EINTR && deadline == FIB__NO_DEADLINE);
  for (int i = 0; i < n; i++) {
    if (evs[i].data.u64 == FIB__POLLER_WAKE_TAG)
      continue; /* a wake-up: it has ended the wait; the sleeper reads it */
    int fd = (int)(uint32_t)evs[i].data.u64;
    uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
    struct fib__fdrec *r =
        (size_t)fd < p->nrecs ? p->recs[fd] : NULL;
    if (r && r->watched && r->gen == gen) /* else: a closed one's, stale */
      deliver(r, evs[i].events);
  }
  return n > 0 ? n : 0;
}
