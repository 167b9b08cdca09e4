/*
 * debug.c -- what tools may ask of the library: the registry of live
 * runtimes, the layout description debuggers read (fib_debug_layout), and
 * stack information with the high-water mark.
 */
#include "debug.h"
#include "fibers/debug.h"
#include "arch/context.h"
#include "sched/fiber.h"
#include "stack.h"

#include <pthread.h>
#include <stddef.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include "arch/x86_64/frame.h"
#elif defined(__aarch64__)
#include "arch/aarch64/frame.h"
#elif defined(__riscv) && __riscv_xlen == 64
#include "arch/riscv64/frame.h"
#endif

/* ---- the registry: every runtime between create and destroy */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
/* Read by debuggers with the process stopped, never by the library
 * outside the lock; volatile so the stores are in memory when it stops. */
static fib_runtime *volatile registry_head;

void fib__debug_runtime_add(struct fib_runtime *rt) {
  pthread_mutex_lock(&registry_lock);
  rt->debug_next = registry_head;
  registry_head = rt;
  pthread_mutex_unlock(&registry_lock);
}

void fib__debug_runtime_remove(struct fib_runtime *rt) {
  pthread_mutex_lock(&registry_lock);
  struct fib_runtime *volatile *p = &registry_head;
  while (*p && *p != rt)
    p = &(*p)->debug_next;
  if (*p)
    *p = rt->debug_next;
  pthread_mutex_unlock(&registry_lock);
}

/* ---- the layout description */

#define STR_(x) #x
#define STR(x) STR_(x)

#if defined(__x86_64__)
#define ARCH "x86_64"
#define FRAME_REGS                                                             \
  "pc:" STR(FIB__FRAME_RIP) ",rbp:" STR(FIB__FRAME_RBP) ",rbx:" STR(            \
      FIB__FRAME_RBX) ",r12:" STR(FIB__FRAME_R12) ",r13:" STR(FIB__FRAME_R13)    \
      ",r14:" STR(FIB__FRAME_R14) ",r15:" STR(FIB__FRAME_R15)
#elif defined(__aarch64__)
#define ARCH "aarch64"
#define FRAME_REGS                                                             \
  "pc:88,x30:88,x29:80,x19:0,x20:8,x21:16,x22:24,x23:32,x24:40,x25:48,"       \
  "x26:56,x27:64,x28:72"
_Static_assert(FIB__FRAME_X29 == 80 && FIB__FRAME_X30 == 88 &&
                   FIB__FRAME_X19 == 0 && FIB__FRAME_X27 == 64,
               "update FRAME_REGS");
#elif defined(__riscv)
#define ARCH "riscv64"
#define FRAME_REGS                                                             \
  "pc:0,ra:0,s0:8,s1:16,s2:24,s3:32,s4:40,s5:48,s6:56,s7:64,s8:72,s9:80,"     \
  "s10:88,s11:96"
_Static_assert(FIB__FRAME_RA == 0 && FIB__FRAME_S(11) == 96, "update FRAME_REGS");
#endif

_Static_assert((int)FIB_DEBUG_READY == (int)FIB__FIBER_READY &&
                   (int)FIB_DEBUG_RUNNING == (int)FIB__FIBER_RUNNING &&
                   (int)FIB_DEBUG_BLOCKED == (int)FIB__FIBER_BLOCKED &&
                   (int)FIB_DEBUG_SLEEPING == (int)FIB__FIBER_SLEEPING &&
                   (int)FIB_DEBUG_FINISHED == (int)FIB__FIBER_FINISHED,
               "fiber states as published");

#define OFF(type, field) ((uint32_t)offsetof(type, field))

const fib_debug_info fib_debug_layout = {
    .version = FIB_DEBUG_LAYOUT_VERSION,
    .size = sizeof(fib_debug_info),
    .arch = ARCH,
    .frame_regs = FRAME_REGS,
    .runtimes = &registry_head,
    .frame_size = FIB__FRAME_SIZE,
    .rt_next = OFF(struct fib_runtime, debug_next),
    .rt_slots = OFF(struct fib_runtime, fibers) +
                OFF(struct fib__idmap, slots),
    .rt_mask = OFF(struct fib_runtime, fibers) + OFF(struct fib__idmap, mask),
    .rt_current = OFF(struct fib_runtime, current),
    .slot_size = sizeof(struct fib__idmap_slot),
    .slot_id = OFF(struct fib__idmap_slot, id),
    .slot_value = OFF(struct fib__idmap_slot, value),
    .fiber_id = OFF(struct fib__fiber, id),
    .fiber_state = OFF(struct fib__fiber, state),
    .fiber_co = OFF(struct fib__fiber, co),
    .fiber_name = OFF(struct fib__fiber, name),
    .coro_sp = OFF(struct fib_coro, sp),
    .coro_stack = OFF(struct fib_coro, stack),
    .coro_status = OFF(struct fib_coro, status),
    .stack_lo = OFF(struct fib__stack, lo),
    .stack_usable = OFF(struct fib__stack, usable_size),
    .stack_guard = OFF(struct fib__stack, guard_size),
    .stack_mode = OFF(struct fib__stack, mode),
};

/* ---- stack information */

/* Bytes from the top of the stack down to its lowest resident page. */
static size_t high_water(const struct fib__stack *s) {
  size_t page = fib__page_size();
  size_t pages = s->usable_size / page;
  unsigned char vec[256];
  /* FIB_GUARD_NONE: the canary keeps the lowest page resident, so it says
   * nothing; start above it, and count a stack that reached the page just
   * above as having reached it too (an upper bound, never an under-count). */
  size_t start = fib__stack_canary(s) && pages > 1 ? 1 : 0;
  /* From the bottom up, in chunks: the first resident page is the mark. */
  for (size_t first = start; first < pages; first += sizeof vec) {
    size_t n = pages - first < sizeof vec ? pages - first : sizeof vec;
    if (mincore(s->lo + first * page, n * page, vec) != 0)
      return 0; /* cannot tell */
    for (size_t i = 0; i < n; i++)
      if (vec[i] & 1)
        return (first + i == 1 && start ? pages : pages - first - i) * page;
  }
  return 0;
}

static void describe(const struct fib__stack *s, fib_stack_info *out) {
  out->lo = s->lo;
  out->hi = s->lo + s->usable_size;
  out->size = s->usable_size;
  out->guard_size = s->guard_size;
  out->guard = s->mode;
  out->high_water = high_water(s);
}

int fib_coro_stack(const fib_coro *co, fib_stack_info *out) {
  if (!co || !out || co->status == FIB_CORO_DEAD)
    return FIB_EINVAL;
  describe(co->stack, out);
  return 0;
}

int fib_self_stack(fib_stack_info *out) {
  if (!out)
    return FIB_EINVAL;
  const fib_coro *co = fib__coro_self();
  if (!co)
    return FIB_EPERM;
  describe(co->stack, out);
  return 0;
}

int fib_fiber_stack(fib_runtime *rt, fib_id id, fib_stack_info *out) {
  if (!out)
    return FIB_EINVAL;
  if (!rt) {
    rt = fib__tl_runtime;
    if (!rt || !rt->current)
      return FIB_EPERM;
  }
  const struct fib__fiber *f = fib__idmap_get(&rt->fibers, id);
  if (!f || !f->co)
    return FIB_ESRCH;
  describe(f->co->stack, out);
  return 0;
}
