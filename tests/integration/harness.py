"""Shared pieces for funneld's integration tests: certificates made with the
openssl CLI, the real funneld binary started with a generated config, backends
on Unix sockets, and a relay-side client that speaks the ingress preamble and
real TLS (Python's ssl, i.e. OpenSSL) over it.

Everything binds to loopback or to Unix sockets under a private temp dir.
Waiting is done by polling with generous bounds, never by fixed sleeps.
"""
import atexit
import ctypes
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
FUNNELD = os.path.join(BUILD, "funneld")
# The same daemon with the test-only fault points armed (funneld/fault.h).
FUNNELD_FAULTS = os.path.join(BUILD, "funneld-faults")
TOOLS = os.path.join(BUILD, "tests", "tools")

RESPONSE_101 = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
TARGET = "node.example.ts.net"


def wait_for(pred, timeout=15.0, interval=0.01, what="condition"):
    """Poll pred() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child must not dlopen


def die_with_parent():
    """In a child before exec: be killed when the thread that started it
    ends (the test runner's main thread), so an aborted run leaves no daemon
    behind."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60, **kw)


# ---------------------------------------------------------------- certificates

class PKI:
    """A throwaway CA and leaf certificates signed by it."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca_cert = os.path.join(directory, "ca.crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "2",
             "-subj", "/CN=funneld test CA"])

    def leaf(self, name, sans=None, kind="ec", days=2, tag=None):
        """Return (chain_path, key_path): leaf + CA chain, and its key."""
        sans = sans or [name]
        tag = tag or f"{name}-{kind}"
        key = os.path.join(self.dir, f"{tag}.key")
        csr = os.path.join(self.dir, f"{tag}.csr")
        crt = os.path.join(self.dir, f"{tag}.crt")
        chain = os.path.join(self.dir, f"{tag}.chain.pem")
        ext = os.path.join(self.dir, f"{tag}.ext")
        if kind == "ec":
            newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        else:
            newkey = ["-newkey", "rsa:2048"]
        run(["openssl", "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}"])
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + s for s in sans) + "\n"
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-CAcreateserial", "-out", crt, "-days", str(days), "-extfile", ext])
        with open(chain, "w") as out:
            out.write(open(crt).read())
            out.write(open(self.ca_cert).read())
        return chain, key


_pki = None
_pki_dir = None


def pki():
    """One PKI for the whole test run (key generation is the slow part)."""
    global _pki, _pki_dir
    if _pki is None:
        _pki_dir = tempfile.mkdtemp(prefix="funneld-pki-")
        atexit.register(shutil.rmtree, _pki_dir, True)
        _pki = PKI(_pki_dir)
    return _pki


# ---------------------------------------------------------------- backends

class UnixServer:
    """A server on a Unix socket, accepting in a thread of its own: binds
    `path` (a stale file there is removed first), listens with `backlog`, and
    hands every accepted connection to self.handle(c) on the accept thread.
    handle() runs self.serve(c) on a thread of its own; a subclass overrides
    serve(), or handle() to note or keep the connection first (and then calls
    serve_in_thread(c, *args) for serve(c, *args)).  Accepting starts before
    __init__ returns: a subclass sets what handle() uses before calling it.
    close() stops accepting, waits for the accept thread and removes the
    socket file."""

    def __init__(self, path, backlog):
        self.path = path
        self.stopping = False
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(backlog)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.stopping:
                c.close()
                return
            self.handle(c)

    def handle(self, c):
        self.serve_in_thread(c)

    def serve_in_thread(self, c, *args):
        threading.Thread(target=self.serve, args=(c, *args), daemon=True).start()

    def serve(self, c):
        raise NotImplementedError

    def close(self):
        self.stopping = True
        try:
            # Wakes the accept() in progress (EINVAL); close() alone would not.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class RecordingServer(UnixServer):
    """A UnixServer that notes each connection as it accepts it:
    conns[i] = {"data": bytearray, "done": Event}, handed to serve(c, rec),
    which fills data and sets done when the connection has ended."""

    def __init__(self, path, backlog):
        self.conns = []
        self.lock = threading.Lock()
        super().__init__(path, backlog)

    def handle(self, c):
        rec = {"data": bytearray(), "done": threading.Event()}
        with self.lock:
            self.conns.append(rec)
        self.serve_in_thread(c, rec)

    def count(self):
        with self.lock:
            return len(self.conns)

    def conn(self, i, timeout=15):
        """conns[i], once that connection has ended."""
        wait_for(lambda: self.count() > i, timeout, what=f"backend connection #{i}")
        with self.lock:
            rec = self.conns[i]
        if not rec["done"].wait(timeout):
            raise AssertionError(f"backend connection #{i} did not end")
        return rec


class Backend(UnixServer):
    """A Unix-socket backend in a thread.  mode:
    'echo'   — echoes every byte back, shuts down its write side at EOF;
    'record' — stores what it receives, answers with `reply` (bytes or a
               callable taking the received bytes) at EOF, then closes;
    'hold'   — accepts and never reads (back-pressure tests).
    Every accepted connection's received bytes land in self.received."""

    def __init__(self, path, mode="echo", reply=b""):
        self.mode = mode
        self.reply = reply
        self.received = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.held = []
        super().__init__(path, backlog=512)

    def handle(self, c):
        with self.lock:
            self.accepted += 1
            idx = len(self.received)
            self.received.append(bytearray())
        if self.mode == "hold":
            self.held.append(c)
        else:
            self.serve_in_thread(c, idx)

    def serve(self, c, idx):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.received[idx] += data
                if self.mode == "echo":
                    c.sendall(data)
            if self.mode == "record":
                reply = self.reply(bytes(self.received[idx])) if callable(self.reply) else self.reply
                c.sendall(reply)
            c.shutdown(socket.SHUT_WR)
            # Wait for the peer to close too, so nothing is cut short.
            c.settimeout(30)
            while c.recv(65536):
                pass
        except OSError:
            pass
        finally:
            c.close()

    def total_received(self):
        with self.lock:
            return sum(len(r) for r in self.received)

    def close(self):
        super().close()
        for c in self.held:
            c.close()


# ---------------------------------------------------------------- funneld

class Funneld:
    """The real daemon, with a generated config, stderr captured to a file."""

    def __init__(self, workdir, config_text, env=None, args=None, binary=FUNNELD):
        self.binary = binary
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "funneld.conf")
        self.log_path = os.path.join(workdir, "funneld.log")
        self.write_config(config_text)
        # The tests' own systemd context must not leak into the daemon.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
        self.env.update(env or {})
        self.args = args or []
        self.proc = None

    def write_config(self, text):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)

    def start(self, wait=True, prefix=None):
        self.logf = open(self.log_path, "ab")
        # FUNNELD_WRAPPER (e.g. "valgrind --leak-check=full", see `make valgrind`) runs
        # funneld under a tool; it goes right before the binary, after any prefix.
        wrapper = os.environ.get("FUNNELD_WRAPPER", "").split()
        cmd = (prefix or []) + wrapper + [self.binary, "-c", self.config_path] + self.args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     env=self.env, preexec_fn=die_with_parent)
        if wait:
            try:
                wait_for(lambda: "started:" in self.log() or self.proc.poll() is not None, 30,
                         what="funneld to start")
            except BaseException:
                self.stop(5)            # never left running behind a failed start
                raise
            if self.proc.poll() is not None:
                raise AssertionError(f"funneld exited {self.proc.returncode}: {self.log()}")
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def records(self):
        """The per-connection log lines, parsed into dicts."""
        out = []
        text = self.log()
        # Only whole lines: funneld may be writing the last one right now.
        for line in text[:text.rfind("\n") + 1].splitlines():
            m = re.match(r"^funneld: conn (\d+) (.*)$", line)
            if not m:
                continue
            rec = {"id": int(m.group(1))}
            for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(2)):
                rec[k] = v.strip('"')
            out.append(rec)
        return out

    def wait_records(self, n, timeout=20):
        return wait_for(lambda: len(self.records()) >= n and self.records(), timeout,
                        what=f"{n} connection records")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop_problem(self, timeout=30):
        """stop(); what went wrong if the exit status was not 0, else None."""
        rc = self.stop(timeout)
        logf = getattr(self, "logf", None)
        if logf is not None and not logf.closed:
            logf.close()
        if rc not in (0, None):
            return f"funneld exited {rc} at SIGTERM (expected 0): {self.log()[-2000:]}"
        return None

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    TRIM = re.compile(r"conn (\d+): idle for \d+ ms, TLS record buffers trimmed")

    def trims(self):
        """The connections whose idle TLS record buffers were freed, one id per
        trim, in order (logged at log_level = debug)."""
        return [int(m.group(1)) for m in self.TRIM.finditer(self.log())]

    def sanitized(self):
        """Built with ASan, whose allocator has an RSS of its own."""
        with open(f"/proc/{self.proc.pid}/maps") as f:
            return "libasan" in f.read()

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def base_config(listen, cert, key, backends, extra_main="", extra_tls="", allow="127.0.0.0/8, ::1/128"):
    """backends: list of (target, socket_path, extra_lines)."""
    text = f"""[funneld]
listen = {listen}
allow = {allow}
header_timeout = 3s
handshake_timeout = 3s
idle_timeout = 30s
shutdown_timeout = 5s
log_level = info
{extra_main}
[tls]
cert = {cert}
key = {key}
{extra_tls}
"""
    for b in backends:
        target, path = b[0], b[1]
        extra = b[2] if len(b) > 2 else ""
        text += f"\n[backend {target}]\nsocket = {path}\n{extra}\n"
    return text


