/* SPDX-License-Identifier: MIT */
/* test_migrate_lto.c -- the library's thread-locals under migration, with
 * the library's own sources compiled into this program with -flto -O2
 * (tests/lto/lto.cmake), so that its calls are inlined into the fibers
 * below and the optimiser may keep, across a switch, whatever thread
 * pointer or thread-local address it computed before. Fibers move to
 * another worker at every turn (FIBERS_FORCE_MIGRATE=1, set here) while
 * they yield, sleep, lock, send, receive and join; after each of those
 * the library must answer for the thread it runs on now: fib_self,
 * fib_self_name, fib_self_stack, fib_runtime_current, fib_coro_current.
 * The fibers' own reads of errno and of a _Thread_local go through
 * out-of-line accessors (the rule in fibers.h, FIB_MIGRATABLE) and must
 * name the current thread's. The same reads made directly, as plain code
 * would, are counted when they are stale and reported (not failed): that
 * is the hazard the rule is about, and whether it shows depends on the
 * compiler. */
#include "../harness.h"

#include <fibers.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

static _Thread_local int tls_var;

/* Out of line, and neither const nor pure to the optimiser: each call
 * computes the address in its own body, on the thread it runs on. */
__attribute__((noinline)) static int *errno_now(void) {
  int *p = &errno;
  __asm__ volatile("" : "+r"(p));
  return p;
}
__attribute__((noinline)) static int *tls_now(void) {
  int *p = &tls_var;
  __asm__ volatile("" : "+r"(p));
  return p;
}
__attribute__((noinline)) static pthread_t thread_now(void) {
  pthread_t t = pthread_self();
  __asm__ volatile("" : "+r"(t));
  return t;
}

/* Each thread's addresses, learnt the first time a fiber runs there. */
#define THREADS 8
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  pthread_t thread;
  int *errno_addr, *tls_addr;
} reg[THREADS];
static int reg_count;

/* The current thread's entry, made if need be; every read afresh. */
static int registered(void) {
  pthread_t me = thread_now();
  pthread_mutex_lock(&reg_lock);
  int i = 0;
  while (i < reg_count && !pthread_equal(reg[i].thread, me))
    i++;
  if (i == reg_count) {
    CHECK(reg_count < THREADS);
    reg[i].thread = me;
    reg[i].errno_addr = errno_now();
    reg[i].tls_addr = tls_now();
    reg_count++;
  }
  pthread_mutex_unlock(&reg_lock);
  return i;
}

static fib_runtime *the_rt;
static fib_mutex mutex;
static fib_chan chan;
static uint64_t counter, stale_errno, stale_tls, direct_reads;

#define STEPS 120

static void *leaf(void *arg) { return arg; }

/* After each switch: the library answers for this thread. */
static void check_library(fib_id id, const char *name) {
  CHECK_EQ(fib_self(), id);
  CHECK_STR_EQ(fib_self_name(), name);
  CHECK_PTR_EQ(fib_runtime_current(), the_rt);
  CHECK_PTR_EQ(fib_coro_current(), NULL);
  fib_stack_info info;
  CHECK_OK(fib_self_stack(&info));
  char here;
  CHECK((char *)info.lo <= &here && &here < (char *)info.hi);
}

struct mover_arg {
  const char *name;
  int sends; /* on channel steps: sends (else receives) */
};

