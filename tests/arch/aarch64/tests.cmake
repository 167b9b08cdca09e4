# SPDX-License-Identifier: MIT
# tests.cmake -- AArch64-only tests, included by tests/CMakeLists.txt.
#
# Branch Target Identification is enforced only for an executable whose
# every object carries the BTI property note. The library and the tests are
# compiled with -mbranch-protection=standard (see the top CMakeLists.txt),
# but Debian 12's startup files (crt1.o, crti.o, crtbegin.o...) are not
# marked, so an ordinary link drops the note and runs without BTI. These
# two tests link with -nostartfiles and bti_start.S instead, use a copy of
# the library built with inline atomics (below), and check at run time that
# the note survived and the CPU enforces it:
#
#   test_bti          an unmarked indirect-branch target faults (SIGILL);
#                     coroutine and fiber switches work with BTI in force
#   test_switch_bti   the whole of test_switch.c with BTI in force
if(NOT FIB_HAVE_BRANCH_PROTECTION)
  message(STATUS "fibers: the compiler has no -mbranch-protection: "
                 "test_bti will fail")
  add_test(NAME test_bti COMMAND ${CMAKE_COMMAND} -E echo
           "FAIL: ${CMAKE_C_COMPILER} lacks -mbranch-protection=standard")
  set_tests_properties(test_bti PROPERTIES WILL_FAIL TRUE)
  return()
endif()

# The library once more, for these links: GCC 12 turns atomics into calls
# to libgcc's outline helpers (__aarch64_ldadd8_acq_rel...), and Debian's
# libgcc.a objects are not BTI-marked either, so the BTI tests' copy is
# compiled with inline atomics. Everything else is as in fibers_objects.
set(fib_bti_sources "")
foreach(src ${FIB_SOURCES})
  list(APPEND fib_bti_sources ${PROJECT_SOURCE_DIR}/${src})
endforeach()
add_library(fibers_bti_objects STATIC ${fib_bti_sources})
target_include_directories(fibers_bti_objects PUBLIC ${PROJECT_SOURCE_DIR}/include
                           PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(fibers_bti_objects PRIVATE FIB_BUILDING_LIBRARY _GNU_SOURCE)
target_compile_options(fibers_bti_objects PRIVATE
  $<$<COMPILE_LANGUAGE:C>:${FIB_WARNINGS}> ${FIB_HARDENING} -mno-outline-atomics)
set_target_properties(fibers_bti_objects PROPERTIES C_VISIBILITY_PRESET hidden)
target_link_libraries(fibers_bti_objects PUBLIC Threads::Threads)

set(fib_aarch64_dir ${CMAKE_CURRENT_LIST_DIR})
add_executable(test_bti ${fib_aarch64_dir}/test_bti.c
               ${fib_aarch64_dir}/bti_targets.S ${fib_aarch64_dir}/bti_start.S)
add_executable(test_switch_bti ${CMAKE_CURRENT_SOURCE_DIR}/test_switch.c
               ${fib_aarch64_dir}/regs.S ${fib_aarch64_dir}/bti_start.S)
target_compile_definitions(test_switch_bti PRIVATE FIB_TEST_EXPECT_BTI)
target_compile_options(test_switch_bti PRIVATE -fno-omit-frame-pointer)
foreach(t test_bti test_switch_bti)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/src
                             ${CMAKE_CURRENT_SOURCE_DIR} ${fib_aarch64_dir})
  target_link_libraries(${t} PRIVATE fibers_bti_objects m)
  target_compile_options(${t} PRIVATE -mno-outline-atomics)
  target_compile_options(${t} PRIVATE ${FIB_WARNINGS})
  target_compile_definitions(${t} PRIVATE _GNU_SOURCE)
  target_link_options(${t} PRIVATE -nostartfiles)
  add_test(NAME ${t} COMMAND ${t})
  set_tests_properties(${t} PROPERTIES TIMEOUT 600 ENVIRONMENT "${FIB_TEST_ENV}")
endforeach()
