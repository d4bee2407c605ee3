"""The records the API returns: Event, State, Trace, RunInfo and friends.

They are NamedTuples so that they are immutable, compare by value, and cross
the wire as plain msgpack arrays: a shard sends the tuple, the client rebuilds
it with `_make` (or `from_wire` for the nested ones). Every timestamp is int
microseconds since the epoch; their reprs show it as an ISO 8601 UTC datetime,
hashes as short hex and long values cut short (see `inmem.display`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from .display import count, iso_us, record_repr, rounded, short_hex, short_value


class Versioned(NamedTuple):
    """A KV value with its version (1, 2, ...) and when it was written (µs since the epoch)."""
    value: Any
    version: int
    timestamp: int

    def __repr__(self) -> str:
        return record_repr("Versioned", [("value", short_value(self.value)),
                                         ("version", repr(self.version)),
                                         ("timestamp", iso_us(self.timestamp))])


class Event(NamedTuple):
    """One entry of a run's event log.

    `sequence` counts from 0; `timestamp` is µs since the epoch; `hash` is the
    32-byte sha256 of msgpack([sequence, event_type, payload, timestamp,
    prev_hash]) with every map's keys sorted, and `prev_hash` the previous
    event's hash (32 zero bytes for the first).
    """
    sequence: int
    event_type: str
    payload: Any
    timestamp: int
    prev_hash: bytes
    hash: bytes

    def __repr__(self) -> str:
        return record_repr("Event", [("sequence", repr(self.sequence)),
                                     ("event_type", repr(self.event_type)),
                                     ("payload", short_value(self.payload)),
                                     ("timestamp", iso_us(self.timestamp)),
                                     ("prev_hash", short_hex(self.prev_hash)),
                                     ("hash", short_hex(self.hash))])


class ChainCheck(NamedTuple):
    """What `events.verify_chain` found: the first sequence whose hash or link is wrong, if any."""
    valid: bool
    length: int
    first_invalid: int | None
    error: str | None


class State(NamedTuple):
    """A state cell's value, version and last write (µs since the epoch)."""
    value: Any
    version: int
    updated_at: int

    def __repr__(self) -> str:
        return record_repr("State", [("value", short_value(self.value)),
                                     ("version", repr(self.version)),
                                     ("updated_at", iso_us(self.updated_at))])


class Trace(NamedTuple):
    """One reasoning record; `timestamp` in µs since the epoch."""
    id: str
    parent_id: str | None
    trace_type: str
    data: dict
    tags: list
    metadata: Any
    timestamp: int

    def __repr__(self) -> str:
        return record_repr("Trace", [("id", repr(self.id)), ("parent_id", repr(self.parent_id)),
                                     ("trace_type", repr(self.trace_type)),
                                     ("data", short_value(self.data)),
                                     ("tags", short_value(self.tags)),
                                     ("metadata", short_value(self.metadata)),
                                     ("timestamp", iso_us(self.timestamp))])


class TraceTree(NamedTuple):
    """A trace and the trees of its children, in record order."""
    trace: Trace
    children: list

    def __repr__(self) -> str:
        # A tree can be thousands deep: say how big it is rather than print it.
        return f"TraceTree(trace={self.trace!r}, children={count(len(self.children), 'tree')})"

    # An agent loop that records each step as the child of the last makes a
    # chain thousands deep. The tuple's own comparison, pickling and deep copy
    # recurse once per level and would stop at the recursion limit: these walk
    # the tree with a loop instead.

    def __eq__(self, other) -> bool:
        if not isinstance(other, TraceTree):
            return NotImplemented
        stack = [(self, other)]
        while stack:
            a, b = stack.pop()
            if a is b:
                continue
            if not isinstance(b, TraceTree) or not isinstance(a, TraceTree):
                if a != b:
                    return False
                continue
            if a.trace != b.trace or len(a.children) != len(b.children):
                return False
            stack.extend(zip(a.children, b.children))
        return True

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # its children are a list

    def __copy__(self) -> TraceTree:
        return TraceTree(self.trace, self.children)

    def __deepcopy__(self, memo) -> TraceTree:
        from copy import deepcopy
        return _tree_from_preorder([(deepcopy(trace, memo), n)
                                    for trace, n in _tree_preorder(self)])

    def __reduce__(self):
        return _tree_from_preorder, (_tree_preorder(self),)


def _tree_preorder(tree: TraceTree) -> list:
    """[(trace, number of children)] of every node, root first, children in order."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        out.append((node.trace, len(node.children)))
        stack.extend(reversed(node.children))
    return out


def _tree_from_preorder(nodes: list) -> TraceTree:
    """The tree `_tree_preorder` flattened."""
    trace, n = nodes[0]
    root = TraceTree(trace, [])
    open_ = [(root, n)] if n else []   # nodes still waiting for children, innermost last
    for trace, n in nodes[1:]:
        parent, wanted = open_[-1]
        node = TraceTree(trace, [])
        parent.children.append(node)
        if len(parent.children) == wanted:
            open_.pop()
        if n:
            open_.append((node, n))
    return root


class RunInfo(NamedTuple):
    """A run's metadata and lifecycle; the `*_at` fields are µs since the epoch."""
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
    #: False when the run was begun with searchable=False: search never looks in it
    searchable: bool = True

    def __repr__(self) -> str:
        fields = [("run_id", repr(self.run_id)), ("name", repr(self.name)),
                  ("parent", repr(self.parent)), ("status", repr(self.status)),
                  ("tags", short_value(self.tags)), ("metadata", short_value(self.metadata)),
                  ("created_at", iso_us(self.created_at)),
                  ("updated_at", iso_us(self.updated_at)),
                  ("ended_at", iso_us(self.ended_at)), ("error", short_value(self.error))]
        if not self.searchable:
            fields.append(("searchable", "False"))
        return record_repr("RunInfo", fields)


