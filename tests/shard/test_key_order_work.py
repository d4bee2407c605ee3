"""A page of `kv.keys` / `kv.items` looks at about the keys it returns, not at every key of the run.

The work is counted, not timed: the run's KV table is swapped for a dict that
counts every key it hands out (iteration, lookups), so a listing that walks
the whole run shows as hundreds of thousands of visits.
"""

from __future__ import annotations

import pytest

from inmem.errors import InvalidKey
from inmem.shard.engine import Engine

N = 200_000
#: a page may look at a few keys around it (where it starts, the one that ends it)
SLACK = 20


class CountingDict(dict):
    """A dict that counts the keys it hands out, however they are asked for."""

    visits = 0

    def __iter__(self):
        for k in dict.__iter__(self):
            self.visits += 1
            yield k

    def __reversed__(self):
        for k in dict.__reversed__(self):
            self.visits += 1
            yield k

    def keys(self):
        return iter(self)

    def items(self):
        for pair in dict.items(self):
            self.visits += 1
            yield pair

    def values(self):
        for v in dict.values(self):
            self.visits += 1
            yield v

    def __getitem__(self, key):
        self.visits += 1
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self.visits += 1
        return dict.get(self, key, default)


def key(i: int) -> str:
    return f"k/{i:07d}"


@pytest.fixture(scope="module")
def big():
    """(engine, run id, its counting table): a run of N keys, listed once already."""
    engine = Engine()
    run = engine.begin_run(run_id="big")
    for start in range(0, N, 1000):
        engine.kv_put_many(run, [[key(i), i] for i in range(start, start + 1000)])
    for i in range(10):
        engine.kv_put(run, f"other/{i}", i)
    table = CountingDict(engine.runs[run].kv)
    engine.runs[run].kv = table
    # The first listing may look at every key (it learns their order).
    assert engine.kv_keys(run, "", None, 1) == [key(0)]
    return engine, run, table


def visits(table: CountingDict, fn):
    table.visits = 0
    out = fn()
    return out, table.visits


def test_a_page_after_a_key_visits_about_the_page(big):
    engine, run, table = big
    page, seen = visits(table, lambda: engine.kv_keys(run, "", key(N // 2), 10))
    assert page == [key(i) for i in range(N // 2 + 1, N // 2 + 11)]
    assert seen <= 10 + SLACK, seen


def test_a_prefix_listing_visits_only_its_keys(big):
    engine, run, table = big
    page, seen = visits(table, lambda: engine.kv_keys(run, "other/"))
    assert page == [f"other/{i}" for i in range(10)]
    assert seen <= 10 + SLACK, seen
    items, seen = visits(table, lambda: engine.kv_items(run, "k/001234", None, 5))
    assert items == [(key(i), i) for i in range(12340, 12345)]
    assert seen <= 2 * 5 + SLACK, seen  # a lookup to list a key, one to read its value


def test_paging_the_whole_run_visits_each_key_about_once(big):
    engine, run, table = big
    table.visits = 0
    after, got = None, 0
    while True:
        page = engine.kv_keys(run, "k/", after, 1000)
        if not page:
            break
        got += len(page)
        after = page[-1]
    assert got == N
    assert table.visits <= N + 1000 * SLACK, table.visits


def test_new_keys_cost_the_next_page_only_themselves(big):
    engine, run, table = big
    engine.kv_put(run, key(100) + "a", "new")
    engine.kv_put_many(run, [[key(200) + "b", 1], [key(200) + "c", 2]])
    engine.execute_batch([("kv.put", [run, key(300) + "d", 3]),
                          ("kv.put", [run, key(300) + "e", 4])])
    page, seen = visits(table, lambda: engine.kv_keys(run, "", key(100), 3))
    assert page == [key(100) + "a", key(101), key(102)]
    assert seen <= 3 + 5 + SLACK, seen  # the five new keys are put in their place once
    page, seen = visits(table, lambda: engine.kv_keys(run, "", key(300), 3))
    assert page == [key(300) + "d", key(300) + "e", key(301)]
    assert seen <= 3 + SLACK, seen


def test_a_rolled_back_transaction_leaves_no_key_and_costs_no_rebuild(big):
    engine, run, table = big
    with pytest.raises(InvalidKey):
        engine.tx_commit(run, [], [["kv.put", [run, key(400) + "x", 1]],
                                   ["kv.put", [run, "", 1]]])
    page, seen = visits(table, lambda: engine.kv_keys(run, "", key(400), 2))
    assert page == [key(401), key(402)]
    assert seen <= 2 + SLACK, seen


def test_only_a_run_of_many_keys_keeps_its_order():
    """A small run sorts its few keys per listing instead of holding an order for good."""
    from inmem.shard.key_order import KEPT_FROM

    engine = Engine()
    run = engine.begin_run(run_id="small")
    engine.kv_put_many(run, [[f"k{i:04d}", i] for i in range(KEPT_FROM - 1)])
    assert engine.kv_keys(run, "", None, 2) == ["k0000", "k0001"]
    assert engine.runs[run].kv_order is None
    engine.kv_put(run, "k9999", 1)
    last = f"k{KEPT_FROM - 2:04d}"
    assert engine.kv_keys(run, "", f"k{KEPT_FROM - 3:04d}", 3) == [last, "k9999"]
    assert engine.runs[run].kv_order is not None
