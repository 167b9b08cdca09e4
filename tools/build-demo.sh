#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# build-demo.sh OUTDIR -- `make run` where CMake is not installed: the
# counters demo from the library's sources and examples/counters.c, with
# one compiler line, into OUTDIR/counters. A C compiler is all the demo
# needs, so it runs without root, network or installing anything; the
# tests need CMake (make test). The source list is CMakeLists.txt's
# FIB_SOURCES, read from there so that there is only one list; io_uring is
# left out (it needs liburing: the library is then epoll-only, which the
# demo does not use anyway). Environment: CC as the Makefile has it.
set -euo pipefail
out=${1:?usage: build-demo.sh OUTDIR}
cd "$(dirname "$0")/.."
CC=${CC:-cc}

# CMakeLists.txt picks the context switch by the target processor; here
# the compiler's target names it.
target=$($CC -dumpmachine)
case ${target%%-*} in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  riscv64) arch=riscv64 ;;
  *) echo "fibers: no context switch for $target yet" >&2; exit 1 ;;
esac
sources=$(sed -n '/^set(FIB_SOURCES$/,/)/p' CMakeLists.txt |
  grep -o 'src/[^ )]*' | sed "s/\${FIB_ARCH}/$arch/")
if [ -z "$sources" ]; then
  echo "fibers: build-demo.sh: no set(FIB_SOURCES ...) in CMakeLists.txt" >&2
  exit 1
fi

mkdir -p "$out"
echo "fibers: make run: cmake not found, so the demo is built without it" \
     "($CC, one line, into $out/); make test needs CMake" >&2
# the flags CMakeLists.txt gives the library that matter here: C11 with
# the Linux interfaces (_GNU_SOURCE), the API's export marking
# shellcheck disable=SC2086 # CC may carry flags; the sources have no spaces
$CC -std=c11 -O2 -g -D_GNU_SOURCE -DFIB_BUILDING_LIBRARY -Iinclude -Isrc \
  $sources examples/counters.c -o "$out/counters" -pthread
