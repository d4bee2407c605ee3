"""Compaction of history files: replay, at= and diff are the same before and after it, and after a crash.

History files that hold mostly records of deleted runs are compacted: the
live records are copied into a new file, a move note says where each went,
the index is pointed there and the old file goes. These tests check that
replay at every position, `at=` and diff_runs answer the same after an
explicit and an automatic compaction, after snapshots and reopening, after a
crash at every failpoint of the compaction (and a kill -9 in the middle of
one), and for random sequences of writes, run deletions, compactions and
reopenings against a model that keeps every write in memory.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

import inmem
from inmem.processes import child_env
from inmem.shard.history_compaction import POINTS
from polling import wait_for

from .test_history_on_disk import SMALL, files_in, pinned_clock, work

MANUAL = {**SMALL, "history_compact_dead_fraction": None}
HERE = os.path.dirname(os.path.abspath(__file__))


def churn(db, rounds: int = 6) -> None:
    """Two live runs and, between their writes, runs that are deleted later."""
    keep = db.begin_run(run_id="keep")
    other = db.begin_run(run_id="other")
    for r in range(rounds):
        work(db, keep, 30, seed=r)
        work(db, other, 10, seed=r)
        gone = db.begin_run(run_id=f"gone{r}")
        work(db, gone, 150, seed=r)


def views(db) -> dict:
    out = {}
    for run in ("keep", "other"):
        n = db.replay_run(run).position
        out[run] = [db.replay_run(run, at=k) for k in range(n + 1)]
    out["diff"] = db.diff_runs("keep", "other")
    return out


def compacted(path) -> list:
    return [n for n in files_in(path, "history") if n.endswith(".hist")]


@pytest.mark.parametrize("mode", ["buffered", "strict"])
def test_an_explicit_compaction_keeps_replay_at_and_diff(tmp_path, mode):
    path = tmp_path / "db"
    db = inmem.open(path, mode, clock=pinned_clock(), **MANUAL)
    churn(db)
    db.snapshot()
    db.snapshot()  # the segments leave the WAL: history/ holds those the runs name
    for r in range(6):
        db.runs.delete(f"gone{r}")
    before = views(db)
    on_disk = sum(os.path.getsize(path / "history" / n) for n in files_in(path, "history"))
    (report,) = db.compact_history()
    assert report["shard"] == 0 and report["files"] >= 3, report
    assert report["bytes_after"] < 0.7 * report["bytes_before"], report
    assert compacted(path) and any(n.endswith(".moved") for n in files_in(path, "history"))
    assert views(db) == before
    # Nothing left to do: a second request compacts nothing.
    assert db.compact_history()[0]["files"] == 0
    # A note goes once every retained snapshot was taken after the move (a
    # snapshot at the very WAL position of the move could predate it: kept).
    db.snapshot()
    assert any(n.endswith(".moved") for n in files_in(path, "history"))
    side = db.begin_run(run_id="side")
    for i in range(2):
        db.kv.put(side, f"later{i}", i)
        db.snapshot()
    names = files_in(path, "history")
    assert not any(n.endswith(".moved") for n in names), \
        f"every retained snapshot is younger than the moves, so the notes go: {names}"
    after = sum(os.path.getsize(path / "history" / n) for n in names)
    assert after < 0.7 * on_disk, (on_disk, after)
    assert views(db) == before
    db.close()
    with inmem.open(path, mode, **MANUAL) as db:
        assert views(db) == before


def test_a_snapshot_taken_before_the_compaction_still_finds_every_record(tmp_path):
    """Reopening from a snapshot whose index names the moved files: the notes translate it."""
    path = tmp_path / "db"
    db = inmem.open(path, "strict", clock=pinned_clock(), snapshot_on_close=False, **MANUAL)
    churn(db)
    db.snapshot()
    db.snapshot()
    for r in range(6):
        db.runs.delete(f"gone{r}")
    db.snapshot()  # its index names the files compaction is about to move records out of
    before = views(db)
    assert db.compact_history()[0]["files"] >= 3
    moved = [n for n in files_in(path, "history") if n.endswith(".moved")]
    assert moved
    for note in moved:
        assert not (path / "history" / note[:-len(".moved")]).exists(), "the source is gone"
    db.close()  # no snapshot on close: the newest snapshot predates the compaction
    with inmem.open(path, "strict", **MANUAL) as db:
        assert views(db) == before
        assert db.compact_history()[0]["files"] == 0


def test_the_shard_compacts_by_itself_once_a_file_is_mostly_dead(tmp_path):
    path = tmp_path / "db"
    db = inmem.open(path, "buffered", clock=pinned_clock(), **SMALL)  # the default policy
    churn(db)
    db.snapshot()
    db.snapshot()
    assert not compacted(path)
    for r in range(6):
        db.runs.delete(f"gone{r}")
    before = views(db)
    wait_for(lambda: compacted(path), what="the background upkeep to compact history files")
    wait_for(lambda: not db._backend.store.compactor.pending(), what="the compaction to finish")
    assert views(db) == before
    db.close()
    with inmem.open(path, "buffered", **SMALL) as db:
        assert views(db) == before


def _mostly_dead(path):
    """A store without a compaction policy whose history files are mostly deleted runs'.

    Strict, so that each write is its own WAL record: in buffered mode the
    records' bounds follow when the flusher ran, and some timings leave no
    file dead enough to measure (seen under load).
    """
    db = inmem.open(path, "strict", clock=pinned_clock(), **MANUAL)
    churn(db, rounds=3)
    db.snapshot()
    db.snapshot()
    for r in range(3):
        db.runs.delete(f"gone{r}")
    return db


def test_compaction_is_off_without_a_policy_and_the_option_is_checked(tmp_path):
    path = tmp_path / "db"
    db = _mostly_dead(path)
    store = db._backend.store
    for _ in range(5):
        assert store.compact_step() is False
    assert not compacted(path)
    # The measure that policy uses: the files are mostly dead.
    assert store.compactor.measure(0.5)
    db.close()
    for bad in (0, 1.5, "half", True):
        with pytest.raises(inmem.InvalidOption):
            inmem.open(tmp_path / "bad", "buffered", history_compact_dead_fraction=bad)


def test_an_inmemory_store_has_nothing_to_compact():
    with inmem.open() as db:
        assert db.compact_history() == []


# -- crashes ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import pickle, sys
    sys.path[:0] = [{tests!r}]
    import inmem
    from durability.test_history_compaction import MANUAL, churn, views
    from durability.test_history_on_disk import pinned_clock
    db = inmem.open(sys.argv[1], "strict", clock=pinned_clock(), **MANUAL)
    churn(db)
    db.snapshot()
    db.snapshot()
    for r in range(6):
        db.runs.delete(f"gone{{r}}")
    with open(sys.argv[2], "wb") as f:
        pickle.dump(views(db), f)
    print("ready", flush=True)
    for _ in range({loops}):
        print("compacted", db.compact_history(), flush=True)
        db.snapshot()
        db.snapshot()
    print("done", flush=True)
""")


