"""A store with snapshots whose WAL directory is missing is refused, not opened from the
snapshot alone: the writes after the newest snapshot were in that directory."""

from __future__ import annotations

import os
import shutil

import pytest

import inmem
from inmem.errors import CorruptionError


def _store_with_writes_after_a_snapshot(path) -> str:
    with inmem.open(path, durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "before", 1)
        db.snapshot()
        for i in range(100):
            db.kv.put(run, f"after{i}", i)
    return run


def test_a_missing_wal_directory_beside_snapshots_is_refused(tmp_path):
    path = tmp_path / "db"
    _store_with_writes_after_a_snapshot(path)
    shutil.rmtree(path / "wal")
    with pytest.raises(CorruptionError) as caught:
        inmem.open(path)
    err = caught.value
    assert f"the WAL directory {path / 'wal'} is missing" in str(err)
    assert err.path == str(path / "wal") and err.skippable is False
    assert not (path / "wal").exists()  # nothing made in its place


def test_making_the_empty_directory_opens_the_store_from_its_snapshot(tmp_path):
    path = tmp_path / "db"
    run = _store_with_writes_after_a_snapshot(path)
    shutil.rmtree(path / "wal")
    os.mkdir(path / "wal")
    with inmem.open(path) as db:
        assert db.kv.get(run, "before") == 1
        assert db.kv.get(run, "after0") is None


def test_a_new_store_without_a_wal_directory_opens(tmp_path):
    with inmem.open(tmp_path / "db") as db:
        db.kv.put(db.begin_run(), "k", 1)
    assert (tmp_path / "db" / "wal").is_dir()
