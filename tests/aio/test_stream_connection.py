"""The asyncio side of the stream transport, alone: framing, matching by header, the end of a connection."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

import inmem
from inmem.async_client import _Request
from inmem.async_stream import FLUSH_FRAMES, StreamConnection
from inmem.protocol import unpack_reply
from inmem.stream import frame


class _Transport(asyncio.Transport):
    """Records what is written; `closing` as a real transport reports it."""

    def __init__(self):
        super().__init__()
        self.written: list = []
        self.closing = False

    def write(self, data):
        self.written.append(bytes(data))

    def is_closing(self):
        return self.closing

    def abort(self):
        self.closing = True

    def get_write_buffer_size(self):
        return 0


def _head(n: int) -> bytes:
    return struct.pack("<IQ", 7, n)


def _conn(loop, lost: list, max_bytes: int = 1 << 20) -> StreamConnection:
    conn = StreamConnection(loop, 0, max_bytes, lambda c, why: lost.append(why))
    conn.connection_made(_Transport())
    return conn


def _register(conn, loop, n):
    req = _Request(loop.create_future(), float("inf"))
    conn.pending[_head(n)] = req
    return req


def test_replies_in_any_order_and_in_pieces_reach_their_own_request():
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn = _conn(loop, lost)
        reqs = {n: _register(conn, loop, n) for n in range(5)}
        stream = b"".join(frame(_head(n), b"body-%d" % n) for n in (3, 0, 4, 1, 2))
        # One byte at a time, then the rest: only whole messages are handed on.
        for i in range(20):
            conn.data_received(stream[i:i + 1])
        conn.data_received(stream[20:])
        assert {n: r.reply for n, r in reqs.items()} == {n: b"body-%d" % n for n in range(5)}
        assert all(r.fut.done() for r in reqs.values())
        assert not lost
    asyncio.run(main())


def _read_into(conn, data: bytes) -> None:
    """What the loop does with a BufferedProtocol: read into its buffer, say how much came."""
    while data:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]


def test_the_loop_reads_into_the_connections_own_buffer():
    # The loop reuses one buffer for every read (no fresh 256 KiB object per reply); a
    # reply larger than the buffer arrives in several reads and is still whole.
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        assert isinstance(conn, asyncio.BufferedProtocol)
        first = conn.get_buffer(-1)
        big = bytes(range(256)) * (3 * len(first) // 256)
        reqs = {n: _register(conn, loop, n) for n in range(3)}
        _read_into(conn, frame(_head(1), b"small") + frame(_head(0), big))
        _read_into(conn, frame(_head(2), b"after"))
        assert conn.get_buffer(-1) is first
        assert [reqs[n].reply for n in range(3)] == [big, b"small", b"after"]
    asyncio.run(main())


def test_a_reply_nobody_waits_for_is_dropped_and_the_next_one_still_arrives():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        req = _register(conn, loop, 2)
        conn.data_received(frame(_head(1), b"late") + frame(_head(2), b"mine"))
        assert req.reply == b"mine"
    asyncio.run(main())


def test_the_first_frame_of_a_turn_goes_at_once_and_the_rest_in_chunks_of_whole_frames():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        chunk = FLUSH_FRAMES
        total = 2 * chunk + 10
        for n in range(total):
            assert conn.send(_head(n), b"x" * n)

        def frames(lo, hi):
            return b"".join(frame(_head(n), b"x" * n) for n in range(lo, hi))
        # The first at once; then each full chunk as it fills, while the turn goes on.
        assert conn.transport.written == [frames(0, 1), frames(1, 1 + chunk),
                                          frames(1 + chunk, 1 + 2 * chunk)]
        await asyncio.sleep(0)
        # The rest at the end of the turn.
        assert conn.transport.written[3:] == [frames(1 + 2 * chunk, total)]
        # The next turn starts over: its first frame goes at once again.
        assert conn.send(_head(100), b"y")
        assert conn.transport.written[-1] == frame(_head(100), b"y")
    asyncio.run(main())


def test_a_reply_lets_the_next_request_go_at_once_and_no_turn_is_spent_on_a_lone_one():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        ready = len(loop._ready)
        assert conn.send(_head(1), b"a")
        # A lone request schedules nothing: the loop has no extra turn to take for it.
        assert len(loop._ready) == ready
        conn.data_received(frame(_head(1), b"reply"))
        assert conn.send(_head(2), b"b")
        assert conn.transport.written == [frame(_head(1), b"a"), frame(_head(2), b"b")]
    asyncio.run(main())


def test_a_request_made_while_another_waits_goes_at_the_end_of_its_turn():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        assert conn.send(_head(1), b"a")
        await asyncio.sleep(0)  # a later turn, no reply yet
        assert conn.send(_head(2), b"b")
        assert conn.send(_head(3), b"c")
        assert conn.transport.written == [frame(_head(1), b"a")]
        await asyncio.sleep(0)
        assert conn.transport.written == [frame(_head(1), b"a"),
                                          frame(_head(2), b"b") + frame(_head(3), b"c")]
        # That flush ended the turn: the next request goes at once.
        assert conn.send(_head(4), b"d")
        assert conn.transport.written[-1] == frame(_head(4), b"d")
    asyncio.run(main())


def test_requests_go_in_the_order_they_were_made_even_when_a_reply_comes_between():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])
        assert conn.send(_head(1), b"a")  # at once
        assert conn.send(_head(2), b"b")  # queued for the end of the turn
        conn.data_received(frame(_head(1), b"reply"))
        assert conn.send(_head(3), b"c")  # behind b, not ahead of it
        await asyncio.sleep(0)
        assert b"".join(conn.transport.written) == b"".join(
            frame(_head(n), x) for n, x in ((1, b"a"), (2, b"b"), (3, b"c")))
    asyncio.run(main())


def test_a_write_the_broken_connection_refused_at_once_reports_nothing_sent():
    async def main():
        loop = asyncio.get_running_loop()
        conn = _conn(loop, [])

        def refuse(data):
            conn.transport.closing = True  # as a transport whose send failed with EPIPE
        conn.transport.write = refuse
        assert conn.send(_head(1), b"x") is False
    asyncio.run(main())


def test_a_reply_over_the_limit_fails_its_request_alone_and_is_read_past():
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn = _conn(loop, lost, max_bytes=1000)
        reqs = {n: _register(conn, loop, n) for n in (1, 2, 3)}
        stream = (frame(_head(1), b"a") + frame(_head(2), b"x" * 5000)
                  + frame(_head(3), b"c"))
        # In pieces of every size, the big body split across many of them.
        for start in range(0, len(stream), 777):
            conn.data_received(stream[start:start + 777])
        assert conn.lost is None and not lost and not conn.transport.closing
        assert reqs[1].reply == b"a" and reqs[3].reply == b"c"
        with pytest.raises(inmem.ProtocolError, match="over this client's max_message_bytes"):
            raise unpack_reply(reqs[2].reply)
        assert all(r.fut.done() for r in reqs.values())
        # Header and all in one read, then nothing of it left behind.
        nxt = _register(conn, loop, 4)
        conn.data_received(frame(_head(5), b"y" * 2000) + frame(_head(4), b"d"))
        assert nxt.reply == b"d" and conn.lost is None
        assert conn.send(_head(6), b"x") is True
    asyncio.run(main())


@pytest.mark.parametrize("how", ["eof", "error"])
def test_the_end_of_the_connection_is_reported_once(how):
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn = _conn(loop, lost)
        if how == "eof":
            assert conn.eof_received() is False
            conn.connection_lost(None)
        else:
            conn.connection_lost(ConnectionResetError("reset"))
        conn.connection_lost(None)
        assert len(lost) == 1 and conn.lost == lost[0]
    asyncio.run(main())


def _read_once(conn, data: bytes) -> None:
    """One read of the loop that brought exactly `data`."""
    buf = conn.get_buffer(-1)
    buf[:len(data)] = data
    conn.buffer_updated(len(data))


def test_a_lone_whole_reply_in_one_read_and_every_other_shape_of_read_reach_their_request():
    # The usual read (one whole reply, nothing else) is cut without the general
    # splitter; the reads around it (a piece, several replies, the rest of one,
    # a reply nobody waits for, one over the limit) must still come out right.
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn = _conn(loop, lost, max_bytes=100)
        reqs = {n: _register(conn, loop, n) for n in range(1, 9)}
        _read_once(conn, frame(_head(1), b"one"))
        assert reqs[1].reply == b"one" and type(reqs[1].reply) is bytes
        assert reqs[1].fut.done() and not reqs[2].fut.done()
        # The rest of a reply that looks like a whole one is still the rest of it.
        inner = frame(_head(3), b"inner")
        two = frame(_head(2), inner)
        _read_once(conn, two[:16])
        _read_once(conn, two[16:])
        assert reqs[2].reply == inner and reqs[3].reply is None
        _read_once(conn, frame(_head(3), b"three"))
        assert reqs[3].reply == b"three"
        # Two whole replies in one read.
        _read_once(conn, frame(_head(4), b"four") + frame(_head(5), b"five"))
        assert (reqs[4].reply, reqs[5].reply) == (b"four", b"five")
        # A reply nobody waits for is dropped; the next one still arrives.
        _read_once(conn, frame(_head(99), b"late"))
        _read_once(conn, frame(_head(6), b"six"))
        assert reqs[6].reply == b"six"
        # Over the limit, whole in one read: its request fails alone.
        _read_once(conn, frame(_head(7), b"x" * 101))
        with pytest.raises(inmem.ProtocolError, match="over this client's max_message_bytes"):
            raise unpack_reply(reqs[7].reply)
        # Over the limit, its header in one read and the rest (looking like a whole
        # reply) in the next: read past, not taken for a reply.
        _read_once(conn, frame(_head(99), frame(_head(8), b"y" * 90))[:16])
        _read_once(conn, frame(_head(8), b"y" * 90))
        assert reqs[8].reply is None
        _read_once(conn, frame(_head(8), b""))
        assert reqs[8].reply == b"" and conn.lost is None and not lost
        # The buffer is the connection's own, reused: a reply kept is a copy of it.
        _read_once(conn, frame(_head(99), b"zzz"))
        assert reqs[1].reply == b"one"
    asyncio.run(main())


async def _socket_conn(loop, lost: list):
    """A StreamConnection on one end of a real socket pair, read by the loop and by `look`;
    the other end, blocking, plays the shard."""
    mine, peer = socket.socketpair()
    mine.setblocking(False)
    _, conn = await loop.create_unix_connection(
        lambda: StreamConnection(loop, 0, 1 << 20, lambda c, why: lost.append(why)), sock=mine)
    conn.read_also(mine)
    return conn, peer


def test_a_reply_already_waiting_when_the_call_looks_is_taken_without_a_turn_of_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn, peer = await _socket_conn(loop, lost)
        req = _register(conn, loop, 1)
        conn.look()  # nothing there: nothing happens
        assert not req.fut.done()
        assert conn.send(_head(1), b"question")
        assert peer.recv(1000) == frame(_head(1), b"question")
        peer.sendall(frame(_head(1), b"answer"))
        conn.look()  # no await since: the loop has not turned
        assert req.fut.done() and req.reply == b"answer"
        # The next request goes at once, and a reply in pieces is still joined.
        req2 = _register(conn, loop, 2)
        assert conn.send(_head(2), b"again")
        assert peer.recv(1000) == frame(_head(2), b"again")
        whole = frame(_head(2), b"second answer")
        peer.sendall(whole[:7])
        conn.look()
        assert not req2.fut.done()
        peer.sendall(whole[7:])
        await asyncio.wait_for(req2.fut, 10)  # (a hang detector) read by the loop this time
        assert req2.reply == b"second answer" and not lost
        conn.close()
        peer.close()
    asyncio.run(main())


def test_a_connection_the_look_finds_broken_fails_its_requests_and_the_end_is_left_to_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        lost: list = []
        conn, peer = await _socket_conn(loop, lost)
        _register(conn, loop, 1)
        assert conn.send(_head(1), b"unread")
        peer.close()  # with our request unread: the connection is reset
        conn.look()
        assert conn.lost is not None and len(lost) == 1
        assert conn.send(_head(2), b"x") is False
        # A peer that closes cleanly: the look leaves the end of the stream to the
        # transport, which reports it at its next read.
        conn2, peer2 = await _socket_conn(loop, lost)
        peer2.close()
        conn2.look()
        assert conn2.lost is None
        for _ in range(1000):  # (a hang detector)
            if conn2.lost is not None:
                break
            await asyncio.sleep(0.01)
        assert conn2.lost == "the peer closed the connection" and len(lost) == 2
    asyncio.run(main())
