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

from .errors import (InvalidValue, ProtocolError, StateNotFound, TransactionConflict,
                     VersionMismatch)
from .types import State, TraceTree


class _Section:
    __slots__ = ("_call",)

    def __init__(self, call):
        self._call = call


class KV(_Section):
    """Versioned keys and values of a run."""
    __slots__ = ()

    def put(self, run, key, value, ttl=None) -> int:
        return self._call("kv.put", (run, key, value, ttl))

    def get(self, run, key, default=None):
        return self._call("kv.get", (run, key, default))

    def get_versioned(self, run, key):
        return self._call("kv.get_versioned", (run, key))

    def exists(self, run, key) -> bool:
        return self._call("kv.exists", (run, key))

    def delete(self, run, key) -> bool:
        return self._call("kv.delete", (run, key))

    def cas(self, run, key, expected_version, value) -> int:
        return self._call("kv.cas", (run, key, expected_version, value))

    def get_many(self, run, keys) -> list:
        return self._call("kv.get_many", (run, as_list(keys, "keys")))

    def keys(self, run, prefix="") -> list:
        return self._call("kv.keys", (run, prefix))

    def items(self, run, prefix="") -> list:
        return self._call("kv.items", (run, prefix))


class Events(_Section):
    """The append-only, hash-chained event log of a run."""
    __slots__ = ()

    def append(self, run, event_type, payload=None):
        return self._call("ev.append", (run, event_type, payload))

    def read(self, run, sequence):
        return self._call("ev.read", (run, sequence))

    def range(self, run, start, end) -> list:
        return self._call("ev.range", (run, start, end))

    def head(self, run):
        return self._call("ev.head", (run,))

    def count(self, run) -> int:
        return self._call("ev.count", (run,))

    def by_type(self, run, event_type) -> list:
        return self._call("ev.by_type", (run, event_type))

    def verify_chain(self, run):
        return self._call("ev.verify", (run,))


class StateCells(_Section):
    """Versioned state cells for coordination (CAS and transitions)."""
    __slots__ = ()

    def init(self, run, name, value) -> int:
        return self._call("st.init", (run, name, value))

    def read(self, run, name):
        return self._call("st.read", (run, name))

    def set(self, run, name, value) -> int:
        return self._call("st.set", (run, name, value))

    def cas(self, run, name, expected_version, value) -> int:
        return self._call("st.cas", (run, name, expected_version, value))

    def delete(self, run, name) -> bool:
        return self._call("st.delete", (run, name))

    def transition(self, run, name, fn, retries=16):
        """Apply fn(State) -> (new_value, result) with CAS, retrying on conflict."""
        for attempt in range(retries + 1):
            state = self.read(run, name)
            if state is None:
                raise StateNotFound(f"state cell {name!r} does not exist in run {run!r}")
            new_value, result = fn(state)
            try:
                return result, self.cas(run, name, state.version, new_value)
            except VersionMismatch:
                backoff(attempt)
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")

    def transition_or_init(self, run, name, initial, fn, retries=16):
        """As transition; an absent cell starts as `initial` and fn applies in the same step."""
        for attempt in range(retries + 1):
            state = self.read(run, name)
            if state is None:
                new_value, result = fn(State(initial, 0, 0))
                expected = 0
            else:
                new_value, result = fn(state)
                expected = state.version
            try:
                return result, self.cas(run, name, expected, new_value)
            except VersionMismatch:
                backoff(attempt)
        raise TransactionConflict(f"state cell {name!r}: still contended after {retries} retries")


class Traces(_Section):
    """Reasoning records of a run, as trees."""
    __slots__ = ()

    def record(self, run, trace_type, data, parent_id=None, tags=(), metadata=None) -> str:
        return self._call("tr.record", (run, trace_type, data, parent_id, as_tags(tags),
                                        metadata))

    def get(self, run, trace_id):
        return self._call("tr.get", (run, trace_id))

    def by_type(self, run, trace_type) -> list:
        return self._call("tr.by_type", (run, trace_type))

    def by_tag(self, run, tag) -> list:
        return self._call("tr.by_tag", (run, tag))

    def roots(self, run) -> list:
        return self._call("tr.roots", (run,))

    def tree(self, run, trace_id):
        return assemble_tree(self._call("tr.tree", (run, trace_id)))


class JSON(_Section):
    """JSON documents addressed by path."""
    __slots__ = ()

    def put(self, run, key, doc) -> int:
        return self._call("js.put", (run, key, doc))

    def get(self, run, key, path="$"):
        return self._call("js.get", (run, key, path))

    def set(self, run, key, path, value) -> int:
        return self._call("js.set", (run, key, path, value))

    def delete(self, run, key, path="$") -> bool:
        return self._call("js.delete", (run, key, path))

    def array_push(self, run, key, path, value) -> int:
        return self._call("js.push", (run, key, path, value))

    def array_pop(self, run, key, path):
        return self._call("js.pop", (run, key, path))


class Runs(_Section):
    """Run metadata and lifecycle."""
    __slots__ = ()

    def get(self, run):
        return self._call("run.get", (run,))

    def set_status(self, run, status):
        return self._call("run.set_status", (run, status, None))

    def pause(self, run):
        return self.set_status(run, "paused")

    def resume(self, run):
        return self.set_status(run, "active")

    def cancel(self, run):
        return self.set_status(run, "cancelled")

    def archive(self, run):
        return self.set_status(run, "archived")

    def list(self, status=None, tag=None, parent=None) -> list:
        return self._call("run.list", (status, tag, parent))

    def delete(self, run) -> bool:
        return self._call("run.delete", (run,))


def backoff(attempt: int) -> None:
    # Jittered and capped: contention on a hot cell clears faster when the
    # losers do not all retry in lockstep.
    if attempt:
        time.sleep(random.random() * min(0.0005 * (2 ** min(attempt, 6)), 0.02))


def new_run_id() -> str:
    return uuid.uuid4().hex


def as_tags(tags) -> list:
    """Tags as the list the engine takes: a str would otherwise become one tag per letter."""
    if type(tags) is list:
        return tags
    if type(tags) is tuple:
        return list(tags)
    raise InvalidValue(f"tags must be a list or tuple of str, got {type(tags).__name__}")


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
