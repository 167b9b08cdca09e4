/* SPDX-License-Identifier: MIT */
/*
 * ops_coro.c -- plain coroutines, made, resumed and destroyed by the
 * fibers (and finished by main at the end), nested in each other: the
 * values passed each way, the states, and that a coroutine a fiber
 * resumed cannot park its fiber.
 */
#include "fuzz.h"

enum { OPN_CREATE = 23, OPN_RESUME, OPN_DESTROY };

#define CORO_DONE ((void *)(uintptr_t)0xdead)

static uintptr_t in_seq;
static int running = -1; /* the model's running coroutine, or -1 */

static void resume_as(int slot, int j);

static void *coro_body(void *arg, void *first) {
  struct fz_coro *C = arg;
  int j = (int)(C - G.co);
  FZ_CHECK((uintptr_t)first == C->last_in, "coroutine %d: first is %p, "
           "resumed with %p", j, first, (void *)C->last_in);
  for (;;) {
    FZ_CHECK(fib_coro_current() == C->co, "coroutine %d: fib_coro_current "
             "is not it", j);
    FZ_CHECK(fib_coro_status(C->co) == FIB_CORO_RUNNING, "coroutine %d: "
             "status %d while it runs", j, fib_coro_status(C->co));
    if (C->flags & 1) { /* it cannot park whoever resumed it */
      fz_expect(fib_yield(), A_EPERM, "fib_yield in a coroutine", j);
      fz_expect(fib_sleep_ns(0), A_EPERM, "fib_sleep_ns in a coroutine", j);
      fz_expect(fib_mutex_trylock(&G.m[0]),
                G.mm[0].destroyed ? A_EINVAL : A_EPERM,
                "fib_mutex_trylock in a coroutine", j);
      fz_expect(fib_coro_destroy(C->co), A_EBUSY,
                "fib_coro_destroy of the running coroutine", j);
    }
    if (C->flags & 2) /* resume another: they nest */
      resume_as(-100 - j, (j + 1) % FZ_NCO);
    if (C->done_steps == C->steps)
      return CORO_DONE;
    C->done_steps++;
    void *in = NULL;
    int r = fib_coro_yield((void *)(uintptr_t)C->done_steps, &in);
    fz_expect(r, A_OK, "fib_coro_yield", j);
    FZ_CHECK((uintptr_t)in == C->last_in, "coroutine %d: yield got %p, "
             "resumed with %p", j, in, (void *)C->last_in);
  }
}

static void resume_as(int slot, int j) {
  struct fz_coro *C = &G.co[j];
  if (!C->co) {
    fz_expect(fib_coro_resume(NULL, NULL, NULL), A_EINVAL,
              "fib_coro_resume(NULL)", slot);
    return;
  }
  unsigned allow = C->status == FIB_CORO_SUSPENDED ? A_OK
                   : C->status == FIB_CORO_DEAD    ? A_EINVAL
                                                   : A_EBUSY;
  int ok = allow == A_OK;
  int outer = running;
  if (ok) {
    C->last_in = ++in_seq;
    if (outer >= 0)
      G.co[outer].status = FIB_CORO_NORMAL;
    C->status = FIB_CORO_RUNNING;
    running = j;
  }
  void *out = NULL;
  int r = fib_coro_resume(C->co, (void *)C->last_in, &out);
  fz_log(slot, OPN_RESUME, j, C->status, r);
  fz_expect(r, allow, "fib_coro_resume", slot);
  if (!ok)
    return;
  running = outer;
  if (outer >= 0) {
    G.co[outer].status = FIB_CORO_RUNNING;
    FZ_CHECK(fib_coro_status(G.co[outer].co) == FIB_CORO_RUNNING,
             "coroutine %d: not running again after its resume returned",
             outer);
  }
  if (out == CORO_DONE) {
    FZ_CHECK(C->done_steps == C->steps, "coroutine %d returned early", j);
    C->status = FIB_CORO_DEAD;
  } else {
    FZ_CHECK((uintptr_t)out == (uintptr_t)C->done_steps, "coroutine %d "
             "yielded %p, expected %d", j, out, C->done_steps);
    C->status = FIB_CORO_SUSPENDED;
  }
  FZ_CHECK(fib_coro_status(C->co) == C->status, "coroutine %d: status %d, "
           "expected %d", j, fib_coro_status(C->co), C->status);
}

void fz_op_coro_create(struct fz_fiber *me, unsigned a, unsigned b) {
  int j = (int)(a % FZ_NCO);
  struct fz_coro *C = &G.co[j];
  fib_attr attr = {0};
  if ((b & 0xe0) == 0xe0) { /* refused: stack below the minimum */
    attr.stack_size = FIB_STACK_MIN - 1 - (b & 1) * (FIB_STACK_MIN - 2);
    fib_coro *co = NULL;
    int r = fib_coro_create(&co, coro_body, C, &attr);
    fz_log(me->slot, OPN_CREATE, j, (int)b, r);
    fz_expect(r, A_EINVAL, "fib_coro_create(bad stack size)", me->slot);
    return;
  }
  if (C->co)
    return;
  if (b & 1)
    attr.flags = FIB_SHARED_FP;
  if (b & 2)
    attr.stack_size = FIB_STACK_MIN;
  C->steps = (int)((b >> 2) & 3);
  C->flags = (int)((b >> 4) & 3);
  C->done_steps = 0;
  int r = fib_coro_create(&C->co, coro_body, C, &attr);
  fz_log(me->slot, OPN_CREATE, j, (int)b, r);
  fz_expect(r, A_OK, "fib_coro_create", me->slot);
  C->status = FIB_CORO_SUSPENDED;
  FZ_CHECK(fib_coro_status(C->co) == FIB_CORO_SUSPENDED, "a new coroutine "
           "is not suspended");
}

void fz_op_coro_resume(struct fz_fiber *me, unsigned a, unsigned b) {
  (void)b;
  resume_as(me->slot, (int)(a % FZ_NCO));
}

static void destroy_as(int slot, int j) {
  struct fz_coro *C = &G.co[j];
  if (!C->co) {
    fz_expect(fib_coro_destroy(NULL), A_EINVAL, "fib_coro_destroy(NULL)",
              slot);
    return;
  }
  /* no coroutine runs while a fiber's own body does: suspended or dead */
  int r = fib_coro_destroy(C->co);
  fz_log(slot, OPN_DESTROY, j, C->status, r);
  fz_expect(r, A_OK, "fib_coro_destroy", slot);
  C->co = NULL;
}

void fz_op_coro_destroy(struct fz_fiber *me, unsigned a, unsigned b) {
  (void)b;
  destroy_as(me->slot, (int)(a % FZ_NCO));
}

void fz_coro_teardown(void) {
  /* Finish them from main (a coroutine needs no runtime), then free. */
  for (int j = 0; j < FZ_NCO; j++)
    for (int k = 0; k < 8 && G.co[j].co && G.co[j].status ==
                                               FIB_CORO_SUSPENDED; k++)
      resume_as(FZ_MAIN, j);
  for (int j = 0; j < FZ_NCO; j++)
    if (G.co[j].co) {
      FZ_CHECK(G.co[j].status == FIB_CORO_DEAD, "coroutine %d not finished "
               "after 8 resumes", j);
      destroy_as(FZ_MAIN, j);
    }
  in_seq = 0;
  running = -1;
}
