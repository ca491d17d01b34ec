"""[listener] sections (DESIGN.md section 8): funneld behind a forwarder that
hands over raw TLS after a PROXY header, as the stock tailscaled does with
`tailscale funnel --tcp 443 --proxy-protocol 2 tcp://127.0.0.1:PORT`.

Senders that nobody here wrote, and one that behaves like tailscaled:

  curl / chromium --TLS--> funnel-relay --forward --proxy-protocol 2|1 --+
  curl / chromium --TLS--> HAProxy (mode tcp, send-proxy[-v2]) ----------+
                                                                         v
        funneld [listener 127.0.0.1:P] (TLS ends) --PROXY v2|v1--> nginx (unix:, proxy_protocol)

- PathTest: curl over http/1.1 and h2, IPv4 and IPv6 clients, through the
  relay (v2 and v1) and through HAProxy (send-proxy-v2 and send-proxy);
  chromium through HAProxy send-proxy-v2 and through the relay; funneld's
  record has listener=tls and the client's real address as src, and nginx
  (which reads the PROXY header funneld writes) logs the same address; a
  64 MiB transfer each way through the relay, SHA-256 at both ends, behind a
  backend that checks funneld's PROXY header; a unix: [listener] without a
  PROXY header; funneld_listener_connections_total by client kind.
- RefusalTest: every refusal (untrusted peer, missing, malformed, slow,
  wrong-version and LOCAL headers, no SNI, unknown SNI, SNI of another
  public_port, absent backend, [clients] deny) closes without a TLS byte
  (or with exactly the TLS alert the design names) and reaches no backend;
  a header split over many segments with the ClientHello right behind it.
- SocketActivationTest: a passed socket whose address is a [listener]'s is
  that listener; another passed socket is an ingress listener; a [listener]
  that was not passed is opened by funneld itself.

Everything is on loopback or Unix sockets; waits are bounded polls; every
process started here is stopped by its PID.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import test_e2e as e2e  # noqa: E402  (metrics, chromium helpers, spki_sha256_b64)
import test_proxy_protocol as tpp  # noqa: E402  (parse_v2)
import test_relay_forwarder as trf  # noqa: E402  (Relay: funnel-relay --forward)

HOST = "shop.example.ts.net"        # nginx: h2 on 443, http/1.1 on 8443 and 10000
BULK = "bulk.example.ts.net"        # the hashing backend, on 443
ONLY8443 = "only8443.example.ts.net"
GONE = "gone.example.ts.net"        # its backend socket does not exist
HALF = "half.example.ts.net"        # a backend that answers at EOF (half-close)
MARKER = "funneld-listener-marker-7c41: served behind a forwarder"
HAPROXY = os.environ.get("HAPROXY", "/usr/sbin/haproxy")
NODE4, NODE6 = trf.NODE4, trf.NODE6  # funnel-relay's node addresses (PROXY destination)
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL = V2_SIG + b"\x20\x00\x00\x00"
MIB = 1 << 20
BULK_BYTES = 64 * MIB
HAVE_V6 = h.have_ipv6_loopback()
ALERT_UNRECOGNIZED_NAME = b"\x15\x03\x03\x00\x02\x02\x70"
ALERT_HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"

_cert = {}


def setUpModule():
    _cert["pair"] = h.pki().leaf(HOST, sans=[HOST, BULK, ONLY8443, GONE, HALF], tag="listener-multi")


def cert():
    return _cert["pair"]


def v2_header(src, sport, dst, dport, tlvs=b""):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    body = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, 0x21 if fam == socket.AF_INET6 else 0x11]) + struct.pack(">H", len(body)) + body


def v1_header(src, sport, dst, dport):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def newest_tls():
    """The version a client offering every version gets from this funneld."""
    return "TLSv1.3" if h.tls13() else "TLSv1.2"


def addr_text(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def client_hello(server_hostname=HOST, alpn=None):
    """A TLSStream on no socket yet and its first flight (the ClientHello);
    server_hostname None sends no SNI."""
    ctx = h.client_context(alpn=alpn)
    if server_hostname is None:
        ctx.check_hostname = False
    tls = h.TLSStream(None, ctx, server_hostname)
    return tls, tls.client_hello()


def connect_tcp(port, host="127.0.0.1", source=None, timeout=10):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_funneld(wd, text_for_ports, nports, tag="funneld"):
    """funneld with a config that binds nports free TCP ports (picked here;
    on the rare race with another process, picked again)."""
    last = None
    for attempt in range(5):
        ports = free_ports(nports)
        d = wd(f"{tag}-{attempt}")
        os.makedirs(d)
        f = h.Funneld(d, text_for_ports(ports))
        try:
            return f.start(), ports
        except AssertionError as e:
            f.stop()
            last = e
            if "in use" not in str(e):
                raise
    raise last


def funneld_head(metrics_sock, ingress_sock, **settings):
    main = {"header_timeout": "3s", "handshake_timeout": "5s", "idle_timeout": "60s",
            "shutdown_timeout": "5s", "log_level": "info"}
    main.update(settings)
    text = f"[funneld]\nlisten = unix:{ingress_sock}\nallow = 127.0.0.0/8, ::1/128\n"
    text += f"metrics = unix:{metrics_sock}\n" + "".join(f"{k} = {v}\n" for k, v in main.items())
    chain, key = cert()
    return text + f"\n[tls]\ncert = {chain}\nkey = {key}\nalpn = h2, http/1.1\n"


def stop_relay(r):
    """Stop a trf.Relay we started (by its PID) and close its pipe; -> exit status."""
    rc = r.stop()
    if r.proc.stderr is not None:
        r.proc.stderr.close()
    return rc


def metric_delta(before, after, prefix):
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys
            if k.startswith(prefix) and after.get(k, 0) != before.get(k, 0)}


# ---------------------------------------------------------------- backends and senders

class HashBackend(h.UnixServer):
    """A Unix-socket backend behind `proxy_protocol = v2`: reads funneld's
    PROXY v2 header, then a request (!QQ: bytes to receive, bytes to send);
    sends that many random bytes while it hashes what it receives; then
    sends the 32-byte SHA-256 of what it received and half-closes.
    results[i]: header (parsed), up_len, up_sha, down_sha, error."""

    REQ = struct.Struct("!QQ")

    def __init__(self, path):
        self.results = []
        self.lock = threading.Lock()
        super().__init__(path, backlog=16)

    def handle(self, c):
        res = {"header": None, "up_len": 0, "up_sha": None, "down_sha": None, "error": None,
               "done": threading.Event()}
        with self.lock:
            self.results.append(res)
        self.serve_in_thread(c, res)

    def serve(self, c, res):
        try:
            c.settimeout(120)
            buf = b""
            while True:
                if len(buf) >= 16 and buf[:12] == V2_SIG:
                    need = 16 + struct.unpack("!H", buf[14:16])[0] + self.REQ.size
                    if len(buf) >= need:
                        break
                elif len(buf) >= 16:
                    raise AssertionError(f"no PROXY v2 header: {buf[:32]!r}")
                chunk = c.recv(65536)
                if not chunk:
                    raise AssertionError(f"EOF before header and request: {buf!r}")
                buf += chunk
            hlen, res["header"] = tpp.parse_v2(buf)
            up, down = self.REQ.unpack(buf[hlen:hlen + self.REQ.size])
            rest = buf[hlen + self.REQ.size:]
            data = os.urandom(down)
            res["down_sha"] = hashlib.sha256(data).hexdigest()
            sender = threading.Thread(target=c.sendall, args=(data,), daemon=True)
            sender.start()
            hsh = hashlib.sha256(rest)
            n = len(rest)
            while n < up:
                chunk = c.recv(1 << 18)
                if not chunk:
                    break
                n += len(chunk)
                hsh.update(chunk)
            sender.join(120)
            res["up_len"], res["up_sha"] = n, hsh.hexdigest()
            c.sendall(hsh.digest())
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        except Exception as e:  # reported by the test that reads results
            res["error"] = f"{type(e).__name__}: {e}"
        finally:
            c.close()
            res["done"].set()

    def count(self):
        with self.lock:
            return len(self.results)


class HAProxy:
    """HAProxy in TCP mode, one frontend per route, each bound on 127.0.0.1
    and (when there is one) [::1], forwarding to funneld with send-proxy or
    send-proxy-v2.  It logs every session at its end:
        HPLOG fe=<frontend> ci=<client ip> cp=<client port> bi=<its source ip> bp=<its source port>"""

    def __init__(self, wd, routes):
        """routes: [(name, funneld_port, "send-proxy" | "send-proxy-v2")]."""
        if not os.access(HAPROXY, os.X_OK):
            raise AssertionError(f"{HAPROXY} not found: run scripts/deps (make deps) to install it")
        self.wd = wd
        self.proc = None
        self.outf = None
        last = None
        for attempt in range(5):
            try:
                self._start(routes, attempt)
                return
            except AssertionError as e:
                last = e
                self.stop()
        raise last

    def _start(self, routes, attempt):
        self.ports = {}
        cfg = ("global\n    maxconn 512\n    log stdout format raw local0\n"
               "defaults\n    mode tcp\n    log global\n"
               "    log-format \"HPLOG fe=%f ci=%ci cp=%cp bi=%bi bp=%bp\"\n"
               "    timeout client 60s\n    timeout server 60s\n    timeout connect 5s\n")
        for name, port, send in routes:
            p4 = h.free_port()
            p6 = h.free_port("::1") if HAVE_V6 else None
            self.ports[(name, 4)] = p4
            cfg += f"frontend {name}\n    bind 127.0.0.1:{p4}\n"
            if p6:
                self.ports[(name, 6)] = p6
                cfg += f"    bind [::1]:{p6}\n"
            cfg += f"    default_backend be_{name}\nbackend be_{name}\n    server funneld 127.0.0.1:{port} {send}\n"
        path = self.wd(f"haproxy-{attempt}.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        self.log_path = self.wd(f"haproxy-{attempt}.out")
        self.outf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-f", path, "-db"], stdin=subprocess.DEVNULL, stdout=self.outf,
                                     stderr=subprocess.STDOUT, preexec_fn=h.die_with_parent)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited {self.proc.returncode}: {self.output()[-2000:]}")
            return all(h.tcp_listening(p) for p in self.ports.values())
        # Seen in /proc/net/tcp, not by connecting: a probe would reach funneld.
        h.wait_for(up, 20, what="haproxy to listen")

    def port(self, name, family=4):
        return self.ports[(name, family)]

    def output(self):
        return e2e.read_text(self.log_path)

    def sessions(self):
        """[{fe, ci, cp, bi, bp}] of the sessions logged so far."""
        return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in self.output().splitlines()
                if line.startswith("HPLOG ")]

    def stop(self):
        rc = e2e.stop_process(self.proc)
        if self.outf is not None:
            self.outf.close()
            self.outf = None
        return rc


# ---------------------------------------------------------------- the paths that work

class PathTest(h.ClassProcessesCase):
    """One nginx, one hashing backend, one funneld with four TCP [listener]s
    (v2 and v1, public_port 443 and 8443) and two unix: ones, a
    tailscaled-like relay in front of each TCP one, and one HAProxy."""

    nginx = None
    bulk = None
    haproxy = None
    relays = {}
    chromium_state = None
    # test_e2e's chromium helpers, bound to this class (its wd, its state),
    # and its wait for a quiet funneld before each test.
    chromium = classmethod(e2e.E2E.chromium.__func__)
    run_chromium = classmethod(e2e.E2E.run_chromium.__func__)
    setUp = e2e.E2E.setUp
    settle = e2e.E2E.settle
    new_records = e2e.E2E.new_records

    @classmethod
    def _set_up(cls):
        cls.relays = {}
        for tool in ("curl", "openssl"):
            e2e.need(tool)
        if not os.access(trf.RELAY, os.X_OK):
            raise AssertionError(f"{trf.RELAY} not built: run make all")
        wd = cls.wd
        www = wd("www")
        os.makedirs(www)
        cls.page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>funneld listener</title>"
                    f"</head>\n<body><h1 id=\"marker\">{MARKER}</h1></body></html>\n").encode()
        with open(os.path.join(www, "index.html"), "wb") as f:
            f.write(cls.page)
        cls.blob = os.urandom(MIB + 4321)
        with open(os.path.join(www, "blob.bin"), "wb") as f:
            f.write(cls.blob)
        # nginx: h2c and HTTP/1.1, both reading funneld's PROXY header; a
        # plain HTTP/1.1 one for the unix: listener's target.
        cls.h2_sock, cls.h1_sock, cls.plain_sock = wd("h2.sock"), wd("h1.sock"), wd("plain.sock")
        cls.nginx = h.NginxSite(wd.path, www, HOST, [(cls.h2_sock, "http2 proxy_protocol"),
                                                     (cls.h1_sock, "proxy_protocol"), (cls.plain_sock, "")])
        cls.nginx.start()
        cls.bulk = HashBackend(wd("bulk.sock"))
        # Answers only once it has read EOF: the SHA-256 of all it got.
        cls.half = h.Backend(wd("half.sock"), "record", reply=lambda data: hashlib.sha256(data).digest())
        cls.msock = wd("metrics.sock")
        cls.tls_unix = wd("tls.sock")
        cls.tls_unix_pp = wd("tls-pp.sock")

        def config(ports):
            p2_443, p1_443, p2_8443, p1_8443 = ports
            text = funneld_head(cls.msock, wd("ingress.sock"))
            text += (f"\n[backend {HOST}:443]\nsocket = {cls.h2_sock}\nalpn = h2\nproxy_protocol = v2\n"
                     f"\n[backend {HOST}:8443]\nsocket = {cls.h1_sock}\nalpn = http/1.1\nproxy_protocol = v1\n"
                     f"\n[backend {HOST}:10000]\nsocket = {cls.plain_sock}\nalpn = http/1.1\n"
                     f"\n[backend {BULK}:443]\nsocket = {cls.bulk.path}\nproxy_protocol = v2\n"
                     f"\n[backend {HALF}:443]\nsocket = {cls.half.path}\n")
            for port, pp, public in ((p2_443, "v2", 443), (p1_443, "v1", 443), (p2_8443, "v2", 8443),
                                     (p1_8443, "v1", 8443)):
                text += f"\n[listener 127.0.0.1:{port}]\nproxy_protocol = {pp}\npublic_port = {public}\n"
            text += f"\n[listener unix:{cls.tls_unix}]\npublic_port = 10000\n"
            text += f"\n[listener unix:{cls.tls_unix_pp}]\npublic_port = 8443\n"
            return text
        cls.funneld, ports = start_funneld(wd, config, 4)
        cls.listen = dict(zip([(2, 443), (1, 443), (2, 8443), (1, 8443)], ports))
        h.wait_for(lambda: os.path.exists(cls.msock), 10, what="funneld's metrics socket")
        # The tailscaled-like forwarders, one per listener (the forward's port is the listener's).
        for (version, public), port in cls.listen.items():
            cls.relays[(version, public)] = trf.Relay(["--forward", "--proxy-protocol", str(version),
                                                       "-f", f"127.0.0.1:{port}"])
        cls.haproxy = HAProxy(wd, [("v2_443", cls.listen[(2, 443)], "send-proxy-v2"),
                                   ("v1_443", cls.listen[(1, 443)], "send-proxy"),
                                   ("v2_8443", cls.listen[(2, 8443)], "send-proxy-v2"),
                                   ("v1_8443", cls.listen[(1, 8443)], "send-proxy")])

    @classmethod
    def close_front(cls, problems):
        for key, r in cls.relays.items():
            rc = stop_relay(r)
            if rc != 0:
                problems.append(f"funnel-relay {key} exited {rc}: {''.join(r.lines)[-1500:]}")
        cls.relays = {}
        if cls.haproxy is not None:
            cls.haproxy.stop()
            cls.haproxy = None

    @classmethod
    def close_back(cls, problems):
        if cls.nginx is not None:
            cls.nginx.stop()
            cls.nginx = None
        if cls.bulk is not None:
            cls.bulk.close()
            cls.bulk = None
        if getattr(cls, "half", None) is not None:
            cls.half.close()
            cls.half = None

    # ------------------------------------------------------------ helpers

    def record_for_src(self, src, timeout=20):
        def find():
            recs = [r for r in self.new_records() if r.get("src") == src]
            return recs[0] if recs else None
        try:
            return h.wait_for(find, timeout, what=f"funneld's record for src={src}")
        except AssertionError:
            raise AssertionError(f"no record with src={src}; records: {self.new_records()}") from None

    def nginx_line(self, server, token, timeout=20):
        """nginx's access-log line (server 0: h2, 1: http/1.1, 2: plain) for
        the request that carried token: (proxy addr, proxy port, protocol, status)."""
        def find():
            for line in self.nginx.access_lines(server):
                if token in line:
                    return line
            return None
        line = h.wait_for(find, timeout, what=f"nginx's log line for {token}")
        m = re.match(r'^(\S*) (\S*) (\S+) "([^"]*)" (\d+) \d+$', line)
        self.assertIsNotNone(m, line)
        return m.group(1), m.group(2), m.group(3), int(m.group(5))

    def curl(self, port, family, proto, path):
        """curl https://HOST:port/path via 127.0.0.1 or [::1]; -> dict."""
        ip = "127.0.0.1" if family == 4 else "[::1]"
        out = self.wd(f"body-{os.urandom(6).hex()}")
        cmd = ["curl", "-sS", proto, "--resolve", f"{HOST}:{port}:{ip}", "--cacert", h.pki().ca_cert,
               "--max-time", "30", "-o", out,
               "-w", "%{http_code} %{http_version} %{local_ip} %{local_port} %{ssl_verify_result}",
               f"https://{HOST}:{port}{path}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, f"{' '.join(cmd)}: {r.stderr}\n{self.funneld.log()[-1500:]}")
        code, version, lip, lport, verify = r.stdout.split()
        with open(out, "rb") as f:
            body = f.read()
        os.unlink(out)
        return {"code": int(code), "version": version, "ip": lip, "port": int(lport), "verify": int(verify),
                "body": body}

    def check_record(self, rec, public, alpn, peer_port=None):
        self.assertEqual(rec.get("result"), "ok", rec)
        self.assertEqual(rec.get("listener"), "tls", rec)
        self.assertEqual(rec.get("client"), "internet", rec)
        self.assertEqual(rec.get("target"), f"{HOST}:{public}", rec)
        self.assertEqual(rec.get("sni"), HOST, rec)
        self.assertEqual(rec.get("alpn"), alpn, rec)
        # Clients offer 1.3 first: funneld takes it where its mbedTLS has it.
        self.assertEqual(rec.get("tls"), newest_tls(), rec)
        self.assertEqual(rec.get("backend"), self.h2_sock if public == 443 else self.h1_sock, rec)
        # The TCP peer is the forwarder, on loopback; it is not the client.
        self.assertRegex(rec.get("peer", ""), r"^127\.0\.0\.1:\d+$", rec)
        self.assertNotEqual(rec.get("peer"), rec.get("src"), rec)
        if peer_port is not None:
            self.assertEqual(rec.get("peer"), f"127.0.0.1:{peer_port}", rec)

    def fetch_and_check(self, port, family, public, what):
        """curl through a forwarder on port; funneld's and nginx's view of it."""
        proto, alpn, version = (("--http2", "h2", "2") if public == 443 else ("--http1.1", "http/1.1", "1.1"))
        token = f"t{os.urandom(6).hex()}"
        res = self.curl(port, family, proto, f"/?{what}={token}")
        self.assertEqual((res["code"], res["version"], res["verify"]), (200, version, 0), res)
        self.assertEqual(res["body"], self.page)
        want_ip = "127.0.0.1" if family == 4 else "::1"
        self.assertEqual(res["ip"], want_ip)
        src = addr_text(want_ip, res["port"])
        rec = self.record_for_src(src)
        self.check_record(rec, public, alpn)
        # nginx got funneld's PROXY header: the same client.
        addr, pport, proto_seen, status = self.nginx_line(0 if public == 443 else 1, token)
        self.assertEqual((addr, pport, status), (want_ip, str(res["port"]), 200))
        self.assertEqual(proto_seen, "HTTP/2.0" if public == 443 else "HTTP/1.1")
        return rec

    # ------------------------------------------------------------ the tailscaled-like relay

    def test_relay_curl(self):
        """curl --http1.1 and --http2, IPv4 and IPv6 clients, through funnel-relay
        --forward with v2 and v1 headers: the page, and the client's own
        address as src in funneld's record and in nginx's log."""
        for version in (2, 1):
            for public in (443, 8443):
                relay = self.relays[(version, public)]
                for family in ((4, 6) if relay.ipv6 else (4,)):
                    with self.subTest(version=version, public=public, family=family):
                        rec = self.fetch_and_check(relay.ports[family], family, public, f"relay{version}")
                        if (version, public, family) == (2, 443, 4):
                            print("\n    curl via relay-v2: " + "\n    ".join(self.raw_lines([rec])), flush=True)
        self.settle()
        self.assertTrue(all(r.get("result") == "ok" for r in self.new_records()), self.new_records())

    def test_relay_alpn(self):
        """The listener's target decides ALPN: h2 on 443, http/1.1 on 8443,
        for a client offering both (tailscaled's own TLS mode offers none)."""
        for public, want in ((443, "h2"), (8443, "http/1.1")):
            relay = self.relays[(2, public)]
            ctx = h.client_context(alpn=["h2", "http/1.1"])
            raw = relay.connect(4)
            with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                self.assertEqual(s.selected_alpn_protocol(), want)
                src = addr_text(*s.getsockname()[:2])
            rec = self.record_for_src(src)
            self.assertEqual((rec.get("alpn"), rec.get("listener")), (want, "tls"), rec)

    def bulk_transfer(self, raw, want_src, want_dst):
        """BULK_BYTES each way over raw (connected to a relay), SHA-256 checked
        at both ends; funneld's PROXY header to the backend carries want_src
        (ip, port) and want_dst with the listener's public_port."""
        up = os.urandom(BULK_BYTES)
        n = self.bulk.count()
        tls = h.TLSStream(raw, h.client_context(), BULK)
        try:
            tls.handshake()
            req = HashBackend.REQ.pack(len(up), BULK_BYTES)
            got, closed = h.tls_transfer(tls, req + up, nrecv=BULK_BYTES + 32, until_close=True, timeout=120)
        finally:
            tls.close()
        h.wait_for(lambda: self.bulk.count() > n, 10, what="the bulk backend's connection")
        res = self.bulk.results[n]
        self.assertTrue(res["done"].wait(60), "bulk backend still busy")
        self.assertIsNone(res["error"], res["error"])
        self.assertEqual(closed, "close_notify")
        self.assertEqual(len(got), BULK_BYTES + 32)
        self.assertEqual(res["up_len"], len(up))
        self.assertEqual(res["up_sha"], hashlib.sha256(up).hexdigest(), "backend received other bytes")
        self.assertEqual(got[BULK_BYTES:], hashlib.sha256(up).digest(), "backend's hash of what it got")
        self.assertEqual(hashlib.sha256(got[:BULK_BYTES]).hexdigest(), res["down_sha"],
                         "client received other bytes than the backend sent")
        hdr = res["header"]
        self.assertEqual(hdr["ver_cmd"], 0x21, hdr)
        self.assertEqual((hdr["src"], hdr["sport"]), want_src, hdr)
        # The destination: the received header's address, the listener's public_port.
        self.assertEqual((hdr["dst"], hdr["dport"]), (want_dst, 443), hdr)
        rec = self.record_for_src(addr_text(*want_src))
        self.assertEqual(rec.get("result"), "ok", rec)
        self.assertEqual((rec.get("listener"), rec.get("client"), rec.get("target")),
                         ("tls", "internet", f"{BULK}:443"), rec)
        self.assertEqual((int(rec["in"]), int(rec["out"])), (len(req) + len(up), BULK_BYTES + 32), rec)

    def test_relay_64mib_v2(self):
        """64 MiB each way through funnel-relay --proxy-protocol 2 (an IPv6
        client when there is one), SHA-256 at both ends."""
        relay = self.relays[(2, 443)]
        family = 6 if relay.ipv6 else 4
        raw = relay.connect(family)
        self.bulk_transfer(raw, tuple(raw.getsockname()[:2]), NODE6 if family == 6 else NODE4)

    def test_relay_64mib_v1(self):
        """64 MiB each way through funnel-relay --proxy-protocol 1 (IPv4 client)."""
        raw = self.relays[(1, 443)].connect(4)
        self.bulk_transfer(raw, tuple(raw.getsockname()[:2]), NODE4)

    def test_relay_src_override(self):
        """funnel-relay --src poses as a public client elsewhere (IPv4 and
        IPv6): funneld's src, and the header nginx gets, say that client."""
        for version, src, ip, port in ((2, "203.0.113.7:51234", "203.0.113.7", "51234"),
                                       (1, "[2001:db8::7]:4433", "2001:db8::7", "4433")):
            with self.subTest(version=version, src=src):
                r = trf.Relay(["--forward", "--proxy-protocol", str(version), "--src", src,
                               "-f", f"127.0.0.1:{self.listen[(version, 8443)]}"], want_ipv6=False)
                try:
                    token = f"t{os.urandom(6).hex()}"
                    res = self.curl(r.ports[4], 4, "--http1.1", f"/?src={token}")
                    self.assertEqual((res["code"], res["body"]), (200, self.page))
                    rec = self.record_for_src(src)
                    self.check_record(rec, 8443, "http/1.1")
                    addr, pport, _, status = self.nginx_line(1, token)
                    self.assertEqual((addr, pport, status), (ip, port, 200))
                finally:
                    self.assertEqual(stop_relay(r), 0, "".join(r.lines))

    # ------------------------------------------------------------ HAProxy

    def test_haproxy_curl(self):
        """HAProxy (mode tcp) with send-proxy-v2 and with send-proxy, bound on
        127.0.0.1 and [::1]: curl --http2 and --http1.1 get the page, and
        funneld's src is curl's own address and port; its peer is HAProxy's
        connection, as HAProxy logged it."""
        fetched = []
        for name, public in (("v2_443", 443), ("v1_443", 443), ("v2_8443", 8443), ("v1_8443", 8443)):
            for family in ((4, 6) if HAVE_V6 else (4,)):
                with self.subTest(frontend=name, family=family):
                    rec = self.fetch_and_check(self.haproxy.port(name, family), family, public, name)
                    fetched.append((name, rec))
                    if (name, family) == ("v2_443", 4):
                        print("\n    curl via haproxy-v2: " + "\n    ".join(self.raw_lines([rec])), flush=True)
        if not HAVE_V6:
            print("\n    (no IPv6 loopback: HAProxy's [::1] cases skipped)", flush=True)
        self.check_haproxy_sessions([rec for _, rec in fetched])

    def check_haproxy_sessions(self, recs):
        """Each record's src is the client HAProxy accepted, and its peer the
        source of HAProxy's connection for that client."""
        recs = [r for r in recs if r.get("src") not in (None, "-")]

        def pairs():
            got = {(addr_text(s["ci"], s["cp"]), addr_text(s["bi"], s["bp"])) for s in self.haproxy.sessions()}
            return got if all((r["src"], r["peer"]) in got for r in recs) else None
        try:
            h.wait_for(pairs, 20, what="HAProxy's session log lines")
        except AssertionError:
            self.fail(f"records {[(r['src'], r['peer']) for r in recs]} not all in HAProxy's log: "
                      f"{self.haproxy.sessions()}")

    def test_haproxy_half_close(self):
        """Half-close through HAProxy (which carries it, unlike tailscaled):
        the client sends, then its close_notify and a TCP FIN; the backend
        answers only after its EOF, and the answer still reaches the client."""
        data = os.urandom(300_000)
        raw = connect_tcp(self.haproxy.port("v2_443", 4))
        me = addr_text(*raw.getsockname()[:2])
        tls = h.TLSStream(raw, h.client_context(), HALF)
        try:
            tls.handshake()
            early, closed = h.tls_transfer(tls, data, close_notify=True)
            self.assertIsNone(closed)
            raw.shutdown(socket.SHUT_WR)
            got, closed = h.tls_transfer(tls, b"", until_close=True, timeout=30)
            got = early + got
        finally:
            tls.close()
        self.assertEqual(got, hashlib.sha256(data).digest())
        self.assertEqual(closed, "close_notify")
        rec = self.record_for_src(me)
        self.assertEqual((rec.get("result"), rec.get("listener"), rec.get("target")), ("ok", "tls", f"{HALF}:443"),
                         rec)
        self.assertEqual((int(rec["in"]), int(rec["out"])), (len(data), 32), rec)

    # ------------------------------------------------------------ chromium

    def chromium_fetch(self, port, tag):
        """Headless chromium --dump-dom https://HOST:port/ (HOST mapped to
        127.0.0.1); -> the ok records of the connection(s) that carried it."""
        exe, why = self.chromium()
        if exe is None:
            self.skipTest(why)
        chain, _ = cert()
        url = f"https://{HOST}:{port}/?chromium={tag}"
        rc, out, err = self.run_chromium(exe, [f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
                                               f"--ignore-certificate-errors-spki-list={e2e.spki_sha256_b64(chain)}",
                                               "--dump-dom", url], tag)
        self.assertIsNotNone(rc, f"chromium did not finish in 60 s: {err[-1500:]}")
        self.assertEqual(rc, 0, err[-1500:])
        self.assertIn(MARKER, out, f"page marker not in the DOM:\n{out[:1500]}\n{err[-1500:]}")
        self.settle()
        recs = self.new_records()
        carried = [r for r in recs if r.get("result") == "ok" and int(r.get("out", 0)) > len(self.page)]
        self.assertGreaterEqual(len(carried), 1, f"no connection carried the page: {recs}")
        for r in recs:
            self.assertEqual(r.get("listener"), "tls", r)
            if r.get("result") != "ok":
                # A spare (preconnect) connection chromium dropped when it
                # exited: before the forwarder's header was through, before
                # or during the handshake, or (through the relay, which has
                # no half-close) after it, before it sent a byte.
                self.assertNotIn(r, carried)
                self.assertEqual(r.get("in"), "0", r)
                if r.get("result") == "bad_proxy_header":
                    self.assertEqual(r.get("reason"), "closed before the PROXY header", r)
                    continue
                self.assertRegex(r.get("src", ""), r"^127\.0\.0\.1:\d+$", r)
                if r.get("result") == "handshake_failed":
                    self.assertRegex(r.get("reason", ""), r"^(reset|eof|closed before the ClientHello)", r)
                else:
                    self.assertEqual(r.get("result"), "relay_error", r)
                continue
            self.assertEqual((r.get("client"), r.get("sni")), ("internet", HOST), r)
            self.assertRegex(r.get("src", ""), r"^127\.0\.0\.1:\d+$", r)
            self.assertEqual((r.get("alpn"), r.get("tls")), ("h2", newest_tls()), r)
        # nginx logged the page's request with the same client.
        token_line = h.wait_for(lambda: [ln for ln in self.nginx.access_lines(0) if f"chromium={tag}" in ln],
                                20, what="nginx's line for chromium's request")[0]
        srcs = {r["src"] for r in carried}
        addr, port_seen = token_line.split()[:2]
        self.assertIn(addr_text(addr, port_seen), srcs, f"{token_line} vs {carried}")
        print(f"\n    chromium via {tag}: " + "\n    ".join(self.raw_lines(carried)), flush=True)
        return recs

    def raw_lines(self, recs):
        ids = {r["id"] for r in recs}
        return [ln for ln in self.funneld.log().splitlines()
                if (m := re.match(r"^funneld: conn (\d+) ", ln)) and int(m.group(1)) in ids]

    def test_chromium_haproxy_v2(self):
        """Chromium -> HAProxy send-proxy-v2 -> funneld [listener] -> nginx (h2):
        funneld's src is chromium's own address and port, as HAProxy saw it."""
        recs = self.chromium_fetch(self.haproxy.port("v2_443", 4), "haproxy-v2")
        self.check_haproxy_sessions(recs)

    def test_chromium_relay_v2(self):
        """Chromium -> funnel-relay --forward --proxy-protocol 2 -> funneld -> nginx (h2):
        funneld's src is chromium's own address, as the relay saw it."""
        relay = self.relays[(2, 443)]
        recs = [r for r in self.chromium_fetch(relay.ports[4], "relay-v2") if r.get("src") != "-"]

        def seen():
            froms = {m.group(1) for ln in relay.lines for m in [re.search(r"from (\S+): ", ln)] if m}
            return froms if all(r["src"] in froms for r in recs) else None
        try:
            h.wait_for(seen, 20, what="the relay's lines for chromium's connections")
        except AssertionError:
            self.fail(f"srcs {[r['src'] for r in recs]} not among the relay's clients: {relay.lines[-10:]}")

    # ------------------------------------------------------------ a unix: listener

    def test_unix_listener_without_header(self):
        """[listener unix:PATH] with proxy_protocol off: raw TLS straight in,
        routed by SNI with its public_port (10000); no address to show."""
        ctx = h.client_context(alpn=["http/1.1"])
        raw = h.connect(self.tls_unix)
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
            s.sendall(f"GET /blob.bin HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(1 << 17)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:200])
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(self.blob).hexdigest())
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 1, recs)
        r = recs[0]
        self.assertEqual((r.get("result"), r.get("listener"), r.get("peer"), r.get("src"), r.get("client")),
                         ("ok", "tls", "unix", "-", "-"), r)
        self.assertEqual((r.get("target"), r.get("backend")), (f"{HOST}:10000", self.plain_sock), r)

    def https_get_unix(self, path, url="/"):
        """GET url over TLS on a unix: [listener]; -> (status line, body)."""
        ctx = h.client_context(alpn=["http/1.1"])
        raw = h.connect(path)
        data = b""
        try:
            with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(f"GET {url} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                while True:
                    chunk = s.recv(1 << 17)
                    if not chunk:
                        break
                    data += chunk
        except (OSError, ssl.SSLError) as e:   # the record says why
            data += f"\r\n\r\n(connection ended: {e!r})".encode()
        finally:
            raw.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], body

    def test_unix_listener_backend_wants_header(self):
        """A unix: [listener] has no client address, and its target's backend
        asks for a PROXY header (nginx, `listen ... proxy_protocol`): the
        request is served all the same, the header saying the source is
        unknown (v1 "PROXY UNKNOWN", which nginx accepts), rather than the
        connection dropped after a completed handshake."""
        token = f"t{os.urandom(6).hex()}"
        status, body = self.https_get_unix(self.tls_unix_pp, f"/?unixpp={token}")
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual((recs[0].get("result"), recs[0].get("listener"), recs[0].get("peer")),
                         ("ok", "tls", "unix"), recs[0])
        self.assertTrue(status.startswith(b"HTTP/1.1 200 "), status)
        self.assertEqual(body, self.page)
        addr, _, _, code = self.nginx_line(1, token)
        self.assertEqual(code, 200)
        self.assertIn(addr, ("", "-"), "nginx saw a client address where none was told")

    # ------------------------------------------------------------ metrics

    def test_metrics_by_client_kind(self):
        """funneld_listener_connections_total{listener="tls",client=...}:
        internet for public sources, tailnet for 100.64.0.0/10 and
        fd7a:115c:a1e0::/48 ones (a tailnet peer on the same Funnel port)."""
        before = e2e.metrics(self.msock)
        tailnet = [("100.101.102.103:4242", "100.101.102.103"), ("[fd7a:115c:a1e0::5]:4243", "fd7a:115c:a1e0::5"),
                   ("100.64.0.1:1", "100.64.0.1")]
        internet = [("100.128.0.1:2", "100.128.0.1"), ("[fd7a:115c:a1e1::5]:3", "fd7a:115c:a1e1::5")]
        for src, ip in tailnet + internet:
            r = trf.Relay(["--forward", "--proxy-protocol", "2", "--src", src,
                           "-f", f"127.0.0.1:{self.listen[(2, 8443)]}"], want_ipv6=False)
            try:
                res = self.curl(r.ports[4], 4, "--http1.1", "/")
                self.assertEqual(res["code"], 200)
            finally:
                self.assertEqual(stop_relay(r), 0, "".join(r.lines))
            rec = self.record_for_src(src)
            self.assertEqual(rec.get("client"), "tailnet" if (src, ip) in tailnet else "internet", rec)
            self.assertEqual(rec.get("listener"), "tls", rec)
        # And one from the relay's own client: internet (127.0.0.1 is no tailnet address).
        self.fetch_and_check(self.relays[(2, 8443)].ports[4], 4, 8443, "metrics")
        self.settle()
        delta = metric_delta(before, e2e.metrics(self.msock), "funneld_listener_connections_total")
        self.assertEqual(delta, {'funneld_listener_connections_total{listener="tls",client="tailnet"}': 3,
                                 'funneld_listener_connections_total{listener="tls",client="internet"}': 3},
                         delta)


