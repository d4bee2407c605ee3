"""`inmem wal inspect` and `inmem snapshot verify` on a real store's files."""

from __future__ import annotations

from pathlib import Path

import inmem
from inmem.cli import main


def make_store(path: Path) -> None:
    with inmem.open(path, durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run(run_id="r")
        for i in range(50):
            db.kv.put(run, f"k{i}", i)
        db.snapshot()
        db.events.append(run, "after", {"i": 1})


def test_wal_inspect_takes_a_store_directory_or_its_wal(tmp_path, capsys):
    store = tmp_path / "store"
    make_store(store)
    assert main(["wal", "inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert "outcome: clean" in out and str(store / "wal") in out
    assert main(["wal", "inspect", str(store / "wal")]) == 0


def test_wal_inspect_reports_a_torn_tail(tmp_path, capsys):
    store = tmp_path / "store"
    make_store(store)
    segment = max((store / "wal").glob("*.wal"))
    data = segment.read_bytes().rstrip(b"\0")
    segment.write_bytes(data[:-3])  # cut into the last record
    assert main(["wal", "inspect", str(store)]) == 1
    assert "torn" in capsys.readouterr().out.lower()


def test_snapshot_verify_good_and_damaged(tmp_path, capsys):
    store = tmp_path / "store"
    make_store(store)
    (snap,) = (store / "snapshots").glob("*.snap")
    assert main(["snapshot", "verify", str(snap)]) == 0
    assert "result: valid" in capsys.readouterr().out
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    snap.write_bytes(bytes(raw))
    assert main(["snapshot", "verify", str(snap)]) == 2
