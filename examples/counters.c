/* SPDX-License-Identifier: MIT */
/*
 * counters.c -- the example the project began from: two fibers count to
 * nine, each giving way to the other after every line.
 */
#include <fibers.h>

#include <stdio.h>
#include <stdlib.h>

static void *count(void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++) {
    printf("thread : %llu counter : %d\n", (unsigned long long)fib_self(), i);
    fib_yield();
  }
  return NULL;
}

int main(void) {
  fib_runtime *rt;
  int err = fib_runtime_create(&rt, NULL);
  if (err == 0)
    err = fib_spawn(rt, count, NULL, NULL, NULL);
  if (err == 0)
    err = fib_spawn(rt, count, NULL, NULL, NULL);
  if (err == 0)
    err = fib_run(rt);
  if (err != 0) {
    fprintf(stderr, "counters: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  return EXIT_SUCCESS;
}
