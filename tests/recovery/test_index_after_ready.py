"""Readiness never waits for the search index: it is rebuilt after recovery, and searches say so.

A recovered shard reports ready with an empty index marked `rebuilding`; the
index is rebuilt in background slices. A search in that window answers from
what is indexed (after helping within its budget) with `index_complete`
false; once the rebuild is done, the answers are those of the store before
the restart. Both states are tested on the engine and on an embedded store
here, on a real cluster in the cluster tests.
"""

from __future__ import annotations

import threading

import pytest

import inmem
from inmem.recovery.sequence import recover
from inmem.shard import search_index, upkeep
from inmem.shard.entries import entry_value
from inmem.shard.engine import Engine
from inmem.shard.history_files import HistoryFiles
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.search_index import packed_text, tokenize
from polling import wait_for
from text_corpus import QUERIES, answers, assert_same, fill, matching, text_of

# -- the engine ------------------------------------------------------------------


def recovered_engine(path) -> Engine:
    engine = Engine(log=True)
    # A durable shard's history stays in its files; the engine reads it there.
    engine.history_files = HistoryFiles(path)
    recover(path, EngineRecovery(engine))
    assert engine.index_rebuilding()  # recovery marks the rebuild; it does not do it
    return engine


@pytest.fixture
def stored(tmp_path):
    """A store of 3000 text values, closed; the answers it gave before closing."""
    path = tmp_path / "db"
    with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
        runs = [db.begin_run(name=f"r{i}") for i in range(3)]
        fill(db, runs, 3000)
        before = answers(db)
    return path, before


def test_recovery_leaves_the_index_empty_and_rebuilding(stored):
    path, _ = stored
    engine = recovered_engine(path)
    assert engine.index_rebuilding()
    assert engine.index.docs == {}


def test_a_search_with_a_budget_answers_partially_then_completely(stored):
    path, before = stored
    engine = recovered_engine(path)
    n_docs, total_len, dfs, complete = engine.search_stats(["amber"], budget_ms=0)
    assert complete is False and 0 < n_docs < 3000
    hits, matches, exhausted, complete = engine.search_query(
        ["amber"], n_docs, total_len, dfs, budget_ms=0)
    assert complete is False and exhausted is True
    assert engine.index_rebuilding()
    while engine.index_rebuilding():
        engine.index_step(1)
    n_docs, total_len, dfs, complete = engine.search_stats(["amber"], budget_ms=0)
    assert complete is True and n_docs == 3000 + 3  # the values and the three named runs


def test_a_search_without_a_budget_waits_a_bounded_time_while_rebuilding(stored, monkeypatch):
    path, _ = stored
    engine = recovered_engine(path)
    monkeypatch.setattr(search_index, "REBUILD_WAIT_MS", 0)
    n_docs, total_len, dfs, complete = engine.search_stats(["amber"])
    assert complete is False
    _hits, _matches, exhausted, complete = engine.search_query(["amber"], n_docs, total_len, dfs)
    assert complete is False
    assert exhausted is False  # no budget was given, so none ran out
    monkeypatch.setattr(search_index, "REBUILD_WAIT_MS", 60_000)
    n_docs, total_len, dfs, complete = engine.search_stats(["amber"])
    assert complete is True and not engine.index_rebuilding()


def test_after_the_rebuild_a_search_without_budget_sees_every_write_again(stored, monkeypatch):
    path, _ = stored
    engine = recovered_engine(path)
    while engine.index_rebuilding():
        engine.index_step(5)
    monkeypatch.setattr(search_index, "REBUILD_WAIT_MS", 0)
    run = next(iter(engine.runs))
    for i in range(2000):
        engine.execute("kv.put", (run, f"new{i}", "zeppelin"))
    _n, _len, dfs, complete = engine.search_stats(["zeppelin"])
    assert complete is True and dfs["zeppelin"] == 2000


def test_a_partial_index_holds_only_current_values(tmp_path):
    path = tmp_path / "db"
    with inmem.open(path, durability="buffered") as db:
        run = db.begin_run()
        fill(db, [run], 2000)
        db.snapshot()
        for i in range(0, 2000, 3):  # after the snapshot: from the WAL
            db.kv.put(run, f"k{i:06d}", f"zeppelin {i}")
        for i in range(1, 2000, 7):
            db.kv.delete(run, f"k{i:06d}")
        db.json.put(run, "doc", {"t": "amber old"})
        db.json.put(run, "doc", {"t": "zeppelin new"})
        db.state.set(run, "cell", "amber old")
        db.state.set(run, "cell", "zeppelin new")
    engine = recovered_engine(path)
    r = engine.runs[run]
    current = {"kv": r.kv, "json": r.json, "state": r.state}
    slices = 0
    while engine.index_rebuilding():
        engine.index.catch_up(engine.runs, engine.clock(), 0.0)  # one chunk at a time
        slices += 1
        for (prim, _run, ref), (_len, *terms) in engine.index.docs.items():
            if prim in current:
                entry = current[prim].get(ref)
                assert entry is not None, (prim, ref)
                assert set(terms) == set(tokenize(" ".join(packed_text(entry_value(entry))))), (prim, ref)
    assert slices > 3
    assert engine.search_stats(["zeppelin"])[2]["zeppelin"] == 667 + 2 - len(
        [i for i in range(0, 2000, 3) if i % 7 == 1])


