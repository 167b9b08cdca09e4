/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h -- the runtime fuzzer's shared state: the model of what the
 * library should be doing, which the interpreter (interp.c and the ops_*.c
 * files) keeps beside every call and checks each result against.
 *
 * An input is a header and up to FZ_MAX_PROGS programs of 3-byte
 * instructions (op, a, b); every fiber runs one program from start to end
 * (fuzz_runtime.c describes the format). One runtime, one thread
 * (workers = 0): the model may then read and write its state without
 * locks, and everything a fiber does between two switches is atomic.
 *
 * The model never decides timing: where a deadline or a cancel can race a
 * wake-up, it accepts either outcome, and checks what must hold for each
 * (a lock taken means nobody else held it, a value received was sent,
 * ...). Each check must be able to fail: each states a property the
 * library promises in include/fibers.h.
 */
#ifndef FZ_FUZZ_H
#define FZ_FUZZ_H

#include <fibers.h>

#include <stddef.h>
#include <stdint.h>

#define FZ_MAX_FIBERS 16 /* spawns per input (from main and fibers) */
#define FZ_MAX_PROGS 8
#define FZ_MAX_INSNS 48 /* per program: bounds the work of one input */
#define FZ_NM 2         /* mutexes */
#define FZ_NC 2         /* condition variables */
#define FZ_NS 2         /* semaphores */
#define FZ_NW 2         /* wait groups */
#define FZ_NO 2         /* onces */
#define FZ_NCH 3        /* channels */
#define FZ_NCO 3        /* coroutines */
#define FZ_MAX_TOKENS (FZ_MAX_FIBERS * FZ_MAX_INSNS * 12 + 64)
#define FZ_MAIN (-2)    /* "slot" of code that runs outside any fiber */

/* Allowed results, as a bit mask, for fz_expect. */
enum {
  A_OK = 1u << 0,
  A_EINVAL = 1u << 1,
  A_EPERM = 1u << 2,
  A_EDEADLK = 1u << 3,
  A_ESRCH = 1u << 4,
  A_EBUSY = 1u << 5,
  A_ETIMEDOUT = 1u << 6,
  A_ECANCELED = 1u << 7,
  A_EPIPE = 1u << 8,
  A_EAGAIN = 1u << 9,
  A_EOVERFLOW = 1u << 10,
  A_INDEX = 1u << 11 /* any value >= 0 (fib_select's case index) */
};

struct fz_fiber {
  fib_id id;
  int slot, prog;
  int started, finished, freed, discarded;
  int detached;
  int joiner;       /* slot of the fiber in fib_join on it, or -1 */
  int cancelled;    /* fib_cancel has succeeded on it while unfinished */
  int in_call;      /* inside a call that may park */
  int call_deadline;/* ...with a deadline (it can wake by itself) */
  int call_relock;  /* ...a cond wait: may be in its relock, no deadline */
  const char *call; /* which, for reports */
  int call_kind, call_idx; /* FZ_W_*: what it waits for, which one */
  uint64_t call_bcasts;     /* FZ_W_COND: its cond's broadcasts then */
};
/* What a parked fiber waits for, for the deadlock check (fz_enter sets
 * FZ_W_OTHER; an op that knows better says so after it). */
enum { FZ_W_OTHER, FZ_W_MUTEX, FZ_W_SEM, FZ_W_WG, FZ_W_RECV, FZ_W_SEND,
       FZ_W_JOIN, FZ_W_ONCE, FZ_W_COND };

struct fz_mutex {
  int destroyed, owner, in_lock;
  int cond_users; /* fibers in fib_cond_wait with it: they will relock */
};
struct fz_cond {
  int destroyed, in_wait;
  uint64_t epoch, bcasts; /* signals and broadcasts; broadcasts */
};
struct fz_sem { int destroyed, in_wait; uint64_t init, posts, takes; };
struct fz_wg { int destroyed, in_wait; int64_t count; uint64_t epoch; };
struct fz_once { int runner, done, completions; }; /* runner: slot, -1 */
struct fz_chan {
  int destroyed, closed, busy, cap;
  uint32_t gen;       /* bumped by destroy: older tokens are gone */
  int nsent, ninflight; /* tokens of this gen in those states */
  int lost;           /* receivers discarded in their call (this gen) */
};
/* Each value sent is a token: its index in G.tok, with a tag. */
enum { TK_INFLIGHT = 1, TK_SENT, TK_RECEIVED, TK_FAILED };
struct fz_token { uint8_t state, chan; int8_t slot; uint32_t gen; };
struct fz_coro {
  fib_coro *co;
  int status;       /* the model's fib_coro_state */
  int steps, done_steps, flags;
  uintptr_t last_in; /* what the last resume passed in */
};

