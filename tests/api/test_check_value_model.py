"""`check_value` against a model: the plain walk it started as (every container through
an explicit stack, last item first). Whatever the shortcuts it takes for lists of
plain values, it accepts exactly what the walk accepts and refuses the rest with the
same InvalidValue, naming the same fault when a value has several."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InvalidValue
from inmem.values import ALWAYS_VALID_TYPES, DEPTH_MAX, INT64_MAX, INT64_MIN, check_value


def _model(value) -> None:
    """The walk, as it was before any shortcut."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if t in ALWAYS_VALID_TYPES:
            continue
        if t is int:
            if not INT64_MIN <= v <= INT64_MAX:
                raise InvalidValue(f"int {v} does not fit in 64 signed bits")
            continue
        if depth > DEPTH_MAX:
            raise InvalidValue("too deep")
        if t is list:
            items = v
        elif t is dict:
            for k in v:
                if type(k) is not str:
                    raise InvalidValue(f"dict keys must be str, got {type(k).__name__}")
            items = v.values()
        else:
            raise InvalidValue(f"{t.__name__} is not a storable value")
        for item in items:
            stack.append((item, depth + 1))


def _outcome(check, value):
    try:
        check(value)
    except InvalidValue as exc:
        message = str(exc)
        return "too deep" if "deeper than" in message or message == "too deep" else \
            message.split(" (use")[0]
    return "ok"


_scalars = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3),
                     st.binary(max_size=3),
                     st.integers(INT64_MIN, INT64_MAX),
                     st.sampled_from([INT64_MAX + 1, INT64_MIN - 1, 2**70]))
_bad = st.sampled_from([set(), (1, 2), frozenset(), object, 1j])
_values = st.recursive(
    st.one_of(_scalars, _scalars, _scalars, _bad),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=2), st.text(max_size=2), st.integers(0, 3)),
                        inner, max_size=4)),
    max_leaves=30)


@settings(max_examples=800, deadline=None)
@given(_values)
def test_check_value_refuses_what_the_walk_refuses_naming_the_same_fault(value):
    assert _outcome(check_value, value) == _outcome(_model, value)


def _nested(depth: int, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [1, 5, 6, 7, 8, DEPTH_MAX - 1, DEPTH_MAX, DEPTH_MAX + 1,
                                   DEPTH_MAX + 2])
@pytest.mark.parametrize("leaf", [[1, "a", b"b"], [], [2**70], [{}], [{1: 2}], [set()],
                                  [[1, 2], [3]], "x"])
def test_deep_lists_are_checked_as_the_walk_checks_them(depth, leaf):
    value = _nested(depth, leaf)
    assert _outcome(check_value, value) == _outcome(_model, value)
    wide = [[1, 2]] * 3 + [value] + [["k", [b"v"]]] * 2
    assert _outcome(check_value, wide) == _outcome(_model, wide)


def test_a_list_that_holds_itself_is_too_deep():
    value: list = [1, [2]]
    value[1].append(value)
    assert _outcome(check_value, value) == "too deep"
