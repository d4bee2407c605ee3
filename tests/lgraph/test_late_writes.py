"""Pending writes for a checkpoint that a prune or delete_for_runs deleted.

A task still running when its run's checkpoints are deleted (a cancelled run,
a prune) writes afterwards: its writes document (and the entries of writes
kept apart) used to be stored in the thread, where no checkpoint names them,
no read shows them and no prune or delete_for_runs finds them, until
delete_thread. A cut now notes each checkpoint it deletes (`gone/...`, for an
hour), and writes that find their checkpoint noted so are deleted at once.
Writes that come before their checkpoint (LangGraph's "async" durability
sends a step's writes while its checkpoint's put is under way) are kept.
"""

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from inmem.langgraph import InmemSaver
from inmem.langgraph.driver import execute_sync
from inmem.langgraph.keys import thread_run, writes_key

BIG = "w" * 6000  # over WRITE_INLINE_MAX serialized: kept apart


def _put(saver, thread, run_id="r1", ns=""):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    return saver.put(config, checkpoint, {"source": "loop", "step": 1, "run_id": run_id}, {})


def _leftovers(db, saver, thread, config) -> dict:
    """What the thread holds of `config`'s checkpoint's writes."""
    run = thread_run(saver.prefix, thread)
    conf = config["configurable"]
    return {"document": db.json.get(run, writes_key(conf["checkpoint_ns"], conf["checkpoint_id"])),
            "apart": db.kv.keys(run, "write/")}


@pytest.mark.parametrize("writes", [
    [("x", 1)],  # a task's first writes (on a cluster, one transaction on the absent document)
    [("x", 1), ("big", BIG)],  # with a value kept apart
    [("__error__", "boom")],  # a special channel: one round trip
])
def test_writes_after_delete_for_runs_took_their_checkpoint_leave_nothing(db, writes):
    saver = InmemSaver(db)
    config = _put(saver, "t")
    saver.delete_for_runs(["r1"])
    saver.put_writes(config, writes, "task-1")
    assert _leftovers(db, saver, "t", config) == {"document": None, "apart": []}
    assert list(saver.list({"configurable": {"thread_id": "t"}})) == []


def test_writes_after_a_prune_took_their_checkpoint_leave_nothing(db):
    saver = InmemSaver(db)
    old = _put(saver, "t")
    newest = _put(saver, "t")
    saver.prune(["t"])
    saver.put_writes(old, [("x", 1), ("big", BIG)], "task-1")
    assert _leftovers(db, saver, "t", old) == {"document": None, "apart": []}
    saver.put_writes(newest, [("x", 2)], "task-1")  # its checkpoint is there: kept
    assert [w[1:] for w in saver.get_tuple(newest).pending_writes] == [("x", 2)]


def test_writes_of_a_second_task_after_the_delete_leave_nothing_either(db):
    saver = InmemSaver(db)
    config = _put(saver, "t")
    saver.put_writes(config, [("x", 1)], "task-1")
    saver.delete_for_runs(["r1"])
    saver.put_writes(config, [("x", 2), ("big", BIG)], "task-2")
    saver.put_writes(config, [("x", 3)], "task-3")
    assert _leftovers(db, saver, "t", config) == {"document": None, "apart": []}


def test_writes_that_come_before_their_checkpoint_are_kept(db):
    # LangGraph's "async" durability: a step's writes may land before its checkpoint.
    saver = InmemSaver(db)
    parent = _put(saver, "t")
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    early = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                              "checkpoint_id": checkpoint["id"]}}
    saver.put_writes(early, [("x", 1), ("big", BIG)], "task-1")
    saver.put(parent, checkpoint, {"source": "loop", "step": 2, "run_id": "r1"}, {})
    assert sorted(w[1] for w in saver.get_tuple(early).pending_writes) == ["big", "x"]


def test_writes_for_a_checkpoint_copied_back_after_its_delete_are_kept(db):
    saver = InmemSaver(db)
    config = _put(saver, "src")
    saver.copy_thread("src", "dst")
    _put(saver, "dst", run_id="r2")
    saver.prune(["dst"])  # the copy of config's checkpoint deleted there, and noted gone
    dst = {"configurable": {**config["configurable"], "thread_id": "dst"}}
    saver.put_writes(dst, [("x", 0)], "task-0")
    assert _leftovers(db, saver, "dst", dst)["document"] is None
    saver.copy_thread("src", "dst")  # back again
    saver.put_writes(dst, [("x", 1)], "task-1")
    assert [w[1:] for w in saver.get_tuple(dst).pending_writes] == [("x", 1)]


