"""The shard worker's request handling, driven in-process with hand-built frames.

No sockets and no child processes: a `Worker` opens its store in a temporary
directory and `Worker.process` gets lists of frames exactly as its ROUTER
would deliver them (`[peer, header, body]`). Its replies are decoded with
the client's own reply decoder.
"""

from __future__ import annotations

import errno

import msgpack
import pytest

from polling import wait_for

import inmem
from inmem import protocol
from inmem.coordinator import config
from inmem.shard import worker as worker_mod
from inmem.wal import writer as wal_writer

PEER = b"\x00peer"


class FailStop(Exception):
    """Raised instead of the worker's process exit, so the test sees the exit code."""


class Socket:
    """Collects what the worker sends when it fails (its loop sends the rest)."""

    def __init__(self):
        self.sent = []

    def send_multipart(self, frames, flags=0):
        self.sent.append(frames)

    def close(self, linger=None):
        pass


def _open_worker(tmp_path, durability: str, **overrides) -> worker_mod.Worker:
    """A worker on a store under tmp_path, with a socket that only records what is sent."""
    spec = config.load(None, data_dir=str(tmp_path), durability=durability, **overrides)
    w = worker_mod.Worker(spec, 0)
    w.open()
    w.sock = Socket()
    return w


@pytest.fixture(params=["buffered", "strict"])
def worker(request, tmp_path):
    w = _open_worker(tmp_path, request.param)

    def _exit(code):
        raise FailStop(code)

    w.exit_process = _exit
    yield w
    if not w.store.writer.failed:
        w.store.close()
    else:
        w.store.writer.close()


def _pack(body) -> bytes:
    # As the client sends it: strings travel with surrogatepass.
    return msgpack.packb(body, use_bin_type=True, unicode_errors="surrogatepass")


def _op(rid: int, op: str, args, target: int = 0) -> list:
    return [PEER, protocol.header(protocol.KIND_OP, target, rid), _pack([op, list(args)])]


def _batch(rid: int, ops) -> list:
    body = _pack([[op, list(args)] for op, args in ops])
    return [PEER, protocol.header(protocol.KIND_BATCH, 0, rid), body]


def _results(replies) -> dict:
    out = {}
    for frames in replies:
        assert frames[0] == PEER
        _kind, _target, rid = protocol.parse_header(frames[-2])
        out[rid] = protocol.unpack_reply(frames[-1])
    return out


def test_a_drained_batch_is_answered_in_order_with_typed_errors(worker):
    got = _results(worker.process([
        _op(1, "run.begin", [None, "r"]),
        _op(2, "kv.put", ["r", "k", b"v", None]),
        _op(3, "kv.put", ["r", "k", b"v", 1e300]),
        _op(4, "kv.get", ["r", "k", None]),
        _op(5, "no.such.op", []),
        _batch(6, [("kv.put", ["r", "j", 1, None]), ("kv.get", ["nope", "j", None])]),
    ]))
    assert got[1] == "r"
    assert got[2] == 1
    assert isinstance(got[3], inmem.InvalidValue)
    assert got[4] == b"v"
    assert isinstance(got[5], inmem.InmemError)
    assert got[6][0] == 1 and isinstance(got[6][1], inmem.RunNotFound)


def test_frames_that_are_not_messages_are_dropped_and_counted(worker):
    replies = worker.process([[PEER], [PEER, b"short"], [PEER, b"", b"", b"", b"", b"", b""]])
    assert replies == []
    assert worker.dropped_frames == 3


def test_a_hostile_value_is_refused_and_the_store_keeps_serving(worker):
    got = _results(worker.process([
        _op(1, "run.begin", [None, "r"]),
        _op(2, "run.abort", ["r", "\udcff"]),
        _op(3, "kv.put", ["r", "k", 1, float("inf")]),
        _op(4, "kv.put", ["r", "k", 2, None]),
    ]))
    assert isinstance(got[2], inmem.InvalidValue)
    assert isinstance(got[3], inmem.InvalidValue)
    assert got[4] == 1
    worker.store.flush()
    assert worker.engine.run_status("r") == "active"


def test_a_failed_wal_ends_the_worker_with_the_durability_exit_code(worker, monkeypatch):
    """Fail-stop: after an fsync error the worker answers DurabilityError and exits."""
    worker.process([_op(1, "run.begin", [None, "r"])])
    worker.store.flush()

    def failing_fsync(fd):
        raise OSError(errno.EIO, "injected fsync failure")

    monkeypatch.setattr(wal_writer, "_os_fsync", failing_fsync)
    with pytest.raises(FailStop) as stop:
        for i in range(3):
            worker.process([_op(10 + i, "kv.put", ["r", f"k{i}", i, None])])
            if worker.durability == "buffered":  # what the flusher does every interval
                with worker.lock:
                    worker.store.emit_locked()
                with pytest.raises(inmem.InmemError):
                    worker.store.writer.flush()
    assert stop.value.args[0] == worker_mod.EXIT_DURABILITY
    # Whatever the failing turn had to answer was answered with DurabilityError.
    for frames in worker.sock.sent:
        assert isinstance(protocol.unpack_reply(frames[-1]), inmem.DurabilityError)


