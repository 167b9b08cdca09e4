#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/qemu_icount.py -- instructions per operation on aarch64 and riscv64.

valgrind does not run under qemu-user, and Debian's qemu-user ships no TCG
plugins (no libinsn.so), so the count comes from qemu's own log: with one
guest instruction per translation block (-one-insn-per-tb, called
-singlestep before qemu 8.1) and block chaining off (-d exec,nochain),
qemu writes one "Trace" line per executed block, i.e. per executed
instruction. The lines go through a pipe and are counted, never stored.

As bench/run.py does with callgrind, each benchmark runs with n and with 2n
operations; the programs do a warm-up of n/10 + 1 first, so the two runs
differ by 1.1 n operations, and

    instructions per operation = (I(2n) - I(n)) / (1.1 n x per)

(per = 2 for the switch rows: n is round trips). Start-up cancels out.

Before the benchmarks the script checks the counter on each architecture
with a loop of known length (4 instructions per iteration, assembled for
that architecture): I(2m) - I(m) must be exactly 4 m, or it stops.

The cross builds are made with the repository's toolchain files
(cmake/toolchains/<arch>-linux-gnu.cmake) in build/bench-<arch> (the
--build-dir plus -<arch>), target bench_fibers only; `make bench-icount`
builds them the Makefile's way and runs this with --no-build. "x86_64"
runs the native build/bench/bench_fibers (make bench-build)
under qemu-x86_64 the same way, to set beside callgrind's counts of that
binary (the two should agree).

Needs gcc-aarch64-linux-gnu, gcc-riscv64-linux-gnu, their libc6-dev-*-cross
and qemu-user (.ci/run installs them). Usage:

    python3 bench/qemu_icount.py                   # aarch64 and riscv64
    python3 bench/qemu_icount.py --arch aarch64 x86_64 --only switch yield

Python 3 standard library only.
"""
import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# bench, operations per unit of n (as bench/run.py's callgrind jobs).
BENCHES = [("switch", 2), ("switch_shared_fp", 2), ("create", 1),
           ("yield", 1), ("spawn_join", 1), ("chan_unbuffered", 1),
           ("mutex_handoff", 1)]

# arch: (qemu binary, its options, sysroot, C compiler, build directory
# suffix: the build directory is --build-dir plus this).
# -cpu max on aarch64 as the test suite runs it (BTI and PAC enforced; LSE
# atomics present, so libgcc's outline atomics take the single-instruction
# path, as on current hardware).
ARCHES = {
    "aarch64": ("qemu-aarch64", ["-cpu", "max"], "/usr/aarch64-linux-gnu",
                "aarch64-linux-gnu-gcc", "-aarch64"),
    "riscv64": ("qemu-riscv64", [], "/usr/riscv64-linux-gnu",
                "riscv64-linux-gnu-gcc", "-riscv64"),
    "x86_64": ("qemu-x86_64", [], None, "cc", ""),
}

# The check: spin(m) runs m iterations of 4 instructions (the count, two
# nops, the branch), then returns.
SPIN = {
    "aarch64": """
        .text
        .globl spin
        .type spin, %function
spin:
1:      subs x0, x0, #1
        nop
        nop
        b.ne 1b
        ret
        .size spin, .-spin
        .section .note.GNU-stack,"",%progbits
""",
    "riscv64": """
        .text
        .globl spin
        .type spin, @function
spin:
1:      addi a0, a0, -1
        nop
        nop
        bnez a0, 1b
        ret
        .size spin, .-spin
        .section .note.GNU-stack,"",@progbits
""",
    "x86_64": """
        .text
        .globl spin
        .type spin, @function
spin:
1:      dec %rdi
        nop
        nop
        jnz 1b
        ret
        .size spin, .-spin
        .section .note.GNU-stack,"",@progbits
