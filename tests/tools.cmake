# SPDX-License-Identifier: MIT
# tools.cmake -- tests that drive external tools: nm, readelf, gdb,
# pkg-config and cmake itself on an installed copy. Included by
# tests/CMakeLists.txt. The scripts live in tests/tools/ and need bash and
# perl (both always present on Debian: bash and perl-base are essential).
#
# A test whose tool is missing is skipped, visibly: configure says which
# package to install, and CTest lists the test as "Skipped" with the same
# reason (fib_skipped_test, tests/CMakeLists.txt). .ci/run installs every tool.
#
#   exported_symbols   libfibers.so exports exactly the FIB_API functions
#   install_pkgconfig  cmake --install, then build against it with pkg-config
#   install_cmake      cmake --install, then find_package(fibers CONFIG)
#   gdb_backtrace      backtraces inside fibers/coroutines end cleanly
#   cet_note           IBT (not SHSTK) property notes, non-executable stack
#   layers             no source includes a header of a later layer than its
#                      own (the order docs/internals.md states)
#   spdx               every source file carries its SPDX licence line

set(FIB_TOOLS_DIR ${CMAKE_CURRENT_SOURCE_DIR}/tools)
find_program(FIB_BASH bash)
find_program(FIB_GDB gdb)
find_program(FIB_PKG_CONFIG NAMES pkg-config pkgconf)
if(CMAKE_NM)
  set(FIB_NM ${CMAKE_NM})
else()
  find_program(FIB_NM nm)
endif()
if(CMAKE_READELF)
  set(FIB_READELF ${CMAKE_READELF})
else()
  find_program(FIB_READELF readelf)
endif()

# Sets <name>_ok when bash and the tool were found (tool_var: the variable
# find_program set, if the test needs a tool; program: its name, for the
# message); otherwise adds <name> as a skipped test naming the program and
# the package to install.
function(fib_tool_test name tool_var program package)
  set(${name}_ok FALSE PARENT_SCOPE)
  if(NOT FIB_BASH)
    fib_skipped_test(${name} "bash not found: install the package bash")
  elseif(tool_var AND NOT ${tool_var})
    fib_skipped_test(${name} "${program} not found: install the package ${package}")
  else()
    set(${name}_ok TRUE PARENT_SCOPE)
  endif()
endfunction()

# ---- exported_symbols
fib_tool_test(exported_symbols FIB_NM nm binutils)
if(exported_symbols_ok)
  add_test(NAME exported_symbols
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/exported_symbols.sh ${FIB_NM}
            ${PROJECT_SOURCE_DIR}/include/fibers.h ${FIB_TOOLS_DIR}/exports.txt
            $<TARGET_FILE:fibers_shared> $<TARGET_FILE:fibers_static>)
endif()

# ---- install_pkgconfig, install_cmake
# Each installs into its own prefix under the build tree, so they may run in
# parallel. The smoke program is compiled with the library's warnings.
string(REPLACE ";" " " fib_tools_cflags "${FIB_WARNINGS}")
if(FIB_SANITIZE) # a sanitized library needs the sanitizer's runtime
  string(APPEND fib_tools_cflags " -fsanitize=${FIB_SANITIZE}")
endif()
fib_tool_test(install_pkgconfig FIB_PKG_CONFIG pkg-config pkgconf)
if(install_pkgconfig_ok)
  add_test(NAME install_pkgconfig
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/install_check.sh pkgconfig
            ${CMAKE_COMMAND} ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
            ${CMAKE_C_COMPILER} "${fib_tools_cflags}"
            ${CMAKE_CURRENT_BINARY_DIR}/tools-install/pkgconfig
            ${FIB_PKG_CONFIG})
endif()
fib_tool_test(install_cmake "" "" "")
if(install_cmake_ok)
  add_test(NAME install_cmake
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/install_check.sh cmake
            ${CMAKE_COMMAND} ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
            ${CMAKE_C_COMPILER} "${fib_tools_cflags}"
            ${CMAKE_CURRENT_BINARY_DIR}/tools-install/cmake)
endif()
foreach(t install_pkgconfig install_cmake)
  if(TEST ${t})
    set_tests_properties(${t} PROPERTIES TIMEOUT 300)
  endif()
endforeach()

# ---- gdb_backtrace
# The debuggee: -O0 -g with frame pointers, linked with the static library
# (whatever the build type compiled that with).
add_executable(gdb_target ${FIB_TOOLS_DIR}/gdb_target.c)
target_link_libraries(gdb_target PRIVATE fibers_static)
target_compile_options(gdb_target PRIVATE ${FIB_WARNINGS} -O0 -g
                       -fno-omit-frame-pointer)
