/* SPDX-License-Identifier: MIT */
/*
 * offload.c -- the offload pool: blocking work runs on a few threads while
 * only the calling fiber parks (<fibers/io.h>, "offload").
 *
 * The pieces:
 *
 *   - the pool (one per process): a FIFO of queued jobs, the list of
 *     running ones, and at most FIB_OFFLOAD_THREADS detached threads that
 *     take jobs from the queue. A thread is started by the call that finds
 *     more jobs queued than threads idle, up to the bound; a thread idle
 *     for IDLE_S seconds leaves (a program that made one name lookup at
 *     start does not keep threads; a steady trickle of jobs does not pay a
 *     thread start per job).
 *   - a port per thread that has offloaded: an eventfd in the thread's
 *     poller (its record's on_event is port_event) and the list of jobs
 *     finished for that thread's fibers. A worker that finishes a job puts
 *     it on its port's list and, if the list was empty, writes the
 *     eventfd; the runtime's loop polls (the fiber counts in
 *     rt->io_waiting while its job is in flight), port_event takes the
 *     list and readies the fibers. The worker also wakes the job's
 *     runtime if it is a host's between bounded calls
 *     (fib__runtime_wake_host): the host's descriptor on io_uring does
 *     not surely see the port's eventfd (finish_locked).
 *   - a job record, on the heap, from the call until the fiber has taken
 *     its result back: it outlives the fiber if the runtime is destroyed
 *     (job_discard: the fiber holds its job, struct fib__hold, so destroy
 *     gives it up).
 *
 * Thread safety: one mutex, pool.lock, guards every field that more than
 * one thread touches: the queue and running lists, each job's links,
 * state and `abandoned`, the counters, and each port's `refs`, `dead`
 * and `done` list. There are no atomics. A job's inputs are written by
 * its fiber before the lock is released in submit, and its results by
 * the worker before the lock is released in finish; whoever reads them
 * next took the lock after that (the worker in its loop, port_event),
 * so every such read happens after the write. The eventfd carries no
 * data, only "look at the list".
 *
 * No lost wake-up: a worker writes the eventfd (under the lock) when it
 * puts a job on an empty list; port_event first drains the eventfd, then
 * takes the whole list under the lock. A job put on a non-empty list is
 * taken by the port_event that the write for the first job of the list
 * caused or the one already running (its take comes after, since it
 * empties the list); a job put on the list that port_event has just
 * emptied finds it empty and writes again. A write that port_event had
 * already answered only makes one empty look.
 *
 * Job states (pool.lock):
 *   QUEUED    on pool.queue: the fiber (deadline, cancel) or destroy may
 *             take it back, and it never runs
 *   RUNNING   on pool.running: a worker runs it; nobody else may touch its
 *             inputs' memory; the fiber waits for it, uncancellably
 *   DONE      on its port's done list: finished, the fiber not yet told
 *   DELIVERED taken back by the runtime's thread (port_event, or the fiber
 *             itself): only the fiber touches it now
 *   ORPHANED  finished or stranded where nobody will tell the fiber (its
 *             thread exited; or a fork's child, which has no workers)
 * `abandoned`: the fiber was discarded while a detachable job ran: the
 * worker frees the job when it finishes.
 */
#include "offload.h"
#include "poller.h"
#include "../sched/workers.h"
#include "../tls.h"
#include "fibers/io.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* A thread idle this long leaves. */
#define IDLE_S 5

enum job_state { QUEUED, RUNNING, DONE, DELIVERED, ORPHANED };
enum job_kind { JOB_CALL, JOB_PREAD, JOB_PWRITE, JOB_FSYNC, JOB_GAI };

struct port;

