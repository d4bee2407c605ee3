"""A frame fuzzer against the client endpoint: after it, every process is alive and serving.

Seeded: a failure prints the seed (set INMEM_FUZZ_SEED to replay it).
"""

from __future__ import annotations

import os
import random

import msgpack
import psutil
import pytest
import zmq

import inmem
from inmem import protocol

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MAX_MESSAGE_BYTES = 256 * 1024
OPS = sorted(__import__("inmem.shard.engine", fromlist=["Engine"]).Engine().ops)


def _random_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-2**63, 2**64)
    if kind == 2:
        return rng.random() * 1e9
    if kind == 3:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(8)))
    if kind == 4:
        return rng.randbytes(rng.randrange(16))
    if kind == 5:
        return rng.choice([True, False])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {str(rng.randrange(100)): _random_value(rng, depth + 1) for _ in range(3)}
    if rng.random() < 0.2:
        return msgpack.Timestamp(rng.randrange(2**32), rng.randrange(10**9))
    return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(12)))


def _frames(rng, run):
    """One fuzz message (a list of frames) of a randomly chosen kind."""
    kind = rng.randrange(12)
    rid = rng.randrange(2**64)
    good_kind = rng.choice([protocol.KIND_OP, protocol.KIND_BATCH, protocol.KIND_CLUSTER,
                            protocol.KIND_ADMIN])
    head = protocol.header(good_kind, rng.randrange(4096), rid)
    if kind == 0:  # random bytes, random frame counts
        return [rng.randbytes(rng.randrange(40)) for _ in range(rng.randrange(1, 5))]
    if kind == 1:  # another protocol version
        return [bytes([rng.choice([0, 2, 255]), good_kind, 0, 0]) + rid.to_bytes(8, "little"),
                msgpack.packb(["kv.get", [run, "k", None]])]
    if kind == 2:  # truncated msgpack
        body = msgpack.packb(["kv.put", [run, "k", _random_value(rng), None]])
        return [head, body[:rng.randrange(len(body))]]
    if kind == 3:  # unknown operations
        return [head, msgpack.packb([rng.choice(["nope", "kv", "", "kv.put.x", 7]), [run]])]
    if kind == 4:  # known operations, arguments of any type and count
        op = rng.choice(OPS)
        args = [rng.choice([run, _random_value(rng)])] + [_random_value(rng)
                                                          for _ in range(rng.randrange(6))]
        return [protocol.header(protocol.KIND_OP, protocol.slot_of(args[0]), rid),
                msgpack.packb([op, args])]
    if kind == 5:  # batches with junk inside
        items = [[rng.choice(OPS), [run, _random_value(rng)]] for _ in range(rng.randrange(5))]
        items.append(_random_value(rng))
        return [protocol.header(protocol.KIND_BATCH, protocol.slot_of(run), rid),
                msgpack.packb(items)]
    if kind == 6:  # a frame just under the limit: accepted, refused by the decoder
        return [head, b"\xc1" * (MAX_MESSAGE_BYTES - 64)]
    if kind == 7:  # an unknown kind, an out-of-range slot
        return [bytes([protocol.VERSION, rng.choice([0, 5, 200]), 0, 0]) + bytes(8),
                msgpack.packb(["ping", []])]
    if kind == 8:
        return [protocol.header(protocol.KIND_OP, 4096 + rng.randrange(60000), rid),
                msgpack.packb(["kv.get", [run, "k", None]])]
    if kind == 9:  # cluster requests with junk
        return [protocol.header(protocol.KIND_CLUSTER, 0, rid),
                msgpack.packb([rng.choice(["info", "status", "snapshot", "debug.reset", "fanout",
                                           "run.list", "slotmap", "x"]),
                               rng.choice([[_random_value(rng)],
                                           [[1, 2], _random_value(rng)],
                                           [rng.choice(["search.stats", "run.list", "kv.put"]),
                                            [_random_value(rng) for _ in range(3)]]])])]
    if kind == 10:  # errors and extension types where values go
        return [protocol.header(protocol.KIND_OP, protocol.slot_of(run), rid),
                msgpack.packb(["kv.put", [run, "k", msgpack.ExtType(
                    rng.choice([protocol.EXT_ERROR, protocol.EXT_OPAQUE, protocol.EXT_BIGINT]),
                    rng.randbytes(rng.randrange(20))), None]])]
    # a header with nothing after it, or too many frames
    return [head] if rng.random() < 0.5 else [head, b"", b"", b""]


