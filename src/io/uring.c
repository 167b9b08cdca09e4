/* SPDX-License-Identifier: MIT */
/*
 * uring.c -- the io_uring back end (uring.h; docs/io-uring.md).
 *
 * Completion, not readiness: a read or an accept is handed to the kernel
 * as an operation into the caller's own buffer (it is on a parked fiber's
 * stack, alive until the CQE), and the fiber parks until its CQE. Writes
 * try the system call first (a socket is nearly always writable) and hand
 * over only what would block. SQEs wait in the submission queue until
 * the loop's poll point: one io_uring_enter per round for every fiber that
 * queued one, or the idle wait (submit and wait until the earliest timer).
 *
 * Deadlines and fib_cancel use the runtime's timer heap and cancel, as for
 * every park; the woken fiber then asks the kernel to cancel its operation
 * (ASYNC_CANCEL by user_data) and parks again, uncancellably, until the
 * operation's own CQE. Whatever that CQE says wins if it is a success:
 * data that was read is returned, an accepted descriptor is returned,
 * never lost behind a timeout. Only an operation that ended without
 * effect reports the deadline or the cancel.
 */
#include "uring.h"
#include "../sys.h"
#include "../tls.h"
#include "fibers/io.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* What AUTO picks where io_uring works: see docs/io-uring.md for the
 * measurement behind it. */
#ifndef FIB__URING_AUTO
#define FIB__URING_AUTO FIB_IO_EPOLL
#endif

/* Submission queue entries (the completion queue is twice as large, and
 * with IORING_FEAT_NODROP an overflow is kept, not lost). A full
 * submission queue is submitted at once. */
#define RING_ENTRIES 256

/* One operation in flight, on its fiber's stack. */
struct uop {
  struct fib__fiber *fiber;
  struct uop *next, *prev;   /* the ring's operations in flight */
  struct uop *fnext, *fprev; /* the same descriptor's, from byfd[fd] */
  int fd;
  int res;        /* the CQE's result, once done */
  int why;        /* 0, or why it is being cancelled: FIB_ETIMEDOUT,
                     FIB_ECANCELED (fib_cancel, runtime destroyed),
                     FIB_EBADF (fib_close) */
  struct io_uring_sqe *sqe; /* its SQE, while not yet submitted */
  struct uop *fresh_next;   /* the ring's list of those not submitted */
  unsigned long epoch;      /* the ring's epoch when it was queued */
  unsigned char withdrawn;  /* cancelled before it was submitted: its
                               SQE was made a NOP, nothing was done */
  unsigned char done;   /* its CQE has come; it is off both lists */
  unsigned char parked; /* its fiber is parked waiting for it */
  unsigned char orphan; /* its runtime is being destroyed, or its thread
                           has exited: wake nobody */
};

struct ring {
  struct io_uring ring;
  unsigned flags;      /* the setup flags that worked */
  unsigned long epoch; /* bumped at every submission: SQEs queued in the
                          current epoch have not reached the kernel */
  struct uop *fresh;   /* the operations queued in this epoch */
  struct uop *pending; /* every operation in flight */
  struct uop **byfd;   /* by descriptor: its operations in flight */
  size_t nbyfd;
  int poller_armed;    /* a POLL_ADD on the thread's epoll set is in
                          flight (POLLER_WATCH) */
  int host_fd;         /* fib_runtime_io_fd's eventfd, registered with
                          the ring; -1 until asked for */
};

/* The user_data of the POLL_ADD that watches the thread's epoll set. The
 * epoll set still carries what completes outside the ring (the offload
 * pool's wake-ups): while a runtime on io_uring waits in the ring, that
 * POLL_ADD is what wakes it for them. */
#define POLLER_WATCH ((void *)(uintptr_t)1)

static FIB__TLS struct ring *tl_ring;

/* Operations that completed after their fiber had asked to cancel them
 * (their result was returned): for the race tests. */
long fib__uring_cancel_lost;
static pthread_key_t ring_key;
static pthread_once_t ring_key_once = PTHREAD_ONCE_INIT;

/* The thread's ring, read afresh (the TLS rule: not kept across a
 * switch). */
static __attribute__((noinline)) struct ring *ring_peek(void) {
  return tl_ring;
}

static void cancel_queue(struct ring *r, struct uop *u);
static void drain(struct ring *r, int (*pred)(const struct uop *, const void *),
                  const void *arg);
static int is_any_op(const struct uop *u, const void *unused) {
  (void)u;
  (void)unused;
  return 1;
}

