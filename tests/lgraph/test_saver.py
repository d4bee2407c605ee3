"""InmemSaver beyond the conformance suite: real graphs, where a thread's data lives,
what a list or get costs in operations, and the space prune and delete_for_runs give back."""

import asyncio
import operator
import uuid
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import inmem
from inmem.database import Database
from inmem.langgraph import InmemSaver
from inmem.langgraph.keys import thread_run
from inmem.sections import KV


class State(TypedDict):
    log: Annotated[list, operator.add]
    n: int


def _graph(saver, ask=False):
    def plan(state):
        return {"log": ["plan"], "n": state["n"] + 1}

    def review(state):
        answer = interrupt("approve?") if ask else "yes"
        return {"log": [f"review:{answer}"]}

    def act(state):
        return {"log": ["act"], "n": state["n"] * 10}

    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("review", review)
    g.add_node("act", act)
    g.add_edge(START, "plan")
    g.add_edge("plan", "review")
    g.add_edge("review", "act")
    g.add_edge("act", END)
    return g.compile(checkpointer=saver)


def test_a_graph_runs_interrupts_resumes_and_forks(db):
    saver = InmemSaver(db)
    graph = _graph(saver, ask=True)
    config = {"configurable": {"thread_id": "t-1"}}
    first = graph.invoke({"log": [], "n": 1}, config)
    assert "__interrupt__" in first
    assert graph.get_state(config).next == ("review",)
    done = graph.invoke(Command(resume="ok"), config)
    assert done["log"] == ["plan", "review:ok", "act"] and done["n"] == 20
    history = list(graph.get_state_history(config))
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    # fork from the checkpoint after plan, with another n
    after_plan = next(s for s in history if s.next == ("review",))
    fork = graph.update_state(after_plan.config, {"n": 5})
    forked = graph.invoke(Command(resume="again"), fork)
    assert forked["n"] == 50 and forked["log"][-2:] == ["review:again", "act"]
    # the original branch is still there
    assert graph.get_state(history[0].config).values["n"] == 20


def test_async_graph_on_the_same_thread_layout(db):
    saver = InmemSaver(db)
    graph = _graph(saver)

    async def go():
        config = {"configurable": {"thread_id": "t-async"}}
        out = await graph.ainvoke({"log": [], "n": 2}, config)
        return out, [s async for s in graph.aget_state_history(config)]
    out, history = asyncio.run(go())
    assert out["n"] == 30 and len(history) == 5
    run = thread_run(saver.prefix, "t-async")
    keys = db.kv.keys(run)
    assert sum(k.startswith("checkpoint//") for k in keys) == 5
    assert "head/" in keys and any(k.startswith("blob//") for k in keys)


def test_thread_run_is_paused_and_never_orphaned(tmp_path):
    path = tmp_path / "store"
    with inmem.open(path, durability="strict") as db:
        saver = InmemSaver(db)
        assert saver.offload  # strict fsyncs: async calls go to a worker thread
        _graph(saver).invoke({"log": [], "n": 1}, {"configurable": {"thread_id": "keep"}})
        assert db.run_status(thread_run(saver.prefix, "keep")) == "paused"
    with inmem.open(path, durability="strict") as db:
        assert db.orphaned_runs() == []
        state = _graph(InmemSaver(db)).get_state({"configurable": {"thread_id": "keep"}})
        assert state.values["n"] == 20


def test_checkpoints_stay_out_of_keyword_search(db):
    # A thread's run is unsearchable: checkpoints are read by key, and their only
    # words (ids, channel names, version strings) would fill the index.
    saver = InmemSaver(db)
    graph = _graph(saver)
    graph.invoke({"log": [], "n": 1}, {"configurable": {"thread_id": "quiet",
                                                         "run_id": "lg-run-1"}})
    run = thread_run(saver.prefix, "quiet")
    assert db.runs.get(run).searchable is False
    assert db.runs.get(saver._index).searchable is False
    assert any(k.startswith("blob//log/") for k in db.kv.keys(run))
    for words in ("checkpoint", "blob", "log", "msgpack", "plan review act", "lg"):
        assert db.search(words).results == [], words
    # A searchable run beside it is found as before.
    other = db.begin_run()
    db.kv.put(other, "k", "plan review act")
    assert [h.run for h in db.search("review").results] == [other]