def test_writes_landing_while_a_cut_works_leave_nothing(db):
    # Written after the cut read the thread and before it deleted: a value kept apart
    # that the cut's listing did not hold.
    saver = InmemSaver(db)
    config = _put(saver, "t")
    plan = saver._delete_for_runs(["r1"])
    sent, landed = next(plan), False
    try:
        while True:
            answer = execute_sync(db, sent)
            if not landed and any(op == "kv.keys" for op, _ in sent):  # the thread read
                saver.put_writes(config, [("x", 1), ("big", BIG)], "task-1")
                landed = True
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert landed
    assert _leftovers(db, saver, "t", config) == {"document": None, "apart": []}


def test_documents_of_a_cut_refused_half_way_are_deleted_too(db, monkeypatch):
    # A cut in several transactions, records first: a put between them has the rest
    # refused and the thread cut again, which no longer sees the records deleted
    # already, and would leave their writes documents.
    import inmem.langgraph.cuts as cuts
    monkeypatch.setattr(cuts, "_CUT_CHUNK", 2)
    saver = InmemSaver(db)
    configs = [_put(saver, "t") for _ in range(3)]
    for i, config in enumerate(configs):
        saver.put_writes(config, [("x", i)], f"task-{i}")
    plan = saver._delete_for_runs(["r1"])
    sent, put = next(plan), False
    try:
        while True:
            answer = execute_sync(db, sent)
            if not put and any(op == "tx.commit" for op, _ in sent):  # the first part
                _put(saver, "t", run_id="r2")
                put = True
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert put
    assert [_leftovers(db, saver, "t", c) for c in configs] == [
        {"document": None, "apart": []}] * 3
    assert [t.metadata["run_id"] for t in saver.list({"configurable": {"thread_id": "t"}})] == [
        "r2"]


def _writes_racing(open_db, backend, delete) -> tuple:
    """A task's writes landing from one connection while `delete(deleter, thread)` runs on
    another (a second connection to the cluster; the same store embedded): (db, writer,
    thread, config) once both are done, every write having returned."""
    import threading
    db = open_db()
    other = db
    if backend == "cluster":
        from cluster.shared import shared_cluster
        other = shared_cluster().connect()
    try:
        thread = f"race-{uuid6(clock_seq=-1)}"
        writer, deleter = InmemSaver(db), InmemSaver(other)
        config = _put(writer, thread)
        started, errors = threading.Event(), []

        def write():
            try:
                for i in range(60):
                    writer.put_writes(config, [("x", i), ("big", BIG)], f"task-{i}")
                    if i == 5:
                        started.set()
            except Exception as exc:  # asserted on below
                errors.append(exc)
                started.set()

        w = threading.Thread(target=write)
        w.start()
        started.wait(60)
        delete(deleter, thread)
        w.join(120)
        assert not w.is_alive() and errors == []
    finally:
        if other is not db:
            other.close()
    return db, writer, thread, config


@pytest.mark.parametrize("backend", ["embedded", "cluster"])
def test_writes_racing_delete_for_runs_from_another_connection_leave_nothing(open_db, backend):
    # A task's writes keep landing from one connection while another deletes its
    # run's checkpoints: whichever lands first, nothing of them is left after both.
    db, writer, thread, config = _writes_racing(
        open_db, backend, lambda deleter, thread: deleter.delete_for_runs(["r1"]))
    assert _leftovers(db, writer, thread, config) == {"document": None, "apart": []}


# -- writes after delete_thread: the thread is not made again for them -------------

def test_writes_after_delete_thread_took_their_checkpoint_do_not_make_the_thread_again(db):
    # A task still running while its thread is deleted: its writes used to make the
    # thread's run again, holding only a writes document no checkpoint names.
    saver = InmemSaver(db)
    config = _put(saver, "t")
    saver.delete_thread("t")
    saver.put_writes(config, [("x", 1), ("big", BIG)], "task-1")
    saver.put_writes(config, [("__error__", "boom")], "task-2")
    assert db.run_status(thread_run(saver.prefix, "t")) == "not_found"


def test_writes_of_a_new_checkpoint_after_delete_thread_are_kept(db):
    # The thread used again after its delete, its first writes before its checkpoint
    # (LangGraph's "async" durability): they are the new thread's, and kept.
    saver = InmemSaver(db)
    _put(saver, "t")
    saver.delete_thread("t")
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    early = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                              "checkpoint_id": checkpoint["id"]}}
    saver.put_writes(early, [("x", 1), ("big", BIG)], "task-1")
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, checkpoint,
              {"source": "input", "step": -1, "run_id": "r2"}, {})
    assert sorted(w[1] for w in saver.get_tuple(early).pending_writes) == ["big", "x"]


@pytest.mark.parametrize("backend", ["embedded", "cluster"])
def test_writes_racing_delete_thread_from_another_connection_do_not_make_it_again(
        open_db, backend):
    db, writer, thread, _config = _writes_racing(
        open_db, backend, lambda deleter, thread: deleter.delete_thread(thread))
    assert db.run_status(thread_run(writer.prefix, thread)) == "not_found"
