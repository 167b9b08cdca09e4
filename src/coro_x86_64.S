/* SPDX-License-Identifier: MIT */
/*
 * coro_x86_64.S -- the hot paths of the public fib_coro_resume and
 * fib_coro_yield for x86-64, System V ABI, ELF, GNU assembler, with the
 * switch inline. coro.c's resume_hot and yield_hot are the same logic in
 * C: they serve the scheduler's calls, the other architectures, builds
 * with sanitizer hooks (C calls around the switch) and builds without
 * this file (FIB__CORO_ASM, coro_layout.h). Every case these paths do not
 * take, errors included, goes on to fib__coro_resume_checked /
 * fib__coro_yield_checked in coro.c with the arguments untouched.
 *
 * Why in assembly: inline, the switch needs no call, no endbr64 and no
 * arguments set up, and the indirect jump that ends each copy has one
 * kind of target (a resume's goes into coroutines, a yield's back to
 * resumers). The shared-FP variant falls through and the full one is the
 * taken branch: the shared-FP switch is front-end bound, the full one
 * waits on its FP control state anyway. 6 instructions fewer per one-way
 * switch than the C hot path with its tail call into fib__ctx_switch
 * (callgrind: 63 -> 57 with the FP control state, 53 -> 47 without).
 *
 * The record's offsets and the kind masks are coro_layout.h's (checked
 * against struct fib_coro in coro.h); the frame is the switch's
 * (arch/x86_64/frame.h), and a context left here is resumed by
 * fib__ctx_switch and the other way round.
 */
#include "arch/x86_64/notes.h"
#include "coro_layout.h"

#if FIB__CORO_ASM
#include "arch/x86_64/frame.h"
#include "arch/x86_64/switch.h"

        .text

/*
 * SWITCH_INLINE fp, save, load: save the callee-saved registers (and the
 * FP control state if fp) below the return address, store the stack
 * pointer to `save`, take `load` as the stack pointer and resume the
 * context there with 0 as the return value: fib__ctx_switch's body, for
 * a caller that has not moved rsp.
 */
.macro  SWITCH_INLINE fp, save, load
        .cfi_remember_state
        SAVE    \fp
        movq    %rsp, \save             /* the context we leave is saved */
.if \fp
        movq    %rsp, %r8               /* its frame: the current FP state */
        movq    \load, %rsp             /* now on the resumed context's stack */
        RESUME  1, $0, %r8
.else
        movq    \load, %rsp
        RESUME  0, $0
.endif
        .cfi_restore_state              /* for the code after the copy */
.endm

/* A public function (default visibility): the API's entry point. */
.macro  API_FUNC name
        .globl  \name
        .type   \name, @function
        .p2align 4
\name:
        .cfi_startproc
.endm

#define CO(field) FIB__CORO_OFF_##field

/*
 * int fib_coro_resume(fib_coro *co, void *in, void **out)
 *   rdi: co, rsi: in, rdx: out. The hot path: co not NULL, suspended,
 *   plain (not compact, not a fiber's own), resumed from the thread's own
 *   context on a thread ready for overflow reports, or from a coroutine
 *   that is plain and on a guarded stack (no canary to check).
 */
        API_FUNC fib_coro_resume
        ENDBR
        testq   %rdi, %rdi
        jz      .Lresume_checked
        movl    CO(KIND)(%rdi), %eax
        testl   $FIB__CORO_RESUME_SLOW, %eax
        jnz     .Lresume_checked
        cmpl    $0, CO(STATUS)(%rdi)    /* FIB_CORO_SUSPENDED */
        jne     .Lresume_checked
        movq    fib__tl_running@gottpoff(%rip), %r8
        movq    %fs:(%r8), %rcx         /* prev: the running coroutine */
        testq   %rcx, %rcx
        jnz     .Lresume_from_coro
        movq    fib__tl_overflow_ready@gottpoff(%rip), %r9
        cmpl    $0, %fs:(%r9)           /* this thread's first resume? */
        je      .Lresume_checked
.Lresume_go:
        movq    %rcx, CO(RESUMER)(%rdi)
        leaq    CO(FIRST)(%rdi), %r9    /* the sink, for out == NULL */
        testq   %rdx, %rdx
        cmovzq  %r9, %rdx
        movq    %rdx, CO(OUT)(%rdi)
        movq    CO(IN)(%rdi), %r9
        movq    %rsi, (%r9)             /* *co->in = in */
        movl    $1, CO(STATUS)(%rdi)    /* FIB_CORO_RUNNING */
        movq    %rdi, %fs:(%r8)         /* the thread's running coroutine */
        testl   $FIB__CORO_KIND_NOFP, %eax
        jz      .Lresume_fp
        SWITCH_INLINE 0, CO(RESUMER_SP)(%rdi), CO(SP)(%rdi)
.Lresume_fp:
        SWITCH_INLINE 1, CO(RESUMER_SP)(%rdi), CO(SP)(%rdi)
.Lresume_from_coro:
        testl   $FIB__CORO_RESUMER_SLOW, CO(KIND)(%rcx)
        jz      .Lresume_go
.Lresume_checked:
        jmp     fib__coro_resume_checked
        .cfi_endproc
        .size   fib_coro_resume, . - fib_coro_resume

/*
 * int fib_coro_yield(void *value, void **in)
 *   rdi: value, rsi: in. The hot path: a running coroutine that is plain,
 *   not a fiber's own and on a guarded stack.
 */
        API_FUNC fib_coro_yield
        ENDBR
        movq    fib__tl_running@gottpoff(%rip), %r8
        movq    %fs:(%r8), %rax         /* co: the running coroutine */
        testq   %rax, %rax
        jz      .Lyield_checked
        movl    CO(KIND)(%rax), %ecx
        testl   $FIB__CORO_YIELD_SLOW, %ecx
        jnz     .Lyield_checked
        leaq    CO(FIRST)(%rax), %r9    /* the sink, for in == NULL */
        testq   %rsi, %rsi
        cmovzq  %r9, %rsi
        movq    %rsi, CO(IN)(%rax)
        movl    $0, CO(STATUS)(%rax)    /* FIB_CORO_SUSPENDED */
        movq    CO(OUT)(%rax), %r9
        movq    %rdi, (%r9)             /* *co->out = value */
        movq    CO(RESUMER)(%rax), %r9
        movq    %r9, %fs:(%r8)          /* the resumer runs again */
        testl   $FIB__CORO_KIND_NOFP, %ecx
        jz      .Lyield_fp
        SWITCH_INLINE 0, CO(SP)(%rax), CO(RESUMER_SP)(%rax)
.Lyield_fp:
        SWITCH_INLINE 1, CO(SP)(%rax), CO(RESUMER_SP)(%rax)
.Lyield_checked:
        jmp     fib__coro_yield_checked
        .cfi_endproc
        .size   fib_coro_yield, . - fib_coro_yield
#endif /* FIB__CORO_ASM */

        OBJECT_NOTES