class Recording:
    """A backend that records every operation it is asked to run."""

    def __init__(self, inner):
        self.inner, self.ops = inner, []

    def call(self, op, args):
        self.ops.append((op, args))
        return self.inner.call(op, args)

    def call_batch(self, ops):
        self.ops.extend(ops)
        return self.inner.call_batch(ops)

    def fanout(self, op, args):
        self.ops.append(("fanout:" + op, args))
        return self.inner.fanout(op, args)

    def kv_section(self):
        return KV(self.call)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_reading_a_thread_touches_only_its_run(db):
    recording = Recording(db._backend)
    saver = InmemSaver(Database(recording))
    graph = _graph(saver)
    for t in ("x", "y"):
        graph.invoke({"log": [], "n": 1}, {"configurable": {"thread_id": t}})
    run = thread_run(saver.prefix, "x")
    recording.ops.clear()
    listed = list(saver.list({"configurable": {"thread_id": "x"}}))
    assert len(listed) == 5
    assert recording.ops and all(args[0] == run for _, args in recording.ops)
    assert not any(op.startswith("fanout:") or op == "run.list" for op, _ in recording.ops)
    recording.ops.clear()
    assert saver.get_tuple({"configurable": {"thread_id": "x", "checkpoint_ns": ""}})
    assert [op for op, _ in recording.ops] == ["kv.get_linked"]
    assert all(args[0] == run for _, args in recording.ops)


def test_put_and_get_tuple_are_one_operation_each(db):
    # One operation is one message to the thread's shard: one round trip.
    recording = Recording(db._backend)
    saver = InmemSaver(Database(recording))
    config = {"configurable": {"thread_id": "one", "checkpoint_ns": ""}}
    _graph(saver).invoke({"log": [], "n": 1}, config)  # the thread's run exists from here
    latest = saver.get_tuple(config)
    recording.ops.clear()
    checkpoint = {**latest.checkpoint, "id": str(uuid6(clock_seq=-1))}
    versions = {ch: saver.get_next_version(v, None)
                for ch, v in checkpoint["channel_versions"].items() if ch == "n"}
    checkpoint["channel_versions"] = {**checkpoint["channel_versions"], **versions}
    checkpoint["channel_values"] = {**checkpoint["channel_values"], "n": 99}
    new = saver.put(latest.config, checkpoint, {"source": "update", "step": 9}, versions)
    assert [op for op, _ in recording.ops] == ["kv.put_many"]
    for where in (config, new):
        recording.ops.clear()
        got = saver.get_tuple(where)
        assert [op for op, _ in recording.ops] == ["kv.get_linked"]
        assert got.checkpoint["id"] == checkpoint["id"]
        assert got.checkpoint["channel_values"]["n"] == 99
        assert got.checkpoint["channel_values"]["log"] == latest.checkpoint["channel_values"]["log"]
        assert got.parent_config == latest.config


def test_list_without_a_config_walks_every_thread(db):
    saver = InmemSaver(db)
    graph = _graph(saver)
    for t in ("a", "b", "c"):
        graph.invoke({"log": [], "n": 1}, {"configurable": {"thread_id": t}})
    everything = list(saver.list(None))
    assert len(everything) == 15
    assert {t.config["configurable"]["thread_id"] for t in everything} == {"a", "b", "c"}
    assert len(list(saver.list(None, filter={"step": 1}, limit=2))) == 2


