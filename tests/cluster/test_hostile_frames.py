"""Hostile frames against a real cluster, straight to a shard and through the coordinator.

Each hostile message carries a valid header, so it must be answered with an
error (one without a request id is dropped and counted); a process may not
grow by more than 64 MiB over what it held before (the peak resident size,
VmHWM, counts bytes and not time) and no process may be replaced. Normal
calls work afterwards.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
import zmq

import inmem
from inmem import protocol

from .conftest import shard_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MiB = 2**20
N8 = 8 * MiB
GROWTH_MAX = 64 * MiB


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def _reset_peak_rss(pid: int) -> None:
    # Linux: writing 5 to clear_refs resets the peak resident size (VmHWM).
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _array32(count: int, items: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + items


def _put(run: str, value: bytes) -> bytes:
    """The body of kv.put(run, "k", <raw msgpack value>, None)."""
    return (b"\x92" + msgpack.packb("kv.put") + b"\x94" + msgpack.packb(run)
            + msgpack.packb("k") + value + b"\xc0")


def _hostile(run: str) -> list:
    """(name, kind, body) of every hostile request, each with a valid header."""
    empties = _array32(N8, b"\x90" * N8)
    nested = _array32(10_000, b"") * 1024
    return [
        ("op: 8 MiB of empty arrays as a value", protocol.KIND_OP, _put(run, empties)),
        ("batch: 8 MiB of empty arrays", protocol.KIND_BATCH, empties),
        ("batch: 8 MiB of empty maps", protocol.KIND_BATCH, _array32(N8, b"\x80" * N8)),
        ("op: 1024 nested arrays claiming 10000 each", protocol.KIND_OP,
         _put(run, nested + b"\xc0" * 5000)),
        ("op: 8 MiB nested 8 MiB deep", protocol.KIND_OP, _put(run, b"\x91" * N8)),
        ("op: truncated 8 MiB", protocol.KIND_OP, _put(run, _array32(N8, b"\xc0" * N8))[:-100]),
        ("op: array claiming 2**32-1", protocol.KIND_OP, _put(run, b"\xdd\xff\xff\xff\xff")),
        ("op: an opaque value holding 8 MiB of empty arrays", protocol.KIND_OP,
         _put(run, msgpack.packb(msgpack.ExtType(protocol.EXT_OPAQUE, empties)))),
    ]


def _exchange(sock, frames, timeout_ms: int = 60_000):
    sock.send_multipart(frames)
    assert sock.poll(timeout_ms), f"no reply to {frames[0]!r}"
    return sock.recv_multipart()


def _check_hostile(sock, run, pid, rid0, kinds=None) -> int:
    """Send every hostile request on `sock`, one at a time; return how many were answered."""
    answered = 0
    for i, (name, kind, body) in enumerate(_hostile(run)):
        kind = kinds.get(kind, kind) if kinds else kind
        head = protocol.header(kind, protocol.slot_of(run), rid0 + i)
        _reset_peak_rss(pid)
        base = _rss(pid)
        reply = _exchange(sock, [head, body])
        assert reply[0] == head, name
        err = protocol.unpack_reply(reply[1])
        assert isinstance(err, inmem.ProtocolError), (name, err)
        answered += 1
        grown = _peak_rss(pid) - base
        assert grown < GROWTH_MAX, f"{name}: pid {pid} grew by {grown / MiB:.0f} MiB"
    return answered


@pytest.fixture
def cluster_and_run(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory")
    db = cluster.connect()
    run = db.begin_run(name="hostile target")
    db.kv.put(run, "k", "before")
    yield cluster, db, run
    db.close()


def _socket(ctx, endpoint):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _still_serving(cluster, db, run, pids):
    assert cluster.pids() == pids
    status = cluster.status()
    assert status["ready"] and all(s["restarts"] == 0 for s in status["shards"])
    assert db.kv.get(run, "k") == "before"
    assert db.kv.put(run, "k", "after") == 2
    assert db.kv.get(run, "k") == "after"


def test_hostile_frames_straight_to_a_shard(cluster_and_run):
    cluster, db, run = cluster_and_run
    pids = cluster.pids()
    shard = db.info()["shards"][shard_of(db, run)]
    ctx = zmq.Context()
    try:
        sock = _socket(ctx, shard["endpoint"])
        answered = _check_hostile(sock, run, shard["pid"], 1)
        # An admin request and a cluster request with the same bodies.
        head = protocol.header(protocol.KIND_ADMIN, shard["shard"], 100)
        reply = _exchange(sock, [head, _hostile(run)[1][2]])
        assert isinstance(protocol.unpack_reply(reply[1]), inmem.ProtocolError)
        head = protocol.header(protocol.KIND_CLUSTER, 0, 101)
        reply = _exchange(sock, [head, _hostile(run)[1][2]])
        assert isinstance(protocol.unpack_reply(reply[1]), inmem.ProtocolError)
        # Without a request id, or with frames around it that no peer sends: dropped.
        before = db.info()["shards"][shard["shard"]]["dropped_frames"]
        sock.send_multipart([b"\x01\x01", _hostile(run)[1][2]])
        sock.send_multipart([b"a"] * 6 + [head, b"\x90"])
        sock.send_multipart([head])
        assert not sock.poll(500), "a message without a request id was answered"
        after = db.info()["shards"][shard["shard"]]
        assert after["dropped_frames"] - before == 3
        assert after["protocol_errors"] >= answered + 2
        sock.close(0)
    finally:
        ctx.destroy(0)
    _still_serving(cluster, db, run, pids)


def test_hostile_frames_through_the_coordinator(cluster_and_run):
    cluster, db, run = cluster_and_run
    pids = cluster.pids()
    ctx = zmq.Context()
    try:
        sock = _socket(ctx, cluster.endpoint)
        shard_pid = db.info()["shards"][shard_of(db, run)]["pid"]
        _check_hostile(sock, run, shard_pid, 1)
        # Cluster requests, which the coordinator decodes itself.
        _check_hostile(sock, run, pids["coordinator"], 100,
                       kinds={protocol.KIND_OP: protocol.KIND_CLUSTER,
                              protocol.KIND_BATCH: protocol.KIND_CLUSTER})
        before = cluster.status()["coordinator"]["dropped_frames"]
        sock.send_multipart([b"\x01\x04", _hostile(run)[1][2]])
        assert not sock.poll(500), "a message without a request id was answered"
        assert cluster.status()["coordinator"]["dropped_frames"] == before + 1
        sock.close(0)
    finally:
        ctx.destroy(0)
    _still_serving(cluster, db, run, pids)
    assert cluster.status()["coordinator"]["internal_errors"] == 0, cluster.log_tail()
