"""Running the adapters' storage plans on a database: sync, in a worker thread, or awaited.

The checkpointer and the store write each operation once, as a *plan*: a
generator that yields batches of inmem operations and receives each batch's
results (an exception object in place of a result that failed, as a
pipeline returns them), then returns the answer. A batch is sent as one
pipeline, so the operations of one thread's run reach its shard in one
message; a plan needs as many round trips as it yields batches.

The same plan then runs three ways:

- `run_sync(db, plan)` on a `Database`, for the sync methods;
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
    try:
        ops = next(plan)
        while True:
            ops = plan.send(execute_sync(db, ops))
    except StopIteration as stop:
        return stop.value


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


def raise_first(results: list, *, allow: tuple = ()) -> None:
    """Raise the first failure among `results` that is not one of `allow`."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, allow):
            raise r
