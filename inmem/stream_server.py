"""The stream transport inside a poll loop: a listening socket and its connections, and links out.

A shard's loop owns it. Each turn the loop polls the ROUTER and these
sockets together (in one `inmem.transport.RouterPoll`, or a `zmq.Poller`,
which takes plain descriptors too), then `read` accepts new connections and
takes every whole message waiting on each ready connection as
`[connection, header, body]`, the shape of a ROUTER message with the
connection where the peer's identity would be; the loop handles both kinds
alike and hands each reply to `send`. The framing is `inmem.stream`'s.

Nothing a peer sends can stop the loop or grow it without bound:
- a frame whose length is over the message limit ends that connection;
- a connection holds at most one message plus one read of bytes in;
- a connection whose replies the kernel could not take at once is not read
  again until they are out (its socket buffers then push back on the
  sender), as a ROUTER stops reading a peer at its high-water mark;
- connections beyond CONNECTIONS_MAX are closed as they arrive.

`StreamLink` is the other direction, for a loop that forwards: one
non-blocking connection to another process's stream socket (the
coordinator's link to a shard on its host), written without waiting and
read a whole message at a time, under the same limits.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket

import zmq

from .files import claim_socket_path
from .stream import LENGTH, READ_BYTES, FrameReader, FrameTooLarge

log = logging.getLogger("inmem.stream")

#: open connections at most; more are closed on arrival
CONNECTIONS_MAX = 4096

#: (in, out, trouble) flags of each kind of poller: a zmq.Poller reports a hang-up or an
#: error on a descriptor as POLLERR, select.poll as POLLHUP, POLLERR or POLLNVAL
_ZMQ_FLAGS = (zmq.POLLIN, zmq.POLLOUT, zmq.POLLERR)
_POLL_FLAGS = (select.POLLIN, select.POLLOUT, select.POLLHUP | select.POLLERR | select.POLLNVAL)


def send_now(sock: socket.socket, data) -> int:
    """Send what the kernel takes of `data` without waiting; how many bytes went.

    OSError when the connection broke.
    """
    try:
        return sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0


def send_queued(holder) -> bool:
    """Send what the kernel takes of `holder.out` (bytes objects, the first from
    `holder.sent` on) without waiting; True once all went. OSError when the
    connection broke.

    The rest of a large reply is sent from where the kernel stopped, through a
    view: taking the rest as a new bytes object copied it again at every
    partial send, quadratic in the reply's size.
    """
    out, sock = holder.out, holder.sock
    while out:
        data = out[0]
        with memoryview(data) as view:
            holder.sent += send_now(sock, view[holder.sent:])
        if holder.sent < len(data):
            return False
        del out[0]
        holder.sent = 0
    return True


class Connection:
    """One client connection: its socket, the bytes of a message in progress, replies not yet sent."""

    __slots__ = ("sock", "fd", "reader", "out", "sent", "closed", "ident")

    def __init__(self, sock: socket.socket, max_message_bytes: int):
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = FrameReader(max_message_bytes)
        self.out: list | None = None  # reply bytes the kernel did not take yet
        self.sent = 0  # of out[0]
        self.closed = False
        self.ident: bytes | None = None  # how a forwarding server names it to others

    def __repr__(self) -> str:
        return f"<stream connection fd={self.fd}>"


class StreamServer:
    """A listening Unix stream socket at `path` and the connections it accepted."""

    def __init__(self, path: str, max_message_bytes: int):
        self.path = path
        self.max_message_bytes = max_message_bytes
        self.connections: dict[int, Connection] = {}
        self.poller = None  # a zmq.Poller, or anything with select.poll's methods and flags
        self._in, self._out, self._trouble = _ZMQ_FLAGS
        # Every connection reads into this one buffer: a fresh bytes object of
        # READ_BYTES per recv is an allocation large enough for malloc to map
        # and unmap pages on each call.
        self._rbuf = bytearray(READ_BYTES)
        self._rview = memoryview(self._rbuf)
        self.refused = 0  # connections closed on arrival (over CONNECTIONS_MAX)
        self.dropped = 0  # connections ended for a frame that is not one
        # A socket file a killed process left goes; one another process serves is refused.
        claim_socket_path(path, f"the stream socket {path}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Owner only, from the start: the umask decides the file's mode at bind.
            old = os.umask(0o177)
            try:
                listener.bind(path)
            finally:
                os.umask(old)
            listener.listen(1024)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.listener = listener
        self.listen_fd = listener.fileno()

    def register(self, poller) -> None:
        """Poll the listener (and, from now on, every connection) with `poller`: a
        `zmq.Poller` (or an `inmem.transport.SocketsPoll`, with the same flags), or a
        `select.poll` (or an `inmem.transport.RouterPoll`)."""
        self.poller = poller
        zmq_style = isinstance(poller, zmq.Poller) or getattr(poller, "zmq_flags", False)
        self._in, self._out, self._trouble = _ZMQ_FLAGS if zmq_style else _POLL_FLAGS
        poller.register(self.listen_fd, self._in)

    # -- reading -------------------------------------------------------------------

    def read(self, events, batch: list, limit: int) -> None:
        """Accept and read what `events` (a poll's result: a dict, or a list of (fd, flags))
        says is ready; messages go to `batch`. Descriptors not ours are skipped."""
        conns = self.connections
        # A hang-up or an error is met by the read or the write that was waiting:
        # it fails or finds the end, and the connection is closed.
        readable = self._in | self._trouble
        writable = self._out | self._trouble
        for fd, ev in (events.items() if type(events) is dict else events):
            if fd == self.listen_fd:
                self._accept()
                continue
            conn = conns.get(fd) if type(fd) is int else None
            if conn is None:
                continue
            if conn.out is not None:
                if ev & writable:
                    self._flush(conn)
                continue  # not read again until its replies are out
            if ev & readable and len(batch) < limit:
                self._read(conn, batch)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: keep serving who is connected
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("stream accept failed: %s", exc)
                return
            if len(self.connections) >= CONNECTIONS_MAX:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(sock, self.max_message_bytes)
            self.connections[conn.fd] = conn
            self.poller.register(conn.fd, self._in)

    def _read(self, conn: Connection, batch: list) -> None:
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close_connection(conn)
            return
        if not n:
            self.close_connection(conn)
            return
        try:
            conn.reader.feed(bytes(self._rview[:n]), batch, conn)
        except FrameTooLarge:
            self.dropped += 1
            self.close_connection(conn)

    # -- writing -------------------------------------------------------------------

    def send(self, conn: Connection, head: bytes, body) -> None:
        """Queue one reply on `conn` and send what the kernel takes now."""
        if conn.closed:
            return
        self._write(conn, b"".join((LENGTH.pack(len(body)), head, body)))

    def send_many(self, conn: Connection, replies: list) -> None:
        """Queue replies, each [..., header, body], on `conn` and send what the kernel takes
        now: one system call for all the replies of a turn, not one each."""
        if conn.closed:
            return
        pack = LENGTH.pack
        parts = []
        for reply in replies:
            body = reply[-1]
            parts += (pack(len(body)), reply[-2], body)
        self._write(conn, b"".join(parts))

    def _write(self, conn: Connection, data: bytes) -> None:
        if conn.out is not None:
            conn.out.append(data)
            return
        try:
            sent = send_now(conn.sock, data)
        except OSError:
            self.close_connection(conn)
            return
        if sent < len(data):
            conn.out, conn.sent = [data], sent
            # Wait for room; stop reading this peer until its replies are out.
            self.poller.modify(conn.fd, self._out)

    def _flush(self, conn: Connection) -> None:
        try:
            if not send_queued(conn):
                return
        except OSError:
            self.close_connection(conn)
            return
        conn.out = None
        self.poller.modify(conn.fd, self._in)

    # -- closing -------------------------------------------------------------------

    def close_connection(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.connections.pop(conn.fd, None)
        if self.poller is not None:
            try:
                self.poller.unregister(conn.fd)
            except KeyError:
                pass
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.connections.values()):
            self.close_connection(conn)
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class StreamLink:
    """A non-blocking connection to the stream socket at `path`, for a poll loop.

    `send` never waits: what the kernel does not take is kept, and
    `wants_write` tells the loop to poll for room (then `flush`). `read`
    returns the whole messages that arrived, and closes the link when the
    peer closed the connection or sent something that is not a frame.
    """

    def __init__(self, path: str, max_message_bytes: int):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)
            sock.connect(path)  # a Unix socket connects at once, or not at all
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.max_message_bytes = max_message_bytes
        self.reader = FrameReader(max_message_bytes)
        self.out: list | None = None
        self.sent = 0  # of out[0]
        self.closed = False
        self.close_reason = ""
        # As StreamServer: one buffer read into, not a fresh READ_BYTES object per recv
        # (which malloc may map and unmap on every call).
        self._rbuf = bytearray(READ_BYTES)
        self._rview = memoryview(self._rbuf)

    @property
    def wants_write(self) -> bool:
        return self.out is not None

    def send(self, head: bytes, body) -> bool:
        """Queue one message and send what the kernel takes now; False once the link is closed."""
        if self.closed:
            return False
        data = b"".join((LENGTH.pack(len(body)), head, body))
        if self.out is not None:
            self.out.append(data)
            return True
        try:
            sent = send_now(self.sock, data)
        except OSError as exc:
            self.close(str(exc))
            return False
        if sent < len(data):
            self.out, self.sent = [data], sent
        return True

    def flush(self) -> None:
        if self.out is None or self.closed:
            return
        try:
            done = send_queued(self)
        except OSError as exc:
            self.close(str(exc))
            return
        if done:
            self.out = None

    def read(self) -> list:
        """The whole messages waiting, as [header, body].

        When the peer closed the connection (or sent something that is not
        a frame) the link is closed, with the reason in `close_reason`, and
        the messages that came before it are still returned.
        """
        out: list = []
        if self.closed:
            return out
        for _ in range(16):  # a bounded turn: the loop has other sockets to serve
            try:
                n = self.sock.recv_into(self._rbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(str(exc))
                break
            if not n:
                self.close("the peer closed the connection")
                break
            try:
                self.reader.feed(bytes(self._rview[:n]), out)
            except FrameTooLarge as exc:
                self.close(str(exc))
                break
            if n < READ_BYTES:
                break
        return out

    def close(self, reason: str = "closed by this side") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.sock.close()


__all__ = ["CONNECTIONS_MAX", "Connection", "StreamLink", "StreamServer", "send_now",
           "send_queued"]
