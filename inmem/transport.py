"""ZeroMQ endpoints as the cluster's processes serve them: the bind address, the ROUTER set-up,
the drain, and `RouterPoll`, a loop's wait on a ROUTER beside plain descriptors.

A shard worker and the coordinator's client-facing side both answer many
peers on a ROUTER socket with the same options; `bind_router` is that set-up,
so a limit changes in one place.
"""

from __future__ import annotations

import os
import select

import zmq

from .errors import InmemError
from .protocol import RECV_QUEUE_MAX


def bind_endpoint(endpoint: str) -> str:
    """The address to bind for an endpoint that others connect to: the one given.

    A tcp endpoint binds exactly the host it names (a name is resolved to its
    address); every interface only when the endpoint says `*` itself, so a
    shard meant for a private network is not also reachable from others.
    """
    return endpoint


def bind_router(ctx: zmq.Context, endpoint: str, max_message_bytes: int,
                server_keys=None) -> zmq.Socket:
    """A ROUTER bound to `endpoint`; raises InmemError naming the endpoint if it cannot listen.

    With `server_keys` (an `inmem.keys.ServerKeys`) a tcp endpoint serves
    Curve: only peers holding one of the cluster's keys get through.
    """
    sock = ctx.socket(zmq.ROUTER)
    if server_keys is not None and endpoint.startswith("tcp://"):
        server_keys.serve(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    # A burst from many clients queues rather than being dropped: up to
    # RECV_QUEUE_MAX messages per peer here, the rest in the kernel and in the
    # sender (ZeroMQ stops reading a peer whose queue is full), so a flooding
    # peer cannot grow this process without bound while everyone else is served.
    sock.setsockopt(zmq.RCVHWM, RECV_QUEUE_MAX)
    sock.setsockopt(zmq.SNDHWM, 0)
    try:
        sock.bind(bind_endpoint(endpoint))
    except zmq.ZMQError as exc:
        sock.close(0)
        raise InmemError(f"cannot listen on {endpoint}: {exc}") from None
    return sock


def drain(sock: zmq.Socket, limit: int):
    """Yield every message waiting on `sock`, up to `limit`, without blocking.

    Every loop that serves a socket reads this way: all that is ready, then
    the work, so a turn's cost is shared by every request in it, and the limit
    keeps the first request of a burst from waiting for the whole burst.
    """
    recv = sock.recv_multipart
    noblock = zmq.NOBLOCK
    try:
        for _ in range(limit):
            yield recv(noblock)
    except zmq.Again:
        return


class RouterPoll:
    """One `select.poll` over a ROUTER (through its ZMQ_FD) and plain descriptors, for a loop
    that owns the socket.

    A `zmq.Poller` costs more per wait than the kernel's poll: it always polls
    once without waiting before the real wait, and asks the socket for
    ZMQ_EVENTS before and after it (a fork check and one more poll each), even
    when only a plain descriptor is busy. Here a turn that serves only plain
    descriptors makes no ZeroMQ call at all.

    ZMQ_FD is not "a message is waiting": it becomes readable when the socket
    has commands to process, and any call on the socket (a recv, a send,
    reading ZMQ_EVENTS) may process them and so consume that signal while a
    message waits. So once the ROUTER was used, the next `wait` asks
    ZMQ_EVENTS before it sleeps, and does not sleep when a message is there.
    The contract: after a `wait` that said the ROUTER is ready the caller may
    read and write it freely; a ROUTER call in any other turn is followed by
    `touched()`.

    `register`, `modify` and `unregister` are `select.poll`'s, with its flags,
    for the plain descriptors (a `StreamServer` registers itself here).
    """

    __slots__ = ("sock", "fd", "unsure", "_poll", "register", "modify", "unregister")

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.fd = sock.getsockopt(zmq.FD)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        self._poll = poller
        self.register = poller.register
        self.modify = poller.modify
        self.unregister = poller.unregister
        self.unsure = True  # nothing is known of the socket before it was asked

    def touched(self) -> None:
        """The ROUTER was used outside a turn `wait` said it was ready in: ask before sleeping."""
        self.unsure = True

    def wait(self, timeout_ms: int) -> tuple:
        """Wait up to `timeout_ms` (-1: no limit) for the ROUTER or a descriptor;
        (whether the ROUTER has a message to recv, the poll's [(fd, events)])."""
        ready = False
        if self.unsure:
            self.unsure = False
            if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                ready = True
                timeout_ms = 0  # still look at the descriptors, without waiting
        events = self._poll.poll(timeout_ms)
        if not ready and events:
            fd = self.fd
            for got, _ev in events:
                if got == fd:
                    ready = True  # maybe a message: the caller's recv finds out
                    break
        if ready:
            self.unsure = True  # the caller is about to use the socket
        return ready, events


def ipc_dir(endpoint: str) -> str | None:
    """The directory an ipc:// endpoint's socket file lives in (None for other transports)."""
    return os.path.dirname(endpoint[6:]) if endpoint.startswith("ipc://") else None


__all__ = ["RouterPoll", "bind_endpoint", "bind_router", "drain", "ipc_dir"]
