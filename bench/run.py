#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/run.py -- run the fibers benchmark suite and print one table.

Runs every benchmark for every implementation (ours: "fibers"; peers:
"boost_context" (raw jump_fcontext), "boost_context_fiber"
(boost::context::fiber over the same switch), "ucontext", "boost_fiber",
"go") after a warm-up, then
--runs times (default 5) interleaved between implementations (the order
rotates each round), and prints bench / impl / median / min / max and our
ratio to each peer, then the targets as met / missed (a row compared with
another of ours runs it back to back in each round: see measure). Writes one
JSON object per line to <build-dir>/results.jsonl (results-smoke.jsonl with
--smoke):

  {"bench": NAME, "impl": IMPL, "median": X, "min": X, "max": X,
   "unit": U, "runs": R, "n": N}

A peer that is not installed or not built is reported as missing (in the
table, and in the JSONL with null figures and runs 0), never skipped. A peer
that fails at scale (e.g. runs out of mappings) is reported with how far it
got. Exit status: non-zero if any benchmark of ours fails.

Each benchmark program takes <bench> <n> and prints lines of the form
  BENCH {"bench": ..., "impl": ..., "value": X, "unit": U, "n": N, "note": ...}
(exit 2 with a BENCH line: it stopped early; the line says how far it got).

Python 3 standard library only.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ["fibers", "boost_context", "boost_context_fiber", "ucontext",
         "boost_fiber", "go"]
PROGRAMS = {
    "fibers": "bench_fibers",
    "boost_context": "bench_boost_context",
    "boost_context_fiber": "bench_boost_context_fiber",
    "ucontext": "bench_ucontext",
    "boost_fiber": "bench_boost_fiber",
    "go": "bench_go",
}

