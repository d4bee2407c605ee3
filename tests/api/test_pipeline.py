"""Pipelines: batched operations with results in order; the first error raised after every
operation ran, or every error in place with raise_on_error=False."""

from __future__ import annotations

import pytest

import inmem

from .support import check_chain


def test_results_in_order(db, run):
    with db.pipeline() as p:
        for i in range(100):
            p.kv.put(run, f"k{i:03}", i)
        p.kv.get(run, "k042")
        p.kv.get(run, "missing")
        p.kv.put(run, "k000", "again")
        results = p.execute()
    assert results[:100] == [1] * 100
    assert results[100:] == [42, None, 2]
    assert db.kv.keys(run, prefix="k")[:3] == ["k000", "k001", "k002"]
    assert db.kv.get(run, "k099") == 99


def test_every_primitive_in_one_pipeline(db, run):
    with db.pipeline() as p:
        p.kv.put(run, "a", 1)
        p.events.append(run, "t", {"x": 1})
        p.events.append(run, "t", {"x": 2})
        p.state.init(run, "s", 0)
        p.json.put(run, "d", {"l": []})
        p.json.array_push(run, "d", "$.l", 5)
        p.traces.record(run, "thought", {"why": "because"})
        p.events.count(run)
        p.kv.get_many(run, ["a", "b"])
        results = p.execute()
    assert results[0] == 1
    e0, e1 = results[1], results[2]
    assert (e0.sequence, e1.sequence) == (0, 1)
    check_chain([e0, e1])
    assert results[3] == 1
    assert results[4] == 1
    assert results[5] == 1
    assert db.traces.get(run, results[6]).data == {"why": "because"}
    assert results[7] == 2
    assert results[8] == [1, None]


def test_error_is_returned_in_place_and_the_rest_still_runs(db, run):
    db.kv.put(run, "v", "x")
    with db.pipeline() as p:
        p.kv.put(run, "before", 1)
        p.kv.cas(run, "v", 7, "wrong version")
        p.kv.put(run, "after", 2)
        p.kv.put("no-such-run", "k", 1)
        p.state.init(run, "s", 1)
        p.state.init(run, "s", 2)
        p.kv.get(run, "after")
        results = p.execute(raise_on_error=False)
    assert results[0] == 1
    assert isinstance(results[1], inmem.VersionMismatch)
    assert (results[1].expected, results[1].actual) == (7, 1)
    assert results[2] == 1
    assert isinstance(results[3], inmem.RunNotFound)
    assert results[4] == 1
    assert isinstance(results[5], inmem.StateExists)
    assert results[6] == 2
    assert db.kv.get(run, "v") == "x"
    assert db.kv.get(run, "before") == 1
    assert db.state.read(run, "s").value == 1


def test_run_not_active_in_place(db):
    done = db.begin_run()
    live = db.begin_run()
    db.end_run(done)
    with db.pipeline() as p:
        p.kv.put(done, "k", 1)
        p.kv.put(live, "k", 1)
        results = p.execute(raise_on_error=False)
    assert isinstance(results[0], inmem.RunNotActive)
    assert results[1] == 1


def test_pipeline_across_runs(db):
    runs = [db.begin_run() for _ in range(5)]
    with db.pipeline() as p:
        for i, r in enumerate(runs):
            p.kv.put(r, "k", i)
            p.events.append(r, "t", i)
        results = p.execute()
    assert len(results) == 10
    for i, r in enumerate(runs):
        assert results[2 * i] == 1
        assert results[2 * i + 1].sequence == 0
        assert db.kv.get(r, "k") == i


def test_reads_of_every_run_see_what_was_queued_before_them_and_nothing_after(db):
    # runs.list reads every shard of a cluster; the runs begun around it live on
    # whichever shards their ids hash to.
    tag = "order"
    with db.pipeline() as p:
        p.runs.list(tag=tag)
        p.begin_run(run_id="order-a", tags=[tag])
        p.runs.list(tag=tag)
        for i in range(6):
            p.begin_run(run_id=f"order-b{i}", tags=[tag])
        p.kv.put("order-b5", "k", 1)
        p.runs.list(tag=tag)
        p.runs.list(tag="none")
        p.begin_run(run_id="order-c", tags=[tag])
        results = p.execute()
    ids = [[r.run_id for r in results[i]] for i in (0, 2, 10, 11)]
    assert ids[0] == [] and ids[1] == ["order-a"] and ids[3] == []
    assert sorted(ids[2]) == sorted(["order-a", *(f"order-b{i}" for i in range(6))])
    assert results[9] == 1 and results[12] == "order-c"
    assert sorted(r.run_id for r in db.runs.list(tag=tag))[-1] == "order-c"


def test_leaving_the_block_does_not_run_twice(db, run):
    with db.pipeline() as p:
        p.kv.put(run, "once", 1)
        p.events.append(run, "once", 1)
        p.execute()
    assert db.kv.get_versioned(run, "once").version == 1
    assert db.events.count(run) == 1


