/* SPDX-License-Identifier: MIT */
/* poller.c -- the thread's epoll set and its descriptor records, and the
 * process's close generations of descriptor numbers (poller.h). */
#include "poller.h"
#ifdef FIB__HAVE_IO_URING
#include "uring.h"
#endif
#include "../sched/spin.h"
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

/* ---- the slots (poller.h): close generations by descriptor number
 *
 * Chunks of doubling size: chunk 0 holds numbers 0..1023, chunk k >= 1
 * the numbers from 1024 << (k - 1) up to twice that, so 22 chunks cover
 * every number below 2^31 and the table takes memory in proportion to
 * the highest number used (at most twice it), never RLIMIT_NOFILE's
 * worth. A chunk is made by the first thread that needs it and published
 * with a compare-and-swap; it is never freed, so a record may keep a
 * pointer into it for good. */
#define FDGEN_FIRST 1024u
#define FDGEN_CHUNKS 22
static uint64_t *fdgen_chunks[FDGEN_CHUNKS];

/* fd's chunk and its place in it. */
static unsigned fdgen_chunk(unsigned fd, unsigned *off) {
  if (fd < FDGEN_FIRST) {
    *off = fd;
    return 0;
  }
  unsigned k = 31u - (unsigned)__builtin_clz(fd); /* fd in [2^k, 2^(k+1)) */
  *off = fd - (1u << k);
  return k - 9u; /* 1024 is 2^10: chunk 1 */
}

static size_t fdgen_chunk_len(unsigned c) {
  return c == 0 ? FDGEN_FIRST : (size_t)FDGEN_FIRST << (c - 1);
}

/* fd's slot if its chunk exists (no allocation), else NULL: then no
 * record of any thread has it. acquire: the chunk's zeroed contents,
 * written by the thread that published it, are seen. */
static uint64_t *fdgen_find(int fd) {
  if (fd < 0)
    return NULL;
  unsigned off, c = fdgen_chunk((unsigned)fd, &off);
  uint64_t *chunk = __atomic_load_n(&fdgen_chunks[c], __ATOMIC_ACQUIRE);
  return chunk ? chunk + off : NULL;
}

/* (out of line: fib__poller_rec, on every call's path, calls it only
 * when it makes a record) */
__attribute__((noinline)) uint64_t *fib__fdgen_slot(int fd) {
  uint64_t *slot = fdgen_find(fd);
  if (slot || fd < 0)
    return slot;
  unsigned off, c = fdgen_chunk((unsigned)fd, &off);
  uint64_t *fresh = fib__sys_calloc(fdgen_chunk_len(c), sizeof *fresh);
  if (!fresh)
    return NULL;
  uint64_t *none = NULL;
  /* release: the zeroes are written before another thread can find the
   * chunk (fdgen_find's acquire); on failure, acquire: the winner's are */
  if (!__atomic_compare_exchange_n(&fdgen_chunks[c], &none, fresh, 0,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    fib__sys_free(fresh);
    fresh = none;
  }
  return fresh + off;
}

/* ---- the registry of pollers, for the notices of closes
 *
 * Why notices, and not the inbox and the claim: the fibers waiting in a
 * stale record are linked into that record's queues, which only the
 * poller's own thread reads and writes (without atomics: the hot path of
 * every wait). A closer on another thread cannot walk them, so it cannot
 * find the fibers to claim. It can only say "fd was closed" to the thread
 * that can: it appends fd to the poller's `notes` under reg_lock and
 * writes the poller's eventfd, which ends an epoll_wait (or, on io_uring,
 * completes the ring's POLL_ADD on the epoll set); the owner's next poll
 * takes the list and wakes the waiters of each record that is stale
 * (fib__poller_stale) as fib_close does on its own thread. A poller that
 * never shared a descriptor with another thread gets no notice, so the
 * closes of one-thread programs take no lock and write no eventfd.
 *
 * reg_lock guards `reg` (pollers by index: a poller is in it from its
 * first learned descriptor until its thread exits) and every poller's
 * notes, nnotes, notes_cap and notes_all. A closer holds it while it
 * writes a poller's eventfd, and poller_free takes the poller out under
 * it before closing the eventfd, so no eventfd is written after it is
 * closed. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fib__poller **reg;
static size_t nreg;

static uint32_t index_bit(unsigned index) {
  return index < 31 ? 1u << index : 1u << 31;
}

/* p is made: make its notice eventfd and take a place in the registry.
 * If either cannot be had (EMFILE, ENOMEM), p has no bit: no notices come,
 * and its stale records are found by the calls alone (a fiber already
 * waiting in one then waits for its deadline); not tried again. */
static __attribute__((noinline, cold)) void poller_join(struct fib__poller *p) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return;
  struct epoll_event ev = {.events = EPOLLIN,
                           .data.u64 = FIB__POLLER_NOTE_TAG};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    close(fd);
    return;
  }
  pthread_mutex_lock(&reg_lock);
  size_t i = 0;
  while (i < nreg && reg[i])
    i++;
  if (i == nreg) {
    size_t n = nreg ? nreg * 2 : 8;
    struct fib__poller **t = fib__sys_realloc(reg, n * sizeof *t);
    if (!t) {
      pthread_mutex_unlock(&reg_lock);
      (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
      close(fd);
      return;
    }
    memset(t + nreg, 0, (n - nreg) * sizeof *t);
    reg = t;
    nreg = n;
  }
  reg[i] = p;
  p->index = (unsigned)i;
  p->bit = index_bit((unsigned)i);
  p->note_fd = fd;
#ifdef FIB__HAVE_IO_URING
  int host = fib__uring_host_wake_fd(); /* made before the poller */
  p->host_fd = host >= 0 ? host : -1;
#endif
  pthread_mutex_unlock(&reg_lock);
}

