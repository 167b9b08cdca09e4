/* SPDX-License-Identifier: MIT */
/* test_chan.c -- channels and select: rendezvous, buffering, close, every
 * timeout and cancellation path, select's choice among ready cases,
 * misuse, stress, allocation failures and leaks. */
#include "fiber_helpers.h"

#include <fibers.h>

#include "sys.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>

/* ASan's allocator bypasses glibc's arenas, where mallinfo2 looks: ask it
 * instead how much is allocated. */
#if defined(__SANITIZE_ADDRESS__)
#define CHAN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHAN_ASAN 1
#endif
#endif
#ifdef CHAN_ASAN /* declared here: gcc 12 installs no allocator_interface.h */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

static fib_chan ch, ch2;
static int log_[256], nlog;

/* ---- unbuffered */

static void *sender(void *arg) {
  int n = (int)(intptr_t)arg;
  for (int i = 0; i < n; i++) {
    CHECK_OK(fib_chan_send(&ch, &i));
    log_[nlog++] = i; /* sent */
  }
  return NULL;
}

static void *unbuffered_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  fib_id s = spawn(sender, (void *)3);
  for (int i = 0; i < 3; i++) {
    for (int k = 0; k < 3; k++) /* a rendezvous: no receiver, no send */
      CHECK_OK(fib_yield());
    CHECK_EQ(nlog, i);
    int v = -1;
    CHECK_OK(fib_chan_recv(&ch, &v));
    CHECK_EQ(v, i);
  }
  CHECK_OK(fib_join(s, NULL));
  CHECK_EQ(nlog, 3);
  CHECK_EQ(fib_chan_len(&ch), 0);
  CHECK_OK(fib_chan_destroy(&ch));
  return NULL;
}

TEST(unbuffered_is_a_rendezvous) { run_main(unbuffered_main, NULL); }

/* ---- hand-offs of every element size, to waiters with and without a
 * deadline (word sizes and others are copied by different paths) */

struct odd {
  size_t size;
  uint64_t deadline; /* FIB__NO_DEADLINE's value: none */
  unsigned char got[16];
  int err;
};

static void *odd_receiver(void *arg) {
  struct odd *o = arg;
  o->err = o->deadline == UINT64_MAX ? fib_chan_recv(&ch, o->got)
                                     : fib_chan_recv_until(&ch, o->got,
                                                           o->deadline);
  return NULL;
}

static void *odd_sender(void *arg) {
  struct odd *o = arg;
  unsigned char v[16];
  for (size_t i = 0; i < sizeof v; i++)
    v[i] = (unsigned char)(0x40 + i);
  o->err = o->deadline == UINT64_MAX ? fib_chan_send(&ch, v)
                                     : fib_chan_send_until(&ch, v,
                                                           o->deadline);
  return NULL;
}

static void *odd_sizes_main(void *arg) {
  (void)arg;
  static const size_t sizes[] = {0, 1, 3, 4, 8, 16};
  uint64_t t0 = fib_now_ns();
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
    for (int timed = 0; timed < 2; timed++) {
      size_t size = sizes[k];
      struct odd o = {.size = size};
      o.deadline = timed ? fib_now_ns() + 10000000000u : UINT64_MAX;
      unsigned char v[16], got[16];
      for (size_t i = 0; i < sizeof v; i++) {
        v[i] = (unsigned char)(0x40 + i);
        got[i] = 0xee;
      }
      CHECK_OK(fib_chan_init(&ch, size, 0));
      /* a waiting receiver, handed the value by a send */
      memset(o.got, 0xee, sizeof o.got);
      fib_id r = spawn(odd_receiver, &o);
      CHECK_OK(fib_yield()); /* it waits (a rendezvous works either way) */
      CHECK_OK(fib_chan_send(&ch, v));
      CHECK_OK(fib_join(r, NULL));
      CHECK_OK(o.err);
      CHECK(memcmp(o.got, v, size) == 0);
      CHECK_EQ(o.got[size < 16 ? size : 15], size < 16 ? 0xee : v[15]);
      /* a waiting sender, whose value a receive takes */
      fib_id s = spawn(odd_sender, &o);
      CHECK_OK(fib_yield());
      CHECK_OK(fib_chan_recv(&ch, got));
      CHECK_OK(fib_join(s, NULL));
      CHECK_OK(o.err);
      CHECK(memcmp(got, v, size) == 0);
      CHECK_EQ(got[size < 16 ? size : 15], size < 16 ? 0xee : v[15]);
      CHECK_OK(fib_chan_destroy(&ch));
    }
  /* no deadline was left armed: the run did not wait for one */
  CHECK(fib_now_ns() - t0 < 5000000000u);
  return NULL;
}

TEST(hand_offs_of_every_size_with_and_without_a_deadline) {
  run_main(odd_sizes_main, NULL);
}

/* ---- who runs next: a waiter a partner completes goes first (fib_run) */

static int order_log[16], order_n;

static void order_note(int who) { order_log[order_n++] = who; }

static void check_order(const int *want, int n) {
  CHECK_EQ(order_n, n);
  for (int i = 0; i < n && i < order_n; i++)
    CHECK_EQ(order_log[i], want[i]);
}

static void *order_stepper(void *arg) { /* 2, yield, 2 */
  (void)arg;
  order_note(2);
  CHECK_OK(fib_yield());
  order_note(2);
  return NULL;
}

static void *order_receiver(void *arg) { /* waits, then 1 */
  (void)arg;
  int v = -1;
  CHECK_OK(fib_chan_recv(&ch, &v));
  CHECK_EQ(v, 7);
  order_note(1);
  return NULL;
}

static void *order_sender(void *arg) { /* hands 7 over: 3, yield, 3 */
  (void)arg;
  CHECK_OK(fib_chan_send(&ch, &(int){7}));
  order_note(3);
  CHECK_OK(fib_yield());
  order_note(3);
  return NULL;
}

/* Spawned from outside, in this order, so they start FIFO. */
static void run_in_order(fib_fn a, fib_fn b, fib_fn c) {
  order_n = 0;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, a, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, b, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, c, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_OK(fib_chan_destroy(&ch));
}

TEST(receiver_handed_a_value_runs_next) {
  /* The receiver waits; the stepper yields; the send readies the receiver
   * at the front, so it runs before the stepper, which was queued first
   * (at the back it would run after: 2 3 2 1 3). */
  run_in_order(order_receiver, order_stepper, order_sender);
  check_order((int[]){2, 3, 1, 2, 3}, 5);
}

static void *order_timed_receiver(void *arg) { /* waits (deadline), 1 */
  (void)arg;
  int v = -1;
  CHECK_OK(fib_chan_recv_until(&ch, &v, fib_now_ns() + 10000000000u));
  CHECK_EQ(v, 7);
  order_note(1);
  return NULL;
}

TEST(receiver_with_a_deadline_handed_a_value_runs_next) {
  /* The same with the receiver's timer armed: the hand-off takes it off
   * the timers too (the run would wait for the deadline otherwise). */
  uint64_t t0 = fib_now_ns();
  run_in_order(order_timed_receiver, order_stepper, order_sender);
  check_order((int[]){2, 3, 1, 2, 3}, 5);
  CHECK(fib_now_ns() - t0 < 5000000000u);
}

static void *order_late_receiver(void *arg) { /* takes 7: 1, yield, 1 */
  (void)arg;
  int v = -1;
  CHECK_OK(fib_chan_recv(&ch, &v));
  CHECK_EQ(v, 7);
  order_note(1);
  CHECK_OK(fib_yield());
  order_note(1);
  return NULL;
}

