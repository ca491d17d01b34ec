"""PROXY protocol headers from funneld to its backends.

(c) Byte-exact: a Python backend records what funneld writes; the v1 line and
    the v2 binary header (addresses, ports, TLVs) are parsed and checked
    against Tailscale-Ingress-Src, the target's port, SNI, ALPN and the
    negotiated TLS parameters, and the first decrypted bytes must follow the
    header immediately.  Destination rule (DESIGN.md section 1.5): the local
    address of the relay's connection when it has the source's family, else
    the unspecified address of that family; always the target's port.
(a) nginx (`listen unix:... proxy_protocol`) and (b) HAProxy (`bind unix@...
    accept-proxy`) as real consumers: their own logs must show the public
    client's address.

Everything is on Unix sockets or loopback; waits are bounded polls.
"""
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import PKI, TARGET, Funneld, RecordingServer, Workdir, base_config, open_stream, wait_for  # noqa: E402

PP1 = "pp1.example.ts.net"      # target whose backend gets v1
PP2 = "pp2.example.ts.net"      # target whose backend gets v2 (consumers)
OFF = "off.example.ts.net"      # target without PROXY header
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"

OPENSSL_TO_MBEDTLS = {
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": "TLS1-3-AES-128-GCM-SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS1-3-AES-256-GCM-SHA384",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS1-3-CHACHA20-POLY1305-SHA256",
}

CERT = {}
_pki = []


def client_context(alpn=None):
    return harness.client_context(cafile=_pki[0].ca_cert, alpn=alpn)


def setUpModule():
    # This module's own CA, removed at the end.
    _pki.append(PKI(tempfile.mkdtemp(prefix="fd-pp-pki-")))
    CERT["pair"] = _pki[0].leaf(TARGET, sans=[TARGET, PP1, PP2, OFF], tag="pp-multi")


def tearDownModule():
    if _pki:
        shutil.rmtree(_pki.pop().dir, ignore_errors=True)


# ---------------------------------------------------------------- helpers

def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


HAVE_V6 = have_ipv6_loopback()


def start_funneld(wd, text_for_ports):
    """funneld on unix:funneld.sock, 127.0.0.1:P and [::1]:P6 (free ports are
    picked here; on the rare race with another process, pick again).  p6 is
    None without an IPv6 loopback."""
    last = None
    for attempt in range(5):
        p4, p6 = free_port(), (free_port(socket.AF_INET6, "::1") if HAVE_V6 else None)
        d = wd(f"funneld-{attempt}")
        os.makedirs(d)
        f = Funneld(d, text_for_ports(p4, p6))
        try:
            return f.start(), p4, p6
        except AssertionError as e:
            f.stop()
            last = e
            if "in use" not in str(e):
                raise
    raise last


class RecordBackend(RecordingServer):
    """Unix-socket backend: records each connection's bytes; at EOF answers
    `reply` and closes.  conns[i] = {"data": bytearray, "done": Event}."""

    def __init__(self, path, reply=b"REPLY"):
        self.reply = reply
        super().__init__(path, backlog=64)

    def serve(self, c, rec):
        try:
            c.settimeout(60)
            while True:
                data = c.recv(65536)
                if not data:
                    break
                with self.lock:
                    rec["data"] += data
            rec["done"].set()
            c.sendall(self.reply)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            rec["done"].set()
        finally:
            c.close()

    def data(self, i):
        with self.lock:
            return bytes(self.conns[i]["data"]) if i < len(self.conns) else b""

    def finished(self, i, timeout=15):
        self.conn(i, timeout)
        return self.data(i)


