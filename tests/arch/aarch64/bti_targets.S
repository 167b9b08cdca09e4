/* SPDX-License-Identifier: MIT */
/*
 * bti_targets.S -- two functions for test_bti, both reached through a
 * function pointer (blr): bti_marked begins with a landing pad,
 * bti_unmarked deliberately does not. The object still claims BTI in its
 * property note (a lie, on purpose), so the link stays BTI-marked and the
 * loader guards the pages: calling bti_unmarked must then raise a Branch
 * Target exception (SIGILL).
 *
 * int bti_marked(void), int bti_unmarked(void): both return 42.
 */
        .text
        .globl  bti_marked
        .type   bti_marked, %function
        .p2align 4
bti_marked:
        bti     c                               /* a valid blr target */
        mov     w0, #42
        ret
        .size   bti_marked, . - bti_marked

        .globl  bti_unmarked
        .type   bti_unmarked, %function
        .p2align 4
bti_unmarked:
        mov     w0, #42                         /* no bti: faults via blr */
        ret
        .size   bti_unmarked, . - bti_unmarked

        .section .note.gnu.property, "a"
        .p2align 3
        .long   4, 16, 5
        .asciz  "GNU"
        .long   0xc0000000, 4, 1, 0             /* AArch64 feature: BTI */
        .section .note.GNU-stack, "", %progbits
