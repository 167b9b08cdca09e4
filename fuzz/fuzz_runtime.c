/* SPDX-License-Identifier: MIT */
/*
 * fuzz_runtime.c -- libFuzzer entry point: one input is one program for
 * one runtime (one thread, workers = 0), run to its end and checked.
 *
 * Input format (fuzz/gen_corpus.py writes it):
 *   byte 0  bits 0-1: how main drives the runtime: fib_run,
 *                     fib_run_once, fib_run_nowait, fib_run_join of the
 *                     first fiber then fib_run;
 *           bit 2:    after a deadlock, destroy the runtime (discarding
 *                     the fibers) rather than unblock them and run again;
 *           bit 3:    unblock first by what main may do (close, post,
 *                     broadcast, bring wait groups to zero), then by
 *                     fib_cancel;
 *           bits 4-6: fibers spawned by main, less one.
 *   byte 1  channel capacities, 2 bits each (0: unbuffered).
 *   byte 2  semaphores' initial values, 2 bits each: 0, 1, 2, UINT64_MAX-1.
 *   byte 3  runtime options: bit 0 FIB_SHARED_FP; bits 1-2 guard mode
 *           (AUTO, NONE, MPROTECT, AUTO); bit 3 stack size 32 KiB;
 *           bit 4 FIB_SEEDED (the seed: bytes 0-2): the fuzzer steers
 *           the order of the fibers too. Never FIB_SEED_PREEMPT: the model
 *           takes each call's effect to begin when the call is made, and
 *           a preemption point moves that beginning past whatever other
 *           fibers do meanwhile (the programs' own yields already put a
 *           switch wherever the fuzzer likes).
 *   then    programs of 3-byte instructions (op, a, b), separated by an
 *           instruction whose op byte is 0xff; interp.c has the ops.
 *
 * After each run the model checks how it ended: fib_run returns 0 only
 * when every fiber has finished, FIB_EDEADLK only when every fiber left
 * waits with no deadline (nothing can wake it); fib_run_once and
 * fib_run_nowait return the number of unfinished fibers, and
 * fib_runtime_next_ns agrees with who waits for what. Then
 * fib_runtime_destroy must succeed, leave every primitive destroyable, and
 * every count balance.
 */
#include "fuzz.h"

#include <string.h>

static int unfinished(void) {
  int n = 0;
  for (int s = 0; s < G.nslots; s++)
    n += !G.f[s].finished && !G.f[s].discarded;
  return n;
}

/* A live fiber (holding a mutex, running a once's fn) that could still
 * let a waiter go on. */
static int alive(int slot) { return slot >= 0 && !G.f[slot].finished; }

/* Another fiber parked in a plain send or receive (kind) on f's channel. */
static int peer_waits(const struct fz_fiber *f, int kind) {
  for (int s = 0; s < G.nslots; s++)
    if (!G.f[s].finished && G.f[s].in_call && G.f[s].call_kind == kind &&
        G.f[s].call_idx == f->call_idx)
      return 1;
  return 0;
}

/* At a deadlock, what f waits for must be something nothing can give it
 * now: else the runtime lost a wake-up. */
static void check_cannot_go_on(const struct fz_fiber *f, const char *how) {
  int i = f->call_idx;
  const char *why = NULL;
  switch (f->call_kind) {
  case FZ_W_MUTEX:
    if (!G.mm[i].destroyed && !alive(G.mm[i].owner))
      why = "its mutex is held by no live fiber";
    break;
  case FZ_W_SEM:
    if (fib_sem_value(&G.s[i]) > 0)
      why = "its semaphore has units";
    break;
  case FZ_W_WG:
    if (!G.mw[i].destroyed && G.mw[i].count == 0)
      why = "its wait group is at zero";
    break;
  case FZ_W_RECV:
    if (!G.mch[i].destroyed &&
        (G.mch[i].closed || fib_chan_len(&G.ch[i]) > 0))
      why = "its channel is closed or has values";
    else if (peer_waits(f, FZ_W_SEND))
      why = "a sender waits on its channel";
    break;
  case FZ_W_SEND:
    if (!G.mch[i].destroyed &&
        (G.mch[i].closed || fib_chan_len(&G.ch[i]) < (size_t)G.mch[i].cap))
      why = "its channel is closed or has room";
    else if (peer_waits(f, FZ_W_RECV))
      why = "a receiver waits on its channel";
    break;
  case FZ_W_JOIN:
    if (i >= 0 && G.f[i].finished)
      why = "the fiber it joins has finished";
    break;
  case FZ_W_COND: /* woken by a broadcast since: it waits to relock */
    if (G.mc[i & 0xff].bcasts != f->call_bcasts &&
        !alive(G.mm[i >> 8].owner))
      why = "a broadcast woke it, and its mutex is held by no live fiber";
    break;
  case FZ_W_ONCE:
    if (!G.mo[i].done && !alive(G.mo[i].runner))
      why = "its once's fn is run by no live fiber";
    else if (G.mo[i].done)
      why = "its once is done";
    break;
  }
  FZ_CHECK(!why, "%s, but fiber %d waits in %s and %s (a lost wake-up)",
           how, f->slot, f->call, why);
}

