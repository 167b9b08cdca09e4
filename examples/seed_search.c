/* SPDX-License-Identifier: MIT */
/*
 * seed_search.c -- the seeded test mode finds a lost update that the usual
 * order never shows, and replays it.
 *
 * Two clerks withdraw 80 from an account of 100. Each checks the balance,
 * writes an audit line (through a mutex: a call that may wait), then takes
 * the money. Check, then act, with a possible switch in between: if the
 * other clerk runs in that gap, both see 100 and the account ends at -60.
 * In the usual order nothing ever gives way at that uncontended lock, so
 * the bug hides; the seeded mode with preemption points (FIB_SEED_PREEMPT)
 * may switch there, and fib_seedtest tries seeds until one does.
 *
 *   ./seed_search                  search, report the seed, replay it twice
 *   FIBERS_SEED=<n> ./seed_search  run that seed alone (what the report
 *                                  says to type); add gdb to follow it
 *
 * Exits 0 when the bug was found and its replays took the same steps.
 */
#define _POSIX_C_SOURCE 200809L /* fibers/seedtest.h: fork, clock_gettime */

#include <fibers.h>
#include <fibers/seedtest.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ the code under test */

static int balance;
static fib_mutex audit_lock;

/* What each clerk did, in order: the interleaving, to show the replays
 * took the same steps. */
static char steps[64];
static size_t nsteps;

static void step(char c) {
  if (nsteps + 1 < sizeof steps)
    steps[nsteps++] = c;
  steps[nsteps] = 0;
}

static void audit(const char *who) {
  fib_mutex_lock(&audit_lock);
  step(who[0]); /* stands for a log write */
  fib_mutex_unlock(&audit_lock);
}

static void *clerk(void *arg) {
  const char *who = arg; /* "A" or "B" */
  step((char)(who[0] + 32)); /* 'a' or 'b': checks */
  if (balance >= 80) {
    audit(who);
    balance -= 80; /* the act, on a check that may be stale */
    step('$');
  }
  return NULL;
}

/* The test: 0 if the account is never overdrawn. */
static int two_clerks(void *arg) {
  (void)arg;
  balance = 100;
  nsteps = 0;
  fib_mutex_init(&audit_lock);
  fib_id a, b;
  fib_spawn(NULL, clerk, "A", NULL, &a);
  fib_spawn(NULL, clerk, "B", NULL, &b);
  fib_join(a, NULL);
  fib_join(b, NULL);
  fib_mutex_destroy(&audit_lock);
  return balance < 0;
}

/* ------------------------------------------------------------ the search */

static int result;

static void *run_two_clerks(void *arg) {
  result = two_clerks(arg);
  return NULL;
}

/* The test in the usual order (no seed): 0 if it passed, 1 if not. */
static int usual_order(void) {
  fib_runtime *rt;
  if (fib_runtime_create(&rt, NULL) != 0 ||
      fib_spawn(rt, run_two_clerks, NULL, NULL, NULL) != 0 ||
      fib_run(rt) != 0)
    exit(EXIT_FAILURE);
  fib_runtime_destroy(rt);
  return result;
}

int main(int argc, char **argv) {
  (void)argc;
  fib_seedtest_opts opts = {0};
  opts.seeds = 1000;
  opts.flags = FIB_SEED_PREEMPT;
  opts.program = argv[0];
  opts.report = stdout;
  uint64_t seed;

  if (getenv("FIBERS_SEED")) { /* the replay line of a report */
    int r = fib_seedtest("two_clerks", two_clerks, NULL, &opts, &seed);
    printf("steps: %s  balance: %d\n", steps, balance);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
  }

  /* 1. The usual order, many times: never overdrawn. */
  int failures = 0;
  for (int i = 0; i < 1000; i++)
    failures += usual_order();
  printf("usual order, 1000 runs: %d overdrawn (steps: %s)\n", failures,
         steps);

  /* 2. The search: each seed in a child process; the first that fails is
   *    reported with the line that replays it. */
  if (fib_seedtest("two_clerks", two_clerks, NULL, &opts, &seed) != 1) {
    printf("the search did not find the bug\n");
    return EXIT_FAILURE;
  }

  /* 3. The replay, twice, in this process: the same steps each time. */
  char first[sizeof steps], why[160];
  int r1 = fib_seedtest_once(two_clerks, NULL, &opts, seed, why, sizeof why);
  strcpy(first, steps);
  int b1 = balance;
  int r2 = fib_seedtest_once(two_clerks, NULL, &opts, seed, why, sizeof why);
  printf("replay 1: steps %s, balance %d\n", first, b1);
  printf("replay 2: steps %s, balance %d\n", steps, balance);
  int same = r1 == 1 && r2 == 1 && strcmp(first, steps) == 0 && b1 == balance;
  printf(same ? "the same interleaving, both times\n" : "the replays differ\n");
  return failures == 0 && same ? EXIT_SUCCESS : EXIT_FAILURE;
}
