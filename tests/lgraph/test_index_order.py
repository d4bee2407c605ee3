"""A run id's index entry never lands before the checkpoint it is for.

`delete_for_runs` finds a LangGraph run's threads in its index entry and,
once it has cut them, deletes the entry. A put that sent its checkpoint and
its index write in one batch could have the index write land first (the
index run and the thread's run live on different shards of a cluster, each
answering in its own time; on a new thread the checkpoint is even sent
again, after the thread's run is made): a `delete_for_runs` of the run in
between found the thread, cut nothing of it (the checkpoint was not there
yet), deleted the entry, and the checkpoint then landed where no later
`delete_for_runs` found it.

These tests drive a put's (and copy_thread's) plan by hand, sending each
batch one operation at a time, index writes first, and run another saver's
`delete_for_runs` of the run after every operation: every interleaving the
two writes of a batch can take. Whatever the order, a `delete_for_runs` of
the run made after the put returned must leave none of its checkpoints.
"""

import uuid

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from inmem.langgraph import InmemSaver
from inmem.langgraph.driver import execute_sync


def _drive_one_at_a_time(db, plan, index_run, between):
    """Run `plan` sending each batch one operation at a time, its writes to `index_run`
    first, and calling `between()` after each operation; the plan's answer."""
    try:
        sent = next(plan)
        while True:
            order = sorted(range(len(sent)), key=lambda i: sent[i][1][0] != index_run)
            results = [None] * len(sent)
            for i in order:
                results[i] = execute_sync(db, [sent[i]])[0]
                between()
            sent = plan.send(results)
    except StopIteration as stop:
        return stop.value


def _checkpoint():
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    return checkpoint


def _config(thread, ns=""):
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


def _runs_left(saver, thread, run_id) -> list:
    return [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": thread}})
            if t.metadata.get("run_id") == run_id]


@pytest.fixture
def savers(db):
    """Two savers over one database: one puts, the other deletes. The index run exists
    (another run id is indexed), as it does but on a saver's very first put."""
    prefix = f"order-{uuid.uuid4().hex[:8]}:"
    a, b = InmemSaver(db, prefix=prefix), InmemSaver(db, prefix=prefix)
    a.put(_config("other"), _checkpoint(), {"source": "loop", "step": 1, "run_id": "r0"}, {})
    return a, b


def _put_racing_deletes(putter, deleter, thread, run_id, ns=""):
    plan = putter._put(_config(thread, ns), _checkpoint(),
                       {"source": "loop", "step": 1, "run_id": run_id}, {})
    return _drive_one_at_a_time(putter.db, plan, putter._index,
                                lambda: deleter.delete_for_runs([run_id]))


@pytest.mark.parametrize("thread_exists", [True, False])
def test_a_first_put_of_a_run_is_found_by_a_delete_for_runs_made_after_it(savers,
                                                                          thread_exists):
    a, b = savers
    if thread_exists:
        a.put(_config("t"), _checkpoint(), {"source": "input", "step": -1}, {})
    _put_racing_deletes(a, b, "t", "r1")
    b.delete_for_runs(["r1"])
    assert _runs_left(b, "t", "r1") == []


def test_a_first_put_of_a_run_to_a_new_namespace_is_found_too(savers):
    a, b = savers
    a.put(_config("t"), _checkpoint(), {"source": "loop", "step": 1, "run_id": "r1"}, {})
    _put_racing_deletes(a, b, "t", "r1", ns="child:1")
    b.delete_for_runs(["r1"])
    assert _runs_left(b, "t", "r1") == []


def test_a_put_after_the_racing_delete_is_found_too(savers):
    # The delete that raced the first put moved nothing this saver remembers: the
    # next put of the run must still be found.
    a, b = savers
    _put_racing_deletes(a, b, "t", "r1")
    a.put(_config("t"), _checkpoint(), {"source": "loop", "step": 2, "run_id": "r1"}, {})
    b.delete_for_runs(["r1"])
    assert _runs_left(b, "t", "r1") == []


def test_a_copied_thread_is_found_by_a_delete_for_runs_made_after_the_copy(savers):
    a, b = savers
    a.put(_config("src"), _checkpoint(), {"source": "loop", "step": 1, "run_id": "r1"}, {})
    _drive_one_at_a_time(a.db, a._copy_thread("src", "dst"), a._index,
                         lambda: b.delete_for_runs(["r1"]))
    b.delete_for_runs(["r1"])
    assert _runs_left(b, "dst", "r1") == []
