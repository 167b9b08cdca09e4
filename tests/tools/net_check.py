#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""net_check.py CHECK SERVER [CLIENT] -- drive a network example on a free
loopback port and check its answers byte for byte, including bad input
(garbage, an oversized request, a client that stops reading) while another
connection keeps working. Every check is bounded (an alarm fails the test
after LIMIT seconds) and the server is killed at the end.

  echo        echo_server, driven by echo_client (CLIENT) and raw sockets
  kv          kv_server over raw sockets (RESP and inline, pipelined)
  kv-redis    kv_server driven by redis-cli and redis-benchmark
  http        http_server over raw sockets
  http-curl   http_server driven by curl
  http-wrk    http_server driven by wrk
  tls         tls_echo (TLS, OpenSSL) with a throwaway self-signed
              certificate: its own client fibers, openssl s_client and
              Python's ssl, plus garbage, a half handshake, a silent client

A real client that is not installed (for tls: the openssl command, which
also makes the certificate): prints "SKIP: ..." and exits 77
(CTest: skipped). Python 3 standard library only.
"""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LIMIT = 60
SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)
    return cond


def skip_unless(*tools):
    for t, pkg in tools:
        if not shutil.which(t):
            print("SKIP: %s not found: install the package %s" % (t, pkg))
            sys.exit(SKIP)


class Server:
    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE)
        r, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline().decode() if r else ""
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) \(io: (epoll|io_uring)\)$", line.strip())
        if not m:
            self.stop()
            raise SystemExit("FAIL: the server did not say where it listens: %r"
                             % line)
        self.port = int(m.group(1))
        want = os.environ.get("FIBERS_IO")
        if want in ("epoll", "io_uring") and m.group(2) != want:
            self.stop()
            raise SystemExit("FAIL: FIBERS_IO=%s but the server runs %s"
                             % (want, m.group(2)))

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            break
        buf += b
    return buf


def recv_all(s):
    """Everything until the server closes (or the 10 s socket timeout)."""
    buf = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return buf, True
            buf += b
    except socket.timeout:
        return buf, False


def exchange(s, send, want, what):
    s.sendall(send)
    got = recv_exact(s, len(want))
    return check(got == want, "%s: want %r, got %r" % (what, want, got))


def closed_after(s, send, want, what):
    s.sendall(send)
    got, closed = recv_all(s)
    check(got == want, "%s: want %r, got %r" % (what, want, got))
    check(closed, "%s: the server did not close the connection" % what)


def stall(port, payload, total):
    """A client that sends `total` bytes of requests and never reads: stops
    when the kernel's buffers (both ways) are full."""
    s = conn(port)
    s.setblocking(False)
    sent = 0
    deadline = time.time() + 5
    while sent < total and time.time() < deadline:
        try:
            sent += s.send(payload)
        except BlockingIOError:
            time.sleep(0.01)
            try:
                sent += s.send(payload)
            except BlockingIOError:
                break
    return s, sent


# ------------------------------------------------------------------ echo

def check_echo(server, client):
    srv = Server([server, "0"])
    try:
        port = srv.port
        stuck, sent = stall(port, os.urandom(65536), 64 << 20)
        check(sent > 0, "echo: the stalled client could send nothing")
        g = conn(port)
        garbage = bytes(range(256)) * 16 + b"\r\n\x00\xff" * 100
        exchange(g, garbage, garbage, "echo: binary bytes")
        r = subprocess.run([client, "-p", str(port), "-c", "1000", "-m", "20",
                            "-s", "100", "-t", "30"],
                           stdout=subprocess.PIPE, text=True, timeout=40)
        print(r.stdout.strip())
        check(r.returncode == 0 and r.stdout.startswith(
            "ok: 1000 connections, 20000 messages of 100 bytes"),
            "echo_client: %d: %s" % (r.returncode, r.stdout.strip()))
        exchange(g, b"still here", b"still here", "echo: after the load")
        stuck.close()
        g.close()
        check(srv.alive(), "echo: the server died")
    finally:
        srv.stop()