/* Nothing can run: every fiber left must wait with no deadline (a cond
 * wait's relock has none, whatever the wait had). */
static void check_stuck(const char *how) {
  int n = 0;
  for (int s = 0; s < G.nslots; s++) {
    struct fz_fiber *f = &G.f[s];
    if (f->finished)
      continue;
    n++;
    FZ_CHECK(f->in_call && (!f->call_deadline || f->call_relock),
             "%s, but fiber %d %s", how, s,
             !f->started ? "has not started"
             : !f->in_call ? "is not in a call that waits"
                           : "waits with a deadline");
  }
  FZ_CHECK(n > 0, "%s with no fiber left", how);
  for (int s = 0; s < G.nslots; s++)
    if (!G.f[s].finished)
      check_cannot_go_on(&G.f[s], how);
}

static void check_all_done(const char *how) {
  for (int s = 0; s < G.nslots; s++)
    FZ_CHECK(G.f[s].finished, "%s, but fiber %d has not finished (%s)", how,
             s, G.f[s].started ? G.f[s].call ? G.f[s].call : "running"
                               : "never started");
  FZ_CHECK(G.started == (uint64_t)G.nslots && G.finished == G.started,
           "%s: %d spawned, %llu started, %llu finished", how, G.nslots,
           (unsigned long long)G.started, (unsigned long long)G.finished);
}

/* The program is stuck: ready it from main, or cancel every fiber left
 * (a cancelled fiber's every blocking call returns at once, so those
 * fibers finish; the ones they spawn meanwhile are not cancelled, hence
 * the rounds). */
static void unblock(int round, unsigned h0) {
  if (round == 0 && (h0 & 8)) {
    fz_sync_wake_from_main();
    fz_chan_wake_from_main();
    return;
  }
  /* joiner-readied-twice: a joiner is cancelled only when nothing but
   * joiners is left, or the last round freed nobody (the others wait for
   * what a joiner holds), and then alone: nothing else is ready, so its
   * target cannot finish before it runs */
  static uint64_t finished_before;
  int avoid = fz_known("joiner-readied-twice"), only_joiners = 1;
  for (int s = 0; s < G.nslots; s++)
    if (!G.f[s].finished && !fz_in_join(&G.f[s]))
      only_joiners = 0;
  if (round > 0 && G.finished == finished_before)
    only_joiners = 1;
  finished_before = G.finished;
  if (avoid && only_joiners) {
    for (int s = 0; s < G.nslots; s++)
      if (!G.f[s].finished && fz_in_join(&G.f[s])) {
        int r = fib_cancel(G.rt, G.f[s].id);
        fz_log(FZ_MAIN, 4, s, round, r);
        fz_expect(r, A_OK, "fib_cancel from main", FZ_MAIN);
        G.f[s].cancelled = 1;
        return;
      }
  }
  for (int s = 0; s < G.nslots; s++)
    if (!G.f[s].finished) {
      if (avoid && fz_in_join(&G.f[s]))
        continue;
      int r = fib_cancel(G.rt, G.f[s].id);
      fz_log(FZ_MAIN, 4, s, round, r);
      fz_expect(r, A_OK, "fib_cancel from main", FZ_MAIN);
      G.f[s].cancelled = 1;
    }
}

