"""ZeroMQ endpoints as the cluster's processes serve them: the bind address, the ROUTER set-up,
the drain, `RouterPoll`, a loop's wait on a ROUTER beside plain descriptors, and
`SocketsPoll`, the same for several sockets behind zmq.Poller's interface.

A shard worker and the coordinator's client-facing side both answer many
peers on a ROUTER socket with the same options; `bind_router` is that set-up,
so a limit changes in one place.
"""

from __future__ import annotations

import math
import os
import select

import zmq

from .errors import InmemError
from .files import claim_socket_path
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
    ipc = endpoint.startswith("ipc://")
    try:
        if ipc:
            # ZeroMQ would take the path over from a process serving it.
            claim_socket_path(endpoint[6:], endpoint)
            old = os.umask(0o177)  # owner only from the start: the umask decides at bind
        try:
            sock.bind(bind_endpoint(endpoint))
        finally:
            if ipc:
                os.umask(old)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise InmemError(f"cannot listen on {endpoint}: {exc}") from None
    except BaseException:
        sock.close(0)
        raise
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


def drain_noting_keys(sock: zmq.Socket, limit: int, keys: dict):
    """`drain` for a Curve ROUTER, noting in `keys` each peer's public key (Z85) as its
    handshake proved it (the message's User-Id, which the ZAP handler sets to the key).

    A peer's routing id is its own choice; the key is not. `keys` is cleared
    when it grows past KEYS_KEPT (a peer's next message notes it again).
    """
    recv = sock.recv
    noblock = zmq.NOBLOCK
    more = zmq.RCVMORE
    getsockopt = sock.getsockopt
    try:
        for _ in range(limit):
            first = recv(noblock, copy=False)
            parts = [first.bytes]
            while getsockopt(more):
                parts.append(recv(noblock))
            if len(keys) >= KEYS_KEPT:
                keys.clear()
            try:
                keys[parts[0]] = first.get("User-Id")
            except zmq.ZMQError:
                keys[parts[0]] = None
            yield parts
    except zmq.Again:
        return


#: peers whose keys `drain_noting_keys` keeps at most
KEYS_KEPT = 4096


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


#: zmq poll flags -> select.poll flags, for plain descriptors
_TO_SELECT = ((zmq.POLLIN, select.POLLIN), (zmq.POLLOUT, select.POLLOUT),
              (zmq.POLLERR, select.POLLERR))
#: select.poll flags -> zmq poll flags (a hang-up or a bad descriptor is an error)
_FROM_SELECT = ((select.POLLIN, zmq.POLLIN), (select.POLLOUT, zmq.POLLOUT),
                (select.POLLERR | select.POLLHUP | select.POLLNVAL, zmq.POLLERR))


def _select_flags(flags: int) -> int:
    out = 0
    for z, p in _TO_SELECT:
        if flags & z:
            out |= p
    return out


class SocketsPoll:
    """`zmq.Poller`'s interface (zmq flags in and out) for a loop with several ZeroMQ
    sockets and plain descriptors, on one `select.poll` (see RouterPoll for why).

    A socket is watched through its ZMQ_FD and reported readable only when
    ZMQ_EVENTS says a message is there, so a caller's "it spoke" is never a
    false alarm. The edge rule of ZMQ_FD (any call on a socket may consume
    its signal while a message waits) is kept as RouterPoll keeps it: a
    socket reported readable is asked ZMQ_EVENTS before the next sleep, and
    so is one the caller used in any other way, which the caller says with
    `touched(sock)` after the call. Only sockets are asked, and only those;
    a turn that served plain descriptors only makes no ZeroMQ call at all.
    Sockets are watched for input only (their sends never block here).
    """

    #: StreamServer.register reads this: flags are zmq's, as with a zmq.Poller
    zmq_flags = True

    __slots__ = ("_poll", "_socks", "_watched", "_unsure")

    def __init__(self):
        self._poll = select.poll()
        self._socks: dict = {}      # ZMQ_FD -> socket
        self._watched: set = set()  # the same sockets, for `touched` (called after every send)
        self._unsure: set = set()   # sockets to ask ZMQ_EVENTS before sleeping

    def register(self, target, flags: int = zmq.POLLIN) -> None:
        if isinstance(target, zmq.Socket):
            fd = target.getsockopt(zmq.FD)
            self._socks[fd] = target
            self._watched.add(target)
            self._poll.register(fd, select.POLLIN)
            self._unsure.add(target)
        else:
            self._poll.register(target, _select_flags(flags))

    def modify(self, target, flags: int) -> None:
        if isinstance(target, zmq.Socket):
            return  # watched for input whatever is asked
        self._poll.modify(target, _select_flags(flags))

    def unregister(self, target) -> None:
        if isinstance(target, zmq.Socket):
            fd = target.getsockopt(zmq.FD)
            self._socks.pop(fd, None)
            self._watched.discard(target)
            self._unsure.discard(target)
            self._poll.unregister(fd)
        else:
            self._poll.unregister(target)

    def touched(self, sock: zmq.Socket) -> None:
        """`sock` was used outside a turn that found it readable: ask before sleeping."""
        if sock in self._watched:
            self._unsure.add(sock)

    def poll(self, timeout_ms: float | None = None) -> list:
        """[(socket or descriptor, zmq flags)] of what is ready, waiting up to `timeout_ms`
        (None or -1: no limit)."""
        ready = []
        unsure = self._unsure
        if unsure:
            for sock in unsure:
                if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    ready.append((sock, zmq.POLLIN))
            unsure.clear()
        if ready:
            timeout = 0
        elif timeout_ms is None or timeout_ms < 0:
            timeout = None
        else:
            timeout = math.ceil(timeout_ms)
        socks = self._socks
        for fd, ev in self._poll.poll(timeout):
            sock = socks.get(fd)
            if sock is not None:
                if (sock, zmq.POLLIN) not in ready and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    ready.append((sock, zmq.POLLIN))
                continue
            flags = 0
            for p, z in _FROM_SELECT:
                if ev & p:
                    flags |= z
            ready.append((fd, flags))
        for target, _flags in ready:
            if type(target) is not int:
                unsure.add(target)  # the caller is about to use it
        return ready


def ipc_dir(endpoint: str) -> str | None:
    """The directory an ipc:// endpoint's socket file lives in (None for other transports)."""
    return os.path.dirname(endpoint[6:]) if endpoint.startswith("ipc://") else None


__all__ = ["RouterPoll", "SocketsPoll", "bind_endpoint", "bind_router", "drain", "ipc_dir"]
