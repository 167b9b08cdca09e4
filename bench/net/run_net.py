#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/net/run_net.py -- the network examples against real peers, driven
by real clients, on loopback only (`make bench-net`; docs/performance-net.md).

Each of our servers runs twice, on each I/O back end: impl "fibers-epoll"
(FIBERS_IO=epoll) and "fibers-io_uring" (FIBERS_IO=io_uring). The server
says which one it runs in its "listening on 127.0.0.1:PORT (io: BACKEND)"
line; a server that runs another than asked (io_uring refused: it falls
back to epoll) is reported MISSING with what it said, never measured
under the wrong name.

  kv     examples/kv_server vs redis-server (--save '' --appendonly no,
         --io-threads 1): redis-benchmark -t <test> for ping_inline,
         ping_mbulk, set, get; unpipelined and -P 16; -c 50 -r 100000
  http   examples/http_server vs nginx (worker_processes 1, `return 200`
         and a 4 KiB file with sendfile) and Go net/http (GOMAXPROCS=1):
         wrk -t1 -c64 -d<duration>s on / and /file
  echo   examples/echo_server vs a Go net echo server (GOMAXPROCS=1) and a
         plain C epoll loop (bench/net/epoll_echo.c): ping-pong of 512 B
         messages on 100 and 1000 connections, driven by
         bench/net/epoll_client.c (a plain epoll loop, independent of the
         library; --echo-client fibers: examples/echo_client)
  idle   10,000 idle keep-alive connections to each echo server (fewer if
         the descriptor limit is lower: said in the table): RSS per
         connection

Every server is pinned to CPU 0 and every client to CPU 1 (taskset). Each
server is started afresh for each run and stopped after it; the
implementations are interleaved run by run (the starting one rotates), 5
runs each by default. Per run: throughput (requests or messages per second,
as the client reports it) and efficiency: requests per server CPU-second,
from utime+stime in /proc/PID/stat of the server and its children over the
client's run. The client's own CPU use is shown too, and which side limits
("client": the client at >= 95% of its CPU and the server not; then the
throughput ratio only says "about the same"); the headline table compares
in req/s only where every row compared is server-bound, else in requests
per server CPU-second). Prints the table, the headline
ratios and the idle table; appends one JSON object per (bench, impl,
measure) to --results (build/bench/results.jsonl):

  {"bench": "net_kv_set_P1", "impl": "fibers-io_uring", "median": X,
   "min": X, "max": X, "unit": "req/s", "runs": R, "limited_by": ..., ...}

A peer or client that is not installed is reported MISSING (null figures,
runs 0), never silently left out. Installs nothing (`make bench-deps`).
Python 3 standard library only.
"""
import argparse
import json
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, CLIENT_CPU = "0", "1"
OURS = (("fibers-epoll", "epoll"), ("fibers-io_uring", "io_uring"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree_cpu(pid):
    """utime+stime (seconds) of pid and its descendants, all threads."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
            except OSError:
                continue
            f = s[s.rindex(")") + 2:].split()
            stats[int(d)] = (int(f[1]), int(f[11]) + int(f[12]))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo += [c for c, (pp, _) in stats.items() if pp == p]
    return total / TICK


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server:
    """A server process pinned to CPU 0; ready when its port accepts.
    backend: the I/O back end one of our examples must say it runs in its
    "listening on 127.0.0.1:PORT (io: BACKEND)" line (None: a peer)."""

    def __init__(self, argv, port, env=None, cwd=None, backend=None):
        self.port = port
        self.p = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv,
                                  stdout=subprocess.PIPE if backend
                                  else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env, cwd=cwd)
        deadline = time.time() + 10
        if backend:
            r, _, _ = select.select([self.p.stdout], [], [], 10)
            line = self.p.stdout.readline().decode() if r else ""
            m = re.match(r"listening on 127\.0\.0\.1:(\d+) \(io: (\S+)\)$",
                         line.strip())
            if not m or m.group(2) != backend:
                self.stop()
                raise RuntimeError("%s: asked for %s, says %r" % (
                    os.path.basename(argv[0]), backend, line.strip()))
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("%s exited: %s" % (
                    argv[0], self.p.stderr.read().decode()[-300:]))
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("%s did not listen on %d" % (argv[0], port))

    def cpu(self):
        return tree_cpu(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def run_client(argv, timeout):
    """Run a client pinned to CPU 1: (stdout, wall seconds, CPU seconds)."""
    t0 = time.time()
    p = subprocess.Popen(["taskset", "-c", CLIENT_CPU] + argv,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("%s ran over %d s" % (argv[0], timeout))
    wall = time.time() - t0
    # the finished child's CPU: taken from RUSAGE_CHILDREN's growth
    return out, wall, p.returncode


class Cell:
    def __init__(self):
        self.rate, self.eff, self.scpu, self.ccpu = [], [], [], []
        self.missing = None
        self.note = ""


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(cell, srv, argv, parse, timeout):
    c0, s0 = children_cpu(), srv.cpu()
    out, wall, rc = run_client(argv, timeout)
    s1, c1 = srv.cpu(), children_cpu()
    rate, n = parse(out)
    if rc != 0 or not rate:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], rc, out[-300:]))
    scpu = s1 - s0
    cell.rate.append(rate)
    cell.eff.append(n / scpu if scpu > 0 else float("nan"))
    cell.scpu.append(scpu / wall)
    cell.ccpu.append((c1 - c0) / wall)


