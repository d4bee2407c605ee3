"""Clients on a shard's host reach it through its Unix stream socket: routing, death, hostile peers."""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import threading
import time

import msgpack
import pytest

import inmem
from inmem import protocol
from inmem.client import _Channel
from inmem.stream import StreamChannel, frame, stream_path
from polling import wait_for

from .conftest import runs_on_each_shard

pytestmark = pytest.mark.slow


def _channels(db) -> list:
    return [c for c in db._backend._local.state.shards if c is not None]


def test_direct_clients_use_the_stream_socket_and_stream_false_uses_zeromq(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory")
    db = cluster.connect()
    plain = cluster.connect(stream=False)
    try:
        ids = runs_on_each_shard(db, 2, prefix="streams")
        for shard, (run,) in ids.items():
            db.begin_run(run_id=run)
            assert db.kv.put(run, "k", shard) == 1
            assert plain.kv.get(run, "k") == shard
            assert plain.kv.put(run, "k", -shard) == 2
            assert db.kv.get(run, "k") == -shard
        assert {type(c) for c in _channels(db)} == {StreamChannel}
        assert {type(c) for c in _channels(plain)} == {_Channel}
        with db.pipeline() as p:  # a pipeline over both shards' streams
            for shard, (run,) in ids.items():
                p.kv.put(run, "p", shard)
                p.kv.get(run, "p")
            assert p.execute() == [1, 0, 1, 1]
    finally:
        db.close()
        plain.close()


def test_each_shard_listens_beside_its_ipc_endpoint_owner_only(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory")
    for entry in cluster.spec["shards"]:
        path = stream_path(entry["endpoint"])
        assert path is not None
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def _raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _read_reply(sock: socket.socket) -> tuple[bytes, object]:
    data = b""
    while len(data) < 16 or len(data) < 16 + struct.unpack_from("<I", data)[0]:
        chunk = sock.recv(65536)
        assert chunk, "the shard closed the connection instead of answering"
        data += chunk
    return data[4:16], protocol.unpack_reply(data[16:])


def _send_garbage(path: str) -> None:
    """What a peer that does not speak the protocol sends; each connection ends, nothing else."""
    huge = _raw(path)  # a length over the message limit
    huge.sendall(struct.pack("<I", 2**32 - 1) + b"\0" * 12)
    assert huge.recv(10) == b""
    junk = _raw(path)  # bytes that are not a frame at all
    junk.sendall(os.urandom(4096))
    junk.close()
    partial = _raw(path)  # a hang-up mid-frame
    partial.sendall(struct.pack("<I", 100) + b"\1" * 20)
    partial.close()


def test_hostile_stream_peers_cannot_stop_a_shard(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory")
    path = stream_path(cluster.spec["shards"][0]["endpoint"])
    pid = cluster.pids()["shards"][0]
    _send_garbage(path)
    # A well-framed request whose body is not a request gets an error reply.
    bad = _raw(path)
    head = protocol.header(protocol.KIND_OP, 0, 42)
    bad.sendall(frame(head, b"\xc1\xc1\xc1"))
    reply_head, reply = _read_reply(bad)
    assert reply_head == head and isinstance(reply, inmem.ProtocolError)
    # A header of another protocol version is answered, not obeyed.
    other = bytes([9]) + head[1:]
    bad.sendall(frame(other, msgpack.packb(["run.status", ["x"]])))
    reply_head, reply = _read_reply(bad)
    assert reply_head == other and isinstance(reply, inmem.ProtocolError)
    bad.close()
    db = cluster.connect()
    try:
        run = db.begin_run()
        assert db.kv.put(run, "k", "v") == 1
        assert db.kv.get(run, "k") == "v"
    finally:
        db.close()
    assert cluster.pids()["shards"][0] == pid
    assert cluster.status()["shards"][0]["state"] == "ready"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "proxied"])
def test_a_request_in_flight_on_a_killed_shard_fails_at_once_not_at_its_deadline(make_cluster,
                                                                                 direct):
    cluster = make_cluster(shards=2, durability="strict", restart_backoff_ms=300)
    db = cluster.connect(request_timeout=30.0, direct=direct)
    run = runs_on_each_shard(db, 2, prefix="inflight")[0][0]
    db.begin_run(run_id=run)
    db.kv.put(run, "k", "acked")
    victim = cluster.pids()["shards"][0]
    os.kill(victim, signal.SIGSTOP)  # the request below is then surely in flight
    outcome: list = []

    def call():
        try:
            outcome.append(db.kv.put(run, "k", "in flight"))
        except inmem.InmemError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    caller.join(60)
    assert not caller.is_alive()
    (error,) = outcome
    assert isinstance(error, inmem.ShardUnavailable), error
    assert "may or may not have been applied" in str(error)
    # Answered because the shard's end closed (the client's stream, or the
    # coordinator's link or supervisor), not by a deadline check.
    said = ("closed the connection",) if direct else ("closed its connection", "went down")
    assert any(s in str(error) for s in said), error
    # The restarted shard is reached through a new connection; the acknowledged write is there.
    # One status: a shard waiting for its restart has no pid, so asking twice could
    # pair "ready" before the death with "no pid" after it.
    wait_for(lambda: (s := cluster.status()["shards"][0])["state"] == "ready"
             and s["pid"] not in (None, victim), 45, "the shard to restart")
    assert db.kv.get(run, "k") in ("acked", "in flight")
    assert db.kv.put(run, "k2", 1) == 1
    db.close()


def test_proxied_clients_reach_the_coordinator_through_its_stream_socket(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory")
    db = cluster.connect(direct=False)
    plain = cluster.connect(direct=False, stream=False)
    try:
        ids = runs_on_each_shard(db, 2, prefix="proxied")
        for shard, (run,) in ids.items():
            db.begin_run(run_id=run)
            assert db.kv.put(run, "k", shard) == 1
            assert plain.kv.get(run, "k") == shard
        with db.pipeline() as p:
            for shard, (run,) in ids.items():
                p.kv.get(run, "k")
                p.kv.put(run, "k", "again")
            assert p.execute() == [0, 2, 1, 2]
        assert type(db._backend._local.state.coord_stream) is StreamChannel
        assert type(plain._backend._local.state.coord_stream) is _Channel
        path = stream_path(cluster.endpoint)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        db.close()
        plain.close()


def test_hostile_stream_peers_cannot_stop_the_coordinator(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory")
    path = stream_path(cluster.endpoint)
    pid = cluster.pids()["coordinator"]
    _send_garbage(path)
    peer = _raw(path)
    head = protocol.header(protocol.KIND_CLUSTER, 0, 7)
    peer.sendall(frame(head, msgpack.packb(["status", []])))
    reply_head, status = _read_reply(peer)
    assert reply_head == head and status["ready"] is True
    # An operation for a shard, sent raw, is forwarded and its reply comes back here.
    op_head = protocol.header(protocol.KIND_OP, protocol.slot_of("nope"), 8)
    peer.sendall(frame(op_head, msgpack.packb(["run.status", ["nope"]])))
    reply_head, reply = _read_reply(peer)
    assert reply_head == op_head and reply == "not_found"
    peer.close()
    db = cluster.connect(direct=False)
    try:
        run = db.begin_run()
        assert db.kv.put(run, "k", "v") == 1
    finally:
        db.close()
    assert cluster.pids()["coordinator"] == pid


def test_a_stream_call_refuses_bad_requests_as_the_zeromq_client_does(make_cluster):
    # What a client refuses before sending, and how, does not depend on the
    # transport it would have sent on.
    cluster = make_cluster(shards=2, durability="inmemory")
    stream = cluster.connect(max_message_bytes=4096)
    plain = cluster.connect(max_message_bytes=4096, stream=False)
    try:
        run = stream.begin_run("refusals")
        for bad in ({1, 2}, {"k": object()}, {3: "int key"}):
            got = []
            for db in (stream, plain):
                with pytest.raises(inmem.InmemError) as info:
                    db.kv.put(run, "bad", bad)
                got.append((type(info.value), str(info.value)))
            assert got[0] == got[1], got
            assert issubclass(got[0][0], inmem.InvalidValue), got
        for db in (stream, plain):
            with pytest.raises(inmem.ValueTooLarge, match="over max_message_bytes"):
                db.kv.put(run, "big", "x" * 5000)
        # A transaction's commit carries its writes as tuples, which the client
        # converts for the wire.
        with stream.transaction(run) as tx:
            tx.kv.put("t", [1, 2])
        assert plain.kv.get(run, "t") == [1, 2]
        assert stream.kv.put(run, "ok", {"n": [1, b"2"]}, 60) == 1
        assert plain.kv.get(run, "ok") == {"n": [1, b"2"]}
        assert {type(c) for c in _channels(stream)} == {StreamChannel}
    finally:
        stream.close()
        plain.close()


def test_a_connection_broken_while_idle_is_replaced_and_the_request_sent_once(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory")
    db = cluster.connect()
    try:
        run = db.begin_run()
        assert db.kv.put(run, "k", 1) == 1
        (chan,) = _channels(db)
        # The shard's end goes away while this thread is not using the connection
        # (as when the shard restarts): the next send fails, nothing was applied,
        # and the request goes once on a new connection.
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.close()
        chan.sock.close()
        chan.sock = mine
        assert db.kv.put(run, "k", 2) == 2
        (fresh,) = _channels(db)
        assert fresh is not chan and chan.closed
        assert db.kv.get(run, "k") == 2
        # A channel closed on this side is replaced before anything is sent on it.
        fresh.close()
        assert db.kv.put(run, "k", 3) == 3
        assert _channels(db)[0] is not fresh
    finally:
        db.close()


def test_a_send_past_its_deadline_is_a_timeout_and_nothing_applied(make_cluster, monkeypatch):
    cluster = make_cluster(shards=1, durability="inmemory")
    db = cluster.connect()
    try:
        run = db.begin_run()
        assert db.kv.put(run, "k", 1) == 1

        def stuck(self, head, body, deadline):
            raise TimeoutError  # what a stream whose buffer stays full says at the deadline

        with monkeypatch.context() as m:
            m.setattr(StreamChannel, "send", stuck)
            with pytest.raises(inmem.Timeout, match="could not send"):
                db.kv.put(run, "k", 2)
        assert db.kv.get(run, "k") == 1
    finally:
        db.close()
