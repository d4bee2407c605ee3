"""A buffered owner's flush that does not wait for the disk: write now, fsync on a thread.

`WalWriter.flush_in_background` writes every pending record before it
returns (a crash of the process then loses none of them) and leaves the
fsync to the writer's syncer thread, which advances the durable LSN after
it. These tests hold it to that: the file holds the records at once, the
durable LSN follows, a failed fsync fails the writer, calls made during an
fsync leave one more fsync rather than a queue, and close() leaves it all
durable with the thread gone.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

import inmem.wal.writer as writer_mod
from inmem.wal.errors import WalClosed, WalFailed
from inmem.wal.writer import WalWriter
from polling import wait_for
from walfix import payloads, read_back


def _on_disk(directory) -> list:
    records, _reader = read_back(directory)
    return [p for _, _, p in records]


def test_records_are_in_the_file_when_it_returns_and_durable_after(tmp_path):
    ps = payloads(30)
    w = WalWriter(tmp_path, "buffered", flusher=False)
    try:
        for p in ps:
            w.append_nowait(p)
        w.flush_in_background()
        assert _on_disk(tmp_path) == ps
        wait_for(lambda: w.durable_lsn == 30, what="the background fsync")
        assert w.pending_records == 0 and w.pending_bytes == 0
    finally:
        w.close()
    assert _on_disk(tmp_path) == ps


def test_a_failed_background_fsync_fails_the_writer(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "buffered", flusher=False)
    try:
        w.append_nowait(b"before")
        w.flush_in_background()
        wait_for(lambda: w.durable_lsn == 1, what="the first fsync")

        def eio(fd):
            raise OSError(errno.EIO, "injected fsync failure")

        monkeypatch.setattr(writer_mod, "_os_fsync", eio)
        w.append_nowait(b"lost")
        w.flush_in_background()
        wait_for(lambda: w.failed, what="the writer to fail")
        assert w.durable_lsn == 1
        with pytest.raises(WalFailed):
            w.append_nowait(b"refused")
        with pytest.raises(WalFailed):
            w.flush_in_background()
    finally:
        monkeypatch.setattr(writer_mod, "_os_fsync", os.fsync)
        w.close()


class SyncerGate:
    """The syncer thread's fsyncs wait until `release` is set; other threads' go at once."""

    def __init__(self, monkeypatch):
        self.started, self.release = threading.Event(), threading.Event()
        self.calls: list = []
        monkeypatch.setattr(writer_mod, "_os_fsync", self)

    def __call__(self, fd):
        if threading.current_thread().name.startswith("inmem-wal-sync"):
            self.calls.append(fd)
            self.started.set()
            self.release.wait(30)
        os.fsync(fd)


def test_calls_during_an_fsync_leave_one_more_fsync_not_a_queue(tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "buffered", flusher=False)
    gate = SyncerGate(monkeypatch)
    started, release, calls = gate.started, gate.release, gate.calls
    try:
        w.append_nowait(b"first")
        w.flush_in_background()
        assert started.wait(30)
        for i in range(5):
            w.append_nowait(b"more %d" % i)
            w.flush_in_background()
        assert _on_disk(tmp_path)[-1] == b"more 4"  # written while the fsync ran
        assert w.durable_lsn == 0
        release.set()
        wait_for(lambda: w.durable_lsn == 6, what="the fsync after the first")
        assert len(calls) == 2
    finally:
        release.set()
        w.close()


def test_close_leaves_everything_durable_and_stops_the_thread(tmp_path):
    w = WalWriter(tmp_path, "buffered", flusher=False)
    for p in payloads(10):
        w.append_nowait(p)
    w.flush_in_background()
    syncer = w._syncer
    assert syncer is not None
    w.append_nowait(b"after")
    w.close()
    assert not syncer.is_alive()
    assert w.durable_lsn == 11
    assert _on_disk(tmp_path)[-1] == b"after"


def test_a_closed_writer_refuses_a_background_flush(tmp_path):
    w = WalWriter(tmp_path, "buffered", flusher=False)
    w.append_nowait(b"kept")
    w.flush_in_background()
    w.close()
    with pytest.raises(WalClosed):
        w.flush_in_background()
    assert _on_disk(tmp_path) == [b"kept"]


def test_a_flush_does_not_return_before_what_a_background_flush_wrote_is_fsynced(
        tmp_path, monkeypatch):
    w = WalWriter(tmp_path, "buffered", flusher=False)
    gate = SyncerGate(monkeypatch)
    started, release = gate.started, gate.release
    try:
        w.append_nowait(b"written in the background")
        w.flush_in_background()
        assert started.wait(30)
        assert w.durable_lsn == 0  # the syncer's fsync has not returned
        assert w.flush() == 1  # nothing pending, but written and not yet known fsynced
        assert w.durable_lsn == 1
    finally:
        release.set()
        w.close()
