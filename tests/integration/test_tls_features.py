"""TLS features of funneld seen from real clients: SNI and several
certificates, ALPN, session resumption (tickets, session-ID cache, several
workers, ticket rotation, reload, bounded per-name partitions), the
protocol/cipher/curve policy, and records behind a warning alert.  The
SNI, ALPN and ticket tests run once with TLS 1.2 clients and once with
TLS 1.3 clients (the *TLS13Test classes; each of their tests skips where
funneld's mbedTLS has no TLS 1.3, as Debian 12's 2.28).

Clients are Python's ssl (OpenSSL) speaking through the ingress preamble
(harness.TLSStream), `openssl s_client` through the funnel-relay test
tool when it is built (build/tests/tools/funnel-relay), and mbedTLS's own
client through ctypes where neither can send what is needed.

Everything is on Unix sockets or loopback; waits are bounded polls.
"""
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (PKI, RESPONSE_101, TARGET, Funneld, TLSStream, Workdir, base_config,  # noqa: E402
                     connect, ingress_head, wait_for)

OTHER = "other.example.ts.net"          # a second target with its own certificate
WILD_TARGET = "api.svc.example.ts.net"  # a target served by a wildcard certificate
RELAY = os.path.join(harness.TOOLS, "funnel-relay")
EXT_SESSION_TICKET = 35

CERTS = {}
_pki = []


def pki():
    """This module's own CA (nothing another module does to the shared one
    can pull it away mid-run); removed in tearDownModule."""
    return _pki[0]


def client_context(alpn=None):
    return harness.client_context(cafile=pki().ca_cert, alpn=alpn)


def setUpModule():
    _pki.append(PKI(tempfile.mkdtemp(prefix="fd-tlsf-pki-")))
    p = pki()
    CERTS["node"] = p.leaf(TARGET)
    CERTS["other"] = p.leaf(OTHER)
    CERTS["wild"] = p.leaf("*.svc.example.ts.net", tag="wild-svc")
    CERTS["node-rsa"] = p.leaf(TARGET, kind="rsa")


def tearDownModule():
    if _pki:
        shutil.rmtree(_pki.pop().dir, ignore_errors=True)


# ---------------------------------------------------------------- helpers

_src_port = [40000]
_src_lock = threading.Lock()


def next_src(host="203.0.113.7"):
    """A Tailscale-Ingress-Src with a port of its own: it names the log record."""
    with _src_lock:
        _src_port[0] += 1
        return f"{host}:{_src_port[0]}"


class Stream(TLSStream):
    """harness.TLSStream with a session to resume."""

    def __init__(self, sock, ctx, server_hostname, session=None):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname, session=session)
        self.eof = False


def dial(addr, ctx=None, server_hostname=TARGET, target=f"{TARGET}:443", src=None, session=None):
    """Relay side: head + ClientHello in one write, exactly the 101, then the
    handshake.  Returns (stream, client_hello_bytes).  A TLS failure raises
    ssl.SSLError or ConnectionError; a missing 101 raises AssertionError."""
    s = connect(addr, 20)
    try:
        st = Stream(s, ctx or client_context(), server_hostname, session)
        hello = st.client_hello()
        s.sendall(ingress_head(src=src or next_src(), target=target) + hello)
        got = b""
        while len(got) < len(RESPONSE_101):
            chunk = s.recv(len(RESPONSE_101) - len(got))
            if not chunk:
                raise AssertionError(f"closed before the 101, got {got!r}")
            got += chunk
        if got != RESPONSE_101:
            raise AssertionError(f"expected the 101, got {got!r}")
        st.handshake()
    except BaseException:
        s.close()
        raise
    return st, hello


def roundtrip(st, payload=b"ping"):
    """Echo backend: send, read the same bytes back, close cleanly."""
    try:
        st.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = st.recv()
            if not chunk:
                break
            got += chunk
        st.close_notify()
        return got
    finally:
        st.close()