def run_child(tmp_path, env: dict, loops: int = 1, wait: bool = True):
    path = tmp_path / "db"
    seen = tmp_path / "views.pickle"
    script = CHILD.format(tests=os.path.dirname(HERE), loops=loops)
    args = [sys.executable, "-c", script, str(path), str(seen)]
    if not wait:
        return path, seen, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env={**child_env(), **env})
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={**child_env(), **env})
    return path, seen, proc


def check_reopened(path, expected: dict) -> None:
    """Reopen: the same answers; compact and snapshot again: still; reopen once more: still."""
    with inmem.open(path, "strict", **MANUAL) as db:
        assert views(db) == expected
        db.compact_history()
        db.snapshot()
        db.snapshot()
        assert views(db) == expected
    with inmem.open(path, "strict", **MANUAL) as db:
        assert views(db) == expected
    names = files_in(path, "history")
    assert not [n for n in names if n.endswith(".tmp")], names


CRASH_POINTS = POINTS


@pytest.mark.parametrize("skip", [0, 2])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_every_step_of_a_compaction_loses_no_history(tmp_path, point, skip):
    env = {"INMEM_FAILPOINT": point, "INMEM_FAILPOINT_SKIP": str(skip)}
    path, seen, proc = run_child(tmp_path, env)
    assert "ready" in proc.stdout, proc.stderr
    assert proc.returncode == 77, f"{point} (skip {skip}) did not fire: {proc.stdout} {proc.stderr}"
    assert "done" not in proc.stdout
    with open(seen, "rb") as f:
        expected = pickle.load(f)
    check_reopened(path, expected)


def test_kill_9_in_the_middle_of_compactions_loses_no_history(tmp_path):
    path, seen, proc = run_child(tmp_path, {}, loops=1000, wait=False)
    try:
        out = b""
        while out.count(b"compacted") < 3:
            line = proc.stdout.readline()
            assert line, f"the child ended early: {proc.stderr.read()[-2000:]!r}"
            out += line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with open(seen, "rb") as f:
        expected = pickle.load(f)
    check_reopened(path, expected)


# -- the property: replay against a model ------------------------------------------------

steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2), st.integers(0, 7), st.integers(0, 99)),
    st.tuples(st.just("burst"), st.integers(0, 2), st.integers(1, 40)),
    st.tuples(st.just("mix"), st.integers(0, 2), st.integers(0, 2), st.integers(10, 60)),
    st.tuples(st.just("mix"), st.integers(0, 2), st.integers(0, 2), st.integers(10, 60)),
    st.tuples(st.just("delete_run"), st.integers(0, 2)),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
), min_size=1, max_size=60)


