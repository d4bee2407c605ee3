"""The API suite's tests run against `inmem.asyncio`: a blocking face over an AsyncDatabase.

`SyncFace` wraps an AsyncDatabase (and the sections, transactions and
pipelines it hands out) so that a test written for `inmem.Database` drives it
unchanged: every call is sent to one event loop running in a thread of its
own and awaited there, its result (or its exception, the very object raised)
handed back. `with` blocks become `async with`; the functions given to
`run_transaction` and `state.transition` run in a worker thread, so they may
call the face themselves while the loop serves them. Nothing here does any
store work: every operation is the async code's own.

The factories at the bottom are the conftest's `async-*` backends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading

import inmem.asyncio
from inmem.async_database import (AsyncDatabase, AsyncPipeline, AsyncTransaction,
                                  AsyncTxEvents, AsyncTxJSON, AsyncTxKV, AsyncTxState,
                                  AsyncTxTraces)
from inmem.sections import _Section


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-asyncio-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, awaitable, timeout: float = 120.0):
        if threading.current_thread() is self.thread:
            raise RuntimeError("a SyncFace was called from its own event loop")

        async def _await():
            return await awaitable
        return asyncio.run_coroutine_threadsafe(_await(), self.loop).result(timeout)


_loop_lock = threading.Lock()
_loop: LoopThread | None = None


def loop_thread() -> LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = LoopThread()
        return _loop


_WRAPPED = (AsyncDatabase, AsyncPipeline, AsyncTransaction, _Section, AsyncTxKV, AsyncTxEvents,
            AsyncTxState, AsyncTxTraces, AsyncTxJSON)
#: methods whose function argument is called by the async code
_FN_ARG = {"run_transaction": 1, "transition": 2, "transition_or_init": 3}


def _face(value):
    return SyncFace(value) if isinstance(value, _WRAPPED) else value


def _off_loop(fn, wrap_arg: bool):
    """`fn` as an async function run in a worker thread (its argument wrapped if it is ours)."""
    async def call(arg):
        return await asyncio.to_thread(fn, _face(arg) if wrap_arg else arg)
    return call


class SyncFace:
    __slots__ = ("_obj",)

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def __getattr__(self, name):
        attr = getattr(self._obj, name)
        if isinstance(attr, _WRAPPED):
            return SyncFace(attr)
        if not callable(attr) or isinstance(attr, type):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            pos = _FN_ARG.get(name)
            if pos is not None:
                wrap = name == "run_transaction"
                if len(args) > pos:
                    args = (*args[:pos], _off_loop(args[pos], wrap), *args[pos + 1:])
                elif "fn" in kwargs:
                    kwargs["fn"] = _off_loop(kwargs["fn"], wrap)
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                result = loop_thread().run(result)
            return _face(result)
        return call

    def __setattr__(self, name, value):
        setattr(self._obj, name, value)

    def __enter__(self):
        return _face(loop_thread().run(self._obj.__aenter__()))

    def __exit__(self, *exc):
        return loop_thread().run(self._obj.__aexit__(*exc))

    def __len__(self):
        return len(self._obj)

    def __repr__(self):
        return repr(self._obj)


# -- the conftest's factories ----------------------------------------------------------


def open_embedded(path=None, durability="buffered", **options) -> SyncFace:
    return SyncFace(loop_thread().run(inmem.asyncio.open(path, durability, **options)))


class AsyncClockedBackend:
    """An async cluster backend that pins the shards' clock to a test's clock before each call."""

    def __init__(self, inner, clock):
        self.inner = inner
        self.clock = clock
        self.sent = None

    async def _sync(self) -> None:
        now = self.clock()
        if now != self.sent:
            await self.inner.cluster("debug.clock", [now])
            self.sent = now

    async def call(self, op, args):
        await self._sync()
        return await self.inner.call(op, args)

    async def call_batch(self, ops):
        await self._sync()
        return await self.inner.call_batch(ops)

    async def fanout(self, op, args):
        await self._sync()
        return await self.inner.fanout(op, args)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def open_cluster(clock=None, max_value_bytes=None, direct=True, stream=True,
                 **options) -> SyncFace:
    """An AsyncDatabase on the suite's shared 2-shard cluster, wiped first."""
    from cluster.shared import shared_cluster
    if options:
        raise TypeError(f"the shared test cluster does not take {sorted(options)}")
    endpoint = shared_cluster().endpoint

    async def _open():
        db = await inmem.asyncio.connect(endpoint, timeout=10.0, direct=direct, stream=stream)
        backend = db._backend
        await backend.cluster("debug.reset")
        if max_value_bytes is not None:
            await backend.cluster("debug.max_value_bytes", [max_value_bytes])
        if clock is not None:
            db = AsyncDatabase(AsyncClockedBackend(backend, clock))
        return db
    return SyncFace(loop_thread().run(_open()))


__all__ = ["SyncFace", "LoopThread", "loop_thread", "open_embedded", "open_cluster"]