def _record_steps(engine, monkeypatch) -> list:
    """The budgets (ms) of the index slices `engine` runs from now on, as they run."""
    budgets: list = []
    real_step = engine.index_step

    def step(max_ms):
        budgets.append(max_ms)
        return real_step(max_ms)

    monkeypatch.setattr(engine, "index_step", step)
    return budgets


def test_a_loop_that_never_idles_gives_the_rebuild_bounded_slices_until_it_completes(
        stored, monkeypatch):
    # A worker under constant load: every turn serves requests and finds more
    # waiting, so only the per-turn share can move the rebuild along.
    path, _ = stored
    engine = recovered_engine(path)
    budgets = _record_steps(engine, monkeypatch)
    share = upkeep.IndexShare(engine, threading.RLock())
    run = next(iter(engine.runs))
    turns = 0
    while engine.index_rebuilding():
        turns += 1
        assert turns < 1_000_000, "the rebuild made no progress under load"
        for i in range(20):  # the turn's requests
            engine.execute("kv.get", (run, f"k{i:06d}"))
        share()
    assert budgets and max(budgets) <= upkeep.INDEX_SHARE_MAX_MS
    assert min(budgets) >= upkeep.INDEX_SHARE_MIN_MS
    assert turns > len(budgets)  # a slice once a share is owed, not on every turn
    n_docs, _len, _dfs, complete = engine.search_stats(["amber"], budget_ms=0)
    assert complete is True and n_docs == 3000 + 3
    share()  # nothing owed once the rebuild is done
    assert share.owed == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_writes_during_the_rebuild_leave_the_index_a_fresh_one_builds(stored, seed):
    # The rebuild reads the tables as they stand and then the journals from
    # where the tables stood; writes, deletes, new keys, failed transactions
    # and a deleted run in between must leave what indexing everything anew does.
    import random

    from inmem.errors import InmemError
    path, _ = stored
    engine = recovered_engine(path)
    rng = random.Random(seed)
    runs = list(engine.runs)
    doomed = runs[-1]
    steps = 0
    while engine.index_rebuilding():
        engine.index.catch_up(engine.runs, engine.clock(), 0.0)  # one slice at a time
        steps += 1
        live = [r for r in runs if r in engine.runs]
        run = rng.choice(live)
        key = f"k{rng.randrange(3200):06d}"
        kind = rng.randrange(6)
        if kind == 0:
            engine.execute("kv.put", (run, key, f"zeppelin {steps} amber"))
        elif kind == 1:
            engine.execute("kv.put", (run, key, b"binary"))
        elif kind == 2:
            engine.execute("kv.delete", (run, key))
        elif kind == 3:
            engine.execute("kv.put", (run, f"new{steps}", "cedar zeppelin"))
        elif kind == 4:
            with pytest.raises(InmemError):
                engine.execute("tx.commit", (run, [], [["kv.put", [run, f"tx{steps}", "amber"]],
                                                       ["kv.cas", [run, key, 10**6, 0]]]))
        elif steps == 7 and doomed in engine.runs:
            engine.execute("run.delete", (doomed,))
    assert steps > 5
    engine.index.catch_up(engine.runs, engine.clock())  # the writes after the last slice
    fresh = search_index.SearchIndex()
    fresh.catch_up(engine.runs, engine.clock())
    assert engine.index.docs == fresh.docs
    assert engine.index.total_len == fresh.total_len
    assert {t: p for t, p in engine.index.postings.items()} == fresh.postings
    assert {r: set(d) for r, d in engine.index.by_run.items() if d} == \
        {r: set(d) for r, d in fresh.by_run.items() if d}


def _stale_kv_docs(engine) -> list:
    """The index's kv documents that the store no longer has, or has with other words."""
    from collections import Counter
    stale = []
    postings = engine.index.postings
    for doc, (_length, *terms) in engine.index.docs.items():
        prim, run, key = doc
        if prim != "kv":
            continue
        tfs = {t: postings[t][doc] for t in terms}
        r = engine.runs.get(run)
        e = None if r is None else r.kv.get(key)
        data = None if e is None else entry_value(e)
        words = Counter(tokenize(" ".join(packed_text(data)))) if data is not None else None
        if words is None or dict(words) != dict(tfs):
            stale.append(doc)
    return stale


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_incomplete_index_misses_documents_but_never_holds_a_stale_one(stored, seed):
    # A search during the rebuild answers from what is indexed: fewer hits, but never
    # a key that was deleted or a value that was overwritten since the rebuild began.
    import random
    path, _ = stored
    engine = recovered_engine(path)
    rng = random.Random(seed)
    run = next(iter(engine.runs))
    slices = 0
    while engine.index_rebuilding():
        for _ in range(3):
            key = f"k{rng.randrange(3000):06d}"
            if rng.randrange(2):
                engine.execute("kv.delete", (run, key))
            else:
                engine.execute("kv.put", (run, key, f"overwritten {slices} quartz"))
        engine.index.catch_up(engine.runs, engine.clock(), 0.0)  # the next slice only
        slices += 1
        assert _stale_kv_docs(engine) == [], f"after slice {slices}"
    assert slices > 5


