"""No message ends the coordinator's loop or a shard's: a failure is an answer. No processes.

The coordinator and the shard worker are driven in this process through
stand-in sockets that hand out queued messages and record what is sent back.
Handlers are made to fail on purpose (monkeypatch) to stand for any bug that
a client's input could reach.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq

import inmem
from inmem import protocol
from inmem.coordinator.server import Coordinator, ShardLink
from inmem.shard.engine import Engine
from inmem.shard.worker import Worker

MiB = 2**20


class FakeSocket:
    """recv_multipart from a queue (zmq.Again when empty); send_multipart records."""

    def __init__(self, messages=()):
        self.queue = list(messages)
        self.sent: list = []

    def recv_multipart(self, flags=0):
        if not self.queue:
            raise zmq.Again()
        return self.queue.pop(0)

    def send_multipart(self, frames, flags=0, copy=True):
        self.sent.append(list(frames))


def _coordinator(messages) -> Coordinator:
    coord = Coordinator({"client_endpoint": "ipc://unused", "test_hooks": False})
    coord.front = FakeSocket(messages)
    coord.packer = protocol.new_reply_packer()
    coord.max_message_bytes = 2**20
    coord.links = []
    coord.owners = [0] * protocol.SLOT_COUNT
    return coord


def _ready_link() -> ShardLink:
    from types import SimpleNamespace

    from inmem.coordinator import server

    link = ShardLink(SimpleNamespace(id=0, state=server.READY, last_error=None))
    link.sock = FakeSocket()
    return link


def _error_of(frames):
    err = protocol.unpack_reply(frames[-1])
    assert isinstance(err, inmem.InmemError), err
    return err


def test_a_coordinator_handler_that_raises_answers_that_request_and_goes_on(monkeypatch):
    head1 = protocol.header(protocol.KIND_CLUSTER, 0, 1)
    head2 = protocol.header(protocol.KIND_CLUSTER, 0, 2)
    ping = msgpack.packb(["ping", []])
    coord = _coordinator([[b"c1", head1, ping], [b"c2", head2, ping]])
    calls = []

    def broken(ident, head, body):
        calls.append(ident)
        if ident == b"c1":
            raise RuntimeError("boom")
        coord._result(ident, head, "pong")

    monkeypatch.setattr(coord, "_cluster_request", broken)
    coord._drain_front()
    assert calls == [b"c1", b"c2"]
    (i1, h1, b1), (i2, h2, b2) = coord.front.sent
    assert (i1, h1) == (b"c1", head1)
    assert "internal error in the coordinator: RuntimeError: boom" in str(_error_of([b1]))
    assert (i2, h2) == (b"c2", head2) and protocol.unpack_reply(b2) == "pong"
    assert coord.counters["internal_errors"] == 1


def test_a_coordinator_failure_without_a_request_id_is_a_counted_drop(monkeypatch):
    coord = _coordinator([[b"c1", b"\x01\x01", b""]])

    def broken(ident, head):
        raise RuntimeError("boom")

    monkeypatch.setattr(coord, "_bad_header", broken)
    coord._drain_front()
    assert coord.front.sent == []
    assert coord.counters["dropped_frames"] == 1 and coord.counters["internal_errors"] == 1


def test_hostile_cluster_requests_get_protocol_errors_from_the_coordinator():
    empties = b"\xdd" + (8 * MiB).to_bytes(4, "big") + b"\x90" * (8 * MiB)
    bodies = [empties, b"\x91" * MiB, msgpack.packb(["ping", [1] * 10])[:-3], b"",
              msgpack.packb(["fanout", [{"a": 1}, 5]]), msgpack.packb(["nope", []])]
    messages = [[b"c", protocol.header(protocol.KIND_CLUSTER, 0, i), body]
                for i, body in enumerate(bodies)]
    coord = _coordinator(messages)
    coord.ready_once = True
    coord.links = [_ready_link()]
    coord._drain_front()
    assert len(coord.front.sent) == len(bodies)
    for frames in coord.front.sent:
        assert isinstance(_error_of(frames), inmem.ProtocolError)
    assert coord.counters["internal_errors"] == 0


def test_a_failing_callback_or_merge_never_escapes_the_coordinator(monkeypatch):
    coord = _coordinator([])
    link = ShardLink(handle=None)
    link.sock = FakeSocket()
    coord._pending[7] = (lambda result: 1 / 0, float("inf"), link)
    link.sock.queue.append([b"", protocol.header(protocol.KIND_ADMIN, 0, 7),
                            msgpack.packb("pong")])
    coord._drain_shard(link)
    assert coord.counters["internal_errors"] == 1

    def broken_merge(name, results, args=()):
        raise RuntimeError("merge broke")

    monkeypatch.setattr(protocol, "merge_fanout", broken_merge)
    head = protocol.header(protocol.KIND_CLUSTER, 0, 9)
    coord._fan_done(b"c", head, "run.list", [[], []])
    (frames,) = coord.front.sent
    assert frames[:2] == [b"c", head] and "merge broke" in str(_error_of(frames))


# -- the shard worker ------------------------------------------------------------------


def _worker(test_hooks=True) -> Worker:
    spec = {"shards": [{"endpoint": "ipc://unused"}], "durability": "inmemory",
            "max_message_bytes": 64 * MiB, "data_dir": "unused", "test_hooks": test_hooks,
            "max_value_bytes": MiB}
    worker = Worker(spec, 0)
    worker.engine = Engine(clock=worker.clock)
    return worker


@pytest.mark.parametrize("frames", [
    [b"peer"],
    [b"peer", protocol.header(protocol.KIND_OP, 0, 1)],
    [b"peer"] + [b"x"] * 5 + [protocol.header(protocol.KIND_OP, 0, 1), b"\x90"],
    [b"peer", b"short", msgpack.packb(["kv.get", ["r", "k", None]])],
    [b"peer", b"", b""],
], ids=["alone", "no body", "too many frames", "short header", "empty frames"])
def test_a_shard_drops_envelopes_it_cannot_answer_and_counts_them(frames):
    worker = _worker()
    assert worker.handle(frames, None) is None
    assert worker.dropped_frames == 1


def _answer(worker, kind, body, rid=5):
    head = protocol.header(kind, 0, rid)
    reply = worker.handle([b"peer", b"env", head, body], None)
    assert reply[:3] == [b"peer", b"env", head]
    return protocol.unpack_reply(reply[3])


@pytest.mark.parametrize("kind", [protocol.KIND_OP, protocol.KIND_BATCH, protocol.KIND_ADMIN,
                                  protocol.KIND_CLUSTER])
@pytest.mark.parametrize("body", [
    b"\xdd" + (8 * MiB).to_bytes(4, "big") + b"\x90" * (8 * MiB),
    b"\x91" * MiB,
    b"\xc1",
    b"",
    msgpack.packb({"op": "x"}),
], ids=["8 MiB of empty arrays", "too deep", "reserved byte", "empty", "a map"])
def test_a_shard_answers_a_hostile_body_of_every_kind_with_a_protocol_error(kind, body):
    worker = _worker()
    assert isinstance(_answer(worker, kind, body), inmem.ProtocolError)


@pytest.mark.parametrize("body, words", [
    (msgpack.packb(["debug.clock", [1, 2, 3]]), "bad arguments for debug.clock"),
    (msgpack.packb(["debug.clock", ["soon"]]), "int microseconds"),
    (msgpack.packb(["hello", ["not a map"]]), "slot map"),
    (msgpack.packb(["kv.get", []]), "unknown operation"),
], ids=["too many arguments", "wrong type", "hello with a bad slot map", "an engine op"])
def test_a_shard_answers_bad_admin_requests(body, words):
    err = _answer(_worker(), protocol.KIND_ADMIN, body)
    assert isinstance(err, inmem.ProtocolError) and words in str(err), err


def test_admin_debug_ops_are_refused_without_test_hooks():
    err = _answer(_worker(test_hooks=False), protocol.KIND_ADMIN,
                  msgpack.packb(["debug.reset", []]))
    assert isinstance(err, inmem.ProtocolError) and "test hooks are off" in str(err)


def test_an_admin_handler_that_raises_is_an_error_reply(monkeypatch):
    worker = _worker()

    def broken():
        raise OSError("disk on fire")

    monkeypatch.setattr(worker, "admin_ping", broken)
    err = _answer(worker, protocol.KIND_ADMIN, msgpack.packb(["ping", []]))
    assert type(err) is inmem.InmemError and "internal error in ping: OSError" in str(err)


@pytest.mark.parametrize("method", ["run_op", "run_batch", "run_admin"])
def test_any_failure_in_handle_is_an_error_reply_to_that_request(monkeypatch, method):
    worker = _worker()

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(worker, method, broken)
    kind = {"run_op": protocol.KIND_OP, "run_batch": protocol.KIND_BATCH,
            "run_admin": protocol.KIND_ADMIN}[method]
    err = _answer(worker, kind, msgpack.packb(["ping", []]))
    assert type(err) is inmem.InmemError and "internal error in shard 0: RuntimeError" in str(err)


def test_the_coordinator_holds_a_bounded_number_and_size_of_requests_per_shard(monkeypatch):
    """A peer that sends faster than a shard answers gets ShardUnavailable, not a queue."""
    from inmem.coordinator import server

    monkeypatch.setattr(server, "INFLIGHT_MAX", 3)
    monkeypatch.setattr(server, "INFLIGHT_BYTES_MAX", 1000)
    coord = _coordinator([])
    coord.ready_once = True
    link = _ready_link()
    coord.links = [link]

    def send(rid, size):
        head = protocol.header(protocol.KIND_OP, 0, rid)
        coord.front.queue.append([b"c", head, b"\x90" * size])
        coord._drain_front()
        return head

    def answered():
        sent, coord.front.sent = coord.front.sent, []
        return [str(_error_of(frames)) for frames in sent]

    def shard_replies():
        """The shard answers all it got; return how many answers reached the client."""
        link.sock.queue.extend([[f[0], f[1], msgpack.packb(None)] for f in link.sock.sent])
        link.sock.sent = []
        coord._drain_shard(link)
        sent, coord.front.sent = coord.front.sent, []
        return len(sent)

    for rid in range(5):
        send(rid, 10)
    assert len(link.sock.sent) == 3
    assert [("overloaded" in e) for e in answered()] == [True, True]
    assert shard_replies() == 3
    assert link.inflight == {} and link.inflight_bytes == 0
    # By size: one request bigger than the whole allowance goes when nothing waits,
    # and nothing goes with it.
    send(10, 5000)
    send(11, 10)
    assert len(link.sock.sent) == 1 and "overloaded" in answered()[0]
    assert link.inflight_bytes == 5000
    assert shard_replies() == 1
    assert link.inflight_bytes == 0
    send(12, 600)
    send(13, 300)
    send(14, 300)  # 1200 bytes would be waiting
    assert len(link.sock.sent) == 2 and "overloaded" in answered()[0]
    assert link.inflight_bytes == 900
