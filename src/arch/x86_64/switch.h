/* SPDX-License-Identifier: MIT */
/*
 * switch.h -- the saving and the resuming half of the x86-64 switch as
 * assembler macros, for switch.S and for the coroutine layer's hot paths
 * (src/coro_x86_64.S), which switch inline. Assembly only.
 */
#ifndef FIB__ARCH_X86_64_SWITCH_H
#define FIB__ARCH_X86_64_SWITCH_H

#include "frame.h"

/*
 * The first half of a switch: make the frame below the return address
 * (the CFA is then described as rsp + FIB__FRAME_SIZE) and save the
 * callee-saved registers in it, and the FP control state if save_fp. The
 * caller stores rsp where the context is kept.
 */
.macro  SAVE save_fp
        leaq    -(FIB__FRAME_SIZE - 8)(%rsp), %rsp       /* frame below rip */
        .cfi_adjust_cfa_offset FIB__FRAME_SIZE - 8
.if \save_fp
        stmxcsr FIB__FRAME_MXCSR(%rsp)
        fnstcw  FIB__FRAME_X87CW(%rsp)
.endif
        movq    %r12, FIB__FRAME_R12(%rsp)
        movq    %r13, FIB__FRAME_R13(%rsp)
        movq    %r14, FIB__FRAME_R14(%rsp)
        movq    %r15, FIB__FRAME_R15(%rsp)
        movq    %rbx, FIB__FRAME_RBX(%rsp)
        movq    %rbp, FIB__FRAME_RBP(%rsp)
.endm

/*
 * The second half of a switch: rsp points at the frame of the context to
 * resume (and the CFA is described as rsp + FIB__FRAME_SIZE); restore it
 * and go on where it left off, with \value as its return value.
 */
.macro  RESUME load_fp, value, old_frame
        movq    FIB__FRAME_R12(%rsp), %r12
        movq    FIB__FRAME_R13(%rsp), %r13
        movq    FIB__FRAME_R14(%rsp), %r14
        movq    FIB__FRAME_R15(%rsp), %r15
        movq    FIB__FRAME_RBX(%rsp), %rbx
        movq    FIB__FRAME_RBP(%rsp), %rbp
.if \load_fp
.ifnb \old_frame                        /* the current state is saved there */
        /* Two compares, each loading exactly what one store of the save
         * (stmxcsr, fnstcw) wrote: a load that spans both (one 8-byte
         * compare) cannot be forwarded from the two stores still in
         * flight and waits for them to reach the cache, which cost
         * ~4.5 ns per switch here. */
        movl    FIB__FRAME_MXCSR(%rsp), %ecx
        xorl    FIB__FRAME_MXCSR(\old_frame), %ecx
        testl   $0xffc0, %ecx           /* control bits only: 6-15 */
        jz      1f                      /* same: keep it */
        ldmxcsr FIB__FRAME_MXCSR(%rsp)
1:      movzwl  FIB__FRAME_X87CW(%rsp), %ecx
        cmpw    FIB__FRAME_X87CW(\old_frame), %cx
        je      2f                      /* same: keep it */
        fldcw   FIB__FRAME_X87CW(%rsp)
2:
.else                                   /* a jump: nothing to compare with */
        ldmxcsr FIB__FRAME_MXCSR(%rsp)
        fldcw   FIB__FRAME_X87CW(%rsp)
.endif
.endif
        leaq    FIB__FRAME_RIP(%rsp), %rsp
        .cfi_adjust_cfa_offset -(FIB__FRAME_SIZE - 8)
        popq    %rcx                    /* where the resumed context goes on */
        .cfi_adjust_cfa_offset -8
        .cfi_register rip, rcx
.ifc \value, $0
        xorl    %eax, %eax              /* 0, as its return value */
.else
        movq    \value, %rax            /* the value, as its return value */
.endif
        notrack jmp *%rcx
.endm

#endif