# -- an embedded store -------------------------------------------------------------


class HeldRebuild:
    """Holds the background rebuild of an embedded store until `release()`."""

    def __init__(self, monkeypatch):
        self.gate = threading.Event()
        real = upkeep.index_slice

        def gated(engine, lock):
            if not self.gate.is_set() and engine.index_rebuilding():
                self.gate.wait(30)
            return real(engine, lock)

        monkeypatch.setattr(upkeep, "index_slice", gated)

    def release(self):
        self.gate.set()


def test_embedded_ready_before_the_index_then_partial_then_complete(stored, monkeypatch):
    path, before = stored
    held = HeldRebuild(monkeypatch)
    texts = {f"k{i:06d}": text_of(i) for i in range(3000)}
    try:
        with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
            assert db.info()["shards"][0]["index_complete"] is False
            for q in QUERIES:
                resp = db.search(q, limit=20, budget_ms=0)
                assert resp.index_complete is False and resp.budget_exhausted is True
                assert matching(resp, texts, q), q
            held.release()
            wait_for(lambda: db.info()["shards"][0]["index_complete"], 60, "the index rebuild")
            assert_same(answers(db), before)
            assert_same(answers(db, budget_ms=60_000), before)
    finally:
        held.release()


def test_embedded_search_without_budget_during_the_rebuild_is_flagged(stored, monkeypatch):
    path, before = stored
    held = HeldRebuild(monkeypatch)
    monkeypatch.setattr(search_index, "REBUILD_WAIT_MS", 0)
    try:
        with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
            resp = db.search("amber", limit=20)
            assert resp.index_complete is False and resp.budget_exhausted is False
            held.release()
            wait_for(lambda: db.info()["shards"][0]["index_complete"], 60, "the index rebuild")
            assert_same(answers(db), before)
    finally:
        held.release()


def test_embedded_snapshot_reopen_rebuilds_in_the_background(tmp_path):
    path = tmp_path / "db"
    with inmem.open(path, durability="buffered") as db:  # snapshot on close
        runs = [db.begin_run() for _ in range(2)]
        fill(db, runs, 2000)
        before = answers(db)
    with inmem.open(path, durability="buffered") as db:
        assert db.recovery_report()[0].snapshot_used is not None
        wait_for(lambda: db.info()["shards"][0]["index_complete"], 60, "the index rebuild")
        assert_same(answers(db), before)


def test_a_reopened_store_holds_no_history_on_the_heap_while_the_index_rebuilds(
        tmp_path, monkeypatch):
    # The rebuild reads the tables, never the journals below their recovered
    # length, so what replay read back from the WAL is left there at once.
    path = tmp_path / "db"
    with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
        runs = [db.begin_run(name=f"r{i}") for i in range(3)]
        fill(db, runs, 3000)
        before = answers(db)
        replays = {run: db.replay_run(run) for run in runs}
    held = HeldRebuild(monkeypatch)
    try:
        with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
            info = db.info()["shards"][0]
            assert info["index_complete"] is False
            assert info["history"]["in_memory"] == 0
            assert info["history"]["on_disk"] == info["history"]["entries"] > 3000
            for run, view in replays.items():
                assert db.replay_run(run) == view
            held.release()
            wait_for(lambda: db.info()["shards"][0]["index_complete"], 60, "the index rebuild")
            assert_same(answers(db), before)
            db.kv.put(runs[0], "after", "amber after the rebuild")
            assert any(h.ref == "after" for h in db.search("amber", limit=10_000).results)
    finally:
        held.release()


def test_a_loop_that_never_idles_gives_a_large_value_its_share_too(monkeypatch):
    # A large text value is indexed in steps (shard.search_index); a shard whose loop
    # always has requests runs index work only through IndexShare, which looked at
    # rebuilds alone: such a value got 3 ms every 250 ms of upkeep, minutes for 15 MiB.
    engine = Engine()
    run = engine.execute("run.begin", (None, None, None, [], None))
    engine.execute("kv.put", (run, "page", " ".join(f"w{i}" for i in range(60_000))))
    engine.index_step(0.5)  # the upkeep's round begins it
    assert engine.index_rebuilding() and not engine.index.rebuilding
    budgets = _record_steps(engine, monkeypatch)
    share = upkeep.IndexShare(engine, threading.RLock())
    turns = 0
    while engine.index_rebuilding():
        turns += 1
        assert turns < 1_000_000, "the large value made no progress under load"
        engine.execute("kv.get", (run, "page"))  # the turn's request
        share()
    assert budgets and max(budgets) <= upkeep.INDEX_SHARE_MAX_MS
    assert engine.search_stats(["w59999"], budget_ms=0)[3] is True
