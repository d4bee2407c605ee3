"""Byte-level damage to a real store's files, recovered through `inmem.open`.

Each test builds a store with the crash workload, damages its files by hand
(records are located with the documented record layout, parsed here with
struct, not with the project's reader) and opens it as an application would:
torn tails cut at every offset of the last record, flipped bits in a record,
in a snapshot header and in a snapshot section, a missing segment, empty and
zero-filled segments, an empty snapshot file.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

import inmem

from . import harness, workload

OPTIONS = {"segment_bytes_max": 4096, "snapshot_on_close": False}
RECORD_HEADER = struct.Struct("<IBB")  # length u32, type u8, version u8
CRC_BYTES = 4


def build(directory, ops: int, snapshot_at=(), mode="strict", **options) -> None:
    """A store holding lane 0's first `ops` ops; db.snapshot() after each count in snapshot_at."""
    with inmem.open(directory, durability=mode, **{**OPTIONS, **options}) as db:
        run = workload.begin(db, 0)
        for i in range(ops):
            workload.apply_op(db, run, i)
            if i + 1 in snapshot_at:
                db.snapshot()


def segments(directory) -> list[Path]:
    return sorted(Path(directory, "wal").glob("*.wal"))


def snapshots(directory) -> list[Path]:
    return sorted(Path(directory, "snapshots").glob("*.snap"))


def records(path) -> list[tuple[int, int]]:
    """(offset, size) of every record in a segment, walking the length fields."""
    data = Path(path).read_bytes()
    out, off = [], 0
    while off + RECORD_HEADER.size + CRC_BYTES <= len(data):
        length, rtype, _version = RECORD_HEADER.unpack_from(data, off)
        if rtype == 0:
            break
        size = RECORD_HEADER.size + length + CRC_BYTES
        out.append((off, size))
        off += size
    # Strict mode preallocates segments: after the last record comes zero fill.
    assert data.count(0, off) == len(data) - off, f"{path} does not end on a record boundary"
    return out


