"""A shard forked from the coordinator answers the supervisor as a spawned one does."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from inmem.coordinator.supervisor import ForkedShard


class _Worker:
    """Stands in for the shard worker module: what the forked child runs."""

    def __init__(self, body):
        self.body = body

    def run_worker(self, spec, shard, watch_parent=False):
        return self.body(spec, shard, watch_parent)


def test_the_exit_code_of_the_child_is_its_return_code():
    proc = ForkedShard.start(_Worker(lambda spec, shard, watch: 7 + shard), {}, 2)
    assert proc.wait(30) == 9
    assert proc.poll() == 9


def test_a_child_that_raises_exits_1_and_one_that_exits_keeps_its_code():
    def boom(spec, shard, watch):
        raise RuntimeError("no")

    def leave(spec, shard, watch):
        raise SystemExit(4)

    assert ForkedShard.start(_Worker(boom), {}, 0).wait(30) == 1
    assert ForkedShard.start(_Worker(leave), {}, 0).wait(30) == 4


def test_signals_reach_the_child_and_wait_times_out_while_it_runs():
    proc = ForkedShard.start(_Worker(lambda spec, shard, watch: time.sleep(60) or 0), {}, 0)
    try:
        assert proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.05)
        # The coordinator's own SIGTERM handler is not the child's: it stops.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
    finally:
        proc.kill()  # nothing left to kill: a no-op, not an error
    assert proc.returncode == -signal.SIGTERM


def test_the_child_sees_the_spec_and_the_parent_watch():
    seen = ForkedShard.start(
        _Worker(lambda spec, shard, watch: 3 if spec == {"a": [1]} and shard == 1 and watch
                else 5), {"a": [1]}, 1)
    assert seen.wait(30) == 3
