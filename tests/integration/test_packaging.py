"""Packaging: systemd units, sysusers.d/tmpfiles.d snippets, man pages, `make install`.

These tests check the files that `make install` ships and check them with the
system's own tools: systemd-analyze (verify, security), systemd-sysusers,
systemd-tmpfiles, man-db and, if it is installed, mandoc.
They need the daemon to be built ($BUILD/funneld, as `make check` does first):
systemd-analyze verify checks that ExecStart= names an executable, and
`make install` copies it.
"""
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
BINARY = os.path.join(BUILD, "funneld")
SERVICE = os.path.join(ROOT, "systemd", "funneld.service")
SOCKET = os.path.join(ROOT, "systemd", "funneld.socket")
SYSUSERS = os.path.join(ROOT, "conf", "funneld.sysusers")
TMPFILES = os.path.join(ROOT, "conf", "funneld.tmpfiles")
MAN8 = os.path.join(ROOT, "man", "funneld.8")
MAN5 = os.path.join(ROOT, "man", "funneld.conf.5")

MAX_EXPOSURE = 2.0          # `systemd-analyze security` scale: 0.0 (best) .. 10.0
TIMEOUT = 120

# Defaults from DESIGN.md that the unit has to respect.
DEFAULT_SHUTDOWN_TIMEOUT = 30
DEFAULT_MAX_CONNECTIONS = 10000

# Every key of DESIGN.md section 2, by section.
CONF_KEYS = {
    "funneld": ["listen", "allow", "max_connections", "header_timeout", "handshake_timeout",
                "idle_timeout", "shutdown_timeout", "workers", "log_level", "metrics", "user"],
    "tls": ["cert", "key", "alpn", "session_tickets", "ticket_rotation", "ciphers", "curves"],
    "backend": ["socket", "proxy_protocol", "cert", "key", "alpn"],
}
JOURNAL_FIELDS = ["FUNNEL_CONN", "FUNNEL_PEER", "FUNNEL_SRC", "FUNNEL_TARGET", "FUNNEL_BACKEND",
                  "FUNNEL_SNI", "FUNNEL_ALPN", "FUNNEL_TLS_VERSION", "FUNNEL_CIPHER",
                  "FUNNEL_BYTES_IN", "FUNNEL_BYTES_OUT", "FUNNEL_DURATION_MS", "FUNNEL_RESULT"]

# Variables that would change where `make install` puts things, or that an
# enclosing `make check` passes down (MAKEFLAGS may carry SANITIZE=..., -j).
MAKE_ENV_DROP = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX",
                 "SBINDIR", "MANDIR", "SYSCONFDIR", "UNITDIR", "SYSUSERSDIR", "TMPFILESDIR",
                 "DOCDIR", "SANITIZE"]


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", TIMEOUT)
    return subprocess.run(cmd, **kw)


def need(tool):
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} not found: scripts/deps installs it")
    return path


def need_binary(tc):
    tc.assertTrue(os.path.isfile(BINARY) and os.access(BINARY, os.X_OK),
                  f"{BINARY} is not an executable file: build the daemon first (make)")


def parse_unit(path):
    """{section: {key: [values in order]}}.  Comments and continuation lines are handled."""
    units = {}
    section = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.startswith("[") and line.endswith("]"):
            section = units.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise AssertionError(f"{path}: cannot parse line: {line!r}")
        k, v = line.split("=", 1)
        section.setdefault(k.strip(), []).append(v.strip())
    return units


def last(sec, key):
    """The effective value of a single-valued setting (the last assignment), or None."""
    v = sec.get(key)
    return v[-1] if v else None


def seconds(text):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m|h)?", text)
    if not m:
        raise AssertionError(f"unexpected time span {text!r}")
    return int(m.group(1)) * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]


def parse_tmpfiles(path):
    """{path: (type, mode, user, group)}"""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            out[fields[1]] = (fields[0], fields[2], fields[3], fields[4])
    return out