def test_prune_and_delete_for_runs_give_the_space_back(db):
    saver = InmemSaver(db)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "p"}}
    graph.invoke({"log": [], "n": 1}, config)
    run = thread_run(saver.prefix, "p")
    latest = saver.get_tuple(config)
    saver.prune(["p"])
    keys = db.kv.keys(run)
    assert [k for k in keys if k.startswith("checkpoint/")] == [
        f"checkpoint//{latest.checkpoint['id']}"]
    # only the blobs the kept checkpoint points at are left
    assert len([k for k in keys if k.startswith("blob/")]) == len(
        [v for v in latest.checkpoint["channel_versions"]])
    assert saver.get_tuple(config).checkpoint["channel_values"] == \
        latest.checkpoint["channel_values"]

    run_id = str(uuid.uuid4())
    graph.invoke({"log": [], "n": 3}, {**config, "metadata": {"run_id": run_id}})
    assert saver.get_tuple(config).metadata["run_id"] == run_id
    saver.delete_for_runs([run_id])
    left = list(saver.list(config))
    assert [t.checkpoint["id"] for t in left] == [latest.checkpoint["id"]]
    assert saver.get_tuple(config).checkpoint["id"] == latest.checkpoint["id"]
    assert db.json.get(f"{saver.prefix}runs", run_id) is None


def test_versions_grow_and_never_collide_across_forks():
    saver = InmemSaver(inmem.open(None))
    v1 = saver.get_next_version(None)
    v2 = saver.get_next_version(v1)
    assert v1 < v2 and int(v2.split(".")[0]) == 2
    assert saver.get_next_version(v1) != v2
    assert int(saver.get_next_version(7).split(".")[0]) == 8


def _drive_with_a_put_between(saver, plan, between, after: int):
    """Run a plan of `saver`, calling `between()` once `after` of its batches are
    answered: a graph's put landing while prune or delete_for_runs works."""
    from inmem.langgraph.driver import execute_sync
    sent = next(plan)
    batches = 0
    try:
        while True:
            answer = execute_sync(saver.db, sent)
            batches += 1
            if batches == after:
                between()
            sent = plan.send(answer)
    except StopIteration as stop:
        assert batches > after
        return stop.value


def _put_step(saver, config, step, run_id=None):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    metadata = {"source": "loop", "step": step}
    if run_id:
        metadata["run_id"] = run_id
    return saver.put(config, checkpoint, metadata, {})


def test_a_put_during_prune_or_delete_for_runs_stays_the_newest(db):
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "busy", "checkpoint_ns": ""}}
    latest = config
    for step in range(3):
        latest = _put_step(saver, latest, step, run_id="old-run")
    landed = []
    _drive_with_a_put_between(saver, saver._prune(["busy"], "keep_latest"),
                              lambda: landed.append(_put_step(saver, latest, 99)), after=1)
    assert saver.get_tuple(config).config == landed[0]
    assert [t.metadata["step"] for t in saver.list(config)] == [99]  # the newest, kept
    # the old run's last checkpoint, again the head: delete_for_runs must move it
    _put_step(saver, landed[0], 3, run_id="old-run")

    _drive_with_a_put_between(saver, saver._delete_for_runs(["old-run"]),
                              lambda: landed.append(_put_step(saver, landed[0], 100)),
                              after=2)
    assert saver.get_tuple(config).config == landed[1]
    assert [t.metadata["step"] for t in saver.list(config)] == [100, 99]


def test_a_fork_put_during_prune_keeps_the_values_it_points_at(db):
    # update_state on an old checkpoint while prune works: the fork's checkpoint points
    # at the old checkpoint's channel values, which prune had chosen to delete.
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "fork", "checkpoint_ns": ""}}
    saved, version = [], None
    for step in range(3):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        version = saver.get_next_version(version)
        checkpoint["channel_versions"] = {"x": version}
        checkpoint["channel_values"] = {"x": f"value {step}"}
        saved.append(saver.put(saved[-1] if saved else config, checkpoint,
                               {"source": "loop", "step": step}, {"x": version}))
    first = saver.get_tuple(saved[0])

    def fork():
        checkpoint = {**first.checkpoint, "id": str(uuid6(clock_seq=-1))}
        saver.put(saved[0], checkpoint, {"source": "fork", "step": 1}, {})  # no new values

    _drive_with_a_put_between(saver, saver._prune(["fork"], "keep_latest"), fork, after=1)
    latest = saver.get_tuple(config)
    assert latest.metadata["source"] == "fork"
    assert latest.checkpoint["channel_values"] == {"x": "value 0"}