static void *order_waiting_sender(void *arg) { /* waits, then 3 */
  (void)arg;
  CHECK_OK(fib_chan_send(&ch, &(int){7}));
  order_note(3);
  return NULL;
}

TEST(sender_whose_value_is_taken_runs_next) {
  /* The sender waits; the receive readies it at the front: it runs when
   * the receiver yields, before the stepper (at the back: 2 1 2 3 1). */
  run_in_order(order_waiting_sender, order_stepper, order_late_receiver);
  check_order((int[]){2, 1, 3, 2, 1}, 5);
}

static void *order_closed_receiver(void *arg) { /* waits, then 1 */
  (void)arg;
  int v;
  CHECK_EQ(fib_chan_recv(&ch, &v), FIB_EPIPE);
  order_note(1);
  return NULL;
}

static void *order_closer(void *arg) { /* closes: 4, yield, 4 */
  (void)arg;
  CHECK_OK(fib_chan_close(&ch));
  order_note(4);
  CHECK_OK(fib_yield());
  order_note(4);
  return NULL;
}

TEST(close_wakes_its_waiters_at_the_back) {
  run_in_order(order_closed_receiver, order_stepper, order_closer);
  check_order((int[]){2, 4, 2, 1, 4}, 5);
}

static void *order_select_receiver(void *arg) { /* select waits, then 1 */
  (void)arg;
  int v = -1;
  fib_select_case k[2] = {{.op = FIB_SELECT_RECV, .chan = &ch, .elem = &v},
                          {.op = FIB_SELECT_RECV, .chan = &ch2}};
  CHECK_EQ(fib_select(k, 2), 0);
  CHECK_EQ(v, 7);
  order_note(1);
  return NULL;
}

TEST(select_handed_a_value_runs_next) {
  CHECK_OK(fib_chan_init(&ch2, sizeof(int), 0));
  run_in_order(order_select_receiver, order_stepper, order_sender);
  check_order((int[]){2, 3, 1, 2, 3}, 5);
  CHECK_OK(fib_chan_destroy(&ch2));
}

/* Two fibers that ping-pong through channels put each other at the front
 * at every message; the front's budget still gives a fiber waiting at the
 * back a turn every 64 front turns. */
#define PING_ROUNDS 5000
static long ping_msgs, ping_steps, ping_max_gap, ping_last;

static void *ping(void *arg) {
  int first = arg != NULL;
  for (int i = 0; i < PING_ROUNDS; i++) {
    int v = i;
    if (first) {
      CHECK_OK(fib_chan_send(&ch, &v));
      CHECK_OK(fib_chan_recv(&ch2, &v));
    } else {
      CHECK_OK(fib_chan_recv(&ch, &v));
      CHECK_OK(fib_chan_send(&ch2, &v));
    }
    CHECK_EQ(v, i);
    ping_msgs++;
    if (ping_msgs - ping_last > ping_max_gap)
      ping_max_gap = ping_msgs - ping_last;
  }
  return NULL;
}

static void *ping_yielder(void *arg) {
  (void)arg;
  while (ping_msgs < 2 * PING_ROUNDS) {
    ping_steps++;
    ping_last = ping_msgs;
    CHECK_OK(fib_yield());
  }
  return NULL;
}

TEST(channel_ping_pong_cannot_starve_a_yielder) {
  ping_msgs = ping_steps = ping_max_gap = ping_last = 0;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  CHECK_OK(fib_chan_init(&ch2, sizeof(int), 0));
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, ping, (void *)1, NULL, NULL));
  CHECK_OK(fib_spawn(rt, ping, NULL, NULL, NULL));
  CHECK_OK(fib_spawn(rt, ping_yielder, NULL, NULL, NULL));
  run_to_end(rt);
  /* Each message is one front turn for its receiver; 64 in a row at
   * most, then the yielder goes once. */
  CHECK(ping_max_gap <= 70);
  CHECK(ping_steps >= 2 * PING_ROUNDS / 70);
  CHECK_OK(fib_chan_destroy(&ch));
  CHECK_OK(fib_chan_destroy(&ch2));
}

/* ---- buffered */

static void *buffered_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 4));
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_chan_send(&ch, &i)); /* no waiting */
  CHECK_EQ(fib_chan_len(&ch), 4);
  CHECK_EQ(fib_chan_send_until(&ch, &(int){9}, fib_now_ns() + MS),
           FIB_ETIMEDOUT); /* full */
  fib_id s = spawn(sender, (void *)3); /* sends 0,1,2: waits */
  CHECK_OK(fib_yield());
  for (int i = 0; i < 4; i++) {
    int v;
    CHECK_OK(fib_chan_recv(&ch, &v));
    CHECK_EQ(v, i);
  }
  for (int i = 0; i < 3; i++) { /* FIFO through the buffer */
    int v;
    CHECK_OK(fib_chan_recv(&ch, &v));
    CHECK_EQ(v, i);
  }
  CHECK_OK(fib_join(s, NULL));
  CHECK_EQ(fib_chan_recv_until(&ch, NULL, fib_now_ns() + MS), FIB_ETIMEDOUT);
  /* the value of the timed-out send (9) was never sent */
  CHECK_EQ(fib_chan_len(&ch), 0);
  CHECK_OK(fib_chan_destroy(&ch));
  return NULL;
}

TEST(buffered_fifo_full_and_empty) { run_main(buffered_main, NULL); }

/* ---- close */

static void *recv_result(void *arg) {
  (void)arg;
  int v;
  return (void *)(intptr_t)fib_chan_recv(&ch, &v);
}

static void *send_result(void *arg) {
  (void)arg;
  return (void *)(intptr_t)fib_chan_send(&ch, &(int){7});
}

static void *close_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 2));
  CHECK_OK(fib_chan_send(&ch, &(int){1}));
  CHECK_OK(fib_chan_send(&ch, &(int){2}));
  CHECK_OK(fib_chan_close(&ch));
  CHECK_EQ(fib_chan_close(&ch), FIB_EPIPE);
  CHECK_EQ(fib_chan_send(&ch, &(int){3}), FIB_EPIPE);
  int v;
  CHECK_OK(fib_chan_recv(&ch, &v)); /* drain */
  CHECK_EQ(v, 1);
  CHECK_OK(fib_chan_recv(&ch, &v));
  CHECK_EQ(v, 2);
  CHECK_EQ(fib_chan_recv(&ch, &v), FIB_EPIPE);
  CHECK_EQ(fib_chan_recv(&ch, &v), FIB_EPIPE);
  CHECK_OK(fib_chan_destroy(&ch));
  /* waiting receivers and senders get FIB_EPIPE when it closes */
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  fib_id r1 = spawn(recv_result, NULL), r2 = spawn(recv_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_chan_close(&ch));
  CHECK_OK(fib_chan_destroy(&ch)); /* nobody waits any more */
  CHECK_EQ(join_int(r1), FIB_EPIPE);
  CHECK_EQ(join_int(r2), FIB_EPIPE);
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  fib_id s1 = spawn(send_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_chan_close(&ch));
  CHECK_EQ(join_int(s1), FIB_EPIPE);
  CHECK_OK(fib_chan_destroy(&ch));
  return NULL;
}

TEST(close_drains_then_reports_closed) { run_main(close_main, NULL); }

/* ---- timeouts and cancellation */

static void *send_until_result(void *arg) {
  uint64_t d = (uint64_t)(uintptr_t)arg;
  return (void *)(intptr_t)fib_chan_send_until(&ch, &(int){5},
                                                fib_now_ns() + d);
}

