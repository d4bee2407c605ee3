"""Orphaned runs: active runs that a recovery found without an end.

After a durable store is reopened, every run that was still active is listed
by `orphaned_runs()` (by creation), reported as "orphaned" by `run_status`,
`runs.get` and `runs.list(status="orphaned")`, and named in the recovery
report. It keeps accepting writes and follows the transitions of "active";
ending, aborting, cancelling or archiving it clears the mark. Paused and
ended runs are never orphaned, and a store that was never recovered has none.
"""

from __future__ import annotations

import pytest

import inmem

MODES = ["strict", "buffered"]


def reopen(path, mode="strict", **options):
    return inmem.open(path, durability=mode, **options)


def reported_orphans(db) -> list:
    return sorted(r for result in db.recovery_report() for r in result.orphaned_runs)


@pytest.fixture
def store(tmp_path, clock_factory):
    """A closed store holding one run in each status; returns (path, clock)."""
    path = tmp_path / "db"
    clock = clock_factory()
    with reopen(path, clock=clock) as db:
        for run_id in ("left-1", "done", "failed", "cancelled", "archived", "paused", "left-2"):
            clock.advance(1)
            db.begin_run(run_id=run_id, name=run_id, tags=("batch",))
            db.kv.put(run_id, "k", run_id)
        db.end_run("done")
        db.abort_run("failed", "boom")
        db.runs.cancel("cancelled")
        db.runs.archive("archived")
        db.runs.pause("paused")
        db.events.append("left-2", "working", {"step": 1})
    return path, clock


def test_a_store_never_recovered_has_no_orphans(db):
    run = db.begin_run()
    db.kv.put(run, "k", 1)
    assert db.orphaned_runs() == []
    assert db.run_status(run) == "active"
    assert db.runs.list(status="orphaned") == []


def test_a_fresh_durable_store_has_no_orphans(tmp_path):
    with reopen(tmp_path / "db") as db:
        run = db.begin_run()
        assert db.orphaned_runs() == []
        assert db.run_status(run) == "active"
        assert reported_orphans(db) == []


@pytest.mark.parametrize("mode", MODES)
def test_active_runs_are_orphaned_after_reopen(tmp_path, clock_factory, mode):
    path = tmp_path / "db"
    clock = clock_factory()
    with reopen(path, mode, clock=clock) as db:
        # Created in this order; ids sort the other way, so the listing must
        # follow creation and not the id.
        for run_id in ("zeta", "mid", "alpha"):
            clock.advance(1)
            db.begin_run(run_id=run_id)
        db.end_run("mid")
    with reopen(path, mode, clock=clock) as db:
        assert db.orphaned_runs() == ["zeta", "alpha"]
        assert db.run_status("zeta") == "orphaned"
        assert db.run_status("alpha") == "orphaned"
        assert db.run_status("mid") == "completed"
        assert reported_orphans(db) == ["alpha", "zeta"]


