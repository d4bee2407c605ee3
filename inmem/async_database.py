"""`AsyncDatabase`: the Database's sections and methods, every call awaitable.

The same names, arguments, results and errors as `inmem.Database`; only the
waiting differs. It stands on an async backend (`async_embedded` or
`async_client`) whose `call(op, args)` is a coroutine, so the Database's own
section classes serve as they are: their methods return whatever `call`
returns, here an awaitable. The few that do more than one call (state
transitions, trace trees) are redone with awaits, as are transactions, whose
reads go to the shard.

Every section method is a coroutine function (`inspect.iscoroutinefunction`
says so, for frameworks that look), so nothing runs, not even the argument
checks, until it is awaited.

Pipelines queue without awaiting (`p.kv.put(...)` returns nothing, as in
redis-py's asyncio pipelines) and `await p.execute()` sends them. In a
transaction every method is awaitable, the buffered writes included, so
code never has to know which of them read. The buffered writes (kv.put,
events.append, state.set, ...) are buffered when called and return an
awaitable that is done already, so a plain `fn(tx)` given to
`run_transaction` may call them without awaiting; the reads, and the JSON
edits that read their document, must be awaited.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable

from .display import short_value
from .errors import (InmemError, InvalidValue, RunNotFound, StateNotFound, TransactionConflict,
                     VersionMismatch)
from .pipeline import Pipeline
from .sections import (JSON, KV, Events, Runs, StateCells, Traces, Value, assemble_tree,
                       backoff_delay, begin_args, check_retries, new_run_id, reason_arg)
from .transaction import (_DELETED, Transaction, TxEvents, TxJSON, TxKV, TxState, TxTraces,
                          json_at, json_delete, json_pop, json_push, json_set)
from inmem.shard import jsonpath

from .types import RunView, State
from .values import check_value


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


# -- sections --------------------------------------------------------------------------


def _awaitable(cls):
    """Re-declare the inherited public methods of a section as coroutine functions."""
    for name in dir(cls):
        fn = getattr(cls, name)
        if name.startswith("_") or name in vars(cls) or not inspect.isfunction(fn):
            continue
        setattr(cls, name, _coroutine_of(fn))
    return cls


def _coroutine_of(fn):
    """`fn` as a coroutine function: same name, doc and signature (`inspect` follows
    `__wrapped__`), its result awaited."""
    @functools.wraps(fn)
    async def method(self, *args, **kwargs):
        return await fn(self, *args, **kwargs)
    return method



@_awaitable
class AsyncKV(KV):
    """Versioned keys and values of a run; every method returns an awaitable."""
    __slots__ = ()


@_awaitable
class AsyncEvents(Events):
    """The append-only, hash-chained event log of a run; every method returns an awaitable."""
    __slots__ = ()


@_awaitable
class AsyncJSON(JSON):
    """JSON documents addressed by path; every method returns an awaitable."""
    __slots__ = ()


@_awaitable
class AsyncRuns(Runs):
    """Run metadata and lifecycle; every method returns an awaitable."""
    __slots__ = ()


@_awaitable
class AsyncTraces(Traces):
    """Reasoning records of a run, as trees; every method returns an awaitable."""
    __slots__ = ()

    async def tree(self, run: str, trace_id: str):
        """The subtree under `trace_id`, children in record order; TraceNotFound if absent."""
        return assemble_tree(await self._call("tr.tree", (run, trace_id)))


@_awaitable
class AsyncStateCells(StateCells):
    """Versioned state cells; every method returns an awaitable.

    `transition` takes a function of the State, plain or async.
    """
    __slots__ = ()

    async def transition(self, run: str, name: str, fn: Callable, retries: int = 16):
        """Apply fn(State) -> (new_value, result) with CAS, retrying on conflict."""
        check_retries(retries)
        state = await self.read(run, name)
        for attempt in range(retries + 1):
            if state is None:
                raise StateNotFound(f"state cell {name!r} does not exist in run {run!r}")
            new_value, result = await _maybe_await(fn(state))
            try:
                return result, await self.cas(run, name, state.version, new_value)
            except VersionMismatch as lost:
                state = await self._after_lost_race(lost, run, name)
                if attempt:
                    await asyncio.sleep(backoff_delay(attempt))
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")

    async def transition_or_init(self, run: str, name: str, initial: Value, fn: Callable,
                                 retries: int = 16):
        """As transition; an absent cell starts as `initial` and fn applies in the same step."""
        check_retries(retries)
        state = await self.read(run, name)
        for attempt in range(retries + 1):
            if state is None:
                new_value, result = await _maybe_await(fn(State(initial, 0, 0)))
                expected = 0
            else:
                new_value, result = await _maybe_await(fn(state))
                expected = state.version
            try:
                return result, await self.cas(run, name, expected, new_value)
            except VersionMismatch as lost:
                state = await self._after_lost_race(lost, run, name)
                if attempt:
                    await asyncio.sleep(backoff_delay(attempt))
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")

    async def _after_lost_race(self, lost: VersionMismatch, run: str, name: str):
        """The cell as the failed cas found it: a retry needs no second read."""
        if lost.current is not None or lost.actual == 0:
            return lost.current
        return await self.read(run, name)


# -- transactions ----------------------------------------------------------------------


class _Buffered:
    """What a transaction's buffered write returns: it is done already, and awaiting it
    gives None.

    The write is buffered when the method is called, not when it is awaited,
    so a plain `fn(tx)` given to `run_transaction` (which cannot await) still
    buffers its writes: with coroutines they would be dropped unawaited, the
    transaction committing without them.
    """
    __slots__ = ()

    def __await__(self):
        return iter(())

    def __repr__(self) -> str:
        return "<buffered transaction write>"


_BUFFERED = _Buffered()


class AsyncTxKV(TxKV):
    """The KV section of an AsyncTransaction; every method is awaited."""
    __slots__ = ()

    async def get(self, key, default=None):
        """The value at `key` as this transaction sees it (its own writes too), or `default`."""
        value = await self._tx._read("kv", key)
        return default if value is _DELETED else value

    async def exists(self, key) -> bool:
        """Whether `key` holds a live value as this transaction sees it."""
        return await self._tx._read("kv", key) is not _DELETED

    def put(self, key, value, ttl=None):
        """Buffer a put of `value` (`ttl` in seconds); applied at commit."""
        TxKV.put(self, key, value, ttl)
        return _BUFFERED

    def delete(self, key):
        """Buffer a delete of `key`; applied at commit."""
        TxKV.delete(self, key)
        return _BUFFERED

    def cas(self, key, expected_version, value):
        """Buffer a put that commits only if `key` is then at `expected_version` (0: absent)."""
        TxKV.cas(self, key, expected_version, value)
        return _BUFFERED


class AsyncTxEvents(TxEvents):
    """The event log of an AsyncTransaction's run; every method is awaited."""
    __slots__ = ()

    def append(self, event_type, payload=None):
        """Buffer an event; appended to the chain at commit."""
        TxEvents.append(self, event_type, payload)
        return _BUFFERED

    async def count(self) -> int:
        """How many events the log holds, this transaction's buffered ones included."""
        tx = self._tx
        return await tx._read("ev", "") + tx._pending_events

    async def read(self, sequence):
        """The committed event at `sequence`, or None (the log's length joins the read set)."""
        await self._tx._read("ev", "")
        return await self._tx._call("ev.read", (self._tx.run, sequence))

    async def head(self):
        """The newest committed event, or None (the log's length joins the read set)."""
        await self._tx._read("ev", "")
        return await self._tx._call("ev.head", (self._tx.run,))

    async def range(self, start, end):
        """Committed events with start <= sequence < end (the log's length joins the read set)."""
        await self._tx._read("ev", "")
        return await self._tx._call("ev.range", (self._tx.run, start, end))


