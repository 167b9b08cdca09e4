/*
 * harness.h -- the test harness: checks that print both sides and survive
 * NDEBUG, each case in its own child process, one case runnable by name.
 *
 *   TEST(name) { CHECK(...); CHECK_EQ(a, b); }
 *   TEST_MAIN(T(name), T(other))
 *
 * `./test_x` runs every case, each in a forked child (a crash fails that
 * case only), and ends with "N passed, N failed". `./test_x name` runs one
 * case in-process, for a debugger.
 *
 * FIB_TEST_SCALE (a number, default 1) scales stress sizes through
 * scaled(): valgrind, sanitizer and qemu runs set it below 1. Sizes never
 * drop below 1, so no test skips itself.
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
#include <unistd.h>

#define HARNESS_UNUSED __attribute__((unused))

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

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      check_failed(__FILE__, __LINE__, "%s", #cond);                           \
  } while (0)

#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
    if (check_a_ != check_b_)                                                  \
      check_failed(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b,      \
                   check_a_, check_b_);                                        \
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
};

#define TEST(name) static void name(void)
#define T(name) {#name, name}

HARNESS_UNUSED static int run_tests(const struct test_case *cases, size_t n,
                                    int argc, char **argv) {
  if (argc > 1) {
    for (size_t i = 0; i < n; i++)
      if (strcmp(cases[i].name, argv[1]) == 0) {
        cases[i].fn();
        printf("ok %s\n", cases[i].name);
        return 0;
      }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  int passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      cases[i].fn();
      fflush(NULL);
      _exit(0);
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
    int ok = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok) {
      passed++;
      printf("ok %zu %s\n", i + 1, cases[i].name);
    } else {
      failed++;
      if (pid > 0 && WIFSIGNALED(status))
        printf("not ok %zu %s (signal %d)\n", i + 1, cases[i].name,
               WTERMSIG(status));
      else
        printf("not ok %zu %s (exit %d)\n", i + 1, cases[i].name,
               pid > 0 ? WEXITSTATUS(status) : -1);
    }
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

#define TEST_MAIN(...)                                                         \
  int main(int argc, char **argv) {                                            \
    static const struct test_case cases[] = {__VA_ARGS__};                     \
    return run_tests(cases, sizeof cases / sizeof cases[0], argc, argv);       \
  }

#endif
