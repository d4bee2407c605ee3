"""The WAL writer: segments, reopening, both modes, group commit, fail-stop, short writes."""

from __future__ import annotations

import errno
import logging
import os
import threading

import pytest

import inmem.wal.record as record_mod
import inmem.wal.writer as writer_mod
from inmem.wal.errors import (RecordTooLarge, WalClosed, WalError, WalFailed,
                        WalNeedsRecovery)
from inmem.wal.reader import CleanEnd, TornTail
from inmem.wal.segment import list_segments
from inmem.wal.writer import WalWriter
from polling import wait_for
from walfix import payloads, read_back, rec, seg_name, write_segment


def seg_firsts(directory):
    return [lsn for lsn, _ in list_segments(directory)]


def disk_payloads(directory):
    records, reader = read_back(directory)
    assert isinstance(reader.outcome, CleanEnd), reader.outcome
    assert [lsn for lsn, _, _ in records] == list(range(reader.first_lsn or 0,
                                                        reader.next_lsn))
    return [p for _, _, p in records]


@pytest.fixture
def fsync_calls(monkeypatch):
    """Count every fsync the writer makes (files and directories)."""
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        real(fd)
    monkeypatch.setattr(writer_mod, "_os_fsync", counting)
    return calls


def test_strict_append_is_durable_and_readable(tmp_path):
    ps = payloads(20)
    with WalWriter(tmp_path, "strict") as w:
        for i, p in enumerate(ps):
            assert w.append(p) == i
            assert w.durable_lsn == i + 1
        assert w.next_lsn == 20 and w.pending_records == 0
    assert disk_payloads(tmp_path) == ps
    assert seg_firsts(tmp_path) == [0]


def test_new_directory_is_created(tmp_path):
    target = tmp_path / "shard" / "wal"
    with WalWriter(target, "strict") as w:
        w.append(b"x")
    assert disk_payloads(target) == [b"x"]
    assert os.listdir(target) == [seg_name(0)]


def test_segment_roll_and_naming(tmp_path):
    # 30-byte payloads make 40-byte records: two fit in a 100-byte segment.
    ps = payloads(7, size=30)
    with WalWriter(tmp_path, "strict", segment_bytes_max=100) as w:
        for p in ps:
            w.append(p)
        assert w.segment_first_lsn == 6
    assert seg_firsts(tmp_path) == [0, 2, 4, 6]
    for first, path in list_segments(tmp_path):
        assert os.path.basename(path) == "%020d.wal" % first
        assert os.path.getsize(path) <= 100
    assert disk_payloads(tmp_path) == ps


def test_record_larger_than_a_segment_gets_its_own(tmp_path):
    with WalWriter(tmp_path, "strict", segment_bytes_max=50) as w:
        w.append(b"a")
        w.append(b"B" * 200)
        w.append(b"c")
    assert seg_firsts(tmp_path) == [0, 1, 2]
    assert disk_payloads(tmp_path) == [b"a", b"B" * 200, b"c"]


def test_buffered_batch_spanning_rolls_lands_in_the_right_segments(tmp_path):
    ps = payloads(25, size=30)
    with WalWriter(tmp_path, "buffered", segment_bytes_max=130,
                   flush_interval_ms=60_000, max_pending_writes=10**6) as w:
        for p in ps:
            w.append_nowait(p)
        assert w.sync() == 25
    assert seg_firsts(tmp_path) == list(range(0, 25, 3))
    assert disk_payloads(tmp_path) == ps


def test_roll_forces_a_new_segment(tmp_path):
    with WalWriter(tmp_path, "strict") as w:
        w.append(b"a")
        w.append(b"b")
        assert w.roll() == 2
        assert seg_firsts(tmp_path) == [0, 2]
        assert w.roll() == 2  # the new segment is still empty: nothing to roll
        assert seg_firsts(tmp_path) == [0, 2]
        w.append(b"c")
    assert disk_payloads(tmp_path) == [b"a", b"b", b"c"]


def test_roll_writes_pending_records_first(tmp_path):
    with WalWriter(tmp_path, "buffered", flush_interval_ms=60_000) as w:
        w.append(b"a")
        w.append(b"b")
        assert w.roll() == 2
        assert w.durable_lsn == 2
        w.append(b"c")
    assert seg_firsts(tmp_path) == [0, 2]
    assert disk_payloads(tmp_path) == [b"a", b"b", b"c"]


