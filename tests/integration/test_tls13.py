"""TLS 1.3 through funneld (mbedTLS 3.6, Debian 13), with real clients:
`openssl s_client -tls1_3` through the funnel-relay test tool (session
resumption with -sess_out/-sess_in, early data, groups, suites), curl
--tlsv1.3, and Python's ssl where a client must misbehave on purpose (a
corrupted or withheld Finished: nothing may reach the backend before the
handshake is complete).  The `versions` key both ways.

SNI, ALPN, tickets and the failure reasons over TLS 1.3 are the *TLS13Test
classes of test_tls_features.py.  Where funneld's mbedTLS has no TLS 1.3
(Debian 12's 2.28), every test here skips but the one that checks naming
1.3 is a configuration error there.
"""
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import RESPONSE_101, TARGET  # noqa: E402

RELAY = os.path.join(h.TOOLS, "funnel-relay")
NO_TLS13 = "this funneld's mbedTLS has no TLS 1.3 server (Debian 12's 2.28; Debian 13's 3.6 has)"

_src = [50000]


def next_src():
    _src[0] += 1
    return f"198.51.100.9:{_src[0]}"


class HTTPBackend(h.UnixServer):
    """A Unix-socket backend that answers each request head with a small
    HTTP/1.1 response and closes."""

    BODY = b"funneld tls13\n"

    def __init__(self, path):
        self.heads = []
        super().__init__(path, backlog=16)

    def serve(self, c):
        try:
            c.settimeout(20)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.heads.append(data)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(self.BODY) + self.BODY)
            c.shutdown(socket.SHUT_WR)
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()


class TLS13Case(h.ClassDaemonCase):
    """One funneld per class, an echo backend for TARGET; every test skips
    without TLS 1.3.  tls_extra: [tls] lines."""

    tls_extra = ""
    http = False

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cls.backends = []
        if not h.tls13():
            return
        cert, key = h.leaf_once(TARGET)
        cls.addr = cls.wd("funneld.sock")
        cls.be = (HTTPBackend if cls.http else h.Backend)(cls.wd("be.sock"))
        cls.backends = [cls.be]
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [(f"{TARGET}:443", cls.be.path)],
                                        tls_extra=cls.tls_extra))

    def setUp(self):
        if self.funneld is None:
            self.skipTest(NO_TLS13)
        super().setUp()

    def tearDown(self):
        if self.funneld is not None:
            super().tearDown()

    def relay(self):
        """funnel-relay in front of funneld: its public port."""
        if not os.access(RELAY, os.X_OK):
            self.skipTest(f"{RELAY} is not built")
        err = self.wd(f"relay-{time.monotonic_ns()}.err")
        errf = open(err, "wb")
        p = subprocess.Popen([RELAY, "-l", "127.0.0.1:0", "-f", "unix:" + self.addr, "-t", f"{TARGET}:443"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)

        def stop():
            if p.poll() is None:
                p.terminate()
                p.wait(10)
            errf.close()
        self.addCleanup(stop)
        text = h.wait_for(lambda: (lambda t: "listening on" in t and t)(open(err).read()), 15,
                          what="funnel-relay to listen")
        return int(re.search(r"listening on \S+:(\d+)", text).group(1))

    def s_client(self, port, args, send=b"", wait_for_echo=True, timeout=30):
        """openssl s_client through the relay; returns (exit status, output).
        It sends `send`, and (wait_for_echo) reads it back before it ends,
        so that a TLS 1.3 ticket, which comes after the handshake, is in."""
        out = self.wd(f"s_client-{time.monotonic_ns()}.out")
        with open(out, "w") as o:
            p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", TARGET,
                                  "-CAfile", h.pki().ca_cert, "-verify_return_error", *args],
                                 stdin=subprocess.PIPE, stdout=o, stderr=subprocess.STDOUT)
            try:
                try:
                    p.stdin.write(send)
                    p.stdin.flush()
                    if wait_for_echo:
                        h.wait_for(lambda: send.decode() in open(out).read() or p.poll() is not None,
                                   timeout, what="the echo through s_client")
                    p.stdin.close()
                except BrokenPipeError:
                    pass                # it ended first (a failed handshake)
                p.wait(timeout)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.ledger.add()
        return p.returncode, open(out).read()


