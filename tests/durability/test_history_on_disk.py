"""A durable store's history lives in its WAL records: replay, at= and diff never change with it.

Replay, `at=` and diff must give the same answers before and after a reopen,
after snapshots and WAL retention moved the history's segments to
`history/`, after other runs were deleted and their files reclaimed, after a
crash at either failpoint of the history's retention step, and for every
position of random operation sequences. The heap keeps an index, not the
history, and a snapshot carries the index, not the history.
"""

from __future__ import annotations

import itertools
import pickle
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import inmem
from polling import wait_for
from inmem.processes import child_env

MODES = ("buffered", "strict")
SMALL = {"segment_bytes_max": 4096, "snapshot_wal_bytes": 1 << 30, "snapshot_interval_s": None,
         "max_pending_writes": 16}


def pinned_clock():
    ticks = itertools.count(1_700_000_000_000_000, 7)
    return lambda: next(ticks)


def work(db, run: str, n: int, seed: int = 0) -> None:
    """Writes of every kind, several to each key, so that history differs from state."""
    for i in range(n):
        k = (i * 7 + seed) % 13
        kind = i % 6
        if kind in (0, 1):
            db.kv.put(run, f"k{k}", {"i": i, "pad": "x" * 30})
        elif kind == 2:
            db.events.append(run, "step", {"i": i})
        elif kind == 3:
            db.state.set(run, f"c{k % 3}", i)
        elif kind == 4:
            db.json.put(run, f"d{k % 4}", {"i": i, "l": [i, i + 1]})
        elif k % 5 == 0:
            db.kv.delete(run, f"k{(k + 1) % 13}")
        else:
            db.traces.record(run, "thought", {"i": i})


def files_in(path, sub):
    return sorted(os.listdir(os.path.join(path, sub)))


@pytest.mark.parametrize("mode", MODES)
def test_replay_and_diff_survive_reopen_snapshots_and_wal_retention(tmp_path, mode):
    path = tmp_path / "db"
    db = inmem.open(path, mode, clock=pinned_clock(), **SMALL)
    a, b = db.begin_run(run_id="a"), db.begin_run(run_id="b")
    work(db, a, 400)
    work(db, b, 300, seed=3)
    n_a = db.replay_run(a).position
    before = [db.replay_run(a, at=k) for k in range(0, n_a + 1, 17)] + [db.replay_run(a)]
    diff = db.diff_runs(a, b)
    # Live: almost all of it is on disk already; the heap holds what the search
    # index has not read yet, and lets it go at the next hand-over to the WAL.
    h = db.info()["shards"][0]["history"]
    assert h["entries"] > 650 and h["on_disk"] >= h["entries"] - 32
    db.search("step")
    h = wait_for(lambda: (h := db.info()["shards"][0]["history"])["in_memory"] <= 32 and h,
                 what="the history held in memory to be let go once indexed")
    assert h["index_bytes"] < 64 * h["entries"], h
    db.snapshot()
    work(db, a, 50, seed=5)
    db.snapshot()  # retention: the segments the first snapshot covers leave the WAL
    after_more = db.replay_run(a)
    db.close()
    assert files_in(path, "history"), "segments the history needs were kept in history/"
    first_wal = min(int(n[:20]) for n in files_in(path, "wal") if n.endswith(".wal"))
    assert first_wal > 0, "WAL retention deleted the covered segments"

    db = inmem.open(path, mode, **SMALL)
    try:
        assert [db.replay_run(a, at=k) for k in range(0, n_a + 1, 17)] + \
            [db.replay_run(a, at=n_a)] == before
        assert db.replay_run(a) == after_more
        assert db.diff_runs(a, b) != [] and db.replay_run(b) is not None
        # b was not written since: its diff against a's state at 402 is what it was.
        assert db.info()["shards"][0]["history"]["in_memory"] == 0
    finally:
        db.close()
    assert diff


def test_deleting_runs_reclaims_their_history_files_and_spares_the_rest(tmp_path):
    path = tmp_path / "db"
    db = inmem.open(path, "buffered", clock=pinned_clock(), **SMALL)
    keep = db.begin_run(run_id="keep")
    work(db, keep, 40)
    doomed = [db.begin_run(run_id=f"gone{i}") for i in range(3)]
    for run in doomed:
        work(db, run, 300, seed=1)
    work(db, keep, 40, seed=2)
    expected = [db.replay_run(keep, at=k) for k in range(0, 82, 3)]
    db.snapshot()
    db.snapshot()
    linked = files_in(path, "history")
    assert len(linked) > 3
    for run in doomed:
        db.runs.delete(run)
    db.snapshot()
    db.snapshot()  # the retention after this one removes what no run names
    left = files_in(path, "history")
    assert len(left) < len(linked), (linked, left)
    assert [db.replay_run(keep, at=k) for k in range(0, 82, 3)] == expected
    db.close()
    db = inmem.open(path, "buffered", **SMALL)
    try:
        assert [db.replay_run(keep, at=k) for k in range(0, 82, 3)] == expected
        assert db.run_status("gone0") == "not_found"
    finally:
        db.close()


