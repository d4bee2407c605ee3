"""`diff_wires` compares packed values first: it must say what comparing the decoded values says.

The model decodes every value and compares them with the diff's type-strict
rules (1, True and 1.0 differ; NaN equals NaN; a dict's key order does not
matter); the diff under test decodes only what differs in its bytes.
"""

from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings, strategies as st

from inmem.replay import diff_wires

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, -0.0, 1.0, math.nan]),
                    st.sampled_from(["", "a", "b"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("xyz"), inner, max_size=3)),
    max_leaves=8)
maps = st.dictionaries(st.sampled_from([f"k{i}" for i in range(6)]), values, max_size=6)


def _model_same(x, y) -> bool:
    if type(x) is not type(y):
        return False
    if type(x) is dict:
        return x.keys() == y.keys() and all(_model_same(x[k], y[k]) for k in x)
    if type(x) is list:
        return len(x) == len(y) and all(_model_same(p, q) for p, q in zip(x, y))
    if type(x) is float and math.isnan(x):
        return type(y) is float and math.isnan(y)
    return x == y


def _reordered(v):
    """The same value with every dict's keys in reverse order (other packed bytes)."""
    if type(v) is dict:
        return {k: _reordered(v[k]) for k in reversed(list(v))}
    if type(v) is list:
        return [_reordered(p) for p in v]
    return v


def _wire(kv: dict, docs: dict, cells: dict) -> list:
    pack = msgpack.packb
    return [{k: pack(v) for k, v in m.items()} for m in (kv, docs, cells)] + [[], [], 0]


def _summary(diff):
    return [sorted((e.primitive, e.key) for e in part)
            for part in (diff.added, diff.removed, diff.modified)]


@settings(max_examples=300, deadline=None)
@given(maps, maps, maps, maps, st.booleans())
def test_the_packed_diff_agrees_with_comparing_decoded_values(kv_a, kv_b, doc_a, doc_b, reorder):
    if reorder:
        doc_b = {k: _reordered(v) for k, v in doc_b.items()}
    diff = diff_wires(_wire(kv_a, doc_a, {}), _wire(kv_b, doc_b, kv_a))
    expected = [[], [], []]
    for prim, a, b in (("kv", kv_a, kv_b), ("json", doc_a, doc_b), ("state", {}, kv_a)):
        for key in a.keys() | b.keys():
            if key not in b:
                expected[1].append((prim, key))
            elif key not in a:
                expected[0].append((prim, key))
            elif not _model_same(a[key], b[key]):
                expected[2].append((prim, key))
    assert _summary(diff) == [sorted(part) for part in expected]
    for e in diff.modified + diff.added + diff.removed:
        source_a = {"kv": kv_a, "json": doc_a, "state": {}}[e.primitive]
        if e.key in source_a:
            assert _model_same(e.a, source_a[e.key])


def test_keys_come_out_in_order_within_each_primitive():
    a = {f"k{i}": i for i in (5, 1, 3)}
    diff = diff_wires(_wire({}, {}, {}), _wire(a, a, {}))
    assert [(e.primitive, e.key) for e in diff.added] == [
        ("kv", "k1"), ("kv", "k3"), ("kv", "k5"), ("json", "k1"), ("json", "k3"), ("json", "k5")]