def test_fuzzed_frames_never_stop_the_cluster(make_cluster):
    seed = int(os.environ.get("INMEM_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    cluster = make_cluster(shards=2, durability="buffered", max_message_bytes=MAX_MESSAGE_BYTES)
    pids = cluster.pids()
    db = cluster.connect()
    target = db.begin_run(name="fuzz target")  # the fuzzer may do anything to this one
    run = db.begin_run(name="canary")           # and never names this one
    db.kv.put(run, "k", "before")
    ctx = zmq.Context()
    replies = expected = 0
    try:
        for round_ in range(6):
            # A fresh socket each round: the coordinator disconnects a peer that
            # sends an oversized frame, and that must be all that happens to it.
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(cluster.endpoint)
            for _ in range(150):
                frames = _frames(rng, target)
                # Exactly the two-frame messages with a header-sized first frame are
                # answered (an error says what was wrong); everything else is dropped.
                expected += len(frames) == 2 and len(frames[0]) == protocol.HEADER_BYTES
                sock.send_multipart(frames)
            # (a generous wait: a loaded machine may hold a reply for seconds)
            while replies < expected and sock.poll(15000) or sock.poll(50):
                frames = sock.recv_multipart()
                replies += 1
                assert len(frames) == 2 and len(frames[0]) == protocol.HEADER_BYTES
                protocol.unpack_reply(frames[1])  # every reply decodes
            sock.close(0)
            # Oversized frames on their own socket: the coordinator disconnects a
            # peer that sends one (zmq.MAXMSGSIZE), which loses that peer's other
            # messages in flight, and that must be all that happens.
            big = ctx.socket(zmq.DEALER)
            big.setsockopt(zmq.LINGER, 0)
            big.connect(cluster.endpoint)
            for _ in range(3):
                big.send_multipart([protocol.header(protocol.KIND_OP, 0, 1),
                                    rng.randbytes(MAX_MESSAGE_BYTES + rng.randrange(1, 5000))])
            assert not big.poll(200), "an oversized frame got a reply"
            big.close(0)
            assert db.kv.get(run, "k") == "before", f"seed {seed}, round {round_}"
    finally:
        ctx.destroy(0)
    assert replies == expected, f"seed {seed}"
    # Every process is the one that started: nothing crashed and was restarted.
    assert cluster.pids() == pids, f"seed {seed}"
    for pid in [pids["coordinator"], *pids["shards"]]:
        assert psutil.pid_exists(pid)
    status = cluster.status()
    assert status["ready"] and all(s["restarts"] == 0 for s in status["shards"])
    assert status["coordinator"]["protocol_errors"] > 0
    assert status["coordinator"]["dropped_frames"] > 0
    # Typed errors only: nothing the fuzzer sent reached a code path that broke.
    assert status["coordinator"]["internal_errors"] == 0, cluster.log_tail()
    assert "internal error" not in cluster.log_tail(400), f"seed {seed}"
    assert db.kv.put(run, "k", "after") == 2
    assert db.kv.get(run, "k") == "after"
    info = db.info()
    assert sum(s["protocol_errors"] for s in info["shards"]) > 0
    db.close()


def test_every_reply_to_a_bad_request_is_a_typed_error(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory", max_message_bytes=MAX_MESSAGE_BYTES)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(cluster.endpoint)
    cases = {
        "wrong version": ([bytes([9, 1, 0, 0]) + (1).to_bytes(8, "little"), b"\x90"],
                          inmem.ProtocolError, "version 9"),
        "unknown op": ([protocol.header(protocol.KIND_OP, 0, 2), msgpack.packb(["zap", []])],
                       inmem.ProtocolError, "unknown operation"),
        "wrong args": ([protocol.header(protocol.KIND_OP, 0, 3), msgpack.packb(["kv.get", 5])],
                       inmem.ProtocolError, "must be a list"),
        "truncated": ([protocol.header(protocol.KIND_OP, 0, 4), msgpack.packb(["kv.get", []])[:3]],
                      inmem.ProtocolError, "malformed"),
        "arity": ([protocol.header(protocol.KIND_OP, 0, 5), msgpack.packb(["kv.get", []])],
                  inmem.InvalidValue, "bad arguments"),
        "test hooks off": ([protocol.header(protocol.KIND_CLUSTER, 0, 6),
                            msgpack.packb(["debug.reset", []])], inmem.ProtocolError, "test hooks"),
        "bad slot": ([protocol.header(protocol.KIND_OP, 5000, 7), msgpack.packb(["kv.get", []])],
                     inmem.ProtocolError, "slot 5000"),
    }
    try:
        for name, (frames, cls, words) in cases.items():
            sock.send_multipart(frames)
            head, body = sock.recv_multipart()
            assert head == frames[0], name
            err = protocol.unpack_reply(body)
            assert type(err) is cls and words in str(err), (name, err)
    finally:
        sock.close(0)
        ctx.destroy(0)
