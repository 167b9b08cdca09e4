/* SPDX-License-Identifier: MIT */
/*
 * fibers.h -- the public API of the fibers runtime.
 *
 * fibers are stackful user-space threads for C, on Linux (x86-64, aarch64,
 * riscv64). Each fiber owns a stack with a guard region below it (unless
 * FIB_GUARD_NONE is asked for); the CPU context is switched in assembly; a
 * runtime schedules its fibers cooperatively on the one OS thread that runs
 * it (FIFO, with the fibers a fiber spawns run first: see fib_run).
 *
 * Two layers are public:
 *   - coroutines (fib_coro_*): resume / yield with a value, no scheduler;
 *   - the runtime (fib_runtime_*, fib_spawn, fib_yield, fib_join, ...),
 *     built on the coroutines.
 *
 * Conventions (as in libuv): every call that can fail returns 0 (or a
 * count) on success and a negative errno code on failure, one of the FIB_E*
 * values below, never through errno or any other thread-local.
 * fib_strerror() and fib_err_name() describe a code. The library never
 * prints, except the one-line report it writes just before the process dies
 * (a stack overflow, or a misuse that no caller could handle, such as
 * fib_exit() outside a fiber).
 *
 * Signals: the first time a thread creates a coroutine or fiber or runs a
 * runtime, the library installs a SIGSEGV and SIGBUS handler (once per
 * process, SA_SIGINFO | SA_ONSTACK) and gives the thread an alternate
 * signal stack (a thread that has one keeps it). A fault in a guard region,
 * or with the stack pointer below the running stack, is reported in one
 * line on stderr naming the fiber (id and name) or "coroutine", the stack
 * and guard sizes and the fault address:
 *   fibers: stack overflow in fiber 2 "parser" (stack 65536 bytes, guard
 *   4096 bytes, fault address 0x7fc6c9b7df90)
 * then the default action is restored and the fault recurs, so the process
 * dies by the signal (with a core dump where enabled). Any other fault goes
 * to the handler installed before the library's (or the default action). A
 * handler the program installs after the library's replaces it, and
 * overflows are then no longer reported. Build fiber code with
 * -fstack-clash-protection, so that a frame larger than the guard touches
 * it instead of stepping over it.
 *
 * Thread safety: a runtime and its fibers belong to the OS thread that runs
 * them (between fib_runtime_create() and fib_run() any one thread may use
 * it). A fiber that has run changes thread only in a runtime with several
 * workers, and only if it asked for that (FIB_MIGRATABLE, fib_move_to):
 * see "Thread-local storage under migration" at FIB_MIGRATABLE. Different
 * runtimes may run on different threads at the same time.
 * A coroutine runs on whichever thread resumes it, but only one at a time.
 */
#ifndef FIBERS_H
#define FIBERS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FIB_BUILDING_LIBRARY) && defined(__GNUC__)
#define FIB_API __attribute__((visibility("default")))
#else
#define FIB_API
#endif

#if defined(__GNUC__)
#define FIB_NORETURN __attribute__((noreturn))
#else
#define FIB_NORETURN
#endif

#define FIB_VERSION_MAJOR 0
#define FIB_VERSION_MINOR 1
#define FIB_VERSION_PATCH 0

/* The library's version as MAJOR * 10000 + MINOR * 100 + PATCH. */
FIB_API int fib_version(void);

/* ------------------------------------------------------------------ errors */

/*
 * The error codes the library names. Each is the negated errno value of
 * the same name, so FIB_ENOMEM == -ENOMEM. The I/O calls (<fibers/io.h>)
 * hand kernel errors back unchanged as -errno: the common ones are here,
 * and fib_strerror describes any other as the C library does.
 */
#define FIB_ERRNO_MAP(X)                                                     \
  X(EINVAL, "invalid argument")                                              \
  X(ENOMEM, "out of memory or out of memory mappings")                       \
  X(EPERM, "not permitted here (outside a fiber, or not the caller's)")      \
  X(EDEADLK, "deadlock: a fiber would wait for itself or forever")           \
  X(ESRCH, "no such fiber (never spawned, already joined, or detached)")     \
  X(EBUSY, "busy: the object is running or in use")                         \
  X(ETIMEDOUT, "the deadline passed first")                                  \
  X(ECANCELED, "the fiber was cancelled")                                    \
  X(EPIPE, "the channel is closed, or the peer has closed its end")         \
  X(EAGAIN, "not available now, and the call does not wait")                 \
  X(EOVERFLOW, "a counter would overflow")                                   \
  X(EBADF, "not an open file descriptor, or closed while waited on")         \
  X(ECONNRESET, "connection reset by peer")                                  \
  X(ECONNREFUSED, "connection refused")                                      \
  X(ECONNABORTED, "connection aborted")                                      \
  X(ENOTCONN, "the socket is not connected")                                 \
  X(EADDRINUSE, "address already in use")                                    \
  X(EADDRNOTAVAIL, "address not available")                                  \
  X(ENETUNREACH, "network unreachable")                                      \
  X(EHOSTUNREACH, "host unreachable")                                        \
  X(EMFILE, "too many open files in this process")                           \
  X(ENFILE, "too many open files in the system")                             \
  X(ENOTSOCK, "not a socket")                                                \
  X(EINPROGRESS, "the operation is in progress")                             \
  X(EIO, "input/output error")                                               \
  X(ENOSPC, "no space left on the device")                                   \
  X(EACCES, "permission denied")                                             \
  X(ENOENT, "no such file, directory or name")                               \
  X(ENOSYS, "not supported by this kernel")                                  \
  X(ENOTSUP, "not supported (yet) in this configuration")

enum {
#define FIB_ERRNO_ENUM(name, text) FIB_##name = -name,
  FIB_ERRNO_MAP(FIB_ERRNO_ENUM)
#undef FIB_ERRNO_ENUM
  FIB_ERRNO_END_ = 0
};

/* A static, human-readable description of an error code: the text above
 * for the codes named there, the C library's text for any other negated
 * errno value and for the name-lookup codes FIB_EAI_* (<fibers/io.h>),
 * "unknown error" for anything else. Never NULL. */
FIB_API const char *fib_strerror(int err);

/* The code's symbolic name, e.g. "ENOMEM" or "EAI_NONAME" ("UNKNOWN" if
 * not one of ours). */
FIB_API const char *fib_err_name(int err);

/* ------------------------------------------------------------ attributes */

/* Smallest and largest stack a fiber or coroutine may ask for (usable bytes,
 * not counting the guard region). Sizes are rounded up to whole pages. */
#define FIB_STACK_MIN ((size_t)16 * 1024)
#define FIB_STACK_MAX ((size_t)1 << 30)
/* The default: 64 KiB of usable stack. Memory is committed lazily, so an
 * idle fiber costs only the pages it has touched (typically one); 64 KiB
 * keeps page-table overhead per fiber small while leaving room for libc
 * calls such as printf. Overflow is caught by the guard region. A freed
 * stack is kept for reuse, with the pages it touched, in a pool per thread
 * (found by size and guard mode): 256 stacks for good, and beyond that what
 * the program has been using, until a second passes in which it did not
 * need them. */
#define FIB_STACK_DEFAULT ((size_t)64 * 1024)

/* Longest fiber name kept (longer names are truncated). */
#define FIB_NAME_MAX 31

/* How the guard region below each stack is made. A guard region is never
 * writable; it is at least one page and at least the compiler's stack-probe
 * interval (4 KiB on x86-64 and riscv64, 64 KiB on aarch64). A mode that is
 * asked for and not available is refused, never replaced by a weaker one. */
typedef enum fib_guard_mode {
  /* MADV_GUARD_INSTALL when the kernel has it (probed once per process),
   * otherwise mprotect(PROT_NONE). The default. */
  FIB_GUARD_AUTO = 0,
  /* Only MADV_GUARD_INSTALL (Linux 6.13+): a guard costs no mapping, so a
   * million guarded stacks fit under vm.max_map_count. Creating a stack
   * fails with FIB_EINVAL on a kernel without it. */
  FIB_GUARD_MADVISE = 1,
  /* Only mprotect(PROT_NONE): each guarded stack costs two mappings, and
   * the runtime refuses (FIB_ENOMEM) to go past its share of
   * /proc/sys/vm/max_map_count. */
  FIB_GUARD_MPROTECT = 2,
  /* No guard region, only when asked for by name: FIB_GUARD_AUTO never
   * picks it, and no failure falls back to it. A canary word sits at the
   * stack's lowest usable address instead. Every switch away from a fiber
   * or coroutine on such a stack (yield, hand-off, resume of another,
   * exit) checks it; a changed canary is reported in one line naming the
   * fiber (id and name, or "coroutine") and its stack, then the process
   * aborts:
   *   fibers: fatal: stack overflow in fiber 2 "parser" (stack 65536
   *   bytes, no guard, canary at 0x7f0000010000 overwritten)
   * Detection is after the fact and best-effort: the overflowing code has
   * run on until its next switch, and may have written below the stack
   * into whatever is mapped there; a frame that steps over the canary word
   * without writing it (or writes the same value back) is not caught.
   * Costs one committed page per stack more than a guarded stack (the
   * canary's page); like FIB_GUARD_MADVISE, it costs no mapping of its
   * own (neighbouring stacks merge). */
  FIB_GUARD_NONE = 3
} fib_guard_mode;