void fib__poller_host_fd(int fd) {
  struct fib__poller *p = tl_poller;
  if (!p || !p->bit)
    return; /* no notices come (poller_join, poller_leave) */
  pthread_mutex_lock(&reg_lock);
  p->host_fd = fd;
  if (fd < 0)
    p->resting = 0;
  pthread_mutex_unlock(&reg_lock);
}

/* Whether notices wait in p's list (reg_lock held). */
static int notes_pending(const struct fib__poller *p) {
  return p->nnotes || p->notes_all;
}

void fib__poller_rest(struct fib__poller *p) {
  if (!p->bit || p->host_fd < 0 || p->resting)
    return;
  pthread_mutex_lock(&reg_lock);
  p->resting = 1;
  int pending = notes_pending(p);
  pthread_mutex_unlock(&reg_lock);
  /* Those came through note_fd, which the host does not wait on. */
  uint64_t one = 1;
  if (pending)
    while (write(p->host_fd, &one, sizeof one) < 0 && errno == EINTR)
      ;
}

static void take_notes(struct fib__poller *p);

void fib__poller_unrest(struct fib__poller *p) {
  if (!p->resting)
    return;
  pthread_mutex_lock(&reg_lock);
  p->resting = 0;
  int pending = notes_pending(p);
  pthread_mutex_unlock(&reg_lock);
  if (pending)
    take_notes(p);
}

/* p's thread exits: no notice reaches it after this. */
static void poller_leave(struct fib__poller *p) {
  if (!p->bit)
    return;
  pthread_mutex_lock(&reg_lock);
  reg[p->index] = NULL;
  p->bit = 0;
  fib__sys_free(p->notes);
  p->notes = NULL;
  p->nnotes = p->notes_cap = 0;
  pthread_mutex_unlock(&reg_lock);
  close(p->note_fd);
  p->note_fd = -1;
}

/* Tell p that fd was closed (reg_lock held). */
static void notify_locked(struct fib__poller *p, int fd) {
  if (p->nnotes == p->notes_cap && !p->notes_all) {
    size_t n = p->notes_cap ? p->notes_cap * 2 : 16;
    int *t = fib__sys_realloc(p->notes, n * sizeof *t);
    if (t) {
      p->notes = t;
      p->notes_cap = n;
    } else {
      p->notes_all = 1; /* the owner looks at every record instead */
    }
  }
  if (p->nnotes < p->notes_cap)
    p->notes[p->nnotes++] = fd;
  uint64_t one = 1;
  int fd_to = p->resting && p->host_fd >= 0 ? p->host_fd : p->note_fd;
  while (write(fd_to, &one, sizeof one) < 0 && errno == EINTR)
    ;
  /* EAGAIN only when the counter is near 2^64: the owner is told already */
}

