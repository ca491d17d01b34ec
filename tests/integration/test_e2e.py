"""End to end: real clients -> funnel-relay -> funneld -> nginx (DESIGN.md §1).

The whole Funnel path on loopback, as scripts/demo builds it, driven by the
clients a public user would bring:

    client --TLS--> funnel-relay --POST /v0/ingress--> funneld --plain--> nginx
         127.0.0.1:<port>      unix:funneld.sock  (TLS ends)   unix:h2.sock / h1.sock

Two targets on one funneld, each with its own relay (its own public port):
  demo.example.ts.net:443   alpn = h2        -> nginx `listen unix:... http2` (h2c)
  demo.example.ts.net:8443  alpn = http/1.1  -> nginx plain HTTP/1.1 listener

- curl --http1.1 and --http2: several URLs on one kept-alive connection
  (num_connects, one funneld record), bodies byte for byte, the negotiated
  protocol follows the target's ALPN.
- openssl s_client: chain verifies, TLSv1.2, ECDHE AEAD suite, ALPN.
- 100 concurrent Python-ssl clients, each fetching its own 1-2 MiB file:
  every SHA-256 checked, 100 ok records with out >= the file's size.
- chromium (optional: skips when it cannot be installed or started):
  --dump-dom shows the page's marker; --screenshot writes a PNG to
  build/test-output/chromium.png.
- h2load through the relay (--connect-to), over h2 and pipelined HTTP/1.1
  (--h1): every request done, no errors.  (wrk is not used: it sends the
  URL host as SNI even for an IP literal, which funneld refuses by design.)

Every process started here is stopped by PID in tearDownClass; waits are
bounded polls; all sockets are loopback or Unix.
"""
import base64
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

HOST = "demo.example.ts.net"
H2_TARGET = f"{HOST}:443"       # alpn = h2, nginx h2c backend
H1_TARGET = f"{HOST}:8443"      # alpn = http/1.1, nginx HTTP/1.1 backend
MARKER = "funneld-e2e-marker-5d1c9e: hello through the funnel"
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
RELAY = os.path.join(h.TOOLS, "funnel-relay")
OUTPUT_DIR = os.path.join(h.ROOT, "build", "test-output")
MIB = 1 << 20
NCLIENTS = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def need(tool):
    """Path of a required tool (scripts/deps installs it) or a failure."""
    path = tool if os.path.isabs(tool) else shutil.which(tool)
    if not path or not os.access(path, os.X_OK):
        raise AssertionError(f"{tool} not found: run scripts/deps (make deps) to install it")
    return path


