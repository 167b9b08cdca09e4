/* SPDX-License-Identifier: MIT */
/*
 * bench_common.h -- helpers shared by the C and C++ benchmark programs:
 * a monotonic clock, resident-memory readings from /proc, and the one
 * machine-readable result line the driver (bench/run.py) parses:
 *
 *   BENCH {"bench": "switch", "impl": "fibers", "value": 7.1, "unit": "ns",
 *          "n": 1000000, "note": "..."}
 *
 * Every program takes the same arguments: <bench> <n>, and exits non-zero
 * (printing no BENCH line) when it cannot run that benchmark at all.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Resident bytes of the whole process, from /proc/self/statm. */
static inline long bench_rss_bytes(void) {
  long pages_total = 0, pages_res = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  if (fscanf(f, "%ld %ld", &pages_total, &pages_res) != 2)
    pages_res = -1;
  fclose(f);
  return pages_res < 0 ? -1 : pages_res * sysconf(_SC_PAGESIZE);
}

/* A "Vm...:" field of /proc/self/status, in bytes (-1 if absent). */
static inline long bench_status_bytes(const char *field) {
  char line[256];
  size_t len = strlen(field);
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, len) == 0 && line[len] == ':') {
      kb = strtol(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

/* Print the result line; note may be NULL. */
static inline void bench_report(const char *bench, const char *impl,
                                double value, const char *unit, long n,
                                const char *note) {
  printf("BENCH {\"bench\": \"%s\", \"impl\": \"%s\", \"value\": %.6g, "
         "\"unit\": \"%s\", \"n\": %ld",
         bench, impl, value, unit, n);
  if (note && *note) {
    fputs(", \"note\": \"", stdout);
    for (const char *p = note; *p; p++) {
      if (*p == '"' || *p == '\\')
        putchar('\\');
      putchar(*p);
    }
    putchar('"');
  }
  puts("}");
  fflush(stdout);
}

/* Touch `len` bytes of the caller's stack so they are committed; the
 * asm barrier keeps the compiler from dropping the stores. */
#define BENCH_TOUCH_STACK(len)                                               \
  do {                                                                       \
    volatile char bench_buf_[len];                                           \
    for (size_t bench_i_ = 0; bench_i_ < (size_t)(len); bench_i_ += 64)      \
      bench_buf_[bench_i_] = (char)bench_i_;                                 \
    bench_buf_[(len) - 1] = 1;                                               \
    __asm__ volatile("" : : "r"(bench_buf_) : "memory");                     \
  } while (0)

static inline void bench_usage(const char *prog, const char *benches) {
  fprintf(stderr, "usage: %s <bench> <n>\n  benches: %s\n", prog, benches);
}

/* The command line every benchmark program takes, `<bench> <n>` with n a
 * positive count: the bench's name, and n in *n; NULL after printing the
 * usage (the program then exits 2). Whether the name is one of `benches`
 * is the caller's dispatch to find out. */
static inline const char *bench_args(int argc, char **argv,
                                     const char *benches, long *n) {
  if (argc == 3 && (*n = strtol(argv[2], NULL, 10)) > 0)
    return argv[1];
  bench_usage(argv[0], benches);
  return NULL;
}

#endif