/* Flags for fib_attr.flags (and fib_runtime_opts.flags). */
enum {
  /* Spawn the fiber detached: nobody may join it, and it is freed as soon
   * as it finishes. (fib_attr only) */
  FIB_DETACHED = 1u << 0,
  /* Share the thread's FP control state (x86-64: MXCSR and the x87 control
   * word) instead of keeping the fiber's or coroutine's own: switches skip
   * saving and restoring it, which roughly halves the cost of a switch.
   * The context then runs with whatever rounding mode, FTZ/DAZ and
   * exception masks its resumer has, and a change it makes is seen by the
   * code it switches to. Only for code that never changes them (most code:
   * C programs rarely call fesetround). Default: off, each context keeps
   * its own, as the ABI expects; a new fiber or coroutine starts with the
   * FP control state of the code that created it, as a new thread does.
   * In fib_runtime_opts.flags: the default for every fiber of that
   * runtime. */
  FIB_SHARED_FP = 1u << 1,
  /* Keep the fiber on the worker that spawned it (fib_attr only). In a
   * runtime with several workers (fib_runtime_opts.workers), a fiber that
   * has never run may otherwise be taken by an idle worker, and so run on
   * another thread than its parent's; once it has run, it moves only if
   * it is FIB_MIGRATABLE or calls fib_move_to. The first fiber spawned in
   * a runtime is always pinned: it runs on the thread that calls fib_run.
   * With FIB_MIGRATABLE: FIB_EINVAL. No effect with one worker. */
  FIB_PINNED = 1u << 2,
  /* The runtime takes work from other threads (fib_runtime_opts.flags
   * only): while fibers remain that nothing inside it can wake, fib_run
   * waits for posts (fib_post, fib_call) or plain threads (which may use
   * shared channels: see "Synchronisation") instead of returning
   * FIB_EDEADLK. A runtime becomes so by itself once something is posted
   * to it; this flag says so from the start, for a program whose first
   * post or send may come after its fibers have all started waiting. */
  FIB_ACCEPT_POSTS = 1u << 3,
  /* Compact stack, for fibers and coroutines that mostly sit suspended
   * (a connection waiting for its next request). It runs on a stack its
   * thread shares with the other compact ones of the same stack size and
   * guard mode (a guarded stack like any other: an overflow is caught and
   * reported as usual), and while it is suspended its live frames are kept
   * in a heap buffer of just their size, copied out when it is suspended
   * and back when it resumes. A suspended compact fiber costs what its
   * frames need (a few hundred bytes) instead of a page of stack; each
   * switch into or out of it copies them (and goes through a small
   * switching stack when it leaves the shared stack).
   *
   * The hazard: while it is suspended, its stack's addresses hold another
   * compact fiber's frames, or nothing. A pointer into a suspended compact
   * fiber's stack (the address of one of its locals, handed to another
   * fiber or kept in a global) must not be used until it runs again: pass
   * values, or memory from the heap. Builds without NDEBUG fill a vacated
   * stretch with 0xdb bytes, so such a pointer reads 0xdbdb...
   * (non-canonical as an address: dereferenced, it faults); under
   * AddressSanitizer that stretch is poisoned, so the access is reported.
   *
   * Also: a compact coroutine runs only on the thread that created it
   * (fib_coro_resume elsewhere: FIB_EPERM); FIB_GUARD_NONE is refused
   * (FIB_EINVAL): the shared stack is always guarded; at most 4 stack
   * sizes (times guard modes) of compact fibers per thread (FIB_ENOMEM
   * beyond); running out of memory while suspending one (its buffer must
   * be made, at its first suspension, or grow) is fatal, as nothing can
   * hold its frames; the high-water mark
   * (fib_stack_info.high_water) is the most bytes of frames it has had
   * saved; debuggers' `fiber bt` cannot follow a suspended compact fiber
   * (its frames are in the buffer). fib_attr only. In a runtime with
   * several workers a compact fiber stays on the worker that spawned it
   * (as with FIB_PINNED); fib_attr.worker with it: FIB_EINVAL. */
  FIB_COMPACT = 1u << 4,
  /* The seeded test mode (fib_runtime_opts.flags only): the runtime runs
   * its fibers in an order drawn from a pseudo-random generator seeded with
   * fib_runtime_opts.seed, on virtual time, so that a test explores other
   * interleavings than the usual order and the same seed replays the same
   * one. See "The seeded test mode" below. */
  FIB_SEEDED = 1u << 5,
  /* With FIB_SEEDED: also give way, at random, at the start of the calls
   * that may wait (see "The seeded test mode"). fib_runtime_opts.flags
   * only; without FIB_SEEDED: FIB_EINVAL. */
  FIB_SEED_PREEMPT = 1u << 6,
  /* The fiber may move to another worker after it has run (fib_attr
   * only). In a runtime with several workers, an idle worker may then take
   * it whenever it is ready to run (after a fib_yield, or once whatever it
   * waited for has happened), as it takes fibers that have never run, so
   * that a long-lived fiber's work spreads over the workers too; and one
   * that a fiber of another worker wakes by completing its channel send
   * or receive, or by finishing while it joins it, goes to that worker
   * (as Go runs a goroutine readied by a channel operation on the waker's
   * processor), so that fibers that hand values to each other come
   * together instead of crossing cores at every hand-off. It moves only
   * at those points, never while it runs; fib_nomigrate_begin keeps
   * it where it is for a while, and an I/O call (<fibers/io.h>) runs on
   * one worker from start to end. With FIB_PINNED or FIB_COMPACT:
   * FIB_EINVAL. With fib_attr.worker: it starts on that worker, and may
   * move once it has run. The first fiber too may have it (it starts on
   * the thread that calls fib_run). No effect with one worker, nor with
   * the seeded mode's logical workers.
   *
   * Thread-local storage under migration. Code that runs in a fiber that
   * may move (FIB_MIGRATABLE, or one that calls fib_move_to) must not keep,
   * across a call that may suspend it (any call that may wait, fib_yield,
   * fib_move_to):
   *   - the address of a thread-local variable (_Thread_local, or
   *     __thread), nor a value that stands for the thread (pthread_self);
   *   - errno: read it right after the call that set it, before anything
   *     that may suspend; glibc declares errno's address function const,
   *     so the compiler may compute &errno once per function and reuse it
   *     after the fiber has moved, even across a loop;
   *   - a pthread mutex (or any lock that belongs to a thread) held: after
   *     a move, the unlock would come from another thread.
   * The compiler may keep a thread-local's address (on aarch64 and
   * riscv64, also the thread pointer) in a register across any call,
   * because in C a function never changes thread; so the rule covers
   * thread-locals read directly in the same function before and after the
   * suspension, not only pointers the code keeps on purpose. Read them in
   * a function of their own that the compiler cannot inline or merge
   * (noinline, with an empty asm volatile), or hold fib_nomigrate_begin
   * around the code that uses them. The library keeps the rule itself:
   * its calls return with the state of the thread they return on
   * (fib_self, fib_self_stack, fib_runtime_current, ...), and none of them
   * reports through errno or any other thread-local. docs/multicore.md
   * explains more.
   *
   * FIBERS_FORCE_MIGRATE=1 in the environment (a test mode, for CI) makes
   * every runtime with several workers created from then on treat each of
   * its fibers as FIB_MIGRATABLE, except the first fiber and those with
   * FIB_PINNED, fib_attr.worker or FIB_COMPACT, and move each such fiber
   * to another worker (in turn) every time it gives way or waits, where
   * the guard and I/O calls allow, so that code that breaks the rules
   * above fails in tests. Any other value than 1, 0 or empty makes
   * fib_runtime_create fail (FIB_EINVAL). */
  FIB_MIGRATABLE = 1u << 7
};

