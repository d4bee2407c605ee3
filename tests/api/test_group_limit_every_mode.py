"""One put_many or transaction larger than one WAL record is refused in memory too.

A durable store refuses it (the group cannot be one record) and a cluster
refuses the request; an in-memory store took it, so code tested in memory
failed once it ran durable.
"""

from __future__ import annotations

import pytest

import inmem

BIG = "x" * (16 * 2**20 - 100)  # under max_value_bytes; five of them are over one record


@pytest.fixture(params=["inmemory", "buffered"])
def store(request, tmp_path):
    path = None if request.param == "inmemory" else tmp_path / "db"
    with inmem.open(path, durability=request.param) as db:
        yield db


def test_a_put_many_over_one_record_is_refused_and_leaves_nothing(store):
    run = store.begin_run()
    with pytest.raises(inmem.ValueTooLarge, match="bytes in the log, over the limit"):
        store.kv.put_many(run, [[f"b{i}", BIG] for i in range(5)])
    assert store.kv.keys(run) == []
    assert store.kv.put_many(run, [[f"b{i}", BIG] for i in range(3)]) == [1, 1, 1]


def test_a_transaction_over_one_record_is_refused_and_leaves_nothing(store):
    run = store.begin_run()
    store.kv.put(run, "b0", "before")
    with pytest.raises(inmem.ValueTooLarge, match="bytes in the log, over the limit"):
        with store.transaction(run) as tx:
            for i in range(5):
                tx.kv.put(f"b{i}", BIG)
    assert store.kv.keys(run) == ["b0"] and store.kv.get(run, "b0") == "before"
    assert store.kv.put(run, "after", 1) == 1
