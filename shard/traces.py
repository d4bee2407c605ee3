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

from inmem.display import short_value
from inmem.errors import InvalidValue, TraceNotFound
from inmem.types import Trace
from inmem.values import check_key

from .effects import TR_ADD, TR_DATA, TR_ID, TR_METADATA, TR_PARENT, TR_TAGS, TR_TS, TR_TYPE
from .runs import check_tags
from .trace_places import Places

_unpackb = msgpack.unpackb

TRACE_TYPES = frozenset(("tool_call", "decision", "query", "thought", "error", "custom"))


def check_limit(limit) -> None:
    """InvalidValue unless `limit` is None or an int of at least 1 (the most a page holds)."""
    if limit is not None and (type(limit) is not int or limit < 1):
        # Not the value's repr: a list nested deep enough has none, an int long enough neither.
        shown = (type(limit).__name__ if type(limit) is not int
                 else str(limit) if limit > -10**9 else "an int below 1")
        raise InvalidValue(f"limit must be an int of at least 1 or None, got {shown}")


def kept_places(engine) -> dict:
    """Run id -> the places an engine keeps for pages of its traces (for checks)."""
    places = engine._trace_places
    return {} if places is None else places.by_run


def as_trace(e: tuple) -> Trace:
    """The API's Trace for a TR_ADD effect."""
    meta = e[TR_METADATA]
    return Trace(e[TR_ID], e[TR_PARENT], e[TR_TYPE], _unpackb(e[TR_DATA], raw=False),
                 list(e[TR_TAGS]), None if meta is None else _unpackb(meta, raw=False), e[TR_TS])


class TraceOps:
    """The trace operations of the engine."""

    clock: Callable[[], int]
    runs: dict
    #: where each trace stands in its run, for pages after a trace (shard.trace_places)
    _trace_places: Places | None = None

    def tr_record(self, run: str, trace_type: str, data: dict, parent_id: str | None = None,
                  tags=(), metadata=None, trace_id: str | None = None) -> str:
        r = self._writable(run)
        if trace_type not in TRACE_TYPES:
            raise InvalidValue(f"trace_type must be one of {sorted(TRACE_TYPES)}, got {short_value(trace_type)}")
        if type(data) is not dict:
            raise InvalidValue(f"trace data must be a dict, got {type(data).__name__}")
        if parent_id is not None and parent_id not in r.traces:
            raise TraceNotFound(f"parent trace {short_value(parent_id)} not found in run {run!r}")
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

    def tr_by_type(self, run: str, trace_type: str, after: str | None = None,
                   limit: int | None = None) -> list[Trace]:
        """The run's traces of `trace_type` in record order; a page with `after`/`limit`
        (see `_page`)."""
        r = self._run(run)
        if type(trace_type) is not str:
            raise InvalidValue(f"trace_type must be a str, got {type(trace_type).__name__}")
        if trace_type not in TRACE_TYPES:
            # No trace can have it: a typo would list nothing and go unnoticed.
            raise InvalidValue(f"trace_type must be one of {sorted(TRACE_TYPES)}, got "
                               f"{short_value(trace_type)}")
        return self._page(r, r.traces_by_type.get(trace_type, ()), after, limit)

    def tr_by_tag(self, run: str, tag: str, after: str | None = None,
                  limit: int | None = None) -> list[Trace]:
        """The run's traces carrying `tag` in record order; a page with `after`/`limit`."""
        r = self._run(run)
        return self._page(r, r.traces_by_tag.get(check_key(tag, "tag"), ()), after, limit)

    def tr_roots(self, run: str, after: str | None = None,
                 limit: int | None = None) -> list[Trace]:
        """The run's traces without a parent in record order; a page with `after`/`limit`."""
        r = self._run(run)
        return self._page(r, r.trace_roots, after, limit)

    def _page(self, r, ids, after, limit) -> list[Trace]:
        """The traces of `ids` (an index of run `r`: trace ids in record order) recorded
        after trace `after` (None: from the first), at most `limit` of them (None: all).

        A trace id rather than a position: a Trace carries its id, and the id
        marks one place in record order in every listing of the run (a trace is
        never moved or removed). TraceNotFound when `after` is not a trace of
        the run.
        """
        check_limit(limit)
        start = 0
        if after is not None:
            if type(after) is not str:
                raise InvalidValue("after must be a trace id (the last Trace of the previous "
                                   f"page or its id) or None, got {type(after).__name__}")
            if after not in r.traces:
                raise TraceNotFound(f"trace {after!r:.80} (after=) not found in run "
                                    f"{r.run_id!r}")
            if ids:
                places = self._trace_places
                if places is None:
                    places = self._trace_places = Places()
                start = places.of_run(self.runs, r).start(ids, after)
        traces = r.traces
        if start == 0 and limit is None:  # the whole list, as before pages: no copy of it
            return [as_trace(traces[t]) for t in ids]
        return [as_trace(traces[t]) for t in ids[start:start + limit if limit else None]]

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
