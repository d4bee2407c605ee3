"""Running the adapters' storage plans on a database: sync, in a worker thread, or awaited.

The checkpointer and the store write each operation once, as a *plan*: a
generator that yields batches of inmem operations and receives each batch's
results (an exception object in place of a result that failed, as a
pipeline returns them), then returns the answer. A batch is sent as one
pipeline, so the operations of one thread's run reach its shard in one
message; a plan needs as many round trips as it yields batches.

The same plan then runs three ways:

- `run_sync(db, plan)` on a `Database`, for the sync methods; on an
  asynchronous database too: an embedded one's store is called directly,
  a cluster's plan runs on its event loop when the caller is another thread
  (as LangGraph's own async savers do), and a sync call from inside that
  loop, which would have to wait for the loop it holds, is refused with
  InmemError;
- `await run_async(db, plan, offload)` for the async methods on a sync
  `Database`: the whole plan runs in a worker thread (one hop per call, not
  per batch) when the database may block — a cluster's sockets, an embedded
  store's fsync in "strict" mode — and inline when it cannot (an embedded
  store in memory or "buffered": every call returns in microseconds);
- `await run_async(db, plan)` on an asynchronous database, whose backend's
  calls are coroutines: each batch is awaited, and the event loop is never
  held.

An operation is an inmem operation as the engine names it, `(op, args)`
(`("kv.put", (run, key, value, ttl))`; see `inmem.ops`), sent through the
database's backend as a pipeline sends it; `("search", args)` is the one
composite, `db.search(*args)`, and is always a batch of its own.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Generator

from inmem.async_database import AsyncDatabase
from inmem.database import Database
from inmem.errors import InmemError

#: one operation: (op name, args)
Op = tuple
#: a plan: yields lists of operations, receives their results, returns its answer
Plan = Generator[list, list, Any]


def execute_sync(db, ops: list) -> list:
    """The results of `ops` on a sync database, failures in place."""
    backend = db._backend
    if len(ops) == 1:
        op, args = ops[0]
        try:
            return [db.search(*args) if op == "search" else backend.call(op, args)]
        except InmemError as exc:
            return [exc]
    return backend.call_batch(ops)


def run_sync(db, plan: Plan) -> Any:
    """Drive `plan` to its answer with blocking calls."""
    if is_async_database(db):
        return _run_sync_on_async(db, plan)
    try:
        ops = next(plan)
        while True:
            ops = plan.send(execute_sync(db, ops))
    except StopIteration as stop:
        return stop.value


def _run_sync_on_async(db, plan: Plan) -> Any:
    """A sync method's plan on an asynchronous database (see the module docstring)."""
    backend = db._backend
    sync = getattr(backend, "sync", None)
    if sync is not None:
        # Embedded: the async face stands on the sync backend, whose calls block
        # (a strict write waits for its fsync) but need no event loop.
        return run_sync(Database(sync), plan)
    loop = getattr(backend, "loop", None)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is not None and running is not loop and loop.is_running():
        return asyncio.run_coroutine_threadsafe(run_async(db, plan), loop).result()
    plan.close()
    raise InmemError(
        "a sync method of an inmem.asyncio cluster database was called from its own event "
        "loop (or with that loop stopped): await the async method instead (aput, "
        "aget_tuple, alist, abatch, ...), or give the sync methods a database from "
        "inmem.connect()")


async def _execute_async(db, ops: list) -> list:
    # An asynchronous database's backend, as a pipeline of it sends them.
    backend = db._backend
    if len(ops) == 1:
        op, args = ops[0]
        try:
            return [await (db.search(*args) if op == "search" else backend.call(op, args))]
        except InmemError as exc:
            return [exc]
    return await backend.call_batch(ops)


async def run_async(db, plan: Plan, offload: bool = True) -> Any:
    """Drive `plan` without holding the event loop (see the module docstring)."""
    if not is_async_database(db):
        if offload:
            return await asyncio.to_thread(run_sync, db, plan)
        return run_sync(db, plan)
    call = db._backend.call
    try:
        ops = next(plan)
        while True:
            if len(ops) == 1 and ops[0][0] != "search":
                # The usual batch of one, without a coroutine of its own.
                op, args = ops[0]
                try:
                    results = [await call(op, args)]
                except InmemError as exc:
                    results = [exc]
            else:
                results = await _execute_async(db, ops)
            ops = plan.send(results)
    except StopIteration as stop:
        return stop.value


def is_async_database(db) -> bool:
    """True for a database whose calls are coroutines (`inmem.asyncio`'s AsyncDatabase)."""
    return isinstance(db, AsyncDatabase)


def may_block(db) -> bool:
    """Whether a sync database's calls may wait on I/O: a cluster, or a strict embedded store."""
    if is_async_database(db):
        return False
    shards = db.info().get("shards", [])
    pid = os.getpid()
    return not shards or any(s.get("pid") != pid or s.get("durability") not in
                             ("inmemory", "buffered") for s in shards)


def is_remote(db) -> bool:
    """Whether `db`'s calls cross to other processes (a cluster), where a round trip
    saved is worth more CPU on either side; an embedded store's calls are in-process."""
    if is_async_database(db):
        return getattr(db._backend, "sync", None) is None
    shards = db.info().get("shards", [])
    pid = os.getpid()
    return not shards or any(s.get("pid") != pid for s in shards)


def raise_first(results: list, *, allow: tuple = ()) -> None:
    """Raise the first failure among `results` that is not one of `allow`."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, allow):
            raise r