# ------------------------------------------------------------ the servers

def make_servers(a, tmp):
    ex = os.path.join(a.build_dir, "examples")
    go = build_go(a, tmp)
    user = pwd.getpwuid(os.getuid()).pw_name

    def ours(backend, name, *extra):
        env = dict(os.environ, FIBERS_IO=backend)
        return lambda port: Server([os.path.join(ex, name), str(port)] +
                                   list(extra), port, env=env, backend=backend)

    def redis(port):
        return Server(["redis-server", "--port", str(port), "--bind",
                       "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--io-threads", "1", "--daemonize", "no",
                       "--protected-mode", "no", "--dir", tmp,
                       "--logfile", os.path.join(tmp, "redis.log")], port)

    def nginx(port):
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""user %(user)s;
worker_processes 1;
daemon off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(tmp)s/body;
  proxy_temp_path %(tmp)s/proxy;
  fastcgi_temp_path %(tmp)s/fastcgi;
  uwsgi_temp_path %(tmp)s/uwsgi;
  scgi_temp_path %(tmp)s/scgi;
  keepalive_requests 100000000;
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:%(port)d;
    location = / { default_type text/plain; return 200 "Hello, World!"; }
    location = /file { default_type application/octet-stream;
                       alias %(tmp)s/file.bin; }
  }
}
""" % {"user": user, "tmp": tmp, "port": port})
        return Server([shutil.which("nginx") or "nginx", "-p", tmp, "-c", conf,
                       "-e", os.path.join(tmp, "nginx-error.log")], port)

    goenv = dict(os.environ, GOMAXPROCS="1")

    def gosrv(mode, *extra):
        return lambda port: Server([go, mode, str(port)] + list(extra), port,
                                   env=goenv)

    epoll = os.path.join(a.build_dir, "bench", "epoll_echo")
    file_bin = os.path.join(tmp, "file.bin")
    need = {"redis": "redis-server", "nginx": "nginx"}
    servers = {
        "kv": {"redis": redis},
        "http": {"nginx": nginx, "go": gosrv("http", file_bin)},
        "echo": {"go": gosrv("echo"),
                 "epoll": lambda port: Server([epoll, str(port)], port)},
    }
    args = {"kv": ("kv_server",), "http": ("http_server", file_bin),
            "echo": ("echo_server",)}
    for g in servers:  # ours first, on each back end
        servers[g] = dict([(impl, ours(b, *args[g])) for impl, b in OURS] +
                          list(servers[g].items()))
    missing = {}
    for group in servers.values():
        for impl in group:
            if impl in need and not shutil.which(need[impl]):
                missing[impl] = "%s not installed (make bench-deps)" % need[impl]
            if impl == "go" and not go:
                missing[impl] = "go not installed or go build failed " \
                                "(make bench-deps)"
    return servers, missing


def build_go(a, tmp):
    go = shutil.which("go")
    if not go:
        return None
    out = os.path.join(os.path.abspath(a.build_dir), "netpeer")
    env = dict(os.environ, GO111MODULE="off")
    env.setdefault("GOCACHE", os.path.join(os.path.abspath(a.build_dir),
                                           "go-cache"))
    env.setdefault("GOPATH", os.path.join(os.path.abspath(a.build_dir),
                                          "go-path"))
    r = subprocess.run([go, "build", "-o", out,
                        os.path.join(ROOT, "bench", "net", "go", "main.go")],
                       env=env)
    return out if r.returncode == 0 else None


# ------------------------------------------------------------ the benches

def redis_parse(out):
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) > 1 and f[0] != "test":
            try:
                return float(f[1]), None
            except ValueError:
                pass
    return None, None


def wrk_parse(out):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"(Non-2xx[^\n]*|Socket errors[^\n]*)", out)
    if not m or bad:
        return None, None
    return float(m.group(1)), int(n.group(1))


def echo_parse(out):
    m = re.search(r"RESULT conns=\d+ msgs=(\d+) .* rate=([\d.]+)", out)
    return (float(m.group(2)), int(m.group(1))) if m else (None, None)


def benches(a, ex):
    """(group, bench name, client argv(port), parser, n of requests or None)"""
    rb = shutil.which("redis-benchmark")
    wrk = shutil.which("wrk")
    out = []
    for p, n in (("1", a.kv_n), ("16", a.kv_n * 5)):
        for t in ("ping_inline", "ping_mbulk", "set", "get"):
            out.append(("kv", "net_kv_%s_P%s" % (t, p),
                        (lambda port, t=t, p=p, n=n:
                         [rb, "-p", str(port), "-t", t, "-n", str(n), "-c",
                          "50", "-r", "100000", "-P", p, "--csv"]),
                        redis_parse, n, None if rb else "redis-benchmark "
                        "not installed (redis-tools)"))
    for path, name in (("/", "hello"), ("/file", "file_4k")):
        out.append(("http", "net_http_" + name,
                    (lambda port, path=path:
                     [wrk, "-t1", "-c64", "-d%ds" % a.duration,
                      "http://127.0.0.1:%d%s" % (port, path)]),
                    wrk_parse, None, None if wrk else "wrk not installed"))
    client = (os.path.join(a.build_dir, "bench", "epoll_client")
              if a.echo_client == "epoll" else os.path.join(ex, "echo_client"))
    for conns in (100, 1000):
        out.append(("echo", "net_echo_pingpong_512B_c%d" % conns,
                    (lambda port, conns=conns:
                     [client, "-p", str(port), "-c",
                      str(conns), "-s", "512", "-d", str(a.duration), "-t",
                      str(a.duration + 30)]),
                    echo_parse, None, None))
    return out


def run_group(group, impls, blist, cells, a):
    for r in range(a.runs + 1):  # run 0: the warm-up, discarded
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl, start in order:
            port = free_port()
            try:
                srv = start(port)
            except RuntimeError as e:
                for _, name, *_ in blist:
                    cells[(name, impl)].missing = str(e)
                continue
            try:
                for _, name, argv, parse, n, miss in blist:
                    cell = cells[(name, impl)]
                    if miss or cell.missing:
                        cell.missing = cell.missing or miss
                        continue
                    tmp = Cell()
                    try:
                        measure(tmp, srv, argv(port),
                                (lambda out, parse=parse, n=n:
                                 (parse(out)[0], n or parse(out)[1])),
                                a.duration * 4 + 120)
                    except RuntimeError as e:
                        cell.note = str(e)[:200]
                        continue
                    if r > 0:
                        for k in ("rate", "eff", "scpu", "ccpu"):
                            getattr(cell, k).extend(getattr(tmp, k))
                    print("  %-30s %-15s run %d: %10.0f /s  %10.0f /cpu-s  "
                          "server cpu %3.0f%%  client cpu %3.0f%%%s" % (
                              name, impl, r, tmp.rate[0], tmp.eff[0],
                              100 * tmp.scpu[0], 100 * tmp.ccpu[0],
                              "  (warm-up)" if r == 0 else ""), flush=True)
            finally:
                srv.stop()


def idle_rss(impls, cells, a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        hard = soft
    n = min(a.idle, hard - 200)
    name = "net_idle_rss_per_conn"
    for r in range(a.idle_runs):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl, start in order:
            cell = cells[(name, impl)]
            if cell.missing:
                continue
            port = free_port()
            srv = start(port)
            socks = []
            try:
                time.sleep(0.2)
                r0 = rss_bytes(srv.p.pid)
                for i in range(n):
                    s = socket.create_connection(("127.0.0.1", port), 10)
                    s.sendall(b"x")  # each handler runs and reads once
                    if s.recv(1) != b"x":
                        raise RuntimeError("no echo")
                    socks.append(s)
                time.sleep(0.5)
                r1 = rss_bytes(srv.p.pid)
                cell.rate.append((r1 - r0) / n)
                cell.note = "%d connections" % n + (
                    " (descriptor limit %d: scaled down from %d)" % (hard, a.idle)
                    if n < a.idle else "")
                print("  %-30s %-15s run %d: %8.0f B/conn (RSS %d -> %d KiB)" % (
                    name, impl, r, (r1 - r0) / n, r0 >> 10, r1 >> 10), flush=True)
            finally:
                for s in socks:
                    s.close()
                srv.stop()
    return n


def stats(v):
    return (statistics.median(v), min(v), max(v)) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build/bench-net")
    ap.add_argument("--results", default="build/bench/results.jsonl")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5,
                    help="seconds per wrk / echo_client run")
    ap.add_argument("--kv-n", type=int, default=200000,
                    help="requests per redis-benchmark test unpipelined "
                    "(5x that with -P 16)")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--idle-runs", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["kv", "http", "echo", "idle"])
    ap.add_argument("--echo-client", choices=("epoll", "fibers"),
                    default="epoll", help="the echo load generator: "
                    "bench/net/epoll_client.c (default: a plain epoll loop, "
                    "independent of the library) or examples/echo_client")
    a = ap.parse_args()
    for t in ("taskset",):
        if not shutil.which(t):
            sys.exit("run_net.py: %s not found (util-linux)" % t)
    if (os.cpu_count() or 1) < 2:
        sys.exit("run_net.py: needs 2 CPUs (server on 0, client on 1)")
    ex = os.path.join(a.build_dir, "examples")
    tmp = tempfile.mkdtemp(prefix="fib-bench-net-")
    with open(os.path.join(tmp, "file.bin"), "wb") as f:  # the 4 KiB file
        f.write(bytes(b"abcdefghijklmnopqrstuvwxyz"[(i // 64 + i) % 26]
                      if i % 64 != 63 else 10 for i in range(4096)))
    os.chmod(tmp, 0o755)
    servers, missing = make_servers(a, tmp)
    blist = benches(a, ex)
    cells, order = {}, []
    for group, name, *_ in blist:
        for impl in servers[group]:
            cells[(name, impl)] = Cell()
            cells[(name, impl)].missing = missing.get(impl)
            order.append((name, impl))
    t0 = time.time()
    try:
        for group in ("kv", "http", "echo"):
            if group in a.only:
                print("== %s" % group, flush=True)
                impls = list(servers[group].items())
                run_group(group, impls, [b for b in blist if b[0] == group],
                          cells, a)
        if "idle" in a.only:
            print("== idle", flush=True)
            impls = list(servers["echo"].items())
            for impl, _ in impls:
                cells[("net_idle_rss_per_conn", impl)] = Cell()
                cells[("net_idle_rss_per_conn", impl)].missing = missing.get(impl)
                order.append(("net_idle_rss_per_conn", impl))
            idle_rss(impls, cells, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(cells, order, a, time.time() - t0)


LIMIT = 0.95  # a side at >= 95% of its CPU is what limits the throughput


def limit(c):
    """Which side limits a cell's throughput: "client", "server", or "-"
    (neither is at 95% of its CPU: the ping-pong's latency)."""
    if not c.scpu:
        return ""
    sc, cc = statistics.median(c.scpu), statistics.median(c.ccpu)
    if cc >= LIMIT and sc < LIMIT:
        return "client"
    if sc >= LIMIT:
        return "server" if cc < LIMIT else "both"
    return "-"


def ratio(mine, other, k):
    m, o = stats(getattr(mine, k)), stats(getattr(other, k))
    return m[0] / o[0] if m and o and o[0] else None


def fmt(x):
    return "%.2f" % x if x is not None else ""


def report(cells, order, a, secs):
    w = sys.stdout.write
    w("\nnetwork benchmarks: server on CPU %s, client on CPU %s, loopback; "
      "%d runs each, interleaved, median [min-max]; echo client: %s; %.0f s\n\n"
      % (SERVER_CPU, CLIENT_CPU, a.runs, a.echo_client + "_client"
         if a.echo_client == "epoll" else "echo_client", secs))
    w("| bench | impl | req/s | req per server CPU-s | server CPU | client CPU "
      "| limited by | epoll/this req/s | epoll/this per CPU-s "
      "| io_uring/this req/s | io_uring/this per CPU-s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n")
    recs, heads = [], []
    for name, impl in order:
        c = cells[(name, impl)]
        if name == "net_idle_rss_per_conn":
            continue
        s, e = stats(c.rate), stats(c.eff)
        ep, ur = cells.get((name, "fibers-epoll")), cells.get((name, "fibers-io_uring"))
        rs = ["", "", "", ""]
        if impl != "fibers-epoll" and ep:
            rs[0], rs[1] = fmt(ratio(ep, c, "rate")), fmt(ratio(ep, c, "eff"))
        if not impl.startswith("fibers") and ur:
            rs[2], rs[3] = fmt(ratio(ur, c, "rate")), fmt(ratio(ur, c, "eff"))
        if not s:
            w("| %s | %s | MISSING: %s |  |  |  |  |  |  |  |  |\n" % (
                name, impl, c.missing or c.note or "no run succeeded"))
        else:
            w("| %s | %s | %.0f [%.0f-%.0f] | %.0f [%.0f-%.0f] | %.0f%% | %.0f%% "
              "| %s | %s |\n" % (name, impl, s[0], s[1], s[2], e[0], e[1], e[2],
                                 100 * statistics.median(c.scpu),
                                 100 * statistics.median(c.ccpu), limit(c),
                                 " | ".join(rs)))
        if s and not impl.startswith("fibers"):
            lims = {limit(x) for x in (c, ep, ur) if x and x.rate}
            k = "rate" if lims == {"server"} else "eff"
            heads.append((name, impl, k,
                          ratio(ep, c, k) if ep and ep.rate else None,
                          ratio(ur, c, k) if ur and ur.rate else None,
                          "/".join("%s %s" % (i.split("-")[-1] if i.startswith(
                              "fibers") else i, limit(x)) for i, x in (
                              ("fibers-epoll", ep), ("fibers-io_uring", ur),
                              (impl, c)) if x and x.rate)))
        for meas, vals, unit in (("", c.rate, "req/s"),
                                 ("_per_cpu_s", c.eff, "req/cpu-s")):
            st = stats(vals)
            recs.append({"bench": name + meas, "impl": impl,
                         "median": st[0] if st else None,
                         "min": st[1] if st else None,
                         "max": st[2] if st else None, "unit": unit,
                         "runs": len(vals), "n": None,
                         "server_cpu": statistics.median(c.scpu) if c.scpu else None,
                         "client_cpu": statistics.median(c.ccpu) if c.ccpu else None,
                         "limited_by": limit(c),
                         "client": (a.echo_client + "_client" if a.echo_client ==
                                    "epoll" else "echo_client")
                         if name.startswith("net_echo") else None,
                         "note": c.missing or c.note or ""})
    if heads:
        w("\nheadline: ours/peer in req/s where every row compared is "
          "server-bound (server at >= 95% of its CPU), else in requests per "
          "server CPU-second (a client at >= 95%, or neither side at 95%: "
          "latency, or CPUs shared with other work)\n\n| bench | peer | measure | fibers-epoll/peer "
          "| fibers-io_uring/peer | limited by (epoll / io_uring / peer) |\n"
          "|---|---|---|---|---|---|\n")
        for name, impl, k, r1, r2, lims in heads:
            w("| %s | %s | %s | %s | %s | %s |\n" % (
                name, impl, "per server CPU-s" if k == "eff" else "req/s",
                fmt(r1), fmt(r2), lims))
    idle = [(i, cells[(n, i)]) for n, i in order if n == "net_idle_rss_per_conn"]
    if idle:
        w("\n| idle keep-alive connections | impl | RSS bytes per connection "
          "| epoll/this | io_uring/this |\n|---|---|---|---|---|\n")
        ep = cells[("net_idle_rss_per_conn", "fibers-epoll")]
        ur = cells[("net_idle_rss_per_conn", "fibers-io_uring")]
        for impl, c in idle:
            s = stats(c.rate)
            if not s:
                w("| | %s | MISSING: %s | | |\n" % (impl, c.missing or c.note))
            else:
                w("| %s | %s | %.0f [%.0f-%.0f] | %s | %s |\n" % (
                    c.note, impl, s[0], s[1], s[2],
                    fmt(ratio(ep, c, "rate")) if impl != "fibers-epoll" else "",
                    fmt(ratio(ur, c, "rate")) if not impl.startswith("fibers")
                    else ""))
            recs.append({"bench": "net_idle_rss_per_conn", "impl": impl,
                         "median": s[0] if s else None,
                         "min": s[1] if s else None, "max": s[2] if s else None,
                         "unit": "bytes", "runs": len(c.rate), "n": None,
                         "note": c.missing or c.note})
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    with open(a.results, "a") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    w("\nappended %d rows to %s\n" % (len(recs), a.results))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(1))
    main()