def flip_bit(path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def reopen_state(directory, mode="strict", **options):
    """Open, return (recovered ops of lane 0, report, chain check); close."""
    with inmem.open(directory, durability=mode, **{**OPTIONS, **options}) as db:
        n = workload.recovered_ops(db, 0)
        check = db.events.verify_chain(workload.lane_run(0))
        (report,) = db.recovery_report()
    return n, report, check


def writes_and_reopens(directory, n: int) -> None:
    """The repaired store takes writes and comes back with all of them."""
    with inmem.open(directory, durability="strict", **OPTIONS) as db:
        run = workload.lane_run(0)
        for i in range(n, n + 8):
            workload.apply_op(db, run, i)
    n2, report, check = reopen_state(directory)
    assert n2 == n + 8 and check.valid
    assert report.tail_truncated_bytes == 0 and report.corrupt_records_skipped == 0


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One WAL-only store of 203 ops over several segments, its last op a transaction."""
    directory = tmp_path_factory.mktemp("pristine") / "data"
    build(directory, 203)  # op 202 is a transaction (202 % 4 == 2)
    assert len(segments(directory)) >= 3, "the fixture needs several segments"
    return directory


def copy_of(pristine, tmp_path, name="data") -> Path:
    target = tmp_path / name
    shutil.copytree(pristine, target)
    lock = target / "LOCK"
    if lock.exists():
        lock.unlink()
    return target


# -- the WAL -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_torn_tail_at_every_offset_of_the_last_record(pristine, tmp_path):
    newest = segments(pristine)[-1]
    start, size = records(newest)[-1]
    original = newest.read_bytes()
    full, _, _ = reopen_state(copy_of(pristine, tmp_path, "full"))
    assert full == 203
    baseline = None
    for cut in range(start, start + size):
        work = copy_of(pristine, tmp_path, f"cut{cut}")
        segment = work / "wal" / newest.name
        with open(segment, "r+b") as f:
            f.truncate(cut)
        n, report, check = reopen_state(work)
        torn = cut - start
        if baseline is None:
            baseline = n
            assert baseline < full, "without its last record the store must lose its last op"
        assert n == baseline, f"cut at {cut}: {n} ops recovered, {baseline} before the last record"
        assert check.valid
        assert report.tail_truncated_bytes == torn, (cut, report)
        broken = work / "wal" / (newest.name + ".broken.1")
        if torn:
            assert broken.read_bytes() == original[:cut], "the .broken.1 copy keeps the damaged file"
            assert segment.stat().st_size == start
        else:
            assert not broken.exists()
        shutil.rmtree(work)
    assert baseline == full - 1  # strict: one record per op; the last op is the lost one


@pytest.mark.timeout(30)
def test_flipped_bit_mid_log_is_corruption(pristine, tmp_path):
    work = copy_of(pristine, tmp_path)
    victim = segments(work)[1]
    offset, size = records(victim)[len(records(victim)) // 2]
    flip_bit(victim, offset + RECORD_HEADER.size + 1)  # a payload byte: the crc fails
    with pytest.raises(inmem.CorruptionError) as info:
        inmem.open(work, durability="strict", **OPTIONS)
    err = info.value
    assert os.path.samefile(err.path, victim) and err.offset == offset, (err.path, err.offset)
    assert str(victim) in str(err) and str(offset) in str(err)
    # Recovery refused and changed nothing: the store still fails the same way.
    assert not list((work / "wal").glob("*.broken*"))
    with pytest.raises(inmem.CorruptionError):
        inmem.open(work, durability="strict", **OPTIONS)


def _event_record(directory) -> tuple[Path, int, int]:
    """A record in the middle of the second segment that holds one event append.

    Strict mode writes one record per op and LSN 0 is the run's creation, so
    the record with LSN L holds op L - 1; the segment name is its first LSN.
    """
    victim = segments(directory)[1]
    first = int(victim.name[:-4])
    recs = records(victim)
    for j in range(len(recs) // 2, len(recs)):
        op = first + j - 1
        if op % workload.KINDS == 1:
            return victim, recs[j][0], op
    raise AssertionError("no event record in the second segment")


@pytest.mark.timeout(30)
def test_flipped_bit_with_a_skip_budget_opens_and_counts(pristine, tmp_path):
    work = copy_of(pristine, tmp_path)
    victim, offset, op = _event_record(work)
    flip_bit(victim, offset + RECORD_HEADER.size + 2, bit=3)
    with inmem.open(work, durability="strict", max_corrupt_entries=1, **OPTIONS) as db:
        (report,) = db.recovery_report()
        assert report.corrupt_records_skipped == 1, report
        assert report.tail_truncated_bytes == 0
        run = workload.lane_run(0)
        got = workload.observe(db, run)
        want = workload.expected(203)
        # The skipped record was one event append: exactly that event is gone,
        # every other op (before and after it) is there.
        assert got["events"] == [i for i in want["events"] if i != op], (op, got["events"])
        assert {k: v for k, v in got.items() if k != "events"} == \
               {k: v for k, v in want.items() if k != "events"}
        # What skipping costs (recovery.policy): the chain now has a hole, and says so.
        assert not db.events.verify_chain(run).valid
        db.kv.put(run, "after", 1)  # the store serves writes
    with pytest.raises(inmem.CorruptionError):
        inmem.open(work, durability="strict", **OPTIONS)  # a zero budget still refuses


@pytest.mark.timeout(30)
@pytest.mark.parametrize("which", ["first", "middle"])
def test_missing_segment_is_corruption(pristine, tmp_path, which):
    work = copy_of(pristine, tmp_path)
    segs = segments(work)
    (segs[0] if which == "first" else segs[1]).unlink()
    with pytest.raises(inmem.CorruptionError) as info:
        inmem.open(work, durability="strict", **OPTIONS)
    assert str(work / "wal") in str(info.value)
    # A missing segment is not a damaged record: the budget for those cannot
    # help, so the error must not send the operator to raise it.
    for budget in (0, 1000):
        with pytest.raises(inmem.CorruptionError) as info:
            inmem.open(work, durability="strict", **{**OPTIONS, "max_corrupt_entries": budget})
        message = str(info.value)
        assert "raise max_corrupt_entries" not in message, message
        assert "backup" in message, message
        if which == "middle":  # (the first one missing is a gap before everything)
            assert "max_corrupt_entries does not skip" in message, message
            assert info.value.skippable is False


@pytest.mark.timeout(30)
def test_a_damaged_record_over_the_budget_says_the_budget_would_skip_it(pristine, tmp_path):
    work = copy_of(pristine, tmp_path)
    victim = segments(work)[1]
    data = bytearray(victim.read_bytes())
    data[20] ^= 0xFF  # inside the first record; valid ones follow it
    victim.write_bytes(bytes(data))
    with pytest.raises(inmem.CorruptionError) as info:
        inmem.open(work, durability="strict", **OPTIONS)
    assert "raise max_corrupt_entries" in str(info.value)
    assert info.value.skippable is True


@pytest.mark.timeout(30)
def test_middle_segment_of_zeros_is_corruption(pristine, tmp_path):
    work = copy_of(pristine, tmp_path)
    victim = segments(work)[1]
    victim.write_bytes(bytes(victim.stat().st_size))
    with pytest.raises(inmem.CorruptionError):
        inmem.open(work, durability="strict", **OPTIONS)


def _ops_before(directory, segment: Path) -> int:
    """Ops held by the segments before `segment` (strict: LSN L is op L - 1)."""
    return int(segment.name[:-4]) - 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("damage", ["empty", "zeros"])
def test_newest_segment_empty_or_zeroed(pristine, tmp_path, damage):
    """A newest segment with no record in it (truncated to nothing, or zero-filled as a
    preallocated file would be) is a clean end: what the older segments hold is recovered."""
    work = copy_of(pristine, tmp_path)
    newest = segments(work)[-1]
    newest.write_bytes(b"" if damage == "empty" else bytes(newest.stat().st_size))
    n, report, check = reopen_state(work)
    assert n == _ops_before(work, newest) and check.valid
    assert report.tail_truncated_bytes == 0 and report.corrupt_records_skipped == 0
    writes_and_reopens(work, n)


@pytest.mark.timeout(30)
def test_empty_segment_after_a_roll(pristine, tmp_path):
    """A crash right after a roll leaves an empty segment named by the next LSN."""
    work = copy_of(pristine, tmp_path)
    newest = segments(work)[-1]
    next_lsn = int(newest.name[:-4]) + len(records(newest))
    (work / "wal" / f"{next_lsn:020d}.wal").write_bytes(b"")
    n, report, check = reopen_state(work)
    assert n == 203 and check.valid and report.tail_truncated_bytes == 0
    writes_and_reopens(work, n)


@pytest.mark.timeout(30)
def test_zero_fill_after_the_last_record(pristine, tmp_path):
    work = copy_of(pristine, tmp_path)
    newest = segments(work)[-1]
    with open(newest, "ab") as f:
        f.write(bytes(1000))
    n, report, check = reopen_state(work)
    assert n == 203 and check.valid
    assert report.tail_truncated_bytes == 0 and not list((work / "wal").glob("*.broken*"))
    writes_and_reopens(work, n)


# -- snapshots -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_snapshots(tmp_path_factory):
    """Snapshots after 100 and 200 ops, then 50 more ops in the WAL only."""
    directory = tmp_path_factory.mktemp("snaps") / "data"
    build(directory, 250, snapshot_at=(100, 200))
    snaps = snapshots(directory)
    assert len(snaps) == 2
    return directory


def _first_section_body(path) -> tuple[int, int]:
    """(offset, length) of the first non-empty section body of a snapshot file."""
    data = Path(path).read_bytes()
    counts_length = struct.unpack_from("<I", data, 36)[0]
    off = 40 + counts_length
    while off + 9 <= len(data) - 4:
        _type, length = struct.unpack_from("<BQ", data, off)
        if length:
            return off + 9, length
        off += 9
    raise AssertionError(f"{path} has no non-empty section")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("damage", ["header", "section", "empty"])
def test_damaged_newest_snapshot_falls_back(two_snapshots, tmp_path, damage):
    work = copy_of(two_snapshots, tmp_path)
    older, newest = snapshots(work)
    if damage == "header":
        flip_bit(newest, 12)  # created_at: the crc32c trailer no longer matches
    elif damage == "section":
        body, length = _first_section_body(newest)
        flip_bit(newest, body + length // 2, bit=5)
    else:
        newest.write_bytes(b"")
    n, report, check = reopen_state(work)
    assert n == 250 and check.valid, "falling back must lose nothing: the WAL covers the gap"
    assert report.snapshot_used == str(older.resolve()), report
    assert report.records_replayed > 0
    assert not newest.exists()
    assert Path(str(newest) + ".broken.1").exists()
    writes_and_reopens(work, n)


@pytest.mark.timeout(30)
def test_every_snapshot_damaged_and_wal_truncated_is_corruption(two_snapshots, tmp_path):
    """With both snapshots unusable, the WAL no longer starts at 0: a clear error, not an
    invented state."""
    work = copy_of(two_snapshots, tmp_path)
    for snap in snapshots(work):
        snap.write_bytes(b"")
    assert int(segments(work)[0].name[:-4]) > 0
    with pytest.raises(inmem.CorruptionError):
        inmem.open(work, durability="strict", **OPTIONS)


@pytest.mark.timeout(30)
def test_buffered_store_torn_tail_recovers_prefix(tmp_path):
    """The same repair in buffered mode, whose records batch many ops."""
    directory = tmp_path / "data"
    build(directory, 120, mode="buffered", max_pending_writes=16)
    assert len(records(segments(directory)[-1])) > 1
    newest = segments(directory)[-1]
    start, size = records(newest)[-1]
    with open(newest, "r+b") as f:
        f.truncate(start + size // 2)
    with inmem.open(directory, durability="buffered", **OPTIONS) as db:
        n = workload.recovered_ops(db, 0)
        (report,) = db.recovery_report()
        assert n is not None and n < 120
        assert report.tail_truncated_bytes == size // 2, report
        assert (directory / "wal" / (newest.name + ".broken.1")).exists()
        assert harness.check_chain(db, workload.lane_run(0)) == len(workload.expected(n)["events"])