class AsyncTxState(TxState):
    """The state cells of an AsyncTransaction's run; every method is awaited."""
    __slots__ = ()

    async def read(self, name):
        """The cell as this transaction sees it (its version as read), or None."""
        value = await self._tx._read("st", name)
        if value is _DELETED:
            return None
        return State(value, self._tx._reads.get(("st", name), 0), 0)

    def init(self, name, value):
        """Buffer the creation of a cell; StateExists at commit if it is there."""
        TxState.init(self, name, value)
        return _BUFFERED

    def set(self, name, value):
        """Buffer a write of the cell whatever its version."""
        TxState.set(self, name, value)
        return _BUFFERED

    def cas(self, name, expected_version, value):
        """Buffer a write that commits only if the cell is then at `expected_version`."""
        TxState.cas(self, name, expected_version, value)
        return _BUFFERED

    def delete(self, name):
        """Buffer the deletion of a cell."""
        TxState.delete(self, name)
        return _BUFFERED


class AsyncTxTraces(TxTraces):
    """The traces of an AsyncTransaction's run; every method is awaited."""
    __slots__ = ()

    def record(self, trace_type, data, parent_id=None, tags=(), metadata=None):
        """Buffer a trace record (its id is assigned at commit)."""
        TxTraces.record(self, trace_type, data, parent_id, tags, metadata)
        return _BUFFERED

    async def get(self, trace_id):
        """The committed trace `trace_id`, or None."""
        return await self._tx._call("tr.get", (self._tx.run, trace_id))


