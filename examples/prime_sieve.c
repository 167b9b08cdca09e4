/* SPDX-License-Identifier: MIT */
/*
 * prime_sieve.c -- the concurrent prime sieve (as in Go's documentation,
 * after McIlroy): a generator fiber sends 2, 3, 4, ... into a chain of
 * filter fibers connected by unbuffered channels; each filter holds one
 * prime and passes on the numbers it does not divide. Prints the first N
 * primes (N from argv[1], default 20).
 *
 * Each channel is in a record that lives until the end of main, and each
 * fiber stops when the channel it reads from is closed, so the whole chain
 * winds down once the last prime is printed.
 */
#include <fibers.h>

#include <stdio.h>
#include <stdlib.h>

struct link {
  fib_chan ch;      /* numbers flow through here */
  struct link *next; /* every link, to free them at the end */
};

static struct link *links;

static fib_chan *new_channel(void) {
  struct link *l = malloc(sizeof *l);
  if (!l || fib_chan_init(&l->ch, sizeof(long), 0) != 0) {
    fprintf(stderr, "prime_sieve: out of memory\n");
    exit(EXIT_FAILURE);
  }
  l->next = links;
  links = l;
  return &l->ch;
}

static void *generate(void *arg) {
  fib_chan *out = arg;
  for (long i = 2; fib_chan_send(out, &i) == 0; i++)
    ;
  return NULL; /* out was closed: the sieve is done */
}

struct filter_arg {
  fib_chan *in, *out;
  long prime;
};

static void *filter(void *arg) {
  struct filter_arg a = *(struct filter_arg *)arg;
  free(arg);
  long v;
  while (fib_chan_recv(a.in, &v) == 0)
    if (v % a.prime != 0 && fib_chan_send(a.out, &v) != 0)
      break;
  fib_chan_close(a.in);  /* stop the stage before us ... */
  fib_chan_close(a.out); /* ... and the one after */
  return NULL;
}

static void check(int err) {
  if (err) {
    fprintf(stderr, "prime_sieve: %s\n", fib_strerror(err));
    exit(EXIT_FAILURE);
  }
}

static void *sieve(void *arg) {
  long n = *(long *)arg;
  fib_chan *ch = new_channel();
  fib_attr detached = {.flags = FIB_DETACHED};
  check(fib_spawn(NULL, generate, ch, &detached, NULL));
  for (long i = 0; i < n; i++) {
    long prime;
    check(fib_chan_recv(ch, &prime));
    printf("%ld\n", prime);
    struct filter_arg *a = malloc(sizeof *a);
    if (!a)
      check(FIB_ENOMEM);
    a->in = ch;
    a->out = new_channel();
    a->prime = prime;
    check(fib_spawn(NULL, filter, a, &detached, NULL));
    ch = a->out;
  }
  fib_chan_close(ch); /* the last filter stops, and the chain after it */
  return NULL;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20;
  if (n < 1) {
    fprintf(stderr, "usage: prime_sieve [N >= 1]\n");
    return EXIT_FAILURE;
  }
  fib_runtime *rt;
  check(fib_runtime_create(&rt, NULL));
  check(fib_spawn(rt, sieve, &n, NULL, NULL));
  check(fib_run(rt));
  check(fib_runtime_destroy(rt));
  while (links) {
    struct link *l = links;
    links = l->next;
    check(fib_chan_destroy(&l->ch));
    free(l);
  }
  return EXIT_SUCCESS;
}
