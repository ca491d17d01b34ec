"""Integration: every row of DESIGN.md §1's refusal table over a real socket,
the order of the checks, and the command line's error paths (§3).

For each refusal: the exact status line, Content-Type: text/plain,
Connection: close, a body as long as Content-Length says, an orderly close
by funneld (EOF, not a reset), no 101 anywhere, the backend accepted nothing,
and one log record with result=refused_NNN and status=NNN.
"""
import os
import re
import subprocess
import time
import unittest

import harness as h
from harness import TARGET

SRC = b"203.0.113.7:51234"
TGT = f"{TARGET}:443".encode()
OK_TARGET = "ok.example.ts.net:443"     # routed to an echo backend that may accept


def head(method=b"POST", path=b"/v0/ingress", version=b"HTTP/1.1", src=SRC, target=TGT,
         host=TGT, extra=(), names=None):
    """A request head; src/target/host=None leaves that header out.  extra:
    raw header lines (without CRLF).  names: override the header names."""
    names = names or {}
    lines = [method + b" " + path + b" " + version]
    if host is not None:
        lines.append(names.get("host", b"Host") + b": " + host)
    if src is not None:
        lines.append(names.get("src", b"Tailscale-Ingress-Src") + b": " + src)
    if target is not None:
        lines.append(names.get("target", b"Tailscale-Ingress-Target") + b": " + target)
    lines.extend(extra)
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def padded_head(total, target=TGT):
    """A valid head of exactly `total` bytes (an X-Pad header fills it)."""
    base = head(target=target, extra=[b"X-Pad: "])
    pad = total - len(base)
    assert pad >= 0
    out = head(target=target, extra=[b"X-Pad: " + b"a" * pad])
    assert len(out) == total, len(out)
    return out


class RefusalCase(h.ClassDaemonCase):
    """One funneld per class (setUpClass); a ledger per test checks that
    every connection made got exactly one log record."""

    addr = None
    guarded = ()        # backends that must never accept a connection in this class

    def tearDown(self):
        super().tearDown()
        for b in self.guarded:
            self.assertEqual(b.accepted, 0, f"backend {b.path} accepted a connection")

    # -- helpers

    def connect(self, addr=None, timeout=10):
        s = h.connect(addr or self.addr, timeout)
        self.ledger.add()
        return s

    def assertRefused(self, raw, status, addr=None, trailer=b"", split=False):
        """Send raw (+ trailer bytes the relay pipelined), expect a refusal.
        Returns (headers, body, record)."""
        guarded_before = [b.accepted for b in self.guarded]
        n_before = len(self.ledger.new_records())
        s = self.connect(addr)
        try:
            if split:
                # Two writes: the head then whatever the test wants behind.
                s.sendall(raw)
                s.sendall(trailer)
            else:
                s.sendall(raw + trailer)
            data, how = h.read_to_eof(s, limit=64 * 1024, timeout=10)
        finally:
            s.close()
        self.assertEqual(how, "eof", f"funneld reset the connection instead of closing it; got {data!r}")
        self.assertTrue(data, "connection closed without a response")
        self.assertNotIn(b"Switching Protocols", data)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, f"more than one response: {data!r}")
        head_bytes, sep, body = data.partition(b"\r\n\r\n")
        self.assertTrue(sep, f"response head not terminated: {data!r}")
        lines = head_bytes.decode("latin-1").split("\r\n")
        self.assertEqual(lines[0], f"HTTP/1.1 {status} {h.STATUS_TEXT[status]}", f"response: {data!r}")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            self.assertTrue(colon, f"bad header line {line!r}")
            self.assertNotIn(name.strip().lower(), headers, f"duplicate header {name}")
            headers[name.strip().lower()] = value.strip()
        self.assertRegex(headers.get("content-type", ""), r"^text/plain(\s*;.*)?$")
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assertNotIn("upgrade", headers)
        if "content-length" in headers:
            self.assertEqual(int(headers["content-length"]), len(body), f"body {body!r}")
        if status == 405:
            self.assertEqual(headers.get("allow"), "POST")
        rec = self.ledger.wait(n_before + 1)[n_before]
        self.assertEqual(rec["result"], f"refused_{status}", rec)
        self.assertEqual(rec["status"], str(status), rec)
        for b, before in zip(self.guarded, guarded_before):
            self.assertEqual(b.accepted, before, f"backend {b.path} accepted a refused connection")
        return headers, body, rec


