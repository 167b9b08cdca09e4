/* SPDX-License-Identifier: MIT */
/*
 * harness.h -- the test harness: checks that print both sides and survive
 * NDEBUG, each case in its own process with a time limit, a real skip.
 *
 *   TEST(name) { CHECK(...); CHECK_EQ(a, b); if (...) SKIP("why"); }
 *   TEST_MAIN(T(name), T_TIMEOUT(slow_one, 600), T(other),
 *             T_ONE_WORKER(ordered, "checks one thread's exact order"))
 *
 * `./test_x` runs every case, each in a forked child (a crash or a hang
 * fails that case only), and ends with "N passed, N skipped, N failed".
 * `./test_x name` runs one case in-process, for a debugger (the time limit
 * is then an alarm, off while a debugger is attached). `./test_x --list`
 * prints the case names, one a line: tests/CMakeLists.txt makes each case
 * a CTest test of its own, named <area>.<case> (sched.cancel_rules).
 *
 * Exit codes: 0 passed, 1 a case failed, 2 no such case, HARNESS_SKIP_CODE
 * (77) when every case that ran was skipped (CTest's SKIP_RETURN_CODE).
 *
 * Environment:
 *   FIB_TEST_SCALE    (default 1) scales stress sizes through scaled():
 *                     valgrind, sanitizer and qemu runs set it below 1.
 *                     Sizes never drop below 1.
 *   FIB_TEST_TIMEOUT  (default 1) multiplies every case's time limit
 *                     (HARNESS_TIMEOUT_S unless T_TIMEOUT gives one):
 *                     slow tools set it above 1; 0 means no limit.
 *   FIB_TEST_WORKERS  (default 1) how many workers the runtimes that the
 *                     tests make through fiber_helpers.h's new_runtime()
 *                     have (fib_runtime_opts.workers); tests/CMakeLists.txt
 *                     registers the cases of some suites again with 2 and
 *                     4 (<area>.<case>@w2, @w4). A case marked
 *                     T_ONE_WORKER(name, "why") makes sense with one
 *                     worker only: CMake registers no copy of it, and run
 *                     by hand with FIB_TEST_WORKERS above 1 it is skipped,
 *                     saying why.
 */
#ifndef FIB__TEST_HARNESS_H
#define FIB__TEST_HARNESS_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_UNUSED __attribute__((unused))

/* The automake convention, which CTest is told (SKIP_RETURN_CODE). */
#define HARNESS_SKIP_CODE 77
/* A case's time limit in seconds, before FIB_TEST_TIMEOUT scales it. */
#define HARNESS_TIMEOUT_S 60

HARNESS_UNUSED static void check_failed(const char *file, int line,
                                        const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: check failed: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(NULL);
  abort();
}

/* Ends the running case as skipped, saying why. _exit, not exit: a case
 * that gives up halfway may hold memory that LeakSanitizer would report. */
__attribute__((noreturn, format(printf, 1, 2))) HARNESS_UNUSED static void
harness_skip(const char *fmt, ...) {
  va_list ap;
  printf("skip: ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(NULL);
  _exit(HARNESS_SKIP_CODE);
}
#define SKIP(...) harness_skip(__VA_ARGS__)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      check_failed(__FILE__, __LINE__, "%s", #cond);                           \
  } while (0)

/* An integer of any type, kept with its signedness, so that a uint64_t
 * above INT64_MAX prints as itself and never equals a negative number. */
struct harness_int {
  unsigned long long bits;
  int is_signed;
};
#define HARNESS_INT(x)                                                         \
  ((struct harness_int){(unsigned long long)(x),                               \
                        _Generic((x) + 0, unsigned int: 0, unsigned long: 0,   \
                                 unsigned long long: 0, default: 1)})

HARNESS_UNUSED static int harness_int_eq(struct harness_int a,
                                         struct harness_int b) {
  if (a.is_signed != b.is_signed) { /* then the signed one must be >= 0 */
    struct harness_int s = a.is_signed ? a : b;
    if ((long long)s.bits < 0)
      return 0;
  }
  return a.bits == b.bits;
}

HARNESS_UNUSED static void harness_int_text(char *buf, size_t size,
                                            struct harness_int v) {
  if (v.is_signed)
    snprintf(buf, size, "%lld", (long long)v.bits);
  else
    snprintf(buf, size, "%llu", v.bits);
}

