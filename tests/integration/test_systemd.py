"""funneld under systemd's protocols (DESIGN.md sections 3-5), with the real
tools where they exist:

- sd_notify readiness: a real NOTIFY_SOCKET (AF_UNIX datagrams, with the
  sender's credentials, as systemd reads them): READY=1 only once the
  listener takes connections, RELOADING=1/READY=1 around SIGHUP, STATUS=
  with the live connection count, WATCHDOG=1 at half of WATCHDOG_USEC,
  STOPPING=1 on SIGTERM.
- socket activation with the real systemd-socket-activate (TCP and unix).
- journald: a real systemd-journald started inside a private mount namespace
  (`unshare -m`, tmpfs over /run/systemd, /run/log and /var/log/journal), read
  back with journalctl; plus the raw native-protocol datagrams captured on a
  socket of our own at /run/systemd/journal/socket (same namespace trick);
  plus the readable stderr lines when stderr is not the journal.
- privileges: `user = nobody` as root (keys readable by root only).
- metrics: GET /metrics over a unix socket with curl, exact counter values
  after a known mix of traffic.
- certificate files replaced on disk (no signal), and traffic across reloads.

Everything binds to loopback or Unix sockets; waiting is polling.
The namespace scenarios run this same file as a script:
    unshare -m --propagation private python3 test_systemd.py --scenario MODE OUT.json
"""
import array
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (FUNNELD, TARGET, Backend, Funneld, Workdir, base_config, connect,  # noqa: E402
                     ingress_head, open_stream, parse_response, pki, read_until_close,
                     refused, wait_for, RESPONSE_101)

JOURNALD = "/lib/systemd/systemd-journald"
SRC = "198.51.100.23:40001"
TARGET_PORT = f"{TARGET}:443"


# ---------------------------------------------------------------- helpers

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def roundtrip(addr, payload, target=TARGET_PORT, src=SRC, ctx=None):
    """One whole stream: send payload, close_notify, read to the end.
    Returns (bytes received, the server certificate's DER)."""
    t = open_stream(addr, target=target, src=src, ctx=ctx)
    try:
        der = t.obj.getpeercert(binary_form=True)
        if payload:
            t.sendall(payload)
        t.close_notify()
        got = b""
        while True:
            d = t.recv()
            if not d:
                break
            got += d
        return got, der
    finally:
        t.close()


def echo_check(t, data=b"ping"):
    """On an open TLSStream to an echo backend: the bytes come back."""
    t.sendall(data)
    got = b""
    while len(got) < len(data):
        d = t.recv()
        if not d:
            break
        got += d
    return got == data


def pem_to_der(path):
    with open(path) as f:
        text = f.read()
    first = text[:text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


def replace_file(src, dst):
    """Write to a temp file in dst's directory, then rename (as `tailscale cert` does)."""
    tmp = dst + ".tmp-new"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    os.rename(tmp, dst)


class NotifySocket:
    """An sd_notify receiver: an AF_UNIX datagram socket with SO_PASSCRED, as
    systemd's own.  Each message is kept as (monotonic time, sender pid, {KEY: VALUE})."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.messages = []
        self.pos = 0

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return False
        pid = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        fields = {}
        for line in data.decode("utf-8", "replace").split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        self.messages.append((time.monotonic(), pid, fields))
        return True

    def next(self, pred=lambda m: True, timeout=15.0, what="a notification"):
        """The next message (after the last one returned) for which pred(fields)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.messages):
                m = self.messages[self.pos]
                self.pos += 1
                if pred(m[2]):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [m[2] for m in self.messages]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {seen}")
            self._recv(left)

    def close(self):
        self.sock.close()


def not_periodic(f):
    """Skip the periodic STATUS= / WATCHDOG=1 messages."""
    return not (set(f) <= {"STATUS", "WATCHDOG"})


def status_count(f):
    m = re.match(r"^(\d+) ", f.get("STATUS", ""))
    return int(m.group(1)) if m else None


def curl(path, url, method="GET"):
    """-> (status, headers, body) over a unix socket with the real curl."""
    cmd = ["curl", "-sS", "-i", "--max-time", "10", "--unix-socket", path, "-X", method, url]
    p = subprocess.run(cmd, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"curl failed ({p.returncode}): {p.stderr.decode()}")
    st, hd, body = parse_response(p.stdout)
    return st, hd, body.decode()


