/* SPDX-License-Identifier: MIT */
/*
 * sanitize.h -- which dynamic-analysis tools the library is built for.
 *
 * The sanitizer hooks are compiled in automatically when the library itself
 * is compiled with a sanitizer; valgrind's when the build asks for them.
 * Defining FIB__NO_SANITIZER_HOOKS (CMake: -DFIB_SANITIZER_HOOKS=OFF)
 * leaves them all out: only for proving that the regression tests fail
 * without them.
 *
 *   FIB__ASAN      AddressSanitizer (and its LeakSanitizer): coro.c tells it
 *                 about every switch; stack.c unpoisons reused stacks and
 *                 registers live stacks as leak-check root regions.
 *   FIB__TSAN      ThreadSanitizer: one TSan fiber per coroutine (coro.c).
 *   FIB__SAN_HOOKS either of them: coro_switch is then start hook, switch,
 *                 finish hook instead of a tail call.
 *   FIB__VALGRIND  the build asked for valgrind (CMake: -DFIB_WITH_VALGRIND=ON,
 *                 which defines FIB__WITH_VALGRIND): every stack is
 *                 registered (stack.c). Its client requests are a few no-op
 *                 instructions outside valgrind; the choice is explicit so
 *                 that the build does not depend on which headers happen to
 *                 be installed.
 */
#ifndef FIB__SANITIZE_H
#define FIB__SANITIZE_H

#define FIB__ASAN 0
#define FIB__TSAN 0

#ifndef FIB__NO_SANITIZER_HOOKS
#if defined(__SANITIZE_ADDRESS__)
#undef FIB__ASAN
#define FIB__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#undef FIB__TSAN
#define FIB__TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef FIB__ASAN
#define FIB__ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#undef FIB__TSAN
#define FIB__TSAN 1
#endif
#endif
#endif

#define FIB__SAN_HOOKS (FIB__ASAN || FIB__TSAN)

#ifndef __ASSEMBLER__ /* the rest is C; switch.S reads FIB__SAN_HOOKS */
#if FIB__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#if FIB__TSAN
#include <sanitizer/tsan_interface.h>
/* Exported by both compilers' TSan runtimes, declared by neither's
 * header: the calling thread's memory accesses are not recorded between
 * the two (io.c's close_unrecorded). */
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#endif


#if defined(FIB__WITH_VALGRIND) && !defined(FIB__NO_SANITIZER_HOOKS)
#include <valgrind/valgrind.h>
#define FIB__VALGRIND 1
#endif
#ifndef FIB__VALGRIND
#define FIB__VALGRIND 0
#endif
#endif /* __ASSEMBLER__ */

#endif
