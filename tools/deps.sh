#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deps.sh GOAL -- what `make GOAL` needs, checked before it starts, so that
# a fresh machine gets one clear line instead of "cmake: command not found"
# halfway through. GOAL is one of
#   run    a working C compiler (without CMake the Makefile builds the demo
#          with one compiler line: tools/build-demo.sh)
#   build  a working C compiler and CMake (make, make configure)
#   test   the same and CTest; and the tools the suite calls (gdb, binutils,
#          pkg-config, python3): without them their tests are skipped, so
#          they are wanted, not required
# What is missing is installed with apt-get when this user may (root, or
# sudo without a password), in one line saying so. Otherwise, or with
# FIB_NO_INSTALL=1 in the environment, it stops at once with the exact
# command to run (what is only wanted is named and the goal goes on). No
# apt-get (not Debian or Ubuntu): it stops naming what is missing.
# Environment: CC, CMAKE, CTEST as the Makefile has them.
set -euo pipefail
goal=${1:?usage: deps.sh run|build|test}
CC=${CC:-cc}
CMAKE=${CMAKE:-cmake}
CTEST=${CTEST:-ctest}
say() { echo "fibers: $*" >&2; }
case $goal in
  run) what="make run" ;; build) what="make" ;; test) what="make test" ;;
  *) say "deps.sh: unknown goal '$goal'"; exit 2 ;;
esac

# The compiler works when it builds a program with a libc header: a gcc
# without libc6-dev is there but useless. Its Debian packages, by name.
cc_probe=$(mktemp)
trap 'rm -f "$cc_probe" "$cc_probe.log"' EXIT
cc_works() {
  printf '#include <stdio.h>\nint main(void) { return puts("") < 0; }\n' |
    $CC -x c - -o "$cc_probe" >"$cc_probe.log" 2>&1
}
cc_word=${CC%% *}
case ${cc_word##*/} in
  cc | gcc) cc_pkgs="gcc libc6-dev" ;;
  gcc-[0-9]* | clang | clang-[0-9]*) cc_pkgs="${cc_word##*/} libc6-dev" ;;
  *) cc_pkgs="" ;; # not one we know the package of: named, not installed
esac

# Fills missing_hard / missing_soft (what is absent, as "command:package").
check() {
  missing_hard=() missing_soft=()
  hash -r
  if cc_works; then
    :
  elif ! command -v "$cc_word" >/dev/null; then
    missing_hard+=("$cc_word (C compiler):$cc_pkgs")
  elif grep -q 'stdio\.h: No such file' "$cc_probe.log"; then
    missing_hard+=("the C library's headers:libc6-dev")
  else # there, but broken some other way: no package to name
    missing_hard+=("$cc_word (C compiler):")
  fi
  if [ "$goal" != run ]; then
    command -v "$CMAKE" >/dev/null || missing_hard+=("$CMAKE:cmake")
  fi
  if [ "$goal" = test ]; then
    command -v "$CTEST" >/dev/null || missing_hard+=("$CTEST:cmake")
    local t p
    for t in gdb:gdb nm:binutils readelf:binutils pkg-config:pkg-config \
             python3:python3; do
      command -v "${t%%:*}" >/dev/null || missing_soft+=("$t")
    done
  fi
  return 0
}
names() { local e; for e in "$@"; do printf ' %s' "${e%%:*}"; done; }
packages() { # the Debian packages, each once
  local e p seen=" "
  for e in "$@"; do
    for p in ${e##*:}; do
      case $seen in *" $p "*) ;; *) seen="$seen$p "; printf ' %s' "$p" ;; esac
    done
  done
}

check
[ ${#missing_hard[@]} -eq 0 ] && [ ${#missing_soft[@]} -eq 0 ] && exit 0

soft_note() { # the goal goes on without these: their tests are skipped
  [ ${#missing_soft[@]} -eq 0 ] ||
    say "not found:$(names "${missing_soft[@]}"): the tests that use them" \
        "will be skipped${1:+ (to run them too: $1)}"
}

# A compiler whose package we do not know, or that is there but fails for
# another reason than the C library's headers: what it says, nothing to
# install.
for e in "${missing_hard[@]}"; do
  if [ -z "${e##*:}" ]; then
    say "$what needs a working C compiler; CC=$CC does not build a program:"
    sed 's/^/    /' "$cc_probe.log" >&2
    exit 1
  fi
done

if ! command -v apt-get >/dev/null; then
  if [ ${#missing_hard[@]} -gt 0 ]; then
    say "$what needs:$(names "${missing_hard[@]}"), not found."
    say "No apt-get here: install them with this system's package manager," \
        "then run $what again."
    soft_note
    exit 1
  fi
  soft_note
  exit 0
fi

pkgs=$(packages "${missing_hard[@]}" "${missing_soft[@]}")
# A machine that never ran apt-get update has no package lists at all.
update=""
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || update=yes

sudo=""
can_install=""
if [ -n "${FIB_NO_INSTALL:-}" ] && [ "$FIB_NO_INSTALL" != 0 ]; then
  : # asked not to
elif [ "$(id -u)" -eq 0 ]; then
  can_install=yes
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  can_install=yes sudo="sudo -n "
fi

if [ -z "$can_install" ]; then
  prefix=""
  [ "$(id -u)" -eq 0 ] || prefix="sudo "
  cmd="${prefix}apt-get install$pkgs"
  [ -z "$update" ] || cmd="${prefix}apt-get update && $cmd"
  # no sudo (Debian without it): root's password, through su
  if [ -n "$prefix" ] && ! command -v sudo >/dev/null; then
    cmd="su -c '${cmd//sudo /}'"
  fi
  if [ ${#missing_hard[@]} -gt 0 ]; then
    also=""
    [ ${#missing_soft[@]} -eq 0 ] ||
      also="; its tests also use:$(names "${missing_soft[@]}")"
    say "$what needs:$(names "${missing_hard[@]}"), not found$also." \
        "Install with:"
    echo "    $cmd" >&2
    say "then run $what again."
    exit 1
  fi
  soft_note "$cmd"
  exit 0
fi

say "$what: not found:$(names "${missing_hard[@]}" "${missing_soft[@]}");" \
    "installing: ${sudo%-n }apt-get install$pkgs"
aptget() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
# shellcheck disable=SC2086 # $pkgs: a list of names
apt_install() { aptget install -y -qq --no-install-recommends $pkgs; }
log=$cc_probe.log
# Stale lists name versions the mirror no longer has: update, then once more.
installed=yes
first_try() { { [ -z "$update" ] || aptget update -qq; } && apt_install; }
if ! first_try >"$log" 2>&1 &&
   ! { aptget update -qq && apt_install; } >"$log" 2>&1; then
  installed=""
  say "apt-get install$pkgs failed:"
  tail -n 20 "$log" | sed 's/^/    /' >&2
fi

check
if [ ${#missing_hard[@]} -gt 0 ]; then
  # installed, yet still not usable: e.g. not on this PATH
  if [ -n "$installed" ]; then
    say "after apt-get install:$(names "${missing_hard[@]}") still not" \
        "found (PATH=$PATH)"
    cc_works || sed 's/^/    /' "$cc_probe.log" >&2
  fi
  exit 1
fi
soft_note # what is only wanted: the goal goes on without it
exit 0