def parse_metrics(text):
    """{'name{labels}': value} from the Prometheus text format; checks the syntax on the way."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?) (-?[0-9.eE+]+)$', line)
        if not m:
            raise AssertionError(f"not a Prometheus sample line: {line!r}")
        out[m.group(1)] = float(m.group(3))
    return out


# ---------------------------------------------------------------- base class

class Base(unittest.TestCase):
    def setUp(self):
        self.wd = Workdir()
        self.addCleanup(self.wd.cleanup)
        self.cert, self.key = pki().leaf(TARGET)

    def backend(self, name="app.sock", mode="echo", reply=b""):
        b = Backend(self.wd(name), mode, reply)
        self.addCleanup(b.close)
        return b

    def funneld(self, text, env=None, args=None):
        f = Funneld(self.wd.path, text, env=env, args=args)
        self.addCleanup(f.stop)
        return f

    def notify_socket(self):
        n = NotifySocket(self.wd("notify.sock"))
        self.addCleanup(n.close)
        return n


# ---------------------------------------------------------------- 1. sd_notify

class NotifyTest(Base):
    def test_ready_reload_stop_sequence(self):
        port = free_port()
        b = self.backend()
        ns = self.notify_socket()
        conf = base_config(f"127.0.0.1:{port}", self.cert, self.key, [(TARGET_PORT, b.path)])
        f = self.funneld(conf, env={"NOTIFY_SOCKET": ns.path})
        f.start(wait=False)

        t0, pid, first = ns.next(timeout=30, what="the first notification")
        # The listener must take a connection at the very moment READY=1 arrives.
        s = connect(("127.0.0.1", port))
        s.close()
        self.assertEqual(first.get("READY"), "1", f"first notification is not READY=1: {first}")
        self.assertEqual(pid, f.proc.pid, "notification not sent by the main pid (NotifyAccess=main)")
        self.assertIn("started:", f.log())
        got, _ = roundtrip(("127.0.0.1", port), b"hello after READY")
        self.assertEqual(got, b"hello after READY")
        # STATUS= follows at once with the count (0, or 1 if it saw our connect).
        _, _, st = ns.next(lambda m: "STATUS" in m, timeout=10, what="STATUS=")
        self.assertIn(status_count(st), (0, 1), st)

        # SIGHUP: RELOADING=1, then READY=1 once the new configuration is in force.
        f.signal(signal.SIGHUP)
        _, _, m = ns.next(not_periodic, what="RELOADING=1")
        self.assertEqual(m.get("RELOADING"), "1", m)
        _, _, m = ns.next(not_periodic, what="READY=1 after reload")
        self.assertEqual(m.get("READY"), "1", m)
        self.assertIn("configuration reloaded", f.log(), "READY=1 sent before the reload was done")

        # A broken configuration: still RELOADING=1 then READY=1, old config in force.
        f.write_config(conf + "\nno_such_key = 1\n")
        f.signal(signal.SIGHUP)
        _, _, m = ns.next(not_periodic, what="RELOADING=1 (bad config)")
        self.assertEqual(m.get("RELOADING"), "1", m)
        _, _, m = ns.next(not_periodic, what="READY=1 after a failed reload")
        self.assertEqual(m.get("READY"), "1", m)
        self.assertIn("reload failed", f.log())
        got, _ = roundtrip(("127.0.0.1", port), b"still here")
        self.assertEqual(got, b"still here")

        # SIGTERM: STOPPING=1, exit 0.
        f.signal(signal.SIGTERM)
        _, _, m = ns.next(not_periodic, what="STOPPING=1")
        self.assertEqual(m.get("STOPPING"), "1", m)
        self.assertEqual(f.proc.wait(30), 0, f.log())
        for _, p, _ in ns.messages:
            self.assertEqual(p, f.proc.pid)

    def test_watchdog_and_status(self):
        port = free_port()
        b = self.backend()
        ns = self.notify_socket()
        conf = base_config(f"127.0.0.1:{port}", self.cert, self.key, [(TARGET_PORT, b.path)])
        f = self.funneld(conf, env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "2000000"})
        # WATCHDOG_PID must be funneld's own pid: the shell's $$ survives the exec.
        f.start(prefix=["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"'])
        ns.next(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")

        pings = []
        while len(pings) < 3:
            pings.append(ns.next(lambda m: m.get("WATCHDOG") == "1", timeout=5, what="WATCHDOG=1")[0])
        gaps = [b2 - a for a, b2 in zip(pings, pings[1:])]
        for g in gaps:
            # Every half interval (1 s); systemd would kill the service after 2 s.
            self.assertLess(g, 1.8, f"WATCHDOG=1 gaps {gaps}")
            self.assertGreater(g, 0.3, f"WATCHDOG=1 gaps {gaps} (far more often than WATCHDOG_USEC/2)")

        # STATUS= follows the live connection count.
        t = open_stream(("127.0.0.1", port))
        try:
            self.assertTrue(echo_check(t))
            _, _, st = ns.next(lambda m: status_count(m) == 1, timeout=6,
                               what="STATUS= with 1 connection open")
            t.close_notify()
            read_until_close(t.sock)
        finally:
            t.close()
        ns.next(lambda m: status_count(m) == 0, timeout=6, what="STATUS= back to 0 connections")
        self.assertEqual(f.stop(), 0)


# ---------------------------------------------------------------- 2. socket activation

class SocketActivationTest(Base):
    def activate(self, listen_args, conf_listen, fdnames="ingress"):
        if shutil.which("systemd-socket-activate") is None:
            raise AssertionError("systemd-socket-activate not found (package systemd)")
        b = self.backend()
        conf = base_config(conf_listen, self.cert, self.key, [(TARGET_PORT, b.path)])
        f = self.funneld(conf)
        # It binds, waits for the first connection, then execs funneld (the
        # connection waits in the backlog meanwhile), as systemd does.
        prefix = ["systemd-socket-activate"]
        for a in listen_args:
            prefix += ["-l", a]
        f.start(wait=False, prefix=prefix + [f"--fdname={fdnames}"])
        wait_for(lambda: f.log().count("Listening on") == len(listen_args) or f.proc.poll() is not None,
                 15, what="systemd-socket-activate to listen")
        self.assertIsNone(f.proc.poll(), f.log())
        return f

    def test_tcp(self):
        act_port, conf_port = free_port(), free_port()
        conf_unix = self.wd("conf.sock")
        f = self.activate([f"127.0.0.1:{act_port}"], f"127.0.0.1:{conf_port}\nlisten = unix:{conf_unix}")
        self.assertNotIn("started:", f.log())
        payload = os.urandom(5000)
        got, _ = roundtrip(("127.0.0.1", act_port), payload)     # this one starts funneld
        self.assertEqual(got, payload)
        # systemd-socket-activate exec()s funneld in place (under valgrind,
        # the wrapper is what runs there).
        exe = os.path.basename(os.readlink(f"/proc/{f.proc.pid}/exe"))
        if harness.WRAPPED:
            self.assertTrue(exe.startswith("memcheck"), exe)
        else:
            self.assertEqual(exe, "funneld")
        got, _ = roundtrip(("127.0.0.1", act_port), payload[:77])
        self.assertEqual(got, payload[:77])
        log = f.log()
        self.assertIn("socket-activated", log)
        self.assertRegex(log, r"listening on fd 3 \(ingress\)")
        # The configured addresses were not opened.
        with self.assertRaises(ConnectionRefusedError):
            connect(("127.0.0.1", conf_port)).close()
        self.assertFalse(os.path.exists(conf_unix), "configured unix listener created anyway")
        rec = f.wait_records(1)[-1]
        self.assertEqual(rec["result"], "ok")
        self.assertEqual(rec["peer"].rsplit(":", 1)[0], "127.0.0.1")
        self.assertEqual(f.stop(), 0)

    def test_unix(self):
        act = self.wd("act.sock")
        conf_port = free_port()
        f = self.activate([act], f"127.0.0.1:{conf_port}")
        payload = os.urandom(3000)
        got, _ = roundtrip(act, payload)
        self.assertEqual(got, payload)
        self.assertIn("socket-activated", f.log())
        self.assertEqual(f.wait_records(1)[-1]["peer"], "unix")
        with self.assertRaises(ConnectionRefusedError):
            connect(("127.0.0.1", conf_port)).close()
        self.assertEqual(f.stop(), 0)
        # The socket belongs to the service manager: funneld must not remove it.
        self.assertTrue(stat.S_ISSOCK(os.lstat(act).st_mode), "activated socket file removed by funneld")

    def test_two_named_sockets(self):
        act, port, conf_port = self.wd("act.sock"), free_port(), free_port()
        f = self.activate([act, f"127.0.0.1:{port}"], f"127.0.0.1:{conf_port}", "relay-unix:relay-tcp")
        for addr in (act, ("127.0.0.1", port), act):
            got, _ = roundtrip(addr, b"both sockets")
            self.assertEqual(got, b"both sockets")
        log = f.log()
        self.assertIn("socket-activated: 2 sockets", log)
        self.assertRegex(log, r"listening on fd 3 \(relay-unix\)")
        self.assertRegex(log, r"listening on fd 4 \(relay-tcp\)")
        self.assertEqual(f.stop(), 0)


# ---------------------------------------------------------------- 3. journald

def _scenario_traffic(addr, payload_len, reply_len):
    """One ok stream (exact byte counts) and one refusal (404)."""
    payload = os.urandom(payload_len)
    got, _ = roundtrip(addr, payload)
    assert len(got) == reply_len, (len(got), reply_len)
    st, _, _, _ = refused(addr, ingress_head(src=SRC, target="nobody.example.ts.net:443"))
    assert st == 404, st


def _parse_native(buf):
    """journald's native protocol: KEY=VALUE\\n, or KEY\\n<le64 length><value>\\n."""
    fields, i = {}, 0
    while i < len(buf):
        nl = buf.index(b"\n", i)
        line = buf[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            n = struct.unpack("<Q", buf[nl + 1:nl + 9])[0]
            v = buf[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode("utf-8", "replace")
    return fields


def scenario(mode, out_path):
    """Runs inside `unshare -m --propagation private` (as root).  Writes
    {entries: [...], funneld_pid, stderr, ...} to out_path for the test to check."""
    for d in ("/run/systemd", "/run/log"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    if os.path.isdir("/var/log/journal"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/log/journal"], check=True)
    os.makedirs("/run/systemd/journal", exist_ok=True)

    wd = Workdir()
    procs = []
    result = {"mode": mode, "entries": []}
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC")}
    capture = None
    try:
        if mode == "journald":
            jd = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env)
            procs.append(jd)
            wait_for(lambda: os.path.exists("/run/systemd/journal/socket")
                     and os.path.exists("/run/systemd/journal/stdout") or jd.poll() is not None,
                     20, what="systemd-journald's sockets")
            if jd.poll() is not None:
                raise RuntimeError(f"systemd-journald exited {jd.returncode}")
            # funneld's stderr: a stream connected to journald, header first (as systemd does).
            err = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            err.connect("/run/systemd/journal/stdout")
            err.sendall(b"funneld\nfunneld-test.service\n6\n0\n0\n0\n0\n")
            err.shutdown(socket.SHUT_RD)
            err_fd = err.fileno()
        else:
            capture = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            capture.bind("/run/systemd/journal/socket")
            capture.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            errf = open(wd("stderr"), "wb")
            err_fd = errf.fileno()
        st = os.fstat(err_fd)

        ns = NotifySocket(wd("notify.sock"))
        b = Backend(wd("app.sock"), "record", reply=lambda d: b"R" * (len(d) * 2 + 7))
        cert, key = pki().leaf(TARGET)
        port = free_port()
        conf = wd("funneld.conf")
        with open(conf, "w") as f:
            f.write(base_config(f"127.0.0.1:{port}", cert, key, [(TARGET_PORT, b.path)]))
        fenv = dict(env, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", NOTIFY_SOCKET=ns.path)
        fp = subprocess.Popen([FUNNELD, "-c", conf], stdin=subprocess.DEVNULL, stdout=err_fd,
                              stderr=err_fd, env=fenv, pass_fds=(err_fd,))
        procs.append(fp)
        result["funneld_pid"] = fp.pid
        result["backend"] = b.path
        ns.next(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")
        _scenario_traffic(("127.0.0.1", port), 1234, 1234 * 2 + 7)
        fp.send_signal(signal.SIGTERM)
        result["exit"] = fp.wait(30)

        if mode == "journald":
            def read_journal():
                p = subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "json", "--no-pager",
                                    f"_PID={fp.pid}"], capture_output=True, text=True, timeout=30)
                entries = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
                done = any("stopped" in str(e.get("MESSAGE", "")) for e in entries)
                return entries if done else None
            result["entries"] = wait_for(read_journal, 20, what="funneld's records in the journal")
        else:
            entries = []
            capture.settimeout(10)
            while not any(e.get("MESSAGE") == "stopped" for e in entries):
                fds = array.array("i")
                data, anc, _, _ = capture.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                        fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                for fd in fds:  # a large entry comes as a memfd
                    with os.fdopen(fd, "rb") as mf:
                        data = mf.read()
                entries.append(_parse_native(data))
            result["entries"] = entries
            errf.close()
            with open(wd("stderr"), "rb") as f:
                result["stderr"] = f.read().decode("utf-8", "replace")
        b.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
        wd.cleanup()
        if harness._pki_dir:
            shutil.rmtree(harness._pki_dir, ignore_errors=True)
        with open(out_path, "w") as f:
            json.dump(result, f)


class JournalTest(Base):
    def run_scenario(self, mode):
        if os.geteuid() != 0:
            raise AssertionError("the journald scenarios need root (unshare -m, mount)")
        out = self.wd("scenario.json")
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__), "--scenario", mode, out],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)   # the session we created for it
            output, _ = p.communicate()
        self.assertEqual(p.returncode, 0, output.decode("utf-8", "replace")[-3000:])
        with open(out) as f:
            return json.load(f)

    def check_records(self, r, transport):
        self.assertEqual(r["exit"], 0)
        entries = r["entries"]
        conns = [e for e in entries if "FUNNEL_CONN" in e]
        self.assertEqual(len(conns), 2, f"want 2 connection records, got {conns}")
        ok = [e for e in conns if e.get("FUNNEL_RESULT") == "ok"]
        ref = [e for e in conns if e.get("FUNNEL_RESULT") == "refused_404"]
        self.assertEqual((len(ok), len(ref)), (1, 1), conns)
        ok, ref = ok[0], ref[0]
        self.assertEqual(ok["FUNNEL_SRC"], SRC)
        self.assertEqual(ok["FUNNEL_TARGET"], TARGET_PORT)
        self.assertEqual(ok["FUNNEL_BACKEND"], r["backend"])
        self.assertEqual(ok["FUNNEL_BYTES_IN"], "1234")
        self.assertEqual(ok["FUNNEL_BYTES_OUT"], str(1234 * 2 + 7))
        self.assertEqual(ok["FUNNEL_SNI"], TARGET)
        self.assertRegex(ok["FUNNEL_TLS_VERSION"], r"^TLSv1\.[23]$")
        self.assertRegex(ok["FUNNEL_PEER"], r"^127\.0\.0\.1:\d+$")
        self.assertRegex(ok["FUNNEL_DURATION_MS"], r"^\d+$")
        self.assertEqual(ok["PRIORITY"], "6", "a clean connection is info")
        self.assertEqual(ok["SYSLOG_IDENTIFIER"], "funneld")
        self.assertIn(f"conn {ok['FUNNEL_CONN']} ", ok["MESSAGE"])
        self.assertEqual(ref["FUNNEL_STATUS"], "404")
        self.assertEqual(ref["FUNNEL_REASON"], "no backend for target")
        self.assertEqual(ok["FUNNEL_REASON"], "-")
        self.assertEqual(ref["FUNNEL_SRC"], SRC)
        self.assertEqual(ref["FUNNEL_TARGET"], "nobody.example.ts.net:443")
        self.assertEqual(ref["FUNNEL_BACKEND"], "-")
        self.assertEqual(ref["FUNNEL_BYTES_IN"], "0")
        self.assertEqual(ref["PRIORITY"], "5", "a refusal is a notice")
        self.assertNotEqual(ok["FUNNEL_CONN"], ref["FUNNEL_CONN"])
        started = [e for e in entries if "started:" in e.get("MESSAGE", "")]
        self.assertEqual(len(started), 1, entries)
        self.assertEqual(started[0]["PRIORITY"], "5")
        self.assertNotIn("FUNNEL_CONN", started[0])
        if transport:
            for e in entries:
                self.assertEqual(e.get("_TRANSPORT"), transport,
                                 f"funneld also wrote to its stderr stream: {e.get('MESSAGE')!r}")
        return ok, ref

    def test_real_journald(self):
        if not os.access(JOURNALD, os.X_OK):
            raise AssertionError(f"{JOURNALD} not found (package systemd)")
        r = self.run_scenario("journald")
        ok, _ = self.check_records(r, "journal")
        self.assertEqual(ok["_PID"], str(r["funneld_pid"]))

    def test_native_protocol_datagrams(self):
        r = self.run_scenario("native")
        self.check_records(r, None)
        self.assertEqual(r["stderr"], "", "with JOURNAL_STREAM matching, nothing goes to stderr")

    def test_stderr_lines_without_journal(self):
        """No JOURNAL_STREAM, or one that names another file: readable lines on stderr."""
        for js in (None, "1:1"):
            with self.subTest(JOURNAL_STREAM=js):
                wd = Workdir()
                self.addCleanup(wd.cleanup)
                b = Backend(wd("app.sock"), "record", reply=lambda d: b"R" * (len(d) * 2 + 7))
                self.addCleanup(b.close)
                port = free_port()
                f = Funneld(wd.path, base_config(f"127.0.0.1:{port}", self.cert, self.key,
                                                 [(TARGET_PORT, b.path)]),
                            env={"JOURNAL_STREAM": js} if js else None)
                self.addCleanup(f.stop)
                f.start()
                _scenario_traffic(("127.0.0.1", port), 1234, 1234 * 2 + 7)
                recs = f.wait_records(2)
                ok = [x for x in recs if x.get("result") == "ok"][0]
                ref = [x for x in recs if x.get("result") == "refused_404"][0]
                self.assertEqual((ok["src"], ok["target"], ok["backend"]), (SRC, TARGET_PORT, b.path))
                self.assertEqual((ok["in"], ok["out"]), ("1234", str(1234 * 2 + 7)))
                self.assertEqual(ok["sni"], TARGET)
                self.assertEqual((ref["status"], ref["backend"]), ("404", "-"))
                self.assertRegex(f.log(), r"(?m)^funneld: notice: funneld \S+ started:")
                self.assertEqual(f.stop(), 0)


