#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# layers.sh DOC SRC -- every #include "..." in SRC (the library's sources)
# names a file of the same layer or an earlier one, in the order the
# ```layers block of DOC (docs/internals.md) gives; every source file is
# in a layer. Prints each offence; exits 1 if there is any.
set -euo pipefail
doc=$1
src=$(cd "$2" && pwd)
root=$(dirname "$src")

# "prefix index" lines: a file belongs to the layer of its longest prefix.
layers=$(awk '/^```layers/ {on = 1; next} /^```/ {on = 0} on && NF > 1 {
  for (i = 2; i <= NF; i++) print $i, n + 0; n++ }' "$doc")
if [ -z "$layers" ]; then
  echo "FAIL: no \`\`\`layers block in $doc"
  exit 1
fi

layer_of() { # repo-relative path -> layer index, or nothing
  awk -v f="$1" '{ if (index(f, $1) == 1 && length($1) > best) {
    best = length($1); idx = $2 } } END { if (best) print idx }' <<<"$layers"
}

bad=0
while IFS= read -r file; do
  rel=${file#"$root"/}
  mine=$(layer_of "$rel")
  if [ -z "$mine" ]; then
    echo "FAIL: $rel is in no layer of $doc"
    bad=1
    continue
  fi
  while IFS= read -r inc; do
    target=$(realpath -m "$(dirname "$file")/$inc")
    [ -e "$target" ] || continue # a public header (include/), found by -I
    trel=${target#"$root"/}
    theirs=$(layer_of "$trel")
    if [ -z "$theirs" ] || [ "$theirs" -gt "$mine" ]; then
      echo "FAIL: $rel includes $trel, a later layer"
      bad=1
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$file")
done < <(find "$src" -type f \( -name '*.c' -o -name '*.h' -o -name '*.S' \) | sort)
[ "$bad" -eq 0 ] && echo "ok: every include in $src follows the layers of $doc"
exit "$bad"