class SClientTest(TLS13Case):
    def test_resumption_through_the_relay(self):
        port = self.relay()
        sess = self.wd("sess.pem")
        rc, out = self.s_client(port, ["-tls1_3", "-sess_out", sess], send=b"first\n")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(?m)^New, TLSv1\.3, Cipher is TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$")
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertTrue(os.path.getsize(sess) > 0, "s_client saved no session")
        for _ in range(2):
            rc, out = self.s_client(port, ["-tls1_3", "-sess_in", sess], send=b"again\n")
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r"(?m)^Reused, TLSv1\.3, ")
        recs = self.ledger.wait(3)
        self.assertEqual([(r["result"], r["tls"]) for r in recs], [("ok", "TLSv1.3")] * 3, recs)
        self.assertTrue(all(r["cipher"].startswith("TLS1-3-") for r in recs), recs)
        print("\n    s_client -sess_in: " + re.search(r"(?m)^Reused, .*$", out).group(0), flush=True)

    def test_early_data_is_never_accepted(self):
        # The tickets say max_early_data 0, so a client does not even try;
        # one that was told otherwise would find it rejected.
        port = self.relay()
        sess = self.wd("sess-ed.pem")
        rc, out = self.s_client(port, ["-tls1_3", "-sess_out", sess], send=b"one\n")
        self.assertIn("Max Early Data: 0", out)
        early = self.wd("early.txt")
        with open(early, "wb") as f:
            f.write(b"early data\n")
        n0 = len(self.be.received)
        rc, out = self.s_client(port, ["-tls1_3", "-sess_in", sess, "-early_data", early], send=b"later\n")
        self.assertRegex(out, r"Early data was (not sent|rejected)")
        self.assertNotIn("Early data was accepted", out)
        self.ledger.wait(2)
        self.assertNotIn(b"early data", bytes(self.be.received[n0]))
        self.assertEqual(bytes(self.be.received[n0]), b"later\n")

    def test_x25519_key_share(self):
        port = self.relay()
        rc, out = self.s_client(port, ["-tls1_3", "-groups", "X25519:P-256"], send=b"x\n")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(Temp Key|group): X25519")

    def test_suite_not_allowed_is_no_shared_cipher(self):
        port = self.relay()
        n0 = self.be.total_received()
        rc, out = self.s_client(port, ["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"], send=b"x\n",
                                wait_for_echo=False)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("handshake failure", out)
        rec = self.ledger.wait(1)[-1]
        self.assertEqual(rec["result"], "handshake_failed", rec)
        self.assertTrue(rec["reason"].startswith("no_shared_cipher"), rec)
        self.assertEqual(self.be.total_received(), n0)


class GroupsTest(TLS13Case):
    """curves = secp256r1: a client whose key share is X25519 is asked again
    (HelloRetryRequest) and gets P-256."""
    tls_extra = "curves = secp256r1\n"

    def test_hello_retry_request_to_the_configured_group(self):
        port = self.relay()
        rc, out = self.s_client(port, ["-tls1_3", "-groups", "X25519:P-256"], send=b"hrr\n")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(Temp Key|group): (ECDH, prime256v1|secp256r1|P-256)")

    def test_no_group_in_common(self):
        port = self.relay()
        rc, out = self.s_client(port, ["-tls1_3", "-groups", "X25519"], send=b"x\n", wait_for_echo=False)
        self.assertNotEqual(rc, 0, out)
        rec = self.ledger.wait(1)[-1]
        self.assertTrue(rec["reason"].startswith("no_shared_cipher"), rec)


class CurlTest(TLS13Case):
    http = True

    def test_curl_tlsv13(self):
        port = self.relay()
        p = subprocess.run(["curl", "-sS", "--tlsv1.3", "--http1.1", "--cacert", h.pki().ca_cert,
                            "--resolve", f"{TARGET}:{port}:127.0.0.1", "-w", "\\n%{http_code} %{ssl_verify_result}",
                            f"https://{TARGET}:{port}/tls13"], capture_output=True, text=True, timeout=30)
        self.ledger.add()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, HTTPBackend.BODY.decode() + "\n200 0")
        self.assertTrue(self.be.heads[-1].startswith(b"GET /tls13 HTTP/1.1\r\n"), self.be.heads)
        rec = self.ledger.wait(1)[-1]
        self.assertEqual((rec["result"], rec["tls"], rec["alpn"]), ("ok", "TLSv1.3", "http/1.1"), rec)


