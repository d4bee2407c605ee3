"""The saver's memory of what it indexed, against deletes made by another saver.

`delete_for_runs` finds a LangGraph run's threads through the index run; a
saver remembers which (run id, thread) it has indexed so a put need not
write the index again. Another saver (another process, or another object
over the same database) deleting the run's checkpoints deletes its index
entry too: a later put of the same run must index it again, or a later
`delete_for_runs` misses that thread and its checkpoint survives.
"""

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

import inmem
from inmem.errors import RunNotFound
from inmem.langgraph import InmemSaver


def _put(saver, thread, run_id=None, ns=""):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    metadata = {"source": "loop", "step": 1}
    if run_id is not None:
        metadata["run_id"] = run_id
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    return saver.put(config, checkpoint, metadata, {})["configurable"]["checkpoint_id"]


def _runs_of(saver, thread) -> list:
    return sorted((t.config["configurable"]["checkpoint_ns"], t.metadata.get("run_id"))
                  for t in saver.list({"configurable": {"thread_id": thread}}))


def _other(db):
    """Another database object over `db`'s store: its savers keep a memory of their own
    (savers over one database object share theirs, see indexed.py), as another
    process's would."""
    from inmem.database import Database
    return Database(db._backend)


@pytest.fixture
def two_savers(backend, open_db):
    """Two savers over one store: two `inmem.connect` databases over one real cluster,
    or two database objects over one embedded store."""
    prefix = f"idx-{uuid.uuid4().hex[:8]}:"
    if backend != "cluster":
        db = open_db()
        yield InmemSaver(db, prefix=prefix), InmemSaver(_other(db), prefix=prefix)
        return
    from cluster.shared import shared_cluster
    endpoint = shared_cluster().endpoint
    a, b = inmem.connect(endpoint), inmem.connect(endpoint)
    try:
        yield InmemSaver(a, prefix=prefix), InmemSaver(b, prefix=prefix)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("survivor", [False, True])
def test_a_put_after_another_saver_deleted_its_run_is_found_by_the_next_delete(
        two_savers, survivor):
    a, b = two_savers
    if survivor:  # the cut then moves the head to it rather than deleting the head
        _put(a, "t", "r0")
    _put(a, "t", "r1")
    b.delete_for_runs(["r1"])
    assert _runs_of(a, "t") == ([("", "r0")] if survivor else [])
    _put(a, "t", "r1")  # a remembers r1 on t as indexed: b's delete said otherwise
    b.delete_for_runs(["r1"])
    assert _runs_of(a, "t") == ([("", "r0")] if survivor else [])


