"""ZeroMQ endpoints as the cluster's processes serve them: the bind address, the ROUTER set-up, the drain.

A shard worker and the coordinator's client-facing side both answer many
peers on a ROUTER socket with the same options; `bind_router` is that set-up,
so a limit changes in one place.
"""

from __future__ import annotations

import os

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


def ipc_dir(endpoint: str) -> str | None:
    """The directory an ipc:// endpoint's socket file lives in (None for other transports)."""
    return os.path.dirname(endpoint[6:]) if endpoint.startswith("ipc://") else None


__all__ = ["bind_endpoint", "bind_router", "drain", "ipc_dir"]