class HandshakeCompleteTest(TLS13Case):
    """In TLS 1.3 the client's Finished comes last, after the server has
    sent everything: "complete" must mean that Finished was verified.
    Nothing reaches the backend before it, not even records sent behind it."""

    def client_until_finished(self):
        """A Python client through the ingress head up to the point where
        it has its Finished to send: (socket, stream, src, its last flight)."""
        src = next_src()
        s = h.connect(self.addr, 20)
        ctx = h.pin_version(h.client_context(), "1.3")
        tls = h.TLSStream(s, ctx, TARGET)
        s.sendall(h.ingress_head(src=src) + tls.client_hello())
        self.ledger.add()
        self.assertEqual(h.recv_exact(s, len(RESPONSE_101)), RESPONSE_101)
        while True:
            try:
                tls.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                tls._fill()
        return s, tls, src, tls.out.read()

    def test_corrupted_finished_with_data_behind_it(self):
        s, tls, src, flight = self.client_until_finished()
        try:
            tls.obj.write(b"must never reach the backend")
            data = tls.out.read()
            # The flight's last record is the encrypted Finished: flip a bit in it.
            bad = bytearray(flight)
            bad[-1] ^= 0x01
            s.sendall(bytes(bad) + data)
            got, _ = h.read_to_eof(s, timeout=10)
        finally:
            s.close()
        rec = self.ledger.wait(self.ledger.made)[-1]
        self.assertEqual(rec["result"], "handshake_failed", rec)
        self.assertEqual(self.be.total_received(), 0, "bytes reached the backend without a valid Finished")

    def test_finished_withheld_times_out(self):
        s, tls, src, flight = self.client_until_finished()
        try:
            s.settimeout(15)
            t0 = time.monotonic()
            got, _ = h.read_to_eof(s, timeout=15)
            waited = time.monotonic() - t0
        finally:
            s.close()
        rec = self.ledger.wait(self.ledger.made)[-1]
        self.assertEqual(rec["result"], "handshake_timeout", rec)
        self.assertGreater(waited, 2)           # handshake_timeout = 3s
        self.assertEqual(self.be.total_received(), 0)


class IdleTLS13Test(TLS13Case):
    """Idle TLS 1.3 streams cost what 1.2 ones do: mbedTLS 3.6 keeps a 1.3
    server's handshake parameters (about 7 KiB) for the life of the
    connection unless funneld frees them (tls_internals.c), and the record
    buffers are released as for 1.2.  Measured on Debian 13: 13.6 KiB per
    stream while the buffers were only trimmed to their first page (19.6
    without the release of the handshake's state, 44 without either; 1.2:
    12.7)."""
    N = 200

    def test_idle_streams_are_small(self):
        if h.WRAPPED:
            self.skipTest("under a wrapper the RSS is the wrapper's")
        if self.funneld.sanitized():
            self.skipTest("ASan's allocator has an RSS of its own")
        ctx = h.pin_version(h.client_context(), "1.3")
        data = os.urandom(48 * 1024)        # every page of both record buffers
        for _ in range(10):                 # warm the pools
            tls = h.open_stream(self.addr, src=next_src(), ctx=ctx)
            h.tls_transfer(tls, data, len(data))
            tls.close()
        self.ledger.add(10)
        self.ledger.wait(10)
        # The base line once the warm-up's memory has settled: two readings
        # 200 ms apart within a page or two.
        last = [self.funneld.rss_kib()]

        def settled():
            now, before = self.funneld.rss_kib(), last[0]
            last[0] = now
            return abs(now - before) <= 8
        h.wait_for(settled, h.slack(15), interval=0.2, what="funneld's RSS to settle")
        base = last[0]
        streams = []
        try:
            for _ in range(self.N):
                tls = h.open_stream(self.addr, src=next_src(), ctx=ctx)
                self.ledger.add()
                streams.append(tls)
                got, _ = h.tls_transfer(tls, data, len(data))
                self.assertEqual(got, data)
            # Idle past the trim (500 ms): the streams shrink to their idle size.
            def per():
                return (self.funneld.rss_kib() - base) / self.N
            try:
                h.wait_for(lambda: per() < 17, h.slack(15), interval=0.1, what="idle TLS 1.3 streams to shrink")
            except AssertionError:
                self.fail(f"{per():.1f} KiB per idle TLS 1.3 stream")
        finally:
            for tls in streams:
                tls.close()


class VersionsTLS12OnlyTest(TLS13Case):
    tls_extra = "versions = 1.2\n"

    def test_tls13_only_client_refused(self):
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            h.open_stream(self.addr, src=next_src(), ctx=h.pin_version(h.client_context(), "1.3"))
        self.ledger.add()
        rec = self.ledger.wait(1)[-1]
        self.assertEqual(rec["result"], "handshake_failed", rec)
        # With 1.3 off, mbedTLS 3.6 reads the ClientHello as a 1.2 one
        # whose suites (1.3 only) it has none of: handshake_failure.
        self.assertRegex(rec["reason"], r"^(protocol_version|no_shared_cipher):", rec)
        tls = h.open_stream(self.addr, src=next_src())
        self.ledger.add()
        self.assertEqual(tls.obj.version(), "TLSv1.2")
        tls.close()