# name, unit, {impl: n} for the full run, {impl: n} for --smoke.
# Where a peer runs at a smaller n than ours, the reason is in CAPS below
# and in the table.
FULL, SMOKE = "full", "smoke"
# The idle_rss rows' implementations (boost_context_fiber has only switch
# and create: its idle cost is boost_context's, a stack each).
IDLE_IMPLS = [i for i in IMPLS if i != "boost_context_fiber"]
BENCHES = [
    # boost_context is the raw jump_fcontext; boost_context_fiber the same
    # switch under boost::context::fiber (resume returns the other side's
    # fiber), the like-for-like peer of our checked coroutine calls.
    ("switch", "ns",
     {"fibers": 2_000_000, "boost_context": 2_000_000,
      "boost_context_fiber": 2_000_000, "ucontext": 200_000},
     {"fibers": 20_000, "boost_context": 20_000,
      "boost_context_fiber": 20_000, "ucontext": 2_000}),
    ("switch_shared_fp", "ns", {"fibers": 2_000_000}, {"fibers": 20_000}),
    # Shared-FP / full switch time, the two in alternating chunks in one
    # process: a sanity check (see SANITY below).
    ("switch_fp_paired", "ratio", {"fibers": 2_000_000}, {"fibers": 21_000}),
    # The full switch after one inexact FP operation in the resumer (its
    # MXCSR precision flag set, the coroutine's not): both switches save
    # and restore the whole MXCSR, so each loads a changed value. Smaller n:
    # it is ~10-30x slower than switch.
    ("switch_fp_flags", "ns",
     {"fibers": 200_000, "boost_context": 200_000},
     {"fibers": 2_000, "boost_context": 2_000}),
    # The peers' stacks are malloc'd 16 KiB, no guard (boost_context:
    # make_fcontext; boost_context_fiber: a fiber on a fixedsize_stack).
    ("create", "ns",
     {"fibers": 1_000_000, "boost_context": 1_000_000,
      "boost_context_fiber": 1_000_000, "ucontext": 100_000},
     {"fibers": 10_000, "boost_context": 10_000,
      "boost_context_fiber": 10_000, "ucontext": 1_000}),
    # Two stack sizes in turn; compared with our own create (SELF_TARGETS).
    ("create_mixed", "ns", {"fibers": 1_000_000}, {"fibers": 10_000}),
    ("spawn_join", "ns",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 1_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    ("yield", "ns",
     {"fibers": 2_000_000, "go": 2_000_000, "boost_fiber": 2_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    # Several workers (docs/multicore.md): the hop on a worker of two, the
    # other idle or busy (SELF_TARGETS: within 5% of yield); fib_call's
    # round trip from a plain thread.
    ("yield_2w", "ns", {"fibers": 2_000_000}, {"fibers": 10_000}),
    # The same with worker 1 busy: two fibers of its own yield to each other
    # until the measured pair is done.
    ("yield_2w_busy", "ns", {"fibers": 2_000_000}, {"fibers": 10_000}),
    ("call_rtt", "ns", {"fibers": 200_000}, {"fibers": 2_000}),
    # The same into a runtime asleep in its I/O poller (a fiber of it reads
    # a socket): the wake-up eventfd's round trip, beside call_rtt's futex.
    ("call_rtt_io", "ns", {"fibers": 100_000}, {"fibers": 2_000}),
    # A message between two workers (one fiber on each), beside Go with
    # GOMAXPROCS=2 and Boost.Fiber's work_stealing on two threads (there
    # the two may or may not share a thread).
    ("chan_unbuffered_2w", "ns",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 1_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    # Fan-out / fan-in on two workers: producer -> 4 stages -> collector
    # through two shared channels, unbuffered and of 64 slots; ns per
    # message, n messages. The peers in the same shape: Go GOMAXPROCS=2,
    # Boost.Fiber work_stealing on two threads.
    ("fanout_2w", "ns",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 1_000_000},
     {"fibers": 2_000, "go": 2_000, "boost_fiber": 2_000}),
    ("fanout_2w_buf", "ns",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 1_000_000},
     {"fibers": 2_000, "go": 2_000, "boost_fiber": 2_000}),
    # fib_post throughput from a plain thread, posts run per second, into
    # a runtime of one worker and of two (ours only: the round trip is
    # call_rtt above).
    ("post_rate", "msgs/s", {"fibers": 500_000}, {"fibers": 10_000}),
    ("post_rate_2w", "msgs/s", {"fibers": 500_000}, {"fibers": 10_000}),
    # CPU used by a two-worker runtime whose fibers all wait (a socket
    # read, a channel receive, an hour's sleep), as % of one core over n
    # ms; also in ms (idle_cpu_2w_ms). No warm-up (NO_WARMUP).
    ("idle_cpu_2w", "%",
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000},
     {"fibers": 50, "go": 50, "boost_fiber": 50}),
    ("idle_rss_100k", "bytes",
     {i: 100_000 for i in IDLE_IMPLS}, {i: 1_000 for i in IDLE_IMPLS}),
    ("idle_rss_1m", "bytes",
     {"fibers": 1_000_000, "boost_context": 1_000_000, "ucontext": 1_000_000,
      "boost_fiber": 100_000, "go": 1_000_000},
     {i: 2_000 for i in IDLE_IMPLS}),
    # The same with FIB_COMPACT fibers (ours only): their frames on the
    # heap while they wait, no stack page each.
    ("idle_rss_compact_1m", "bytes", {"fibers": 1_000_000},
     {"fibers": 2_000}),
    ("skynet_1m", "ms",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 10_000},
     {"fibers": 1_000, "go": 1_000, "boost_fiber": 1_000}),
    # The same tree on two workers (docs/multicore.md), beside Go with
    # GOMAXPROCS=2 and Boost.Fiber's work_stealing on two threads (fiber +
    # join, as its skynet_1m); compared with our own one-worker row too
    # (SELF_TARGETS).
    ("skynet_1m_2w", "ms",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 10_000},
     {"fibers": 1_000, "go": 1_000, "boost_fiber": 1_000}),
    # Many alive at once. skynet_1m above joins each child as
    # soon as it is spawned, so only ~60 of ours are alive at a time (Go's
    # program is the channel one in both rows: a goroutine cannot be
    # joined); skynet_1m_chan is the canonical skynet, where each child
    # sends its sum through its parent's unbuffered channel and most of the
    # tree is alive at once. spawn_alive_1m: n fibers all waiting on one
    # wait, released together. Smoke sizes are small: ours takes ~10-30 s
    # and ~4 GB at full size.
    ("skynet_1m_chan", "ms",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 100_000},
     {"fibers": 1_000, "go": 1_000, "boost_fiber": 1_000}),
    ("spawn_alive_1m", "ms",
     {"fibers": 1_000_000, "go": 1_000_000, "boost_fiber": 100_000},
     {"fibers": 2_000, "go": 2_000, "boost_fiber": 2_000}),
    # Blocking primitives.
    ("chan_unbuffered", "ns",
     {"fibers": 2_000_000, "go": 2_000_000, "boost_fiber": 2_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    ("chan_buffered", "ns",
     {"fibers": 4_000_000, "go": 4_000_000, "boost_fiber": 4_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    ("mutex_handoff", "ns",
     {"fibers": 2_000_000, "go": 2_000_000, "boost_fiber": 2_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
    ("select4", "ns",
     {"fibers": 4_000_000, "go": 4_000_000, "boost_fiber": 4_000_000},
     {"fibers": 10_000, "go": 10_000, "boost_fiber": 10_000}),
]
# Results a benchmark program reports besides its own bench name.
EXTRA = {"skynet_1m": ["skynet_1m_peak_rss"],
         "skynet_1m_chan": ["skynet_1m_chan_peak_rss"],
         "spawn_alive_1m": ["spawn_alive_1m_peak_rss",
                            "spawn_alive_1m_idle_rss"],
         "idle_cpu_2w": ["idle_cpu_2w_ms"]}
# The unit of such a result, where it is not its benchmark's (and not
# bytes, which every *_rss is).
EXTRA_UNITS = {"idle_cpu_2w_ms": "ms"}
# Why a peer runs at a smaller size in the full run.
CAPS = {
    ("ucontext", "switch"): "swapcontext makes a syscall per switch",
    ("ucontext", "create"): "two syscalls per create",
    ("boost_fiber", "idle_rss_1m"):
        "capped at 100k: each fiber's 128 KiB default stack is its own mmap; "
        "1M takes minutes here",
    ("boost_fiber", "skynet_1m"):
        "capped at 10k leaves: ~300 us per fiber here (a fresh 128 KiB mmap'd "
        "stack each); 1M would take ~6 min per run",
    ("boost_fiber", "skynet_1m_2w"):
        "capped at 10k leaves, as skynet_1m: a fresh 128 KiB stack per fiber",
    ("boost_fiber", "skynet_1m_chan"):
        "capped at 100k leaves: a malloc'd 128 KiB stack per fiber, ~11 KB "
        "resident each with the tree alive; 1M would need ~11 GB and ~30 s "
        "per run here",
    ("boost_fiber", "spawn_alive_1m"):
        "capped at 100k: ~11 KB resident per waiting fiber (128 KiB malloc'd "
        "stacks); 1M would need ~11 GB",
}
# Benchmarks whose warm-up runs at a hundredth of the size (they are
# dominated by page faults, which a warm-up cannot warm).
SMALL_WARMUP = {"idle_rss_100k", "idle_rss_1m", "idle_rss_compact_1m",
                "skynet_1m", "skynet_1m_2w",
                "skynet_1m_chan",
                "spawn_alive_1m"}
# Benchmarks with no warm-up run: idle_cpu_2w measures waiting, which a
# warm-up cannot warm, and takes its n in ms.
NO_WARMUP = {"idle_cpu_2w"}
# Not available yet, with the reason (reported as missing, never skipped).
NOT_YET = {
    ("boost_fiber", "select4"):
        "Boost.Fiber has no select over channels (only one channel per "
        "push/pop; its when_any waits for fibers, not channel operations)",
}

# The targets: (bench, peer, max ratio ours/peer) and absolute ones.
RATIO_TARGETS = [
    # The switch, full ABI state per context: below the raw jump_fcontext,
    # and not above the same switch under boost::context::fiber.
    ("switch", "boost_context", 0.95),
    ("switch", "boost_context_fiber", 1.0),
    ("switch_shared_fp", "boost_context", 0.6),
    # Against make_fcontext on a malloc'd stack with no guard.
    ("create", "boost_context", 0.8),
    ("spawn_join", "go", 0.15),
    ("yield", "go", 0.2),
    ("yield", "boost_fiber", 0.12),
    ("skynet_1m", "go", 0.25),
    ("skynet_1m_peak_rss", "go", 1.0),  # "lower peak memory than Go"
    # Several workers.
    ("skynet_1m_2w", "go", 0.15),
    ("chan_unbuffered_2w", "go", 0.5),
    ("chan_unbuffered_2w", "boost_fiber", 0.5),
    ("fanout_2w", "go", 0.5),
    ("fanout_2w", "boost_fiber", 0.5),
    ("fanout_2w_buf", "go", 0.5),
    ("fanout_2w_buf", "boost_fiber", 0.5),
    # Many alive at once.
    ("skynet_1m_chan", "go", 0.5),
    ("skynet_1m_chan_peak_rss", "go", 1.0),
    ("spawn_alive_1m", "go", 0.5),
    # Blocking primitives: every one <= 0.3 x go and <= 0.5 x boost_fiber;
    # the unbuffered ping-pong <= 0.15 x go.
    ("chan_unbuffered", "go", 0.15),
    ("chan_unbuffered", "boost_fiber", 0.5),
    ("chan_buffered", "go", 0.3),
    ("chan_buffered", "boost_fiber", 0.5),
    ("mutex_handoff", "go", 0.3),
    ("mutex_handoff", "boost_fiber", 0.5),
    ("select4", "go", 0.3),
    ("select4", "boost_fiber", 0.5),
]
# Targets against another row of ours from the same run: (bench, our
# reference bench, max ratio).
SELF_TARGETS = [
    # Skipping the FP control state cannot make a switch slower. These two
    # rows are measured minutes apart, so on a busy machine noise alone can
    # cross the line: this one is reported, and switch_fp_paired (timed in
    # one process) is the check that fails the run (SANITY below).
    ("switch_shared_fp", "switch", 1.0),
    # A program that mixes stack sizes is served by the pool as well as
    # one that uses a single size.
    ("create_mixed", "create", 1.2),
    # Two workers take at most 0.6 x one worker's time.
    ("skynet_1m_2w", "skynet_1m", 0.6),
    ("yield_2w", "yield", 1.05),
    ("yield_2w_busy", "yield", 1.05),
]
# Sanity checks of our own rows (the shared-FP row once read slower
# than the library is). Both say "the shared-FP switch is not slower than
# the full one"; they differ in how noise can reach them:
#  - switch_fp_paired <= 1.0: each of 21 pairs times the two switches
#    back to back in one process and the median ratio is taken, so
#    machine load cancels out (it measures ~0.55-0.65 on the reference
#    machine). A miss fails a full run; at smoke size (1,000 round trips a
#    chunk, ~10 us) it is a WARNING line, so CI is not at the mercy of a
#    few interrupts.
#  - the callgrind counts: switch_shared_fp_instructions <
#    switch_instructions. Exact and repeatable, so a miss fails any run,
#    smoke included (it means FIB_SHARED_FP no longer skips the FP work).
PAIRED_LIMIT = 1.0
IDLE_TARGET_BYTES = 4400
IDLE_TARGET_N = 1_000_000
# Idle RSS per fiber at 1M in the default guarded mode, read
# while all of spawn_alive_1m's fibers wait (no stack touched beyond their
# own frames).
ALIVE_IDLE_TARGET_BYTES = 4200
# A two-worker runtime whose fibers all wait uses about no CPU: at most
# this % of one core over the full run's 10 s (idle_cpu_2w).
IDLE_CPU_TARGET_PCT = 0.5
# Idle RSS per FIB_COMPACT fiber at 1M (idle_rss_compact_1m).
COMPACT_IDLE_TARGET_BYTES = 1000

BENCH_RE = re.compile(r"^BENCH (\{.*\})\s*$")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Impl:
    def __init__(self, name, path=None, missing=None):
        self.name, self.path, self.missing = name, path, missing


def find_impls(build_dir, bin_dir):
    impls = {}
    for name in IMPLS:
        prog = os.path.join(bin_dir, PROGRAMS[name])
        if name == "go":
            impls[name] = build_go(build_dir, prog)
            continue
        if os.access(prog, os.X_OK):
            impls[name] = Impl(name, prog)
        elif name == "fibers":
            impls[name] = Impl(name, missing="bench_fibers not built")
        elif name == "ucontext":
            impls[name] = Impl(name, missing="bench_ucontext not built")
        else:
            lib = {"boost_context": "Boost.Context",
                   "boost_context_fiber": "Boost.Context",
                   "boost_fiber": "Boost.Fiber"}[name]
            impls[name] = Impl(name, missing="not built (%s or a C++ compiler "
                               "not found by CMake; make bench-deps)" % lib)
    return impls


def build_go(build_dir, prog):
    go = shutil.which("go")
    if not go:
        return Impl("go", missing="go not installed (make bench-deps)")
    env = dict(os.environ)
    env.setdefault("GOCACHE", os.path.join(os.path.abspath(build_dir),
                                           "go-cache"))
    env.setdefault("GOPATH", os.path.join(os.path.abspath(build_dir),
                                          "go-path"))
    env["GO111MODULE"] = "off"  # one main package, standard library only
    src = sorted(os.path.join(ROOT, "bench", "go", f)
                 for f in os.listdir(os.path.join(ROOT, "bench", "go"))
                 if f.endswith(".go") and not f.endswith("_test.go"))
    r = subprocess.run([go, "build", "-o", prog] + src, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        return Impl("go", missing="go build failed: " +
                    r.stdout.strip().splitlines()[-1] if r.stdout.strip()
                    else "go build failed")
    return Impl("go", prog)


def run_once(impl, bench, n, timeout):
    """Run one benchmark process. Returns (records, error): records is a
    list of parsed BENCH dicts; error is None, or a string (the run failed
    or stopped early; records may still hold how far it got)."""
    env = dict(os.environ)
    env["GOMAXPROCS"] = "1"
    try:
        r = subprocess.run([impl.path, bench, str(n)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], "timed out after %d s" % timeout
    recs = []
    for line in r.stdout.splitlines():
        m = BENCH_RE.match(line)
        if m:
            try:
                recs.append(json.loads(m.group(1)))
            except ValueError:
                pass
    if r.returncode == 0 and recs:
        return recs, None
    err = r.stderr.strip().splitlines()
    why = err[-1] if err else ""
    if r.returncode < 0:
        why = "killed by signal %d %s" % (-r.returncode, why)
    elif r.returncode == 2 and recs:
        why = "stopped early: " + recs[0].get("note", "")
    elif not recs:
        why = "exit %d, no result line %s" % (r.returncode, why)
    return recs, why.strip()


class Cell:
    """Everything measured for one (bench, impl)."""

    def __init__(self, bench, impl, unit):
        self.bench, self.impl, self.unit = bench, impl, unit
        self.values, self.n, self.note = [], None, ""
        self.missing = None   # why there is no figure at all
        self.partial = None   # why the figure is for fewer than asked

    def add(self, rec):
        self.values.append(float(rec["value"]))
        self.n = int(rec["n"])
        self.note = rec.get("note", "")

    def stats(self):
        if not self.values:
            return None
        return (statistics.median(self.values), min(self.values),
                max(self.values))


def self_reference(bench):
    """The row of ours that SELF_TARGETS compares bench with, or None."""
    for b, ref, _ in SELF_TARGETS:
        if b == bench:
            return ref
    return None


def measure(impls, mode, runs, timeout, only):
    """Returns (cells, order, paired). paired maps a SELF_TARGETS row to
    the ratios of its rounds: each round runs the row and its reference
    back to back (the first of the two alternating), because this host
    changes speed for seconds to minutes at a time and rows measured
    minutes apart can sit in different modes."""
    cells = {}  # (bench, impl) -> Cell
    order = []
    paired = {}  # bench -> [ratio of each round]
    sizes_of = {b: (full, smoke) for b, _, full, smoke in BENCHES}
    for bench, unit, full, smoke, in BENCHES:
        if only and bench not in only:
            continue
        sizes = full if mode == FULL else smoke
        names = [i for i in IMPLS if i in sizes]
        active = []
        for b in [bench] + EXTRA.get(bench, []):
            for name in names:
                cells[(b, name)] = Cell(b, name, "bytes"
                                        if b.endswith("_rss") else
                                        EXTRA_UNITS.get(b, unit))
                order.append((b, name))
        for name in names:
            if (name, bench) in NOT_YET:
                for b in [bench] + EXTRA.get(bench, []):
                    cells[(b, name)].missing = NOT_YET[(name, bench)]
            elif impls[name].missing:
                for b in [bench] + EXTRA.get(bench, []):
                    cells[(b, name)].missing = impls[name].missing
            else:
                active.append(name)
        t0 = time.time()
        # Warm-up: one run each, discarded.
        for name in active if bench not in NO_WARMUP else []:
            n = sizes[name]
            if bench in SMALL_WARMUP and mode == FULL:
                n = max(1000, n // 100)
            log("  warm-up %-16s %-19s n=%d" % (bench, name, n))
            recs, err = run_once(impls[name], bench, n, timeout)
            if err and not recs:
                for b in [bench] + EXTRA.get(bench, []):
                    cells[(b, name)].missing = "failed: " + err
        active = [a for a in active if not cells[(bench, a)].missing]
        # Measured runs, interleaved; the starting impl rotates per round.
        for r in range(runs):
            k = r % len(active) if active else 0
            for name in active[k:] + active[:k]:
                if cells[(bench, name)].missing:
                    continue
                n = sizes[name]
                log("  run %d/%d %-16s %-19s n=%d" % (r + 1, runs, bench,
                                                      name, n))
                ref = self_reference(bench) if name == "fibers" else None
                ref_first = ref is not None and r % 2 == 1
                ref_value = None
                if ref_first:
                    ref_value = run_reference(impls[name], ref, sizes_of,
                                              mode, timeout)
                recs, err = run_once(impls[name], bench, n, timeout)
                if ref is not None and not ref_first:
                    ref_value = run_reference(impls[name], ref, sizes_of,
                                              mode, timeout)
                for rec in recs:
                    c = cells.get((rec["bench"], name))
                    if c is not None:
                        c.add(rec)
                    if rec["bench"] == bench and ref_value:
                        paired.setdefault(bench, []).append(
                            float(rec["value"]) / ref_value)
                if err:
                    if recs:
                        for b in [bench] + EXTRA.get(bench, []):
                            cells[(b, name)].partial = err
                    else:
                        for b in [bench] + EXTRA.get(bench, []):
                            cells[(b, name)].missing = "failed: " + err
        log("  %s: %.1f s" % (bench, time.time() - t0))
    return cells, order, paired


def run_reference(impl, ref, sizes_of, mode, timeout):
    """One run of our row ref, for a round of a SELF_TARGETS row: its
    figure, or None if it failed (the row's own runs report failures)."""
    if ref not in sizes_of:
        return None
    full, smoke = sizes_of[ref]
    n = (full if mode == FULL else smoke)["fibers"]
    log("        %-16s %-19s n=%d (paired)" % (ref, "fibers", n))
    recs, err = run_once(impl, ref, n, timeout)
    for rec in recs:
        if rec["bench"] == ref and not err:
            return float(rec["value"])
    return None


def fmt(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.4g" % v
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    if v >= 0.1 or v == 0:
        return "%.2f" % v
    return "%.2g" % v


def print_table(cells, order, mode, out):
    w = out.write
    w("\n%-19s %-19s %10s %10s %10s %-6s %9s  %s\n" % (
        "bench", "impl", "median", "min", "max", "unit", "n",
        "fibers/impl"))
    w("-" * 91 + "\n")
    last = None
    for bench, impl in order:
        c = cells[(bench, impl)]
        if last and bench != last:
            w("\n")
        last = bench
        if c.missing and not c.values:
            w("%-19s %-19s MISSING: %s\n" % (bench, impl, c.missing))
            continue
        med, lo, hi = c.stats()
        ours = cells.get((bench, "fibers"))
        ratio = ""
        if impl != "fibers" and ours and ours.values:
            ratio = "%.3f" % (ours.stats()[0] / med) if med else "-"
            if ours.n != c.n and not c.unit == "ns":
                ratio += " (n differs)"
        notes = []
        if c.partial:
            notes.append("STOPPED EARLY at n=%d: %s" % (c.n, c.partial))
        elif (impl, bench) in CAPS and mode == FULL:
            notes.append(CAPS[(impl, bench)])
        m = re.search(r"at most (\d+) stacks have their guard", c.note)
        if m and c.n and int(m.group(1)) < c.n:
            notes.append("only <= %s guarded: mprotect fails past "
                         "vm.max_map_count and Boost ignores it (NDEBUG)"
                         % m.group(1))
        extra = ("  [%s]" % "; ".join(notes)) if notes else ""
        w("%-19s %-19s %10s %10s %10s %-6s %9d  %s%s\n" % (
            bench, impl, fmt(med), fmt(lo), fmt(hi), c.unit, c.n or 0,
            ratio, extra))
    w("\n")


def print_targets(cells, paired, mode, out):
    w = out.write
    w("Targets, and ours against ours (ratios from this run)%s:\n" % (
        "; informational only at smoke sizes" if mode == SMOKE else ""))
    for bench, peer, limit in RATIO_TARGETS:
        # switch_shared_fp is compared with the peer's ordinary switch.
        peer_bench = "switch" if bench == "switch_shared_fp" else bench
        ours = cells.get((bench, "fibers"))
        other = cells.get((peer_bench, peer))
        label = "%-19s <= %.2f x %-19s" % (bench, limit, peer)
        if not ours or not other:
            w("  %s not run\n" % label)
            continue
        if not ours.values:
            w("  %s NOT MEASURED (ours: %s)\n" % (label, ours.missing))
            continue
        if not other.values:
            w("  %s NOT MEASURED (%s: %s)\n" % (label, peer, other.missing))
            continue
        ratio = ours.stats()[0] / other.stats()[0]
        verdict = "MET" if ratio <= limit else "MISSED"
        same_n = "" if ours.n == other.n else " (n: ours %d, %s %d)" % (
            ours.n, peer, other.n)
        w("  %s %-6s ratio %.3f%s\n" % (label, verdict, ratio, same_n))
    for bench, ref, limit in SELF_TARGETS:
        ours, other = cells.get((bench, "fibers")), cells.get((ref, "fibers"))
        label = "%-19s <= %.2f x %-19s" % (bench, limit, ref + " (ours)")
        # The verdict is the median of the rounds' paired ratios (see
        # measure); the ratio of the two rows' medians is shown beside it
        # when both rows ran.
        rounds = paired.get(bench, [])
        apart = None
        if ours and other and ours.values and other.values:
            apart = ours.stats()[0] / other.stats()[0]
        if not ours:
            w("  %s not run\n" % label)
            continue
        if not rounds and apart is None:
            w("  %s NOT MEASURED\n" % label)
            continue
        ratio = statistics.median(rounds) if rounds else apart
        how = "rows' medians"
        if rounds:
            how = "paired in %d rounds" % len(rounds)
            if apart is not None:
                how += "; rows' medians %.3f" % apart
        w("  %s %-6s ratio %.3f (%s)\n" % (
            label, "MET" if ratio <= limit else "MISSED", ratio, how))
    c = cells.get(("idle_rss_1m", "fibers"))
    if c and c.values:
        med = c.stats()[0]
        ok = med <= IDLE_TARGET_BYTES and c.n >= IDLE_TARGET_N and \
            not c.partial
        w("  %-19s <= %d B with %d fibers  %-6s %.0f B/fiber, %d created\n"
          % ("idle_rss_1m", IDLE_TARGET_BYTES, IDLE_TARGET_N,
             "MET" if ok else "MISSED", med, c.n))
    c = cells.get(("idle_rss_compact_1m", "fibers"))
    if c and c.values:
        med = c.stats()[0]
        ok = med <= COMPACT_IDLE_TARGET_BYTES and c.n >= IDLE_TARGET_N and \
            not c.partial
        w("  %-19s <= %d B with %d fibers  %-6s %.0f B/fiber, %d created\n"
          % ("idle_rss_compact_1m", COMPACT_IDLE_TARGET_BYTES, IDLE_TARGET_N,
             "MET" if ok else "MISSED", med, c.n))
    c = cells.get(("spawn_alive_1m_idle_rss", "fibers"))
    if c and c.values:
        med = c.stats()[0]
        ok = med <= ALIVE_IDLE_TARGET_BYTES and c.n >= IDLE_TARGET_N
        go = cells.get(("spawn_alive_1m_idle_rss", "go"))
        beside = " (go %.0f B)" % go.stats()[0] if go and go.values else ""
        w("  %-19s <= %d B with %d fibers  %-6s %.0f B/fiber%s, n %d\n"
          % ("spawn_alive_1m_idle_rss", ALIVE_IDLE_TARGET_BYTES,
             IDLE_TARGET_N, "MET" if ok else "MISSED", med, beside, c.n))
    c = cells.get(("idle_cpu_2w", "fibers"))
    if c and c.values:
        med = c.stats()[0]
        ms = cells.get(("idle_cpu_2w_ms", "fibers"))
        w("  %-19s <= %.2f %% of a core       %-6s %.3g %% (%.3g ms CPU in "
          "%d ms)\n" % ("idle_cpu_2w", IDLE_CPU_TARGET_PCT,
                        "MET" if med <= IDLE_CPU_TARGET_PCT else "MISSED",
                        med, ms.stats()[0] if ms and ms.values else 0, c.n))
    w("\n")


def sanity_checks(cells, mode, out):
    """The checks in SANITY's comment. Prints one line each; returns the
    failures (a list of strings) that must fail the run."""
    lines = []
    w = lines.append
    fails = []
    c = cells.get(("switch_fp_paired", "fibers"))
    if c and c.values:
        med = c.stats()[0]
        if med <= PAIRED_LIMIT:
            w("  switch_fp_paired    <= %.2f  OK      shared-FP / full %.3f "
              "(paired in one process)\n" % (PAIRED_LIMIT, med))
        elif mode == FULL:
            w("  switch_fp_paired    <= %.2f  FAILED  shared-FP / full %.3f: "
              "the shared-FP switch is slower than the full one\n"
              % (PAIRED_LIMIT, med))
            fails.append("switch_fp_paired %.3f > %.2f" % (med, PAIRED_LIMIT))
        else:
            w("  switch_fp_paired    <= %.2f  WARNING shared-FP / full %.3f "
              "at smoke size (not fatal here; a full run fails on it)\n"
              % (PAIRED_LIMIT, med))
    elif c:
        w("  switch_fp_paired    NOT MEASURED (%s)\n" % c.missing)
    sh = cells.get(("switch_shared_fp_instructions", "fibers"))
    fu = cells.get(("switch_instructions", "fibers"))
    if sh and fu and sh.values and fu.values:
        a, b = sh.values[0], fu.values[0]
        if a < b:
            w("  switch_shared_fp_instructions < switch_instructions  OK  "
              "%.1f < %.1f\n" % (a, b))
        else:
            w("  switch_shared_fp_instructions < switch_instructions  "
              "FAILED  %.1f >= %.1f\n" % (a, b))
            fails.append("switch_shared_fp_instructions %.1f >= %.1f"
                         % (a, b))
    if lines:
        out.write("Sanity checks of our own rows:\n" + "".join(lines) + "\n")
    return fails


def write_jsonl(cells, order, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for bench, impl in order:
            c = cells[(bench, impl)]
            s = c.stats()
            rec = {"bench": bench, "impl": impl,
                   "median": s[0] if s else None,
                   "min": s[1] if s else None,
                   "max": s[2] if s else None,
                   "unit": c.unit, "runs": len(c.values), "n": c.n}
            f.write(json.dumps(rec) + "\n")


def callgrind(impls, bin_dir, out_dir, mode, out):
    """Instructions per operation from callgrind: the difference between a
    run with 2n and one with n operations (each plus its n/10 + 1 warm-up),
    divided by the 1.1 n operations between them; start-up cancels out.
    Deterministic, unlike time."""
    rows = []
    vg = shutil.which("valgrind")
    jobs = [("switch", "fibers", 2), ("switch_shared_fp", "fibers", 2),
            ("switch", "boost_context", 2),
            ("switch", "boost_context_fiber", 2),
            ("create", "fibers", 1), ("create", "boost_context", 1),
            ("create", "boost_context_fiber", 1),
            ("create_mixed", "fibers", 1),
            ("spawn_join", "fibers", 1), ("yield", "fibers", 1),
            # Blocking primitives: per message / lock / (send + select).
            ("chan_unbuffered", "fibers", 1), ("chan_buffered", "fibers", 1),
            ("mutex_handoff", "fibers", 1), ("select4", "fibers", 1)]
    n = 100_000 if mode == FULL else 5_000
    os.makedirs(out_dir, exist_ok=True)
    for bench, impl, per in jobs:
        name = bench + "_instructions"
        if not vg:
            rows.append((name, impl, None, n, "valgrind not installed"))
            continue
        if impls[impl].missing:
            rows.append((name, impl, None, n, impls[impl].missing))
            continue
        totals, err = [], None
        for k in (1, 2):
            f = os.path.join(out_dir, "callgrind.%s.%s.%d.out" % (bench, impl,
                                                                   k))
            r = subprocess.run(["valgrind", "--tool=callgrind",
                                "--callgrind-out-file=" + f, impls[impl].path,
                                bench, str(k * n)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
            tot = None
            if r.returncode == 0 and os.path.exists(f):
                with open(f) as fh:
                    for line in fh:
                        if line.startswith(("summary:", "totals:")):
                            tot = int(line.split()[1])
            if tot is None:
                err = "callgrind run failed (exit %d)" % r.returncode
                break
            totals.append(tot)
        if err:
            rows.append((name, impl, None, n, err))
        else:
            # Each program also runs a warm-up of n/10 + 1 iterations, so
            # the two runs differ by 1.1 n iterations; `per` operations per
            # iteration (a round trip is 2 switches).
            rows.append((name, impl,
                         (totals[1] - totals[0]) / (1.1 * n * per), n, ""))
        log("  callgrind %s %s done" % (bench, impl))
    out.write("Instructions per operation (valgrind --tool=callgrind, "
              "(Ir(2n) - Ir(n)) / 1.1n; files in %s):\n" % out_dir)
    for name, impl, v, nn, why in rows:
        if v is None:
            out.write("  %-24s %-19s MISSING: %s\n" % (name, impl, why))
        else:
            out.write("  %-24s %-19s %8.1f instr\n" % (name, impl, v))
    out.write("\n")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build",
                                                        "bench"))
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes: checks that everything builds and runs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="only these benchmarks")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--timeout", type=int, default=0,
                    help="seconds per run (default 600, smoke 120)")
    a = ap.parse_args()
    if a.runs < 5 and not a.smoke:
        log("note: fewer than 5 runs is below what the method asks for")
    mode = SMOKE if a.smoke else FULL
    timeout = a.timeout or (120 if a.smoke else 600)
    bin_dir = os.path.join(a.build_dir, "bench")
    t_start = time.time()

    impls = find_impls(a.build_dir, bin_dir)
    for name in IMPLS:
        if impls[name].missing:
            log("%s: MISSING: %s" % (name, impls[name].missing))
    if impls["fibers"].missing:
        log("error: our benchmark program is missing; run `make bench-build`")
        return 1

    cells, order, paired = measure(impls, mode, a.runs, timeout, a.only)

    cg_rows = []
    if not a.no_callgrind:
        cg_rows = callgrind(impls, bin_dir, os.path.join(
            a.build_dir, "callgrind" if mode == FULL else "callgrind-smoke"),
            mode, sys.stdout)
    for name, impl, v, nn, why in cg_rows:
        c = Cell(name, impl, "instr")
        if v is None:
            c.missing = why
        else:
            c.values, c.n = [v], nn
        cells[(name, impl)] = c
        order.append((name, impl))

    print("fibers benchmark suite (%s run, %d runs each after a warm-up, "
          "interleaved)" % (mode, a.runs))
    print_table(cells, order, mode, sys.stdout)
    print_targets(cells, paired, mode, sys.stdout)
    sanity_fails = sanity_checks(cells, mode, sys.stdout)
    out = os.path.join(a.build_dir, "results.jsonl" if mode == FULL
                       else "results-smoke.jsonl")
    write_jsonl(cells, order, out)
    print("wrote %s (%.0f s in all)" % (out, time.time() - t_start))

    # Ours must work: any failure of ours (other than a not-yet option)
    # fails the run; a peer's failure never does.
    bad = [(b, i) for (b, i), c in cells.items()
           if i == "fibers" and (i, b) not in NOT_YET
           and not b.endswith("_instructions")
           and (c.missing or c.partial)]
    bad += [(n, i) for n, i, v, nn, why in cg_rows
            if i == "fibers" and v is None and "not installed" not in why]
    if bad:
        log("error: our benchmarks failed: %s" %
            ", ".join("%s/%s" % x for x in bad))
        return 1
    if sanity_fails:
        log("error: sanity check failed: %s" % "; ".join(sanity_fails))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