/* The generation of a slot word while a close is under way is odd: the
 * closer bumps it once before close(2) and once after. */
#define FDGEN_CLOSING(word) (FIB__FDGEN_GEN(word) & 1u)
#define FDGEN_ONE ((uint64_t)1 << 32)

/* Wait until no close of the slot's number is under way on another
 * thread; the word then. acquire: what the closer did before its second
 * bump (the close(2) among it) comes before what the caller does next.
 * The wait is as long as one close(2) on a running thread. */
static uint64_t fdgen_settled(uint64_t *slot) {
  uint64_t word = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  for (unsigned spins = 0; FDGEN_CLOSING(word);) {
    fib__spin_step(++spins);
    word = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  }
  return word;
}

/* Bump the generation of fd's slot by `step` (1: a close begins; 2: the
 * number was handed out anew), leaving self's bit if `keep`, and tell the
 * other pollers whose bits were set. */
static void fdgen_bump(int fd, struct fib__poller *self,
                       struct fib__fdrec *keep, uint32_t step) {
  uint64_t *slot = keep ? keep->slot : fdgen_find(fd);
  if (!slot)
    return; /* no chunk: no record anywhere has fd, nothing to tell */
  uint32_t mine = keep && self ? self->bit : 0;
  /* Relaxed loads, then the compare-and-swap, release: it is sequenced
   * before the close(2) that frees the number (fib_close), and a thread
   * that gets the number again gets it from the kernel after that close,
   * through the kernel's descriptor table lock (released by close,
   * taken by the call that hands the number out), so its relaxed load of
   * the slot (fib__fdrec_stale) sees this bump: that lock is the acquire
   * side. The compare-and-swap and enlist's fetch-or are read-modify-
   * writes of one word, so they are ordered: either the bump sees a
   * poller's bit (and that poller gets a notice), or the poller's
   * fetch-or sees the new generation (and the poller learns the new
   * descriptor, after the close if one is under way: fdgen_settled).
   * A bump starts from an even generation: a close under way on another
   * thread (two threads closing one number at once) ends first. */
  uint64_t old, next;
  do {
    old = fdgen_settled(slot);
    next = (uint64_t)(FIB__FDGEN_GEN(old) + step) << 32 | mine;
  } while (!__atomic_compare_exchange_n(slot, &old, next, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED));
  if (keep)
    keep->cgen = FIB__FDGEN_GEN(next);
  uint32_t others = (uint32_t)old;
  if (self && self->bit != 1u << 31) /* bit 31 is shared: keep it */
    others &= ~self->bit;
  if (!others)
    return; /* the common case: only this thread's poller had it */
  pthread_mutex_lock(&reg_lock);
  for (size_t i = 0; i < nreg; i++) {
    struct fib__poller *p = reg[i];
    if (p && p != self && (others & p->bit))
      notify_locked(p, fd);
  }
  pthread_mutex_unlock(&reg_lock);
}

void fib__fdgen_close(int fd, struct fib__poller *self,
                      struct fib__fdrec *keep) {
  fdgen_bump(fd, self, keep, 2);
}

void fib__fdgen_closing(int fd, struct fib__poller *self) {
  fdgen_bump(fd, self, NULL, 1);
}

void fib__fdgen_closed(int fd) {
  uint64_t *slot = fdgen_find(fd);
  /* release: the close(2) before it comes before what a thread waiting in
   * fdgen_settled does after. An add, not a store: pollers' fetch-ors may
   * have set their bits meanwhile, and they stay. */
  if (slot)
    (void)__atomic_fetch_add(slot, FDGEN_ONE, __ATOMIC_RELEASE);
}

void fib__poller_enlist(struct fib__poller *p, struct fib__fdrec *r) {
  /* The generation and this poller's bit in one read-modify-write:
   * ordered with every close's compare-and-swap (fdgen_bump). Relaxed:
   * it publishes nothing but itself. A close under way: wait for its
   * end (fdgen_settled); the bit set now stays through its second bump. */
  uint64_t word = p->bit ? __atomic_fetch_or(r->slot, (uint64_t)p->bit,
                                             __ATOMIC_RELAXED)
                         : __atomic_load_n(r->slot, __ATOMIC_RELAXED);
  if (FDGEN_CLOSING(word))
    word = fdgen_settled(r->slot);
  r->cgen = FIB__FDGEN_GEN(word);
}