static void *cancel_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  /* unbuffered send_until: times out, nothing delivered */
  CHECK_EQ(join_int(spawn(send_until_result, (void *)(uintptr_t)MS)),
           FIB_ETIMEDOUT);
  CHECK_EQ(fib_chan_recv_until(&ch, NULL, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_EQ(fib_chan_recv_until(&ch, NULL, 0), FIB_ETIMEDOUT);
  /* cancel a blocked receiver and a blocked sender */
  fib_id r = spawn(recv_result, NULL), s = spawn(send_result, NULL);
  CHECK_OK(fib_yield());
  /* they are a pair on one unbuffered channel: one of them completed */
  CHECK_EQ(join_int(r), 0);
  CHECK_EQ(join_int(s), 0);
  r = spawn(recv_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_EQ(fib_chan_destroy(&ch), FIB_EBUSY);
  CHECK_OK(fib_cancel(NULL, r));
  CHECK_OK(fib_chan_destroy(&ch)); /* the cancelled waiter no longer counts */
  CHECK_EQ(join_int(r), FIB_ECANCELED);
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  s = spawn(send_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, s));
  CHECK_EQ(fib_chan_recv_until(&ch, NULL, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_EQ(join_int(s), FIB_ECANCELED);
  CHECK_OK(fib_chan_destroy(&ch));
  return NULL;
}

TEST(timeouts_and_cancellation_take_the_waiter_off) {
  run_main(cancel_main, NULL);
}

static void *cancelled_self(void *arg) {
  (void)arg;
  while (fib_chan_len(&ch) == 0) /* fill has run (on one worker: first) */
    CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, fib_self()));
  int v = 1;
  /* a value is buffered and there is room, yet: cancelled */
  CHECK_EQ(fib_chan_recv(&ch, &v), FIB_ECANCELED);
  CHECK_EQ(fib_chan_send(&ch, &v), FIB_ECANCELED);
  fib_select_case c[2] = {{FIB_SELECT_RECV, &ch, &v, 0},
                          {FIB_SELECT_DEFAULT, NULL, NULL, 0}};
  CHECK_EQ(fib_select(c, 1), FIB_ECANCELED);
  CHECK_EQ(fib_select(c, 2), 0); /* with a default it never waits: works */
  CHECK_EQ(v, 42);
  CHECK_OK(fib_chan_close(&ch)); /* non-waiting calls work */
  return NULL;
}

static void *fill(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_send(&ch, &(int){42}));
  return NULL;
}

TEST(cancelled_fiber_gets_ecanceled_at_once) {
  fib_runtime *rt = new_runtime();
  /* after the runtime: shared, if it has several workers; a plain thread
   * may then send on it, so only a local one refuses */
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 2));
  if (test_workers() == 1)
    CHECK_EQ(fib_chan_send(&ch, &(int){1}), FIB_EPERM); /* not in a fiber */
  CHECK_OK(fib_spawn(rt, fill, NULL, NULL, NULL)); /* runs first */
  CHECK_OK(fib_spawn(rt, cancelled_self, NULL, NULL, NULL));
  CHECK_OK(fib_run(rt));
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_chan_destroy(&ch));
}

/* ---- the wait with no deadline: its node in the slot its fiber's stack
 * keeps, its result handed over by the switch into the fiber (by another
 * fiber's transfer, by a finishing fiber, by the loop) */

static fib_chan tail_a, tail_b;
static long tail_rounds;

static void *tail_pong(void *arg) {
  (void)arg;
  for (long i = 0; i < tail_rounds; i++) {
    long v = -1;
    CHECK_OK(fib_chan_recv(&tail_a, &v));
    CHECK_EQ(v, i);
    v = -v;
    CHECK_OK(fib_chan_send(&tail_b, &v));
  }
  return NULL;
}

static void *tail_ping(void *arg) {
  (void)arg;
  for (long i = 0; i < tail_rounds; i++) {
    long v = i;
    CHECK_OK(fib_chan_send(&tail_a, &v));
    CHECK_OK(fib_chan_recv(&tail_b, &v));
    CHECK_EQ(v, -i);
  }
  return NULL;
}

/* A receiver that waits, spawned and joined in a loop: each one's stack
 * is the last one's, renewed (the zombie), slot and all. */
static void *tail_one_recv(void *arg) {
  long v = -1;
  CHECK_OK(fib_chan_recv(&tail_a, &v));
  CHECK_EQ(v, (long)(intptr_t)arg);
  return NULL;
}

static void *tail_spawn_join(void *arg) {
  (void)arg;
  for (long i = 0; i < 100; i++) {
    fib_id r = spawn(tail_one_recv, (void *)(intptr_t)i);
    CHECK_OK(fib_yield()); /* it waits */
    CHECK_OK(fib_chan_send(&tail_a, &i));
    CHECK_OK(fib_join(r, NULL));
  }
  return NULL;
}

TEST(waits_with_no_deadline_on_every_kind_of_stack) {
  static const fib_attr kinds[] = {
      {0},
      {.flags = FIB_SHARED_FP},
      {.flags = FIB_DETACHED}, /* its record on its stack, above the slot */
      {.guard = FIB_GUARD_NONE},
      {.guard = FIB_GUARD_MPROTECT},
  };
  tail_rounds = (long)scaled(2000);
  size_t n = sizeof kinds / sizeof kinds[0];
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      if ((kinds[i].flags ^ kinds[j].flags) & FIB_SHARED_FP)
        continue; /* they meet through the loop: covered below */
      CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
      CHECK_OK(fib_chan_init(&tail_b, sizeof(long), 0));
      fib_runtime *rt = new_runtime();
      CHECK_OK(fib_spawn(rt, tail_ping, NULL, &kinds[i], NULL));
      CHECK_OK(fib_spawn(rt, tail_pong, NULL, &kinds[j], NULL));
      run_to_end(rt);
      CHECK_OK(fib_chan_destroy(&tail_a));
      CHECK_OK(fib_chan_destroy(&tail_b));
    }
  /* the two FP variants: every switch between them goes through the loop,
   * whose resume hands the value over */
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  CHECK_OK(fib_chan_init(&tail_b, sizeof(long), 0));
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, tail_ping, NULL, &kinds[0], NULL));
  CHECK_OK(fib_spawn(rt, tail_pong, NULL, &kinds[1], NULL));
  run_to_end(rt);
  rt = new_runtime();
  CHECK_OK(fib_spawn(rt, tail_spawn_join, NULL, NULL, NULL));
  run_to_end(rt);
  CHECK_OK(fib_chan_destroy(&tail_a));
  CHECK_OK(fib_chan_destroy(&tail_b));
}

static void *tail_recv_result(void *arg) {
  (void)arg;
  long v;
  int err = fib_chan_recv(&tail_a, &v);
  /* the reason it woke was handed over with the switch; a yield after it
   * still returns 0 */
  CHECK_OK(fib_yield());
  return (void *)(intptr_t)err;
}

static void *tail_send_result(void *arg) {
  (void)arg;
  long v = 7;
  int err = fib_chan_send(&tail_a, &v);
  CHECK_OK(fib_yield());
  return (void *)(intptr_t)err;
}