def render_man(page):
    """The page as plain text, from man-db, without overstriking."""
    # No justification or hyphenation: groff 1.23 (Debian 13) pads justified lines
    # with extra spaces, and either would split the phrases looked for.
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="", MANOPT="--nj --nh")
    p = run([need("man"), "-l", page], env=env)
    if p.returncode != 0:
        raise AssertionError(f"man -l {page} failed ({p.returncode}): {p.stderr}")
    return re.sub(r".\x08", "", p.stdout)


def make_unit_dir(tmp):
    """The units as `make install` writes them, but with ExecStart= on the built binary."""
    unitdir = os.path.join(tmp, "units")
    os.makedirs(unitdir)
    with open(SERVICE, encoding="utf-8") as f:
        text = f.read()
    if "@SBINDIR@" not in text:
        raise AssertionError("funneld.service has no @SBINDIR@ for `make install` to replace")
    with open(os.path.join(unitdir, "funneld.service"), "w", encoding="utf-8") as f:
        f.write(text.replace("@SBINDIR@", BUILD))
    shutil.copy(SOCKET, os.path.join(unitdir, "funneld.socket"))
    return unitdir


class TestUnits(unittest.TestCase):
    def test_verify_units(self):
        """systemd-analyze verify: no diagnostics for the service and socket units."""
        tool = need("systemd-analyze")
        need_binary(self)
        with tempfile.TemporaryDirectory() as tmp:
            unitdir = make_unit_dir(tmp)
            # Documentation=man:... is checked with man(1): point MANPATH at our pages.
            mandir = os.path.join(tmp, "man")
            for page, sec in ((MAN8, "man8"), (MAN5, "man5")):
                os.makedirs(os.path.join(mandir, sec))
                shutil.copy(page, os.path.join(mandir, sec))
            env = dict(os.environ, MANPATH=mandir, SYSTEMD_LOG_COLOR="0")
            p = run([tool, "verify", os.path.join(unitdir, "funneld.service"),
                     os.path.join(unitdir, "funneld.socket")], env=env, cwd=tmp)
            out = (p.stdout + p.stderr).strip()
            # verify exits 0 on many warnings (e.g. an unknown setting), so both matter.
            self.assertEqual(out, "", f"systemd-analyze verify said:\n{out}")
            self.assertEqual(p.returncode, 0)

    def test_security_exposure(self):
        """systemd-analyze security --offline rates the service at most MAX_EXPOSURE."""
        tool = need("systemd-analyze")
        with tempfile.TemporaryDirectory() as tmp:
            unitdir = make_unit_dir(tmp)
            p = run([tool, "security", "--offline=true", "--no-pager",
                     f"--threshold={int(MAX_EXPOSURE * 10)}",
                     os.path.join(unitdir, "funneld.service")],
                    env=dict(os.environ, LC_ALL="C.UTF-8", SYSTEMD_COLORS="0"))
            m = re.search(r"Overall exposure level for funneld\.service: (\d+(?:\.\d+)?)", p.stdout)
            self.assertIsNotNone(m, f"no overall exposure in:\n{p.stdout}\n{p.stderr}")
            score = float(m.group(1))
            print(f"\n    systemd-analyze security: funneld.service exposure {score}", flush=True)
            bad = [ln.strip() for ln in p.stdout.splitlines() if ln.lstrip().startswith("✗")]
            self.assertLessEqual(score, MAX_EXPOSURE,
                                 "exposure too high; failing checks:\n" + "\n".join(bad))
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_service_contract(self):
        """The settings DESIGN.md section 4 and funneld's defaults depend on."""
        s = parse_unit(SERVICE)
        self.assertIn("Service", s)
        svc = s["Service"]
        self.assertEqual(last(svc, "Type"), "notify")
        self.assertEqual(last(svc, "NotifyAccess"), "main")
        self.assertEqual(svc.get("ExecStart"), ["@SBINDIR@/funneld -c /etc/funneld/funneld.conf"])
        self.assertEqual(svc.get("ExecReload"), ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(last(svc, "Restart"), "on-failure")
        self.assertGreater(seconds(last(svc, "WatchdogSec") or "0"), 0)
        self.assertEqual(last(svc, "User"), "funneld")
        self.assertEqual(last(svc, "Group"), "funneld")
        # funneld drains for shutdown_timeout before it exits: systemd must wait longer.
        stop = last(svc, "TimeoutStopSec")
        if stop is not None:
            self.assertGreater(seconds(stop), DEFAULT_SHUTDOWN_TIMEOUT)
        # Two descriptors per connection.
        self.assertGreaterEqual(int(last(svc, "LimitNOFILE") or 0), 2 * DEFAULT_MAX_CONNECTIONS + 64)
        creds = {v.split(":", 1)[0] for v in svc.get("LoadCredential", []) if v}
        self.assertEqual(creds, {"cert", "key"})
        for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                          ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                          ("CapabilityBoundingSet", ""), ("AmbientCapabilities", ""),
                          ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
                          ("MemoryDenyWriteExecute", "yes"), ("SystemCallArchitectures", "native"),
                          ("UMask", "0077"), ("RuntimeDirectory", "funneld"),
                          ("ConfigurationDirectory", "funneld")]:
            self.assertEqual(last(svc, key), want, key)
        # The relay must be able to reach funneld; user namespaces would break
        # SupplementaryGroups= for backend sockets and CAP_NET_BIND_SERVICE.
        self.assertNotIn("IPAddressDeny", svc)
        self.assertNotIn("PrivateNetwork", svc)
        self.assertNotIn(last(svc, "PrivateUsers"), ("yes", "true", "on", "1"))
        # systemd and tmpfiles.d must agree on the directories' modes, or systemd
        # changes /run/funneld at every start and warns about /etc/funneld.
        tmpf = parse_tmpfiles(TMPFILES)
        self.assertEqual(last(svc, "RuntimeDirectoryMode"), tmpf["/run/funneld"][1])
        self.assertEqual(last(svc, "ConfigurationDirectoryMode"), tmpf["/etc/funneld"][1])
        self.assertIn("multi-user.target", " ".join(s.get("Install", {}).get("WantedBy", [])))

    def test_socket_contract(self):
        s = parse_unit(SOCKET)
        sock = s.get("Socket", {})
        listens = [v for v in sock.get("ListenStream", []) if v]
        self.assertTrue(listens, "no ListenStream=")
        self.assertEqual(last(sock, "FileDescriptorName"), "ingress")
        self.assertEqual(last(sock, "Service"), "funneld.service")
        self.assertIn(last(sock, "Accept"), (None, "no", "false"), "funneld accepts by itself")
        self.assertIn("sockets.target", " ".join(s.get("Install", {}).get("WantedBy", [])))