def test_delete_before(tmp_path, fsync_calls):
    with WalWriter(tmp_path, "strict", segment_bytes_max=100) as w:
        for p in payloads(9, size=30):
            w.append(p)
        assert seg_firsts(tmp_path) == [0, 2, 4, 6, 8]
        assert w.delete_before(0) == []
        assert w.delete_before(3) == [str(tmp_path / seg_name(0))]
        before = len(fsync_calls)
        deleted = w.delete_before(6)
        assert deleted == [str(tmp_path / seg_name(2)), str(tmp_path / seg_name(4))]
        assert len(fsync_calls) == before + 1  # the directory
        assert seg_firsts(tmp_path) == [6, 8]
        # Never the segment being written, however far the bound.
        assert w.delete_before(10**9) == [str(tmp_path / seg_name(6))]
        assert seg_firsts(tmp_path) == [8]
        w.append(b"after")
    records, reader = read_back(tmp_path)
    assert [lsn for lsn, _, _ in records] == [8, 9]
    assert reader.outcome == CleanEnd()


def test_reopen_continues_lsns_in_the_newest_segment(tmp_path):
    with WalWriter(tmp_path, "strict") as w:
        for p in payloads(5):
            w.append(p)
    with WalWriter.open(tmp_path, "buffered") as w:
        assert w.next_lsn == w.durable_lsn == 5
        assert w.append(b"more") == 5
    # The newest segment ended cleanly with room left: reopening adds no file.
    assert seg_firsts(tmp_path) == [0]
    assert disk_payloads(tmp_path) == payloads(5) + [b"more"]
    with WalWriter(tmp_path, "strict") as w:  # start_lsn=None is the same as open()
        assert w.next_lsn == 6


def test_reopen_starts_a_new_segment_when_the_newest_is_full(tmp_path):
    # 30-byte payloads make 40-byte records: two fill an 80-byte segment.
    with WalWriter(tmp_path, "strict", segment_bytes_max=80) as w:
        for p in payloads(2, size=30):
            w.append(p)
    with WalWriter(tmp_path, "strict", segment_bytes_max=80) as w:
        assert w.append(b"next") == 2
    assert seg_firsts(tmp_path) == [0, 2]
    assert disk_payloads(tmp_path) == payloads(2, size=30) + [b"next"]


def test_reopen_reuses_an_empty_newest_segment(tmp_path):
    with WalWriter(tmp_path, "strict") as w:
        w.append(b"a")
        w.roll()
    assert seg_firsts(tmp_path) == [0, 1]
    # A zero-filled newest segment holds no record either: it is emptied and reused.
    (tmp_path / seg_name(1)).write_bytes(bytes(64))
    with WalWriter.open(tmp_path, "strict") as w:
        assert w.next_lsn == 1
        w.append(b"b")
    assert seg_firsts(tmp_path) == [0, 1]
    assert disk_payloads(tmp_path) == [b"a", b"b"]


def test_open_refuses_a_log_that_needs_recovery(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"torn")[:5])
    with pytest.raises(WalNeedsRecovery) as info:
        WalWriter.open(tmp_path, "strict")
    assert "recovery" in str(info.value)
    records, reader = read_back(tmp_path)
    assert isinstance(reader.outcome, TornTail)  # nothing was touched


def test_explicit_start_lsn(tmp_path):
    with WalWriter(tmp_path, "strict", start_lsn=1000) as w:
        assert w.append(b"x") == 1000
    assert seg_firsts(tmp_path) == [1000]
    with pytest.raises(WalError):
        WalWriter(tmp_path, "strict", start_lsn=10)
    with WalWriter(tmp_path, "strict", start_lsn=1001) as w:
        assert w.append(b"y") == 1001
    assert disk_payloads(tmp_path) == [b"x", b"y"]
    write_segment(tmp_path, 2000, rec(b"z"))
    with pytest.raises(WalNeedsRecovery):
        WalWriter(tmp_path, "strict", start_lsn=2000)


def test_temp_files_are_cleaned_on_open(tmp_path):
    (tmp_path / (seg_name(3) + ".tmp")).write_bytes(b"half")
    (tmp_path / (seg_name(1) + ".broken")).write_bytes(b"evidence")
    with WalWriter(tmp_path, "strict"):
        pass
    assert sorted(os.listdir(tmp_path)) == [seg_name(0), seg_name(1) + ".broken"]