/*
 * Optional attributes of a new fiber or coroutine. Zero-initialise and set
 * what you need; zero fields mean "the default".
 */
typedef struct fib_attr {
  size_t stack_size;    /* usable stack bytes; 0: the runtime's default */
  const char *name;     /* copied (fibers only); NULL: no name */
  unsigned flags;       /* FIB_DETACHED (fibers only), FIB_SHARED_FP,
                           FIB_PINNED, FIB_COMPACT, FIB_MIGRATABLE */
  fib_guard_mode guard; /* FIB_GUARD_AUTO: the runtime's (or the default) */
  /* Fibers of a runtime with several workers (fib_runtime_opts.workers):
   * the worker to run it on, plus one; it runs there and stays there, as
   * with FIB_PINNED (with FIB_MIGRATABLE: it starts there). 0: the
   * spawner's worker (worker 0 from outside), and an idle worker may take
   * it before it first runs. Beyond the last worker: FIB_EINVAL.
   * Coroutines: must be 0. */
  unsigned worker;
  /* Room for attributes to come without changing the struct's size; must
   * be zero (a non-zero word is refused with FIB_EINVAL). */
  uintptr_t reserved[3];
} fib_attr;

/* ------------------------------------------------------------ coroutines */

/*
 * Coroutines: stackful, asymmetric, no scheduler. A coroutine is created
 * suspended; fib_coro_resume() runs it until it calls fib_coro_yield() or
 * returns. Values travel both ways:
 *
 *   resume(co, in, &out)  -- `in` becomes the result of the yield the
 *                            coroutine is suspended in (or, on the first
 *                            resume, the `first` argument of its function);
 *                            `out` receives the yielded or returned value.
 *
 * A coroutine may resume another one (they nest); yield always returns to
 * the resumer.
 */
typedef struct fib_coro fib_coro;

/* The body of a coroutine. `arg` is the value given to fib_coro_create();
 * `first` is the value of the first fib_coro_resume(). Its return value is
 * handed to that last resume. */
typedef void *(*fib_coro_fn)(void *arg, void *first);

typedef enum fib_coro_state {
  FIB_CORO_SUSPENDED = 0, /* created, or yielded: may be resumed */
  FIB_CORO_RUNNING = 1,   /* it is the one running */
  FIB_CORO_NORMAL = 2,    /* it resumed another coroutine and waits */
  FIB_CORO_DEAD = 3       /* its function returned: only destroy remains */
} fib_coro_state;

/*
 * Create a suspended coroutine that will run fn(arg, first).
 * attr may be NULL; stack_size, guard, FIB_SHARED_FP and FIB_COMPACT are
 * used.
 * Errors: FIB_EINVAL (NULL out or fn, stack size out of
 * [FIB_STACK_MIN, FIB_STACK_MAX], guard mode unknown or unavailable,
 * unknown flags, FIB_COMPACT with FIB_GUARD_NONE),
 * FIB_ENOMEM (no memory or mappings for the stack, the mprotect budget of
 * FIB_GUARD_MPROTECT is spent, the thread's signal stack for overflow
 * reports could not be made, or FIB_COMPACT with a fifth stack size on
 * this thread).
 */
FIB_API int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                            const fib_attr *attr);

/*
 * Run co until it yields or returns. out (may be NULL) receives the value
 * it yielded or returned.
 * Errors: FIB_EINVAL (NULL co, or co is dead), FIB_EBUSY (co is running or
 * is waiting on a coroutine it resumed), FIB_EPERM (co is a fiber's own
 * context: see fib_coro_current; or a FIB_COMPACT coroutine of another
 * thread).
 */
FIB_API int fib_coro_resume(fib_coro *co, void *in, void **out);

/*
 * Suspend the running coroutine, handing `value` to its resumer. When it is
 * resumed again, *in (if in is not NULL) receives the resume's value.
 * Errors: FIB_EPERM (not inside a coroutine: on the thread's own stack, or
 * in a fiber's own body, which gives way with fib_yield instead).
 */
FIB_API int fib_coro_yield(void *value, void **in);

/* The coroutine's state, a fib_coro_state value (FIB_EINVAL for NULL). */
FIB_API int fib_coro_status(const fib_coro *co);

/* The coroutine running on this thread, or NULL: also NULL in a fiber's own
 * body (a fiber runs on a coroutine of the runtime's, which the coroutine
 * calls refuse with FIB_EPERM), but inside a coroutine a fiber resumed,
 * that coroutine. */
FIB_API fib_coro *fib_coro_current(void);

/*
 * Free a coroutine that is suspended or dead. A suspended coroutine's stack
 * is discarded without unwinding: nothing on it runs again.
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (running or normal), FIB_EPERM (a
 * fiber's own context).
 */
FIB_API int fib_coro_destroy(fib_coro *co);

/* --------------------------------------------------------------- runtime */

typedef struct fib_runtime fib_runtime;

/* A fiber's identity: unique within its runtime for the runtime's life
 * (never handed out twice: once a fiber is joined, or has finished
 * detached, its id finds nothing, FIB_ESRCH). 0 is never a fiber. An id is
 * a handle: its low 32 bits name a slot of the runtime's table of fibers,
 * its high 32 bits a generation of that slot. A new fiber takes the slot
 * freed last, with the next generation, or else the next unused slot, so
 * the fibers spawned before any is freed get 1, 2, 3, ... in spawn order
 * (with N workers: worker k's get k + 1, k + 1 + N, ...), and ids are not
 * in spawn order after that. */
typedef uint64_t fib_id;

/* The body of a fiber. Its return value is what fib_join() receives. */
typedef void *(*fib_fn)(void *arg);

/* I/O back ends, for fib_runtime_opts.io_backend (see <fibers/io.h>). */
enum {
  FIB_IO_AUTO = 0,  /* the library's choice: see docs/io-uring.md */
  FIB_IO_EPOLL = 1, /* readiness (epoll): try the call, wait on EAGAIN */
  FIB_IO_URING = 2  /* completion (io_uring), if the build and the kernel
                       have it; epoll otherwise */
};

/* The most workers a runtime may have (fib_runtime_opts.workers). */
#define FIB_WORKERS_MAX 256

typedef struct fib_runtime_opts {
  size_t stack_size;    /* default usable stack; 0: FIB_STACK_DEFAULT */
  fib_guard_mode guard; /* default guard mode for its fibers */
  unsigned flags;       /* FIB_SHARED_FP: for all its fibers;
                           FIB_ACCEPT_POSTS */
  /* FIB_IO_AUTO, FIB_IO_EPOLL or FIB_IO_URING (else FIB_EINVAL). The
   * environment variable FIBERS_IO=epoll|io_uring overrides it. */
  unsigned io_backend;
  /* Worker threads that run its fibers: 0 or 1 for one (the thread that
   * calls fib_run, and nothing else changes), up to FIB_WORKERS_MAX (else
   * FIB_EINVAL). With n > 1, fib_run runs worker 0 on the calling thread
   * and n - 1 threads of its own, which inherit the caller's CPU affinity
   * (they start one each on the CPUs of that set after the caller's, in
   * turn, and are then free to move within it); a fiber runs on one
   * worker at a time, fibers that have never run move to idle workers
   * (FIB_PINNED keeps one where it is), and a fiber that has run stays on
   * its worker unless it is FIB_MIGRATABLE or moves itself (fib_move_to).
   * Spawn, join, detach, cancel, yield, sleep, exit, I/O and the
   * primitives and channels work across workers as documented here; a
   * primitive or channel is shared by the workers if it is initialised
   * while a runtime with several workers exists (see "Synchronisation"
   * below). fib_run_once, fib_run_nowait and fib_run_join run worker 0
   * on the calling thread and leave the others running between calls
   * (see there). From outside its fibers, spawn, cancel and detach only
   * on the thread that runs it, while no run of it is under way on that
   * thread (before fib_run, between bounded calls); fib_post and
   * fib_call from any thread at any time.
   * docs/multicore.md says how it works and what it costs. */
  unsigned workers;
  /* With FIB_SEEDED: the seed of the run's choices (any value). */
  uint64_t seed;
  /* Room for options to come without changing the struct's size; must be
   * zero (else FIB_EINVAL). */
  uintptr_t reserved[4];
} fib_runtime_opts;