# -------------------------------------------------------------------- kv

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def check_kv(server):
    srv = Server([server, "0", "4096"])
    try:
        port = srv.port
        a = conn(port)
        exchange(a, b"PING\r\n", b"+PONG\r\n", "kv: inline PING")
        exchange(a, b"set  k1   v1\r\nget k1\r\n", b"+OK\r\n$2\r\nv1\r\n",
                 "kv: inline SET/GET")
        # one write, all the answers
        pipe = [
            (resp("SET", "k", "v"), b"+OK\r\n"),
            (resp("GET", "k"), b"$1\r\nv\r\n"),
            (resp("INCR", "k"),
             b"-ERR value is not an integer or out of range\r\n"),
            (resp("DEL", "k", "nokey", "k1"), b":2\r\n"),
            (resp("GET", "k"), b"$-1\r\n"),
            (resp("INCR", "n"), b":1\r\n"),
            (resp("incr", "n"), b":2\r\n"),
            (resp("SET", "n", "9223372036854775807"), b"+OK\r\n"),
            (resp("INCR", "n"),
             b"-ERR increment or decrement would overflow\r\n"),
            (resp("ECHO", "a b\r\nc"), b"$6\r\na b\r\nc\r\n"),
            (resp("PING", "hi"), b"$2\r\nhi\r\n"),
            (resp("PING"), b"+PONG\r\n"),
            (resp("CONFIG", "GET", "save"), b"*0\r\n"),
            (resp("COMMAND", "DOCS"), b"*0\r\n"),
            (resp("COMMAND"), b"*0\r\n"),
            (resp("FOO", "x"), b"-ERR unknown command 'FOO'\r\n"),
            (resp("GET"),
             b"-ERR wrong number of arguments for 'get' command\r\n"),
            (resp("SET", "a", "b", "EX", "1"), b"-ERR syntax error\r\n"),
            (resp("SET", "bin", b"\r\n\x00\xff"), b"+OK\r\n"),
            (resp("GET", "bin"), b"$4\r\n\r\n\x00\xff\r\n"),
            (resp("SET", "empty", ""), b"+OK\r\n"),
            (resp("GET", "empty"), b"$0\r\n\r\n"),
        ]
        exchange(a, b"".join(p[0] for p in pipe), b"".join(p[1] for p in pipe),
                 "kv: pipelined RESP")
        # a request split across many writes
        req = resp("SET", "split", "x" * 1000)
        for i in range(0, len(req), 7):
            a.sendall(req[i:i + 7])
        check(recv_exact(a, 5) == b"+OK\r\n", "kv: a request in 7-byte pieces")

        # a client that stops reading: 64 KiB answers piling up
        exchange(a, resp("SET", "big", "y" * 3000), b"+OK\r\n", "kv: SET big")
        stuck, sent = stall(port, resp("GET", "big") * 100, 64 << 20)
        check(sent > 0, "kv: the stalled client could send nothing")
        exchange(a, resp("GET", "k1"), b"$-1\r\n",
                 "kv: another connection while one stalls")

        too_large = b"-ERR request too large (over 4096 bytes)\r\n"
        closed_after(conn(port), b"*1\r\n$100000\r\n", too_large,
                     "kv: bulk length over the limit")
        closed_after(conn(port), b"x" * 5000, too_large,
                     "kv: inline line over the limit")
        closed_after(conn(port), resp("PING") + resp("DEL", *["a"] * 600),
                     b"+PONG\r\n" + too_large,
                     "kv: a request that fills the buffer")
        proto = b"-ERR Protocol error: malformed request\r\n"
        closed_after(conn(port), b"*x\r\n", proto, "kv: bad array header")
        closed_after(conn(port), b"*1\r\n$3\r\nGETX\r\n", proto,
                     "kv: bulk without its CRLF")
        closed_after(conn(port), resp("PING") + resp("QUIT") + resp("PING"),
                     b"+PONG\r\n+OK\r\n", "kv: QUIT")
        exchange(a, b"PING\r\n", b"+PONG\r\n", "kv: the first connection still")
        stuck.close()
        a.close()
        check(srv.alive(), "kv: the server died")
    finally:
        srv.stop()


