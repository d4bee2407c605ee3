"""`db.snapshot()` on a cluster: its shards keep serving while their snapshot children write,
however long that takes, and the call returns once every child is done.

The snapshot is written by a forked child; a shard that waited for the
child in its loop served nothing meanwhile (a 300K-key shard stalled every
client for the whole snapshot), and a child slower than the heartbeat
timeout made the coordinator refuse the shard's runs as unresponsive.
Here the child stops itself once it has written (the failpoint's stop
action), so "slow" needs no large data set, and the test resumes it.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

import inmem

from inmem.wal import failpoints

from .conftest import wait_for

pytestmark = [pytest.mark.slow]

#: quick heartbeats: a shard silent for 0.6 s would be reported unresponsive
FAST_HEARTBEAT = {"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 0.6}


@pytest.fixture
def held_children(monkeypatch):
    """Every snapshot child stops itself once it has written its file."""
    monkeypatch.setenv(failpoints.ENV_POINTS, "snapshot.child_written")
    monkeypatch.setenv(failpoints.ENV_ACTION, "stop")


def _held_child(shard_pid: int, not_this: psutil.Process | None = None) -> psutil.Process:
    """The shard's snapshot child (other than `not_this`), once it has stopped itself."""
    found = []

    def held():
        found[:] = [c for c in psutil.Process(shard_pid).children()
                    if c.status() == psutil.STATUS_STOPPED
                    and (not_this is None or c.pid != not_this.pid)]
        return bool(found)

    wait_for(held, 20, "the shard's snapshot child to stop at its failpoint")
    return found[0]


def _snapshot_in_thread(db) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call():
        try:
            out["result"] = db.snapshot()
        except Exception as exc:  # reported by the test's own assertion
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direct", [True, False])
def test_a_shard_keeps_serving_while_its_snapshot_child_runs(make_cluster, held_children,
                                                              monkeypatch, direct):
    cluster = make_cluster(shards=1, durability="strict", **FAST_HEARTBEAT)
    admin = cluster.connect(timeout=10)
    db = cluster.connect(timeout=10, request_timeout=3, direct=direct)
    run = db.begin_run("snap")
    for i in range(50):
        db.kv.put(run, f"before{i}", i)
    shard_pid = cluster.pids()["shards"][0]
    thread, out = _snapshot_in_thread(admin)
    child = _held_child(shard_pid)
    try:
        # Longer than the heartbeat timeout, with the child held: the shard answers.
        for i in range(40):
            assert db.kv.put(run, f"during{i}", i) == 1
            assert db.kv.get(run, f"before{i}") == i
        assert cluster.status()["shards"][0]["state"] == "ready"
        assert thread.is_alive() and not out  # the snapshot call still waits for its child
    finally:
        child.resume()
    thread.join(60)
    assert not thread.is_alive()
    assert "error" not in out, out.get("error")
    (info,) = out["result"]
    assert info.shard == 0 and os.path.exists(info.path)
    # Recovery from it (and the WAL after it) has every write: a crash, then a start
    # whose children no longer stop.
    cluster.kill()
    monkeypatch.delenv(failpoints.ENV_POINTS)
    cluster.start()
    db = cluster.connect(timeout=30)
    assert [db.kv.get(run, f"before{i}") for i in range(50)] == list(range(50))
    assert [db.kv.get(run, f"during{i}") for i in range(40)] == list(range(40))


@pytest.mark.timeout(120)
def test_snapshot_calls_made_while_a_child_runs_share_the_next_one(make_cluster, held_children):
    cluster = make_cluster(shards=1, durability="buffered", **FAST_HEARTBEAT)
    db = cluster.connect(timeout=10)
    run = db.begin_run("snap")
    db.kv.put(run, "k", 0)
    shard_pid = cluster.pids()["shards"][0]
    first, out1 = _snapshot_in_thread(cluster.connect(timeout=10))
    child = _held_child(shard_pid)
    try:
        # Written after the first child forked: the later calls must not be
        # answered by that child, which does not hold it.
        assert db.kv.put(run, "k", 1) == 2
        later = [_snapshot_in_thread(cluster.connect(timeout=10)) for _ in range(2)]
        wait_for(lambda: cluster.status()["shards"][0]["state"] == "ready", 5, "the shard")
        assert all(t.is_alive() for t, _ in later) and first.is_alive()
    finally:
        child.resume()
    _held_child(shard_pid, not_this=child).resume()  # the one the later calls share
    for t, _ in [(first, out1), *later]:
        t.join(60)
        assert not t.is_alive()
    (info1,) = out1["result"]
    infos = [out["result"][0] for _, out in later]
    assert infos[0].path == infos[1].path  # one child for both
    assert infos[0].wal_position > info1.wal_position


@pytest.mark.timeout(120)
def test_a_failed_snapshot_child_fails_the_call_and_the_shard_serves_on(make_cluster,
                                                                         monkeypatch):
    monkeypatch.setenv(failpoints.ENV_POINTS, "snapshot.child_written")  # the child dies there
    cluster = make_cluster(shards=1, durability="buffered", **FAST_HEARTBEAT)
    db = cluster.connect(timeout=10)
    run = db.begin_run("snap")
    db.kv.put(run, "k", 0)
    with pytest.raises(inmem.DurabilityError, match="snapshot"):
        db.snapshot()
    assert db.kv.put(run, "k", 1) == 2
    assert cluster.status()["shards"][0]["state"] == "ready"


@pytest.mark.timeout(180)
def test_a_shard_keeps_serving_while_it_compacts_its_history_on_request(make_cluster):
    # Megabytes of history of deleted runs: a pass of many slices, with requests between.
    cluster = make_cluster(shards=1, durability="buffered", segment_bytes_max=1 << 20,
                           history_compact_dead_fraction=None)
    db = cluster.connect(timeout=10, request_timeout=60)
    keep = db.begin_run("keep")
    gone = [db.begin_run(f"gone{i}") for i in range(20)]
    for rep in range(5):
        with db.pipeline() as p:
            for g in gone:
                for i in range(1000):
                    p.kv.put(g, f"k{i}", "x" * 200)
                p.kv.put(keep, f"k{rep}", g)
            p.execute()
    db.snapshot()
    db.snapshot()  # the WAL segments the runs name move into history/
    for g in gone:
        db.runs.delete(g)
    done: list = []
    stop = threading.Event()

    def putter():
        other = cluster.connect(timeout=10)
        i = 0
        while not stop.is_set():
            other.kv.put(keep, "hot", i)
            done.append(time.monotonic())
            i += 1

    thread = threading.Thread(target=putter, daemon=True)
    thread.start()
    wait_for(lambda: len(done) > 10, 20, "the putter to run")
    began = time.monotonic()
    (report,) = db.compact_history()
    ended = time.monotonic()
    stop.set()
    thread.join(20)
    assert report["shard"] == 0 and report["files"] > 1
    assert report["bytes_after"] < report["bytes_before"] // 100
    # Served while the pass ran (a loop busy compacting answers only the one or two that
    # were in flight before it, then the rest at its end).
    assert sum(began < t < ended for t in done) >= 20, (ended - began, len(done))
    assert db.replay_run(keep).kv == {**{f"k{r}": gone[-1] for r in range(5)},
                                      "hot": len(done) - 1}