/*
 * The seeded test mode (FIB_SEEDED, or the environment variable
 * FIBERS_SEED) makes a run reproducible and lets a test try many orders:
 *
 *   - Every scheduling choice comes from one pseudo-random generator
 *     seeded with fib_runtime_opts.seed: which ready fiber runs next (any
 *     of them, uniformly: this covers work-first or not and the order of
 *     wake-ups that happen together), and which ready case fib_select
 *     takes. With FIB_SEED_PREEMPT, each call that may wait (fib_join,
 *     the primitives' waits and lock, channel send and receive, fib_select,
 *     the calls of <fibers/io.h>) first gives way with probability 1/4, as
 *     fib_yield does, even when it would not wait: a spurious preemption
 *     point where another fiber may step in. The same program with the
 *     same seed makes the same choices, so it runs the same interleaving.
 *   - Time is virtual: while rt runs, fib_now_ns() on its thread returns
 *     its own clock, which starts at 1 s, moves 1 us per fiber dispatch,
 *     and jumps to the earliest deadline when no fiber is ready (after
 *     operations that finish by themselves, fib_offload jobs, have
 *     finished). Sleeps and deadlines of a minute cost no wait.
 *     fib_runtime_next_ns reports deadlines on that clock (outside a run
 *     fib_now_ns() is the real one); fib_run_once and fib_run_nowait never
 *     wait for a deadline for real: with nothing ready, they move the
 *     clock to it and run what it readies.
 *   - I/O uses the real calls on epoll (FIB_IO_URING is not used: its
 *     completions arrive in the kernel's order, not the seed's). A run is
 *     reproducible when every descriptor's peer is a fiber of the same
 *     runtime (a socketpair, a pipe, a loopback connection): their
 *     readiness follows from the order the seed chose. A peer outside
 *     (another thread or process) races the virtual clock.
 *   - fib_runtime_opts.workers = n > 1 runs n logical workers on the
 *     thread that calls fib_run, not n threads: the primitives and
 *     channels work in their shared mode (their multi-worker code runs,
 *     in the seed's order), fib_attr.worker is accepted and has no other
 *     effect, and the seed's choice among every ready fiber covers the
 *     orders n workers could take at those points. What it cannot show is
 *     two fibers running at the same instant between such points (data
 *     races): ThreadSanitizer on real workers finds those.
 *   - Not deterministic: fib_post and fib_call from other threads, plain
 *     threads on shared channels, signals.
 *
 * FIBERS_SEED=<n> (decimal, or hexadecimal with 0x) in the environment
 * turns the mode on for every runtime created, with that seed, whatever
 * opts says; FIBERS_SEED_PREEMPT=1 or 0 turns the preemption points on or
 * off. A FIBERS_SEED that is not a number makes fib_runtime_create fail
 * (FIB_EINVAL): a replay must not silently run another order. When the
 * library aborts on a fatal error in a seeded run, its message names the
 * seed. <fibers/seedtest.h> runs a test over many seeds and reports the
 * first that fails with the line that replays it; docs/testing.md shows
 * the whole workflow.
 */

/*
 * Create a runtime. opts may be NULL for the defaults.
 * Errors: FIB_EINVAL (NULL out, bad opts), FIB_ENOMEM.
 */
FIB_API int fib_runtime_create(fib_runtime **out, const fib_runtime_opts *opts);

/*
 * Free a runtime that is not running. With several workers whose threads
 * run between bounded calls (fib_run_nowait), those are stopped first:
 * each stops at its fiber's next switch (a yield, a wait, a finish; a
 * fiber that never makes one holds this call) and its thread is joined.
 * Fibers that have not finished are
 * discarded without unwinding (nothing on their stacks runs again), and
 * every stack and fiber record is freed. What they were doing is undone so
 * that every primitive stays valid: a discarded fiber waiting on a mutex,
 * condition variable, semaphore, wait group, once or channel (or in
 * fib_select) is no longer among its waiters (a value it was sending is
 * not delivered); a mutex it held is handed to its longest-waiting
 * remaining waiter or unlocked, as by fib_mutex_unlock; a fib_once whose
 * function it was running is as if never called (its next call runs the
 * function). The primitives can then be used or destroyed as usual.
 * Posts (fib_post, fib_call) made before this call that have not finished
 * are cancelled, as libuv completes a closed handle's requests with
 * UV_ECANCELED: those not yet started are freed and their function never
 * runs; those started are discarded with their fibers, as above. Each
 * fib_call among them returns FIB_ECANCELED to its caller (a plain thread
 * or a fiber of another runtime), unless that caller is one of rt's own
 * fibers, discarded too. Nothing may post to rt once this call has begun,
 * and rt must not be destroyed while one of its fibers waits in fib_call
 * on another runtime (the reply would come to a freed stack).
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (called while a run of it is under
 * way, e.g. from one of its fibers, on any worker).
 */
FIB_API int fib_runtime_destroy(fib_runtime *rt);

/*
 * Create a fiber that will run fn(arg), ready to run: spawned from one of
 * rt's fibers, it runs before the fibers already waiting to run (see
 * fib_run for the order); spawned from outside, after them. rt may be NULL
 * inside a fiber, meaning that fiber's runtime.
 * attr may be NULL. *id (if id is not NULL) receives the new fiber's id.
 * Errors: FIB_EINVAL (NULL fn, bad attributes), FIB_EPERM (rt NULL outside
 * a fiber), FIB_ENOMEM (as for fib_coro_create; nothing else is
 * affected: the runtime and its fibers carry on).
 */
FIB_API int fib_spawn(fib_runtime *rt, fib_fn fn, void *arg,
                      const fib_attr *attr, fib_id *id);

/*
 * Run rt's fibers on the calling thread until every one has finished.
 * A fiber runs until it yields, blocks, sleeps or finishes. Ready fibers
 * run in FIFO order (spawned before fib_run, yielded, woken), except that
 * fibers spawned by a running fiber, a joiner whose child has just
 * finished, and a fiber waiting in a channel send or receive (or
 * fib_select) that another fiber's receive or send has just completed, run
 * first (work-first: trees of fibers that report through join or a channel
 * run depth-first with few fibers alive); fibers put first while one fiber
 * runs keep their order among themselves (fibers spawned together run in
 * spawn order). That precedence is bounded: after 64 such turns in a row,
 * the longest-waiting fiber goes once. Fibers woken by fib_chan_close, and
 * by the other primitives, go to the back. Sleepers whose deadline has passed, and fibers whose
 * descriptor is ready (<fibers/io.h>), are looked at after each round of
 * the fibers that were ready, so a fiber that keeps yielding delays them
 * by one round at most. When no fiber is ready, the thread sleeps until
 * the earliest deadline or I/O event.
 * Returns 0 when all fibers have finished.
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (rt is already running, or this
 * thread is already running a runtime), FIB_ENOMEM (the thread's signal
 * stack for overflow reports could not be made: not with
 * FIB_SIGNALS_NONE, see fib_overflow_signals), FIB_EDEADLK (fibers
 * remain but all wait for each other or for the program, none for a
 * deadline or a descriptor, so nothing can wake them; they stay
 * suspended, and a later run goes on with them once the program has made
 * one ready, e.g. by fib_sem_post; or fib_runtime_destroy discards them).
 */
FIB_API int fib_run(fib_runtime *rt);

/*
 * Runs for programs with a loop of their own (a game frame, a GUI, another
 * event loop), in the manner of libuv's UV_RUN_ONCE and UV_RUN_NOWAIT. A
 * round is one turn for each fiber that is ready when it begins (deadlines
 * that have passed count: their sleepers are ready), in fib_run's order;
 * fibers may be readied and run within it, but a round ends after as many
 * turns as it began with, so a fiber that keeps yielding cannot hold the
 * caller.
 *   fib_run_nowait: one round of what is ready now, never blocking the
 *                   thread (nothing ready: returns at once);
 *   fib_run_once:   the same, but if nothing is ready and a fiber sleeps
 *                   or waits with a deadline, the thread first sleeps until
 *                   the earliest deadline.
 * Returns the number of fibers not yet finished (capped at INT_MAX): 0
 * when all have finished. Unlike fib_run, waiting fibers that nothing
 * inside the runtime can wake are no error here: the program may ready
 * them between runs (fib_sem_post, fib_chan_close, ... work outside
 * fibers), and fib_runtime_next_ns tells whether and when to run again.
 *
 * With several workers (fib_runtime_opts.workers = n > 1) the calling
 * thread is worker 0 during the call, and the round is worker 0's: its
 * ready fibers, those the other workers readied or placed for it, posts;
 * with none of those, what another worker offers. The first such call
 * starts workers 1..n-1 on threads of their own, and they keep running
 * their fibers between calls (a multi-core runtime uses its cores while
 * the program does its own work), sleeping when they have nothing, until
 * fib_run runs the runtime to its end (it takes them over, and they end
 * with it) or fib_runtime_destroy stops them. fib_run_once with nothing
 * ready for worker 0 sleeps until worker 0's earliest deadline, an I/O
 * event of worker 0's fibers or work for worker 0 (once such work has
 * come it returns, even if the fibers went on to another worker); it
 * returns at once if
 * nothing can come: every fiber has finished, or every worker waits for
 * the program (a busy worker that sends worker 0 nothing keeps it
 * asleep: a program that must not block calls fib_run_nowait). The
 * number returned counts the fibers of every worker. Between calls the
 * calling thread may spawn (onto worker 0, from where idle workers may
 * take them), cancel and detach, and use primitives and channels, while
 * the other workers run. An error that stopped the other workers (a
 * thread that could not start its loop: FIB_ENOMEM) is returned by the
 * next call, which starts them again after that.
 * Errors: as fib_run's, but never FIB_EDEADLK.
 */