def test_empty_pipeline(db):
    with db.pipeline() as p:
        assert p.execute() == []


def test_pipeline_is_not_a_transaction(db, run):
    with db.pipeline() as p:
        p.kv.put(run, "first", 1)
        p.kv.cas(run, "first", 99, "fails")
        p.kv.put(run, "third", 3)
        with pytest.raises(inmem.VersionMismatch):
            p.execute()
    # The failure in the middle does not undo its neighbours.
    assert db.kv.get(run, "first") == 1
    assert db.kv.get(run, "third") == 3


def test_values_are_captured_at_the_call(db, run):
    value = {"l": [1]}
    with db.pipeline() as p:
        p.kv.put(run, "k", value)
        p.events.append(run, "t", value)
        value["l"].append("changed before execute")
        results = p.execute()
    assert db.kv.get(run, "k") == {"l": [1]}
    assert results[1].payload == {"l": [1]}
    assert db.events.read(run, 0).payload == {"l": [1]}


def test_execute_raises_the_first_error_after_running_every_operation(db, run):
    db.kv.put(run, "v", "x")
    p = db.pipeline()
    p.kv.put(run, "before", 1)
    p.kv.cas(run, "v", 7, "wrong version")
    p.kv.put("no-such-run", "k", 1)
    p.kv.put(run, "after", 2)
    with pytest.raises(inmem.VersionMismatch) as info:
        p.execute()
    # The operation's own error and message, with a note saying which one it was.
    assert (info.value.expected, info.value.actual) == (7, 1)
    assert any("operation 1 (kv.cas) of 4" in note for note in info.value.__notes__)
    # Every operation ran, those after the failures included, and the queue is empty.
    assert db.kv.get(run, "before") == 1 and db.kv.get(run, "after") == 2
    assert db.kv.get(run, "v") == "x"
    assert len(p) == 0 and p.execute() == []


def test_raise_on_error_false_returns_the_same_errors_in_place(db, run):
    p = db.pipeline()
    p.kv.put("no-such-run", "k", 1)
    p.state.init(run, "s", 1)
    p.state.init(run, "s", 2)
    results = p.execute(raise_on_error=False)
    assert isinstance(results[0], inmem.RunNotFound) and results[1] == 1
    assert isinstance(results[2], inmem.StateExists)
    assert not hasattr(results[0], "__notes__")  # only a raised error carries the note


def test_a_clean_exit_sends_what_is_queued_and_raises_its_first_error(db, run):
    with pytest.raises(inmem.RunNotFound):
        with db.pipeline() as p:
            p.kv.put(run, "queued", 1)
            p.kv.put("no-such-run", "k", 1)
    assert db.kv.get(run, "queued") == 1


def test_an_exception_in_the_block_sends_nothing(db, run):
    with pytest.raises(KeyError):
        with db.pipeline() as p:
            p.kv.put(run, "never", 1)
            raise KeyError("stop")
    assert db.kv.get(run, "never") is None


def test_a_failed_trace_tree_raises_too(db, run):
    root = db.traces.record(run, "thought", {"x": 1})
    p = db.pipeline()
    p.traces.tree(run, root)
    p.traces.tree(run, "no-such-trace")
    with pytest.raises(inmem.TraceNotFound):
        p.execute()
    p.traces.tree(run, root)
    (tree,) = p.execute()
    assert tree.trace.id == root and tree.children == []


def test_transitions_cannot_be_pipelined(db, run):
    p = db.pipeline()
    with pytest.raises(inmem.InvalidValue, match="cannot be pipelined"):
        p.state.transition(run, "s", lambda s: (s.value, None))
    assert len(p) == 0


def test_an_unexpected_error_in_one_embedded_operation_fails_it_alone(tmp_path, monkeypatch, caplog):
    # A defect in one operation's code must not stop a pipeline half way on an
    # embedded store (the rest unapplied, a bare exception): it is that operation's
    # InmemError in place, as a cluster's shard answers it, and the traceback is logged.
    db = inmem.open(tmp_path / "db")
    try:
        run = db.begin_run()
        engine = db._backend.engine

        def broken(*args):
            raise ZeroDivisionError("a defect")
        monkeypatch.setitem(engine.ops, "tr.roots", broken)
        with caplog.at_level("ERROR", logger="inmem.shard"):
            with db.pipeline() as p:
                p.kv.put(run, "before", 1)
                p.traces.roots(run)
                p.kv.put(run, "after", 2)
                got = p.execute(raise_on_error=False)
        assert got[0] == 1 and got[2] == 1, got
        assert type(got[1]) is inmem.InmemError and "internal error in tr.roots" in str(got[1])
        assert "ZeroDivisionError: a defect" in str(got[1])
        assert "ZeroDivisionError" in caplog.text
        assert db.kv.get(run, "after") == 2
    finally:
        db.close()