def test_argument_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(record_mod, "RECORD_BYTES_MAX", 100)
    with pytest.raises(ValueError):
        WalWriter(tmp_path, "inmemory")
    with pytest.raises(ValueError):
        WalWriter(tmp_path, "strict", max_pending_writes=0)
    with WalWriter(tmp_path, "strict") as w:
        with pytest.raises(RecordTooLarge):
            w.append(bytearray(101))
        with pytest.raises(TypeError):
            w.append("not bytes")
        with pytest.raises(ValueError):
            w.append(b"x", rtype=0)
        assert w.append(b"ok") == 0  # rejected records took no LSN
    assert disk_payloads(tmp_path) == [b"ok"]


def test_close_is_idempotent_and_final(tmp_path):
    w = WalWriter(tmp_path, "buffered", flush_interval_ms=60_000)
    w.append(b"a")
    w.close()
    w.close()
    assert w.closed and w.durable_lsn == 1
    with pytest.raises(WalClosed):
        w.append(b"b")
    with pytest.raises(WalClosed):
        w.sync()
    with pytest.raises(WalClosed):
        w.roll()
    assert disk_payloads(tmp_path) == [b"a"]


# -- group commit ----------------------------------------------------------------

def test_strict_group_commit_with_8_threads(tmp_path, monkeypatch):
    threads_n, per_thread = 8, 25
    w = WalWriter(tmp_path, "strict")
    calls = []
    gate = threading.Event()
    real = os.fsync

    def gated_fsync(fd):
        calls.append(fd)
        if len(calls) == 1:
            # Hold the first leader inside its fsync until every other thread
            # has appended and is waiting: their records must share one fsync.
            gate.wait(timeout=30)
        real(fd)
    monkeypatch.setattr(writer_mod, "_os_fsync", gated_fsync)

    results: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(threads_n)}
    errors = []

    def worker(t):
        try:
            for j in range(per_thread):
                payload = b"t%d-%d" % (t, j)
                lsn = w.append(payload)
                if w.durable_lsn <= lsn:
                    errors.append(f"lsn {lsn} returned before durable ({w.durable_lsn})")
                results[t].append((lsn, payload))
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    wait_for(lambda: w.next_lsn >= threads_n, what="one record from every thread")
    gate.set()
    for t in threads:
        t.join(timeout=60)
    w.close()
    assert errors == []
    total = threads_n * per_thread
    by_lsn = dict(lsn_payload for recs in results.values() for lsn_payload in recs)
    assert sorted(by_lsn) == list(range(total))
    assert len(calls) < total
    assert len(calls) <= total - (threads_n - 2)  # the gated batch alone saved 6
    records, reader = read_back(tmp_path)
    assert {lsn: p for lsn, _, p in records} == by_lsn
    assert reader.outcome == CleanEnd()


def test_append_nowait_then_sync_is_one_fsync(tmp_path, fsync_calls):
    w = WalWriter(tmp_path, "strict")
    before = len(fsync_calls)
    lsns = [w.append_nowait(p) for p in payloads(50)]
    assert lsns == list(range(50)) and w.durable_lsn == 0 and w.pending_records == 50
    assert w.sync() == 50
    assert len(fsync_calls) == before + 1
    assert w.sync() == 50 and len(fsync_calls) == before + 1  # nothing pending: no fsync
    w.close()
    assert disk_payloads(tmp_path) == payloads(50)


# -- buffered mode -----------------------------------------------------------------

def test_buffered_flushes_by_interval(tmp_path):
    w = WalWriter(tmp_path, "buffered", flush_interval_ms=10, max_pending_writes=10**6)
    for p in payloads(3):
        w.append(p)
    wait_for(lambda: w.durable_lsn == 3, what="the interval flush")
    assert disk_payloads(tmp_path) == payloads(3)  # on disk while the writer is open
    w.close()


def test_buffered_flushes_when_max_pending_writes_is_reached(tmp_path):
    # An interval of an hour: only the pending-count trigger can flush in time.
    w = WalWriter(tmp_path, "buffered", flush_interval_ms=3_600_000, max_pending_writes=5)
    for p in payloads(5):
        w.append(p)
    wait_for(lambda: w.durable_lsn == 5, what="the max_pending_writes flush")
    assert disk_payloads(tmp_path) == payloads(5)
    w.close()


# -- failures ------------------------------------------------------------------------

def eio(fd, *args):
    raise OSError(errno.EIO, "injected I/O error")