# ---------------------------------------------------------------- 4. privileges

def _ids(name):
    import grp
    import pwd
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid, grp.getgrgid(pw.pw_gid).gr_name


class PrivilegeTest(Base):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            raise AssertionError("the privilege tests need root")

    def test_drops_to_nobody(self):
        uid, gid, _ = _ids("nobody")
        os.chmod(self.wd.path, 0o711)           # nobody may pass through, not list
        keys = self.wd("keys")
        os.mkdir(keys, 0o700)
        cert, key = os.path.join(keys, "node.crt"), os.path.join(keys, "node.key")
        for s, d in ((self.cert, cert), (self.key, key)):
            shutil.copyfile(s, d)
            os.chmod(d, 0o600)
        pub = self.wd("pub")
        os.mkdir(pub, 0o755)
        b = Backend(os.path.join(pub, "app.sock"))
        self.addCleanup(b.close)
        os.chmod(b.path, 0o666)
        port = free_port()
        f = self.funneld(base_config(f"127.0.0.1:{port}", cert, key, [(TARGET_PORT, b.path)],
                                     extra_main="user = nobody"))
        f.start()
        self.assertRegex(f.log(), r"running as user nobody \(uid %d, gid %d\)" % (uid, gid))
        tasks = os.listdir(f"/proc/{f.proc.pid}/task")
        self.assertGreaterEqual(len(tasks), 2, "no worker thread?")
        for tid in tasks:                        # every thread, not just the main one
            with open(f"/proc/{f.proc.pid}/task/{tid}/status") as fh:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
            self.assertEqual(st["Uid"].split(), [str(uid)] * 4, f"thread {tid}: {st['Uid']}")
            self.assertEqual(st["Gid"].split(), [str(gid)] * 4, f"thread {tid}: {st['Gid']}")
            # initgroups(): the user's own groups (its primary one), none of root's.
            self.assertEqual(st["Groups"].split(), [str(gid)], f"thread {tid}: {st['Groups']}")
            self.assertEqual(int(st["CapEff"], 16), 0, f"thread {tid}: capabilities left")
        payload = os.urandom(4000)
        got, _ = roundtrip(("127.0.0.1", port), payload)
        self.assertEqual(got, payload)
        # After the drop the root-only key cannot be read again: a reload must
        # fail cleanly and keep the running configuration.
        f.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in f.log(), 10, what="the failed reload")
        got, _ = roundtrip(("127.0.0.1", port), b"after reload")
        self.assertEqual(got, b"after reload")
        self.assertEqual(f.stop(), 0)

    def test_keeps_the_users_supplementary_groups(self):
        """A backend socket shared through a group works after the drop: the
        user's groups are set (initgroups), nothing of root's.  The
        user and groups exist only in a private mount namespace, over
        /etc/passwd and /etc/group bind-mounted for this funneld."""
        passwd, group = self.wd("passwd"), self.wd("group")
        with open("/etc/passwd") as src, open(passwd, "w") as dst:
            dst.write(src.read() + "fdtest:x:4242:4242::/nonexistent:/usr/sbin/nologin\n")
        with open("/etc/group") as src, open(group, "w") as dst:
            dst.write(src.read() + "fdtest:x:4242:\nfdshare:x:4343:fdtest\n")
        os.chmod(self.wd.path, 0o711)
        pub = self.wd("pub")
        os.mkdir(pub, 0o755)
        b = Backend(os.path.join(pub, "app.sock"))
        self.addCleanup(b.close)
        os.chown(b.path, 0, 4343)
        os.chmod(b.path, 0o660)                 # only root and group fdshare may connect
        port = free_port()
        script = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"'
        prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", passwd, group]
        f = self.funneld(base_config(f"127.0.0.1:{port}", self.cert, self.key, [(TARGET_PORT, b.path)],
                                     extra_main="user = fdtest"))
        f.start(prefix=prefix)
        self.assertRegex(f.log(), r"running as user fdtest \(uid 4242, gid 4242\)")
        for tid in os.listdir(f"/proc/{f.proc.pid}/task"):
            with open(f"/proc/{f.proc.pid}/task/{tid}/status") as fh:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
            self.assertEqual(st["Gid"].split(), ["4242"] * 4, f"thread {tid}: {st['Gid']}")
            self.assertEqual(sorted(st["Groups"].split()), ["4242", "4343"], f"thread {tid}: {st['Groups']}")
        payload = os.urandom(4000)
        got, _ = roundtrip(("127.0.0.1", port), payload)
        self.assertEqual(got, payload)
        self.assertEqual(f.stop(), 0)

    def test_unknown_user_refuses_to_start(self):
        port = free_port()
        b = self.backend()
        f = self.funneld(base_config(f"127.0.0.1:{port}", self.cert, self.key, [(TARGET_PORT, b.path)],
                                     extra_main="user = no-such-user-xyz"))
        f.start(wait=False)
        self.assertEqual(f.proc.wait(30), 1, f.log())
        self.assertRegex(f.log(), r"no-such-user-xyz.*no such user")
        self.assertNotIn("started:", f.log())

    def test_config_check_reports_unknown_user(self):
        """`funneld -t` is what an operator runs before a restart; like `nginx -t`
        and `haproxy -c`, it should catch a user that does not exist."""
        b = self.backend()
        conf = self.wd("check.conf")
        with open(conf, "w") as fh:
            fh.write(base_config("127.0.0.1:1", self.cert, self.key, [(TARGET_PORT, b.path)],
                                 extra_main="user = no-such-user-xyz"))
        p = subprocess.run([FUNNELD, "-t", "-c", conf], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, f"funneld -t accepted an unknown user: {p.stdout}{p.stderr}")
        self.assertIn("no-such-user-xyz", p.stderr)