static void *tail_results_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  /* cancelled: the canceller takes its node off the channel */
  fib_id r = spawn(tail_recv_result, NULL), s;
  CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, r));
  CHECK_OK(fib_chan_destroy(&tail_a)); /* nobody waits */
  CHECK_EQ(join_int(r), FIB_ECANCELED);
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  s = spawn(tail_send_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, s));
  CHECK_OK(fib_yield()); /* our yield switches to it, with its reason */
  CHECK_EQ(join_int(s), FIB_ECANCELED);
  /* closed: woken at the back with FIB_EPIPE, reached by a yield */
  r = spawn(tail_recv_result, NULL);
  s = spawn(tail_recv_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_chan_close(&tail_a));
  CHECK_OK(fib_yield());
  CHECK_EQ(join_int(r), FIB_EPIPE);
  CHECK_EQ(join_int(s), FIB_EPIPE);
  CHECK_OK(fib_chan_destroy(&tail_a));
  /* completed with a value, then cancelled while it runs: 0 */
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  r = spawn(tail_recv_result, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_chan_send(&tail_a, &(long){3}));
  CHECK_OK(fib_cancel(NULL, r)); /* READY now: its wait is over */
  CHECK_EQ(join_int(r), 0);
  CHECK_OK(fib_chan_destroy(&tail_a));
  return NULL;
}

static void *tail_recv_b(void *arg) {
  (void)arg;
  long v = -1;
  CHECK_OK(fib_chan_recv(&tail_b, &v));
  return (void *)(intptr_t)v;
}

/* A cancelled waiter's node must leave the channel with the cancel: its
 * fiber may finish at once, and the next spawn takes its stack, slot and
 * all, and waits elsewhere with it. */
static void *tail_cancel_then_reuse_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  CHECK_OK(fib_chan_init(&tail_b, sizeof(long), 0));
  for (int round = 0; round < 3; round++) {
    fib_id x = spawn(round == 2 ? tail_send_result : tail_recv_result, NULL);
    CHECK_OK(fib_yield()); /* it waits on a */
    CHECK_OK(fib_cancel(NULL, x));
    CHECK_EQ(join_int(x), FIB_ECANCELED);
    fib_id z = spawn(tail_recv_b, NULL); /* on x's stack (the zombie) */
    CHECK_OK(fib_yield()); /* it waits on b */
    long v = 5;
    if (round == 2) /* nobody sends on a */
      CHECK_EQ(fib_chan_recv_until(&tail_a, &v, fib_now_ns() + MS),
               FIB_ETIMEDOUT);
    else /* nobody receives on a */
      CHECK_EQ(fib_chan_send_until(&tail_a, &v, fib_now_ns() + MS),
               FIB_ETIMEDOUT);
    v = 40 + round;
    CHECK_OK(fib_chan_send(&tail_b, &v));
    CHECK_EQ(join_int(z), 40 + round);
  }
  CHECK_OK(fib_chan_destroy(&tail_a));
  CHECK_OK(fib_chan_destroy(&tail_b));
  return NULL;
}

TEST(a_cancelled_wait_with_no_deadline_leaves_the_channel) {
  run_main(tail_cancel_then_reuse_main, NULL);
}

TEST(a_wait_with_no_deadline_returns_why_it_woke) {
  run_main(tail_results_main, NULL);
}

/* The same reasons handed over by the loop's resume: the fiber is readied
 * from outside any fiber, between runs. */
TEST(a_wait_with_no_deadline_woken_between_runs) {
  CHECK_OK(fib_chan_init(&tail_a, sizeof(long), 0));
  fib_runtime *rt = new_runtime();
  fib_id r, s;
  CHECK_OK(fib_spawn(rt, tail_recv_result, NULL, NULL, &r));
  CHECK_OK(fib_spawn(rt, tail_recv_result, NULL, NULL, &s));
  CHECK_EQ(fib_run_nowait(rt), 2); /* both wait */
  CHECK_OK(fib_cancel(rt, r));
  CHECK_OK(fib_chan_close(&tail_a));
  void *res;
  CHECK_OK(fib_run_join(rt, r, &res));
  CHECK_EQ((int)(intptr_t)res, FIB_ECANCELED);
  CHECK_OK(fib_run_join(rt, s, &res));
  CHECK_EQ((int)(intptr_t)res, FIB_EPIPE);
  CHECK_OK(fib_runtime_destroy(rt));
  CHECK_OK(fib_chan_destroy(&tail_a));
}

/* ---- select */

static void *select_main(void *arg) {
  (void)arg;
  int a = 0, b = 0;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 1));
  CHECK_OK(fib_chan_init(&ch2, sizeof(int), 0));
  fib_select_case c[3] = {{FIB_SELECT_RECV, &ch, &a, -1},
                          {FIB_SELECT_RECV, &ch2, &b, -1},
                          {FIB_SELECT_DEFAULT, NULL, NULL, -1}};
  CHECK_EQ(fib_select(c, 3), 2); /* nothing ready: default */
  CHECK_EQ(c[2].err, 0);
  CHECK_EQ(fib_select_until(c, 2, fib_now_ns() + MS), FIB_ETIMEDOUT);
  CHECK_EQ(fib_select_until(c, 2, 0), FIB_ETIMEDOUT);
  /* send case ready (room in the buffer) */
  fib_select_case s[2] = {{FIB_SELECT_SEND, &ch, &(int){11}, -1},
                          {FIB_SELECT_SEND, &ch2, &(int){22}, -1}};
  CHECK_EQ(fib_select(s, 2), 0);
  CHECK_EQ(s[0].err, 0);
  CHECK_EQ(fib_select(c, 3), 0);
  CHECK_EQ(a, 11);
  /* block on both; a sender on ch2 completes it */
  fib_id t = spawn(send_result, NULL); /* sends 7 on ch (buffered): at once */
  CHECK_OK(fib_join(t, NULL));
  CHECK_EQ(fib_select(c, 2), 0);
  CHECK_EQ(a, 7);
  /* a NULL channel is never ready; nothing else: would wait forever */
  fib_select_case none[1] = {{FIB_SELECT_RECV, NULL, NULL, -1}};
  CHECK_EQ(fib_select(none, 1), FIB_EDEADLK);
  CHECK_EQ(fib_select(NULL, 0), FIB_EDEADLK);
  CHECK_EQ(fib_select_until(none, 1, fib_now_ns() + MS), FIB_ETIMEDOUT);
  /* closed: a receive case is ready with FIB_EPIPE, so is a send case */
  CHECK_OK(fib_chan_close(&ch2));
  c[0].chan = NULL;
  CHECK_EQ(fib_select(c, 2), 1);
  CHECK_EQ(c[1].err, FIB_EPIPE);
  CHECK_EQ(fib_select(s + 1, 1), 0);
  CHECK_EQ(s[1].err, FIB_EPIPE);
  /* bad cases */
  fib_select_case bad[2] = {{FIB_SELECT_DEFAULT, NULL, NULL, 0},
                            {FIB_SELECT_DEFAULT, NULL, NULL, 0}};
  CHECK_EQ(fib_select(bad, 2), FIB_EINVAL);
  bad[0].op = (fib_select_op)9;
  CHECK_EQ(fib_select(bad, 1), FIB_EINVAL);
  bad[0] = (fib_select_case){FIB_SELECT_SEND, &ch, NULL, 0};
  CHECK_EQ(fib_select(bad, 1), FIB_EINVAL); /* NULL value, elem_size 4 */
  CHECK_EQ(fib_select(NULL, 1), FIB_EINVAL);
  CHECK_OK(fib_chan_destroy(&ch));
  CHECK_OK(fib_chan_destroy(&ch2));
  bad[0] = (fib_select_case){FIB_SELECT_RECV, &ch, NULL, 0};
  CHECK_EQ(fib_select(bad, 1), FIB_EINVAL); /* destroyed */
  return NULL;
}