def parse_client_hello(data):
    """-> (legacy client_version, session_id, {extension type: data})."""
    hs, i = b"", 0
    while i + 5 <= len(data):
        n = struct.unpack("!H", data[i + 3:i + 5])[0]
        if data[i] == 22:
            hs += data[i + 5:i + 5 + n]
        i += 5 + n
    if not hs or hs[0] != 1:
        raise AssertionError(f"not a ClientHello: {data[:16]!r}")
    body = hs[4:4 + int.from_bytes(hs[1:4], "big")]
    version = struct.unpack("!H", body[0:2])[0]
    p = 34
    sid = body[p + 1:p + 1 + body[p]]
    p += 1 + body[p]
    p += 2 + struct.unpack("!H", body[p:p + 2])[0]
    p += 1 + body[p]
    exts = {}
    if p + 2 <= len(body):
        end = p + 2 + struct.unpack("!H", body[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            t, n = struct.unpack("!HH", body[p:p + 4])
            exts[t] = body[p + 4:p + 4 + n]
            p += 4 + n
    return version, sid, exts


class EchoBackend(harness.RecordingServer):
    """A Unix-socket echo backend that knows when each connection ended:
    conns[i] = {"data": bytearray, "done": Event} (done at EOF from funneld)."""

    def __init__(self, path):
        super().__init__(path, backlog=256)

    def serve(self, c, rec):
        try:
            c.settimeout(60)
            while True:
                data = c.recv(65536)
                if not data:
                    break
                rec["data"] += data
                c.sendall(data)
            rec["done"].set()
            c.shutdown(socket.SHUT_WR)
        except OSError:
            rec["done"].set()
        finally:
            c.close()


def start_relay(testcase, wd, listen_path, target):
    """funnel-relay in front of funneld; returns the public port (or skips)."""
    if not os.access(RELAY, os.X_OK):
        testcase.skipTest(f"{RELAY} is not built (make {os.path.relpath(RELAY, harness.ROOT)})")
    errpath = wd(f"relay-{time.monotonic_ns()}.err")
    errf = open(errpath, "wb")
    proc = subprocess.Popen([RELAY, "-l", "127.0.0.1:0", "-f", "unix:" + listen_path, "-t", target],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        errf.close()
    testcase.addCleanup(stop)

    def ready():
        text = open(errpath, "rb").read().decode("utf-8", "replace")
        return "listening on" in text or proc.poll() is not None
    wait_for(ready, 15, what="funnel-relay to listen")
    text = open(errpath, "rb").read().decode("utf-8", "replace")
    if proc.poll() is not None:
        raise AssertionError(f"funnel-relay exited {proc.returncode}: {text}")
    line = [ln for ln in text.splitlines() if "listening on" in ln][0]
    return int(line.rsplit(":", 1)[1])


def s_client(port, args, timeout=30):
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki().ca_cert]
                       + args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


# ---------------------------------------------------------------- base

NO_TLS13 = "this funneld's mbedTLS has no TLS 1.3 server (Debian 12's 2.28; Debian 13's 3.6 has)"


class FunneldCase(unittest.TestCase):
    """Starts one funneld for the class (setUpClass → cls.config()).
    tls = "1.2" / "1.3": the clients of self.ctx() offer only that version
    (the "1.3" classes skip each test where funneld has no TLS 1.3)."""

    workers = 1
    extra_tls = ""
    cert = "node"
    tls = None

    @classmethod
    def backends(cls, wd):
        return [(f"{TARGET}:443", wd("node.sock"), "")]

    @classmethod
    def setUpClass(cls):
        cls.wd = Workdir()
        cls.listen = cls.wd("funneld.sock")
        cls.be = {}
        cls.f = None
        if cls.tls == "1.3" and not harness.tls13():
            return
        try:
            backends = cls.backends(cls.wd)
            for b in backends:
                if b[1] not in cls.be:
                    cls.be[b[1]] = EchoBackend(b[1])
            chain, key = CERTS[cls.cert]
            text = base_config("unix:" + cls.listen, chain, key, backends,
                               extra_main=f"workers = {cls.workers}\n", extra_tls=cls.extra_tls)
            cls.f = Funneld(cls.wd.path, text).start()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _teardown(cls):
        problem = cls.f.stop_problem() if cls.f is not None else None
        for b in cls.be.values():
            b.close()
        cls.wd.cleanup()
        if problem:
            raise AssertionError(problem)

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    def setUp(self):
        if self.f is None:
            self.skipTest(NO_TLS13)

    # -- helpers

    def ctx(self, alpn=None, verify_name=True):
        """A client context of this class's TLS version."""
        ctx = client_context(alpn=alpn)
        if self.tls is not None:
            harness.pin_version(ctx, self.tls)
        ctx.check_hostname = verify_name
        return ctx

    def s_client_version(self):
        """The s_client flag of this class's TLS version."""
        return {"1.2": ["-tls1_2"], "1.3": ["-tls1_3"]}.get(self.tls, [])

    def record(self, src, timeout=20):
        """The log record of the connection whose Tailscale-Ingress-Src was src."""
        def find():
            return [r for r in self.f.records() if r.get("src") == src]
        return wait_for(find, timeout, what=f"the log record of src={src}")[0]

    def open(self, **kw):
        src = kw.pop("src", None) or next_src()
        kw.setdefault("ctx", self.ctx())
        st, hello = dial(self.listen, src=src, **kw)
        return st, src

    def ok(self, payload=b"ping", **kw):
        """A connection that must work end to end; returns (stream info, record)."""
        st, src = self.open(**kw)
        try:
            got = exchange(st, payload)
            # After data: a TLS 1.3 ticket comes after the handshake.
            info = {
                "version": st.obj.version(),
                "cipher": st.obj.cipher()[0],
                "alpn": st.obj.selected_alpn_protocol(),
                "san": dict(st.obj.getpeercert() or {}).get("subjectAltName"),
                "reused": st.obj.session_reused,
                "session": st.obj.session,
            }
            st.close_notify()
        finally:
            st.close()
        self.assertEqual(got, payload, "data did not make the round trip")
        rec = self.record(src)
        self.assertEqual(rec.get("result"), "ok", rec)
        return info, rec

    def refused(self, backend_sock, **kw):
        """A handshake that must fail: returns (client error, log record) after
        checking the backend got not a single byte."""
        be = self.be[backend_sock]
        n0 = be.count()
        src = kw.pop("src", None) or next_src()
        kw.setdefault("ctx", self.ctx())
        try:
            st, _ = dial(self.listen, src=src, **kw)
            # A TLS 1.3 client finishes before it reads the server's verdict.
            exchange(st, b"x")
        except (ssl.SSLError, ConnectionError) as e:
            err = e
        else:
            desc = f"{st.obj.version()} {st.obj.cipher()} alpn={st.obj.selected_alpn_protocol()}"
            st.close()
            self.fail(f"handshake succeeded ({desc}); it must fail")
        rec = self.record(src)
        self.assertEqual(rec.get("result"), "handshake_failed", rec)
        self.assertEqual(bytes(be.conn(n0)["data"]), b"", "the backend received bytes of a failed handshake")
        return err, rec


def exchange(st, payload):
    """Echo backend: send payload, read as many bytes back."""
    st.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = st.recv()
        if not chunk:
            break
        got += chunk
    return got


def tls13(cls):
    """cls's tests again, with clients that offer TLS 1.3 only."""
    name = cls.__name__.replace("Test", "TLS13Test")
    return type(name, (cls,), {"tls": "1.3", "__module__": cls.__module__,
                               "__doc__": f"{cls.__name__}, over TLS 1.3."})


def unrecognized_name(testcase, err):
    testcase.assertIsInstance(err, ssl.SSLError)
    text = f"{getattr(err, 'reason', '')} {err}"
    testcase.assertTrue("TLSV1_UNRECOGNIZED_NAME" in text or "unrecognized name" in text,
                        f"expected an unrecognized_name alert, got {err!r}")


# ---------------------------------------------------------------- 1. SNI

WILD_CERT_NAME = "*.svc.example.ts.net"


class SNITest(FunneldCase):
    """[tls] cert for node, [backend other] with its own, [backend api.svc]
    with a wildcard *.svc.example.ts.net.  The SNI may pick only among the
    certificates of the backend the target routed to (DESIGN.md §1.4)."""
    tls = "1.2"

    @classmethod
    def backends(cls, wd):
        oc, ok = CERTS["other"]
        wc, wk = CERTS["wild"]
        return [(f"{TARGET}:443", wd("node.sock"), ""),
                (f"{OTHER}:443", wd("other.sock"), f"cert = {oc}\nkey = {ok}\n"),
                (f"{WILD_TARGET}:443", wd("wild.sock"), f"cert = {wc}\nkey = {wk}\n")]

    def san(self, info):
        return [v for k, v in info["san"] or () if k == "DNS"]

    def test_sni_of_target_gets_target_certificate(self):
        info, rec = self.ok(server_hostname=TARGET)
        self.assertEqual(info["version"], f"TLSv{self.tls}")
        self.assertEqual(self.san(info), [TARGET])
        self.assertEqual(rec["sni"], TARGET)
        self.assertEqual(rec["backend"], self.wd("node.sock"))

    def test_each_backend_serves_its_own_certificate(self):
        for target, name, san, sock in [(OTHER, OTHER, OTHER, "other.sock"),
                                        (WILD_TARGET, "x.svc.example.ts.net", WILD_CERT_NAME, "wild.sock")]:
            with self.subTest(target=target):
                info, rec = self.ok(server_hostname=name, target=f"{target}:443")
                self.assertEqual(self.san(info), [san])
                self.assertEqual(rec["sni"], name)
                self.assertEqual(rec["backend"], self.wd(sock))

    def test_sni_of_another_backend_is_refused(self):
        # Issue 13 #4: SNI chose the certificate among all configured ones
        # while the target chose the backend, so a client got another
        # backend's valid certificate and its bytes went to this one.
        ctx = self.ctx(verify_name=False)
        for target, sock, name in [(TARGET, "node.sock", OTHER), (OTHER, "other.sock", TARGET),
                                   (TARGET, "node.sock", "x.svc.example.ts.net")]:
            with self.subTest(target=target, sni=name):
                counts = {p: b.count() for p, b in self.be.items()}
                err, rec = self.refused(self.wd(sock), ctx=ctx, server_hostname=name, target=f"{target}:443")
                unrecognized_name(self, err)
                self.assertTrue(rec.get("reason", "").startswith("unrecognized_name"), rec)
                self.assertEqual(rec.get("tls"), "-")
                # The other backends were not even connected.
                for p, b in self.be.items():
                    if p != self.wd(sock):
                        self.assertEqual(b.count(), counts[p], f"{p} was connected")

    def test_no_sni_gets_certificate_of_the_target(self):
        ctx = self.ctx(verify_name=False)
        for target, name, sock in [(TARGET, TARGET, "node.sock"), (OTHER, OTHER, "other.sock"),
                                   (WILD_TARGET, WILD_CERT_NAME, "wild.sock")]:
            with self.subTest(target=target):
                info, rec = self.ok(ctx=ctx, server_hostname=None, target=f"{target}:443")
                self.assertEqual(self.san(info), [name])
                self.assertEqual(rec["sni"], "-")
                self.assertEqual(rec["backend"], self.wd(sock))

    def test_sni_is_case_insensitive_and_may_end_in_a_dot(self):
        info, rec = self.ok(server_hostname="NODE.Example.TS.net")
        self.assertEqual(self.san(info), [TARGET])
        self.assertEqual(rec["sni"], TARGET)
        info, rec = self.ok(server_hostname="Other.EXAMPLE.ts.net", target=f"{OTHER}:443")
        self.assertEqual(self.san(info), [OTHER])
        info, rec = self.ok(ctx=self.ctx(verify_name=False), server_hostname=TARGET + ".")
        self.assertEqual(self.san(info), [TARGET])
        self.assertEqual(rec["sni"], TARGET)

    def test_wildcard_certificate_covers_one_label(self):
        info, rec = self.ok(server_hostname="x.svc.example.ts.net", target=f"{WILD_TARGET}:443")
        self.assertEqual(self.san(info), [WILD_CERT_NAME])
        self.assertEqual(rec["backend"], self.wd("wild.sock"))
        err, rec = self.refused(self.wd("wild.sock"), ctx=self.ctx(verify_name=False),
                                server_hostname="a.b.svc.example.ts.net", target=f"{WILD_TARGET}:443")
        self.assertIn("unrecognized_name", rec.get("reason", ""))

    def test_unknown_sni_fails_with_unrecognized_name(self):
        ctx = self.ctx(verify_name=False)
        for name in ["unknown.example.com", "example.ts.net", "node.example.ts.net.evil"]:
            with self.subTest(sni=name):
                err, rec = self.refused(self.wd("node.sock"), ctx=ctx, server_hostname=name)
                unrecognized_name(self, err)
                self.assertTrue(rec.get("reason", "").startswith("unrecognized_name"), rec)
                self.assertEqual(rec.get("sni"), name)
                self.assertEqual(rec.get("tls"), "-")

    def test_sni_must_be_a_host_name(self):
        # Issue 13 #3: only NUL was refused, so CR, LF and ESC in a label a
        # wildcard covers reached the log line, the PROXY v2 AUTHORITY TLV
        # and the ticket partitions.  Python's ssl will not send such a
        # name: its ClientHello carries a placeholder of the same length,
        # replaced on the wire (nothing signs a ClientHello).
        label = "p" * 28
        placeholder = f"{label}.svc.example.ts.net"
        bad = ["x\r\nfunneld: conn 9 forged=1", "esc\x1b[2J\x1b[31mred", "tab\tand space",
               "caf\u00e9".encode().decode("latin-1"), "semi;colon\"quote", "slash/back\\slash"]
        be = self.be[self.wd("wild.sock")]
        for b in bad:
            with self.subTest(label=b):
                raw = b.encode("latin-1").ljust(len(label), b"z")
                n0 = be.count()
                src = next_src()
                st = Stream(None, self.ctx(verify_name=False), placeholder)
                hello = st.client_hello()
                self.assertIn(placeholder.encode(), hello)
                hello = hello.replace(label.encode(), raw)
                s = connect(self.listen, 20)
                try:
                    s.sendall(ingress_head(src=src, target=f"{WILD_TARGET}:443") + hello)
                    data, _ = harness.read_to_eof(s, timeout=10)
                finally:
                    s.close()
                self.assertTrue(data.startswith(RESPONSE_101), data[:80])
                alert = data[len(RESPONSE_101):]
                self.assertEqual((alert[:1], alert[5:7]), (b"\x15", b"\x02\x70"),
                                 f"expected a fatal unrecognized_name alert and nothing else, got {alert[:40]!r}")
                rec = self.record(src)
                self.assertTrue(rec.get("reason", "").startswith("unrecognized_name"), rec)
                self.assertEqual(rec.get("sni"), "-", "a name that is no host name was kept")
                self.assertEqual(bytes(be.conn(n0)["data"]), b"")
        self.assertNotIn("forged", self.f.log())
        self.assertNotIn("\x1b", self.f.log())

    def test_openssl_s_client_through_relay(self):
        v = self.s_client_version()
        port = start_relay(self, self.wd, self.listen, f"{OTHER}:443")
        rc, out = s_client(port, v + ["-servername", OTHER, "-verify_return_error", "-verify_hostname", OTHER])
        self.assertRegex(out, r"CN ?= ?other\.example\.ts\.net")     # OpenSSL 3.5 drops the spaces
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, rf"(?m)^New, TLSv{self.tls}, ")
        port = start_relay(self, self.wd, self.listen, f"{TARGET}:443")
        rc, out = s_client(port, v + ["-noservername", "-verify_return_error"])
        self.assertRegex(out, r"subject=.*CN ?= ?node\.example\.ts\.net")
        self.assertIn("Verify return code: 0 (ok)", out)
        for name in (OTHER, "nobody.example.org"):
            rc, out = s_client(port, v + ["-servername", name])
            self.assertNotEqual(rc, 0, out)
            self.assertIn("unrecognized name", out)


SNITLS13Test = tls13(SNITest)


# ---------------------------------------------------------------- 2. ALPN

class ALPNTest(FunneldCase):
    tls = "1.2"
    extra_tls = "alpn = h2, http/1.1\n"

    @classmethod
    def backends(cls, wd):
        return [(f"{TARGET}:443", wd("node.sock"), ""),
                (f"{OTHER}:443", wd("noalpn.sock"), "alpn =\n")]

    def test_h2_offered_gets_h2(self):
        info, rec = self.ok(ctx=self.ctx(alpn=["h2", "http/1.1"]))
        self.assertEqual(info["alpn"], "h2")
        self.assertEqual(rec["alpn"], "h2")
        self.assertEqual(rec["tls"], f"TLSv{self.tls}")

    def test_server_preference_wins(self):
        info, rec = self.ok(ctx=self.ctx(alpn=["http/1.1", "h2"]))
        self.assertEqual(info["alpn"], "h2")
        self.assertEqual(rec["alpn"], "h2")

    def test_http11_only_gets_http11(self):
        info, rec = self.ok(ctx=self.ctx(alpn=["http/1.1"]))
        self.assertEqual(info["alpn"], "http/1.1")
        self.assertEqual(rec["alpn"], "http/1.1")

    def test_no_alpn_offered_is_fine(self):
        info, rec = self.ok(ctx=self.ctx())
        self.assertIsNone(info["alpn"])
        self.assertEqual(rec["alpn"], "-")

    def test_no_common_protocol_fails_with_no_application_protocol(self):
        err, rec = self.refused(self.wd("node.sock"), ctx=self.ctx(alpn=["spdy/3"]))
        self.assertIsInstance(err, ssl.SSLError)
        text = f"{getattr(err, 'reason', '')} {err}".lower()
        self.assertTrue("no application protocol" in text or "no_application_protocol" in text,
                        f"expected a no_application_protocol alert, got {err!r}")

    def test_no_common_protocol_logged_as_no_application_protocol(self):
        # The log/metrics reason should name the alert, as unrecognized_name does
        # for SNI, not a generic "bad_client_hello".
        err, rec = self.refused(self.wd("node.sock"), ctx=self.ctx(alpn=["spdy/3"]))
        self.assertTrue(rec.get("reason", "").startswith("no_application_protocol"),
                        f"reason {rec.get('reason')!r}")

    def test_empty_alpn_in_backend_negotiates_nothing(self):
        for offer in (["h2", "http/1.1"], ["spdy/3"]):
            with self.subTest(offer=offer):
                info, rec = self.ok(ctx=self.ctx(alpn=offer), target=f"{OTHER}:443", server_hostname=TARGET)
                self.assertIsNone(info["alpn"])
                self.assertEqual(rec["alpn"], "-")
                self.assertEqual(rec["backend"], self.wd("noalpn.sock"))


ALPNTLS13Test = tls13(ALPNTest)


# ---------------------------------------------------------------- 3. resumption

A_SVC = "a.svc.example.ts.net"          # two names one wildcard certificate covers
B_SVC = "b.svc.example.ts.net"


def with_wildcard(wd):
    wc, wk = CERTS["wild"]
    return [(f"{TARGET}:443", wd("node.sock"), ""),
            (f"{WILD_TARGET}:443", wd("wild.sock"), f"cert = {wc}\nkey = {wk}\n")]


class ResumptionBase(FunneldCase):
    tls = "1.2"

    def first(self, ctx, **kw):
        info, rec = self.ok(ctx=ctx, **kw)
        self.assertFalse(info["reused"], "the first connection cannot be a resumption")
        self.assertIsNotNone(info["session"])
        return info["session"]

    def resume(self, ctx, session, **kw):
        """-> (session_reused, ClientHello) of a connection offering session."""
        src = next_src()
        st, hello = dial(self.listen, ctx=ctx, session=session, src=src, **kw)
        reused = st.obj.session_reused
        self.assertEqual(roundtrip(st, b"again"), b"again")
        self.assertEqual(self.record(src).get("result"), "ok")
        return reused, hello


class TicketResumptionTest(ResumptionBase):
    """Default: session tickets on."""

    @classmethod
    def backends(cls, wd):
        return with_wildcard(wd)

    def test_ticket_resumes(self):
        ctx = self.ctx()
        sess = self.first(ctx)
        self.assertTrue(sess.has_ticket, "no session ticket issued with session_tickets = yes (default)")
        for _ in range(3):
            reused, hello = self.resume(ctx, sess)
            if self.tls == "1.2":
                _, _, exts = parse_client_hello(hello)
                self.assertTrue(exts.get(EXT_SESSION_TICKET), "the client did not offer its ticket")
            self.assertTrue(reused, "a valid session ticket was not accepted")

    def test_resumption_survives_reload(self):
        ctx = self.ctx()
        sess = self.first(ctx)
        n = self.f.log().count("configuration reloaded")
        self.f.signal(signal.SIGHUP)
        wait_for(lambda: self.f.log().count("configuration reloaded") > n, 15, what="the reload")
        reused, _ = self.resume(ctx, sess)
        self.assertTrue(reused, "a reload with the same ticket_rotation invalidated the tickets")

    def test_session_not_resumed_under_another_server_name(self):
        # RFC 6066 section 3: a server "MUST NOT accept the request to resume
        # the session if the server_name extension contains a different name.
        # Instead, it proceeds with a full handshake".  Both names are on one
        # wildcard certificate of one backend: only the binding of sessions
        # to names tells them apart.
        ctx = self.ctx()
        target = f"{WILD_TARGET}:443"
        sess = self.first(ctx, server_hostname=A_SVC, target=target)
        reused, _ = self.resume(ctx, sess, server_hostname=A_SVC, target=target)
        self.assertTrue(reused)
        reused, _ = self.resume(ctx, sess, server_hostname=B_SVC, target=target)
        self.assertFalse(reused, f"a session of SNI {A_SVC} was resumed under SNI {B_SVC}")


TicketResumptionTLS13Test = tls13(TicketResumptionTest)


class CacheResumptionTest(ResumptionBase):
    """Session IDs: TLS 1.2 only (1.3 resumes with tickets alone)."""
    extra_tls = "session_tickets = no\n"

    @classmethod
    def backends(cls, wd):
        return with_wildcard(wd)

    def test_session_id_resumes(self):
        ctx = self.ctx()
        sess = self.first(ctx)
        self.assertFalse(sess.has_ticket, "a session ticket was issued with session_tickets = no")
        self.assertTrue(sess.id, "no session ID to resume with")
        for _ in range(3):
            reused, hello = self.resume(ctx, sess)
            _, sid, _ = parse_client_hello(hello)
            self.assertEqual(sid, sess.id)
            self.assertTrue(reused, "a cached session ID was not resumed")

    def test_session_not_resumed_under_another_server_name(self):
        ctx = self.ctx()
        target = f"{WILD_TARGET}:443"
        sess = self.first(ctx, server_hostname=A_SVC, target=target)
        reused, _ = self.resume(ctx, sess, server_hostname=B_SVC, target=target)
        self.assertFalse(reused, f"a cached session of SNI {A_SVC} was resumed under SNI {B_SVC} "
                                 "(RFC 6066 section 3)")


class WorkersMixin:
    """workers = 2: resumption must not depend on which worker accepts."""
    workers = 2

    def test_workers_started(self):
        tasks = os.listdir(f"/proc/{self.f.proc.pid}/task")
        self.assertGreaterEqual(len(tasks), 3, "workers = 2: expected the main thread and two workers")

    def many(self, ctx, sess, n=20, parallel=5):
        """n resumptions, `parallel` at a time (so that both workers take some)."""
        results, errors = [], []
        lock = threading.Lock()

        def one():
            try:
                st, _ = dial(self.listen, ctx=ctx, session=sess, src=next_src())
                reused = st.obj.session_reused
                echoed = roundtrip(st, b"w") == b"w"
                with lock:
                    results.append(reused and echoed)
            except BaseException as e:  # reported below
                with lock:
                    errors.append(repr(e))
        for i in range(0, n, parallel):
            ts = [threading.Thread(target=one) for _ in range(min(parallel, n - i))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), n)
        self.assertTrue(all(results), f"only {sum(results)} of {n} connections resumed")


