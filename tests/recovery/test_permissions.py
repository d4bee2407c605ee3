"""Everything a store writes is private to its owner: files 0600, directories 0700, any umask."""

from __future__ import annotations

import os

import pytest

import inmem
from inmem.coordinator.config import load
from inmem.coordinator.slotmap import SlotMap
from inmem.processes import exit_note_path, write_exit_note
from inmem.wal.segment import list_segments
from file_modes import modes_under


@pytest.fixture(params=[0o000, 0o022, 0o277], ids=["umask000", "umask022", "umask277"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)




def assert_private(root) -> None:
    wrong = {}
    for rel, mode in modes_under(root).items():
        want = 0o700 if os.path.isdir(os.path.join(root, rel)) else 0o600
        if mode != want:
            wrong[rel] = f"{mode:04o}, not {want:04o}"
    assert not wrong, f"not private under {root}: {wrong}"


@pytest.mark.parametrize("durability", ["strict", "buffered"])
def test_a_store_is_private_whatever_the_umask(tmp_path, umask, durability):
    root = tmp_path / "made"   # made by inmem, with its parent
    with inmem.open(root / "store", durability=durability) as db:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "secret", "value")
        assert db.snapshot()  # written by a forked child
    with inmem.open(root / "store", durability=durability) as db:
        db.kv.put("r", "more", 1)
    names = set(modes_under(root))
    assert {"store/LOCK", "store/wal", "store/snapshots"} <= names
    assert any(n.endswith(".snap") for n in names) and any(n.endswith(".wal") for n in names)
    assert_private(root)


def test_evidence_copies_are_private(tmp_path, umask):
    store = tmp_path / "store"
    with inmem.open(store, durability="buffered", snapshot_on_close=False) as db:
        db.kv.put(db.begin_run(), "k", 1)
    _, segment = list_segments(store / "wal")[-1]
    os.truncate(segment, os.path.getsize(segment) - 2)
    with inmem.open(store, durability="buffered", snapshot_on_close=False):
        pass
    assert os.path.exists(segment + ".broken.1")
    assert_private(store)


def test_an_existing_store_is_narrowed_when_opened(tmp_path):
    store = tmp_path / "store"
    with inmem.open(store, durability="buffered") as db:
        db.kv.put(db.begin_run(), "k", 1)
    # As an older release left it: readable by everyone.
    for rel in ("wal", "snapshots"):
        os.chmod(store / rel, 0o755)
    os.chmod(store / "LOCK", 0o644)
    with inmem.open(store, durability="buffered"):
        pass
    modes = modes_under(store)
    assert (modes["wal"], modes["snapshots"], modes["LOCK"]) == (0o700, 0o700, 0o600)


def test_slot_map_and_exit_notes_are_private(tmp_path, umask):
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o700)  # made by the test, not checked
    SlotMap.load_or_create(str(data), 2, False)
    spec = load(None, data_dir=str(data), shards=2)
    write_exit_note(spec["data_dir"], 1, inmem.InmemError("the reason"))
    assert os.path.exists(exit_note_path(spec["data_dir"], 1))
    assert_private(data)
