"""A cluster shard reclaims deleted state cells and JSON documents, and their version floors
survive a kill -9 after a snapshot (and the tombstones reclaimed after it come back from the
WAL and go again).

Real processes: a one-shard buffered cluster with dead_key_retention_s = 0, on the real
clock (a tombstone goes once the second it died in has passed, at an upkeep round).
"""

from __future__ import annotations

import os
import signal

import pytest

import inmem

from polling import wait_for

pytestmark = pytest.mark.timeout(180)


def reclaimed(db) -> tuple[int, int]:
    shard = db.info()["shards"][0]
    return shard["state_reclaimed"], shard["json_reclaimed"]


def kill_and_wait(cluster, db) -> None:
    """SIGKILL the shard; wait until its restart serves again."""
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGKILL)

    def back():
        try:
            shard = cluster.status()["shards"][0]
            return shard["pid"] != victim and shard["state"] == "ready" and \
                db.state.read("r", "probe").value == "p"
        except Exception:
            return False
    wait_for(back, timeout=60, what="the shard's restart", interval=0.1)


def test_cell_and_document_floors_survive_a_kill_9_after_a_snapshot(make_cluster):
    cluster = make_cluster(shards=1, durability="buffered", dead_key_retention_s=0,
                           flush_interval_ms=5)
    db = cluster.connect()
    try:
        run = db.begin_run(run_id="r")
        db.state.set(run, "probe", "p")
        for i in range(3):
            db.state.set(run, "cell", i)
        assert db.state.delete(run, "cell")  # version 4
        db.json.put(run, "doc", {"n": 1})
        db.json.set(run, "doc", "$.n", 2)
        assert db.json.delete(run, "doc")  # version 3
        wait_for(lambda: reclaimed(db) == (1, 1), timeout=30, what="the sweep", interval=0.05)
        assert db.info()["shards"][0]["kv_reclaimed"] == 0
        db.snapshot()
        kill_and_wait(cluster, db)
        assert reclaimed(db) == (0, 0)  # a new process
        assert db.state.read(run, "cell") is None
        assert db.json.get(run, "doc") is None
        # The floors came back with the snapshot: no version names two lives of a name.
        assert db.state.set(run, "brand-new", 1) == 5
        assert db.state.init(run, "cell", "again") == 5
        assert db.json.put(run, "doc", {"n": 3}) == 4
        assert db.json.array_push(run, "new-doc", "$.items", 1) == 1
        assert db.json.delete(run, "new-doc")  # version 5 (4, then its delete)
        # Reclaimed after the snapshot, then killed: the tombstones come back from the WAL
        # with their versions, and go again.
        assert db.state.delete(run, "brand-new")  # version 6
        wait_for(lambda: reclaimed(db) == (1, 1), timeout=30, what="the second sweep",
                 interval=0.05)
        kill_and_wait(cluster, db)
        wait_for(lambda: reclaimed(db) == (1, 1), timeout=30, what="the sweep after restart",
                 interval=0.05)
        assert db.state.set(run, "brand-new", 2) == 7
        assert db.json.put(run, "new-doc", 1) == 6
        assert db.state.read(run, "cell").version == 5
        assert db.json.get(run, "doc") == {"n": 3}
        with pytest.raises(inmem.VersionMismatch):
            db.state.cas(run, "cell", 4, "stale")
    finally:
        db.close()
