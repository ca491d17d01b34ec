#!/usr/bin/env python3
"""make flood: one funneld (workers = 2) under attack from public clients,
while legitimate clients keep streaming through it.

    python3 tests/flood.py [--flood-seconds S] [--rounds N] [--limits on|off|omit] [--keep] ...

Everything runs on this machine: relay-side connections to 127.0.0.1, idle
attackers from other loopback addresses, the backend on a Unix socket.

Set-up: funneld (BUILD=... picks the build) with workers = 2, metrics on a
Unix socket, max_pending / max_pending_per_peer and a [clients] section
(--limits off: no bounds, the "before" figures; --limits omit: none of those
keys, for a funneld that predates them); the hashing backend of tests/soak.py (--serve-backend) in
its own process; build/bench/loadgen (bench/loadgen.c, built here if it is
missing or older than its source) for the attack traffic; the legitimate
clients in a process of their own (this file with --legit), so that their
timings do not queue behind this process's bookkeeping.

A run: a baseline phase (legitimate clients only), then --rounds flood rounds.
In each round, for --flood-seconds, all at once:

  legit     --legit-clients distinct public clients (Tailscale-Ingress-Src
            198.51.100.N), each --legit-rate streams/s: connect, head +
            ClientHello in one write, 101, handshake, a tagged request, a
            response, close_notify; the client checks what it received
            against the expected bytes and the backend's SHA-256 of what it
            received against the client's (both ends); the connect time is
            TCP connect -> 101 -> handshake done.  They start before the
            attack and end after it.
  hsflood   loadgen -m flood: full handshakes from ONE public client
            (203.0.113.66), as fast as the client can with --flood-conc in
            flight;
  idle      loadgen -m idle: --idle connections held open from --idle-peers
            loopback addresses (127.0.0.16...), half sending nothing, half a
            head cut short; one funneld closes is counted by what it saw and
            reopened a second later;
  resets    loadgen -m rst: head + ClientHello, then SO_LINGER {1,0} close
            (half at once, half once the 101 arrived), from 250 public
            sources, --resets of them paced over the attack;
  distinct  loadgen -m flood -N: --distinct connections from as many
            distinct public sources (IPv4 10.x and IPv6 /64s), each a head
            for a target no backend serves (404, a cheap refusal that still
            passes the client table).

Then the attackers stop, the legitimate clients finish, and the quiet
period: funneld_connections_open 0, the spare-buffer pool empty, the
descriptor count back, and RSS polled until it is stable (bounded).

Measured: the legitimate clients' success rate and connect times (p50, p99,
max) per phase; funneld's CPU (/proc/PID/stat, in cores) and RSS (VmRSS)
before, during and after each round; what each attacker saw; the deltas of
funneld's counters (refusals by reason, connections by result, handshake
failures by reason).

Fails (exit 1) when: a legitimate stream fails or its bytes differ; funneld
dies, or does not exit 0 at SIGTERM; its RSS after a round is above
--rss-factor x the pre-flood RSS + --rss-slack-mib MiB; its descriptors do
not come back; it keeps using CPU once quiet (above --quiet-cpu cores).
The last lines are a summary table (Markdown) for the README.
"""
import argparse
import hashlib
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "integration"))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import soak  # noqa: E402

KIB = 1 << 10
MIB = 1 << 20
LOADGEN_SRC = os.path.join(ROOT, "bench", "loadgen.c")
LOADGEN = os.path.join(h.BUILD, "bench", "loadgen")
NOTARGET = "nobody.flood.invalid:443"
FLOOD_SRC = "203.0.113.66:40000"                # the one public client of the handshake flood
LEGIT_SRC = "198.51.100.{}:{}"                  # legitimate public clients
RESET_SRC = "192.0.2.1:1"                       # 250 sources from here
DISTINCT_SRC = ("10.{}.0.1:1", "[2001:db8:{:x}::1]:1")   # per round: new sources every round
RELAY = "127.0.0.1"                             # the relay: every connection with a head
IDLE_PEER_BASE = 16                             # idle attackers: 127.0.0.16, .17, ...

# The keys funneld learns in issue 13; --limits omit leaves them out.
NEW_MAIN_KEYS = ("max_pending", "max_pending_per_peer")
OFF_PENDING = 20000             # --limits off: as many as funneld has descriptors for


def log(msg):
    print(msg, flush=True)


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def ms(x):
    return "-" if x is None else f"{x * 1000:.1f}"


# ---------------------------------------------------------------- the legitimate clients (child process)

