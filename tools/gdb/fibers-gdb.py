# SPDX-License-Identifier: MIT
# fibers-gdb.py -- gdb commands for programs that use the fibers library.
#
#   gdb loads it by itself for a program that uses the installed shared
#   library (docs/packaging.md); otherwise, e.g. for a static link:
#   (gdb) source /usr/local/share/fibers/gdb/fibers-gdb.py
#   (gdb) info fibers            every fiber of every live runtime
#   (gdb) fiber bt ID [RT]       the backtrace of a suspended fiber (RT: the
#                                runtime's number in the listing, if needed)
#
# Works on a live process and on a core file. Nothing about the library's
# records is hard-coded here: the library exports `fib_debug_layout`
# (include/fibers/debug.h), a versioned description of where the runtime
# registry, the fiber records, the stacks and a suspended context's saved
# registers are. This script reads the fields
# of version 1 of that description, from version 1 or any later one.
#
# A suspended fiber's backtrace is shown by a gdb unwinder that, for the
# one command, makes the caller of the innermost frame be the fiber's
# saved context; gdb's own (DWARF) unwinding goes on from there. Nothing
# in the inferior is changed, so this works in a core file too.

import re
import struct

import gdb
from gdb.unwinder import Unwinder

try:
    from gdb.unwinder import FrameId
except ImportError:  # gdb < 14: any object with sp and pc attributes
    class FrameId:
        def __init__(self, sp, pc):
            self.sp = sp
            self.pc = pc

MIN_LAYOUT_VERSION = 1
STATES = {0: "ready", 1: "running", 2: "blocked", 3: "sleeping", 4: "finished"}
U32_FIELDS = ("rt_next rt_slots rt_mask rt_current slot_size slot_id "
              "slot_value fiber_id fiber_state fiber_co fiber_name coro_sp "
              "coro_stack coro_status stack_lo stack_usable stack_guard "
              "stack_mode").split()
U32_BASE = 36  # offset of rt_next, the first of U32_FIELDS
LAYOUT_SIZE = U32_BASE + 4 * len(U32_FIELDS)  # the bytes read here
SCAN_PAGE = 4096  # granularity of the high-water scan
GUARD_NONE = 3  # fib_guard_mode FIB_GUARD_NONE: a canary word at lo
CANARY_SIZE = 8


def _mem(addr, n):
    return bytes(gdb.selected_inferior().read_memory(addr, n))


def _u64(addr):
    return struct.unpack("<Q", _mem(addr, 8))[0]


def _u32(addr):
    return struct.unpack("<I", _mem(addr, 4))[0]


def _i32(addr):
    return struct.unpack("<i", _mem(addr, 4))[0]


def _cstr(addr, limit=256):
    if not addr:
        return ""
    data = _mem(addr, limit)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


class Layout:
    """fib_debug_layout, read from the inferior."""

    def __init__(self):
        try:
            base = int(gdb.parse_and_eval("(unsigned long)&fib_debug_layout"))
        except gdb.error:
            raise gdb.GdbError("fibers: no symbol fib_debug_layout: is the "
                               "program linked with the fibers library?")
        self.version = _u32(base)
        self.size = _u32(base + 4)
        # The struct only grows (fibers/debug.h): a later version keeps
        # every field this script reads where it was, so any version from
        # the first on will do if it is large enough to hold them.
        if self.version < MIN_LAYOUT_VERSION or self.size < LAYOUT_SIZE:
            raise gdb.GdbError(
                "fibers: fib_debug_layout version %d, %d bytes: this script "
                "needs version %d or later, at least %d bytes" %
                (self.version, self.size, MIN_LAYOUT_VERSION, LAYOUT_SIZE))
        self.arch = _cstr(_u64(base + 8))
        regs = _cstr(_u64(base + 16), 1024)
        self.frame_regs = [(n, int(o)) for n, o in
                           (p.split(":") for p in regs.split(",") if p)]
        self.runtimes = _u64(base + 24)
        self.frame_size = _u32(base + 32)
        for i, name in enumerate(U32_FIELDS):
            setattr(self, name, _u32(base + U32_BASE + 4 * i))


class Fiber:
    def __init__(self, lay, rt, rec):
        self.rt = rt
        self.rec = rec
        self.id = _u64(rec + lay.fiber_id)
        self.state = STATES.get(_i32(rec + lay.fiber_state), "?")
        self.name = _cstr(rec + lay.fiber_name, 32)
        self.co = _u64(rec + lay.fiber_co)
        self.sp = self.lo = self.hi = self.guard = self.mode = None
        if self.co:
            self.sp = _u64(self.co + lay.coro_sp)
            stack = _u64(self.co + lay.coro_stack)
            self.lo = _u64(stack + lay.stack_lo)
            self.hi = self.lo + _u64(stack + lay.stack_usable)
            self.guard = _u64(stack + lay.stack_guard)
            self.mode = _i32(stack + lay.stack_mode)

    def high_water(self):
        """Bytes from the top down to the lowest page with data in it (a
        page never written reads as zeros, or is absent from a core)."""
        if not self.co:
            return None
        addr = self.lo
        while addr < self.hi:
            try:
                data = _mem(addr, SCAN_PAGE)
                if addr == self.lo and self.mode == GUARD_NONE:
                    data = data[CANARY_SIZE:]  # the canary is not use
                if any(data):
                    return self.hi - addr
            except gdb.MemoryError:
                pass
            addr += SCAN_PAGE
        return 0


def runtimes(lay):
    """Live runtimes, oldest first (the registry keeps the newest first)."""
    rt = _u64(lay.runtimes)
    out = []
    while rt and rt not in out:
        out.append(rt)
        rt = _u64(rt + lay.rt_next)
    return list(reversed(out))


