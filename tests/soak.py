#!/usr/bin/env python3
"""Soak funneld: thousands of relay connections of every kind, then check
that nothing leaked and that every byte and every connection is accounted for.

    python3 tests/soak.py [--connections N] [--concurrency C] [--max-size BYTES]
                          [--seconds S] [--seed N] [--workers W] [--keep]

What runs (all on this machine: the relay side connects to 127.0.0.1, the
backend is a Unix socket):

- funneld (the real binary, BUILD=... picks the build) with `metrics =
  unix:...` and a short header_timeout;
- a hashing backend, in its own process (this file with --serve-backend): it
  reads a 64-byte tag the client sends first ("SOAK id up down mode"), hashes
  everything after it, answers with `down` bytes of deterministic
  pseudo-random data, and ends the way the tag's mode says: shut its write
  side only after the client's EOF (cfirst), as soon as its data is out
  (bfirst), or close with unread input queued, which resets funneld's
  socket (breset).  It reports one JSON line per connection on stdout;
- C client threads, each running one planned connection after another.

The mix (seeded, so a run can be repeated):

    kind          what the client does                           funneld must log
    cfirst        stream; client's close_notify first             ok
    bfirst        stream; backend's EOF first, client goes on     ok
    slow_ok       head trickled byte by byte, then a stream       ok
    creset        stream; client RST (SO_LINGER 0) mid-stream     relay_error
    breset        stream; backend resets mid-stream               backend_error
    hsfail        garbage after the 101                           handshake_failed
    notarget      target no backend serves                        refused_404
    slow_abandon  head trickled, then abandoned                   refused_408

Sizes per direction: from 0 to --max-size, mostly small, a few large; at
least one stream (more for big runs) moves exactly --max-size each way.
The first phase of the same mix is the warm-up.

Checks (any failure: listed, exit status 1):
- every completed stream (ok kinds): SHA-256 and length of what the client
  sent equal what the backend received, and of what the backend sent equal
  what the client received; both ends saw a clean end (close_notify / EOF);
- every other connection ended the way its kind says (status read by the
  client: 101 / 404 / 408; a 408 arrives at about header_timeout);
- one log record per connection made, each with the result its kind says
  (records are matched to connections through Tailscale-Ingress-Src, which
  encodes the connection's number), with in/out = the stream's bytes;
- funneld_connections_total{result=...} equals, for every result, what was
  sent of the kinds that end that way; backend connections, handshake
  failures and byte totals agree with the records;
- funneld's open file descriptors (/proc/PID/fd) back to the count before
  the first connection; its RSS at the end within 10% of the RSS after the
  warm-up (both measured with no connection open and the spare-buffer pools
  empty: funneld_buffer_pool_bytes 0);
- funneld still running, and it exits 0 at SIGTERM.

Bounded: --connections and --seconds (no new connection is started after
--seconds; each connection has its own deadline); everything started is
stopped by PID.
"""
import argparse
import fcntl
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
import harness as h  # noqa: E402

KIB = 1 << 10
MIB = 1 << 20
TAG_LEN = 64
POOL_SIZE = 1048573             # a prime: streams do not line up with chunk sizes
CHUNK = 64 * KIB
IO_TIMEOUT = 120.0              # the backend's bound on any one socket wait
HEADER_TIMEOUT = 2              # funneld's header_timeout in the soak (seconds)
NOTARGET = "nobody.soak.invalid:443"
WRAPPED = bool(os.environ.get("FUNNELD_WRAPPER", "").strip())    # valgrind: much slower
SLACK = 10 if WRAPPED else 1

KINDS = ["cfirst", "bfirst", "slow_ok", "creset", "breset", "hsfail", "notarget", "slow_abandon"]
# Share of each kind in the mix.
MIX = {"cfirst": 34, "bfirst": 30, "slow_ok": 4, "creset": 8, "breset": 8,
       "hsfail": 6, "notarget": 5, "slow_abandon": 5}
EXPECTED_RESULT = {"cfirst": "ok", "bfirst": "ok", "slow_ok": "ok", "creset": "relay_error",
                   "breset": "backend_error", "hsfail": "handshake_failed",
                   "notarget": "refused_404", "slow_abandon": "refused_408"}
EXPECTED_STATUS = {"cfirst": 101, "bfirst": 101, "slow_ok": 101, "creset": 101, "breset": 101,
                   "hsfail": 101, "notarget": 404, "slow_abandon": 408}
STREAM_KINDS = ("cfirst", "bfirst", "slow_ok")
BACKEND_KINDS = ("cfirst", "bfirst", "slow_ok", "creset", "breset", "hsfail")


# ---------------------------------------------------------------- shared by both ends

