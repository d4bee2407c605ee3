"""The engine's value encoding against a model: `check_value`, then msgpack.

`Engine._encode` checks the lists and documents it is given (a message, a
[type, bytes] pair, a checkpoint record and its references) in one pass of
its own (`inmem.values.plain_value`) and leaves the rest to `check_value`'s walk: whatever shortcut it takes, it accepts exactly
the values the model accepts, encodes them to the same bytes, and refuses the
others with the same InvalidValue."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InvalidValue
from inmem.shard.engine import Engine
from inmem.values import PLAIN_LEVELS
from inmem.values import DEPTH_MAX, INT64_MAX, INT64_MIN, check_value


def _model(value) -> bytes:
    check_value(value)
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValue(f"cannot encode value: {exc}") from None


def _outcome(encode, value):
    try:
        return encode(value)
    except InvalidValue as exc:
        return str(exc)


_scalars = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3),
                     st.binary(max_size=3), st.integers(INT64_MIN, INT64_MAX),
                     st.sampled_from([INT64_MAX + 1, INT64_MIN - 1, 2**70, "\ud800"]))
_bad = st.sampled_from([set(), (1, 2), frozenset(), object, 1j])
# Lists and documents, nested up to and past the levels the engine checks itself; now
# and then a key that is not a str.
_values = st.recursive(
    st.one_of(_scalars, _scalars, _scalars, _bad),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=2), inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 3), st.binary(max_size=1)),
                        inner, max_size=3)),
    max_leaves=30)


@settings(max_examples=1000, deadline=None)
@given(_values)
def test_encode_accepts_and_refuses_as_check_value_then_msgpack(value):
    engine = Engine()
    assert _outcome(engine._encode, value) == _outcome(_model, value)


def _nested(depth: int, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _nested_doc(depth: int, leaf):
    value = leaf
    for i in range(depth):
        value = {"a": 1, "b": [value]} if i % 2 else {"x": value}
    return value


def test_a_bad_item_below_the_levels_checked_in_one_pass_is_refused():
    engine = Engine()
    for depth in (1, PLAIN_LEVELS, PLAIN_LEVELS + 1, PLAIN_LEVELS + 3):
        for bad in (INT64_MAX + 1, (1, 2), {1: "x"}, {b"k": 1}):
            for value in (["msgpack", _nested(depth, bad)], {"doc": _nested_doc(depth, bad)}):
                assert _outcome(engine._encode, value) == _outcome(_model, value)
                assert isinstance(_outcome(engine._encode, value), str)
        good = {"doc": _nested_doc(depth, [INT64_MIN, "x", None])}
        assert engine._encode(good) == msgpack.packb(good, use_bin_type=True)


def test_a_checkpoint_record_encodes_as_msgpack_does():
    engine = Engine()
    refs = [f"blob//messages/{i:032d}.0.5157450362671463" for i in range(4)]
    record = [b"\x98packed", refs + [["json", "writes//1f1ee341"]]]
    assert engine._encode(record) == msgpack.packb(record, use_bin_type=True)
    assert engine._encode([INT64_MIN, INT64_MAX, [1, [2, ["x"]]]]) == \
        msgpack.packb([INT64_MIN, INT64_MAX, [1, [2, ["x"]]]], use_bin_type=True)


def test_values_nested_past_the_model_s_depth_are_refused_as_the_walk_refuses_them():
    engine = Engine()
    for value in (_nested(DEPTH_MAX + 5, 1), _nested_doc(DEPTH_MAX + 5, "x")):
        assert "deeper than" in _outcome(engine._encode, value)
        assert _outcome(engine._encode, value) == _outcome(_model, value)
    assert engine._encode(_nested(DEPTH_MAX - 1, 1)) == \
        msgpack.packb(_nested(DEPTH_MAX - 1, 1), use_bin_type=True)