""",
}
SPIN_MAIN = """
#include <stdlib.h>
void spin(long m);
int main(int argc, char **argv) {
  if (argc == 2)
    spin(atol(argv[1]));
  return 0;
}
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def one_insn_option(qemu):
    """-one-insn-per-tb since qemu 8.1; -singlestep before."""
    r = subprocess.run([qemu, "-h"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return "-one-insn-per-tb" if "one-insn-per-tb" in r.stdout \
        else "-singlestep"


def count(arch, argv):
    """Run argv under qemu with one instruction per block and return the
    number of executed blocks (instructions)."""
    qemu, opts, sysroot, _, _ = ARCHES[arch]
    rfd, wfd = os.pipe()
    cmd = [qemu] + opts + (["-L", sysroot] if sysroot else []) + \
        [one_insn_option(qemu), "-d", "exec,nochain",
         "-D", "/dev/fd/%d" % wfd] + argv
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, pass_fds=(wfd,))
    os.close(wfd)
    n = 0
    with os.fdopen(rfd, "rb", buffering=1 << 20) as f:
        for line in f:
            if line.startswith(b"Trace "):
                n += 1
    err = p.stderr.read().decode(errors="replace")
    if p.wait() != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (
            " ".join(argv), p.returncode, err.strip()[-300:]))
    return n


def check_counter(arch, tmp):
    """The loop of known length: I(2m) - I(m) == 4 m exactly."""
    cc = ARCHES[arch][3]
    s = os.path.join(tmp, "spin-%s.S" % arch)
    c = os.path.join(tmp, "spin-main.c")
    exe = os.path.join(tmp, "spin-%s" % arch)
    with open(s, "w") as f:
        f.write(SPIN[arch])
    with open(c, "w") as f:
        f.write(SPIN_MAIN)
    subprocess.run([cc, "-O2", "-o", exe, c, s], check=True)
    m = 100_000
    a, b = count(arch, [exe, str(m)]), count(arch, [exe, str(2 * m)])
    if b - a != 4 * m:
        raise RuntimeError("%s: the counter is off: a loop of %d x 4 "
                           "instructions counted %d" % (arch, m, b - a))
    log("  %s: counter checked: %d more iterations of a 4-instruction loop "
        "counted %d (exact)" % (arch, m, b - a))


def build(arch, bdir):
    args = ["-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
            "-DFIB_BUILD_BENCH=ON", "-DFIB_BUILD_TESTS=OFF",
            "-DFIB_BUILD_EXAMPLES=OFF"]
    if arch != "x86_64":
        args.append("-DCMAKE_TOOLCHAIN_FILE=%s" % os.path.join(
            ROOT, "cmake", "toolchains", "%s-linux-gnu.cmake" % arch))
    subprocess.run(["cmake"] + args, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", bdir, "-j", str(os.cpu_count() or 2),
                    "--target", "bench_fibers"], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["aarch64", "riscv64"],
                    choices=sorted(ARCHES))
    ap.add_argument("--only", nargs="+", choices=[b for b, _ in BENCHES],
                    help="only these benchmarks")
    ap.add_argument("--n", type=int, default=2000,
                    help="operations in the smaller run (a multiple of 10; "
                    "default 2000)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build",
                                                        "bench"),
                    help="x86_64's build directory; the cross builds are "
                    "this plus -aarch64, -riscv64 (default build/bench)")
    ap.add_argument("--no-build", action="store_true",
                    help="use the bench_fibers already built")
    a = ap.parse_args()
    if a.n % 10:
        ap.error("--n must be a multiple of 10 (the warm-up is n/10 + 1)")
    for arch in a.arch:
        for tool in (ARCHES[arch][0], ARCHES[arch][3]):
            if not shutil.which(tool):
                log("error: %s not found (apt-get install qemu-user "
                    "gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu)" % tool)
                return 1
    benches = [(b, p) for b, p in BENCHES if not a.only or b in a.only]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.arch:
            check_counter(arch, tmp)
            bdir = os.path.abspath(a.build_dir) + ARCHES[arch][4]
            if not a.no_build:
                build(arch, bdir)
            exe = os.path.join(bdir, "bench", "bench_fibers")
            if not os.access(exe, os.X_OK):
                log("error: %s not built" % exe)
                return 1
            for bench, per in benches:
                i1 = count(arch, [exe, bench, str(a.n)])
                i2 = count(arch, [exe, bench, str(2 * a.n)])
                results[(bench, arch)] = (i2 - i1) / (1.1 * a.n * per)
                log("  %s %s: %.1f" % (arch, bench, results[(bench, arch)]))
    print("Instructions per operation under qemu-user, one instruction per "
          "block, (I(2n) - I(n)) / 1.1n, n = %d:" % a.n)
    print("%-18s" % "bench" + "".join("%10s" % x for x in a.arch))
    for bench, _ in benches:
        print("%-18s" % bench + "".join("%10.1f" % results[(bench, x)]
                                        for x in a.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