struct job {
  /* pool.lock: */
  struct job *next, *prev; /* on pool.queue, pool.running or port->done */
  enum job_state state;
  int abandoned;
  struct fib_runtime *rt;  /* its fiber's runtime (worker), whose host
                              its end wakes; NULL once destroy gave it up */
  /* Set before it is queued, read-only after: */
  struct port *port;       /* where its completion goes */
  enum job_kind kind;
  int detachable;          /* touches none of its fiber's memory */
  union {
    struct {
      void (*fn)(void *);
      void *arg;
    } call;
    struct {
      int fd;
      void *buf;
      size_t count;
      off_t offset;
    } rw;
    struct {
      const char *node, *service; /* copies, in `strings`, or NULL */
      int has_hints;
      struct addrinfo hints;
    } gai;
  } u;
  /* Written by the worker while RUNNING (read after DONE, see above): */
  ssize_t result;
  struct addrinfo *ai;     /* a lookup's list until the fiber takes it */
  /* The runtime's thread only: */
  struct fib__fiber *fiber;
  int parked;              /* the fiber is parked on it (if BLOCKED) */
  int delivered;           /* port_event has handed it back */
  struct fib__hold hold;   /* in the fiber's holds while in flight */
  char strings[];          /* fib_getaddrinfo's copies */
};

struct jlist {
  struct job *head, *tail;
};

