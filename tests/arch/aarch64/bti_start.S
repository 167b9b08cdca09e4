/* SPDX-License-Identifier: MIT */
/*
 * bti_start.S -- a BTI-marked program entry, for the tests that must run
 * with BTI enforced (test_bti, test_switch_bti; see tests.cmake).
 *
 * The loader (the kernel, or qemu-user for the main program) turns on BTI
 * for an executable only if every object in the link carries the BTI
 * property note. Debian 12's crt1.o, crti.o, crtn.o and crtbegin/end.o do
 * not, so any ordinary link silently loses the note. These tests link with
 * -nostartfiles and start here instead: the same job as glibc's _start
 * (hand main, argc, argv and the loader's finaliser to
 * __libc_start_main), with a landing pad, since the loader jumps here with
 * `br`. Without crti/crtn there is no DT_INIT/_fini (the init/fini arrays
 * still run) and without crtbegin no __dso_handle: the tests need neither.
 *
 * pthread_atfork is here too, for the same reason: glibc's lives in
 * libc_nonshared.a, unmarked (and it wants crtbegin's __dso_handle), and
 * the library registers fork handlers. This one does what that one does:
 * register with the main program's handle, which is 0.
 */
#if !defined(__ARM_FEATURE_BTI_DEFAULT) || !__ARM_FEATURE_BTI_DEFAULT
#error "bti_start.S is for -mbranch-protection=standard builds"
#endif

        .text
        .globl  _start
        .type   _start, %function
_start:
        .cfi_startproc
        .cfi_undefined x30
        bti     c                               /* entered by br */
        mov     x29, #0                         /* outermost frame */
        mov     x30, #0
        mov     x5, x0                          /* rtld_fini, from ld.so */
        ldr     x1, [sp]                        /* argc */
        add     x2, sp, #8                      /* argv */
        mov     x6, sp                          /* stack_end */
        adrp    x0, :got:main                   /* main */
        ldr     x0, [x0, :got_lo12:main]
        mov     x3, #0                          /* init: unused since 2.34 */
        mov     x4, #0                          /* fini: unused since 2.34 */
        bl      __libc_start_main               /* never returns */
        brk     #0x3e8
        .cfi_endproc
        .size   _start, . - _start

/* int pthread_atfork(prepare, parent, child): x0-x2 pass through */
        .globl  pthread_atfork
        .type   pthread_atfork, %function
pthread_atfork:
        .cfi_startproc
        bti     c                               /* called through the PLT */
        mov     x3, #0                          /* dso handle: the program */
        b       __register_atfork
        .cfi_endproc
        .size   pthread_atfork, . - pthread_atfork

        .section .note.gnu.property, "a"
        .p2align 3
        .long   4, 16, 5                        /* "GNU", 16 bytes, type 0 */
        .asciz  "GNU"
        .long   0xc0000000, 4, 3, 0             /* AArch64 feature: BTI, PAC */
        .section .note.GNU-stack, "", %progbits
