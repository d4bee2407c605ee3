"""The adapters' sync methods on an inmem.asyncio database: they work where they can and
refuse where they cannot, and never report a write they did not make.

An embedded asynchronous store is called directly; a cluster's plan runs on its event
loop when the caller is another thread (as LangGraph's own async savers do); a sync
call from inside that loop is an InmemError, before anything is sent.
"""

import asyncio
import uuid

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph

import inmem
import inmem.asyncio
from inmem.langgraph import InmemSaver, InmemStore

from .test_saver import State


def _config(thread):
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def _put(saver, thread):
    return saver.put(_config(thread), empty_checkpoint(), {"source": "input", "step": -1}, {})


def test_sync_methods_on_an_async_embedded_store_write_and_read(tmp_path):
    async def go():
        db = await inmem.asyncio.open(str(tmp_path / "store"), durability="strict")
        try:
            saver, store = InmemSaver(db), InmemStore(db)
            saved = _put(saver, "t-embedded")
            # The write the sync put answered for is there for the async methods too.
            got = await saver.aget_tuple(saved)
            assert got is not None and got.config == saved
            assert saver.get_tuple(saved).config == saved
            assert [t.config for t in saver.list(_config("t-embedded"))] == [saved]
            store.put(("users",), "u1", {"name": "ada"})
            assert store.get(("users",), "u1").value == {"name": "ada"}
            assert (await store.aget(("users",), "u1")).value == {"name": "ada"}
        finally:
            await db.close()
    asyncio.run(go())


def test_sync_methods_on_an_async_cluster_run_on_its_loop_from_another_thread():
    from cluster.shared import shared_cluster

    async def go():
        db = await inmem.asyncio.connect(shared_cluster().endpoint, timeout=10.0)
        try:
            saver = InmemSaver(db, prefix=f"sync-on-async-{uuid.uuid4().hex}/")
            store = InmemStore(db, run=f"sync-on-async-{uuid.uuid4().hex}-store")
            saved = await asyncio.to_thread(_put, saver, "t-cluster")
            got = await saver.aget_tuple(saved)
            assert got is not None and got.config == saved
            back = await asyncio.to_thread(saver.get_tuple, saved)
            assert back.config == saved
            await asyncio.to_thread(store.put, ("users",), "u1", {"name": "ada"})
            assert (await store.aget(("users",), "u1")).value == {"name": "ada"}
        finally:
            await db.close()
    asyncio.run(go())


def test_a_sync_call_from_the_clusters_own_loop_is_refused_and_writes_nothing():
    from cluster.shared import shared_cluster

    async def go():
        db = await inmem.asyncio.connect(shared_cluster().endpoint, timeout=10.0)
        try:
            prefix = f"sync-on-async-{uuid.uuid4().hex}/"
            saver, store = InmemSaver(db, prefix=prefix), InmemStore(db, run=prefix + "store")
            with pytest.raises(inmem.InmemError, match="await the async method"):
                _put(saver, "t-refused")
            assert await saver.aget_tuple(_config("t-refused")) is None
            assert not [r for r in await db.runs.list() if r.run_id.startswith(prefix)]
            with pytest.raises(inmem.InmemError, match="await the async method"):
                saver.get_tuple(_config("t-refused"))
            with pytest.raises(inmem.InmemError, match="await the async method"):
                list(saver.list(_config("t-refused")))
            with pytest.raises(inmem.InmemError, match="await the async method"):
                store.put(("users",), "u1", {"name": "ada"})

            # What a graph compiled with this saver meets when sync code asks it.
            g = StateGraph(State)
            g.add_node("step", lambda s: {"log": ["step"], "n": s["n"] + 1})
            g.add_edge(START, "step")
            g.add_edge("step", END)
            graph = g.compile(checkpointer=saver)
            config = {"configurable": {"thread_id": "t-graph"}}
            assert (await graph.ainvoke({"log": [], "n": 0}, config))["n"] == 1
            with pytest.raises(inmem.InmemError, match="await the async method"):
                graph.get_state(config)
            assert (await graph.aget_state(config)).values["n"] == 1
        finally:
            await db.close()
    asyncio.run(go())
