/* SPDX-License-Identifier: MIT */
/*
 * poller.h -- the thread's readiness poller (epoll) and what it knows of
 * each descriptor. One poller per thread, made on the first I/O call that
 * needs it: the descriptors a thread's fibers use are watched by that
 * thread, whichever of its runtimes runs them.
 *
 * A descriptor record lives as long as the thread's poller and is found by
 * the descriptor's number. It is *known* once the first call has looked at
 * the descriptor (socket, regular file, other; O_NONBLOCK set), and
 * *watched* once it is in the epoll set: edge-triggered, for reading and
 * writing at once, registered once for the descriptor's life. fib_close
 * (and a descriptor fib_accept makes) starts the record afresh and bumps
 * its generation; every event carries the generation it was registered
 * with, so an event for a descriptor that has since been closed is
 * dropped, never delivered to the number's next owner.
 *
 * Closes on other threads. The records are the thread's, but a
 * descriptor may be used from several threads (the workers of one
 * runtime: a migratable fiber, or a reader and a writer on two workers),
 * and fib_close runs on one of them. So the process also keeps one word
 * per descriptor number (its *slot*, in a table shared by every thread,
 * below): the number's close generation, bumped by every fib_close of it
 * (and by the library's own closes, and by fib_accept handing it out), and
 * the pollers that have learned the descriptor under that generation, one
 * bit each. A record remembers the generation it learned the descriptor
 * under (`cgen`); each call compares it with the slot's (one relaxed load
 * through the pointer the record keeps), and a record left behind by a
 * close on another thread is started afresh and the descriptor learned
 * and watched again (io.c, begin), so the number's next owner is watched.
 * The close also tells each other poller whose bit it cleared, through
 * that poller's *notice* list and eventfd (or the eventfd its host waits
 * on, while the host rests: `resting`, below): the owner, at its next poll,
 * wakes the fibers still waiting in its stale record with FIB_EBADF
 * (fib__poller_poll; on io_uring it cancels their operations too).
 *
 * Waiting (the park/ready contract of sched/waitq.h): a fiber that the
 * kernel told EAGAIN waits on the record's readers or writers queue. An
 * event wakes every fiber waiting in its direction; each tries again. An
 * edge that comes while nobody waits is kept in `ready` and consumed by
 * the next wait, which then tries again at once instead of parking, so an
 * edge-triggered event is never lost between a try and a park.
 */
#ifndef FIB__IO_POLLER_H
#define FIB__IO_POLLER_H

#include "../sched/waitq.h"

#include <stdint.h>

enum fib__fd_kind {
  FIB__FD_UNKNOWN = 0, /* no call has looked at it yet */
  FIB__FD_SOCKET,
  FIB__FD_FILE,        /* a regular file: never parks */
  FIB__FD_OTHER        /* pipe, FIFO, terminal, eventfd, ... */
};

struct fib__fdrec {
  enum fib__fd_kind kind;
  uint32_t cgen;             /* the close generation the descriptor was
                                learned under (io.c, learn): while its
                                slot says the same, no close has come */
  uint64_t *slot;            /* the number's slot (fib__fdgen_slot), set
                                when the record is made; never freed */
  int watched;               /* in the epoll set */
  uint32_t gen;              /* bumped each time the record starts afresh */
  unsigned ready;            /* FIB_IO_* edges seen while nobody waited */
  unsigned char stream;      /* a SOCK_STREAM socket: a short read empties
                                it (what is left to come sends an edge) */
  unsigned char drained;     /* a read came back short and no read edge
                                has come since: the next read waits for
                                one instead of trying (io.c, READ_LOOP) */
  unsigned char hup;         /* an event said end of file, hang-up or
                                error: a short read no longer means
                                empty (the end is still to be read, and
                                its edge has come) */
  struct fib__waitq readers; /* fibers waiting to read (or accept) */
  struct fib__waitq writers; /* fibers waiting to write (or connect) */
  /* An internal descriptor (a wake-up eventfd): its events call this
   * instead of waking waiters. */
  void (*on_event)(void *arg);
  void *on_event_arg;
};

