"""funnel-relay --forward: what a stock tailscaled's Funnel TCP forwarder
(`tailscale funnel --tcp 443 --proxy-protocol N tcp://HOST:PORT`) writes to
its backend, byte for byte (DESIGN.md section 8), checked against a Python
backend without funneld:

- the PROXY header: v1 line or v2 binary (exactly 28 bytes for an IPv4
  client, 52 for IPv6, no TLVs), command PROXY, TCP4/TCP6 by the client's
  family, source = the client, destination = the node address of that family
  with the backend's port, then the client's bytes untouched;
- no half-close: the first EOF from either side closes both sides;
- a refused dial closes the client without a byte; bytes both ways survive
  a transfer larger than the relay's buffers.

Clients connect from 127.0.0.1 and ::1 (skipped without IPv6 loopback).
"""
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

RELAY = os.path.join(h.TOOLS, "funnel-relay")
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
NODE4 = "100.100.100.100"       # funnel-relay's defaults
NODE6 = "fd7a:115c:a1e0::1"
CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(range(32)) + b"PROXY \r\n"


def v2_header(family, src, sport, dst, dport):
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    body = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack(">HH", sport, dport)
    return V2_SIG + bytes([0x21, 0x11 if family == 4 else 0x21]) + struct.pack(">H", len(body)) + body


class Relay:
    """One funnel-relay we started, listening on 127.0.0.1 and (when there
    is one) ::1, ports chosen by the kernel."""

    def __init__(self, args, want_ipv6=True):
        self.ipv6 = want_ipv6 and h.have_ipv6_loopback()
        listen = ["-l", "127.0.0.1:0"] + (["-l", "[::1]:0"] if self.ipv6 else [])
        self.proc = subprocess.Popen([RELAY, *listen, "-v", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=h.die_with_parent)
        self.lines = []
        self.ports = {}
        want = 2 if self.ipv6 else 1
        while len(self.ports) < want:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"funnel-relay exited {self.proc.wait()}: {self.lines}")
            self.lines.append(line)
            m = re.search(r"listening on (127\.0\.0\.1|\[::1\]):(\d+)$", line.strip())
            if m:
                self.ports[4 if m.group(1) == "127.0.0.1" else 6] = int(m.group(2))
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def connect(self, family=4):
        fam, host = (socket.AF_INET, "127.0.0.1") if family == 4 else (socket.AF_INET6, "::1")
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect((host, self.ports[family]))
        return s

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return self.proc.returncode