class VersionsTLS13OnlyTest(TLS13Case):
    tls_extra = "versions = 1.3\n"

    def test_tls12_only_client_refused_with_protocol_version(self):
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            h.open_stream(self.addr, src=next_src(), ctx=h.pin_version(h.client_context(), "1.2"))
        self.ledger.add()
        rec = self.ledger.wait(1)[-1]
        self.assertTrue(rec["reason"].startswith("protocol_version"), rec)
        tls = h.open_stream(self.addr, src=next_src())
        self.ledger.add()
        self.assertEqual(tls.obj.version(), "TLSv1.3")
        tls.close()


class VersionsConfigTest(unittest.TestCase):
    """`funneld -t` on the versions key, whichever mbedTLS is in use."""

    def check(self, tls_extra):
        cert, key = h.leaf_once(TARGET)
        wd = h.Workdir()
        try:
            path = wd("funneld.conf")
            with open(path, "w") as f:
                f.write(h.make_config("unix:" + wd("f.sock"), cert, key, [(f"{TARGET}:443", wd("b.sock"))],
                                      tls_extra=tls_extra))
            p = subprocess.run([h.FUNNELD, "-t", "-c", path], capture_output=True, text=True, timeout=60)
            lines = open(path).read().splitlines()
            return p.returncode, p.stdout + p.stderr, path, lines
        finally:
            wd.cleanup()

    def test_naming_tls13(self):
        rc, out, path, lines = self.check("versions = 1.2, 1.3\n")
        if h.tls13():
            self.assertEqual(rc, 0, out)
        else:
            self.assertEqual(rc, 1, out)
            line = lines.index("versions = 1.2, 1.3") + 1
            self.assertIn(f"{path}:{line}: TLS version \"1.3\" not available", out)

    def test_tls13_suite_needs_tls13(self):
        rc, out, path, lines = self.check("ciphers = TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES128-GCM-SHA256\n")
        if h.tls13():
            self.assertEqual(rc, 0, out)
        else:
            self.assertEqual(rc, 1, out)
            self.assertIn("a TLS 1.3 suite", out)

    def test_unknown_and_old_versions(self):
        for value, why in [("1.4", "unknown TLS version \"1.4\" (1.2 or 1.3)"),
                           ("1.1", "TLS version \"1.1\" not available: 1.2 and 1.3 only"),
                           ("1.2, 1.2", "TLS version \"1.2\" listed twice")]:
            with self.subTest(versions=value):
                rc, out, path, lines = self.check(f"versions = {value}\n")
                self.assertEqual(rc, 1, out)
                self.assertIn(f"{path}:{lines.index(f'versions = {value}') + 1}: {why}", out)


class CiphersFor12OnlyTest(TLS13Case):
    """A ciphers list written for TLS 1.2 alone (every list on Debian 12)
    leaves 1.3 its default suites: upgrading to Debian 13 does not turn
    1.3 clients away, nor refuse the configuration."""
    tls_extra = "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"

    def test_both_versions(self):
        tls = h.open_stream(self.addr, src=next_src(), ctx=h.pin_version(h.client_context(), "1.2"))
        self.ledger.add()
        self.assertEqual(tls.obj.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
        tls.close()
        tls = h.open_stream(self.addr, src=next_src(), ctx=h.pin_version(h.client_context(), "1.3"))
        self.ledger.add()
        self.assertEqual(tls.obj.version(), "TLSv1.3")
        tls.close()


class Ciphers13Test(TLS13Case):
    """TLS 1.3 suites by their OpenSSL names in the one ciphers list: 1.3
    takes only those, 1.2 keeps its defaults."""
    tls_extra = "ciphers = TLS_CHACHA20_POLY1305_SHA256\n"

    def test_tls13_takes_the_listed_suite(self):
        port = self.relay()
        rc, out = self.s_client(port, ["-tls1_3"], send=b"c\n")
        self.assertRegex(out, r"(?m)^New, TLSv1\.3, Cipher is TLS_CHACHA20_POLY1305_SHA256$")
        rc, out = self.s_client(port, ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"],
                                send=b"c\n", wait_for_echo=False)
        self.assertNotEqual(rc, 0, out)
        recs = self.ledger.wait(2)
        self.assertEqual(recs[0]["cipher"], "TLS1-3-CHACHA20-POLY1305-SHA256")
        self.assertTrue(recs[1]["reason"].startswith("no_shared_cipher"), recs[1])
        rc, out = self.s_client(port, ["-tls1_2"], send=b"c\n")
        self.assertRegex(out, r"(?m)^New, TLSv1\.2, Cipher is ECDHE-ECDSA-")


if __name__ == "__main__":
    unittest.main()
