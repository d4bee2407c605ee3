"""The sections of a Database (kv, events, state, traces, json, runs) and the helpers they share.

A section turns the public method calls into operations, `call(op, args)`,
on whatever `call` it was built with: the backend's for a Database, a queue
for a Pipeline. Transactions and pipelines reuse these pieces, so they live
apart from the Database that owns them.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, Callable, Iterable

from .display import short_value
from .errors import (InvalidValue, ProtocolError, StateNotFound, TransactionConflict,
                     VersionMismatch)
from .types import ChainCheck, Event, RunInfo, State, Trace, TraceTree, Versioned


#: a JSON-like value: None, bool, int, float, str, bytes, and lists and str-keyed dicts of them
Value = Any
#: `call(op, args)`: runs one operation and returns its result
Call = Callable[[str, tuple], Any]


class _Section:
    __slots__ = ("_call",)

    def __init__(self, call: Call):
        self._call = call


class KV(_Section):
    """Versioned keys and values of a run. Keys are non-empty str of at most 1 KiB (UTF-8)."""
    __slots__ = ()

    def put(self, run: str, key: str, value: Value, ttl: float | None = None) -> int:
        """Store `value`; return its version (1, 2, ...). `ttl`: seconds until it expires."""
        return self._call("kv.put", (run, key, value, ttl))

    def put_many(self, run: str, items: dict[str, Value] | Iterable[tuple[str, Value]],
                 ttl: float | None = None) -> list[int]:
        """Store several keys of the run at once: all of them or, on error, none.

        `items` is a dict or (key, value) pairs. One operation and one
        write-ahead log record, so a crash keeps every pair or none; `ttl`
        (seconds) applies to each. Returns each write's version, in order (a
        key given twice takes both writes).
        """
        return self._call("kv.put_many", (run, as_pairs(items), ttl))

    def get(self, run: str, key: str, default: Value = None) -> Value:
        """The live value at `key`, or `default` when it is absent, deleted or expired."""
        return self._call("kv.get", (run, key, default))

    def get_linked(self, run: str, key: str, field: str | int) -> tuple[Value, list] | None:
        """The value at `key` and the values it refers to, in one round trip.

        `value[field]` (a dict's key or a list's index) lists references to
        keys of the same run: a KV key (a str, or `["kv", key]`) or
        `["json", key]` for a JSON document. Returns
        `(value, [the referenced KV value or JSON document, None when
        absent, ...])`, `(value, [])` when the value has no such field, or
        None when `key` holds no live value. InvalidValue for a malformed
        reference.
        """
        return self._call("kv.get_linked", (run, key, field))

    def get_versioned(self, run: str, key: str) -> Versioned | None:
        """The live value with its version and timestamp (µs since the epoch), or None."""
        return self._call("kv.get_versioned", (run, key))

    def exists(self, run: str, key: str) -> bool:
        """Whether `key` holds a live value (not absent, deleted or expired)."""
        return self._call("kv.exists", (run, key))

    def delete(self, run: str, key: str) -> bool:
        """Delete `key`; True if it held a live value. The next put continues its versions."""
        return self._call("kv.delete", (run, key))

    def cas(self, run: str, key: str, expected_version: int, value: Value) -> int:
        """Store `value` only if the live version is `expected_version` (0: absent); the new version.

        Raises VersionMismatch (with `.expected` and `.actual`) otherwise.
        """
        return self._call("kv.cas", (run, key, expected_version, value))

    def get_many(self, run: str, keys: Iterable[str]) -> list[Value]:
        """The values of `keys`, in order (None for an absent key)."""
        return self._call("kv.get_many", (run, as_list(keys, "keys")))

    def keys(self, run: str, prefix: str = "", *, after: str | None = None,
             limit: int | None = None) -> list[str]:
        """Live keys starting with `prefix`, sorted.

        In pages, for a run too large to list at once: `after` (a key, or any
        str) starts after it, `limit` returns at most that many; pass the last
        key of a page as the next one's `after`, until a page comes back empty.
        """
        if after is None and limit is None:
            return self._call("kv.keys", (run, prefix))
        return self._call("kv.keys", (run, prefix, after, limit))

    def items(self, run: str, prefix: str = "", *, after: str | None = None,
              limit: int | None = None) -> list[tuple[str, Value]]:
        """(key, value) of the live keys starting with `prefix`, sorted by key; in pages
        with `after` and `limit`, as `keys`."""
        if after is None and limit is None:
            return self._call("kv.items", (run, prefix))
        return self._call("kv.items", (run, prefix, after, limit))


class Events(_Section):
    """The append-only, hash-chained event log of a run."""
    __slots__ = ()

    def append(self, run: str, event_type: str, payload: Value = None) -> Event:
        """Append an event; returns it with its sequence number and hash."""
        return self._call("ev.append", (run, event_type, payload))

    def read(self, run: str, sequence: int) -> Event | None:
        """The event at `sequence` (from 0), or None past the end."""
        return self._call("ev.read", (run, sequence))

    def range(self, run: str, start: int, end: int) -> list[Event]:
        """Events with start <= sequence < end."""
        return self._call("ev.range", (run, start, end))

    def head(self, run: str) -> Event | None:
        """The newest event, or None for an empty log."""
        return self._call("ev.head", (run,))

    def count(self, run: str) -> int:
        """How many events the run's log holds (the next sequence number)."""
        return self._call("ev.count", (run,))

    def by_type(self, run: str, event_type: str, *, after: Event | int | None = None,
                limit: int | None = None) -> list[Event]:
        """The run's events of `event_type`, in sequence order.

        In pages, for more events than one reply holds: `limit` returns at
        most that many, `after` starts after a sequence number: the last Event
        of the previous page (or its `sequence`). Pass each page's last event
        as the next one's `after` until a page comes back empty.
        """
        if after is None and limit is None:
            return self._call("ev.by_type", (run, event_type))
        if isinstance(after, Event):
            after = after.sequence
        return self._call("ev.by_type", (run, event_type, after, limit))

    def verify_chain(self, run: str) -> ChainCheck:
        """Recompute every hash of the run's chain; says where it first breaks, if it does."""
        return self._call("ev.verify", (run,))


