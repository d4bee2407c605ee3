"""Shards that die, hang, cannot start, or live on another host; and the clients that see it."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import inmem

from .conftest import runs_on_each_shard, wait_for
from .shared import cluster_data_dir

pytestmark = [pytest.mark.slow]


def _status(cluster):
    return cluster.status()


def _shard(cluster, i):
    return _status(cluster)["shards"][i]


@pytest.mark.timeout(120)
def test_kill9_of_one_shard_under_load_loses_nothing_acknowledged(make_cluster):
    cluster = make_cluster(shards=2, durability="strict", restart_backoff_ms=50)
    db = cluster.connect(timeout=10)
    ids = runs_on_each_shard(db, 2, per_shard=2, prefix="load")
    runs = [r for s in (0, 1) for r in ids[s]]
    for r in runs:
        db.begin_run(run_id=r)
    victim_pid = cluster.pids()["shards"][0]
    acked: list = []
    unexpected: list = []
    unavailable = [0]
    stop = threading.Event()

    def writer(t):
        i = 0
        while not stop.is_set():
            run = runs[(t + i) % len(runs)]
            key = f"w{t}-{i}"
            try:
                version = db.kv.put(run, key, i)
                acked.append((run, key, i, version))
            except inmem.ShardUnavailable:
                unavailable[0] += 1
                time.sleep(0.005)
            except Exception as exc:  # anything else fails the test below
                unexpected.append(repr(exc))
                return
            i += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) > 300, 30, "writes before the kill")
        os.kill(victim_pid, signal.SIGKILL)
        # One status: a shard waiting for its restart has no pid, so asking twice
        # could pair "ready" before the death with "no pid" after it.
        wait_for(lambda: (s := _shard(cluster, 0))["state"] == "ready"
                 and s["pid"] not in (None, victim_pid), 45, "shard 0 to come back")
        after = len(acked)
        wait_for(lambda: len(acked) > after + 200, 30, "writes after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert unexpected == [], unexpected
    status = _shard(cluster, 0)
    assert status["restarts"] == 1 and status["last_exit"] == -signal.SIGKILL
    # Strict mode: every acknowledged write is there after the crash.
    by_run: dict = {}
    for run, key, value, version in acked:
        by_run.setdefault(run, []).append((key, value))
    for run, pairs in by_run.items():
        got = db.kv.get_many(run, [k for k, _ in pairs])
        missing = [(k, v) for (k, v), g in zip(pairs, got) if g != v]
        assert missing == [], f"{len(missing)} acknowledged writes lost in {run}"
    report = {r.shard: r for r in db.recovery_report()}
    assert report[0].records_replayed > 0
    db.close()


@pytest.mark.timeout(120)
def test_kill9_of_the_whole_cluster_then_restart_recovers_every_shard(make_cluster, tmp_path):
    data = tmp_path / "data"
    cluster = make_cluster(data_dir=data, shards=2, durability="strict")
    db = cluster.connect()
    ids = runs_on_each_shard(db, 2, per_shard=2, prefix="crash")
    expected = {}
    for s in (0, 1):
        for n, run in enumerate(ids[s]):
            db.begin_run(name="crash", run_id=run, tags=["c"])
            with db.pipeline() as p:
                for i in range(200):
                    p.kv.put(run, f"k{i}", {"i": i, "s": s})
                p.execute()
            db.events.append(run, "e", {"n": n})
            db.state.set(run, "cell", n)
            db.json.put(run, "doc", {"n": n, "l": [1, 2]})
            root = db.traces.record(run, "thought", {"n": n})
            with db.transaction(run) as tx:
                tx.kv.put("tx", n)
                tx.events.append("tx", {})
            if n == 0:
                db.end_run(run)  # completed; the others stay active and come back orphaned
            expected[run] = (root, n, s)
    before = {r.run_id: r for r in db.runs.list()}
    db.close()
    cluster.kill()

    again = make_cluster(data_dir=data, durability="strict")  # shard count from the slot map
    db = again.connect()
    report = db.recovery_report()
    assert [r.shard for r in report] == [0, 1]
    for r in report:
        assert r.records_replayed > 0 and r.snapshot_used is None
        assert r.started_at <= r.finished_at
    log = again.log_tail(60)
    assert "shard 0 ready" in log and "shard 1 ready" in log and "ready: 2 shards" in log
    for run, (root, n, s) in expected.items():
        assert db.kv.get(run, "k199") == {"i": 199, "s": s}
        assert len(db.kv.keys(run)) == 201
        assert db.kv.get(run, "tx") == n
        assert db.events.count(run) == 2 and db.events.verify_chain(run).valid
        assert db.state.read(run, "cell").value == n
        assert db.json.get(run, "doc") == {"n": n, "l": [1, 2]}
        assert db.traces.get(run, root).data == {"n": n}
    orphaned = [r for r, (_, n, _) in expected.items() if n != 0]
    assert sorted(db.orphaned_runs()) == sorted(orphaned)
    assert sorted(sum((r.orphaned_runs for r in report), [])) == sorted(orphaned)
    after = {r.run_id: r for r in db.runs.list()}
    assert set(after) == set(before)
    for run in after:
        assert after[run].created_at == before[run].created_at
    db.close()


def _fill_shard_directly(shard_dir, runs, ops):
    """Write a shard's WAL in-process (faster than through the cluster)."""
    db = inmem.open(shard_dir, durability="buffered", snapshot_on_close=False)
    for run in runs:
        db.begin_run(run_id=run)
    per_batch = 1000
    for b in range(ops // per_batch):
        with db.pipeline() as p:
            for i in range(per_batch):
                p.kv.put(runs[i % len(runs)], f"k{b}-{i}", i)
    db.close()


@pytest.mark.timeout(120)
def test_shards_recover_in_parallel(make_cluster, tmp_path):
    from inmem.coordinator.slotmap import SlotMap
    data = cluster_data_dir(tmp_path, 2)
    probe = inmem.open(None)
    owners = SlotMap.even(2).owners
    from inmem.protocol import slot_of
    runs = {0: [], 1: []}
    i = 0
    while len(runs[0]) < 4 or len(runs[1]) < 4:
        rid = f"par-{i}"
        i += 1
        if len(runs[owners[slot_of(rid)]]) < 4:
            runs[owners[slot_of(rid)]].append(rid)
    probe.close()
    for s in (0, 1):
        _fill_shard_directly(str(data / f"shard-{s}"), runs[s], 120_000)
    cluster = make_cluster(data_dir=data, durability="buffered", snapshot_on_close=False)
    db = cluster.connect()
    report = db.recovery_report()
    assert [r.records_replayed > 0 for r in report] == [True, True]
    starts = [r.started_at for r in report]
    ends = [r.finished_at for r in report]
    # Side by side: each shard started before the other finished.
    assert max(starts) < min(ends), (
        f"recoveries did not overlap: {[(r.shard, r.started_at, r.finished_at) for r in report]}")
    for s in (0, 1):
        assert len(db.kv.keys(runs[s][0])) == 30_000
    line = next(x for x in cluster.log_tail(60).splitlines() if x.startswith("ready:"))
    print(line, "| per shard:", [round(r.seconds, 3) for r in report])
    db.close()


@pytest.mark.timeout(60)
def test_a_shard_that_cannot_start_keeps_the_cluster_not_ready(make_cluster, tmp_path):
    data = tmp_path / "data"
    (data / "shard-1").mkdir(parents=True)
    lock = os.open(data / "shard-1" / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        cluster = make_cluster(data_dir=data, shards=2, start=False, restart_backoff_ms=50,
                               restart_backoff_max_ms=200)
        cluster.start(wait=False)
        with pytest.raises(inmem.ClusterNotReady, match="shard 1"):
            inmem.connect(cluster.endpoint, timeout=1.5)
        status = wait_for(lambda: (s := cluster.status())["shards"][1]["restarts"] >= 2 and s,
                          30, "restarts of shard 1")
        assert status["ready"] is False
        shard1 = status["shards"][1]
        assert shard1["state"] in ("down", "recovering")
        assert "already open" in shard1["last_error"] or "another process" in shard1["last_error"]
        # Requests before readiness are refused with ClusterNotReady, not queued.
        backend = inmem.client.ClusterBackend(cluster.endpoint, timeout=0.3)
        try:
            with pytest.raises(inmem.ClusterNotReady):
                backend.call("kv.get", ("r", "k", None))
        finally:
            backend.close()
    finally:
        os.close(lock)
    cluster.wait_ready(30)
    db = cluster.connect()
    r = db.begin_run()
    assert db.kv.put(r, "k", 1) == 1
    db.close()


@pytest.mark.timeout(60)
def test_a_hung_shard_times_out_and_late_replies_are_dropped(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory")
    db = cluster.connect(timeout=5, request_timeout=0.3)
    ids = runs_on_each_shard(db, 2, prefix="hang")
    run0, run1 = ids[0][0], ids[1][0]
    db.begin_run(run_id=run0)
    db.begin_run(run_id=run1)
    pid = cluster.pids()["shards"][0]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(inmem.Timeout):
            db.kv.put(run0, "k", "lost?")
        assert time.monotonic() - t0 < 5
        assert db.kv.put(run1, "k", 1) == 1  # the other shard serves on
    finally:
        os.kill(pid, signal.SIGCONT)
    # The late reply to the timed-out put arrives now and must not be taken for this one.
    assert wait_for(lambda: db.kv.get(run0, "k") == "lost?", 10, "the late put")
    assert db.kv.put(run0, "k2", 2) == 1
    assert db.kv.get(run0, "k2") == 2
    db.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(90)
def test_a_remote_shard_started_by_hand(make_cluster, tmp_path):
    """The multi-host layout on one host: shard 1 on tcp, started by hand, watched by heartbeat."""
    port = _free_port()
    cfg = tmp_path / "multi.toml"
    cfg.write_text(f"""
[cluster]
data_dir = "{tmp_path / 'data'}"
shards = 2
insecure = true
[durability]
mode = "strict"
[supervisor]
heartbeat_interval_s = 0.1
heartbeat_timeout_s = 0.8
[[shard]]
id = 0
[[shard]]
id = 1
endpoint = "tcp://127.0.0.1:{port}"
remote = true
""")
    from inmem.processes import child_env

    def start_remote():
        return subprocess.Popen([sys.executable, "-m", "inmem", "shard", "serve", "--config",
                                 str(cfg), "--shard", "1"], env=child_env(), start_new_session=True,
                                stdin=subprocess.DEVNULL)

    remote = start_remote()
    try:
        cluster = make_cluster(config=cfg, data_dir=tmp_path / "data")
        db = cluster.connect()
        ids = runs_on_each_shard(db, 2, prefix="remote")
        far = ids[1][0]
        db.begin_run(run_id=far)
        assert db.kv.put(far, "k", 1) == 1
        assert cluster.status()["shards"][1]["pid"] == remote.pid
        remote.kill()
        remote.wait(10)
        wait_for(lambda: cluster.status()["shards"][1]["state"] == "down", 20,
                 "the silent remote shard to be marked down")
        with pytest.raises(inmem.ShardUnavailable, match="shard 1"):
            db.kv.get(far, "k")
        remote = start_remote()
        wait_for(lambda: cluster.status()["shards"][1]["state"] == "ready", 30,
                 "the remote shard to be back")
        assert db.kv.get(far, "k") == 1  # strict: acknowledged, so it survived the kill
        db.close()
    finally:
        remote.kill()
        remote.wait(10)


@pytest.mark.timeout(90)
def test_a_direct_client_sees_shard_unavailable_then_the_restarted_shard(make_cluster):
    cluster = make_cluster(shards=2, durability="strict", restart_backoff_ms=300)
    db = cluster.connect(direct=True, request_timeout=2.0)
    ids = runs_on_each_shard(db, 2, prefix="direct-kill")
    run = ids[0][0]
    db.begin_run(run_id=run)
    db.kv.put(run, "k", "acked")
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: cluster.status()["shards"][0]["pid"] != victim
             or cluster.status()["shards"][0]["state"] != "ready", 20, "the death to be seen")
    seen = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            assert db.kv.get(run, "k") == "acked"
            break
        except inmem.ShardUnavailable as exc:
            seen.append(exc)
            time.sleep(0.02)
    else:
        raise AssertionError("the shard did not come back")
    assert seen, "no ShardUnavailable while the shard was down"
    assert db.kv.put(run, "k2", 1) == 1
    db.close()
