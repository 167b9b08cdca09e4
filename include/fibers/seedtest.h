/* SPDX-License-Identifier: MIT */
/*
 * fibers/seedtest.h -- run a test over many seeds of the seeded test mode
 * (FIB_SEEDED, see "The seeded test mode" in fibers.h) and report the first
 * seed that fails, with the line that replays it.
 *
 * Header-only, for test programs (it prints its report; the library itself
 * never does). Each seed runs in a child process of its own by default, so
 * a crash, an abort or a hang ends that seed, not the search:
 *
 *   static int transfer_test(void *arg) {   // the first fiber of the run
 *     ...spawn fibers, join them...
 *     return balance_ok ? 0 : 1;            // 0: passed
 *   }
 *   int main(int argc, char **argv) {
 *     fib_seedtest_opts o = {.seeds = 1000, .flags = FIB_SEED_PREEMPT,
 *                            .program = argv[0]};
 *     uint64_t bad;
 *     return fib_seedtest("transfer", transfer_test, NULL, &o, &bad) ? 1 : 0;
 *   }
 *
 * A failing seed is reported as
 *   seedtest transfer: seed 17 FAILED: the test returned 1
 *   seedtest transfer: replay: FIBERS_SEED=17 ./transfer_test
 * and running that line runs seed 17 alone, in the process itself (no
 * child: a debugger follows it), with the same interleaving.
 *
 * A seed fails when the test function returns non-zero, when the run ends
 * with an error (fib_run's FIB_EDEADLK: fibers left waiting for each other
 * is a failure too), when the child dies of a signal (an abort, a crash:
 * the library's fatal messages name the seed as well), or when it takes
 * longer than timeout_s seconds of real time.
 *
 * It uses POSIX (fork, pipe, waitpid, alarm, clock_gettime): compile with
 * _POSIX_C_SOURCE >= 200809L (or _GNU_SOURCE, or -std=gnu11) defined.
 */
#ifndef FIBERS_SEEDTEST_H
#define FIBERS_SEEDTEST_H

#include <fibers.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The test: the first fiber of a seeded runtime. 0: passed. */
typedef int (*fib_seedtest_fn)(void *arg);

typedef struct fib_seedtest_opts {
  uint64_t first_seed; /* the first seed tried (seeds are consecutive) */
  uint64_t seeds;      /* how many to try; 0: 100 */
  double seconds;      /* stop trying new seeds after this much real
                          time; 0: no limit but `seeds` */
  unsigned flags;      /* more fib_runtime_opts.flags: FIB_SEED_PREEMPT,
                          FIB_SHARED_FP (FIB_SEEDED is implied) */
  unsigned workers;    /* fib_runtime_opts.workers: logical workers */
  size_t stack_size;   /* fib_runtime_opts.stack_size; 0: the default */
  unsigned timeout_s;  /* real seconds a seed may take; 0: 60 */
  int in_process;      /* 1: run the seeds in this process, one after the
                          other (faster; a crash ends the search) */
  int quiet;           /* 1: report failures only */
  const char *program; /* argv[0], for the replay line; NULL: "<program>" */
  FILE *report;        /* where to report; NULL: stderr */
} fib_seedtest_opts;

/* What a seeded run passes to its first fiber (internal). */
struct fib_seedtest_call {
  fib_seedtest_fn fn;
  void *arg;
  int result;
};

/* The first fiber of a seeded run (internal). */
static inline void *fib_seedtest_fiber(void *p) {
  struct fib_seedtest_call *c = (struct fib_seedtest_call *)p;
  c->result = c->fn(c->arg);
  return NULL;
}

/* One seeded run of fn in this process: 0 if it passed, else 1 and what
 * went wrong in why (a line), or a negative error code from the library
 * (the runtime could not be made: nothing ran). */
static inline int fib_seedtest_once(fib_seedtest_fn fn, void *arg,
                                    const fib_seedtest_opts *o, uint64_t seed,
                                    char *why, size_t why_len) {
  fib_runtime_opts ro;
  memset(&ro, 0, sizeof ro);
  ro.flags = FIB_SEEDED | (o ? o->flags : 0u);
  ro.seed = seed;
  ro.workers = o ? o->workers : 0u;
  ro.stack_size = o ? o->stack_size : 0u;
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, &ro);
  if (err)
    return err;
  struct fib_seedtest_call call = {fn, arg, -1};
  err = fib_spawn(rt, fib_seedtest_fiber, &call, NULL, NULL);
  int ran = err ? err : fib_run(rt);
  fib_runtime_destroy(rt);
  if (err)
    return err;
  if (ran) {
    snprintf(why, why_len, "the run ended with %s (%s)", fib_err_name(ran),
             fib_strerror(ran));
    return 1;
  }
  if (call.result) {
    snprintf(why, why_len, "the test returned %d", call.result);
    return 1;
  }
  return 0;
}

/* Exit statuses of a seed's child, besides 0 (passed). */
#define FIB_SEEDTEST_FAILED 1  /* see the child's own line on stderr */
#define FIB_SEEDTEST_NORUN 125 /* the runtime could not be made */

