/* SPDX-License-Identifier: MIT */
/* test_model.c -- the cross-worker protocols of workers.h hammered on real
 * threads, many rounds each, with exact counts, so that a broken protocol
 * shows as a wrong count, a double wake-up or a stall:
 *
 *   - the inbox (src/sched/inbox.h, the very code workers.c runs): several
 *     threads push while one takes; every node arrives once, in push
 *     order per pusher;
 *   - the claim (workers.h's fib__claim_arm / fib__claim_take): wakers of
 *     every kind race for one parked "fiber"; exactly one wins each round,
 *     an uncancellable park only to its completer; and the cancel check's
 *     Dekker pair, where losing the pair would leave no winner at all;
 *   - the sleep and wake-up of a runtime (static in workers.c, so through
 *     the public calls): fib_post and fib_call from plain threads in
 *     bursts that start together after a random pause, often long enough
 *     for the runtime to fall asleep, into one, two and four workers;
 *   - end to end with real workers: channel ping-pong and a mutex-guarded
 *     counter across workers, fib_cancel racing the completion of a
 *     fib_chan_recv_until and of a fib_join on other workers, and the
 *     deadlock census after cross-worker wake-ups.
 *
 * A lost wake-up would leave a worker asleep until some deadline. Every
 * wait here has a generous one (the watchdog), and a wait that lasts
 * until it (a stall) fails the case: there must be none. Sizes scale with
 * FIB_TEST_SCALE (valgrind, sanitizers, qemu); the watchdog with
 * FIB_TEST_TIMEOUT. */
#include "fiber_helpers.h"
#include "sched/inbox.h"
#include "sched/spin.h"
#include "sched/workers.h"

#include <fibers.h>

#include <pthread.h>
#include <sched.h>
#include <stdint.h>

/* ---- small tools */

/* How long a wait may last before it counts as a stall: five seconds
 * (the waits take microseconds; a loaded machine may pause a thread for
 * a while), times the tools' slow-down (FIB_TEST_TIMEOUT; 0, no limit,
 * gives ten). A lost wake-up makes its wait last until the deadline,
 * however far it is. */
static uint64_t watchdog_ns(void) {
  const char *s = getenv("FIB_TEST_TIMEOUT");
  double factor = s && *s ? atof(s) : 1.0;
  if (factor <= 0)
    factor = 10;
  if (factor < 1)
    factor = 1;
  return (uint64_t)(factor * 5e9);
}

/* A wait that lasted until its watchdog deadline: had a wake-up been lost,
 * the sleeping worker would have woken only then (so just after it: how
 * late it returned tells a lost wake-up from a paused machine). Fails at
 * once: with a lost wake-up, every later round would wait as long. */
static void check_no_stall(uint64_t deadline, const char *what) {
  uint64_t now = fib_now_ns();
  if (now >= deadline)
    check_failed(__FILE__, __LINE__,
                 "%s lasted until its watchdog deadline (%.0f s) and %.3f ms "
                 "more: a wake-up was lost", what,
                 (double)watchdog_ns() / 1e9, (double)(now - deadline) / 1e6);
}

/* A cheap per-thread random number (xorshift32); *state is never 0. */
static unsigned next_random(unsigned *state) {
  unsigned x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *state = x;
}

/* Busy work the compiler cannot drop: a few nanoseconds per step, to
 * shift one side of a race against the other. */
static void jitter(unsigned steps) {
  volatile unsigned sink = 0;
  for (unsigned i = 0; i < steps; i++)
    sink = sink + i;
}

/* Wait until *word >= target. Spins, then gives the CPU away: the races
 * below run more threads than there may be cores. */
static void spin_until(const unsigned *word, unsigned target) {
  for (unsigned i = 0; __atomic_load_n(word, __ATOMIC_ACQUIRE) < target; i++)
    if (i < 200)
      fib__cpu_relax();
    else
      sched_yield();
}

/* A barrier for `parties` threads that is never reset: each keeps its own
 * count of passes. acq_rel: what each wrote before it is seen after it. */
struct barrier {
  unsigned arrived; /* atomic */
  unsigned parties;
};

static void barrier_pass(struct barrier *b, unsigned *passes) {
  ++*passes;
  __atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL);
  spin_until(&b->arrived, *passes * b->parties);
}

static void start_threads(pthread_t *t, unsigned n, void *(*fn)(void *),
                          void *args, size_t arg_size) {
  for (unsigned i = 0; i < n; i++)
    CHECK_OK(pthread_create(&t[i], NULL, fn, (char *)args + i * arg_size));
}

