/* SPDX-License-Identifier: MIT */
/*
 * interp.c -- the fiber body: a bytecode interpreter that runs one
 * program of 3-byte instructions, the fiber ops (spawn, yield, join,
 * detach, cancel, sleep, exit) with their model, and the checks' report.
 */
#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fz_state G;

enum {
  OP_YIELD, OP_SPAWN, OP_JOIN, OP_DETACH, OP_CANCEL, OP_SLEEP, OP_EXIT,
  OP_RETURN, OP_MUTEX_LOCK, OP_MUTEX_TRYLOCK, OP_MUTEX_UNLOCK, OP_COND_WAIT,
  OP_COND_SIGNAL, OP_SEM_POST, OP_SEM_WAIT, OP_SEM_TRYWAIT, OP_WG_ADD,
  OP_WG_WAIT, OP_ONCE, OP_CHAN_SEND, OP_CHAN_RECV, OP_CHAN_CLOSE, OP_SELECT,
  OP_CORO_CREATE, OP_CORO_RESUME, OP_CORO_DESTROY, OP_DESTROY, OP_QUERY,
  OP_COUNT
};

/* Past the ops: what the channel checks record about each value. */
enum { OP_GOT = OP_COUNT, OP_SENT, OP_NAMES };

static const char *const op_names[OP_NAMES] = {
  "yield", "spawn", "join", "detach", "cancel", "sleep", "exit", "return",
  "mutex_lock", "mutex_trylock", "mutex_unlock", "cond_wait", "cond_signal",
  "sem_post", "sem_wait", "sem_trywait", "wg_add", "wg_wait", "once",
  "chan_send", "chan_recv", "chan_close", "select", "coro_create",
  "coro_resume", "coro_destroy", "destroy/init", "query",
  "  value received (chan, token)", "  value sent (chan, token)"};

/* The last steps, for the report: cheap to record (no formatting). */
#define FZ_RING 96
static struct { int slot, op, a, b, r; } ring[FZ_RING];
static unsigned ring_n;
static int trace_live = -1;

void fz_log(int slot, int op, int a, int b, int r) {
  if (trace_live < 0)
    trace_live = getenv("FUZZ_TRACE") != NULL;
  ring[ring_n % FZ_RING].slot = slot;
  ring[ring_n % FZ_RING].op = op;
  ring[ring_n % FZ_RING].a = a;
  ring[ring_n % FZ_RING].b = b;
  ring[ring_n % FZ_RING].r = r;
  ring_n++;
  if (trace_live)
    fprintf(stderr, "fuzz: fiber %d %s(%d, %d) -> %d\n", slot,
            op >= 0 && op < OP_NAMES ? op_names[op] : "?", a, b, r);
}

void fz_fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fuzz: check failed: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nfuzz: the last steps (slot, op(a, b) -> result; "
                  "result -1000: no call made yet):\n");
  unsigned from = ring_n > FZ_RING ? ring_n - FZ_RING : 0;
  for (unsigned i = from; i < ring_n; i++) {
    int op = ring[i % FZ_RING].op;
    int r = ring[i % FZ_RING].r;
    fprintf(stderr, "  fiber %d %s(%d, %d) -> %d %s\n", ring[i % FZ_RING].slot,
            op >= 0 && op < OP_NAMES ? op_names[op] : "?", ring[i % FZ_RING].a,
            ring[i % FZ_RING].b, r, r < 0 && r > -1000 ? fib_err_name(r) : "");
  }
  fflush(stderr);
  abort();
}

static unsigned bit_of(int err) {
  switch (err) {
  case 0: return A_OK;
  case FIB_EINVAL: return A_EINVAL;
  case FIB_EPERM: return A_EPERM;
  case FIB_EDEADLK: return A_EDEADLK;
  case FIB_ESRCH: return A_ESRCH;
  case FIB_EBUSY: return A_EBUSY;
  case FIB_ETIMEDOUT: return A_ETIMEDOUT;
  case FIB_ECANCELED: return A_ECANCELED;
  case FIB_EPIPE: return A_EPIPE;
  case FIB_EAGAIN: return A_EAGAIN;
  case FIB_EOVERFLOW: return A_EOVERFLOW;
  default: return err > 0 ? A_INDEX : 0;
  }
}

void fz_expect(int got, unsigned allowed, const char *call, int slot) {
  unsigned bit = bit_of(got);
  if (got == 0 && (allowed & A_INDEX))
    bit |= A_INDEX;
  if (bit & allowed)
    return;
  char list[256] = "";
  static const char *const names[] = {"0", "EINVAL", "EPERM", "EDEADLK",
      "ESRCH", "EBUSY", "ETIMEDOUT", "ECANCELED", "EPIPE", "EAGAIN",
      "EOVERFLOW", "an index"};
  size_t at = 0;
  for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
    if (allowed & (1u << i))
      at += (size_t)snprintf(list + at, sizeof list - at, "%s%s",
                             at ? " " : "", names[i]);
  fz_fail("fiber %d: %s returned %d (%s), allowed: %s", slot, call, got,
          got < 0 ? fib_err_name(got) : got ? "an index" : "success", list);
}