/* Run one seed in a child process: as fib_seedtest_once. */
static inline int fib_seedtest_child(fib_seedtest_fn fn, void *arg,
                                     const fib_seedtest_opts *o,
                                     uint64_t seed, char *why,
                                     size_t why_len) {
  int pipefd[2];
  if (pipe(pipefd) != 0)
    return FIB_ENOMEM;
  fflush(NULL); /* nothing buffered is written twice */
  pid_t pid = fork();
  if (pid < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return FIB_ENOMEM;
  }
  if (pid == 0) {
    close(pipefd[0]);
    signal(SIGALRM, SIG_DFL); /* the time limit kills the child */
    alarm(o && o->timeout_s ? o->timeout_s : 60u);
    char line[160] = "";
    int r = fib_seedtest_once(fn, arg, o, seed, line, sizeof line);
    if (r > 0) /* the parent reports it */
      (void)!write(pipefd[1], line, strlen(line));
    _exit(r < 0 ? FIB_SEEDTEST_NORUN : r ? FIB_SEEDTEST_FAILED : 0);
  }
  close(pipefd[1]);
  size_t got = 0;
  ssize_t n;
  while (got + 1 < why_len &&
         (n = read(pipefd[0], why + got, why_len - 1 - got)) > 0)
    got += (size_t)n;
  if (why_len)
    why[got] = 0;
  close(pipefd[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    ;
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == 0)
      return 0;
    if (WEXITSTATUS(status) == FIB_SEEDTEST_NORUN)
      return FIB_ENOMEM;
    if (!got)
      snprintf(why, why_len, "the test process exited with status %d",
               WEXITSTATUS(status));
    return 1;
  }
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  if (sig == SIGALRM)
    snprintf(why, why_len, "it took more than %u s", o && o->timeout_s
                                                         ? o->timeout_s
                                                         : 60u);
  else
    snprintf(why, why_len, "the test process died of signal %d%s", sig,
             sig == SIGABRT   ? " (SIGABRT: an abort)"
             : sig == SIGSEGV ? " (SIGSEGV: a bad memory access)"
             : sig == SIGBUS  ? " (SIGBUS: a bad memory access)"
                              : "");
  return 1;
}

static inline double fib_seedtest_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Run fn as the first fiber of a seeded runtime, once per seed, from
 * o->first_seed on, until one fails or o->seeds (or o->seconds) run out.
 * With FIBERS_SEED set in the environment, run that seed alone, in this
 * process (the replay).
 * Returns 0 if every seed tried passed, 1 if one failed (its seed in
 * *failing_seed, if not NULL), or a negative error code (the runtime
 * could not be made, or no child process). o may be NULL.
 */
static inline int fib_seedtest(const char *name, fib_seedtest_fn fn,
                               void *arg, const fib_seedtest_opts *o,
                               uint64_t *failing_seed) {
  FILE *out = o && o->report ? o->report : stderr;
  const char *prog = o && o->program ? o->program : "<program>";
  char why[160];
  const char *env = getenv("FIBERS_SEED");
  if (env) { /* the replay: the runtime takes the seed from the variable */
    uint64_t seed = strtoull(env, NULL, 0);
    int r = fib_seedtest_once(fn, arg, o, seed, why, sizeof why);
    if (r < 0)
      fprintf(out, "seedtest %s: seed %s: no run: %s\n", name, env,
              fib_strerror(r));
    else
      fprintf(out, "seedtest %s: replayed seed %s: %s%s\n", name, env,
              r ? "FAILED: " : "passed", r ? why : "");
    if (r > 0 && failing_seed)
      *failing_seed = seed;
    return r;
  }
  uint64_t first = o ? o->first_seed : 0u;
  uint64_t count = o && o->seeds ? o->seeds : 100u;
  double budget = o ? o->seconds : 0.0;
  double start = fib_seedtest_clock();
  uint64_t tried = 0;
  for (; tried < count; tried++) {
    if (budget > 0 && tried && fib_seedtest_clock() - start >= budget)
      break;
    uint64_t seed = first + tried;
    int r = o && o->in_process
                ? fib_seedtest_once(fn, arg, o, seed, why, sizeof why)
                : fib_seedtest_child(fn, arg, o, seed, why, sizeof why);
    if (r < 0) {
      fprintf(out, "seedtest %s: seed %llu: no run: %s\n", name,
              (unsigned long long)seed, fib_strerror(r));
      return r;
    }
    if (r) {
      unsigned flags = o ? o->flags : 0u;
      fprintf(out, "seedtest %s: seed %llu FAILED: %s\n", name,
              (unsigned long long)seed, why);
      fprintf(out, "seedtest %s: replay: FIBERS_SEED=%llu%s %s\n", name,
              (unsigned long long)seed,
              flags & FIB_SEED_PREEMPT ? " FIBERS_SEED_PREEMPT=1" : "", prog);
      if (failing_seed)
        *failing_seed = seed;
      return 1;
    }
  }
  if (!(o && o->quiet))
    fprintf(out, "seedtest %s: %llu seeds passed (%llu to %llu)\n", name,
            (unsigned long long)tried, (unsigned long long)first,
            (unsigned long long)(first + tried - 1));
  return 0;
}

#endif
