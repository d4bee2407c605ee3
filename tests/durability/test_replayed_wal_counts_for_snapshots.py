"""The WAL a store replays at open counts toward its next snapshot: a store that keeps
crashing before it writes `snapshot_wal_bytes` anew still snapshots, and a clean close
right after recovery leaves nothing to replay."""

from __future__ import annotations

import os
import subprocess
import sys

import inmem

OPTS = dict(durability="strict", snapshot_wal_bytes=2_000_000, snapshot_interval_s=None)
# Opens (recovering what is there), writes 1.5 MB (under the 2 MB trigger) and dies
# without closing; prints how many records its open replayed.
CHILD = r'''
import os, sys
import inmem
db = inmem.open(sys.argv[1], **%r)
print(db.recovery_report()[0].records_replayed, flush=True)
run = db.begin_run()
for i in range(1500):
    db.kv.put(run, f"k{i}", "x" * 1000)
os._exit(0)
''' % (OPTS,)


def _crash_cycle(path) -> int:
    """One cycle; the records its open replayed."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def test_a_store_that_keeps_crashing_still_snapshots(tmp_path):
    path = tmp_path / "store"
    replayed = [_crash_cycle(path) for _ in range(5)]
    assert os.listdir(path / "snapshots"), "no snapshot in five crash cycles"
    # Each open replays what the snapshots do not cover: without counting what
    # was replayed, that was every record so far (1501, 3002, 4503, 6004).
    assert replayed[0] == 0 and max(replayed) < 3002, replayed


def test_a_clean_close_after_recovery_snapshots_what_was_replayed(tmp_path):
    path = tmp_path / "store"
    _crash_cycle(path)
    db = inmem.open(path, **OPTS)
    assert db.recovery_report()[0].records_replayed == 1501
    db.close()  # nothing written since the open
    db = inmem.open(path, **OPTS)
    try:
        report = db.recovery_report()[0]
        assert report.snapshot_used is not None and report.records_replayed == 0
        assert len(db.kv.keys(db.runs.list()[0].run_id)) == 1500
    finally:
        db.close()
