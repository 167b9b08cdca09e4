/*
 * fibers.h -- the public API of the fibers runtime.
 *
 * fibers are stackful user-space threads for C. Each fiber owns a stack with
 * a guard region below it; the CPU context is switched in assembly; a
 * runtime schedules its fibers cooperatively, round-robin, on the one OS
 * thread that runs it.
 *
 * Two layers are public:
 *   - coroutines (fib_coro_*): resume / yield with a value, no scheduler;
 *   - the runtime (fib_runtime_*, fib_spawn, fib_yield, fib_join, ...),
 *     built on the coroutines.
 *
 * Conventions (as in libuv): every call that can fail returns 0 (or a
 * count) on success and a negative errno code on failure, one of the FIB_E*
 * values below. fib_strerror() and fib_err_name() describe a code. The
 * library never prints, except the one-line report it writes just before the
 * process dies (a stack overflow, or a misuse that no caller could handle,
 * such as fib_exit() outside a fiber).
 *
 * Thread safety: a runtime and its fibers belong to the OS thread that runs
 * them (between fib_runtime_create() and fib_run() any one thread may use
 * it). Different runtimes may run on different threads at the same time.
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
 * Every error code the library returns. Each is the negated errno value of
 * the same name, so FIB_ENOMEM == -ENOMEM.
 */
#define FIB_ERRNO_MAP(X)                                                     \
  X(EINVAL, "invalid argument")                                              \
  X(ENOMEM, "out of memory or out of memory mappings")                       \
  X(EPERM, "operation not permitted here (outside a fiber or coroutine)")    \
  X(EDEADLK, "deadlock: a fiber would wait for itself or forever")           \
  X(ESRCH, "no such fiber (never spawned, already joined, or detached)")     \
  X(EBUSY, "busy: the object is running or in use")                         \
  X(ETIMEDOUT, "the deadline passed first")                                  \
  X(ECANCELED, "the fiber was cancelled")

enum {
#define FIB_ERRNO_ENUM(name, text) FIB_##name = -name,
  FIB_ERRNO_MAP(FIB_ERRNO_ENUM)
#undef FIB_ERRNO_ENUM
  FIB_ERRNO_END_ = 0
};

/* A static, human-readable description of an error code ("unknown error"
 * for a code the library never returns). Never NULL. */
FIB_API const char *fib_strerror(int err);

/* The code's symbolic name, e.g. "ENOMEM" ("UNKNOWN" if not one of ours). */
FIB_API const char *fib_err_name(int err);

/* ------------------------------------------------------------ attributes */

/* Smallest and largest stack a fiber or coroutine may ask for (usable bytes,
 * not counting the guard region). Sizes are rounded up to whole pages. */
#define FIB_STACK_MIN ((size_t)16 * 1024)
#define FIB_STACK_MAX ((size_t)1 << 30)
/* The default: 64 KiB of usable stack. Memory is committed lazily, so an
 * idle fiber costs only the pages it has touched (typically one); 64 KiB
 * keeps page-table overhead per fiber small while leaving room for libc
 * calls such as printf. Overflow is caught by the guard region. */
#define FIB_STACK_DEFAULT ((size_t)64 * 1024)

/* Longest fiber name kept (longer names are truncated). */
#define FIB_NAME_MAX 31

/* How the guard region below each stack is made. */
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
  FIB_GUARD_MPROTECT = 2
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
   * its own, as the ABI expects. In fib_runtime_opts.flags: the default
   * for every fiber of that runtime. */
  FIB_SHARED_FP = 1u << 1
};

/*
 * Optional attributes of a new fiber or coroutine. Zero-initialise and set
 * what you need; zero fields mean "the default".
 */