class WorkersTicketTest(WorkersMixin, ResumptionBase):
    def test_tickets_resume_on_every_worker(self):
        ctx = self.ctx()
        sess = self.first(ctx)
        self.assertTrue(sess.has_ticket)
        self.many(ctx, sess)


WorkersTicketTLS13Test = tls13(WorkersTicketTest)


class WorkersCacheTest(WorkersMixin, ResumptionBase):
    extra_tls = "session_tickets = no\n"

    def test_session_cache_shared_by_workers(self):
        ctx = self.ctx()
        sess = self.first(ctx)
        self.assertFalse(sess.has_ticket)
        self.many(ctx, sess)


class TicketRotationTest(ResumptionBase):
    ROTATION = 2
    extra_tls = f"ticket_rotation = {ROTATION}s\n"

    def test_ticket_refused_after_two_rotations(self):
        ctx = self.ctx()
        t0 = time.monotonic()
        sess = self.first(ctx)
        self.assertTrue(sess.has_ticket)
        self.assertEqual(sess.ticket_lifetime_hint, self.ROTATION,
                         "the ticket lifetime hint should be ticket_rotation")
        reused, _ = self.resume(ctx, sess)
        elapsed = time.monotonic() - t0
        if not reused and elapsed >= self.ROTATION:
            self.skipTest(f"too slow to check the fresh ticket ({elapsed:.1f}s)")
        self.assertTrue(reused, "a fresh ticket was not accepted")
        # Past two rotations (plus a second of margin for whole-second clocks)
        # the key that sealed it is gone and the ticket has expired anyway.
        wait_for(lambda: time.monotonic() > t0 + 2 * self.ROTATION + 1, 2 * self.ROTATION + 5,
                 interval=0.1, what="two ticket rotations")
        reused, hello = self.resume(ctx, sess)
        if self.tls == "1.2":
            _, _, exts = parse_client_hello(hello)
            self.assertTrue(exts.get(EXT_SESSION_TICKET), "the client did not offer the old ticket")
        self.assertFalse(reused, "a ticket older than two rotations was still accepted")


