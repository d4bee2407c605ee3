"""The stream transport: a shard's second listener, a Unix stream socket beside its ipc ROUTER.

Why it exists. Over ZeroMQ a request crosses six threads: the client's
Python thread, its context's I/O thread, the shard's I/O thread, the shard's
loop, and back the same way; on a small machine each hand-over is a wake-up
that costs tens of microseconds, and a bare pyzmq echo server measured about
115 µs per round trip where a plain Unix socket echo took about 15 µs. A
client on the shard's own host therefore talks to a shard over a Unix stream
socket, read and written directly by the shard's loop and by the client's
thread: one hand-over each way, the same as Redis over its socket. ZeroMQ
stays for everything else: tcp endpoints (other hosts, where the transport's
security lives), the coordinator's links, and thin clients.

Where. A shard whose endpoint is `ipc://PATH` listens at `PATH.s`
(`stream_path`); both sides compute the name, so nothing extra is announced.
The file lives in the cluster's owner-only socket directory: who can reach
the ipc endpoint can reach this one, and nobody else.

The frame. A message is the same header and body the ZeroMQ transport sends
as two frames, written back to back after the body's length:

    u32 little-endian body length | header (HEADER_BYTES) | body

A reply echoes the request's header. Replies come back in request order on a
connection, but a client still matches them by header, because a request
that timed out leaves its late reply in the stream. A reader never trusts a
length: one over the message limit ends the connection (the peer is not
speaking this protocol), and a reader holds at most one message plus one
read's worth of bytes.

This module holds the framing and the client's channel; the shard's side
(the listener and its connections) is `inmem.stream_server`.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from .protocol import HEADER_BYTES, oversized_reply

#: the length prefix of a frame
LENGTH = struct.Struct("<I")
#: bytes before a frame's body
PREFIX_BYTES = LENGTH.size + HEADER_BYTES
#: a Unix socket path's limit (sun_path, with its terminating zero)
PATH_MAX = 107
#: bytes asked of the kernel per read (a serving loop reads into one buffer of this size)
READ_BYTES = 256 * 1024
#: bytes a client's channel asks per read: `recv(n)` allocates n bytes each call, and under
#: malloc's mmap threshold (128 KiB) that is heap memory, not pages mapped and unmapped
CHANNEL_READ_BYTES = 64 * 1024

_pack_length = LENGTH.pack
_unpack_length = LENGTH.unpack_from


class StreamClosed(Exception):
    """The peer closed the connection (or it broke) before a whole reply arrived."""


def stream_path(endpoint: str) -> str | None:
    """The stream socket beside a shard's ipc endpoint; None for tcp or a path too long."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[6:] + ".s"
    return path if len(path.encode()) <= PATH_MAX else None


def frame(head: bytes, body) -> bytes:
    """One message as it goes on a stream."""
    return b"".join((_pack_length(len(body)), head, body))


class FrameTooLarge(Exception):
    """A frame's length is over the reader's limit: the peer is not speaking this protocol."""


def split_frames(buf: bytes, limit: int, out: list, peer=None) -> bytes:
    """Append every whole message in `buf` to `out`; return the bytes of an unfinished one.

    Each message is appended as [header, body], or [peer, header, body] when a
    peer is given (the shape a serving loop handles). FrameTooLarge for a
    length over `limit`.
    """
    pos, n = 0, len(buf)
    while n - pos >= PREFIX_BYTES:
        size = _unpack_length(buf, pos)[0]
        if size > limit:
            raise FrameTooLarge(f"a frame claims {size} bytes, over the limit of {limit}")
        end = pos + PREFIX_BYTES + size
        if end > n:
            break
        head, body = buf[pos + 4:pos + PREFIX_BYTES], buf[pos + PREFIX_BYTES:end]
        out.append([head, body] if peer is None else [peer, head, body])
        pos = end
    return buf[pos:] if pos < n else b""


class FrameReader:
    """A serving loop's reader of one connection: whole frames out, the unfinished one kept.

    A frame that fits in a few reads is kept as bytes and joined with the next
    read. One that needs more (a large value) is kept as the list of its reads
    and joined once when whole: re-joining it at every read copied the frame
    again each time, so a 30 MB request cost gigabytes of copying. Either way
    the bytes held are at most what arrived of one frame plus one read, so a
    peer that announces a large frame and sends nothing makes nothing be
    allocated.
    """

    __slots__ = ("limit", "buf", "parts", "have", "need")

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = b""  # the start of an unfinished frame
        self.parts: list | None = None  # a large frame's reads so far
        self.have = self.need = 0

    def feed(self, data: bytes, out: list, peer=None) -> None:
        """Take one read's bytes: every frame they finish goes onto `out` (as `split_frames`
        appends them). FrameTooLarge for a length over the limit."""
        parts = self.parts
        if parts is not None:
            # Never more than the frame: what follows it is the next frame's.
            want = self.need - self.have
            if len(data) < want:
                parts.append(data)
                self.have += len(data)
                return
            parts.append(data[:want] if len(data) > want else data)
            whole = b"".join(parts)
            self.parts = None
            out.append([whole[LENGTH.size:PREFIX_BYTES], whole[PREFIX_BYTES:]] if peer is None
                       else [peer, whole[LENGTH.size:PREFIX_BYTES], whole[PREFIX_BYTES:]])
            data = data[want:]
            if not data:
                return
        buf = self.buf + data if self.buf else data
        rest = split_frames(buf, self.limit, out, peer)
        if len(rest) >= PREFIX_BYTES:
            need = PREFIX_BYTES + _unpack_length(rest)[0]
            if need - len(rest) > READ_BYTES:
                self.parts, self.have, self.need = [rest], len(rest), need
                rest = b""
        self.buf = rest