def legit_stream(addr, ctx, pool, src, ident, up, down, timeout):
    """One legitimate stream.  -> result dict ("error" set when it failed)."""
    res = {"id": ident, "src": src, "up": up, "down": down}
    t0 = time.monotonic()
    res["t0"] = t0
    deadline = t0 + timeout
    s = None
    try:
        s = h.connect(addr, timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = h.TLSStream(s, ctx, h.TARGET)
        s.sendall(h.ingress_head(src=src) + tls.client_hello())
        got = h.recv_exact(s, len(h.RESPONSE_101), timeout)
        if got != h.RESPONSE_101:
            rest = b""
            if len(got) == len(h.RESPONSE_101):
                try:
                    rest = soak.read_response(s, min(deadline, time.monotonic() + 5))
                except soak.ClientError:
                    pass
            res["status"] = soak.status_of(got + rest)
            ans = got + rest
            body = ans.partition(b"\r\n\r\n")[2]
            status_line = ans.split(b"\r\n", 1)[0][:60]
            res["error"] = f"no 101: {status_line!r}, body {body[:100]!r}"
            return res
        res["status"] = 101
        res["t101"] = time.monotonic() - t0
        tls.handshake()
        res["connect"] = time.monotonic() - t0
        tls.obj.write(soak.make_tag(ident, up, down, "cfirst"))
        r = soak.transfer(tls, pool.chunks(ident, 0, up), "cfirst", None, deadline)
        res.update(r)
        want = hashlib.sha256()
        for ch in pool.chunks(ident, 1, down):
            want.update(ch)
        problems = []
        if r.get("closed") != "close_notify":
            problems.append(f"stream ended by {r.get('closed')}, not close_notify")
        if r.get("send_err") or r.get("unfinished"):
            problems.append(f"send_err={r.get('send_err')} unfinished={r.get('unfinished')}")
        if r["sent"] != up:
            problems.append(f"sent {r['sent']}/{up}")
        if r["recv"] != down or r.get("recv_sha") != want.hexdigest():
            problems.append(f"received {r['recv']}/{down} bytes, sha256 "
                            f"{'matches' if r.get('recv_sha') == want.hexdigest() else 'differs'}")
        if problems:
            res["error"] = "; ".join(problems)
        res["total"] = time.monotonic() - t0
        return res
    except Exception as e:      # every failure is the stream's, reported
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    finally:
        if s is not None:
            s.close()


def legit_main(cfg):
    """--legit: run the legitimate clients, one JSON line per stream on stdout."""
    addr = (cfg["host"], cfg["port"])
    ctx = h.client_context(cafile=cfg["cafile"])
    pool = soak.Pool(cfg["seed"])
    stop_at = time.monotonic() + cfg["seconds"]
    out_lock = threading.Lock()
    rng_all = random.Random(cfg["seed"] * 7919 + cfg["id_base"])

    def emit(d):
        with out_lock:
            sys.stdout.write(json.dumps(d) + "\n")
            sys.stdout.flush()

    def client(i, rng):
        period = 1.0 / cfg["rate"]
        nxt = time.monotonic() + period * i / cfg["clients"]       # staggered starts
        seq = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            if now < nxt:
                time.sleep(min(nxt - now, stop_at - now))           # pacing, not waiting for anything
                continue
            ident = cfg["id_base"] + i * 100000 + seq
            seq += 1
            up = rng.randint(0, cfg["max_up"])
            down = rng.randint(1, cfg["max_down"])
            src = LEGIT_SRC.format(10 + i, 1024 + seq % 60000)
            r = legit_stream(addr, ctx, pool, src, ident, up, down, cfg["timeout"])
            r["client"] = i
            emit(r)
            # Never faster than the rate (a slow stream does not earn a burst).
            nxt = max(nxt + period, time.monotonic())

    threads = [threading.Thread(target=client, args=(i, random.Random(rng_all.random())), daemon=True)
               for i in range(cfg["clients"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    emit({"done": True, "cpu_s": ru.ru_utime + ru.ru_stime})


# ---------------------------------------------------------------- helpers for the driver

def build_loadgen():
    os.makedirs(os.path.dirname(LOADGEN), exist_ok=True)
    if os.path.exists(LOADGEN) and os.path.getmtime(LOADGEN) > os.path.getmtime(LOADGEN_SRC):
        return
    # The same command bench/run uses.
    subprocess.run(["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-o", LOADGEN,
                    LOADGEN_SRC, "-lssl", "-lcrypto"], check=True)


def parse_kv(line):
    out = {}
    for tok in line.split():
        k, sep, v = tok.partition("=")
        if not sep:
            continue
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def proc_cpu(pid):
    try:
        return soak.cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def machine_cpu():
    """(busy, total) jiffies of the whole machine (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Attacker:
    """One loadgen storm process: its progress lines and its final line."""

    def __init__(self, name, args, workdir):
        self.name = name
        self.args = [LOADGEN] + args
        self.err_path = os.path.join(workdir, f"{name}.err")
        self.last = {}
        self.final = None
        self.lines = 0
        self.proc = None
        self.reader = None

    def start(self):
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, text=True, preexec_fn=h.die_with_parent)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines += 1
            kv = parse_kv(line)
            if line.startswith("mode="):
                self.final = kv
            else:
                self.last = kv

    def stop(self, timeout):
        """Wait for its own -d bound; SIGTERM (it prints its final line) if it
        overruns, SIGKILL as the last resort.  -> the final counts."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        return self.final

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-500:]
        except OSError:
            return ""


# ---------------------------------------------------------------- the driver

class Flood:
    def __init__(self, a):
        self.a = a
        self.failures = []
        self.notes = []
        self.wd = None
        self.funneld = None
        self.backend = None
        self.backend_reports = {}
        self.backend_tagless = 0
        self.reports_lock = threading.Lock()
        self.legit_results = []         # every stream, all phases
        self.phases = []                # (name, t_begin, t_end)
        self.rounds = []                # one dict per round
        self.samples = []               # (t, cpu_s, rss_kib, fds)
        self.samples_lock = threading.Lock()
        self.stop_mon = threading.Event()
        self.check_rss, self.no_rss_why = soak.rss_meaningful()
        self.pre = {}
        self.base_window = {}
        self.fds_start = None

    def fail(self, msg):
        if len(self.failures) < 200:
            self.failures.append(msg)

    # -- config

    def config(self):
        a = self.a
        main = {
            "max_connections": a.max_connections,
            "max_pending": a.max_pending,
            "max_pending_per_peer": a.max_pending_per_peer,
            "header_timeout": f"{a.header_timeout}s",
            "handshake_timeout": "10s",
            "idle_timeout": "60s",
            "shutdown_timeout": "5s",
            "workers": 2,
            "metrics": "unix:" + self.metrics_path,
        }
        clients = {"max_connections": a.client_max_connections, "rate": a.client_rate}
        if a.limits == "off":
            # Above what the descriptor limit lets funneld hold: no bound.
            main.update(max_pending=OFF_PENDING, max_pending_per_peer=OFF_PENDING)
            clients = None
        elif a.limits == "omit":
            for k in NEW_MAIN_KEYS:
                main.pop(k)
            clients = None
        text = h.make_config(f"{RELAY}:{self.port}", self.cert, self.key,
                             [(f"{h.TARGET}:443", self.backend_path)], allow="127.0.0.0/8, ::1/128", **main)
        if clients:
            text += "\n[clients]\n" + "".join(f"{k} = {v}\n" for k, v in clients.items())
        return text

    # -- set-up and tear-down

    def start(self):
        a = self.a
        self.nofile = raise_nofile()
        build_loadgen()
        self.wd = h.Workdir()
        self.cert, self.key = h.leaf_once(h.TARGET, "ec")
        self.backend_path = self.wd("be.sock")
        self.metrics_path = self.wd("metrics.sock")
        self.backend = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "soak.py"), "--serve-backend", self.backend_path,
             "--seed", str(a.seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=h.die_with_parent)
        line = self.backend.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise AssertionError(f"backend did not start: {line!r}")
        threading.Thread(target=self._read_backend, daemon=True).start()
        self.port = h.free_port(RELAY)
        self.funneld = h.Funneld(self.wd.path, self.config())
        check = subprocess.run([self.funneld.binary, "-t", "-c", self.funneld.config_path],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            hint = ("" if self.a.limits == "omit" else
                    "\n(a funneld without max_pending / [clients]? --limits omit leaves them out)")
            raise SystemExit(f"flood: funneld -t refused the configuration:\n{check.stderr.strip()}{hint}")
        self.funneld.start()
        self.pid = self.funneld.proc.pid
        h.wait_for(lambda: os.path.exists(self.metrics_path), 10, what="metrics socket")
        self.addr = (RELAY, self.port)
        threading.Thread(target=self._monitor, daemon=True).start()

    def _read_backend(self):
        for line in self.backend.stdout:
            rep = json.loads(line)
            with self.reports_lock:
                if rep.get("id") is None:
                    self.backend_tagless += 1
                else:
                    self.backend_reports[rep["id"]] = rep

    def _monitor(self):
        while not self.stop_mon.wait(0.25):
            t = time.monotonic()
            cpu, rss = proc_cpu(self.pid), proc_rss_kib(self.pid)
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (FileNotFoundError, ProcessLookupError):
                fds = None
            if cpu is None or rss is None:
                continue
            with self.samples_lock:
                self.samples.append((t, cpu, rss, fds))

    def stop(self):
        self.stop_mon.set()
        rc = None
        if self.funneld is not None:
            rc = self.funneld.stop()
        if self.backend is not None and self.backend.poll() is None:
            self.backend.terminate()
            try:
                self.backend.wait(10)
            except subprocess.TimeoutExpired:
                self.backend.kill()
                self.backend.wait()
        return rc

    def cleanup(self):
        if self.wd is not None:
            self.wd.cleanup()

    # -- measuring

    def window(self, t0, t1):
        """funneld's CPU (cores) and RSS (mean, peak KiB) and peak fds between t0 and t1."""
        with self.samples_lock:
            ss = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(ss) < 2:
            return {"cpu": None, "rss_mean": None, "rss_peak": None, "fds_peak": None}
        cores = (ss[-1][1] - ss[0][1]) / (ss[-1][0] - ss[0][0])
        # The busiest second, for the record.
        peak = 0.0
        j = 0
        for i in range(len(ss)):
            while j + 1 < i and ss[i][0] - ss[j + 1][0] >= 1.0:
                j += 1
            if ss[i][0] - ss[j][0] >= 1.0:
                peak = max(peak, (ss[i][1] - ss[j][1]) / (ss[i][0] - ss[j][0]))
        return {"cpu": cores, "cpu_peak": peak, "rss_mean": statistics.mean(s[2] for s in ss),
                "rss_peak": max(s[2] for s in ss), "fds_peak": max(s[3] or 0 for s in ss)}

    def metrics(self):
        try:
            return soak.scrape(self.metrics_path)
        except (OSError, AssertionError) as e:
            self.notes.append(f"metrics scrape failed: {e}")
            return {}

    def alive(self):
        return self.funneld.proc.poll() is None

    def quiet(self, what, fds_want=None):
        """Wait for funneld to be idle, then poll RSS until stable (bounded).
        -> dict: rss, stable, seconds, cpu (cores while quiet), fds."""
        a = self.a
        t0 = time.monotonic()
        try:
            h.wait_for(lambda: not self.alive() or self.metrics().get("funneld_connections_open") == 0,
                       a.quiet_timeout, what=f"{what}: funneld_connections_open to reach 0")
            if self.metrics().get("funneld_buffer_pool_bytes") is not None:
                h.wait_for(lambda: not self.alive() or self.metrics().get("funneld_buffer_pool_bytes") == 0,
                           a.quiet_timeout, what=f"{what}: funneld_buffer_pool_bytes to reach 0")
        except AssertionError as e:
            self.fail(str(e))
        if not self.alive():
            return {"rss": None, "stable": False, "seconds": 0, "cpu": None, "fds": None}
        fds = None
        if fds_want is not None:
            # A metrics scrape's socket closes a moment after the answer.
            try:
                h.wait_for(lambda: len(os.listdir(f"/proc/{self.pid}/fd")) <= fds_want, a.quiet_timeout,
                           what="fds")
            except AssertionError:
                pass
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        # RSS stable: the last STABLE_N samples (0.5 s apart) within
        # STABLE_KIB of each other; at most --rss-settle seconds.
        stable_n, stable_kib = 8, 64
        t_settle = time.monotonic()
        cpu0 = proc_cpu(self.pid)
        rs = []
        stable = False
        while time.monotonic() - t_settle < a.rss_settle and self.alive():
            rs.append(proc_rss_kib(self.pid))
            if len(rs) >= stable_n and max(rs[-stable_n:]) - min(rs[-stable_n:]) <= stable_kib:
                stable = True
                break
            time.sleep(0.5)     # sampling interval of a measurement, not a wait for an event
        t1 = time.monotonic()
        cpu1 = proc_cpu(self.pid)
        cpu = (cpu1 - cpu0) / (t1 - t_settle) if cpu0 is not None and cpu1 is not None and t1 > t_settle else None
        return {"rss": rs[-1] if rs else None, "stable": stable, "seconds": t1 - t0, "cpu": cpu, "fds": fds}

    # -- running

    def run_legit(self, seconds, id_base):
        cfg = {"host": RELAY, "port": self.port, "cafile": h.pki().ca_cert, "seed": self.a.seed,
               "seconds": seconds, "clients": self.a.legit_clients, "rate": self.a.legit_rate,
               "max_up": self.a.legit_max_up, "max_down": self.a.legit_max_down, "timeout": 30,
               "id_base": id_base}
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--legit", json.dumps(cfg)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                             preexec_fn=h.die_with_parent, env=dict(os.environ, BUILD=h.BUILD))
        state = {"done": False}

        def read():
            for line in p.stdout:
                d = json.loads(line)
                if d.get("done"):
                    state["done"] = True
                    state["cpu_s"] = d.get("cpu_s")
                else:
                    self.legit_results.append(d)
        t = threading.Thread(target=read, daemon=True)
        t.start()
        return p, t, state

    def wait_legit(self, p, t, state, seconds):
        try:
            p.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            self.fail("the legitimate clients did not finish in time")
            p.kill()
            p.wait()
        t.join(10)
        if not state["done"]:
            self.fail(f"the legitimate clients' process ended without finishing (exit {p.returncode})")

    def attackers(self, seconds, rnd):
        a = self.a
        tgt = f"{h.TARGET}:443"
        common = ["-a", f"{RELAY}:{self.port}", "-s", h.TARGET, "-d", str(seconds), "-T", "15"]
        idle_peers = ",".join(f"127.0.0.{IDLE_PEER_BASE + i}" for i in range(a.idle_peers))
        out = []
        if a.flood_conc > 0:
            out.append(Attacker("hsflood", ["-m", "flood", "-f", tgt, "-c", str(a.flood_conc), "-n", "0",
                                            "-i", FLOOD_SRC] + common, self.wd.path))
        if a.idle > 0:
            out.append(Attacker("idle", ["-m", "idle", "-n", str(a.idle), "-c", "256", "-B", idle_peers,
                                         "-R", "1000"] + common, self.wd.path))
        if a.resets > 0:
            # Paced over the attack (each costs funneld a handshake's first flight).
            out.append(Attacker("resets", ["-m", "rst", "-f", tgt, "-c", "8", "-n", str(a.resets),
                                           "-r", f"{a.resets / (0.9 * seconds):.1f}",
                                           "-i", RESET_SRC, "-D", "250"] + common, self.wd.path))
        if a.distinct > 0:
            out.append(Attacker("distinct", ["-m", "flood", "-N", "-f", NOTARGET, "-c", "64",
                                             "-n", str(a.distinct), "-i", DISTINCT_SRC[0].format(16 * rnd),
                                             "-i", DISTINCT_SRC[1].format(rnd), "-D", str((a.distinct + 1) // 2)]
                                + common, self.wd.path))
        return out

    def run(self):
        a = self.a
        t_run = time.monotonic()
        self.fds_start = len(os.listdir(f"/proc/{self.pid}/fd"))
        log(f"flood: funneld pid {self.pid}, port {self.port}, workers 2, "
            f"limits {a.limits}; RLIMIT_NOFILE {self.nofile}")

        # Baseline: the legitimate clients alone (also the warm-up).
        log(f"flood: baseline, legitimate clients alone for {a.baseline_seconds}s")
        tb0 = time.monotonic()
        p, t, st = self.run_legit(a.baseline_seconds, 0)
        self.wait_legit(p, t, st, a.baseline_seconds)
        tb1 = time.monotonic()
        self.phases.append(("baseline", tb0, tb1))
        self.base_window = self.window(tb0, tb1)
        q = self.quiet("after the baseline", self.fds_start)
        self.pre = q
        log(f"flood: baseline done; quiet RSS {q['rss']} KiB ({'stable' if q['stable'] else 'NOT stable'}),"
            f" fds {q['fds']}")

        for rnd in range(1, a.rounds + 1):
            if not self.alive():
                break
            self.one_round(rnd)
        self.duration = time.monotonic() - t_run

    def one_round(self, rnd):
        a = self.a
        R = {"round": rnd}
        m0 = self.metrics()
        lead, tail = 3.0, 5.0
        legit_seconds = lead + a.flood_seconds + tail
        log(f"flood: round {rnd}: legitimate clients for {legit_seconds:.0f}s, attack for {a.flood_seconds}s")
        p, t, st = self.run_legit(legit_seconds, rnd * 10_000_000)
        tl0 = time.monotonic()
        # The attack starts once the legitimate clients are under way
        # (their first results are in: they are streaming).
        n0 = len(self.legit_results)
        try:
            h.wait_for(lambda: len(self.legit_results) > n0 + a.legit_clients or p.poll() is not None,
                       lead + 30, what="the legitimate clients' first streams")
        except AssertionError as e:
            self.fail(str(e))
        att = self.attackers(a.flood_seconds, rnd)
        be0 = proc_cpu(self.backend.pid)
        mc0 = machine_cpu()
        tf0 = time.monotonic()
        for x in att:
            x.start()
        for x in att:
            R[x.name] = x.stop(a.flood_seconds + 30)
            if R[x.name] is None:
                self.fail(f"{x.name}: loadgen gave no result (exit {x.proc.returncode}): {x.stderr()}")
        tf1 = time.monotonic()
        be1 = proc_cpu(self.backend.pid)
        mc1 = machine_cpu()
        R["machine_busy"] = (mc1[0] - mc0[0]) / max(1, mc1[1] - mc0[1])
        with open("/proc/loadavg") as f:
            R["loadavg"] = f.read().split()[0]
        self.wait_legit(p, t, st, legit_seconds)
        tl1 = time.monotonic()
        # What the other processes on these CPUs used (cores).
        R["others_cpu"] = {x.name: (R[x.name] or {}).get("cli_cpu_s", 0) / (tf1 - tf0) for x in att}
        R["others_cpu"]["legit clients"] = (st.get("cpu_s") or 0) / (tl1 - tl0)
        if be0 is not None and be1 is not None:
            R["others_cpu"]["backend"] = (be1 - be0) / (tf1 - tf0)
        self.phases.append((f"round {rnd}: before the attack", tl0, tf0))
        self.phases.append((f"round {rnd}: attack", tf0, tf1))
        self.phases.append((f"round {rnd}: after the attack", tf1, tl1))
        R["attack_s"] = tf1 - tf0
        R["during"] = self.window(tf0, tf1)
        if not self.alive():
            self.fail(f"funneld died during round {rnd} (exit {self.funneld.proc.returncode}); "
                      f"log tail: {self.funneld.log()[-1500:]}")
            self.rounds.append(R)
            return
        R["after"] = self.quiet(f"round {rnd}", self.fds_start)
        m1 = self.metrics()
        R["metrics"] = {k: v - m0.get(k, 0) for k, v in m1.items()
                        if not k.startswith("#") and v - m0.get(k, 0) != 0 and
                        (k.endswith("_total") or "_total{" in k)}
        R["gauges"] = {k: v for k, v in m1.items() if "_total" not in k}
        self.rounds.append(R)
        aft = R["after"]
        log(f"flood: round {rnd} done: funneld {R['during']['cpu'] or 0:.2f} cores during the attack, "
            f"RSS peak {R['during']['rss_peak']} KiB, after {aft['rss']} KiB "
            f"({'stable' if aft['stable'] else 'NOT stable'} after {aft['seconds']:.1f}s), fds {aft['fds']}")

    # -- checking

    def legit_in(self, t0, t1):
        return [r for r in self.legit_results if t0 <= r["t0"] < t1]

    def check(self):
        a = self.a
        # Every legitimate stream: ok at the client, and the backend's view of
        # the bytes equal to the client's.
        def backend_done():
            with self.reports_lock:
                return all(r["id"] in self.backend_reports for r in self.legit_results
                           if r.get("status") == 101 and "connect" in r)
        try:
            h.wait_for(lambda: backend_done(), 30, what="the backend's reports of the legitimate streams")
        except AssertionError as e:
            self.fail(str(e))
        bad = 0
        for r in sorted(self.legit_results, key=lambda r: r["t0"]):
            problem = r.get("error")
            if problem is None:
                with self.reports_lock:
                    b = self.backend_reports.get(r["id"])
                if b is None:
                    problem = "no backend report"
                elif b["end"] != "eof" or b["send_err"]:
                    problem = f"backend end={b['end']} send_err={b['send_err']}"
                elif b["recv"] != r["up"] or b["recv_sha"] != r["sent_sha"]:
                    problem = (f"client->backend bytes differ: sent {r['sent']} sha {r['sent_sha'][:12]}, "
                               f"backend got {b['recv']} sha {(b['recv_sha'] or '')[:12]}")
                elif b["sent"] != r["down"] or b["sent_sha"] != r["recv_sha"]:
                    problem = "backend->client bytes differ"
            if problem:
                r["error"] = problem
                bad += 1
                if bad <= 20:
                    self.fail(f"legit stream {r['id']} (client {r.get('client')}, src {r['src']}, "
                              f"at +{r['t0'] - self.phases[0][1]:.1f}s): {problem}")
        if bad > 20:
            self.fail(f"... {bad} legitimate streams failed in all")
        if not self.legit_results:
            self.fail("no legitimate stream ran")

        if not self.alive():
            self.fail(f"funneld is not running (exit {self.funneld.proc.returncode})")
        pre = self.pre.get("rss")
        for R in self.rounds:
            aft = R.get("after")
            if aft is None:
                continue
            if aft["fds"] is not None and aft["fds"] > self.fds_start:
                self.fail(f"round {R['round']}: funneld has {aft['fds']} descriptors once quiet, "
                          f"{self.fds_start} before the flood")
            if aft["cpu"] is not None and aft["cpu"] > a.quiet_cpu:
                self.fail(f"round {R['round']}: funneld used {aft['cpu']:.2f} cores while quiet "
                          f"(bound {a.quiet_cpu})")
            if self.check_rss and pre and aft["rss"]:
                bound = a.rss_factor * pre + a.rss_slack_mib * KIB
                R["rss_bound"] = bound
                if aft["rss"] > bound:
                    self.fail(f"round {R['round']}: funneld's RSS {aft['rss']} KiB once quiet, above "
                              f"{a.rss_factor} x {pre} KiB (pre-flood) + {a.rss_slack_mib} MiB = {bound:.0f} KiB")

    # -- reporting

    def legit_row(self, rs):
        n = len(rs)
        ok = [r for r in rs if not r.get("error")]
        ct = [r["connect"] for r in rs if "connect" in r]
        return {"n": n, "ok": len(ok), "p50": percentile(ct, 0.50), "p99": percentile(ct, 0.99),
                "max": max(ct) if ct else None}

    def summary(self):
        a = self.a
        L = []
        L.append("")
        L.append(f"flood: {a.rounds} round(s) of {a.flood_seconds}s in {getattr(self, 'duration', 0):.0f}s; "
                 f"funneld workers 2, max_connections {a.max_connections}, "
                 + {"on": f"limits on (max_pending {a.max_pending}, max_pending_per_peer "
                          f"{a.max_pending_per_peer}; [clients] max_connections {a.client_max_connections}, "
                          f"rate {a.client_rate})",
                    "off": f"limits OFF (max_pending and max_pending_per_peer {OFF_PENDING}, no [clients])",
                    "omit": "limits OMITTED from the config (none before issue 13; else funneld's defaults)",
                    }[a.limits]
                 + f"; {os.cpu_count()} CPUs shared by funneld, the clients and the backend")
        L.append(f"  legitimate: {a.legit_clients} clients x {a.legit_rate}/s, requests up to "
                 f"{a.legit_max_up} B, responses up to {a.legit_max_down} B, SHA-256 checked at both ends")
        for R in self.rounds:
            L.append(f"  round {R['round']} attackers (what each saw):")
            for name in ("hsflood", "idle", "resets", "distinct"):
                f = R.get(name)
                if not f:
                    continue
                keys = [k for k in f if (k.startswith("st_") or k in (
                    "hs_ok", "got101", "rst_sent", "hs_fail", "reset", "eof", "timeout", "connect_err",
                    "unfinished", "open_peak")) and f[k]]
                L.append(f"    {name:9s} {f.get('started', 0):>8} connections, {f.get('rate', 0):8.0f}/s: "
                         + ", ".join(f"{k}={f[k]}" for k in keys)
                         + (f" (first connect error {f['first_connect_err']})"
                            if f.get("first_connect_err", "-") != "-" else ""))
            d = R.get("during") or {}
            L.append(f"    funneld's descriptors: {d.get('fds_peak')} at the peak of the attack, "
                     f"{(R.get('after') or {}).get('fds')} once quiet, {self.fds_start} before")
            if R.get("others_cpu"):
                L.append(f"    CPU during the attack: the machine {R['machine_busy'] * 100:.0f}% busy "
                         f"(load average {R['loadavg']}); funneld {R['during']['cpu'] or 0:.2f} cores; "
                         "the other processes of this run: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in R["others_cpu"].items()))
            m = R.get("metrics", {})
            refusals = {k: int(v) for k, v in m.items() if "refusal" in k}
            results = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("funneld_connections_total{")}
            hsf = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("funneld_handshake_failures_total{")}
            L.append("    funneld_connections_total deltas: "
                     + (", ".join(f"{k}={v}" for k, v in sorted(results.items())) or "-"))
            L.append("    funneld_handshake_failures_total deltas: "
                     + (", ".join(f"{k}={v}" for k, v in sorted(hsf.items())) or "-"))
            L.append("    refusals: " + (", ".join(f"{k}={v}" for k, v in sorted(refusals.items()))
                                         or "(no funneld_*refusal* counters)"))
            other = {k: int(v) for k, v in m.items() if k not in refusals and
                     not k.startswith(("funneld_connections_total{", "funneld_handshake_failures_total{"))}
            if other:
                L.append("    other counters: " + ", ".join(f"{k}={v}" for k, v in sorted(other.items())))
            gauges = {k: v for k, v in R.get("gauges", {}).items()
                      if any(w in k for w in ("client", "evict", "table", "pending"))}
            if gauges:
                L.append("    client table: " + ", ".join(f"{k}={v:g}" for k, v in sorted(gauges.items())))

        if not self.phases:
            L.append("flood: FAIL (no phase ran)" if self.failures else "flood: nothing ran")
            L += ["  " + f for f in self.failures[:60]]
            return "\n".join(L)
        # The table.
        L.append("")
        L.append("| phase | legit ok / streams | connect p50 / p99 / max (ms) | funneld CPU (cores) | funneld RSS (MiB) |")
        L.append("|---|---|---|---|---|")

        def mib(k):
            return "-" if k is None else f"{k / KIB:.1f}"
        b0, b1 = self.phases[0][1], self.phases[0][2]
        lr = self.legit_row(self.legit_in(b0, b1))
        bw = self.base_window
        L.append(f"| baseline (legit only) | {lr['ok']} / {lr['n']} | {ms(lr['p50'])} / {ms(lr['p99'])} / "
                 f"{ms(lr['max'])} | {bw.get('cpu') or 0:.2f} | {mib(bw.get('rss_mean'))} mean, "
                 f"{mib(self.pre.get('rss'))} quiet after |")
        for R in self.rounds:
            rnd = R["round"]
            ph = {name: (t0, t1) for name, t0, t1 in self.phases}
            t0, t1 = ph[f"round {rnd}: attack"]
            lr = self.legit_row(self.legit_in(t0, t1))
            d = R["during"]
            L.append(f"| round {rnd}: during the attack ({R['attack_s']:.0f}s) | {lr['ok']} / {lr['n']} | "
                     f"{ms(lr['p50'])} / {ms(lr['p99'])} / {ms(lr['max'])} | {d['cpu'] or 0:.2f} "
                     f"(busiest second {d.get('cpu_peak') or 0:.2f}) | {mib(d['rss_mean'])} mean, "
                     f"{mib(d['rss_peak'])} peak |")
            aft = R.get("after") or {}
            ta, tb = ph[f"round {rnd}: after the attack"]
            lr = self.legit_row(self.legit_in(ta, tb))
            bound = R.get("rss_bound")
            L.append(f"| round {rnd}: after, then quiet | {lr['ok']} / {lr['n']} | {ms(lr['p50'])} / "
                     f"{ms(lr['p99'])} / {ms(lr['max'])} | {aft.get('cpu') or 0:.3f} quiet | "
                     f"{mib(aft.get('rss'))} quiet "
                     f"({'stable' if aft.get('stable') else 'not stable'} at {aft.get('seconds', 0):.0f}s"
                     + (f"; bound {mib(bound)}" if bound else "") + ") |")
        allr = self.legit_row(self.legit_results)
        L.append(f"| all | {allr['ok']} / {allr['n']} | {ms(allr['p50'])} / {ms(allr['p99'])} / "
                 f"{ms(allr['max'])} | | |")
        if not self.check_rss:
            L.append(f"(RSS not checked: {self.no_rss_why})")
        for n in self.notes[:10]:
            L.append("note: " + n)
        L.append("")
        if self.failures:
            L.append(f"flood: FAIL, {len(self.failures)} problems:")
            L += ["  " + f for f in self.failures[:60]]
        else:
            L.append("flood: PASS")
        return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flood-seconds", type=float, default=45, help="length of each attack (default 45)")
    ap.add_argument("--rounds", type=int, default=2, help="attack rounds (default 2: memory must not ratchet)")
    ap.add_argument("--baseline-seconds", type=float, default=10)
    ap.add_argument("--legit-clients", type=int, default=8)
    ap.add_argument("--legit-rate", type=float, default=4, help="streams/s per legitimate client")
    ap.add_argument("--legit-max-up", type=int, default=16 * KIB)
    ap.add_argument("--legit-max-down", type=int, default=128 * KIB)
    ap.add_argument("--flood-conc", type=int, default=64, help="handshake flood: connections in flight")
    ap.add_argument("--idle", type=int, default=5000, help="idle connections held")
    ap.add_argument("--idle-peers", type=int, default=8, help="loopback addresses they come from")
    ap.add_argument("--resets", type=int, default=4000, help="resets after the ClientHello, at most")
    ap.add_argument("--distinct", type=int, default=100000, help="connections from distinct sources")
    ap.add_argument("--limits", choices=("on", "off", "omit"), default="on",
                    help="on: max_pending, max_pending_per_peer and [clients] as set below (default); "
                    f"off: max_pending(_per_peer) {OFF_PENDING} and no [clients]; omit: none of those "
                    "keys (a funneld that predates them, or its defaults)")
    ap.add_argument("--max-connections", type=int, default=4096)
    ap.add_argument("--max-pending", type=int, default=6144)
    ap.add_argument("--max-pending-per-peer", type=int, default=512)
    ap.add_argument("--header-timeout", type=int, default=20)
    ap.add_argument("--client-max-connections", type=int, default=16)
    ap.add_argument("--client-rate", default="20/s")
    ap.add_argument("--rss-factor", type=float, default=2.0)
    ap.add_argument("--rss-slack-mib", type=float, default=8.0)
    ap.add_argument("--rss-settle", type=float, default=60, help="bound on waiting for RSS to be stable")
    ap.add_argument("--quiet-timeout", type=float, default=60)
    ap.add_argument("--quiet-cpu", type=float, default=0.2, help="most CPU (cores) funneld may use when quiet")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (config, logs)")
    ap.add_argument("--legit", metavar="JSON", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.legit:
        legit_main(json.loads(a.legit))
        return
    if not os.path.exists(h.FUNNELD):
        sys.exit(f"{h.FUNNELD}: not built (make all)")
    f = Flood(a)
    try:
        f.start()
        f.run()
        f.check()
    finally:
        rc = f.stop()
        if f.funneld is not None and rc != 0:
            f.fail(f"funneld exited {rc} at SIGTERM (expected 0); log tail: {f.funneld.log()[-1500:]}")
        if a.keep:
            log(f"flood: kept {f.wd.path if f.wd else None}")
        else:
            f.cleanup()
    print(f.summary())
    sys.exit(1 if f.failures else 0)


if __name__ == "__main__":
    main()
