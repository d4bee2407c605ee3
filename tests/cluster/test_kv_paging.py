"""Paging through a run of 100K keys on a real cluster: every page in order, none missed or
repeated, while keys are added and deleted between pages, and again after a restart
(snapshot + WAL).
"""

from __future__ import annotations

import random

import pytest

N = 100_000
PAGE = 1000


def key(i: int) -> str:
    return f"k/{i:06d}"


def page_through(db, run, prefix="", page=PAGE, between=None) -> list:
    """Every key of `run` with `prefix`, a page at a time; `between(after)` runs after each page."""
    out, after = [], None
    while True:
        got = db.kv.keys(run, prefix, after=after, limit=page)
        assert len(got) <= page
        assert got == sorted(got) and (after is None or not got or got[0] > after)
        if not got:
            return out
        out.extend(got)
        after = got[-1]
        if between is not None:
            between(after)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_paging_a_run_of_100k_keys(make_cluster, tmp_path):
    data = tmp_path / "data"
    cluster = make_cluster(data_dir=data, shards=2, durability="buffered")
    db = cluster.connect(timeout=10, request_timeout=60)
    run = db.begin_run(run_id="big")
    order = list(range(N))
    random.Random(7).shuffle(order)  # written in no particular order
    for start in range(0, N, 2000):
        db.kv.put_many(run, [[key(i), i] for i in order[start:start + 2000]])
    db.kv.put(run, "other/1", "o")
    model = {key(i) for i in range(N)}

    assert page_through(db, run, "k/") == sorted(model)
    assert db.kv.keys(run, "other/") == ["other/1"]
    assert db.kv.items(run, "k/0123", after=key(12344), limit=3) == [
        (key(12345), 12345), (key(12346), 12346), (key(12347), 12347)]

    # Between pages: keys appear and go, behind the page and ahead of it.
    rng = random.Random(8)
    changes = iter(range(10**6))

    def churn(after):
        n = next(changes)
        if n >= 60:  # the listing must come to an end
            return
        new = f"{after}+{n}"  # just after the page: the next page must show it
        behind = key(rng.randrange(N)) + "-"  # maybe already passed: shown or not, once
        doomed = key(rng.randrange(N))
        db.kv.put(run, new, n)
        db.kv.put(run, behind, n)
        db.kv.delete(run, doomed)
        model.update((new, behind))
        model.discard(doomed)
        seen_new.append(new)
        gone.add(doomed)
        if doomed > after:
            gone_ahead.add(doomed)

    seen_new: list = []
    gone: set = set()
    gone_ahead: set = set()
    paged = page_through(db, run, "k/", between=churn)
    assert len(paged) == len(set(paged))
    assert len(seen_new) == 60 and set(seen_new) <= set(paged)
    # A key deleted before its page came is not listed; one deleted after may have been.
    assert set(paged) <= model | gone and not gone_ahead & set(paged)
    assert model - set(paged) <= gone | {k for k in model if k.endswith("-")}
    assert page_through(db, run, "k/") == sorted(model)

    # A restart: half of the state from the snapshot, the rest from the WAL after it.
    db.snapshot()
    for i in range(0, N, 97):
        db.kv.delete(run, key(i))
        model.discard(key(i))
    db.kv.put_many(run, [[key(i) + "z", i] for i in range(0, N, 101)])
    model.update(key(i) + "z" for i in range(0, N, 101))
    db.close()
    cluster.stop()
    again = make_cluster(data_dir=data, shards=2, durability="buffered")
    db = again.connect(timeout=10, request_timeout=60)
    assert page_through(db, run, "k/", page=777) == sorted(model)
    assert db.kv.keys(run, "k/", after=key(N - 2), limit=5) == sorted(
        k for k in model if k > key(N - 2))[:5]
    db.close()
