"""Preallocated (strict) segments stay bounded on disk: trimmed at roll, close and reopen.

Strict stores preallocate each segment to segment_bytes_max. These tests count
files and bytes: reopening a store many times must not add a segment (or a
preallocated 64 MiB) per open, a crash's zero tail is cut by the next open,
and a reader stops at such a tail without reading it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import inmem
import inmem.wal.reader as reader_mod
from inmem.processes import child_env
from inmem.wal.reader import CleanEnd, WalReader
from inmem.wal.segment import list_segments
from inmem.wal.writer import WalWriter
from walfix import payloads, rec, write_segment

MiB = 2**20


def wal_usage(wal) -> tuple[int, int]:
    """(segment count, total bytes of every file) of a WAL directory."""
    names = os.listdir(wal)
    return (len(list_segments(wal)),
            sum(os.path.getsize(os.path.join(wal, n)) for n in names))


def test_200_strict_open_close_cycles_keep_the_wal_small(tmp_path):
    store = tmp_path / "store"
    wal = store / "wal"
    cycles = 200
    for i in range(cycles):
        with inmem.open(store, durability="strict", snapshot_on_close=False) as db:
            if i == 0:
                db.begin_run(run_id="r")
            db.kv.put("r", f"k{i}", i)
        count, size = wal_usage(wal)
        # Checked every cycle, so an untrimmed 64 MiB segment fails at once.
        assert count <= 2 and size < 1 * MiB, (
            f"after {i + 1} open/close cycles the WAL holds {count} segments, {size} bytes")
    with inmem.open(store, durability="strict", snapshot_on_close=False) as db:
        assert [db.kv.get("r", f"k{i}") for i in range(cycles)] == list(range(cycles))
    assert wal_usage(wal)[0] == 1


def test_a_rolled_strict_segment_is_trimmed_to_its_records(tmp_path):
    # 30-byte payloads make 40-byte records: 25 fit in a 1000-byte segment.
    with WalWriter(tmp_path, "strict", segment_bytes_max=1000, preallocate=True) as w:
        for p in payloads(60, size=30):
            w.append(p)
        closed = list_segments(tmp_path)[:-1]
        assert [first for first, _ in closed] == [0, 25]
        assert [os.path.getsize(path) for _, path in closed] == [1000, 1000]
        newest = list_segments(tmp_path)[-1][1]
        assert os.path.getsize(newest) == 1000  # still preallocated while it is written
    assert os.path.getsize(newest) == 10 * 40  # trimmed at close


def test_a_rolled_segment_gives_back_its_preallocation(tmp_path):
    # A roll before the segment is full (a snapshot's roll) leaves only the records.
    with WalWriter(tmp_path, "strict", segment_bytes_max=MiB, preallocate=True) as w:
        w.append(b"a" * 30)
        w.roll()
        w.append(b"b" * 30)
        first = list_segments(tmp_path)[0][1]
        assert os.path.getsize(first) == 40
    assert wal_usage(tmp_path) == (2, 80)


def crash_after_writes(wal, n: int) -> None:
    """A strict writer that appends n records and dies without closing (a child process)."""
    code = textwrap.dedent(f"""
        import os
        from inmem.wal.writer import WalWriter
        w = WalWriter({str(wal)!r}, "strict", segment_bytes_max={8 * MiB}, preallocate=True)
        for i in range({n}):
            w.append(b"record %d" % i)
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=True, timeout=60)


@pytest.mark.slow
def test_the_open_after_a_crash_cuts_the_zero_tail(tmp_path):
    crash_after_writes(tmp_path, 5)
    (_, path), = list_segments(tmp_path)
    assert os.path.getsize(path) == 8 * MiB  # the preallocation a crash leaves
    with WalWriter(tmp_path, "strict", segment_bytes_max=8 * MiB, preallocate=False) as w:
        assert w.next_lsn == 5
    records = list(WalReader(tmp_path))
    assert [p for _, _, p in records] == [b"record %d" % i for i in range(5)]
    assert os.path.getsize(path) == sum(10 + len(p) for _, _, p in records)


@pytest.fixture
def bytes_read(monkeypatch):
    """Count the bytes the WAL reader loads from segment files."""
    loaded = []
    real_data = getattr(reader_mod, "read_data", None)
    real_file = reader_mod.read_file

    def counting_data(path):
        data, size = real_data(path)
        loaded.append(len(data))
        return data, size

    def counting_file(path):
        data = real_file(path)
        loaded.append(len(data))
        return data
    if real_data is not None:
        monkeypatch.setattr(reader_mod, "read_data", counting_data)
    monkeypatch.setattr(reader_mod, "read_file", counting_file)
    return loaded


def test_reader_stops_at_a_zero_tail_without_reading_it(tmp_path, bytes_read):
    head = b"".join(rec(p) for p in payloads(3))
    path = write_segment(tmp_path, 0, head)
    # The unwritten rest of a preallocated segment: a hole, which reads as zeros.
    os.truncate(path, 64 * MiB)
    reader = WalReader(tmp_path)
    assert [p for _, _, p in reader] == payloads(3)
    assert reader.outcome == CleanEnd() and reader.next_lsn == 3
    assert sum(bytes_read) < MiB, bytes_read
    assert reader.end_offset == len(head)


def test_damage_before_a_zero_tail_is_still_classified_on_the_whole_file(tmp_path, bytes_read):
    # A torn record in front of the hole: the report is the same as without the hole.
    head = rec(b"ok") + rec(b"partial record")[:9]
    path = write_segment(tmp_path, 0, head)
    os.truncate(path, 4 * MiB)
    reader = WalReader(tmp_path)
    assert [p for _, _, p in reader] == [b"ok"]
    assert reader.outcome.kind == "torn_tail"
    assert (reader.outcome.offset, reader.outcome.bytes_left) == (12, 4 * MiB - 12)
    # A valid record after zeros is still corruption, hole or not.
    path = write_segment(tmp_path, 0, rec(b"a") + bytes(100) + rec(b"b"))
    os.truncate(path, 4 * MiB)
    reader = WalReader(tmp_path)
    assert [p for _, _, p in reader] == [b"a"]
    assert reader.outcome.kind == "corruption" and "zero-filled" in reader.outcome.reason


def test_too_little_room_to_preallocate_is_no_reason_not_to_open(tmp_path, monkeypatch,
                                                                  caplog):
    # A disk with less free space than a whole segment (64 MiB by default): the
    # store opens, serves and writes as the space allows, without a reserve.
    import errno

    import inmem.wal.writer as writer_mod

    def full(fd, offset, length):
        os.ftruncate(fd, offset + length // 3)  # what a partial reservation may leave
        raise OSError(errno.ENOSPC, "No space left on device")
    path = tmp_path / "store"
    db = inmem.open(path, durability="strict")
    run = db.begin_run(run_id="r")
    db.kv.put(run, "before", 1)
    db.close()
    monkeypatch.setattr(writer_mod.os, "posix_fallocate", full)
    with caplog.at_level("WARNING", logger="inmem.wal"):
        db = inmem.open(path, durability="strict")
    try:
        assert db.kv.get(run, "before") == 1
        for i in range(100):
            db.kv.put(run, f"k{i}", i)
    finally:
        db.close()
    assert "without preallocation" in caplog.text
    monkeypatch.undo()
    db = inmem.open(path, durability="strict")
    try:
        assert db.kv.get(run, "k99") == 99 and db.kv.get(run, "before") == 1
        report = db.recovery_report()[0]
        assert report.corrupt_records_skipped == 0 and report.tail_truncated_bytes == 0
    finally:
        db.close()