class _Edit:
    """A JSON edit of an AsyncTransaction (tx.json.set...): it reads its document
    first, so it is done when awaited. Until then the transaction knows of it,
    and its commit refuses: a plain `fn(tx)` that cannot await would
    otherwise commit without it, silently."""

    __slots__ = ("_tx", "_coro", "what")

    def __init__(self, tx, coro, what: str):
        self._tx = tx
        self._coro = coro
        self.what = what
        tx._unawaited.append(self)

    def __await__(self):
        try:
            self._tx._unawaited.remove(self)
        except ValueError:
            pass
        return self._coro.__await__()

    def forget(self) -> None:
        self._coro.close()  # never run: no 'coroutine was never awaited' warning


class AsyncTxJSON(TxJSON):
    """The JSON documents of an AsyncTransaction's run; every method is awaited."""
    __slots__ = ()

    async def get(self, key, path="$"):
        """The value at `path` of the document as this transaction sees it, or None."""
        return json_at(await self._tx._read_doc(key), path)

    def put(self, key, doc):
        """Buffer a write of the whole document."""
        TxJSON.put(self, key, doc)
        return _BUFFERED

    def set(self, key, path, value):
        """Buffer setting `path` of the document to `value` (checked against what it read)."""
        return _Edit(self._tx, self._set(key, path, value), "set")

    async def _set(self, key, path, value):
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_set(await self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.set", (key, path, value), ("js", key, doc))

    def delete(self, key, path="$"):
        """Buffer deleting `path` (the whole document for "$")."""
        return _Edit(self._tx, self._delete(key, path), "delete")

    async def _delete(self, key, path="$"):
        steps = jsonpath.parse(path)
        doc = json_delete(await self._tx._read_doc(key), steps, path)
        self._tx._write("js.delete", (key, path), ("js", key, doc))

    def array_push(self, key, path, value):
        """Buffer appending `value` to the array at `path`."""
        return _Edit(self._tx, self._array_push(key, path, value), "array_push")

    async def _array_push(self, key, path, value):
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_push(await self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.push", (key, path, value), ("js", key, doc))

    def array_pop(self, key, path):
        """Buffer removing the last item of the array at `path`."""
        return _Edit(self._tx, self._array_pop(key, path), "array_pop")

    async def _array_pop(self, key, path):
        steps = jsonpath.parse(path)
        doc = json_pop(await self._tx._read_doc(key), steps, path)
        self._tx._write("js.pop", (key, path), ("js", key, doc))


class AsyncTransaction(Transaction):
    """An optimistic transaction over one run: `async with db.transaction(run) as tx: ...`.

    Reads (`await tx.kv.get(k)`) go to the shard and join the read set;
    writes (`await tx.kv.put(k, v)`) are buffered here and shown to later
    reads. Leaving the block commits (TransactionConflict if a read changed
    meanwhile); an exception in the block discards the writes.
    """

    @property
    def kv(self) -> AsyncTxKV:
        """The transaction's KV section (`await tx.kv.get(key)`)."""
        return AsyncTxKV(self)

    @property
    def events(self) -> AsyncTxEvents:
        """The transaction's event log section."""
        return AsyncTxEvents(self)

    @property
    def state(self) -> AsyncTxState:
        """The transaction's state cells section."""
        return AsyncTxState(self)

    @property
    def traces(self) -> AsyncTxTraces:
        """The transaction's traces section."""
        return AsyncTxTraces(self)

    @property
    def json(self) -> AsyncTxJSON:
        """The transaction's JSON documents section."""
        return AsyncTxJSON(self)

    async def _read(self, ns, key):
        slot = self._slot(ns, key)
        if slot in self._local:
            return self._seen_locally(slot)
        return self._record_read(slot, await self._call("tx.read", (self.run, ns, key)))

    async def _read_doc(self, key):
        doc = await self._read("js", key)
        return None if doc is _DELETED else doc

    def __init__(self, call, run: str):
        super().__init__(call, run)
        self._unawaited: list = []  # JSON edits called but not awaited (see _Edit)

    async def commit(self) -> list:
        """Send the read set and the buffered writes; each write's result, in order."""
        if self._unawaited:
            missed = sorted({f"tx.json.{e.what}()" for e in self._unawaited})
            for edit in self._unawaited:
                edit.forget()
            self._unawaited.clear()
            self._done = True
            raise InvalidValue(f"{', '.join(missed)} was called without await: a JSON edit "
                               "reads its document first, so it must be awaited (in an async "
                               "fn); nothing was committed")
        self.results = await self._call("tx.commit", self._commit_args())
        return self.results

    async def abort(self) -> None:
        """Discard the buffered writes; later writes and commit are refused."""
        self._done = True

    def __enter__(self):
        raise TypeError("an AsyncTransaction is used with `async with`, not `with`")

    async def __aenter__(self) -> "AsyncTransaction":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._done = True
            return False
        if not self._done:
            await self.commit()
        return False


# -- pipelines -------------------------------------------------------------------------


class AsyncPipeline(Pipeline):
    """A batch of operations sent together: queue with `p.kv.put(...)`, then `await p.execute()`.

    `async with db.pipeline() as p:` sends what is queued when the block ends
    without an exception.
    """

    async def execute(self, raise_on_error: bool = True) -> list:
        """Send every queued operation; their results, in the order they were queued.

        As the blocking pipeline does: every operation runs, then the first
        failed one's error is raised; `raise_on_error=False` returns each
        error in its place.
        """
        if not self._ops:
            return []
        ops = self._take()
        return self._finish(ops, await self._backend.call_batch(ops), raise_on_error)

    def __enter__(self):
        raise TypeError("an AsyncPipeline is used with `async with`, not `with`")

    async def __aenter__(self) -> "AsyncPipeline":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self._ops:
            await self.execute()
        else:
            self.reset()
        return False


# -- the database ----------------------------------------------------------------------


class AsyncDatabase:
    """The store for asyncio code. Get one with `await inmem.asyncio.open(...)` or `.connect(...)`."""

    def __reduce__(self):
        raise TypeError("a Database cannot be pickled or sent to another process: open or "
                        "connect again there (inmem.asyncio.open(path), .connect(url))")

    def __init__(self, backend):
        self._backend = backend
        self._closed = False
        call = backend.call
        self._call = call
        self.kv = AsyncKV(call)
        self.events = AsyncEvents(call)
        self.state = AsyncStateCells(call)
        self.traces = AsyncTraces(call)
        self.json = AsyncJSON(call)
        self.runs = AsyncRuns(call)

    # -- runs ----------------------------------------------------------------------

    async def begin_run(self, name: str | None = None, run_id: str | None = None,
                        parent: str | None = None, tags: list[str] | tuple[str, ...] = (),
                        metadata: Value = None, searchable: bool = True) -> str:
        """Start a run (status "active"); its id, generated unless `run_id` is given."""
        if run_id is None:
            run_id = new_run_id()
        if parent is not None and await self.run_status(parent) == "not_found":
            # Checked here rather than on the shard: the parent may live on another one.
            raise RunNotFound(f"parent run {short_value(parent)} does not exist", run_id=parent)
        return await self._call("run.begin",
                                begin_args(name, run_id, parent, tags, metadata, searchable))

    async def end_run(self, run: str) -> str:
        """Mark the run "completed"."""
        return await self._call("run.end", (run,))

    async def abort_run(self, run: str, reason: str | BaseException | None = None) -> str:
        """Mark the run "failed", keeping `reason` (text, or an exception's text) as its error."""
        return await self._call("run.abort", (run, reason_arg(reason)))

    async def run_status(self, run: str) -> str:
        """The run's status, "orphaned" for one a crash left unended, "not_found" if absent."""
        return await self._call("run.status", (run,))

    async def orphaned_runs(self) -> list[str]:
        """Ids of the runs left active by a crash, oldest first, across every shard."""
        return await self._call("run.orphaned", ())

    # -- transactions and pipelines ------------------------------------------------

    def transaction(self, run: str) -> AsyncTransaction:
        """An optimistic transaction over one run: `async with db.transaction(run) as tx: ...`."""
        return AsyncTransaction(self._call, run)

    async def run_transaction(self, run: str, fn: Callable[[AsyncTransaction], Any],
                              retries: int = 8) -> Any:
        """Run `fn(tx)` (plain or async) and commit, retrying on TransactionConflict."""
        check_retries(retries)
        for attempt in range(retries + 1):
            tx = AsyncTransaction(self._call, run)
            result = await _maybe_await(fn(tx))
            try:
                await tx.commit()
                return result
            except TransactionConflict:
                if attempt == retries:
                    raise
                await asyncio.sleep(backoff_delay(attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def pipeline(self) -> AsyncPipeline:
        """A batch of operations sent together; `await p.execute()` returns each one's result."""
        return AsyncPipeline(self._backend)

    # -- replay, diff and search ----------------------------------------------------

    async def replay_run(self, run: str, at: int | None = None) -> RunView:
        """The run folded from its journal: read-only, as of the first `at` entries (None: all;
        a negative `at` counts from the end, as a Python index)."""
        return RunView.from_wire(await self._call("run.replay", (run, at)))

    async def diff_runs(self, run_a: str, run_b: str):
        """What differs between two runs' replayed states (both replayed at once)."""
        from .replay import diff_wires
        a, b = await asyncio.gather(self._call("run.replay", (run_a, None)),
                                    self._call("run.replay", (run_b, None)),
                                    return_exceptions=True)
        for wire in (a, b):  # the first run's error first, as the blocking Database does
            if isinstance(wire, BaseException):
                raise wire
        return diff_wires(a, b)

    async def search(self, query: str, run: str | None = None,
                     primitives: list[str] | None = None, limit: int = 10, offset: int = 0,
                     budget_ms: float | None = None):
        """BM25 keyword search across every shard, as `Database.search`."""
        import time
        t0 = time.perf_counter()  # took_ms and the budget count the whole call

        from .search import SearchPlan
        self._check_open()
        if run is not None and await self.run_status(run) == "not_found":
            raise RunNotFound(f"run {short_value(run)} does not exist", run_id=run)
        plan = SearchPlan(query, primitives, limit, offset, budget_ms, t0)
        if plan.done:
            return plan.empty()
        backend = self._backend
        plan.add_stats(await backend.fanout("search.stats", plan.stats_args()))
        return plan.merge(await backend.fanout("search.query", plan.query_args(run)))

    # -- operations ----------------------------------------------------------------

    async def snapshot(self) -> list:
        """Take a snapshot of every shard now; one SnapshotInfo per durable shard."""
        self._check_open()
        return await self._backend.snapshot()

    async def compact_history(self) -> list:
        """Compact every shard's history files that hold records of deleted runs, now."""
        self._check_open()
        return await self._backend.compact_history()

    async def recovery_report(self) -> list:
        """How each shard recovered when it last started."""
        self._check_open()
        return await self._backend.recovery_report()

    async def info(self) -> dict:
        """Readiness and, per shard: pid, state, keys, runs, memory and WAL bytes, durability."""
        self._check_open()
        return await self._backend.info()

    def _check_open(self) -> None:
        if self._closed:
            raise InmemError("the database is closed; open or connect again")

    async def close(self) -> None:
        """Flush and close (embedded: the closing snapshot if configured); later calls fail."""
        self._closed = True
        await self._backend.close()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *exc) -> bool:
        await self.close()
        return False

    def __repr__(self) -> str:
        return f"<inmem.AsyncDatabase {self._backend.describe()}>"


__all__ = ["AsyncDatabase", "AsyncTransaction", "AsyncPipeline"]
