"""Trace operations of a run: typed, tagged records of what an agent did, in a tree.

`TraceOps` is one of the parts the `Engine` is assembled from. A trace is a
TR_ADD effect (`shard.effects`: TR_ID, TR_PARENT, TR_TYPE, TR_DATA, TR_TAGS,
TR_METADATA, TR_TS); the run keeps indexes of trace ids by type, by tag and by
parent, which `effects.apply_trace` maintains.
"""

from __future__ import annotations

import os
from typing import Callable

import msgpack

from inmem.errors import InvalidValue, TraceNotFound
from inmem.types import Trace
from inmem.values import check_key

from .effects import TR_ADD, TR_DATA, TR_ID, TR_METADATA, TR_PARENT, TR_TAGS, TR_TS, TR_TYPE
from .runs import check_tags

_unpackb = msgpack.unpackb

TRACE_TYPES = frozenset(("tool_call", "decision", "query", "thought", "error", "custom"))


def as_trace(e: tuple) -> Trace:
    """The API's Trace for a TR_ADD effect."""
    meta = e[TR_METADATA]
    return Trace(e[TR_ID], e[TR_PARENT], e[TR_TYPE], _unpackb(e[TR_DATA], raw=False),
                 list(e[TR_TAGS]), None if meta is None else _unpackb(meta, raw=False), e[TR_TS])


class TraceOps:
    """The trace operations of the engine."""

    clock: Callable[[], int]

    def tr_record(self, run: str, trace_type: str, data: dict, parent_id: str | None = None,
                  tags=(), metadata=None, trace_id: str | None = None) -> str:
        r = self._writable(run)
        if trace_type not in TRACE_TYPES:
            raise InvalidValue(f"trace_type must be one of {sorted(TRACE_TYPES)}, got {trace_type!r}")
        if type(data) is not dict:
            raise InvalidValue(f"trace data must be a dict, got {type(data).__name__}")
        if parent_id is not None and parent_id not in r.traces:
            raise TraceNotFound(f"parent trace {parent_id!r} not found in run {run!r}")
        tags = check_tags(tags)
        packed = self._encode(data)
        meta = None if metadata is None else self._encode(metadata)
        if trace_id is None:
            trace_id = os.urandom(16).hex()  # uuid4().hex costs 3x more for the same entropy
        else:
            check_key(trace_id, "trace id")
            if trace_id in r.traces:
                raise InvalidValue(f"trace id {trace_id!r} already exists in run {run!r}")
        self._commit(r, (TR_ADD, trace_id, parent_id, trace_type, packed, tags, meta,
                         self.clock()))
        return trace_id

    def tr_get(self, run: str, trace_id: str) -> Trace | None:
        r = self._run(run)
        e = r.traces.get(check_key(trace_id, "trace id"))
        return None if e is None else as_trace(e)

    def tr_by_type(self, run: str, trace_type: str) -> list[Trace]:
        r = self._run(run)
        if type(trace_type) is not str:
            raise InvalidValue(f"trace_type must be a str, got {type(trace_type).__name__}")
        return [as_trace(r.traces[t]) for t in r.traces_by_type.get(trace_type, ())]

    def tr_by_tag(self, run: str, tag: str) -> list[Trace]:
        r = self._run(run)
        return [as_trace(r.traces[t]) for t in r.traces_by_tag.get(check_key(tag, "tag"), ())]

    def tr_roots(self, run: str) -> list[Trace]:
        r = self._run(run)
        return [as_trace(r.traces[t]) for t in r.trace_roots]

    def tr_tree(self, run: str, trace_id: str) -> list[Trace]:
        """The traces of the subtree under `trace_id`: the root first, then breadth-first.

        Flat, not nested: a reasoning chain may be thousands of traces deep,
        beyond both recursion and msgpack's nesting limit. Each trace names its
        parent, so `inmem.database.assemble_tree` rebuilds the TraceTree.
        """
        r = self._run(run)
        if check_key(trace_id, "trace id") not in r.traces:
            raise TraceNotFound(f"trace {trace_id!r} not found in run {run!r}")
        children = r.trace_children
        order = [trace_id]
        for tid in order:  # the list grows while it is walked: a breadth-first queue
            kids = children.get(tid)
            if kids:
                order.extend(kids)
        traces = r.traces
        return [as_trace(traces[t]) for t in order]
