#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the fuzzer's seed corpus (fuzz/corpus/): small inputs, each a
scenario the harness can grow from -- one per API family, the four ways
main drives the runtime, deadlocks resolved each way, every guard mode.
The input format is described at the top of fuzz/fuzz_runtime.c; the op
numbers are interp.c's enum, in order. Deterministic: the same files on
every run (`python3 fuzz/gen_corpus.py`)."""
import os
import sys

OPS = ["yield", "spawn", "join", "detach", "cancel", "sleep", "exit",
       "return", "mutex_lock", "mutex_trylock", "mutex_unlock", "cond_wait",
       "cond_signal", "sem_post", "sem_wait", "sem_trywait", "wg_add",
       "wg_wait", "once", "chan_send", "chan_recv", "chan_close", "select",
       "coro_create", "coro_resume", "coro_destroy", "destroy", "query"]
OP = {name: i for i, name in enumerate(OPS)}
SEP = [0xff, 0, 0]


def prog(*insns):
    """Instructions as (op name, a, b) tuples."""
    out = []
    for name, a, b in insns:
        out += [OP[name], a & 0xff, b & 0xff]
    return out


def header(drive=0, discard=0, wake=0, nfibers=1, caps=0, sems=0, opts=0):
    h0 = drive | discard << 2 | wake << 3 | (nfibers - 1) << 4
    return [h0, caps, sems, opts]


def inp(hdr, *progs):
    data = list(hdr)
    for i, p in enumerate(progs):
        if i:
            data += SEP
        data += p
    return bytes(data)


def scenarios():
    s = {}
    # fibers: spawn and join, detach, cancel, exit, errors on ids
    s["spawn-join"] = inp(header(nfibers=1),
                          prog(("spawn", 1, 0), ("spawn", 1, 0),
                               ("join", 1, 0), ("join", 2, 0),
                               ("join", 1, 0)),
                          prog(("yield", 0, 0), ("query", 0, 0)))
    s["join-self-and-bogus"] = inp(header(nfibers=2),
                                   prog(("join", 2, 0), ("join", 3, 0),
                                        ("join", 0, 1), ("join", 1, 2)),
                                   prog(("sleep", 0, 3)))
    s["join-deadlines"] = inp(header(nfibers=2),
                              prog(("join", 1, 2), ("join", 1, 3),
                                   ("join", 1, 1)),
                              prog(("sleep", 0, 5), ("yield", 0, 0)))
    s["detach"] = inp(header(nfibers=3),
                      prog(("detach", 1, 0), ("detach", 1, 1),
                           ("join", 1, 0), ("detach", 3, 0)),
                      prog(("yield", 0, 0)), prog(("exit", 0, 0)))
    s["spawn-detached"] = inp(header(nfibers=1),
                              prog(("spawn", 1, 3), ("spawn", 1, 7),
                                   ("yield", 0, 0), ("join", 1, 0),
                                   ("spawn", 0, 0xe0), ("spawn", 0, 0xe1)),
                              prog(("sleep", 0, 1)))
    s["cancel"] = inp(header(nfibers=3),
                      prog(("cancel", 1, 0), ("cancel", 2, 1),
                           ("cancel", 0, 0), ("query", 0, 0),
                           ("sleep", 0, 0), ("join", 1, 0)),
                      prog(("sleep", 0, 7), ("sem_wait", 0, 0)),
                      prog(("mutex_lock", 0, 0), ("yield", 0, 0)))
    s["exit-holding"] = inp(header(nfibers=2),
                            prog(("mutex_lock", 0, 0), ("exit", 0, 0)),
                            prog(("mutex_lock", 0, 0), ("mutex_unlock", 0, 0)))
    s["sleeps"] = inp(header(nfibers=3),
                      prog(("sleep", 0, 7), ("sleep", 1, 0), ("sleep", 2, 0),
                           ("sleep", 3, 4)))
    # mutex and condition variable
    s["mutex-contention"] = inp(header(nfibers=4),
                                prog(("mutex_lock", 0, 0), ("yield", 0, 0),
                                     ("mutex_trylock", 0, 0),
                                     ("mutex_unlock", 0, 0),
                                     ("mutex_unlock", 0, 0),
                                     ("mutex_lock", 1, 3),
                                     ("mutex_unlock", 1, 0)))
    s["mutex-relock"] = inp(header(nfibers=1),
                            prog(("mutex_lock", 0, 0), ("mutex_lock", 0, 0),
                                 ("mutex_trylock", 0, 0),
                                 ("mutex_unlock", 0, 0)))
    s["cond"] = inp(header(nfibers=3),
                    prog(("mutex_lock", 0, 0), ("cond_wait", 0, 0),
                         ("mutex_unlock", 0, 0)),
                    prog(("yield", 0, 0), ("mutex_lock", 0, 0),
                         ("cond_signal", 0, 0), ("cond_signal", 2, 0),
                         ("mutex_unlock", 0, 0)),
                    prog(("cond_wait", 0, 0), ("mutex_lock", 0, 0),
                         ("cond_wait", 0, 3), ("mutex_unlock", 0, 0)))
    # semaphore, wait group, once
    s["sem"] = inp(header(nfibers=3, sems=0b0100),
                   prog(("sem_wait", 0, 0), ("sem_trywait", 1, 0),
                        ("sem_wait", 1, 3)),
                   prog(("sem_post", 0, 0), ("sem_post", 0, 0),
                        ("sem_trywait", 0, 0)))
    s["sem-overflow"] = inp(header(nfibers=1, sems=0b11),
                            prog(("sem_post", 0, 0), ("sem_post", 0, 0),
                                 ("sem_trywait", 0, 0)))
    s["wg"] = inp(header(nfibers=3),
                  prog(("wg_add", 0, 0), ("wg_add", 0, 0), ("wg_wait", 0, 0)),
                  prog(("yield", 0, 0), ("wg_add", 2, 1), ("wg_add", 2, 0),
                       ("wg_add", 6, 0), ("wg_add", 12, 0),
                       ("wg_add", 14, 0)))
    s["once"] = inp(header(nfibers=3),
                    prog(("once", 0, 0x10), ("once", 1, 0x20)),
                    prog(("once", 0, 0)), prog(("once", 0, 0xc0)))
    s["destroy-init"] = inp(header(nfibers=2),
                            prog(("destroy", 0, 0), ("mutex_lock", 0, 0),
                                 ("destroy", 0, 0), ("destroy", 1, 0),
                                 ("destroy", 2, 1), ("destroy", 2, 2),
                                 ("destroy", 3, 0), ("destroy", 3, 0),
                                 ("destroy", 9, 0)),
                            prog(("sem_wait", 0, 0), ("cond_signal", 0, 0)))
    # channels and select
    s["chan-unbuffered"] = inp(header(nfibers=2, caps=0),
                               prog(("chan_send", 0, 0), ("chan_send", 0, 0),
                                    ("chan_close", 0, 0)),
                               prog(("chan_recv", 0, 0), ("chan_recv", 0, 3),
                                    ("chan_recv", 0, 0)))
    s["chan-buffered"] = inp(header(nfibers=2, caps=0b111111),
                             prog(("chan_send", 1, 0), ("chan_send", 1, 0),
                                  ("chan_send", 1, 0), ("chan_send", 1, 2),
                                  ("chan_close", 1, 0), ("chan_close", 1, 0)),
                             prog(("yield", 0, 0), ("chan_recv", 1, 0),
                                  ("chan_recv", 1, 0), ("chan_recv", 1, 0)))
    s["chan-destroy"] = inp(header(nfibers=2, caps=0b000110),
                            prog(("chan_send", 1, 0), ("chan_close", 1, 2),
                                 ("chan_close", 1, 2), ("chan_send", 1, 0)),
                            prog(("chan_recv", 1, 3)))
    s["select"] = inp(header(nfibers=3, caps=0b000100),
                      prog(("select", 0x01, 0b0001), ("select", 0x02, 0b0100)),
                      prog(("select", 0x12, 0b0010), ("select", 0x03, 0)),
                      prog(("chan_send", 0, 0), ("chan_recv", 1, 0)))
    s["select-many"] = inp(header(nfibers=2),
                           prog(("select", 0x43, 0b01000100),
                                ("select", 0x4f, 0x11)),
                           prog(("select", 0x43, 0b00010001)))
    s["select-errors"] = inp(header(nfibers=1),
                             prog(("select", 0x80 | 0x03, 0b1010),
                                  ("select", 0x00, 0b11),
                                  ("chan_close", 0, 2),
                                  ("select", 0x00, 0b00)))
    # coroutines
    s["coro"] = inp(header(nfibers=2),
                    prog(("coro_create", 0, 0b001100), ("coro_resume", 0, 0),
                         ("coro_resume", 0, 0), ("coro_resume", 0, 0),
                         ("coro_resume", 0, 0), ("coro_destroy", 0, 0)),
                    prog(("coro_resume", 0, 0), ("coro_create", 1, 0x38),
                         ("coro_resume", 1, 0)))
    s["coro-nested"] = inp(header(nfibers=1),
                           prog(("coro_create", 0, 0x24),
                                ("coro_create", 1, 0x34),
                                ("coro_create", 2, 0x14),
                                ("coro_resume", 0, 0), ("coro_resume", 1, 0),
                                ("coro_create", 0, 0xe0),
                                ("coro_destroy", 2, 0)))
    # how main drives it, and deadlocks resolved each way
    dead = [prog(("sem_wait", 0, 0), ("chan_recv", 0, 0)),
            prog(("mutex_lock", 0, 0), ("join", 0, 0), ("wg_add", 0, 0),
                 ("wg_wait", 0, 0))]
    for drive in range(4):
        for discard in range(2):
            for wake in range(2):
                name = "deadlock-d%d%s%s" % (drive, "-discard" * discard,
                                             "-wake" * wake)
                s[name] = inp(header(drive, discard, wake, nfibers=3), *dead)
    mixed = prog(("spawn", 1, 0), ("mutex_lock", 0, 0), ("sleep", 0, 2),
                 ("mutex_unlock", 0, 0), ("chan_send", 0, 3),
                 ("join", 1, 0))
    for drive in range(4):
        s["drive-%d" % drive] = inp(header(drive, nfibers=2, caps=1),
                                    mixed, prog(("chan_recv", 0, 0)))
    for opts in (1, 2, 4, 8):
        s["opts-%d" % opts] = inp(header(nfibers=2, opts=opts), mixed,
                                  prog(("coro_create", 0, 0),
                                       ("coro_resume", 0, 0)))
    # The seeded mode (byte 3 bit 4) over every scenario above: the same
    # programs in the order the seed (bytes 0-2) chooses.
    for name, data in list(s.items()):
        d = bytearray(data)
        d[3] |= 16
        s["seeded-%s" % name] = bytes(d)
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(scenarios().items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("fuzz/gen_corpus.py: %d inputs in %s" % (len(scenarios()), out))


if __name__ == "__main__":
    main()