def split_replies(buf: bytes, limit: int, out: list) -> tuple[bytes, int]:
    """`split_frames` for a client's replies, where one over `limit` fails its own request.

    Such a reply is not kept: once its header is in, [header, `oversized_reply`]
    is appended in its place, and its bytes are skipped. Returns (the bytes of
    an unfinished reply, how many bytes of a skipped one are still to come, to
    be dropped as they arrive).
    """
    pos, n = 0, len(buf)
    while n - pos >= PREFIX_BYTES:
        size = _unpack_length(buf, pos)[0]
        end = pos + PREFIX_BYTES + size
        if size > limit:
            out.append([buf[pos + 4:pos + PREFIX_BYTES], oversized_reply(size, limit)])
            if end > n:
                return b"", end - n
        elif end > n:
            break
        else:
            out.append([buf[pos + 4:pos + PREFIX_BYTES], buf[pos + PREFIX_BYTES:end]])
        pos = end
    return (buf[pos:] if pos < n else b""), 0


class StreamChannel:
    """A client's connection to one shard's stream socket, used by one thread.

    `recv` returns `[header, body]` like a DEALER's recv_multipart, so the
    client's request/reply matching is the same for both transports.

    `wake`: a descriptor that another thread makes readable to interrupt
    this channel's waits (its client is closing): such a wait then ends with
    StreamClosed. The other thread never touches this channel's socket, which
    only its own thread may close. A `recv` watches it when asked to
    (`wake=True`): a wait known to be short (a first look for a reply) polls
    the socket alone, one descriptor fewer per call.
    """

    __slots__ = ("sock", "shard", "buf", "closed", "_wait", "_woken", "_wake")

    def __init__(self, path: str, shard: int, timeout: float, wake: int | None = None):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            # Non-blocking from here, waiting in our own poll: a socket with a
            # timeout makes Python poll before every send and recv, and every
            # change of timeout is one more system call.
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.shard = shard
        #: closed by `close` (an attribute, not a question to the socket: it is read per call)
        self.closed = False
        self.buf = b""  # bytes read past the last whole message
        self._wait = select.poll()
        self._wait.register(sock, select.POLLIN)
        self._wake = wake
        #: the socket and the wake descriptor
        self._woken = self._wait
        if wake is not None:
            self._woken = select.poll()
            self._woken.register(sock, select.POLLIN)
            self._woken.register(wake, select.POLLIN)

    def close(self, linger=None) -> None:
        self.sock.close()
        self.closed = True

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, head: bytes, body, deadline: float) -> None:
        """Send one message; StreamClosed if the shard is gone, TimeoutError past the deadline."""
        data = frame(head, body)
        try:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise StreamClosed(str(exc)) from None
            if sent < len(data):
                self._send_rest(data, sent, deadline)
        except (StreamClosed, TimeoutError):
            raise
        except BaseException:
            # Interrupted (Ctrl-C, an exception from a signal handler), perhaps with part
            # of the frame out: what follows on this stream could complete that frame
            # with another request's bytes. It ends here; the shard drops an unfinished
            # frame unapplied, and the next call connects again.
            if not self.closed:
                self.close()
            raise

    def _send_rest(self, data: bytes, sent: int, deadline: float) -> None:
        """The rest of a frame the socket's buffer did not take at once.

        Replies that arrive meanwhile are read into `buf`: a shard stops
        reading a connection whose replies the kernel cannot take, so a client
        that sends a long pipeline before reading would otherwise wait on a
        shard that waits on it.
        """
        sock = self.sock
        out = select.poll()
        out.register(sock, select.POLLOUT | select.POLLIN)
        if self._wake is not None:
            out.register(self._wake, select.POLLIN)
        got: list = []  # joined once at the end: a long wait may read megabytes
        try:
            with memoryview(data) as view:
                while sent < len(data):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if sent:
                            # Part of the frame is out: the stream is out of step, so
                            # it ends here (the shard drops an unfinished frame unapplied).
                            self.close()
                        raise TimeoutError
                    if not out.poll(_ms(remaining)):
                        continue
                    try:
                        sent += sock.send(view[sent:])
                        continue
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise StreamClosed(str(exc)) from None
                    try:
                        chunk = sock.recv(CHANNEL_READ_BYTES)
                    except BlockingIOError:
                        self._check_wake()
                        continue
                    except OSError as exc:
                        raise StreamClosed(str(exc)) from None
                    if not chunk:
                        raise StreamClosed("the shard closed the connection")
                    got.append(chunk)
        finally:
            if got:
                self.buf = b"".join([self.buf, *got])

    def _check_wake(self) -> None:
        """StreamClosed if the wait just ended was the wake descriptor's doing.

        Asked only when a wait ended with nothing to read or room to write:
        the wake descriptor stays readable once set, so every later wait would
        end at once too.
        """
        wake = self._wake
        if wake is not None:
            probe = select.poll()
            probe.register(wake, select.POLLIN)
            if probe.poll(0):
                raise StreamClosed("the client is closing")

    def ready(self) -> bool:
        """Whether a whole message is already buffered (a poll of the socket would miss it)."""
        buf = self.buf
        return len(buf) >= PREFIX_BYTES and len(buf) >= PREFIX_BYTES + _unpack_length(buf)[0]

    def recv(self, deadline: float, max_bytes: int, wake: bool = False,
             until: float | None = None):
        """The next message as [header, body]; None once the deadline has passed.

        A reply over `max_bytes` is read past, not kept: its body is then
        `oversized_reply`, the ProtocolError its request raises. StreamClosed
        when the shard closed the connection, or (`wake`) when the wake
        descriptor was set. `until`: when `deadline` only ends one slice of a
        longer wait, the wait's own end; a large message that began arriving
        is read on to it (stopping part way would end the stream).
        """
        if until is None or until < deadline:
            until = deadline
        wait = self._woken if wake else self._wait
        buf = self.buf
        while True:
            if len(buf) >= PREFIX_BYTES:
                size = _unpack_length(buf)[0]
                end = PREFIX_BYTES + size
                if size > max_bytes:
                    # Not kept: its request fails alone, and the stream goes on after it.
                    head = buf[LENGTH.size:PREFIX_BYTES]
                    if len(buf) >= end:
                        self.buf = buf[end:]
                    else:
                        self.buf = b""
                        if not self._skip(end - len(buf), until):
                            return None
                    return [head, oversized_reply(size, max_bytes)]
                if len(buf) >= end:
                    self.buf = buf[end:]
                    return [buf[LENGTH.size:PREFIX_BYTES], buf[PREFIX_BYTES:end]]
                if end - len(buf) > CHANNEL_READ_BYTES:
                    self.buf = b""
                    return self._recv_large(buf, end, until)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.buf = buf
                return None
            # A reply is never there yet right after its request: wait first.
            if not wait.poll(_ms(remaining)):
                continue
            try:
                data = self.sock.recv(CHANNEL_READ_BYTES)
            except BlockingIOError:
                self._check_wake()
                continue
            except OSError as exc:
                raise StreamClosed(str(exc)) from None
            if not data:
                raise StreamClosed("the shard closed the connection")
            buf = buf + data if buf else data

    def _skip(self, count: int, deadline: float) -> bool:
        """Read and drop the next `count` bytes; False (the stream closed) past the deadline."""
        scratch = memoryview(bytearray(min(count, 1 << 20)))
        while count:
            n = self._read_into(scratch[:min(count, len(scratch))], deadline)
            if n is None:
                return False
            count -= n
        return True

    def _recv_large(self, start: bytes, end: int, deadline: float):
        """A message too big for a few reads: into one buffer of its size, no re-copying."""
        whole = bytearray(end)
        view = memoryview(whole)
        have = len(start)
        view[:have] = start
        while have < end:
            n = self._read_into(view[have:], deadline)
            if n is None:
                return None
            have += n
        return [bytes(view[LENGTH.size:PREFIX_BYTES]), view[PREFIX_BYTES:]]

    def _read_into(self, view, deadline: float) -> int | None:
        """One read into `view` once the socket has bytes (how many: 0 when it had none
        after all); None past the deadline, which ends the stream (it is then in the
        middle of a message, out of step); StreamClosed when the shard is gone."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.close()
            return None
        if not self._woken.poll(_ms(remaining)):
            return 0
        try:
            n = self.sock.recv_into(view)
        except BlockingIOError:
            self._check_wake()
            return 0
        except OSError as exc:
            raise StreamClosed(str(exc)) from None
        if n == 0:
            raise StreamClosed("the shard closed the connection")
        return n


def _ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up so a wait never ends early."""
    return int(seconds * 1000) + 1


__all__ = ["LENGTH", "PREFIX_BYTES", "FrameTooLarge", "StreamChannel", "StreamClosed", "frame",
           "split_frames", "split_replies", "stream_path"]
