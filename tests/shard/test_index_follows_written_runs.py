"""The search index and the history release look only at the runs written since their last round.

Each upkeep round used to walk every run of the shard twice (the index's
catch-up, and the release of history items already on disk): 80 and 130 ms a
round at 100,000 runs, four times a second, under the engine's lock, however
few of them were written. Each run's history now names itself in the index's
`unread` set as it grows, and the commit path names the runs whose items wait
to be released (`Engine.held_runs`). Here: a round after one write looks at
one run, and what is written after a reopen, to a run recovered from disk or
a snapshot, is still found by a search.
"""

from __future__ import annotations

import pytest

import inmem
import inmem.shard.search_index as search_index

RUNS = 300


def visits(monkeypatch) -> list:
    seen: list = []
    real = search_index.SearchIndex._catch_up_run

    def counting(self, run_id, *args, **kwargs):
        seen.append(run_id)
        return real(self, run_id, *args, **kwargs)

    monkeypatch.setattr(search_index.SearchIndex, "_catch_up_run", counting)
    return seen


@pytest.mark.parametrize("path", [None, "db"])
def test_a_round_after_one_write_looks_at_that_run_only(tmp_path, monkeypatch, path):
    db = inmem.open(None if path is None else tmp_path / path)
    try:
        runs = [db.begin_run() for _ in range(RUNS)]
        engine = db._backend.engine
        with db._backend.lock:
            assert engine.index_step(1000) is True
        seen = visits(monkeypatch)
        db.kv.put(runs[7], "note", "a needle in one run")
        with db._backend.lock:
            assert engine.index_step(1000) is True
        assert seen == [runs[7]]
        seen.clear()
        with db._backend.lock:
            assert engine.index_step(1000) is True
        assert seen == []  # nothing written since
        assert [h.run for h in db.search("needle").results] == [runs[7]]
    finally:
        db.close()


def test_only_runs_with_items_to_let_go_are_looked_at(tmp_path):
    db = inmem.open(tmp_path / "db", durability="strict")
    try:
        runs = [db.begin_run() for _ in range(RUNS)]
        engine = db._backend.engine
        with db._backend.lock:
            engine.index_step(1000)
            engine.release_history()
        assert engine.held_runs == set()
        db.kv.put(runs[3], "k", "v")  # placed on disk before the index read it
        assert engine.held_runs <= {runs[3]}
        with db._backend.lock:
            engine.index_step(1000)
            engine.release_history()
        assert engine.held_runs == set()
        assert engine.runs[runs[3]].journal.base == engine.runs[runs[3]].journal.disk
    finally:
        db.close()


@pytest.mark.parametrize("snapshot", [False, True])
def test_runs_recovered_on_reopen_are_followed_by_the_index(tmp_path, snapshot):
    path = tmp_path / "db"
    db = inmem.open(path, durability="strict")
    runs = [db.begin_run() for _ in range(20)]
    for i, run in enumerate(runs):
        db.kv.put(run, "k", f"before {i}")
    if snapshot:
        db.snapshot()
    db.close()
    db = inmem.open(path, durability="strict")
    try:
        db.kv.put(runs[5], "late", "written after the reopen zebra")
        db.kv.put(runs[9], "k", "replaced after the reopen zebra")
        found = db.search("zebra")
        assert found.index_complete is True
        assert sorted((h.run, h.ref) for h in found.results) == sorted(
            [(runs[5], "late"), (runs[9], "k")])
        assert [h.ref for h in db.search("before", run=runs[9]).results] == []
    finally:
        db.close()