# ======================================================================

class RefusalTable(RefusalCase):
    """The table's rows that a unix listener can show (the peer is always
    allowed there)."""

    @classmethod
    def setUpClass(cls):
        cert, key = h.leaf_once(TARGET, "ec")
        cls.wd = h.Workdir()
        # The target every refused request names: its backend must never connect.
        cls.guard = h.Backend(cls.wd("guard.sock"), mode="record")
        cls.ok = h.Backend(cls.wd("ok.sock"), mode="echo")
        cls.absent = cls.wd("absent.sock")                      # no file at all
        cls.dead = h.dead_unix_socket(cls.wd("dead.sock"))      # a file, no listener
        cls.backends = [cls.guard, cls.ok]
        cls.guarded = (cls.guard,)
        cls.addr = cls.wd("funneld.sock")
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [
            (f"{TARGET}:443", cls.guard.path),
            (OK_TARGET, cls.ok.path),
            ("absent.example.ts.net:443", cls.absent),
            ("dead.example.ts.net:443", cls.dead),
        ]))

    def stream(self, raw, pipelined=True):
        """Expect raw to be accepted: 101, TLS, echo, clean close."""
        n_before = len(self.ledger.new_records())
        tls = h.open_stream_with_head(self.addr, raw, pipelined=pipelined)
        self.ledger.add()
        try:
            got, closed = h.tls_transfer(tls, b"ping", 4, timeout=10)
            self.assertEqual(got, b"ping")
            got, closed = h.tls_transfer(tls, close_notify=True, until_close=True, timeout=10)
            self.assertEqual(closed, "close_notify")
        finally:
            tls.close()
        rec = self.ledger.wait(n_before + 1)[n_before]
        self.assertEqual(rec["result"], "ok", rec)
        self.assertEqual(rec["status"], "101", rec)
        return rec

    # -- 431

    def test_431_head_larger_than_8k(self):
        self.assertRefused(padded_head(8193, target=TGT), 431)
        self.assertRefused(padded_head(20000, target=TGT), 431)
        # No end of head at all, just bytes.
        self.assertRefused(b"POST /v0/ingress HTTP/1.1\r\nX-Pad: " + b"b" * 9000, 431)
        # The first 4 KiB in one write, the rest in another.
        big = padded_head(12000)
        self.assertRefused(big[:4096], 431, trailer=big[4096:], split=True)

    def test_8192_byte_head_is_accepted(self):
        raw = padded_head(8192, target=OK_TARGET.encode())
        self.stream(raw, pipelined=True)
        self.stream(raw, pipelined=False)

    # -- 400 malformed

    def test_400_malformed_request_line(self):
        good = head()
        first, rest = good.split(b"\r\n", 1)
        variants = {
            "bare LF after request line": first + b"\n" + rest,
            "NUL in request line": first.replace(b"/v0/ingress", b"/v0/ing\x00ress") + b"\r\n" + rest,
            "two spaces": first.replace(b" /v0", b"  /v0") + b"\r\n" + rest,
            "no version": b"POST /v0/ingress\r\n" + rest,
            "HTTP/2.0": first.replace(b"HTTP/1.1", b"HTTP/2.0") + b"\r\n" + rest,
            "lower-case version": first.replace(b"HTTP/1.1", b"http/1.1") + b"\r\n" + rest,
            "absolute-form junk": first.replace(b"/v0/ingress", b"v0/ingress") + b"\r\n" + rest,
            "leading space": b" " + good,
            "control char": first.replace(b"POST", b"PO\x01ST") + b"\r\n" + rest,
            "bare CR": first + b"\rX" + b"\r\n" + rest,
        }
        for name, raw in variants.items():
            with self.subTest(name):
                self.assertRefused(raw, 400)

    def test_400_malformed_header_line(self):
        variants = {
            "bare LF ending a header": head().replace(b"\r\nTailscale-Ingress-Target", b"\nTailscale-Ingress-Target"),
            "bare LF in the final blank line": head()[:-2] + b"\n",
            "obs-fold (space)": head(extra=[b"X-Folded: a", b" continued"]),
            "obs-fold (tab)": head(extra=[b"X-Folded: a", b"\tcontinued"]),
            "NUL in a value": head(extra=[b"X-Nul: a\x00b"]),
            "NUL in Src": head(src=b"203.0.113.7:5\x001234"),
            "NUL in a name": head(extra=[b"X-N\x00ul: a"]),
            "no colon": head(extra=[b"X-No-Colon"]),
            "space before colon": head(extra=[b"X-Space : a"]),
            "empty name": head(extra=[b": value"]),
            "bad name char": head(extra=[b"X(bad): v"]),
            "DEL in value": head(extra=[b"X-Del: a\x7fb"]),
        }
        for name, raw in variants.items():
            with self.subTest(name):
                self.assertRefused(raw, 400)

    # -- 403 browser

    def test_403_origin(self):
        for line in (b"Origin: https://evil.example", b"origin: null", b"ORIGIN: x"):
            with self.subTest(line):
                self.assertRefused(head(extra=[line]), 403)

    def test_403_referer(self):
        for line in (b"Referer: https://evil.example/", b"referer: x"):
            with self.subTest(line):
                self.assertRefused(head(extra=[line]), 403)

    # -- 404 path, 405 method

    def test_404_path(self):
        for path in (b"/", b"/v0/ingress/", b"/v0/INGRESS", b"/v1/ingress", b"/v0/ingressx", b"/v0"):
            with self.subTest(path):
                self.assertRefused(head(path=path), 404)

    def test_405_method(self):
        for method in (b"GET", b"PUT", b"CONNECT", b"post", b"POSTX"):
            with self.subTest(method):
                self.assertRefused(head(method=method), 405)

    # -- 400 Src / Target

    def test_400_src_missing_or_bad(self):
        variants = {
            "missing": head(src=None),
            "empty": head(src=b""),
            "no port": head(src=b"203.0.113.7"),
            "port 0": head(src=b"203.0.113.7:0"),
            "port too big": head(src=b"203.0.113.7:65536"),
            "port not a number": head(src=b"203.0.113.7:80x"),
            "a name": head(src=b"client.example.com:443"),
            "short IPv4": head(src=b"203.0.113:443"),
            "unbracketed IPv6": head(src=b"2001:db8::1:443"),
            "bracketed IPv6 without port": head(src=b"[2001:db8::1]"),
            "bad IPv6": head(src=b"[2001:db8::g]:443"),
            "duplicate": head(extra=[b"Tailscale-Ingress-Src: 198.51.100.1:1"]),
        }
        for name, raw in variants.items():
            with self.subTest(name):
                self.assertRefused(raw, 400)

    def test_400_target_missing_or_bad(self):
        variants = {
            "missing": head(target=None),
            "empty": head(target=b""),
            "no port": head(target=TARGET.encode()),
            "empty port": head(target=TARGET.encode() + b":"),
            "no host": head(target=b":443"),
            "port 0": head(target=TARGET.encode() + b":0"),
            "port too big": head(target=TARGET.encode() + b":65536"),
            "space in host": head(target=b"node example:443"),
            "bad char in host": head(target=b"node!.example.ts.net:443"),
            "duplicate": head(extra=[b"Tailscale-Ingress-Target: " + TGT]),
        }
        for name, raw in variants.items():
            with self.subTest(name):
                self.assertRefused(raw, 400)

    # -- 400 body

    def test_400_body(self):
        variants = {
            "Content-Length: 5": (head(extra=[b"Content-Length: 5"]), b""),
            "Content-Length: 5 with the body": (head(extra=[b"Content-Length: 5"]), b"hello"),
            "Transfer-Encoding: chunked": (head(extra=[b"Transfer-Encoding: chunked"]), b"5\r\nhello\r\n0\r\n\r\n"),
            "Transfer-Encoding: identity": (head(extra=[b"Transfer-Encoding: identity"]), b""),
            "transfer-encoding lower case": (head(extra=[b"transfer-encoding: chunked"]), b""),
            "Content-Length: 0 and chunked": (head(extra=[b"Content-Length: 0", b"Transfer-Encoding: chunked"]), b""),
            "Content-Length not a number": (head(extra=[b"Content-Length: five"]), b""),
            "Content-Length negative": (head(extra=[b"Content-Length: -1"]), b""),
        }
        for name, (raw, body) in variants.items():
            with self.subTest(name):
                self.assertRefused(raw, 400, trailer=body)

    # -- accepted heads (the other side of the rows above)

    def test_content_length_zero_is_accepted(self):
        okt = OK_TARGET.encode()
        self.stream(head(target=okt, extra=[b"Content-Length: 0"]))
        self.stream(head(target=okt, extra=[b"content-length: 0"]), pipelined=False)

    def test_header_names_are_case_insensitive(self):
        okt = OK_TARGET.encode()
        names = {"host": b"HOST", "src": b"tailscale-ingress-src", "target": b"TAILSCALE-INGRESS-TARGET"}
        rec = self.stream(head(target=okt, host=okt, names=names))
        self.assertEqual(rec["src"], "203.0.113.7:51234")
        self.assertEqual(rec["target"], OK_TARGET)

    def test_ipv6_src_is_accepted(self):
        rec = self.stream(head(target=OK_TARGET.encode(), src=b"[2001:db8::7]:51234"))
        self.assertEqual(rec["src"], "[2001:db8::7]:51234")

    def test_target_host_case_and_trailing_dot(self):
        self.stream(head(target=b"OK.Example.TS.NET:443"))
        self.stream(head(target=b"ok.example.ts.net.:443"))

    # -- 404 no backend

    def test_404_no_backend_for_target(self):
        for target in (b"other.example.ts.net:443", TARGET.encode() + b":8443",
                       b"example.ts.net:443", b"[2001:db8::1]:443"):
            with self.subTest(target):
                self.assertRefused(head(target=target), 404)

    # -- 502

    def test_502_backend_socket_absent(self):
        self.assertFalse(os.path.exists(self.absent))
        _, body, rec = self.assertRefused(head(target=b"absent.example.ts.net:443"), 502)
        self.assertFalse(os.path.exists(self.absent))
        # The relay learns nothing about the node's file system; the log does.
        self.assertNotIn(self.absent.encode(), body)
        self.assertNotIn(b"No such file", body)
        self.assertNotIn(b"/", body.split(b":", 1)[-1])
        self.assertIn(self.absent, rec.get("reason", ""))
        self.assertIn("No such file", rec.get("reason", ""))

    def test_502_backend_refusing(self):
        self.assertTrue(os.path.exists(self.dead))
        self.assertRefused(head(target=b"dead.example.ts.net:443"), 502)
        # Pipelined ClientHello behind it changes nothing.
        tls = h.TLSStream(None, h.client_context(), TARGET)
        self.assertRefused(head(target=b"dead.example.ts.net:443"), 502, trailer=tls.client_hello())

    # -- the order of the checks, and refusals with TLS bytes behind them

    def test_checks_in_table_order(self):
        cases = [
            ("malformed line before Origin", head(extra=[b"Origin: x", b"X-Nul: \x00"]), 400),
            ("Origin before path", head(path=b"/nope", extra=[b"Origin: x"]), 403),
            ("Referer before method", head(method=b"GET", extra=[b"Referer: x"]), 403),
            ("path before method", head(method=b"GET", path=b"/nope"), 404),
            ("method before Src", head(method=b"GET", src=None), 405),
            ("method before body", head(method=b"PUT", extra=[b"Content-Length: 5"]), 405),
            ("Target before routing", head(target=b"other.example.ts.net"), 400),
            ("body before routing", head(target=b"other.example.ts.net:443",
                                         extra=[b"Transfer-Encoding: chunked"]), 400),
            ("body before backend connect", head(target=b"dead.example.ts.net:443",
                                                 extra=[b"Content-Length: 1"]), 400),
            ("routing before backend connect", head(target=b"dead.example.ts.net:8443"), 404),
        ]
        for name, raw, status in cases:
            with self.subTest(name):
                self.assertRefused(raw, status)

    def test_refusals_with_a_pipelined_client_hello(self):
        for raw, status in ((head(method=b"GET"), 405), (head(path=b"/x"), 404),
                            (head(target=b"other.example.ts.net:443"), 404), (head(src=None), 400)):
            tls = h.TLSStream(None, h.client_context(), TARGET)
            with self.subTest(status=status):
                self.assertRefused(raw, status, trailer=tls.client_hello())