def stop_process(p, sig=signal.SIGTERM, timeout=15):
    """Stop one process we started, by its PID; returns its exit status."""
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def kill_group(pgid):
    """Kill a process group we created (start_new_session=True); quiet if gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def spki_sha256_b64(cert_path):
    """base64(SHA-256(SubjectPublicKeyInfo DER)) of the first certificate in
    cert_path: what chromium's --ignore-certificate-errors-spki-list wants."""
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-pubkey", "-noout"],
                         check=True, capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def metrics(path):
    """funneld's /metrics over its Unix socket -> {name or name{labels}: value}."""
    s = h.connect(path, timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: funneld\r\n\r\n")
        data, _ = h.read_to_eof(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
        raise AssertionError(f"GET /metrics: {data[:300]!r}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def png_pixels(png, points):
    """[(r, g, b)] of the pixels at points [(x, y)] of an 8-bit RGB/RGBA
    non-interlaced PNG (what chromium writes), decoded with zlib alone."""
    pos, idat, ihdr = 8, b"", None
    while pos < len(png):
        length, ctype = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data)
        elif ctype == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, color, _, _, interlace = ihdr
    if depth != 8 or color not in (2, 6) or interlace:
        raise AssertionError(f"unexpected PNG format {ihdr}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    rows = {}
    for row in range(max(y for _, y in points) + 1):
        f = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = rows[row] = line
    return [tuple(rows[y][x * bpp:x * bpp + 3]) for x, y in points]


def nginx_temp_paths(tmp):
    """*_temp_path lines for the modules this nginx has (all inside tmp)."""
    try:
        v = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=30).stderr
    except OSError:
        v = ""
    lines = ""
    for m in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{m}_module" not in v:
            lines += f'    {m}_temp_path "{tmp}/nginx-tmp/{m}";\n'
    return lines


class E2E(h.ClassProcessesCase):
    """One nginx, one funneld, two relays for the whole class."""

    nginx = None
    relays = ()
    chromium_state = None       # (path, None) or (None, reason to skip)

    # ------------------------------------------------------------ set-up

    @classmethod
    def _set_up(cls):
        cls.relays = []
        for tool in (NGINX, "curl", "openssl"):
            need(tool)
        if not os.access(h.FUNNELD, os.X_OK) or not os.access(RELAY, os.X_OK):
            raise AssertionError(f"{h.FUNNELD} or {RELAY} not built: run make all")
        wd = cls.wd

        # Certificates: a CA of this module's own, a leaf for HOST.
        cls.pki = h.PKI(wd("pki"))
        cls.chain, cls.key = cls.pki.leaf(HOST)
        cls.ca = cls.pki.ca_cert

        # The site: a page with the marker, a few small files, and
        # NCLIENTS distinct random files of 1-2 MiB.
        www = wd("www")
        os.makedirs(os.path.join(www, "big"))
        os.makedirs(wd("nginx-tmp"))
        cls.files = {}          # URL path -> bytes
        page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>funneld e2e</title>"
                f"<style>body{{background:#1d6b3a;color:#fff;font:28px sans-serif}}</style></head>\n"
                f"<body><h1 id=\"marker\">{MARKER}</h1>\n"
                f"<p>nginx on a Unix socket, TLS by funneld, via funnel-relay.</p></body></html>\n")
        cls._put(www, "/index.html", page.encode())
        cls._put(www, "/small.txt", b"".join(b"line %05d of a small text file\n" % i for i in range(300)))
        cls._put(www, "/mid.bin", os.urandom(300 * 1024 + 17))
        cls._put(www, "/odd.bin", os.urandom(65536 * 3 + 1))
        rnd = random.Random(0xF00D)
        cls.big = []            # (URL path, size, sha256)
        for i in range(NCLIENTS):
            data = os.urandom(rnd.randint(MIB, 2 * MIB))
            path = f"/big/{i:03d}.bin"
            with open(www + path, "wb") as f:
                f.write(data)
            cls.big.append((path, len(data), hashlib.sha256(data).hexdigest()))

        # nginx: an HTTP/1.1 listener and an h2c (prior knowledge) one.
        cls.h1_sock, cls.h2_sock = wd("h1.sock"), wd("h2.sock")
        tmp = wd.path
        conf = f"""# One process, every path inside {tmp}.
master_process off;
worker_processes 1;
pid "{tmp}/nginx.pid";
error_log "{tmp}/nginx-error.log" notice;
events {{
    worker_connections 1024;
}}
http {{
    types {{
        text/html html;
        text/plain txt;
    }}
    default_type application/octet-stream;
    access_log "{tmp}/nginx-access.log";
    client_body_temp_path "{tmp}/nginx-tmp/client_body";
{nginx_temp_paths(tmp)}
    keepalive_requests 100000;
    server {{
        listen "unix:{cls.h1_sock}";
        server_name {HOST};
        root "{www}";
        index index.html;
    }}
    server {{
        listen "unix:{cls.h2_sock}" http2;
        server_name {HOST};
        root "{www}";
        index index.html;
    }}
}}
"""
        with open(wd("nginx.conf"), "w") as f:
            f.write(conf)
        cls.nginx_out = open(wd("nginx.out"), "ab")
        cls.nginx = subprocess.Popen(
            [NGINX, "-p", tmp, "-c", wd("nginx.conf"), "-e", wd("nginx-error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=cls.nginx_out, stderr=cls.nginx_out,
            preexec_fn=h.die_with_parent)

        def nginx_answers(sock, *proto):
            if cls.nginx.poll() is not None:
                raise AssertionError(f"nginx exited {cls.nginx.returncode}: "
                                     f"{read_text(wd('nginx.out'))}{read_text(wd('nginx-error.log'))}")
            if not os.path.exists(sock):
                return False
            p = subprocess.run(["curl", "-sS", "--max-time", "5", *proto, "--unix-socket", sock,
                                f"http://{HOST}/"], capture_output=True, text=True, timeout=30)
            return p.returncode == 0 and MARKER in p.stdout
        h.wait_for(lambda: nginx_answers(cls.h1_sock, "--http1.1"), 20, what="nginx HTTP/1.1 listener")
        h.wait_for(lambda: nginx_answers(cls.h2_sock, "--http2-prior-knowledge"), 20,
                   what="nginx h2c listener")

        # funneld: two targets, each with its own ALPN and backend.
        cls.fsock, cls.msock = wd("funneld.sock"), wd("metrics.sock")
        config = h.make_config(
            f"unix:{cls.fsock}", cls.chain, cls.key,
            [(H2_TARGET, cls.h2_sock, "alpn = h2"), (H1_TARGET, cls.h1_sock, "alpn = http/1.1")],
            tls_extra="alpn = h2, http/1.1",
            header_timeout="10s", handshake_timeout="10s", idle_timeout="60s",
            metrics=f"unix:{cls.msock}")
        cls.funneld = h.Funneld(wd.path, config)
        cls.funneld.start()
        h.wait_for(lambda: os.path.exists(cls.msock), 10, what="funneld's metrics socket")
        # One plain request first: a funneld that does not accept at all
        # fails here, once, rather than as a timeout in every test.
        try:
            status = h.refused(cls.fsock, b"GET /e2e-probe HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)[0]
        except OSError as e:
            raise AssertionError(f"funneld did not answer a request on unix:{cls.fsock} within 10 s "
                                 f"({e!r}): it accepts no connection") from None
        if status != 404:
            raise AssertionError(f"funneld answered GET /e2e-probe with {status}, expected 404")

        # One relay per target, each on a free loopback port of its own.
        cls.h2_port = cls._start_relay(H2_TARGET, "relay-h2")
        cls.h1_port = cls._start_relay(H1_TARGET, "relay-h1")

    @classmethod
    def _put(cls, www, path, data):
        with open(www + path, "wb") as f:
            f.write(data)
        cls.files[path] = data

    @classmethod
    def _start_relay(cls, target, name):
        log = cls.wd(f"{name}.log")
        logf = open(log, "ab")
        # Downloads longer than the relay's first-bytes wait (1 s) once
        # tripped a stale bufferevent timeout in funnel-relay: keep the
        # default here so that cannot come back unnoticed.
        p = subprocess.Popen([RELAY, "-l", "127.0.0.1:0", "-f", f"unix:{cls.fsock}", "-t", target,
                              "--max-clients", str(4 * NCLIENTS), "-v"],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             preexec_fn=h.die_with_parent)
        cls.relays.append((p, logf, log))

        def port():
            m = re.search(r"funnel-relay: listening on 127\.0\.0\.1:(\d+)", read_text(log))
            if m:
                return int(m.group(1))
            if p.poll() is not None:
                raise AssertionError(f"funnel-relay exited {p.returncode}: {read_text(log)}")
            return None
        return h.wait_for(port, 15, what=f"{name} to listen")

    @classmethod
    def close_front(cls, problems):
        for p, logf, log in reversed(cls.relays):
            rc = stop_process(p)
            logf.close()
            if rc != 0:
                problems.append(f"funnel-relay exited {rc}: {read_text(log)[-2000:]}")
        cls.relays = []

    @classmethod
    def close_back(cls, problems):
        if cls.nginx is not None:
            stop_process(cls.nginx, signal.SIGQUIT)
            cls.nginx_out.close()
        cls.nginx = None

    # ------------------------------------------------------------ helpers

    def setUp(self):
        self.settle()
        self.start_records = len(self.funneld.records())

    def settle(self, timeout=30):
        """Wait until funneld has no connection open and has logged every
        one it ended, so a test's records are its own."""
        def quiet():
            m = metrics(self.msock)
            ended = sum(v for k, v in m.items() if k.startswith("funneld_connections_total{"))
            return m.get("funneld_connections_open") == 0 and len(self.funneld.records()) == ended
        h.wait_for(quiet, timeout, what="funneld to have no open connection and every record written")

    def new_records(self):
        return self.funneld.records()[self.start_records:]

    def records_for_src(self, port, n=1, timeout=30):
        """Wait for n records whose src is 127.0.0.1:port; return them all."""
        src = f"127.0.0.1:{port}"

        def mine():
            recs = [r for r in self.new_records() if r.get("src") == src]
            return recs if len(recs) >= n else None
        return h.wait_for(mine, timeout, what=f"funneld's record for src={src}")

    def assert_ok_record(self, rec, target, alpn, min_out=0):
        self.assertEqual(rec.get("result"), "ok", rec)
        self.assertEqual(rec.get("target"), target, rec)
        self.assertEqual(rec.get("sni"), HOST, rec)
        self.assertEqual(rec.get("alpn"), alpn, rec)
        self.assertEqual(rec.get("tls"), h.best_tls(), rec)
        self.assertRegex(rec.get("cipher", ""), r"ECDHE.*(GCM|CHACHA20-POLY1305)|^TLS1-3-", rec)
        self.assertEqual(rec.get("status"), "101", rec)
        self.assertEqual(rec.get("backend"), self.h2_sock if alpn == "h2" else self.h1_sock, rec)
        self.assertGreater(int(rec.get("in", "0")), 0, rec)
        self.assertGreaterEqual(int(rec.get("out", "0")), min_out, rec)

    def port_of(self, target):
        return self.h2_port if target == H2_TARGET else self.h1_port

    def curl_many(self, target, paths, proto, extra=()):
        """One curl invocation fetching paths in order; returns the per-transfer
        -w lines as dicts and the bodies."""
        port = self.port_of(target)
        outdir = tempfile.mkdtemp(dir=self.wd.path, prefix="curl-")
        cmd = ["curl", "-sS", proto, "--resolve", f"{HOST}:{port}:127.0.0.1", "--cacert", self.ca,
               "--max-time", "60", *extra,
               "-w", "%{num_connects} %{http_version} %{local_port} %{response_code} %{size_download}"
                     " %{ssl_verify_result} %{size_request} %{size_header}\\n"]
        outs = []
        for i, p in enumerate(paths):
            out = os.path.join(outdir, f"body{i}")
            outs.append(out)
            cmd += ["-o", out, f"https://{HOST}:{port}{p}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, f"curl failed: {r.stderr}\n{self.funneld.log()[-1500:]}")
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), len(paths), r.stdout)
        results = []
        for line in lines:
            nc, ver, lport, code, size, verify, req, hdr = line.split()
            results.append({"num_connects": int(nc), "http_version": ver, "local_port": int(lport),
                            "code": int(code), "size": int(size), "verify": int(verify),
                            "request": int(req), "header": int(hdr)})
        bodies = []
        for out in outs:
            with open(out, "rb") as f:
                bodies.append(f.read())
        return results, bodies

    def check_keepalive(self, target, proto, want_version, want_alpn):
        paths = ["/", "/small.txt", "/mid.bin", "/odd.bin", "/index.html", "/big/007.bin"]
        results, bodies = self.curl_many(target, paths, proto)
        for p, res, body in zip(paths, results, bodies):
            want = self.files.get("/index.html" if p == "/" else p)
            if want is None:
                with open(self.wd("www") + p, "rb") as f:
                    want = f.read()
            self.assertEqual(res["code"], 200, (p, res))
            self.assertEqual(res["http_version"], want_version, (p, res))
            self.assertEqual(res["verify"], 0, (p, res))
            self.assertEqual(len(body), len(want), p)
            self.assertTrue(body == want, f"{p}: body differs from the file (sha256 "
                                          f"{h.sha256(body)} != {h.sha256(want)})")
        self.assertEqual([r["num_connects"] for r in results], [1] + [0] * (len(paths) - 1),
                         "curl opened more than one connection for one keep-alive session")
        ports = {r["local_port"] for r in results}
        self.assertEqual(len(ports), 1, f"transfers on several connections: {results}")
        port = ports.pop()
        recs = self.records_for_src(port)
        self.settle()
        recs = [r for r in self.new_records() if r.get("src") == f"127.0.0.1:{port}"]
        self.assertEqual(len(recs), 1, f"one connection, but records: {recs}")
        self.assertEqual(len(self.new_records()), 1, f"records: {self.new_records()}")
        self.assert_ok_record(recs[0], target, want_alpn, min_out=sum(len(b) for b in bodies))
        if want_version == "1.1":
            # HTTP/1.1 has no framing of its own: what curl sent and got is
            # exactly the plaintext funneld moved each way.
            self.assertEqual(int(recs[0]["in"]), sum(r["request"] for r in results), recs[0])
            self.assertEqual(int(recs[0]["out"]), sum(r["header"] + r["size"] for r in results), recs[0])

    # ------------------------------------------------------------ curl

    def test_curl_http11_keepalive(self):
        """curl --http1.1: six requests on one connection, bodies exact."""
        self.check_keepalive(H1_TARGET, "--http1.1", "1.1", "http/1.1")

    def test_curl_http2_keepalive(self):
        """curl --http2 (ALPN h2): six requests, one connection, HTTP/2."""
        self.check_keepalive(H2_TARGET, "--http2", "2", "h2")

    def test_curl_protocol_follows_target_alpn(self):
        """A client offering h2 and http/1.1 gets what each target offers."""
        for target, want_version, want_alpn in ((H1_TARGET, "1.1", "http/1.1"), (H2_TARGET, "2", "h2")):
            with self.subTest(target=target):
                self.settle()
                self.start_records = len(self.funneld.records())
                results, bodies = self.curl_many(target, ["/"], "--http2")
                self.assertEqual(results[0]["http_version"], want_version, results)
                self.assertEqual(results[0]["code"], 200, results)
                self.assertIn(MARKER.encode(), bodies[0])
                rec = self.records_for_src(results[0]["local_port"])[0]
                self.assert_ok_record(rec, target, want_alpn, min_out=len(bodies[0]))
        with self.subTest(target=H2_TARGET, client="http/1.1 only"):
            # No protocol in common: RFC 7301 3.2, a fatal no_application_protocol
            # alert, and nothing reaches the backend.
            self.settle()
            self.start_records = len(self.funneld.records())
            r = subprocess.run(["curl", "-sS", "--http1.1", "--resolve", f"{HOST}:{self.h2_port}:127.0.0.1",
                                "--cacert", self.ca, "--max-time", "30", "-o", os.devnull,
                                f"https://{HOST}:{self.h2_port}/"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 35, f"curl --http1.1 on the h2-only target: {r.stderr}")
            self.assertIn("no application protocol", r.stderr.lower())
            self.settle()
            recs = self.new_records()
            self.assertEqual(len(recs), 1, recs)
            self.assertEqual(recs[0].get("result"), "handshake_failed", recs)
            self.assertEqual((recs[0].get("in"), recs[0].get("out")), ("0", "0"), recs)

    def test_curl_http2_multiplexed_large_files(self):
        """curl --http2 --parallel: 24 large files as concurrent streams of one
        connection (h2 flow control over funneld's back-pressure), SHA-256 each."""
        picks = self.big[:24]
        results, bodies = self.curl_many(H2_TARGET, [p for p, _, _ in picks], "--http2",
                                         extra=("--parallel", "--parallel-max", str(len(picks))))
        for (path, size, digest), res, body in zip(picks, results, bodies):
            self.assertEqual(res["code"], 200, (path, res))
            self.assertEqual(res["http_version"], "2", (path, res))
            self.assertEqual(len(body), size, path)
            self.assertEqual(hashlib.sha256(body).hexdigest(), digest, path)
        self.assertEqual(sum(r["num_connects"] for r in results), 1,
                         f"the streams were not multiplexed on one connection: {results}")
        ports = {r["local_port"] for r in results}
        self.assertEqual(len(ports), 1, results)
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0].get("src"), f"127.0.0.1:{ports.pop()}", recs)
        self.assert_ok_record(recs[0], H2_TARGET, "h2", min_out=sum(s for _, s, _ in picks))

    # ------------------------------------------------------------ openssl s_client

    def s_client(self, target, stdin=b"", ign_eof=False):
        port = self.port_of(target)
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
               "-CAfile", self.ca, "-verify_return_error", "-alpn", "h2,http/1.1"]
        if ign_eof:
            cmd.append("-ign_eof")
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, f"s_client failed: {out[-2000:]}{r.stderr.decode()[-2000:]}")
        return out

    def check_s_client_output(self, out, want_alpn):
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, rf"(?m)^\s*Protocol\s*: {re.escape(h.best_tls())}$")
        # The summary line: a TLS 1.3 session block comes only with a ticket.
        m = re.search(r"(?m)^(?:New|Reused), \S+, Cipher is (\S+)$", out)
        self.assertIsNotNone(m, out)
        self.assertRegex(m.group(1), r"^(ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)|"
                         r"TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256))$")
        self.assertRegex(out, rf"(?m)^ALPN protocol: {re.escape(want_alpn)}$")
        # "Server Temp Key" up to OpenSSL 3.4 (Debian 12), "Peer Temp Key" from 3.5 (Debian 13).
        self.assertRegex(out, r"(?m)^(Server|Peer) Temp Key: (X25519|ECDH)")
        self.assertRegex(out, rf"(?m)^subject=CN\s*=\s*{re.escape(HOST)}$")

    def test_openssl_s_client_h2_target(self):
        """s_client -alpn h2,http/1.1 on the h2 target: verified, TLS 1.2, ECDHE AEAD, h2."""
        out = self.s_client(H2_TARGET)
        self.check_s_client_output(out, "h2")
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0].get("alpn"), "h2", recs)
        self.assertEqual(recs[0].get("tls"), h.best_tls(), recs)
        self.assertEqual(recs[0].get("sni"), HOST, recs)

    def test_openssl_s_client_reconnect_resumes(self):
        """s_client -reconnect: 5 new connections through the relay resume the session.
        TLS 1.2: s_client reconnects before a TLS 1.3 ticket arrives (test_tls13.py
        resumes 1.3 with -sess_out/-sess_in)."""
        port = self.port_of(H2_TARGET)
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
                            "-CAfile", self.ca, "-verify_return_error", "-alpn", "h2", "-reconnect", "-tls1_2"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out[-2000:] + r.stderr.decode()[-1000:])
        self.assertEqual(len(re.findall(r"(?m)^New, TLSv1\.2, Cipher is ECDHE-", out)), 1, out)
        self.assertEqual(len(re.findall(r"(?m)^Reused, TLSv1\.2, Cipher is ECDHE-", out)), 5, out)
        self.assertEqual(len(re.findall(r"(?m)^ALPN protocol: h2$", out)), 6, out)
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 6, recs)
        for rec in recs:
            self.assertEqual((rec.get("alpn"), rec.get("tls"), rec.get("sni")), ("h2", "TLSv1.2", HOST), rec)

    def test_openssl_s_client_http11_target(self):
        """s_client on the http/1.1 target: http/1.1 negotiated, a GET answered."""
        req = f"GET /small.txt HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        out = self.s_client(H1_TARGET, stdin=req, ign_eof=True)
        self.check_s_client_output(out, "http/1.1")
        self.assertIn("HTTP/1.1 200 OK", out)
        self.assertIn(self.files["/small.txt"].decode(), out.replace("\r\n", "\n"))
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), 1, recs)
        self.assert_ok_record(recs[0], H1_TARGET, "http/1.1", min_out=len(self.files["/small.txt"]))

    # ------------------------------------------------------------ 100 clients

    def test_100_concurrent_large_files(self):
        """100 clients at once, each its own 1-2 MiB file; every SHA-256 checked."""
        ctx = h.client_context(cafile=self.ca, alpn=["http/1.1"])
        barrier = threading.Barrier(NCLIENTS)
        results = [None] * NCLIENTS
        ports = [None] * NCLIENTS

        def client(i):
            path, size, digest = self.big[i]
            try:
                raw = socket.create_connection(("127.0.0.1", self.h1_port), timeout=60)
                with ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False) as s:
                    ports[i] = s.getsockname()[1]
                    if s.selected_alpn_protocol() != "http/1.1":
                        raise AssertionError(f"ALPN {s.selected_alpn_protocol()!r}")
                    # All 100 TLS sessions are up at the same time before any request.
                    barrier.wait(timeout=90)
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                    buf = bytearray()
                    while True:
                        try:
                            chunk = s.recv(1 << 17)
                        except ssl.SSLEOFError:
                            raise AssertionError(f"{path}: TLS stream ended without close_notify "
                                                 f"after {len(buf)} bytes")
                        if not chunk:
                            break
                        buf += chunk
                head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if not sep or not head.startswith(b"HTTP/1.1 200 "):
                    raise AssertionError(f"{path}: bad response {bytes(buf[:200])!r}")
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if not m or int(m.group(1)) != size:
                    raise AssertionError(f"{path}: Content-Length {m and m.group(1)} != {size}")
                if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
                    raise AssertionError(f"{path}: got {len(body)} bytes, sha256 "
                                         f"{hashlib.sha256(body).hexdigest()} != {digest}")
                results[i] = "ok"
            except BaseException as e:  # reported below, by client
                barrier.abort()
                results[i] = f"{type(e).__name__}: {e}"

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(NCLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running after 180 s")
        bad = [(self.big[i][0], r) for i, r in enumerate(results) if r != "ok"]
        self.assertEqual(bad, [], f"{len(bad)} of {NCLIENTS} clients failed\n{self.funneld.log()[-3000:]}")
        self.assertEqual(len(set(ports)), NCLIENTS, "client ports not distinct")

        self.settle(60)
        recs = self.new_records()
        by_src = {}
        for r in recs:
            by_src.setdefault(r.get("src"), []).append(r)
        self.assertEqual(len(recs), NCLIENTS, f"{NCLIENTS} connections, {len(recs)} records")
        for i, port in enumerate(ports):
            mine = by_src.get(f"127.0.0.1:{port}", [])
            self.assertEqual(len(mine), 1, f"client {i} (port {port}): records {mine}")
            self.assert_ok_record(mine[0], H1_TARGET, "http/1.1", min_out=self.big[i][1])

    # ------------------------------------------------------------ chromium

    @classmethod
    def chromium(cls):
        """(path, None), or (None, why it cannot be used): installed with
        apt-get when missing and we are root, then started once on a data:
        URL to prove it runs at all here."""
        if cls.chromium_state is not None:
            return cls.chromium_state
        exe = shutil.which("chromium")
        if exe is None:
            if os.geteuid() != 0:
                cls.chromium_state = (None, "chromium is not installed and we are not root to apt-get it")
                return cls.chromium_state
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            try:
                p = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                   timeout=180)
            except (OSError, subprocess.TimeoutExpired) as e:
                cls.chromium_state = (None, f"apt-get install chromium failed: {e}")
                return cls.chromium_state
            exe = shutil.which("chromium")
            if p.returncode != 0 or exe is None:
                cls.chromium_state = (None, f"apt-get install chromium failed (exit {p.returncode}): "
                                            f"{(p.stderr or p.stdout)[-300:].strip()}")
                return cls.chromium_state
        probe = "data:text/html,<p>chromium-probe-ok</p>"
        rc, out, err = cls.run_chromium(exe, ["--dump-dom", probe], "probe")
        if rc is None or "chromium-probe-ok" not in out:
            why = "timed out" if rc is None else f"exit {rc}"
            cls.chromium_state = (None, f"chromium cannot be started here ({why}): {err.strip()[-300:]}")
            return cls.chromium_state
        cls.chromium_state = (exe, None)
        return cls.chromium_state

    @classmethod
    def run_chromium(cls, exe, args, tag, timeout=60):
        """Headless chromium in a session of its own; -> (rc or None on
        timeout, stdout, stderr).  Its whole process group is killed at the
        end, whatever happened."""
        profile = tempfile.mkdtemp(dir=cls.wd.path, prefix=f"chromium-{tag}-")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-quic", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, cwd=cls.wd.path)
        try:
            out, err = p.communicate(timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            kill_group(p.pid)
            out, err = p.communicate()
            rc = None
        finally:
            kill_group(p.pid)
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def chromium_args(self):
        exe, why = self.chromium()
        if exe is None:
            self.skipTest(why)
        return exe, [f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
                     f"--ignore-certificate-errors-spki-list={spki_sha256_b64(self.chain)}"]

    def check_browser_records(self, target=H2_TARGET, alpn="h2"):
        """The connection that carried the page ended ok after a TLS 1.2
        handshake with the target's ALPN.  chromium also opens a spare
        (preconnect) connection, which it may drop mid-handshake when it
        exits: such a one may end handshake_failed by reset/EOF, nothing else."""
        self.settle()
        recs = self.new_records()
        self.assertGreaterEqual(len(recs), 1, "chromium made no connection through funneld")
        page = len(self.files["/index.html"])
        carried = [r for r in recs if int(r.get("out", 0)) > page]
        self.assertGreaterEqual(len(carried), 1, f"no connection carried the page: {recs}")
        for r in recs:
            self.assertEqual(r.get("target"), target, r)
            self.assertEqual(r.get("sni"), HOST, r)
            self.assertEqual(r.get("status"), "101", r)
            if r.get("result") == "handshake_failed" and r not in carried:
                self.assertRegex(r.get("reason", ""), r"^(reset|eof)\b", r)
                self.assertEqual((r.get("in"), r.get("out")), ("0", "0"), r)
                continue
            self.assertEqual(r.get("result"), "ok", r)
            self.assertEqual(r.get("tls"), h.best_tls(), r)
            self.assertEqual(r.get("alpn"), alpn, r)
        return recs

    def test_chromium_dump_dom(self):
        """Headless chromium loads the page through relay and funneld, over h2
        from the h2 target and over HTTP/1.1 from the http/1.1 one."""
        exe, args = self.chromium_args()
        for target, alpn in ((H2_TARGET, "h2"), (H1_TARGET, "http/1.1")):
            with self.subTest(target=target):
                self.settle()
                self.start_records = len(self.funneld.records())
                url = f"https://{HOST}:{self.port_of(target)}/"
                rc, out, err = self.run_chromium(exe, [*args, "--dump-dom", url], "dom")
                self.assertIsNotNone(rc, f"chromium did not finish in 60 s: {err[-1500:]}")
                self.assertEqual(rc, 0, err[-1500:])
                self.assertIn(MARKER, out, f"page marker not in the DOM:\n{out[:1500]}\n{err[-1500:]}")
                self.assertIn('id="marker"', out)
                self.check_browser_records(target, alpn)

    def test_chromium_screenshot(self):
        """Headless chromium screenshot of the page, kept in build/test-output/."""
        exe, args = self.chromium_args()
        os.makedirs(OUTPUT_DIR, exist_ok=True)
        shot = os.path.join(OUTPUT_DIR, "chromium.png")
        if os.path.exists(shot):
            os.unlink(shot)
        url = f"https://{HOST}:{self.h2_port}/"
        rc, out, err = self.run_chromium(exe, [*args, f"--screenshot={shot}", "--window-size=800,600",
                                               "--hide-scrollbars", url], "shot")
        self.assertIsNotNone(rc, f"chromium did not finish in 60 s: {err[-1500:]}")
        self.assertEqual(rc, 0, err[-1500:])
        self.assertTrue(os.path.isfile(shot), f"no screenshot at {shot}: {err[-1500:]}")
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], PNG_SIGNATURE, "not a PNG")
        self.assertGreater(len(png), 1024, "screenshot too small to show anything")
        # IHDR: the size asked for.
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        self.assertEqual((width, height), (800, 600))
        # The page's own background, not an error page: below the text.
        points = ((400, 500), (20, 590), (790, 300))
        for (x, y), (r, g, b) in zip(points, png_pixels(png, points)):
            self.assertTrue(abs(r - 0x1d) <= 8 and abs(g - 0x6b) <= 8 and abs(b - 0x3a) <= 8,
                            f"pixel ({x},{y}) is {(r, g, b)}, not the page's background #1d6b3a: {shot}")
        print(f"\n    chromium screenshot: {shot} ({len(png)} bytes)", flush=True)
        self.check_browser_records()

    # ------------------------------------------------------------ h2load

    def h2load(self, target, alpn, extra=()):
        """h2load -n 2000 -c 10 -m 10 against target through its relay (h2load
        has no --resolve: --connect-to sends it to the relay while the URI's
        host gives SNI and :authority/Host).  Every request done and 2xx,
        none failed, one ok record per h2load connection."""
        exe = need("h2load")
        n, c, m = 2000, 10, 10
        port = self.port_of(target)
        url = f"https://{HOST}:{port}/small.txt"
        cmd = [exe, "-n", str(n), "-c", str(c), "-m", str(m), f"--connect-to=127.0.0.1:{port}", *extra, url]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            out, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            kill_group(p.pid)
            out, _ = p.communicate()
            self.fail(f"h2load did not finish in 90 s: {out.decode()[-2000:]}")
        out = out.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertRegex(out, rf"(?m)^Application protocol: {re.escape(alpn)}$")
        self.assertRegex(out, rf"(?m)^TLS Protocol: {re.escape(h.best_tls())}$")
        self.assertRegex(out, r"(?m)^Cipher: (ECDHE-\S+-(GCM-SHA(256|384)|CHACHA20-POLY1305)|TLS_\S+)$")
        mr = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        self.assertIsNotNone(mr, out)
        self.assertEqual(tuple(map(int, mr.groups())), (n, n, n, n, 0, 0, 0), out)
        ms = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        self.assertIsNotNone(ms, out)
        self.assertEqual(tuple(map(int, ms.groups())), (n, 0, 0, 0), out)
        md = re.search(r"traffic: .*, \S+ \((\d+)\) data$", out, re.M)
        self.assertIsNotNone(md, out)
        body = len(self.files["/small.txt"])
        self.assertEqual(int(md.group(1)), n * body, "h2load's data bytes != requests x body")
        self.settle()
        recs = self.new_records()
        self.assertEqual(len(recs), c, f"{c} h2load connections, records: {recs}")
        for r in recs:
            self.assertEqual(r.get("target"), target, r)
            self.assertEqual(r.get("alpn"), alpn, r)
            self.assertEqual(r.get("sni"), HOST, r)
            self.assertEqual(r.get("status"), "101", r)
            self.assertEqual(r.get("result"), "ok", r)
        # Together the connections carried every body.
        self.assertGreaterEqual(sum(int(r.get("out", 0)) for r in recs), n * body, recs)

    def test_h2load_h2(self):
        """h2load over HTTP/2 (10 connections x 10 streams) on the h2 target."""
        self.h2load(H2_TARGET, "h2")

    def test_h2load_http11_pipelined(self):
        """h2load --h1 (HTTP/1.1, 10 requests pipelined per connection) on the http/1.1 target."""
        self.h2load(H1_TARGET, "http/1.1", extra=("--h1",))


if __name__ == "__main__":
    unittest.main()
