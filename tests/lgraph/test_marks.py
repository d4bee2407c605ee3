"""How many marks (`saver/<hex>`, see inmem/langgraph/indexed.py) a thread keeps.

Each memory of indexed run ids puts a mark of its own in the threads it
writes with a LangGraph run id. A server that made an `InmemSaver(db)` per
request left one mark per request in each thread, for ever: savers over one
database object now share a memory and its mark, and a put that indexes a
run deletes the marks of its thread not put for an hour.
"""

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

import inmem.langgraph.puts as puts
from inmem.database import Database
from inmem.langgraph import InmemSaver
from inmem.langgraph.indexed import MARK_IDLE_S, idle_marks, mark_time
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


def test_marks_idle_for_an_hour_are_deleted_by_the_next_put_that_indexes_a_run(db):
    run = thread_run("langgraph:", "t")
    saver = InmemSaver(db)
    _put(saver, "t", "r1")
    now = mark_time()
    db.kv.put(run, "saver/old", now - MARK_IDLE_S - 5)  # its process ended an hour ago
    db.kv.put(run, "saver/untimed", None)  # an older version's mark
    db.kv.put(run, "saver/recent", now - 60)  # another process, a minute ago
    _put(saver, "t", "r1")  # trusted: one kv.put_many, no reading of marks
    assert "saver/old" in _marks(db, "t")
    _put(saver, "t", "r2")  # a run indexed here: the thread's marks are read
    assert sorted(_marks(db, "t")) == sorted(["saver/recent", saver._indexed.mark_key])


def test_a_live_mark_deleted_as_idle_costs_its_owner_an_index_write_and_loses_nothing(
        db, monkeypatch):
    from lgraph.test_saver import Recording
    recording = Recording(db._backend)
    a = InmemSaver(Database(recording))
    b = InmemSaver(Database(db._backend))  # another memory, as another process's
    _put(a, "t", "r1")
    _put(a, "t", "r1")
    # b's clock is two hours ahead: a's mark looks idle to it, and b deletes it.
    monkeypatch.setattr(puts, "mark_time", lambda: mark_time() + 2 * MARK_IDLE_S)
    _put(b, "t", "r2")
    assert a._indexed.mark_key not in _marks(db, "t")
    monkeypatch.undo()
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


def test_idle_marks_are_the_others_not_put_for_an_hour():
    now = 10_000_000
    marks = [("saver/mine", 0), ("saver/a", now - MARK_IDLE_S - 1), ("saver/b", now - 5),
             ("saver/c", None), ("saver/d", now - MARK_IDLE_S)]
    assert idle_marks(marks, "saver/mine", now) == ["saver/a", "saver/c"]
