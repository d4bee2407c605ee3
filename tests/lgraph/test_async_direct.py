"""`aput` and `aget_tuple` on an inmem.asyncio database await their one operation
themselves, as `put` and `get_tuple` call it on a sync one: the usual put is one
`kv.put_many` and the usual read one `kv.get_linked`, and whatever takes more (a new
thread, a LangGraph run id to index, a value too large, writes kept apart) takes the
plan's way with the same answers, the index entry written after its checkpoint."""

import asyncio
import uuid

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

import inmem
import inmem.asyncio
from inmem.langgraph import InmemSaver


class Recorder:
    """Wraps an asynchronous backend, recording the operations sent through it."""

    def __init__(self, inner):
        self.inner, self.ops = inner, []

    async def call(self, op, args):
        self.ops.append(op)
        return await self.inner.call(op, args)

    async def call_batch(self, ops):
        self.ops.extend(op for op, _ in ops)
        return await self.inner.call_batch(ops)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _checkpoint(value=None):
    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=-1))
    if value is not None:
        checkpoint["channel_values"] = {"big": value}
        checkpoint["channel_versions"] = {"big": "1"}
    return checkpoint


def _config(thread, ns=""):
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


async def _open(kind):
    if kind == "embedded":
        return await inmem.asyncio.open(None, max_value_bytes=1 << 20)
    from cluster.shared import shared_cluster
    return await inmem.asyncio.connect(shared_cluster().endpoint, timeout=10.0)


@pytest.mark.parametrize("kind", ["embedded", "cluster"])
def test_the_usual_aput_and_aget_tuple_are_one_operation_each(kind):
    async def go():
        db = await _open(kind)
        try:
            recorder = Recorder(db._backend)
            db._backend = recorder
            saver = InmemSaver(db, prefix=f"direct-{uuid.uuid4().hex[:8]}:")
            meta = {"source": "loop", "step": 1, "run_id": "r1"}
            first = await saver.aput(_config("t"), _checkpoint(), meta, {})
            # A new thread: refused, its run made, sent again; then the run id's index
            # entry, after the checkpoint.
            assert recorder.ops[0] == "kv.put_many" and recorder.ops[-1] == "js.set"
            assert recorder.ops.index("js.set") > recorder.ops.index("kv.put_many", 1)
            recorder.ops.clear()
            second = await saver.aput(_config("t"), _checkpoint(), meta, {})
            assert recorder.ops == ["kv.put_many"]
            recorder.ops.clear()
            got = await saver.aget_tuple(_config("t"))
            assert recorder.ops == ["kv.get_linked"]
            assert got.config == second and got.parent_config is None
            assert (await saver.aget_tuple(first)).config == first
            assert await saver.aget_tuple(_config("no-such-thread")) is None
            await saver.adelete_for_runs(["r1"])
            assert await saver.aget_tuple(_config("t")) is None
        finally:
            await db.close()
    asyncio.run(go())


def test_an_aput_too_large_names_its_channel_and_writes_nothing():
    async def go():
        db = await _open("embedded")
        try:
            saver = InmemSaver(db)
            await saver.aput(_config("t"), _checkpoint(), {"source": "input", "step": -1}, {})
            with pytest.raises(inmem.ValueTooLarge, match="'big'"):
                await saver.aput(_config("t"), _checkpoint(b"x" * (2 << 20)),
                                 {"source": "loop", "step": 0}, {"big": "1"})
            assert len([t async for t in saver.alist(_config("t"))]) == 1
        finally:
            await db.close()
    asyncio.run(go())


def test_aget_tuple_reads_the_pending_writes_kept_apart():
    async def go():
        db = await _open("embedded")
        try:
            saver = InmemSaver(db)
            saved = await saver.aput(_config("t"), _checkpoint(),
                                     {"source": "loop", "step": 1}, {})
            await saver.aput_writes(saved, [("big", "y" * 10000), ("small", 1)], "task-1")
            got = await saver.aget_tuple(_config("t"))
            assert sorted((w[1], w[2]) for w in got.pending_writes) == [
                ("big", "y" * 10000), ("small", 1)]
        finally:
            await db.close()
    asyncio.run(go())
