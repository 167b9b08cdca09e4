#!/bin/bash
# SPDX-License-Identifier: MIT
# valgrind_run.sh PROGRAM [ARGS...]
#
# Run a test program under valgrind memcheck (make test-valgrind) and fail
# if memcheck found any error in it or in any process it forked (the test
# harness runs each case, and each death test, in a child; valgrind follows
# fork by itself, and --trace-children=yes follows exec too).
#
# The deliberate faults of the death tests are suppressed (valgrind.supp).
# valgrind's own output goes to one log file per process, never to the
# program's stderr: death tests compare stderr byte for byte. A child that
# dies by a signal on purpose (a death test) has valgrind's "Process
# terminating with default action of signal N" note in its log: that is not
# an error; "ERROR SUMMARY: N errors" with N > 0 in any log is.
set -uo pipefail
logs=$(mktemp -d "${TMPDIR:-/tmp}/fib-valgrind.XXXXXX")
trap 'rm -rf "$logs"' EXIT
valgrind=${VALGRIND:-valgrind}
# --fair-sched=yes: valgrind runs one thread at a time, and its default
# lock lets a thread that spins (a worker yielding to its only fiber) take
# it back again and again; another worker then waits for seconds, and a
# case that gives up after a few seconds fails for valgrind's sake.
"$valgrind" --tool=memcheck --trace-children=yes --error-exitcode=99 \
  --fair-sched=yes \
  --leak-check=full --errors-for-leak-kinds=definite \
  --show-leak-kinds=definite --log-file="$logs/vg.%p.log" \
  --suppressions="$(dirname "$0")/valgrind.supp" "$@"
rc=$?
bad=0
for f in "$logs"/vg.*.log; do
  [ -e "$f" ] || continue
  if grep -qE 'ERROR SUMMARY: [1-9]' "$f"; then
    echo "valgrind: memcheck errors in $(basename "$f"):" >&2
    cat "$f" >&2
    bad=1
  fi
done
n=$(ls "$logs" | wc -l)
if [ "$bad" = 0 ]; then
  echo "valgrind: memcheck clean in $n processes" >&2
fi
if [ "$rc" = 0 ] && [ "$bad" = 1 ]; then rc=99; fi
exit "$rc"
