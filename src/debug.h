/*
 * debug.h -- the registry of live runtimes that debuggers walk (through
 * fib_debug_layout.runtimes): fib_runtime_create adds, destroy removes.
 */
#ifndef FIB__DEBUG_H
#define FIB__DEBUG_H

struct fib_runtime;

void fib__debug_runtime_add(struct fib_runtime *rt);
void fib__debug_runtime_remove(struct fib_runtime *rt);

#endif