/* The thread exits (ring_key's destructor). Operations still in flight
 * belong to fibers of runtimes that outlive it: their buffers are on
 * those fibers' stacks, which a later destroy frees, and nobody would
 * reap their CQEs. Cancel them and wait until the kernel has let go (the
 * cancels complete at once for operations the kernel's poll drives),
 * marking them done without waking anyone (the runtime may be running on
 * another thread by now). A fiber that a deadline, a cancel or destroy
 * later resumes finds its operation over: FIB_ECANCELED, or the result
 * if it completed first. */
static void ring_free(void *arg) {
  struct ring *r = arg;
  if (tl_ring == r) /* first: reap then leaves the poller alone */
    tl_ring = NULL;
  for (struct uop *u = r->pending; u; u = u->next) {
    u->orphan = 1;
    if (!u->why) {
      u->why = FIB_ECANCELED;
      cancel_queue(r, u);
    }
  }
  drain(r, is_any_op, NULL);
  io_uring_queue_exit(&r->ring);
  if (r->host_fd >= 0) {
    fib__poller_host_fd(-1); /* closers write it no more */
    close(r->host_fd);
  }
  fib__sys_free(r->byfd);
  fib__sys_free(r);
}

static void ring_key_create(void) {
  (void)pthread_key_create(&ring_key, ring_free);
}

/* The operations every call needs (IORING_REGISTER_PROBE): a kernel that
 * lacks one gets epoll. */
static const unsigned char needed_ops[] = {
    IORING_OP_READ,     IORING_OP_READV,   IORING_OP_RECV,
    IORING_OP_RECVMSG,  IORING_OP_SEND,    IORING_OP_SENDMSG,
    IORING_OP_ACCEPT,   IORING_OP_CONNECT, IORING_OP_POLL_ADD, IORING_OP_NOP,
    IORING_OP_ASYNC_CANCEL};

/* The setup ladder: the flags liburing's documentation calls the default
 * for a ring one thread uses (6.1), then cooperative task running (5.19),
 * then none. Only EINVAL (flags this kernel does not know) goes down a
 * step; any other error means no io_uring here. No SQPOLL: it spends a
 * core polling. */
static const unsigned ladder[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
        IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
        IORING_SETUP_SUBMIT_ALL,
    0};

/* Set up r->ring: 0, or the negative errno that rules io_uring out. */
static int ring_setup(struct ring *r) {
  int err = -EINVAL;
  for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = ladder[i];
    int inj = fib__sys_injected(FIB__FAULT_IO_URING); /* the test seam */
    err = inj ? -inj : io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
    if (err == 0) {
      r->flags = ladder[i];
      /* Kept overflows, and operations on sockets driven by the kernel's
       * own poll (not by a blocking worker thread). */
      if ((p.features & (IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL)) !=
          (IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL))
        err = -ENOSYS;
      break;
    }
    if (err != -EINVAL)
      return err;
  }
  if (err)
    return err == -ENOSYS ? (io_uring_queue_exit(&r->ring), err) : err;
  struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
  int ok = probe != NULL;
  for (size_t i = 0; ok && i < sizeof needed_ops; i++)
    ok = io_uring_opcode_supported(probe, needed_ops[i]);
  if (probe)
    io_uring_free_probe(probe); /* liburing's allocation: its own free */
  if (!ok) {
    io_uring_queue_exit(&r->ring);
    return -ENOSYS;
  }
  (void)io_uring_register_ring_fd(&r->ring); /* 5.18; a saving only */
  return 0;
}

/* The thread's ring, made on first use. NULL: *err says why not. */
static struct ring *ring_get(int *err) {
  struct ring *r = tl_ring;
  if (r)
    return r;
  r = fib__sys_calloc(1, sizeof *r);
  if (!r) {
    *err = FIB_ENOMEM;
    return NULL;
  }
  r->host_fd = -1;
  int e = ring_setup(r);
  if (e) {
    fib__sys_free(r);
    *err = e;
    return NULL;
  }
  pthread_once(&ring_key_once, ring_key_create);
  if (pthread_setspecific(ring_key, r) != 0) {
    io_uring_queue_exit(&r->ring);
    fib__sys_free(r);
    *err = FIB_ENOMEM;
    return NULL;
  }
  tl_ring = r;
  return r;
}

