"""run.begin with a `searchable` that is a list nested deeper than repr() goes: the refusal's
message showed the value with `!r`, whose RecursionError escaped as an internal error (the
cluster fuzzer's hostile arguments found it) instead of the InvalidValue that says what
`searchable` must be; it shows the value cut short now.
"""

from __future__ import annotations

import pytest

import inmem
from inmem.errors import InvalidValue
from inmem.shard.engine import Engine


def nested(depth: int = 100_000) -> list:
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


def test_the_engine_refuses_a_nested_searchable_with_invalid_value():
    with pytest.raises(InvalidValue, match="searchable"):
        Engine().execute("run.begin", (None, None, None, (), None, nested()))


def test_the_client_refuses_a_nested_searchable_with_invalid_value():
    with inmem.open(None) as db:
        with pytest.raises(InvalidValue, match="searchable"):
            db.begin_run(searchable=nested())