HARNESS_UNUSED static void harness_int_failed(const char *file, int line,
                                              const char *a_text,
                                              const char *b_text,
                                              struct harness_int a,
                                              struct harness_int b) {
  char as[24], bs[24];
  harness_int_text(as, sizeof as, a);
  harness_int_text(bs, sizeof bs, b);
  check_failed(file, line, "%s == %s (%s vs %s)", a_text, b_text, as, bs);
}

#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    struct harness_int check_a_ = HARNESS_INT(a), check_b_ = HARNESS_INT(b);   \
    if (!harness_int_eq(check_a_, check_b_))                                   \
      harness_int_failed(__FILE__, __LINE__, #a, #b, check_a_, check_b_);      \
  } while (0)
#define CHECK_PTR_EQ(a, b)                                                     \
  do {                                                                         \
    const void *check_a_ = (a), *check_b_ = (b);                               \
    if (check_a_ != check_b_)                                                  \
      check_failed(__FILE__, __LINE__, "%s == %s (%p vs %p)", #a, #b,          \
                   check_a_, check_b_);                                        \
  } while (0)

#define CHECK_STR_EQ(a, b)                                                     \
  do {                                                                         \
    const char *check_a_ = (a), *check_b_ = (b);                               \
    if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0)             \
      check_failed(__FILE__, __LINE__, "%s == %s (\"%s\" vs \"%s\")", #a, #b,  \
                   check_a_ ? check_a_ : "(null)",                             \
                   check_b_ ? check_b_ : "(null)");                            \
  } while (0)

/* A library call that must succeed: prints the error's name if not. */
#define CHECK_OK(call)                                                         \
  do {                                                                         \
    int check_err_ = (call);                                                   \
    if (check_err_ != 0)                                                       \
      check_failed(__FILE__, __LINE__, "%s returned %d", #call, check_err_);   \
  } while (0)

/* FIB_TEST_WORKERS, at least 1. */
HARNESS_UNUSED static unsigned test_workers(void) {
  const char *s = getenv("FIB_TEST_WORKERS");
  long v = s ? strtol(s, NULL, 10) : 1;
  return v > 1 ? (unsigned)v : 1;
}

HARNESS_UNUSED static double test_scale(void) {
  const char *s = getenv("FIB_TEST_SCALE");
  double v = s ? atof(s) : 1.0;
  return v > 0 ? v : 1.0;
}

/* n scaled by FIB_TEST_SCALE, at least 1. */
HARNESS_UNUSED static long scaled(long n) {
  double v = (double)n * test_scale();
  return v < 1 ? 1 : (long)v;
}

/* How many mappings the process has (lines of /proc/self/maps). Under
 * ThreadSanitizer (FIB_TEST_TOOL=tsan, tests/safety.cmake) the mappings
 * TSan makes for itself (shadow, meta shadow, per-fiber state, its heap)
 * are left out: on x86-64 they are all below 0x7c0000000000, where the
 * program's own mmap()s (our stacks) and shared libraries are not. Under
 * valgrind (FIB_TEST_TOOL=valgrind) the process's maps hold valgrind's own
 * memory too, which grows as the program maps more (its heap, translation
 * cache, memcheck's shadow): all of it is mapped read-write-execute, which
 * neither the library nor the tests ever map, so "rwxp" lines are left
 * out. */
HARNESS_UNUSED static long count_mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  CHECK(f != NULL);
  const char *tool = getenv("FIB_TEST_TOOL");
  unsigned long long floor = 0;
#if defined(__x86_64__)
  if (tool && strncmp(tool, "tsan", 4) == 0)
    floor = 0x7c0000000000ull;
#endif
  int skip_rwx = tool && strncmp(tool, "valgrind", 8) == 0;
  long n = 0;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    const char *perms = strchr(line, ' ');
    if (strtoull(line, NULL, 16) >= floor && strchr(line, '\n') &&
        !(skip_rwx && perms && strncmp(perms, " rwxp ", 6) == 0))
      n++;
  }
  fclose(f);
  return n;
}

/* The process's resident memory in KiB (/proc/self/statm). */
HARNESS_UNUSED static long resident_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  CHECK(f != NULL);
  long size = 0, resident = 0;
  CHECK_EQ(fscanf(f, "%ld %ld", &size, &resident), 2);
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- child processes, for death tests */

