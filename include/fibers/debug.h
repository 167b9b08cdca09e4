/* SPDX-License-Identifier: MIT */
/*
 * fibers/debug.h -- what debuggers read to find fibers: a versioned
 * description of the library's private records. Programs do not need it;
 * it is a header of its own so that the offsets below are not part of what
 * <fibers.h> shows every user.
 */
#ifndef FIBERS_DEBUG_H
#define FIBERS_DEBUG_H

#include <fibers.h>

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * For debuggers: where the library keeps what a debugger needs to list
 * fibers and unwind a suspended one, so that a script (tools/gdb/
 * fibers-gdb.py) hard-codes nothing. Read-only; the layout of this struct
 * is fixed for a given `version` (new fields go at the end, with a new
 * version): a reader written for version N reads any version >= N whose
 * `size` covers the fields it uses. Offsets are in bytes.
 *
 * Finding fibers: *runtimes is the first live runtime (a list through
 * rt_next); a runtime's fibers are in a table (rt_slots:
 * pointer to slot_size-byte slots, rt_mask: capacity - 1), a slot with
 * a non-zero id (slot_id) holds the fiber record (slot_value). A fiber's
 * coroutine is NULL once it has finished.
 *
 * Unwinding a suspended context: its saved stack pointer is the coroutine's
 * coro_sp; frame_regs lists "register:offset" pairs (gdb register names,
 * comma-separated; "pc" is where it resumes) read from there; its stack
 * pointer after resuming is coro_sp + frame_size.
 */
#define FIB_DEBUG_LAYOUT_VERSION 1

/* Fiber states, as stored at fiber_state (an int). */
enum {
  FIB_DEBUG_READY = 0,
  FIB_DEBUG_RUNNING = 1,
  FIB_DEBUG_BLOCKED = 2,
  FIB_DEBUG_SLEEPING = 3,
  FIB_DEBUG_FINISHED = 4
};

typedef struct fib_debug_info {
  uint32_t version;   /* FIB_DEBUG_LAYOUT_VERSION */
  uint32_t size;      /* sizeof(fib_debug_info) */
  const char *arch;   /* "x86_64", "aarch64", "riscv64" */
  const char *frame_regs;
  fib_runtime *const volatile *runtimes;
  uint32_t frame_size;
  /* struct fib_runtime */
  uint32_t rt_next, rt_slots, rt_mask, rt_current;
  /* one slot of the id table */
  uint32_t slot_size, slot_id, slot_value;
  /* a fiber record: id (uint64), state (int), co (pointer), name (char[]) */
  uint32_t fiber_id, fiber_state, fiber_co, fiber_name;
  /* a coroutine: saved sp (pointer), stack (pointer), status (int) */
  uint32_t coro_sp, coro_stack, coro_status;
  /* a stack: lo (pointer), usable size, guard size (size_t), mode (int) */
  uint32_t stack_lo, stack_usable, stack_guard, stack_mode;
} fib_debug_info;

/* The one instance, exported from the library as a data symbol. */
FIB_API extern const fib_debug_info fib_debug_layout;

#ifdef __cplusplus
}
#endif

#endif /* FIBERS_DEBUG_H */