class Backend:
    """funneld's [listener] stand-in: a TCP socket on 127.0.0.1, accepted
    connections handed to the test."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"

    def accept(self, timeout=10):
        self.sock.settimeout(timeout)
        s, _ = self.sock.accept()
        s.settimeout(10)
        return s

    def close(self):
        self.sock.close()


class ForwarderTest(unittest.TestCase):
    def setUp(self):
        self.backend = Backend()
        self.relays = []
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        for r in self.relays:
            self.assertEqual(r.stop(), 0, "".join(r.lines))
        self.backend.close()

    def relay(self, *args):
        r = Relay(["--forward", "-f", self.backend.addr, *args])
        self.relays.append(r)
        return r

    def pair(self, relay, family=4, send=CLIENT_HELLO):
        """A client through relay, and the backend's side of it; the
        client's first bytes sent at once (they wait for the header)."""
        c = relay.connect(family)
        self.socks.append(c)
        if send:
            c.sendall(send)
        b = self.backend.accept()
        self.socks.append(b)
        return c, b

    def need6(self, relay):
        if not relay.ipv6:
            self.skipTest("no IPv6 loopback")

    # ---------------------------------------------------------------- headers

    def check_header(self, relay, family, want_header):
        c, b = self.pair(relay, family)
        got = h.recv_exact(b, len(want_header) + len(CLIENT_HELLO))
        self.assertEqual(got[:len(want_header)], want_header)
        self.assertEqual(got[len(want_header):], CLIENT_HELLO)
        return c, b

    def test_v2_ipv4(self):
        r = self.relay("--proxy-protocol", "2")
        c = r.connect(4)
        self.socks.append(c)
        c.sendall(CLIENT_HELLO)
        b = self.backend.accept()
        self.socks.append(b)
        want = v2_header(4, "127.0.0.1", c.getsockname()[1], NODE4, self.backend.port)
        self.assertEqual(len(want), 28)
        got = h.recv_exact(b, 28 + len(CLIENT_HELLO))
        self.assertEqual(got, want + CLIENT_HELLO)

    def test_v2_ipv6(self):
        r = self.relay("--proxy-protocol", "2")
        self.need6(r)
        c = r.connect(6)
        self.socks.append(c)
        c.sendall(CLIENT_HELLO)
        b = self.backend.accept()
        self.socks.append(b)
        want = v2_header(6, "::1", c.getsockname()[1], NODE6, self.backend.port)
        self.assertEqual(len(want), 52)
        self.assertEqual(h.recv_exact(b, 52 + len(CLIENT_HELLO)), want + CLIENT_HELLO)

    def test_v1_ipv4(self):
        r = self.relay("--proxy-protocol", "1")
        c = r.connect(4)
        self.socks.append(c)
        c.sendall(CLIENT_HELLO)
        b = self.backend.accept()
        self.socks.append(b)
        want = f"PROXY TCP4 127.0.0.1 {NODE4} {c.getsockname()[1]} {self.backend.port}\r\n".encode()
        self.assertEqual(h.recv_exact(b, len(want) + len(CLIENT_HELLO)), want + CLIENT_HELLO)

    def test_v1_ipv6(self):
        r = self.relay("--proxy-protocol", "1")
        self.need6(r)
        c = r.connect(6)
        self.socks.append(c)
        c.sendall(CLIENT_HELLO)
        b = self.backend.accept()
        self.socks.append(b)
        want = f"PROXY TCP6 ::1 {NODE6} {c.getsockname()[1]} {self.backend.port}\r\n".encode()
        self.assertEqual(h.recv_exact(b, len(want) + len(CLIENT_HELLO)), want + CLIENT_HELLO)

    def test_header_before_client_bytes(self):
        """The header arrives even when the client has sent nothing (a
        server-speaks-first backend would need it), then the client's bytes."""
        r = self.relay("--proxy-protocol", "2")
        c, b = self.pair(r, 4, send=b"")
        hdr = h.recv_exact(b, 28)
        self.assertEqual(hdr[:16], V2_SIG + b"\x21\x11\x00\x0c")
        b.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            b.recv(1)
        c.sendall(b"late")
        self.assertEqual(h.recv_exact(b, 4), b"late")

    def test_overrides(self):
        """--src poses as another public client; --node-ipv4/6 and --dst-port
        set the destination."""
        r = self.relay("--proxy-protocol", "2", "--src", "203.0.113.7:51234",
                       "--node-ipv4", "100.64.1.2", "--dst-port", "443")
        self.check_header(r, 4, v2_header(4, "203.0.113.7", 51234, "100.64.1.2", 443))
        # an IPv6 source from an IPv4 client: TCP6 with the node's IPv6
        r = self.relay("--proxy-protocol", "2", "--src", "[2001:db8::7]:1",
                       "--node-ipv6", "fd7a:115c:a1e0::99")
        self.check_header(r, 4, v2_header(6, "2001:db8::7", 1, "fd7a:115c:a1e0::99", self.backend.port))

    def test_src_without_port_keeps_clients(self):
        r = self.relay("--proxy-protocol", "1", "--src", "198.51.100.20")
        c, b = self.pair(r, 4)
        want = f"PROXY TCP4 198.51.100.20 {NODE4} {c.getsockname()[1]} {self.backend.port}\r\n".encode()
        self.assertEqual(h.recv_exact(b, len(want) + len(CLIENT_HELLO)), want + CLIENT_HELLO)

    def test_mapped_source_is_tcp4(self):
        """tailscaled unmaps an IPv4-mapped client: TCP4, 28 bytes."""
        r = self.relay("--proxy-protocol", "2", "--src", "[::ffff:198.51.100.9]:4242")
        self.check_header(r, 4, v2_header(4, "198.51.100.9", 4242, NODE4, self.backend.port))
        r = self.relay("--proxy-protocol", "1", "--src", "::ffff:198.51.100.9")
        c, b = self.pair(r, 4)
        want = f"PROXY TCP4 198.51.100.9 {NODE4} {c.getsockname()[1]} {self.backend.port}\r\n".encode()
        self.assertEqual(h.recv_exact(b, len(want) + len(CLIENT_HELLO)), want + CLIENT_HELLO)

    def test_v1_ipv6_text_as_go_writes_it(self):
        """RFC 5952 text: the first longest zero run compressed, a lone zero
        group kept, no dotted tail (Go prints ::102:304, not ::1.2.3.4)."""
        for src, text in (("[2001:db8:0:0:1:0:0:7]:9", "2001:db8::1:0:0:7"),
                          ("[2001:db8:0:1:0:1:0:1]:9", "2001:db8:0:1:0:1:0:1"),
                          ("[::1.2.3.4]:9", "::102:304"),
                          ("[FD7A:115C:A1E0:0000::0001]:9", "fd7a:115c:a1e0::1"),
                          ("[1::]:9", "1::")):
            r = self.relay("--proxy-protocol", "1", "--src", src, "--node-ipv6", "::")
            want = f"PROXY TCP6 {text} :: 9 {self.backend.port}\r\n".encode()
            self.check_header(r, 4, want)

    def test_no_header(self):
        """--proxy-protocol 0 (tailscaled without the flag): raw bytes only."""
        r = self.relay("--proxy-protocol", "0")
        c, b = self.pair(r, 4)
        self.assertEqual(h.recv_exact(b, len(CLIENT_HELLO)), CLIENT_HELLO)
        b.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            b.recv(1)

    # ---------------------------------------------------------------- teardown

    def test_client_eof_closes_both(self):
        """The client half-closes: the backend gets its last bytes, then EOF,
        and the client's read side is closed too, though the backend never
        closed (no half-close carried across)."""
        r = self.relay("--proxy-protocol", "2")
        c, b = self.pair(r, 4, send=b"last words")
        c.shutdown(socket.SHUT_WR)
        data, how = h.read_to_eof(b)
        self.assertEqual(data[28:], b"last words")
        self.assertEqual(how, "eof")
        data, how = h.read_to_eof(c)
        self.assertEqual(data, b"")
        h.wait_for(lambda: any("client EOF, both closed" in line for line in r.lines),
                   what="the relay's log line")

    def test_backend_eof_closes_both(self):
        """The backend half-closes: the client gets its last bytes, then EOF,
        and the backend's read side is closed, though the client never closed."""
        r = self.relay("--proxy-protocol", "1")
        c, b = self.pair(r, 6 if r.ipv6 else 4)
        first = b""
        while not first.endswith(CLIENT_HELLO):     # header, then the hello
            chunk = b.recv(4096)
            self.assertTrue(chunk, first)
            first += chunk
        b.sendall(b"bye")
        b.shutdown(socket.SHUT_WR)
        data, how = h.read_to_eof(c)
        self.assertEqual((data, how), (b"bye", "eof"))
        rest, how = h.read_to_eof(b)
        self.assertEqual((rest, how), (b"", "eof"))
        h.wait_for(lambda: any("backend EOF, both closed" in line for line in r.lines),
                   what="the relay's log line")

    def test_dial_refused(self):
        """Nothing listens on the backend port: the client is closed, no byte."""
        dead = h.free_port()
        r = Relay(["--forward", "--proxy-protocol", "2", "-f", f"127.0.0.1:{dead}"], want_ipv6=False)
        self.relays.append(r)
        c = r.connect(4)
        self.socks.append(c)
        data, how = h.read_to_eof(c)
        self.assertEqual(data, b"")
        h.wait_for(lambda: any("cannot connect to" in line for line in r.lines),
                   what="the relay's log line")

    def test_transfer_both_ways(self):
        """8 MiB each way at once, more than the relay buffers, SHA-256 at both ends."""
        r = self.relay("--proxy-protocol", "2")
        up = os.urandom(8 << 20)
        down = os.urandom(8 << 20)
        c, b = self.pair(r, 4, send=b"")
        self.assertEqual(len(h.recv_exact(b, 28)), 28)
        got = {}

        def pump(src, data, key):
            n, hsh = 0, hashlib.sha256()
            threading.Thread(target=src.sendall, args=(data,), daemon=True).start()
            src.settimeout(60)
            while n < len(data):
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                n += len(chunk)
                hsh.update(chunk)
            got[key] = hsh.hexdigest()

        t1 = threading.Thread(target=pump, args=(c, up, "down"))
        t2 = threading.Thread(target=pump, args=(b, down, "up"))
        t1.start()
        t2.start()
        t1.join(120)
        t2.join(120)
        self.assertEqual(got.get("up"), hashlib.sha256(up).hexdigest())
        self.assertEqual(got.get("down"), hashlib.sha256(down).hexdigest())

    # ---------------------------------------------------------------- usage

    def test_usage_errors(self):
        bad = [
            ["--forward", "-f", self.backend.addr, "-t", "x.ts.net:443"],
            ["--forward", "-f", self.backend.addr, "--wait-101"],
            ["--forward", "-f", "unix:/tmp/nowhere.sock", "--proxy-protocol", "2"],
            ["--forward", "-f", self.backend.addr, "--proxy-protocol", "3"],
            ["--forward", "-f", self.backend.addr, "--src", "203.0.113.7:99999"],
            ["--forward", "-f", self.backend.addr, "--src", "[203.0.113.7]:1"],
            ["--forward", "-f", self.backend.addr, "--node-ipv6", "::ffff:1.2.3.4"],
            ["-f", self.backend.addr, "-t", "x.ts.net:443", "--proxy-protocol", "2"],
            ["-f", self.backend.addr, "-t", "x.ts.net:443", "--dst-port", "443"],
        ]
        for args in bad:
            p = subprocess.run([RELAY, "-l", "127.0.0.1:0", *args], capture_output=True, text=True,
                               timeout=10)
            self.assertEqual(p.returncode, 2, f"{args}: {p.stderr}")


if __name__ == "__main__":
    unittest.main()
