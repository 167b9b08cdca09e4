#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# spdx.sh ROOT -- every source, build and script file under ROOT's
# directories of code carries an SPDX licence line (the licence is in
# ROOT/LICENSE). Expected outputs and Markdown are not source.
set -euo pipefail
root=$1
missing=$(find "$root"/src "$root"/include "$root"/tests "$root"/examples \
    "$root"/bench "$root"/tools "$root"/cmake "$root"/.ci \
    "$root"/CMakeLists.txt "$root"/Makefile -type f \
    ! -path '*/tests/expected/*' ! -name '*.md' ! -name '*.pyc' \
    -exec grep -L 'SPDX-License-Identifier: MIT' {} + || true)
if [ -n "$missing" ]; then
  echo "FAIL: no SPDX-License-Identifier line in:"
  echo "$missing"
  exit 1
fi
echo "ok: every source file under $root has its SPDX line"