class StateCells(_Section):
    """Versioned state cells for coordination (CAS and transitions)."""
    __slots__ = ()

    def init(self, run: str, name: str, value: Value) -> int:
        """Create the cell; StateExists if it is already there."""
        return self._call("st.init", (run, name, value))

    def read(self, run: str, name: str) -> State | None:
        """The cell's value, version and last write time (µs since the epoch), or None."""
        return self._call("st.read", (run, name))

    def set(self, run: str, name: str, value: Value) -> int:
        """Write the cell whatever its version (creating it if absent); the new version."""
        return self._call("st.set", (run, name, value))

    def cas(self, run: str, name: str, expected_version: int, value: Value) -> int:
        """Set only if the cell's version is `expected_version`; else VersionMismatch."""
        return self._call("st.cas", (run, name, expected_version, value))

    def delete(self, run: str, name: str) -> bool:
        """Delete the cell; True if it existed."""
        return self._call("st.delete", (run, name))

    def transition(self, run: str, name: str, fn: Callable[[State], tuple[Value, Any]],
                   retries: int = 16) -> tuple[Any, int]:
        """Apply fn(State) -> (new_value, result) with CAS, retrying on conflict.

        Returns (result, new version); StateNotFound for an absent cell,
        TransactionConflict after `retries` lost races.
        """
        check_retries(retries)
        state = self.read(run, name)
        for attempt in range(retries + 1):
            if state is None:
                raise StateNotFound(f"state cell {name!r} does not exist in run {run!r}")
            new_value, result = fn(state)
            try:
                return result, self.cas(run, name, state.version, new_value)
            except VersionMismatch as lost:
                state = self._after_lost_race(lost, run, name)
                backoff(attempt)
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")

    def transition_or_init(self, run: str, name: str, initial: Value,
                           fn: Callable[[State], tuple[Value, Any]],
                           retries: int = 16) -> tuple[Any, int]:
        """As transition; an absent cell starts as `initial` and fn applies in the same step."""
        check_retries(retries)
        state = self.read(run, name)
        for attempt in range(retries + 1):
            if state is None:
                new_value, result = fn(State(initial, 0, 0))
                expected = 0
            else:
                new_value, result = fn(state)
                expected = state.version
            try:
                return result, self.cas(run, name, expected, new_value)
            except VersionMismatch as lost:
                state = self._after_lost_race(lost, run, name)
                backoff(attempt)
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")

    def _after_lost_race(self, lost: VersionMismatch, run: str, name: str) -> State | None:
        """The cell as the failed cas found it: a retry needs no second read."""
        if lost.current is not None or lost.actual == 0:
            return lost.current
        return self.read(run, name)