static void join_threads(pthread_t *t, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    CHECK_OK(pthread_join(t[i], NULL));
}

/* ---- the inbox: many pushers, one taker */

enum { PUSHERS = 3 };

struct inbox_item {
  struct fib__runq_node link; /* first: the node is the item */
  unsigned pusher, seq;
  unsigned stamp;             /* written before the push, read after */
};

struct inbox_model {
  struct fib__runq_node *head; /* the inbox word */
  struct inbox_item *items;    /* PUSHERS * per */
  unsigned per;                /* pushes per pusher per round */
  unsigned finished;           /* pushers done this round (atomic) */
};

struct pusher {
  struct inbox_model *m;
  unsigned index;
};

static unsigned stamp_of(unsigned pusher, unsigned seq) {
  return (pusher * 2654435761u) ^ (seq * 40503u) ^ 0x5a5a5a5au;
}

static void *pusher_main(void *arg) {
  const struct pusher *p = arg;
  struct inbox_model *m = p->m;
  for (unsigned seq = 0; seq < m->per; seq++) {
    struct inbox_item *it = &m->items[p->index * m->per + seq];
    it->pusher = p->index;
    it->seq = seq;
    it->stamp = stamp_of(p->index, seq);
    fib__inbox_push(&m->head, &it->link);
  }
  __atomic_add_fetch(&m->finished, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* Check and count what one take brought: each pusher's items in order. */
static unsigned take_and_check(struct inbox_model *m, unsigned *next) {
  unsigned got = 0;
  for (struct fib__runq_node *n = fib__inbox_take(&m->head); n;) {
    struct inbox_item *it = (struct inbox_item *)n;
    n = n->next; /* read before the item could be reused */
    CHECK(it->pusher < PUSHERS);
    CHECK_EQ(it->seq, next[it->pusher]); /* once each, FIFO per pusher */
    CHECK_EQ(it->stamp, stamp_of(it->pusher, it->seq));
    next[it->pusher]++;
    got++;
  }
  return got;
}

/* One round: PUSHERS threads push `per` items each while this thread
 * takes, now at once, now after letting the stack grow. */
static void inbox_round(struct inbox_model *m, unsigned *seed) {
  pthread_t t[PUSHERS];
  struct pusher args[PUSHERS];
  unsigned next[PUSHERS] = {0};
  for (unsigned i = 0; i < PUSHERS; i++)
    args[i] = (struct pusher){m, i};
  m->finished = 0;
  start_threads(t, PUSHERS, pusher_main, args, sizeof args[0]);
  unsigned got = 0;
  while (__atomic_load_n(&m->finished, __ATOMIC_ACQUIRE) < PUSHERS) {
    got += take_and_check(m, next);
    jitter(next_random(seed) % 512);
  }
  got += take_and_check(m, next); /* every push has happened: the rest */
  join_threads(t, PUSHERS);
  CHECK_EQ(got, PUSHERS * m->per);
  for (unsigned i = 0; i < PUSHERS; i++)
    CHECK_EQ(next[i], m->per);
  CHECK_PTR_EQ(fib__inbox_take(&m->head), NULL);
}

TEST(inbox_delivers_every_push_once_in_order_per_pusher) {
  struct inbox_model m = {0};
  m.per = (unsigned)scaled(200000);
  m.items = calloc((size_t)PUSHERS * m.per, sizeof *m.items);
  CHECK(m.items != NULL);
  unsigned seed = 12345;
  for (int round = 0; round < 10; round++) /* the same nodes again */
    inbox_round(&m, &seed);
  free(m.items);
}

/* ---- the claim: every kind of waker races for one parked fiber */

enum waker {
  BY_FIBER,     /* the fiber itself took its claim back: it saw a cancel */
  BY_COMPLETER, /* the child it joins finished, a hand-off, a reply */
  BY_DEADLINE,  /* its timer */
  BY_CANCEL,    /* fib_cancel */
  WAKERS
};

struct claim_model {
  struct fib__fiber *f;  /* only claim and cancelled are used */
  struct barrier bar;
  unsigned rounds;
  int how;               /* this round's claim: ANY or COMPLETE */
  unsigned published;    /* the fiber can be found (atomic), e.g. its
                            joiner slot is set */
  unsigned won[WAKERS];  /* this round's winners (atomic) */
  unsigned total[WAKERS];
};

struct claim_racer {
  struct claim_model *m;
  enum waker role;
};

/* The parked fiber's side, as fib_join and park do it: arm the claim, let
 * wakers find the fiber, then (cancellable parks) the cancel check, which
 * takes the claim back if it sees a cancel. */
static void fiber_side(struct claim_model *m) {
  fib__claim_arm(m->f, m->how);
  __atomic_store_n(&m->published, 1, __ATOMIC_RELEASE);
  if (m->how == FIB__CLAIM_COMPLETE)
    return; /* uncancellable: no check */
  if (__atomic_load_n(&m->f->cancelled, __ATOMIC_SEQ_CST)) {
    int c = FIB__CLAIM_ANY;
    if (__atomic_compare_exchange_n(&m->f->claim, &c, FIB__CLAIM_NONE, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
      __atomic_add_fetch(&m->won[BY_FIBER], 1, __ATOMIC_RELAXED);
  }
}

/* A waker's side: find the fiber (a canceller needs not: it looks the id
 * up), then try to take its claim; only a winner would wake it. */
static void waker_side(struct claim_model *m, enum waker role) {
  if (role == BY_CANCEL)
    __atomic_store_n(&m->f->cancelled, 1, __ATOMIC_SEQ_CST);
  else
    spin_until(&m->published, 1);
  if (fib__claim_take(m->f, role == BY_COMPLETER))
    __atomic_add_fetch(&m->won[role], 1, __ATOMIC_RELAXED);
}

/* The round's outcome, checked by the fiber's thread between rounds. */
static void check_claim_round(struct claim_model *m) {
  unsigned winners = 0;
  for (int i = 0; i < WAKERS; i++) {
    winners += m->won[i];
    m->total[i] += m->won[i];
  }
  CHECK_EQ(winners, 1u); /* never none (lost), never two (double wake) */
  if (m->how == FIB__CLAIM_COMPLETE)
    CHECK_EQ(m->won[BY_COMPLETER], 1u);
  CHECK_EQ(m->f->claim, FIB__CLAIM_NONE);
}

static void *claim_racer_main(void *arg) {
  const struct claim_racer *r = arg;
  struct claim_model *m = r->m;
  unsigned seed = 2463534242u + (unsigned)r->role, passes = 0;
  for (unsigned round = 0; round < m->rounds; round++) {
    if (r->role == BY_FIBER) { /* set the round up while the others wait */
      m->f->claim = FIB__CLAIM_NONE;
      m->f->cancelled = 0;
      m->published = 0;
      memset(m->won, 0, sizeof m->won);
      m->how = next_random(&seed) % 3 ? FIB__CLAIM_ANY : FIB__CLAIM_COMPLETE;
    }
    barrier_pass(&m->bar, &passes);
    jitter(next_random(&seed) % 64);
    if (r->role == BY_FIBER)
      fiber_side(m);
    else
      waker_side(m, r->role);
    barrier_pass(&m->bar, &passes);
    if (r->role == BY_FIBER)
      check_claim_round(m);
  }
  return NULL;
}

TEST(exactly_one_waker_wins_each_claim) {
  struct claim_model m = {0};
  m.f = calloc(1, sizeof *m.f);
  CHECK(m.f != NULL);
  m.rounds = (unsigned)scaled(50000);
  m.bar.parties = WAKERS;
  pthread_t t[WAKERS];
  struct claim_racer args[WAKERS];
  for (int i = 0; i < WAKERS; i++)
    args[i] = (struct claim_racer){&m, (enum waker)i};
  start_threads(t, WAKERS, claim_racer_main, args, sizeof args[0]);
  join_threads(t, WAKERS);
  unsigned sum = 0;
  for (int i = 0; i < WAKERS; i++)
    sum += m.total[i];
  CHECK_EQ(sum, m.rounds);
  printf("claim: %u rounds, won by the fiber %u, completer %u, deadline %u, "
         "cancel %u\n", m.rounds, m.total[BY_FIBER], m.total[BY_COMPLETER],
         m.total[BY_DEADLINE], m.total[BY_CANCEL]);
  free(m.f);
}

/* The cancel check alone: the fiber stores its claim then loads
 * `cancelled`, the canceller stores `cancelled` then CASes the claim. With
 * no other waker, a round where neither side saw the other would end with
 * no winner: a cancel lost, the fiber asleep for good. */
struct dekker {
  struct fib__fiber *f;
  struct barrier bar;
  unsigned rounds;
  unsigned fiber_won, cancel_won; /* this round (atomic) */
  unsigned fiber_total, cancel_total;
};

static void *dekker_fiber(void *arg) {
  struct dekker *d = arg;
  unsigned seed = 88172645u, passes = 0;
  for (unsigned round = 0; round < d->rounds; round++) {
    d->f->claim = FIB__CLAIM_NONE;
    d->f->cancelled = 0;
    d->fiber_won = d->cancel_won = 0;
    barrier_pass(&d->bar, &passes);
    jitter(next_random(&seed) % 16);
    fib__claim_arm(d->f, FIB__CLAIM_ANY); /* group_suspend's half */
    if (__atomic_load_n(&d->f->cancelled, __ATOMIC_SEQ_CST)) {
      int c = FIB__CLAIM_ANY;
      if (__atomic_compare_exchange_n(&d->f->claim, &c, FIB__CLAIM_NONE, 0,
                                      __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        __atomic_store_n(&d->fiber_won, 1, __ATOMIC_RELAXED);
    }
    barrier_pass(&d->bar, &passes);
    unsigned f = d->fiber_won, c = d->cancel_won;
    if (f + c != 1) /* print the round before failing */
      printf("round %u: fiber %u, canceller %u\n", round, f, c);
    CHECK_EQ(f + c, 1u);
    d->fiber_total += f;
    d->cancel_total += c;
  }
  return NULL;
}

static void *dekker_canceller(void *arg) {
  struct dekker *d = arg;
  unsigned seed = 521288629u, passes = 0;
  for (unsigned round = 0; round < d->rounds; round++) {
    barrier_pass(&d->bar, &passes);
    jitter(next_random(&seed) % 16);
    /* fib_cancel's half */
    __atomic_store_n(&d->f->cancelled, 1, __ATOMIC_SEQ_CST);
    if (fib__claim_take(d->f, 0))
      __atomic_store_n(&d->cancel_won, 1, __ATOMIC_RELAXED);
    barrier_pass(&d->bar, &passes);
  }
  return NULL;
}

TEST(the_cancel_check_never_loses_a_cancel) {
  struct dekker d = {0};
  d.f = calloc(1, sizeof *d.f);
  CHECK(d.f != NULL);
  d.rounds = (unsigned)scaled(500000);
  d.bar.parties = 2;
  pthread_t a, b;
  CHECK_OK(pthread_create(&a, NULL, dekker_fiber, &d));
  CHECK_OK(pthread_create(&b, NULL, dekker_canceller, &d));
  CHECK_OK(pthread_join(a, NULL));
  CHECK_OK(pthread_join(b, NULL));
  CHECK_EQ(d.fiber_total + d.cancel_total, d.rounds);
  printf("cancel check: %u rounds, the fiber saw the cancel first %u, the "
         "canceller won %u\n", d.rounds, d.fiber_total, d.cancel_total);
  free(d.f);
}

/* ---- a runtime asleep between bursts of posts and calls from threads */

enum { POSTERS = 3, BURST = 4 };

struct post_model {
  fib_runtime *rt;
  unsigned workers;
  fib_sem tick;        /* posted by every posted function */
  long rounds;         /* bursts per poster */
  struct barrier bar;  /* the posters start each burst together */
  long posted;         /* posts and calls made so far (atomic) */
  long executed;       /* posted functions run (atomic) */
  long out_of_order;   /* one worker: a poster's posts ran out of order */
  int run_result;
};

struct poster {
  struct post_model *m;
  long next_seq;       /* the posted functions' view of this poster */
  long made;
};

struct post_item {
  struct poster *p;
  long seq;
};

static void *posted_fn(void *arg) {
  struct post_item *it = arg;
  struct post_model *m = it->p->m;
  /* One worker runs posts in the order each thread made them. */
  if (m->workers == 1 && it->p->next_seq++ != it->seq)
    m->out_of_order++;
  __atomic_add_fetch(&m->executed, 1, __ATOMIC_RELAXED);
  CHECK_OK(fib_sem_post(&m->tick));
  return (void *)(uintptr_t)(it->seq * 3);
}

/* One item: a post, or the burst's last, a call (which blocks until it
 * has run). */
static void post_one(struct poster *p, struct post_item *it, int call) {
  struct post_model *m = p->m;
  __atomic_add_fetch(&m->posted, 1, __ATOMIC_RELAXED);
  if (!call) {
    CHECK_OK(fib_post(m->rt, posted_fn, it));
    return;
  }
  void *out;
  CHECK_OK(fib_call(m->rt, posted_fn, it, &out));
  CHECK_EQ((uintptr_t)out, (uintptr_t)(it->seq * 3));
}

/* Bursts of posts ending with a call. Every poster starts its burst after
 * the same pause (a barrier, then a random sleep from one sequence, often
 * longer than the runtime spins before it sleeps), so that the bursts'
 * pushes come together at some point of the runtime's way to sleep, and
 * the last of them, with every poster then blocked in its call, has no
 * later push to make up for a wake-up it lost. */
static void *poster_main(void *arg) {
  struct poster *p = arg;
  struct post_model *m = p->m;
  long n = m->rounds * BURST;
  struct post_item *items = calloc((size_t)n, sizeof *items);
  CHECK(items != NULL);
  unsigned seed = 977u, passes = 0; /* the same pauses for every poster */
  for (long round = 0; round < m->rounds; round++) {
    barrier_pass(&m->bar, &passes);
    struct timespec pause = {0, (long)(next_random(&seed) % 200) * 1000};
    nanosleep(&pause, NULL);
    for (long b = 0; b < BURST; b++) {
      long i = round * BURST + b;
      items[i] = (struct post_item){p, i};
      post_one(p, &items[i], b == BURST - 1);
    }
  }
  p->made = n;
  return items; /* freed once the runtime is done with them */
}

/* The runtime's first fiber: counts the posted functions' ticks, each
 * wait bounded by the watchdog. The posters never pause for long, so a
 * wait that lasts until it is a stall: the runtime slept through a post
 * (which then runs at the deadline's wake-up, before this fiber does). */
static void *post_watchdog(void *arg) {
  struct post_model *m = arg;
  long want = POSTERS * m->rounds * BURST;
  for (long taken = 0; taken < want; taken++) {
    uint64_t deadline = fib_now_ns() + watchdog_ns();
    int err = fib_sem_wait_until(&m->tick, deadline);
    check_no_stall(deadline, "a wait for posts");
    CHECK_OK(err);
  }
  return NULL;
}

static void *run_runtime(void *arg) {
  struct post_model *m = arg;
  m->run_result = fib_run(m->rt);
  return NULL;
}

static void posts_into(unsigned workers) {
  struct post_model m = {0};
  fib_runtime_opts opts = {0};
  opts.flags = FIB_ACCEPT_POSTS;
  opts.workers = workers;
  CHECK_OK(fib_runtime_create(&m.rt, &opts));
  m.workers = workers;
  m.rounds = scaled(2000);
  m.bar.parties = POSTERS;
  CHECK_OK(fib_sem_init(&m.tick, 0));
  CHECK_OK(fib_spawn(m.rt, post_watchdog, &m, NULL, NULL));
  pthread_t runner, t[POSTERS];
  struct poster p[POSTERS];
  for (int i = 0; i < POSTERS; i++)
    p[i] = (struct poster){&m, 0, 0};
  CHECK_OK(pthread_create(&runner, NULL, run_runtime, &m));
  start_threads(t, POSTERS, poster_main, p, sizeof p[0]);
  CHECK_OK(pthread_join(runner, NULL)); /* the watchdog saw every post */
  CHECK_OK(m.run_result);
  for (int i = 0; i < POSTERS; i++) {
    void *items;
    CHECK_OK(pthread_join(t[i], &items));
    free(items);
    CHECK_EQ(p[i].made, m.rounds * BURST);
    if (workers == 1)
      CHECK_EQ(p[i].next_seq, m.rounds * BURST);
  }
  CHECK_EQ(m.executed, POSTERS * m.rounds * BURST);
  CHECK_EQ(m.posted, m.executed);
  CHECK_EQ(m.out_of_order, 0);
  CHECK_OK(fib_sem_destroy(&m.tick));
  CHECK_OK(fib_runtime_destroy(m.rt));
}

TEST(posts_and_calls_wake_a_sleeping_runtime_every_time) {
  posts_into(1);
}

TEST(posts_and_calls_wake_sleeping_workers_every_time) {
  posts_into(2);
  posts_into(4);
}

/* ---- end to end: fibers on different workers */

/* Spawn fn(arg) on worker w (mod the count) of the current runtime. */
static fib_id spawn_on(unsigned w, unsigned workers, fib_fn fn, void *arg) {
  fib_attr attr = {0};
  attr.worker = w % workers + 1;
  fib_id id;
  CHECK_OK(fib_spawn(NULL, fn, arg, &attr, &id));
  return id;
}

/* Join a fiber that ends soon, with the watchdog: a child finishing on
 * another worker wakes its joiner through the joiner's worker's inbox. */
static void *join_watched(fib_id id) {
  void *v = NULL;
  uint64_t deadline = fib_now_ns() + watchdog_ns();
  int err = fib_join_until(id, &v, deadline);
  check_no_stall(deadline, "a join");
  CHECK_OK(err);
  return v;
}

/* Receive with the watchdog (with a lost wake-up the value would come
 * only with the deadline's wake-up, or not at all). */
static void recv_watched(fib_chan *ch, long *out) {
  uint64_t deadline = fib_now_ns() + watchdog_ns();
  int err = fib_chan_recv_until(ch, out, deadline);
  check_no_stall(deadline, "a receive");
  CHECK_OK(err);
}

struct pingpong {
  fib_chan to, back;
  long rounds;
  long pong_sum, ping_sum; /* what each side received */
};

static void *ping(void *arg) {
  struct pingpong *p = arg;
  for (long i = 1; i <= p->rounds; i++) {
    CHECK_OK(fib_chan_send(&p->to, &i));
    long v;
    recv_watched(&p->back, &v);
    CHECK_EQ(v, i + 1);
    p->ping_sum += v;
    if (i % 32 == 0) /* both workers go idle and fall asleep */
      CHECK_OK(fib_sleep_ns(300000));
  }
  return NULL;
}

static void *pong(void *arg) {
  struct pingpong *p = arg;
  for (long i = 1; i <= p->rounds; i++) {
    long v;
    recv_watched(&p->to, &v);
    CHECK_EQ(v, i);
    p->pong_sum += v;
    v++;
    CHECK_OK(fib_chan_send(&p->back, &v));
  }
  return NULL;
}

struct e2e {
  unsigned workers;
  long rounds;
  long outcome[3];      /* race cases: how rounds ended */
};

static void *pingpong_main(void *arg) {
  struct e2e *e = arg;
  unsigned pairs = e->workers;
  struct pingpong *p = calloc(pairs, sizeof *p);
  fib_id *ids = calloc(2 * pairs, sizeof *ids);
  CHECK(p && ids);
  for (unsigned k = 0; k < pairs; k++) { /* each pair across two workers */
    CHECK_OK(fib_chan_init(&p[k].to, sizeof(long), 0));
    CHECK_OK(fib_chan_init(&p[k].back, sizeof(long), 0));
    p[k].rounds = e->rounds;
    ids[2 * k] = spawn_on(k, e->workers, ping, &p[k]);
    ids[2 * k + 1] = spawn_on(k + 1, e->workers, pong, &p[k]);
  }
  for (unsigned i = 0; i < 2 * pairs; i++) /* they run for a while */
    CHECK_OK(fib_join(ids[i], NULL));
  long n = e->rounds;
  for (unsigned k = 0; k < pairs; k++) {
    CHECK_EQ(p[k].pong_sum, n * (n + 1) / 2);
    CHECK_EQ(p[k].ping_sum, n * (n + 1) / 2 + n);
    CHECK_OK(fib_chan_destroy(&p[k].to));
    CHECK_OK(fib_chan_destroy(&p[k].back));
  }
  free(p);
  free(ids);
  return NULL;
}

/* Run main_fn(e) as the first fiber of a runtime with `workers`. */
static void run_e2e(unsigned workers, long rounds, fib_fn main_fn,
                    struct e2e *e) {
  memset(e, 0, sizeof *e);
  e->workers = workers;
  e->rounds = rounds;
  fib_runtime *rt = new_workers(workers);
  CHECK_OK(fib_spawn(rt, main_fn, e, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
}

TEST(channel_ping_pong_across_workers_loses_nothing) {
  struct e2e e;
  run_e2e(2, scaled(20000), pingpong_main, &e);
  run_e2e(4, scaled(5000), pingpong_main, &e);
}

/* A counter under a shared mutex, its fibers spread over the workers,
 * with a switch inside the section and naps that let workers sleep. */
struct counter {
  fib_mutex m;
  long value;   /* under m */
  int held;     /* under m: 1 inside the section */
  long rounds;
};

static void *count_up(void *arg) {
  struct counter *c = arg;
  for (long i = 0; i < c->rounds; i++) {
    uint64_t deadline = fib_now_ns() + watchdog_ns();
    int err = fib_mutex_lock_until(&c->m, deadline);
    check_no_stall(deadline, "a lock");
    CHECK_OK(err);
    CHECK_EQ(c->held, 0);
    c->held = 1;
    long seen = c->value;
    if (i % 5 == 0)
      CHECK_OK(fib_yield()); /* hold it across a switch */
    c->value = seen + 1;
    c->held = 0;
    CHECK_OK(fib_mutex_unlock(&c->m));
    if (i % 256 == 255)
      CHECK_OK(fib_sleep_ns(200000));
  }
  return NULL;
}

static void *counter_main(void *arg) {
  struct e2e *e = arg;
  unsigned fibers = 3 * e->workers;
  struct counter c = {.rounds = e->rounds};
  CHECK_OK(fib_mutex_init(&c.m));
  fib_id *ids = calloc(fibers, sizeof *ids);
  CHECK(ids != NULL);
  for (unsigned i = 0; i < fibers; i++)
    ids[i] = spawn_on(i, e->workers, count_up, &c);
  for (unsigned i = 0; i < fibers; i++) /* they run for a while */
    CHECK_OK(fib_join(ids[i], NULL));
  CHECK_EQ(c.value, (long)fibers * e->rounds);
  CHECK_OK(fib_mutex_destroy(&c.m));
  free(ids);
  return NULL;
}

TEST(mutex_counter_across_workers_is_exact) {
  struct e2e e;
  run_e2e(2, scaled(6000), counter_main, &e);
  run_e2e(4, scaled(3000), counter_main, &e);
}

/* ---- fib_cancel racing a completion on another worker */

enum { DELIVERED, CANCELLED, OUTCOMES };

/* One round: `waiter` waits on worker 1, `completer` completes its wait
 * from worker 2 and `canceller` cancels it from worker 3 (mod the count),
 * both as soon as the waiter is about to wait, each after its own random
 * delay. */
struct cancel_round {
  fib_chan ch;          /* unbuffered */
  fib_id waiter, child;
  unsigned ready;       /* the waiter is about to wait (atomic) */
  unsigned delay[2];    /* the completer's and the canceller's */
  long value;           /* what is sent, or returned by the child */
  long got;
  int err;              /* the waiter's result */
};

/* Until the waiter is about to wait: yield (it may share our worker),
 * then nap (its worker's thread may need our core to get there). */
static void wait_ready(struct cancel_round *r) {
  for (unsigned i = 0; !__atomic_load_n(&r->ready, __ATOMIC_ACQUIRE); i++)
    CHECK_OK(i < 64 ? fib_yield() : fib_sleep_ns(20000));
}

static void *cancel_it(void *arg) {
  struct cancel_round *r = arg;
  wait_ready(r);
  jitter(r->delay[1]);
  CHECK_OK(fib_cancel(NULL, r->waiter)); /* it is not joined before us */
  return NULL;
}

static void *recv_waiter(void *arg) {
  struct cancel_round *r = arg;
  __atomic_store_n(&r->ready, 1, __ATOMIC_RELEASE);
  uint64_t deadline = fib_now_ns() + watchdog_ns();
  r->err = fib_chan_recv_until(&r->ch, &r->got, deadline);
  check_no_stall(deadline, "a receive racing a cancel");
  return NULL;
}

static void *send_it(void *arg) {
  struct cancel_round *r = arg;
  wait_ready(r);
  jitter(r->delay[0]);
  /* If the cancel wins, the round's fiber takes the value instead. */
  CHECK_OK(fib_chan_send(&r->ch, &r->value));
  return NULL;
}

static void *cancel_recv_main(void *arg) {
  struct e2e *e = arg;
  struct cancel_round r;
  unsigned seed = 362436069u;
  CHECK_OK(fib_chan_init(&r.ch, sizeof(long), 0));
  for (long round = 0; round < e->rounds; round++) {
    r.ready = 0;
    r.value = round + 1;
    r.got = 0;
    r.delay[0] = next_random(&seed) % 2048;
    r.delay[1] = next_random(&seed) % 2048;
    r.waiter = spawn_on(1, e->workers, recv_waiter, &r);
    fib_id sender = spawn_on(2, e->workers, send_it, &r);
    fib_id canceller = spawn_on(3, e->workers, cancel_it, &r);
    join_watched(canceller);
    join_watched(r.waiter);
    if (r.err == 0) { /* it got the value, and nobody else can */
      CHECK_EQ(r.got, r.value);
      e->outcome[DELIVERED]++;
    } else { /* cancelled, and so received nothing: the value is ours */
      CHECK_EQ(r.err, FIB_ECANCELED);
      long v = 0;
      recv_watched(&r.ch, &v);
      CHECK_EQ(v, r.value);
      e->outcome[CANCELLED]++;
    }
    join_watched(sender);
  }
  CHECK_EQ(fib_chan_len(&r.ch), 0u);
  CHECK_OK(fib_chan_destroy(&r.ch));
  return NULL;
}

static void cancel_race(unsigned workers, fib_fn main_fn, const char *what) {
  struct e2e e;
  run_e2e(workers, scaled(3000), main_fn, &e);
  CHECK_EQ(e.outcome[DELIVERED] + e.outcome[CANCELLED], e.rounds);
  printf("%s, %u workers: %ld rounds, completed %ld, cancelled %ld\n", what,
         workers, e.rounds, e.outcome[DELIVERED], e.outcome[CANCELLED]);
}

TEST(a_cancel_racing_a_send_either_delivers_or_cancels) {
  cancel_race(2, cancel_recv_main, "recv");
  cancel_race(4, cancel_recv_main, "recv");
}

static void *finish_child(void *arg) {
  struct cancel_round *r = arg;
  wait_ready(r);
  jitter(r->delay[0]);
  return (void *)(intptr_t)r->value;
}

static void *join_waiter(void *arg) {
  struct cancel_round *r = arg;
  void *v = NULL;
  __atomic_store_n(&r->ready, 1, __ATOMIC_RELEASE);
  uint64_t deadline = fib_now_ns() + watchdog_ns();
  r->err = fib_join_until(r->child, &v, deadline);
  check_no_stall(deadline, "a join racing a cancel");
  r->got = (long)(intptr_t)v;
  return NULL;
}

static void *cancel_join_main(void *arg) {
  struct e2e *e = arg;
  struct cancel_round r;
  unsigned seed = 1013904223u;
  for (long round = 0; round < e->rounds; round++) {
    r.ready = 0;
    r.value = round + 1;
    r.got = 0;
    r.delay[0] = next_random(&seed) % 2048;
    r.delay[1] = next_random(&seed) % 2048;
    r.child = spawn_on(2, e->workers, finish_child, &r);
    r.waiter = spawn_on(1, e->workers, join_waiter, &r);
    fib_id canceller = spawn_on(3, e->workers, cancel_it, &r);
    join_watched(canceller);
    join_watched(r.waiter);
    if (r.err == 0) { /* joined: the child is gone */
      CHECK_EQ(r.got, r.value);
      CHECK_EQ(fib_join(r.child, NULL), FIB_ESRCH);
      e->outcome[DELIVERED]++;
    } else { /* cancelled: the child is left joinable, for us */
      CHECK_EQ(r.err, FIB_ECANCELED);
      CHECK_EQ((long)(intptr_t)join_watched(r.child), r.value);
      e->outcome[CANCELLED]++;
    }
  }
  return NULL;
}

TEST(a_cancel_racing_a_child_either_joins_or_cancels) {
  cancel_race(2, cancel_join_main, "join");
  cancel_race(4, cancel_join_main, "join");
}

/* ---- the deadlock census after cross-worker wake-ups */

static fib_id cycle[2];

static void *return_one(void *arg) {
  (void)arg;
  return (void *)1;
}

static void *join_the_other(void *arg) {
  unsigned me = (unsigned)(uintptr_t)arg;
  CHECK_OK(fib_sleep_ns(MS)); /* both exist before either joins */
  return (void *)(intptr_t)fib_join(cycle[1 - me], NULL);
}

/* Joins of children on the other worker wake this one through its inbox;
 * then two fibers join each other: still a deadlock, found. */
static void *wake_then_deadlock(void *arg) {
  struct e2e *e = arg;
  for (long i = 0; i < e->rounds; i++) {
    fib_id child = spawn_on(1, e->workers, return_one, NULL);
    CHECK_EQ((uintptr_t)join_watched(child), 1u);
  }
  cycle[0] = spawn_on(0, e->workers, join_the_other, (void *)0);
  cycle[1] = spawn_on(1, e->workers, join_the_other, (void *)1);
  return NULL;
}

TEST(a_deadlock_after_cross_worker_wake_ups_is_found) {
  for (unsigned workers = 2; workers <= 4; workers += 2) {
    fib_runtime *rt = new_workers(workers);
    struct e2e e = {.workers = workers, .rounds = 100};
    CHECK_OK(fib_spawn(rt, wake_then_deadlock, &e, NULL, NULL));
    CHECK_EQ(fib_run(rt), FIB_EDEADLK);
    CHECK_OK(fib_runtime_destroy(rt)); /* discards the two */
  }
}

TEST_MAIN(T(inbox_delivers_every_push_once_in_order_per_pusher),
          T(exactly_one_waker_wins_each_claim),
          T(the_cancel_check_never_loses_a_cancel),
          T(posts_and_calls_wake_a_sleeping_runtime_every_time),
          T(posts_and_calls_wake_sleeping_workers_every_time),
          T(channel_ping_pong_across_workers_loses_nothing),
          T(mutex_counter_across_workers_is_exact),
          T(a_cancel_racing_a_send_either_delivers_or_cancels),
          T(a_cancel_racing_a_child_either_joins_or_cancels),
          T_TIMEOUT(a_deadlock_after_cross_worker_wake_ups_is_found, 10))
