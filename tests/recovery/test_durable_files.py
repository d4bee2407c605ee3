"""New directories are fsynced before the first write; evidence copies are durable and numbered.

Every fsync the process makes (files and directories, including the WAL
writer's own fsync seam) is recorded by the path of the fd it was made on.
"""

from __future__ import annotations

import os

import pytest

import inmem
import inmem.wal.writer as writer_mod
from inmem.recovery import snapshot_format as sf
from inmem.recovery.snapshot_store import SnapshotStore
from inmem.wal.segment import list_segments

OPTIONS = {"snapshot_on_close": False}


@pytest.fixture
def fsynced(monkeypatch):
    """The real path of every fd fsynced from now on, in order."""
    seen: list[str] = []
    real = os.fsync

    def recording(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", recording)
    monkeypatch.setattr(writer_mod, "_os_fsync", recording)
    return seen


@pytest.mark.parametrize("durability", ["strict", "buffered"])
def test_a_fresh_store_fsyncs_each_directory_it_makes_and_its_parent(tmp_path, fsynced,
                                                                      durability):
    base = os.path.realpath(tmp_path)
    store = os.path.join(base, "new", "store")
    db = inmem.open(store, durability=durability, **OPTIONS)
    try:
        # All before the first write: by the time open returns.
        at_open = list(fsynced)
        made = [os.path.join(base, "new"), store, os.path.join(store, "wal"),
                os.path.join(store, "snapshots")]
        missing = [d for d in [base] + made if d not in at_open]
        assert not missing, f"directories never fsynced: {missing}; fsynced: {at_open}"
        run = db.begin_run(run_id="r")
        db.kv.put(run, "k", 1)
    finally:
        db.close()


def test_snapshot_store_fsyncs_a_directory_it_makes(tmp_path, fsynced):
    base = os.path.realpath(tmp_path)
    SnapshotStore(os.path.join(base, "deep", "snapshots"))
    made = {os.path.join(base, "deep"), os.path.join(base, "deep", "snapshots")}
    assert made | {base} <= set(fsynced)


def _cut_last_bytes(store, n: int = 3) -> tuple[str, bytes]:
    """Tear the newest segment's last record; return the segment and its damaged bytes."""
    _, path = list_segments(os.path.join(store, "wal"))[-1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - n)
    with open(path, "rb") as f:
        return path, f.read()


def _write(store, keys) -> None:
    # Buffered: no preallocation, so the segment ends at its last record.
    with inmem.open(store, durability="buffered", **OPTIONS) as db:
        if db.run_status("r") == "not_found":
            db.begin_run(run_id="r")
        for k in keys:
            db.kv.put("r", k, k * 10)


def test_each_torn_tail_cut_keeps_its_own_numbered_copy(tmp_path):
    store = str(tmp_path / "store")
    _write(store, ["a", "b"])
    segment, first_damage = _cut_last_bytes(store)
    _write(store, ["c", "d"])   # recovery cuts the tail, then two more records
    _, second_damage = _cut_last_bytes(store)
    with inmem.open(store, durability="buffered", **OPTIONS) as db:
        (report,) = db.recovery_report()
        assert report.tail_truncated_bytes > 0
    wal = os.path.dirname(segment)
    evidence = sorted(n for n in os.listdir(wal) if ".broken" in n)
    name = os.path.basename(segment)
    assert evidence == [name + ".broken.1", name + ".broken.2"]
    with open(segment + ".broken.1", "rb") as f:
        assert f.read() == first_damage, "older evidence must never be overwritten"
    with open(segment + ".broken.2", "rb") as f:
        assert f.read() == second_damage


def test_the_evidence_copy_is_fsynced_with_its_directory_before_the_cut(tmp_path, fsynced):
    store = str(tmp_path / "store")
    _write(store, ["a", "b"])
    segment, _ = _cut_last_bytes(store)
    segment = os.path.realpath(segment)
    fsynced.clear()
    with inmem.open(store, durability="buffered", **OPTIONS):
        pass
    seen = list(fsynced)
    copy, wal = segment + ".broken.1", os.path.dirname(segment)
    assert copy in seen, seen
    after_copy = seen[seen.index(copy) + 1:]
    assert wal in after_copy, "the copy's directory entry must be made durable"
    cut = after_copy.index(segment)  # the truncated segment's fsync
    assert wal in after_copy[:cut], "the copy must be durable before the segment is cut"


def test_a_damaged_snapshot_is_kept_under_a_new_number_each_time(tmp_path):
    store = SnapshotStore(tmp_path, retention=3)

    def put_damaged(position: int) -> None:
        info = store.write(wal_position=position, shard=0, counts={},
                           sections=[(sf.KV, b"kv"), (sf.RUNS, b"runs")], created_at=7)
        with open(info.path, "r+b") as f:
            f.seek(20)
            f.write(b"\xff\xff")

    put_damaged(5)
    snap, broken_first = store.load_newest_valid()
    put_damaged(5)   # the same name again, damaged again
    snap, broken_second = store.load_newest_valid()
    assert snap is None
    assert [os.path.basename(p)[-9:] for p in broken_first + broken_second] == \
        [".broken.1", ".broken.2"]
    assert all(os.path.exists(p) for p in broken_first + broken_second)