int fib__uring_host_fd(void) {
  int err;
  struct ring *r = ring_get(&err);
  if (!r)
    return err;
  if (r->host_fd >= 0)
    return r->host_fd;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0)
    return -errno;
  if ((err = io_uring_register_eventfd(&r->ring, fd)) < 0) {
    close(fd);
    return err;
  }
  r->host_fd = fd;
  fib__poller_host_fd(fd); /* a poller made later takes it in poller_join */
  return fd;
}

long fib__uring_setup_flags(void) {
  struct ring *r = ring_peek();
  return r ? (long)r->flags : -1;
}

/* ------------------------------------------------------------- choice */

/* FIBERS_IO=epoll|io_uring, read at each runtime's first I/O call. */
static unsigned env_choice(void) {
  const char *e = getenv("FIBERS_IO");
  if (!e)
    return FIB_IO_AUTO;
  if (strcmp(e, "epoll") == 0)
    return FIB_IO_EPOLL;
  if (strcmp(e, "io_uring") == 0)
    return FIB_IO_URING;
  return FIB_IO_AUTO; /* anything else: as if unset */
}

void fib__uring_choose(struct fib_runtime *rt) {
  unsigned want = rt->seeded ? FIB_IO_EPOLL : env_choice(); /* fibers.h */
  if (want == FIB_IO_AUTO)
    want = rt->io_pref;
  if (want == FIB_IO_AUTO)
    want = FIB__URING_AUTO;
  int err;
  if (want == FIB_IO_URING && ring_get(&err)) {
    rt->io_mode = FIB_IO_URING;
    rt->io_backend = "io_uring";
  } else {
    rt->io_mode = FIB_IO_EPOLL; /* io_backend: "epoll" once it watches */
  }
}

/* ------------------------------------------------------ completions */

static void list_unlink(struct ring *r, struct uop *u) {
  if (u->prev)
    u->prev->next = u->next;
  else
    r->pending = u->next;
  if (u->next)
    u->next->prev = u->prev;
  if (u->fprev)
    u->fprev->fnext = u->fnext;
  else
    r->byfd[u->fd] = u->fnext;
  if (u->fnext)
    u->fnext->fprev = u->fprev;
}

/* An operation's CQE: record it, and wake its fiber if it is parked for
 * it (one woken by its deadline is ready already, and finds the result
 * when it runs). */
static void complete(struct ring *r, struct uop *u, int res) {
  list_unlink(r, u);
  u->res = res;
  u->done = 1;
  if (u->parked && !u->orphan && u->fiber->state == FIB__FIBER_BLOCKED)
    fib__fiber_ready(u->fiber);
}

/* Take every CQE there is. Returns how many were for operations. */
static int reap(struct ring *r) {
  unsigned head, seen = 0;
  int ops = 0;
  struct io_uring_cqe *c;
  int poller_ready = 0;
  io_uring_for_each_cqe(&r->ring, head, c) {
    seen++;
    struct uop *u = io_uring_cqe_get_data(c);
    if (u == POLLER_WATCH) {
      r->poller_armed = 0;
      poller_ready = 1;
    } else if (u) { /* NULL: a cancel request's own CQE */
      complete(r, u, c->res);
      ops++;
    }
  }
  io_uring_cq_advance(&r->ring, seen);
  struct fib__poller *p;
  /* (not from a ring whose thread is exiting: it wakes nobody) */
  if (poller_ready && r == ring_peek() && (p = fib__poller_peek()) != NULL)
    ops += fib__poller_poll(p, 0);
  return ops;
}

/* An operation still in the submission queue is cancelled: the kernel
 * will never see it. A NOP in its place brings the CQE that ends it, with
 * no effect. */
static void withdraw(struct uop *u, int why) {
  io_uring_prep_nop(u->sqe);
  io_uring_sqe_set_data(u->sqe, u);
  u->withdrawn = 1;
  u->why = why;
}

/* Before every submission (the liburing calls that submit): an operation
 * whose fiber a deadline or fib_cancel woke before the kernel saw it is
 * withdrawn now, so that a wait cut short before the round's submission
 * has no effect, as with epoll. Then the queued SQEs are the kernel's. */
static void before_submit(struct ring *r) {
  for (struct uop *u = r->fresh; u; u = u->fresh_next)
    if (!u->why && u->fiber->state != FIB__FIBER_BLOCKED)
      withdraw(u, u->fiber->wake ? u->fiber->wake : FIB_ECANCELED);
  r->fresh = NULL;
  r->epoch++;
}
#define SUBMITTING(r, call) (before_submit(r), (call))

