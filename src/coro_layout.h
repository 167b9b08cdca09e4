/* SPDX-License-Identifier: MIT */
/*
 * coro_layout.h -- what the assembly hot paths of fib_coro_resume and
 * fib_coro_yield (src/coro_x86_64.S) know of the coroutine record:
 * field offsets and the kind masks of the hot paths, defined once here for
 * the assembly and checked against struct fib_coro in coro.h.
 */
#ifndef FIB__CORO_LAYOUT_H
#define FIB__CORO_LAYOUT_H

#include "sanitize.h"

/* The two public calls are in assembly (src/coro_x86_64.S) where the
 * build compiles that file (FIB__CORO_ASM_SOURCE: CMake on x86-64) and no
 * sanitizer hook brackets the switch (the hooks are C calls around it:
 * coro.c's versions then serve). */
#if defined(FIB__CORO_ASM_SOURCE) && defined(__x86_64__) && !FIB__SAN_HOOKS
#define FIB__CORO_ASM 1
#else
#define FIB__CORO_ASM 0
#endif

#define FIB__CORO_OFF_SP 8
#define FIB__CORO_OFF_RESUMER_SP 16
#define FIB__CORO_OFF_RESUMER 24
#define FIB__CORO_OFF_STATUS 48
#define FIB__CORO_OFF_KIND 52
#define FIB__CORO_OFF_OUT 64
#define FIB__CORO_OFF_IN 72
#define FIB__CORO_OFF_FIRST 80

/* fib_coro.kind bits that send a public resume of the coroutine off the
 * hot path: all but NOFP and CANARY (its canary counts when it leaves) */
#define FIB__CORO_RESUME_SLOW 0xfffdfffe
/* the resumer's: COMPACT, CANARY */
#define FIB__CORO_RESUMER_SLOW 0x00020002
/* a public yield's: all but NOFP */
#define FIB__CORO_YIELD_SLOW 0xfffffffe
/* the kind's NOFP bit */
#define FIB__CORO_KIND_NOFP 1

#endif
