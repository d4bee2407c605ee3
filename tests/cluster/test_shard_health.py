"""What the coordinator says about a shard on its host that stops answering, or is waiting to
be restarted: in its status, in `inmem status`, and to the requests for the shard's runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import inmem
from inmem.processes import child_env

from .conftest import runs_on_each_shard, wait_for

pytestmark = [pytest.mark.slow]

#: quick heartbeats, so that a test sees a silent shard within a second or so
FAST_HEARTBEAT = {"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 0.6}


def _shard(cluster, i) -> dict:
    return cluster.status()["shards"][i]


def _inmem_status(cluster) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inmem", "status", "--endpoint",
                           cluster.endpoint, "--timeout", "20"], env=child_env(),
                          capture_output=True, text=True, timeout=60)


def _status_line(out: str, shard: int) -> str:
    (line,) = [l for l in out.splitlines() if l.startswith(f"  shard {shard}:")]
    return line


@pytest.mark.timeout(90)
def test_a_stopped_local_shard_is_reported_unresponsive_then_ready_when_it_answers(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory", **FAST_HEARTBEAT)
    db = cluster.connect(timeout=10, request_timeout=30)  # straight to the shards
    routed = cluster.connect(timeout=10, request_timeout=30, direct=False)
    ids = runs_on_each_shard(db, 2, prefix="stopped")
    near, other = ids[0][0], ids[1][0]
    db.begin_run(run_id=near)
    db.begin_run(run_id=other)
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: _shard(cluster, 0)["state"] == "unresponsive", 20,
                 "the stopped shard to be reported unresponsive")
        status = cluster.status()
        assert status["ready"] is False
        assert status["shards"][0]["pid"] == victim
        assert status["shards"][0]["silent_s"] >= FAST_HEARTBEAT["heartbeat_timeout_s"]
        assert "no answer" in status["shards"][0]["last_error"]
        assert status["shards"][1]["state"] == "ready"
        shown = _inmem_status(cluster)
        assert shown.returncode == 1, shown
        assert "NOT READY" in shown.stdout
        line = _status_line(shown.stdout, 0)
        assert "unresponsive (no answer for " in line and f"pid {victim}" in line, line
        # Its runs are answered at once, not after the clients' 30 s deadline: through
        # the coordinator the request is refused before it is sent; a direct client
        # has sent it, and learns from the coordinator that no answer is coming.
        with pytest.raises(inmem.ShardUnavailable, match="shard 0 is unresponsive"):
            routed.kv.put(near, "refused", 1)
        with pytest.raises(inmem.ShardUnavailable, match="shard 0 is unresponsive"):
            db.kv.put(near, "sent", 1)
        assert db.kv.put(other, "k", 1) == 1
        assert routed.kv.put(other, "k", 2) == 2
    finally:
        os.kill(victim, signal.SIGCONT)
    wait_for(lambda: cluster.status()["ready"], 20, "the shard to be ready again")
    entry = _shard(cluster, 0)
    # Not killed by default: the same process serves on, and has what it was sent.
    assert entry["state"] == "ready" and entry["pid"] == victim and entry["restarts"] == 0
    assert entry["last_error"] is None and entry["silent_s"] is None
    assert db.kv.get(near, "refused") is None
    assert wait_for(lambda: db.kv.get(near, "sent") == 1, 10, "the request sent while stopped")
    assert routed.kv.put(near, "after", 1) == 1
    assert db.kv.get(near, "after") == 1
    shown = _inmem_status(cluster)
    assert shown.returncode == 0, shown
    assert _status_line(shown.stdout, 0).startswith("  shard 0: ready, pid ")
    db.close()
    routed.close()


@pytest.mark.timeout(90)
def test_a_shard_unresponsive_past_the_configured_limit_is_killed_and_restarted(make_cluster):
    cluster = make_cluster(shards=2, durability="strict", restart_unresponsive_after_s=1.5,
                           restart_backoff_ms=2000, **FAST_HEARTBEAT)
    db = cluster.connect(timeout=10)
    ids = runs_on_each_shard(db, 2, prefix="killed")
    run = ids[0][0]
    db.begin_run(run_id=run)
    db.kv.put(run, "k", "acked")
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: _shard(cluster, 0)["state"] == "unresponsive", 20,
                 "the stopped shard to be reported unresponsive")
        down = wait_for(lambda: (lambda e: e if e["state"] == "down" else None)(
            _shard(cluster, 0)), 20, "the hung shard to be killed")
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert down["pid"] is None and down["last_exit"] == -signal.SIGKILL, down
    assert "no answer for 1.5 s" in down["last_error"], down
    wait_for(lambda: _shard(cluster, 0)["state"] == "ready", 45, "the restart")
    entry = _shard(cluster, 0)
    assert entry["pid"] not in (None, victim) and entry["restarts"] == 1
    assert db.kv.get(run, "k") == "acked"  # strict: acknowledged, so recovered
    db.close()


@pytest.mark.timeout(90)
def test_a_shard_waiting_for_its_restart_shows_no_pid_but_when_it_restarts(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory", restart_backoff_ms=4000)
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: _shard(cluster, 0)["state"] == "down", 20, "the death to be seen")
    entry = _shard(cluster, 0)
    assert entry["pid"] is None, entry
    assert entry["restart_attempt"] == 1
    assert 0 < entry["restart_in_s"] <= 4.0
    shown = _inmem_status(cluster)
    line = _status_line(shown.stdout, 0)
    assert "restarting (attempt 1, next in " in line, line
    assert str(victim) not in line and "pid None" not in line, line
    wait_for(lambda: _shard(cluster, 0)["state"] == "ready", 45, "the restart")
    entry = _shard(cluster, 0)
    assert entry["pid"] not in (None, victim) and entry["restarts"] == 1
    assert entry["restart_attempt"] is None and entry["restart_in_s"] is None