def test_aput_after_another_saver_deleted_its_run_is_found_by_the_next_delete(two_savers):
    # The async put: its plan (in a worker thread on a cluster or a strict store).
    import asyncio
    a, b = two_savers

    async def aput(thread, run_id):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        await a.aput({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, checkpoint,
                     {"source": "loop", "step": 1, "run_id": run_id}, {})

    asyncio.run(aput("t", "r1"))
    asyncio.run(aput("t", "r1"))
    b.delete_for_runs(["r1"])
    asyncio.run(aput("t", "r1"))
    b.delete_for_runs(["r1"])
    assert _runs_of(a, "t") == []


def test_a_put_to_another_namespace_after_the_delete_is_found_too(two_savers):
    a, b = two_savers
    _put(a, "t", "r1")
    _put(a, "t", "r1", ns="child:1")
    b.delete_for_runs(["r1"])
    _put(a, "t", "r1", ns="child:1")
    _put(a, "t", "r1")
    a.delete_for_runs(["r1"])
    assert _runs_of(b, "t") == []


def test_a_put_after_another_saver_deleted_the_thread_is_found_by_delete_for_runs(two_savers):
    a, b = two_savers
    _put(a, "t", "r1")
    b.delete_thread("t")
    _put(a, "t", "r1")
    _put(a, "t", "r1")
    b.delete_for_runs(["r1"])
    assert _runs_of(a, "t") == []


def test_the_usual_put_is_one_operation_and_one_after_a_delete_elsewhere_indexes_again(db):
    from inmem.database import Database
    from lgraph.test_saver import Recording
    recording = Recording(db._backend)
    a, b = InmemSaver(Database(recording)), InmemSaver(db)
    _put(a, "t", "r1")
    _put(a, "t", "r1", ns="child:1")  # a new namespace: its index entry goes with it
    # (with it, the thread's marks are read: see test_marks.py)
    assert [op for op, _ in recording.ops][-3:] == ["kv.put_many", "js.set", "kv.keys"]
    recording.ops.clear()
    _put(a, "t", "r1")
    _put(a, "t", "r1", ns="child:1")
    assert [op for op, _ in recording.ops] == ["kv.put_many", "kv.put_many"]
    b.delete_for_runs(["r1"])
    recording.ops.clear()
    _put(a, "t", "r1")  # its head was moved by b: the put indexes the run again
    assert [op for op, _ in recording.ops] == ["kv.put_many", "js.set", "kv.keys"]
    recording.ops.clear()
    _put(a, "t", "r1")
    assert [op for op, _ in recording.ops] == ["kv.put_many"]
    b.delete_for_runs(["r1"])
    assert _runs_of(b, "t") == []


def test_a_thread_indexed_while_delete_for_runs_works_is_cut_too(two_savers):
    # Another saver's first put of the run to a new thread lands after the delete read
    # the run's index entry: deleting the entry as read would forget that thread.
    from inmem.langgraph.driver import execute_sync
    a, b = two_savers
    _put(a, "t1", "r1")
    plan = b._delete_for_runs(["r1"])
    sent = next(plan)
    answer = execute_sync(b.db, sent)  # the index entry read: t1 only
    _put(a, "t2", "r1")
    try:
        while True:
            sent = plan.send(answer)
            answer = execute_sync(b.db, sent)
    except StopIteration:
        pass
    assert _runs_of(a, "t1") == [] and _runs_of(a, "t2") == []


# -- a model: what two savers' puts and deletes leave, made one after another -------

_THREADS = ["t0", "t1"]
_NAMESPACES = ["", "c"]
_RUN_IDS = ["r0", "r1"]

_put_step = st.tuples(st.just("put"), st.integers(0, 1), st.sampled_from(_THREADS),
                      st.sampled_from(_NAMESPACES), st.sampled_from(_RUN_IDS))
_delete_for_runs_step = st.tuples(st.just("delete_for_runs"), st.integers(0, 1),
                                  st.sampled_from(_RUN_IDS))
# weighted towards puts and delete_for_runs: what the index memory is about
_step = st.one_of(
    _put_step, _put_step, _put_step, _delete_for_runs_step, _delete_for_runs_step,
    st.tuples(st.just("put"), st.integers(0, 1), st.sampled_from(_THREADS),
              st.sampled_from(_NAMESPACES), st.none()),
    st.tuples(st.just("delete_thread"), st.integers(0, 1), st.sampled_from(_THREADS)),
    st.tuples(st.just("prune"), st.integers(0, 1), st.sampled_from(_THREADS)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_step, min_size=8, max_size=40), st.booleans())
def test_two_savers_leave_what_a_model_of_the_threads_says(steps, shared):
    # Two database objects (a memory each, as two processes), or one (a shared memory).
    db = inmem.open(None)
    try:
        savers = [InmemSaver(db), InmemSaver(db if shared else _other(db))]
        model: dict = {t: [] for t in _THREADS}  # thread -> [(ns, checkpoint id, run id)]
        for step in steps:
            saver = savers[step[1]]
            if step[0] == "put":
                _, _, thread, ns, run_id = step
                cid = _put(saver, thread, run_id, ns)
                model[thread].append((ns, cid, run_id))
            elif step[0] == "delete_for_runs":
                saver.delete_for_runs([step[2]])
                for thread in _THREADS:
                    model[thread] = [c for c in model[thread] if c[2] != step[2]]
            elif step[0] == "delete_thread":
                saver.delete_thread(step[2])
                model[step[2]] = []
            else:
                saver.prune([step[2]])
                newest = {}
                for c in model[step[2]]:
                    if c[0] not in newest or newest[c[0]][1] < c[1]:
                        newest[c[0]] = c
                model[step[2]] = list(newest.values())
            for thread in _THREADS:
                got = sorted((t.config["configurable"]["checkpoint_ns"],
                              t.config["configurable"]["checkpoint_id"], t.metadata.get("run_id"))
                             for t in savers[0].list({"configurable": {"thread_id": thread}}))
                assert got == sorted(model[thread]), (step, thread)
            # One after another, the index lists exactly the threads that hold a
            # checkpoint of each run: nothing a delete or prune left behind.
            for run_id in _RUN_IDS:
                try:
                    entry = db.json.get("langgraph:runs", run_id) or {}
                except RunNotFound:  # nothing indexed yet
                    entry = {}
                holding = {t for t in _THREADS if any(c[2] == run_id for c in model[t])}
                assert set(entry) == holding, (step, run_id)
    finally:
        db.close()


def test_the_memory_keeps_the_latest_threads_and_forgets_on_demand():
    from inmem.langgraph.indexed import IndexedHeads
    heads = IndexedHeads(limit=2)
    for i in range(3):
        heads.remember(("r", f"t{i}", ""), i + 1, 1)
    assert heads.cell(("r", "t0", "")) is None  # the first remembered went first
    assert heads.cell(("r", "t2", "")) == [3]
    heads.remember(("r", "t1", ""), 7, 2)  # again: a new version, in a new cell
    assert heads.cell(("r", "t1", "")) == [7]
    heads.remember(("q", "t1", "c"), 9, 3)  # the mark moved on: t1's places stay
    assert heads.cell(("r", "t1", "")) == [7] and heads.cell(("q", "t1", "c")) == [9]
    heads.remember(("q", "t1", ""), 1, 1)  # a mark that starts over: the thread anew
    assert heads.cell(("r", "t1", "")) is None and heads.cell(("q", "t1", "")) == [1]
    heads.forget(lambda place: place[0] == "q")
    assert heads.cell(("q", "t1", "")) is None and heads.cell(("r", "t2", "")) == [3]
    heads.forget_threads({"t2"})
    assert heads.cell(("r", "t2", "")) is None


# -- a thread deleted and made again: its heads' versions start over -----------------

def test_a_put_after_its_thread_was_deleted_and_made_again_by_itself_is_found(db):
    # Found by the model above: b deletes the run's checkpoints (and its index entry)
    # and then the thread; a's next put makes the thread again, whose head versions
    # start over, so a later head version matched what a remembered from before.
    a, b = InmemSaver(db), InmemSaver(_other(db))
    _put(a, "t0", "r0")
    _put(a, "t0", "r1")
    b.delete_for_runs(["r0"])
    b.delete_thread("t0")
    _put(a, "t0", "r1")  # the thread made again
    _put(a, "t0", "r0")  # head version 2: one more than a remembered for r0
    a.delete_for_runs(["r0"])
    assert _runs_of(a, "t0") == [("", "r1")]


def test_a_put_after_another_saver_made_its_thread_again_is_found(db):
    a, b = InmemSaver(db), InmemSaver(_other(db))
    _put(a, "t0", "r0")  # a remembers head version 1
    b.delete_for_runs(["r0"])  # the head (version 2 deleted) and the index entry
    b.delete_thread("t0")
    _put(b, "t0", None)  # the thread made again by b: head version 1
    _put(a, "t0", "r0")  # version 2, one more than a remembered
    b.delete_for_runs(["r0"])
    assert [r for _, r in _runs_of(a, "t0")] == [None]