TicketRotationTLS13Test = tls13(TicketRotationTest)


class PartitionTest(ResumptionBase):
    """Issue 13 #5: with a wildcard certificate a client can invent server
    names without end, and every name had a ticket partition (with a
    10,000-session cache) for the life of the process: 256 invented names
    used up the table, and every later name went without resumption.  The
    table is bounded and evicts the least recently used name, invented
    (wildcard-only) names first: a configured name and a name in use keep
    their sessions, a new name still gets a working ticket, and an evicted
    name's ticket just does not resume."""
    INVENTED = 300

    @classmethod
    def backends(cls, wd):
        return with_wildcard(wd)

    def full(self, ctx, name):
        """A full handshake under a new name, as fast as it goes."""
        st, _ = dial(self.listen, ctx=ctx, server_hostname=name, target=f"{WILD_TARGET}:443")
        self.assertEqual(roundtrip(st, b"n"), b"n")

    def test_invented_names_do_not_take_resumption_away(self):
        ctx = self.ctx()
        wild = {"target": f"{WILD_TARGET}:443"}
        exact = self.first(ctx)
        hot = self.first(ctx, server_hostname="hot.svc.example.ts.net", **wild)
        cold = self.first(ctx, server_hostname="cold.svc.example.ts.net", **wild)
        for i in range(self.INVENTED):
            self.full(ctx, f"n{i}.svc.example.ts.net")
            if i % 25 == 0:
                reused, _ = self.resume(ctx, hot, server_hostname="hot.svc.example.ts.net", **wild)
                self.assertTrue(reused, f"a name in use lost its resumption after {i} invented names")
        reused, _ = self.resume(ctx, exact)
        self.assertTrue(reused, f"{TARGET} (on its certificate) lost its resumption to invented names")
        reused, _ = self.resume(ctx, hot, server_hostname="hot.svc.example.ts.net", **wild)
        self.assertTrue(reused, "a name in use lost its resumption to invented names")
        fresh = self.first(ctx, server_hostname="fresh.svc.example.ts.net", **wild)
        self.assertTrue(fresh.has_ticket, "a new name got no ticket")
        reused, _ = self.resume(ctx, fresh, server_hostname="fresh.svc.example.ts.net", **wild)
        self.assertTrue(reused, f"a new name cannot resume after {self.INVENTED} invented names")
        reused, _ = self.resume(ctx, cold, server_hostname="cold.svc.example.ts.net", **wild)
        self.assertFalse(reused, "the least recently used invented name kept its partition")