def check_kv_redis(server):
    skip_unless(("redis-cli", "redis-tools"), ("redis-benchmark", "redis-tools"))
    srv = Server([server, "0"])
    try:
        p = str(srv.port)

        def cli(*args):
            r = subprocess.run(["redis-cli", "-p", p] + list(args),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=10)
            return r.stdout

        for args, want in [
                (["PING"], "PONG\n"),
                (["SET", "greeting", "hello world"], "OK\n"),
                (["GET", "greeting"], "hello world\n"),
                (["INCR", "counter"], "1\n"),
                (["INCR", "counter"], "2\n"),
                (["DEL", "greeting", "counter", "none"], "2\n"),
                (["GET", "greeting"], "\n"),
                (["ECHO", "é\x01"], "é\x01\n"),  # raw: stdout is no tty
                (["NOSUCH"], "ERR unknown command 'NOSUCH'\n\n"),
                (["CONFIG", "GET", "save"], "\n")]:
            got = cli(*args)
            check(got == want, "redis-cli %s: want %r, got %r"
                  % (" ".join(args), want, got))
        for pipeline in ("1", "16"):
            r = subprocess.run(["redis-benchmark", "-p", p, "-t", "ping,set,get",
                                "-n", "2000", "-r", "1000", "-c", "20",
                                "-P", pipeline, "--csv"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=30)
            tests = [l.split(",")[0].strip('"') for l in r.stdout.splitlines()
                     if l.startswith('"') and not l.startswith('"test"')]
            check(r.returncode == 0 and
                  tests == ["PING_INLINE", "PING_MBULK", "SET", "GET"],
                  "redis-benchmark -P %s: %d, tests %s" % (pipeline,
                                                           r.returncode, tests))
        check(cli("GET", "key:__rand_int__") in ("\n", "xxx\n") and
              srv.alive(), "kv: after redis-benchmark")
    finally:
        srv.stop()


# ------------------------------------------------------------------ http

def mask(b):
    return re.sub(rb"Date: [^\r]*", b"Date: X", b)


def http_resp(status, ctype, body, head=False, extra=b""):
    return (b"HTTP/1.1 " + status + b"\r\nServer: fibers\r\nDate: X\r\n"
            b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n"
            % len(body) + extra + b"\r\n" + (b"" if head else body))


def recv_masked(s, want, what):
    got = b""
    deadline = time.time() + 10
    while len(mask(got)) < len(want) and time.time() < deadline:
        b = s.recv(65536)
        if not b:
            break
        got += b
    return check(mask(got) == want, "%s: want %r, got %r"
                 % (what, want[:300], mask(got)[:300]))


def with_file():
    d = tempfile.mkdtemp(prefix="fib-net-")
    body = bytes((i * 7 + 3) % 251 for i in range(4096))
    path = os.path.join(d, "file.bin")
    with open(path, "wb") as f:
        f.write(body)
    return d, path, body


def check_http(server):
    d, path, body = with_file()
    srv = Server([server, "0", path])
    try:
        port = srv.port
        hello = http_resp(b"200 OK", b"text/plain", b"Hello, World!")
        filer = http_resp(b"200 OK", b"application/octet-stream", body)
        a = conn(port)
        a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /file HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\n\r\n"
                  b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
                  b"GET / HTTP/1.1\r\n\r\n")
        recv_masked(a, hello + http_resp(b"200 OK", b"text/plain",
                                         b"Hello, World!", head=True) +
                    filer + http_resp(b"404 Not Found", b"text/plain",
                                      b"404 Not Found") +
                    http_resp(b"405 Method Not Allowed", b"text/plain",
                              b"405 Method Not Allowed",
                              extra=b"Allow: GET, HEAD\r\n") + hello,
                    "http: pipelined requests")
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(len(req)):
            a.sendall(req[i:i + 1])
        recv_masked(a, hello, "http: a request byte by byte")

        stuck, sent = stall(port, b"GET /file HTTP/1.1\r\n\r\n" * 100, 64 << 20)
        check(sent > 0, "http: the stalled client could send nothing")
        a.sendall(req)
        recv_masked(a, hello, "http: another connection while one stalls")

        def closing(status, what, send):
            s = conn(port)
            s.sendall(send)
            got, closed = recv_all(s)
            want = http_resp(status, b"text/plain", status,
                             extra=b"Connection: close\r\n")
            check(mask(got) == want, "%s: want %r, got %r"
                  % (what, want, mask(got)))
            check(closed, "%s: not closed" % what)

        closing(b"400 Bad Request", "http: garbage",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        closing(b"400 Bad Request", "http: a bad request line",
                b"GET /\r\n\r\n")
        closing(b"400 Bad Request", "http: a header without a colon",
                b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        closing(b"431 Request Header Fields Too Large", "http: 10 KiB of headers",
                b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 10000 + b"\r\n\r\n")
        closing(b"413 Content Too Large", "http: a 2 MB body",
                b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
        closing(b"501 Not Implemented", "http: chunked",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        s = conn(port)
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        got, closed = recv_all(s)
        check(mask(got) == http_resp(b"200 OK", b"text/plain", b"Hello, World!",
                                     extra=b"Connection: close\r\n") and closed,
              "http: Connection: close: got %r, closed %s" % (mask(got), closed))
        s = conn(port)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        got, closed = recv_all(s)
        check(mask(got) == http_resp(b"200 OK", b"text/plain", b"Hello, World!",
                                     extra=b"Connection: close\r\n") and closed,
              "http: HTTP/1.0: got %r, closed %s" % (mask(got), closed))
        a.sendall(req)
        recv_masked(a, hello, "http: the first connection still")
        stuck.close()
        a.close()
        check(srv.alive(), "http: the server died")
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def check_http_curl(server):
    skip_unless(("curl", "curl"))
    d, path, body = with_file()
    srv = Server([server, "0", path])
    try:
        base = "http://127.0.0.1:%d" % srv.port

        def curl(*args):
            return subprocess.run(["curl", "-sS", "--max-time", "10"] +
                                  list(args), stdout=subprocess.PIPE,
                                  timeout=20).stdout

        check(curl(base + "/") == b"Hello, World!", "curl /")
        check(curl(base + "/file") == body, "curl /file")
        got = mask(curl("-i", base + "/", base + "/file"))  # one connection
        check(got == http_resp(b"200 OK", b"text/plain", b"Hello, World!") +
              http_resp(b"200 OK", b"application/octet-stream", body),
              "curl -i / /file: %r" % got[:200])
        check(curl("-o", "/dev/null", "-w", "%{http_code}", base + "/x") ==
              b"404", "curl /x: 404")
        check(curl("-I", base + "/file").startswith(b"HTTP/1.1 200 OK\r\n"),
              "curl -I /file")
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def check_http_wrk(server):
    skip_unless(("wrk", "wrk"))
    srv = Server([server, "0"])
    try:
        for path in ("/", "/file"):
            r = subprocess.run(["wrk", "-t1", "-c16", "-d1s",
                                "http://127.0.0.1:%d%s" % (srv.port, path)],
                               stdout=subprocess.PIPE, text=True, timeout=20)
            m = re.search(r"(\d+) requests in", r.stdout)
            check(r.returncode == 0 and m and int(m.group(1)) > 100 and
                  "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout,
                  "wrk %s: %s" % (path, r.stdout))
        check(srv.alive(), "http: the server died under wrk")
    finally:
        srv.stop()


# ------------------------------------------------------------------- tls

def make_cert(d):
    """A throwaway self-signed certificate for 127.0.0.1, and its key."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise SystemExit("FAIL: openssl req: %s" % r.stderr.strip())
    return cert, key


def tls_closed(s, what):
    """s (TLS or not) is closed by the server within its 10 s timeout."""
    try:
        while s.recv(65536):
            pass
        closed = True
    except socket.timeout:
        closed = False
    except (OSError, ValueError):  # an alert (ssl.SSLError), a reset
        closed = True
    check(closed, "%s: the server did not close the connection" % what)


def check_tls(server):
    skip_unless(("openssl", "openssl"))
    try:
        import ssl
    except ImportError:
        ssl = None
        print("note: Python has no ssl module: its TLS checks are left out")
    d = tempfile.mkdtemp(prefix="fib-tls-")
    cert, key = make_cert(d)
    srv = Server([server, "server", cert, key, "0"])
    procs = []
    try:
        port = srv.port
        # says nothing: the server's handshake deadline (5 s) closes it
        silent, silent_t0 = conn(port), time.time()

        if ssl:
            ctx = ssl.create_default_context(cafile=cert)

            def tls_conn():
                return ctx.wrap_socket(conn(port), server_hostname="127.0.0.1")

            a = tls_conn()  # stays open and working through everything
            exchange(a, b"first", b"first", "tls: python ssl")
            # a TLS connection whose client then writes garbage beneath TLS
            b = tls_conn()
            exchange(b, b"x" * 20000, b"x" * 20000, "tls: a 20000-byte echo")
            os.write(b.fileno(), b"this is not a TLS record\r\n" * 4)
            tls_closed(b, "tls: garbage after the handshake")
            b.close()
            # half a ClientHello, then the client goes away
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = out.read()
            h = conn(port)
            h.sendall(hello[:len(hello) // 2])
            h.close()

        # plain text instead of a handshake: that connection is closed
        g = conn(port)
        g.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" + bytes(range(256)))
        tls_closed(g, "tls: plain-text garbage")
        g.close()

        # at once: the example's own client fibers (small and multi-record
        # messages) and several openssl s_client processes
        client = [server, "client", "-p", str(port), "-C", cert, "-t", "30"]
        procs.append(subprocess.Popen(client + ["-c", "200", "-m", "20",
                                                "-s", "100"],
                                      stdout=subprocess.PIPE, text=True))
        procs.append(subprocess.Popen(client + ["-c", "10", "-m", "5",
                                                "-s", "100000"],
                                      stdout=subprocess.PIPE, text=True))
        sclients = []
        for i in range(4):
            data = os.urandom(3000) + b"\nQ\nR\nk\n" + bytes([i]) * 100
            p = subprocess.Popen(["openssl", "s_client", "-connect",
                                  "127.0.0.1:%d" % port, "-CAfile", cert,
                                  "-verify_ip", "127.0.0.1",
                                  "-verify_return_error", "-quiet",
                                  "-no_ign_eof", "-nocommands"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            p.stdin.write(data)
            p.stdin.flush()
            sclients.append((p, data))
        for i, (p, data) in enumerate(sclients):
            got = b""
            deadline = time.time() + 15
            while len(got) < len(data) and time.time() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 1)
                if r:
                    b = os.read(p.stdout.fileno(), 65536)
                    if not b:
                        break
                    got += b
            check(got == data, "tls: openssl s_client %d: %d of %d bytes "
                  "echoed%s" % (i, len(got), len(data),
                                "" if got == data[:len(got)] else ", wrong"))
            p.stdin.close()  # -no_ign_eof: s_client sends close_notify
            check(p.wait(10) == 0, "tls: openssl s_client %d exit status %s"
                  % (i, p.returncode))
        # s_client's command letter K: a TLS 1.3 KeyUpdate that asks for the
        # server's own, so the server's SSL_read has to write. Each line is
        # sent once the previous one is done (s_client takes a line as a
        # command only if it comes alone in one read of stdin).
        p = subprocess.Popen(["openssl", "s_client", "-connect",
                              "127.0.0.1:%d" % port, "-CAfile", cert,
                              "-verify_return_error", "-quiet", "-no_ign_eof"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        procs.append(p)
        outs = {p.stdout.fileno(): b"", p.stderr.fileno(): b""}

        def until(fd, want):
            deadline = time.time() + 10
            while want not in outs[fd] and time.time() < deadline:
                for f in select.select(list(outs), [], [], 1)[0]:
                    outs[f] += os.read(f, 65536)
            return want in outs[fd]

        for line, fd, want in ((b"hello\n", p.stdout.fileno(), b"hello\n"),
                               (b"K\n", p.stderr.fileno(), b"KEYUPDATE"),
                               (b"world\n", p.stdout.fileno(), b"world\n")):
            p.stdin.write(line)
            p.stdin.flush()
            if not until(fd, want):
                break
        got = outs[p.stdout.fileno()]
        check(got == b"hello\nworld\n" and b"KEYUPDATE" in
              outs[p.stderr.fileno()],
              "tls: openssl s_client with a KeyUpdate: got %r, stderr %r"
              % (got, outs[p.stderr.fileno()][-300:]))
        p.stdin.close()
        check(p.wait(10) == 0, "tls: openssl s_client (KeyUpdate) exit status %s"
              % p.returncode)
        for p, what in ((procs[0], "200 x 20 x 100 B"),
                        (procs[1], "10 x 5 x 100000 B")):
            out, _ = p.communicate(timeout=40)
            print(out.strip())
            check(p.returncode == 0 and out.startswith("ok: "),
                  "tls_echo client %s: %d: %s" % (what, p.returncode,
                                                  out.strip()))
        if ssl:
            exchange(a, b"still here", b"still here", "tls: after the load")
            a.unwrap()  # close_notify both ways
            a.close()
        tls_closed(silent, "tls: a client that never starts the handshake")
        took = time.time() - silent_t0
        check(took < 12, "tls: the silent client was closed after %.1f s" % took)
        check(srv.alive(), "tls: the server died")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        t = time.time()
        srv.stop()
        check(time.time() - t < 5, "tls: the server took %.1f s to stop"
              % (time.time() - t))
        shutil.rmtree(d, ignore_errors=True)


def main():
    checks = {"echo": check_echo, "kv": check_kv, "kv-redis": check_kv_redis,
              "http": check_http, "http-curl": check_http_curl,
              "http-wrk": check_http_wrk, "tls": check_tls}
    if len(sys.argv) < 3 or sys.argv[1] not in checks:
        sys.exit("usage: net_check.py {%s} SERVER [CLIENT]" % ",".join(checks))
    signal.signal(signal.SIGALRM, lambda *a: sys.exit(
        "FAIL: still running after %d s" % LIMIT))
    signal.alarm(LIMIT)
    checks[sys.argv[1]](*sys.argv[2:])
    if failures:
        sys.exit("FAIL: %d check(s) failed" % len(failures))
    print("ok: %s" % sys.argv[1])


if __name__ == "__main__":
    main()
