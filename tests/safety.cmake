# SPDX-License-Identifier: MIT
# safety.cmake -- test settings for the dynamic-analysis builds, and the
# safety tests that need more than one program. Included by
# tests/CMakeLists.txt after every unit test has been added.
#
#   FIB_SANITIZE=address,...  (make test-asan) ASAN_OPTIONS for every test;
#       the death tests of test_overflow run with handle_segv=0, so that our
#       handler is the only one and their exact messages stay what they are
#       in a normal build (with ASan's handler in place a fault that is not
#       an overflow would go to ASan's report: also right, but a different
#       message). Tests that run gdb have LeakSanitizer off: it cannot run
#       under ptrace.
#   FIB_SANITIZE=thread       (make test-tsan) TSAN_OPTIONS likewise.
#   FIB_TEST_LAUNCHER         (make test-valgrind) every unit test runs
#       under tests/tools/valgrind_run.sh: see there.

# fib_unit_tests (the executables) and fib_cases_<exe> (their CTest
# tests, one a case) come from tests/CMakeLists.txt.

# Options every sanitizer test runs with.
set(FIB_ASAN_OPTIONS "strict_string_checks=1:abort_on_error=0")
# detect_stack_use_after_return keeps frames in fake stacks: that exercises
# the per-fiber fake-stack slots of the switch hooks. Only for the tests
# that switch a lot but create few fibers: ASan maps a fake stack for each
# new fiber, which makes test_stress 20x slower.
set(fib_fake_stack_tests test_coro test_switch test_sched)
set(FIB_TSAN_OPTIONS "halt_on_error=1:second_deadlock_stack=1")

function(fib_safety_env test)
  if(NOT TEST ${test})
    return()
  endif()
  set(extra_asan "${ARGN}")
  if(FIB_SANITIZE MATCHES "address")
    set(opts "${FIB_ASAN_OPTIONS}")
    if(extra_asan)
      set(opts "${opts}:${extra_asan}")
    endif()
    set_property(TEST ${test} APPEND PROPERTY ENVIRONMENT "ASAN_OPTIONS=${opts}")
    set_property(TEST ${test} APPEND PROPERTY ENVIRONMENT
                 "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  endif()
  if(FIB_SANITIZE MATCHES "thread")
    set(opts "${FIB_TSAN_OPTIONS}")
    if(extra_asan MATCHES "handle_segv=0")
      set(opts "${opts}:handle_segv=0")
    endif()
    set_property(TEST ${test} APPEND PROPERTY ENVIRONMENT "TSAN_OPTIONS=${opts}")
  endif()
endfunction()

foreach(t ${fib_unit_tests})
  set(extra "")
  if(t STREQUAL "test_overflow" OR t STREQUAL "test_safety" OR
     t STREQUAL "test_slab" OR t STREQUAL "test_compact")
    list(APPEND extra handle_segv=0)
  endif()
  if(t IN_LIST fib_fake_stack_tests)
    list(APPEND extra detect_stack_use_after_return=1)
  endif()
  string(REPLACE ";" ":" extra "${extra}")
  foreach(c ${fib_cases_${t}})
    fib_safety_env(${c} ${extra})
  endforeach()
endforeach()
foreach(t demo_counters demo_generator)
  fib_safety_env(${t})
endforeach()

# The million-fiber test (about a million page faults at full size; its
# case gives itself a longer limit, T_TIMEOUT). Label "slow": `ctest -LE
# slow` leaves it out. Under the tools it runs at a fixed small size:
# LeakSanitizer's root-region list is linear, TSan allows 8128 fibers at
# once and checks neither mappings nor memory there (a thousand fibers do
# for its races; gcc's TSan spends ~6 ms making each TSan fiber), valgrind
# is 50x slower.
foreach(c ${fib_cases_test_million})
  set_property(TEST ${c} APPEND PROPERTY LABELS slow)
  if(FIB_SANITIZE MATCHES "thread")
    set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT FIB_TEST_SCALE=0.001)
  elseif(FIB_SANITIZE OR FIB_TEST_LAUNCHER)
    set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT FIB_TEST_SCALE=0.01)
  endif()
endforeach()

