"""Well-formed requests no client of ours sends, from a peer that can reach the sockets:
a run sent to a shard that does not own it, a slot map that is not the coordinator's,
a ZeroMQ routing id that names a stream client. None of them changes where a run lives,
which runs a shard serves, or who receives a reply."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import msgpack
import pytest
import zmq

import inmem
from inmem import protocol
from inmem.stream import frame, stream_path
from polling import wait_for

from .conftest import runs_on_each_shard

pytestmark = pytest.mark.slow


def _ask(path: str, kind: int, target: int, body: bytes, rid: int = 1):
    """One request on a fresh stream connection to `path`; the decoded reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    try:
        sock.sendall(frame(protocol.header(kind, target, rid), body))
        data = b""
        while len(data) < 16 or len(data) < 16 + struct.unpack_from("<I", data)[0]:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed instead of answering"
            data += chunk
        return protocol.unpack_reply(data[16:])
    finally:
        sock.close()


def _shard_stream(cluster, shard: int) -> str:
    return stream_path(cluster.connect().info()["shards"][shard]["endpoint"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("forged") / "data", shards=2,
                       durability="strict") as c:
        yield c


def test_a_run_sent_to_a_shard_that_does_not_own_it_is_redirected_not_made(cluster):
    db = cluster.connect()
    try:
        ids = runs_on_each_shard(db, 2, per_shard=2, prefix="forged-op")
        shard0_slot = protocol.slot_of(ids[0][0])  # a slot shard 0 serves
        paths = {"shard 0": _shard_stream(cluster, 0),
                 "the coordinator": stream_path(cluster.endpoint)}
        for (where, path), run in zip(paths.items(), ids[1]):  # runs of shard 1
            begin = msgpack.packb(["run.begin", ["n", run, None, [], None]])
            got = _ask(path, protocol.KIND_OP, shard0_slot, begin)
            assert isinstance(got, inmem.SlotMoved), (where, got)
            assert got.shard == 1 and got.slot == protocol.slot_of(run)
            put = msgpack.packb(["kv.put", [run, "k", "misplaced", None]])
            assert isinstance(_ask(path, protocol.KIND_OP, shard0_slot, put), inmem.SlotMoved)
            # Nothing of it on shard 0: the run is made where it belongs, once.
            assert db.run_status(run) == "not_found"
            assert db.begin_run(run_id=run) == run
            assert db.kv.put(run, "k", "placed") == 1
        listed = [r.run_id for r in db.runs.list() if r.run_id.startswith("forged-op")]
        assert sorted(listed) == sorted(ids[1]), listed
        # A shard makes no run id of its own in a cluster: the id decides the shard.
        nameless = msgpack.packb(["run.begin", ["n", None, None, [], None]])
        got = _ask(paths["shard 0"], protocol.KIND_OP, shard0_slot, nameless)
        assert isinstance(got, inmem.ProtocolError) and "names its run id" in str(got)
        # The requests our clients send are served as ever.
        for run in ids[0]:
            assert db.begin_run(run_id=run) == run and db.kv.put(run, "k", 0) == 1
    finally:
        db.close()


def test_a_slot_map_from_anyone_but_the_coordinator_is_refused(cluster):
    db = cluster.connect()
    try:
        ids = runs_on_each_shard(db, 2, prefix="forged-map")
        for shard, (run,) in ids.items():
            db.begin_run(run_id=run)
            db.kv.put(run, "k", shard)
        info = db.info()["shards"]
        everything_to_0 = b"\x00\x00" * protocol.SLOT_COUNT
        forged = {
            "no token": msgpack.packb(["hello", [everything_to_0]], use_bin_type=True),
            "a wrong token": msgpack.packb(["hello", [everything_to_0, "0" * 32]],
                                           use_bin_type=True),
        }
        # Over a shard's stream socket: never the coordinator's way, token or not.
        for what, body in forged.items():
            got = _ask(stream_path(info[1]["endpoint"]), protocol.KIND_ADMIN, 0, body)
            assert isinstance(got, inmem.ProtocolError), (what, got)
        _forge_over_zeromq(info[1]["endpoint"], forged)
        _both_shards_serve_their_runs(cluster, ids)
        # A shard the coordinator restarts (a new process, not a fork of it) knows the
        # token too: the coordinator's hellos set its map, no one else's do.
        victim = info[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: (s := cluster.status()["shards"][1])["state"] == "ready"
                 and s["pid"] != victim, 45, "shard 1 to come back")
        _forge_over_zeromq(info[1]["endpoint"], forged)
        _both_shards_serve_their_runs(cluster, ids)
    finally:
        db.close()


def _forge_over_zeromq(endpoint: str, forged: dict) -> None:
    # Over a shard's ZeroMQ socket, the coordinator's way, but without its token.
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 10_000)
    dealer.connect(endpoint)
    try:
        for rid, (what, body) in enumerate(forged.items(), 1):
            dealer.send_multipart([protocol.header(protocol.KIND_ADMIN, 0, rid), body])
            _head, reply = dealer.recv_multipart()
            got = protocol.unpack_reply(reply)
            assert isinstance(got, inmem.ProtocolError) and "token" in str(got), (what, got)
    finally:
        dealer.close()
        ctx.term()


def _both_shards_serve_their_runs(cluster, ids: dict) -> None:
    # Directly and through the coordinator, after the coordinator's own hellos too.
    time.sleep(0.2)
    for options in ({}, {"direct": False}):
        other = cluster.connect(**options)
        try:
            for shard, (run,) in ids.items():
                assert other.kv.get(run, "k") == shard
        finally:
            other.close()
    assert cluster.status()["ready"]


def test_a_zeromq_routing_id_shaped_as_a_stream_clients_is_refused(cluster):
    db = cluster.connect()
    run = db.begin_run(run_id="forged-ident")
    db.kv.put(run, "k", "secret")
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    victim.settimeout(1.0)
    victim.connect(stream_path(cluster.endpoint))
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        # The victim is a stream client of the coordinator: it has a stream name now.
        victim.sendall(frame(protocol.header(protocol.KIND_CLUSTER, 0, 41),
                             msgpack.packb(["ping", []])))
        assert victim.recv(4096)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, 10_000)
        dealer.setsockopt(zmq.ROUTING_ID, b"\x01" + (1).to_bytes(8, "little"))
        dealer.connect(cluster.endpoint)
        head = protocol.header(protocol.KIND_OP, protocol.slot_of(run), 42)
        dealer.send_multipart([head, msgpack.packb(["kv.get", [run, "k", None]])])
        got_head, reply = dealer.recv_multipart()
        assert got_head == head
        got = protocol.unpack_reply(reply)
        assert isinstance(got, inmem.ProtocolError) and "reserved" in str(got)
        # Nothing reached the stream client it named.
        with pytest.raises(socket.timeout):
            victim.recv(4096)
    finally:
        dealer.close()
        ctx.term()
        victim.close()
        db.close()
