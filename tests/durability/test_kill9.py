"""kill -9 at random moments under a steady write load, then recovery.

The child runs the workload without end; after a random delay (seeded,
50-400 ms after the store is open) it and everything it forked get SIGKILL.
The seed is printed and named in every failure: rerun one case with
`INMEM_KILL_SEED=<seed>`. Invariants as in the crash matrix: strict keeps
every acknowledged op, buffered a prefix of them, never a hole or half a
transaction, and the recovered store takes writes and recovers again.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from . import harness

pytestmark = [pytest.mark.slow]

_BASE = int(os.environ.get("INMEM_KILL_SEED", "20240611"))
SEEDS = [_BASE + k for k in range(3)]


def _kill_at_random(tmp_path, mode: str, seed: int, threads: int = 1):
    rng = random.Random(seed)
    delay_s = rng.uniform(0.05, 0.4)
    print(f"kill -9 seed={seed} mode={mode} threads={threads} delay={delay_s * 1000:.0f} ms")
    data, logs = tmp_path / "data", tmp_path / "logs"
    flush = ("--flush-interval-ms", 20, "--max-pending-writes", 64)
    proc = harness.start_child(data, logs, "--mode", mode, "--ops", 0, "--threads", threads,
                               "--snapshot-every", 200, *flush, env=harness.child_env())
    try:
        harness.wait_for_line(logs, "ready", proc)
        time.sleep(delay_s)
        assert proc.poll() is None, f"seed {seed}: the child died before the kill"
    finally:
        harness.kill_group(proc)
    child = harness.read_run(proc, logs)
    assert child.returncode == -9, f"seed {seed}: {child.describe()}"
    assert sum(child.acks.values()) > 0, f"seed {seed}: nothing was acknowledged before the kill"
    try:
        recovered = harness.verify_reopen(data, mode, child, lanes=threads)
        harness.continue_and_reopen(data, mode, recovered)
    except AssertionError as exc:
        raise AssertionError(f"kill -9 seed {seed} ({mode}, {threads} threads): {exc}") from exc
    return child, recovered


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["buffered", "strict"])
def test_kill9_under_load(mode, seed, tmp_path):
    child, recovered = _kill_at_random(tmp_path, mode, seed)
    if mode == "strict":
        assert recovered[0] >= child.acks[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_kill9_strict_eight_threads(seed, tmp_path):
    """Group commit under kill -9: every lane keeps everything it was told is durable."""
    child, recovered = _kill_at_random(tmp_path, "strict", seed, threads=8)
    for lane in range(8):
        assert recovered[lane] >= child.acks.get(lane, 0)