static void *mover(void *arg) {
  const struct mover_arg *a = arg;
  const char *name = a->name;
  fib_id id = fib_self();
  int threads_seen = 0, last = -1;
  for (int step = 0; step < STEPS; step++) {
    /* Plain code's way: the addresses taken directly, before the switch */
    int *e_before = &errno;
    int *t_before = &tls_var;
    errno = step;
    tls_var = step;
    int kind = step % 5;
    if (kind == 0) {
      CHECK_OK(fib_yield());
    } else if (kind == 1) {
      CHECK_OK(fib_sleep_ns(50000));
    } else if (kind == 2) {
      CHECK_OK(fib_mutex_lock(&mutex));
      uint64_t v = counter;
      CHECK_OK(fib_yield());
      counter = v + 1;
      CHECK_OK(fib_mutex_unlock(&mutex));
    } else if (kind == 3) {
      uint64_t v = (uint64_t)step;
      if (a->sends)
        CHECK_OK(fib_chan_send(&chan, &v));
      else
        CHECK_OK(fib_chan_recv(&chan, &v));
    } else {
      fib_id kid;
      CHECK_OK(fib_spawn(NULL, leaf, (void *)(uintptr_t)step, NULL, &kid));
      void *r;
      CHECK_OK(fib_join(kid, &r));
      CHECK_EQ((uintptr_t)r, (uintptr_t)step);
    }
    check_library(id, name);
    int me = registered();
    CHECK_PTR_EQ(errno_now(), reg[me].errno_addr);
    CHECK_PTR_EQ(tls_now(), reg[me].tls_addr);
    /* The same, directly: the compiler may reuse the addresses from
     * before the switch (counted, not failed). */
    __atomic_add_fetch(&direct_reads, 1, __ATOMIC_RELAXED);
    if (&errno != reg[me].errno_addr)
      __atomic_add_fetch(&stale_errno, 1, __ATOMIC_RELAXED);
    if (&tls_var != reg[me].tls_addr)
      __atomic_add_fetch(&stale_tls, 1, __ATOMIC_RELAXED);
    (void)e_before;
    (void)t_before;
    if (me != last)
      threads_seen++;
    last = me;
  }
  CHECK(threads_seen >= 2); /* it really moved */
  return NULL;
}

/* Movers in pairs: on a channel step one sends, the other receives. */
static void *root(void *arg) {
  (void)arg;
  CHECK_OK(fib_mutex_init(&mutex));
  CHECK_OK(fib_chan_init(&chan, sizeof(uint64_t), 0));
  static const char *names[4] = {"mover-a", "mover-b", "mover-c", "mover-d"};
  static struct mover_arg args[4];
  fib_id ids[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct mover_arg){names[i], i % 2};
    fib_attr attr = {0};
    attr.name = names[i];
    CHECK_OK(fib_spawn(NULL, mover, &args[i], &attr, &ids[i]));
  }
  for (int i = 0; i < 4; i++)
    CHECK_OK(fib_join(ids[i], NULL));
  CHECK_OK(fib_mutex_destroy(&mutex));
  CHECK_OK(fib_chan_destroy(&chan));
  return NULL;
}

static void run_on(unsigned workers) {
#if !defined(__x86_64__)
  /* Seen under qemu on aarch64: after a move, an inlined fib_sleep_ns
   * found the old thread's runtime (FIB_EPERM), the thread pointer read
   * once for the whole function. docs/internals.md, the TLS rule. */
  SKIP("LTO of the library into a program whose fibers migrate is not "
       "supported on this architecture: the compiler reuses a thread-pointer "
       "read across the inlined library calls");
#endif
  const char *tool = getenv("FIB_TEST_TOOL");
  if (tool && strncmp(tool, "tsan", 4) == 0)
    SKIP("the movers write errno and a _Thread_local through addresses the "
         "optimiser keeps from before a switch, on purpose (the hazard this "
         "counts): ThreadSanitizer reports them as the races they are");
  CHECK_EQ(setenv("FIBERS_FORCE_MIGRATE", "1", 1), 0);
  counter = stale_errno = stale_tls = direct_reads = 0;
  fib_runtime_opts opts = {0};
  opts.workers = workers;
  CHECK_OK(fib_runtime_create(&the_rt, &opts));
  CHECK_OK(fib_spawn(the_rt, root, NULL, NULL, NULL));
  CHECK_OK(fib_run(the_rt));
  CHECK_OK(fib_runtime_destroy(the_rt));
  CHECK_EQ(counter, 4u * (STEPS / 5));
  CHECK(reg_count >= 2);
  printf("migrate_lto: %u workers: direct reads after a switch, stale: "
         "&errno %llu, &tls %llu of %llu\n",
         workers, (unsigned long long)stale_errno,
         (unsigned long long)stale_tls, (unsigned long long)direct_reads);
}

TEST(library_answers_for_the_current_thread_on_2_workers) { run_on(2); }
TEST(library_answers_for_the_current_thread_on_4_workers) { run_on(4); }

TEST_MAIN(T(library_answers_for_the_current_thread_on_2_workers),
          T(library_answers_for_the_current_thread_on_4_workers))