# ---------------------------------------------------------------- refusals

class RefusalTest(h.ClassDaemonCase):
    """One funneld (header_timeout 1s): a listener that trusts only
    127.0.0.2, v2 and v1 listeners on public_port 443, [clients] deny.
    Every connection a test makes leaves exactly one record (the ledger),
    except where the design says it is logged once per peer."""

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cls.echo = h.Backend(cls.wd("echo.sock"), "echo")
        cls.only = h.Backend(cls.wd("only.sock"), "echo")
        cls.backends = (cls.echo, cls.only)
        cls.msock = cls.wd("metrics.sock")

        def config(ports):
            pt, p2, p1 = ports
            text = funneld_head(cls.msock, cls.wd("ingress.sock"), header_timeout="1s")
            text += "\n[clients]\ndeny = 203.0.113.0/24\n"
            text += (f"\n[backend {HOST}:443]\nsocket = {cls.echo.path}\n"
                     f"\n[backend {ONLY8443}:8443]\nsocket = {cls.only.path}\n"
                     f"\n[backend {GONE}:443]\nsocket = {cls.wd('gone.sock')}\n")
            text += (f"\n[listener 127.0.0.1:{pt}]\ntrusted = 127.0.0.2\n"
                     f"\n[listener 127.0.0.1:{p2}]\nproxy_protocol = v2\n"
                     f"\n[listener 127.0.0.1:{p1}]\nproxy_protocol = v1\n")
            return text
        try:
            cls.funneld, (cls.p_trusted, cls.p_v2, cls.p_v1) = start_funneld(cls.wd, config, 3)
            h.wait_for(lambda: os.path.exists(cls.msock), 10, what="funneld's metrics socket")
        except BaseException:
            cls.tearDownClass()
            raise

    def setUp(self):
        super().setUp()
        self.accepted = (self.echo.accepted, self.only.accepted)
        self.m_before = e2e.metrics(self.msock)

    # ------------------------------------------------------------ helpers

    def assert_no_backend(self):
        """Nothing reached any backend since setUp."""
        self.assertEqual((self.echo.accepted, self.only.accepted), self.accepted, "a backend was connected")
        self.assertEqual(metric_delta(self.m_before, e2e.metrics(self.msock), "funneld_backend_"), {})

    def refused(self, port, data, shutdown=False, source=None):
        """Send data (maybe half-close), read to the end: -> bytes received."""
        s = connect_tcp(port, source=source)
        self.ledger.add()
        try:
            if data:
                s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
            got, how = h.read_to_eof(s, timeout=10)
        finally:
            s.close()
        return got

    def last_record(self):
        recs = self.ledger.wait(self.ledger.made)
        return recs[-1]

    def expect_closed(self, port, data, result, reason, shutdown=False):
        """Closed with not one byte back; result/reason in the record; no backend."""
        got = self.refused(port, data, shutdown=shutdown)
        self.assertEqual(got, b"", f"bytes came back: {got!r}")
        rec = self.last_record()
        self.assertEqual((rec.get("result"), rec.get("listener")), (result, "tls"), rec)
        self.assertRegex(rec.get("reason", ""), reason, rec)
        self.assert_no_backend()
        return rec

    def handshake_refused(self, header, server_hostname, alert, want_ssl_reason):
        """header + a ClientHello in one segment: exactly one TLS alert
        record comes back, then the close; Python's ssl reads it as
        want_ssl_reason.  -> the record."""
        tls, hello = client_hello(server_hostname)
        got = self.refused(self.p_v2, header + hello)
        self.assertEqual(got, alert)
        tls.inc.write(got)
        tls.inc.write_eof()
        with self.assertRaises(ssl.SSLError) as cm:
            tls.obj.do_handshake()
        self.assertEqual(cm.exception.reason, want_ssl_reason, cm.exception)
        self.assert_no_backend()
        return self.last_record()

    def header(self, src="198.51.100.20", sport=40000):
        return v2_header(src, sport, NODE4, self.p_v2)

    # ------------------------------------------------------------ the peer

    def test_untrusted_peer(self):
        """trusted = 127.0.0.2: a connection from 127.0.0.1 is closed at
        accept, not a byte read or written, logged once per peer per 10 s,
        counted each time; from 127.0.0.2 the same listener serves."""
        _, hello = client_hello()
        got = self.refused(self.p_trusted, b"")
        self.assertEqual(got, b"")
        rec = self.last_record()
        self.assertEqual((rec.get("result"), rec.get("listener"), rec.get("reason")),
                         ("untrusted_peer", "tls", "peer not in trusted"), rec)
        self.assertRegex(rec.get("peer", ""), r"^127\.0\.0\.1:\d+$")
        # Again at once, with a ClientHello: refused and counted, not logged.
        s = connect_tcp(self.p_trusted)
        try:
            try:
                s.sendall(hello)
            except (BrokenPipeError, ConnectionResetError):
                pass
            got, _ = h.read_to_eof(s)
        finally:
            s.close()
        self.assertEqual(got, b"")
        self.assertEqual(metric_delta(self.m_before, e2e.metrics(self.msock), "funneld_refusals_total"),
                         {'funneld_refusals_total{limit="trusted"}': 2})
        self.assert_no_backend()
        # A trusted peer (127.0.0.2, no PROXY header on this listener): served.
        raw = connect_tcp(self.p_trusted, source="127.0.0.2")
        me = addr_text(*raw.getsockname()[:2])
        self.ledger.add()
        tls = h.TLSStream(raw, h.client_context(), HOST)
        try:
            tls.handshake()
            tls.sendall(b"ping")
            self.assertEqual(tls.recv(), b"ping")
        finally:
            tls.close()
        rec = self.ledger.wait(2)[-1]
        # No PROXY header: the TCP peer is the client.
        self.assertEqual((rec.get("result"), rec.get("listener"), rec.get("src"), rec.get("peer")),
                         ("ok", "tls", me, me), rec)
        self.assertEqual(self.echo.accepted, self.accepted[0] + 1)

    # ------------------------------------------------------------ PROXY headers

    def test_missing_header(self):
        """A ClientHello straight away on a v2 and on a v1 listener: closed,
        no byte back, bad_proxy_header."""
        _, hello = client_hello()
        self.expect_closed(self.p_v2, hello, "bad_proxy_header", r"^PROXY header: ")
        self.expect_closed(self.p_v1, hello, "bad_proxy_header", r"^PROXY header: ")

    def test_malformed_headers(self):
        _, hello = client_hello()
        good = self.header()
        eof = r"^closed before the PROXY header$"
        cases = [
            ("v1 garbage", self.p_v1, b"PROXY TCP4 1.2.3 4.5.6.7 x y\r\n" + hello, False, r"^PROXY header: bad v1"),
            ("v1 bad port", self.p_v1, b"PROXY TCP4 198.51.100.1 100.100.100.100 70000 443\r\n" + hello, False,
             r"^PROXY header: bad v1 source port"),
            ("v1 not PROXY", self.p_v1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, r"^PROXY header: bad v1 signature"),
            ("v1 no CRLF within 107 bytes", self.p_v1, b"PROXY UNKNOWN " + b"x" * 120, False, r"^PROXY header: "),
            ("v1 lone LF", self.p_v1, b"PROXY TCP4 198.51.100.1 100.100.100.100 1 443\n" + hello, False,
             r"^PROXY header: "),
            ("v2 bad signature", self.p_v2, good[:5] + b"X" + good[6:] + hello, False,
             r"^PROXY header: bad v2 signature$"),
            ("v2 bad version", self.p_v2, good[:12] + b"\x31" + good[13:] + hello, False,
             r"^PROXY header: bad v2 version$"),
            ("v2 bad command", self.p_v2, good[:12] + b"\x2f" + good[13:] + hello, False,
             r"^PROXY header: bad v2 command$"),
            ("v2 UDP", self.p_v2, good[:13] + b"\x12" + good[14:] + hello, False, r"^PROXY header: "),
            ("v2 length short of its family", self.p_v2, good[:14] + b"\x00\x08" + good[16:24] + hello, False,
             r"^PROXY header: v2 address block too short$"),
            ("v2 TLV past the end", self.p_v2, good[:14] + b"\x00\x0f" + good[16:28] + b"\x04\x00\x09" + hello,
             False, r"^PROXY header: "),
            ("v2 truncated, then EOF", self.p_v2, good[:20], True, eof),
            ("v2 signature only, then EOF", self.p_v2, good[:9], True, eof),
            ("v1 truncated, then EOF", self.p_v1, b"PROXY TCP4 198.51.100.1 ", True, eof),
        ]
        for what, port, data, shut, reason in cases:
            with self.subTest(what):
                self.expect_closed(port, data, "bad_proxy_header", reason, shutdown=shut)

    def test_wrong_version(self):
        """v1 to a v2 listener, v2 to a v1 listener: never guessed at."""
        _, hello = client_hello()
        self.expect_closed(self.p_v2, v1_header("198.51.100.1", 1, NODE4, 443) + hello, "bad_proxy_header",
                           r"^PROXY header: ")
        self.expect_closed(self.p_v1, self.header() + hello, "bad_proxy_header", r"^PROXY header: ")

    def test_slow_header(self):
        """Part of a header, then nothing: closed at header_timeout (1s)."""
        t0 = time.monotonic()
        rec = self.expect_closed(self.p_v2, self.header()[:10], "bad_proxy_header",
                                 r"^PROXY header not complete within header_timeout$")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.9, rec)
        self.assertLess(elapsed, h.slack(5), rec)

    def test_local_closes_cleanly(self):
        """v2 LOCAL (a health check) and v1 PROXY UNKNOWN: closed, no byte
        back (an orderly close, not a reset), proxy_local."""
        for port, data in ((self.p_v2, V2_LOCAL), (self.p_v1, b"PROXY UNKNOWN\r\n"),
                           (self.p_v1, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")):
            with self.subTest(data=data):
                s = connect_tcp(port)
                self.ledger.add()
                try:
                    s.sendall(data)
                    got, how = h.read_to_eof(s)
                finally:
                    s.close()
                self.assertEqual((got, how), (b"", "eof"))
                rec = self.last_record()
                self.assertEqual((rec.get("result"), rec.get("listener")), ("proxy_local", "tls"), rec)
        self.assert_no_backend()

    def test_split_header_then_pipelined_hello(self):
        """A header in many segments, each read by funneld before the next is
        sent, the last one carrying the ClientHello right behind it: the
        bytes after the header are kept for TLS, the handshake succeeds and
        the header's source is the client."""
        for what, port, header, src in (
                ("v2", self.p_v2, v2_header("198.51.100.77", 40077, NODE4, 443, tlvs=b"\x04\x00\x03abc"),
                 "198.51.100.77:40077"),
                ("v2 IPv6", self.p_v2, v2_header("2001:db8::77", 40078, NODE6, 443), "[2001:db8::77]:40078"),
                ("v1", self.p_v1, v1_header("198.51.100.78", 40079, NODE4, 443), "198.51.100.78:40079")):
            with self.subTest(what):
                tls, hello = client_hello(alpn=["http/1.1"])
                s = connect_tcp(port)
                self.ledger.add()
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                cport = s.getsockname()[1]
                cuts = [1, 2, 4, 7, 12, 13, 16, 20]
                pieces = [header[a:b] for a, b in zip([0] + cuts, cuts)] + [header[cuts[-1]:] + hello]
                if what == "v1":
                    # The ClientHello itself split too: the header's last
                    # bytes with its first 3, then the rest in pieces.
                    last = header[cuts[-1]:] + hello[:3]
                    pieces = pieces[:-1] + [last, hello[3:5], hello[5:50], hello[50:]]
                try:
                    for piece in pieces[:-1]:
                        s.sendall(piece)
                        # funneld read it (its receive queue is empty again)
                        h.wait_for(lambda: h.tcp_unread(port, cport) == 0, 5, interval=0.001,
                                   what="funneld to read a header segment")
                    s.sendall(pieces[-1])
                    tls.sock = s
                    tls.handshake()
                    tls.sendall(b"after the split header")
                    self.assertEqual(tls.recv(), b"after the split header")
                finally:
                    s.close()
                rec = self.ledger.wait(self.ledger.made)[-1]
                self.assertEqual((rec.get("result"), rec.get("src"), rec.get("listener")), ("ok", src, "tls"), rec)
                self.assertEqual(rec.get("alpn"), "http/1.1", rec)

    # ------------------------------------------------------------ routing

    def test_no_sni(self):
        rec = self.handshake_refused(self.header(), None, ALERT_UNRECOGNIZED_NAME, "TLSV1_UNRECOGNIZED_NAME")
        self.assertEqual((rec.get("result"), rec.get("reason")), ("handshake_failed", "no SNI: nothing to route by"),
                         rec)
        self.assertEqual(metric_delta(self.m_before, e2e.metrics(self.msock), "funneld_handshake_failures_total"),
                         {'funneld_handshake_failures_total{reason="unrecognized_name"}': 1})

    def test_unknown_sni(self):
        rec = self.handshake_refused(self.header(), "nobody.example.ts.net", ALERT_UNRECOGNIZED_NAME,
                                     "TLSV1_UNRECOGNIZED_NAME")
        self.assertEqual((rec.get("result"), rec.get("reason"), rec.get("target")),
                         ("handshake_failed", "no backend for the SNI", "nobody.example.ts.net:443"), rec)

    def test_sni_of_another_public_port(self):
        """ONLY8443 has a backend on 8443 only; this listener's public_port is 443."""
        rec = self.handshake_refused(self.header(), ONLY8443, ALERT_UNRECOGNIZED_NAME, "TLSV1_UNRECOGNIZED_NAME")
        self.assertEqual((rec.get("result"), rec.get("target")), ("handshake_failed", f"{ONLY8443}:443"), rec)

    def test_backend_absent(self):
        """The backend's socket does not exist: handshake_failure alert, refused_502."""
        rec = self.handshake_refused(self.header(), GONE, ALERT_HANDSHAKE_FAILURE, "SSLV3_ALERT_HANDSHAKE_FAILURE")
        self.assertEqual((rec.get("result"), rec.get("target")), ("refused_502", f"{GONE}:443"), rec)
        self.assertIn("gone.sock", rec.get("reason", ""), rec)

    def test_haproxy_health_check_is_local(self):
        """HAProxy's health checks with check-send-proxy send a v2 LOCAL
        header: each is closed cleanly (proxy_local), reaches no backend,
        and HAProxy sees the server up."""
        hp = HAProxy(self.wd, [("hc", self.p_v2, "send-proxy-v2 check check-send-proxy inter 100ms")])
        try:
            h.wait_for(lambda: sum(1 for r in self.ledger.new_records() if r.get("result") == "proxy_local") >= 3,
                       10, what="three health checks")
        finally:
            hp.stop()
        out = hp.output()
        self.settle_checks()
        recs = self.ledger.new_records()
        self.ledger.add(len(recs))
        for r in recs:
            self.assertEqual((r.get("result"), r.get("listener"), r.get("in"), r.get("out")),
                             ("proxy_local", "tls", "0", "0"), r)
        self.assertNotRegex(out, r"(?i)server \S+ is DOWN", out)
        self.assert_no_backend()

    def settle_checks(self):
        """Every connection funneld has ended is logged (none open)."""
        def quiet():
            m = e2e.metrics(self.msock)
            ended = sum(v for k, v in m.items() if k.startswith("funneld_connections_total{"))
            before = sum(v for k, v in self.m_before.items() if k.startswith("funneld_connections_total{"))
            return m.get("funneld_connections_open") == 0 and len(self.ledger.new_records()) == ended - before
        h.wait_for(quiet, 20, what="every health check logged")

    def test_clients_deny_by_proxy_source(self):
        """[clients] deny applies to the PROXY header's source, not the TCP peer."""
        _, hello = client_hello()
        rec = self.expect_closed(self.p_v2, self.header("203.0.113.9", 1000) + hello, "refused_403", r".")
        self.assertEqual(rec.get("src"), "203.0.113.9:1000", rec)
        # An IPv4-mapped source in a TCP6 header counts as that IPv4 address.
        rec = self.expect_closed(self.p_v2, v2_header("::ffff:203.0.113.10", 1002, "::ffff:100.100.100.100", 443)
                                 + hello, "refused_403", r".")
        self.assertEqual(metric_delta(self.m_before, e2e.metrics(self.msock), "funneld_refusals_total"),
                         {'funneld_refusals_total{limit="deny"}': 2})
        # Another source through the same peer: served.
        raw = connect_tcp(self.p_v2)
        self.ledger.add()
        tls = h.TLSStream(raw, h.client_context(), HOST)
        try:
            raw.sendall(self.header("198.51.100.9", 1001) + tls.client_hello())
            tls.handshake()
            tls.sendall(b"allowed")
            self.assertEqual(tls.recv(), b"allowed")
        finally:
            tls.close()
        rec = self.ledger.wait(self.ledger.made)[-1]
        self.assertEqual((rec.get("result"), rec.get("src")), ("ok", "198.51.100.9:1001"), rec)


# ---------------------------------------------------------------- socket activation

class SocketActivationTest(unittest.TestCase):
    """systemd-socket-activate passes two TCP sockets: one whose address is a
    [listener]'s (so it is that listener, whatever its name), one that is no
    [listener]'s (an ingress listener).  A [listener] it did not pass is
    opened by funneld; the configured listen address is not."""

    def setUp(self):
        if shutil.which("systemd-socket-activate") is None:
            raise AssertionError("systemd-socket-activate not found (package systemd)")
        self.wd = h.Workdir()
        self.echo = h.Backend(self.wd("echo.sock"), "echo")
        self.f = None

    def tearDown(self):
        rc = self.f.stop() if self.f is not None else 0
        self.echo.close()
        self.wd.cleanup()
        self.assertEqual(rc, 0, "funneld did not exit 0 at SIGTERM")

    def tls_echo(self, sock, first, payload):
        """first (a PROXY header, or b"") and the ClientHello in one segment, then an echo."""
        tls = h.TLSStream(sock, h.client_context(), HOST)
        try:
            sock.sendall(first + tls.client_hello())
            tls.handshake()
            tls.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = tls.recv()
                if not chunk:
                    break
                got += chunk
            return got
        finally:
            tls.close()

    def test_passed_listener(self):
        act_l, act_i, own_l = free_ports(3)
        conf_ingress = self.wd("conf-ingress.sock")
        text = funneld_head(self.wd("metrics.sock"), conf_ingress)
        text += (f"\n[backend {HOST}:443]\nsocket = {self.echo.path}\n"
                 f"\n[listener 127.0.0.1:{act_l}]\nproxy_protocol = v2\n"
                 f"\n[listener 127.0.0.1:{own_l}]\nproxy_protocol = v1\n")
        self.f = h.Funneld(self.wd.path, text)
        # It binds, then execs funneld at the first connection (which waits
        # in the backlog meanwhile), as systemd does.  The names say nothing:
        # the address decides.
        self.f.start(wait=False, prefix=["systemd-socket-activate", "-l", f"127.0.0.1:{act_l}",
                                         "-l", f"127.0.0.1:{act_i}", "--fdname=ingress:ingress"])
        h.wait_for(lambda: self.f.log().count("Listening on") == 2 or self.f.proc.poll() is not None,
                   15, what="systemd-socket-activate to listen")
        self.assertIsNone(self.f.proc.poll(), self.f.log())

        # 1. The passed [listener] socket: a PROXY v2 header, then TLS.
        got = self.tls_echo(connect_tcp(act_l), v2_header("198.51.100.5", 5555, NODE4, act_l), b"via fd 3")
        self.assertEqual(got, b"via fd 3")
        log = self.f.log()
        self.assertIn("socket-activated: 2 sockets; listen = ignored", log)
        self.assertIn(f"listening on 127.0.0.1:{act_l}\n", log)
        self.assertRegex(log, r"listening on fd 4 \(ingress\)")
        # 2. The other passed socket is an ingress listener: head, 101, TLS.
        st = h.open_stream(("127.0.0.1", act_i), target=f"{HOST}:443", src="203.0.113.5:1", server_hostname=HOST)
        try:
            st.sendall(b"via fd 4")
            self.assertEqual(st.recv(), b"via fd 4")
        finally:
            st.close()
        # 3. The [listener] that was not passed: funneld opened it.
        self.assertTrue(h.tcp_listening(own_l), f"[listener 127.0.0.1:{own_l}] not opened: {self.f.log()}")
        got = self.tls_echo(connect_tcp(own_l), v1_header("198.51.100.6", 6666, NODE4, 443), b"own")
        self.assertEqual(got, b"own")
        # The configured listen address was not opened.
        self.assertFalse(os.path.exists(conf_ingress), "listen = unix:... created under socket activation")
        recs = self.f.wait_records(3)
        by_src = {r.get("src"): r for r in recs}
        self.assertEqual(len(recs), 3, recs)
        for src, listener in (("198.51.100.5:5555", "tls"), ("203.0.113.5:1", "ingress"),
                              ("198.51.100.6:6666", "tls")):
            self.assertIn(src, by_src, recs)
            self.assertEqual((by_src[src].get("result"), by_src[src].get("listener")), ("ok", listener),
                             by_src[src])


# ---------------------------------------------------------------- make demo MODE=tailscaled

class DemoTest(unittest.TestCase):
    def test_demo_tailscaled_mode(self):
        """scripts/demo --mode tailscaled (what `make demo MODE=tailscaled`
        runs): the page through funnel-relay --forward --proxy-protocol 2 and
        a funneld [listener], and funneld's line with listener=tls and curl's
        own address as src.  It stops everything it started."""
        demo = os.path.join(h.ROOT, "scripts", "demo")
        env = dict(os.environ, BUILD=h.BUILD)
        p = subprocess.Popen([demo, "--mode", "tailscaled"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=h.ROOT)
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)     # the script stops what it started
            out, _ = p.communicate(timeout=30)
            self.fail(f"scripts/demo --mode tailscaled did not finish in 120 s: {out.decode()[-2000:]}")
        out = out.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out[-3000:])
        self.assertIn("Hello from funneld demo", out)
        m = re.search(r"^funneld: conn \d+ listener=tls client=internet peer=127\.0\.0\.1:\d+ "
                      r"src=127\.0\.0\.1:(\d+) .* result=ok$", out, re.M)
        self.assertIsNotNone(m, out[-3000:])
        self.assertIn(f"from 127.0.0.1:{m.group(1)}: ", out, "the relay's line is for another client")