TEST(select_default_ready_closed_timeout_and_misuse) {
  run_main(select_main, NULL);
}

/* many cases (more than fit on the stack), woken by a peer, and the
 * other cases' wait records are gone afterwards */
#define MANY 20
static fib_chan many[MANY];

static void *many_sender(void *arg) {
  int k = (int)(intptr_t)arg;
  CHECK_OK(fib_chan_send(&many[k], &k));
  return NULL;
}

static void *select_many_main(void *arg) {
  (void)arg;
  fib_select_case c[MANY];
  int got[MANY];
  for (int i = 0; i < MANY; i++) {
    CHECK_OK(fib_chan_init(&many[i], sizeof(int), 0));
    c[i] = (fib_select_case){FIB_SELECT_RECV, &many[i], &got[i], -1};
  }
  for (int round = 0; round < 3; round++) {
    int k = (round * 7 + 3) % MANY;
    fib_id t = spawn(many_sender, (void *)(intptr_t)k);
    CHECK_EQ(fib_select(c, MANY), k); /* waits, then the sender comes */
    CHECK_EQ(got[k], k);
    CHECK_OK(fib_join(t, NULL));
  }
  for (int i = 0; i < MANY; i++)
    CHECK_OK(fib_chan_destroy(&many[i])); /* no stale waiter left */
  return NULL;
}

TEST(select_over_many_cases_waits_and_cleans_up) {
  run_main(select_many_main, NULL);
}

static void *recv_one_from_1(void *arg) {
  (void)arg;
  int v;
  CHECK_OK(fib_chan_recv(&many[1], &v));
  return (void *)(intptr_t)v;
}

static void *select_send_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&many[0], sizeof(int), 0));
  CHECK_OK(fib_chan_init(&many[1], sizeof(int), 0));
  fib_select_case s[2] = {{FIB_SELECT_SEND, &many[0], &(int){99}, -1},
                          {FIB_SELECT_SEND, &many[1], &(int){98}, -1}};
  fib_id r = spawn(recv_one_from_1, NULL);
  CHECK_EQ(fib_select(s, 2), 1);
  CHECK_EQ(s[1].err, 0);
  CHECK_EQ(join_int(r), 98);
  CHECK_OK(fib_chan_destroy(&many[0]));
  CHECK_OK(fib_chan_destroy(&many[1]));
  return NULL;
}

TEST(select_send_case_completed_by_a_receiver) {
  run_main(select_send_main, NULL);
}

static void *select_cancel_target(void *arg) {
  (void)arg;
  fib_select_case c[2] = {{FIB_SELECT_RECV, &ch, NULL, -1},
                          {FIB_SELECT_SEND, &ch2, &(int){1}, -1}};
  return (void *)(intptr_t)fib_select(c, 2);
}

static void *select_cancel_main(void *arg) {
  (void)arg;
  CHECK_OK(fib_chan_init(&ch, sizeof(int), 0));
  CHECK_OK(fib_chan_init(&ch2, sizeof(int), 0));
  fib_id t = spawn(select_cancel_target, NULL);
  CHECK_OK(fib_yield());
  CHECK_OK(fib_cancel(NULL, t));
  /* it is stale on both channels: nobody takes its send */
  int got = fib_chan_recv_until(&ch2, NULL, fib_now_ns() + MS);
  if (got == 0 && test_workers() > 1) {
    /* On several workers it may still have been inside its select, short
     * of a wait, when the cancel came: a select that need not wait
     * completes (fibers.h), here with our receive. */
    CHECK_EQ(join_int(t), 1);
  } else {
    CHECK_EQ(got, FIB_ETIMEDOUT);
    CHECK_EQ(join_int(t), FIB_ECANCELED);
  }
  CHECK_OK(fib_chan_destroy(&ch));
  CHECK_OK(fib_chan_destroy(&ch2));
  return NULL;
}

TEST(select_cancelled_while_waiting) { run_main(select_cancel_main, NULL); }

/* Uniform choice: 4 cases always ready, 40,000 selects, each case chosen
 * between 20% and 30% of the time (expected 25%, sd ~0.2%). */
static void *uniform_main(void *arg) {
  (void)arg;
  fib_chan c4[4];
  fib_select_case c[4];
  long count[4] = {0};
  int v;
  for (int i = 0; i < 4; i++) {
    CHECK_OK(fib_chan_init(&c4[i], sizeof(int), 1));
    CHECK_OK(fib_chan_send(&c4[i], &i));
    c[i] = (fib_select_case){FIB_SELECT_RECV, &c4[i], &v, -1};
  }
  for (int k = 0; k < 40000; k++) {
    int i = fib_select(c, 4);
    CHECK(i >= 0 && i < 4);
    CHECK_EQ(v, i);
    count[i]++;
    CHECK_OK(fib_chan_send(&c4[i], &i)); /* ready again */
  }
  for (int i = 0; i < 4; i++) {
    CHECK(count[i] >= 8000);
    CHECK(count[i] <= 12000);
    CHECK_OK(fib_chan_destroy(&c4[i])); /* drops the buffered value */
  }
  return NULL;
}

TEST(select_chooses_uniformly_among_ready_cases) {
  run_main(uniform_main, NULL);
}

/* ---- stress: a chain of thousands of fibers, and many producers and
 * consumers on one buffered channel */

static fib_wg relays; /* they are done with the chain */

static void *relay(void *arg) {
  fib_chan *in = arg, *out = in + 1;
  long v;
  while (fib_chan_recv(in, &v) == 0)
    CHECK_OK(fib_chan_send(out, &(long){v + 1}));
  CHECK_OK(fib_chan_close(out));
  CHECK_OK(fib_wg_done(&relays));
  return NULL;
}

static long stress_n;
static fib_chan work;
/* atomic: producers and consumers may run on several workers */
static atomic_long sum_in, sum_out;
static fib_wg producers;

static void *producer(void *arg) {
  long base = (long)(intptr_t)arg;
  for (long i = 0; i < 20; i++) {
    long v = base * 20 + i;
    atomic_fetch_add_explicit(&sum_in, v, memory_order_relaxed);
    CHECK_OK(fib_chan_send(&work, &v));
  }
  CHECK_OK(fib_wg_done(&producers));
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  long v;
  while (fib_chan_recv(&work, &v) == 0)
    atomic_fetch_add_explicit(&sum_out, v, memory_order_relaxed);
  return NULL;
}