def test_one_saver_shared_by_threads_that_put_and_delete(db):
    # A server's one checkpointer: graphs put (each with its run id, remembered as
    # indexed) while others delete threads and runs, which walk what is remembered.
    import sys
    import threading
    import time
    saver = InmemSaver(db)
    errors: list = []
    stop = threading.Event()

    def putter(n):
        i = 0
        while not stop.is_set():
            try:
                saver.put({"configurable": {"thread_id": f"live-{n}-{i % 20}",
                                            "checkpoint_ns": ""}},
                          empty_checkpoint(), {"run_id": str(uuid.uuid4())}, {})
            except Exception as exc:
                errors.append(exc)
                return
            i += 1

    def deleter(n):
        i = 0
        while not stop.is_set():
            try:
                saver.delete_thread(f"gone-{n}-{i}")
                saver.delete_for_runs([str(uuid.uuid4())])
            except Exception as exc:
                errors.append(exc)
                return
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = ([threading.Thread(target=putter, args=(n,)) for n in range(3)]
                   + [threading.Thread(target=deleter, args=(n,)) for n in range(2)])
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(list(saver.list({"configurable": {"thread_id": "live-0-0"}}))) >= 1


def test_a_large_cut_goes_in_transactions_and_a_put_between_them_is_seen(db, monkeypatch):
    import inmem.langgraph.cuts as cuts_module
    monkeypatch.setattr(cuts_module, "_CUT_CHUNK", 3)  # a few deletes per transaction
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "many", "checkpoint_ns": ""}}
    saved, version = [], None
    for step in range(6):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        version = saver.get_next_version(version)
        checkpoint["channel_versions"] = {"x": version}
        checkpoint["channel_values"] = {"x": f"value {step}"}
        saved.append(saver.put(saved[-1] if saved else config, checkpoint,
                               {"source": "loop", "step": step}, {"x": version}))
    first = saver.get_tuple(saved[0])

    def fork():  # lands after the first transaction of the cut
        checkpoint = {**first.checkpoint, "id": str(uuid6(clock_seq=-1))}
        saver.put(saved[0], checkpoint, {"source": "fork", "step": 1}, {})

    _drive_with_a_put_between(saver, saver._prune(["many"], "keep_latest"), fork, after=3)
    (latest,) = list(saver.list(config))
    assert latest.metadata["source"] == "fork"
    assert latest.checkpoint["channel_values"] == {"x": "value 0"}
    run = thread_run(saver.prefix, "many")
    assert len([k for k in db.kv.keys(run) if k.startswith("blob/")]) == 1


def test_readers_see_whole_checkpoints_while_a_cut_is_under_way(db, monkeypatch):
    # A cut in several transactions: between any two, get_tuple and list give each
    # checkpoint with its values, or not at all (the head too, whose copy get_tuple reads).
    import inmem.langgraph.cuts as cuts_module
    from inmem.langgraph.driver import execute_sync
    monkeypatch.setattr(cuts_module, "_CUT_CHUNK", 3)
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "cut", "checkpoint_ns": ""}}
    saved, version = config, None
    for step in range(6):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        version = saver.get_next_version(version)
        checkpoint["channel_versions"] = {"x": version, "y": version}
        checkpoint["channel_values"] = {"x": step, "y": step}
        saved = saver.put(saved, checkpoint, {"source": "loop", "step": step,
                                              "run_id": "late" if step >= 3 else "early"},
                          {"x": version, "y": version})
    plan = saver._delete_for_runs(["late"])
    sent, batches = next(plan), 0
    try:
        while True:
            answer = execute_sync(db, sent)
            batches += 1
            head = saver.get_tuple(config)
            step = head.metadata["step"]
            assert head.checkpoint["channel_values"] == {"x": step, "y": step}
            for t in saver.list(config):
                step = t.metadata["step"]
                assert t.checkpoint["channel_values"] == {"x": step, "y": step}
            sent = plan.send(answer)
    except StopIteration:
        pass
    assert batches > 4  # the cut went in several transactions
    assert [t.metadata["step"] for t in saver.list(config)] == [2, 1, 0]