int fz_known(const char *name) {
  static const char *list;
  static int read;
  if (!read) {
    list = getenv("FUZZ_KNOWN_BUGS");
    read = 1;
  }
  return list && strstr(list, name) != NULL;
}

static const char join_call[] = "fib_join";

int fz_in_join(const struct fz_fiber *f) {
  return f->in_call && f->call == join_call;
}

uint64_t fz_deadline(unsigned mode, unsigned b, int *has) {
  switch (mode & 3) {
  case 2:
    *has = 1;
    return 1; /* long past */
  case 3:
    *has = 1;
    return fib_now_ns() + (b % 8) * 1000;
  default:
    *has = 0;
    return UINT64_MAX;
  }
}

int fz_enter(struct fz_fiber *me, int has_deadline, const char *call) {
  me->in_call = 1;
  me->call_deadline = has_deadline;
  me->call_relock = 0;
  me->call = call;
  me->call_kind = FZ_W_OTHER;
  return me->cancelled;
}

int fz_leave(struct fz_fiber *me) {
  me->in_call = 0;
  me->call_relock = 0;
  return me->cancelled;
}

void *fz_token_of(int slot) { return (void *)(uintptr_t)(0x5100 + slot); }

int fz_slot_of(fib_id id) {
  /* ids are given from 1 in spawn order, and every spawn is ours */
  return id >= 1 && id <= (fib_id)G.nslots ? (int)id - 1 : -1;
}

void fz_finish(struct fz_fiber *me) {
  FZ_CHECK(!me->finished, "fiber %d finished twice", me->slot);
  me->finished = 1;
  G.finished++;
  for (int i = 0; i < FZ_NM; i++)
    if (G.mm[i].owner == me->slot) /* the library gives it up */
      G.mm[i].owner = -1;
  for (int i = 0; i < FZ_NO; i++)
    if (G.mo[i].runner == me->slot) /* fib_exit inside fn: as if never run */
      G.mo[i].runner = -1;
  if (me->detached)
    me->freed = 1;
}

/* ---- fiber ops */

/* A target for join/detach/cancel: a slot, or (the two values past the
 * slots) the caller itself and an id never spawned. */
static int target_of(struct fz_fiber *me, unsigned a, fib_id *id) {
  int t = (int)(a % (unsigned)(G.nslots + 2));
  if (t == G.nslots)
    t = me->slot;
  if (t == G.nslots + 1) {
    *id = (fib_id)1 << 40;
    return -1;
  }
  *id = G.f[t].id;
  return t;
}

static void op_spawn(struct fz_fiber *me, unsigned a, unsigned b) {
  fib_attr attr = {0};
  if ((b & 0xe0) == 0xe0) { /* bad attributes: refused, nothing spawned */
    if (b & 1)
      attr.stack_size = 1;
    else
      attr.reserved[b % 4] = 1;
    int r = fib_spawn(NULL, fz_fiber_main, NULL, &attr, NULL);
    fz_log(me->slot, OP_SPAWN, (int)a, (int)b, r);
    fz_expect(r, A_EINVAL, "fib_spawn(bad attr)", me->slot);
    return;
  }
  if (G.nslots == FZ_MAX_FIBERS)
    return;
  int s = G.nslots++;
  struct fz_fiber *f = &G.f[s];
  f->slot = s;
  f->prog = (int)(a % (unsigned)G.nprogs);
  f->joiner = -1;
  f->detached = (b & 3) == 3;
  if (f->detached)
    attr.flags = FIB_DETACHED;
  if (b & 4)
    attr.name = "fuzzed";
  fib_id id = 0;
  int r = fib_spawn(NULL, fz_fiber_main, (void *)(intptr_t)s, &attr, &id);
  fz_log(me->slot, OP_SPAWN, (int)a, (int)b, r);
  fz_expect(r, A_OK, "fib_spawn", me->slot);
  /* Ids are never handed out twice; their slot part stays within the
   * table (no more slots than fibers spawned so far). */
  FZ_CHECK(id != 0 && (uint32_t)id != 0 && (uint32_t)id <= (uint32_t)s + 1,
           "fib_spawn gave id %llu, slot part out of range (fiber %d)",
           (unsigned long long)id, s);
  for (int i = 0; i < s; i++)
    FZ_CHECK(G.f[i].id != id, "fib_spawn gave id %llu again (first to "
             "fiber %d)", (unsigned long long)id, i);
  f->id = id;
}

