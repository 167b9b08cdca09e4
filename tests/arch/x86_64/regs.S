/* SPDX-License-Identifier: MIT */
/*
 * regs.S -- test helper for x86-64 System V: call a function with every
 * callee-saved register holding a known pattern, and report which ones
 * came back changed.
 *
 * unsigned regs_call_preserved(void (*fn)(void *), void *arg, uint64_t seed)
 *   Loads rbx, rbp, r12-r15 with seed ^ k (k distinct per register), calls
 *   fn(arg), and returns a bit mask of the registers that no longer hold
 *   their pattern (bit 0 rbx, 1 rbp, 2 r12, 3 r13, 4 r14, 5 r15). The
 *   caller's own registers are saved and restored around all this.
 */
#if defined(__CET__) && (__CET__ & 1)
#define ENDBR endbr64
#else
#define ENDBR
#endif

        .text
        .globl  regs_call_preserved
        .type   regs_call_preserved, @function
        .p2align 4
regs_call_preserved:
        .cfi_startproc
        ENDBR
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        pushq   %rdx                    /* seed, at 0(%rsp); also aligns */
        .cfi_adjust_cfa_offset 8

        movq    %rdi, %rax              /* fn */
        movq    %rsi, %rdi              /* arg */
        movq    %rdx, %rbx
        xorq    $0x1111, %rbx
        movq    %rdx, %rbp
        xorq    $0x2222, %rbp
        movq    %rdx, %r12
        xorq    $0x3333, %r12
        movq    %rdx, %r13
        xorq    $0x4444, %r13
        movq    %rdx, %r14
        xorq    $0x5555, %r14
        movq    %rdx, %r15
        xorq    $0x6666, %r15
        call    *%rax

        xorl    %eax, %eax              /* mismatch mask */
        movq    (%rsp), %rdx            /* seed */
        movq    %rdx, %rcx
        xorq    $0x1111, %rcx
        cmpq    %rcx, %rbx
        je      1f
        orl     $1, %eax
1:      movq    %rdx, %rcx
        xorq    $0x2222, %rcx
        cmpq    %rcx, %rbp
        je      2f
        orl     $2, %eax
2:      movq    %rdx, %rcx
        xorq    $0x3333, %rcx
        cmpq    %rcx, %r12
        je      3f
        orl     $4, %eax
3:      movq    %rdx, %rcx
        xorq    $0x4444, %rcx
        cmpq    %rcx, %r13
        je      4f
        orl     $8, %eax
4:      movq    %rdx, %rcx
        xorq    $0x5555, %rcx
        cmpq    %rcx, %r14
        je      5f
        orl     $16, %eax
5:      movq    %rdx, %rcx
        xorq    $0x6666, %rcx
        cmpq    %rcx, %r15
        je      6f
        orl     $32, %eax
6:
        popq    %rdx
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        popq    %r14
        .cfi_adjust_cfa_offset -8
        popq    %r13
        .cfi_adjust_cfa_offset -8
        popq    %r12
        .cfi_adjust_cfa_offset -8
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        ret
        .cfi_endproc
        .size   regs_call_preserved, . - regs_call_preserved

#if defined(__CET__) && (__CET__ & 1)
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4, 16, 5
        .asciz  "GNU"
        .long   0xc0000002, 4, 1
        .p2align 3
#endif
        .section .note.GNU-stack, "", @progbits
