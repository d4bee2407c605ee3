"""The durable embedded store end to end: reopen keeps everything, snapshots, locks, faults.

These run in this process (the crash suites use child processes): every
primitive survives a reopen from a snapshot, from the WAL and from both;
orphaned runs; snapshot retention and WAL deletion; the directory lock;
strict group commit from eight threads; fsync errors are fail-stop; a failing
snapshot writer leaves the store serving.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import inmem
from inmem.wal import writer as wal_writer
from inmem.wal import failpoints

from . import harness, workload

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"segment_bytes_max": 4096}
STATUSES = ("completed", "failed", "paused", "cancelled", "archived", "active")


# -- every primitive survives a reopen ---------------------------------------------------


def populate(db, clock) -> dict:
    """Write every primitive, in runs of every status; return the run ids by role."""
    runs = {}
    main = runs["completed"] = db.begin_run(name="main", run_id="r-main", tags=("x", "y"),
                                            metadata={"owner": "tests", "n": 1})
    kv = db.kv
    for value in ("one", "two", {"three": [3, 3.5, None, True, b"\x00\xff"]}):
        kv.put(main, "a", value)
    kv.put(main, "b", 1)
    kv.delete(main, "b")
    kv.put(main, "b", 2)                       # version 3: deletes are writes
    kv.cas(main, "c", 0, "created by cas")
    kv.put(main, "ttl_long", "stays", ttl=3600)
    kv.put(main, "ttl_short", "goes", ttl=1)
    clock.advance(2)                           # ttl_short is expired before the reopen
    for i in range(6):
        db.events.append(main, "step", {"z": i, "a": {"nested": [i, str(i)], "b": None}})
    db.state.init(main, "phase", "start")
    db.state.cas(main, "phase", 1, "middle")
    db.state.set(main, "phase", "end")
    db.state.set(main, "other", {"k": [1, 2]})
    root = db.traces.record(main, "decision", {"why": "root"}, tags=("t1",), metadata={"m": 1})
    child = db.traces.record(main, "tool_call", {"tool": "grep"}, parent_id=root)
    db.traces.record(main, "thought", {"deep": True}, parent_id=child, tags=("t1", "t2"))
    db.traces.record(main, "error", {"second": "root"})
    db.json.put(main, "doc", {"title": "t", "items": [1, 2], "meta": {"k": "v"}})
    db.json.set(main, "doc", "$.meta.extra", [1, {"x": 1}])
    db.json.array_push(main, "doc", "$.items", 3)
    db.json.array_pop(main, "doc", "$.items")
    db.end_run(main)

    runs["failed"] = db.begin_run(name="bad", run_id="r-failed", parent=main)
    db.kv.put(runs["failed"], "k", "v")
    db.abort_run(runs["failed"], "it broke")
    runs["paused"] = db.begin_run(run_id="r-paused")
    db.runs.pause(runs["paused"])
    runs["cancelled"] = db.begin_run(run_id="r-cancelled")
    db.runs.cancel(runs["cancelled"])
    runs["archived"] = db.begin_run(run_id="r-archived")
    db.end_run(runs["archived"])
    db.runs.archive(runs["archived"])
    runs["active"] = db.begin_run(run_id="r-active", tags=("live",))
    db.kv.put(runs["active"], "progress", 41)
    db.events.append(runs["active"], "tick", {"n": 1})
    return runs


def _tree(t):
    return (t.trace, [_tree(c) for c in t.children])


def view(db) -> dict:
    """Everything the API shows about every run, as plain comparable data."""
    out = {}
    for info in db.runs.list():
        run = info.run_id
        keys = db.kv.keys(run)
        count = db.events.count(run)
        out[run] = {
            "info": info._replace(status=db.run_status(run)),
            "kv": {k: db.kv.get_versioned(run, k) for k in keys},
            "kv_items": db.kv.items(run),
            "ttl": (db.kv.exists(run, "ttl_long"), db.kv.exists(run, "ttl_short")),
            "events": db.events.range(run, 0, count),
            "chain": db.events.verify_chain(run),
            "state": {n: db.state.read(run, n) for n in ("phase", "other")},
            "traces": [_tree(db.traces.tree(run, t.id)) for t in db.traces.roots(run)],
            "by_tag": db.traces.by_tag(run, "t1"),
            "by_type": db.traces.by_type(run, "tool_call"),
            "json": db.json.get(run, "doc"),
            "json_path": db.json.get(run, "doc", "$.meta.extra[1].x"),
        }
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["buffered", "strict"])
@pytest.mark.parametrize("source", ["snapshot", "wal", "snapshot+wal"])
def test_reopen_keeps_every_primitive(tmp_path, clock, mode, source):
    data = tmp_path / "data"
    on_close = source == "snapshot"
    with inmem.open(data, durability=mode, clock=clock, snapshot_on_close=on_close) as db:
        if source == "snapshot+wal":
            db.begin_run(run_id="r-early")
            db.kv.put("r-early", "k", "before the snapshot")
            db.end_run("r-early")
            db.snapshot()
        runs = populate(db, clock)
        before = view(db)
    assert before["r-main"]["ttl"] == (True, False)
    assert before["r-main"]["chain"].valid and before["r-main"]["chain"].length == 6
    with inmem.open(data, durability=mode, clock=clock) as db:
        (report,) = db.recovery_report()
        after = view(db)
        if source == "wal":
            assert report.snapshot_used is None and report.records_replayed > 0
        elif source == "snapshot":
            assert report.snapshot_used is not None and report.records_replayed == 0
        else:
            assert report.snapshot_used is not None and report.records_replayed > 0
        assert os.path.isabs(report.snapshot_used or "/")
        # The one difference a crash makes: the run left active is now orphaned.
        active = runs["active"]
        assert after[active]["info"].status == "orphaned"
        expected = dict(before)
        expected[active] = {**before[active],
                            "info": before[active]["info"]._replace(status="orphaned")}
        assert after == expected
        for role in STATUSES[:-1]:
            assert db.run_status(runs[role]) == role
        assert db.runs.get(runs["failed"]).error == "it broke"
        assert db.runs.get(runs["failed"]).parent == runs["completed"]
        clock.advance(3600)  # time moves on after the reopen: the long TTL ends too
        assert db.kv.get(runs["completed"], "ttl_long") is None


# -- orphaned runs -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_orphaned_runs_after_reopen(tmp_path):
    data = tmp_path / "data"
    with inmem.open(data, durability="strict") as db:
        done = db.begin_run(run_id="done")
        db.end_run(done)
        left = db.begin_run(run_id="left")
        db.kv.put(left, "k", 1)
        paused = db.begin_run(run_id="paused")
        db.runs.pause(paused)
    with inmem.open(data, durability="strict") as db:
        assert db.orphaned_runs() == ["left"]
        assert db.recovery_report()[0].orphaned_runs == ["left"]
        assert db.run_status("left") == "orphaned"
        assert db.run_status("done") == "completed" and db.run_status("paused") == "paused"
        assert db.kv.put("left", "k", 2) == 2           # a writer may resume it
        db.events.append("left", "resumed", {"ok": True})
        assert db.run_status("left") == "orphaned"      # until it is ended
    with inmem.open(data, durability="strict") as db:
        assert db.orphaned_runs() == ["left"]
        db.end_run("left")
        assert db.run_status("left") == "completed" and db.orphaned_runs() == []
    with inmem.open(data, durability="strict") as db:
        assert db.orphaned_runs() == [] and db.recovery_report()[0].orphaned_runs == []
        assert db.run_status("left") == "completed"
        assert db.kv.get_versioned("left", "k").version == 2
        assert db.events.count("left") == 1


# -- snapshots and the WAL they cover ------------------------------------------------


def _segment_firsts(data) -> list[int]:
    return sorted(int(p.name[:-4]) for p in (data / "wal").glob("*.wal"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("retention", [2, 3])
def test_retention_and_covered_wal_deletion(tmp_path, retention):
    data = tmp_path / "data"
    infos = []
    with inmem.open(data, durability="strict", snapshot_retention=retention,
                    snapshot_on_close=False, **SMALL) as db:
        run = workload.begin(db, 0)
        for round_ in range(5):
            for i in range(round_ * 100, (round_ + 1) * 100):
                workload.apply_op(db, run, i)
            (info,) = db.snapshot()
            infos.append(info)
            files = sorted(str(p) for p in (data / "snapshots").glob("*.snap"))
            kept = sorted(i.path for i in infos[-retention:])
            assert files == kept, f"after snapshot {round_ + 1}: {files}"
            # The WAL keeps exactly what the oldest retained snapshot does not cover.
            oldest = min(i.wal_position for i in infos[-retention:])
            firsts = _segment_firsts(data)
            assert firsts[0] <= oldest, "a segment the oldest snapshot needs was deleted"
            assert len(firsts) == 1 or firsts[1] > oldest, (
                f"segments wholly covered by the oldest snapshot ({oldest}) remain: {firsts}")
        assert len(_segment_firsts(data)) >= 2
    # Falling back to the oldest retained snapshot still finds every op: damage all
    # newer ones and reopen.
    for info in infos[-retention + 1:]:
        Path(info.path).write_bytes(b"broken")
    with inmem.open(data, durability="strict") as db:
        assert db.recovery_report()[0].snapshot_used == infos[-retention].path
        assert workload.recovered_ops(db, 0) == 500


@pytest.mark.timeout(30)
def test_snapshot_returns_info(tmp_path):
    data = tmp_path / "data"
    with inmem.open(data, durability="buffered", snapshot_on_close=False) as db:
        run = db.begin_run()
        for i in range(50):
            db.kv.put(run, f"k{i}", i)
        infos = db.snapshot()
        assert len(infos) == 1
        info = infos[0]
        assert isinstance(info, inmem.SnapshotInfo) and info.shard == 0
        assert os.path.isabs(info.path) and os.path.isfile(info.path)
        assert Path(info.path).parent == (data / "snapshots").resolve()
        assert info.bytes == os.path.getsize(info.path) > 0
        assert info.wal_position > 0 and info.timestamp > 0
        db.kv.put(run, "later", 1)
        (second,) = db.snapshot()
        assert second.wal_position > info.wal_position and second.path != info.path
        assert db.info()["shards"][0]["durability"] == "buffered"
    with inmem.open(data, durability="buffered") as db:
        assert db.recovery_report()[0].snapshot_used == second.path
        assert db.kv.get(run, "later") == 1
    assert inmem.open(None).snapshot() == []


@pytest.mark.timeout(60)
def test_concurrent_snapshots_from_threads(tmp_path):
    """A Database may be used from many threads: so may db.snapshot()."""
    data = tmp_path / "data"
    errors, infos = [], []
    with inmem.open(data, durability="buffered", **SMALL) as db:
        run = db.begin_run(run_id="r")

        def worker(t):
            try:
                for i in range(15):
                    db.kv.put(run, f"t{t}", i)
                    infos.append(db.snapshot())
            except BaseException as exc:  # collected: every thread must finish
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(infos) == 60 and all(len(x) == 1 for x in infos)
    with inmem.open(data, durability="buffered") as db:
        assert [db.kv.get("r", f"t{t}") for t in range(4)] == [14] * 4


@pytest.mark.timeout(30)
def test_failed_snapshot_child_keeps_serving(tmp_path, monkeypatch):
    """A snapshot writer that dies (here, before its rename) fails db.snapshot() with
    DurabilityError; the store keeps serving and loses nothing."""
    data = tmp_path / "data"
    db = inmem.open(data, durability="strict", snapshot_on_close=False, **SMALL)
    try:
        run = workload.begin(db, 0)
        for i in range(40):
            workload.apply_op(db, run, i)
        (good,) = db.snapshot()
        monkeypatch.setenv(failpoints.ENV_POINTS, "snapshot.before_rename")
        failpoints.reload()
        try:
            with pytest.raises(inmem.DurabilityError):
                db.snapshot()
        finally:
            monkeypatch.delenv(failpoints.ENV_POINTS)
            failpoints.reload()
        assert list((data / "snapshots").glob("*.tmp")), "the dead writer left its temp file"
        for i in range(40, 80):
            workload.apply_op(db, run, i)
        assert workload.recovered_ops(db, 0) == 80
        assert [str(p) for p in (data / "snapshots").glob("*.snap")] == [good.path]
    finally:
        db.close()
    with inmem.open(data, durability="strict") as db:
        assert workload.recovered_ops(db, 0) == 80
        assert db.recovery_report()[0].snapshot_used == good.path
        assert not list((data / "snapshots").glob("*.tmp")), "recovery removes temp files"
        (after,) = db.snapshot()
        assert after.wal_position > good.wal_position


# -- one owner per directory ---------------------------------------------------------


@pytest.mark.timeout(30)
def test_second_open_fails_while_the_first_is_open(tmp_path):
    data = tmp_path / "data"
    first = inmem.open(data, durability="strict")
    try:
        first.kv.put(first.begin_run(run_id="r"), "k", 1)
        with pytest.raises(inmem.InmemError) as info:
            inmem.open(data, durability="strict")
        assert str(data) in str(info.value)
        code = ("import sys, inmem\n"
                "try:\n"
                "    inmem.open(sys.argv[1], durability='buffered')\n"
                "except inmem.InmemError as exc:\n"
                "    print(type(exc).__name__, exc)\n"
                "    sys.exit(5)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(data)], cwd=ROOT,
                              env={**harness.child_env(), "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 5, (proc.stdout, proc.stderr)
        assert str(data) in proc.stdout
        first.kv.put("r", "k", 2)  # the refused opens disturbed nothing
    finally:
        first.close()
    with inmem.open(data, durability="strict") as db:
        assert db.kv.get_versioned("r", "k").version == 2


# -- strict mode under concurrency ---------------------------------------------------


@pytest.mark.timeout(60)
def test_strict_eight_threads(tmp_path):
    data = tmp_path / "data"
    acked = [0] * 8
    errors = []
    with inmem.open(data, durability="strict", snapshot_on_close=False, **SMALL) as db:
        for lane in range(8):
            workload.begin(db, lane)

        def lane_loop(lane):
            try:
                run = workload.lane_run(lane)
                for i in range(120):
                    workload.apply_op(db, run, i)
                    acked[lane] = i + 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=lane_loop, args=(lane,)) for lane in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert acked == [120] * 8
        # Copy the directory while the store is still open: what a crash right now
        # would leave behind (the page cache survives a process crash).
        crash_copy = tmp_path / "copy"
        shutil.copytree(data, crash_copy, ignore=shutil.ignore_patterns("LOCK"))
    for directory in (crash_copy, data):
        with inmem.open(directory, durability="strict") as db:
            assert [workload.recovered_ops(db, lane) for lane in range(8)] == acked
            for lane in range(8):
                harness.check_chain(db, workload.lane_run(lane))


# -- fsync errors are fail-stop ------------------------------------------------------


def _failing_fsync(fd):
    raise OSError(errno.EIO, "injected fsync failure")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["strict", "buffered"])
def test_fsync_failure_stops_acknowledging(tmp_path, monkeypatch, mode):
    data = tmp_path / "data"
    db = inmem.open(data, durability=mode, snapshot_on_close=False, flush_interval_ms=5,
                    max_pending_writes=8)
    acked = 0
    try:
        run = workload.begin(db, 0)
        for i in range(30):
            workload.apply_op(db, run, i)
            acked += 1
        monkeypatch.setattr(wal_writer, "_os_fsync", _failing_fsync)
        failed_at = None
        for i in range(acked, acked + 2000):
            try:
                workload.apply_op(db, run, i)
            except inmem.DurabilityError:
                failed_at = i
                break
            acked += 1
            if mode == "buffered":
                time.sleep(0.002)  # give the flusher its interval
        assert failed_at is not None, "writes went on being acknowledged after fsync failed"
        if mode == "strict":
            assert failed_at == 30, "strict acknowledged a write whose fsync failed"
        # Fail-stop: nothing more is acknowledged, whatever the primitive.
        for attempt in (lambda: db.kv.put(run, "more", 1),
                        lambda: db.events.append(run, "more", {}),
                        lambda: db.state.set(run, "more", 1),
                        lambda: workload.apply_op(db, run, failed_at)):
            with pytest.raises(inmem.DurabilityError):
                attempt()
        monkeypatch.setattr(wal_writer, "_os_fsync", os.fsync)  # the disk is back
        with pytest.raises(inmem.DurabilityError):
            db.kv.put(run, "more", 2)  # ...but only a reopen recovers the store
    finally:
        monkeypatch.setattr(wal_writer, "_os_fsync", os.fsync)
        with contextlib.suppress(inmem.DurabilityError):
            db.close()
    with inmem.open(data, durability=mode) as db:
        n = workload.recovered_ops(db, 0)
        # The refused writes may sit in the page cache (written, fsync failed), so the
        # recovered prefix may include them; it may never go past what was attempted.
        assert n <= failed_at + 1
        if mode == "strict":
            assert n >= acked
        run = workload.lane_run(0)
        assert db.kv.get_versioned(run, "more") is None and db.state.read(run, "more") is None


@pytest.mark.timeout(30)
def test_a_refused_fork_fails_the_snapshot_not_the_store(tmp_path, monkeypatch):
    """fork() refused (no memory, the process limit): db.snapshot() raises DurabilityError
    saying so, the automatic snapshot logs it and the upkeep goes on, nothing is lost."""
    from inmem.shard.upkeep import upkeep
    data = tmp_path / "data"
    db = inmem.open(data, durability="strict", snapshot_on_close=False, snapshot_wal_bytes=1)
    try:
        run = db.begin_run()
        db.kv.put(run, "k", 1)

        def refused():
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

        monkeypatch.setattr(os, "fork", refused)
        with pytest.raises(inmem.DurabilityError, match="cannot fork a snapshot"):
            db.snapshot()
        store = db._backend.store
        db.kv.put(run, "k", 2)  # a snapshot is due after every write here
        upkeep(store.engine, store, store.lock)  # logs the refusal, raises nothing
        monkeypatch.undo()
        assert db.kv.put(run, "k", 3) == 3
        assert len(db.snapshot()) == 1
    finally:
        db.close()
    with inmem.open(data, durability="strict") as again:
        assert again.kv.get(run, "k") == 3


def test_close_after_a_failed_background_snapshot_keeps_buffered_writes(tmp_path, monkeypatch):
    """A background snapshot child that died, not yet reaped when close() runs, must not
    make close() skip flushing the buffered writes it acknowledged."""
    data = tmp_path / "data"
    monkeypatch.setenv(failpoints.ENV_POINTS, "snapshot.before_rename")
    failpoints.reload()
    try:
        db = inmem.open(data, durability="buffered", flush_interval_ms=60_000,
                        max_pending_writes=8, snapshot_wal_bytes=1, snapshot_on_close=False)
        try:
            run = workload.begin(db, 0)
            for i in range(16):  # two full batches: WAL bytes that trigger a snapshot
                workload.apply_op(db, run, i)
            snapdir = data / "snapshots"
            for _ in range(500):
                if list(snapdir.glob("*.tmp")):
                    break  # the scheduler's child died before its rename
                time.sleep(0.01)
            else:
                pytest.fail("the background snapshot never started")
            for i in range(16, 19):  # acknowledged, still in the buffer
                workload.apply_op(db, run, i)
        finally:
            with contextlib.suppress(inmem.DurabilityError):
                db.close()
    finally:
        monkeypatch.delenv(failpoints.ENV_POINTS)
        failpoints.reload()
    with inmem.open(data, durability="buffered") as db:
        assert workload.recovered_ops(db, 0) == 19, "close() lost acknowledged writes"
