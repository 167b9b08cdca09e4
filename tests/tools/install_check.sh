#!/bin/bash
# install_check.sh MODE CMAKE BUILD_DIR SOURCE_DIR CC CFLAGS WORKDIR [PKG_CONFIG]
#
# Install the build (cmake --install BUILD_DIR --prefix WORKDIR/prefix) and
# build tests/tools/install_smoke.c against the installed copy, then run it.
#
#   MODE pkgconfig: cc $(pkg-config --cflags --libs fibers), linked against
#     the shared library (run with LD_LIBRARY_PATH, and checked to load the
#     installed libfibers.so.0), and with --static against libfibers.a
#     (checked not to need libfibers.so at all);
#   MODE cmake: a tiny CMake project (tests/tools/install_project) does
#     find_package(fibers CONFIG REQUIRED) and links fibers::fibers_shared
#     and fibers::fibers_static.
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
for f in "$prefix/include/fibers.h" "$libdir/libfibers.a" \
         "$libdir/libfibers.so" "$libdir/libfibers.so.0" \
         "$libdir/cmake/fibers/fibersConfig.cmake" \
         "$libdir/cmake/fibers/fibersConfigVersion.cmake"; do
  [ -e "$f" ] || die "$f was not installed"
done
echo "installed: libdir $libdir"

# $1: the program; $2: shared|static. Checks what it links and runs it.
check_program() {
  local prog=$1 kind=$2 needed
  needed=$(readelf -dW "$prog" | grep -E '\(NEEDED\)' || true)
  if [ "$kind" = shared ]; then
    grep -q 'libfibers\.so\.0' <<<"$needed" ||
      die "$prog does not need libfibers.so.0:"$'\n'"$needed"
    local where
    where=$(LD_LIBRARY_PATH=$libdir ldd "$prog" | grep 'libfibers\.so\.0' || true)
    echo "ldd: $where"
    [[ $where == *"=> $libdir/libfibers.so.0 "* ]] ||
      die "$prog does not load the installed $libdir/libfibers.so.0"
    run env LD_LIBRARY_PATH="$libdir" "$prog" || die "$prog failed"
  else
    if grep -q 'libfibers' <<<"$needed"; then
      die "$prog (static) still needs the shared library:"$'\n'"$needed"
    fi
    run "$prog" || die "$prog failed"
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
