"""A search without a budget waits for the index slice by slice, never holding the store.

`shard.deferred_search`: a search with no `budget_ms` that one short slice
cannot bring the index up to date for waits apart, while other requests are
served (a worker's loop, or an embedded store's lock let go between slices,
and an asyncio store's event loop turning between them). Here: which searches
wait, that the waiting ones are released once the index is up to date, and
that an embedded store (sync and asyncio) takes other calls meanwhile and
still answers the search with the large text found whole.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import inmem
import inmem.asyncio
from between_slices import write_between_slices
import inmem.shard.deferred_search as deferred_search
from inmem.shard.deferred_search import SearchWaits, waits_for_index
from inmem.shard.engine import Engine

#: a hang detector for the slices
MAX_STEPS = 100_000


def big_text(mib: float, seed: int = 1) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = ["".join(rng.choices(letters, k=7)) for _ in range(50_000)]
    return " ".join(rng.choices(pool, k=int(mib * (1 << 20) / 8)))


def engine_behind(mib: float = 2) -> tuple[Engine, str]:
    engine = Engine()
    run = engine.execute("run.begin", [None, "r", None, [], None])
    engine.execute("kv.put", [run, "page", big_text(mib) + " needle", None])
    return engine, run


def test_only_a_search_without_a_budget_behind_the_index_waits():
    engine, _run = engine_behind()
    assert waits_for_index(engine, "search.stats", [["needle"], None]) is True
    assert waits_for_index(engine, "search.stats", [["needle"]]) is True
    assert waits_for_index(engine, "search.query",
                           [["needle"], 1, 1, {}, None, None, 10, None]) is True
    # A budget is kept to by the search itself; other operations never wait.
    assert waits_for_index(engine, "search.stats", [["needle"], 20]) is False
    assert waits_for_index(engine, "kv.get", ["r", "page"]) is False


def test_an_index_being_rebuilt_makes_nothing_wait():
    engine, _run = engine_behind()
    engine.index.rebuilding = True  # a search then answers from what is indexed
    assert waits_for_index(engine, "search.stats", [["needle"], None]) is False


def test_waiting_searches_are_released_in_order_once_the_index_is_up_to_date():
    engine, _run = engine_behind()
    waits = SearchWaits()
    assert not waits and waits.step(engine) == []
    waits.add(["a"], "search.stats", [["needle"], None])
    waits.add(["b"], "search.query", [["needle"], 1, 1, {}, None, None, 10, None])
    for steps in range(MAX_STEPS):
        ready = waits.step(engine)
        if ready:
            break
    assert steps > 0  # a 2 MiB text takes more than one slice
    assert [r[0] for r in ready] == [["a"], ["b"]]
    assert not waits
    assert engine.index_step(0) is True  # nothing left behind


def test_the_waiting_searches_are_bounded():
    waits = SearchWaits()
    for i in range(deferred_search.WAITING_MAX):
        assert not waits.full()
        waits.add([i], "search.stats", [["x"], None])
    assert waits.full()  # the next one is answered inline


@pytest.fixture
def store(tmp_path):
    db = inmem.open(tmp_path / "db", snapshot_on_close=False)
    yield db
    db.close()


def test_an_embedded_search_lets_other_threads_in_between_its_slices(store, monkeypatch):
    run = store.begin_run()
    store.kv.put(run, "page", big_text(2) + " needle")
    other = write_between_slices(monkeypatch, lambda: store.kv.put(run, "late", 1))
    resp = store.search("needle")
    assert other == [1, False]  # the write landed (version 1) while the search waited
    assert resp.index_complete is True
    assert [h.ref for h in resp.results] == ["page"]


def test_an_asyncio_embedded_search_lets_the_loop_run_between_its_slices(tmp_path):
    async def main():
        db = await inmem.asyncio.open(tmp_path / "db", snapshot_on_close=False)
        try:
            run = await db.begin_run()
            await db.kv.put(run, "page", big_text(2) + " needle")
            search = asyncio.create_task(db.search("needle"))
            await asyncio.sleep(0)  # the search starts: its first slice, then it yields
            version = await db.kv.put(run, "late", 1)
            waiting = not search.done()
            resp = await search
            return version, waiting, resp
        finally:
            await db.close()

    version, waiting, resp = asyncio.run(main())
    assert version == 1 and waiting is True
    assert resp.index_complete is True
    assert [h.ref for h in resp.results] == ["page"]
