#!/bin/bash
# SPDX-License-Identifier: MIT
# gdb_fibers.sh GDB TARGET SCRIPT WORKDIR [core|nocore]
#
# nocore (sanitizer builds): the live checks only, said so in the output --
# gcore cannot dump an ASan process usefully (it fails on the terabytes of
# shadow ASan reserves and loses the program's own data with them).
#
# The gdb extension (tools/gdb/fibers-gdb.py) on gdb_fibers_target, at a
# breakpoint in a live process and then in a core file dumped there:
#   info fibers  lists the five fibers of both runtimes with their states,
#                names and stacks; gamma's high-water mark shows its 20 KB
#                frame, unguarded epsilon's leaves out its canary;
#   fiber bt N   alpha: alpha_wait ... alpha ... fib__ctx_entry_trampoline
#                beta:  beta_sleep ... ; gamma: gamma_spin ...
#                and the backtrace ends at the trampoline, no "??".
set -uo pipefail
gdb=$1 target=$2 script=$3 work=$4 core_too=${5:-core}
export LC_ALL=C
fail=0
rm -rf "$work"
mkdir -p "$work"
core=$work/core

common=(-batch -nx -iex 'set debuginfod enabled off'
        -iex 'set disable-randomization off'
        -ex 'set pagination off' -ex 'set width 0'
        -ex "source $script")

# live, default guards (MADV_GUARD_INSTALL where the kernel has it)
live=$("$gdb" "${common[@]}" \
        -ex 'break debug_stop' -ex 'break debug_stop_workers' -ex 'run' \
        -ex 'info fibers' \
        -ex 'fiber bt 1 1' -ex 'fiber bt 2' -ex 'fiber bt 3' \
        -ex 'continue' \
        -ex 'echo ==== workers\n' -ex 'info fibers' -ex 'fiber bt 2 2' \
        -ex 'continue' \
        "$target" 2>&1 < /dev/null)
echo "---- live:"
echo "$live"

dump="" post=""
if [ "$core_too" = core ]; then
  # live with mprotect guards, dumping a core at the breakpoint: gcore cannot
  # read a mapping with guard markers inside (docs/safety.md)
  dump=$("$gdb" "${common[@]}" \
          -ex 'break debug_stop' -ex 'run mprotect' \
          -ex "generate-core-file $core" \
          -ex 'continue' \
          "$target" 2>&1 < /dev/null)
  echo "---- live, dumping the core:"
  echo "$dump"

  post=$("$gdb" "${common[@]}" -ex 'info fibers' \
          -ex 'fiber bt 1 1' -ex 'fiber bt 2' -ex 'fiber bt 3' \
          "$target" "$core" 2>&1 < /dev/null)
  echo "---- core file:"
  echo "$post"
else
  echo "---- core file: not checked (sanitizer build: gcore cannot dump it usefully)"
fi