FIB_API int fib_run_once(fib_runtime *rt);
FIB_API int fib_run_nowait(fib_runtime *rt);

/*
 * For main, or any code outside rt's fibers: run rt (as fib_run does)
 * until fiber `id` has finished, then collect it as fib_join does (*result,
 * if result is not NULL, receives its return value; its record is freed).
 * The other fibers stay as they are when it returns: ready ones run in a
 * later run, and none is discarded.
 * Errors: FIB_EINVAL (NULL rt; the fiber is detached or being joined),
 * FIB_EBUSY (as fib_run: this includes a call from inside a fiber, which
 * joins with fib_join), FIB_ESRCH (no such fiber), FIB_ENOMEM (as fib_run),
 * FIB_EDEADLK (the fiber has not finished but no fiber can run: all wait
 * for each other or for the program; they stay suspended).
 * With several workers the fiber may run on any of them; the calling
 * thread runs worker 0 meanwhile, as fib_run_once does (the others run
 * on their own threads, started by the first such call if need be, and
 * go on running after it). It waits for the fiber by a fiber of its own
 * on worker 0, which fib_join's the target: this takes an id and a
 * stack for the call's length. FIB_EDEADLK when every worker waits with
 * nothing queued anywhere, unless the runtime has been posted to (see
 * fib_post: then it waits on), or a thread outside it has readied or
 * cancelled one of its fibers (fib_sem_post, fib_cancel, ...: it may do
 * so again). What the calling thread did between its calls does not
 * count, as it cannot do more while it is in this call; it counts once
 * another thread makes the calls.
 * An error that stops the other workers while it waits (as for
 * fib_run_once) is returned by this call, once, and the fiber stays
 * joinable; if the fiber finished meanwhile the call succeeds and the
 * next call reports the error. After FIB_EDEADLK or such an error
 * nothing of the call is left in the runtime.
 */
FIB_API int fib_run_join(fib_runtime *rt, fib_id id, void **result);

/*
 * When rt next has work to do by itself: 0 if a fiber is ready to run now;
 * else the fib_now_ns() time of the earliest deadline a fiber sleeps or
 * waits until (it may have passed: run now); else UINT64_MAX (nothing to
 * do until the program readies a fiber or a descriptor a fiber waits on
 * becomes ready, or nothing left). For a host loop that must choose how
 * long to block between fib_run_nowait calls. A host that must also wake
 * for its fibers' I/O watches fib_runtime_io_fd (fibers/io.h) beside
 * this timeout: the time returned here does not include I/O.
 * 0 also when posts (fib_post, fib_call) or fibers readied from other
 * threads wait for the next call; what comes from other threads after a
 * call returned makes fib_runtime_io_fd readable (on both back ends),
 * with one worker as with several.
 * With several workers it speaks for worker 0, the share the calling
 * thread runs (the others run by themselves): 0 also when fibers that
 * other workers readied or placed for worker 0, posts, or fibers worker
 * 0 offered and nobody took, wait for the next call. Work that comes for
 * worker 0 after the call returned makes fib_runtime_io_fd readable (on
 * both back ends), so a host blocked on that descriptor with this
 * timeout wakes for it; a host that does not watch it comes back within
 * a bounded time (a frame) while the other workers may send worker 0
 * work.
 * 0 for NULL rt.
 */
FIB_API uint64_t fib_runtime_next_ns(const fib_runtime *rt);

/* The runtime whose fiber is running on this thread, or NULL. */
FIB_API fib_runtime *fib_runtime_current(void);

/*
 * Whether rt runs in the seeded test mode: 1 and its seed in *seed (if
 * seed is not NULL), or 0. Errors: FIB_EINVAL (NULL rt).
 */
FIB_API int fib_runtime_seed(const fib_runtime *rt, uint64_t *seed);

/*
 * The thread-safe way into a runtime, from any thread, fiber or not, at
 * any time, also while rt runs on another thread: run fn(arg) in a new,
 * detached fiber of rt (of its worker 0, if it has several; idle workers
 * may take it from there). Posts run in the order they were posted. A
 * runtime that has been posted to wakes for posts, goes on waiting for
 * more instead of returning FIB_EDEADLK while fibers remain, and its
 * fib_run still returns once every fiber has finished: a post that comes
 * after that runs in the next run. Between a host's bounded calls
 * (fib_run_nowait, fib_run_once, fib_run_join) a post makes
 * fib_runtime_io_fd readable, if the host's thread uses it (fibers/io.h),
 * and the next call runs it.
 * Errors: FIB_EINVAL (NULL rt or fn), FIB_ENOMEM (nothing was posted).
 */
FIB_API int fib_post(fib_runtime *rt, fib_fn fn, void *arg);

/*
 * fib_post, then wait until fn has returned; *result (if result is not
 * NULL) receives its return value. A fiber caller parks (uncancellably:
 * fn runs whatever happens, and the call waits for it), and its own
 * runtime may be another one, on another thread; a plain thread blocks.
 * A plain thread must not call into the runtime that only it runs (it
 * would wait for itself).
 * Errors: FIB_EINVAL (NULL rt or fn), FIB_ENOMEM (nothing was posted),
 * FIB_ECANCELED (fn did not return: rt was destroyed before, and fn did
 * not run or its fiber was discarded part way, see fib_runtime_destroy;
 * or fn ended its fiber with fib_exit, whose value is lost; *result is
 * not written).
 */
FIB_API int fib_call(fib_runtime *rt, fib_fn fn, void *arg, void **result);

/* -------------------------------------------- inside a fiber (the current) */

/*
 * Give way: the current fiber goes to the back of the run queue (behind
 * every fiber ready now) and the next ready fiber runs.
 * Errors: FIB_EPERM (not in a fiber, or inside a coroutine the fiber
 * resumed: only the fiber itself can give way).
 */
FIB_API int fib_yield(void);

/*
 * Wait for fiber `id` of the current runtime to finish; *result (if result
 * is not NULL) receives its return value or fib_exit() value. The fiber's
 * record is freed: its id is then unknown. (From outside the runtime's
 * fibers, fib_run_join does the same.)
 * Errors: FIB_EPERM (not in a fiber), FIB_EDEADLK (id is the caller),
 * FIB_ESRCH (no such fiber: never spawned here, already joined, or detached
 * and finished), FIB_EINVAL (the fiber is detached, or another fiber, or
 * fib_run_join, is already joining it), FIB_ECANCELED (the caller is
 * cancelled; the target is left as it was, still joinable).
 */
FIB_API int fib_join(fib_id id, void **result);

/* fib_join with an absolute deadline (fib_now_ns() time): FIB_ETIMEDOUT if
 * it passes first; the target is then left as it was, still joinable. */
FIB_API int fib_join_until(fib_id id, void **result, uint64_t deadline_ns);

/*
 * Cancel fiber `id` of rt (rt may be NULL inside a fiber: its runtime).
 * Cancellation is a request the fiber sees, never a forced stop:
 *   - blocked or sleeping: its blocking call returns FIB_ECANCELED now;
 *   - ready or running (a fiber may cancel itself): its next blocking call
 *     returns FIB_ECANCELED;
 *   - from then on every blocking call it makes (join, sleep, and the
 *     synchronisation calls) returns FIB_ECANCELED at once, so it can clean
 *     up and return. fib_yield still gives way and returns 0.
 *   - finished: nothing to do, returns 0.
 * A cancelled fiber is joined (and detached) like any other; joining it
 * after it returns gives its return value.
 * Errors: FIB_EPERM (rt NULL outside a fiber), FIB_ESRCH (no such fiber),
 * FIB_ENOMEM (a runtime with several workers, the fiber waiting in
 * fib_join on another worker than the caller's: the few bytes that carry
 * the cancel to that worker could not be allocated; the fiber is marked
 * cancelled, so its next blocking call fails, but that join goes on until
 * its target finishes, then fails with FIB_ECANCELED, or its deadline).
 */