CHILD = textwrap.dedent("""
    import itertools, json, pickle, sys
    import inmem
    sys.path[:0] = [{here!r}, {tests!r}]
    from test_history_on_disk import SMALL, pinned_clock, work
    db = inmem.open(sys.argv[1], "strict", clock=pinned_clock(), **SMALL)
    keep = db.begin_run(run_id="keep")
    work(db, keep, 60)
    for i in range(3):
        db.begin_run(run_id=f"gone{{i}}")
        work(db, f"gone{{i}}", 200, seed=i)
    work(db, keep, 60, seed=9)
    views = {{run: [db.replay_run(run, at=k) for k in range(0, 1000, 5)]
             for run in ("keep", "gone0", "gone1", "gone2")}}
    with open(sys.argv[2], "wb") as f:
        pickle.dump(views, f)
    print("ready", flush=True)
    for round in range(4):
        if round == 2:
            for i in range(3):
                db.runs.delete(f"gone{{i}}")
        db.snapshot()
        print("snap", round, flush=True)
    print("done", flush=True)
""")


@pytest.mark.parametrize("point", ["history.before_retain", "history.after_retain",
                                   "snapshot.before_wal_delete", "wal.before_delete"])
@pytest.mark.parametrize("skip", [0, 1, 2])
def test_a_crash_at_every_point_of_history_retention_loses_no_history(tmp_path, point, skip):
    path = tmp_path / "db"
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**child_env(), "INMEM_FAILPOINT": point, "INMEM_FAILPOINT_SKIP": str(skip)}
    seen = tmp_path / "views.pickle"
    proc = subprocess.run([sys.executable, "-c", CHILD.format(here=here, tests=os.path.dirname(here)), str(path), str(seen)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert "ready" in proc.stdout, proc.stderr
    crashed = proc.returncode == 77
    assert crashed or (proc.returncode == 0 and "done" in proc.stdout), proc.stderr
    # What the child's replays showed before its snapshots: every replay must show it again.
    with open(seen, "rb") as f:
        views = pickle.load(f)

    def check(db):
        for run, expected in views.items():
            if run != "keep" and db.run_status(run) == "not_found":
                continue
            assert [db.replay_run(run, at=k) for k in range(0, 1000, 5)] == expected, (point, run)

    db = inmem.open(path, "strict", **SMALL)
    try:
        check(db)
        db.snapshot()
        db.snapshot()
        check(db)
    finally:
        db.close()
    db = inmem.open(path, "strict", **SMALL)
    try:
        check(db)
    finally:
        db.close()
    if point.startswith("history.") and skip < 2:
        assert crashed, f"{point} (skip {skip}) did not fire: {proc.stdout} {proc.stderr}"


ops = st.lists(st.tuples(st.sampled_from(["put", "del", "ev", "st", "js", "snap", "tx"]),
                         st.integers(0, 5), st.integers(0, 1000)), min_size=1, max_size=60)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_replay_at_every_position_is_the_same_after_reopen(tmp_path_factory, seq):
    path = tmp_path_factory.mktemp("prop") / "db"
    db = inmem.open(path, "buffered", clock=pinned_clock(), **SMALL)
    run = db.begin_run(run_id="r")
    for op, k, v in seq:
        if op == "put":
            db.kv.put(run, f"k{k}", v)
        elif op == "del":
            db.kv.delete(run, f"k{k}")
        elif op == "ev":
            db.events.append(run, "e", v)
        elif op == "st":
            db.state.set(run, f"s{k}", v)
        elif op == "js":
            db.json.put(run, f"j{k}", {"v": v})
        elif op == "snap":
            db.snapshot()
        else:
            with db.transaction(run) as tx:
                tx.kv.put(f"k{k}", v)
                tx.kv.put(f"t{k}", -v)
    n = db.info()["shards"][0]["history"]["entries"]
    before = [db.replay_run(run, at=k) for k in range(n + 1)]
    db.close()
    db = inmem.open(path, "buffered", **SMALL)
    try:
        assert db.info()["shards"][0]["history"]["entries"] == n
        assert [db.replay_run(run, at=k) for k in range(n + 1)] == before
    finally:
        db.close()


def test_a_snapshot_does_not_grow_with_writes_per_key(tmp_path):
    sizes = {}
    for writes in (1, 5):
        path = tmp_path / f"w{writes}"
        db = inmem.open(path, "buffered", snapshot_wal_bytes=1 << 30, snapshot_interval_s=None)
        run = db.begin_run(run_id="r")
        for w in range(writes):
            for i in range(3000):
                db.kv.put(run, f"k{i:015d}", bytes([w]) * 100)
        (info,) = db.snapshot()
        sizes[writes] = info.bytes
        assert len(db.replay_run(run, at=1 + 3000 * writes).kv) == 3000
        db.close()
    assert sizes[5] <= 1.2 * sizes[1], sizes


def test_a_damaged_history_record_is_a_corruption_error(tmp_path):
    path = tmp_path / "db"
    db = inmem.open(path, "strict", **SMALL)
    run = db.begin_run(run_id="r")
    for i in range(20):
        db.kv.put(run, "k", i)
    db.close()
    # The records are in the first segment: kept in history/ once the closing
    # snapshot's retention took it out of the WAL.
    (seg,) = files_in(path, "history")
    with open(os.path.join(path, "history", seg), "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    # Whoever reads that history first (the search index rebuilt at the open,
    # or the replay) meets the damage, named with its file and offset.
    try:
        db = inmem.open(path, "strict", **SMALL)
    except inmem.CorruptionError as exc:
        err = exc
    else:
        try:
            with pytest.raises(inmem.CorruptionError) as caught:
                db.replay_run(run)
            err = caught.value
        finally:
            db.close()
    assert seg in str(err) and "crc32c" in str(err)


def test_history_after_a_skipped_damaged_record_reads_the_records_recovery_applied(tmp_path):
    # Recovery points each run's history at the records where the reader found
    # them; past a damaged region it skipped, those places must still name the
    # records that were applied (not ones shifted by the skip).
    path = tmp_path / "db"
    db = inmem.open(path, "strict", snapshot_on_close=False, **SMALL)
    run = db.begin_run(run_id="r")
    for i in range(300):
        db.kv.put(run, f"k{i % 7}", {"i": i, "pad": "p" * 20})
    db.close()
    first = os.path.join(path, "wal", files_in(path, "wal")[0])
    size = os.path.getsize(first)
    with open(first, "r+b") as f:  # a byte in the middle of the oldest segment
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(inmem.CorruptionError):
        inmem.open(path, "strict", snapshot_on_close=False, **SMALL).close()
    db = inmem.open(path, "strict", snapshot_on_close=False, max_corrupt_entries=1, **SMALL)
    try:
        assert db.recovery_report()[0].corrupt_records_skipped == 1
        h = db.info()["shards"][0]["history"]
        assert h["in_memory"] == 0 and h["on_disk"] == h["entries"]
        view = db.replay_run(run)
        assert view.kv == {k: db.kv.get(run, k) for k in db.kv.keys(run)}
        assert len(view.kv) == 7
        seen = [db.replay_run(run, at=k).kv.get("k0") for k in range(h["entries"] + 1)]
        # k0's value only moves forward through the writes that survived.
        values = [v["i"] for v in seen if v is not None]
        assert values == sorted(values) and len(set(values)) > 30
    finally:
        db.close()


def test_runs_written_in_turn_take_one_extent_per_record(tmp_path):
    # Agents writing side by side interleave their groups in each WAL record;
    # the index still needs one extent per run and record, not one per write.
    path = tmp_path / "db"
    db = inmem.open(path, "buffered", snapshot_on_close=False, flush_interval_ms=10_000)
    try:
        a, b = db.begin_run(run_id="a"), db.begin_run(run_id="b")
        with db.pipeline() as p:
            for i in range(500):
                p.kv.put(a, f"k{i % 50}", i)
                p.kv.put(b, f"k{i % 50}", -i)
        store = db._backend.store
        with store.lock:
            store.flush()
        shard = db._backend.engine
        for run in (a, b):
            h = shard.runs[run].journal
            assert len(h.ext_loc) <= 2, (run, len(h.ext_loc))  # its creation's record, this one
        views = {run: [db.replay_run(run, at=k) for k in [*range(0, 502, 7), 501]]
                 for run in (a, b)}
        assert views[a][-1].kv["k49"] == 499 and views[b][-1].kv["k49"] == -499
        assert views[a][-2].kv["k49"] == 449 and views[b][-2].kv["k45"] == -495
    finally:
        db.close()
    db = inmem.open(path, "buffered", snapshot_on_close=False)
    try:
        for run in (a, b):
            assert [db.replay_run(run, at=k) for k in [*range(0, 502, 7), 501]] == views[run]
            assert len(db._backend.engine.runs[run].journal.ext_loc) <= 3
    finally:
        db.close()


def test_a_run_deleted_and_begun_again_in_one_record_replays_its_second_life(tmp_path):
    # One buffered flush, so one WAL record: run x's first life, its deletion
    # and its second life sit in it, interleaved with run y's writes.
    path = tmp_path / "db"
    db = inmem.open(path, "buffered", snapshot_on_close=False, flush_interval_ms=10_000)
    try:
        y = db.begin_run(run_id="y")
        db.begin_run(run_id="x")
        db.kv.put("y", "a", 1)
        db.kv.put("x", "first", 1)
        db.runs.delete("x")  # in one batch of the record with what follows for x
        db.begin_run(run_id="x")
        db.kv.put("x", "second", 2)
        db.kv.put("y", "a", 2)
        db.kv.put(y, "b", 3)
        live = {run: [db.replay_run(run, at=k) for k in range(db.replay_run(run).position + 1)]
                for run in ("x", y)}
    finally:
        db.close()
    db = inmem.open(path, "buffered", snapshot_on_close=False)
    try:
        assert db.replay_run("x").kv == {"second": 2}
        assert db.replay_run(y).kv == {"a": 2, "b": 3}
        for run, views in live.items():
            assert [db.replay_run(run, at=k) for k in range(len(views))] == views, run
        assert db.info()["shards"][0]["history"]["in_memory"] == 0
    finally:
        db.close()
