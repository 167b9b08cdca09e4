/* SPDX-License-Identifier: MIT */
/*
 * switch.S -- context switch for RISC-V 64, LP64D ABI (Linux, ELF), GNU as.
 *
 * ABI facts this file relies on (RISC-V ELF psABI, "Integer Register
 * Convention" and "Floating-point Register Convention"):
 *   - s0-s11 (s0 is the frame pointer) and sp are callee-saved; ra holds
 *     the return address. Every other integer register is caller-saved.
 *   - With an FPU (LP64D: __riscv_flen == 64), fs0-fs11 are callee-saved.
 *   - The dynamic rounding mode frm (in fcsr) is the FP control state: a
 *     fiber that changes the rounding mode must not change it for the
 *     others. The accrued exception flags (fflags) are status, not saved.
 *   - sp is 16-byte aligned; the frame is a multiple of 16.
 * Without an FPU (__riscv_flen undefined or < 64) the FP slots stay in the
 * frame, unused, so the layout is the same for every build.
 *
 * The saved frame, on the suspended context's own stack (offsets from the
 * saved stack pointer; defined once in frame.h):
 *
 *   +----+----+----+----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   | 0  | 8  | 16 | 24 | 32  | 40  | 48  | 56  | 64  | 72  | 80  | 88  |
 *   | ra | s0 | s1 | s2 | s3  | s4  | s5  | s6  | s7  | s8  | s9  | s10 |
 *   +----+----+----+----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   | 96  | 104 | 112 | ... | 192  | 200 |
 *   | s11 | fs0 | fs1 | ... | fs11 | frm |
 *   +-----+-----+-----+-----+------+-----+
 *
 * Resuming ends with `ret` (jalr zero, 0(ra)) to the ra loaded from the
 * frame. There is no branch-target or return-address protection to honour
 * on Linux riscv64 today (Zicfilp/Zicfiss are not enabled by this
 * toolchain), so no landing pads and no property note beyond the stack
 * note.
 */
#include "frame.h"

#if defined(__riscv_flen) && __riscv_flen >= 64
#define FIB__HAVE_FPU 1
#else
#define FIB__HAVE_FPU 0
#endif

        .text

/* The head of a global function that is hidden outside the library:
 * symbol, type, alignment, and the start of its unwind information. */
.macro  FUNC name
        .globl  \name
        .hidden \name
        .type   \name, @function
        .p2align 2
\name:
        .cfi_startproc
.endm

/*
 * void *fib__ctx_switch(void **save_sp, void *load_sp, void *value)
 * void *fib__ctx_switch_nofp(void **save_sp, void *load_sp, void *value)
 *   a0: where to store the stack pointer of the context we leave
 *   a1: the stack pointer of the context to resume
 *   a2: value handed over; returned in a0 on the resumed side
 *
 * The _nofp variant leaves frm alone (its frame slot is neither written
 * nor read), for contexts that share the thread's FP control state. A
 * context must always be entered and left by the same variant; the
 * coroutine layer guarantees it. Both keep fs0-fs11: those are registers,
 * not shared control state.
 */
/*
 * The second half of a switch: sp points at the frame of the context to
 * resume (and the CFA is described as sp + FIB__FRAME_SIZE); restore it
 * and go on where it left off, with \value as its return value.
 */
.macro  RESUME load_fp, value
#if FIB__HAVE_FPU
.if \load_fp
        ld      t0, FIB__FRAME_FRM(sp)           /* its rounding mode */
        fsrm    t0
.endif
        fld     fs0, FIB__FRAME_FS(0)(sp)        /* its FP registers */
        fld     fs1, FIB__FRAME_FS(1)(sp)
        fld     fs2, FIB__FRAME_FS(2)(sp)
        fld     fs3, FIB__FRAME_FS(3)(sp)
        fld     fs4, FIB__FRAME_FS(4)(sp)
        fld     fs5, FIB__FRAME_FS(5)(sp)
        fld     fs6, FIB__FRAME_FS(6)(sp)
        fld     fs7, FIB__FRAME_FS(7)(sp)
        fld     fs8, FIB__FRAME_FS(8)(sp)
        fld     fs9, FIB__FRAME_FS(9)(sp)
        fld     fs10, FIB__FRAME_FS(10)(sp)
        fld     fs11, FIB__FRAME_FS(11)(sp)
