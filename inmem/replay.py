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

from inmem.shard.search_index import ref_key

from .types import DiffEntry, RunDiff, RunView


def _event_content(e):
    return (e.event_type, e.payload)


def _trace_content(t):
    return (t.trace_type, t.data, t.tags, t.metadata)


def diff_views(a: RunView, b: RunView) -> RunDiff:
    added, removed, modified = [], [], []
    for prim, da, db_ in (("kv", a.kv, b.kv), ("json", a.json, b.json),
                          ("state", a.state, b.state)):
        _diff_maps(prim, da, db_, added, removed, modified, None)
    _diff_maps("events", {e.sequence: e for e in a.events}, {e.sequence: e for e in b.events},
               added, removed, modified, _event_content)
    _diff_maps("traces", dict(enumerate(a.traces)), dict(enumerate(b.traces)),
               added, removed, modified, _trace_content)
    return RunDiff(added, removed, modified)


def _diff_maps(prim, da, db_, added, removed, modified, content):
    for key in sorted(da.keys() | db_.keys(), key=ref_key):
        if key not in db_:
            removed.append(DiffEntry(prim, key, da[key], None))
        elif key not in da:
            added.append(DiffEntry(prim, key, None, db_[key]))
        else:
            va, vb = da[key], db_[key]
            same = _same(content(va), content(vb)) if content else _same(va, vb)
            if not same:
                modified.append(DiffEntry(prim, key, va, vb))


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