PartitionTLS13Test = tls13(PartitionTest)


# ---------------------------------------------------------------- a warning alert before data

class MbedClient:
    """A TLS 1.2 client on this machine's mbedTLS, through ctypes: it can send
    what Python's ssl and s_client cannot (a warning alert), with what
    follows in the same segment.  No certificate check: it is the server's
    handling of records that is tested."""

    WANT_READ = -0x6900

    def __init__(self, sock, hostname):
        libs = {}
        for n in ("mbedcrypto", "mbedx509", "mbedtls"):
            path = ctypes.util.find_library(n)
            if path is None:
                raise unittest.SkipTest(f"lib{n} not found")
            libs[n] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        self.c, self.t = libs["mbedcrypto"], libs["mbedtls"]
        p, n = ctypes.c_void_p, ctypes.c_size_t
        self.c.mbedtls_ctr_drbg_seed.argtypes = [p, p, p, p, n]
        self.t.mbedtls_ssl_write.argtypes = [p, p, n]
        self.t.mbedtls_ssl_read.argtypes = [p, p, n]
        if hasattr(self.c, "psa_crypto_init"):
            self.c.psa_crypto_init()
        self.sock = sock
        self.batch = None
        # Opaque contexts, generously sized for either mbedTLS line.
        self.ssl, self.conf, self.drbg, self.ent = (ctypes.create_string_buffer(1 << 16) for _ in range(4))
        cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t)
        self._send, self._recv = cb(self.bio_send), cb(self.bio_recv)
        c, t = self.c, self.t
        c.mbedtls_entropy_init(self.ent)
        c.mbedtls_ctr_drbg_init(self.drbg)
        self.check(c.mbedtls_ctr_drbg_seed(self.drbg, c.mbedtls_entropy_func, self.ent, None, 0), "drbg_seed")
        t.mbedtls_ssl_init(self.ssl)
        t.mbedtls_ssl_config_init(self.conf)
        self.check(t.mbedtls_ssl_config_defaults(self.conf, 0, 0, 0), "config_defaults")
        t.mbedtls_ssl_conf_authmode(self.conf, 0)
        t.mbedtls_ssl_conf_rng(self.conf, c.mbedtls_ctr_drbg_random, self.drbg)
        t.mbedtls_ssl_conf_max_version(self.conf, 3, 3)
        self.check(t.mbedtls_ssl_setup(self.ssl, self.conf), "ssl_setup")
        self.check(t.mbedtls_ssl_set_hostname(self.ssl, hostname.encode()), "set_hostname")
        t.mbedtls_ssl_set_bio(self.ssl, None, self._send, self._recv, None)

    def check(self, ret, what):
        if ret != 0:
            raise AssertionError(f"mbedtls_{what}: -0x{-ret:04x}")

    def bio_send(self, _, buf, n):
        data = ctypes.string_at(buf, n)
        if self.batch is not None:
            self.batch += data
        else:
            self.sock.sendall(data)
        return n

    def bio_recv(self, _, buf, n):
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            return -0x6800      # MBEDTLS_ERR_SSL_TIMEOUT: the test fails rather than hangs
        ctypes.memmove(buf, data, len(data))
        return len(data)

    def handshake(self):
        self.check(self.t.mbedtls_ssl_handshake(self.ssl), "ssl_handshake")

    def send_in_one_segment(self, alert, data):
        """(level, description) alert, then data, in one send()."""
        self.batch = bytearray()
        self.check(self.t.mbedtls_ssl_send_alert_message(self.ssl, alert[0], alert[1]), "send_alert_message")
        if self.t.mbedtls_ssl_write(self.ssl, data, len(data)) != len(data):
            raise AssertionError("mbedtls_ssl_write")
        batch, self.batch = bytes(self.batch), None
        self.sock.sendall(batch)

    def read(self, n):
        buf = ctypes.create_string_buffer(n)
        while True:
            ret = self.t.mbedtls_ssl_read(self.ssl, buf, n)
            if ret != self.WANT_READ:
                break
        if ret < 0:
            raise AssertionError(f"mbedtls_ssl_read: -0x{-ret:04x}")
        return buf.raw[:ret]

    def free(self):
        self.t.mbedtls_ssl_free(self.ssl)
        self.t.mbedtls_ssl_config_free(self.conf)
        self.c.mbedtls_ctr_drbg_free(self.drbg)
        self.c.mbedtls_entropy_free(self.ent)