static void *stress_main(void *arg) {
  (void)arg;
  long n = stress_n;
  fib_chan *chain = malloc((size_t)(n + 1) * sizeof *chain);
  CHECK(chain != NULL);
  for (long i = 0; i <= n; i++)
    CHECK_OK(fib_chan_init(&chain[i], sizeof(long), (size_t)(i % 3)));
  CHECK_OK(fib_wg_init(&relays));
  CHECK_OK(fib_wg_add(&relays, n));
  for (long i = 0; i < n; i++)
    CHECK_OK(fib_spawn(NULL, relay, &chain[i],
                       &(fib_attr){.flags = FIB_DETACHED}, NULL));
  for (long k = 0; k < 10; k++) {
    CHECK_OK(fib_chan_send(&chain[0], &k));
    long v;
    CHECK_OK(fib_chan_recv(&chain[n], &v));
    CHECK_EQ(v, k + n);
  }
  CHECK_OK(fib_chan_close(&chain[0]));
  CHECK_EQ(fib_chan_recv(&chain[n], NULL), FIB_EPIPE);
  CHECK_OK(fib_wg_wait(&relays)); /* the relays finish */
  CHECK_OK(fib_wg_destroy(&relays));
  for (long i = 0; i <= n; i++)
    CHECK_OK(fib_chan_destroy(&chain[i]));
  free(chain);

  CHECK_OK(fib_chan_init(&work, sizeof(long), 16));
  CHECK_OK(fib_wg_init(&producers));
  CHECK_OK(fib_wg_add(&producers, n));
  fib_id cons[8];
  for (int i = 0; i < 8; i++)
    cons[i] = spawn(consumer, NULL);
  for (long i = 0; i < n; i++)
    CHECK_OK(fib_spawn(NULL, producer, (void *)(intptr_t)i,
                       &(fib_attr){.flags = FIB_DETACHED}, NULL));
  CHECK_OK(fib_wg_wait(&producers));
  CHECK_OK(fib_chan_close(&work));
  for (int i = 0; i < 8; i++)
    CHECK_OK(fib_join(cons[i], NULL));
  CHECK_EQ(atomic_load(&sum_out), atomic_load(&sum_in));
  CHECK_EQ(atomic_load(&sum_in), (20 * n) * (20 * n - 1) / 2);
  CHECK_OK(fib_chan_destroy(&work));
  CHECK_OK(fib_wg_destroy(&producers));
  return NULL;
}

TEST(stress_thousands_of_fibers) {
  stress_n = scaled(3000);
  run_main(stress_main, NULL);
}

/* ---- misuse, allocation failures, leaks */

TEST(misuse_gets_error_codes) {
  fib_chan z = {{{0}}};
  CHECK_EQ(fib_chan_send(&z, &(int){1}), FIB_EINVAL); /* never initialised */
  CHECK_EQ(fib_chan_recv(&z, NULL), FIB_EINVAL);
  CHECK_EQ(fib_chan_close(&z), FIB_EINVAL);
  CHECK_EQ(fib_chan_destroy(&z), FIB_EINVAL);
  CHECK_EQ(fib_chan_len(&z), 0);
  CHECK_EQ(fib_chan_init(NULL, 4, 1), FIB_EINVAL);
  CHECK_EQ(fib_chan_init(&z, SIZE_MAX / 2, 3), FIB_EINVAL); /* overflow */
  CHECK_OK(fib_chan_init(&z, 0, 5)); /* empty elements: allowed */
  CHECK_EQ(fib_chan_send(&z, NULL), FIB_EPERM);
  CHECK_OK(fib_chan_destroy(&z));
  CHECK_EQ(fib_chan_destroy(&z), FIB_EINVAL); /* destroyed twice */
  CHECK_EQ(fib_chan_send(&z, NULL), FIB_EINVAL); /* used after destroy */
  CHECK_OK(fib_chan_init(&z, 8, 0));
  CHECK_EQ(fib_chan_send(&z, NULL), FIB_EINVAL); /* NULL with elem_size 8 */
  CHECK_EQ(fib_chan_recv(&z, NULL), FIB_EPERM);
  fib_select_case c[1] = {{FIB_SELECT_RECV, &z, NULL, 0}};
  CHECK_EQ(fib_select(c, 1), FIB_EPERM);
  CHECK_OK(fib_chan_destroy(&z));
}

TEST(init_fails_cleanly_under_malloc_failure) {
  for (size_t cap = 0; cap <= 8; cap += 8) {
    int ok = 0;
    for (long nth = 1; !ok && nth < 10; nth++) {
      fib_chan c = {{{0}}};
      fib__fault_inject(FIB__FAULT_MALLOC, nth, 0);
      int err = fib_chan_init(&c, sizeof(long), cap);
      long calls = fib__fault_calls();
      fib__fault_inject(0, 0, 0);
      if (err) {
        CHECK_EQ(err, FIB_ENOMEM);
        CHECK_EQ(fib_chan_len(&c), 0);
        CHECK_EQ(fib_chan_destroy(&c), FIB_EINVAL); /* not initialised */
        CHECK(calls >= nth);
      } else {
        ok = 1;
        CHECK(calls < nth); /* it succeeded because nothing failed */
        CHECK_OK(fib_chan_destroy(&c));
      }
    }
    CHECK(ok);
  }
}

static void *leak_round(void *arg) {
  (void)arg;
  fib_chan c[MANY];
  fib_select_case s[MANY];
  for (int i = 0; i < MANY; i++) {
    CHECK_OK(fib_chan_init(&c[i], 64, (size_t)i));
    s[i] = (fib_select_case){FIB_SELECT_RECV, &c[i], NULL, 0};
  }
  CHECK_EQ(fib_select_until(s, MANY, 0), FIB_ETIMEDOUT); /* malloc'd nodes */
  for (int i = 0; i < MANY; i++)
    CHECK_OK(fib_chan_destroy(&c[i]));
  return NULL;
}

static size_t allocated_bytes(void) {
#ifdef CHAN_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  return mallinfo2().uordblks;
#endif
}

TEST(nothing_leaks) {
  for (int i = 0; i < 50; i++) /* warm: the runtime's own caches settle */
    run_main(leak_round, NULL);
  size_t before = allocated_bytes();
  for (int i = 0; i < 50; i++)
    run_main(leak_round, NULL);
  CHECK_EQ(allocated_bytes(), before);
}

/* ---- a fan-out/fan-in pipeline of migratable fibers across workers
 * (bench_fibers' fanout rows): a producer, four stages and a collector on
 * two shared channels, unbuffered and buffered, on 2 and 4 workers. The
 * fibers follow their wakers between workers and idle workers take them:
 * every value arrives once, transformed once. */

enum { PIPE_STAGES = 4 };

struct pipe {
  fib_chan in, out;
  long n;
  _Atomic long passed;
  _Atomic long moves; /* the stages' thread changes between receives */
  uint64_t sum;
};

static void *pipe_producer(void *arg) {
  struct pipe *p = arg;
  for (long i = 0; i < p->n; i++)
    CHECK_OK(fib_chan_send(&p->in, &i));
  CHECK_OK(fib_chan_close(&p->in));
  return NULL;
}

static void *pipe_stage(void *arg) {
  struct pipe *p = arg;
  long v, passed = 0, moves = 0;
  pthread_t at = current_thread();
  int err;
  while ((err = fib_chan_recv(&p->in, &v)) == 0) {
    v = 3 * v + 1;
    CHECK_OK(fib_chan_send(&p->out, &v));
    passed++;
    pthread_t now = current_thread();
    moves += !pthread_equal(now, at);
    at = now;
  }
  CHECK_EQ(err, FIB_EPIPE);
  atomic_fetch_add(&p->passed, passed);
  atomic_fetch_add(&p->moves, moves);
  return NULL;
}