class Traces(_Section):
    """Reasoning records of a run, as trees."""
    __slots__ = ()

    def record(self, run: str, trace_type: str, data: dict, parent_id: str | None = None,
               tags: list[str] | tuple[str, ...] = (), metadata: Value = None) -> str:
        """Record a trace; its id.

        `trace_type`: tool_call, decision, query, thought, error or custom
        (else InvalidValue); `data` a dict. TraceNotFound for an unknown
        `parent_id`.
        """
        return self._call("tr.record", (run, trace_type, data, parent_id, as_tags(tags),
                                        metadata))

    def get(self, run: str, trace_id: str) -> Trace | None:
        """The trace with this id, or None."""
        return self._call("tr.get", (run, trace_id))

    def by_type(self, run: str, trace_type: str, *, after: Trace | str | None = None,
                limit: int | None = None) -> list[Trace]:
        """The run's traces of `trace_type`, in record order.

        In pages, for more traces than one reply holds: `limit` returns at
        most that many, `after` starts after a trace's place in record order:
        the last Trace of the previous page (or its id). Pass each page's last
        trace as the next one's `after` until a page comes back empty;
        TraceNotFound when `after` is not a trace of the run; InvalidValue for
        a `trace_type` no trace can have (one `record` refuses).
        """
        if after is None and limit is None:
            return self._call("tr.by_type", (run, trace_type))
        return self._call("tr.by_type", (run, trace_type, trace_cursor_arg(after), limit))

    def by_tag(self, run: str, tag: str, *, after: Trace | str | None = None,
               limit: int | None = None) -> list[Trace]:
        """The run's traces carrying `tag`, in record order; in pages with `after` and
        `limit`, as `by_type`."""
        if after is None and limit is None:
            return self._call("tr.by_tag", (run, tag))
        return self._call("tr.by_tag", (run, tag, trace_cursor_arg(after), limit))

    def roots(self, run: str, *, after: Trace | str | None = None,
              limit: int | None = None) -> list[Trace]:
        """Traces without a parent, in record order; in pages with `after` and `limit`,
        as `by_type`."""
        if after is None and limit is None:
            return self._call("tr.roots", (run,))
        return self._call("tr.roots", (run, trace_cursor_arg(after), limit))

    def tree(self, run: str, trace_id: str) -> TraceTree:
        """The subtree under `trace_id`, children in record order; TraceNotFound if absent."""
        return assemble_tree(self._call("tr.tree", (run, trace_id)))


class JSON(_Section):
    """JSON documents addressed by path ($, $.a.b, $.list[0], $.list[-1])."""
    __slots__ = ()

    def put(self, run: str, key: str, doc: Value) -> int:
        """Store (or replace) the whole document; its new version."""
        return self._call("js.put", (run, key, doc))

    def get(self, run: str, key: str, path: str = "$") -> Value:
        """The value at `path` in the document, or None for a missing key.

        InvalidPath for a malformed path or one that does not fit the document.
        """
        return self._call("js.get", (run, key, path))

    def set(self, run: str, key: str, path: str, value: Value) -> int:
        """Set the value at `path`, creating missing objects on the way; the new version."""
        return self._call("js.set", (run, key, path, value))

    def delete(self, run: str, key: str, path: str = "$") -> bool:
        """Delete the value at `path` (`$`: the whole document); True if there was one."""
        return self._call("js.delete", (run, key, path))

    def array_push(self, run: str, key: str, path: str, value: Value) -> int:
        """Append to the array at `path` (created if absent); the array's new length."""
        return self._call("js.push", (run, key, path, value))

    def array_pop(self, run: str, key: str, path: str) -> Value:
        """Remove and return the array's last item (None if it is empty)."""
        return self._call("js.pop", (run, key, path))


class Runs(_Section):
    """Run metadata and lifecycle."""
    __slots__ = ()

    def get(self, run: str) -> RunInfo | None:
        """The run's metadata and status, or None if it does not exist."""
        return self._call("run.get", (run,))

    def set_status(self, run: str, status: str) -> str:
        """Move the run to `status`; InvalidStatusTransition if the table forbids it.

        active -> paused|completed|failed|cancelled|archived; paused ->
        active|cancelled|archived; completed|failed|cancelled -> archived.
        """
        return self._call("run.set_status", (run, status, None))

    def pause(self, run: str) -> str:
        """Move an active run to "paused" (it still accepts writes)."""
        return self.set_status(run, "paused")

    def resume(self, run: str) -> str:
        """Move a paused run back to "active"."""
        return self.set_status(run, "active")

    def cancel(self, run: str) -> str:
        """Move an active or paused run to "cancelled" (no more writes)."""
        return self.set_status(run, "cancelled")

    def archive(self, run: str) -> str:
        """Move a run to "archived", the final status."""
        return self.set_status(run, "archived")

    def list(self, status: str | None = None, tag: str | None = None,
             parent: str | None = None, *, after: RunInfo | tuple | None = None,
             limit: int | None = None) -> list[RunInfo]:
        """Runs across every shard, by creation time then id, filtered by whichever is given.

        In pages, for more runs than one reply holds: `limit` returns at most
        that many, `after` starts after a place in the order: the last
        RunInfo of the previous page (or its `(created_at, run_id)`). Pass
        each page's last run as the next one's `after` until a page comes
        back empty; a run deleted meanwhile, the cursor's own included, does
        not disturb it.
        """
        if after is None and limit is None:
            return self._call("run.list", (status, tag, parent))
        return self._call("run.list", (status, tag, parent, run_cursor_arg(after), limit))

    def delete(self, run: str) -> bool:
        """Delete the run and everything in it; False if it did not exist."""
        return self._call("run.delete", (run,))