struct fib__poller {
  int epfd;
  struct fib__fdrec **recs; /* by descriptor number; NULL: never seen */
  size_t nrecs;
  /* Its thread exited while fibers still waited in its records (their
   * runtime was not destroyed): the records are kept, on a list of such
   * pollers, until no wait node is left in them (fib__poller_discard). */
  struct fib__poller *next_orphan;
  /* The last poll blocked (it had a deadline) and nothing has polled
   * since: the run loop's non-blocking poll that comes right after the
   * idle wait would find nothing new, and is skipped (one system call per
   * idle transition: docs/io.md). */
  int just_waited;
  /* The wake-up eventfd (-1: none yet): another thread writes it to wake
   * a worker, or a runtime that has been posted to, asleep in this
   * poller (workers.h, FIB__PARKED_POLLER). Made at the first such sleep
   * (fib__poller_wake_fd), so a thread whose runtimes no other thread can
   * wake has none; EFD_CLOEXEC | EFD_NONBLOCK; closed with the poller. In
   * the epoll set once, with the tag FIB__POLLER_WAKE_TAG, which no
   * descriptor record's tag can equal; it has no record in `recs`. So its
   * events never reach a user's waiters, nor a user's events (whatever
   * number the user's descriptor has, before or after) the wake-up: the
   * event only ends the sleep's epoll_wait; the sleeper reads the
   * eventfd back to 0 (workers.c), and the event is otherwise ignored. */
  int wake_fd;
  /* Notices of closes on other threads (fib__fdgen_close): `bit` is this
   * poller's bit in the slots (0: none, when the notice eventfd could not
   * be made: its stale records are then found only by the calls, io.c),
   * `index` its place in the registry of pollers (poller.c), `note_fd`
   * the eventfd a closer writes after it has added the number to `notes`
   * (in the epoll set with FIB__POLLER_NOTE_TAG, level-triggered; made
   * with the poller; -1: none). `notes`, `nnotes`, `notes_cap` and
   * `notes_all` (a notice was lost for want of memory: look at every
   * record) are guarded by the registry's lock; the rest is the owner's. */
  uint32_t bit;
  unsigned index;
  int note_fd;
  /* A host on io_uring between its calls (fib__poller_rest) waits on
   * host_fd (the thread's ring's eventfd, fib__uring_host_fd; -1: none):
   * while `resting`, a closer writes host_fd instead of note_fd (the
   * notice then waits in `notes` for the host's next poll:
   * fib__poller_unrest). Through note_fd it would reach the host only
   * by the ring's watch of the epoll set and the kernel's signal of
   * host_fd for that completion, which comes from inside the closer's
   * eventfd write: a 6.18 kernel drops it (all but the first), or gives
   * it late, after the host has already woken and taken the notice (a
   * second wake-up for one close). Both set by the owner under the
   * registry's lock, which the closer holds while it writes (so host_fd
   * is never written once closed); the owner reads them unlocked. */
  int host_fd;
  int resting;
  int *notes;
  size_t nnotes, notes_cap;
  int notes_all;
};

/* The epoll tag of the notice eventfd (FIB__POLLER_WAKE_TAG's twin). */
#define FIB__POLLER_NOTE_TAG (UINT64_MAX - 1)

/* ---- the process's slots: close generations by descriptor number */

/* A slot: the close generation in its high 32 bits, the bits of the
 * pollers that learned the descriptor under it in its low 32 (a poller
 * whose index is 31 or more uses bit 31, which they share). */
#define FIB__FDGEN_GEN(word) ((uint32_t)((word) >> 32))

/* fd's slot, its chunk of the table made if need be (chunks are never
 * freed, so a record may keep the pointer); NULL: no memory. */
uint64_t *fib__fdgen_slot(int fd);

/* Whether the descriptor r describes has been closed (fib__fdgen_close)
 * since r learned it. Relaxed: see fib__fdgen_close for what orders it. */
static inline int fib__fdrec_stale(const struct fib__fdrec *r) {
  return FIB__FDGEN_GEN(__atomic_load_n(r->slot, __ATOMIC_RELAXED)) != r->cgen;
}

/* fd has been handed out anew (fib_accept, an eventfd of the library's
 * own) to the calling thread, whose poller is `self` (NULL: none): bump
 * its generation and clear its bits, and send a notice to each other
 * poller whose bit was set. With `keep`, self's bit is set in the new
 * word and the new generation stored in keep->cgen (a record of self's
 * that now describes the new descriptor). */
void fib__fdgen_close(int fd, struct fib__poller *self, struct fib__fdrec *keep);

