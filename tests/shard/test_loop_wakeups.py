"""The shard loop never sleeps on a request that is waiting (a lost wakeup of its poll).

The loop waits in the kernel's poll on the ROUTER's ZMQ_FD beside the stream
sockets. ZMQ_FD only signals that the socket has commands to process, and a
recv or send on the socket may process them (and so consume the signal) while
a message waits: a loop that then slept on the descriptor alone would not see
that message until something else woke it. Here the worker runs in a process
of its own with its poll timeout raised to an hour (inmemory: no flush timer
either), so the only wakeups are its sockets and a lost one would leave a
client waiting far past its deadline. Clients on both transports send their
next request the moment a reply comes, while other clients' replies are
still going out: exactly when a send on the ROUTER may swallow the signal
of a request that just arrived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from polling import wait_for

from inmem import protocol
from inmem.coordinator import config
from inmem.errors import RunNotFound
from inmem.protocol import KIND_ADMIN, KIND_OP, header, new_packer, op_body, slot_of, unpack_reply
from inmem.stream import StreamChannel, stream_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: how long a client waits for one reply: only a lost wakeup (an hour's sleep) gets near it
DEADLINE_S = 30.0
REQUESTS = 1500
ZMQ_CLIENTS = 4
STREAM_CLIENTS = 3
BURST = 200
BURST_TURNS = 300

_SERVE = """
import json, sys
from inmem.shard import worker
worker.POLL_MS = 3_600_000  # no timed wakeup: only the sockets wake the loop
sys.exit(worker.run_worker(json.loads(sys.argv[1]), 0))
"""


@pytest.fixture
def shard(tmp_path):
    spec = config.load(None, data_dir=str(tmp_path), durability="inmemory")
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, json.dumps(spec)])
    endpoint = spec["shards"][0]["endpoint"]
    try:
        wait_for(lambda: proc.poll() is not None or os.path.exists(stream_path(endpoint)),
                 timeout=30, what="the shard to bind")
        assert proc.poll() is None, f"the shard exited with {proc.returncode}"
        yield endpoint
        assert proc.poll() is None, f"the shard exited with {proc.returncode}"
    finally:
        proc.kill()
        proc.wait(10)


def _requests(client: int):
    """(header, body, expected result) of each request one client sends: a put, then a ping,
    in turn, so that both the operation path and the admin path are served (the put goes to
    a run this store does not have: the engine answers RunNotFound)."""
    packer = new_packer()
    run = f"run-{client}"
    ping = packer.pack(op_body("ping", []))
    for i in range(REQUESTS):
        if i % 2:
            yield header(KIND_ADMIN, 0, i), ping, "pong"
        else:
            body = packer.pack(op_body("kv.put", (run, f"k{i}", b"v")))
            yield header(KIND_OP, slot_of(run), i), body, None


def _check(client: int, i: int, reply: list, want) -> None:
    assert reply is not None, (f"client {client}: no reply to request {i} within "
                               f"{DEADLINE_S} s: the shard slept on a waiting request")
    head, body = reply[-2], reply[-1]
    assert protocol.parse_header(head)[2] == i
    result = unpack_reply(body)
    if want is None:
        assert type(result) is RunNotFound, result
    else:
        assert result == want


def _zmq_client(ctx, endpoint: str, client: int, errors: list) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for head, body, want in _requests(client):
            i = protocol.parse_header(head)[2]
            sock.send_multipart([head, body])
            reply = sock.recv_multipart() if sock.poll(DEADLINE_S * 1000) else None
            _check(client, i, reply, want)
    except BaseException as exc:  # reported by the test's thread
        errors.append(exc)
    finally:
        sock.close(0)


def _stream_client(endpoint: str, client: int, errors: list) -> None:
    chan = StreamChannel(stream_path(endpoint), 0, DEADLINE_S)
    try:
        for head, body, want in _requests(client):
            i = protocol.parse_header(head)[2]
            deadline = time.monotonic() + DEADLINE_S
            chan.send(head, body, deadline)
            _check(client, i, chan.recv(deadline, protocol.DEFAULT_MAX_MESSAGE_BYTES), want)
    except BaseException as exc:
        errors.append(exc)
    finally:
        chan.close()


def test_every_request_is_answered_without_a_timed_wakeup(shard):
    ctx = zmq.Context()
    errors: list = []
    threads = [threading.Thread(target=_zmq_client, args=(ctx, shard, c, errors))
               for c in range(ZMQ_CLIENTS)]
    threads += [threading.Thread(target=_stream_client, args=(shard, ZMQ_CLIENTS + c, errors))
                for c in range(STREAM_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.term()
    assert not errors, errors[0]


def test_a_request_sent_while_replies_go_out_is_answered(shard):
    # A burst of requests, and one more sent as soon as the first reply is in,
    # while the shard is still sending the rest of the burst's replies: one of
    # those sends may process the command that announced the new request. No
    # other client is there to wake the loop, so the request is answered only
    # if the loop asks the ROUTER again before it sleeps.
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shard)
    ping = new_packer().pack(op_body("ping", []))
    try:
        for turn in range(BURST_TURNS):
            base = turn * (BURST + 1)
            for j in range(BURST):
                sock.send_multipart([header(KIND_ADMIN, 0, base + j), ping])
            got = []
            for k in range(BURST + 1):
                reply = sock.recv_multipart() if sock.poll(DEADLINE_S * 1000) else None
                assert reply is not None, (
                    f"turn {turn}: {BURST + 1 - k} replies missing after {DEADLINE_S} s: "
                    "the shard slept on a waiting request")
                got.append(protocol.parse_header(reply[0])[2])
                assert unpack_reply(reply[1]) == "pong"
                if k == 0:
                    sock.send_multipart([header(KIND_ADMIN, 0, base + BURST), ping])
            assert sorted(got) == list(range(base, base + BURST + 1))
    finally:
        sock.close(0)
        ctx.term()


def test_a_lone_zmq_client_is_answered_turn_after_turn(shard):
    # One client, one request in flight: every request arrives after the turn
    # that answered the previous one, so each must wake the poll by itself.
    ctx = zmq.Context()
    errors: list = []
    _zmq_client(ctx, shard, 0, errors)
    ctx.term()
    assert not errors, errors[0]
