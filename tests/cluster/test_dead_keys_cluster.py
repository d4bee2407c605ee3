"""A cluster shard reclaims dead KV entries, and its runs' version floors survive a kill -9.

Real processes: a one-shard buffered cluster with dead_key_retention_s = 0, on the real
clock (a dead entry goes once the second it died in has passed, at an upkeep round).
"""

from __future__ import annotations

import os
import signal

import pytest

from polling import wait_for

pytestmark = pytest.mark.timeout(180)


def reclaimed(db) -> int:
    return db.info()["shards"][0]["kv_reclaimed"]


def kill_and_wait(cluster, db) -> None:
    """SIGKILL the shard; wait until its restart serves again."""
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGKILL)

    def back():
        try:
            status = cluster.status()
            shard = status["shards"][0]
            return shard["pid"] != victim and shard["state"] == "ready" and \
                db.kv.get("r", "probe") == "p"
        except Exception:
            return False
    wait_for(back, timeout=60, what="the shard's restart", interval=0.1)


def test_the_floor_survives_a_kill_9_after_a_snapshot(make_cluster):
    cluster = make_cluster(shards=1, durability="buffered", dead_key_retention_s=0,
                           flush_interval_ms=5)
    db = cluster.connect()
    try:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "probe", "p")
        for i in range(3):
            db.kv.put(run, "a", i)
        db.kv.delete(run, "a")  # version 4
        wait_for(lambda: reclaimed(db) == 1, timeout=30, what="the sweep", interval=0.05)
        assert db.kv.keys(run) == ["probe"]
        db.snapshot()
        kill_and_wait(cluster, db)
        assert reclaimed(db) == 0  # a new process
        assert db.kv.put(run, "brand-new", 1) == 5
        assert db.kv.put(run, "a", "again") == 5
        # Reclaimed after the snapshot, then killed: the tombstone comes back from the WAL
        # with its version, and goes again.
        db.kv.delete(run, "brand-new")  # version 6
        wait_for(lambda: reclaimed(db) == 1, timeout=30, what="the second sweep", interval=0.05)
        kill_and_wait(cluster, db)
        assert db.kv.put(run, "brand-new", 2) == 7
        assert db.kv.get_versioned(run, "a").version == 5
    finally:
        db.close()


def test_an_inmemory_shard_takes_the_retention(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory", dead_key_retention_s=0)
    db = cluster.connect()
    try:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "a", 1)
        db.kv.delete(run, "a")
        wait_for(lambda: reclaimed(db) == 1, timeout=10, what="the sweep", interval=0.05)
    finally:
        db.close()