struct child_result {
  int exited;      /* exited normally ... */
  int exit_code;   /* ... with this code */
  int signal;      /* or killed by this signal (0 if exited) */
  char err[8192];  /* what it wrote to stderr */
};

/* Under qemu-user (FIB_TEST_EMULATOR set by CTest in cross builds), a
 * child killed by SIGSEGV, SIGABRT, SIGILL... gets one more stderr line
 * from qemu itself, "qemu: uncaught target signal N (Name) - core dumped".
 * It is the emulator's, not the program's: drop exactly that last line. */
HARNESS_UNUSED static void strip_emulator_report(struct child_result *r) {
  if (!r->signal || !getenv("FIB_TEST_EMULATOR"))
    return;
  static const char prefix[] = "qemu: uncaught target signal ";
  size_t len = strlen(r->err);
  if (len == 0 || r->err[len - 1] != '\n')
    return;
  char *start = r->err + len - 1;
  while (start > r->err && start[-1] != '\n')
    start--;
  char *end = NULL;
  if (strncmp(start, prefix, sizeof prefix - 1) == 0 &&
      strtol(start + sizeof prefix - 1, &end, 10) == r->signal && end &&
      *end == ' ')
    *start = 0;
}

/* Run fn(arg) in a child with stderr captured; the child exits 0 if fn
 * returns. */
HARNESS_UNUSED static void run_child(void (*fn)(void *), void *arg,
                                     struct child_result *r) {
  int fds[2];
  memset(r, 0, sizeof *r);
  if (pipe(fds) != 0)
    check_failed(__FILE__, __LINE__, "pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    check_failed(__FILE__, __LINE__, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    fn(arg);
    fflush(NULL);
    _exit(0);
  }
  close(fds[1]);
  size_t len = 0;
  ssize_t n;
  while ((n = read(fds[0], r->err + len, sizeof r->err - 1 - len)) > 0)
    len += (size_t)n;
  r->err[len] = 0;
  close(fds[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  r->exited = WIFEXITED(status);
  r->exit_code = r->exited ? WEXITSTATUS(status) : 0;
  r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  strip_emulator_report(r);
}

/* ---- the runner */

struct test_case {
  const char *name;
  void (*fn)(void);
  unsigned timeout_s;     /* 0: HARNESS_TIMEOUT_S */
  const char *one_worker; /* why it runs with one worker only; NULL: any */
};

#define TEST(name) static void name(void)
#define T(name) {#name, name, 0, NULL}
/* A case that needs more than HARNESS_TIMEOUT_S seconds (tests/CMakeLists.txt
 * reads the number too, for CTest's own limit). */
#define T_TIMEOUT(name, seconds) {#name, name, seconds, NULL}
/* A case whose point holds with one worker only (it checks one thread's
 * exact interleaving, or calls what several workers refuse): why, in a
 * string without parentheses (tests/CMakeLists.txt reads the entry and
 * registers no N-worker copy of the case). */
#define T_ONE_WORKER(name, why) {#name, name, 0, why}

/* Run the case, or skip it if it is for one worker and more are asked. */
HARNESS_UNUSED static void harness_call(const struct test_case *c) {
  if (c->one_worker && test_workers() > 1)
    SKIP("one worker only (FIB_TEST_WORKERS=%u): %s", test_workers(),
         c->one_worker);
  c->fn();
}

HARNESS_UNUSED static double harness_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The case's limit in seconds, scaled by FIB_TEST_TIMEOUT; 0 for none. */
HARNESS_UNUSED static double harness_limit(const struct test_case *c) {
  const char *s = getenv("FIB_TEST_TIMEOUT");
  double factor = s && *s ? atof(s) : 1.0;
  if (factor <= 0)
    return 0;
  return factor * (c->timeout_s ? c->timeout_s : HARNESS_TIMEOUT_S);
}

/* A debugger attached (TracerPid in /proc/self/status): a case stopped
 * at a breakpoint must not time out. */
HARNESS_UNUSED static int harness_traced(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long pid = 0;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "TracerPid:", 10) == 0)
      pid = strtol(line + 10, NULL, 10);
  if (f)
    fclose(f);
  return pid != 0;
}

HARNESS_UNUSED static char harness_alarm_text[256];