/* fd is about to be closed by the calling thread (poller `self`, or
 * NULL): as fib__fdgen_close, but the generation it leaves is odd, which
 * says "closing": the descriptor is still open until the caller's
 * close(2), yet every record of it is stale already. The caller closes
 * fd, then calls fib__fdgen_closed, which makes the generation even
 * again. A thread that learns the number meanwhile waits for that
 * (fib__poller_enlist): what it would learn before the close(2) is the
 * descriptor on its way out, whose record would then look current. */
void fib__fdgen_closing(int fd, struct fib__poller *self);
void fib__fdgen_closed(int fd);

/* p learns the descriptor of r (io.c, learn): r's generation is the
 * slot's, and p's bit is set in it. If a close of the number is under
 * way (fib__fdgen_closing) on another thread, it waits until that close
 * is over, so what the caller then learns (fstat) is what is at the
 * number after it. */
void fib__poller_enlist(struct fib__poller *p, struct fib__fdrec *r);

/* r (fd's record in p, known) was found stale: wake its waiters with
 * FIB_EBADF, start it afresh, and on io_uring cancel the thread's ring's
 * operations on fd (all were issued on the closed descriptor). */
void fib__poller_stale(struct fib__poller *p, int fd);

/* The epoll tag of the wake-up eventfd: a descriptor record's tag is its
 * generation and its number (poller.c), and no number is 0xffffffff. */
#define FIB__POLLER_WAKE_TAG UINT64_MAX

/* The thread's poller, made on first use. NULL if it cannot be made (*err:
 * FIB_ENOMEM, or the kernel's error from epoll_create1). */
struct fib__poller *fib__poller_get(int *err);

/* p's wake-up eventfd, made and put in the epoll set on first use: the
 * descriptor, or a negative errno (EMFILE, ENOMEM, ...: then nothing was
 * kept, and a later call tries again). */
int fib__poller_wake_fd(struct fib__poller *p);

/* rt->io_wake_fd (io.c): the calling thread's poller's wake-up eventfd,
 * the poller made if need be; or a negative errno. */
int fib__io_wake_fd(void);

/* The thread's poller if it exists, else NULL. */
struct fib__poller *fib__poller_peek(void);

/* The calling thread's poller: the eventfd its host waits on (fd), or
 * none any more (-1), for the closers' notices (host_fd above). */
void fib__poller_host_fd(int fd);

/* The end of a host's call (uring.c), on its thread: closers write
 * host_fd from now on; if notices came since the last look, host_fd is
 * written now, so that the host comes back for them. */
void fib__poller_rest(struct fib__poller *p);

/* The first poll after a rest: closers write note_fd again (a sleep in
 * the ring hears of it), and the notices that came meanwhile are taken
 * (their fibers woken, as by fib__poller_poll). */
void fib__poller_unrest(struct fib__poller *p);

/* The record for fd, made if need be. NULL: FIB_EBADF (fd < 0) or
 * FIB_ENOMEM in *err. */
struct fib__fdrec *fib__poller_rec(struct fib__poller *p, int fd, int *err);

/* Put fd in the epoll set (once). 0, or the kernel's error: EPERM means
 * the kernel cannot watch it (a regular file), and the caller should not
 * park. */
int fib__poller_watch(struct fib__poller *p, int fd, struct fib__fdrec *r);

/* Start fd's record afresh: wake its waiters with `result` (FIB_EBADF),
 * take it out of the epoll set (if `still_open`), bump its generation. */
void fib__poller_forget(struct fib__poller *p, int fd, int result,
                        int still_open);

/* fib_runtime_destroy's part for the poller (through rt->io_discard):
 * take rt's fibers' wait nodes out of the pollers whose thread has exited
 * (those nodes are on the stacks destroy frees), and free each such
 * poller that no node is left in. A poller of a live thread needs
 * nothing: destroy unlinks the nodes itself (fib__wait_discard). */
void fib__poller_discard(struct fib_runtime *rt);

/* rt->io_discard for every runtime that waited on I/O (io.c): the
 * back end's and the poller's parts of destroy. */
void fib__io_discard(struct fib_runtime *rt);

/* Set rt's poll and destroy hooks for the back end it uses (choosing it
 * if need be): before a fiber counts in rt->io_waiting. */
void fib__io_hooks(struct fib_runtime *rt);

/* Wait for events until `deadline` (fib_now_ns() time; 0: do not block;
 * FIB__NO_DEADLINE: until one comes) and wake the fibers they concern.
 * Returns how many events were handled. The runtime's `poll` hook. */
int fib__poller_poll(struct fib__poller *p, uint64_t deadline);

#endif