class WarningAlertTest(FunneldCase):
    """Issue 13 #6: mbedtls_ssl_read() answers a no_renegotiation warning
    alert with WANT_READ even when a record of data follows it in the same
    segment; that record sat in funneld's read-ahead until idle_timeout (30s
    here) while the connection waited for the socket."""
    tls = "1.2"

    def test_data_behind_a_no_renegotiation_alert_is_delivered(self):
        s = connect(self.listen, 20)
        try:
            s.sendall(ingress_head(src=next_src()))
            self.assertEqual(harness.recv_exact(s, len(RESPONSE_101)), RESPONSE_101)
            s.settimeout(8)
            c = MbedClient(s, TARGET)
            try:
                c.handshake()
                c.send_in_one_segment((1, 100), b"after the alert")     # warning, no_renegotiation
                t0 = time.monotonic()
                got = b""
                while len(got) < len(b"after the alert"):
                    got += c.read(64)
                self.assertEqual(got, b"after the alert")
                self.assertLess(time.monotonic() - t0, 5, "the data waited for the idle timeout")
            finally:
                c.free()
        finally:
            s.close()


# ---------------------------------------------------------------- 4. policy

OPENSSL_TO_MBEDTLS = {
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
}


OPENSSL13_TO_MBEDTLS = {
    "TLS_AES_128_GCM_SHA256": "TLS1-3-AES-128-GCM-SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS1-3-AES-256-GCM-SHA384",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS1-3-CHACHA20-POLY1305-SHA256",
}