HARNESS_UNUSED static void harness_on_alarm(int sig) {
  (void)sig;
  ssize_t n = write(STDOUT_FILENO, harness_alarm_text,
                    strlen(harness_alarm_text));
  (void)n;
  _exit(1);
}

/* One case in this process, for a debugger and for CTest. The limit is
 * an alarm, whose handler only writes a prepared line and exits. */
HARNESS_UNUSED static int harness_run_here(const struct test_case *c) {
  double limit = harness_limit(c);
  if (limit > 0 && !harness_traced()) {
    snprintf(harness_alarm_text, sizeof harness_alarm_text,
             "not ok %s (timed out after %.0f s; FIB_TEST_TIMEOUT scales "
             "the limit)\n", c->name, limit);
    signal(SIGALRM, harness_on_alarm);
    alarm((unsigned)(limit + 0.999));
  }
  harness_call(c);
  alarm(0);
  printf("ok %s\n", c->name);
  return 0;
}

/* Wait for pid at most limit seconds (0: forever); 1 if it ended. The
 * polling interval grows from 0.1 ms to 20 ms: quick cases end quickly,
 * slow ones cost little, and no signal handler is needed (SIGCHLD would
 * reach cases that fork for themselves). */
HARNESS_UNUSED static int harness_wait(pid_t pid, double start, double limit,
                                       int *status) {
  long nap_ns = 100000;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid)
      return 1;
    if (r < 0 && errno != EINTR)
      check_failed(__FILE__, __LINE__, "waitpid: %s", strerror(errno));
    if (limit > 0 && harness_now() - start >= limit)
      return 0;
    struct timespec nap = {0, nap_ns};
    nanosleep(&nap, NULL);
    if (nap_ns < 20000000)
      nap_ns *= 2;
  }
}

enum harness_outcome { HARNESS_PASSED, HARNESS_SKIPPED, HARNESS_FAILED };

/* One case in a forked child, in a process group of its own so that a
 * hang is killed with whatever it forked. */
HARNESS_UNUSED static enum harness_outcome
harness_run_child(const struct test_case *c, size_t number) {
  fflush(NULL);
  double start = harness_now(), limit = harness_limit(c);
  pid_t pid = fork();
  if (pid < 0)
    check_failed(__FILE__, __LINE__, "fork: %s", strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    harness_call(c);
    fflush(NULL);
    _exit(0);
  }
  setpgid(pid, pid); /* also here: whichever runs first */
  int status = 0;
  if (!harness_wait(pid, start, limit, &status)) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
    printf("not ok %zu %s (timed out after %.1f s, killed; "
           "FIB_TEST_TIMEOUT scales the limit)\n",
           number, c->name, harness_now() - start);
    return HARNESS_FAILED;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    printf("ok %zu %s\n", number, c->name);
    return HARNESS_PASSED;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == HARNESS_SKIP_CODE) {
    printf("skip %zu %s\n", number, c->name);
    return HARNESS_SKIPPED;
  }
  if (WIFSIGNALED(status))
    printf("not ok %zu %s (signal %d)\n", number, c->name, WTERMSIG(status));
  else
    printf("not ok %zu %s (exit %d)\n", number, c->name, WEXITSTATUS(status));
  return HARNESS_FAILED;
}

HARNESS_UNUSED static int run_tests(const struct test_case *cases, size_t n,
                                    int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < n; i++)
      printf("%s\n", cases[i].name);
    return 0;
  }
  if (argc > 1) {
    for (size_t i = 0; i < n; i++)
      if (strcmp(cases[i].name, argv[1]) == 0)
        return harness_run_here(&cases[i]);
    fprintf(stderr, "no test named %s (--list names them)\n", argv[1]);
    return 2;
  }
  int count[3] = {0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    count[harness_run_child(&cases[i], i + 1)]++;
    fflush(stdout);
  }
  printf("%d passed, %d skipped, %d failed\n", count[HARNESS_PASSED],
         count[HARNESS_SKIPPED], count[HARNESS_FAILED]);
  if (count[HARNESS_FAILED])
    return 1;
  return count[HARNESS_PASSED] ? 0 : HARNESS_SKIP_CODE;
}

#define TEST_MAIN(...)                                                         \
  int main(int argc, char **argv) {                                            \
    static const struct test_case cases[] = {__VA_ARGS__};                     \
    return run_tests(cases, sizeof cases / sizeof cases[0], argc, argv);       \
  }

#endif
