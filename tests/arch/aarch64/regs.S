/* SPDX-License-Identifier: MIT */
/*
 * regs.S -- test helper for AArch64 (AAPCS64): call a function with every
 * callee-saved register holding a known pattern, and report which ones
 * came back changed.
 *
 * unsigned regs_call_preserved(void (*fn)(void *), void *arg, uint64_t seed)
 *   Loads x19-x29 and d8-d15 with seed ^ (k << 48) (k distinct per
 *   register),
 *   calls fn(arg), and returns a bit mask of the registers that no longer
 *   hold their pattern: bit i for x(19+i), i = 0..10 (bit 10 is x29, the
 *   frame pointer), bit 11+j for d(8+j), j = 0..7. The caller's own
 *   registers are saved and restored around all this.
 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C bti c
#define GNU_PROPERTY_BTI 1
#else
#define BTI_C
#define GNU_PROPERTY_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define GNU_PROPERTY_PAC 2
#else
#define GNU_PROPERTY_PAC 0
#endif

/* the pattern for register number k: seed ^ (k * 0x0101) << 48 */
.macro  PATTERN dst, seed, k
        movz    \dst, #(\k * 0x0101), lsl #48
        eor     \dst, \dst, \seed
.endm

/* mask |= bit if the GPR differs from its pattern */
.macro  CHECKX reg, k, bit
        PATTERN x9, x10, \k
        cmp     \reg, x9
        cset    w11, ne
        orr     w0, w0, w11, lsl #\bit
.endm

.macro  CHECKD reg, k, bit
        PATTERN x9, x10, \k
        fmov    x12, \reg
        cmp     x12, x9
        cset    w11, ne
        orr     w0, w0, w11, lsl #\bit
.endm

        .text
        .globl  regs_call_preserved
        .type   regs_call_preserved, %function
        .p2align 4
regs_call_preserved:
        .cfi_startproc
        BTI_C
        stp     x29, x30, [sp, #-160]!          /* our caller's state */
        .cfi_def_cfa_offset 160
        .cfi_offset x29, -160
        .cfi_offset x30, -152
        stp     x19, x20, [sp, #16]
        stp     x21, x22, [sp, #32]
        stp     x23, x24, [sp, #48]
        stp     x25, x26, [sp, #64]
        stp     x27, x28, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        str     x2, [sp, #-16]!                 /* seed, for the checks */
        .cfi_adjust_cfa_offset 16

        mov     x9, x0                          /* fn */
        mov     x0, x1                          /* arg */
        PATTERN x19, x2, 1
        PATTERN x20, x2, 2
        PATTERN x21, x2, 3
        PATTERN x22, x2, 4
        PATTERN x23, x2, 5
        PATTERN x24, x2, 6
        PATTERN x25, x2, 7
        PATTERN x26, x2, 8
        PATTERN x27, x2, 9
        PATTERN x28, x2, 10
        PATTERN x29, x2, 11
        PATTERN x10, x2, 12
        fmov    d8, x10
        PATTERN x10, x2, 13
        fmov    d9, x10
        PATTERN x10, x2, 14
        fmov    d10, x10
        PATTERN x10, x2, 15
        fmov    d11, x10
        PATTERN x10, x2, 16
        fmov    d12, x10
        PATTERN x10, x2, 17
        fmov    d13, x10
        PATTERN x10, x2, 18
        fmov    d14, x10
        PATTERN x10, x2, 19
        fmov    d15, x10
        blr     x9

        ldr     x10, [sp]                       /* seed */
        mov     w0, #0                          /* mismatch mask */
        CHECKX  x19, 1, 0
        CHECKX  x20, 2, 1
        CHECKX  x21, 3, 2
        CHECKX  x22, 4, 3
        CHECKX  x23, 5, 4
        CHECKX  x24, 6, 5
        CHECKX  x25, 7, 6
        CHECKX  x26, 8, 7
        CHECKX  x27, 9, 8
        CHECKX  x28, 10, 9
        CHECKX  x29, 11, 10
        CHECKD  d8, 12, 11
        CHECKD  d9, 13, 12
        CHECKD  d10, 14, 13
        CHECKD  d11, 15, 14
        CHECKD  d12, 16, 15
        CHECKD  d13, 17, 16
        CHECKD  d14, 18, 17
        CHECKD  d15, 19, 18

        add     sp, sp, #16
        .cfi_adjust_cfa_offset -16
        ldp     x19, x20, [sp, #16]
        ldp     x21, x22, [sp, #32]
        ldp     x23, x24, [sp, #48]
        ldp     x25, x26, [sp, #64]
        ldp     x27, x28, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        ldp     x29, x30, [sp], #160
        .cfi_adjust_cfa_offset -160
        ret
        .cfi_endproc
        .size   regs_call_preserved, . - regs_call_preserved

#if GNU_PROPERTY_BTI || GNU_PROPERTY_PAC
/* BTI/PAC compatible, as asked: one unmarked object drops the link's note */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4, 16, 5
        .asciz  "GNU"
        .long   0xc0000000, 4, GNU_PROPERTY_BTI | GNU_PROPERTY_PAC, 0
#endif
        .section .note.GNU-stack, "", %progbits
