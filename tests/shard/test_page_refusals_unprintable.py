"""Pages of runs.list and kv.keys/items refuse an `after` or `limit` they cannot take with a
message that shows the value cut short, never failing itself: a list nested deeper than
repr() goes (which a cluster decodes from a request) raised RecursionError, an int too long
to print ValueError, each an internal error rather than the InvalidValue that says what a
page takes. (Pages of
events and traces name the type instead: tests/shard/test_event_trace_pages.py.)
"""

from __future__ import annotations

import pytest

from inmem.errors import InvalidValue
from inmem.shard.engine import Engine


def nested(depth: int = 100_000) -> list:
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


CASES = [
    ("run.list", (None, None, None, None, "NESTED")),
    ("run.list", (None, None, None, "NESTED", None)),
    ("run.list", (None, None, None, None, -10**5000)),
    ("kv.keys", ("r", "", None, "NESTED")),
    ("kv.items", ("r", "", None, -10**5000)),
]


@pytest.mark.parametrize("op,args", CASES, ids=[f"{op}-{i}" for i, (op, _a) in enumerate(CASES)])
def test_an_unprintable_page_is_refused_with_invalid_value(op, args):
    engine = Engine()
    engine.begin_run(run_id="r")
    args = tuple(nested() if a == "NESTED" else a for a in args)
    with pytest.raises(InvalidValue):
        engine.execute(op, args)


@pytest.mark.parametrize("value, shown", [
    (nested(), "[[[[...]]]]"),
    (-10**5000, "<an int of 16610 bits>"),
    ("x" * 500, None),
], ids=["nested", "long-int", "long-str"])
def test_short_value_never_raises_and_cuts_long_values(value, shown):
    from inmem.display import short_value
    text = short_value(value)
    assert len(text) <= 80
    if shown is not None:
        assert text == shown


def test_short_value_of_a_broken_repr_names_its_type():
    from inmem.display import short_value

    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert short_value(Broken()).startswith("<Broken")
