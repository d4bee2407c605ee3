"""inmem for asyncio code: `await inmem.asyncio.open(...)` and `await inmem.asyncio.connect(url)`.

Both return an `AsyncDatabase`: the sections and methods of `inmem.Database`
under the same names, every call awaited::

    import inmem.asyncio

    async def main():
        db = await inmem.asyncio.connect("ipc:///tmp/inmem/coordinator.sock")
        run = await db.begin_run("agent")
        await asyncio.gather(*(db.kv.put(run, f"k{i}", i) for i in range(1000)))
        async with db.transaction(run) as tx:
            await tx.kv.put("total", await tx.kv.get("k1") + 1)
        await db.close()

`open` is a coroutine too: opening a durable store recovers it from disk
(snapshot load and WAL replay), which can take seconds, so it runs in a
worker thread rather than on the event loop; an in-memory store opens
inline. The options are `inmem.open`'s and `inmem.connect`'s.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

from .async_database import AsyncDatabase, AsyncPipeline, AsyncTransaction


async def open(path: str | os.PathLike | None = None,  # noqa: A001
               durability: str = "buffered", *, clock: Callable[[], int] | None = None,
               **options) -> AsyncDatabase:
    """An embedded store in this process, as `inmem.open`, for use from this event loop."""
    import inmem
    from .async_embedded import AsyncEmbeddedBackend
    if path is None or durability == "inmemory":
        db = inmem.open(path, durability, clock=clock, **options)
    else:
        db = await asyncio.to_thread(inmem.open, path, durability, clock=clock, **options)
    return AsyncDatabase(AsyncEmbeddedBackend(db._backend))


async def connect(url: str, timeout: float = 5.0, **options) -> AsyncDatabase:
    """A connection to the cluster at `url`, once every shard is ready, as `inmem.connect`.

    Options: request_timeout (seconds per call; default `timeout`),
    max_message_bytes, direct (run operations straight to the owning shard;
    default True), keys (the cluster's key directory, or a client's
    `.key_secret` file: Curve on tcp). The connection belongs to the running event loop; any
    number of calls may be in flight on it at once.
    """
    from .async_client import AsyncClusterBackend
    from .routing import check_connect_options
    check_connect_options(options)
    backend = AsyncClusterBackend(url, timeout, **options)
    try:
        await backend.wait_ready(timeout)
    except BaseException:
        await backend.close()
        raise
    return AsyncDatabase(backend)


__all__ = ["open", "connect", "AsyncDatabase", "AsyncTransaction", "AsyncPipeline"]