# ---------------------------------------------------------------- the relay side

def ingress_head(src="203.0.113.7:51234", target=f"{TARGET}:443", extra=b"", method=b"POST",
                 path=b"/v0/ingress"):
    return (method + b" " + path + b" HTTP/1.1\r\nHost: " + target.encode() + b"\r\n"
            b"Tailscale-Ingress-Src: " + src.encode() + b"\r\n"
            b"Tailscale-Ingress-Target: " + target.encode() + b"\r\n" + extra + b"\r\n")


def connect(addr, timeout=10):
    """addr: ('127.0.0.1', port) / ('::1', port) / '/path/to/unix.sock'."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def read_until_close(s, limit=1 << 20):
    data = b""
    while len(data) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def parse_response(data):
    """-> (status, headers dict lower-case, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
    status = int(m.group(1)) if m else None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def refused(addr, raw, timeout=10):
    """Send raw bytes, read to EOF, return (status, headers, body, raw_response)."""
    s = connect(addr, timeout)
    try:
        s.sendall(raw)
        data = read_until_close(s)
    finally:
        s.close()
    st, hd, body = parse_response(data)
    return st, hd, body, data


def client_context(cafile=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile or pki().ca_cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSStream:
    """TLS over a raw socket through ssl.MemoryBIO, so the ClientHello can go
    out in the same write as the ingress head (as the relay does)."""

    def __init__(self, sock, ctx, server_hostname):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname)
        self.eof = False

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.inc.write_eof()
            self.eof = True
        else:
            self.inc.write(data)

    def client_hello(self):
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if self.eof:
                    raise ConnectionError("EOF during handshake")
                self._fill()

    def sendall(self, data):
        view = memoryview(data)
        while view:
            n = self.obj.write(view[:65536])
            view = view[n:]
            self._flush()

    def recv(self, n=65536):
        """Bytes, or b'' at close_notify/EOF."""
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                if self.eof:
                    return b""
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""

    def close_notify(self):
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        self._flush()

    def close(self):
        self.sock.close()


def open_stream(addr, target=f"{TARGET}:443", src="203.0.113.7:51234", server_hostname=TARGET,
                pipelined=True, ctx=None, timeout=20):
    """Relay side: head (+ ClientHello in the same write), expect exactly the
    101, finish the handshake.  Returns a TLSStream."""
    s = connect(addr, timeout)
    tls = TLSStream(s, ctx or client_context(), server_hostname)
    head = ingress_head(src=src, target=target)
    if pipelined:
        s.sendall(head + tls.client_hello())
    else:
        s.sendall(head)
    got = b""
    while len(got) < len(RESPONSE_101):
        chunk = s.recv(len(RESPONSE_101) - len(got))
        if not chunk:
            raise ConnectionError(f"closed before 101, got {got!r}")
        got += chunk
    if got != RESPONSE_101:
        rest = read_until_close(s)
        raise AssertionError(f"expected 101, got {got + rest!r}")
    if not pipelined:
        s.sendall(tls.client_hello())
    tls.handshake()
    return tls


def sha256(b):
    return hashlib.sha256(b).hexdigest()


class Workdir:
    """A temp dir removed at the end (short path: Unix socket paths are limited)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="fd-", dir="/tmp")

    def __call__(self, name):
        return os.path.join(self.path, name)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def wait_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


# ---------------------------------------------------------------- more helpers
# (added for test_ingress_errors.py / test_data_path.py; nothing above changed)

import queue as _queue

STATUS_TEXT = {
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
    503: "Service Unavailable",
}


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind port 0, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def dead_unix_socket(path):
    """Leave a socket file at path that nobody listens on."""
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    s.close()
    return path


def read_to_eof(sock, limit=1 << 20, timeout=10.0):
    """Read until the peer closes.  -> (data, how): how is "eof" for an
    orderly close, "reset" for ECONNRESET.  Raises AssertionError when the
    peer neither sends nor closes within timeout (of silence) or sends more
    than limit bytes."""
    data = b""
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except socket.timeout:
            raise AssertionError(f"peer did not close within {timeout}s; got {data[:300]!r}")
        if not chunk:
            return data, "eof"
        data += chunk
        if len(data) > limit:
            raise AssertionError(f"more than {limit} bytes without a close")


def recv_exact(sock, n, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class ManualBackend(UnixServer):
    """A Unix-socket backend whose accepted sockets are handed to the test
    (take()), so a test can drive the backend side step by step."""

    def __init__(self, path):
        self.accepted = 0
        self.conns = []
        self.q = _queue.Queue()
        super().__init__(path, backlog=64)

    def handle(self, c):
        self.accepted += 1
        self.conns.append(c)
        self.q.put(c)

    def take(self, timeout=10.0):
        try:
            return self.q.get(timeout=timeout)
        except _queue.Empty:
            raise AssertionError(f"backend accepted no connection within {timeout}s")

    def close(self):
        super().close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def tls_transfer(tls, data=b"", nrecv=0, until_close=False, close_notify=False, timeout=60.0):
    """Send data and receive at the same time, on this thread, over a
    TLSStream (non-blocking socket + select, so neither side's buffers can
    deadlock the transfer).

    Stops when everything is sent and either nrecv bytes arrived or, with
    until_close, the peer ended the TLS stream.  close_notify: send our
    close_notify after the data (half-close; reading goes on).
    Returns (received, closed): closed is None, "close_notify" (the peer's
    alert arrived) or "eof" (the transport ended without one)."""
    sock, obj = tls.sock, tls.obj
    view = memoryview(data)
    pending = bytearray()
    received = bytearray()
    closed = None
    sent_close = False
    deadline = time.monotonic() + timeout
    old_timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            # Decrypt whatever has arrived.
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
                if not got:
                    # SSLObject.read() returns b"" for a close_notify when
                    # ours was not sent yet (SSLZeroReturnError once it was);
                    # a transport EOF without one is SSLEOFError.
                    closed = "close_notify"
                    break
                received += got
            if tls.eof and closed is None:
                closed = "eof"
            # Encrypt what is to be sent, a bounded amount ahead.
            while view and len(pending) < (1 << 18):
                n = obj.write(view[:16384])
                view = view[n:]
                pending += tls.out.read()
            if not view and close_notify and not sent_close:
                try:
                    obj.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
                sent_close = True
            pending += tls.out.read()   # records, alerts
            if not pending and not view and (closed is not None or
                                             (not until_close and len(received) >= nrecv)):
                return bytes(received), closed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"tls_transfer timed out: {len(data) - len(view) - len(pending)}"
                                     f"/{len(data)} sent, {len(received)} received, closed={closed}")
            rl = [] if tls.eof else [sock]
            wl = [sock] if pending else []
            if not rl and not wl:
                raise AssertionError(f"transport closed; received {len(received)}/{nrecv}")
            r, w, _ = select.select(rl, wl, [], min(remaining, 1.0))
            if w:
                try:
                    n = sock.send(pending)
                    del pending[:n]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    if closed is None:
                        raise
                    # The peer has gone entirely after ending the stream:
                    # what is left (an alert) has nowhere to go.
                    return bytes(received), closed
            if r:
                try:
                    chunk = sock.recv(1 << 18)
                except BlockingIOError:
                    chunk = None
                except ConnectionResetError:
                    chunk = b""
                if chunk == b"":
                    tls.eof = True
                    tls.inc.write_eof()
                elif chunk:
                    tls.inc.write(chunk)
    finally:
        if sock.fileno() >= 0:
            sock.settimeout(old_timeout)


class ConnLedger:
    """Counts the connections a test makes to one funneld and checks that
    funneld wrote exactly one log record for each of them."""

    def __init__(self, funneld):
        self.f = funneld
        self.start = len(funneld.records())
        self.made = 0

    def add(self, n=1):
        self.made += n

    def new_records(self):
        return self.f.records()[self.start:]

    def wait(self, n, timeout=20):
        """Wait until n records were written since the ledger started."""
        wait_for(lambda: len(self.new_records()) >= n, timeout,
                 what=f"{n} connection records (have {len(self.new_records())})")
        return self.new_records()

    def check(self, timeout=20):
        """All the connections made are logged, once each; returns the records."""
        recs = self.wait(self.made, timeout)
        if len(recs) != self.made:
            raise AssertionError(f"{self.made} connections made but {len(recs)} records: {recs}")
        ids = [r["id"] for r in recs]
        if len(set(ids)) != len(ids):
            raise AssertionError(f"a connection id logged twice: {ids}")
        return recs


def make_config(listen, cert, key, backends, allow="127.0.0.0/8, ::1/128", tls_extra="", **main):
    """Like base_config, but listen may be a list and any [funneld] key can be
    set by keyword (header_timeout="1s", max_connections=1, ...).
    backends: list of (target, socket_path[, extra_lines])."""
    settings = {"header_timeout": "3s", "handshake_timeout": "3s", "idle_timeout": "30s",
                "shutdown_timeout": "5s", "log_level": "info"}
    settings.update({k: str(v) for k, v in main.items()})
    listens = [listen] if isinstance(listen, str) else list(listen)
    text = "[funneld]\n" + "".join(f"listen = {l}\n" for l in listens)
    text += f"allow = {allow}\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    text += f"\n[tls]\ncert = {cert}\nkey = {key}\n{tls_extra}\n"
    for b in backends:
        extra = b[2] if len(b) > 2 else ""
        text += f"\n[backend {b[0]}]\nsocket = {b[1]}\n{extra}\n"
    return text


def open_stream_with_head(addr, head, server_hostname=TARGET, pipelined=True, ctx=None, timeout=20):
    """open_stream() with a caller-made request head."""
    s = connect(addr, timeout)
    tls = TLSStream(s, ctx or client_context(), server_hostname)
    if pipelined:
        s.sendall(head + tls.client_hello())
    else:
        s.sendall(head)
    got = recv_exact(s, len(RESPONSE_101), timeout)
    if got != RESPONSE_101:
        rest = b"" if len(got) < len(RESPONSE_101) else read_until_close(s)
        s.close()
        raise AssertionError(f"expected 101, got {got + rest!r}")
    if not pipelined:
        s.sendall(tls.client_hello())
    tls.handshake()
    return tls


def leaf_der(chain_path):
    """DER of the first certificate in a PEM chain file."""
    with open(chain_path) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem[:pem.index(end) + len(end)] + "\n")


_leaves = {}


def leaf_once(name, kind="ec"):
    """pki().leaf(name, kind=kind), made once per test run and then reused."""
    global _pki
    if _pki is not None and not os.path.isfile(_pki.ca_cert):
        # Somebody removed the PKI's directory: start a new one.
        _pki = None
        _leaves.clear()
    if (name, kind) not in _leaves:
        _leaves[(name, kind)] = pki().leaf(name, kind=kind)
    return _leaves[(name, kind)]


# Under FUNNELD_WRAPPER (valgrind) funneld is many times slower and its
# process is the wrapper's: upper time bounds stretch, RSS means nothing.
WRAPPED = bool(os.environ.get("FUNNELD_WRAPPER", "").strip())


def slack(seconds):
    """An upper time bound, stretched when funneld runs under a wrapper."""
    return seconds * 10 if WRAPPED else seconds


class ClassProcessesCase(unittest.TestCase):
    """Processes shared by the tests of a class, closed again whatever
    happened.  setUpClass makes cls.wd (a Workdir) and calls cls._set_up();
    when that fails, tearDownClass closes what it had opened before the
    error goes on.  tearDownClass closes, in this order: close_front()
    (what connects to funneld: relays, proxies), cls.funneld (by PID; a
    non-zero exit at SIGTERM is a problem), close_back() (what funneld
    connects to: nginx, backends), the Workdir.  The closers add what went
    wrong to `problems`; any problem fails the class once all is closed."""

    wd = None
    funneld = None

    @classmethod
    def setUpClass(cls):
        cls.wd = Workdir()
        try:
            cls._set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _set_up(cls):
        pass

    @classmethod
    def close_front(cls, problems):
        pass

    @classmethod
    def close_back(cls, problems):
        pass

    @classmethod
    def tearDownClass(cls):
        problems = []
        cls.close_front(problems)
        f, cls.funneld = cls.funneld, None
        if f is not None and f.proc is not None:
            problem = f.stop_problem()
            if problem:
                problems.append(problem)
        cls.close_back(problems)
        if cls.wd is not None:
            cls.wd.cleanup()
        if problems:
            raise AssertionError("; ".join(problems))


class ClassDaemonCase(ClassProcessesCase):
    """One funneld per test class (started in setUpClass with start_funneld),
    a ConnLedger per test: every connection a test made must leave exactly
    one log record.  Subclasses set cls.wd (a Workdir) and may list
    cls.backends to close at the end."""

    backends = ()
    ledger_timeout = 20

    @classmethod
    def start_funneld(cls, config, prefix=None, **kw):
        try:
            cls.funneld = Funneld(cls.wd.path, config, **kw).start(prefix=prefix)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def close_back(cls, problems):
        for b in cls.backends:
            b.close()

    def setUp(self):
        self.ledger = ConnLedger(self.funneld)

    def tearDown(self):
        self.ledger.check(timeout=self.ledger_timeout)


# ---------------------------------------------------------------- TLS versions
# (added for TLS 1.3 on mbedTLS 3.6; nothing above changed)

_tls13 = []


def tls13():
    """Whether the funneld under test offers TLS 1.3 (Debian 13's mbedTLS 3.6
    does, Debian 12's 2.28 does not): asked of funneld itself, with `-t` on
    a configuration that names versions = 1.3."""
    if not _tls13:
        cert, key = leaf_once(TARGET)
        d = tempfile.mkdtemp(prefix="fd-v13-", dir="/tmp")
        try:
            path = os.path.join(d, "funneld.conf")
            with open(path, "w") as f:
                f.write(base_config("unix:" + os.path.join(d, "f.sock"), cert, key,
                                    [(f"{TARGET}:443", os.path.join(d, "b.sock"))], extra_tls="versions = 1.3\n"))
            p = subprocess.run([FUNNELD, "-t", "-c", path], capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if p.returncode != 0 and "not available" not in p.stderr:
            raise AssertionError(f"funneld -t failed: {p.stderr}")
        _tls13.append(p.returncode == 0)
    return _tls13[0]


def best_tls():
    """The version a client offering everything gets: "TLSv1.3" or "TLSv1.2"."""
    return "TLSv1.3" if tls13() else "TLSv1.2"


TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def pin_version(ctx, version):
    """ctx offering only TLS version ("1.2" or "1.3"); returns ctx."""
    ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[version]
    return ctx


# ---------------------------------------------------------------- nginx on Unix sockets
# (added for test_listener.py; nothing above changed)

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")


class NginxSite:
    """One nginx (master_process off, daemon off) serving the files under
    `root` for `host`, on Unix sockets only, every path inside `directory`.

    servers: [(socket_path, listen_params)], e.g. (h1, ""), (h2c, "http2"),
    (pp, "proxy_protocol") or (pp2, "http2 proxy_protocol").  Each server
    logs to its own access log, one line per request:
        <proxy_protocol_addr> <proxy_protocol_port> <server_protocol> "<request>" <status> <bytes>
    (the first two are empty without proxy_protocol); access_lines(i) reads
    server i's."""

    def __init__(self, directory, root, host, servers, nginx=NGINX):
        self.dir = directory
        self.root = root
        self.host = host
        self.servers = list(servers)
        self.nginx = nginx
        self.proc = None
        self.out = None

    def _temp_paths(self):
        """*_temp_path lines for the modules this nginx has (all inside dir)."""
        try:
            v = subprocess.run([self.nginx, "-V"], capture_output=True, text=True, timeout=30).stderr
        except OSError:
            v = ""
        return "".join(f'    {m}_temp_path "{self.dir}/nginx-tmp/{m}";\n'
                       for m in ("proxy", "fastcgi", "uwsgi", "scgi") if f"--without-http_{m}_module" not in v)

    def access_log(self, i):
        return os.path.join(self.dir, f"nginx-access-{i}.log")

    def access_lines(self, i):
        try:
            with open(self.access_log(i), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return text[:text.rfind("\n") + 1].splitlines()

    def start(self, timeout=20):
        if not os.access(self.nginx, os.X_OK):
            raise AssertionError(f"{self.nginx} not found: run scripts/deps (make deps) to install it")
        os.makedirs(os.path.join(self.dir, "nginx-tmp"), exist_ok=True)
        blocks = ""
        for i, (sock, params) in enumerate(self.servers):
            blocks += (f"    server {{\n        listen \"unix:{sock}\" {params};\n"
                       f"        server_name {self.host};\n        root \"{self.root}\";\n"
                       f"        index index.html;\n        access_log \"{self.access_log(i)}\" site;\n    }}\n")
        conf = f"""# One process, every path inside {self.dir}.
master_process off;
worker_processes 1;
pid "{self.dir}/nginx.pid";
error_log "{self.dir}/nginx-error.log" notice;
events {{
    worker_connections 1024;
}}
http {{
    types {{
        text/html html;
        text/plain txt;
    }}
    default_type application/octet-stream;
    client_body_temp_path "{self.dir}/nginx-tmp/client_body";
{self._temp_paths()}
    log_format site '$proxy_protocol_addr $proxy_protocol_port $server_protocol "$request" $status $bytes_sent';
    keepalive_requests 100000;
{blocks}}}
"""
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.out = open(os.path.join(self.dir, "nginx.out"), "ab")
        self.proc = subprocess.Popen(
            [self.nginx, "-p", self.dir, "-c", path, "-e", os.path.join(self.dir, "nginx-error.log"),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out, preexec_fn=die_with_parent)
        # nginx binds and listens on every socket before it serves any:
        # all of them accepting a connect() is ready.
        wait_for(lambda: all(self._listening(sock) for sock, _ in self.servers), timeout, what="nginx to listen")
        return self

    def _listening(self, sock):
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited {self.proc.returncode}: {self.errors()}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def errors(self):
        text = ""
        for name in ("nginx.out", "nginx-error.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")[-2000:]
            except FileNotFoundError:
                pass
        return text

    def stop(self, timeout=15):
        """SIGQUIT (graceful), by PID; -> exit status."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.out is not None:
            self.out.close()
            self.out = None
        return self.proc.returncode if self.proc is not None else None


def tcp_sockets(port):
    """The TCP sockets of this machine whose local port is `port`, from
    /proc/net/tcp and tcp6: [(state, remote_port, tx_queue, rx_queue)];
    state is the kernel's hex code ("0A" = LISTEN, "01" = ESTABLISHED)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            tx, rx = queues.split(":")
            out.append((state, int(remote.rsplit(":", 1)[1], 16), int(tx, 16), int(rx, 16)))
    return out


def tcp_listening(port):
    """Something listens on TCP `port` (seen without connecting to it)."""
    return any(s[0] == "0A" for s in tcp_sockets(port))


def tcp_unread(server_port, client_port):
    """Bytes the server side of the connection client_port -> server_port
    has not read yet (its receive queue), or None when there is no such
    connection (any more)."""
    for state, rport, _, rx in tcp_sockets(server_port):
        if state != "0A" and rport == client_port:
            return rx
    return None