struct fz_prog { const uint8_t *code; size_t ninsns; };

struct fz_state {
  fib_runtime *rt;
  struct fz_prog prog[FZ_MAX_PROGS];
  int nprogs;
  struct fz_fiber f[FZ_MAX_FIBERS];
  int nslots;
  int awaited; /* slot fib_run_join waits for, or -1 */
  uint64_t started, finished;
  fib_mutex m[FZ_NM]; struct fz_mutex mm[FZ_NM];
  fib_cond c[FZ_NC];  struct fz_cond mc[FZ_NC];
  fib_sem s[FZ_NS];   struct fz_sem ms[FZ_NS];
  fib_wg w[FZ_NW];    struct fz_wg mw[FZ_NW];
  fib_once o[FZ_NO];  struct fz_once mo[FZ_NO];
  fib_chan ch[FZ_NCH]; struct fz_chan mch[FZ_NCH];
  struct fz_token tok[FZ_MAX_TOKENS];
  uint32_t ntok;
  struct fz_coro co[FZ_NCO];
};
extern struct fz_state G;

/* Reports: a failed check prints the message and the last steps, then
 * aborts, which libFuzzer records as a crash with the input. */
__attribute__((noreturn, format(printf, 1, 2))) void fz_fail(const char *fmt,
                                                              ...);
void fz_log(int slot, int op, int a, int b, int r);
void fz_expect(int got, unsigned allowed, const char *call, int slot);
#define FZ_CHECK(cond, ...)                                                    \
  do {                                                                         \
    if (!(cond))                                                               \
      fz_fail(__VA_ARGS__);                                                    \
  } while (0)

/* Whether a finding that is known and not yet fixed in the library is
 * to be tolerated: FUZZ_KNOWN_BUGS (comma-separated names, as in
 * fuzz/known-bugs) says so. Each use names the finding; without the
 * variable every check is strict. */
int fz_known(const char *name);
/* Whether fiber f is parked in fib_join (joiner-readied-twice: while that
 * bug stands, the harness may not wake such a fiber by cancel). */
int fz_in_join(const struct fz_fiber *f);

/* A deadline from an instruction: mode 0 the plain call (no deadline),
 * 1 the _until call with UINT64_MAX (none either), 2 in the past, 3 a
 * few microseconds ahead (real time: kept tiny, so exec/s stays high). */
uint64_t fz_deadline(unsigned mode, unsigned b, int *has);
/* Around a call that may park: returns whether the fiber was cancelled
 * before it (the call must then return FIB_ECANCELED at once). */
int fz_enter(struct fz_fiber *me, int has_deadline, const char *call);
/* ...and after it: whether it is cancelled now (a cancel may have come
 * while it waited). */
int fz_leave(struct fz_fiber *me);
/* The model's side of a fiber's end (return, fib_exit). */
void fz_finish(struct fz_fiber *me);
void *fz_token_of(int slot);
int fz_slot_of(fib_id id);

/* The ops; each reads its operands a and b. */
void fz_op_mutex_lock(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_mutex_trylock(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_mutex_unlock(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_cond_wait(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_cond_signal(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_sem_post(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_sem_wait(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_sem_trywait(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_wg_add(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_wg_wait(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_once(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_destroy(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_chan_send(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_chan_recv(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_chan_close(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_select(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_coro_create(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_coro_resume(struct fz_fiber *me, unsigned a, unsigned b);
void fz_op_coro_destroy(struct fz_fiber *me, unsigned a, unsigned b);

/* The fiber body: runs program G.f[slot].prog. */
void *fz_fiber_main(void *arg);

/* Set-up and tear-down of the primitives (ops_sync.c, ops_chan.c,
 * ops_coro.c): init from the header; at the end, with no fiber left,
 * check what must balance and destroy what is left. */
void fz_sync_setup(unsigned sem_bits);
void fz_sync_teardown(void);
void fz_chan_setup(unsigned cap_bits);
void fz_chan_teardown(void);
void fz_coro_teardown(void);
/* From main between runs: ready what the program may ready (close the
 * channels, post the semaphores, broadcast, bring wait groups to zero). */
void fz_sync_wake_from_main(void);
void fz_chan_wake_from_main(void);
/* The model's side of fib_runtime_destroy discarding fibers. */
void fz_sync_discard(void);
void fz_chan_discard(void);

#endif