#endif
        ld      ra, FIB__FRAME_RA(sp)            /* where it goes on */
        ld      s0, FIB__FRAME_S(0)(sp)          /* its frame pointer */
        ld      s1, FIB__FRAME_S(1)(sp)          /* its callee-saved ... */
        ld      s2, FIB__FRAME_S(2)(sp)
        ld      s3, FIB__FRAME_S(3)(sp)
        ld      s4, FIB__FRAME_S(4)(sp)
        ld      s5, FIB__FRAME_S(5)(sp)
        ld      s6, FIB__FRAME_S(6)(sp)
        ld      s7, FIB__FRAME_S(7)(sp)
        ld      s8, FIB__FRAME_S(8)(sp)
        ld      s9, FIB__FRAME_S(9)(sp)
        ld      s10, FIB__FRAME_S(10)(sp)
        ld      s11, FIB__FRAME_S(11)(sp)
        addi    sp, sp, FIB__FRAME_SIZE          /* pop the frame */
        .cfi_adjust_cfa_offset -FIB__FRAME_SIZE
        mv      a0, \value                      /* the value, returned */
        ret
.endm

.macro  SWITCH name, save_fp
        FUNC    \name
        addi    sp, sp, -FIB__FRAME_SIZE         /* the frame */
        .cfi_adjust_cfa_offset FIB__FRAME_SIZE
        sd      ra, FIB__FRAME_RA(sp)            /* where we go on */
        sd      s0, FIB__FRAME_S(0)(sp)          /* frame pointer */
        sd      s1, FIB__FRAME_S(1)(sp)          /* callee-saved ... */
        sd      s2, FIB__FRAME_S(2)(sp)
        sd      s3, FIB__FRAME_S(3)(sp)
        sd      s4, FIB__FRAME_S(4)(sp)
        sd      s5, FIB__FRAME_S(5)(sp)
        sd      s6, FIB__FRAME_S(6)(sp)
        sd      s7, FIB__FRAME_S(7)(sp)
        sd      s8, FIB__FRAME_S(8)(sp)
        sd      s9, FIB__FRAME_S(9)(sp)
        sd      s10, FIB__FRAME_S(10)(sp)
        sd      s11, FIB__FRAME_S(11)(sp)
#if FIB__HAVE_FPU
        fsd     fs0, FIB__FRAME_FS(0)(sp)        /* callee-saved FP */
        fsd     fs1, FIB__FRAME_FS(1)(sp)
        fsd     fs2, FIB__FRAME_FS(2)(sp)
        fsd     fs3, FIB__FRAME_FS(3)(sp)
        fsd     fs4, FIB__FRAME_FS(4)(sp)
        fsd     fs5, FIB__FRAME_FS(5)(sp)
        fsd     fs6, FIB__FRAME_FS(6)(sp)
        fsd     fs7, FIB__FRAME_FS(7)(sp)
        fsd     fs8, FIB__FRAME_FS(8)(sp)
        fsd     fs9, FIB__FRAME_FS(9)(sp)
        fsd     fs10, FIB__FRAME_FS(10)(sp)
        fsd     fs11, FIB__FRAME_FS(11)(sp)
.if \save_fp
        frrm    t0                              /* rounding mode */
        sd      t0, FIB__FRAME_FRM(sp)
.endif
#endif

        sd      sp, 0(a0)                       /* the context we leave */
        mv      sp, a1                          /* the resumed one's stack */

        RESUME  \save_fp, a2
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
 *   a0: the stack pointer of the context to resume; a1: the value
 *
 * The second half of the switch alone, for a context that has finished
 * and is never resumed: nothing of it is saved. The variant must be the
 * one the resumed context was left by.
 */
.macro  JUMP name, load_fp
        FUNC    \name
        mv      sp, a0                          /* the finished one is gone */
        .cfi_def_cfa sp, FIB__FRAME_SIZE
        RESUME  \load_fp, a1
        .cfi_endproc
        .size   \name, . - \name
.endm

        JUMP    fib__ctx_jump, 1
        JUMP    fib__ctx_jump_nofp, 0

/*
 * The first code a new context runs (fib__ctx_make puts it in the frame's
 * ra slot). On entry: s1 = the entry function, a0 = the value the first
 * switch passed, sp 16-byte aligned. Its CFI says the return address is
 * undefined, so unwinders (gdb, backtrace(), perf) stop here cleanly, and
 * s0 = 0 ends frame-pointer chains.
 */
        FUNC    fib__ctx_entry_trampoline
        .cfi_undefined ra
        li      s0, 0                           /* no caller frame */
        li      ra, 0                           /* no return address */
        jalr    s1                              /* entry(value) */
        unimp                                   /* entries never return */
        .cfi_endproc
        .size   fib__ctx_entry_trampoline, . - fib__ctx_entry_trampoline

/* No executable stack needed. */
        .section .note.GNU-stack, "", @progbits
