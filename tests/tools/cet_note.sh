#!/bin/bash
# SPDX-License-Identifier: MIT
# cet_note.sh READELF CC HAVE_CF_PROTECTION SHARED_LIB STATIC_LIB WORKDIR
#
# CET markings and a non-executable stack.
#
# IBT yes, SHSTK no. The context switch resumes with `pop; notrack jmp`,
# which leaves the CET shadow stack unbalanced, so switch.S marks only IBT
# in its GNU property note (see the comment at the top of switch.S). The
# linker ANDs the notes of its inputs, so whatever links switch.S.o never
# claims SHSTK -- claiming it would make the kernel kill the first fiber
# switch of any process that enables shadow stacks.
#
# Checks:
#   1. every object in libfibers.a has a GNU property note with IBT (the
#      library is built with -fcf-protection=full), and switch.S.o has IBT
#      but not SHSTK;
#   2. libfibers.so has IBT and not SHSTK. The linker can only mark IBT if
#      every input is marked, including the C library's crti.o/crtn.o;
#      Debian 12's glibc ships them unmarked, so no shared object linked by
#      this toolchain can carry the note. A probe (an empty shared object
#      built with -fcf-protection=full) tells whether this toolchain can:
#      if it can, libfibers.so must; if not, only "no SHSTK" is checked;
#   3. the stack is not executable: libfibers.so's GNU_STACK segment is RW
#      (not RWE), and every object in libfibers.a has a .note.GNU-stack
#      section without the X flag (the shared library is linked with
#      -z noexecstack, which would hide an object that lacks it, but a
#      program linking libfibers.a would get an executable stack).
set -uo pipefail
readelf=$1 cc=$2 have_cf=$3 shared=$4 static=$5 work=$6
export LC_ALL=C
fail=0
mkdir -p "$work"

is_true() { case "${1^^}" in 1|ON|YES|TRUE|Y) return 0 ;; *) return 1 ;; esac; }

# Print "member<TAB>features" for each member of an archive (or the file).
features() {
  "$readelf" -n "$1" | awk '
    /^File: / { if (m != "") print m "\t" f; m = $2; f = ""; next }
    /x86 feature:/ { sub(/.*x86 feature: */, ""); f = $0 }
    END { if (m == "") m = "-"; print m "\t" f }'
}

# ---- 1 and 2: CET
if is_true "$have_cf"; then
  echo "---- readelf -n $static (x86 features per object):"
  features "$static" | tee "$work/static.features"
  n=0
  while IFS=$'\t' read -r member feat; do
    n=$((n + 1))
    if ! [[ $feat =~ (^|[ ,])IBT($|,) ]]; then
      echo "FAIL: $member has no IBT marking (built without -fcf-protection?)"
      fail=1
    fi
    case $member in
      *switch.S.o*)
        saw_switch=1
        if [[ $feat =~ SHSTK ]]; then
          echo "FAIL: $member claims SHSTK, but the context switch is not"
          echo "      shadow-stack safe (see switch.S)"
          fail=1
        fi ;;
    esac
  done < "$work/static.features"
  if [ "$n" -lt 2 ] || [ -z "${saw_switch:-}" ]; then
    echo "FAIL: could not read the objects of $static (or no switch.S.o)"
    fail=1
  fi

  echo "---- readelf -n $shared:"
  "$readelf" -n "$shared"
  so_feat=$(features "$shared" | cut -f2)
  printf 'int fib_cet_probe(void);\nint fib_cet_probe(void) { return 0; }\n' \
    > "$work/probe.c"
  if ! "$cc" -fcf-protection=full -fPIC -shared -o "$work/probe.so" \
         "$work/probe.c"; then
    echo "FAIL: could not build the probe shared object with $cc"
    fail=1
  fi
  probe_feat=$(features "$work/probe.so" | cut -f2)
  echo "---- x86 features: libfibers.so [$so_feat], probe.so [$probe_feat]"
  if [[ $so_feat =~ SHSTK ]]; then
    echo "FAIL: $shared claims SHSTK, but the context switch is not"
    echo "      shadow-stack safe (see switch.S)"
    fail=1
  fi
  if [[ $probe_feat =~ (^|[ ,])IBT($|,) ]]; then
    if ! [[ $so_feat =~ (^|[ ,])IBT($|,) ]]; then
      echo "FAIL: $shared has no 'x86 feature: IBT' although this toolchain"
      echo "      marks shared objects built with -fcf-protection=full"
      fail=1
    fi
  else
    echo "note: this toolchain cannot mark any shared object IBT (its crti.o/"
    echo "      crtn.o have no GNU property note: ld -z cet-report=warning says"
    echo "      so); IBT checked on the objects of $static only"
  fi
else
  echo "note: the compiler has no -fcf-protection (FIB_HAVE_CF_PROTECTION off):"
  echo "      CET markings not checked"
fi

# ---- 3: non-executable stack
echo "---- readelf -lW $shared | GNU_STACK:"
stack=$("$readelf" -lW "$shared" | grep -E '^[[:space:]]*GNU_STACK')
echo "$stack"
if [ -z "$stack" ]; then
  echo "FAIL: $shared has no GNU_STACK program header (executable stack)"
  fail=1
else
  flags=$(echo "$stack" | awk '{ f = ""; for (i = 7; i < NF; i++) f = f $i; print f }')
  if [ "$flags" != "RW" ]; then
    echo "FAIL: GNU_STACK flags of $shared are '$flags', expected RW"
    fail=1
  fi
fi
# Sections per object: an object without .note.GNU-stack, or with it marked
# executable (flag X), would make a program that links it need an
# executable stack.
"$readelf" -SW "$static" | awk '
  /^File: / { if (m != "" && !seen) print "MISSING " m; m = $2; seen = 0; next }
  /\] \.note\.GNU-stack / {
    seen = 1
    # after the name: type addr off size es [flags] lk inf al
    line = $0; sub(/^.*\] \.note\.GNU-stack +/, "", line)
    n = split(line, f, / +/)
    if (n >= 9 && f[6] ~ /X/) print "EXEC " m
  }
  END { if (m != "" && !seen) print "MISSING " m }' > "$work/gnustack"
if [ -s "$work/gnustack" ]; then
  echo "FAIL: objects of $static that would make the stack executable:"
  sed 's/^/      /' "$work/gnustack"
  fail=1
fi
members=$("$readelf" -SW "$static" | grep -c '^File: ')
if [ "$members" -lt 2 ]; then
  echo "FAIL: could not read the sections of $static"
  fail=1
fi

[ "$fail" = 0 ] && echo "ok: CET markings and non-executable stack as expected"
exit "$fail"
