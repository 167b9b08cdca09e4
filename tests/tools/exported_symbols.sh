#!/bin/bash
# SPDX-License-Identifier: MIT
# exported_symbols.sh NM HEADER EXPORTS_TXT SHARED_LIB [STATIC_LIB]
#
# The shared library exports exactly the public API:
#   1. the functions include/fibers.h and the headers in include/fibers/
#      declare FIB_API (parsed from the headers) are exactly the list
#      checked in as tests/tools/exports.txt;
#   2. the defined dynamic symbols of libfibers.so (nm -D --defined-only)
#      are exactly that list: nothing missing, nothing extra, and in
#      particular no fib__* internal symbol;
#   3. every one of them is a function (nm type T), except the objects the
#      header declares `FIB_API extern` (read-only data: nm type R or D);
#   4. if the static library is given: every API function is defined in it
#      too (the archive keeps fib__* globals, which is expected: they are
#      hidden, so they never reach a shared object linked from it).
set -euo pipefail
nm=$1 header=$2 list=$3 shared=$4 static=${5:-}
export LC_ALL=C
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# HEADER and the public headers installed beside it in fibers/ (the
# debugger layout, fibers/debug.h, declares an exported object).
headers=("$header")
for h in "$(dirname "$header")"/fibers/*.h; do
  [ -e "$h" ] && headers+=("$h")
done

# --- 1. the header, parsed: comments and preprocessor lines removed, then
# every `FIB_API ... name(` is a declaration of an exported function.
perl -0777 -ne '
  s{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g;
  s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{}gm;
  while (/\bFIB_API\b([^;{]*?)\b([A-Za-z_]\w*)\s*\(/g) { print "$2\n" }
' "${headers[@]}" | sort -u > "$tmp/functions"
# ... and every `FIB_API extern ... name;` one of an exported object.
perl -0777 -ne '
  s{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g;
  s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{}gm;
  while (/\bFIB_API\s+extern\b[^;({]*?\b([A-Za-z_]\w*)\s*;/g) { print "$1\n" }
' "${headers[@]}" | sort -u > "$tmp/objects"
sort -u "$tmp/functions" "$tmp/objects" > "$tmp/header"
if [ ! -s "$tmp/header" ]; then
  echo "FAIL: found no FIB_API declaration in $header (parser broken?)"
  exit 1
fi
grep -v -e '^#' -e '^[[:space:]]*$' "$list" | sort -u > "$tmp/list"
if ! diff -u --label "$list" --label "FIB_API in $header" \
       "$tmp/list" "$tmp/header"; then
  echo "FAIL: $list does not match the FIB_API declarations of $header"
  echo "      (a public function was added or removed: update the list)"
  fail=1
fi

# --- 2. the shared library's dynamic symbol table. A few symbols that old
# linkers define in every shared object are not ours and are ignored.
if ! "$nm" -D --defined-only "$shared" > "$tmp/nm.raw"; then
  echo "FAIL: $nm -D --defined-only $shared failed"
  exit 1
fi
# A sanitizer build adds its own (ASan: __odr_asan.NAME beside each
# exported object).
grep -v -E ' __odr_asan[._]' "$tmp/nm.raw" > "$tmp/nm.ours" || true
mv "$tmp/nm.ours" "$tmp/nm.raw"
awk 'NF >= 3 { print $3 }' "$tmp/nm.raw" | sed 's/@.*//' |
  grep -v -x -E '_init|_fini|_edata|_end|__bss_start' | sort -u > "$tmp/dyn"
if ! diff -u --label "FIB_API in $header" --label "nm -D $shared" \
       "$tmp/header" "$tmp/dyn"; then
  echo "FAIL: the exported symbols of $shared are not exactly the public API"
  echo "      ('-' lines: declared FIB_API but not exported;"
  echo "       '+' lines: exported but not public API)"
  fail=1
fi
if grep -E '(^|[^A-Za-z0-9_])fib__' "$tmp/dyn" > "$tmp/leaks"; then
  echo "FAIL: internal fib__ symbols leak from $shared:"
  sed 's/^/      /' "$tmp/leaks"
  fail=1
fi

# --- 3. all of them are functions (in .text), except the declared objects
# (read-only data: nm type R)
awk -v objs="$(tr '\n' ' ' < "$tmp/objects")" '
  BEGIN { n = split(objs, o, " "); for (i = 1; i <= n; i++) obj[o[i]] = 1 }
  NF >= 3 { name = $3; sub(/@.*/, "", name)
            if (obj[name] ? ($2 != "R" && $2 != "D") : $2 != "T") print }' \
  "$tmp/nm.raw" |
  grep -v -E ' (_init|_fini|_edata|_end|__bss_start)(@.*)?$' > "$tmp/nonfunc" || true
if [ -s "$tmp/nonfunc" ]; then
  echo "FAIL: exported symbols that are not functions:"
  sed 's/^/      /' "$tmp/nonfunc"
  fail=1
fi

# --- 4. the static library defines the whole API too
if [ -n "$static" ]; then
  "$nm" --defined-only -g "$static" 2>/dev/null | awk 'NF >= 3 { print $3 }' |
    sort -u > "$tmp/static"
  missing=$(comm -23 "$tmp/header" "$tmp/static")
  if [ -n "$missing" ]; then
    echo "FAIL: public functions not defined in $static:"
    while read -r s; do echo "      $s"; done <<< "$missing"
    fail=1
  fi
fi

if [ "$fail" = 0 ]; then
  echo "ok: $(wc -l < "$tmp/dyn") exported symbols, exactly the FIB_API list of $header"
fi
exit "$fail"
