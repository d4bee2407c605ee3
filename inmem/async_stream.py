"""The stream transport for the asyncio client: one Unix stream connection, many requests in flight.

The framing is `inmem.stream`'s (`u32 length | header | body`); this module
is the asyncio side of a client's connection to a shard's (or the
coordinator's) stream socket, as `StreamChannel` is the blocking side.

A connection is an `asyncio.BufferedProtocol`: the loop reads into one
buffer the connection keeps (a plain Protocol is handed a fresh 256 KiB
bytes object per read, which malloc may map and unmap each time: up to
~12 µs a reply), it cuts what arrived into whole messages and resolves the request
registered under each reply's header (which holds a request id unique to
the client), so replies may be awaited in any order by any number of
coroutines. The usual read, one whole reply and nothing else, is cut where
it lies in that buffer: only its body is copied out. A request's whole
frame is handed to the transport before its caller first waits. It is
written at once unless one was already written
since the connection last heard back (or last flushed): then it is queued,
with the others of its turn of the loop, and they are joined and written
FLUSH_FRAMES at a time, the last of them at the end of the turn. So a caller
making one call after another pays for no extra turn of the loop, and a
thousand gathered calls make 17 system calls, not a thousand, with the shard
starting on the first requests while the client is still making the others. A caller
cancelled at any await therefore never leaves part of a frame behind, only
a reply that finds no one registered and is dropped.
Nothing is read on behalf of a particular caller: a caller that has just
written its request may `look` (read what the socket holds already, rather
than at the loop's next turn), and what it reads is cut and handed on the
same way, whoever it answers.

A reply over the client's `max_message_bytes` fails its own request with
ProtocolError and is read past without being kept; the connection and the
other requests on it go on.

When the connection ends (the shard exited, or closed it), every request
still waiting on it fails with ShardUnavailable, and
the client makes a new connection for the next request. A request offered
to a connection already known to have ended is refused (nothing of it was
sent), so the client may send it again on a new connection, as the blocking
client does.
"""

from __future__ import annotations

import asyncio
import select
import struct

from .protocol import HEADER_BYTES
from .stream import CHANNEL_READ_BYTES, LENGTH, PREFIX_BYTES, split_replies

_unpack_length = LENGTH.unpack_from
_pack_length = LENGTH.pack
#: the length and the header of the message at the front of a buffer, in one call
_length_and_head = struct.Struct(f"{LENGTH.format}{HEADER_BYTES}s").unpack_from
#: requests of one turn written together at most: a turn that sends a thousand
#: writes them in chunks, so the shard works on the first while the rest are made
FLUSH_FRAMES = 64
FLUSH_PIECES = 3 * FLUSH_FRAMES


