#!/bin/bash
# SPDX-License-Identifier: MIT
# install_check.sh MODE CMAKE BUILD_DIR SOURCE_DIR CC CFLAGS WORKDIR [PKG_CONFIG]
#
# Install the build (cmake --install BUILD_DIR --prefix WORKDIR/prefix) and
# build tests/tools/install_smoke.c against the installed copy, then run it.
#
#   MODE pkgconfig: cc $(pkg-config --cflags --libs fibers), linked against
#     the shared library (run with LD_LIBRARY_PATH, and checked to load the
#     installed library by its SONAME), and with --static against
#     libfibers.a (checked not to need libfibers.so at all); then, if gdb
#     is there, gdb must auto-load the installed extension for the shared
#     program (told to trust the prefix's auto-load directory);
#   MODE cmake: a tiny CMake project (tests/tools/install_project) does
#     find_package(fibers CONFIG REQUIRED) and links fibers::fibers (the
#     shared library) and fibers::fibers_static.
#
# The installed files must be found under the prefix (GNUInstallDirs may
# choose lib/ or lib/<multiarch>/), and nothing may come from the build or
# source tree or from a copy installed elsewhere on the machine.
set -uo pipefail
mode=$1 cmake=$2 build=$3 src=$4 cc=$5 cflags=$6 work=$7 pkgconfig=${8:-pkg-config}
export LC_ALL=C
smoke=$src/tests/tools/install_smoke.c
prefix=$work/prefix

die() { echo "FAIL: $*"; exit 1; }
run() { echo "+ $*"; "$@"; }

rm -rf "$work"
mkdir -p "$work" || die "cannot create $work"
# Never pick up a copy from the environment.
unset LD_LIBRARY_PATH CMAKE_PREFIX_PATH PKG_CONFIG_SYSROOT_DIR

run "$cmake" --install "$build" --prefix "$prefix" ||
  die "cmake --install $build --prefix $prefix failed"

