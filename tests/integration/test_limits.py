"""Integration: the bounds on connections and the public-client limits.

(a) max_pending / max_pending_per_peer: connections whose head is not
    complete count against a bound of their own and one per TCP peer; a
    connection over them is answered at once (503 / 429) without its head
    being read, and a unix: listener's connections are not one peer;
(b) max_connections + max_pending bound connections in every state: at that
    bound funneld stops accepting, and the next connection waits in the
    backlog until one ends (then it is served);
(c) [clients] deny -> 403, max_connections per client -> 429, rate -> 429,
    by Tailscale-Ingress-Src (IPv4 address, IPv6 /64), before the 101 and
    before routing: a refused client never reaches a backend or a TLS
    handshake; limits hold across two workers; refusals are logged once per
    client per interval and counted in full by the metrics.
"""
import os
import select
import socket
import sys
import threading
import unittest

import harness as h
from harness import TARGET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_faults import metrics  # noqa: E402


def status_line(sock, timeout=10):
    """The status of the answer funneld sends (None if it only closed)."""
    sock.settimeout(timeout)
    data = h.read_until_close(sock)
    st, _, _ = h.parse_response(data)
    return st


def idle(addr, source=None):
    """A TCP connection that sends nothing (from a chosen loopback address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(10)
    s.connect(addr)
    return s


def answered_at_once(s, timeout=5):
    """The status funneld answered a connection it refused without reading."""
    r, _, _ = select.select([s], [], [], timeout)
    if not r:
        return None
    return status_line(s)


class PendingBounds(h.ClassDaemonCase):
    """max_pending = 6, max_pending_per_peer = 3, long header_timeout."""

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cert, key = h.leaf_once(TARGET, "ec")
        cls.be = h.Backend(cls.wd("be.sock"), mode="echo")
        cls.backends = [cls.be]
        cls.port = h.free_port()
        cls.addr = ("127.0.0.1", cls.port)
        cls.unix = cls.wd("relay.sock")
        cls.msock = cls.wd("metrics.sock")
        cls.start_funneld(h.make_config([f"127.0.0.1:{cls.port}", "unix:" + cls.unix], cert, key,
                                        [(f"{TARGET}:443", cls.be.path)], header_timeout="30s",
                                        max_pending=6, max_pending_per_peer=3,
                                        metrics="unix:" + cls.msock))

    def wait_pending(self, n):
        h.wait_for(lambda: metrics(self.msock)["funneld_connections_open"] >= n, 10,
                   what=f"{n} connections open")

    def test_bounds_per_peer_then_overall(self):
        m0 = metrics(self.msock)
        held = []
        try:
            # Three from one peer get in; the fourth is answered 429 at once.
            for _ in range(3):
                held.append(idle(self.addr, "127.0.0.1"))
            self.wait_pending(3)
            s = idle(self.addr, "127.0.0.1")
            self.assertEqual(answered_at_once(s), 429)
            s.close()
            self.ledger.add()
            # Another peer has its own three.
            for _ in range(3):
                held.append(idle(self.addr, "127.0.0.2"))
            self.wait_pending(6)
            # Six pending in all: a seventh, from a fresh peer, gets 503.
            s = idle(self.addr, "127.0.0.3")
            self.assertEqual(answered_at_once(s), 503)
            s.close()
            self.ledger.add()
            # A unix: peer counts towards the overall bound too.
            u = h.connect(self.unix)
            self.assertEqual(answered_at_once(u), 503)
            u.close()
            self.ledger.add()
            # One head completes: its slot is free, the relay is served.
            first = held.pop(0)
            tls = h.TLSStream(first, h.client_context(), TARGET)
            first.sendall(h.ingress_head() + tls.client_hello())
            self.assertEqual(h.recv_exact(first, len(h.RESPONSE_101)), h.RESPONSE_101)
            tls.handshake()
            got, _ = h.tls_transfer(tls, b"served", 6, timeout=10)
            self.assertEqual(got, b"served")
            tls.close_notify()
            h.tls_transfer(tls, until_close=True, timeout=10)
            tls.close()
            self.ledger.add()
            # And the freed pending slot takes a new peer's connection.
            held.append(idle(self.addr, "127.0.0.4"))
            self.wait_pending(6)
            recs = self.ledger.wait(4)
            self.assertEqual([r["status"] for r in recs[:3]], ["429", "503", "503"], recs)
        finally:
            for s in held:
                s.close()
            self.ledger.add(len(held))      # each ends as a relay_error record
        m1 = metrics(self.msock)
        d = lambda k: m1[k] - m0.get(k, 0)
        self.assertEqual(d('funneld_refusals_total{limit="max_pending_per_peer"}'), 1)
        self.assertEqual(d('funneld_refusals_total{limit="max_pending"}'), 2)
        self.assertEqual(self.be.accepted, 1)


    def test_complete_heads_never_count_as_pending(self):
        """A peer whose heads arrive whole (as the relay's do) is never held
        to max_pending_per_peer, however many it has in flight: funneld is
        stopped while eight relay connections queue their heads, then let go."""
        import signal
        m0 = metrics(self.msock)
        self.funneld.signal(signal.SIGSTOP)
        relays = []
        try:
            for _ in range(8):
                s = h.connect(self.addr)
                tls = h.TLSStream(s, h.client_context(), TARGET)
                s.sendall(h.ingress_head() + tls.client_hello())
                relays.append((s, tls))
        finally:
            self.funneld.signal(signal.SIGCONT)
        for s, tls in relays:
            self.assertEqual(h.recv_exact(s, len(h.RESPONSE_101), 10), h.RESPONSE_101)
            tls.handshake()
            tls.close_notify()
            h.tls_transfer(tls, until_close=True, timeout=10)
            tls.close()
        self.ledger.add(len(relays))
        m1 = metrics(self.msock)
        self.assertEqual(m1['funneld_refusals_total{limit="max_pending_per_peer"}'],
                         m0['funneld_refusals_total{limit="max_pending_per_peer"}'])


class AcceptBound(h.ClassDaemonCase):
    """max_connections = 1, max_pending = 1: two connections in all.  A third
    waits in the backlog, unanswered, and is taken once one of the two ends."""

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cert, key = h.leaf_once(TARGET, "ec")
        cls.be = h.Backend(cls.wd("be.sock"), mode="echo")
        cls.backends = [cls.be]
        cls.addr = cls.wd("relay.sock")
        cls.msock = cls.wd("metrics.sock")
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [(f"{TARGET}:443", cls.be.path)],
                                        header_timeout="30s", max_connections=1, max_pending=1,
                                        metrics="unix:" + cls.msock))

    def test_third_waits_in_the_backlog(self):
        stream = h.open_stream(self.addr)
        self.ledger.add()
        idle_one = h.connect(self.addr)
        self.ledger.add()
        h.wait_for(lambda: metrics(self.msock)["funneld_connections_open"] == 2, 10, what="two open")
        third = h.connect(self.addr)
        self.ledger.add()
        third.sendall(h.ingress_head())
        # Not accepted: nothing comes back while the two are open.
        r, _, _ = select.select([third], [], [], 1.0)
        self.assertEqual(r, [], "a third connection was taken past the bound")
        self.assertEqual(metrics(self.msock)["funneld_connections_open"], 2)
        # The idle one goes: the third is taken and read; the stream still
        # holds the one place past the checks, so it is answered 503.
        idle_one.close()
        self.assertEqual(status_line(third), 503)
        third.close()
        # The stream ends: a new connection is served.
        stream.close_notify()
        h.tls_transfer(stream, until_close=True, timeout=10)
        stream.close()
        h.wait_for(lambda: metrics(self.msock)["funneld_connections_open"] == 0, 10, what="all closed")
        late = h.open_stream(self.addr)
        self.ledger.add()
        got, _ = h.tls_transfer(late, b"late", 4, timeout=10)
        self.assertEqual(got, b"late")
        late.close_notify()
        h.tls_transfer(late, until_close=True, timeout=10)
        late.close()


class ClientLimits(h.ClassDaemonCase):
    """[clients]: deny 198.51.100.0/24 and 2001:db8:bad::/48, two
    connections per client, 3/s (burst 6), two workers over TCP."""

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cert, key = h.leaf_once(TARGET, "ec")
        cls.be = h.Backend(cls.wd("be.sock"), mode="echo")
        cls.backends = [cls.be]
        cls.port = h.free_port()
        cls.addr = ("127.0.0.1", cls.port)
        cls.msock = cls.wd("metrics.sock")
        config = h.make_config(f"127.0.0.1:{cls.port}", cert, key, [(f"{TARGET}:443", cls.be.path)],
                               workers=2, metrics="unix:" + cls.msock)
        config += "\n[clients]\ndeny = 198.51.100.0/24, 2001:db8:bad::/48\nmax_connections = 2\nrate = 3/s\n"
        cls.start_funneld(config)

    def refused(self, src, logged=True):
        s = h.connect(self.addr)
        s.sendall(h.ingress_head(src=src))
        st = status_line(s)
        s.close()
        if logged:
            self.ledger.add()
        return st

    def stream(self, src):
        tls = h.open_stream(self.addr, src=src)
        self.ledger.add()
        return tls

    def end(self, tls):
        tls.close_notify()
        h.tls_transfer(tls, until_close=True, timeout=10)
        tls.close()

    def test_deny(self):
        accepted = self.be.accepted
        m0 = metrics(self.msock)
        self.assertEqual(self.refused("198.51.100.9:1234"), 403)
        # Logged once per client per interval: the next refusals are counted, not logged.
        for port in range(1000, 1010):
            self.assertEqual(self.refused(f"198.51.100.9:{port}", logged=False), 403)
        self.assertEqual(self.refused("[2001:db8:bad:1::1]:443"), 403)
        self.assertEqual(self.be.accepted, accepted, "a denied client reached the backend")
        recs = self.ledger.wait(2)
        self.assertEqual([(r["status"], r["result"]) for r in recs[-2:]],
                         [("403", "refused_403"), ("403", "refused_403")])
        self.assertEqual(recs[-2]["src"], "198.51.100.9:1234")
        m1 = metrics(self.msock)
        self.assertEqual(m1['funneld_refusals_total{limit="deny"}'] - m0['funneld_refusals_total{limit="deny"}'], 12)
        self.assertEqual(m1['funneld_connections_total{result="refused_403"}'] -
                         m0['funneld_connections_total{result="refused_403"}'], 12)

    def test_connections_per_client_across_workers(self):
        # Many at once from one client, spread over both workers by the kernel:
        # exactly two get in.
        src = "203.0.113.50"
        results = []

        def one(i):
            s = h.connect(self.addr)
            tls = h.TLSStream(s, h.client_context(), TARGET)
            s.sendall(h.ingress_head(src=f"{src}:{2000 + i}") + tls.client_hello())
            got = h.recv_exact(s, 12, 10)
            if got == h.RESPONSE_101[:12]:
                self.assertEqual(h.recv_exact(s, len(h.RESPONSE_101) - 12, 10), h.RESPONSE_101[12:])
            results.append((got, s, tls))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        admitted = [(s, tls) for got, s, tls in results if got == h.RESPONSE_101[:12]]
        refused = [got for got, s, tls in results if got != h.RESPONSE_101[:12]]
        self.assertEqual(len(admitted), 2, results)
        self.assertTrue(all(g.startswith(b"HTTP/1.1 429") for g in refused), refused)
        self.ledger.add(3)              # two streams, one logged refusal
        # Another client, and another /64 of IPv6, are not affected...
        other = self.stream("203.0.113.51:1")
        v6a = self.stream("[2001:db8:1:1::1]:1")
        v6b = self.stream("[2001:db8:1:1::2]:1")
        # ...but the same /64 is one client.
        self.assertEqual(self.refused("[2001:db8:1:1::3]:1"), 429)
        v6c = self.stream("[2001:db8:1:2::1]:1")
        for tls in (other, v6a, v6b, v6c):
            self.end(tls)
        for s, tls in admitted:
            tls.handshake()
            self.end(tls)
        for got, s, tls in results:
            s.close()
        # Room again once they are closed.
        h.wait_for(lambda: metrics(self.msock)["funneld_connections_open"] == 0, 10, what="all closed")
        recs = self.ledger.wait(self.ledger.made)
        self.assertEqual(sum(1 for r in recs if r["result"] == "refused_429"), 2, recs)

    def test_rate_burst_then_refill(self):
        src = "203.0.113.70"
        accepted = self.be.accepted
        # Burst 2 x 3: six new connections back to back, the seventh is refused.
        for i in range(6):
            self.end(self.stream(f"{src}:{3000 + i}"))
        self.assertEqual(self.refused(f"{src}:3999"), 429)
        self.assertEqual(self.be.accepted, accepted + 6)
        # Tokens come back at 3/s: within a few seconds it is served again.
        def served():
            s = h.connect(self.addr)
            tls = h.TLSStream(s, h.client_context(), TARGET)
            s.sendall(h.ingress_head(src=f"{src}:4000") + tls.client_hello())
            got = h.recv_exact(s, len(h.RESPONSE_101), 10)
            if got != h.RESPONSE_101:
                s.close()
                return None
            return tls
        tls = h.wait_for(served, 10, interval=0.2, what="a token")
        tls.handshake()
        self.end(tls)
        self.ledger.add()
        # The refused attempts while waiting were quiet (logged once per interval).
        recs = self.ledger.wait(self.ledger.made)
        self.assertEqual(recs[-1]["result"], "ok")


class BufferBudget(h.ClassDaemonCase):
    """max_buffer_memory = 1M.  Clients push into backends that do not
    read: without the budget each such connection would hold a read-ahead
    and a decrypted buffer (~2 x 260 KiB); with it funneld stops reading once
    the buffers are at the budget, and loses no byte: when the backends read
    again, every stream arrives whole."""

    CONNS = 24                          # unbudgeted they would hold ~5 MB (measured: 2.4 MB for 12)
    SIZE = 2 * 1024 * 1024
    BUDGET = 1 << 20
    BUF = 260 * 1024                    # one pool buffer (BUF_SIZE)

    @classmethod
    def setUpClass(cls):
        cls.wd = h.Workdir()
        cert, key = h.leaf_once(TARGET, "ec")
        cls.be = h.ManualBackend(cls.wd("be.sock"))
        cls.backends = [cls.be]
        cls.addr = cls.wd("relay.sock")
        cls.msock = cls.wd("metrics.sock")
        cls.start_funneld(h.make_config("unix:" + cls.addr, cert, key, [(f"{TARGET}:443", cls.be.path)],
                                        max_buffer_memory="1M", idle_timeout="60s",
                                        metrics="unix:" + cls.msock))

    def test_reads_wait_at_the_budget_and_nothing_is_lost(self):
        payloads = [os.urandom(self.SIZE) for _ in range(self.CONNS)]
        streams, backs = [], []
        for p in payloads:
            tls = h.open_stream(self.addr)
            self.ledger.add()
            streams.append(tls)
            backs.append(self.be.take())
        # Each client pushes its payload from a thread (the sends block once
        # funneld stops reading); the backends read nothing yet.
        pushers = []
        for tls, p in zip(streams, payloads):
            t = threading.Thread(target=lambda tls=tls, p=p: tls.sendall(p), daemon=True)
            t.start()
            pushers.append(t)
        m = h.wait_for(lambda: (lambda m: m if m["funneld_buffer_budget_waits_total"] > 0 else None)(
            metrics(self.msock)), 20, what="reads put off at the budget")
        # Settled: the buffers stay near the budget (a read may overshoot it by
        # a buffer, and decrypting what was read takes one more).
        peak = 0
        for _ in range(40):
            peak = max(peak, metrics(self.msock)["funneld_buffer_bytes"])
        print(f"\n  buffers held at most {peak / 1024:.0f} KiB (budget {self.BUDGET // 1024} KiB)")
        self.assertLessEqual(peak, self.BUDGET + 3 * self.BUF, f"buffers at {peak} bytes")
        # The backends read: every byte of every stream arrives, in order.
        got = [bytearray() for _ in backs]
        def drain(i):
            b = backs[i]
            b.settimeout(60)
            while len(got[i]) < self.SIZE:
                d = b.recv(1 << 20)
                if not d:
                    break
                got[i] += d
        readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(backs))]
        for t in readers:
            t.start()
        for t in readers + pushers:
            t.join(120)
        for i, p in enumerate(payloads):
            self.assertEqual(len(got[i]), len(p), f"stream {i}")
            self.assertEqual(bytes(got[i]), p, f"stream {i}")
        for tls, b in zip(streams, backs):
            tls.close_notify()
            b.shutdown(socket.SHUT_WR)
            h.tls_transfer(tls, until_close=True, timeout=20)
            tls.close()
        h.wait_for(lambda: metrics(self.msock)["funneld_buffer_bytes"] == 0, 10, what="buffers given back")


if __name__ == "__main__":
    unittest.main()