class SnapshotInfo(NamedTuple):
    """A snapshot just taken: its shard, absolute path, WAL position, time (µs) and size."""
    shard: int
    path: str
    wal_position: int
    timestamp: int
    bytes: int

    def __repr__(self) -> str:
        return record_repr("SnapshotInfo", [("shard", repr(self.shard)), ("path", repr(self.path)),
                                            ("wal_position", repr(self.wal_position)),
                                            ("timestamp", iso_us(self.timestamp)),
                                            ("bytes", repr(self.bytes))])


class RecoveryResult(NamedTuple):
    """How one shard recovered when it last started.

    `snapshot_used` is the snapshot's absolute path (None: none); `seconds` the
    time taken; `started_at` and `finished_at` µs since the epoch.
    """
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
    #: of `seconds`, the part spent on the search index (next to nothing: the index
    #: is rebuilt after the shard is ready)
    index_seconds: float = 0.0

    def __repr__(self) -> str:
        fields = [("shard", repr(self.shard)), ("snapshot_used", repr(self.snapshot_used)),
                  ("records_replayed", repr(self.records_replayed)),
                  ("transactions_recovered", repr(self.transactions_recovered)),
                  ("corrupt_records_skipped", repr(self.corrupt_records_skipped)),
                  ("tail_truncated_bytes", repr(self.tail_truncated_bytes)),
                  ("orphaned_runs", short_value(self.orphaned_runs)),
                  ("seconds", rounded(self.seconds)),
                  ("started_at", iso_us(self.started_at)),
                  ("finished_at", iso_us(self.finished_at)),
                  ("index_seconds", rounded(self.index_seconds))]
        return record_repr("RecoveryResult", fields)


class RunView(NamedTuple):
    """A run replayed to a journal position: read-only plain data.

    `kv` and `json` map keys to values, `state` cell names to values;
    `events` and `traces` are in record order; `position` is how many journal
    entries were folded (`replay_run(run, at=view.position)` gives this view).
    Its repr summarises; the fields hold everything.
    """
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
        # msgpack's own unpackb (its defaults are ours) and tuple.__new__ for the
        # events: a run's replay decodes every value and event it ever wrote.
        unpack = msgpack.unpackb
        new = tuple.__new__
        return cls({k: unpack(v) for k, v in kv.items()},
                   {k: unpack(v) for k, v in docs.items()},
                   {k: unpack(v) for k, v in state.items()},
                   [new(Event, (e[0], e[1], unpack(e[2]), e[3], e[4], e[5])) for e in events],
                   [Trace(t[0], t[1], t[2], unpack(t[3]), list(t[4]),
                          None if t[5] is None else unpack(t[5]), t[6]) for t in traces],
                   position)

    def __repr__(self) -> str:
        return (f"RunView(position={self.position}, kv={count(len(self.kv), 'key')}, "
                f"json={count(len(self.json), 'doc')}, state={count(len(self.state), 'cell')}, "
                f"events={count(len(self.events), 'event')}, "
                f"traces={count(len(self.traces), 'trace')})")


class DiffEntry(NamedTuple):
    """One difference between two runs: `a` is the value in the first run, `b` in the second."""
    primitive: str
    key: Any
    a: Any
    b: Any


class RunDiff(NamedTuple):
    """What `diff_runs(a, b)` found: only in b (added), only in a (removed), in both (modified)."""
    added: list
    removed: list
    modified: list

    def __repr__(self) -> str:
        return (f"RunDiff(added={len(self.added)}, removed={len(self.removed)}, "
                f"modified={len(self.modified)})")


class Hit(NamedTuple):
    """One search match: where it is (primitive, run, ref), its BM25 score and a snippet."""
    primitive: str
    run: str
    ref: Any
    score: float
    snippet: str

    def __repr__(self) -> str:
        return record_repr("Hit", [("primitive", repr(self.primitive)), ("run", repr(self.run)),
                                   ("ref", short_value(self.ref)),
                                   ("score", rounded(self.score)),
                                   ("snippet", short_value(self.snippet))])


class SearchResponse(NamedTuple):
    """A page of search hits, best first, with the number of matches over every shard.

    `index_complete` is False while a shard's index is still being rebuilt
    after recovery (or its catch-up was cut short by `budget_ms`): the hits
    then miss what it has not indexed yet.
    """
    results: list
    total_matches: int
    budget_exhausted: bool
    took_ms: float
    index_complete: bool = True

    def __repr__(self) -> str:
        return record_repr("SearchResponse", [("results", repr(self.results)),
                                              ("total_matches", repr(self.total_matches)),
                                              ("budget_exhausted", repr(self.budget_exhausted)),
                                              ("took_ms", rounded(self.took_ms, 3)),
                                              ("index_complete", repr(self.index_complete))])