static void *pipe_collector(void *arg) {
  struct pipe *p = arg;
  fib_attr mig = {0};
  mig.flags = FIB_MIGRATABLE;
  fib_id ids[PIPE_STAGES + 1];
  CHECK_OK(fib_spawn(NULL, pipe_producer, p, &mig, &ids[0]));
  for (int i = 1; i <= PIPE_STAGES; i++)
    CHECK_OK(fib_spawn(NULL, pipe_stage, p, &mig, &ids[i]));
  for (long i = 0; i < p->n; i++) {
    long v;
    CHECK_OK(fib_chan_recv(&p->out, &v));
    p->sum += (uint64_t)v;
  }
  for (int i = 0; i <= PIPE_STAGES; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  return NULL;
}

/* The pipeline on `workers` workers with channels of `cap` slots: every
 * value once, transformed once; the stages' moves in *moves. */
static void run_pipe(unsigned workers, size_t cap, long n, long *moves) {
  struct pipe p = {.n = n};
  fib_runtime *rt = new_workers(workers);
  CHECK_OK(fib_chan_init(&p.in, sizeof(long), cap));
  CHECK_OK(fib_chan_init(&p.out, sizeof(long), cap));
  CHECK_OK(fib_spawn(rt, pipe_collector, &p, NULL, NULL));
  CHECK_OK(fib_run(rt));
  uint64_t un = (uint64_t)n;
  CHECK_EQ(p.sum, 3 * (un * (un - 1) / 2) + un);
  CHECK_EQ(atomic_load(&p.passed), n);
  CHECK_OK(fib_chan_destroy(&p.in));
  CHECK_OK(fib_chan_destroy(&p.out));
  CHECK_OK(fib_runtime_destroy(rt));
  *moves = atomic_load(&p.moves);
}

TEST(a_pipeline_of_migratable_fibers_across_workers) {
  for (unsigned workers = 2; workers <= 4; workers *= 2)
    for (size_t cap = 0; cap <= 64; cap += 64) {
      long moves;
      run_pipe(workers, cap, scaled(20000), &moves);
    }
}

/* Idle workers leave such a pipeline together: the fibers it readies to
 * run next (each hand-off's partner, at the front of the run queue) are
 * not offered, and a fiber that follows its waker runs next there. Its
 * stages move a few times at the start (the never-run fibers an idle
 * worker takes, then following their wakers), not at every few dozen
 * hand-offs, which is what an idle worker that takes them costs: tens of
 * thousands of moves a run, each a hop between cores at every message. */
TEST(idle_workers_do_not_split_a_pipeline) {
  long n = 20000 + scaled(20000); /* enough to show churn at any scale */
  /* What a busy worker offers depends on how long its hand-offs take
   * (FIB__GROUP_SLOW_NS: slow ones look like long jobs, whose partners
   * idle workers should take): under an emulator, on a loaded machine, a
   * turn of them can take that long, and the offers are then what the
   * runtime means to do. There the pipelines still run (every value
   * once), and the bound is not checked. */
  const char *slow = getenv("FIB_TEST_EMULATOR");
  for (unsigned workers = 2; workers <= 4; workers *= 2)
    for (size_t cap = 0; cap <= 64; cap += 64) {
      long moves;
      run_pipe(workers, cap, n, &moves);
      const char *forced = getenv("FIBERS_FORCE_MIGRATE");
      /* forced: they move at each turn */
      if (!slow && (!forced || strcmp(forced, "1") != 0))
        CHECK(moves <= 400);
    }
  if (slow)
    SKIP("under %s hand-offs may be slow enough to be offered on purpose: "
         "the pipelines ran, their moves were not bounded",
         slow);
}

/* ---- a pool of migratable consumers that a buffered channel feeds
 * with long jobs, all started on worker 0 and run there first: each is
 * readied to run next by the send that hands it a job (the front of the
 * run queue, which idle workers leave alone while its hand-offs are
 * quick), and then computes for a while, so the hand-offs are slow and
 * idle workers take such fibers too: some job runs on another thread.
 * Every job is done once. */

enum { POOL_CONSUMERS = 4 };

struct pool {
  fib_chan jobs;
  long n;
  pthread_t main_thread;
  _Atomic long done, elsewhere;
  _Atomic uint64_t sum;
};

static void *pool_consumer(void *arg) {
  struct pool *p = arg;
  long job;
  int err;
  while ((err = fib_chan_recv(&p->jobs, &job)) == 0) {
    spin(20000);
    atomic_fetch_add(&p->sum, (uint64_t)job);
    atomic_fetch_add(&p->done, 1);
    if (!pthread_equal(current_thread(), p->main_thread))
      atomic_fetch_add(&p->elsewhere, 1);
  }
  CHECK_EQ(err, FIB_EPIPE);
  return NULL;
}

static void *pool_main(void *arg) {
  struct pool *p = arg;
  p->main_thread = current_thread();
  fib_attr mig = {0};
  mig.flags = FIB_MIGRATABLE;
  mig.worker = 1; /* they start on worker 0: any move is of one that ran */
  fib_id ids[POOL_CONSUMERS];
  for (int i = 0; i < POOL_CONSUMERS; i++)
    CHECK_OK(fib_spawn(NULL, pool_consumer, p, &mig, &ids[i]));
  for (int i = 0; i < 3; i++) /* they run here first, and wait for jobs */
    CHECK_OK(fib_yield());
  for (long i = 1; i <= p->n; i++)
    CHECK_OK(fib_chan_send(&p->jobs, &i));
  CHECK_OK(fib_chan_close(&p->jobs));
  for (int i = 0; i < POOL_CONSUMERS; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  return NULL;
}

TEST(idle_workers_take_consumers_of_long_jobs) {
  for (unsigned workers = 2; workers <= 4; workers *= 2) {
    struct pool p = {.n = 4000};
    fib_runtime *rt = new_workers(workers);
    CHECK_OK(fib_chan_init(&p.jobs, sizeof(long), 16));
    CHECK_OK(fib_spawn(rt, pool_main, &p, NULL, NULL));
    CHECK_OK(fib_run(rt));
    CHECK_OK(fib_runtime_destroy(rt));
    CHECK_OK(fib_chan_destroy(&p.jobs));
    CHECK_EQ(atomic_load(&p.done), p.n);
    CHECK_EQ(atomic_load(&p.sum), (uint64_t)p.n * (uint64_t)(p.n + 1) / 2);
    CHECK(atomic_load(&p.elsewhere) > 0);
  }
}

/* ---- a shared channel crowded from several workers: senders and
 * receivers contend for its lock (the shared call's second road, taken
 * when one try does not get it), with word-sized and odd-sized elements
 * (the common call copies only the first) and sends with deadlines that
 * time out now and then, unbuffered and buffered. Every value arrives
 * exactly once, a timed-out send delivered nothing (its sender sends the
 * same value again), and each receiver sees each sender's values in the
 * order they were sent. */

enum { CROWD_SENDERS = 4, CROWD_RECEIVERS = 3 };

struct crowd_val { /* 12 bytes: an odd size */
  uint32_t sender, seq, check;
};

struct crowd {
  fib_chan ch;
  size_t size; /* of an element: 8 or 12 */
  long per;    /* values per sender */
  _Atomic long received, timeouts;
  /* [sender * per + seq]; ints: riscv64 has no byte-wide atomic add
   * without libatomic */
  _Atomic int *seen;
};

struct crowd_arg {
  struct crowd *c;
  uint32_t index;
};

static void crowd_pack(const struct crowd *c, uint32_t sender, uint32_t seq,
                       unsigned char *buf) {
  if (c->size == 8) {
    uint64_t w = (uint64_t)sender << 32 | seq;
    memcpy(buf, &w, 8);
  } else {
    struct crowd_val v = {sender, seq, sender * 31u + seq};
    memcpy(buf, &v, sizeof v);
  }
}

static void crowd_unpack(const struct crowd *c, const unsigned char *buf,
                         uint32_t *sender, uint32_t *seq) {
  if (c->size == 8) {
    uint64_t w;
    memcpy(&w, buf, 8);
    *sender = (uint32_t)(w >> 32);
    *seq = (uint32_t)w;
  } else {
    struct crowd_val v;
    memcpy(&v, buf, sizeof v);
    CHECK_EQ(v.check, v.sender * 31u + v.seq);
    *sender = v.sender;
    *seq = v.seq;
  }
}

static void *crowd_sender(void *arg) {
  struct crowd_arg *a = arg;
  struct crowd *c = a->c;
  unsigned char buf[16];
  for (long i = 0; i < c->per; i++) {
    crowd_pack(c, a->index, (uint32_t)i, buf);
    if (i % 3 == 1) { /* a short deadline: it may pass before a receiver */
      int err = fib_chan_send_until(&c->ch, buf, fib_now_ns() + 2000);
      if (err == FIB_ETIMEDOUT) {
        atomic_fetch_add(&c->timeouts, 1);
        CHECK_OK(fib_chan_send(&c->ch, buf)); /* the same value again */
      } else {
        CHECK_OK(err);
      }
    } else {
      CHECK_OK(fib_chan_send(&c->ch, buf));
    }
  }
  return NULL;
}

static void *crowd_receiver(void *arg) {
  struct crowd_arg *a = arg;
  struct crowd *c = a->c;
  long last[CROWD_SENDERS];
  for (int k = 0; k < CROWD_SENDERS; k++)
    last[k] = -1;
  unsigned char buf[16];
  int err;
  while ((err = fib_chan_recv(&c->ch, buf)) == 0) {
    uint32_t sender, seq;
    crowd_unpack(c, buf, &sender, &seq);
    CHECK(sender < CROWD_SENDERS && (long)seq < c->per);
    if (sender >= CROWD_SENDERS || (long)seq >= c->per)
      continue;
    CHECK((long)seq > last[sender]); /* in the order sent */
    last[sender] = seq;
    CHECK_EQ(atomic_fetch_add(&c->seen[sender * c->per + seq], 1), 0);
    long got = atomic_fetch_add(&c->received, 1);
    if (got % 8 == 0) /* so that senders wait, and some time out */
      CHECK_OK(got % 64 ? fib_yield() : fib_sleep_ns(20000));
  }
  CHECK_EQ(err, FIB_EPIPE);
  return NULL;
}

static void *crowd_main(void *arg) {
  struct crowd *c = arg;
  struct crowd_arg s[CROWD_SENDERS], r[CROWD_RECEIVERS];
  fib_id sid[CROWD_SENDERS], rid[CROWD_RECEIVERS];
  fib_attr mig = {0};
  mig.flags = FIB_MIGRATABLE;
  for (uint32_t i = 0; i < CROWD_RECEIVERS; i++) {
    r[i] = (struct crowd_arg){c, i};
    CHECK_OK(fib_spawn(NULL, crowd_receiver, &r[i], &mig, &rid[i]));
  }
  for (uint32_t i = 0; i < CROWD_SENDERS; i++) {
    s[i] = (struct crowd_arg){c, i};
    CHECK_OK(fib_spawn(NULL, crowd_sender, &s[i], &mig, &sid[i]));
  }
  for (int i = 0; i < CROWD_SENDERS; i++)
    CHECK_OK(fib_join(sid[i], NULL));
  CHECK_OK(fib_chan_close(&c->ch));
  for (int i = 0; i < CROWD_RECEIVERS; i++)
    CHECK_OK(fib_join(rid[i], NULL));
  return NULL;
}

TEST(a_crowded_shared_channel_delivers_every_value_once) {
  long per = scaled(5000);
  for (unsigned workers = 2; workers <= 4; workers *= 2)
    for (size_t size = 8; size <= 12; size += 4)
      for (size_t cap = 0; cap <= 5; cap += 5) {
        struct crowd c = {.size = size, .per = per};
        c.seen = calloc((size_t)(CROWD_SENDERS * per), sizeof *c.seen);
        CHECK(c.seen != NULL);
        fib_runtime *rt = new_workers(workers);
        CHECK_OK(fib_chan_init(&c.ch, size, cap));
        CHECK_OK(fib_spawn(rt, crowd_main, &c, NULL, NULL));
        CHECK_OK(fib_run(rt));
        CHECK_OK(fib_runtime_destroy(rt));
        CHECK_EQ(atomic_load(&c.received), CROWD_SENDERS * per);
        for (long i = 0; i < CROWD_SENDERS * per; i++)
          CHECK_EQ(c.seen[i], 1);
        CHECK_EQ(fib_chan_len(&c.ch), 0);
        CHECK_OK(fib_chan_destroy(&c.ch));
        free((void *)c.seen);
      }
}

TEST_MAIN(T_ONE_WORKER(unbuffered_is_a_rendezvous,
                       "counts the sender's steps after three yields: on "
                       "another worker it lags"),
          T_ONE_WORKER(receiver_handed_a_value_runs_next, "exact order on one run queue"),
          T(hand_offs_of_every_size_with_and_without_a_deadline),
          T_ONE_WORKER(receiver_with_a_deadline_handed_a_value_runs_next,
                       "exact order on one run queue"),
          T_ONE_WORKER(sender_whose_value_is_taken_runs_next, "exact order on one run queue"),
          T_ONE_WORKER(close_wakes_its_waiters_at_the_back, "exact order on one run queue"),
          T_ONE_WORKER(select_handed_a_value_runs_next, "exact order on one run queue"),
          T_ONE_WORKER(channel_ping_pong_cannot_starve_a_yielder, "exact order on one run queue"),
          T(buffered_fifo_full_and_empty),
          T_ONE_WORKER(close_drains_then_reports_closed,
                       "steps its waiters through the channel by yields, each of which "
                       "lets them park only on one worker"),
          T_ONE_WORKER(timeouts_and_cancellation_take_the_waiter_off,
                       "steps its waiters through the channel by yields, each of which "
                       "lets them park only on one worker"),
          T(cancelled_fiber_gets_ecanceled_at_once),
          T_ONE_WORKER(waits_with_no_deadline_on_every_kind_of_stack,
                       "a one-worker runtime's channel wait"),
          T_ONE_WORKER(a_wait_with_no_deadline_returns_why_it_woke,
                       "steps its waiters through the channel by yields, each of which "
                       "lets them park only on one worker"),
          T_ONE_WORKER(a_cancelled_wait_with_no_deadline_leaves_the_channel,
                       "steps its waiters through the channel by yields, each of which "
                       "lets them park only on one worker"),
          T_ONE_WORKER(a_wait_with_no_deadline_woken_between_runs,
                       "bounded runs and fib_run_join need one worker"),
          T(select_default_ready_closed_timeout_and_misuse),
          T(select_over_many_cases_waits_and_cleans_up),
          T(select_send_case_completed_by_a_receiver),
          T(select_cancelled_while_waiting),
          T(select_chooses_uniformly_among_ready_cases),
          T(stress_thousands_of_fibers),
          T_ONE_WORKER(a_pipeline_of_migratable_fibers_across_workers,
                       "makes its own runtimes of 2 and 4 workers"),
          T_ONE_WORKER(idle_workers_do_not_split_a_pipeline,
                       "makes its own runtimes of 2 and 4 workers"),
          T_ONE_WORKER(a_crowded_shared_channel_delivers_every_value_once,
                       "makes its own runtimes of 2 and 4 workers"),
          T_ONE_WORKER(idle_workers_take_consumers_of_long_jobs,
                       "makes its own runtimes of 2 and 4 workers"),
          T_ONE_WORKER(misuse_gets_error_codes,
                       "makes no runtime"),
          T_ONE_WORKER(init_fails_cleanly_under_malloc_failure,
                       "makes no runtime"), T(nothing_leaks))
