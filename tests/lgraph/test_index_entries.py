"""The index run's entries (LangGraph run id -> its threads) after delete_thread.

Every LangGraph run (each invocation of a graph) that puts a checkpoint lists
its thread in an entry of the index run, for `delete_for_runs`. Deleting the
thread left those entries behind: one JSON document per run the thread ever
had, naming a thread that is gone, which nothing read or deleted unless
someone called `delete_for_runs` with run ids they no longer had.
"""

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from inmem.langgraph import InmemSaver
from inmem.langgraph.driver import execute_sync
from inmem.langgraph.keys import index_run


def _put(saver, thread, run_id, ns=""):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    return saver.put(config, checkpoint, {"source": "loop", "step": 1, "run_id": run_id}, {})


def _entry(db, saver, run_id):
    return db.json.get(index_run(saver.prefix), run_id)


def _runs_of(saver, thread) -> list:
    return sorted(t.metadata.get("run_id")
                  for t in saver.list({"configurable": {"thread_id": thread}}))


@pytest.mark.parametrize("how", ["delete_thread", "prune_delete"])
def test_deleting_a_thread_deletes_its_runs_index_entries(db, how):
    saver = InmemSaver(db)
    for i in range(20):
        _put(saver, "a", f"ra{i}", ns="" if i % 2 else "child:1")
    _put(saver, "b", "shared")
    _put(saver, "a", "shared")
    if how == "delete_thread":
        saver.delete_thread("a")
    else:
        saver.prune(["a"], strategy="delete")
    assert [_entry(db, saver, f"ra{i}") for i in range(20)] == [None] * 20
    assert _entry(db, saver, "shared") == {"b": True}  # the other thread's listing stays
    _put(saver, "a", "shared")  # the thread made again: listed again
    saver.delete_for_runs(["shared"])
    assert _runs_of(saver, "a") == [] and _runs_of(saver, "b") == []
    assert _entry(db, saver, "shared") is None


def test_a_run_listed_again_while_its_thread_is_deleted_keeps_its_listing(db):
    # A put of the run makes the thread again (and lists it) between the delete's
    # read of the entries and its removal of the thread from them: the entry is
    # left as the put wrote it, so delete_for_runs still finds the new checkpoint.
    saver, other = InmemSaver(db), InmemSaver(db, prefix="langgraph:")
    _put(saver, "a", "r1")
    plan = saver._delete_threads(["a"])
    sent, put = next(plan), False
    try:
        while True:
            answer = execute_sync(db, sent)
            if not put and any(op == "run.delete" for op, _ in sent):
                other._indexed.forget_threads(set(other._indexed._threads))
                _put(other, "a", "r1")
                put = True
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert put
    assert _entry(db, saver, "r1") == {"a": True}
    saver.delete_for_runs(["r1"])
    assert _runs_of(saver, "a") == []


def test_prune_takes_the_thread_out_of_the_entries_of_the_runs_it_pruned_away(db):
    # prune keeps each namespace's newest checkpoint: the runs of the others lose
    # their last checkpoint in the thread, and their entries would name it for as
    # long as it lives (and after: delete_thread finds runs by the checkpoints left).
    saver = InmemSaver(db)
    for i in range(20):
        _put(saver, "a", f"ra{i}", ns="" if i % 2 else "child:1")
    _put(saver, "b", "ra0")
    saver.prune(["a"])
    assert sorted(_runs_of(saver, "a")) == ["ra18", "ra19"]
    assert [i for i in range(20) if _entry(db, saver, f"ra{i}") is not None] == [0, 18, 19]
    assert _entry(db, saver, "ra0") == {"b": True}
    saver.delete_thread("a")
    assert _entry(db, saver, "ra18") is None and _entry(db, saver, "ra19") is None


def test_a_run_put_again_while_prune_works_keeps_its_listing(db):
    saver = InmemSaver(db)
    _put(saver, "a", "r1", ns="child:1")
    _put(saver, "a", "r1", ns="child:1")
    _put(saver, "a", "r2", ns="child:1")  # r1 pruned away from child:1
    plan = saver._prune(["a"], "keep_latest")
    sent, put, entries_read = next(plan), False, False
    try:
        while True:
            answer = execute_sync(db, sent)
            # Once the entries were read and the thread read again (r1 has no
            # checkpoint left in it): r1 is put to another namespace, no head the
            # prune holds, and listed again.
            if not put and entries_read and any(op == "kv.items" for op, _ in sent):
                _put(saver, "a", "r1")
                put = True
            entries_read = entries_read or any(op == "tx.read" for op, _ in sent)
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert put
    assert _entry(db, saver, "r1") == {"a": True}
    saver.delete_for_runs(["r1"])
    assert _runs_of(saver, "a") == ["r2"]


def test_a_run_listed_again_just_before_its_thread_is_deleted_is_not_left_naming_it(db):
    # The put lands in the thread as it was, and lists it, between the delete's read
    # of the entries and its delete of the thread: the entry changed since it was
    # read, so it is read again, with the thread, which holds nothing of the run.
    from inmem.database import Database
    saver = InmemSaver(db)
    other = InmemSaver(Database(db._backend))  # another memory: it lists its first put
    _put(saver, "a", "r1")
    plan = saver._delete_threads(["a"])
    sent, put = next(plan), False
    try:
        while True:
            answer = execute_sync(db, sent)
            if not put and any(op == "tx.read" for op, _ in sent):  # the entries read
                _put(other, "a", "r1", ns="child:1")
                put = True
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert put
    assert db.run_status("langgraph:thread:a") == "not_found"
    assert _entry(db, saver, "r1") is None