/* fib_run until the end; returns 1 if fibers are left to discard. */
static int drive_run(unsigned h0) {
  for (int round = 0;; round++) {
    int r = fib_run(G.rt);
    fz_log(FZ_MAIN, -1, round, 0, r);
    fz_expect(r, A_OK | A_EDEADLK, "fib_run", FZ_MAIN);
    if (r == 0) {
      check_all_done("fib_run returned 0");
      return 0;
    }
    check_stuck("fib_run returned EDEADLK");
    FZ_CHECK(round <= 2 * FZ_MAX_FIBERS + 2, "no end after %d rounds", round);
    if (h0 & 4)
      return 1;
    unblock(round, h0);
  }
}

/* fib_run_once or fib_run_nowait in a loop, as a host's own loop would. */
static int drive_bounded(unsigned h0, int once) {
  for (int round = 0;;) {
    int n = once ? fib_run_once(G.rt) : fib_run_nowait(G.rt);
    FZ_CHECK(n == unfinished(), "fib_run_%s returned %d, %d fibers are "
             "unfinished", once ? "once" : "nowait", n, unfinished());
    if (n == 0) {
      check_all_done("fib_run_once/nowait returned 0");
      return 0;
    }
    uint64_t next = fib_runtime_next_ns(G.rt);
    if (next == 0)
      continue; /* a fiber is ready */
    if (next != UINT64_MAX) {
      int timed = 0;
      for (int s = 0; s < G.nslots; s++)
        timed |= !G.f[s].finished && G.f[s].in_call && G.f[s].call_deadline;
      FZ_CHECK(timed, "fib_runtime_next_ns gives a deadline, but no fiber "
               "waits with one");
      continue;
    }
    check_stuck("fib_runtime_next_ns is UINT64_MAX with fibers left");
    FZ_CHECK(round <= 2 * FZ_MAX_FIBERS + 2, "no end after %d rounds", round);
    if (h0 & 4)
      return 1;
    unblock(round++, h0);
  }
}

static int drive_join_first(unsigned h0) {
  void *res = NULL;
  G.awaited = 0;
  int r = fib_run_join(G.rt, G.f[0].id, &res);
  G.awaited = -1;
  fz_log(FZ_MAIN, -1, 0, 3, r);
  fz_expect(r, A_OK | A_EDEADLK, "fib_run_join", FZ_MAIN);
  if (r == 0) {
    FZ_CHECK(G.f[0].finished && res == fz_token_of(0), "fib_run_join "
             "returned 0 with fiber 0 %s, result %p", G.f[0].finished ?
             "finished" : "unfinished", res);
    G.f[0].freed = 1;
  } else {
    FZ_CHECK(!G.f[0].finished, "fib_run_join: EDEADLK, fiber 0 finished");
    check_stuck("fib_run_join returned EDEADLK");
  }
  return drive_run(h0);
}

static void parse_programs(const uint8_t *p, size_t n) {
  size_t start = 0;
  G.nprogs = 0;
  for (size_t i = 0; i + 3 <= n && G.nprogs < FZ_MAX_PROGS; i += 3) {
    if (p[i] != 0xff)
      continue;
    G.prog[G.nprogs].code = p + start;
    G.prog[G.nprogs++].ninsns = (i - start) / 3;
    start = i + 3;
  }
  if (G.nprogs < FZ_MAX_PROGS) {
    G.prog[G.nprogs].code = p + start;
    G.prog[G.nprogs++].ninsns = start < n ? (n - start) / 3 : 0;
  }
  for (int k = 0; k < G.nprogs; k++)
    if (G.prog[k].ninsns > FZ_MAX_INSNS)
      G.prog[k].ninsns = FZ_MAX_INSNS;
}

