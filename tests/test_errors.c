/* SPDX-License-Identifier: MIT */
/* test_errors.c -- every documented misuse gets its documented answer:
 * an error code, or (where no caller could handle it) a one-line abort. */
#include "fiber_helpers.h"

#include <fibers.h>

#include <stdint.h>

static void *nothing(void *arg) { return arg; }

/* Every code of FIB_ERRNO_MAP, as the header lists it. */
static const struct {
  int code, errno_value;
  const char *name, *text;
} codes[] = {
#define ERRORS_ROW(name, text) {FIB_##name, name, #name, text},
    FIB_ERRNO_MAP(ERRORS_ROW)
#undef ERRORS_ROW
};
#define NCODES (sizeof codes / sizeof codes[0])

TEST(error_codes_have_names_and_descriptions) {
  for (size_t i = 0; i < NCODES; i++) {
    CHECK(codes[i].errno_value > 0);
    CHECK_EQ(codes[i].code, -codes[i].errno_value);
    CHECK_STR_EQ(fib_err_name(codes[i].code), codes[i].name);
    CHECK_STR_EQ(fib_strerror(codes[i].code), codes[i].text);
    for (size_t j = 0; j < i; j++) /* one meaning per code */
      CHECK(codes[j].code != codes[i].code);
  }
  CHECK_STR_EQ(fib_err_name(0), "OK");
  CHECK_STR_EQ(fib_strerror(0), "success");
  CHECK_STR_EQ(fib_err_name(-12345), "UNKNOWN");
  CHECK_STR_EQ(fib_strerror(-12345), "unknown error");
  CHECK_STR_EQ(fib_err_name(EINVAL), "UNKNOWN"); /* codes are negative */
  CHECK_STR_EQ(fib_strerror(EINVAL), "unknown error");
}

/* The header's version is the one the build system gives the project
 * (tests/CMakeLists.txt passes PROJECT_VERSION_*), and the library reports
 * it: a release that bumps one and not the other fails here. */
TEST(version_matches_the_build_system) {
  CHECK_EQ(FIB_VERSION_MAJOR, FIB_TEST_PROJECT_VERSION_MAJOR);
  CHECK_EQ(FIB_VERSION_MINOR, FIB_TEST_PROJECT_VERSION_MINOR);
  CHECK_EQ(FIB_VERSION_PATCH, FIB_TEST_PROJECT_VERSION_PATCH);
  CHECK_EQ(fib_version(), FIB_TEST_PROJECT_VERSION_MAJOR * 10000 +
                              FIB_TEST_PROJECT_VERSION_MINOR * 100 +
                              FIB_TEST_PROJECT_VERSION_PATCH);
}

TEST(runtime_create_rejects_bad_options) {
  fib_runtime *rt = NULL;
  CHECK_EQ(fib_runtime_create(NULL, NULL), FIB_EINVAL);
  fib_runtime_opts small = {.stack_size = 100};
  CHECK_EQ(fib_runtime_create(&rt, &small), FIB_EINVAL);
  fib_runtime_opts huge = {.stack_size = FIB_STACK_MAX + 1};
  CHECK_EQ(fib_runtime_create(&rt, &huge), FIB_EINVAL);
  fib_runtime_opts guard = {.guard = (fib_guard_mode)7};
  CHECK_EQ(fib_runtime_create(&rt, &guard), FIB_EINVAL);
  fib_runtime_opts flags = {.flags = FIB_DETACHED};
  CHECK_EQ(fib_runtime_create(&rt, &flags), FIB_EINVAL);
  CHECK_PTR_EQ(rt, NULL);
  CHECK_EQ(fib_runtime_destroy(NULL), FIB_EINVAL);
  CHECK_EQ(fib_run(NULL), FIB_EINVAL);
}

TEST(spawn_rejects_bad_input) {
  fib_runtime *rt;
  fib_id id = 99;
  CHECK_OK(fib_runtime_create(&rt, NULL));
  CHECK_EQ(fib_spawn(rt, NULL, NULL, NULL, &id), FIB_EINVAL);
  fib_attr zero_min = {.stack_size = FIB_STACK_MIN - 1};
  CHECK_EQ(fib_spawn(rt, nothing, NULL, &zero_min, &id), FIB_EINVAL);
  fib_attr absurd = {.stack_size = SIZE_MAX};
  CHECK_EQ(fib_spawn(rt, nothing, NULL, &absurd, &id), FIB_EINVAL);
  fib_attr flags = {.flags = 0x100}; /* the first bit no flag uses */
  CHECK_EQ(fib_spawn(rt, nothing, NULL, &flags, &id), FIB_EINVAL);
  CHECK_EQ(fib_spawn(NULL, nothing, NULL, NULL, &id), FIB_EPERM);
  CHECK_EQ(id, 99);
  /* nothing was created: run has nothing to do */
  CHECK_OK(fib_run(rt));
  fib_attr min = {.stack_size = FIB_STACK_MIN};
  CHECK_OK(fib_spawn(rt, nothing, NULL, &min, &id));
  CHECK_EQ(id, 1);
  run_to_end(rt);
}