def parse_v2(data):
    """-> (header length, dict).  Strict: fails on anything malformed."""
    if len(data) < 16 or data[:12] != V2_SIG:
        raise AssertionError(f"no PROXY v2 signature: {data[:16]!r}")
    ver_cmd, fam = data[12], data[13]
    n = struct.unpack("!H", data[14:16])[0]
    if len(data) < 16 + n:
        raise AssertionError(f"v2 header says {n} bytes follow, only {len(data) - 16} did")
    body = data[16:16 + n]
    h = {"ver_cmd": ver_cmd, "fam": fam, "len": n}
    if fam == 0x11:
        h["src"] = socket.inet_ntop(socket.AF_INET, body[0:4])
        h["dst"] = socket.inet_ntop(socket.AF_INET, body[4:8])
        h["sport"], h["dport"] = struct.unpack("!HH", body[8:12])
        off = 12
    elif fam == 0x21:
        h["src"] = socket.inet_ntop(socket.AF_INET6, body[0:16])
        h["dst"] = socket.inet_ntop(socket.AF_INET6, body[16:32])
        h["sport"], h["dport"] = struct.unpack("!HH", body[32:36])
        off = 36
    else:
        raise AssertionError(f"unexpected family/protocol byte {fam:#x}")
    tlvs = []
    while off < n:
        if off + 3 > n:
            raise AssertionError("truncated TLV header")
        t, ln = body[off], struct.unpack("!H", body[off + 1:off + 3])[0]
        if off + 3 + ln > n:
            raise AssertionError(f"TLV {t:#x} of {ln} bytes overruns the header")
        tlvs.append((t, body[off + 3:off + 3 + ln]))
        off += 3 + ln
    h["tlvs"] = tlvs
    return 16 + n, h


def parse_ssl_tlv(v):
    """PP2_TYPE_SSL: client (1), verify (4), then sub-TLVs."""
    if len(v) < 5:
        raise AssertionError(f"PP2_TYPE_SSL too short: {v!r}")
    out = {"client": v[0], "verify": struct.unpack("!I", v[1:5])[0], "sub": []}
    off = 5
    while off < len(v):
        t, ln = v[off], struct.unpack("!H", v[off + 1:off + 3])[0]
        if off + 3 + ln > len(v):
            raise AssertionError("SSL sub-TLV overruns PP2_TYPE_SSL")
        out["sub"].append((t, v[off + 3:off + 3 + ln]))
        off += 3 + ln
    return out


# ---------------------------------------------------------------- (c) byte-exact