# ======================================================================

class HeaderTimeout(RefusalCase):
    """408 with header_timeout = 1s."""

    @classmethod
    def setUpClass(cls):
        cert, key = h.leaf_once(TARGET, "ec")
        cls.wd = h.Workdir()
        cls.guard = h.Backend(cls.wd("guard.sock"), mode="record")
        cls.backends = [cls.guard]
        cls.guarded = (cls.guard,)
        cls.addr = cls.wd("funneld.sock")
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [(f"{TARGET}:443", cls.guard.path)],
                                header_timeout="1s"))

    def timed_refusal(self, sender):
        """Connect, let sender(sock) write, then expect the 408 and EOF."""
        n_before = len(self.ledger.new_records())
        s = self.connect()
        t0 = time.monotonic()
        try:
            sender(s)
            data, how = h.read_to_eof(s, timeout=10)
        finally:
            s.close()
        elapsed = time.monotonic() - t0
        self.assertEqual(how, "eof", data)
        self.assertTrue(data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data)
        self.assertIn(b"\r\nConnection: close\r\n", data)
        self.assertRegex(data.decode("latin-1"), r"(?i)\r\ncontent-type: text/plain")
        self.assertNotIn(b"101", data.split(b"\r\n")[0])
        self.assertGreaterEqual(elapsed, 0.9, "408 before header_timeout")
        self.assertLess(elapsed, h.slack(4.0), "408 long after header_timeout")
        rec = self.ledger.wait(n_before + 1)[n_before]
        self.assertEqual(rec["result"], "refused_408", rec)
        self.assertEqual(rec["status"], "408", rec)

    def test_408_partial_head(self):
        self.timed_refusal(lambda s: s.sendall(head()[:40]))

    def test_408_partial_head_ending_in_crlf(self):
        raw = head()
        self.timed_refusal(lambda s: s.sendall(raw[:raw.index(b"\r\n") + 2]))

    def test_408_nothing_sent(self):
        self.timed_refusal(lambda s: None)

    def test_408_trickled_head_does_not_extend_the_deadline(self):
        raw = head(extra=[b"X-Slow: " + b"s" * 200])

        def trickle(s):
            # One byte every 0.1 s, stopping as soon as funneld answers:
            # the head would take ~30 s to complete.
            for i in range(len(raw) - 1):
                s.sendall(raw[i:i + 1])
                if h.wait_readable(s, 0.1):
                    return
        self.timed_refusal(trickle)

    def test_complete_head_within_timeout_is_not_408(self):
        # The 1 s is for the head: a whole head is answered for what it
        # says (here, no backend), not timed out.
        self.assertRefused(head(target=b"other.example.ts.net:443"), 404)


