# SPDX-License-Identifier: MIT
# test_migrate_lto: the library's sources and the test compiled together
# with -flto -O2 (the optimiser sees across the library's calls, as in a
# program that links it with LTO), run with forced migration. With the
# compiler of this build; CI builds with gcc and with clang, so both LTOs
# are covered. Skipped where this compiler cannot link with LTO (clang
# without its linker plugin, say).
include(CheckCSourceCompiles)
set(CMAKE_REQUIRED_FLAGS "-flto -O2")
set(CMAKE_REQUIRED_LINK_OPTIONS "-flto")
check_c_source_compiles("int main(void) { return 0; }" FIB_HAVE_LTO)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LINK_OPTIONS)

if(NOT FIB_HAVE_LTO)
  fib_skipped_test(migrate_lto "${CMAKE_C_COMPILER_ID} cannot link with -flto here")
  return()
endif()

# context.h declares the switch twice, under two C types, for one assembly
# symbol (its int-returning tail-call form): LTO's type check sees both.
include(CheckCCompilerFlag)
check_c_compiler_flag(-Wno-lto-type-mismatch FIB_HAVE_WNO_LTO_TYPE_MISMATCH)
set(fib_lto_warnings "")
if(FIB_HAVE_WNO_LTO_TYPE_MISMATCH)
  set(fib_lto_warnings -Wno-lto-type-mismatch)
endif()

set(fib_lto_sources "")
foreach(src ${FIB_SOURCES})
  list(APPEND fib_lto_sources ${PROJECT_SOURCE_DIR}/${src})
endforeach()
add_executable(test_migrate_lto ${CMAKE_CURRENT_SOURCE_DIR}/lto/test_migrate_lto.c
               ${fib_lto_sources})
target_include_directories(test_migrate_lto PRIVATE
  ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(test_migrate_lto PRIVATE _GNU_SOURCE)
if(FIB_WITH_VALGRIND)
  target_compile_definitions(test_migrate_lto PRIVATE FIB__WITH_VALGRIND)
endif()
target_compile_options(test_migrate_lto PRIVATE -flto -O2 ${FIB_HARDENING}
  $<$<COMPILE_LANGUAGE:C>:${FIB_WARNINGS}>)
target_link_options(test_migrate_lto PRIVATE -flto -O2 ${fib_lto_warnings})
target_link_libraries(test_migrate_lto PRIVATE Threads::Threads m)
if(FIB_HAVE_IO_URING)
  target_compile_definitions(test_migrate_lto PRIVATE FIB__HAVE_IO_URING)
  target_include_directories(test_migrate_lto PRIVATE ${FIB_URING_INCLUDE_DIR})
  target_link_libraries(test_migrate_lto PRIVATE ${FIB_URING_LIBRARY})
endif()
fib_add_cases(test_migrate_lto ${CMAKE_CURRENT_SOURCE_DIR}/lto/test_migrate_lto.c)
list(APPEND fib_unit_tests test_migrate_lto)