def check_retries(retries) -> int:
    """`retries` when it is an int >= 0 (how many lost races a retry loop may take)."""
    if type(retries) is not int or retries < 0:
        raise InvalidValue(f"retries must be an int >= 0, got {short_value(retries)}")
    return retries


def backoff(attempt: int) -> None:
    """Sleep before retry number `attempt` (0: not at all)."""
    if attempt:
        time.sleep(backoff_delay(attempt))


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (>= 1) of a lost race."""
    # Jittered and capped: contention on a hot cell clears faster when the
    # losers do not all retry in lockstep.
    return random.random() * min(0.0005 * (2 ** min(attempt, 6)), 0.02)


def new_run_id() -> str:
    """A fresh run id: a uuid4 in hex."""
    return uuid.uuid4().hex


def as_tags(tags) -> list:
    """Tags as the list the engine takes: a str would otherwise become one tag per letter."""
    if type(tags) is list:
        return tags
    if type(tags) is tuple:
        return list(tags)
    raise InvalidValue(f"tags must be a list or tuple of str, got {type(tags).__name__}")


def begin_args(name, run_id, parent, tags, metadata, searchable) -> tuple:
    """The arguments of a `run.begin` request; `searchable` goes only when False, so a
    request for an ordinary run is the same as from a client that never sent it."""
    if type(searchable) is not bool:
        raise InvalidValue(f"searchable must be True or False, not {short_value(searchable)}")
    if searchable:
        return (name, run_id, parent, as_tags(tags), metadata)
    return (name, run_id, parent, as_tags(tags), metadata, False)


def run_cursor_arg(after):
    """`after` of a page of runs as it is sent: a RunInfo as its [created_at, run_id]
    (the place in the order it stands for); anything else as given, for the engine
    to accept or refuse."""
    if isinstance(after, RunInfo):
        return [after.created_at, after.run_id]
    if type(after) is tuple:
        return list(after)
    return after


def trace_cursor_arg(after):
    """`after` of a page of traces as it is sent: a Trace as its id (the place in record
    order it stands for); anything else as given, for the engine to accept or refuse."""
    return after.id if isinstance(after, Trace) else after


def reason_arg(reason):
    """A run's error reason as it is sent: an exception as its text (an exception does not
    cross the wire; the engine keeps the same text when it runs in this process)."""
    return str(reason) if isinstance(reason, BaseException) else reason


def as_pairs(items) -> list:
    """A dict or an iterable of (key, value) pairs as a list of [key, value] lists."""
    if isinstance(items, dict):
        return [[k, v] for k, v in items.items()]
    if isinstance(items, (str, bytes)):
        raise InvalidValue(f"items must be a dict or (key, value) pairs, got "
                           f"{type(items).__name__}")
    try:
        return [list(p) if type(p) is tuple else p for p in items]
    except TypeError:
        raise InvalidValue(f"items must be a dict or (key, value) pairs, got "
                           f"{type(items).__name__}") from None


def as_list(items, what: str) -> list:
    """Any iterable of names as a list; a str or a non-iterable is refused, not taken apart."""
    if type(items) is list:
        return items
    if isinstance(items, (str, bytes)):
        raise InvalidValue(f"{what} must be a list of str, got {type(items).__name__}")
    try:
        return list(items)
    except TypeError:
        raise InvalidValue(f"{what} must be a list of str, got {type(items).__name__}") from None


def assemble_tree(traces) -> TraceTree:
    """The TraceTree of a subtree's traces (root first, each parent before its children).

    The engine answers `tr.tree` with this flat list rather than a nested tree:
    it travels through msgpack, which refuses deep nesting, and is assembled
    here with a loop, so a chain thousands of traces deep is an ordinary tree.
    """
    try:
        root = TraceTree(traces[0], [])
        nodes = {root.trace.id: root}
        for i in range(1, len(traces)):
            trace = traces[i]
            node = TraceTree(trace, [])
            nodes[trace.parent_id].children.append(node)
            nodes[trace.id] = node
    except (IndexError, KeyError, TypeError, AttributeError):
        raise ProtocolError("a trace tree reply is malformed") from None
    return root
