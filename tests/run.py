#!/usr/bin/env python3
"""Run every test suite of funneld and print one summed count as the last line.

Suites: cmocka unit tests (TAP output), fuzz-corpus replays, and the Python
integration tests in tests/integration (unittest).  The last line is
"N passed, N failed, N skipped"; the exit status is 1 when anything failed.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def add(self, name, outcome, detail=""):
        if outcome == "pass":
            self.passed += 1
        elif outcome == "skip":
            self.skipped += 1
            print(f"  SKIP {name}: {detail}".rstrip())
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"  FAIL {name}")
            if detail:
                print("    " + detail.rstrip().replace("\n", "\n    "))


def run_unit(t):
    bins = sorted(glob.glob(os.path.join(BUILD, "tests/unit/test_*")))
    if not bins:
        t.add("unit: no cmocka binaries built", "fail")
    for b in bins:
        name = os.path.basename(b)
        env = dict(os.environ, CMOCKA_MESSAGE_OUTPUT="TAP")
        p = subprocess.run([b], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        seen = 0
        for line in p.stdout.splitlines():
            m = re.match(r"^(not ok|ok) \d+ - (.*?)(\s+# SKIP.*)?$", line)
            if not m:
                continue
            seen += 1
            tname = f"{name}.{m.group(2)}"
            if m.group(3):
                t.add(tname, "skip", m.group(3))
            elif m.group(1) == "ok":
                t.add(tname, "pass")
            else:
                t.add(tname, "fail", p.stdout[-2000:] + p.stderr[-2000:])
        if seen == 0 or (p.returncode != 0 and not t.failures):
            t.add(f"{name} (exit {p.returncode})", "fail", p.stdout[-2000:] + p.stderr[-2000:])
        print(f"unit {name}: {seen} tests")


def run_fuzz_replay(t):
    bins = sorted(glob.glob(os.path.join(BUILD, "tests/fuzz/fuzz_*-replay")))
    for b in bins:
        target = os.path.basename(b)[: -len("-replay")]
        corpus = os.path.join(ROOT, "tests/fuzz/corpus", target)
        files = sorted(glob.glob(os.path.join(corpus, "*")))
        if not files:
            t.add(f"fuzz-replay {target}", "fail", f"empty corpus {corpus}")
            continue
        p = subprocess.run([b] + files, capture_output=True, text=True, timeout=600, cwd=ROOT)
        t.add(f"fuzz-replay {target} ({len(files)} inputs)", "pass" if p.returncode == 0 else "fail",
              p.stderr[-3000:])
        print(f"fuzz-replay {target}: {len(files)} inputs, exit {p.returncode}")


class _Result(unittest.TextTestResult):
    pass


def run_integration(t, pattern):
    sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
    loader = unittest.TestLoader()
    suite = loader.discover(os.path.join(ROOT, "tests/integration"), pattern=pattern,
                            top_level_dir=os.path.join(ROOT, "tests/integration"))
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=_Result)
    start = time.monotonic()
    r = runner.run(suite)
    bad = {id(x[0]) for x in r.failures + r.errors + r.unexpectedSuccesses}
    for test, err in r.failures + r.errors:
        t.add(test.id(), "fail", err[-3000:])
    for test, why in r.skipped:
        t.add(test.id(), "skip", why)
    # setUpClass errors are reported against a holder, not a test that ran.
    ran_bad = sum(1 for test, _ in r.failures + r.errors if isinstance(test, unittest.TestCase))
    t.passed += max(0, r.testsRun - ran_bad - len(r.skipped))
    print(f"integration: {r.testsRun} tests in {time.monotonic() - start:.1f}s")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["unit", "fuzz", "integration"])
    ap.add_argument("--pattern", default="test_*.py", help="integration test files to run")
    a = ap.parse_args()
    t = Tally()
    if a.only in (None, "unit"):
        run_unit(t)
    if a.only in (None, "fuzz"):
        run_fuzz_replay(t)
    if a.only in (None, "integration"):
        run_integration(t, a.pattern)
    if t.failures:
        print("failed: " + ", ".join(t.failures))
    print(f"{t.passed} passed, {t.failed} failed, {t.skipped} skipped")
    sys.exit(1 if t.failed else 0)


if __name__ == "__main__":
    main()