# ---------------------------------------------------------------- 5. metrics

class MetricsTest(Base):
    REC = "rec.example.ts.net:443"
    GONE = "gone.example.ts.net:443"

    def setUp(self):
        super().setUp()
        self.msock = self.wd("metrics.sock")
        self.echo = self.backend("echo.sock")
        self.rec = self.backend("rec.sock", "record", reply=lambda d: b"x" * (3 * len(d) + 1))
        port = free_port()
        self.addr = ("127.0.0.1", port)
        conf = base_config(f"127.0.0.1:{port}", self.cert, self.key,
                           [(TARGET_PORT, self.echo.path), (self.REC, self.rec.path),
                            (self.GONE, self.wd("absent.sock"))],
                           extra_main=f"metrics = unix:{self.msock}")
        conf = conf.replace("header_timeout = 3s", "header_timeout = 1s")
        self.f = self.funneld(conf)
        self.f.start()

    def scrape(self):
        st, hd, body = curl(self.msock, "http://x/metrics")
        self.assertEqual(st, 200, body)
        self.assertTrue(hd.get("content-type", "").startswith("text/plain"), hd)
        return parse_metrics(body)

    def settled(self, total):
        """A scrape once `total` connections have ended and none is open."""
        def ready():
            m = self.scrape()
            ended = sum(v for k, v in m.items() if k.startswith("funneld_connections_total{"))
            return m if ended >= total and m["funneld_connections_open"] == 0 else None
        return wait_for(ready, 15, what=f"{total} connections counted")

    @staticmethod
    def labelled(m, name, label):
        return {re.search(label + r'="([^"]+)"', k).group(1): v for k, v in m.items()
                if k.startswith(name + "{")}

    def plaintext_after_101(self):
        s = connect(self.addr)
        try:
            s.sendall(ingress_head())
            got = b""
            while len(got) < len(RESPONSE_101):
                d = s.recv(len(RESPONSE_101) - len(got))
                if not d:
                    break
                got += d
            self.assertEqual(got, RESPONSE_101)
            s.sendall(b"GET / HTTP/1.1\r\nHost: node.example.ts.net\r\n\r\n")
            read_until_close(s)
        finally:
            s.close()

    def test_counters_add_up(self):
        m0 = self.scrape()
        self.assertEqual(m0["funneld_connections_open"], 0)
        self.assertEqual(m0['funneld_connections_total{result="ok"}'], 0)

        # One stream held open: exactly one connection (the scraper is not one).
        held = open_stream(self.addr)
        self.assertTrue(echo_check(held, b"held"))
        self.assertEqual(self.scrape()["funneld_connections_open"], 1)
        self.assertEqual(self.scrape()["funneld_connections_open"], 1)

        sent = {"echo": [], "rec": []}
        for n in (1, 100, 5000, 40000):
            p = os.urandom(n)
            got, _ = roundtrip(self.addr, p)
            self.assertEqual(got, p)
            sent["echo"].append((n, n))
        for n in (10, 2000):
            got, _ = roundtrip(self.addr, os.urandom(n), target=self.REC)
            self.assertEqual(len(got), 3 * n + 1)
            sent["rec"].append((n, 3 * n + 1))
        self.assertEqual(self.scrape()["funneld_connections_open"], 1)

        def status_of(raw):
            return refused(self.addr, raw)[0]
        self.assertEqual(status_of(ingress_head(target="nobody.example.ts.net:443")), 404)
        self.assertEqual(status_of(ingress_head(target="nobody.example.ts.net:443")), 404)
        self.assertEqual(status_of(ingress_head(method=b"GET")), 405)
        self.assertEqual(status_of(ingress_head(src="not-an-address")), 400)
        self.assertEqual(status_of(ingress_head(extra=b"Origin: https://evil.example\r\n")), 403)
        self.assertEqual(status_of(ingress_head(target=self.GONE)), 502)
        self.assertEqual(status_of(b"POST /v0/ingress HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"), 431)
        self.assertEqual(status_of(b"POST /v0/ingress HTTP/1.1\r\nHost: x\r\n"), 408)  # header_timeout 1s
        self.plaintext_after_101()

        held.close_notify()
        read_until_close(held.sock)
        held.close()
        expect = {"ok": len(sent["echo"]) + len(sent["rec"]) + 1, "refused_404": 2, "refused_405": 1,
                  "refused_400": 1, "refused_403": 1, "refused_502": 1, "refused_431": 1,
                  "refused_408": 1, "handshake_failed": 1}
        m = self.settled(sum(expect.values()))
        results = self.labelled(m, "funneld_connections_total", "result")
        self.assertEqual({k: v for k, v in results.items() if v}, expect)
        hs = self.labelled(m, "funneld_handshake_failures_total", "reason")
        self.assertEqual(sum(hs.values()), 1, hs)

        held_n = len(b"held")
        self.assertEqual(m["funneld_bytes_in_total"], sum(i for i, _ in sent["echo"] + sent["rec"]) + held_n)
        self.assertEqual(m["funneld_bytes_out_total"], sum(o for _, o in sent["echo"] + sent["rec"]) + held_n)
        conns = self.labelled(m, "funneld_backend_connections_total", "backend")
        b_in = self.labelled(m, "funneld_backend_bytes_in_total", "backend")
        b_out = self.labelled(m, "funneld_backend_bytes_out_total", "backend")
        self.assertEqual(b_in[TARGET_PORT], sum(i for i, _ in sent["echo"]) + held_n)
        self.assertEqual(b_out[TARGET_PORT], sum(o for _, o in sent["echo"]) + held_n)
        self.assertEqual(b_in[self.REC], sum(i for i, _ in sent["rec"]))
        self.assertEqual(b_out[self.REC], sum(o for _, o in sent["rec"]))
        self.assertEqual(conns[self.REC], len(sent["rec"]))
        self.assertEqual(conns.get(self.GONE, 0), 0, "a 502 counted as a backend connection")
        # The echo backend: 4 streams + the held one, + the handshake failure,
        # whose backend socket was connected before the 101 (DESIGN.md 1.3).
        self.assertEqual(conns[TARGET_PORT], len(sent["echo"]) + 1 + 1, conns)
        self.assertEqual(self.f.stop(), 0)
        self.assertFalse(os.path.exists(self.msock), "metrics socket left behind at exit")

    def test_plaintext_after_101_is_not_tls(self):
        """Plain HTTP sent where the ClientHello belongs (the most common
        non-TLS input) is counted under reason="not_tls"."""
        self.plaintext_after_101()
        m = self.settled(1)
        self.assertEqual(m['funneld_connections_total{result="handshake_failed"}'], 1)
        hs = self.labelled(m, "funneld_handshake_failures_total", "reason")
        self.assertEqual(hs.get("not_tls"), 1, f"plaintext after the 101 counted as {hs}")
        rec = self.f.wait_records(1)[-1]
        self.assertTrue(rec.get("reason", "").startswith("not_tls"), rec)

    def test_http_surface(self):
        st, _, body = curl(self.msock, "http://x/other")
        self.assertEqual(st, 404, body)
        st, hd, _ = curl(self.msock, "http://x/metrics", method="POST")
        self.assertEqual(st, 405)
        self.assertIn("GET", hd.get("allow", ""))
        st, hd, body = curl(self.msock, "http://x/metrics", method="GET")
        self.assertEqual(st, 200)
        m = parse_metrics(body)
        for name in ("funneld_connections_open", 'funneld_connections_total{result="ok"}',
                     'funneld_handshake_failures_total{reason="not_tls"}', "funneld_bytes_in_total",
                     "funneld_bytes_out_total"):
            self.assertIn(name, m)
        self.assertRegex(body, r"(?m)^# TYPE funneld_connections_open gauge$")
        self.assertRegex(body, r"(?m)^# TYPE funneld_connections_total counter$")
        self.assertEqual(m["funneld_connections_open"], 0, "the scraper counted as a connection")

    def test_http_limits(self):
        """The metrics socket takes small GET/HEAD requests only: a body or
        an oversized head is refused before anything is read into memory."""
        def raw(request):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(self.msock)
            try:
                s.sendall(request)
            except OSError:
                pass                    # refused while we were still sending
            data = read_until_close(s)
            s.close()
            m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
            return int(m.group(1)) if m else None

        body = b"x" * 65536
        self.assertEqual(raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body), 413)
        self.assertEqual(raw(b"PUT /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"10000\r\n" + body + b"\r\n0\r\n\r\n"), 413)
        # libevent answers an oversized head with 400.
        self.assertEqual(raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"), 400)
        # Within the limits it still answers.
        self.assertEqual(raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
        self.assertEqual(raw(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
        self.assertIsNone(self.f.proc.poll())

    def test_buffer_pool_fills_while_busy_and_empties_when_quiet(self):
        m = self.scrape()
        self.assertEqual(m["funneld_buffer_pool_bytes"], 0, "a fresh funneld holds spare buffers")
        t = open_stream(self.addr)
        try:
            data = os.urandom(1 << 20)
            got, _ = harness.tls_transfer(t, data, len(data), timeout=30)
            self.assertEqual(got, data)
            # The transfer is done: its buffers went back to the pool.
            busy = self.scrape()["funneld_buffer_pool_bytes"]
            self.assertGreater(busy, 0, "no spare buffer kept after a transfer")
            # Unused for a second, the pool frees them (the stream is still open).
            wait_for(lambda: self.scrape()["funneld_buffer_pool_bytes"] == 0, harness.slack(15),
                     what="the pool to free its spares")
        finally:
            t.close()
        self.settled(1)


# ---------------------------------------------------------------- 6. certificate swap

class CertReloadTest(Base):
    def setUp(self):
        super().setUp()
        p = pki()
        self.a = p.leaf(TARGET, tag="swap-a")
        self.b = p.leaf(TARGET, tag="swap-b")
        self.der_a, self.der_b = pem_to_der(self.a[0]), pem_to_der(self.b[0])
        assert self.der_a != self.der_b
        self.certs = self.wd("certs")
        os.mkdir(self.certs, 0o700)
        self.cert_path = os.path.join(self.certs, f"{TARGET}.crt")
        self.key_path = os.path.join(self.certs, f"{TARGET}.key")
        self.install(self.a)

    def install(self, leaf):
        replace_file(leaf[1], self.key_path)
        replace_file(leaf[0], self.cert_path)

    def start(self):
        self.echo = self.backend()
        self.port = free_port()
        self.addr = ("127.0.0.1", self.port)
        f = self.funneld(base_config(f"127.0.0.1:{self.port}", self.cert_path, self.key_path,
                                     [(TARGET_PORT, self.echo.path)]))
        return f.start()

    def test_swap_without_signal(self):
        f = self.start()
        old = open_stream(self.addr)
        self.addCleanup(old.close)
        self.assertEqual(old.obj.getpeercert(binary_form=True), self.der_a)
        self.assertTrue(echo_check(old, b"before"))

        self.install(self.b)
        wait_for(lambda: "configuration reloaded" in f.log(), 10, what="the reload after the swap")
        self.assertIn("changed on disk", f.log())
        _, der = roundtrip(self.addr, b"x")
        self.assertEqual(der, self.der_b, "new connection still gets the old certificate")
        self.assertTrue(echo_check(old, b"old stream after the swap"))
        old.close_notify()
        self.assertNotIn("reload failed", f.log(), "cert and key picked up half-way")
        self.assertEqual(f.log().count("configuration reloaded"), 1,
                         "one swap (key + cert) should cause one reload")

    def test_traffic_across_reloads(self):
        f = self.start()
        done, failures, ders = [0], [], []
        stop = threading.Event()
        limit = 400

        def loop():
            while not stop.is_set() and done[0] < limit:
                try:
                    p = os.urandom(64)
                    got, der = roundtrip(self.addr, p)
                    if got != p:
                        raise AssertionError(f"echo mismatch {len(got)}")
                    ders.append(der)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))
                done[0] += 1

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        self.addCleanup(stop.set)

        def reloads():
            return f.log().count("configuration reloaded")

        def more(n):
            target = done[0] + n
            wait_for(lambda: done[0] >= target or not th.is_alive(), 30, what=f"{n} more streams")
            self.assertTrue(th.is_alive(), f"traffic loop ended early ({done[0]} streams)")

        more(20)
        for i, action in enumerate(("hup", "hup", "swap")):
            before = reloads()
            if action == "hup":
                f.signal(signal.SIGHUP)
            else:
                self.install(self.b)
            wait_for(lambda: reloads() > before, 10, what=f"reload {i + 1}")
            more(20)
        stop.set()
        th.join(30)
        self.assertFalse(th.is_alive())
        self.assertEqual(failures, [], f"{len(failures)} of {done[0]} streams failed")
        self.assertGreater(done[0], 60)
        self.assertEqual(ders[0], self.der_a)
        self.assertEqual(ders[-1], self.der_b)
        self.assertTrue(all(d in (self.der_a, self.der_b) for d in ders))
        first_b = ders.index(self.der_b)
        self.assertTrue(all(d == self.der_b for d in ders[first_b:]), "old certificate after the new one")
        self.assertNotIn("reload failed", f.log())
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--scenario":
        scenario(sys.argv[2], sys.argv[3])
    else:
        unittest.main()
