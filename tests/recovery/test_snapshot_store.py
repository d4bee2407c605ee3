"""The snapshot directory: atomic creation, retention, fallback to older files, cleanup."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import crc32c
import pytest

from inmem.recovery import snapshot_format as sf
from inmem.recovery import snapshot_store
from inmem.recovery.errors import SnapshotUnsupported
from inmem.recovery.snapshot_store import SnapshotInfo, SnapshotStore, snapshot_name


def put(store: SnapshotStore, position: int, created_at: int | None = None, payload: bytes = b"") -> SnapshotInfo:
    return store.write(wal_position=position, shard=1, counts={"keys": position},
                       sections=[(sf.KV, payload or f"kv@{position}".encode()), (sf.RUNS, b"runs")],
                       created_at=created_at if created_at is not None else 1000 + position)


def damage(path: str, offset: int = 50) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def names(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_write_creates_a_named_durable_file(tmp_path):
    store = SnapshotStore(tmp_path / "snaps")
    info = store.write(wal_position=77, shard=2, counts={"keys": 3},
                       sections=[(sf.KV, b"abc")], created_at=1_700_000_000_000_000)
    assert info.path == os.path.join(str(tmp_path / "snaps"), "snap-00000000000000000077-00001700000000000000.snap")
    assert os.path.isabs(info.path)
    assert (info.wal_position, info.timestamp, info.bytes) == (77, 1_700_000_000_000_000, os.path.getsize(info.path))
    assert names(tmp_path / "snaps") == [os.path.basename(info.path)]
    snap = sf.read_snapshot_file(info.path)
    assert (snap.header.wal_position, snap.header.shard, bytes(snap.sections[sf.KV])) == (77, 2, b"abc")


def test_created_at_defaults_to_now(tmp_path):
    store = SnapshotStore(tmp_path)
    info = store.write(wal_position=1, shard=0, counts={}, sections=[])
    assert info.timestamp > 1_600_000_000_000_000
    assert sf.read_snapshot_file(info.path).header.created_at == info.timestamp


def test_name_order_is_age_order():
    assert snapshot_name(9, 5) < snapshot_name(10, 1) < snapshot_name(10, 2)
    assert snapshot_name(2**64 - 1, 2**63 - 1) == f"snap-{2**64 - 1}-0{2**63 - 1}.snap"


def test_list_is_newest_first_and_ignores_other_files(tmp_path):
    store = SnapshotStore(tmp_path, retention=10)
    for position in (5, 30, 12):
        put(store, position)
    (tmp_path / (snapshot_name(99, 1) + ".tmp")).write_bytes(b"partial")
    (tmp_path / (snapshot_name(98, 1) + ".broken")).write_bytes(b"bad")
    (tmp_path / "notes.txt").write_text("operator notes")
    (tmp_path / "snap-1-2.snap").write_bytes(b"short name")
    assert [i.wal_position for i in store.list()] == [30, 12, 5]
    assert store.newest().wal_position == 30


def test_same_position_orders_by_time(tmp_path):
    store = SnapshotStore(tmp_path, retention=10)
    put(store, 10, created_at=2)
    put(store, 10, created_at=1)
    assert [(i.wal_position, i.timestamp) for i in store.list()] == [(10, 2), (10, 1)]


@pytest.mark.parametrize("retention", [1, 2, 3])
def test_retention_keeps_exactly_n_newest(tmp_path, retention):
    store = SnapshotStore(tmp_path, retention=retention)
    for position in range(1, 7):
        put(store, position * 10)
        assert len(store.list()) == min(position, retention)
    assert [i.wal_position for i in store.list()] == [60, 50, 40][:retention]
    assert len(names(tmp_path)) == retention


def test_retention_leaves_broken_and_foreign_files(tmp_path):
    store = SnapshotStore(tmp_path, retention=1)
    evidence = tmp_path / (snapshot_name(1, 1) + ".broken")
    evidence.write_bytes(b"kept")
    put(store, 10)
    put(store, 20)
    assert evidence.exists()
    assert [i.wal_position for i in store.list()] == [20]


def test_oldest_retained_position(tmp_path):
    store = SnapshotStore(tmp_path, retention=2)
    assert store.oldest_retained_position() == 0
    put(store, 10)
    assert store.oldest_retained_position() == 10
    put(store, 25)
    put(store, 40)
    assert store.oldest_retained_position() == 25


def test_load_newest_valid_prefers_the_newest(tmp_path):
    store = SnapshotStore(tmp_path, retention=3)
    for position in (10, 20, 30):
        put(store, position)
    snap, broken = store.load_newest_valid()
    assert (snap.header.wal_position, broken) == (30, [])
    assert bytes(snap.sections[sf.KV]) == b"kv@30"


def test_load_newest_valid_falls_back_and_keeps_evidence(tmp_path):
    store = SnapshotStore(tmp_path, retention=3)
    infos = [put(store, position) for position in (10, 20, 30)]
    damage(infos[2].path)
    damage(infos[1].path, offset=os.path.getsize(infos[1].path) - 1)
    snap, broken = store.load_newest_valid()
    assert snap.header.wal_position == 10 and bytes(snap.sections[sf.KV]) == b"kv@10"
    assert broken == [infos[2].path + ".broken.1", infos[1].path + ".broken.1"]
    assert all(os.path.exists(p) for p in broken)
    assert not os.path.exists(infos[2].path)
    assert [i.wal_position for i in store.list()] == [10]


def test_load_newest_valid_when_every_file_is_damaged(tmp_path):
    store = SnapshotStore(tmp_path, retention=2)
    infos = [put(store, position) for position in (10, 20)]
    for info in infos:
        damage(info.path)
    snap, broken = store.load_newest_valid()
    assert snap is None and len(broken) == 2
    assert store.list() == [] and store.oldest_retained_position() == 0


def test_load_newest_valid_on_an_empty_directory(tmp_path):
    assert SnapshotStore(tmp_path).load_newest_valid() == (None, [])


def test_empty_and_zero_files_fall_back(tmp_path):
    store = SnapshotStore(tmp_path, retention=5)
    good = put(store, 10)
    (tmp_path / snapshot_name(20, 1)).write_bytes(b"")
    (tmp_path / snapshot_name(30, 1)).write_bytes(bytes(4096))
    snap, broken = store.load_newest_valid()
    assert snap.path == good.path and len(broken) == 2


def test_a_file_whose_name_disagrees_with_its_header_is_not_used(tmp_path):
    store = SnapshotStore(tmp_path, retention=5)
    good = put(store, 10)
    moved = put(store, 20)
    liar = tmp_path / snapshot_name(50, moved.timestamp)
    os.rename(moved.path, liar)
    snap, broken = store.load_newest_valid()
    assert snap.path == good.path and broken == [str(liar) + ".broken.1"]


def test_a_newer_format_version_stops_loading_and_is_not_renamed(tmp_path):
    store = SnapshotStore(tmp_path, retention=5)
    put(store, 10)
    body = struct.pack("<8sHHqQIII", sf.MAGIC, 2, 0, 1, 20, 0, 0, 1) + b"\x80"
    future = tmp_path / snapshot_name(20, 1)
    future.write_bytes(body + struct.pack("<I", crc32c.crc32c(body)))
    with pytest.raises(SnapshotUnsupported):
        store.load_newest_valid()
    assert future.exists()


def test_cleanup_tmp_removes_only_leftover_writes(tmp_path):
    store = SnapshotStore(tmp_path)
    kept = put(store, 10)
    leftovers = [tmp_path / (snapshot_name(20, 1) + ".tmp"), tmp_path / (snapshot_name(30, 1) + ".tmp")]
    for path in leftovers:
        path.write_bytes(b"half a snapshot")
    other = tmp_path / "scratch.tmp"
    other.write_bytes(b"not ours")
    assert store.cleanup_tmp() == sorted(str(p) for p in leftovers)
    assert names(tmp_path) == sorted([os.path.basename(kept.path), "scratch.tmp"])
    assert store.cleanup_tmp() == []


def test_a_failed_write_leaves_no_file(tmp_path):
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError):
        store.write(wal_position=1, shard=0, counts={}, sections=[(sf.KV, b"a"), (sf.KV, b"b")])
    assert names(tmp_path) == []


class Crash(Exception):
    pass


def crash_at(monkeypatch, point: str) -> list[str]:
    seen = []

    def failpoint(name):
        seen.append(name)
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(snapshot_store, "_failpoint", failpoint)
    return seen


def test_crash_before_rename_leaves_only_a_tmp_file(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path, retention=1)
    old = put(store, 10)
    seen = crash_at(monkeypatch, "snapshot.before_rename")
    with pytest.raises(Crash):
        put(store, 20)
    assert seen == ["snapshot.before_rename"]
    assert [i.path for i in store.list()] == [old.path]
    # The .tmp file is complete and fsynced but was never published.
    assert store.cleanup_tmp() == [os.path.join(str(tmp_path), snapshot_name(20, 1020) + ".tmp")]
    assert store.load_newest_valid()[0].path == old.path


def test_crash_before_retention_delete_keeps_both(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path, retention=1)
    old = put(store, 10)
    seen = crash_at(monkeypatch, "snapshot.before_retention_delete")
    with pytest.raises(Crash):
        put(store, 20)
    assert seen == ["snapshot.before_rename", "snapshot.after_rename", "snapshot.before_retention_delete"]
    assert [i.wal_position for i in store.list()] == [20, 10]
    assert store.oldest_retained_position() == old.wal_position
    # The next write (or an explicit call) finishes the job.
    monkeypatch.setattr(snapshot_store, "_failpoint", lambda name: None)
    assert store.apply_retention() == [old.path]


def test_failpoint_names_are_declared_and_registered():
    from inmem.wal import failpoints

    assert snapshot_store.FAILPOINTS == (
        "snapshot.before_rename", "snapshot.after_rename", "snapshot.before_retention_delete")
    assert set(snapshot_store.FAILPOINTS) <= set(failpoints.KNOWN_FAILPOINTS)


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = """
import sys
from inmem.recovery import snapshot_format as sf
from inmem.recovery.snapshot_store import SnapshotStore
SnapshotStore(sys.argv[1], retention=1).write(
    wal_position=20, shard=0, counts={}, sections=[(sf.KV, b"new")], created_at=2)
