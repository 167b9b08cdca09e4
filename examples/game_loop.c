/* SPDX-License-Identifier: MIT */
/*
 * game_loop.c -- fibers inside a program's own loop. main owns the loop (a
 * game's frame loop here; a GUI or another event loop would do the same):
 * each frame it does its own work, then gives the fibers one round with
 * fib_run_nowait, which never blocks. Each actor fiber is a script that
 * reads straight down, one step per frame; a loader fiber waits for an
 * "asset" that main posts on frame 3; at the end main collects the
 * loader's result with fib_run_join, which joins from outside any fiber
 * (running the fibers, if need be, until that one has finished).
 */
#include <fibers.h>

#include <stdint.h>
#include <stdio.h>

static int frame;
static fib_sem asset_ready;

struct actor {
  const char *name;
  int steps;
};

/* A script that would be a state machine without fibers. */
static void *actor_script(void *arg) {
  const struct actor *a = arg;
  for (int step = 1; step <= a->steps; step++) {
    printf("  frame %d: %s step %d of %d\n", frame, a->name, step, a->steps);
    fib_yield(); /* until the next frame */
  }
  printf("  frame %d: %s is done\n", frame, a->name);
  return NULL;
}

static void *loader(void *arg) {
  (void)arg;
  printf("  frame %d: loader waits for the asset\n", frame);
  int err = fib_sem_wait(&asset_ready); /* parked: costs main nothing */
  if (err)
    return (void *)(intptr_t)err;
  printf("  frame %d: loader got the asset\n", frame);
  return (void *)(intptr_t)1234; /* "the loaded asset's id" */
}

static int check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s\n", what, fib_strerror(err));
    return 1;
  }
  return 0;
}

int main(void) {
  static const struct actor knight = {"knight", 2}, dragon = {"dragon", 4};
  fib_runtime *rt;
  fib_id loader_id;
  if (check(fib_sem_init(&asset_ready, 0), "fib_sem_init") ||
      check(fib_runtime_create(&rt, NULL), "fib_runtime_create") ||
      check(fib_spawn(rt, actor_script, (void *)&knight, NULL, NULL),
            "fib_spawn") ||
      check(fib_spawn(rt, actor_script, (void *)&dragon, NULL, NULL),
            "fib_spawn") ||
      check(fib_spawn(rt, loader, NULL, NULL, &loader_id), "fib_spawn"))
    return 1;

  int left = 3;
  while (left > 0) { /* until every fiber has finished */
    frame++;
    printf("frame %d, fibers left: %d\n", frame, left);
    if (frame == 3) {
      printf("frame %d: main posts the asset\n", frame);
      fib_sem_post(&asset_ready); /* wakes the loader: works outside fibers */
    }
    left = fib_run_nowait(rt); /* one round: every ready fiber, once */
    if (check(left, "fib_run_nowait"))
      return 1;
  }

  void *asset = NULL;
  if (check(fib_run_join(rt, loader_id, &asset), "fib_run_join"))
    return 1;
  printf("main: loader returned asset %d\n", (int)(intptr_t)asset);
  fib_runtime_destroy(rt);
  fib_sem_destroy(&asset_ready);
  return 0;
}