FIB_API int fib_cancel(fib_runtime *rt, fib_id id);

/* Non-zero if the current fiber has been cancelled (0 outside a fiber). */
FIB_API int fib_cancelled(void);

/*
 * Detach fiber `id` of the current runtime (or of rt, when called outside a
 * fiber with rt not NULL; rt may be NULL inside a fiber): nobody will join
 * it, and its record is freed when it finishes (at once if it has).
 * Errors: FIB_EPERM (rt NULL outside a fiber), FIB_ESRCH (no such fiber),
 * FIB_EINVAL (already detached, or a fiber or fib_run_join is joining it).
 */
FIB_API int fib_detach(fib_runtime *rt, fib_id id);

/*
 * Finish the current fiber from anywhere inside it, as if its function had
 * returned `result`. Nothing on its stack is unwound. Calling it outside a
 * fiber (or inside a coroutine the fiber resumed) is a bug that no caller
 * can handle: the process aborts with a one-line message.
 */
FIB_API FIB_NORETURN void fib_exit(void *result);

/*
 * Move the calling fiber to worker `worker` (0 .. fib_runtime_opts.workers
 * - 1) of its runtime: it gives way, is handed to that worker, and the
 * call returns 0 running there, on that worker's thread. Explicit
 * placement, for any fiber but a compact one, FIB_MIGRATABLE or not
 * (FIB_PINNED and the first fiber too): a fiber that is not
 * FIB_MIGRATABLE stays on its new worker, one that is may be moved on
 * later. Mind the rule for thread-local storage (FIB_MIGRATABLE). Already
 * on that worker, or a runtime with one worker (worker 0), or the seeded
 * mode's logical workers: returns 0 at once, without giving way. Not a
 * wait: a cancelled fiber moves too.
 * Errors: FIB_EPERM (not in a fiber, or inside a coroutine it resumed),
 * FIB_EINVAL (worker beyond the last, or a FIB_COMPACT fiber, whose
 * frames belong to its thread), FIB_EBUSY (inside fib_nomigrate_begin).
 */
FIB_API int fib_move_to(unsigned worker);

/*
 * A guard against migration: between fib_nomigrate_begin and the matching
 * fib_nomigrate_end the runtime does not move the calling fiber to another
 * worker, even a FIB_MIGRATABLE one (nor the forced test mode), and
 * fib_move_to returns FIB_EBUSY. Guards nest (a counter); the fiber may
 * wait inside one, and stays on its worker meanwhile. For code that keeps
 * a thread-local address or a pthread mutex across a suspension. Works,
 * and only counts, in any runtime. A fiber that finishes inside a guard
 * needs no end.
 * Errors: FIB_EPERM (not in a fiber, or inside a coroutine it resumed);
 * begin: FIB_EOVERFLOW (nested 65,000 deep); end: FIB_EINVAL (no guard
 * begun).
 */
FIB_API int fib_nomigrate_begin(void);
FIB_API int fib_nomigrate_end(void);

/* The current fiber's id, or 0 outside a fiber. */
FIB_API fib_id fib_self(void);

/* The current fiber's name ("" if unnamed), or NULL outside a fiber. */
FIB_API const char *fib_self_name(void);

/* Monotonic clock (CLOCK_MONOTONIC) in nanoseconds: the time base of
 * deadlines. On the thread of a running seeded runtime (FIB_SEEDED), its
 * virtual clock instead. */
FIB_API uint64_t fib_now_ns(void);

/*
 * Suspend the current fiber until fib_now_ns() >= deadline_ns; returns 0
 * then. A deadline in the past still gives way once (like fib_yield()).
 * Sleepers with the same deadline wake in the order they went to sleep.
 * Errors: FIB_EPERM (not in a fiber), FIB_ECANCELED (cancelled).
 */
FIB_API int fib_sleep_until(uint64_t deadline_ns);

/* Sleep for ns nanoseconds: fib_sleep_until(fib_now_ns() + ns). */
FIB_API int fib_sleep_ns(uint64_t ns);

/* ------------------------------------ synchronisation and channels (fibers) */

/*
 * Mutex, condition variable, semaphore, wait group, once and channels. They
 * block only the calling fiber, never the OS thread, and belong to one
 * runtime at a time (they are not thread-safe: use them from the thread
 * that runs the fibers that share them).
 *
 * Storage: every primitive is a caller-allocated struct (static, on a
 * stack, inside your own struct) of a fixed public size and the alignment
 * of uint64_t and pointers; its fields are private. Initialise it with its
 * _init call (fib_once: FIB_ONCE_INIT), do not copy or move it while it is
 * in use, and end it with _destroy. Channels allocate their buffer (if any)
 * from the heap. Because the struct stays yours, misuse is detected, not
 * undefined: a struct that was never initialised (all zero bits) or has
 * been destroyed is refused with FIB_EINVAL by every call (an init on it
 * starts it afresh). A destroy that finds fibers waiting (or a locked
 * mutex) returns FIB_EBUSY and changes nothing.
 *
 * Calls that may wait (lock, the waits, send, receive, select without a
 * default case) have an _until variant with an absolute deadline in
 * fib_now_ns() time, returning FIB_ETIMEDOUT if it passes first; the plain
 * call is the _until call with no deadline. Waiting is FIFO per primitive:
 * the fiber that has waited longest is served first. A call that may wait:
 *   - outside a fiber (or inside a coroutine a fiber resumed) returns
 *     FIB_EPERM, even if it would not have had to wait (except a send or
 *     receive on a shared channel from a plain thread: see below);
 *   - in a cancelled fiber (fib_cancel) returns FIB_ECANCELED at once, even
 *     if it would not have had to wait, and without side effects (except
 *     fib_once: see there); a fiber cancelled while it waits gets
 *     FIB_ECANCELED from that wait. A call that timed out or was cancelled
 *     had no effect: no lock taken, no unit taken, no value sent/received.
 * Calls that never wait (init, destroy, trylock, unlock, signal, broadcast,
 * post, add, done, close, select with a default case) work in a cancelled
 * fiber as usual; those that need no fiber also work outside one (e.g. from
 * main before fib_run).
 *
 * Two modes, fixed at init. A primitive or channel initialised while a
 * runtime with several workers (fib_runtime_opts.workers) exists is
 * shared: the fibers of any worker may use it at once (each call takes a
 * short spin lock; it also serves the fibers of one-worker runtimes on
 * the same thread). A shared channel that one worker's fibers alone have
 * used for a while is kept by that worker, whose calls then take no lock
 * at all; a call from anywhere else (any call on the channel, also those
 * that never wait for a value: len, close, destroy, a select with a
 * default case) waits until that worker next goes between fibers (its
 * running fiber switches, or it has nothing to run): a fiber yields
 * meanwhile, a plain thread spins. So a fiber that blocks its worker's
 * thread (a system call, a pthread mutex) while another thread needs a
 * channel its worker keeps holds that thread up, and can deadlock with
 * it. A channel taken back often is kept ever more rarely. A shared
 * channel, like every primitive, must be destroyed before its storage is
 * freed or reused. One initialised while none exists is local, as fast
 * as the runtime allows, for the fibers of one thread; a call on it from
 * a multi-worker runtime's thread returns FIB_ENOTSUP. So create the
 * multi-worker runtime first, then its primitives. A fib_once (no init)
 * works in both. A condition variable and its mutex, and the channels of
 * one fib_select, must have the same mode (else FIB_EINVAL).
 *
 * A plain thread (one that runs no runtime) may also send on and receive
 * from a shared channel, with or without a deadline: it blocks until the
 * call completes, as a fiber would park; so an existing thread pool can
 * feed fibers. The runtime whose fibers wait for it should have
 * FIB_ACCEPT_POSTS, or its run may end with FIB_EDEADLK before the first
 * send.
 */

/*
 * Opaque storage sizes, in 8-byte words. These sizes, and every public
 * struct's size and layout (fib_attr, fib_runtime_opts, fib_select_case,
 * fib_stack_info), are part of the ABI: a release that changes one changes
 * the library's SONAME (docs/packaging.md). Each primitive leaves at least
 * a lock word and a pointer unused, for what is to come (primitives shared
 * between threads).
 */
#define FIB_MUTEX_WORDS 10
#define FIB_COND_WORDS 6
#define FIB_SEM_WORDS 6
#define FIB_WG_WORDS 6
#define FIB_ONCE_WORDS 10
#define FIB_CHAN_WORDS 14