/* Outside a fiber: what needs one is refused, what needs none works. */
static void check_main_calls(void) {
  fz_expect(fib_yield(), A_EPERM, "fib_yield from main", FZ_MAIN);
  fz_expect(fib_join(1, NULL), A_EPERM, "fib_join from main", FZ_MAIN);
  fz_expect(fib_sleep_ns(0), A_EPERM, "fib_sleep_ns from main", FZ_MAIN);
  fz_expect(fib_cancel(NULL, 1), A_EPERM, "fib_cancel(NULL) from main",
            FZ_MAIN);
  fz_expect(fib_detach(NULL, 1), A_EPERM, "fib_detach(NULL) from main",
            FZ_MAIN);
  fz_expect(fib_spawn(NULL, fz_fiber_main, NULL, NULL, NULL), A_EPERM,
            "fib_spawn(NULL) from main", FZ_MAIN);
  fz_expect(fib_cancel(G.rt, 1), A_ESRCH, "fib_cancel of no fiber", FZ_MAIN);
  fz_expect(fib_run_join(G.rt, 99, NULL), A_ESRCH, "fib_run_join of no "
            "fiber", FZ_MAIN);
  FZ_CHECK(fib_self() == 0 && !fib_cancelled() && !fib_runtime_current() &&
           !fib_self_name(), "fiber queries outside a fiber");
  FZ_CHECK(fib_runtime_next_ns(G.rt) == UINT64_MAX, "fib_runtime_next_ns "
           "of an empty runtime");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4)
    return 0;
  memset(&G, 0, sizeof G);
  G.awaited = -1;
  G.ntok = 1; /* token 0 is never sent: a zero received is no token */
  unsigned h0 = data[0], h3 = data[3];
  parse_programs(data + 4, size - 4);

  static const fib_guard_mode guards[4] = {FIB_GUARD_AUTO, FIB_GUARD_NONE,
                                           FIB_GUARD_MPROTECT, FIB_GUARD_AUTO};
  fib_runtime_opts opts = {0};
  opts.workers = 0; /* one thread: multi-worker fuzzing is out of scope */
  opts.flags = (h3 & 1) ? FIB_SHARED_FP : 0;
  if (h3 & 16) {
    opts.flags |= FIB_SEEDED;
    opts.seed = data[0] | (uint64_t)data[1] << 8 | (uint64_t)data[2] << 16;
  }
  opts.guard = guards[(h3 >> 1) & 3];
  opts.stack_size = (h3 & 8) ? 2 * FIB_STACK_MIN : 0;
  fz_expect(fib_runtime_create(&G.rt, &opts), A_OK, "fib_runtime_create",
            FZ_MAIN);
  check_main_calls();
  fz_sync_setup(data[2]);
  fz_chan_setup(data[1]);

  int ninit = 1 + (int)((h0 >> 4) & 7);
  for (int s = 0; s < ninit; s++) {
    struct fz_fiber *f = &G.f[s];
    f->slot = s;
    f->prog = s % G.nprogs;
    f->joiner = -1;
    G.nslots++;
    fz_expect(fib_spawn(G.rt, fz_fiber_main, (void *)(intptr_t)s, NULL,
                        &f->id), A_OK, "fib_spawn from main", FZ_MAIN);
    FZ_CHECK(f->id == (fib_id)s + 1, "fib_spawn from main gave id %llu",
             (unsigned long long)f->id);
  }
  FZ_CHECK(fib_runtime_next_ns(G.rt) == 0, "fib_runtime_next_ns with "
           "fibers ready is not 0");

  int left;
  switch (h0 & 3) {
  case 0: left = drive_run(h0); break;
  case 1: left = drive_bounded(h0, 1); break;
  case 2: left = drive_bounded(h0, 0); break;
  default: left = drive_join_first(h0); break;
  }

  if (left) { /* what fib_runtime_destroy is about to discard */
    for (int s = 0; s < G.nslots; s++)
      if (!G.f[s].finished)
        G.f[s].discarded = 1;
    fz_sync_discard();
    fz_chan_discard();
  }
  fz_expect(fib_runtime_destroy(G.rt), A_OK, "fib_runtime_destroy", FZ_MAIN);
  G.rt = NULL;
  uint64_t discarded_started = 0;
  for (int s = 0; s < G.nslots; s++) {
    FZ_CHECK(G.f[s].finished || G.f[s].discarded, "fiber %d lost: neither "
             "finished nor discarded", s);
    discarded_started += G.f[s].discarded && G.f[s].started;
  }
  FZ_CHECK(G.finished + discarded_started == G.started,
           "%llu started, %llu finished, %llu discarded after starting",
           (unsigned long long)G.started, (unsigned long long)G.finished,
           (unsigned long long)discarded_started);
  fz_coro_teardown();
  fz_sync_teardown();
  fz_chan_teardown();
  return 0;
}