def test_fsync_error_is_fail_stop_in_strict_mode(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "strict")
    w.append(b"durable")
    monkeypatch.setattr(writer_mod, "_os_fsync", eio)
    with pytest.raises(WalFailed) as info:
        w.append(b"lost")
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.EIO
    assert w.failed and w.error is cause
    assert w.durable_lsn == 1 and w.pending_records == 1 and w.pending_bytes == 14
    monkeypatch.setattr(writer_mod, "_os_fsync", os.fsync)  # the disk "recovers": no matter
    for call in (lambda: w.append(b"x"), lambda: w.append_nowait(b"x"), w.sync, w.flush,
                 w.roll, lambda: w.delete_before(5)):
        with pytest.raises(WalFailed) as again:
            call()
        assert again.value.__cause__ is cause
    assert w.durable_lsn == 1
    w.close()  # releases the file without raising
    w.close()


def test_fsync_error_fails_waiting_group_members(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "strict")
    entered = threading.Event()
    release = threading.Event()

    def failing(fd):
        entered.set()
        release.wait(timeout=30)
        raise OSError(errno.EIO, "injected")
    monkeypatch.setattr(writer_mod, "_os_fsync", failing)
    outcomes = []

    def worker(payload):
        try:
            w.append(payload)
            outcomes.append("acknowledged")
        except WalFailed:
            outcomes.append("failed")
    threads = [threading.Thread(target=worker, args=(b"%d" % i,)) for i in range(4)]
    for t in threads:
        t.start()
    assert entered.wait(timeout=30)
    wait_for(lambda: w.next_lsn == 4, what="all appends")
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert outcomes == ["failed"] * 4
    w.close()


def test_fsync_error_is_fail_stop_in_buffered_mode(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "buffered", flush_interval_ms=5)
    w.append(b"a")
    wait_for(lambda: w.durable_lsn == 1, what="first flush")
    monkeypatch.setattr(writer_mod, "_os_fsync", eio)
    w.append(b"b")
    w.append(b"c")
    wait_for(lambda: w.failed, what="the flusher to record the error")
    assert isinstance(w.error, OSError) and w.error.errno == errno.EIO
    assert w.pending_records == 2 and w.durable_lsn == 1
    assert w.pending_bytes == 2 * 11  # the buffer is kept, not dropped
    with pytest.raises(WalFailed) as info:
        w.append(b"d")
    assert info.value.__cause__ is w.error
    with pytest.raises(WalFailed):
        w.sync()
    w.close()


def test_write_error_truncates_the_partial_write(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "strict")
    w.append(b"first")
    size_before = os.path.getsize(tmp_path / seg_name(0))

    def half_then_fail(fd, data):
        if not getattr(half_then_fail, "wrote", False):
            half_then_fail.wrote = True
            return os.write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "injected: no space")
    monkeypatch.setattr(writer_mod, "_os_write", half_then_fail)
    with pytest.raises(WalFailed) as info:
        w.append(b"second record")
    assert info.value.__cause__.errno == errno.ENOSPC
    assert os.path.getsize(tmp_path / seg_name(0)) == size_before
    w.close()
    assert disk_payloads(tmp_path) == [b"first"]


def test_short_writes_still_produce_a_readable_log(tmp_path, monkeypatch):
    sizes = []

    def short_write(fd, data):
        n = os.write(fd, bytes(data[:7]))
        sizes.append(n)
        return n
    monkeypatch.setattr(writer_mod, "_os_write", short_write)
    ps = payloads(40, size=33)
    with WalWriter(tmp_path, "buffered", segment_bytes_max=300,
                   flush_interval_ms=60_000) as w:
        for p in ps[:20]:
            w.append_nowait(p)
        w.sync()
        for p in ps[20:]:
            w.append(p)
    assert max(sizes) == 7 and len(sizes) > 100
    assert disk_payloads(tmp_path) == ps


def test_a_write_that_makes_no_progress_is_an_error(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "strict")
    monkeypatch.setattr(writer_mod, "_os_write", lambda fd, data: 0)
    with pytest.raises(WalFailed):
        w.append(b"x")
    w.close()


def test_slow_fsync_is_logged(tmp_path, monkeypatch, caplog):
    w = WalWriter(tmp_path, "strict", fsync_slow_ms=-1)  # every fsync counts as slow
    with caplog.at_level(logging.WARNING, logger="inmem.wal"):
        w.append(b"x")
    w.close()
    assert any("slow WAL fsync" in r.getMessage() and r.name == "inmem.wal"
               for r in caplog.records)