TEST(fiber_calls_outside_a_fiber_are_refused) {
  CHECK_EQ(fib_yield(), FIB_EPERM);
  CHECK_EQ(fib_join(1, NULL), FIB_EPERM);
  CHECK_EQ(fib_detach(NULL, 1), FIB_EPERM);
  CHECK_EQ(fib_sleep_ns(1), FIB_EPERM);
  CHECK_EQ(fib_sleep_until(0), FIB_EPERM);
  CHECK_EQ(fib_join_until(1, NULL, 0), FIB_EPERM);
}

static fib_runtime *the_rt;

static void *misuse_inside(void *arg) {
  (void)arg;
  CHECK_EQ(fib_join(fib_self(), NULL), FIB_EDEADLK);
  CHECK_EQ(fib_join(12345, NULL), FIB_ESRCH);
  CHECK_EQ(fib_join(0, NULL), FIB_ESRCH);
  CHECK_EQ(fib_detach(NULL, 777), FIB_ESRCH);
  CHECK_EQ(fib_run(the_rt), FIB_EBUSY);        /* already running */
  CHECK_EQ(fib_runtime_destroy(the_rt), FIB_EBUSY);
  fib_runtime *other;
  CHECK_OK(fib_runtime_create(&other, NULL));
  CHECK_EQ(fib_run(other), FIB_EBUSY);         /* thread is busy */
  CHECK_OK(fib_runtime_destroy(other));
  fib_id id;
  CHECK_OK(fib_spawn(NULL, nothing, NULL, NULL, &id));
  CHECK_OK(fib_join(id, NULL));
  CHECK_EQ(fib_join(id, NULL), FIB_ESRCH);     /* joined twice */
  return NULL;
}

TEST(misuse_inside_a_fiber_gets_error_codes) {
  CHECK_OK(fib_runtime_create(&the_rt, NULL));
  CHECK_OK(fib_spawn(the_rt, misuse_inside, NULL, NULL, NULL));
  CHECK_OK(fib_run(the_rt));
  CHECK_OK(fib_runtime_destroy(the_rt));
}

static void *nested_blocker(void *arg, void *first) {
  (void)arg;
  (void)first;
  /* only the fiber itself may give way, not a coroutine it resumed */
  CHECK_EQ(fib_yield(), FIB_EPERM);
  CHECK_EQ(fib_sleep_ns(1), FIB_EPERM);
  CHECK_EQ(fib_join(1, NULL), FIB_EPERM);
  CHECK(fib_self() != 0); /* still inside the fiber, though */
  return NULL;
}

static void *fiber_with_coroutine(void *arg) {
  (void)arg;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, nested_blocker, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  CHECK_EQ(fib_coro_status(co), FIB_CORO_DEAD);
  CHECK_OK(fib_coro_destroy(co));
  return NULL;
}

TEST(blocking_inside_a_nested_coroutine_is_refused) {
  run_main(fiber_with_coroutine, NULL);
}

/* ---- misuse no caller could handle: abort with one line */

static void exit_outside(void *arg) {
  (void)arg;
  fib_exit(NULL);
}

TEST(exit_outside_a_fiber_aborts_with_a_message) {
  struct child_result r;
  run_child(exit_outside, NULL, &r);
  CHECK_EQ(r.signal, SIGABRT);
  CHECK_STR_EQ(r.err, "fibers: fatal: fib_exit called outside a fiber\n");
}

static void *exit_in_coro(void *arg, void *first) {
  (void)arg;
  (void)first;
  fib_exit(NULL);
}

static void *fiber_exit_in_coro(void *arg) {
  (void)arg;
  fib_coro *co;
  CHECK_OK(fib_coro_create(&co, exit_in_coro, NULL, NULL));
  CHECK_OK(fib_coro_resume(co, NULL, NULL));
  return NULL;
}

static void exit_in_nested(void *arg) {
  (void)arg;
  fib_runtime *rt = new_runtime();
  CHECK_OK(fib_spawn(rt, fiber_exit_in_coro, NULL, NULL, NULL));
  fib_run(rt);
}

TEST(exit_inside_a_nested_coroutine_aborts_with_a_message) {
  struct child_result r;
  run_child(exit_in_nested, NULL, &r);
  CHECK_EQ(r.signal, SIGABRT);
  CHECK_STR_EQ(r.err, "fibers: fatal: fib_exit called inside a coroutine "
                      "resumed by a fiber\n");
}

TEST_MAIN(T(error_codes_have_names_and_descriptions),
          T(version_matches_the_build_system),
          T(runtime_create_rejects_bad_options),
          T(spawn_rejects_bad_input),
          T(fiber_calls_outside_a_fiber_are_refused),
          T(misuse_inside_a_fiber_gets_error_codes),
          T(blocking_inside_a_nested_coroutine_is_refused),
          T(exit_outside_a_fiber_aborts_with_a_message),
          T(exit_inside_a_nested_coroutine_aborts_with_a_message))
