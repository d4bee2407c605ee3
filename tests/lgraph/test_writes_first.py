"""A checkpoint's first pending writes go in one transaction on the absence of its
writes document; any later ones read their own rows first, as before, so a task's
ordinary writes stay as first stored whoever wrote them and whatever the saver
remembers."""

from __future__ import annotations

import uuid

from langgraph.checkpoint.base import empty_checkpoint

import inmem
from inmem.database import Database
from inmem.langgraph import InmemSaver

from .test_saver import Recording


def _transactional(saver):
    """`saver` writing a checkpoint's first pending writes as one transaction, as it
    does on a cluster, whatever the store (the logic under test, on any backend)."""
    saver._writes_seen = {}
    return saver


def _new_checkpoint(saver, thread="w"):
    return saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
                     empty_checkpoint(), {"source": "input", "step": -1}, {})


def _writes(saver, config):
    return sorted(saver.get_tuple(config).pending_writes)


def test_a_task_s_first_writes_are_one_round_trip_on_a_cluster(db, backend):
    recording = Recording(db._backend)
    saver = InmemSaver(Database(recording), prefix=f"first-{uuid.uuid4().hex[:8]}:")
    config = _new_checkpoint(saver)
    recording.ops.clear()
    saver.put_writes(config, [("a", 1), ("__error__", "boom"), ("b", 2)], "task-1")
    # (the kv.exists, after the writes in their batch, asks whether the checkpoint
    # was deleted meanwhile: see test_late_writes.py)
    if backend == "cluster":
        assert [op for op, _ in recording.ops] == ["tx.commit", "kv.exists"]
    else:  # in process a round trip costs nothing, and a transaction more CPU
        assert [op for op, _ in recording.ops] == ["js.get", "js.get", "js.set", "js.set",
                                                   "js.set", "kv.exists"]
    recording.ops.clear()
    saver.put_writes(config, [("a", 9)], "task-1")  # a retry: read, and kept as first
    assert [op for op, _ in recording.ops] == ["js.get"]
    saver.put_writes(config, [("c", 3)], "task-2")
    assert _writes(saver, config) == [("task-1", "__error__", "boom"), ("task-1", "a", 1),
                                      ("task-1", "b", 2), ("task-2", "c", 3)]


def test_writes_another_saver_stored_first_are_kept(db):
    prefix = f"first-{uuid.uuid4().hex[:8]}:"
    a = _transactional(InmemSaver(db, prefix=prefix))
    b = _transactional(InmemSaver(db, prefix=prefix))
    config = _new_checkpoint(a)
    a.put_writes(config, [("a", "first")], "task-1")
    # b has never seen the document: its transaction on its absence is refused, and
    # it reads the task's rows as a retry does.
    b.put_writes(config, [("a", "second"), ("__error__", "late")], "task-1")
    assert _writes(a, config) == [("task-1", "__error__", "late"), ("task-1", "a", "first")]


def test_a_document_deleted_since_it_was_seen_is_written_again(db):
    saver = _transactional(InmemSaver(db, prefix=f"first-{uuid.uuid4().hex[:8]}:"))
    config = _new_checkpoint(saver)
    saver.put_writes(config, [("a", 1)], "task-1")
    run = f"{saver.prefix}thread:w"
    wkey = f"writes//{config['configurable']['checkpoint_id']}"
    db.json.delete(run, wkey)
    saver.put_writes(config, [("a", 2)], "task-1")
    assert _writes(saver, config) == [("task-1", "a", 2)]


def test_first_writes_over_what_a_document_holds_are_kept_apart():
    # Rows each under the inline limit, together over the document's: the transaction
    # is refused whole and the rows go the usual way, the last ones kept apart.
    with inmem.open(None, max_value_bytes=64 * 1024) as db:
        saver = _transactional(InmemSaver(db))
        config = _new_checkpoint(saver)
        writes = [(f"c{i}", "x" * 3000) for i in range(40)]
        saver.put_writes(config, writes, "task-1")
        assert _writes(saver, config) == sorted(("task-1", c, v) for c, v in writes)


def test_first_writes_to_a_thread_not_made_yet_make_it():
    with inmem.open(None) as db:
        saver = _transactional(InmemSaver(db))
        config = {"configurable": {"thread_id": "later", "checkpoint_ns": "",
                                   "checkpoint_id": "1f1ee0cd-0000-6000-8000-000000000000"}}
        saver.put_writes(config, [("a", 1)], "task-1")
        assert db.json.get(f"{saver.prefix}thread:later",
                           "writes//1f1ee0cd-0000-6000-8000-000000000000") is not None


# -- a model: what two savers' writes to one checkpoint leave, made one after another --

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_write = st.tuples(st.just("write"), st.integers(0, 1), st.sampled_from(["t1", "t2"]),
                   st.lists(st.tuples(st.sampled_from(["a", "b", "__error__"]),
                                      st.integers(0, 9)), min_size=1, max_size=3))
_step = st.one_of(_write, _write, _write, st.just(("delete",)))


@settings(max_examples=100, deadline=None)
@given(st.lists(_step, min_size=1, max_size=12))
def test_two_savers_writes_leave_what_a_model_says(steps):
    from langgraph.checkpoint.base import WRITES_IDX_MAP
    with inmem.open(None) as db:
        savers = [_transactional(InmemSaver(db)), _transactional(InmemSaver(db))]
        config = _new_checkpoint(savers[0])
        run = f"{savers[0].prefix}thread:w"
        wkey = f"writes//{config['configurable']['checkpoint_id']}"
        model: dict = {}  # (task, idx) -> (channel, value)
        for step in steps:
            if step[0] == "delete":
                db.json.delete(run, wkey)
                model = {}
                continue
            _, who, task, writes = step
            savers[who].put_writes(config, writes, task)
            for i, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, i)
                if idx < 0 or (task, idx) not in model:
                    model[(task, idx)] = (channel, value)
        got = sorted(savers[1].get_tuple(config).pending_writes)
        assert got == sorted((task, c, v) for (task, _), (c, v) in model.items())
