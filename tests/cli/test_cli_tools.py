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


def test_wal_inspect_json_always_prints_a_report(tmp_path, capsys):
    # With --json, a path that is a file, a FIFO or missing, and a cluster's data directory,
    # printed a line on stderr (the cluster's listing on stdout, as text) and no JSON, where
    # an empty directory got a JSON report: a script reading the JSON had none to read.
    import json
    import os
    (tmp_path / "file").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "cluster" / "shard-0" / "wal").mkdir(parents=True)
    cases = {"file": "not_a_directory", "fifo": "not_a_directory", "missing": "missing",
             "cluster": "cluster"}
    for name, kind in cases.items():
        assert main(["wal", "inspect", "--json", str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert report["verdict"] == "refused" and report["outcome"]["kind"] == kind, report
        assert report["directory"] == str(tmp_path / name)
        assert report["exists"] is (name != "missing")
    assert report["shards"] == [str(tmp_path / "cluster" / "shard-0" / "wal")]
