"""A run begun with searchable=False: the flag is kept by the WAL and by snapshots,
its history is let go once on disk without waiting for the search index, and the
index, rebuilt after a recovery, still leaves it out."""

from __future__ import annotations

import pytest

import inmem


def _hits(db, words: str) -> list:
    return sorted((h.primitive, h.run, h.ref) for h in db.search(words).results)


@pytest.mark.parametrize("mode", ["buffered", "strict"])
@pytest.mark.parametrize("through", ["wal", "snapshot"])
def test_the_flag_survives_a_reopen(tmp_path, mode, through):
    path = tmp_path / "db"
    with inmem.open(path, durability=mode, snapshot_on_close=False) as db:
        hidden = db.begin_run(name="walrus", searchable=False)
        shown = db.begin_run(name="visible")
        for run in (hidden, shown):
            db.kv.put(run, "k", "walrus tusk")
            db.events.append(run, "note", {"text": "walrus seen"})
        if through == "snapshot":
            db.snapshot()
    with inmem.open(path, durability=mode) as db:
        assert db.runs.get(hidden).searchable is False
        assert db.runs.get(shown).searchable is True
        # The rebuilt index holds the searchable run's documents and none of the other's.
        assert _hits(db, "walrus") == [("events", shown, 0), ("kv", shown, "k")]
        assert db.kv.get(hidden, "k") == "walrus tusk"
        assert db.replay_run(hidden).kv == {"k": "walrus tusk"}
        # Written after the recovery: still left out.
        db.kv.put(hidden, "k2", "walrus again")
        assert _hits(db, "again") == []


def test_its_history_goes_once_on_disk_without_the_index(tmp_path):
    # A searchable run's history items are held until the index has read them; an
    # unsearchable run's go as soon as the record holding them is on disk.
    with inmem.open(tmp_path / "db", durability="strict", snapshot_on_close=False) as db:
        hidden = db.begin_run(searchable=False)
        shown = db.begin_run()
        backend = db._backend
        with backend.lock:
            # Keep the index from running meanwhile: only the commit path lets go.
            backend.engine.index.catch_up = lambda *a, **k: False
        for i in range(50):
            db.kv.put(hidden, f"k{i}", f"text value {i}")
            db.kv.put(shown, f"k{i}", f"text value {i}")
        with backend.lock:
            runs = backend.engine.runs
            held_hidden = len(runs[hidden].journal.items)
            held_shown = len(runs[shown].journal.items)
        assert held_hidden <= 1
        assert held_shown >= 50
        assert db.replay_run(hidden).kv == {f"k{i}": f"text value {i}" for i in range(50)}


def test_a_killed_cluster_keeps_the_flag(tmp_path):
    # SIGKILL of the coordinator and every shard after acknowledged strict writes.
    data = tmp_path / "data"
    cl = inmem.Cluster(data_dir=str(data), shards=2, durability="strict", ready_timeout=45)
    cl.start()
    try:
        db = cl.connect()
        db.begin_run(run_id="lg-thread", searchable=False)
        db.kv.put("lg-thread", "k", "narwhal")
        db.begin_run(run_id="plain-run")
        db.kv.put("plain-run", "k", "narwhal")
        db.close()
    finally:
        cl.kill()
    with inmem.Cluster(data_dir=str(data), shards=2, durability="strict",
                       ready_timeout=45) as cl:
        db = cl.connect()
        try:
            assert db.runs.get("lg-thread").searchable is False
            assert db.kv.get("lg-thread", "k") == "narwhal"
            assert _hits(db, "narwhal") == [("kv", "plain-run", "k")]
        finally:
            db.close()