/* A mutex: FIFO hand-off (unlock gives it to the longest waiter, which
 * then owns it; nobody can barge in, so no waiter starves). Not recursive.
 * A fiber that finishes holding it (returns, or fib_exit, without
 * unlocking) gives it up as fib_mutex_unlock would, rather than leave its
 * waiters waiting forever for a fiber that is gone. */
typedef struct fib_mutex {
  union { uint64_t u[FIB_MUTEX_WORDS]; void *p[FIB_MUTEX_WORDS]; } opaque;
} fib_mutex;

/* Errors: FIB_EINVAL (NULL). */
FIB_API int fib_mutex_init(fib_mutex *m);
/* Errors: FIB_EINVAL (NULL, not initialised), FIB_EBUSY (locked, or fibers
 * wait for it). */
FIB_API int fib_mutex_destroy(fib_mutex *m);
/* Lock, waiting while another fiber holds it.
 * Errors: FIB_EINVAL, FIB_EPERM (not in a fiber), FIB_EDEADLK (the caller
 * holds it already), FIB_ECANCELED, FIB_ETIMEDOUT (_until). */
FIB_API int fib_mutex_lock(fib_mutex *m);
FIB_API int fib_mutex_lock_until(fib_mutex *m, uint64_t deadline_ns);
/* Lock if free, never wait. Errors: FIB_EINVAL, FIB_EPERM (not in a fiber),
 * FIB_EBUSY (held, by anyone, or fibers wait for it: a trylock never jumps
 * the queue). */
FIB_API int fib_mutex_trylock(fib_mutex *m);
/* Unlock; the longest waiter (if any) owns it next.
 * Errors: FIB_EINVAL, FIB_EPERM (the caller does not hold it, or is not a
 * fiber: only the fiber that locked it may unlock it). */
FIB_API int fib_mutex_unlock(fib_mutex *m);

/* A condition variable, used with a fib_mutex. */
typedef struct fib_cond {
  union { uint64_t u[FIB_COND_WORDS]; void *p[FIB_COND_WORDS]; } opaque;
} fib_cond;

FIB_API int fib_cond_init(fib_cond *c);
/* Errors: FIB_EINVAL, FIB_EBUSY (fibers wait on it). */
FIB_API int fib_cond_destroy(fib_cond *c);
/* Unlock m, wait for a signal, lock m again (waiting for it as a lock, FIFO)
 * and return. Whatever the result, m is held again on return, except for
 * FIB_EINVAL / FIB_EPERM / an initial FIB_ECANCELED, where nothing was done.
 * The relock cannot be cancelled: a fib_cancel that arrives during it does
 * not interrupt it, the call returns the wait's result (0 if signalled),
 * and the fiber's next blocking call returns FIB_ECANCELED.
 * There are no spurious wake-ups, but another fiber may run between the
 * signal and the relock: re-check the condition in a loop.
 * Errors: FIB_EINVAL, FIB_EPERM (not in a fiber, or m not held by the
 * caller), FIB_ECANCELED, FIB_ETIMEDOUT (_until: no signal came first). */
FIB_API int fib_cond_wait(fib_cond *c, fib_mutex *m);
FIB_API int fib_cond_wait_until(fib_cond *c, fib_mutex *m,
                                uint64_t deadline_ns);
/* Wake the longest waiter / every waiter (nothing if none). FIB_EINVAL. */
FIB_API int fib_cond_signal(fib_cond *c);
FIB_API int fib_cond_broadcast(fib_cond *c);

/* A counting semaphore. A post hands its unit to the longest waiter. */
typedef struct fib_sem {
  union { uint64_t u[FIB_SEM_WORDS]; void *p[FIB_SEM_WORDS]; } opaque;
} fib_sem;

FIB_API int fib_sem_init(fib_sem *s, uint64_t value);
/* Errors: FIB_EINVAL, FIB_EBUSY (fibers wait on it). */
FIB_API int fib_sem_destroy(fib_sem *s);
/* Add one unit. Errors: FIB_EINVAL, FIB_EOVERFLOW (value is UINT64_MAX). */
FIB_API int fib_sem_post(fib_sem *s);
/* Take one unit, waiting until there is one.
 * Errors: FIB_EINVAL, FIB_EPERM, FIB_ECANCELED, FIB_ETIMEDOUT (_until). */
FIB_API int fib_sem_wait(fib_sem *s);
FIB_API int fib_sem_wait_until(fib_sem *s, uint64_t deadline_ns);
/* Take a unit if there is one. Errors: FIB_EINVAL, FIB_EAGAIN (none). */
FIB_API int fib_sem_trywait(fib_sem *s);
/* The units available now (0 while fibers wait); 0 if s is not valid. */
FIB_API uint64_t fib_sem_value(const fib_sem *s);

/* A wait group: a counter; waiters wait until it is zero. */
typedef struct fib_wg {
  union { uint64_t u[FIB_WG_WORDS]; void *p[FIB_WG_WORDS]; } opaque;
} fib_wg;

/* Starts at zero. */
FIB_API int fib_wg_init(fib_wg *wg);
/* Errors: FIB_EINVAL, FIB_EBUSY (fibers wait on it). */
FIB_API int fib_wg_destroy(fib_wg *wg);
/* Add delta (may be negative); reaching zero wakes every waiter.
 * Errors: FIB_EINVAL (also: the counter would go below zero; it is left
 * as it was), FIB_EOVERFLOW (above INT64_MAX). */
FIB_API int fib_wg_add(fib_wg *wg, int64_t delta);
/* fib_wg_add(wg, -1). */
FIB_API int fib_wg_done(fib_wg *wg);
/* Wait until the counter is zero (at once if it is).
 * Errors: FIB_EINVAL, FIB_EPERM, FIB_ECANCELED, FIB_ETIMEDOUT (_until). */
FIB_API int fib_wg_wait(fib_wg *wg);
FIB_API int fib_wg_wait_until(fib_wg *wg, uint64_t deadline_ns);

/* Run an initialiser exactly once. Zero-initialised storage is a valid,
 * not-yet-run fib_once (FIB_ONCE_INIT); it needs no destroy. */
typedef struct fib_once {
  union { uint64_t u[FIB_ONCE_WORDS]; void *p[FIB_ONCE_WORDS]; } opaque;
} fib_once;
#define FIB_ONCE_INIT {{{0}}}

/*
 * The first call runs fn(arg) and returns 0 when it returns. Calls while it
 * runs (from other fibers, when fn waits) wait until it has returned; later
 * calls return 0 at once. The first call needs no fiber and runs fn even in
 * a cancelled fiber (fib_once waits only for another fiber's fn). If the
 * fiber running fn finishes inside it (fib_exit) or is discarded with its
 * runtime, it is as if that call had never been made (as pthread_once does
 * for a cancelled init routine): a waiting fiber, or the next call, runs fn.
 * Errors: FIB_EINVAL (NULL once or fn, or once holds no fib_once state),
 * FIB_EDEADLK (called from inside its own fn), FIB_EPERM (would wait,
 * outside a fiber), FIB_ECANCELED (would wait, in a cancelled fiber),
 * FIB_ETIMEDOUT (_until).
 */
FIB_API int fib_once_call(fib_once *once, void (*fn)(void *), void *arg);
FIB_API int fib_once_call_until(fib_once *once, void (*fn)(void *), void *arg,
                                uint64_t deadline_ns);

/*
 * A channel of fixed-size elements (elem_size bytes, copied in and out).
 * capacity 0: unbuffered, a send waits for a receiver and hands the value
 * over directly (rendezvous); capacity n: up to n values are buffered.
 * Closing: later sends fail with FIB_EPIPE; receivers drain what is
 * buffered, then get FIB_EPIPE; fibers waiting in a send or receive when it
 * is closed get FIB_EPIPE (a waiting sender's value is not delivered).
 */
typedef struct fib_chan {
  union { uint64_t u[FIB_CHAN_WORDS]; void *p[FIB_CHAN_WORDS]; } opaque;
} fib_chan;

/* Errors: FIB_EINVAL (NULL ch, or elem_size * capacity overflows),
 * FIB_ENOMEM (no memory for the buffer; ch is left as it was). */
FIB_API int fib_chan_init(fib_chan *ch, size_t elem_size, size_t capacity);
/* Free the buffer (values still in it are dropped). Afterwards every call
 * on ch returns FIB_EINVAL, until fib_chan_init.
 * Errors: FIB_EINVAL, FIB_EBUSY (fibers wait to send or receive). */