class Pool:
    """Deterministic pseudo-random bytes: stream (ident, direction) of n bytes
    is a walk through one seeded pool from an offset both ends compute."""

    def __init__(self, seed):
        b = random.Random(seed).randbytes(POOL_SIZE)
        self.buf = memoryview(b + b[:CHUNK])

    def chunks(self, ident, direction, n, chunk=CHUNK):
        off = (ident * 7919 + direction * 104729) % POOL_SIZE
        while n > 0:
            k = min(n, chunk)
            yield self.buf[off:off + k]
            off = (off + k) % POOL_SIZE
            n -= k


def make_tag(ident, up, down, mode):
    tag = f"SOAK {ident:010d} {up:011d} {down:011d} {mode}".encode().ljust(TAG_LEN - 1) + b"\n"
    assert len(tag) == TAG_LEN
    return tag


def parse_tag(tag):
    m = re.match(rb"^SOAK (\d{10}) (\d{11}) (\d{11}) (\w+) *\n$", tag)
    if not m or len(tag) != TAG_LEN:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4).decode()


# ---------------------------------------------------------------- the backend process

def backend_main(path, seed):
    pool = Pool(seed)
    out_lock = threading.Lock()

    def report(d):
        with out_lock:
            sys.stdout.write(json.dumps(d) + "\n")
            sys.stdout.flush()

    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1024)
    report({"ready": True})
    while True:
        c, _ = srv.accept()
        threading.Thread(target=backend_serve, args=(c, pool, report), daemon=True).start()


def _errname(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, BrokenPipeError):
        return "pipe"
    return f"error:{e}"


def backend_serve(c, pool, report):
    rep = {"id": None, "mode": None, "recv": 0, "recv_sha": None, "sent": 0, "sent_sha": None,
           "end": None, "send_err": None}
    try:
        c.settimeout(IO_TIMEOUT)
        tag = b""
        while len(tag) < TAG_LEN:
            try:
                d = c.recv(TAG_LEN - len(tag))
            except OSError as e:
                rep["end"] = _errname(e)
                break
            if not d:
                rep["end"] = "eof"
                break
            tag += d
        parsed = parse_tag(tag) if len(tag) == TAG_LEN else None
        if parsed is None:
            # No (whole) tag: a failed handshake or a stream cut short.
            n = len(tag)
            while rep["end"] is None:
                try:
                    d = c.recv(1 << 18)
                except OSError as e:
                    rep["end"] = _errname(e)
                    break
                if not d:
                    rep["end"] = "eof"
                n += len(d)
            rep.update(recv=n, tagless=True)
            return
        ident, up, down, mode = parsed
        rep.update(id=ident, mode=mode)
        reader_done = threading.Event()
        w = {}

        def writer():
            hs = hashlib.sha256()
            sent = 0
            try:
                for ch in pool.chunks(ident, 1, down):
                    c.sendall(ch)
                    hs.update(ch)
                    sent += len(ch)
                if mode == "bfirst":
                    c.shutdown(socket.SHUT_WR)
                elif mode != "breset":
                    reader_done.wait(IO_TIMEOUT)
                    c.shutdown(socket.SHUT_WR)
            except OSError as e:
                w["err"] = _errname(e)
            w.update(sent=sent, sha=hs.hexdigest())

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        if mode == "breset":
            # Reset: close with input still queued (AF_UNIX then hands
            # funneld ECONNRESET, not EOF).  Wait until some is queued.
            t.join(IO_TIMEOUT)
            buf = bytearray(4)
            deadline = time.monotonic() + IO_TIMEOUT
            while time.monotonic() < deadline:
                fcntl.ioctl(c.fileno(), termios.FIONREAD, buf)
                if struct.unpack("i", buf)[0] > 0:
                    break
                select.select([c], [], [], 0.05)
            rep["end"] = "reset_sent"
        else:
            hs = hashlib.sha256()
            n = 0
            while True:
                try:
                    d = c.recv(1 << 18)
                except OSError as e:
                    rep["end"] = _errname(e)
                    break
                if not d:
                    rep["end"] = "eof"
                    break
                hs.update(d)
                n += len(d)
            rep.update(recv=n, recv_sha=hs.hexdigest())
            reader_done.set()
            t.join(IO_TIMEOUT)
        rep.update(sent=w.get("sent", 0), sent_sha=w.get("sha"), send_err=w.get("err"))
    finally:
        c.close()
        report(rep)


# ---------------------------------------------------------------- the plan

def pick_size(rng, max_size):
    r = rng.random()
    if r < 0.08:
        n = 0
    elif r < 0.50:
        n = rng.randint(1, KIB)
    elif r < 0.80:
        n = rng.randint(KIB, 64 * KIB)
    elif r < 0.95:
        n = rng.randint(64 * KIB, MIB)
    elif r < 0.995:
        n = rng.randint(MIB, 8 * MIB)
    else:
        n = rng.randint(8 * MIB, max(8 * MIB, max_size))
    return min(n, max_size)