def _fiber_or_none(lay, rt, rec):
    try:
        return Fiber(lay, rt, rec)
    except gdb.MemoryError:
        return None  # e.g. a core file without that memory


def fibers(lay, rt):
    slots = _u64(rt + lay.rt_slots)
    if not slots:
        return []
    n = _u64(rt + lay.rt_mask) + 1
    table = _mem(slots, n * lay.slot_size)
    out = []
    for i in range(n):
        off = i * lay.slot_size
        fid = struct.unpack_from("<Q", table, off + lay.slot_id)[0]
        if fid:
            rec = struct.unpack_from("<Q", table, off + lay.slot_value)[0]
            f = _fiber_or_none(lay, rt, rec)
            if f is None:
                gdb.write("fibers: fiber record 0x%x (id %d) unreadable\n"
                          % (rec, fid))
            else:
                out.append(f)
    out.sort(key=lambda f: f.id)
    return out


class InfoFibers(gdb.Command):
    """List every fiber of every live fibers runtime.
Columns: runtime, fiber id, state, name, usable stack range and size,
high-water mark (bytes of stack touched, from the top; page-granular)."""

    def __init__(self):
        super().__init__("info fibers", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        lay = Layout()
        count = 0
        gdb.write("%-2s %-18s %6s %-9s %-16s %-39s %s\n" %
                  ("Rt", "Runtime", "Id", "State", "Name", "Stack",
                   "High-water"))
        for index, rt in enumerate(runtimes(lay), 1):
            for f in fibers(lay, rt):
                count += 1
                if f.co:
                    stack = "0x%x-0x%x %d" % (f.lo, f.hi, f.hi - f.lo)
                    hw = str(f.high_water())
                else:
                    stack, hw = "-", "-"
                gdb.write("%-2d 0x%-16x %6d %-9s %-16s %-39s %s\n" %
                          (index, rt, f.id, f.state, '"%s"' % f.name, stack,
                           hw))
        gdb.write("%d fibers\n" % count)


class _FiberUnwinder(Unwinder):
    """Active only while `fiber bt` runs: the innermost frame's caller is
    the suspended fiber's saved context."""

    def __init__(self):
        super().__init__("fibers-suspended")
        self.regs = None

    def __call__(self, pending):
        if self.regs is None:
            return None
        level = pending.level() if hasattr(pending, "level") else 0
        if level != 0:
            return None
        # gdb ends a backtrace whose next frame is "inner" (at a lower
        # stack address) than the one before, and the fiber's stack may lie
        # below the stack this thread stopped on: the innermost frame's id
        # takes the lower of the two. Only its identity changes.
        sp = pending.read_register("sp")
        pc = pending.read_register("pc")
        fiber_sp = dict(self.regs)["sp"]
        if fiber_sp < int(sp):
            sp = gdb.Value(fiber_sp).cast(sp.type)
        info = pending.create_unwind_info(FrameId(sp, pc))
        for name, value in self.regs:
            reg = pending.read_register(name)
            info.add_saved_register(name, gdb.Value(value).cast(reg.type))
        return info


_unwinder = _FiberUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


class FiberPrefix(gdb.Command):
    """Commands about fibers of the fibers library: fiber bt."""

    def __init__(self):
        super().__init__("fiber", gdb.COMMAND_STACK, prefix=True)


class FiberBt(gdb.Command):
    """fiber bt ID [RUNTIME]: backtrace of the suspended fiber ID. If several
runtimes have a fiber ID, RUNTIME picks one: its number in the Rt column of
`info fibers`, or its address."""

    def __init__(self):
        super().__init__("fiber bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not args:
            raise gdb.GdbError("usage: fiber bt ID [RUNTIME]")
        fid = int(args[0], 0)
        want_rt = int(args[1], 0) if len(args) > 1 else None
        lay = Layout()
        match = [f for index, rt in enumerate(runtimes(lay), 1)
                 if want_rt in (None, index, rt)
                 for f in fibers(lay, rt) if f.id == fid]
        if not match:
            raise gdb.GdbError("fibers: no fiber %d" % fid)
        if len(match) > 1:
            raise gdb.GdbError("fibers: fiber %d exists in several runtimes: "
                               "fiber bt %d RT (RT: see info fibers)" %
                               (fid, fid))
        f = match[0]
        if not f.co:
            raise gdb.GdbError("fibers: fiber %d has finished" % fid)
        if f.state == "running":
            raise gdb.GdbError("fibers: fiber %d is running: use `bt` in "
                               "the thread that runs it" % fid)
        regs = [(name, _u64(f.sp + off)) for name, off in lay.frame_regs]
        regs.append(("sp", f.sp + lay.frame_size))
        gdb.write('fiber %d "%s" (%s), runtime 0x%x:\n' %
                  (f.id, f.name, f.state, f.rt))
        _unwinder.regs = regs
        gdb.invalidate_cached_frames()
        try:
            frame = gdb.newest_frame().older()
            n = 0
            while frame is not None and n < 200:
                pc = frame.pc()
                name = frame.name() or "??"
                sal = frame.find_sal()
                where = ""
                if sal.symtab is not None:
                    where = " at %s:%d" % (sal.symtab.filename, sal.line)
                gdb.write("#%-3d 0x%016x in %s ()%s\n" % (n, pc, name, where))
                frame = frame.older()
                n += 1
        finally:
            _unwinder.regs = None
            gdb.invalidate_cached_frames()


InfoFibers()
FiberPrefix()
FiberBt()