class ProxyHeaderTest(unittest.TestCase):
    PAYLOAD = b"first decrypted bytes\r\n"

    @classmethod
    def setUpClass(cls):
        cls.wd = Workdir()
        cls.opened = 0          # connections made to funneld, for logged_so_far()
        cls.listen = cls.wd("funneld.sock")
        cls.v2 = RecordBackend(cls.wd("v2.sock"))
        cls.v1 = RecordBackend(cls.wd("v1.sock"))
        cls.off = RecordBackend(cls.wd("off.sock"))
        chain, key = CERT["pair"]

        def text(p4, p6):
            return base_config(
                f"unix:{cls.listen}\nlisten = 127.0.0.1:{p4}" + (f"\nlisten = [::1]:{p6}" if p6 else ""),
                chain, key,
                [(f"{TARGET}:443", cls.wd("v2.sock"), "proxy_protocol = v2"),
                 (f"{PP1}:443", cls.wd("v1.sock"), "proxy_protocol = v1"),
                 (f"{OFF}:443", cls.wd("off.sock"), "proxy_protocol = off"),
                 ("*:8443", cls.wd("v2.sock"), "proxy_protocol = v2")],
                extra_tls="alpn = h2, http/1.1\n")
        try:
            cls.f, cls.p4, cls.p6 = start_funneld(cls.wd, text)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        problem = cls.f.stop_problem() if getattr(cls, "f", None) is not None else None
        for b in (cls.v1, cls.v2, cls.off):
            b.close()
        cls.wd.cleanup()
        if problem:
            raise AssertionError(problem)

    def logged_so_far(self):
        """Wait until every connection opened so far has its log record (the
        client can see the end of a connection just before funneld logs it);
        returns the count and counts one more connection."""
        cls = type(self)
        n = cls.opened
        wait_for(lambda: len(self.f.records()) >= n, 20, what=f"{n} log records")
        cls.opened += 1
        return n

    def addr(self, via):
        if via == "tcp6" and not self.p6:
            self.skipTest("no IPv6 loopback")
        return {"unix": self.listen, "tcp4": ("127.0.0.1", self.p4), "tcp6": ("::1", self.p6)}[via]

    def exchange(self, backend, via="unix", target=f"{TARGET}:443", src="203.0.113.7:51234",
                 sni=TARGET, alpn=None):
        """One full connection; returns (bytes the backend got, client info, log record)."""
        r0 = self.logged_so_far()
        n0 = backend.count()
        st = open_stream(self.addr(via), target=target, src=src, server_hostname=sni,
                         ctx=client_context(alpn=alpn))
        info = {"alpn": st.obj.selected_alpn_protocol(), "cipher": st.obj.cipher()[0],
                "version": st.obj.version()}
        try:
            st.sendall(self.PAYLOAD)
            st.close_notify()
            got = b""
            while True:
                chunk = st.recv()
                if not chunk:
                    break
                got += chunk
        finally:
            st.close()
        self.assertEqual(got, b"REPLY", "the backend's answer did not reach the client")
        data = backend.finished(n0)
        # Every earlier connection was logged before this one started: its
        # record is the next one.
        rec = wait_for(lambda: self.f.records()[r0:r0 + 1], 20, what="the log record")[0]
        self.assertEqual(rec.get("src"), src, rec)
        self.assertEqual(rec.get("result"), "ok", rec)
        self.assertEqual(rec.get("in"), str(len(self.PAYLOAD)), rec)
        return data, info, rec

    def v2_header(self, data):
        hlen, h = parse_v2(data)
        self.assertEqual(h["ver_cmd"], 0x21, "version 2, command PROXY")
        self.assertEqual(data[hlen:], self.PAYLOAD, "the first decrypted bytes must follow the header at once")
        types = [t for t, _ in h["tlvs"]]
        self.assertEqual(len(types), len(set(types)), f"a TLV type is repeated: {types}")
        h["tlv"] = dict(h["tlvs"])
        return h

    # -- v2

    def test_v2_ipv4_source(self):
        data, info, rec = self.exchange(self.v2, alpn=["h2", "http/1.1"])
        h = self.v2_header(data)
        self.assertEqual(h["fam"], 0x11, "TCP over IPv4")
        self.assertEqual(h["len"], len(data) - len(self.PAYLOAD) - 16)
        self.assertEqual((h["src"], h["sport"]), ("203.0.113.7", 51234))
        # A unix: listener has no IPv4 local address: the unspecified one.
        self.assertEqual((h["dst"], h["dport"]), ("0.0.0.0", 443))
        self.assertEqual(h["tlv"].get(0x01), b"h2", "PP2_TYPE_ALPN = the negotiated protocol")
        self.assertEqual(info["alpn"], "h2")
        self.assertEqual(h["tlv"].get(0x02), TARGET.encode(), "PP2_TYPE_AUTHORITY = SNI")
        self.assertIn(0x20, h["tlv"], "PP2_TYPE_SSL missing")
        s = parse_ssl_tlv(h["tlv"][0x20])
        self.assertEqual(s["client"] & 0x01, 0x01, "PP2_CLIENT_SSL not set")
        self.assertEqual(s["client"] & 0x06, 0, "no client certificate was asked for")
        self.assertEqual(s["verify"], 0)
        sub = dict(s["sub"])
        # The newest version both have: TLS 1.3 where the library has it.
        self.assertEqual(info["version"], harness.best_tls())
        self.assertEqual(sub.get(0x21), info["version"].encode(), "PP2_SUBTYPE_SSL_VERSION")
        cipher = sub.get(0x23, b"").decode()
        self.assertIn(cipher, (info["cipher"], OPENSSL_TO_MBEDTLS.get(info["cipher"])),
                      f"PP2_SUBTYPE_SSL_CIPHER {cipher!r} is not the negotiated {info['cipher']}")
        self.assertEqual(cipher, rec["cipher"], "the header and the log disagree on the cipher")
        self.assertTrue(set(h["tlv"]) <= {0x01, 0x02, 0x04, 0x20}, f"unexpected TLVs {sorted(h['tlv'])}")

    def test_v2_ipv6_source(self):
        data, info, rec = self.exchange(self.v2, src="[2001:db8::7]:4433", alpn=["http/1.1"])
        h = self.v2_header(data)
        self.assertEqual(h["fam"], 0x21, "TCP over IPv6")
        self.assertEqual((h["src"], h["sport"]), ("2001:db8::7", 4433))
        self.assertEqual((h["dst"], h["dport"]), ("::", 443))
        self.assertEqual(h["tlv"].get(0x01), b"http/1.1")

    def test_v2_without_alpn_has_no_alpn_tlv(self):
        data, info, rec = self.exchange(self.v2, alpn=None)
        h = self.v2_header(data)
        self.assertIsNone(info["alpn"])
        self.assertNotIn(0x01, h["tlv"], "PP2_TYPE_ALPN sent although nothing was negotiated")

    def test_v2_authority_is_the_sni(self):
        # SNI PP1 (covered by the certificate) on target node: AUTHORITY is the
        # name the client asked for, not the target.
        data, info, rec = self.exchange(self.v2, sni=PP1)
        h = self.v2_header(data)
        self.assertEqual(h["tlv"].get(0x02), PP1.encode())
        self.assertEqual(rec["sni"], PP1)

    def test_v2_destination_port_is_the_targets(self):
        data, info, rec = self.exchange(self.v2, target=f"{TARGET}:8443")
        h = self.v2_header(data)
        self.assertEqual(h["dport"], 8443)
        self.assertEqual(h["sport"], 51234)

    def test_v2_destination_over_tcp_listeners(self):
        cases = [
            ("tcp4", "203.0.113.7:51234", 0x11, "127.0.0.1"),   # same family: the local address
            ("tcp4", "[2001:db8::7]:4433", 0x21, "::"),         # other family: unspecified
            ("tcp6", "[2001:db8::7]:4433", 0x21, "::1"),
            ("tcp6", "203.0.113.7:51234", 0x11, "0.0.0.0"),
        ]
        for via, src, fam, dst in cases:
            with self.subTest(via=via, src=src):
                data, info, rec = self.exchange(self.v2, via=via, src=src)
                h = self.v2_header(data)
                self.assertEqual(h["fam"], fam)
                self.assertEqual((h["dst"], h["dport"]), (dst, 443))

    def test_v2_header_sent_before_the_client_speaks(self):
        # Server-speaks-first protocols: the header must not wait for client data.
        self.logged_so_far()
        n0 = self.v2.count()
        st = open_stream(self.listen, src="203.0.113.7:51299", server_hostname=TARGET, ctx=client_context())
        try:
            def header_complete():
                try:
                    return parse_v2(self.v2.data(n0))
                except AssertionError:
                    return None
            hlen, h = wait_for(header_complete, 10, what="the PROXY header before any client data")
            self.assertEqual(h["sport"], 51299)
            self.assertEqual(len(self.v2.data(n0)), hlen, "bytes after the header, but the client sent none")
            st.close_notify()
        finally:
            st.close()

    # -- v1

    def test_v1_ipv4_source(self):
        data, info, rec = self.exchange(self.v1, target=f"{PP1}:443", sni=PP1)
        self.assertEqual(data, b"PROXY TCP4 203.0.113.7 0.0.0.0 51234 443\r\n" + self.PAYLOAD)

    def test_v1_ipv6_source(self):
        data, info, rec = self.exchange(self.v1, target=f"{PP1}:443", sni=PP1, src="[2001:db8::7]:4433")
        self.assertEqual(data, b"PROXY TCP6 2001:db8::7 :: 4433 443\r\n" + self.PAYLOAD)

    def test_v1_over_tcp_listeners(self):
        for via, src, line in [
                ("tcp4", "203.0.113.7:51234", b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n"),
                ("tcp6", "[2001:db8::7]:4433", b"PROXY TCP6 2001:db8::7 ::1 4433 443\r\n"),
                ("tcp4", "[2001:db8::7]:4433", b"PROXY TCP6 2001:db8::7 :: 4433 443\r\n")]:
            with self.subTest(via=via, src=src):
                data, info, rec = self.exchange(self.v1, via=via, target=f"{PP1}:443", sni=PP1, src=src)
                self.assertEqual(data, line + self.PAYLOAD)

    def test_v1_ipv4_mapped_source_is_tcp4(self):
        data, info, rec = self.exchange(self.v1, via="tcp4", target=f"{PP1}:443", sni=PP1,
                                        src="[::ffff:203.0.113.7]:51234")
        self.assertEqual(data, b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n" + self.PAYLOAD)

    # -- off, and failures

    def test_off_sends_no_header(self):
        data, info, rec = self.exchange(self.off, target=f"{OFF}:443", sni=OFF)
        self.assertEqual(data, self.PAYLOAD)

    def test_failed_handshake_sends_no_header(self):
        ctx = client_context()
        ctx.check_hostname = False
        for backend, target in [(self.v1, f"{PP1}:443"), (self.v2, f"{TARGET}:443")]:
            with self.subTest(target=target):
                self.logged_so_far()
                n0 = backend.count()
                with self.assertRaises((ssl.SSLError, ConnectionError)):
                    st = open_stream(self.listen, target=target, src="203.0.113.7:51288",
                                     server_hostname="nobody.example.org", ctx=ctx)
                    st.close()
                self.assertEqual(backend.finished(n0), b"", "bytes reached the backend without a handshake")


# ---------------------------------------------------------------- (a), (b) real consumers

class ConsumerBase(unittest.TestCase):
    """funneld in front of a real PROXY-protocol consumer on one Unix socket:
    target node → v1, target pp2 → v2."""
    binary = None
    sock_name = None

    @classmethod
    def setUpClass(cls):
        if not os.access(cls.binary, os.X_OK):
            raise unittest.SkipTest(f"{cls.binary} is not installed")
        cls.wd = Workdir()
        cls.proc = None
        cls.f = None
        try:
            cls.sock = cls.wd(cls.sock_name)
            cls.start_consumer()
            wait_for(cls.consumer_ready, 20, what=f"{os.path.basename(cls.binary)} to listen")
            chain, key = CERT["pair"]
            cls.listen = cls.wd("funneld.sock")
            d = cls.wd("funneld")
            os.makedirs(d)
            cls.f = Funneld(d, base_config(
                f"unix:{cls.listen}", chain, key,
                [(f"{TARGET}:443", cls.sock, "proxy_protocol = v1"),
                 (f"{PP2}:443", cls.sock, "proxy_protocol = v2")])).start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def consumer_ready(cls):
        if cls.proc.poll() is not None:
            raise AssertionError(f"{cls.binary} exited {cls.proc.returncode}: {cls.output()}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(cls.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    @classmethod
    def output(cls):
        try:
            with open(cls.wd("consumer.out"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @classmethod
    def spawn(cls, cmd):
        cls.outf = open(cls.wd("consumer.out"), "wb")
        cls.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=cls.outf, stderr=subprocess.STDOUT,
                                    cwd=cls.wd.path)

    @classmethod
    def tearDownClass(cls):
        problem = cls.f.stop_problem() if getattr(cls, "f", None) is not None else None
        if getattr(cls, "proc", None) is not None and cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()
        if getattr(cls, "outf", None) is not None:
            cls.outf.close()
        if hasattr(cls, "wd"):
            cls.wd.cleanup()
        if problem:
            raise AssertionError(problem)

    def get(self, target, src, path):
        """An HTTPS GET through funneld; returns (status line, body)."""
        host = target.rsplit(":", 1)[0]
        st = open_stream(self.listen, target=target, src=src, server_hostname=host, ctx=client_context())
        try:
            st.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            got = b""
            while True:
                chunk = st.recv()
                if not chunk:
                    break
                got += chunk
        finally:
            st.close()
        head, _, body = got.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0].decode("latin-1"), body

    def log_line(self, marker):
        def find():
            return [ln for ln in self.log_text().splitlines() if marker in ln]
        return wait_for(find, 20, what=f"a log line with {marker}")[0]

    CASES = [("203.0.113.7:51234", "203.0.113.7", "51234", "0.0.0.0"),
             ("[2001:db8::7]:4433", "2001:db8::7", "4433", "::")]


class NginxTest(ConsumerBase):
    binary = NGINX
    sock_name = "pp.sock"

    @classmethod
    def start_consumer(cls):
        w = cls.wd.path
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(w, "tmp", t))
        conf = f"""
master_process off;
error_log {w}/error.log info;
pid {w}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {w}/tmp/body;
    proxy_temp_path {w}/tmp/proxy;
    fastcgi_temp_path {w}/tmp/fastcgi;
    uwsgi_temp_path {w}/tmp/uwsgi;
    scgi_temp_path {w}/tmp/scgi;
    log_format pp 'PP $proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr '
                  '$proxy_protocol_server_port "$request" $status';
    server {{
        listen unix:{cls.sock} proxy_protocol;
        access_log {w}/access.log pp;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""
        with open(os.path.join(w, "nginx.conf"), "w") as f:
            f.write(conf)
        cls.spawn([NGINX, "-p", w, "-c", os.path.join(w, "nginx.conf"), "-g", "daemon off;"])

    def log_text(self):
        try:
            with open(self.wd("access.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check(self, target, version):
        for i, (src, addr, port, dst) in enumerate(self.CASES):
            with self.subTest(src=src):
                path = f"/{version}-{i}"
                status, body = self.get(target, src, path)
                self.assertIn(" 200 ", status + " ")
                self.assertEqual(body, b"hello from nginx\n")
                line = self.log_line(f'"GET {path} HTTP/1.1"')
                self.assertEqual(line, f'PP {addr} {port} {dst} 443 "GET {path} HTTP/1.1" 200')

    def test_v1(self):
        self.check(f"{TARGET}:443", "v1")

    def test_v2(self):
        self.check(f"{PP2}:443", "v2")


class HAProxyTest(ConsumerBase):
    binary = HAPROXY
    sock_name = "hp.sock"

    @classmethod
    def start_consumer(cls):
        cfg = f"""
global
    log stdout format raw local0
defaults
    mode http
    timeout client 10s
    timeout server 10s
    timeout connect 5s
frontend fe
    bind unix@{cls.sock} accept-proxy
    log global
    log-format "PPLOG ci=%ci cp=%cp fi=%fi fp=%fp authority=%[fc_pp_authority] req=%{{+Q}}r st=%ST"
    http-request return status 200 content-type text/plain string ok
"""
        path = cls.wd("haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        cls.spawn([HAPROXY, "-f", path, "-db"])

    def log_text(self):
        return self.output()

    def check(self, target, version, authority):
        for i, (src, addr, port, dst) in enumerate(self.CASES):
            with self.subTest(src=src):
                path = f"/{version}-{i}"
                status, body = self.get(target, src, path)
                self.assertIn(" 200 ", status + " ")
                self.assertEqual(body, b"ok")
                line = self.log_line(f'"GET {path} HTTP/1.1"')
                self.assertEqual(line, f'PPLOG ci={addr} cp={port} fi={dst} fp=443 authority={authority} '
                                       f'req="GET {path} HTTP/1.1" st=200')

    def test_v1(self):
        self.check(f"{TARGET}:443", "v1", "-")

    def test_v2(self):
        # v2 carries the SNI in PP2_TYPE_AUTHORITY, which HAProxy exposes.
        self.check(f"{PP2}:443", "v2", PP2)


if __name__ == "__main__":
    unittest.main()
