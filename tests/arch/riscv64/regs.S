/* SPDX-License-Identifier: MIT */
/*
 * regs.S -- test helper for RISC-V 64 (LP64D): call a function with every
 * callee-saved register holding a known pattern, and report which ones
 * came back changed.
 *
 * unsigned regs_call_preserved(void (*fn)(void *), void *arg, uint64_t seed)
 *   Loads s0-s11 and fs0-fs11 with seed ^ (k << 48) (k distinct per
 *   register), calls fn(arg), and returns a bit mask of the registers that
 *   no longer hold their pattern: bit i for s(i), i = 0..11 (s0 is the
 *   frame pointer), bit 12+j for fs(j), j = 0..11. The caller's own
 *   registers are saved and restored around all this.
 */
#if !defined(__riscv_flen) || __riscv_flen < 64
#error "regs.S expects the LP64D ABI (callee-saved fs0-fs11)"
#endif

/* dst = the pattern for register number k (t1 scratch) */
.macro  PATTERN dst, seed, k
        li      t1, (\k << 48)
        xor     \dst, \seed, t1
.endm

/* a0 |= 1 << bit if the register's value (in t2) differs from pattern k */
.macro  CHECK k, bit
        PATTERN t3, t0, \k
        xor     t3, t3, t2
        snez    t3, t3
        slli    t3, t3, \bit
        or      a0, a0, t3
.endm

        .text
        .globl  regs_call_preserved
        .type   regs_call_preserved, @function
        .p2align 2
regs_call_preserved:
        .cfi_startproc
        addi    sp, sp, -224                    /* our caller's state */
        .cfi_def_cfa_offset 224
        sd      ra, 216(sp)
        .cfi_offset ra, -8
        sd      s0, 0(sp)
        sd      s1, 8(sp)
        sd      s2, 16(sp)
        sd      s3, 24(sp)
        sd      s4, 32(sp)
        sd      s5, 40(sp)
        sd      s6, 48(sp)
        sd      s7, 56(sp)
        sd      s8, 64(sp)
        sd      s9, 72(sp)
        sd      s10, 80(sp)
        sd      s11, 88(sp)
        fsd     fs0, 96(sp)
        fsd     fs1, 104(sp)
        fsd     fs2, 112(sp)
        fsd     fs3, 120(sp)
        fsd     fs4, 128(sp)
        fsd     fs5, 136(sp)
        fsd     fs6, 144(sp)
        fsd     fs7, 152(sp)
        fsd     fs8, 160(sp)
        fsd     fs9, 168(sp)
        fsd     fs10, 176(sp)
        fsd     fs11, 184(sp)
        sd      a2, 192(sp)                     /* seed, for the checks */

        mv      t0, a0                          /* fn */
        mv      a0, a1                          /* arg */
        PATTERN s0, a2, 1
        PATTERN s1, a2, 2
        PATTERN s2, a2, 3
        PATTERN s3, a2, 4
        PATTERN s4, a2, 5
        PATTERN s5, a2, 6
        PATTERN s6, a2, 7
        PATTERN s7, a2, 8
        PATTERN s8, a2, 9
        PATTERN s9, a2, 10
        PATTERN s10, a2, 11
        PATTERN s11, a2, 12
        PATTERN t2, a2, 13
        fmv.d.x fs0, t2
        PATTERN t2, a2, 14
        fmv.d.x fs1, t2
        PATTERN t2, a2, 15
        fmv.d.x fs2, t2
        PATTERN t2, a2, 16
        fmv.d.x fs3, t2
        PATTERN t2, a2, 17
        fmv.d.x fs4, t2
        PATTERN t2, a2, 18
        fmv.d.x fs5, t2
        PATTERN t2, a2, 19
        fmv.d.x fs6, t2
        PATTERN t2, a2, 20
        fmv.d.x fs7, t2
        PATTERN t2, a2, 21
        fmv.d.x fs8, t2
        PATTERN t2, a2, 22
        fmv.d.x fs9, t2
        PATTERN t2, a2, 23
        fmv.d.x fs10, t2
        PATTERN t2, a2, 24
        fmv.d.x fs11, t2
        jalr    t0

        ld      t0, 192(sp)                     /* seed */
        li      a0, 0                           /* mismatch mask */
        mv      t2, s0
        CHECK   1, 0
        mv      t2, s1
        CHECK   2, 1
        mv      t2, s2
        CHECK   3, 2
        mv      t2, s3
        CHECK   4, 3
        mv      t2, s4
        CHECK   5, 4
        mv      t2, s5
        CHECK   6, 5
        mv      t2, s6
        CHECK   7, 6
        mv      t2, s7
        CHECK   8, 7
        mv      t2, s8
        CHECK   9, 8
        mv      t2, s9
        CHECK   10, 9
        mv      t2, s10
        CHECK   11, 10
        mv      t2, s11
        CHECK   12, 11
        fmv.x.d t2, fs0
        CHECK   13, 12
        fmv.x.d t2, fs1
        CHECK   14, 13
        fmv.x.d t2, fs2
        CHECK   15, 14
        fmv.x.d t2, fs3
        CHECK   16, 15
        fmv.x.d t2, fs4
        CHECK   17, 16
        fmv.x.d t2, fs5
        CHECK   18, 17
        fmv.x.d t2, fs6
        CHECK   19, 18
        fmv.x.d t2, fs7
        CHECK   20, 19
        fmv.x.d t2, fs8
        CHECK   21, 20
        fmv.x.d t2, fs9
        CHECK   22, 21
        fmv.x.d t2, fs10
        CHECK   23, 22
        fmv.x.d t2, fs11
        CHECK   24, 23

        ld      s0, 0(sp)
        ld      s1, 8(sp)
        ld      s2, 16(sp)
        ld      s3, 24(sp)
        ld      s4, 32(sp)
        ld      s5, 40(sp)
        ld      s6, 48(sp)
        ld      s7, 56(sp)
        ld      s8, 64(sp)
        ld      s9, 72(sp)
        ld      s10, 80(sp)
        ld      s11, 88(sp)
        fld     fs0, 96(sp)
        fld     fs1, 104(sp)
        fld     fs2, 112(sp)
        fld     fs3, 120(sp)
        fld     fs4, 128(sp)
        fld     fs5, 136(sp)
        fld     fs6, 144(sp)
        fld     fs7, 152(sp)
        fld     fs8, 160(sp)
        fld     fs9, 168(sp)
        fld     fs10, 176(sp)
        fld     fs11, 184(sp)
        ld      ra, 216(sp)
        addi    sp, sp, 224
        .cfi_def_cfa_offset 0
        ret
        .cfi_endproc
        .size   regs_call_preserved, . - regs_call_preserved

        .section .note.GNU-stack, "", @progbits
