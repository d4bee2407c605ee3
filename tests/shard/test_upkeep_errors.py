"""The shard's upkeep round (`shard.upkeep.upkeep`) outlives what its parts raise: an index
slice that meets an unreadable history record, a compaction or a snapshot that fails, each
logged, and the round goes on to the next part (the loop that runs it must not stop)."""

from __future__ import annotations

import logging

import pytest

import inmem
from inmem.errors import CorruptionError
from inmem.shard.upkeep import upkeep


@pytest.fixture
def store(tmp_path):
    db = inmem.open(tmp_path / "data", durability="buffered", snapshot_on_close=False)
    run = db.begin_run()
    db.kv.put(run, "k", "some words")
    yield db._backend.store
    db.close()


def test_an_index_slice_that_cannot_read_its_history_is_logged_and_the_round_goes_on(
        store, monkeypatch, caplog):
    def unreadable(max_ms):
        raise CorruptionError("history record at offset 4096 does not decode", path="x.hist")

    monkeypatch.setattr(store.engine, "index_step", unreadable)
    snapshots = []
    monkeypatch.setattr(store, "maybe_snapshot", lambda: snapshots.append(1))
    with caplog.at_level(logging.ERROR):
        upkeep(store.engine, store, store.lock)
    assert "does not decode" in caplog.text
    assert snapshots == [1]  # the rest of the round ran


def test_failing_compaction_and_snapshot_are_logged(store, monkeypatch, caplog):
    def fails():
        raise inmem.DurabilityError("cannot fork a snapshot child: no memory")

    monkeypatch.setattr(store, "compact_step", fails)
    monkeypatch.setattr(store, "maybe_snapshot", fails)
    with caplog.at_level(logging.ERROR):
        upkeep(store.engine, store, store.lock)
    assert caplog.text.count("cannot fork") == 2
