"""An in-memory store's history= limit: what it keeps, what replay says, what info() reports."""

from __future__ import annotations

import pytest

import inmem
from inmem.errors import HistoryNotKept, InvalidOption


def test_full_history_is_the_default_and_replays_every_position():
    db = inmem.open(None)
    run = db.begin_run(run_id="r")
    for i in range(50):
        db.kv.put(run, "k", i)
    assert db.replay_run(run, at=11).kv == {"k": 9}
    h = db.info()["shards"][0]["history"]
    assert h == {"entries": 51, "in_memory": 51, "dropped": 0, "limit": "full"}


@pytest.mark.parametrize("limit", [0, 10, 100])
def test_a_count_is_enforced_and_reported(limit):
    db = inmem.open(None, history="none" if limit == 0 else limit)
    run = db.begin_run(run_id="r")
    other = db.begin_run(run_id="short")
    db.kv.put(other, "k", 1)
    n = 2000
    for i in range(n):
        db.kv.put(run, f"k{i % 7}", i)
    h = db.info()["shards"][0]["history"]
    assert h["entries"] == n + 1 + 2
    # At least the last `limit` entries of each run are kept, and at most 2N + 64 of them.
    assert limit <= h["in_memory"] - 2 <= 2 * limit + 64
    assert h["dropped"] == h["entries"] - h["in_memory"] > 0
    assert h["limit"] == limit
    with pytest.raises(HistoryNotKept) as err:
        db.replay_run(run)
    assert err.value.run_id == "r" and "history=" in str(err.value)
    with pytest.raises(HistoryNotKept):
        db.diff_runs(run, other)
    # The state itself is whole, and a run that stayed short replays as before.
    assert db.kv.get(run, "k6") == max(i for i in range(n) if i % 7 == 6)
    assert db.replay_run(other).kv == {"k": 1}


def test_dropped_history_was_indexed_before_it_went():
    db = inmem.open(None, history="none")
    run = db.begin_run(run_id="r")
    for i in range(500):
        db.kv.put(run, f"k{i}", f"word{i} common")
    assert db.info()["shards"][0]["history"]["dropped"] > 0
    hits = db.search("word3")
    assert [h.ref for h in hits.results] == ["k3"]


@pytest.mark.parametrize("bad", ["some", -1, 1.5, True])
def test_a_bad_limit_is_refused(bad):
    with pytest.raises(InvalidOption):
        inmem.open(None, history=bad)


def test_a_durable_store_keeps_its_history(tmp_path):
    with pytest.raises(InvalidOption, match="durable"):
        inmem.open(tmp_path / "db", history=10)


@pytest.mark.parametrize("how", ["put_many", "pipeline", "transaction"])
def test_bulk_writes_stay_within_the_limit_without_searches(how):
    # The trim after a write read the index along for 2 ms only: ~160 entries, where a
    # put_many, a pipeline or a transaction adds thousands. With no search to catch the
    # index up, an embedded in-memory store's history grew by every bulk call (40 calls of
    # 1,000 puts under history=10: ~34,000 entries held, each overwritten value with them).
    from inmem.shard.search_index import TRIM_HELD_MAX
    limit = 10
    db = inmem.open(None, history=limit)
    run = db.begin_run(run_id="r")
    for call in range(40):
        if how == "put_many":
            db.kv.put_many(run, {f"k{i}": f"text {call} {i}" for i in range(1000)})
        elif how == "pipeline":
            with db.pipeline() as p:
                for i in range(1000):
                    p.kv.put(run, f"k{i}", f"text {call} {i}")
        else:
            with db.transaction(run) as tx:
                for i in range(1000):
                    tx.kv.put(f"k{i}", f"text {call} {i}")
        held = db.info()["shards"][0]["history"]["in_memory"]
        assert held <= TRIM_HELD_MAX + 2 * limit + 64, (call, held)
    # What went had been indexed: the newest values are found, the old ones are not.
    assert db.search("39", run=run, limit=0).total_matches == 1000
    assert db.search("38", run=run, limit=0).total_matches == 1  # k38 alone