def test_a_bare_str_for_the_threads_or_runs_is_refused_not_taken_letter_by_letter(db):
    # prune("12", strategy="delete") deleted threads "1" and "2" (a str is a sequence of
    # one-letter ids), and delete_for_runs("run-7") the runs "r", "u", "n", "-", "7".
    saver = InmemSaver(db)
    for thread in ("1", "2", "12"):
        saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
                  empty_checkpoint(), {"source": "input", "step": 1, "run_id": "7"}, {})

    def threads():
        return sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})

    for call in (lambda: saver.prune("12", strategy="delete"), lambda: saver.prune("12"),
                 lambda: saver.delete_for_runs("77"), lambda: saver.delete_for_runs(b"7"),
                 lambda: asyncio.run(saver.aprune("12", strategy="delete")),
                 lambda: asyncio.run(saver.adelete_for_runs("77"))):
        try:
            call()
        except inmem.InvalidValue as exc:
            assert "list" in str(exc)
        else:
            raise AssertionError("a bare str was taken")
        assert threads() == ["1", "12", "2"]
    saver.prune(["12"], strategy="delete")
    assert threads() == ["1", "2"]
    saver.delete_for_runs(["7"])
    assert threads() == []


def test_list_refuses_arguments_it_cannot_use_with_invalid_value(db):
    # limit=1.5 and limit="1" raised TypeError from a slice or a comparison, filter=5
    # AttributeError, before="id" TypeError ("string indices must be integers").
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    saver.put(config, empty_checkpoint(), {"source": "input", "step": 1}, {})
    for arguments in ({"limit": 1.5}, {"limit": "1"}, {"limit": True}, {"filter": 5},
                      {"filter": ["step"]}, {"before": "x"}, {"before": 5}):
        for target in (config, None):
            with pytest.raises(inmem.InvalidValue, match=next(iter(arguments))):
                list(saver.list(target, **arguments))
        with pytest.raises(inmem.InvalidValue, match=next(iter(arguments))):
            asyncio.run(_collect(saver.alist(config, **arguments)))
    assert len(list(saver.list(config, limit=1, filter={"step": 1}))) == 1


async def _collect(iterator):
    return [item async for item in iterator]


def test_a_thread_id_that_is_no_id_is_refused(db):
    # delete_thread(["a", "b"]) deleted the thread named "['a', 'b']" (none), leaving both;
    # a put with thread_id None made a thread "None".
    saver = InmemSaver(db)
    config = {"configurable": {"thread_id": "a", "checkpoint_ns": ""}}
    saver.put(config, empty_checkpoint(), {"source": "input", "step": 1}, {})
    for bad in (["a"], ("a",), None, {"a": 1}, b"a", 1.5):
        with pytest.raises(inmem.InvalidValue, match="thread"):
            saver.delete_thread(bad)
        with pytest.raises(inmem.InvalidValue, match="thread"):
            saver.put({"configurable": {"thread_id": bad, "checkpoint_ns": ""}},
                      empty_checkpoint(), {"source": "input", "step": 1}, {})
        with pytest.raises(inmem.InvalidValue, match="thread"):
            saver.get_tuple({"configurable": {"thread_id": bad}})
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None)] == ["a"]
    # ints and UUIDs name threads as LangGraph's own savers take them
    saver.put({"configurable": {"thread_id": 7, "checkpoint_ns": ""}}, empty_checkpoint(),
              {"source": "input", "step": 1}, {})
    assert saver.get_tuple({"configurable": {"thread_id": "7"}}) is not None
    thread = uuid.uuid4()
    saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, empty_checkpoint(),
              {"source": "input", "step": 1}, {})
    assert saver.get_tuple({"configurable": {"thread_id": str(thread)}}) is not None
