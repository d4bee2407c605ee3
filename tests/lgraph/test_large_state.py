"""State larger than one reply: a cluster refuses a reply over its client's
`max_message_bytes`, and the adapters must still read back everything they
wrote (a history of several MiB of state, a checkpoint whose channels add up
to more than a message, a copy of such a thread, a namespace of the store).

The clients here connect with a small `max_message_bytes` so that a few
hundred KiB stand for the default 64 MiB; the same reads on an embedded store
(no message limit) give the same answers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import TypedDict

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph

import inmem
import inmem.asyncio
from inmem.errors import ProtocolError
from inmem.langgraph import InmemSaver, InmemStore
from inmem.langgraph.reads import read_in_pieces

#: the client's message limit in these tests, and the size of one channel value
LIMIT = 256 * 1024
VALUE = 60 * 1024
STEPS = 10


class Big(TypedDict):
    n: int
    a: str
    b: str
    c: str
    d: str
    e: str
    f: str


def _graph(saver, written: list):
    """Each step sets one of six channels to VALUE bytes of fresh text: the newest
    checkpoint names ~360 KiB, the history several MiB."""
    def step(state):
        channel = "abcdef"[state["n"] % 6]
        value = os.urandom(VALUE // 2).hex()
        written.append((channel, value))
        return {"n": state["n"] + 1, channel: value}

    g = StateGraph(Big)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: "step" if s["n"] < STEPS else END)
    return g.compile(checkpointer=saver)


def _expected(written: list) -> dict:
    state = {"n": len(written), **dict.fromkeys("abcdef", "")}
    for channel, value in written:
        state[channel] = value
    return state


def _check_thread(graph, saver, thread: str, written: list) -> None:
    config = {"configurable": {"thread_id": thread}}
    assert graph.get_state(config).values == _expected(written)
    history = list(graph.get_state_history(config))
    assert [s.metadata["step"] for s in history] == list(range(STEPS, -2, -1))
    for snap in history[:-1]:
        assert snap.values == _expected(written[:snap.values["n"]])
    saver.copy_thread(thread, thread + "-copy")
    copy = {"configurable": {"thread_id": thread + "-copy"}}
    assert [s.values for s in graph.get_state_history(copy)] == [s.values for s in history]


@pytest.fixture
def small_cluster_db():
    from cluster.shared import shared_cluster
    db = shared_cluster().connect(max_message_bytes=LIMIT)
    yield db
    db.close()


def test_history_and_a_checkpoint_over_one_reply_read_back_on_a_cluster(small_cluster_db):
    saver = InmemSaver(small_cluster_db, prefix=f"big-{uuid.uuid4().hex[:8]}:")
    written: list = []
    graph = _graph(saver, written)
    graph.invoke({"n": 0, "a": "", "b": "", "c": "", "d": "", "e": "", "f": ""},
                 {"configurable": {"thread_id": "t"}})
    _check_thread(graph, saver, "t", written)


def test_the_same_on_an_embedded_store():
    with inmem.open(None) as db:
        saver = InmemSaver(db)
        written: list = []
        graph = _graph(saver, written)
        graph.invoke({"n": 0, "a": "", "b": "", "c": "", "d": "", "e": "", "f": ""},
                     {"configurable": {"thread_id": "t"}})
        _check_thread(graph, saver, "t", written)


def test_async_methods_over_one_reply_on_an_asyncio_cluster():
    from cluster.shared import shared_cluster

    async def go():
        db = await inmem.asyncio.connect(shared_cluster().endpoint, timeout=10.0,
                                         max_message_bytes=LIMIT)
        try:
            saver = InmemSaver(db, prefix=f"big-{uuid.uuid4().hex[:8]}:")
            written: list = []
            graph = _graph(saver, written)
            config = {"configurable": {"thread_id": "t"}}
            await graph.ainvoke({"n": 0, "a": "", "b": "", "c": "", "d": "", "e": "", "f": ""},
                                config)
            state = await graph.aget_state(config)
            history = [s async for s in graph.aget_state_history(config)]
            await saver.acopy_thread("t", "t-copy")
            listed = [t async for t in saver.alist(config)]
            copied = [t async for t in saver.alist({"configurable": {"thread_id": "t-copy"}})]
            return written, state, history, listed, copied
        finally:
            await db.close()

    written, state, history, listed, copied = asyncio.run(go())
    assert state.values == _expected(written)
    assert len(history) == STEPS + 2
    for snap in history[:-1]:
        assert snap.values == _expected(written[:snap.values["n"]])
    assert [t.checkpoint["id"] for t in copied] == [s.config["configurable"]["checkpoint_id"]
                                                    for s in history]
    assert [t.checkpoint for t in copied] == [t.checkpoint for t in listed]


def test_a_store_namespace_over_one_reply_is_searched_on_a_cluster(small_cluster_db):
    store = InmemStore(small_cluster_db, run=f"big-store-{uuid.uuid4().hex[:8]}")
    for i in range(12):
        store.put(("docs",), f"d{i}", {"body": os.urandom(VALUE // 2).hex(), "i": i})
    found = store.search(("docs",), limit=20)
    assert sorted(item.value["i"] for item in found) == list(range(12))
    assert [item.value["i"] for item in store.search(("docs",), filter={"i": 3})] == [3]


# -- read_in_pieces against a model of a size-limited cluster ---------------------------


def _run_limited(store: dict, limit: int, plan):
    """Drive `plan` as a cluster would: each batch is one reply, refused as a whole
    (ProtocolError in place of every result) when over `limit` bytes."""
    def execute(op, args):
        run = store.get(args[0], {})
        if op == "kv.get_many":
            return [run.get(k) for k in args[1]]
        if op in ("kv.keys", "kv.items"):
            after, limit = (args[2], args[3]) if len(args) > 2 else (None, None)
            listed = [k for k in sorted(run)
                      if k.startswith(args[1]) and (after is None or k > after)][:limit]
            return listed if op == "kv.keys" else [(k, run[k]) for k in listed]
        raise AssertionError(op)

    batches = 0
    try:
        ops = next(plan)
        while True:
            batches += 1
            assert batches < 10_000, "read_in_pieces does not converge"
            results = [execute(op, args) for op, args in ops]
            if len(msgpack.packb(results, use_bin_type=True)) > limit:
                results = [ProtocolError("reply over max_message_bytes")] * len(ops)
            ops = plan.send(results)
    except StopIteration as stop:
        return stop.value


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=0, max_size=40),
       limit=st.integers(320, 3000),
       reads=st.lists(st.sampled_from(["get_many", "keys", "items"]), min_size=1, max_size=4))
def test_read_in_pieces_answers_what_one_unbounded_reply_would(sizes, limit, reads):
    store = {"r": {f"k{i:02}": "x" * n for i, n in enumerate(sizes)}}
    keys = sorted(store["r"]) + ["absent"]
    ops = []
    for kind in reads:
        if kind == "get_many":
            ops.append(("kv.get_many", ("r", keys)))
        else:
            ops.append((f"kv.{kind}", ("r", "k")))
    want = _run_limited(store, 1 << 40, read_in_pieces(ops))
    got = _run_limited(store, limit, read_in_pieces(ops))
    assert got == want
    assert not any(isinstance(r, ProtocolError) for r in want)


def test_a_listing_of_more_keys_than_one_reply_holds_comes_in_pages():
    store = {"r": {f"key/{i:04}": "x" * (i % 50) for i in range(500)}}
    ops = [("kv.keys", ("r", "key/")), ("kv.items", ("r", "key/"))]
    want = _run_limited(store, 1 << 40, read_in_pieces(ops))
    assert _run_limited(store, 400, read_in_pieces(ops)) == want
    assert want[0] == sorted(store["r"]) and len(want[1]) == 500


def test_prune_of_a_long_thread_fits_the_message_limit(small_cluster_db):
    # Its deletes went in one transaction: one message, over the client's limit.
    saver = InmemSaver(small_cluster_db, prefix=f"long-{uuid.uuid4().hex[:8]}:")
    config = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
    saved, version = config, None
    for step in range(1500):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        version = saver.get_next_version(version)
        checkpoint["channel_versions"] = {"x": version}
        checkpoint["channel_values"] = {"x": step}
        saved = saver.put(saved, checkpoint, {"source": "loop", "step": step},
                          {"x": version})
    saver.prune(["long"])
    (kept,) = list(saver.list(config))
    assert kept.config == saved and kept.checkpoint["channel_values"] == {"x": 1499}
