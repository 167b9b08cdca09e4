/* SPDX-License-Identifier: MIT */
/*
 * switch.S -- context switch for x86-64, System V ABI, ELF, GNU assembler.
 *
 * ABI facts this file relies on (System V AMD64 psABI, section 3.2):
 *   - rbx, rbp, r12-r15 and rsp are callee-saved: a function call must hand
 *     them back unchanged, so a switch (which "returns" into another
 *     context) saves them for the context it leaves and restores them for
 *     the one it enters. Every other general-purpose and vector register is
 *     caller-saved: the compiler already assumes the call clobbered them.
 *   - The control bits of MXCSR and the x87 control word are callee-saved
 *     too: a fiber that changes the rounding mode must not change it for
 *     the others. MXCSR's six status flags (bits 0-5, the sticky
 *     exception flags) are not: a call may leave them set. So a switch
 *     loads the resumed context's MXCSR only if its control bits differ
 *     from the current ones, and its x87 control word only if it differs:
 *     a load that changes MXCSR costs tens of cycles, and after any
 *     inexact arithmetic the flags differ from one context to the next,
 *     which made every switch pay it (one in a fiber was enough).
 *   - rsp + 8 is a multiple of 16 at a function's entry; a new context's
 *     entry sees exactly that.
 *
 * The saved frame, on the suspended context's own stack (offsets from the
 * saved stack pointer; defined once in frame.h):
 *
 *   +------+--------+-------+-----+-----+-----+-----+-----+-----+-----+
 *   |  0   |   4    |   6   |  8  | 16  | 24  | 32  | 40  | 48  | 56  |
 *   | mxcsr| x87 cw |  pad  | r12 | r13 | r14 | r15 | rbx | rbp | rip |
 *   +------+--------+-------+-----+-----+-----+-----+-----+-----+-----+
 *
 * rip sits where the caller's `call` put the return address, so saving is
 * one stack adjustment and stores. Resuming ends with pop + indirect jmp,
 * not ret: a ret to an address pushed on another stack would miss the
 * return-stack predictor on every switch. The jmp is `notrack`, since its
 * targets are return sites (no endbr64) when IBT is enforced.
 *
 * Not CET shadow-stack safe (the jmp leaves the shadow stack unbalanced):
 * this file marks IBT only in its GNU property note, so a link that
 * includes it never claims SHSTK.
 */
#include "frame.h"
#include "notes.h"
#include "switch.h"

        .text

/* The head of a global function that is hidden outside the library:
 * symbol, type, alignment, and the start of its unwind information. */
.macro  FUNC name
        .globl  \name
        .hidden \name
        .type   \name, @function
        .p2align 4
\name:
        .cfi_startproc
.endm

/*
 * void *fib__ctx_switch(void **save_sp, void *load_sp, void *value)
 * void *fib__ctx_switch_nofp(void **save_sp, void *load_sp, void *value)
 *   rdi: where to store the stack pointer of the context we leave
 *   rsi: the stack pointer of the context to resume
 *   rdx: value handed over; returned in rax on the resumed side
 *
 * The _nofp variant leaves MXCSR and the x87 control word alone (their
 * frame slots are neither written nor read), for contexts that share the
 * thread's FP control state. A context must always be entered and left by
 * the same variant; the coroutine layer guarantees it.
 */

.macro  SWITCH name, save_fp
        FUNC    \name
        ENDBR
        SAVE    \save_fp
        movq    %rsp, (%rdi)            /* the context we leave is saved */
.if \save_fp
        movq    %rsp, %r8               /* its frame: the current FP state */
.endif
        movq    %rsi, %rsp              /* now on the resumed context's stack */
        RESUME  \save_fp, %rdx, %r8
        .cfi_endproc
        .size   \name, . - \name
.endm

        SWITCH  fib__ctx_switch, 1
        SWITCH  fib__ctx_switch_nofp, 0
        /* the same at other addresses, for the switch back to a resumer
         * (its indirect jump has one kind of target: context.h) */
        SWITCH  fib__ctx_switch_back, 1
        SWITCH  fib__ctx_switch_back_nofp, 0

/*
 * void fib__ctx_jump(void *load_sp, void *value)       (never returns)
 * void fib__ctx_jump_nofp(void *load_sp, void *value)
 *   rdi: the stack pointer of the context to resume
 *   rsi: value handed over; returned in rax on the resumed side
 *
 * The second half of the switch alone, for a context that has finished
 * and is never resumed: nothing of it is saved. The variant must be the
 * one the resumed context was left by.
 */
.macro  JUMP name, load_fp
        FUNC    \name
        ENDBR
        movq    %rdi, %rsp              /* the finished context is gone */
        .cfi_def_cfa rsp, FIB__FRAME_SIZE
        .cfi_offset rip, -8
        RESUME  \load_fp, %rsi
        .cfi_endproc
        .size   \name, . - \name
.endm

        JUMP    fib__ctx_jump, 1
        JUMP    fib__ctx_jump_nofp, 0

/*
 * The first code a new context runs (fib__ctx_make puts it in the frame's
 * rip slot). On entry: r12 = the entry function, rax = the value the first
 * switch passed, rsp 16-byte aligned. Its CFI says the return address is
 * undefined, so unwinders (gdb, backtrace(), perf) stop here cleanly, and
 * rbp = 0 ends frame-pointer chains.
 */
        FUNC    fib__ctx_entry_trampoline
        .cfi_undefined rip
        ENDBR
        xorl    %ebp, %ebp              /* no caller frame */
        movq    %rax, %rdi              /* entry(value) */
        /* A call, but for the return-stack predictor: the return address
         * (the ud2, as a call would push) goes on the stack by hand, so
         * the predictor keeps no entry for a return that never comes
         * (coro.c, fib__coro_entry). */
        leaq    1f(%rip), %rcx
        pushq   %rcx
        .cfi_adjust_cfa_offset 8
        jmp     *%r12
1:      ud2                             /* entries never return */
        .cfi_endproc
        .size   fib__ctx_entry_trampoline, . - fib__ctx_entry_trampoline

        OBJECT_NOTES
