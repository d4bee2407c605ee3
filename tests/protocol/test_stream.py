"""The stream transport's framing, client channel and serving side, over real Unix sockets."""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import threading
import time

import pytest
import zmq

import inmem
import inmem.stream_server as stream_server
from inmem.protocol import HEADER_BYTES, KIND_OP, header, unpack_reply
from inmem.stream import PATH_MAX, READ_BYTES, StreamChannel, StreamClosed, frame, stream_path
from inmem.stream_server import StreamServer

LIMIT = 4 * 2**20


@pytest.fixture(params=["zmq.Poller", "select.poll"])
def server(request, tmp_path):
    # Both kinds of poll a loop may register the server with: their flags differ.
    srv = StreamServer(str(tmp_path / "s.sock.s"), LIMIT)
    poller = zmq.Poller() if request.param == "zmq.Poller" else select.poll()
    srv.register(poller)
    srv.test_poller = poller
    yield srv
    srv.close()


def turn(srv, wait_ms: int = 1000) -> list:
    """One turn of a serving loop: poll, accept and read; the messages read."""
    batch: list = []
    deadline = time.monotonic() + wait_ms / 1000
    while not batch and time.monotonic() < deadline:
        events = dict(srv.test_poller.poll(50))
        srv.read(events, batch, 4096)
    return batch


def echo(srv, batch) -> None:
    for conn, head, body in batch:
        srv.send(conn, head, body)


def connect(srv, timeout: float = 5.0) -> StreamChannel:
    chan = StreamChannel(srv.path, 0, timeout)
    turn(srv, 100)  # accept
    return chan


def test_stream_path_sits_beside_an_ipc_endpoint_only():
    assert stream_path("ipc:///run/x/shard-0.sock") == "/run/x/shard-0.sock.s"
    assert stream_path("tcp://127.0.0.1:7000") is None
    assert stream_path("ipc:///" + "d" * PATH_MAX) is None


