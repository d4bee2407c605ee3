"""The records the API returns: Event, State, Trace, RunInfo and friends.

They are NamedTuples so that they are immutable, compare by value, and cross
the wire as plain msgpack arrays: a shard sends the tuple, the client rebuilds
it with `_make` (or `from_wire` for the nested ones).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack


def _unpack_value(data):
    return msgpack.unpackb(data, raw=False)


class Versioned(NamedTuple):
    value: Any
    version: int
    timestamp: int


class Event(NamedTuple):
    sequence: int
    event_type: str
    payload: Any
    timestamp: int
    prev_hash: bytes
    hash: bytes


class ChainCheck(NamedTuple):
    valid: bool
    length: int
    first_invalid: int | None
    error: str | None


class State(NamedTuple):
    value: Any
    version: int
    updated_at: int


class Trace(NamedTuple):
    id: str
    parent_id: str | None
    trace_type: str
    data: dict
    tags: list
    metadata: Any
    timestamp: int


class TraceTree(NamedTuple):
    trace: Trace
    children: list


class RunInfo(NamedTuple):
    run_id: str
    name: str | None
    parent: str | None
    status: str
    tags: list
    metadata: Any
    created_at: int
    updated_at: int
    ended_at: int | None
    error: str | None


class SnapshotInfo(NamedTuple):
    shard: int
    path: str
    wal_position: int
    timestamp: int
    bytes: int


class RecoveryResult(NamedTuple):
    shard: int
    snapshot_used: str | None
    records_replayed: int
    transactions_recovered: int
    corrupt_records_skipped: int
    tail_truncated_bytes: int
    orphaned_runs: list
    seconds: float
    started_at: int
    finished_at: int
    #: of `seconds`, the part spent rebuilding the search index
    index_seconds: float = 0.0


class RunView(NamedTuple):
    """A run replayed to a journal position: read-only plain data."""
    kv: dict
    json: dict
    state: dict
    events: list
    traces: list
    position: int

    @classmethod
    def from_wire(cls, wire) -> "RunView":
        """Decode what `shard.replay.fold` sends: values still in their packed bytes."""
        kv, docs, state, events, traces, position = wire
        unpack = _unpack_value
        return cls({k: unpack(v) for k, v in kv.items()},
                   {k: unpack(v) for k, v in docs.items()},
                   {k: unpack(v) for k, v in state.items()},
                   [Event(e[0], e[1], unpack(e[2]), e[3], e[4], e[5]) for e in events],
                   [Trace(t[0], t[1], t[2], unpack(t[3]), list(t[4]),
                          None if t[5] is None else unpack(t[5]), t[6]) for t in traces],
                   position)


class DiffEntry(NamedTuple):
    primitive: str
    key: Any
    a: Any
    b: Any


class RunDiff(NamedTuple):
    added: list
    removed: list
    modified: list


class Hit(NamedTuple):
    primitive: str
    run: str
    ref: Any
    score: float
    snippet: str


class SearchResponse(NamedTuple):
    results: list
    total_matches: int
    budget_exhausted: bool
    took_ms: float
