"""Diffing two replayed runs (the runs may live on different shards).

Each primitive is compared key by key: kv, json and state by key; events by
sequence, comparing type and payload (timestamps and hashes always differ
between runs); traces by their position in record order, comparing type,
data, tags and metadata (trace ids are random, so ids never match across
runs). `added` holds what only run b has, `removed` what only run a has,
`modified` what both have with different content; `.a`/`.b` carry the two
values (None on the missing side).
"""

from __future__ import annotations

import msgpack

from .types import DiffEntry, RunDiff, RunView


def _event_content(e):
    return (e.event_type, e.payload)


def _trace_content(t):
    return (t.trace_type, t.data, t.tags, t.metadata)


def diff_wires(wa, wb) -> RunDiff:
    """The diff of two runs from their replays as a shard sends them (`shard.replay.fold`).

    KV values, documents and cells arrive still packed: two equal packings
    are the same value, so only keys whose bytes differ (or that one side
    lacks) are decoded and compared; a run's unchanged state costs no
    decoding. Bytes that differ may still hold the same value (a dict's keys
    in another order), which the decoded comparison says.
    """
    added, removed, modified = [], [], []
    for prim, i in (("kv", 0), ("json", 1), ("state", 2)):
        _diff_packed(prim, wa[i], wb[i], added, removed, modified)
    a = RunView.from_wire(({}, {}, {}, wa[3], wa[4], wa[5]))
    b = RunView.from_wire(({}, {}, {}, wb[3], wb[4], wb[5]))
    _diff_maps("events", {e.sequence: e for e in a.events}, {e.sequence: e for e in b.events},
               added, removed, modified, _event_content)
    _diff_maps("traces", dict(enumerate(a.traces)), dict(enumerate(b.traces)),
               added, removed, modified, _trace_content)
    return RunDiff(added, removed, modified)


def _diff_packed(prim, pa: dict, pb: dict, added, removed, modified) -> None:
    unpack = msgpack.unpackb
    for key in sorted(pa.keys() | pb.keys()):  # one primitive's keys: all str
        if key not in pb:
            removed.append(DiffEntry(prim, key, unpack(pa[key]), None))
        elif key not in pa:
            added.append(DiffEntry(prim, key, None, unpack(pb[key])))
        else:
            ra, rb = pa[key], pb[key]
            if ra != rb:
                va, vb = unpack(ra), unpack(rb)
                if not _same(va, vb):
                    modified.append(DiffEntry(prim, key, va, vb))


def _diff_maps(prim, da, db_, added, removed, modified, content):
    for key in sorted(da.keys() | db_.keys()):  # positions: all int
        if key not in db_:
            removed.append(DiffEntry(prim, key, da[key], None))
        elif key not in da:
            added.append(DiffEntry(prim, key, None, db_[key]))
        elif not _same(content(da[key]), content(db_[key])):
            modified.append(DiffEntry(prim, key, da[key], db_[key]))


def _same(x, y) -> bool:
    # 1 == True and 1 == 1.0 in Python; a diff must still call them different.
    if type(x) is not type(y):
        return False
    if type(x) is dict:
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if type(x) in (list, tuple):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    if type(x) is float and x != x:
        return y != y  # NaN: the same value stored twice is not a change
    return x == y
