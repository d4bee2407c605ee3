"""How many marks (`saver/<hex>`, see inmem/langgraph/indexed.py) a thread keeps.

Each memory of indexed run ids puts a mark of its own in the threads it
writes with a LangGraph run id. A server that made an `InmemSaver(db)` per
request left one mark per request in each thread, for ever: savers over one
database object now share a memory and its mark, and a put that indexes a
run deletes the marks of its thread not put for an hour before its own.
"""

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from inmem.database import Database
from inmem.langgraph import InmemSaver
from inmem.langgraph.indexed import MARK_IDLE_S, idle_marks
from inmem.langgraph.keys import thread_run


def _put(saver, thread, run_id, ns=""):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    saver.put(config, checkpoint, {"source": "loop", "step": 1, "run_id": run_id}, {})


def _marks(db, thread) -> list:
    return db.kv.keys(thread_run("langgraph:", thread), "saver/")


def _runs_of(saver, thread) -> list:
    return sorted(t.metadata.get("run_id")
                  for t in saver.list({"configurable": {"thread_id": thread}}))


def test_a_saver_per_request_leaves_one_mark_in_a_thread(db):
    for i in range(300):  # a request each: a new saver, a run of its own or a rerun
        _put(InmemSaver(db), "t", f"r{i % 5}")
    assert len(_marks(db, "t")) == 1
    assert len(_runs_of(InmemSaver(db), "t")) == 300
    InmemSaver(db).delete_for_runs(["r0", "r1", "r2", "r3", "r4"])
    assert _runs_of(InmemSaver(db), "t") == []


@pytest.mark.parametrize("backend", ["embedded"])
def test_marks_idle_for_an_hour_are_deleted_by_the_next_put_that_indexes_a_run(
        clocked_db, clock):
    db = clocked_db
    run = thread_run("langgraph:", "t")
    a = InmemSaver(db)
    _put(a, "t", "r1")
    gone = InmemSaver(Database(db._backend))  # another process's, which then ends
    _put(gone, "t", "r1", ns="child:1")  # (another namespace: a's head stays a's)
    db.kv.put(run, "saver/older", None)  # an older version's, just as empty
    clock.advance(30 * 60)
    recent = InmemSaver(Database(db._backend))  # another process's, half an hour later
    _put(recent, "t", "r1", ns="child:1")
    clock.advance(40 * 60)
    _put(a, "t", "r1")  # trusted: one kv.put_many, nothing read
    assert len(_marks(db, "t")) == 4
    _put(a, "t", "r2")  # a run indexed here: the others' marks are read
    assert sorted(_marks(db, "t")) == sorted([a._indexed.mark_key, recent._indexed.mark_key])


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_live_mark_deleted_as_idle_costs_its_owner_an_index_write_and_loses_nothing(
        clocked_db, clock):
    from lgraph.test_saver import Recording
    db = clocked_db
    recording = Recording(db._backend)
    a = InmemSaver(Database(recording))
    b = InmemSaver(Database(db._backend))  # another memory, as another process's
    _put(a, "t", "r1")
    _put(a, "t", "r1")
    clock.advance(2 * MARK_IDLE_S)  # a is idle for two hours: b deletes its mark
    _put(b, "t", "r2")
    assert a._indexed.mark_key not in _marks(db, "t")
    b.delete_for_runs(["r1"])  # takes r1's index entry away with its checkpoints
    recording.ops.clear()
    _put(a, "t", "r1")  # its mark's version is not one more: the entry is written again
    assert [op for op, _ in recording.ops][:2] == ["kv.put_many", "js.set"]
    b.delete_for_runs(["r1"])
    assert _runs_of(b, "t") == ["r2"]


def test_savers_over_one_database_share_a_memory_and_other_objects_do_not(db):
    a, b = InmemSaver(db), InmemSaver(db)
    assert a._indexed is b._indexed
    assert InmemSaver(db, prefix="other:")._indexed is not a._indexed
    assert InmemSaver(Database(db._backend))._indexed is not a._indexed


@pytest.mark.parametrize("backend", ["cluster"])
def test_savers_per_request_on_a_cluster_leave_one_mark(open_db):
    db = open_db()
    thread = f"marks-{uuid6(clock_seq=-1)}"
    for i in range(50):
        _put(InmemSaver(db), thread, f"r{i % 3}")
    assert len(_marks(db, thread)) == 1
    InmemSaver(db).delete_for_runs(["r0", "r1", "r2"])
    assert _runs_of(InmemSaver(db), thread) == []


def test_idle_marks_are_those_put_an_hour_before_the_own():
    from inmem.types import Versioned
    now = 10_000_000_000_000

    def at(us):
        return Versioned(None, 1, us)

    keys = ["saver/a", "saver/b", "saver/c", "saver/d"]
    found = [at(now - MARK_IDLE_S * 1_000_000 - 1), at(now - 5), None,
             at(now - MARK_IDLE_S * 1_000_000)]
    assert idle_marks(keys, found, at(now)) == ["saver/a"]
    assert idle_marks(keys, found, None) == []  # its own mark gone meanwhile: none