fib_tool_test(gdb_backtrace FIB_GDB gdb gdb)
if(gdb_backtrace_ok)
  add_test(NAME gdb_backtrace
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/gdb_backtrace.sh ${FIB_GDB}
            $<TARGET_FILE:gdb_target>)
  set_tests_properties(gdb_backtrace PROPERTIES TIMEOUT 120)
endif()

# ---- cet_note
if(FIB_HAVE_CF_PROTECTION)
  set(fib_tools_have_cf ON)
else()
  set(fib_tools_have_cf OFF)
endif()
fib_tool_test(cet_note FIB_READELF readelf binutils)
if(cet_note_ok)
  add_test(NAME cet_note
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/cet_note.sh ${FIB_READELF}
            ${CMAKE_C_COMPILER} ${fib_tools_have_cf}
            $<TARGET_FILE:fibers_shared> $<TARGET_FILE:fibers_static>
            ${CMAKE_CURRENT_BINARY_DIR}/tools-cet)
endif()

# ---- layers
fib_tool_test(layers "" "" "")
if(layers_ok)
  add_test(NAME layers
    COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/layers.sh
            ${PROJECT_SOURCE_DIR}/docs/internals.md ${PROJECT_SOURCE_DIR}/src)
endif()

# ---- spdx
fib_tool_test(spdx "" "" "")
if(spdx_ok)
  add_test(NAME spdx COMMAND ${FIB_BASH} ${FIB_TOOLS_DIR}/spdx.sh
                             ${PROJECT_SOURCE_DIR})
endif()

# ---- net_*: the network examples on a free loopback port, driven over raw
# sockets and by their real clients (tests/tools/net_check.py): echo_client;
# redis-cli and redis-benchmark (redis-tools); curl; wrk; openssl (net_tls:
# makes the certificate and runs s_client against tls_echo, which is built
# only with OpenSSL, libssl-dev). A client that is not installed: the test is
# skipped, saying which package to install.
find_program(FIB_PYTHON3 python3)
find_program(FIB_REDIS_CLI redis-cli)
find_program(FIB_REDIS_BENCHMARK redis-benchmark)
find_program(FIB_CURL curl)
find_program(FIB_WRK wrk)
find_program(FIB_OPENSSL openssl)
set(fib_net_tests
  "net_echo|echo|echo_server|echo_client|"
  "net_kv|kv|kv_server||"
  "net_kv_redis|kv-redis|kv_server||FIB_REDIS_CLI FIB_REDIS_BENCHMARK:redis-tools"
  "net_http|http|http_server||"
  "net_http_curl|http-curl|http_server||FIB_CURL:curl"
  "net_http_wrk|http-wrk|http_server||FIB_WRK:wrk"
  "net_tls|tls|tls_echo||FIB_OPENSSL:openssl")
foreach(spec ${fib_net_tests})
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 check)
  list(GET spec 2 server)
  list(GET spec 3 client)
  list(GET spec 4 needs)
  if(NOT TARGET ${server})
    if(server STREQUAL "tls_echo" AND TARGET echo_server)
      # the examples are built, but not this one: examples/CMakeLists.txt
      fib_skipped_test(${name}
        "OpenSSL not found, tls_echo not built: install the package libssl-dev")
    endif()
    continue() # examples not built
  endif()
  set(missing "")
  if(NOT FIB_PYTHON3)
    set(missing "python3 not found: install the package python3")
  endif()
  string(REPLACE ":" ";" needs "${needs}")
  if(needs)
    list(GET needs 1 package)
    list(GET needs 0 vars)
    string(REPLACE " " ";" vars "${vars}")
    foreach(v ${vars})
      if(NOT ${v} AND NOT missing)
        string(REGEX REPLACE "^FIB_" "" tool ${v})
        string(TOLOWER ${tool} tool)
        string(REPLACE "_" "-" tool ${tool})
        set(missing "${tool} not found: install the package ${package}")
      endif()
    endforeach()
  endif()
  if(missing)
    fib_skipped_test(${name} "${missing}")
    continue()
  endif()
  set(args $<TARGET_FILE:${server}>)
  if(client)
    list(APPEND args $<TARGET_FILE:${client}>)
  endif()
  add_test(NAME ${name} COMMAND ${FIB_PYTHON3} ${FIB_TOOLS_DIR}/net_check.py
                                ${check} ${args})
  # the script's own alarm (60 s) names the check; this only backs it up
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120
                                          LABELS "net" RUN_SERIAL TRUE)
endforeach()
