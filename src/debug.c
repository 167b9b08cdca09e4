/* SPDX-License-Identifier: MIT */
/*
 * debug.c -- the layout description debuggers read (fib_debug_layout):
 * where every layer keeps what a debugger needs. It reads every layer's
 * records, so it sits above them all and nothing includes it.
 */
#include "fibers/debug.h"
#include "arch/context.h"
#include "sched/fiber.h"
#include "stack.h"

#include <stddef.h>

#if defined(__x86_64__)
#include "arch/x86_64/frame.h"
#elif defined(__aarch64__)
#include "arch/aarch64/frame.h"
#elif defined(__riscv) && __riscv_xlen == 64
#include "arch/riscv64/frame.h"
#endif

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
    .runtimes = &fib__runtimes,
    .frame_size = FIB__FRAME_SIZE,
    .rt_next = OFF(struct fib_runtime, next_live),
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