static void op_join(struct fz_fiber *me, unsigned a, unsigned b) {
  fib_id id;
  int t = target_of(me, a, &id);
  int has;
  if (fz_known("joiner-readied-twice"))
    b &= ~3u; /* a deadline could wake it before its target finishes */
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  struct fz_fiber *tf = t >= 0 ? &G.f[t] : NULL;
  unsigned allow;
  int waits = 0;
  if (tf == me)
    allow = A_EDEADLK;
  else if (!tf || tf->freed)
    allow = A_ESRCH;
  else if (tf->detached || tf->joiner >= 0 || G.awaited == t)
    allow = A_EINVAL;
  else if (me->cancelled) /* fibers.h: join returns ECANCELED at once */
    allow = A_ECANCELED |
            (tf->finished && fz_known("join-finished-when-cancelled") ? A_OK
                                                                      : 0);
  else if (tf->finished)
    allow = A_OK;
  else
    allow = A_OK | (has ? A_ETIMEDOUT : 0) | A_ECANCELED, waits = 1;
  void *res = NULL;
  if (waits)
    tf->joiner = me->slot;
  fz_enter(me, has, join_call);
  me->call_kind = FZ_W_JOIN;
  me->call_idx = t;
  int r = (b & 3) ? fib_join_until(id, &res, dl) : fib_join(id, &res);
  int now = fz_leave(me);
  if (waits) {
    tf->joiner = -1;
    if (!now)
      allow &= ~(unsigned)A_ECANCELED;
  }
  fz_log(me->slot, OP_JOIN, t, (int)b, r);
  fz_expect(r, allow, "fib_join", me->slot);
  if (r == 0) {
    FZ_CHECK(tf->finished, "fib_join of fiber %d returned before it finished",
             t);
    FZ_CHECK(res == fz_token_of(t), "fib_join of fiber %d gave %p, it "
             "returned %p", t, res, fz_token_of(t));
    tf->freed = 1;
  }
}

static void op_detach(struct fz_fiber *me, unsigned a, unsigned b) {
  fib_id id;
  int t = target_of(me, a, &id);
  struct fz_fiber *tf = t >= 0 ? &G.f[t] : NULL;
  unsigned allow;
  if (!tf || tf->freed)
    allow = A_ESRCH;
  else if (tf->detached || tf->joiner >= 0 || G.awaited == t)
    allow = A_EINVAL;
  else
    allow = A_OK;
  int r = fib_detach((b & 1) ? G.rt : NULL, id);
  fz_log(me->slot, OP_DETACH, t, (int)b, r);
  fz_expect(r, allow, "fib_detach", me->slot);
  if (r == 0) {
    tf->detached = 1;
    if (tf->finished)
      tf->freed = 1;
  }
}

static void op_cancel(struct fz_fiber *me, unsigned a, unsigned b) {
  fib_id id;
  int t = target_of(me, a, &id);
  struct fz_fiber *tf = t >= 0 ? &G.f[t] : NULL;
  if (tf && fz_in_join(tf) && fz_known("joiner-readied-twice"))
    return; /* its target could finish before it runs */
  int r = fib_cancel((b & 1) ? G.rt : NULL, id);
  fz_log(me->slot, OP_CANCEL, t, (int)b, r);
  fz_expect(r, !tf || tf->freed ? A_ESRCH : A_OK, "fib_cancel", me->slot);
  if (r == 0 && !tf->finished)
    tf->cancelled = 1;
}

static void op_sleep(struct fz_fiber *me, unsigned a, unsigned b) {
  uint64_t ns = (b % 8) * 1000; /* 0-7 us: real time, kept tiny */
  int was = fz_enter(me, 1, "fib_sleep");
  int r;
  switch (a & 3) {
  case 0: r = fib_sleep_ns(ns); break;
  case 1: r = fib_sleep_until(1); break; /* past: still gives way */
  case 2: r = fib_sleep_ns(0); break;
  default: r = fib_sleep_until(fib_now_ns() + ns); break;
  }
  int now = fz_leave(me);
  fz_log(me->slot, OP_SLEEP, (int)a, (int)b, r);
  fz_expect(r, was ? A_ECANCELED : A_OK | (now ? A_ECANCELED : 0),
            "fib_sleep", me->slot);
}

/* Questions with exact answers, and calls that only a coroutine or only
 * code outside a fiber may make. */