# test_stress: under TSan a TSan fiber switch with synchronisation and a
# TSan fiber per spawn are slow; under valgrind every switch between
# registered stacks looks the new one up in a list of all of them, so
# time grows faster than the fibers alive at once (10,000: 80 s; 500: 5 s).
if(FIB_SANITIZE MATCHES "thread")
  foreach(c ${fib_cases_test_stress})
    set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT FIB_TEST_SCALE=0.002)
  endforeach()
elseif(FIB_TEST_LAUNCHER MATCHES "valgrind")
  foreach(c ${fib_cases_test_stress})
    set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT FIB_TEST_SCALE=0.005)
  endforeach()
endif()

# gdb: LeakSanitizer cannot run under ptrace.
foreach(t gdb_backtrace gdb_fibers)
  fib_safety_env(${t} detect_leaks=0)
endforeach()

# Tell the tests which tool runs them, so the few cases whose expected
# outcome depends on it (test_safety.c) check the right thing.
if(FIB_SANITIZE MATCHES "address")
  set(fib_safety_tool asan)
elseif(FIB_SANITIZE MATCHES "thread")
  set(fib_safety_tool tsan)
elseif(FIB_TEST_LAUNCHER MATCHES "valgrind")
  set(fib_safety_tool valgrind)
else()
  set(fib_safety_tool none)
endif()
if(NOT FIB_SANITIZER_HOOKS AND NOT fib_safety_tool STREQUAL "none")
  set(fib_safety_tool "${fib_safety_tool}-nohooks")
endif()
foreach(t ${fib_unit_tests})
  foreach(c ${fib_cases_${t}})
    set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT
                 "FIB_TEST_TOOL=${fib_safety_tool}")
    # valgrind cannot follow io_uring (the kernel fills buffers it never
    # sees written): under it every runtime runs epoll, whatever AUTO
    # prefers, and test_uring skips its io_uring halves.
    if(fib_safety_tool MATCHES "^valgrind")
      set_property(TEST ${c} APPEND PROPERTY ENVIRONMENT FIBERS_IO=epoll)
    endif()
  endforeach()
endforeach()

# ---- the gdb extension (tools/gdb/fibers-gdb.py): native builds only
if(NOT CMAKE_CROSSCOMPILING)
  find_program(FIB_SAFETY_GDB gdb)
  find_program(FIB_SAFETY_BASH bash)
  add_executable(gdb_fibers_target tools/gdb_fibers_target.c)
  target_link_libraries(gdb_fibers_target PRIVATE fibers_static)
  # -O0: no tail calls, so every function named in the test is a frame
  target_compile_options(gdb_fibers_target PRIVATE ${FIB_WARNINGS} -O0 -g
                         -fno-omit-frame-pointer)
  set(fib_gdb_core core)
  if(FIB_SANITIZE) # see gdb_fibers.sh: no usable gcore of a sanitized process
    set(fib_gdb_core nocore)
  endif()
  if(FIB_SAFETY_GDB AND FIB_SAFETY_BASH)
    add_test(NAME gdb_fibers
      COMMAND ${FIB_SAFETY_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/tools/gdb_fibers.sh
              ${FIB_SAFETY_GDB} $<TARGET_FILE:gdb_fibers_target>
              ${PROJECT_SOURCE_DIR}/tools/gdb/fibers-gdb.py
              ${CMAKE_CURRENT_BINARY_DIR}/gdb-fibers ${fib_gdb_core})
  else()
    fib_skipped_test(gdb_fibers "gdb or bash not found: install the package gdb")
  endif()
  set_tests_properties(gdb_fibers PROPERTIES TIMEOUT 180)
  fib_safety_env(gdb_fibers detect_leaks=0)
endif()

# Under TSan the debugger tests do not run, visibly ("Disabled" in CTest's
# output): a TSan program reserves terabytes of shadow that gcore tries to
# dump, and the TSan runtime may re-exec the program (to fix its memory
# layout), which loses gdb's breakpoints. They run in every other build.
if(FIB_SANITIZE MATCHES "thread")
  foreach(t gdb_backtrace gdb_fibers)
    if(TEST ${t})
      set_tests_properties(${t} PROPERTIES DISABLED TRUE)
    endif()
  endforeach()
  message(STATUS "fibers: TSan build: gdb_backtrace and gdb_fibers are "
                 "disabled (see tests/safety.cmake)")
endif()
