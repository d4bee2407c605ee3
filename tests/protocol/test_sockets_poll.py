"""`SocketsPoll`: zmq.Poller's interface on the kernel's poll, for the coordinator's loop.

Real sockets throughout: ZeroMQ DEALER/ROUTER pairs over inproc and a Unix
socketpair for the plain descriptors.
"""

from __future__ import annotations

import socket

import pytest
import zmq

from inmem.transport import SocketsPoll, drain


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _pair(ctx, name: str):
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"inproc://{name}")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"inproc://{name}")
    return router, dealer


def _watching(ctx, *names):
    """A SocketsPoll watching a ROUTER per name; [(router, its dealer)] in that order."""
    poller = SocketsPoll()
    pairs = [_pair(ctx, name) for name in names]
    for router, _dealer in pairs:
        poller.register(router, zmq.POLLIN)
    return poller, pairs


def test_a_message_on_any_socket_is_reported_and_nothing_once_drained(ctx):
    poller, [(a, a_peer), (b, b_peer)] = _watching(ctx, "a", "b")
    assert poller.poll(0) == []
    b_peer.send(b"to b")
    assert poller.poll(1000) == [(b, zmq.POLLIN)]
    assert [f[-1] for f in drain(b, 10)] == [b"to b"]
    # Drained: neither socket is reported again (no false alarm from ZMQ_FD).
    assert poller.poll(20) == []
    a_peer.send(b"one")
    a_peer.send(b"two")
    assert poller.poll(1000) == [(a, zmq.POLLIN)]
    assert [f[-1] for f in drain(a, 10)] == [b"one", b"two"]
    assert poller.poll(0) == []


def test_a_message_that_came_while_the_socket_was_used_is_not_missed(ctx):
    # Any call on a socket may consume its ZMQ_FD signal while a message waits;
    # `touched` makes the next poll ask ZMQ_EVENTS instead of sleeping on the fd.
    router, dealer = _pair(ctx, "t")
    poller = SocketsPoll()
    poller.register(router, zmq.POLLIN)
    assert poller.poll(0) == []
    dealer.send(b"hello")
    router.getsockopt(zmq.EVENTS)  # a use of the socket outside a turn
    poller.touched(router)
    assert poller.poll(5000) == [(router, zmq.POLLIN)]
    ident, body = router.recv_multipart()
    # A reply sent from the loop, then the peer answers: still seen.
    router.send_multipart([ident, b"reply"])
    poller.touched(router)
    assert dealer.recv() == b"reply"
    dealer.send(b"again")
    assert poller.poll(5000) == [(router, zmq.POLLIN)]


def test_plain_descriptors_speak_zmq_flags():
    left, right = socket.socketpair()
    try:
        poller = SocketsPoll()
        poller.register(left.fileno(), zmq.POLLIN)
        assert poller.poll(0) == []
        right.send(b"x")
        assert poller.poll(1000) == [(left.fileno(), zmq.POLLIN)]
        left.recv(10)
        poller.modify(left.fileno(), zmq.POLLIN | zmq.POLLOUT)
        assert poller.poll(1000) == [(left.fileno(), zmq.POLLOUT)]
        poller.modify(left.fileno(), zmq.POLLIN)
        right.close()
        ((fd, flags),) = poller.poll(1000)
        assert fd == left.fileno() and flags & zmq.POLLIN  # the end of the stream reads as ""
        poller.unregister(left.fileno())
        assert poller.poll(0) == []
    finally:
        left.close()
        right.close()


def test_sockets_and_descriptors_together_and_unregister(ctx):
    router, dealer = _pair(ctx, "u")
    left, right = socket.socketpair()
    try:
        poller = SocketsPoll()
        poller.register(router, zmq.POLLIN)
        poller.register(left.fileno(), zmq.POLLIN)
        dealer.send(b"m")
        right.send(b"d")
        got = dict(poller.poll(1000))
        if len(got) < 2:  # the two may become ready a moment apart
            got.update(poller.poll(1000))
        assert got == {router: zmq.POLLIN, left.fileno(): zmq.POLLIN}
        poller.unregister(router)
        left.recv(10)
        assert poller.poll(0) == []
    finally:
        left.close()
        right.close()


def test_a_socket_no_longer_watched_is_never_asked_again(ctx):
    # `touched` runs after every send the coordinator makes, including to a link
    # it has just dropped: only watched sockets may be asked ZMQ_EVENTS (a closed
    # one would raise).
    poller, [(a, _a_peer), (b, _b_peer)] = _watching(ctx, "gone", "kept")
    poller.unregister(a)
    a.close(0)
    poller.touched(a)
    poller.touched(b)
    assert poller.poll(0) == []