def make_plan(n, max_size, seed):
    rng = random.Random(seed)
    kinds = [k for k in KINDS for _ in range(MIX[k])]
    plans = []
    for i in range(n):
        kind = rng.choice(kinds)
        p = {"id": i, "kind": kind, "up": 0, "down": 0, "pipelined": rng.random() < 0.8}
        if kind in ("cfirst", "bfirst", "creset"):
            p["up"] = pick_size(rng, max_size)
            p["down"] = pick_size(rng, max_size)
        elif kind == "slow_ok":
            p["up"] = rng.randint(0, 4 * KIB)
            p["down"] = rng.randint(0, 4 * KIB)
        elif kind == "breset":
            p["up"] = max(16 * KIB, min(pick_size(rng, max_size), 2 * MIB))
            p["down"] = rng.randint(0, 32 * KIB)
        if kind == "creset":
            p["up"] = max(p["up"], 1)
            p["reset_at"] = rng.randint(0, p["up"] - 1)
        if kind in ("slow_ok", "slow_abandon"):
            p["trickle"] = rng.randint(5, 40)
        if kind == "hsfail":
            p["garbage"] = rng.choice([
                b"GET / HTTP/1.1\r\nHost: node\r\n\r\n",
                b"\x00" * 64,
                bytes([rng.choice([0x00, 0x41, 0x80, 0xff])]) + rng.randbytes(rng.randint(5, 300)),
            ])
        plans.append(p)
    # A few at the maximum both ways, spread over the run (one in the warm-up
    # only when the run is short enough that it must).
    nbig = max(1, n // 1500)
    for j in range(nbig):
        i = min(n - 1, (j * 2 + 1) * n // (nbig * 2))
        plans[i].update(kind=rng.choice(["cfirst", "bfirst"]), up=max_size, down=max_size)
        plans[i].pop("reset_at", None)
        plans[i].pop("trickle", None)
        plans[i].pop("garbage", None)
    return plans


def src_for(ident):
    """Tailscale-Ingress-Src encoding the connection's number."""
    return f"198.51.{100 + ident // (250 * 60000)}.{1 + ident // 60000 % 250}:{1 + ident % 60000}"


def ident_for(src):
    m = re.match(r"^198\.51\.(\d+)\.(\d+):(\d+)$", src or "")
    if not m:
        return None
    return (int(m.group(1)) - 100) * 250 * 60000 + (int(m.group(2)) - 1) * 60000 + int(m.group(3)) - 1


# ---------------------------------------------------------------- the client

class ClientError(Exception):
    pass


def transfer(tls, chunks, policy, reset_at=None, deadline=None):
    """Move one stream over a TLSStream: send `chunks` (the tag is already in
    tls's output), hash both directions, end as `policy` says:
      cfirst  close_notify as soon as everything is sent;
      bfirst  close_notify once everything is sent and the peer's arrived;
      reset   RST (SO_LINGER 0) once reset_at data bytes are encrypted;
      wait    send everything, never close: wait for the peer to end it.
    Returns a dict: sent, sent_sha, recv, recv_sha, closed (close_notify |
    eof | reset | tls_error), send_err, reset_done."""
    sock, obj = tls.sock, tls.obj
    sock.setblocking(False)
    hs_sent, hs_recv = hashlib.sha256(), hashlib.sha256()
    sent = recvd = 0
    pending = bytearray(tls.out.read())
    cur = None
    src_done = False
    closed = None
    sent_cn = False
    transport_eof = False
    send_err = None
    while True:
        while closed is None:
            try:
                got = obj.read(1 << 17)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = "close_notify"
                break
            except ssl.SSLEOFError:
                closed = "eof"
                break
            except ssl.SSLError as e:
                closed = f"tls_error:{e.reason}"
                break
            if not got:
                # b"" is a close_notify, except on Pythons whose SSLObject.read()
                # also returns b"" for a transport EOF without one (Debian 12's
                # 3.11.2; later ones raise SSLEOFError): then the EOF is already
                # in the incoming BIO, where a close_notify comes before it.
                closed = "eof" if tls.inc.eof else "close_notify"
                break
            hs_recv.update(got)
            recvd += len(got)
        if transport_eof and closed is None:
            closed = "eof"
        while not src_done and send_err is None and len(pending) < (1 << 18):
            if policy == "reset" and sent >= reset_at:
                break
            if cur is None or not len(cur):
                cur = next(chunks, None)
                if cur is None:
                    src_done = True
                    break
            k = min(len(cur), 16384)
            if policy == "reset":
                k = min(k, reset_at - sent)
            try:
                n = obj.write(cur[:k])
            except ssl.SSLEOFError:
                # The stream was cut short (a backend reset reaches the client
                # as a FIN without close_notify): nothing more can be sent.
                send_err = "tls_eof"
                break
            hs_sent.update(cur[:n])
            sent += n
            cur = cur[n:]
            pending += tls.out.read()
        # A TLS 1.3 client is done before the server has read its Finished:
        # the server's ticket says it has, so that the reset is mid-stream.
        if policy == "reset" and sent >= reset_at and (obj.version() != "TLSv1.3" or obj.session.has_ticket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return {"sent": sent, "recv": recvd, "closed": closed, "reset_done": True,
                    "send_err": send_err}
        if src_done and not sent_cn and send_err is None and (
                policy == "cfirst" or (policy == "bfirst" and closed is not None)):
            try:
                obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
            except ssl.SSLError as e:
                send_err = f"unwrap:{e.reason}"
            sent_cn = True
            pending += tls.out.read()
        if send_err is not None:
            pending.clear()
        finished = transport_eof and not pending and (src_done or send_err is not None)
        if policy in ("cfirst", "bfirst"):
            finished = finished and (sent_cn or send_err is not None)
        if finished:
            return {"sent": sent, "sent_sha": hs_sent.hexdigest(), "recv": recvd,
                    "recv_sha": hs_recv.hexdigest(), "closed": closed, "send_err": send_err}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(f"transfer timed out: sent {sent}, received {recvd}, closed={closed}, "
                              f"eof={transport_eof}, pending={len(pending)}")
        rl = [] if transport_eof else [sock]
        wl = [sock] if pending else []
        if not rl and not wl:
            # The transport has ended and there is nothing we can still send.
            return {"sent": sent, "sent_sha": hs_sent.hexdigest(), "recv": recvd,
                    "recv_sha": hs_recv.hexdigest(), "closed": closed, "send_err": send_err,
                    "unfinished": True}
        r, w, _ = select.select(rl, wl, [], min(remaining, 1.0))
        if w:
            try:
                n = sock.send(pending)
                del pending[:n]
            except BlockingIOError:
                pass
            except OSError as e:
                send_err = _errname(e)
                pending.clear()
        if r:
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                data = None
            except ConnectionResetError:
                data = b""
                if closed is None:
                    closed = "reset"
            if data == b"":
                transport_eof = True
                tls.inc.write_eof()
            elif data:
                tls.inc.write(data)


def read_response(s, deadline):
    """Read to EOF (or reset) -> bytes."""
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(f"no close from funneld; got {data[:200]!r}")
        s.settimeout(min(remaining, 5.0))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        if len(data) > (1 << 20):
            raise ClientError("more than 1 MiB of response")


def status_of(data):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    return int(m.group(1)) if m else None


class Client:
    def __init__(self, addr, pool, ctx):
        self.addr = addr
        self.pool = pool
        self.ctx = ctx

    def run(self, p):
        """One planned connection.  Returns a result dict; raises ClientError."""
        kind = p["kind"]
        size = p["up"] + p["down"]
        deadline = time.monotonic() + (60 + size / (2 * MIB)) * SLACK
        t0 = time.monotonic()
        s = h.connect(self.addr, timeout=30)
        try:
            target = NOTARGET if kind == "notarget" else f"{h.TARGET}:443"
            head = h.ingress_head(src=src_for(p["id"]), target=target)
            res = {"id": p["id"], "kind": kind}
            if kind in ("notarget", "slow_abandon"):
                if kind == "slow_abandon":
                    self.trickle(s, head[:p["trickle"]])      # what is left is never sent
                else:
                    hello = h.TLSStream(s, self.ctx, h.TARGET).client_hello() if p["pipelined"] else b""
                    s.sendall(head + hello)
                data = read_response(s, deadline)
                res["status"] = status_of(data)
                res["elapsed"] = time.monotonic() - t0
                return res
            tls = h.TLSStream(s, self.ctx, h.TARGET)
            if kind == "slow_ok":
                head = self.trickle(s, head[:p["trickle"]]) + head[p["trickle"]:]
            if kind == "hsfail":
                s.sendall(head)
            elif p["pipelined"]:
                s.sendall(head + tls.client_hello())
            else:
                s.sendall(head)
            got = h.recv_exact(s, len(h.RESPONSE_101), timeout=30)
            if got != h.RESPONSE_101:
                rest = read_response(s, deadline) if len(got) == len(h.RESPONSE_101) else b""
                res["status"] = status_of(got + rest)
                raise ClientError(f"{kind}: expected 101, got {(got + rest)[:200]!r}")
            res["status"] = 101
            if kind == "hsfail":
                s.sendall(p["garbage"])
                data = read_response(s, deadline)
                if b"HTTP" in data or (data and data[0] != 0x15):
                    raise ClientError(f"hsfail: answer after garbage is not a TLS alert: {data[:100]!r}")
                return res
            if not p["pipelined"]:
                s.sendall(tls.client_hello())
            tls.handshake()
            tls.obj.write(make_tag(p["id"], p["up"], p["down"], kind))
            chunks = self.pool.chunks(p["id"], 0, p["up"])
            policy = {"cfirst": "cfirst", "slow_ok": "cfirst", "bfirst": "bfirst",
                      "creset": "reset", "breset": "wait"}[kind]
            res.update(transfer(tls, chunks, policy, p.get("reset_at"), deadline))
            return res
        finally:
            s.close()

    @staticmethod
    def trickle(s, data, budget=0.3):
        """One byte at a time, a few milliseconds apart (pacing, not
        waiting), for at most `budget` seconds: the rest in one write.
        -> what is left to send."""
        end = time.monotonic() + budget
        for i in range(len(data)):
            if time.monotonic() > end:
                return data[i:]
            s.sendall(data[i:i + 1])
            time.sleep(0.004)
        return b""


# ---------------------------------------------------------------- the driver

def scrape(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise AssertionError(f"metrics: {head[:100]!r}")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_meaningful():
    """-> (bool, why not).  Under a sanitizer (ASan's quarantine holds freed
    memory, 256 MB by default) or a FUNNELD_WRAPPER (valgrind: the RSS is the
    tool's) funneld's RSS says nothing about leaks."""
    if os.environ.get("FUNNELD_WRAPPER", "").strip():
        return False, "funneld runs under FUNNELD_WRAPPER"
    try:
        with open(h.FUNNELD, "rb") as f:
            binary = f.read()
    except OSError:
        return True, ""
    for marker, name in ((b"__asan_init", "AddressSanitizer"), (b"__tsan_init", "ThreadSanitizer"),
                         (b"__msan_init", "MemorySanitizer")):
        if marker in binary:
            return False, f"funneld is built with {name}"
    return True, ""


class Soak:
    def __init__(self, connections=20000, concurrency=32, max_size=64 * MIB, seconds=300, seed=1,
                 workers=2, log=print, check_rss=None):
        self.n = connections
        self.concurrency = concurrency
        self.max_size = max_size
        self.seconds = seconds
        self.seed = seed
        self.workers = workers
        self.log = log
        if check_rss is None:
            check_rss, self.no_rss_why = rss_meaningful()
        else:
            self.no_rss_why = "" if check_rss else "not asked for"
        self.check_rss = check_rss
        self.failures = []
        self.results = {}
        self.errors = {}
        self.backend_reports = {}
        self.tagless = []
        self.reports_lock = threading.Lock()
        self.funneld = None
        self.backend = None
        self.wd = None
        self.stats = {}

    def fail(self, msg):
        if len(self.failures) < 200:
            self.failures.append(msg)

    # -- set-up and tear-down

    def start(self):
        self.wd = h.Workdir()
        cert, key = h.leaf_once(h.TARGET, "ec")
        self.pool = Pool(self.seed)
        self.backend_path = self.wd("be.sock")
        self.backend = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-backend", self.backend_path,
             "--seed", str(self.seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=h.die_with_parent)
        line = self.backend.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise AssertionError(f"backend did not start: {line!r}")
        self.reader = threading.Thread(target=self._read_reports, daemon=True)
        self.reader.start()
        self.port = h.free_port()
        self.metrics_path = self.wd("metrics.sock")
        self.funneld = h.Funneld(self.wd.path, h.make_config(
            f"127.0.0.1:{self.port}", cert, key, [(f"{h.TARGET}:443", self.backend_path)],
            header_timeout=f"{HEADER_TIMEOUT}s", handshake_timeout=f"{10 * SLACK}s", idle_timeout="60s",
            shutdown_timeout="5s", workers=self.workers, metrics="unix:" + self.metrics_path))
        self.funneld.start()
        h.wait_for(lambda: os.path.exists(self.metrics_path), 10, what="metrics socket")
        self.addr = ("127.0.0.1", self.port)
        self.client = Client(self.addr, self.pool, h.client_context())

    def _read_reports(self):
        for line in self.backend.stdout:
            rep = json.loads(line)
            with self.reports_lock:
                if rep.get("id") is None:
                    self.tagless.append(rep)
                elif rep["id"] in self.backend_reports:
                    self.fail(f"backend: connection {rep['id']} reported twice")
                else:
                    self.backend_reports[rep["id"]] = rep

    def stop(self):
        rc = None
        if self.funneld is not None:
            rc = self.funneld.stop()
        if self.backend is not None and self.backend.poll() is None:
            self.backend.terminate()
            try:
                self.backend.wait(10)
            except subprocess.TimeoutExpired:
                self.backend.kill()
                self.backend.wait()
        return rc

    def cleanup(self):
        if self.wd is not None:
            self.wd.cleanup()

    # -- running

    def run_phase(self, plans, stop_at):
        lock = threading.Lock()
        it = iter(plans)

        def worker():
            while True:
                with lock:
                    if time.monotonic() >= stop_at:
                        return
                    p = next(it, None)
                if p is None:
                    return
                try:
                    res = self.client.run(p)
                    self.results[p["id"]] = res
                except Exception as e:          # any failure is the connection's, reported
                    self.results[p["id"]] = {"id": p["id"], "kind": p["kind"], "error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def quiesce(self, what, timeout=60 * SLACK):
        """No connection open in funneld, every record written, every backend
        report in.  -> metrics."""
        made = len(self.results)
        backend_expected = sum(1 for r in self.results.values()
                               if r.get("status") == 101)
        h.wait_for(lambda: scrape(self.metrics_path).get("funneld_connections_open") == 0, timeout,
                   what=f"{what}: funneld_connections_open to reach 0")
        h.wait_for(lambda: len(self.funneld.records()) >= made, timeout,
                   what=f"{what}: {made} connection records")
        h.wait_for(lambda: len(self.backend_reports) + len(self.tagless) >= backend_expected, timeout,
                   what=f"{what}: {backend_expected} backend reports")
        # Spare data buffers are kept while busy and freed a second after:
        # the RSS compared below is then the connections' own.
        h.wait_for(lambda: scrape(self.metrics_path).get("funneld_buffer_pool_bytes") == 0, timeout,
                   what=f"{what}: funneld_buffer_pool_bytes to reach 0")

    def fd_settle(self, want, timeout=10):
        """The fd count back to `want` (a metrics scrape's socket closes a
        moment after the answer).  -> the last count."""
        last = [None]

        def ok():
            last[0] = self.funneld.fd_count()
            return last[0] <= want
        try:
            h.wait_for(ok, timeout, what="fd count")
        except AssertionError:
            pass
        return last[0]

    def monitor(self, stop):
        pid = self.funneld.proc.pid
        peak_rss = peak_fds = peak_open = 0
        i = 0
        while not stop.wait(0.5):
            try:
                peak_rss = max(peak_rss, self.funneld.rss_kib())
                peak_fds = max(peak_fds, self.funneld.fd_count())
                if i % 4 == 0:
                    m = scrape(self.metrics_path)
                    peak_open = max(peak_open, int(m.get("funneld_connections_open", 0)))
            except (OSError, AssertionError):
                pass
            i += 1
        self.stats.update(peak_rss_kib=peak_rss, peak_fds=peak_fds, peak_open=peak_open,
                          cpu_s=cpu_seconds(pid))

    def run(self):
        t_start = time.monotonic()
        stop_at = t_start + self.seconds
        plans = make_plan(self.n, self.max_size, self.seed)
        self.plans = {p["id"]: p for p in plans}
        warm = min(self.n, max(self.concurrency * 4, self.n // 10))
        self.stats["fds_start"] = self.funneld.fd_count()
        self.stats["rss_start_kib"] = self.funneld.rss_kib()
        stop_mon = threading.Event()
        mon = threading.Thread(target=self.monitor, args=(stop_mon,), daemon=True)
        mon.start()
        try:
            self.log(f"soak: warm-up, {warm} connections")
            self.run_phase(plans[:warm], stop_at)
            self.quiesce("after warm-up")
            self.stats["fds_warm"] = self.fd_settle(self.stats["fds_start"])
            self.stats["rss_warm_kib"] = self.funneld.rss_kib()
            self.stats["warm_s"] = time.monotonic() - t_start
            self.log(f"soak: warm-up done in {self.stats['warm_s']:.1f}s, RSS {self.stats['rss_warm_kib']} KiB; "
                     f"{self.n - warm} more connections")
            self.run_phase(plans[warm:], stop_at)
            self.stats["traffic_s"] = time.monotonic() - t_start
            self.quiesce("at the end")
        finally:
            stop_mon.set()
            mon.join()
        self.stats["fds_end"] = self.fd_settle(self.stats["fds_start"])
        self.stats["rss_end_kib"] = self.funneld.rss_kib()
        self.stats["made"] = len(self.results)
        self.stats["planned"] = self.n
        self.check()
        self.stats["duration_s"] = time.monotonic() - t_start

    # -- checking

    def check(self):
        st = self.stats
        if self.funneld.proc.poll() is not None:
            self.fail(f"funneld exited ({self.funneld.proc.returncode})")
        if st["fds_end"] != st["fds_start"]:
            self.fail(f"funneld's open fds: {st['fds_start']} before, {st['fds_end']} after")
        if self.check_rss and st["rss_end_kib"] > st["rss_warm_kib"] * 1.10:
            self.fail(f"funneld's RSS grew: {st['rss_warm_kib']} KiB after warm-up, "
                      f"{st['rss_end_kib']} KiB at the end (> +10%)")

        sent = {k: 0 for k in KINDS}
        for r in self.results.values():
            sent[r["kind"]] += 1
        st["by_kind"] = sent
        client_errors = [r for r in self.results.values() if "error" in r]
        for r in client_errors:
            self.fail(f"conn {r['id']} ({r['kind']}): client: {r['error']}")
        bytes_moved = 0
        for i, r in sorted(self.results.items()):
            if "error" in r:
                continue
            p = self.plans[i]
            kind = p["kind"]
            if r.get("status") != EXPECTED_STATUS[kind]:
                self.fail(f"conn {i} ({kind}): status {r.get('status')}, expected {EXPECTED_STATUS[kind]}")
                continue
            if kind == "slow_abandon" and not (HEADER_TIMEOUT - 0.5 <= r["elapsed"] <= HEADER_TIMEOUT + 5 * SLACK):
                self.fail(f"conn {i}: 408 after {r['elapsed']:.2f}s (header_timeout {HEADER_TIMEOUT}s)")
            if kind in STREAM_KINDS:
                b = self.backend_reports.get(i)
                problems = []
                if r.get("closed") != "close_notify":
                    problems.append(f"client saw {r.get('closed')}, not close_notify")
                if r.get("send_err") or r.get("unfinished"):
                    problems.append(f"client send_err={r.get('send_err')} unfinished={r.get('unfinished')}")
                if r["sent"] != p["up"] or r["recv"] != p["down"]:
                    problems.append(f"client sent {r['sent']}/{p['up']}, received {r['recv']}/{p['down']}")
                if b is None:
                    problems.append("no backend report")
                else:
                    if b["end"] != "eof" or b["send_err"]:
                        problems.append(f"backend end={b['end']} send_err={b['send_err']}")
                    if b["recv"] != p["up"] or b["recv_sha"] != r["sent_sha"]:
                        problems.append(f"client->backend bytes differ: sent {r['sent']} "
                                        f"sha {r['sent_sha'][:12]}, backend got {b['recv']} sha "
                                        f"{(b['recv_sha'] or '')[:12]}")
                    if b["sent"] != p["down"] or b["sent_sha"] != r["recv_sha"]:
                        problems.append(f"backend->client bytes differ: backend sent {b['sent']} "
                                        f"sha {(b['sent_sha'] or '')[:12]}, client got {r['recv']} "
                                        f"sha {r['recv_sha'][:12]}")
                if problems:
                    self.fail(f"conn {i} ({kind}, up {p['up']}, down {p['down']}): " + "; ".join(problems))
                else:
                    bytes_moved += p["up"] + p["down"]
            if kind == "creset" and not r.get("reset_done"):
                self.fail(f"conn {i} (creset): the client did not get to reset ({r})")
            if kind == "breset":
                b = self.backend_reports.get(i)
                if b is None or b["end"] != "reset_sent":
                    self.fail(f"conn {i} (breset): backend report {b}")
                if r.get("closed") == "close_notify":
                    self.fail(f"conn {i} (breset): a backend reset reached the client as close_notify")
        st["verified_streams"] = sum(1 for i, r in self.results.items()
                                     if self.plans[i]["kind"] in STREAM_KINDS and "error" not in r)
        st["verified_bytes"] = bytes_moved

        # One record per connection, each ending the way its kind says.
        recs = self.funneld.records()
        st["records"] = len(recs)
        if len(recs) != len(self.results):
            self.fail(f"{len(self.results)} connections made, {len(recs)} log records")
        ids = [rec["id"] for rec in recs]
        if len(set(ids)) != len(ids):
            self.fail("a connection id was logged twice")
        by_conn = {}
        results_logged = {}
        for rec in recs:
            results_logged[rec.get("result")] = results_logged.get(rec.get("result"), 0) + 1
            i = ident_for(rec.get("src"))
            if i is None:
                continue
            if i in by_conn:
                self.fail(f"conn {i}: two records: {by_conn[i]} and {rec}")
            by_conn[i] = rec
        for i, r in self.results.items():
            kind = r["kind"]
            if kind == "slow_abandon":
                continue            # its head never ended: no src to match
            rec = by_conn.get(i)
            if rec is None:
                self.fail(f"conn {i} ({kind}): no log record")
                continue
            if rec.get("result") != EXPECTED_RESULT[kind]:
                self.fail(f"conn {i} ({kind}): logged result={rec.get('result')} "
                          f"reason={rec.get('reason')}, expected {EXPECTED_RESULT[kind]}")
            if kind in STREAM_KINDS and "error" not in r:
                p = self.plans[i]
                want = (str(TAG_LEN + p["up"]), str(p["down"]))
                if (rec.get("in"), rec.get("out")) != want:
                    self.fail(f"conn {i} ({kind}): logged in={rec.get('in')} out={rec.get('out')}, "
                              f"expected in={want[0]} out={want[1]}")
        expected_results = {}
        for kind, n in sent.items():
            expected_results[EXPECTED_RESULT[kind]] = expected_results.get(EXPECTED_RESULT[kind], 0) + n
        st["results"] = results_logged

        # The counters: exactly the traffic sent.
        m = scrape(self.metrics_path)
        for name, value in m.items():
            mm = re.match(r'^funneld_connections_total\{result="(\w+)"\}$', name)
            if mm and int(value) != expected_results.get(mm.group(1), 0):
                self.fail(f"{name} = {int(value)}, sent {expected_results.get(mm.group(1), 0)}")
        for res in expected_results:
            if f'funneld_connections_total{{result="{res}"}}' not in m:
                self.fail(f"metrics: no funneld_connections_total for result {res}")
        hs = sum(v for k, v in m.items() if k.startswith("funneld_handshake_failures_total"))
        if int(hs) != sent["hsfail"]:
            self.fail(f"funneld_handshake_failures_total sums to {int(hs)}, sent {sent['hsfail']} hsfail")
        be = m.get(f'funneld_backend_connections_total{{backend="{h.TARGET}:443"}}')
        want_be = sum(sent[k] for k in BACKEND_KINDS)
        if be is None or int(be) != want_be:
            self.fail(f"funneld_backend_connections_total = {be}, expected {want_be}")
        backend_seen = len(self.backend_reports) + len(self.tagless)
        if backend_seen != want_be:
            self.fail(f"the backend saw {backend_seen} connections, expected {want_be}")
        for key, field in (("funneld_bytes_in_total", "in"), ("funneld_bytes_out_total", "out")):
            total = sum(int(rec.get(field, 0)) for rec in recs)
            if int(m.get(key, -1)) != total:
                self.fail(f"{key} = {int(m.get(key, -1))}, the records add up to {total}")
        if m.get("funneld_connections_open") != 0:
            self.fail(f"funneld_connections_open = {m.get('funneld_connections_open')} at the end")
        st["metrics_results"] = {k: int(v) for k, v in m.items() if k.startswith("funneld_connections_total")}

    def summary(self):
        st = self.stats
        lines = [
            f"soak: {st.get('made')} of {st.get('planned')} connections in {st.get('traffic_s', 0):.1f}s "
            f"(checked at {st.get('duration_s', 0):.1f}s), concurrency {self.concurrency}, "
            f"max size {self.max_size}, seed {self.seed}, workers {self.workers}",
            "  by kind: " + ", ".join(f"{k}={v}" for k, v in st.get("by_kind", {}).items()),
            "  logged results: " + ", ".join(f"{k}={v}" for k, v in sorted(st.get("results", {}).items())),
            f"  streams verified by SHA-256 at both ends: {st.get('verified_streams')}, "
            f"{st.get('verified_bytes', 0) / MIB:.1f} MiB",
            f"  records: {st.get('records')}; fds: {st.get('fds_start')} at start, {st.get('fds_warm')} after "
            f"warm-up, peak {st.get('peak_fds')}, {st.get('fds_end')} at the end",
            f"  RSS: {st.get('rss_start_kib')} KiB at start, {st.get('rss_warm_kib')} after warm-up, "
            f"peak {st.get('peak_rss_kib')}, {st.get('rss_end_kib')} at the end; "
            f"peak open {st.get('peak_open')}; funneld CPU {st.get('cpu_s', 0):.1f}s"
            + ("" if self.check_rss else f" (RSS not checked: {self.no_rss_why})"),
        ]
        if self.failures:
            lines.append(f"soak: FAIL, {len(self.failures)} problems:")
            lines += ["  " + f for f in self.failures[:50]]
        else:
            lines.append("soak: PASS")
        return "\n".join(lines)


def run_soak(**kw):
    """Start, run, check, stop.  -> the Soak (its .failures empty when all held)."""
    s = Soak(**kw)
    try:
        s.start()
        s.run()
    finally:
        rc = s.stop()
        if s.funneld is not None and rc != 0:
            s.fail(f"funneld exited {rc} at SIGTERM (expected 0); log tail: {s.funneld.log()[-1500:]}")
        keep = os.environ.get("SOAK_KEEP")
        if not keep:
            s.cleanup()
        else:
            s.log(f"soak: kept {s.wd.path if s.wd else None}")
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-size", type=int, default=64 * MIB)
    ap.add_argument("--seconds", type=float, default=300,
                    help="no new connection after this many seconds (default 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", default="2", help="funneld's workers setting")
    ap.add_argument("--serve-backend", metavar="PATH", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_backend:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        backend_main(a.serve_backend, a.seed)
        return
    if not os.path.exists(h.FUNNELD):
        sys.exit(f"{h.FUNNELD}: not built (make all)")
    s = run_soak(connections=a.connections, concurrency=a.concurrency, max_size=a.max_size,
                 seconds=a.seconds, seed=a.seed, workers=a.workers)
    print(s.summary())
    sys.exit(1 if s.failures else 0)


if __name__ == "__main__":
    main()