def tls12_context(ciphers=None, curve=None):
    ctx = client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        ctx.set_ciphers(ciphers)
    if curve:
        try:
            ctx.set_ecdh_curve(curve)
        except ssl.SSLError as e:
            if curve != "X25519":
                raise
            # Debian 12's python3.11 (3.11.2) makes an EC_KEY of the curve name,
            # and X25519 is no EC_KEY curve; later Pythons (3.11.7, Debian 13's
            # 3.13) set it as the group.  No other way to offer X25519 alone here.
            raise unittest.SkipTest(f"this Python ({sys.version.split()[0]}) cannot offer X25519 "
                                    f"alone: set_ecdh_curve says {e}")
    return ctx


class PolicyTest(FunneldCase):
    """The default policy, ECDSA certificate."""

    def test_modern_client_gets_the_newest_version_and_aead(self):
        info, rec = self.ok(ctx=client_context())
        self.assertEqual(info["version"], harness.best_tls())
        self.assertEqual(rec["tls"], harness.best_tls())
        if harness.tls13():
            self.assertIn(info["cipher"], OPENSSL13_TO_MBEDTLS)
            self.assertEqual(rec["cipher"], OPENSSL13_TO_MBEDTLS[info["cipher"]])
        else:
            self.assertRegex(info["cipher"], r"^ECDHE-ECDSA-.*(GCM|CHACHA20)")
            self.assertEqual(rec["cipher"], OPENSSL_TO_MBEDTLS[info["cipher"]])

    def test_tls12_client_gets_tls12_aead(self):
        info, rec = self.ok(ctx=tls12_context())
        self.assertEqual(info["version"], "TLSv1.2")
        self.assertRegex(info["cipher"], r"^ECDHE-ECDSA-.*(GCM|CHACHA20)")
        self.assertEqual(rec["tls"], "TLSv1.2")
        self.assertEqual(rec["cipher"], OPENSSL_TO_MBEDTLS[info["cipher"]])

    def test_tls13_only_client(self):
        ctx = harness.pin_version(client_context(), "1.3")
        if harness.tls13():
            info, rec = self.ok(ctx=ctx)
            self.assertEqual((info["version"], rec["tls"]), ("TLSv1.3", "TLSv1.3"))
        else:
            self.refused(self.wd("node.sock"), ctx=ctx)

    def test_server_preference_order(self):
        ctx = tls12_context("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
                            "ECDHE-ECDSA-CHACHA20-POLY1305")
        info, rec = self.ok(ctx=ctx)
        self.assertEqual(info["cipher"], "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertEqual(rec["cipher"], "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256")
        # Without ChaCha20, the next one of the server's list.
        info, rec = self.ok(ctx=tls12_context("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"))
        self.assertEqual(info["cipher"], "ECDHE-ECDSA-AES128-GCM-SHA256")

    def test_cbc_only_client_refused(self):
        ctx = tls12_context("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES128-SHA")
        err, rec = self.refused(self.wd("node.sock"), ctx=ctx)
        self.assertIn("no_shared_cipher", rec.get("reason", ""))

    def test_non_ecdhe_client_refused(self):
        for suites in ("AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384"):
            with self.subTest(ciphers=suites):
                err, rec = self.refused(self.wd("node.sock"), ctx=tls12_context(suites))
                self.assertIn("no_shared_cipher", rec.get("reason", ""))

    def test_tls11_client_refused(self):
        ctx = client_context()
        ctx.check_hostname = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            probe = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=TARGET)
            try:
                probe.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello_ok = True
        except (ssl.SSLError, ValueError):
            hello_ok = False
        if hello_ok:
            st = Stream(None, ctx, TARGET)
            version, _, _ = parse_client_hello(st.client_hello())
            self.assertEqual(version, 0x0302, "the client did not offer TLS 1.1")
            err, rec = self.refused(self.wd("node.sock"), ctx=ctx, server_hostname=TARGET)
            self.assertIsInstance(err, ssl.SSLError)
            self.assertIn("protocol_version", rec.get("reason", ""))
            return
        # This OpenSSL will not even try TLS 1.1 from Python: s_client.
        port = start_relay(self, self.wd, self.listen, f"{TARGET}:443")
        rc, out = s_client(port, ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", TARGET])
        if "no protocols available" in out:
            self.skipTest("the local OpenSSL cannot speak TLS 1.1 at all")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("protocol version", out)

    def test_renegotiation_refused(self):
        # Not testable from Python's ssl: `openssl s_client` through the relay,
        # whose "R" command starts a client-initiated renegotiation.
        port = start_relay(self, self.wd, self.listen, f"{TARGET}:443")
        be = self.be[self.wd("node.sock")]
        n0 = be.count()
        out = self.wd(f"s_client-{time.monotonic_ns()}.out")
        with open(out, "w") as o:
            p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2",
                                  "-servername", TARGET, "-CAfile", pki().ca_cert],
                                 stdin=subprocess.PIPE, stdout=o, stderr=subprocess.STDOUT, text=True)
            try:
                p.stdin.write("hello\n")
                p.stdin.flush()
                wait_for(lambda: be.count() > n0 and bytes(be.conns[n0]["data"]).endswith(b"hello\n"), 20,
                         what="data through s_client")
                p.stdin.write("R\n")
                p.stdin.flush()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        text = open(out).read()
        if "RENEGOTIATING" not in text:
            self.skipTest("this s_client did not start a renegotiation")
        self.assertIn("no renegotiation", text, "the renegotiation was not refused")
        self.assertNotIn(b"R\n", bytes(be.conns[n0]["data"]))