typedef struct fib_attr {
  size_t stack_size;    /* usable stack bytes; 0: the runtime's default */
  const char *name;     /* copied (fibers only); NULL: no name */
  unsigned flags;       /* FIB_DETACHED (fibers only), FIB_SHARED_FP */
  fib_guard_mode guard; /* FIB_GUARD_AUTO: the runtime's (or the default) */
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

typedef enum fib_coro_status {
  FIB_CORO_SUSPENDED = 0, /* created, or yielded: may be resumed */
  FIB_CORO_RUNNING = 1,   /* it is the one running */
  FIB_CORO_NORMAL = 2,    /* it resumed another coroutine and waits */
  FIB_CORO_DEAD = 3       /* its function returned: only destroy remains */
} fib_coro_state;

/*
 * Create a suspended coroutine that will run fn(arg, first).
 * attr may be NULL; stack_size, guard and FIB_SHARED_FP are used.
 * Errors: FIB_EINVAL (NULL out or fn, stack size out of
 * [FIB_STACK_MIN, FIB_STACK_MAX], guard mode unknown or unavailable,
 * unknown flags),
 * FIB_ENOMEM (no memory or mappings for the stack).
 */
FIB_API int fib_coro_create(fib_coro **out, fib_coro_fn fn, void *arg,
                            const fib_attr *attr);

/*
 * Run co until it yields or returns. out (may be NULL) receives the value
 * it yielded or returned.
 * Errors: FIB_EINVAL (NULL co, or co is dead), FIB_EBUSY (co is running or
 * is waiting on a coroutine it resumed).
 */
FIB_API int fib_coro_resume(fib_coro *co, void *in, void **out);

/*
 * Suspend the running coroutine, handing `value` to its resumer. When it is
 * resumed again, *in (if in is not NULL) receives the resume's value.
 * Errors: FIB_EPERM (not inside a coroutine).
 */
FIB_API int fib_coro_yield(void *value, void **in);

/* The coroutine's status (FIB_EINVAL for NULL). */
FIB_API int fib_coro_status(const fib_coro *co);

/* The coroutine running on this thread, or NULL. Inside a fiber this is the
 * fiber's own coroutine (or one it resumed). */
FIB_API fib_coro *fib_coro_current(void);

/*
 * Free a coroutine that is suspended or dead. A suspended coroutine's stack
 * is discarded without unwinding: nothing on it runs again.
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (running or normal).
 */
FIB_API int fib_coro_destroy(fib_coro *co);

/* --------------------------------------------------------------- runtime */

typedef struct fib_runtime fib_runtime;

/* A fiber's identity: unique within its runtime for the runtime's life,
 * assigned from 1 in spawn order. 0 is never a fiber. */
typedef uint64_t fib_id;

/* The body of a fiber. Its return value is what fib_join() receives. */
typedef void *(*fib_fn)(void *arg);

typedef struct fib_runtime_opts {
  size_t stack_size;    /* default usable stack; 0: FIB_STACK_DEFAULT */
  fib_guard_mode guard; /* default guard mode for its fibers */
  unsigned flags;       /* FIB_SHARED_FP: for all its fibers */
} fib_runtime_opts;

/*
 * Create a runtime. opts may be NULL for the defaults.
 * Errors: FIB_EINVAL (NULL out, bad opts), FIB_ENOMEM.
 */
FIB_API int fib_runtime_create(fib_runtime **out, const fib_runtime_opts *opts);

/*
 * Free a runtime that is not running. Fibers that have not finished are
 * discarded without unwinding, as if they had been suspended forever, and
 * every stack and fiber record is freed.
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (called while fib_run() is running
 * it, e.g. from one of its fibers).
 */
FIB_API int fib_runtime_destroy(fib_runtime *rt);

/*
 * Create a fiber that will run fn(arg), ready to run at the back of the
 * run queue. rt may be NULL inside a fiber, meaning that fiber's runtime.
 * attr may be NULL. *id (if id is not NULL) receives the new fiber's id.
 * Errors: FIB_EINVAL (NULL fn, bad attributes), FIB_EPERM (rt NULL outside
 * a fiber), FIB_ENOMEM (no memory or mappings; nothing else is affected).
 */
FIB_API int fib_spawn(fib_runtime *rt, fib_fn fn, void *arg,
                      const fib_attr *attr, fib_id *id);

/*
 * Run rt's fibers on the calling thread until every one has finished.
 * Fibers run in FIFO order; a fiber runs until it yields, blocks, sleeps or
 * finishes. When only sleepers remain, the thread sleeps until the earliest
 * deadline.
 * Returns 0 when all fibers have finished.
 * Errors: FIB_EINVAL (NULL), FIB_EBUSY (rt is already running, or this
 * thread is already running a runtime), FIB_ENOMEM (the thread's signal
 * stack for overflow reports could not be made), FIB_EDEADLK (fibers remain but all
 * wait for each other; they stay suspended, and fib_run() may be called
 * again after the program has made one of them ready -- in practice the
 * runtime is destroyed).
 */
FIB_API int fib_run(fib_runtime *rt);

/* The runtime whose fiber is running on this thread, or NULL. */
FIB_API fib_runtime *fib_runtime_current(void);

/* -------------------------------------------- inside a fiber (the current) */

/*
 * Give way: the current fiber goes to the back of the run queue and the
 * next ready fiber runs.
 * Errors: FIB_EPERM (not in a fiber, or inside a coroutine the fiber
 * resumed: only the fiber itself can give way).
 */
FIB_API int fib_yield(void);

/*
 * Wait for fiber `id` of the current runtime to finish; *result (if result
 * is not NULL) receives its return value or fib_exit() value. The fiber's
 * record is freed: its id is then unknown.
 * Errors: FIB_EPERM (not in a fiber), FIB_EDEADLK (id is the caller),
 * FIB_ESRCH (no such fiber: never spawned here, already joined, or detached
 * and finished), FIB_EINVAL (the fiber is detached, or another fiber is
 * already joining it), FIB_ECANCELED (the caller is cancelled; the target
 * is left as it was, still joinable).
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
 * Errors: FIB_EPERM (rt NULL outside a fiber), FIB_ESRCH (no such fiber).
 */
FIB_API int fib_cancel(fib_runtime *rt, fib_id id);

/* Non-zero if the current fiber has been cancelled (0 outside a fiber). */
FIB_API int fib_cancelled(void);

/*
 * Detach fiber `id` of the current runtime (or of rt, when called outside a
 * fiber with rt not NULL; rt may be NULL inside a fiber): nobody will join
 * it, and its record is freed when it finishes (at once if it has).
 * Errors: FIB_EPERM (rt NULL outside a fiber), FIB_ESRCH (no such fiber),
 * FIB_EINVAL (already detached, or a fiber is joining it).
 */
FIB_API int fib_detach(fib_runtime *rt, fib_id id);

/*
 * Finish the current fiber from anywhere inside it, as if its function had
 * returned `result`. Nothing on its stack is unwound. Calling it outside a
 * fiber (or inside a coroutine the fiber resumed) is a bug that no caller
 * can handle: the process aborts with a one-line message.
 */
FIB_API FIB_NORETURN void fib_exit(void *result);

/* The current fiber's id, or 0 outside a fiber. */
FIB_API fib_id fib_self(void);

/* The current fiber's name ("" if unnamed), or NULL outside a fiber. */
FIB_API const char *fib_self_name(void);

/* Monotonic clock (CLOCK_MONOTONIC) in nanoseconds: the time base of
 * deadlines. */
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

#ifdef __cplusplus
}
#endif

#endif /* FIBERS_H */
