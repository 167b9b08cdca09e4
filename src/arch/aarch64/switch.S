/* SPDX-License-Identifier: MIT */
/*
 * switch.S -- context switch for AArch64, AAPCS64 (Linux, ELF), GNU as.
 *
 * ABI facts this file relies on (Procedure Call Standard for the Arm 64-bit
 * Architecture, sections 6.1.1, 6.1.2, 6.4):
 *   - x19-x28, x29 (frame pointer) and sp are callee-saved; x30 (lr) holds
 *     the return address. Every other general-purpose register is
 *     caller-saved: the compiler already assumes the call clobbered them.
 *   - Of the SIMD/FP registers only the low 64 bits of v8-v15 (d8-d15) are
 *     callee-saved.
 *   - FPCR (rounding mode, flush-to-zero, default-NaN) is callee-saved
 *     state: a fiber that changes the rounding mode must not change it for
 *     the others. FPSR (cumulative exception flags) is not saved.
 *   - sp is 16-byte aligned at all times (the hardware checks it on every
 *     sp-based access under Linux); the frame is a multiple of 16.
 *
 * The saved frame, on the suspended context's own stack (offsets from the
 * saved stack pointer; defined once in frame.h):
 *
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   |  0  |  8  | 16  | 24  | 32  | 40  | 48  | 56  | 64  | 72  | 80  | 88  |
 *   | x19 | x20 | x21 | x22 | x23 | x24 | x25 | x26 | x27 | x28 | x29 | x30 |
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   | 96  | 104 | 112 | 120 | 128 | 136 | 144 | 152 | 160  | 168 |
 *   | d8  | d9  | d10 | d11 | d12 | d13 | d14 | d15 | fpcr | pad |
 *   +-----+-----+-----+-----+-----+-----+-----+-----+------+-----+
 *
 * Branch protection (-mbranch-protection=standard, i.e. BTI + PAC-ret):
 *
 *   BTI. A resumed context continues right after its `bl fib__ctx_switch`,
 *   and such return sites carry no landing pad: a `br` to them would take a
 *   Branch Target exception (SIGILL) on a BTI-guarded page. So the switch
 *   resumes with `ret` (x30 loaded from the frame), which BTI does not
 *   check, exactly as an ordinary return does. The entry trampoline is
 *   reached the same way (its address is the x30 of a new context's first
 *   frame), so it needs no landing pad either, and deliberately has none:
 *   a pad would make it a legal target for br/blr gadgets. The two switch
 *   functions are global and may be reached by br/blr (a PLT, a function
 *   pointer), so they begin with `bti c`. The trampoline calls the entry
 *   with `blr`, so entries are C functions (the compiler gives them
 *   `bti c`).
 *
 *   PAC. This file never signs or authenticates: a return address signed
 *   with paciasp is bound to the stack pointer at the time of signing, and
 *   a switch's caller and resumer run on different stacks, so signing here
 *   would be wrong or need the new context's first frame to be signed from
 *   C. The C code around the switch keeps its own pac-ret pairs intact:
 *   each function signs x30 on its own stack and authenticates it on the
 *   same stack with the same sp, which the switch restores exactly. The
 *   cost: the saved x30 in a suspended frame is a plain address (like the
 *   pc in a jmp_buf), not a signed one.
 */
#include "frame.h"

#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C bti c
#define FIB__GNU_PROPERTY_BTI 1
#else
#define BTI_C
#define FIB__GNU_PROPERTY_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define FIB__GNU_PROPERTY_PAC 2
#else
#define FIB__GNU_PROPERTY_PAC 0
#endif

        .text

/* The head of a global function that is hidden outside the library:
 * symbol, type, alignment, and the start of its unwind information. */
.macro  FUNC name
        .globl  \name
        .hidden \name
        .type   \name, %function
        .p2align 4
\name:
        .cfi_startproc
.endm

/*
 * void *fib__ctx_switch(void **save_sp, void *load_sp, void *value)
 * void *fib__ctx_switch_nofp(void **save_sp, void *load_sp, void *value)
 *   x0: where to store the stack pointer of the context we leave
 *   x1: the stack pointer of the context to resume
 *   x2: value handed over; returned in x0 on the resumed side
 *
 * The _nofp variant leaves FPCR alone (its frame slot is neither written
 * nor read), for contexts that share the thread's FP control state. A
 * context must always be entered and left by the same variant; the
 * coroutine layer guarantees it.
 */
/*
 * The second half of a switch: sp points at the frame of the context to
 * resume (and the CFA is described as sp + FIB__FRAME_SIZE); restore it
 * and go on where it left off, with \value as its return value.
 */