/* A free SQE; the queue is submitted (and the CQ reaped) while full. */
static struct io_uring_sqe *sqe_get(struct ring *r) {
  struct io_uring_sqe *s;
  for (int tries = 0; (s = io_uring_get_sqe(&r->ring)) == NULL; tries++) {
    if (tries == 3)
      return NULL;
    (void)SUBMITTING(r, io_uring_submit(&r->ring));
    (void)reap(r);
  }
  return s;
}

/* Ask the kernel to cancel u (its CQE then comes soon, -ECANCELED unless
 * it completed first). Submitted at the next poll point, or at once by a
 * caller that waits here. */
static void cancel_queue(struct ring *r, struct uop *u) {
  if (u->epoch == r->epoch) { /* still in the submission queue */
    withdraw(u, u->why);
    return;
  }
  struct io_uring_sqe *s;
  while ((s = sqe_get(r)) == NULL)
    (void)SUBMITTING(r, io_uring_submit_and_wait(&r->ring, 1));
  io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)u, 0);
  io_uring_sqe_set_data(s, NULL);
}

/* Block the thread until the CQE of every operation `pred` selects has
 * come (close and destroy: the cancels are queued; they complete at once
 * for operations the kernel's poll drives). */
static void drain(struct ring *r, int (*pred)(const struct uop *, const void *),
                  const void *arg) {
  for (;;) {
    const struct uop *u = r->pending;
    while (u && !pred(u, arg))
      u = u->next;
    if (!u)
      return;
    int e = SUBMITTING(r, io_uring_submit_and_wait(&r->ring, 1));
    if (e < 0 && e != -EINTR && e != -EBUSY && e != -ETIME)
      fib__fatal("io_uring_enter failed while draining cancelled operations");
    (void)reap(r);
  }
}

/* Watch the thread's epoll set from the ring (one POLL_ADD at a time),
 * if it has one and the watch is not armed: its events come back as a
 * POLLER_WATCH completion. */
static void arm_poller_watch(struct ring *r, const struct fib__poller *p) {
  struct io_uring_sqe *ps;
  if (!r->poller_armed && p && p->epfd >= 0 &&
      (ps = io_uring_get_sqe(&r->ring)) != NULL) {
    io_uring_prep_poll_add(ps, p->epfd, POLLIN);
    io_uring_sqe_set_data(ps, POLLER_WATCH);
    r->poller_armed = 1;
  }
}

/* The runtime's poll hook: submit what the round queued, and take the
 * completions; with a deadline, wait for one until then. */
int fib__uring_poll(struct fib_runtime *rt, uint64_t deadline) {
  (void)rt;
  struct ring *r = ring_peek();
  if (!r)
    return 0;
  struct fib__poller *p = fib__poller_peek();
  if (p)
    fib__poller_unrest(p); /* the notices that woke a host */
  arm_poller_watch(r, p);
  if (r->host_fd >= 0) {
    /* Reset the host's wake-up before taking the CQEs: one posted after
     * this read signals it again. */
    uint64_t v;
    while (read(r->host_fd, &v, sizeof v) < 0 && errno == EINTR)
      ;
  }
  if (deadline == 0) {
    /* No system call if nothing is queued and the kernel has nothing
     * pending for us (IORING_SQ_TASKRUN: liburing then enters to run it). */
    (void)SUBMITTING(r, io_uring_submit(&r->ring));
  } else {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts, *tsp = NULL;
    if (deadline != FIB__NO_DEADLINE) {
      uint64_t now = fib_now_ns();
      uint64_t d = deadline > now ? deadline - now : 0;
      ts.tv_sec = (long long)(d / 1000000000u);
      ts.tv_nsec = (long long)(d % 1000000000u);
      tsp = &ts;
    }
    (void)SUBMITTING(
        r, io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, tsp, NULL));
  }
  return reap(r);
}

static void host_settle(struct ring *r, struct fib__poller *p);