# ======================================================================

class PeerNotAllowed(RefusalCase):
    """allow = 10.0.0.0/8 on a 127.0.0.1 TCP listener: 403.  A unix listener
    of the same daemon is always allowed."""

    @classmethod
    def setUpClass(cls):
        cert, key = h.leaf_once(TARGET, "ec")
        cls.wd = h.Workdir()
        cls.be = h.Backend(cls.wd("be.sock"), mode="echo")
        cls.backends = [cls.be]
        cls.port = h.free_port()
        cls.addr = ("127.0.0.1", cls.port)
        cls.unix = cls.wd("funneld.sock")
        cls.start_funneld(h.make_config([f"127.0.0.1:{cls.port}", "unix:" + cls.unix], cert, key,
                                [(f"{TARGET}:443", cls.be.path)], allow="10.0.0.0/8"))

    def test_403_peer_not_in_allow(self):
        before = self.be.accepted
        _, _, rec = self.assertRefused(head(), 403)
        self.assertRegex(rec["peer"], r"^127\.0\.0\.1:\d+$")
        # Whatever else the request says.
        self.assertRefused(head(method=b"GET", path=b"/x", src=None), 403)
        tls = h.TLSStream(None, h.client_context(), TARGET)
        self.assertRefused(head(), 403, trailer=tls.client_hello())
        self.assertEqual(self.be.accepted, before)

    def test_malformed_before_allow(self):
        self.assertRefused(head(extra=[b"X-Nul: \x00"]), 400)
        self.assertRefused(padded_head(9000), 431)

    def test_unix_listener_always_allowed(self):
        before = self.be.accepted
        tls = h.open_stream(self.unix)
        self.ledger.add()
        try:
            got, _ = h.tls_transfer(tls, b"hi", 2, timeout=10)
            self.assertEqual(got, b"hi")
        finally:
            tls.close()
        rec = self.ledger.wait(self.ledger.made)[-1]
        self.assertEqual(rec["peer"], "unix")
        self.assertEqual(self.be.accepted, before + 1)


