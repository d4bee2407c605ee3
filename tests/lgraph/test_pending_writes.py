"""Pending writes of a step whose parallel tasks write more than one value may hold.

A step's pending writes are one JSON document per checkpoint, and a document
is one value: at most `max_value_bytes`. Parallel tasks that each write a
channel value well under that limit could together go past it, and the step
failed with ValueTooLarge although every channel fitted. A large write is now
kept apart, in its own KV entry, and survives an interrupt, a resume, a copy,
prune and delete_for_runs like any other.
"""

from __future__ import annotations

import os
import uuid
from typing import TypedDict

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt

import inmem
from inmem.langgraph import InmemSaver
from inmem.langgraph.keys import WRITE_INLINE_MAX, thread_run

#: the store's value limit here
LIMIT = 256 * 1024
TASKS = 6


class Fan(TypedDict, total=False):
    c0: str
    c1: str
    c2: str
    c3: str
    c4: str
    c5: str
    answer: str


def _graph(saver, calls: list, share: int):
    def work(arg):
        i = arg["i"]
        calls.append(i)
        if i == TASKS - 1:
            return {"answer": interrupt("last one asks")}
        return {f"c{i}": str(i) * share}

    g = StateGraph(Fan)
    g.add_node("start", lambda s: {})
    g.add_node("work", work)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", lambda s: [Send("work", {"i": i}) for i in range(TASKS)],
                            ["work"])
    g.add_edge("work", END)
    return g.compile(checkpointer=saver)


@pytest.mark.parametrize("limit, share", [
    (LIMIT, 64 * 1024),        # each write kept apart as it is written
    (16 * 1024, 3500),         # small enough to go in the document, until it is full
])
def test_parallel_writes_over_a_value_survive_an_interrupt_and_resume(open_db, limit, share):
    # The tasks write 5 x share in all, over the limit; each channel is under it.
    assert 5 * share > limit > share
    db = open_db(max_value_bytes=limit)
    saver = InmemSaver(db)
    calls: list = []
    graph = _graph(saver, calls, share)
    run_id = str(uuid.uuid4())
    config = {"configurable": {"thread_id": "fan", "run_id": run_id}}
    first = graph.invoke({}, config)
    assert [i.value for i in first["__interrupt__"]] == ["last one asks"]
    waiting = saver.get_tuple({"configurable": {"thread_id": "fan"}})
    written = {c: v for _, c, v in waiting.pending_writes if c.startswith("c")}
    assert written == {f"c{i}": str(i) * share for i in range(TASKS - 1)}
    # every read path gives the same pending writes
    listed = next(iter(saver.list({"configurable": {"thread_id": "fan"}}, limit=1)))
    assert listed.pending_writes == waiting.pending_writes

    done = graph.invoke(Command(resume="yes"), config)
    assert done == {**{f"c{i}": str(i) * share for i in range(TASKS - 1)}, "answer": "yes"}
    # the finished tasks were not run again: their writes came back from the store
    assert sorted(calls) == sorted(list(range(TASKS)) + [TASKS - 1])

    saver.copy_thread("fan", "fan-copy")
    cid = waiting.config["configurable"]["checkpoint_id"]
    resumed = saver.get_tuple(waiting.config)  # now with the resume and its task too
    copied = saver.get_tuple({"configurable": {"thread_id": "fan-copy", "checkpoint_id": cid}})
    assert copied.pending_writes == resumed.pending_writes

    run = thread_run(saver.prefix, "fan")
    assert any(k.startswith("write/") for k in db.kv.keys(run))
    saver.prune(["fan"])
    assert not any(k.startswith("write/") for k in db.kv.keys(run))
    saver.delete_for_runs([run_id])
    copy_run = thread_run(saver.prefix, "fan-copy")
    assert saver.get_tuple({"configurable": {"thread_id": "fan-copy"}}) is None
    assert not any(k.startswith("write/") for k in db.kv.keys(copy_run))


def test_only_large_writes_are_kept_apart_and_too_large_ones_are_named():
    with inmem.open(None, max_value_bytes=LIMIT) as db:
        saver = InmemSaver(db)
        config = saver.put({"configurable": {"thread_id": "w", "checkpoint_ns": ""}},
                           empty_checkpoint(), {"source": "input", "step": -1}, {})
        big = os.urandom(WRITE_INLINE_MAX).hex()
        saver.put_writes(config, [("small", "s"), ("big", big)], "task-1")
        run = thread_run(saver.prefix, "w")
        assert [k for k in db.kv.keys(run) if k.startswith("write/")] == [
            f"write//{config['configurable']['checkpoint_id']}/task-1/1"]
        assert saver.get_tuple(config).pending_writes == [("task-1", "small", "s"),
                                                          ("task-1", "big", big)]
        with pytest.raises(inmem.ValueTooLarge, match="task 'task-2' to channel 'huge'"):
            saver.put_writes(config, [("huge", "x" * (2 * LIMIT))], "task-2")
        assert len(saver.get_tuple(config).pending_writes) == 2
        with pytest.raises(inmem.ValueTooLarge, match="largest new channel value is 'state'"):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"state": "y" * (2 * LIMIT)}
            checkpoint["channel_versions"] = {"state": saver.get_next_version(None)}
            saver.put(config, checkpoint, {"source": "loop", "step": 0},
                      checkpoint["channel_versions"])


def test_a_task_s_writes_read_only_its_own_rows(db):
    # A step's writes document grows with each of its tasks: a task that read it
    # whole to check for its own rows made a fan-out's writes quadratic.
    from inmem.database import Database

    from .test_saver import Recording
    recording = Recording(db._backend)
    saver = InmemSaver(Database(recording))
    config = saver.put({"configurable": {"thread_id": "w", "checkpoint_ns": ""}},
                       empty_checkpoint(), {"source": "input", "step": -1}, {})
    for task in range(5):
        recording.ops.clear()
        saver.put_writes(config, [("a", "x" * 3000), ("b", task)], f"task-{task}")
        reads = [args for op, args in recording.ops if op == "js.get"]
        if task == 0 and saver._writes_seen is not None:
            # On a cluster, a document's first writes: one transaction, nothing to read.
            assert [op for op, _ in recording.ops] == ["tx.commit", "kv.exists"]
            continue
        assert reads and all(args[2] != "$" for args in reads), reads
    saver.put_writes(config, [("a", "changed")], "task-0")  # a retry keeps the first
    writes = saver.get_tuple(config).pending_writes
    assert len(writes) == 10 and ("task-0", "a", "x" * 3000) in writes