tramp='fib(__|[.])ctx_entry_trampoline'
entry='fib(__|[.])coro_entry'
check() { # what output
  local what=$1 out=$2
  # the listing: one line per fiber
  for row in '2 1 ready "epsilon"' '1 1 blocked "alpha"' \
             '1 2 sleeping "beta"' '1 3 ready "gamma"' '1 4 running "stopper"'; do
    set -- $row
    if ! grep -qE "^$1 +0x[0-9a-f]+ +$2 $3 +$4 +0x[0-9a-f]+-0x[0-9a-f]+ 65536 +[0-9]+$" <<<"$out"; then
      echo "FAIL ($what): no listing line for runtime $1 fiber $2 $3 $4"
      fail=1
    fi
  done
  grep -q '^5 fibers$' <<<"$out" || { echo "FAIL ($what): not 5 fibers"; fail=1; }
  # gamma touched more than 20 KB of its stack
  local hw
  hw=$(echo "$out" | grep -E '^1 +0x[0-9a-f]+ +3 ready +"gamma"' | awk '{print $NF}')
  if [ -z "$hw" ] || [ "$hw" -lt 20000 ]; then
    echo "FAIL ($what): gamma's high-water mark is '$hw', expected > 20000"
    fail=1
  fi
  # epsilon never ran: only its top page is used; its stack is unguarded,
  # and the canary word at the bottom is not use
  hw=$(echo "$out" | grep -E '^2 +0x[0-9a-f]+ +1 ready +"epsilon"' | awk '{print $NF}')
  if [ -z "$hw" ] || [ "$hw" -gt 8192 ]; then
    echo "FAIL ($what): epsilon's high-water mark is '$hw', expected <= 8192"
    fail=1
  fi
  # the backtraces, frame function names in order
  for spec in '1 alpha alpha_wait' '2 beta beta_sleep' '3 gamma gamma_spin'; do
    set -- $spec
    local frames
    frames=$(echo "$out" | awk -v id="$1" '
      /^fiber [0-9]+ / { on = ($2 == id); next }
      on && /^#/ { print $4 }
      on && !/^#/ { on = 0 }' | tr '\n' ' ')
    echo "---- $what, fiber $1 frames: $frames"
    if ! [[ $frames =~ ^(.* )?$3\ ($2\ )?(.* )?fiber_main\ $entry\ $tramp\ $ ]] &&
       ! [[ $frames =~ ^(.* )?$3\ (.* )?$entry\ $tramp\ $ ]]; then
      echo "FAIL ($what): fiber $1's backtrace does not go $3 ... fib__coro_entry trampoline"
      fail=1
    fi
    if [[ $frames == *'??'* ]]; then
      echo "FAIL ($what): a frame gdb cannot name in fiber $1"
      fail=1
    fi
  done
  if grep -qiE 'Traceback|Python Exception|Error occurred' <<<"$out"; then
    echo "FAIL ($what): the script failed"
    fail=1
  fi
}
# The 2-worker runtime: its worker 1 is a runtime of the listing too
# (numbered after the handle), and its fibers are found and unwound.
check_workers() { # output after the second stop
  local out=$1
  for row in '1 1 running "eta"' '2 2 blocked "zeta"'; do
    set -- $row
    if ! grep -qE "^$1 +0x[0-9a-f]+ +$2 $3 +$4 +0x[0-9a-f]+-0x[0-9a-f]+ 65536 +[0-9]+$" <<<"$out"; then
      echo "FAIL (workers): no listing line for runtime $1 fiber $2 $3 $4"
      fail=1
    fi
  done
  grep -q '^2 fibers$' <<<"$out" || { echo "FAIL (workers): not 2 fibers"; fail=1; }
  local frames
  frames=$(echo "$out" | awk '
    /^fiber [0-9]+ / { on = ($2 == 2); next }
    on && /^#/ { print $4 }
    on && !/^#/ { on = 0 }' | tr '\n' ' ')
  echo "---- workers, fiber 2 frames: $frames"
  if ! [[ $frames =~ ^(.* )?zeta_wait\ (.* )?$entry\ $tramp\ $ ]]; then
    echo "FAIL (workers): zeta's backtrace does not go zeta_wait ... fib__coro_entry trampoline"
    fail=1
  fi
}
check live "${live%%==== workers*}"
check_workers "${live#*==== workers}"
[ "$core_too" = core ] && check core "$post"
for out in "$live" ${dump:+"$dump"}; do
  if ! grep -qE '^\[Inferior 1 \(process [0-9]+\) exited normally\]' <<<"$out"; then
    echo "FAIL: the program did not run to a normal exit under gdb"
    fail=1
  fi
done
if [ "$core_too" = core ] && ! grep -q "^Saved corefile $core" <<<"$dump"; then
  echo "FAIL: gdb did not write the core file"
  fail=1
fi
[ "$fail" = 0 ] && echo "ok: info fibers and fiber bt, live and in a core file"
exit "$fail"