# Where did GNUInstallDirs put things?
pc=$(find "$prefix" -name fibers.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || die "no fibers.pc installed under $prefix"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/fibers.h" "$prefix/include/fibers/debug.h" \
         "$prefix/include/fibers/seedtest.h" \
         "$libdir/libfibers.a" "$libdir/libfibers.so" \
         "$libdir/cmake/fibers/fibersConfig.cmake" \
         "$libdir/cmake/fibers/fibersConfigVersion.cmake"; do
  [ -e "$f" ] || die "$f was not installed"
done
# The SONAME (docs/packaging.md: libfibers.so.0.MINOR during 0.x), and the
# link named by it.
soname=$(readelf -dW "$libdir/libfibers.so" |
         sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[[ $soname =~ ^libfibers\.so\.[0-9]+(\.[0-9]+)?$ ]] ||
  die "libfibers.so has SONAME '$soname', not libfibers.so.N[.M]"
[ -e "$libdir/$soname" ] || die "$libdir/$soname was not installed"
real=$(basename "$(readlink -f "$libdir/libfibers.so")")
loader=$prefix/share/gdb/auto-load$libdir/$real-gdb.py
[ -f "$loader" ] || die "gdb's auto-load file $loader was not installed"
[ -f "$prefix/share/fibers/gdb/fibers-gdb.py" ] ||
  die "$prefix/share/fibers/gdb/fibers-gdb.py was not installed"
echo "installed: libdir $libdir, SONAME $soname"

# $1: the program; $2: shared|static. Checks what it links and runs it.
check_program() {
  local prog=$1 kind=$2 needed
  needed=$(readelf -dW "$prog" | grep -E '\(NEEDED\)' || true)
  if [ "$kind" = shared ]; then
    grep -qF "[$soname]" <<<"$needed" ||
      die "$prog does not need $soname:"$'\n'"$needed"
    local where
    where=$(LD_LIBRARY_PATH=$libdir ldd "$prog" | grep -F "$soname" || true)
    echo "ldd: $where"
    [[ $where == *"=> $libdir/$soname "* ]] ||
      die "$prog does not load the installed $libdir/$soname"
    run env LD_LIBRARY_PATH="$libdir" "$prog" || die "$prog failed"
  else
    if grep -q 'libfibers' <<<"$needed"; then
      die "$prog (static) still needs the shared library:"$'\n'"$needed"
    fi
    run "$prog" || die "$prog failed"
  fi
}

# $1: a program linked with the installed shared library. gdb reads the
# auto-load file from the prefix only when told to look there and to trust
# it (a system install under /usr needs neither: docs/packaging.md).
check_gdb_autoload() {
  local prog=$1 gdb out
  gdb=$(command -v gdb || true)
  if [ -z "$gdb" ]; then
    echo "gdb not found: the auto-load file is installed, its loading is not checked"
    return
  fi
  if [[ $cflags == *-fsanitize* ]]; then
    echo "sanitizer build: the auto-load file is installed, its loading is not checked"
    return
  fi
  out=$("$gdb" -batch -nx -iex 'set debuginfod enabled off' \
          -iex 'set breakpoint pending on' \
          -iex "set auto-load scripts-directory $prefix/share/gdb/auto-load" \
          -iex "set auto-load safe-path $prefix" \
          -ex "set environment LD_LIBRARY_PATH $libdir" \
          -ex 'break fib_run' -ex 'run' \
          -ex 'info auto-load python-scripts' -ex 'info fibers' -ex 'kill' \
          "$prog" 2>&1 < /dev/null)
  echo "---- gdb:"
  echo "$out"
  grep -qE "^Yes +$loader *$" <<<"$out" ||
    die "gdb did not auto-load $loader"
  grep -qE '^1 +0x[0-9a-f]+ +1 ready ' <<<"$out" ||
    die "info fibers (auto-loaded) did not list the ready fiber"
  if grep -qiE 'Traceback|Python Exception' <<<"$out"; then
    die "the auto-loaded extension failed"
  fi
}

case $mode in
pkgconfig)
  export PKG_CONFIG_PATH=$libdir/pkgconfig PKG_CONFIG_LIBDIR=$libdir/pkgconfig
  run "$pkgconfig" --modversion fibers || die "pkg-config cannot find fibers"
  # The .pc file must point into the prefix it was installed to.
  for v in includedir libdir; do
    val=$("$pkgconfig" --variable=$v fibers)
    real=$(cd "$val" 2>/dev/null && pwd -P)
    if [ -z "$real" ] || [[ $real != "$(cd "$prefix" && pwd -P)"/* ]]; then
      die "pkg-config: $v=$val is not inside the install prefix $prefix" \
          "(fibers.pc is not relocatable: cmake --install --prefix breaks it)"
    fi
  done
  read -r -a pc_cflags <<< "$("$pkgconfig" --cflags fibers)" ||
    die "pkg-config --cflags fibers"
  read -r -a pc_libs <<< "$("$pkgconfig" --libs fibers)" ||
    die "pkg-config --libs fibers"
  read -r -a pc_static <<< "$("$pkgconfig" --static --libs fibers)" ||
    die "pkg-config --static --libs fibers"
  read -r -a warn <<< "$cflags"
  echo "pkg-config: cflags [${pc_cflags[*]}] libs [${pc_libs[*]}]" \
       "static [${pc_static[*]}]"

  run "$cc" -std=c11 "${warn[@]}" "${pc_cflags[@]}" "$smoke" \
      -o "$work/smoke_shared" "${pc_libs[@]}" || die "shared link failed"
  check_program "$work/smoke_shared" shared

  # --static: -lfibers would still pick the .so when both exist; ask the
  # linker for the archive by name.
  static_libs=()
  for a in "${pc_static[@]}"; do
    [ "$a" = -lfibers ] && a=-l:libfibers.a
    static_libs+=("$a")
  done
  run "$cc" -std=c11 "${warn[@]}" "${pc_cflags[@]}" "$smoke" \
      -o "$work/smoke_static" "${static_libs[@]}" || die "static link failed"
  check_program "$work/smoke_static" static
  check_gdb_autoload "$work/smoke_shared"
  ;;
cmake)
  run "$cmake" -S "$src/tests/tools/install_project" -B "$work/build" \
      -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$cflags" \
      -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
      -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
      -DSMOKE_SOURCE="$smoke" -DEXPECTED_PREFIX="$prefix" ||
    die "configuring the find_package(fibers) project failed"
  run "$cmake" --build "$work/build" || die "building it failed"
  check_program "$work/build/smoke_shared" shared
  check_program "$work/build/smoke_static" static
  ;;
*) die "unknown mode $mode" ;;
esac
echo "ok: built and ran install_smoke against the installed copy ($mode)"