class StreamConnection(asyncio.BufferedProtocol):
    """One client connection to a stream socket, and the requests waiting on it.

    `pending` maps a request's header to an object with `reply`, `error` and
    `fut` (the asyncio client's request record): a reply sets `reply` and
    resolves `fut`; the end of the connection sets `error` on every request
    that has neither.
    """

    def __init__(self, loop, shard: int | None, max_bytes: int, on_lost):
        self.loop = loop
        self.shard = shard
        self.max_bytes = max_bytes
        self.pending: dict = {}
        self.transport: asyncio.Transport | None = None
        #: the connection's socket, for `look` (None: only the transport reads it)
        self.sock = None
        self._ready = None  # a poll of it
        #: why the connection ended (None while it is up)
        self.lost: str | None = None
        self.check: asyncio.Task | None = None
        self.watch = None  # the asyncio client's timer for this connection, and when it fires
        self.watch_at = None
        self._on_lost = on_lost
        self._chunks: list = []
        self._have = 0
        self._need = PREFIX_BYTES  # bytes that make the next whole message (at least)
        self._skip = 0  # bytes still to drop of a reply over max_bytes
        self._out: list = []  # pieces of the frames queued in this turn of the loop
        #: a frame was written at once since the last reply or flush: the next ones join _out
        self._turn = False
        self._flush_due = False  # _flush is scheduled
        self._rbuf = bytearray(CHANNEL_READ_BYTES)
        self._rview = memoryview(self._rbuf)

    # -- asyncio.BufferedProtocol ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes >= PREFIX_BYTES and not self._have and not self._skip:
            size, head = _length_and_head(self._rbuf)
            if nbytes == PREFIX_BYTES + size and size <= self.max_bytes:
                # The usual read: one whole reply and nothing else (a caller waits
                # for each reply before its next request). Only its body is copied.
                self._turn = False  # as data_received says
                req = self.pending.get(head)
                if req is not None and req.reply is None:
                    req.reply = self._rview[PREFIX_BYTES:nbytes].tobytes()
                    if not req.fut.done():
                        req.fut.set_result(None)
                return
        self.data_received(bytes(self._rview[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """What arrived (`buffer_updated` hands it over): whole messages resolve their requests."""
        # A reply came back: this is a later turn than the request that made
        # _turn true, so the next request is written at once again.
        self._turn = False
        skip = self._skip
        if skip:
            # The rest of a reply over max_bytes, which failed its request already.
            if len(data) <= skip:
                self._skip = skip - len(data)
                return
            data = data[skip:]
            self._skip = 0
        chunks = self._chunks
        chunks.append(data)
        self._have += len(data)
        if self._have < self._need:
            return  # a message in progress: joined once it is whole, not at every read
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        out: list = []
        rest, self._skip = split_replies(buf, self.max_bytes, out)
        pending = self.pending
        for head, body in out:
            req = pending.get(head)
            if req is not None and req.reply is None:
                req.reply = body
                if not req.fut.done():
                    req.fut.set_result(None)
        chunks.clear()
        self._have = len(rest)
        if rest:
            chunks.append(rest)
            self._need = (PREFIX_BYTES + _unpack_length(rest)[0] if len(rest) >= PREFIX_BYTES
                          else PREFIX_BYTES)
        else:
            self._need = PREFIX_BYTES

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self._end(f"{exc}" if exc is not None else "the peer closed the connection")

    # -- the client's side -------------------------------------------------------------

    def send(self, head: bytes, body) -> bool:
        """Send or queue one request whole; False when the connection had already ended
        (nothing of it was sent)."""
        transport = self.transport
        if self.lost is not None or transport is None or transport.is_closing():
            return False
        if self._turn or self._out:
            # Behind frames still queued too, so a connection's requests go in order.
            out = self._out
            if not self._flush_due:
                self._flush_due = True
                self.loop.call_soon(self._flush)
            # Its pieces, joined once with the rest of the turn's.
            out += (_pack_length(len(body)), head, body)
            if len(out) >= FLUSH_PIECES:
                # The shard starts on these while the rest of the turn is packed.
                transport.write(b"".join(out))
                out.clear()
            return True
        self._turn = True
        idle = transport.get_write_buffer_size() == 0
        transport.write(b"".join((_pack_length(len(body)), head, body)))  # stream.frame
        # With nothing queued before it the write is tried at once: a
        # connection found broken right there took none of this frame.
        return not (idle and transport.is_closing())

    def read_also(self, sock) -> None:
        """Let `look` read `sock`, this connection's socket (the transport's too)."""
        self._ready = select.poll()
        self._ready.register(sock, select.POLLIN)
        self.sock = sock

    def look(self) -> None:
        """Take a reply already in the socket now, rather than at the loop's next turn.

        Asked right after a request was written: a shard that answered while
        the caller was still here has its reply handed on at once, and the
        caller's await finds it done (no turn of the loop to wait for it, nor
        one to be woken in). One poll when nothing is there, which costs less
        than a read that fails. A connection found broken ends here, as the
        transport would end it; the end of the stream is left to the
        transport, which reads it again at its next turn.
        """
        if self.sock is None or self._out or self.lost is not None or not self._ready.poll(0):
            return  # nothing there, or this turn's frames are not written yet
        try:
            nbytes = self.sock.recv_into(self._rview)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(str(exc))
            return
        if nbytes:
            self.buffer_updated(nbytes)

    def _flush(self) -> None:
        self._turn = self._flush_due = False
        out = self._out
        if out and self.lost is None:
            self.transport.write(b"".join(out))
        out.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._end("the database is closed")

    def _end(self, why: str) -> None:
        if self.lost is not None:
            return
        self.lost = why
        self.sock = self._ready = None  # (its descriptor may be another socket's soon)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self._chunks.clear()
        self._out.clear()
        if self.watch is not None:
            self.watch.cancel()
            self.watch = self.watch_at = None
        self._on_lost(self, why)


__all__ = ["StreamConnection"]