# ======================================================================

class MaxConnections(RefusalCase):
    """max_connections = 1: a second stream gets 503 while the first is open;
    after the first ends, a new one is served."""

    @classmethod
    def setUpClass(cls):
        cert, key = h.leaf_once(TARGET, "ec")
        cls.wd = h.Workdir()
        cls.be = h.Backend(cls.wd("be.sock"), mode="echo")
        cls.backends = [cls.be]
        cls.addr = cls.wd("funneld.sock")
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [
            (f"{TARGET}:443", cls.be.path),
            ("absent.example.ts.net:443", cls.wd("absent.sock")),
        ], max_connections=1))

    def echo(self, tls, data):
        got, _ = h.tls_transfer(tls, data, len(data), timeout=10)
        self.assertEqual(got, data)

    def test_503_over_max_connections(self):
        first = h.open_stream(self.addr)
        self.ledger.add()
        try:
            self.echo(first, b"first")
            accepted = self.be.accepted
            self.assertEqual(accepted, 1)
            self.assertRefused(head(), 503)
            tls = h.TLSStream(None, h.client_context(), TARGET)
            self.assertRefused(head(), 503, trailer=tls.client_hello())
            # The checks before it still answer for themselves...
            self.assertRefused(head(target=b"other.example.ts.net:443"), 404)
            self.assertRefused(head(method=b"GET"), 405)
            # ...and 503 comes before trying the backend.
            self.assertRefused(head(target=b"absent.example.ts.net:443"), 503)
            self.assertEqual(self.be.accepted, accepted, "backend connected for a 503")
            self.echo(first, b"still alive")
        finally:
            first.close_notify()
            first.close()
        # The first connection's record, then room again.
        recs = self.ledger.check()
        self.assertEqual((recs[-1]["status"], recs[-1]["result"]), ("101", "ok"), recs[-1])
        second = h.open_stream(self.addr)
        self.ledger.add()
        try:
            self.echo(second, b"second")
        finally:
            second.close_notify()
            second.close()
        rec = self.ledger.wait(self.ledger.made)[-1]
        self.assertEqual(rec["result"], "ok", rec)
        # And the second freed its slot too.
        third = h.open_stream(self.addr)
        self.ledger.add()
        try:
            self.echo(third, b"third")
        finally:
            third.close_notify()
            third.close()