"""


@pytest.mark.parametrize("point, survivors", [
    ("snapshot.before_rename", [10]),
    ("snapshot.after_rename", [20, 10]),
    ("snapshot.before_retention_delete", [20, 10]),
])
def test_a_real_crash_at_each_failpoint_leaves_a_loadable_directory(tmp_path, point, survivors):
    store = SnapshotStore(tmp_path, retention=1)
    put(store, 10)
    env = {**os.environ, "INMEM_FAILPOINT": point, "INMEM_FAILPOINT_EXIT": "77",
           "PYTHONPATH": _ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("INMEM_FAILPOINT_SKIP", None)
    child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], env=env,
                           capture_output=True, timeout=30)
    assert child.returncode == 77, child.stderr.decode()
    assert point.encode() in child.stderr
    assert [i.wal_position for i in store.list()] == survivors
    store.cleanup_tmp()
    snap, broken = store.load_newest_valid()
    assert snap.header.wal_position == survivors[0] and broken == []
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_write_from_a_forked_child(tmp_path):
    store = SnapshotStore(tmp_path, retention=2)
    put(store, 10)
    pid = os.fork()
    if pid == 0:  # child: write, then leave without running the parent's cleanup
        code = 1
        try:
            put(store, 20, payload=b"from the child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    snap, broken = store.load_newest_valid()
    assert bytes(snap.sections[sf.KV]) == b"from the child" and broken == []


def test_missing_directory_is_created(tmp_path):
    store = SnapshotStore(tmp_path / "a" / "b")
    assert os.path.isdir(tmp_path / "a" / "b") and store.list() == []


@pytest.mark.parametrize("retention", [0, -1, 1.5, True])
def test_bad_retention(tmp_path, retention):
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path, retention=retention)


@pytest.mark.parametrize("field, value", [("wal_position", -1), ("created_at", -1), ("created_at", 10**20)])
def test_values_that_do_not_fit_the_name_are_refused(tmp_path, field, value):
    args = dict(wal_position=1, shard=0, counts={}, sections=[], created_at=1)
    args[field] = value
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path).write(**args)
    assert names(tmp_path) == []