class CipherListTest(FunneldCase):
    """`ciphers` sets the suites and the server's order (TLS 1.2 here)."""
    extra_tls = "versions = 1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384, TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\n"

    def test_configured_order(self):
        info, rec = self.ok(ctx=tls12_context("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"))
        self.assertEqual(info["cipher"], "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(rec["cipher"], "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384")
        info, rec = self.ok(ctx=tls12_context("ECDHE-ECDSA-AES128-GCM-SHA256"))
        self.assertEqual(info["cipher"], "ECDHE-ECDSA-AES128-GCM-SHA256")

    def test_suite_left_out_is_refused(self):
        err, rec = self.refused(self.wd("node.sock"), ctx=tls12_context("ECDHE-ECDSA-CHACHA20-POLY1305"))
        self.assertIn("no_shared_cipher", rec.get("reason", ""))


class RSAPolicyTest(FunneldCase):
    """An RSA certificate: ECDHE-RSA suites, default curves."""
    cert = "node-rsa"

    def test_rsa_certificate_gets_ecdhe_rsa_aead(self):
        info, rec = self.ok(ctx=tls12_context())
        self.assertEqual(info["cipher"], "ECDHE-RSA-CHACHA20-POLY1305")
        self.assertEqual(rec["cipher"], "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256")

    def test_rsa_certificate_over_tls13(self):
        # TLS 1.3 signs with RSA-PSS (PKCS#1 v2.1 in Debian 13's mbedTLS).
        if not harness.tls13():
            self.skipTest(NO_TLS13)
        info, rec = self.ok(ctx=harness.pin_version(client_context(), "1.3"))
        self.assertEqual((info["version"], rec["tls"]), ("TLSv1.3", "TLSv1.3"))

    def test_default_curves(self):
        for curve in ("X25519", "prime256v1"):
            with self.subTest(curve=curve):
                self.ok(ctx=tls12_context(curve=curve))
        err, rec = self.refused(self.wd("node.sock"), ctx=tls12_context(curve="secp384r1"))


class CurveP256OnlyTest(FunneldCase):
    # An RSA certificate, so that only the key exchange depends on the curve
    # (an ECDSA P-256 certificate needs P-256 in the client's list anyway).
    cert = "node-rsa"
    extra_tls = "curves = secp256r1\n"

    def test_curves_key(self):
        self.ok(ctx=tls12_context(curve="prime256v1"))
        err, rec = self.refused(self.wd("node.sock"), ctx=tls12_context(curve="X25519"))
        self.assertIn("no_shared_cipher", rec.get("reason", ""))


class BaseTableTest(FunneldCase):
    """ECDHE on Weierstrass curves uses a base-point table funneld computes
    once per curve and lends to each handshake (funneld/tls.c).  Many
    handshakes in a row and at once, on two workers and on two curves, must
    all work: a table freed or changed by one handshake breaks the next."""
    cert = "node-rsa"
    workers = 2
    extra_tls = "curves = secp256r1, secp384r1\n"

    def test_many_handshakes_on_two_curves(self):
        errors = []
        lock = threading.Lock()

        def some(curve, n):
            for _ in range(n):
                try:
                    info, _ = self.ok(ctx=tls12_context(curve=curve, ciphers="ECDHE+AESGCM"))
                    if info["reused"]:
                        raise AssertionError("resumed: no key exchange happened")
                except BaseException as e:  # reported below
                    with lock:
                        errors.append(f"{curve}: {e!r}")
        threads = [threading.Thread(target=some, args=(c, 6)) for c in ("prime256v1", "secp384r1") * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])


class CurveX25519OnlyTest(FunneldCase):
    cert = "node-rsa"
    extra_tls = "curves = x25519\n"

    def test_curves_key(self):
        self.ok(ctx=tls12_context(curve="X25519"))
        self.refused(self.wd("node.sock"), ctx=tls12_context(curve="prime256v1"))


if __name__ == "__main__":
    unittest.main()