/* The end of a host's call (fib_runtime_io_fd): the eventfd the host
 * waits on next must become readable for whatever comes for rt before
 * the next call.
 *
 *  - A completion: the kernel signals the eventfd as it posts a CQE, or,
 *    with DEFER_TASKRUN, as it queues completion work for this thread
 *    on a ring that had none queued (not for more behind it). So the
 *    eventfd is read to 0 first, then the queued work is run and every
 *    CQE taken (the submit enters with GETEVENTS while IORING_SQ_TASKRUN
 *    says work is queued): work queued after that signals afresh. The
 *    reverse order could read away the one signal of work still queued.
 *    Taking every CQE also keeps the eventfd from saying "ready" again at
 *    once after a call that polled nothing (no fiber of rt waits on I/O).
 *  - Work for rt (one worker, or worker 0 of several) from other threads,
 *    and offload jobs' ends: its wakers and the offload pool write this
 *    eventfd themselves (fib__uring_host_wake_fd, workers.h
 *    FIB__PARKED_HOST), not (only) an eventfd in the epoll set, whose
 *    write would reach it only through the ring's watch of the epoll set
 *    and the kernel's signal of the eventfd for the watch's completion,
 *    which a kernel may defer or drop when the completion comes from
 *    inside an eventfd's write (this machine's 6.18 signals it for the
 *    first such completion only, and now and then late, after the host
 *    has woken for the direct write: a second wake-up for one piece).
 *  - Notices of closes on other threads (poller.h): the thread's poller
 *    is told that its host rests (fib__poller_rest, last), and closers
 *    write this eventfd instead of the notice eventfd in the epoll set
 *    until the next poll takes the notices (fib__poller_unrest).
 *  - What else ends a sleep through the epoll set (the offload port's
 *    eventfd): the ring's POLL_ADD on it (POLLER_WATCH) is armed again
 *    here if the run took its last CQE without a poll after it to arm it
 *    again.
 *
 * Inside the run: completions taken ready fibers into rt's run queue,
 * and the caller then finds fib_runtime_next_ns at 0. */
void fib__uring_host_rest(struct fib_runtime *rt) {
  (void)rt;
  struct ring *r = ring_peek();
  if (!r || r->host_fd < 0)
    return;
  struct fib__poller *p = fib__poller_peek();
  host_settle(r, p);
  if (p) /* last: it may write the eventfd that host_settle reads */
    fib__poller_rest(p);
}