def test_every_status_after_reopen(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        assert db.orphaned_runs() == ["left-1", "left-2"]
        assert {r: db.run_status(r) for r in ("left-1", "done", "failed", "cancelled",
                                               "archived", "paused", "left-2")} == {
            "left-1": "orphaned", "done": "completed", "failed": "failed",
            "cancelled": "cancelled", "archived": "archived", "paused": "paused",
            "left-2": "orphaned"}
        assert [i.run_id for i in db.runs.list(status="orphaned")] == ["left-1", "left-2"]
        assert all(i.status == "orphaned" for i in db.runs.list(status="orphaned"))
        assert db.runs.get("left-1").status == "orphaned"
        assert "paused" in [i.run_id for i in db.runs.list(status="paused")]
        assert [i.run_id for i in db.runs.list(status="orphaned", tag="batch")] == \
            ["left-1", "left-2"]
        assert db.runs.list(status="orphaned", tag="other") == []
        assert reported_orphans(db) == ["left-1", "left-2"]
        # The data of an orphaned run is all there.
        assert db.kv.get("left-2", "k") == "left-2"
        assert db.events.count("left-2") == 1


def test_orphaned_runs_accept_writes_and_stay_orphaned(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        assert db.kv.put("left-1", "k", "resumed") == 2
        db.json.put("left-1", "doc", {"a": 1})
        db.state.set("left-1", "cell", 1)
        db.events.append("left-1", "resumed", {})
        db.traces.record("left-1", "thought", {"t": "back"})
        with db.transaction("left-1") as tx:
            tx.kv.put("tx", True)
        assert db.kv.get("left-1", "tx") is True
        assert db.run_status("left-1") == "orphaned"
        assert db.orphaned_runs() == ["left-1", "left-2"]
        view = db.replay_run("left-1")
        assert view.kv == {"k": "resumed", "tx": True}


@pytest.mark.parametrize("finish, status", [
    ("end", "completed"), ("abort", "failed"), ("cancel", "cancelled"),
    ("archive", "archived"), ("set_status", "completed"),
])
def test_ending_clears_the_mark(store, finish, status):
    path, clock = store
    with reopen(path, clock=clock) as db:
        {"end": lambda: db.end_run("left-1"),
         "abort": lambda: db.abort_run("left-1", "gave up"),
         "cancel": lambda: db.runs.cancel("left-1"),
         "archive": lambda: db.runs.archive("left-1"),
         "set_status": lambda: db.runs.set_status("left-1", "completed")}[finish]()
        assert db.run_status("left-1") == status
        assert db.orphaned_runs() == ["left-2"]
        assert [i.run_id for i in db.runs.list(status="orphaned")] == ["left-2"]
        assert "left-1" in [i.run_id for i in db.runs.list(status=status)]
        if finish == "abort":
            assert db.runs.get("left-1").error == "gave up"
    # The end is durable: the next recovery does not orphan the run again.
    with reopen(path, clock=clock) as db:
        assert db.run_status("left-1") == status
        assert db.orphaned_runs() == ["left-2"]


def test_an_orphaned_run_follows_the_transitions_of_active(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        db.runs.pause("left-1")
        assert db.run_status("left-1") == "paused"
        assert db.orphaned_runs() == ["left-2"]
        db.runs.resume("left-1")
        assert db.run_status("left-1") == "active"
        # active -> active is not in the table, so neither is orphaned -> active.
        with pytest.raises(inmem.InvalidStatusTransition):
            db.runs.set_status("left-2", "active")
        assert db.run_status("left-2") == "orphaned"
        with pytest.raises(inmem.InvalidStatusTransition):
            db.runs.resume("left-2")
    # Left active again at close, so the next recovery orphans it once more.
    with reopen(path, clock=clock) as db:
        assert db.orphaned_runs() == ["left-1", "left-2"]


def test_ended_runs_cannot_be_resumed_by_writes(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        db.end_run("left-1")
        with pytest.raises(inmem.RunNotActive):
            db.kv.put("left-1", "k", "late")
        assert db.kv.get("left-1", "k") == "left-1"


def test_deleting_an_orphaned_run(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        assert db.runs.delete("left-1") is True
        assert db.orphaned_runs() == ["left-2"]
        assert db.run_status("left-1") == "not_found"
    with reopen(path, clock=clock) as db:
        assert db.orphaned_runs() == ["left-2"]
        assert db.runs.get("left-1") is None


def test_runs_created_after_recovery_are_not_orphaned(store):
    path, clock = store
    with reopen(path, clock=clock) as db:
        clock.advance(1)
        fresh = db.begin_run(run_id="fresh")
        assert db.run_status(fresh) == "active"
        assert db.orphaned_runs() == ["left-1", "left-2"]
    with reopen(path, clock=clock) as db:
        assert db.orphaned_runs() == ["left-1", "left-2", "fresh"]


def test_the_mark_survives_a_snapshot(store):
    path, clock = store
    with reopen(path, clock=clock, snapshot_on_close=False) as db:
        db.end_run("left-2")
        db.snapshot()
        db.kv.put("left-1", "after", 1)
    with reopen(path, clock=clock) as db:
        assert db.orphaned_runs() == ["left-1"]
        assert db.run_status("left-2") == "completed"
        assert db.kv.get("left-1", "after") == 1
