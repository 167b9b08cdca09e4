#!/bin/bash
# SPDX-License-Identifier: MIT
# gdb_backtrace.sh GDB TARGET
#
# A breakpoint inside a fiber (and inside a coroutine, and a coroutine
# resumed by a fiber) shows a backtrace that ends at the context's entry:
#
#   fiber:  fiber_leaf <- fiber_body <- [fiber_main] <- fib__coro_entry
#           <- fib__ctx_entry_trampoline            and nothing after it
#   coro:   coro_leaf <- coro_body <- fib__coro_entry <- fib__ctx_entry_trampoline
#   nested: the same as coro (the coroutine runs on its own stack; the
#           fiber that resumed it is not part of its backtrace)
#   sharedfp: the same as coro, for a coroutine created with FIB_SHARED_FP
#           (switched by fib__ctx_switch_nofp)
#
# fiber_main is optional: at -O1 and above its call to the fiber's function
# is a tail call, so its frame is gone. Any "??" frame, any frame after the
# trampoline, or a "Backtrace stopped" / "previous frame inner" / "corrupt"
# message fails the test; so does the program not exiting normally.
set -uo pipefail
gdb=$1 target=$2
export LC_ALL=C
fail=0

check() { # mode leaf expected-regex
  local mode=$1 leaf=$2 want=$3 out frames
  # debuginfod off: no network, no prompt. ASLR is left alone (disabling it
  # needs personality(), which some containers refuse).
  out=$("$gdb" -batch -nx \
          -iex 'set debuginfod enabled off' \
          -iex 'set disable-randomization off' \
          -ex 'set pagination off' \
          -ex 'set width 0' \
          -ex "break $leaf" \
          -ex "run $mode" \
          -ex 'bt' \
          -ex 'continue' \
          "$target" 2>&1 < /dev/null)
  echo "---- gdb, $mode:"
  echo "$out"

  # The function of each frame: "#N  func (args) at f:l" or
  # "#N  0xADDR in func (args) ..."
  frames=$(echo "$out" | grep -E '^#[0-9]+ ' |
           sed -E 's/^#[0-9]+ +(0x[0-9a-fA-F]+ in )?([^ (]+).*/\2/' |
           tr '\n' ' ' | sed 's/ $//')
  echo "---- frames: $frames"

  if ! grep -qE "^Breakpoint 1, .*$leaf" <<<"$out"; then
    echo "FAIL ($mode): the breakpoint in $leaf was not hit"
    fail=1
  fi
  if ! [[ $frames =~ $want ]]; then
    echo "FAIL ($mode): backtrace is \"$frames\""
    echo "               expected /$want/"
    fail=1
  fi
  if echo "$out" | grep -E '^#[0-9]+ ' | grep -q '??'; then
    echo "FAIL ($mode): a frame gdb cannot name (??)"
    fail=1
  fi
  if grep -qiE 'Backtrace stopped|previous frame inner|corrupt' <<<"$out"; then
    echo "FAIL ($mode): gdb complains about the stack:"
    echo "$out" | grep -iE 'Backtrace stopped|previous frame inner|corrupt'
    fail=1
  fi
  if ! grep -qE '^\[Inferior 1 \(process [0-9]+\) exited normally\]' <<<"$out"; then
    echo "FAIL ($mode): the program did not run to a normal exit under gdb"
    fail=1
  fi
}

# gdb 13 prints the trampoline as "fib.ctx_entry_trampoline" when switch.S
# has no DW_TAG_subprogram for it (clang's integrated assembler describes
# labels as DW_TAG_label; a build type without -g has no DWARF at all): gdb
# then names the frame from the ELF symbol and decodes it like an Ada name
# ("__" reads as "."). Same symbol, same frame. fib__coro_entry's frame
# can read the same way (clang -O3 with ASan: "fib.coro_entry").
tramp='fib(__|[.])ctx_entry_trampoline'
entry='fib(__|[.])coro_entry'
check fiber fiber_leaf \
  "^fiber_leaf fiber_body (fiber_main )?$entry $tramp\$"
check coro coro_leaf "^coro_leaf coro_body $entry $tramp\$"
check nested coro_leaf "^coro_leaf coro_body $entry $tramp\$"
check sharedfp coro_leaf "^coro_leaf coro_body $entry $tramp\$"

[ "$fail" = 0 ] && echo "ok: every backtrace ends at fib__ctx_entry_trampoline"
exit "$fail"
