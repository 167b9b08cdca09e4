/* SPDX-License-Identifier: MIT */
/*
 * tls.h -- how the library declares its thread-local variables.
 *
 * initial-exec: an access is one %fs-relative load, also in the shared
 * library (the default model there would call __tls_get_addr on every
 * switch), and it never allocates, so the overflow handler may read them.
 * The cost is a few bytes of the static TLS block, which glibc reserves
 * for libraries like this one, even when dlopen'ed.
 *
 * The TLS rule (docs/internals.md): the library reads these afresh after
 * every switch and never keeps their address across one.
 */
#ifndef FIB__TLS_H
#define FIB__TLS_H

#define FIB__TLS _Thread_local __attribute__((tls_model("initial-exec")))

#endif
