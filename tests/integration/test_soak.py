"""Integration: a short soak (tests/soak.py's driver with a small
configuration): 600 connections of every kind — streams of 0 B to 4 MiB
each way with either side's EOF first, client resets, backend resets,
handshake failures, 404s, slow heads completed or abandoned (408) — then
SHA-256 of every completed stream at both ends, one log record per
connection with the right result, the metrics counters equal to the traffic
sent, funneld's fds back to the start and its RSS within 10% of the
post-warm-up level.  `make soak` runs the long version."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402
import soak  # noqa: E402  (tests/soak.py)

MIB = 1 << 20
# Under FUNNELD_WRAPPER (valgrind) funneld is many times slower: a smaller
# run.  (soak.py leaves the RSS check out by itself there and under ASan.)
WRAPPED = getattr(h, "WRAPPED", bool(os.environ.get("FUNNELD_WRAPPER", "").strip()))


class ShortSoak(unittest.TestCase):

    def test_short_soak(self):
        n, max_size = (120, 256 * 1024) if WRAPPED else (600, 4 * MIB)
        s = soak.run_soak(connections=n, concurrency=16, max_size=max_size, seconds=50 * (6 if WRAPPED else 1),
                          seed=7, workers=2, log=lambda *a: None)
        summary = s.summary()
        print("\n" + summary)
        self.assertEqual(s.failures, [], summary)
        # The run was not cut short by the time bound, and every kind ran.
        self.assertEqual(s.stats["made"], n, summary)
        for kind, count in s.stats["by_kind"].items():
            self.assertGreater(count, 0, f"no {kind} connection in the mix")
        self.assertGreaterEqual(s.stats["verified_streams"], n // 2, summary)


if __name__ == "__main__":
    unittest.main()