void fib__poller_stale(struct fib__poller *p, int fd) {
  fib__poller_forget(p, fd, FIB_EBADF, 0);
#ifdef FIB__HAVE_IO_URING
  fib__uring_cancel_fd(fd);
#endif
}

/* The notice eventfd fired: take the notices, and deal with each record
 * they name that is stale. Drain first, then take the list (a closer
 * appends, then writes): a notice appended after the take writes again. */
static void take_notes(struct fib__poller *p) {
  uint64_t v;
  while (read(p->note_fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
  pthread_mutex_lock(&reg_lock);
  int *notes = p->notes;
  size_t n = p->nnotes;
  int all = p->notes_all;
  p->notes = NULL;
  p->nnotes = p->notes_cap = 0;
  p->notes_all = 0;
  pthread_mutex_unlock(&reg_lock);
  /* reg_lock ordered the closer's bump before this: its generation is
   * seen by the stale tests below */
  for (size_t i = 0; i < n; i++) {
    int fd = notes[i];
    struct fib__fdrec *r = (size_t)fd < p->nrecs ? p->recs[fd] : NULL;
    if (r && r->kind != FIB__FD_UNKNOWN && !r->on_event && fib__fdrec_stale(r))
      fib__poller_stale(p, fd);
  }
  fib__sys_free(notes);
  if (all)
    for (size_t fd = 0; fd < p->nrecs; fd++) {
      struct fib__fdrec *r = p->recs[fd];
      if (r && r->kind != FIB__FD_UNKNOWN && !r->on_event &&
          fib__fdrec_stale(r))
        fib__poller_stale(p, (int)fd);
    }
}

static int has_waiters(const struct fib__poller *p) {
  for (size_t i = 0; i < p->nrecs; i++)
    if (p->recs[i] && (!fib__waitq_empty(&p->recs[i]->readers) ||
                       !fib__waitq_empty(&p->recs[i]->writers)))
      return 1;
  return 0;
}

static void poller_release(struct fib__poller *p) {
  poller_leave(p);
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
  poller_leave(p); /* nobody polls it: notices would only pile up */
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
  p->note_fd = -1;
  p->host_fd = -1;
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
  /* Now, before any call looks at a descriptor: the eventfd takes the
   * lowest free number, which must not be one a caller has just passed
   * (a closed one: the call must say FIB_EBADF, not use the eventfd). */
  poller_join(p);
  return p;
}

/* fib__poller_rec when fd has no record yet (or is negative). */
static __attribute__((noinline)) struct fib__fdrec *
rec_make(struct fib__poller *p, int fd, int *err) {
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
    if (!r || !(r->slot = fib__fdgen_slot(fd))) {
      fib__sys_free(r);
      *err = FIB_ENOMEM;
      return NULL;
    }
    p->recs[i] = r;
  }
  return r;
}

struct fib__fdrec *fib__poller_rec(struct fib__poller *p, int fd, int *err) {
  struct fib__fdrec *r;
  if ((size_t)fd < p->nrecs && (r = p->recs[fd]) != NULL) /* fd >= 0 */
    return r;
  return rec_make(p, fd, err);
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
  /* (an epoll runtime on a thread whose io_uring host rests: its sleep
   * must hear of closes through note_fd) */
  fib__poller_unrest(p);
  do
    n = epoll_wait(p->epfd, evs, EVENTS_PER_WAIT, timeout_ms(deadline));
  while (n < 0 && errno == EINTR && deadline == FIB__NO_DEADLINE);
  for (int i = 0; i < n; i++) {
    if (evs[i].data.u64 == FIB__POLLER_WAKE_TAG)
      continue; /* a wake-up: it has ended the wait; the sleeper reads it */
    if (evs[i].data.u64 == FIB__POLLER_NOTE_TAG) {
      take_notes(p); /* closes on other threads */
      continue;
    }
    int fd = (int)(uint32_t)evs[i].data.u64;
    uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
    struct fib__fdrec *r =
        (size_t)fd < p->nrecs ? p->recs[fd] : NULL;
    if (r && r->watched && r->gen == gen) /* else: a closed one's, stale */
      deliver(r, evs[i].events);
  }
  return n > 0 ? n : 0;
}