# ======================================================================

class CommandLine(unittest.TestCase):
    """funneld -t / -x / -V / -h (DESIGN.md §3)."""

    @classmethod
    def setUpClass(cls):
        cls.cert, cls.key = h.leaf_once(TARGET, "ec")
        cls.cert2, cls.key2 = h.leaf_once("other.example.ts.net", "ec")
        cls.wd = h.Workdir()

    @classmethod
    def tearDownClass(cls):
        cls.wd.cleanup()

    def run_funneld(self, args, timeout=30):
        return subprocess.run([h.FUNNELD] + args, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def config(self, name, text):
        path = self.wd(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def good_text(self, cert=None, key=None):
        return h.make_config("unix:" + self.wd("l.sock"), cert or self.cert, key or self.key,
                             [(f"{TARGET}:443", self.wd("be.sock"))])

    @staticmethod
    def line_of(text, needle):
        for i, line in enumerate(text.split("\n"), 1):
            if needle in line:
                return i
        raise AssertionError(f"{needle!r} not in config")

    def check_bad(self, name, text, line_needle, must_name=None):
        path = self.config(name, text)
        p = self.run_funneld(["-t", "-c", path])
        self.assertEqual(p.returncode, 1, p)
        self.assertNotIn("configuration OK", p.stdout)
        line = self.line_of(text, line_needle)
        self.assertRegex(p.stderr, rf"(?m)^{re.escape(path)}:{line}: \S", p.stderr)
        if must_name:
            self.assertIn(must_name, p.stderr)
        return p

    def test_t_good_config(self):
        path = self.config("good.conf", self.good_text())
        p = self.run_funneld(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("configuration OK", p.stdout)
        # -t only checks: nothing is listening afterwards.
        self.assertFalse(os.path.exists(self.wd("l.sock")))

    def test_t_missing_cert_file(self):
        missing = self.wd("no-such.crt")
        self.check_bad("nocert.conf", self.good_text(cert=missing), "cert =", must_name=missing)

    def test_t_missing_key_file(self):
        missing = self.wd("no-such.key")
        self.check_bad("nokey.conf", self.good_text(key=missing), "key =", must_name=missing)

    def test_t_key_does_not_match_cert(self):
        text = self.good_text(cert=self.cert, key=self.key2)
        p = self.check_bad("mismatch.conf", text, "key =")
        self.assertTrue(self.key2 in p.stderr or self.cert in p.stderr, p.stderr)

    def test_t_unknown_key(self):
        text = self.good_text().replace("[funneld]\n", "[funneld]\nno_such_key = 1\n")
        self.check_bad("unknown.conf", text, "no_such_key", must_name="no_such_key")

    def test_t_bad_value(self):
        text = self.good_text().replace("header_timeout = 3s", "header_timeout = soon")
        self.check_bad("badvalue.conf", text, "header_timeout")

    def test_t_unknown_section(self):
        text = self.good_text() + "\n[nonsense]\nx = 1\n"
        self.check_bad("section.conf", text, "[nonsense]")

    def test_unknown_option_exits_2(self):
        p = self.run_funneld(["-x"])
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("usage", p.stderr.lower())
        p = self.run_funneld(["-t", "-c", self.config("g.conf", self.good_text()), "extra-argument"])
        self.assertEqual(p.returncode, 2, p)

    def test_version(self):
        p = self.run_funneld(["-V"])
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex(p.stdout, r"^funneld \d+\.\d+(\.\d+)?\S*\n$")

    def test_help(self):
        p = self.run_funneld(["-h"])
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("usage", p.stdout.lower())

    def test_bad_config_refuses_to_start(self):
        text = self.good_text().replace("[funneld]\n", "[funneld]\nno_such_key = 1\n")
        path = self.config("bad-start.conf", text)
        p = self.run_funneld(["-c", path])
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, rf"{re.escape(path)}:{self.line_of(text, 'no_such_key')}: ")
        self.assertFalse(os.path.exists(self.wd("l.sock")))


if __name__ == "__main__":
    unittest.main()