def model_views(entries: list) -> list:
    """The kv of the run after its creation and after each of its writes."""
    state: dict = {}
    out = [dict(state)]
    for key, value in entries:
        state[key] = value
        out.append(dict(state))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("mix", 0, 1, 60), ("snapshot",), ("delete_run", 1), ("compact",), ("reopen",),
          ("mix", 0, 2, 30), ("snapshot",), ("delete_run", 2), ("reopen",), ("compact",),
          ("delete_run", 0), ("put", 0, 1, 5), ("snapshot",), ("compact",), ("reopen",)])
def test_replay_matches_a_model_through_deletions_compactions_and_reopens(tmp_path_factory, seq):
    path = tmp_path_factory.mktemp("compact") / "db"
    # Compaction on request only, so that each step's outcome does not depend on
    # the timing of the background upkeep.
    opts = {**MANUAL, "snapshot_retention": 1}
    db = inmem.open(path, "buffered", **opts)
    model: dict = {}      # run id -> [(key, value), ...] in journal order
    created: dict = {}    # run id -> journal entries its creation took
    generation = [0, 0, 0]

    def run_id(i):
        return f"r{i}.{generation[i]}"

    def write(i, key, value):
        rid = run_id(i)
        if rid not in model:
            db.begin_run(run_id=rid)
            model[rid] = []
            created[rid] = db.replay_run(rid).position
        db.kv.put(rid, f"k{key}", value)
        model[rid].append((f"k{key}", value))

    try:
        for step in seq:
            op = step[0]
            if op == "put":
                write(step[1], step[2], step[3])
            elif op == "burst":
                for j in range(step[2]):
                    write(step[1], j % 8, j)
            elif op == "mix":
                # two runs' writes in the same records and segments: once one
                # is deleted, the files are part dead
                for j in range(step[3]):
                    write(step[1], j % 8, j)
                    write(step[2], j % 5, -j)
            elif op == "delete_run":
                rid = run_id(step[1])
                if rid in model:
                    db.runs.delete(rid)
                    del model[rid]
                    generation[step[1]] += 1
            elif op == "snapshot":
                db.snapshot()
            elif op == "compact":
                if db.compact_history()[0]["files"]:
                    event("a compaction moved records")
            else:
                db.close()
                db = inmem.open(path, "buffered", **opts)
        for rid, entries in model.items():
            expected = model_views(entries)
            base = created[rid]
            got = [db.replay_run(rid, at=base + k).kv for k in range(len(entries) + 1)]
            assert got == expected, rid
    finally:
        db.close()


def test_info_survives_a_wal_segment_deleted_while_it_is_counted(tmp_path, monkeypatch):
    """info() sums the WAL's segment sizes while retention may delete one: not an error."""
    db = inmem.open(tmp_path / "db", "buffered", **MANUAL)
    try:
        run = db.begin_run(run_id="r")
        for i in range(200):
            db.kv.put(run, f"k{i}", "x" * 50)
        db.snapshot()
        real_scandir = os.scandir

        class Vanishing:
            """os.scandir whose entries' files are gone by the time they are stat()ed."""

            def __init__(self, path):
                self.inner = real_scandir(path)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.inner.close()

            def __iter__(self):
                for entry in self.inner:
                    yield type("Gone", (), {"name": entry.name, "path": entry.path,
                                            "is_file": lambda self: True,
                                            "stat": _gone})()

        def _gone(self):
            raise FileNotFoundError(2, "deleted by retention", self.path)

        monkeypatch.setattr(os, "scandir", Vanishing)
        shard = db.info()["shards"][0]
        assert shard["wal_bytes"] == 0
    finally:
        monkeypatch.undo()
        db.close()


@pytest.mark.parametrize("named", [False, True])
def test_a_file_retention_removed_under_a_compaction_ends_it_without_an_error(
        tmp_path, caplog, monkeypatch, named):
    # Compaction works in slices; between them the last run naming its file may be
    # deleted and retention remove the file. That is no failure (nothing was left to
    # compact); the same error while runs still name the file is one, and says so.
    from inmem.errors import CorruptionError
    db = _mostly_dead(tmp_path / "db")
    store = db._backend.store
    compactor, files = store.compactor, store.engine.history_files
    queue = compactor.measure(0.5)
    assert queue
    compactor.queue = list(queue)
    no = queue[0][1]

    def removed(*args):
        raise CorruptionError(f"the history file {queue[0][0]} is in neither wal nor history")
    monkeypatch.setattr(compactor, "_copy", removed)
    live = files.live[no]
    if not named:
        files.live[no] = 0  # what deleting the last run naming it leaves
    try:
        with caplog.at_level("WARNING", logger="inmem.shard"):
            compactor.step(store.lock)
        assert compactor.job is None  # the job ended either way
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert bool(errors) == named, caplog.text
    finally:
        files.live[no] = live
        monkeypatch.undo()
        db.close()