static void op_query(struct fz_fiber *me, unsigned a, unsigned b) {
  fz_log(me->slot, OP_QUERY, (int)a, (int)b, -1000);
  FZ_CHECK(fib_self() == me->id, "fib_self() is %llu in fiber %d (id %llu)",
           (unsigned long long)fib_self(), me->slot,
           (unsigned long long)me->id);
  FZ_CHECK(!fib_cancelled() == !me->cancelled,
           "fib_cancelled() is %d in fiber %d, cancelled: %d",
           fib_cancelled(), me->slot, me->cancelled);
  FZ_CHECK(fib_runtime_current() == G.rt, "fib_runtime_current() is wrong");
  FZ_CHECK(fib_coro_current() == NULL, "fib_coro_current() is not NULL in "
           "a fiber's own body");
  fz_expect(fib_coro_yield(NULL, NULL), A_EPERM, "fib_coro_yield in a fiber",
            me->slot);
  fz_expect(fib_run(G.rt), A_EBUSY, "fib_run from a fiber", me->slot);
  fz_expect(fib_runtime_destroy(G.rt), A_EBUSY,
            "fib_runtime_destroy from a fiber", me->slot);
  fib_stack_info si;
  fib_id id;
  int t = target_of(me, a, &id);
  int r = fib_fiber_stack(NULL, id, &si);
  fz_expect(r, t < 0 || G.f[t].finished ? A_ESRCH : A_OK, "fib_fiber_stack",
            me->slot);
  if (r == 0)
    FZ_CHECK(si.lo < si.hi && si.size == (size_t)((char *)si.hi -
             (char *)si.lo), "fib_fiber_stack: a bad range");
}

/* Runs one instruction; returns 0 when the program ends here. */
static int step(struct fz_fiber *me, unsigned op, unsigned a, unsigned b) {
  switch (op % OP_COUNT) {
  case OP_YIELD: {
    int r = fib_yield();
    fz_log(me->slot, OP_YIELD, (int)a, (int)b, r);
    fz_expect(r, A_OK, "fib_yield", me->slot);
    break;
  }
  case OP_SPAWN: op_spawn(me, a, b); break;
  case OP_JOIN: op_join(me, a, b); break;
  case OP_DETACH: op_detach(me, a, b); break;
  case OP_CANCEL: op_cancel(me, a, b); break;
  case OP_SLEEP: op_sleep(me, a, b); break;
  case OP_EXIT:
    if (a & 1)
      break; /* half the time: a program that ends early too often finds
                little */
    fz_log(me->slot, OP_EXIT, (int)a, (int)b, -1000);
    fz_finish(me);
    fib_exit(fz_token_of(me->slot));
  case OP_RETURN:
    if (a & 1)
      break;
    fz_log(me->slot, OP_RETURN, (int)a, (int)b, -1000);
    return 0;
  case OP_MUTEX_LOCK: fz_op_mutex_lock(me, a, b); break;
  case OP_MUTEX_TRYLOCK: fz_op_mutex_trylock(me, a, b); break;
  case OP_MUTEX_UNLOCK: fz_op_mutex_unlock(me, a, b); break;
  case OP_COND_WAIT: fz_op_cond_wait(me, a, b); break;
  case OP_COND_SIGNAL: fz_op_cond_signal(me, a, b); break;
  case OP_SEM_POST: fz_op_sem_post(me, a, b); break;
  case OP_SEM_WAIT: fz_op_sem_wait(me, a, b); break;
  case OP_SEM_TRYWAIT: fz_op_sem_trywait(me, a, b); break;
  case OP_WG_ADD: fz_op_wg_add(me, a, b); break;
  case OP_WG_WAIT: fz_op_wg_wait(me, a, b); break;
  case OP_ONCE: fz_op_once(me, a, b); break;
  case OP_CHAN_SEND: fz_op_chan_send(me, a, b); break;
  case OP_CHAN_RECV: fz_op_chan_recv(me, a, b); break;
  case OP_CHAN_CLOSE: fz_op_chan_close(me, a, b); break;
  case OP_SELECT: fz_op_select(me, a, b); break;
  case OP_CORO_CREATE: fz_op_coro_create(me, a, b); break;
  case OP_CORO_RESUME: fz_op_coro_resume(me, a, b); break;
  case OP_CORO_DESTROY: fz_op_coro_destroy(me, a, b); break;
  case OP_DESTROY: fz_op_destroy(me, a, b); break;
  case OP_QUERY: op_query(me, a, b); break;
  }
  return 1;
}

void *fz_fiber_main(void *arg) {
  int slot = (int)(intptr_t)arg;
  struct fz_fiber *me = &G.f[slot];
  FZ_CHECK(!me->started && !me->discarded, "fiber %d started twice", slot);
  me->started = 1;
  G.started++;
  FZ_CHECK(fib_self() == me->id, "fiber %d runs as id %llu, spawned as %llu",
           slot, (unsigned long long)fib_self(), (unsigned long long)me->id);
  const struct fz_prog *p = &G.prog[me->prog];
  for (size_t i = 0; i < p->ninsns; i++) {
    const uint8_t *in = p->code + 3 * i;
    if (!step(me, in[0], in[1], in[2]))
      break;
  }
  fz_finish(me);
  return fz_token_of(slot);
}
