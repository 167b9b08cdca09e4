/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c -- producer / consumer: a producer sends the numbers 1..10
 * through a small buffered channel to a squarer, which sends the squares
 * through an unbuffered one to a printer. Closing a channel ends the stage
 * after it: each stage drains what it was given, then stops.
 */
#include <fibers.h>

#include <stdio.h>
#include <stdlib.h>

static fib_chan numbers, squares;

static void *produce(void *arg) {
  (void)arg;
  for (long i = 1; i <= 10; i++)
    if (fib_chan_send(&numbers, &i) != 0)
      break;
  fib_chan_close(&numbers);
  return NULL;
}

static void *square(void *arg) {
  (void)arg;
  long v;
  while (fib_chan_recv(&numbers, &v) == 0) {
    long sq = v * v;
    if (fib_chan_send(&squares, &sq) != 0)
      break;
  }
  fib_chan_close(&squares); /* the numbers are used up (FIB_EPIPE) */
  return NULL;
}

static void *print(void *arg) {
  (void)arg;
  long v, sum = 0;
  while (fib_chan_recv(&squares, &v) == 0) {
    printf("square %ld\n", v);
    sum += v;
  }
  printf("sum of squares: %ld\n", sum);
  return NULL;
}

int main(void) {
  fib_runtime *rt;
  int err = fib_chan_init(&numbers, sizeof(long), 4);
  if (!err)
    err = fib_chan_init(&squares, sizeof(long), 0);
  if (!err)
    err = fib_runtime_create(&rt, NULL);
  fib_fn stages[] = {produce, square, print};
  for (int i = 0; i < 3 && !err; i++)
    err = fib_spawn(rt, stages[i], NULL, NULL, NULL);
  if (!err)
    err = fib_run(rt);
  if (err) {
    fprintf(stderr, "pipeline: %s\n", fib_strerror(err));
    return EXIT_FAILURE;
  }
  fib_runtime_destroy(rt);
  fib_chan_destroy(&numbers);
  fib_chan_destroy(&squares);
  return EXIT_SUCCESS;
}
