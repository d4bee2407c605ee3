"""run.begin with a `searchable` that is a list nested deeper than repr() goes: the refusal's
message shows the value with `!r`, whose RecursionError escaped as an internal error (the
cluster fuzzer's hostile arguments found it) instead of the InvalidValue that says what
`searchable` must be.
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


@pytest.mark.xfail(strict=True, raises=RecursionError, reason="shard/runs.py begin_run formats the refused "
                   "searchable with !r, which raises RecursionError for a deeply nested list")
def test_the_engine_refuses_a_nested_searchable_with_invalid_value():
    with pytest.raises(InvalidValue, match="searchable"):
        Engine().execute("run.begin", (None, None, None, (), None, nested()))


@pytest.mark.xfail(strict=True, raises=RecursionError, reason="inmem/sections.py begin_args formats the refused "
                   "searchable with !r, which raises RecursionError for a deeply nested list")
def test_the_client_refuses_a_nested_searchable_with_invalid_value():
    with inmem.open(None) as db:
        with pytest.raises(InvalidValue, match="searchable"):
            db.begin_run(searchable=nested())
