/* SPDX-License-Identifier: MIT */
/*
 * notes.h -- what every x86-64 assembly file of the library shares about
 * CET and the stack: ENDBR at each indirectly reached entry, and
 * OBJECT_NOTES, which ends each file. Assembly only.
 *
 * The GNU property note marks the object IBT-compatible (endbr64 at every
 * indirectly reached entry). SHSTK is not claimed: the switch leaves the
 * shadow stack unbalanced (arch/x86_64/switch.S). The linker keeps a
 * property only if every object has it, so a file that assembles to
 * nothing (coro_x86_64.S in sanitizer builds) still carries the note, or
 * it would drop IBT from the whole link. The empty .note.GNU-stack says
 * the object needs no executable stack.
 */
#ifndef FIB__ARCH_X86_64_NOTES_H
#define FIB__ARCH_X86_64_NOTES_H

#if defined(__CET__) && (__CET__ & 1)
#define ENDBR endbr64
#else
#define ENDBR
#endif

.macro  OBJECT_NOTES
#if defined(__CET__) && (__CET__ & 1)
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size ("GNU\0") */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
        .long   4                       /* property data size */
        .long   1                       /* GNU_PROPERTY_X86_FEATURE_1_IBT */
        .p2align 3
#endif
        .section .note.GNU-stack, "", @progbits
.endm

#endif