def test_a_strict_turn_is_one_record_written_and_fsynced_before_it_is_answered(tmp_path,
                                                                              monkeypatch):
    w = _open_worker(tmp_path, "strict")
    try:
        w.process([_op(1, "run.begin", [None, "r"])])
        writer = w.store.writer
        calls = []
        write, fsync = wal_writer._os_write, wal_writer._os_fsync

        def counted_write(fd, data):
            calls.append("write")
            return write(fd, data)

        def counted_fsync(fd):
            calls.append(("fsync", writer.pending_bytes))
            fsync(fd)

        monkeypatch.setattr(wal_writer, "_os_write", counted_write)
        monkeypatch.setattr(wal_writer, "_os_fsync", counted_fsync)
        before = writer.next_lsn
        got = _results(w.process([_op(2 + i, "kv.put", ["r", f"k{i}", i, None])
                                  for i in range(5)]))
        assert got == {2 + i: 1 for i in range(5)}
        # The whole turn: one record, written, then fsynced with nothing left
        # pending, all before process() hands back the replies.
        assert calls == ["write", ("fsync", 0)]
        assert writer.next_lsn == before + 1
        assert writer.durable_lsn == writer.next_lsn
        # A turn that writes nothing touches neither the file nor the disk.
        assert _results(w.process([_op(9, "kv.get", ["r", "k0", None])])) == {9: 0}
        assert calls == ["write", ("fsync", 0)]
    finally:
        w.store.close()


def test_a_buffered_worker_whose_flusher_failed_exits_at_its_next_turn(tmp_path):
    w = _open_worker(tmp_path, "buffered")
    codes = []

    def _exit(code):
        codes.append(code)
        raise FailStop(code)

    w.exit_process = _exit
    try:
        w.process([_op(1, "run.begin", [None, "r"])])
        with w.store.writer._lock:  # what the flusher records when its write fails
            w.store.writer._record_failure(OSError(errno.EIO, "injected"))
        with pytest.raises(FailStop):
            w.process([_op(2, "kv.put", ["r", "k", 1, None])])
        assert codes == [worker_mod.EXIT_DURABILITY]
        assert [type(protocol.unpack_reply(f[-1])) for f in w.sock.sent] == []
        with pytest.raises(FailStop):
            w.idle()
    finally:
        w.store.writer.close()


def test_a_buffered_worker_writes_from_its_own_loop_and_only_fsyncs_on_a_thread(tmp_path):
    """The loop owns the WAL's writes (its tick); the writer's syncer thread only fsyncs."""
    import threading
    w = _open_worker(tmp_path, "buffered", flush_interval_ms=50, max_pending_writes=1000)
    try:
        assert not [t for t in threading.enumerate() if t.name.startswith("inmem-wal-flush")]
        writer = w.store.writer
        w.process([_op(1, "run.begin", [None, "r"]), _op(2, "kv.put", ["r", "k", 1, None])])
        before = writer.durable_lsn
        wait = w.store.tick()
        assert wait is not None and 0 < wait <= 0.05  # due within the interval, not yet
        assert writer.durable_lsn == before and w.engine.log
        import time
        time.sleep(wait)
        assert w.store.tick() is None
        assert writer.pending_bytes == 0  # written by the tick itself
        wait_for(lambda: writer.durable_lsn > before, what="the syncer's fsync")
        assert [t for t in threading.enumerate() if t.name.startswith("inmem-wal-sync")]
        assert w.store.tick() is None  # nothing pending: nothing to wait for
    finally:
        w.store.close()


def test_a_full_buffered_batch_is_flushed_at_the_next_tick(tmp_path):
    w = _open_worker(tmp_path, "buffered", flush_interval_ms=60_000, max_pending_writes=10)
    try:
        w.process([_op(1, "run.begin", [None, "r"])])
        w.process([_op(10 + i, "kv.put", ["r", f"k{i}", i, None]) for i in range(10)])
        before = w.store.writer.durable_lsn
        assert w.store.tick() is None
        assert w.store.writer.pending_bytes == 0
        wait_for(lambda: w.store.writer.durable_lsn > before, what="the syncer's fsync")
        assert not w.engine.log
    finally:
        w.store.close()