class TestUsersAndDirectories(unittest.TestCase):
    def test_sysusers_and_tmpfiles(self):
        """In a scratch root: sysusers makes the user, tmpfiles makes the directories."""
        sysusers, tmpfiles = need("systemd-sysusers"), need("systemd-tmpfiles")
        if os.geteuid() != 0:
            self.skipTest("systemd-tmpfiles needs root to chown")
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "etc"))
            p = run([sysusers, f"--root={root}", SYSUSERS])
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(root, "etc", "passwd"), encoding="utf-8") as f:
                users = {ln.split(":")[0]: ln.strip().split(":") for ln in f if ln.strip()}
            with open(os.path.join(root, "etc", "group"), encoding="utf-8") as f:
                groups = {ln.split(":")[0]: ln.strip().split(":") for ln in f if ln.strip()}
            self.assertIn("funneld", users)
            self.assertIn("funneld", groups)
            uid, gid = int(users["funneld"][2]), int(groups["funneld"][2])
            self.assertNotEqual(uid, 0)
            self.assertLess(uid, 1000, "a system user")
            self.assertTrue(users["funneld"][6].endswith("nologin"), users["funneld"])
            # A configuration installed root:root 0600 gets readable by the group.
            conf = os.path.join(root, "etc", "funneld", "funneld.conf")
            os.makedirs(os.path.dirname(conf))
            with open(conf, "w", encoding="utf-8") as f:
                f.write("[funneld]\n")
            os.chmod(conf, 0o600)
            p = run([tmpfiles, "--create", f"--root={root}", TMPFILES])
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            for path, mode, owner, group in [("run/funneld", 0o750, uid, gid),
                                             ("etc/funneld", 0o750, 0, gid),
                                             ("etc/funneld/funneld.conf", 0o640, 0, gid)]:
                st = os.stat(os.path.join(root, path))
                self.assertEqual(
                    (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (mode, owner, group),
                    f"/{path}: mode {stat.S_IMODE(st.st_mode):o} owner {st.st_uid}:{st.st_gid}")


class TestManPages(unittest.TestCase):
    def test_man_warnings(self):
        """man --warnings -l: nothing on stderr for either page."""
        tool = need("man")
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
        for page in (MAN8, MAN5):
            with self.subTest(page=os.path.basename(page)):
                p = run([tool, "--warnings", "-l", page], env=env)
                self.assertEqual(p.stderr, "", f"{page}:\n{p.stderr}")
                self.assertEqual(p.returncode, 0)
                self.assertGreater(len(p.stdout), 1000, "page renders to almost nothing")

    def test_mandoc_lint(self):
        """mandoc -T lint -W warning: clean.  (Style notes are left out: they include
        'referenced manual not found' for funneld(8) <-> funneld.conf(5) until installed.)"""
        tool = shutil.which("mandoc")
        if tool is None:
            self.skipTest("mandoc not installed")
        for page in (MAN8, MAN5):
            with self.subTest(page=os.path.basename(page)):
                p = run([tool, "-T", "lint", "-W", "warning", page])
                out = (p.stdout + p.stderr).strip()
                self.assertEqual(out, "", out)
                self.assertEqual(p.returncode, 0)

    def test_funneld_8_content(self):
        text = render_man(MAN8)
        for word in ["-c file", "-t", "-V", "-h", "SIGHUP", "SIGTERM", "SIGINT",
                     "configuration OK", "LISTEN_FDS", "EXIT STATUS", "SEE ALSO", "funneld.conf(5)"]:
            self.assertIn(word, text)
        for field in JOURNAL_FIELDS:
            self.assertRegex(text, rf"(?m)^\s+{field}\s", f"journald field {field} not described")
        for status in ["431", "400", "408", "403", "404", "405", "503", "502"]:
            self.assertRegex(text, rf"(?m)^\s+\S.*\s{status}\s*$", f"status {status} not in the table")

    def test_funneld_conf_5_content(self):
        text = render_man(MAN5)
        for section, keys in CONF_KEYS.items():
            for key in keys:
                self.assertRegex(text, rf"(?m)^\s+(\S.*\s)?{key} = ",
                                 f"[{section}] {key} not described")
        for word in ["${CREDENTIALS_DIRECTORY}", "[backend HOST:PORT]", "[backend *:PORT]",
                     "100.64.0.0/10, fd7a:115c:a1e0::/48", "10000", "h2, http/1.1", "x25519, secp256r1",
                     "ECDHE-RSA-AES256-GCM-SHA384", "EXAMPLES", "funneld(8)"]:
            # groff 1.23 (Debian 13) justifies with runs of blanks.
            self.assertIn(word, re.sub(r"\s+", " ", text))


class TestInstall(unittest.TestCase):
    EXPECTED = {
        "usr/sbin/funneld": 0o755,
        "usr/share/man/man8/funneld.8": 0o644,
        "usr/share/man/man5/funneld.conf.5": 0o644,
        "usr/lib/systemd/system/funneld.service": None,     # written by sed: mode from umask
        "usr/lib/systemd/system/funneld.socket": 0o644,
        "usr/lib/sysusers.d/funneld.conf": 0o644,
        "usr/lib/tmpfiles.d/funneld.conf": 0o644,
        "usr/share/doc/funneld/funneld.conf.example": 0o644,
        "etc/funneld/funneld.conf": 0o640,
    }
    COPIES = {
        "usr/share/man/man8/funneld.8": MAN8,
        "usr/share/man/man5/funneld.conf.5": MAN5,
        "usr/lib/systemd/system/funneld.socket": SOCKET,
        "usr/lib/sysusers.d/funneld.conf": SYSUSERS,
        "usr/lib/tmpfiles.d/funneld.conf": TMPFILES,
        "usr/share/doc/funneld/funneld.conf.example": os.path.join(ROOT, "funneld.conf.example"),
        "etc/funneld/funneld.conf": os.path.join(ROOT, "funneld.conf.example"),
    }

    def make_install(self, dest):
        env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}
        # -o: never rebuild the daemon here (`make check` has built it, and a
        # rebuild would race with other work on the tree): this tests install.
        return run([need("make"), "-o", BINARY, "install", f"DESTDIR={dest}", "PREFIX=/usr",
                    f"BUILD={BUILD}"], cwd=ROOT, env=env, timeout=300)

    def test_make_install(self):
        need_binary(self)
        with tempfile.TemporaryDirectory() as dest:
            p = self.make_install(dest)
            self.assertEqual(p.returncode, 0, f"make install failed:\n{p.stdout}\n{p.stderr}")
            tree = sorted(os.path.relpath(os.path.join(d, f), dest)
                          for d, _, files in os.walk(dest) for f in files)
            print("\n    installed: " + "\n    installed: ".join(tree), file=sys.stdout, flush=True)
            for rel, mode in self.EXPECTED.items():
                path = os.path.join(dest, rel)
                self.assertTrue(os.path.isfile(path), f"{rel} not installed")
                if mode is not None:
                    self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode, f"mode of {rel}")
            for rel, src in self.COPIES.items():
                with open(os.path.join(dest, rel), "rb") as a, open(src, "rb") as b:
                    self.assertEqual(a.read(), b.read(), f"{rel} differs from {src}")
            with open(os.path.join(dest, "usr/lib/systemd/system/funneld.service"), encoding="utf-8") as f:
                unit = f.read()
            self.assertNotRegex(unit, r"@[A-Z_]+@", "placeholder left in the unit")
            self.assertIn("\nExecStart=/usr/sbin/funneld -c /etc/funneld/funneld.conf\n", unit)
            with open(SERVICE, encoding="utf-8") as f:
                self.assertEqual(unit, f.read().replace("@SBINDIR@", "/usr/sbin"))
            # The installed unit keeps its rating.
            p = run([need("systemd-analyze"), "security", "--offline=true", f"--root={dest}",
                     f"--threshold={int(MAX_EXPOSURE * 10)}", "funneld.service"],
                    env=dict(os.environ, LC_ALL="C.UTF-8", SYSTEMD_COLORS="0"))
            self.assertRegex(p.stdout, r"Overall exposure level for funneld\.service: \d")
            self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr)

            # A second install keeps the operator's configuration.
            conf = os.path.join(dest, "etc/funneld/funneld.conf")
            with open(conf, "w", encoding="utf-8") as f:
                f.write("; edited by the operator\n")
            p = self.make_install(dest)
            self.assertEqual(p.returncode, 0, f"second make install failed:\n{p.stdout}\n{p.stderr}")
            with open(conf, encoding="utf-8") as f:
                self.assertEqual(f.read(), "; edited by the operator\n",
                                 "make install overwrote /etc/funneld/funneld.conf")


if __name__ == "__main__":
    unittest.main()
