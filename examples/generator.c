/* SPDX-License-Identifier: MIT */
/*
 * generator.c -- a generator on the coroutine layer, no scheduler: the
 * coroutine yields the Fibonacci numbers one by one; the caller tells it
 * when to stop by resuming it with a non-NULL value.
 */
#include <fibers.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *fibonacci(void *arg, void *first) {
  (void)arg;
  (void)first;
  uint64_t a = 0, b = 1;
  void *stop = NULL;
  while (!stop) {
    fib_coro_yield(&a, &stop); /* hand out a pointer to the current value */
    uint64_t next = a + b;
    a = b;
    b = next;
  }
  return NULL;
}

int main(int argc, char **argv) {
  int count = argc > 1 ? atoi(argv[1]) : 15;
  fib_coro *gen;
  int err = fib_coro_create(&gen, fibonacci, NULL, NULL);
  if (err) {
    fprintf(stderr, "generator: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  void *value;
  for (int i = 0; i < count; i++) {
    fib_coro_resume(gen, NULL, &value);
    printf("%s%llu", i ? " " : "", (unsigned long long)*(uint64_t *)value);
  }
  printf("\n");
  int stop = 1;
  fib_coro_resume(gen, &stop, &value); /* let it return */
  printf("status after stop: %s\n",
         fib_coro_status(gen) == FIB_CORO_DEAD ? "dead" : "alive");
  fib_coro_destroy(gen);
  return EXIT_SUCCESS;
}
