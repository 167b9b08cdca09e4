#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bare_machine.sh -- the README's two commands on a machine without cmake,
# ctest and gdb, run from the source root by `make test-bare`:
#   stop       may not install (FIB_NO_INSTALL=1): make test stops at once
#              with the exact apt-get command, before building anything
#   run        make run builds the demo without CMake (and installs
#              nothing): its 20 lines, exactly tests/expected/counters.txt
#   nocc       no C compiler either: make run stops naming its packages
#   noapt      no apt-get (not Debian): make test stops naming cmake
#   aptfail    apt-get install fails: make test stops, showing apt's error
#   install    make test installs (a stub apt-get) and the whole suite
#              passes, gdb's tests skipped; then make run uses CMake
# "Not installed" is a PATH of symlinks to every command but those. That
# alone is not enough: a real apt-get here (CI is root, with cmake
# installed) would answer "already installed" and change nothing, and
# CMake's find_program looks in /usr/bin whatever PATH says. So apt-get
# (and sudo) are stubs that record their arguments, the stub's install
# links the real cmake and ctest in (not gdb: it stays missing, so its
# tests must be skipped), and CMake is told to ignore the real bin
# directories (CMAKE_IGNORE_PATH). What is not exercised here: a real
# apt-get install, which .ci/run does at its start with the same flags.
# Exit 77 (skipped): no cmake to link in.
set -euo pipefail
root=$(pwd)
expected=$root/tests/expected/counters.txt
skip() { echo "SKIP: $*"; exit 77; }
fail() { # with our lines, CTest's failures and the end of the output
  echo "FAIL ($case): $*"
  if [ -f "$out" ]; then
    grep -E '^(-- )?fibers:|\*\*\*(Failed|Exception|Timeout)|check failed' \
      "$out" | sed 's/^/    | /'
    echo "    | ..."
    tail -n 25 "$out" | sed 's/^/    | /'
  fi
  exit 1
}
real_cmake=$(command -v cmake) || skip "cmake not installed: nothing to link in"
real_ctest=$(command -v ctest) || skip "ctest not installed: nothing to link in"
work=$(mktemp -d "${TMPDIR:-/tmp}/fibers-bare.XXXXXX")
# FIB_BARE_KEEP=1: keep it, to read every step's output (out*)
[ -n "${FIB_BARE_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
out=$work/out case=setup

# bin DIR NAME...: DIR holds a symlink to every command on PATH (the first
# of each name, as PATH finds it) except NAME..., and the stubs.
real_dirs=()
IFS=: read -ra path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
  [[ $d == /* && -d $d ]] && real_dirs+=("$d")
done
bin() {
  local dir=$1 d n
  shift
  mkdir -p "$dir"
  for d in "${real_dirs[@]}"; do # an existing name fails ln: PATH's order
    find "$d" -maxdepth 1 ! -type d -print0 |
      xargs -0r ln -s -t "$dir" 2>/dev/null || true
  done
  rm -f "$dir/sudo" "$dir/apt-get"
  for n in "$@"; do rm -f "$dir/$n"; done
  # sudo: runs the command as this user, so the stub apt-get answers
  # shellcheck disable=SC2016 # the stub expands them
  printf '#!/bin/bash\n[ "$1" != -n ] || shift\nexec "$@"\n' >"$dir/sudo"
  # apt-get: logs; =provide "installs" cmake only, =fail fails as apt-get
  # does, unset fails the test
  cat >"$dir/apt-get" <<EOF
#!/bin/bash
echo "apt-get \$*" >>"$work/apt.log"
case \${STUB_APT:-} in
  provide) ;;
  fail) [ "\$1" = update ] && exit 0
        echo "E: Unable to locate package cmake" >&2; exit 100 ;;
  *) echo "FAIL: apt-get \$* was run" >&2; exit 1 ;;
esac
case " \$* " in *" install "*" cmake "*)
  ln -sf "$real_cmake" "$real_ctest" "$dir/" ;;
esac
EOF
  chmod +x "$dir/sudo" "$dir/apt-get"
}
hidden=(cmake ctest cpack gdb gdbserver)
bin "$work/bin" "${hidden[@]}"
bin "$work/bin-nocc" "${hidden[@]}" cc gcc
bin "$work/bin-noapt" "${hidden[@]}"
rm -f "$work/bin-noapt/apt-get"
for n in "${hidden[@]}"; do
  [ ! -e "$work/bin/$n" ] || { echo "FAIL: $n still in the PATH"; exit 1; }
done

# mk BIN [NAME=VALUE...] make ARGS...: with PATH=BIN alone and nothing
# from a calling make (or this environment's FIB_NO_INSTALL), stdout and
# stderr to $out; its exit code.
mk() {
  local b=$1
  shift
  env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS -u FIB_NO_INSTALL -u STUB_APT \
    PATH="$b" "$@" >"$out" 2>&1
  local rc=$?
  cp "$out" "$out.$case"
  return $rc
}
# the exact command, wherever it is root that runs it or sudo; then the
# packages (those after gdb: what else this machine lacks, e.g. pkg-config)
apt_cmd='^    (sudo )?(apt-get update && (sudo )?)?apt-get install'
more='( [^ ]+)*$'

case=stop
if mk "$work/bin" FIB_NO_INSTALL=1 make test BUILD="$work/b-stop"; then
  fail "make test succeeded without cmake"
fi
grep -Eq "$apt_cmd cmake gdb$more" "$out" ||
  fail "no 'apt-get install cmake gdb'"
! grep -q 'command not found' "$out" || fail "a cryptic error"
[ ! -e "$work/b-stop" ] || fail "it went on to build"
[ ! -e "$work/apt.log" ] || fail "apt-get ran: $(cat "$work/apt.log")"
echo "ok ($case): make test stops: $(grep -E "$apt_cmd" "$out")"

case=run
# shellcheck disable=SC2016 # bash -c expands them
mk "$work/bin" bash -c 'make -s run BUILD="$1" 2>&1 >"$2"' - \
  "$work/b-run" "$work/run.out" || fail "make run failed"
diff "$expected" "$work/run.out" >"$work/run.diff" ||
  { cat "$work/run.diff" >>"$out"; fail "not the expected 20 lines"; }
grep -q 'built without it' "$out" || fail "no line saying how it built"
[ ! -e "$work/apt.log" ] || fail "make run installed: $(cat "$work/apt.log")"
echo "ok ($case): make run without cmake: the $(wc -l <"$work/run.out")" \
     "expected lines"

case=nocc
if mk "$work/bin-nocc" FIB_NO_INSTALL=1 make run BUILD="$work/b-nocc"; then
  fail "make run succeeded without a compiler"
fi
grep -Eq "$apt_cmd gcc libc6-dev\$" "$out" ||
  fail "no 'apt-get install gcc libc6-dev'"
echo "ok ($case): make run stops: $(grep -E "$apt_cmd" "$out")"

case=noapt
if mk "$work/bin-noapt" make test BUILD="$work/b-noapt"; then
  fail "make test succeeded without cmake"
fi
grep -q 'make test needs: cmake ctest, not found' "$out" ||
  fail "cmake not named"
grep -q 'No apt-get here' "$out" || fail "does not say there is no apt-get"
[ ! -e "$work/b-noapt" ] || fail "it went on to build"
echo "ok ($case): make test stops: $(grep 'needs' "$out")"

case=aptfail
if mk "$work/bin" STUB_APT=fail make test BUILD="$work/b-aptfail"; then
  fail "make test succeeded without cmake"
fi
grep -Eq 'apt-get install cmake gdb( [^ ]+)* failed' "$out" ||
  fail "no failure line"
grep -q 'E: Unable to locate package' "$out" || fail "apt-get's error not shown"
[ ! -e "$work/b-aptfail" ] || fail "it went on to build"
rm "$work/apt.log"
echo "ok ($case): a failed apt-get install stops make test, showing why"

case=install
ignore="/usr/bin;/bin;/usr/sbin;/sbin;/usr/local/bin;/usr/local/sbin"
for d in "${real_dirs[@]}"; do ignore="$ignore;$d"; done
mk "$work/bin" STUB_APT=provide \
  FIB_CMAKE_ARGS="${FIB_CMAKE_ARGS:-} \"-DCMAKE_IGNORE_PATH=$ignore\"" \
  make test BUILD="$work/b-install" || fail "make test failed"
grep -Eq "install -y .* cmake gdb$more" "$work/apt.log" ||
  fail "apt-get was not asked for cmake gdb: $(cat "$work/apt.log")"
grep -Eq "installing: (sudo )?apt-get install cmake gdb$more" "$out" ||
  fail "no line saying what it installs"
grep -Eq 'not found: gdb( [^ ]+)*: the tests that use them will be' "$out" ||
  fail "gdb's absence not reported"
for t in gdb_backtrace gdb_fibers; do
  grep -Eq "test $t will be skipped: .*gdb" "$out" || fail "$t: no reason"
  grep -Eq "$t .*Skipped" "$out" || fail "$t not skipped"
done
last=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$out" || true)
[[ $last == "100% tests passed, 0 tests failed out of "* ]] ||
  fail "no passing summary"
echo "ok ($case): make test installed cmake and passed, gdb's tests skipped:" \
     "$last"
case=run-cmake
mk "$work/bin" make run BUILD="$work/b-install" ||
  fail "make run failed"
tail -n 20 "$out" | diff "$expected" - >/dev/null ||
  fail "make run with cmake: not the expected 20 lines"
! grep -q 'built without it' "$out" || fail "make run did not use CMake"
echo "ok ($case): make run with the installed cmake: the expected lines"