def test_the_listening_socket_is_owner_only(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_requests_sent_back_to_back_are_all_read_and_answered_in_order(server):
    chan = connect(server)
    heads = [header(KIND_OP, 1, i) for i in range(5)]
    for i, head in enumerate(heads):
        chan.send(head, b"body-%d" % i, time.monotonic() + 5)
    got: list = []
    while len(got) < 5:
        got += turn(server)
    assert [(h, bytes(b)) for _c, h, b in got] == [(h, b"body-%d" % i) for i, h in enumerate(heads)]
    echo(server, got)
    replies = [chan.recv(time.monotonic() + 5, LIMIT) for _ in heads]
    assert [r[0] for r in replies] == heads
    assert [bytes(r[1]) for r in replies] == [b"body-%d" % i for i in range(5)]


def test_a_turns_replies_to_one_connection_go_in_one_send_whole_and_in_order(server,
                                                                             monkeypatch):
    chan = connect(server)
    heads = [header(KIND_OP, 1, i) for i in range(50)]
    for i, head in enumerate(heads):
        chan.send(head, b"body-%d" % i, time.monotonic() + 5)
    got: list = []
    while len(got) < len(heads):
        got += turn(server)
    sends = []
    real = stream_server.send_now
    monkeypatch.setattr(stream_server, "send_now",
                        lambda sock, data: sends.append(len(data)) or real(sock, data))
    server.send_many(got[0][0], [[c, h, b"re-" + bytes(b)] for c, h, b in got])
    assert len(sends) == 1
    replies = [chan.recv(time.monotonic() + 5, LIMIT) for _ in heads]
    assert [r[0] for r in replies] == heads
    assert [bytes(r[1]) for r in replies] == [b"re-body-%d" % i for i in range(len(heads))]


def test_a_message_larger_than_one_read_arrives_whole_both_ways(server):
    chan = connect(server)
    body = os.urandom(3 * READ_BYTES + 17)
    head = header(KIND_OP, 2, 7)
    # The kernel holds less than the message: the client sends while the server reads.
    sender = threading.Thread(target=chan.send, args=(head, body, time.monotonic() + 10))
    sender.start()
    got: list = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got += turn(server, 100)
    sender.join(10)
    assert bytes(got[0][2]) == body
    echo(server, got)
    stop = threading.Event()

    def serve():  # flushes what the kernel could not take at once
        while not stop.is_set():
            server.read(dict(server.test_poller.poll(10)), [], 4096)

    flusher = threading.Thread(target=serve)
    flusher.start()
    try:
        reply = chan.recv(time.monotonic() + 10, LIMIT)
    finally:
        stop.set()
        flusher.join(10)
    assert reply is not None and reply[0] == head and bytes(reply[1]) == body


def test_a_frame_split_into_single_bytes_is_reassembled(server):
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(server.path)
    turn(server, 100)
    data = frame(header(KIND_OP, 3, 9), b"split")
    got: list = []
    for byte in data:
        raw.send(bytes([byte]))
        got += turn(server, 20)
    assert len(got) == 1 and bytes(got[0][2]) == b"split"
    raw.close()


def test_a_length_over_the_limit_ends_that_connection_only(server):
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(server.path)
    good = connect(server)
    bad.send(struct.pack("<I", LIMIT + 1) + b"\0" * HEADER_BYTES)
    turn(server, 200)
    assert server.dropped == 1
    assert bad.recv(10) == b""  # closed by the server
    good.send(header(KIND_OP, 1, 1), b"still here", time.monotonic() + 5)
    got = turn(server)
    assert bytes(got[0][2]) == b"still here"
    bad.close()


def test_connections_over_the_limit_are_closed_on_arrival(server, monkeypatch):
    monkeypatch.setattr(stream_server, "CONNECTIONS_MAX", 2)
    chans = [connect(server) for _ in range(2)]
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.connect(server.path)
    turn(server, 200)
    assert server.refused == 1
    assert extra.recv(10) == b""
    assert len(server.connections) == 2
    extra.close()
    for chan in chans:
        chan.close()


def test_a_peer_that_does_not_read_its_replies_is_not_read_until_they_drain(server):
    chan = connect(server)
    big = b"x" * 200_000
    sent = 0
    # Fill the kernel's buffers with replies the client does not read.
    while not any(c.out for c in server.connections.values()) and sent < 200:
        chan.send(header(KIND_OP, 1, sent), big, time.monotonic() + 5)
        got = turn(server, 200)
        echo(server, got)
        sent += len(got) and 1
    conn = next(iter(server.connections.values()))
    assert conn.out, "the replies never backed up"
    # More requests now wait in the kernel: the server does not read them.
    chan.send(header(KIND_OP, 1, 999), b"later", time.monotonic() + 5)
    batch: list = []
    server.read(dict(server.test_poller.poll(50)), batch, 4096)
    assert batch == []
    # Once the client reads, the replies drain and the waiting request is read.
    received = 0
    deadline = time.monotonic() + 10
    later: list = []
    while (received < sent or not later) and time.monotonic() < deadline:
        events = dict(server.test_poller.poll(10))
        server.read(events, later, 4096)
        if chan.recv(time.monotonic() + 0.02, LIMIT) is not None:
            received += 1
    assert received == sent
    assert [bytes(b) for _c, _h, b in later] == [b"later"]


def test_a_peer_that_hangs_up_with_replies_pending_is_closed(server):
    chan = connect(server)
    big = b"x" * 200_000
    for i in range(200):
        chan.send(header(KIND_OP, 1, i), big, time.monotonic() + 5)
        echo(server, turn(server, 200))
        if any(c.out for c in server.connections.values()):
            break
    assert any(c.out for c in server.connections.values()), "the replies never backed up"
    chan.close()
    # The hang-up is met by the write that was waiting: the connection ends,
    # and the poll does not keep reporting a descriptor nobody handles.
    deadline = time.monotonic() + 10
    while server.connections and time.monotonic() < deadline:
        server.read(dict(server.test_poller.poll(50)), [], 4096)
    assert not server.connections
    assert not server.test_poller.poll(0)


def test_the_channel_reports_a_closed_peer_and_a_passed_deadline(server):
    chan = connect(server)
    assert chan.recv(time.monotonic() + 0.05, LIMIT) is None  # nothing came: the deadline
    for conn in list(server.connections.values()):
        server.close_connection(conn)
    with pytest.raises(StreamClosed):
        chan.recv(time.monotonic() + 5, LIMIT)


def test_a_reply_over_the_channels_limit_fails_alone_and_is_read_past(server):
    chan = connect(server)
    conn = next(iter(server.connections.values()))
    big, small = header(KIND_OP, 0, 1), header(KIND_OP, 0, 2)
    # More than the socket's buffer holds: sent from a thread while the channel reads.
    conn.sock.setblocking(True)
    sender = threading.Thread(target=conn.sock.sendall,
                              args=(frame(big, b"x" * 300_000) + frame(small, b"ok"),))
    sender.start()
    head, body = chan.recv(time.monotonic() + 5, 999)
    assert head == big
    with pytest.raises(inmem.ProtocolError, match="over this client's max_message_bytes"):
        raise unpack_reply(body)
    assert chan.recv(time.monotonic() + 5, 999) == [small, b"ok"]
    sender.join()
    conn.sock.setblocking(False)
    assert not chan.closed


def test_a_deadline_passed_while_reading_past_a_reply_ends_the_channel(server):
    chan = connect(server)
    conn = next(iter(server.connections.values()))
    conn.sock.send(struct.pack("<I", 1000) + b"\0" * HEADER_BYTES + b"x" * 10)
    assert chan.recv(time.monotonic() + 0.1, 999) is None
    assert chan.closed  # out of step in the middle of a message: it cannot go on


def test_a_send_that_times_out_part_way_ends_the_channel(server):
    chan = connect(server)
    # Nobody reads on the other side: the kernel's buffers fill and the send times out.
    with pytest.raises(TimeoutError):
        for i in range(1000):
            chan.send(header(KIND_OP, 1, i), b"x" * 200_000, time.monotonic() + 0.2)
    assert chan.closed, "a half-sent frame would put the stream out of step"


def test_a_send_interrupted_part_way_ends_the_channel(server):
    # Ctrl-C (or any exception a signal handler raises) while a frame is half out: the
    # rest of the stream would complete that frame with the next request's bytes.
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted
    chan = connect(server)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            # Nobody reads on the other side: a send waits for room until interrupted.
            for i in range(1000):
                chan.send(header(KIND_OP, 1, i), b"x" * 200_000, time.monotonic() + 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert chan.closed, "a half-sent frame would put the stream out of step"