FIB_API int fib_chan_destroy(fib_chan *ch);
/* Send elem_size bytes from elem (elem may be NULL when elem_size is 0).
 * Errors: FIB_EINVAL, FIB_EPERM, FIB_EPIPE (closed), FIB_ECANCELED,
 * FIB_ETIMEDOUT (_until: nothing was sent). */
FIB_API int fib_chan_send(fib_chan *ch, const void *elem);
FIB_API int fib_chan_send_until(fib_chan *ch, const void *elem,
                                uint64_t deadline_ns);
/* Receive into out (NULL: discard the value).
 * Errors: FIB_EINVAL, FIB_EPERM, FIB_EPIPE (closed and empty),
 * FIB_ECANCELED, FIB_ETIMEDOUT (_until: nothing was received). */
FIB_API int fib_chan_recv(fib_chan *ch, void *out);
FIB_API int fib_chan_recv_until(fib_chan *ch, void *out, uint64_t deadline_ns);
/* Close. Errors: FIB_EINVAL, FIB_EPIPE (already closed). */
FIB_API int fib_chan_close(fib_chan *ch);
/* Values buffered now; 0 if ch is not valid. */
FIB_API size_t fib_chan_len(const fib_chan *ch);

typedef enum fib_select_op {
  FIB_SELECT_RECV = 1,   /* receive from chan into elem (NULL: discard) */
  FIB_SELECT_SEND = 2,   /* send elem on chan */
  FIB_SELECT_DEFAULT = 3 /* chosen when no other case is ready; chan unused */
} fib_select_op;

/* One case of fib_select. A send or receive case whose chan is NULL is
 * never ready (a way to switch a case off). */
typedef struct fib_select_case {
  fib_select_op op;
  fib_chan *chan;
  void *elem;
  int err; /* set in the chosen case: 0, or FIB_EPIPE (chan is closed:
              a receive found it closed and empty, a send found it closed) */
} fib_select_case;

/*
 * Wait until one of the cases can proceed, do that one and return its
 * index. A case is ready if its operation would not wait: a receive when a
 * value is buffered, a sender waits, or the channel is closed; a send when a
 * receiver waits, there is room, or the channel is closed. Among the ready
 * cases one is chosen uniformly at random (a per-thread generator), so no
 * case starves. With a FIB_SELECT_DEFAULT case (at most one), select never
 * waits: the default's index is returned when nothing is ready (and the
 * deadline is not used).
 * Errors: FIB_EINVAL (NULL cases with n > 0, an unknown op, two defaults,
 * a case on an invalid channel, a send of NULL elem with elem_size > 0),
 * FIB_EPERM (not in a fiber), FIB_EDEADLK (nothing could ever be ready: no
 * case with a channel, no default, no deadline), FIB_ECANCELED (no default
 * case), FIB_ETIMEDOUT (_until), FIB_ENOMEM (more than 8 cases and no
 * memory for their wait records).
 */
FIB_API int fib_select(fib_select_case *cases, size_t n);
FIB_API int fib_select_until(fib_select_case *cases, size_t n,
                             uint64_t deadline_ns);

/* ---------------------------------------------------- safety and debugging */

/*
 * What the library does to find stack bugs and to let tools see fibers is
 * described in docs/safety.md. This section is what a program can ask.
 */

/*
 * The overflow handler (docs/safety.md, "The handler"). By default the
 * first fiber or coroutine created in the process (or the first fib_run)
 * installs a SIGSEGV and SIGBUS handler, once per process, and each
 * thread's first one an alternate signal stack (sigaltstack(2); one the
 * thread already has is used as is), so that an overflow into a guard
 * region is reported in one line naming the fiber before the process dies
 * by SIGSEGV. A fault that is not an overflow goes on to the action that
 * was in place before ours (see docs/safety.md for how each kind is
 * honoured); a handler installed after ours may save ours with sigaction()
 * and call it, as a function, for the faults it does not want.
 *
 * A host that owns those signals (a JVM, a wasm engine, another language
 * runtime, a crash reporter) can ask for nothing of the kind:
 *
 *   FIB_SIGNALS_INSTALL  the default, as above.
 *   FIB_SIGNALS_NONE     no handler and no alternate stack, on any thread,
 *                        ever. fib_run() and coroutine creation never fail
 *                        for want of a signal stack. An overflow then meets
 *                        whatever SIGSEGV action the host has: by default
 *                        the process dies by SIGSEGV without a report; the
 *                        host's handler may call fib_overflow_check() to
 *                        have it reported.
 *
 * The mode is process-wide, and fixed by the first fiber or coroutine
 * created (or fib_run) in the process, on any thread: call this before
 * that (e.g. first thing in main, or where the host sets up its own
 * handlers). Callable from any thread; a call racing with that first use
 * is either in time or returns FIB_EBUSY. Once the mode is fixed, asking
 * for the mode in force returns 0 and any other FIB_EBUSY, changing
 * nothing: a handler once installed is never removed, since a handler
 * installed after it may have saved it and chain to it.
 * Errors: FIB_EINVAL (mode unknown), FIB_EBUSY (too late, see above).
 */
enum {
  FIB_SIGNALS_INSTALL = 0,
  FIB_SIGNALS_NONE = 1
};
FIB_API int fib_overflow_signals(int mode);

/*
 * For a host's own SIGSEGV/SIGBUS handler (one installed with SA_SIGINFO):
 * pass it the handler's three arguments (info: its siginfo_t *, ucontext:
 * its third argument, or NULL). If the fault is a stack overflow of the
 * fiber or coroutine running on the calling thread (a fault in its guard
 * region, or with the stack pointer below its stack), this writes the
 * one-line report and the process dies by `sig` with its default action
 * (a core dump where enabled): it does not return. Otherwise it returns 0
 * and has changed nothing: the fault is the host's to handle. Also 0 for a
 * sig other than SIGSEGV and SIGBUS, a NULL info, and a signal sent by
 * kill() or raise(). With a NULL ucontext only a fault address in the
 * guard region counts (a frame that jumps past the guard is not seen).
 * Async-signal-safe; works in either mode. Note that a handler can run on
 * an overflow only if it was installed with SA_ONSTACK and the faulting
 * thread has an alternate signal stack (with FIB_SIGNALS_NONE, the host's
 * to make): it cannot run on the stack that is full. Without, the kernel
 * kills the process by SIGSEGV with no handler run.
 */
FIB_API int fib_overflow_check(int sig, const void *info,
                               const void *ucontext);

/* Where a fiber's or coroutine's stack is and how much of it has been used. */
typedef struct fib_stack_info {
  void *lo;            /* lowest usable byte (the stack grows down to it) */
  void *hi;            /* one past the highest byte */
  size_t size;         /* usable bytes: hi - lo */
  size_t guard_size;   /* bytes of guard region just below lo (0: none) */
  /* FIB_GUARD_MADVISE or FIB_GUARD_MPROTECT; FIB_GUARD_NONE (only if asked
   * for): guard_size is 0 and the canary word is the 8 bytes at lo */
  fib_guard_mode guard;
  /* High-water mark: bytes from hi down to the lowest page the stack has
   * touched (whole pages, from the kernel's page residency: mincore(2),
   * one system call, no cost while the fiber runs). Stacks are reused from
   * a per-thread pool, so on a reused stack this is the deepest any of its
   * users went: an upper bound, exact for a fresh stack. */
  size_t high_water;
  uintptr_t reserved[2]; /* zero: room for more without a size change */
} fib_stack_info;

/*
 * Describe the stack of fiber `id` of rt (rt may be NULL inside a fiber:
 * its runtime). The fiber may be running, ready or suspended.
 * Errors: FIB_EINVAL (NULL out), FIB_EPERM (rt NULL outside a fiber),
 * FIB_ESRCH (no such fiber, or it has finished: its stack is gone).
 */
FIB_API int fib_fiber_stack(fib_runtime *rt, fib_id id, fib_stack_info *out);

/* The same for a coroutine (not dead), and for whatever runs now (the
 * current fiber, or the coroutine it resumed).
 * Errors: FIB_EINVAL (NULL, or a dead coroutine), FIB_EPERM (fib_self_stack
 * outside any fiber or coroutine). */
FIB_API int fib_coro_stack(const fib_coro *co, fib_stack_info *out);
FIB_API int fib_self_stack(fib_stack_info *out);

/* The layout debuggers read (fib_debug_layout) is in <fibers/debug.h>. */

/* The I/O calls (fib_read, fib_accept, ...) are in <fibers/io.h>, which
 * this header includes. */

#ifdef __cplusplus
}
#endif

#include <fibers/io.h> /* after the declarations above, which it uses */

#endif /* FIBERS_H */