.macro  RESUME load_fp, value
.if \load_fp
        ldr     x9, [sp, #FIB__FRAME_FPCR]       /* its FP control state */
        mrs     x10, fpcr
        cmp     x9, x10                         /* writing FPCR may stall */
        b.eq    1f                              /* the pipeline: skip if */
        msr     fpcr, x9                        /* it is unchanged */
1:
.endif
        ldp     x19, x20, [sp, #FIB__FRAME_X19]  /* its callee-saved GPRs */
        ldp     x21, x22, [sp, #FIB__FRAME_X21]
        ldp     x23, x24, [sp, #FIB__FRAME_X23]
        ldp     x25, x26, [sp, #FIB__FRAME_X25]
        ldp     x27, x28, [sp, #FIB__FRAME_X27]
        ldp     x29, x30, [sp, #FIB__FRAME_X29]  /* fp; x30: where it goes */
        ldp     d8, d9, [sp, #FIB__FRAME_D8]     /* its FP halves */
        ldp     d10, d11, [sp, #FIB__FRAME_D10]
        ldp     d12, d13, [sp, #FIB__FRAME_D12]
        ldp     d14, d15, [sp, #FIB__FRAME_D14]
        add     sp, sp, #FIB__FRAME_SIZE         /* pop the frame */
        .cfi_adjust_cfa_offset -FIB__FRAME_SIZE
        mov     x0, \value                      /* the value, returned */
        ret                                     /* not br: see top */
.endm

.macro  SWITCH name, save_fp
        FUNC    \name
        BTI_C                                   /* reachable by br/blr */
        sub     sp, sp, #FIB__FRAME_SIZE         /* the frame */
        .cfi_adjust_cfa_offset FIB__FRAME_SIZE
        stp     x19, x20, [sp, #FIB__FRAME_X19]  /* callee-saved GPRs */
        stp     x21, x22, [sp, #FIB__FRAME_X21]
        stp     x23, x24, [sp, #FIB__FRAME_X23]
        stp     x25, x26, [sp, #FIB__FRAME_X25]
        stp     x27, x28, [sp, #FIB__FRAME_X27]
        stp     x29, x30, [sp, #FIB__FRAME_X29]  /* fp, and where we go on */
        stp     d8, d9, [sp, #FIB__FRAME_D8]     /* callee-saved FP halves */
        stp     d10, d11, [sp, #FIB__FRAME_D10]
        stp     d12, d13, [sp, #FIB__FRAME_D12]
        stp     d14, d15, [sp, #FIB__FRAME_D14]
.if \save_fp
        mrs     x9, fpcr                        /* FP control state */
        str     x9, [sp, #FIB__FRAME_FPCR]
.endif

        mov     x9, sp                          /* (str cannot take sp) */
        str     x9, [x0]                        /* the context we leave */
        mov     sp, x1                          /* the resumed one's stack */

        RESUME  \save_fp, x2
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
 *   x0: the stack pointer of the context to resume; x1: the value
 *
 * The second half of the switch alone, for a context that has finished
 * and is never resumed: nothing of it is saved. The variant must be the
 * one the resumed context was left by.
 */
.macro  JUMP name, load_fp
        FUNC    \name
        BTI_C                                   /* reachable by br/blr */
        mov     sp, x0                          /* the finished one is gone */
        .cfi_def_cfa sp, FIB__FRAME_SIZE
        RESUME  \load_fp, x1
        .cfi_endproc
        .size   \name, . - \name
.endm

        JUMP    fib__ctx_jump, 1
        JUMP    fib__ctx_jump_nofp, 0

/*
 * The first code a new context runs (fib__ctx_make puts it in the frame's
 * x30 slot, so the first switch's `ret` lands here: no landing pad, see
 * top). On entry: x19 = the entry function, x0 = the value the first
 * switch passed, sp 16-byte aligned. Its CFI says the return address is
 * undefined, so unwinders (gdb, backtrace(), perf) stop here cleanly, and
 * x29 = 0 ends frame-pointer chains (AAPCS64 6.4.6: a frame record of
 * zero terminates the chain).
 */
        FUNC    fib__ctx_entry_trampoline
        .cfi_undefined x30
        mov     x29, #0                         /* no caller frame */
        mov     x30, #0                         /* no return address */
        blr     x19                             /* entry(value); has bti c */
        brk     #0x3e8                          /* entries never return */
        .cfi_endproc
        .size   fib__ctx_entry_trampoline, . - fib__ctx_entry_trampoline

#if FIB__GNU_PROPERTY_BTI || FIB__GNU_PROPERTY_PAC
/* GNU property note: this object is BTI-compatible (a landing pad at every
 * entry reached by br/blr) and PAC-compatible (it never breaks a pac-ret
 * pair; see top), as the compiler's -mbranch-protection asked. One object
 * without it would drop the property from the whole link. */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size ("GNU\0") */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .long   4                       /* property data size */
        .long   FIB__GNU_PROPERTY_BTI | FIB__GNU_PROPERTY_PAC /* 1 BTI, 2 PAC */
        .long   0                       /* pad to 8 bytes */
#endif

/* No executable stack needed. */
        .section .note.GNU-stack, "", %progbits