static void host_settle(struct ring *r, struct fib__poller *p) {
  uint64_t v;
  while (read(r->host_fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
  int seen = 0;
  /* The watch fires at once while the epoll set holds an event: taking
   * it (reap, through the poller's poll) ends that, so a second arming
   * holds unless events keep coming, and then the eventfd says so. */
  for (int round = 0; round < 3; round++) {
    arm_poller_watch(r, p);
    (void)SUBMITTING(r, io_uring_submit(&r->ring));
    int any = io_uring_cq_ready(&r->ring) != 0;
    seen |= any;
    (void)reap(r);
    if (!any && r->poller_armed)
      break;
  }
  if (!seen)
    return;
  /* The CQEs just taken signalled the eventfd again: read it back, so
   * that the host does not wake for them, unless work was queued or a
   * CQE posted since (the signal just read may have been theirs: give it
   * back). The kernel sets the flag before it signals. */
  while (read(r->host_fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
  if (io_uring_cq_ready(&r->ring) ||
      (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN)) {
    uint64_t one = 1;
    while (write(r->host_fd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
}

int fib__uring_host_wake_fd(void) {
  struct ring *r = ring_peek();
  return r && r->host_fd >= 0 ? r->host_fd : -ENOENT;
}

static int is_rt_op(const struct uop *u, const void *rt) {
  return u->fiber->rt == rt;
}

/* fib_runtime_destroy's hook: the runtime's fibers parked in operations
 * are about to lose their stacks. Cancel those operations and wait for
 * their CQEs (on this thread's ring: destroy runs on the thread that ran
 * the runtime's I/O). */
void fib__uring_discard(struct fib_runtime *rt) {
  struct ring *r = ring_peek();
  if (!r)
    return;
  for (struct uop *u = r->pending; u; u = u->next)
    if (u->fiber->rt == rt) {
      u->orphan = 1;
      if (!u->why) {
        u->why = FIB_ECANCELED;
        cancel_queue(r, u);
      }
    }
  drain(r, is_rt_op, rt);
}

/* ----------------------------------------------------- one operation */

/* The start of every call: the fiber, fd's record (known: O_NONBLOCK
 * set, its kind), the thread's ring. 0, or an error before any effect, or
 * FIB__URING_PASS for a regular file (its calls take the epoll path: they
 * never wait). */
static int start(int fd, struct fib__fiber **self, struct fib__fdrec **rec,
                 struct ring **r) {
  int err = fib__io_begin(fd, self, rec);
  if (err)
    return err;
  if ((*rec)->kind == FIB__FD_FILE)
    return FIB__URING_PASS;
  *r = ring_get(&err);
  return *r ? 0 : err;
}

/* An SQE for u, an operation on fd; u is linked in flight once the caller
 * has prepared the SQE (op_wait). NULL: no room (FIB_ENOMEM). */
static struct io_uring_sqe *op_sqe(struct ring *r, struct fib__fiber *self,
                                   int fd, struct uop *u) {
  memset(u, 0, sizeof *u);
  u->fiber = self;
  u->fd = fd;
  if ((size_t)fd >= r->nbyfd) {
    size_t n = r->nbyfd ? r->nbyfd : 64;
    while (n <= (size_t)fd)
      n *= 2;
    struct uop **t = fib__sys_realloc(r->byfd, n * sizeof *t);
    if (!t)
      return NULL;
    memset(t + r->nbyfd, 0, (n - r->nbyfd) * sizeof *t);
    r->byfd = t;
    r->nbyfd = n;
  }
  return sqe_get(r);
}

/* u's SQE `s` is prepared: queue it and park until its CQE. Returns the
 * CQE's result if it is a success, else the cancel's reason if there was
 * one, else the CQE's error. */
static int op_wait(struct ring *r, struct fib__fiber *self, struct uop *u,
                   struct io_uring_sqe *s, uint64_t deadline) {
  io_uring_sqe_set_data(s, u);
  u->sqe = s;
  u->epoch = r->epoch;
  u->fresh_next = r->fresh;
  r->fresh = u;
  u->next = r->pending;
  if (u->next)
    u->next->prev = u;
  r->pending = u;
  u->fnext = r->byfd[u->fd];
  if (u->fnext)
    u->fnext->fprev = u;
  r->byfd[u->fd] = u;

  struct fib_runtime *rt = self->rt;
  rt->poll = fib__uring_poll;
  rt->io_wake_fd = fib__io_wake_fd;
  rt->io_discard = fib__io_discard;
  rt->io_waiting++;
  fib__runtime_look_soon(rt);
  u->parked = 1;
  /* The operation is in this thread's ring, and io_waiting is this
   * worker's: the fiber must not move until it is over. */
  self->nomigrate++;
  /* The caller found self not cancelled (fib__io_begin) and has not
   * switched since: park without park's own check. */
  if (deadline != FIB__NO_DEADLINE)
    fib__fiber_arm(self, deadline);
  (void)fib__fiber_suspend(self, FIB__FIBER_BLOCKED);
  int why = self->wake;
  while (!u->done) { /* the deadline, or fib_cancel: the kernel has it */
    if (!u->why) {
      u->why = why ? why : FIB_ECANCELED;
      cancel_queue(ring_peek(), u);
    }
    fib__fiber_park_nocancel(self);
  }
  u->parked = 0;
  self->nomigrate--;
  rt->io_waiting--;
  if (u->withdrawn)
    return u->why; /* it never reached the kernel */
  if (u->res >= 0 && u->why)
    fib__uring_cancel_lost++;
  if (u->res >= 0 || !u->why)
    return u->res;
  return u->why;
}

/* Wait until fd is ready for `mask` (POLL_ADD, one-shot). The revents, or
 * an error. */
static int poll_op(struct ring *r, struct fib__fiber *self, int fd,
                   unsigned mask, uint64_t deadline) {
  struct uop u;
  struct io_uring_sqe *s = op_sqe(r, self, fd, &u);
  if (!s)
    return FIB_ENOMEM;
  io_uring_prep_poll_add(s, fd, mask);
  return op_wait(r, self, &u, s, deadline);
}

/* ------------------------------------------------------------- calls */

/* Reads: one RECV/RECVMSG (sockets, and recv/recvmsg on anything: the
 * kernel then says ENOTSOCK, as there) or READ/READV operation into the
 * caller's buffer; if it says EAGAIN, wait for POLLIN and hand it over
 * again. */
static ssize_t read_common(int fd, void *buf, size_t len,
                           const struct iovec *iov, int iovcnt,
                           struct msghdr *umsg, int flags, int sock_call,
                           uint64_t deadline) {
  struct fib__fiber *self;
  struct fib__fdrec *rec;
  struct ring *r;
  int err = start(fd, &self, &rec, &r);
  if (err)
    return err;
  flags &= ~MSG_DONTWAIT; /* the operation waits; the fiber parks */
  int as_socket = sock_call || rec->kind == FIB__FD_SOCKET;
  for (;;) {
    struct uop u;
    struct msghdr m = {.msg_iov = (struct iovec *)iov,
                       .msg_iovlen = (size_t)iovcnt};
    struct io_uring_sqe *s = op_sqe(r, self, fd, &u);
    if (!s)
      return FIB_ENOMEM;
    if (as_socket && buf)
      io_uring_prep_recv(s, fd, buf, len, flags);
    else if (as_socket)
      io_uring_prep_recvmsg(s, fd, umsg ? umsg : &m, (unsigned)flags);
    else if (buf)
      io_uring_prep_read(s, fd, buf,
                         (unsigned)(len > 0x7ffff000 ? 0x7ffff000 : len),
                         (uint64_t)-1);
    else
      io_uring_prep_readv(s, fd, iov, (unsigned)iovcnt, (uint64_t)-1);
    int n = op_wait(r, self, &u, s, deadline);
    if (n != -EAGAIN && n != -EINTR)
      return n;
    if (n == -EAGAIN && (n = poll_op(ring_peek(), self, fd,
                                     POLLIN | POLLRDHUP, deadline)) < 0)
      return n;
    r = ring_peek();
  }
}

ssize_t fib__uring_readv(int fd, void *buf, size_t len,
                         const struct iovec *iov, int iovcnt,
                         uint64_t deadline) {
  return read_common(fd, buf, len, iov, iovcnt, NULL, 0, 0, deadline);
}

ssize_t fib__uring_recvmsg(int fd, void *buf, size_t len, struct msghdr *msg,
                           int flags, uint64_t deadline) {
  return read_common(fd, msg ? NULL : buf, len, NULL, 0, msg, flags, 1,
                     deadline);
}

/* Writes: the system call first (it nearly always succeeds); what would
 * block goes to the kernel as SEND/SENDMSG with MSG_NOSIGNAL (sockets),
 * or waits for POLLOUT and tries again (pipes and the like: their SIGPIPE
 * must be held off around the write itself, on this thread). */
static ssize_t write_common(int fd, const struct iovec *iov, int iovcnt,
                            const struct msghdr *umsg, int flags, int sock_call,
                            uint64_t deadline) {
  struct fib__fiber *self;
  struct fib__fdrec *rec;
  struct ring *r;
  int err = start(fd, &self, &rec, &r);
  if (err)
    return err;
  flags &= ~MSG_DONTWAIT;
  struct msghdr m = {.msg_iov = (struct iovec *)iov,
                     .msg_iovlen = (size_t)iovcnt};
  const struct msghdr *msg = umsg ? umsg : &m;
  /* send/sendmsg: a socket call whatever fd is (ENOTSOCK, as there) */
  int as_socket = sock_call || rec->kind == FIB__FD_SOCKET;
  for (;;) {
    ssize_t n;
    if (as_socket)
      n = sendmsg(fd, msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
    else
      n = fib__io_write_nosigpipe(fd, iov, iovcnt);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    int res;
    if (as_socket) {
      struct uop u;
      struct io_uring_sqe *s = op_sqe(r, self, fd, &u);
      if (!s)
        return FIB_ENOMEM;
      if (!umsg && iovcnt == 1)
        io_uring_prep_send(s, fd, iov[0].iov_base, iov[0].iov_len,
                           flags | MSG_NOSIGNAL);
      else
        io_uring_prep_sendmsg(s, fd, msg, (unsigned)(flags | MSG_NOSIGNAL));
      res = op_wait(r, self, &u, s, deadline);
      if (res != -EAGAIN && res != -EINTR)
        return res;
    } else {
      res = poll_op(r, self, fd, POLLOUT, deadline);
      if (res < 0)
        return res;
    }
    r = ring_peek();
  }
}

ssize_t fib__uring_writev(int fd, const void *buf, size_t len,
                          const struct iovec *iov, int iovcnt,
                          uint64_t deadline) {
  struct iovec one = {(void *)buf, len};
  if (buf)
    return write_common(fd, &one, 1, NULL, 0, 0, deadline);
  return write_common(fd, iov, iovcnt, NULL, 0, 0, deadline);
}

ssize_t fib__uring_sendmsg(int fd, const void *buf, size_t len,
                           const struct msghdr *msg, int flags,
                           uint64_t deadline) {
  struct iovec one = {(void *)buf, len};
  if (msg)
    return write_common(fd, msg->msg_iov, (int)msg->msg_iovlen, msg, flags,
                        1, deadline);
  return write_common(fd, &one, 1, NULL, flags, 1, deadline);
}

int fib__uring_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                      int flags, uint64_t deadline) {
  struct fib__fiber *self;
  struct fib__fdrec *rec;
  struct ring *r;
  int err = start(fd, &self, &rec, &r);
  if (err)
    return err;
  for (;;) {
    struct uop u;
    struct io_uring_sqe *s = op_sqe(r, self, fd, &u);
    if (!s)
      return FIB_ENOMEM;
    io_uring_prep_accept(s, fd, addr, addrlen, flags | SOCK_NONBLOCK);
    int c = op_wait(r, self, &u, s, deadline);
    if (c >= 0)
      return fib__io_adopt_socket(c, rec->stream);
    if (c == -EAGAIN) {
      if ((c = poll_op(ring_peek(), self, fd, POLLIN, deadline)) < 0)
        return c;
    } else if (c != -EINTR && c != -ECONNABORTED) {
      return c;
    }
    r = ring_peek();
  }
}

int fib__uring_connect(int fd, const struct sockaddr *addr, socklen_t addrlen,
                       uint64_t deadline) {
  struct fib__fiber *self;
  struct fib__fdrec *rec;
  struct ring *r;
  int err = start(fd, &self, &rec, &r);
  if (err)
    return err;
  struct uop u;
  struct io_uring_sqe *s = op_sqe(r, self, fd, &u);
  if (!s)
    return FIB_ENOMEM;
  io_uring_prep_connect(s, fd, addr, addrlen);
  int res = op_wait(r, self, &u, s, deadline);
  /* An AF_UNIX listener's full backlog: no completion or readiness will
   * say when there is room (io.c, fib__connect_backoff). */
  for (uint64_t delay = 0; res == -EAGAIN;) {
    if ((res = fib__connect_backoff(&delay, deadline)) != 0)
      return res;
    while ((res = connect(fd, addr, addrlen) == 0 ? 0 : -errno) == -EINTR)
      ;
  }
  if (res != -EINPROGRESS && res != -EALREADY && res != -EINTR)
    return res;
  /* Under way (the kernel answered as to a non-blocking connect): wait
   * for writability, then SO_ERROR says, as in the epoll path. */
  for (;;) {
    res = poll_op(ring_peek(), self, fd, POLLOUT, deadline);
    if (res < 0)
      return res;
    res = fib__connect_outcome(fd);
    if (res != FIB__CONNECT_PENDING)
      return res;
  }
}

int fib__uring_wait_fd(int fd, unsigned events, uint64_t deadline) {
  struct fib__fiber *self;
  struct fib__fdrec *rec;
  struct ring *r;
  int err = start(fd, &self, &rec, &r);
  if (err)
    return err;
  unsigned mask = 0;
  if (events & FIB_IO_READ)
    mask |= POLLIN | POLLRDHUP;
  if (events & FIB_IO_WRITE)
    mask |= POLLOUT;
  int rev = poll_op(r, self, fd, mask, deadline);
  if (rev < 0)
    return rev;
  unsigned got = 0;
  if (rev & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))
    got |= FIB_IO_READ;
  if (rev & (POLLOUT | POLLHUP | POLLERR))
    got |= FIB_IO_WRITE;
  got &= events;
  if (rev & POLLNVAL)
    return FIB_EBADF;
  return got ? (int)got : (int)events;
}

/* ------------------------------------------------------------- close */

static int is_fd_op(const struct uop *u, const void *fd) {
  return u->fd == *(const int *)fd;
}

void fib__uring_cancel_fd(int fd) {
  struct ring *r = ring_peek();
  if (!r || fd < 0 || (size_t)fd >= r->nbyfd)
    return;
  for (struct uop *u = r->byfd[fd]; u; u = u->fnext)
    if (!u->why) {
      u->why = FIB_EBADF;
      cancel_queue(r, u);
    }
}

void fib__uring_close(int fd) {
  struct ring *r = ring_peek();
  if (!r || fd < 0 || (size_t)fd >= r->nbyfd || !r->byfd[fd])
    return;
  /* One cancel per operation (not ASYNC_CANCEL_FD|ALL, 5.19): the list is
   * at hand, and every kernel with io_uring knows this one. */
  for (struct uop *u = r->byfd[fd]; u; u = u->fnext)
    if (!u->why) {
      u->why = FIB_EBADF;
      cancel_queue(r, u);
    }
  drain(r, is_fd_op, &fd);
}