struct port {
  int efd;                 /* the eventfd; fixed until the port is freed */
  unsigned refs;           /* pool.lock: 1 for the thread while it lives,
                              + 1 per job submitted from it that is not yet
                              DELIVERED (or ORPHANED, or freed) */
  int dead;                /* pool.lock: its thread has exited */
  struct jlist done;       /* pool.lock: DONE jobs */
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t work;    /* a job was queued, or stopping (CLOCK_MONOTONIC) */
  pthread_cond_t changed; /* a job finished (waiters), a thread left */
  struct jlist queue;     /* QUEUED jobs, oldest first */
  struct jlist running;   /* RUNNING jobs */
  size_t queued;          /* jobs on queue */
  size_t nrunning;        /* jobs on running */
  unsigned threads;       /* started and not yet left */
  unsigned idle;          /* of those, waiting for a job */
  unsigned peak;          /* the most threads at once */
  unsigned waiters;       /* destroys waiting for a RUNNING job */
  int stopping;           /* the process is exiting: idle threads leave */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_key_t port_key;
static FIB__TLS struct port *tl_port;

/* ---------------------------------------------------------------- lists */

static void jlist_push(struct jlist *l, struct job *j) {
  j->next = NULL;
  j->prev = l->tail;
  if (l->tail)
    l->tail->next = j;
  else
    l->head = j;
  l->tail = j;
}

static void jlist_unlink(struct jlist *l, struct job *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    l->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    l->tail = j->prev;
  j->next = j->prev = NULL;
}

/* ------------------------------------------------------------ jobs */

static struct job *job_new(size_t extra) {
  return fib__sys_calloc(1, sizeof(struct job) + extra);
}

static void job_free(struct job *j) {
  if (j->ai)
    freeaddrinfo(j->ai);
  fib__sys_free(j);
}

/* getaddrinfo's result as ours (fibers/io.h). */
static ssize_t gai_code(int rc, int err) {
  switch (rc) {
  case 0:
    return 0;
  case EAI_MEMORY:
    return FIB_ENOMEM;
  case EAI_SYSTEM:
    return err > 0 ? -err : FIB_EIO;
#define FIB__EAI_CASE(name, n)                                                 \
  case EAI_##name:                                                             \
    return FIB_EAI_##name;
    FIB_EAI_MAP(FIB__EAI_CASE)
#undef FIB__EAI_CASE
  default:
    return FIB_EAI_FAIL;
  }
}

/* Run j on this (pool) thread: its result in j->result. */
static void job_run(struct job *j) {
  ssize_t n = 0;
  switch (j->kind) {
  case JOB_CALL:
    j->u.call.fn(j->u.call.arg);
    break;
  case JOB_PREAD:
    do
      n = pread(j->u.rw.fd, j->u.rw.buf, j->u.rw.count, j->u.rw.offset);
    while (n < 0 && errno == EINTR);
    break;
  case JOB_PWRITE:
    do
      n = pwrite(j->u.rw.fd, j->u.rw.buf, j->u.rw.count, j->u.rw.offset);
    while (n < 0 && errno == EINTR);
    break;
  case JOB_FSYNC:
    do
      n = fsync(j->u.rw.fd);
    while (n < 0 && errno == EINTR);
    break;
  case JOB_GAI: {
    int rc = getaddrinfo(j->u.gai.node, j->u.gai.service,
                         j->u.gai.has_hints ? &j->u.gai.hints : NULL, &j->ai);
    if (rc != 0)
      j->ai = NULL;
    j->result = gai_code(rc, errno);
    return;
  }
  }
  j->result = n < 0 ? -errno : n;
}

/* ------------------------------------------------------------ ports */

/* Drop one of p's references (pool.lock held): p if that was the last,
 * for the caller to free once it has let go of the lock. */
static struct port *port_unref_locked(struct port *p) {
  return --p->refs == 0 ? p : NULL;
}

static void port_free(struct port *p) {
  if (!p)
    return;
  fib__fdgen_closing(p->efd, fib__poller_peek()); /* as fib_close */
  close(p->efd);
  fib__fdgen_closed(p->efd);
  fib__sys_free(p);
}

/* Wake p's thread (pool.lock held: the port cannot be freed meanwhile). */
static void port_kick(struct port *p) {
  uint64_t one = 1;
  while (write(p->efd, &one, sizeof one) < 0 && errno == EINTR)
    ;
  /* EAGAIN only when the counter is near 2^64: a wake-up is pending. */
}

/* The eventfd fired (the thread's poll, on its own stack): hand the
 * finished jobs back to their fibers. */
static void port_event(void *arg) {
  struct port *p = arg;
  uint64_t n;
  /* Drain first, then take the list: see "No lost wake-up" above. */
  while (read(p->efd, &n, sizeof n) < 0 && errno == EINTR)
    ;
  pthread_mutex_lock(&pool.lock);
  struct job *j = p->done.head;
  p->done.head = p->done.tail = NULL;
  for (struct job *k = j; k; k = k->next) {
    k->state = DELIVERED;
    p->refs--; /* never the last: the thread, alive, holds one */
  }
  pthread_mutex_unlock(&pool.lock);
  while (j) {
    /* DELIVERED: ours alone now (the fiber frees it, after we are back
     * in the loop: the thread is here, not in a fiber). */
    struct job *next = j->next;
    struct fib__fiber *f = j->fiber;
    j->delivered = 1;
    if (j->parked && f->state == FIB__FIBER_BLOCKED)
      fib__fiber_ready(f);
    /* else it was woken by its deadline or a cancel and has not run yet:
     * it finds `delivered` when it does. */
    j = next;
  }
}

/* Take p out of the thread's poller, if the poller still exists. */
static void port_unwatch(struct port *p) {
  struct fib__poller *pl = fib__poller_peek();
  if (!pl || (size_t)p->efd >= pl->nrecs || !pl->recs[p->efd])
    return;
  struct fib__fdrec *r = pl->recs[p->efd];
  r->on_event = NULL;
  r->on_event_arg = NULL;
  fib__poller_forget(pl, p->efd, FIB_EBADF, 1);
}

/* The thread exits (port_key's destructor). Jobs finished for it that
 * nobody took back are ORPHANED: the fibers waiting for them belong to a
 * runtime this thread never destroyed; if that runtime is destroyed
 * later, job_discard frees them. Jobs still running keep the port (not
 * its place in the poller) until they finish. */
static void port_exit(void *arg) {
  struct port *p = arg;
  if (tl_port == p)
    tl_port = NULL;
  port_unwatch(p);
  pthread_mutex_lock(&pool.lock);
  p->dead = 1;
  for (struct job *j = p->done.head; j; j = j->next) {
    j->state = ORPHANED;
    p->refs--;
  }
  p->done.head = p->done.tail = NULL;
  struct port *last = port_unref_locked(p);
  pthread_mutex_unlock(&pool.lock);
  port_free(last);
}

static void fork_prepare(void) { pthread_mutex_lock(&pool.lock); }
static void fork_parent(void) { pthread_mutex_unlock(&pool.lock); }

/* The child of a fork has none of the pool's threads: nothing queued or
 * running will finish here. Strand those jobs (ORPHANED) and start
 * afresh. */
static void fork_child(void) {
  struct jlist *lists[] = {&pool.queue, &pool.running};
  for (size_t i = 0; i < 2; i++) {
    for (struct job *j = lists[i]->head; j; j = j->next) {
      j->state = ORPHANED;
      j->port->refs--; /* not the last: the port's thread (the parent's
                          copy of it) holds one, or the port is dead and
                          leaks in the child with the thread that left */
    }
    lists[i]->head = lists[i]->tail = NULL;
  }
  pool.queued = pool.nrunning = 0;
  pool.threads = pool.idle = pool.waiters = 0;
  /* The conditions may record the parent's waiters: make them anew. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&pool.work, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&pool.changed, NULL);
  pthread_mutex_unlock(&pool.lock); /* fork_prepare took it on this thread */
}

static void pool_init(void) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&pool.work, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&pool.changed, NULL);
  (void)pthread_key_create(&port_key, port_exit);
  (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* This thread's port, made on first use and watched by its poller. NULL:
 * *err says why. */
static struct port *port_get(int *err) {
  struct port *p = tl_port;
  if (p)
    return p;
  pthread_once(&pool_once, pool_init);
  struct fib__poller *pl = fib__poller_get(err);
  if (!pl)
    return NULL;
  p = fib__sys_calloc(1, sizeof *p);
  if (!p) {
    *err = FIB_ENOMEM;
    return NULL;
  }
  p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (p->efd < 0) {
    *err = -errno;
    fib__sys_free(p);
    return NULL;
  }
  struct fib__fdrec *r = fib__poller_rec(pl, p->efd, err);
  if (r) {
    /* A new descriptor whatever its number: a record of the number left by
     * a close on another thread would say it is watched already. */
    if (r->watched || r->kind != FIB__FD_UNKNOWN)
      fib__poller_forget(pl, p->efd, FIB_EBADF, 0);
    fib__fdgen_close(p->efd, pl, r);
    r->kind = FIB__FD_OTHER;
    r->on_event = port_event;
    r->on_event_arg = p;
    *err = fib__poller_watch(pl, p->efd, r);
    if (*err == 0 && pthread_setspecific(port_key, p) != 0)
      *err = FIB_ENOMEM;
    if (*err == 0) {
      p->refs = 1;
      tl_port = p;
      return p;
    }
  }
  port_unwatch(p);
  port_free(p);
  return NULL;
}

/* ---------------------------------------------------------- the pool */

static void *worker(void *unused);

/* Finished j (pool.lock held): send it home. What the caller must free
 * once it has let go of the lock goes in *job_out and *port_out. */
static void finish_locked(struct job *j, struct job **job_out,
                          struct port **port_out) {
  jlist_unlink(&pool.running, j);
  pool.nrunning--;
  struct port *p = j->port;
  if (j->abandoned) { /* its fiber was discarded */
    *port_out = port_unref_locked(p);
    *job_out = j;
  } else if (p->dead) { /* its thread has exited */
    j->state = ORPHANED;
    *port_out = port_unref_locked(p);
  } else {
    int was_empty = p->done.head == NULL;
    j->state = DONE;
    jlist_push(&p->done, j);
    if (was_empty)
      port_kick(p);
    /* A host blocked on fib_runtime_io_fd between calls: on io_uring
     * the port's eventfd reaches it only through the ring's watch of the
     * epoll set and the kernel's signal of the host's eventfd for that
     * completion, which the kernel may give for the first such one only
     * (uring.c, fib__uring_host_rest); so every job's end wakes it as
     * the runtime's other wakers do. rt stays until destroy gives the
     * job up, under this lock (job_discard). */
    if (j->rt)
      fib__runtime_wake_host(j->rt);
  }
  if (pool.waiters)
    pthread_cond_broadcast(&pool.changed);
}

static void *worker(void *unused) {
  (void)unused;
  pthread_mutex_lock(&pool.lock);
  for (;;) {
    struct job *j = pool.queue.head;
    if (!j) {
      if (pool.stopping)
        break;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += IDLE_S;
      pool.idle++;
      int rc = pthread_cond_timedwait(&pool.work, &pool.lock, &ts);
      pool.idle--;
      if (rc == ETIMEDOUT && !pool.queue.head)
        break;
      continue;
    }
    jlist_unlink(&pool.queue, j);
    pool.queued--;
    jlist_push(&pool.running, j);
    pool.nrunning++;
    j->state = RUNNING;
    pthread_mutex_unlock(&pool.lock);
    job_run(j);
    struct job *free_job = NULL;
    struct port *free_port = NULL;
    pthread_mutex_lock(&pool.lock);
    finish_locked(j, &free_job, &free_port);
    if (free_job || free_port) {
      pthread_mutex_unlock(&pool.lock);
      if (free_job)
        job_free(free_job);
      port_free(free_port);
      pthread_mutex_lock(&pool.lock);
    }
  }
  pool.threads--;
  pthread_cond_broadcast(&pool.changed);
  pthread_mutex_unlock(&pool.lock);
  return NULL;
}

/* Start a pool thread (pool.lock held, so that the decision to start one
 * and its failure are seen together). Every signal is blocked in it: it
 * inherits the mask it was created with. 0 or a positive errno. */
static int start_thread(void) {
  pthread_attr_t attr;
  int rc = pthread_attr_init(&attr);
  if (rc)
    return rc;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  rc = pthread_create(&t, &attr, worker, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return rc;
}

/* Queue j, starting a thread if every one is busy. 0, or an error with j
 * not queued. */
static int submit(struct job *j) {
  pthread_mutex_lock(&pool.lock);
  j->state = QUEUED;
  jlist_push(&pool.queue, j);
  pool.queued++;
  j->port->refs++;
  if (pool.idle)
    pthread_cond_signal(&pool.work);
  int err = 0;
  if (pool.queued > pool.idle && pool.threads < FIB_OFFLOAD_THREADS) {
    int rc = start_thread();
    if (rc == 0) {
      if (++pool.threads > pool.peak)
        pool.peak = pool.threads;
    } else if (pool.threads == 0) {
      /* Nobody would run it. (The queue held only j: while jobs are
       * queued a thread is there, since threads leave only when the
       * queue is empty.) */
      jlist_unlink(&pool.queue, j);
      pool.queued--;
      j->port->refs--; /* not the last: the thread holds one */
      j->state = DELIVERED;
      err = -rc;
    }
  }
  pthread_mutex_unlock(&pool.lock);
  return err;
}

/* The fiber gives up on j (deadline, cancel): take it back if it has not
 * started. 1 if taken back (it never runs), 0 if it is running or done. */
static int take_back(struct job *j) {
  pthread_mutex_lock(&pool.lock);
  int queued = j->state == QUEUED;
  if (queued) {
    jlist_unlink(&pool.queue, j);
    pool.queued--;
    j->port->refs--; /* not the last: this thread holds one */
    j->state = DELIVERED;
  }
  pthread_mutex_unlock(&pool.lock);
  return queued;
}

/* fib_runtime_destroy discards j's fiber (the hold's discard): the runtime
 * thread no longer waits for j. */
static void job_discard(struct fib__hold *h) {
  struct job *j =
      (struct job *)((char *)h - offsetof(struct job, hold));
  fib__hold_drop(h);
  j->fiber->rt->io_waiting--;
  j->fiber->rt->io_inflight--;
  j->fiber = NULL;
  struct job *free_job = NULL;
  struct port *free_port = NULL;
  pthread_mutex_lock(&pool.lock);
  j->rt = NULL; /* the runtime goes: no wake-up of it after this */
  /* A running job that may touch the fiber's memory (its stack is about
   * to be freed) is waited for. */
  while (j->state == RUNNING && !j->detachable) {
    pool.waiters++;
    pthread_cond_wait(&pool.changed, &pool.lock);
    pool.waiters--;
  }
  switch (j->state) {
  case QUEUED:
    jlist_unlink(&pool.queue, j);
    pool.queued--;
    free_port = port_unref_locked(j->port);
    free_job = j;
    break;
  case RUNNING: /* detachable: the worker frees it */
    j->abandoned = 1;
    break;
  case DONE:
    jlist_unlink(&j->port->done, j);
    free_port = port_unref_locked(j->port);
    free_job = j;
    break;
  case DELIVERED:
  case ORPHANED:
    free_job = j;
    break;
  }
  pthread_mutex_unlock(&pool.lock);
  if (free_job)
    job_free(free_job);
  port_free(free_port);
}

/* Process exit: tell the idle threads to leave, and wait until every
 * thread left is inside a job (those are not waited for: a job may block
 * for long). Later calls still work: their threads leave once the queue
 * is empty. */
__attribute__((destructor)) static void pool_exit(void) {
  pthread_mutex_lock(&pool.lock);
  if (pool.threads) {
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.work);
    while (pool.threads > pool.nrunning)
      pthread_cond_wait(&pool.changed, &pool.lock);
  }
  pthread_mutex_unlock(&pool.lock);
}

void fib__offload_stats(unsigned *threads, unsigned *peak) {
  pthread_mutex_lock(&pool.lock);
  *threads = pool.threads;
  *peak = pool.peak;
  pthread_mutex_unlock(&pool.lock);
}

/* ------------------------------------------------------------ calls */

/*
 * Run j (filled in by the caller) on the pool and wait, as the header
 * says: 0 when it ran (its result is in j), or why it did not: the
 * deadline or a cancel before it started, or no port, thread or memory.
 * The caller frees j either way. `self` is the calling fiber
 * (fib__waiter), not switched since.
 */
static int offload(struct fib__fiber *self, struct job *j,
                   uint64_t deadline) {
  int err;
  struct port *p = port_get(&err);
  if (!p)
    return err;
  j->port = p;
  j->fiber = self;
  j->rt = self->rt; /* published by submit's lock */
  if ((err = submit(j)) != 0)
    return err;
  struct fib_runtime *rt = self->rt;
  fib__io_hooks(rt); /* io_uring too: its ring watches the epoll set */
  rt->io_waiting++;
  rt->io_inflight++; /* virtual time waits for it (sched/seed.h) */
  fib__runtime_look_soon(rt);
  j->hold.discard = job_discard;
  fib__hold_add(self, &j->hold);
  /* The job answers to this thread's port, and io_waiting is this
   * worker's: the fiber must not move until the job is over. */
  self->nomigrate++;
  j->parked = 1;
  err = fib__fiber_park(self, FIB__FIBER_BLOCKED, deadline);
  j->parked = 0;
  if (err && (j->delivered || !take_back(j)))
    err = 0; /* it started: wait for it, and its result is the call's */
  if (!err) {
    while (!j->delivered) {
      j->parked = 1;
      fib__fiber_park_nocancel(self);
      j->parked = 0;
    }
  }
  fib__hold_drop(&j->hold);
  self->nomigrate--;
  rt->io_waiting--;
  rt->io_inflight--;
  return err;
}

int fib__offload_call(void (*fn)(void *), void *arg, int detachable,
                      uint64_t deadline_ns) {
  if (!fn)
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  if (err)
    return err;
  struct job *j = job_new(0);
  if (!j)
    return FIB_ENOMEM;
  j->kind = JOB_CALL;
  j->detachable = detachable;
  j->u.call.fn = fn;
  j->u.call.arg = arg;
  err = offload(self, j, deadline_ns);
  job_free(j);
  return err;
}

int fib_offload_until(void (*fn)(void *), void *arg, uint64_t deadline_ns) {
  return fib__offload_call(fn, arg, 0, deadline_ns);
}

int fib_offload(void (*fn)(void *), void *arg) {
  return fib__offload_call(fn, arg, 0, FIB__NO_DEADLINE);
}

/* pread, pwrite, fsync: one job on fd. */
static ssize_t rw_call(enum job_kind kind, int fd, void *buf, size_t count,
                       off_t offset, uint64_t deadline) {
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  if (err)
    return err;
  struct job *j = job_new(0);
  if (!j)
    return FIB_ENOMEM;
  j->kind = kind;
  j->detachable = kind == JOB_FSYNC;
  j->u.rw.fd = fd;
  j->u.rw.buf = buf;
  j->u.rw.count = count;
  j->u.rw.offset = offset;
  err = offload(self, j, deadline);
  ssize_t r = err ? err : j->result;
  job_free(j);
  return r;
}

ssize_t fib_pread_until(int fd, void *buf, size_t count, off_t offset,
                        uint64_t deadline_ns) {
  return rw_call(JOB_PREAD, fd, buf, count, offset, deadline_ns);
}

ssize_t fib_pread(int fd, void *buf, size_t count, off_t offset) {
  return rw_call(JOB_PREAD, fd, buf, count, offset, FIB__NO_DEADLINE);
}

ssize_t fib_pwrite_until(int fd, const void *buf, size_t count, off_t offset,
                         uint64_t deadline_ns) {
  return rw_call(JOB_PWRITE, fd, (void *)buf, count, offset, deadline_ns);
}

ssize_t fib_pwrite(int fd, const void *buf, size_t count, off_t offset) {
  return rw_call(JOB_PWRITE, fd, (void *)buf, count, offset,
                 FIB__NO_DEADLINE);
}

int fib_fsync_until(int fd, uint64_t deadline_ns) {
  return (int)rw_call(JOB_FSYNC, fd, NULL, 0, 0, deadline_ns);
}

int fib_fsync(int fd) {
  return (int)rw_call(JOB_FSYNC, fd, NULL, 0, 0, FIB__NO_DEADLINE);
}

int fib_getaddrinfo_until(const char *node, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res,
                          uint64_t deadline_ns) {
  if (!res || (!node && !service))
    return FIB_EINVAL;
  struct fib__fiber *self;
  int err = fib__waiter(&self);
  if (err)
    return err;
  size_t nlen = node ? strlen(node) + 1 : 0;
  size_t slen = service ? strlen(service) + 1 : 0;
  struct job *j = job_new(nlen + slen);
  if (!j)
    return FIB_ENOMEM;
  j->kind = JOB_GAI;
  j->detachable = 1; /* it reads and writes only the job */
  if (node)
    j->u.gai.node = memcpy(j->strings, node, nlen);
  if (service)
    j->u.gai.service = memcpy(j->strings + nlen, service, slen);
  if (hints) { /* the fields hints may set; the others stay 0 / NULL */
    j->u.gai.has_hints = 1;
    j->u.gai.hints.ai_flags = hints->ai_flags;
    j->u.gai.hints.ai_family = hints->ai_family;
    j->u.gai.hints.ai_socktype = hints->ai_socktype;
    j->u.gai.hints.ai_protocol = hints->ai_protocol;
  }
  err = offload(self, j, deadline_ns);
  if (!err && (err = (int)j->result) == 0) {
    *res = j->ai;
    j->ai = NULL;
  }
  job_free(j);
  return err;
}

int fib_getaddrinfo(const char *node, const char *service,
                    const struct addrinfo *hints, struct addrinfo **res) {
  return fib_getaddrinfo_until(node, service, hints, res, FIB__NO_DEADLINE);
}

void fib_freeaddrinfo(struct addrinfo *res) {
  if (res)
    freeaddrinfo(res);
}
