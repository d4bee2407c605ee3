"""The asyncio cluster client: one connection, any number of calls in flight, each matched by id.

It routes as the blocking client does (`inmem.routing` holds the shared
decisions): run operations go straight to the owning shard's socket by the
coordinator's slot map, a SlotMoved reply reloads the map and sends once
more, pipelines go as per-shard BATCH messages, and everything else is
answered by the coordinator. The errors and their messages are the blocking
client's.

Transport, as the blocking client's: a shard or coordinator on this host (an
ipc:// endpoint) is reached through its Unix stream socket
(`inmem.async_stream`), read by the event loop itself with no ZeroMQ thread
in between; tcp endpoints (with Curve when keys are given), cluster
requests, and every path when `stream=False`, use ZeroMQ: one DEALER socket
per peer, made with pyzmq's asyncio sockets. Either way one connection per
peer is shared by every coroutine of the loop. A call registers its request
under the request's header (which holds a request id unique to the client),
sends, and awaits its own future; whatever reads the connection (the stream
protocol, or one reader task per ZeroMQ socket) resolves the future
registered under each reply's header. So replies may come back in any order,
1,000 gathered calls share one socket, and a call that is cancelled (or
times out) only removes its registration: its reply, if it ever comes, finds
no one and is dropped, and no later call can receive it. Nothing is ever
read on behalf of a particular caller, so cancelling at any await leaves the
connection as it was.

On a stream connection a call looks once, right after its request is
written, for a reply already in the socket (a shard that answered while the
caller was still sending): it is read there and the await finds it done, with
no turn of the loop to wait for it nor one to wake the caller. So a
coroutine whose replies keep being there first never lets the loop turn:
after `_INLINE_RUN` such calls in a row, the next one waits for its reply as
any other, and other tasks run, and a cancel or a timeout reaches it.

The reader task waits on the asyncio socket, the only waiter on it; sends
and the drains go through the same socket's blocking shadow with NOBLOCK,
which costs one call instead of a future per message. Since ZeroMQ signals
readiness by edges and a send can take the edge of a reply that arrived
meanwhile, each loop turn that sent on a socket ends with one drain of it.

A stream connection that ends fails every request waiting on it at once
with ShardUnavailable (it may or may not have been applied); the next
request opens a new connection, and a request whose write found the
connection already broken (nothing of it was sent) goes once more on a new
one, as the blocking client's does.

Deadlines are watched by one timer per connection, not one per request (a
timer per request costs as much as the rest of the call): it wakes the
requests whose time has come and sets itself for the next. A direct request
that has no reply after `DIRECT_CHECK_S` asks the coordinator (one question per shard
however many requests wait) whether its shard is down or is a new process;
if so, every request waiting on that shard fails at once with
ShardUnavailable, as the blocking client's does.

Closing fails every request still waiting with the closed error. A task
that was not waiting for a reply at that moment (sleeping before a retry,
connecting, between the chunks of a pipeline) gets the same error at its
next step, before it touches a socket that close() has closed: the sockets
close with the client, not with the last task.

An AsyncClusterBackend belongs to the event loop that connected it. close()
from another thread's loop is handed to that loop while it runs; once it
has ended, the sockets are closed from wherever close() is called.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import socket
import weakref

import zmq
import zmq.asyncio

import inmem.protocol as protocol
from .async_stream import StreamConnection
from .errors import ClusterNotReady, InmemError, InvalidURL, ShardUnavailable, SlotMoved, Timeout
from .ops import shape
from .protocol import (HEADER, KIND_BATCH, KIND_CLUSTER, KIND_OP, VERSION, header,
                       oversized_reply, pack_checked, slot_of, unpack_reply)
from .routing import (BATCH_CHUNK_OPS, DIRECT_CHECK_S, LOCAL_RECONNECT_MS, NOT_READY_PAUSE_S,
                      READY_POLL_S, REFRESH_MAX_S, SlotMap, apply_batch_reply, bare, batch_segments,
                      check_client_options, check_number, check_url, chunks, no_reply, not_sent,
                      packed_call, plan_batch, shard_down, shard_gone, shard_refused, status_entry)
from .stream import stream_path

_header_unpack = HEADER.unpack
_pack_header = HEADER.pack
_RID_MASK = 0xFFFFFFFFFFFFFFFF
#: calls in a row that may end without the loop turning (their reply was already
#: there): the next one waits for its reply, so other tasks run, a cancel or a
#: timeout reaches the caller, at least this often
_INLINE_RUN = 16
#: runs whose slot a client remembers (a crc32c per call saved), before it starts over
_SLOTS_KEPT = 4096

_running_loop = asyncio.get_running_loop
#: no reply yet: the request goes (again) through _roundtrip
_AGAIN = object()

#: how long close() from another thread waits for the connection's own loop to close it
_CLOSE_THERE_S = 10.0

#: how long a direct send waits for a shard that is not connected before asking after it
_SEND_WAIT_S = 0.2


class _Request:
    """One request in flight: the future its caller awaits, what resolved it, when to wake it."""

    __slots__ = ("fut", "reply", "error", "wake_at")

    def __init__(self, fut, wake_at: float):
        self.fut = fut
        self.reply = None
        self.error = None
        self.wake_at = wake_at


_NEVER = float("inf")


def _watch(chan, loop, at: float) -> None:
    """Make sure the connection's timer fires by `at`."""
    if chan.watch_at is None or at < chan.watch_at:
        if chan.watch is not None:
            chan.watch.cancel()
        chan.watch_at = at
        chan.watch = loop.call_at(at, _sweep, chan, loop)


def _sweep(chan, loop) -> None:
    """The connection's timer: wake every request whose time has come; set it for the next."""
    chan.watch = chan.watch_at = None
    now = loop.time()
    nxt = _NEVER
    for req in chan.pending.values():
        at = req.wake_at
        if at <= now:
            req.wake_at = _NEVER  # woken once; _wait_late keeps its own time from here
            if not req.fut.done():
                req.fut.set_result(None)
        elif at < nxt:
            nxt = at
    if nxt < _NEVER:
        _watch(chan, loop, nxt)


class _Channel:
    """A DEALER socket to one peer, its reader task and the requests waiting on it."""

    __slots__ = ("sock", "shadow", "shard", "pending", "reader", "check", "poke_due", "watch",
                 "watch_at", "max_bytes", "closed", "__weakref__")

    def __init__(self, sock, shard, max_bytes: int):
        self.sock = sock
        #: a reply longer than this fails its request (the stream transport's limit too)
        self.max_bytes = max_bytes
        # The same socket seen as a blocking one: the reader drains every
        # reply that is ready through it, without a future per reply.
        self.shadow = zmq.Socket.shadow(sock.underlying)
        self.shard = shard
        self.pending: dict = {}
        self.reader: asyncio.Task | None = None
        self.check: asyncio.Task | None = None
        self.poke_due = False
        self.watch = None  # the timer (see _sweep) and when it fires
        self.watch_at = None
        #: set before the socket closes: the shadow cannot tell, and must not be used after
        self.closed = False


def _wake(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _drain(chan: _Channel) -> None:
    """Hand every reply that is ready to its request; replies nobody waits for are dropped."""
    pending = chan.pending
    recv = chan.shadow.recv_multipart
    noblock = zmq.NOBLOCK
    while True:
        try:
            frames = recv(noblock)
        except zmq.Again:
            return
        if len(frames) == 2:
            _deliver(chan, pending.get(frames[0]), frames[1])


def _deliver(chan: _Channel, req, body: bytes) -> None:
    """Hand `body` to the request it answers (None: nobody waits for it any more)."""
    if req is not None and req.reply is None:
        req.reply = body if len(body) <= chan.max_bytes else oversized_reply(len(body),
                                                                            chan.max_bytes)
        if not req.fut.done():
            req.fut.set_result(None)


def _poke(chan: _Channel) -> None:
    chan.poke_due = False
    if not chan.closed:
        _drain(chan)


async def _read_replies(chan: _Channel) -> None:
    """The reader task: wait until the socket has a reply, then take all that are ready."""
    sock = chan.sock
    while True:
        try:
            frames = await sock.recv_multipart()
        except zmq.Again:
            continue  # a poke took what woke us
        if len(frames) == 2:
            _deliver(chan, chan.pending.get(frames[0]), frames[1])
        _drain(chan)


def _heard(task: asyncio.Task) -> None:
    """Mark a shared task's error as heard: its callers await it through shield(), and when
    every one of them was cancelled meanwhile, asyncio would log the error as never retrieved."""
    if not task.cancelled():
        task.exception()


def _peer_name(shard: int | None) -> str:
    return "the coordinator" if shard is None else f"shard {shard}"


def _stream_lost(conn: StreamConnection, why: str) -> None:
    """A stream connection ended: every request waiting on it fails now."""
    if not conn.pending:
        return
    err = ShardUnavailable(f"{_peer_name(conn.shard)} closed the connection ({why}) while a "
                           "request was in flight; it may or may not have been applied")
    for req in conn.pending.values():
        if req.reply is None and req.error is None:
            req.error = err
            _wake(req.fut)


def _release(ctx, channels: list, streams: list, pid: int) -> None:
    """Close a client's sockets and end its context: on close, collection or exit."""
    if os.getpid() != pid:
        return
    for conn, sock in streams:
        try:
            conn.close()
        except RuntimeError:
            # Its loop is closed: the socket is all that is left to close. The
            # transport cannot finish closing without its loop, and would warn
            # of an unclosed transport (ResourceWarning) when collected.
            sock.close()
            transport = conn.transport
            if getattr(transport, "_sock", None) is sock:
                transport._sock = None
    streams.clear()
    for chan in channels:
        if chan.reader is not None and not chan.reader.done():
            try:
                chan.reader.cancel()
            except RuntimeError:
                pass  # its loop is closed
        chan.closed = True
        chan.sock.close(0)
    channels.clear()
    ctx.term()


class AsyncClusterBackend:
    def __init__(self, url: str, timeout: float = 5.0, *, request_timeout: float | None = None,
                 max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
                 direct: bool = True, stream: bool = True, keys=None):
        from .client import _client_keys
        self.url = check_url(url)
        self.timeout = check_number("timeout", timeout)
        self.request_timeout = check_number("request_timeout", request_timeout,
                                            True) or self.timeout
        check_client_options(max_message_bytes, direct, stream)
        self.max_message_bytes = max_message_bytes
        self.direct = direct
        self.stream = stream
        #: Curve for tcp: our keypair and the coordinator's key (see inmem.keys)
        self.keys = _client_keys(keys)
        self.shard_keys: list = []
        self.loop = asyncio.get_running_loop()
        self.ctx = zmq.asyncio.Context(1)
        self._channels: list = []  # every ZeroMQ channel made, for _release
        self._streams: list = []  # every (stream connection, its socket) made, for _release
        self._finalizer = weakref.finalize(self, _release, self.ctx, self._channels,
                                           self._streams, os.getpid())
        self._rid = itertools.count(1)
        self._slots: dict = {}  # run -> slot, for the runs used last (see _slot)
        self._inline = 0  # calls in a row answered without waiting (see _INLINE_RUN)
        self._packer = protocol.new_packer()
        self._closed = False
        self.owners: list | None = None
        self.shard_slot: list = []
        self.shard_endpoints: list = []
        self.shard_streams: list = []  # each shard's stream socket path, or None
        self._shards: list = []
        #: where operations through the coordinator go: its stream, else `_coord`
        self._coord_stream = None
        self._connecting: dict = {}  # shard (None: the coordinator) -> the task connecting
        self._refreshing = None  # the task asking for the slot map again, shared by callers
        self._last_status: dict | None = None  # the status the last map refresh found
        self._shard_pids: dict = {}
        self._coord = self._channel(self.url, None)

    # -- sockets -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InmemError("the database is closed")
        if asyncio.get_running_loop() is not self.loop:
            raise InmemError("this AsyncDatabase belongs to another event loop; connect "
                             "again in this one")

    def _channel(self, endpoint: str, shard: int | None,
                 server_key: bytes | None = None) -> _Channel:
        if self._closed:  # (a task that was waiting elsewhere when close() came)
            raise InmemError("the database is closed")
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # Replies are from our cluster, which caps them; one over this client's own
        # limit fails its request (_deliver) rather than the connection.
        sock.setsockopt(zmq.MAXMSGSIZE, -1)
        # Many requests are in flight at once: queue them all rather than
        # refuse a send or stop reading replies at ZeroMQ's default of 1,000.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if endpoint.startswith("ipc://"):
            # Tried again every few ms while not there yet (see the blocking client).
            sock.setsockopt(zmq.RECONNECT_IVL, LOCAL_RECONNECT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        if shard is not None:
            # Queue nothing for a shard that is not connected (see the blocking client).
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if self.keys is not None and endpoint.startswith("tcp://"):
            self.keys.apply(sock, server_key or self.keys.coordinator)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise InvalidURL(f"cannot connect to {endpoint!r:.200}: {exc}; check the "
                             "coordinator's client endpoint") from None
        chan = _Channel(sock, shard, self.max_message_bytes)
        chan.reader = self.loop.create_task(_read_replies(chan))
        self._channels.append(chan)
        return chan

    async def _shard_channel(self, shard: int):
        """The channel to `shard`: its stream connection, or ZeroMQ (see the module docstring)."""
        chan = self._shards[shard]
        if chan is None or (type(chan) is StreamConnection and chan.lost is not None):
            chan = await self._connect_once(shard, self._open_shard)
        return chan

    async def _channel_for_slot(self, slot: int, deadline: float):
        """The channel to the shard that owns `slot`; when its address refuses the
        connection, the map is asked for again first (see the blocking client's)."""
        endpoints, owners = self.shard_endpoints, self.owners
        try:
            return await self._shard_channel(owners[slot])
        except ShardUnavailable:
            if self.owners is owners:
                await self._refresh_map(deadline)
            if self.shard_endpoints == endpoints and self.owners == owners:
                # The same cluster, its shard not there: say why when the coordinator knows.
                why = shard_refused(owners[slot], status_entry(self._last_status, owners[slot]))
                if why is not None:
                    raise why from None
                raise
        return await self._shard_channel(self.owners[slot])

    async def _moved_away(self, shard: int) -> InmemError | None:
        """ShardUnavailable when the slot map asked for again names other shards (see the
        blocking client's)."""
        endpoints, owners = self.shard_endpoints, self.owners
        await self._refresh_map(self.loop.time() + REFRESH_MAX_S)
        if self.shard_endpoints == endpoints and self.owners == owners:
            return None
        return ShardUnavailable(f"the cluster at {self.url} no longer has {_peer_name(shard)} "
                                "where this client's slot map said (it was replaced); the "
                                "request was not sent, and the next one goes by the new map")

    async def _refresh_map(self, deadline: float) -> None:
        """The slot map asked for again, once for every caller that finds it stale at the
        same time, within `deadline` and at most REFRESH_MAX_S; a coordinator that does
        not answer changes nothing."""
        task = self._refreshing
        if task is None:
            self._last_status = None
            timeout = min(deadline - self.loop.time(), REFRESH_MAX_S)
            if timeout <= 0:
                return
            task = self._refreshing = self.loop.create_task(self._load_slotmap(timeout))

            def done(t):
                self._refreshing = None
                _heard(t)
            task.add_done_callback(done)
        try:
            await asyncio.shield(task)
        except InmemError:
            pass

    async def _proxied_channel(self):
        """Where operations through the coordinator go: its stream when it has one here."""
        chan = self._coord_stream
        if chan is None or (type(chan) is StreamConnection and chan.lost is not None):
            chan = await self._connect_once(None, self._open_proxied)
        return chan

    async def _connect_once(self, key, opener):
        # Calls that find the same channel missing at once share one connection attempt.
        task = self._connecting.get(key)
        if task is None:
            task = self.loop.create_task(opener(key))
            self._connecting[key] = task

            def done(t, key=key):
                self._connecting.pop(key, None)
                _heard(t)
            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _open_shard(self, shard: int):
        if shard >= len(self.shard_endpoints):  # a map read while it was replaced
            raise ShardUnavailable(f"{_peer_name(shard)} is not in the slot map of the "
                                   f"cluster at {self.url} any more; retry")
        endpoint = self.shard_endpoints[shard]
        path = self.shard_streams[shard] if self.stream else None
        if endpoint.startswith("ipc://") and not self.url.startswith("ipc://"):
            # Out of reach of a client that came over tcp (see the blocking
            # client): this shard's runs go through the coordinator.
            chan = self._coord
        elif path is not None:
            chan = await self._open_stream(path, shard)
        else:
            key = self.shard_keys[shard] if shard < len(self.shard_keys) else None
            chan = self._channel(endpoint, shard, key)
        self._shards[shard] = chan
        return chan

    async def _open_proxied(self, _key=None):
        chan = self._coord
        path = stream_path(self.url) if self.stream else None
        if path is not None:
            try:
                chan = await self._open_stream(path, None)
            except ShardUnavailable:
                pass  # the coordinator answers (or times out) over ZeroMQ as always
        self._coord_stream = chan
        return chan

    async def _open_stream(self, path: str, shard: int | None) -> StreamConnection:
        self._check_open()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, path),
                                   min(self.request_timeout, 2.0))
            _, conn = await self.loop.create_unix_connection(
                lambda: StreamConnection(self.loop, shard, self.max_message_bytes,
                                         _stream_lost),
                sock=sock)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            why = getattr(exc, "strerror", None) or exc or "timed out"
            raise ShardUnavailable(f"{_peer_name(shard)} does not accept connections at {path} "
                                   f"({why}); retry shortly") from None
        except BaseException:
            sock.close()
            raise
        if self._closed:
            conn.close()
            raise InmemError("the database is closed")
        conn.read_also(sock)
        self._streams.append((conn, sock))
        if len(self._streams) > 64:
            self._streams[:] = [(c, s) for c, s in self._streams if c.lost is None]
        return conn

    async def _send_stream(self, conn: StreamConnection, head: bytes, body: bytes, req):
        """Register and write one request; the channel it went on (a broken one is replaced).

        A write refused by a connection that had already broken sent none of
        the frame: the request goes once more, on a new connection.
        """
        for attempt in range(2):
            conn.pending[head] = req
            if conn.send(head, body):
                return conn
            del conn.pending[head]
            if attempt:
                raise ShardUnavailable(f"{_peer_name(conn.shard)} closed the connection "
                                       f"({conn.lost or 'broken'}) before the request was "
                                       "sent; it was not applied, retry shortly")
            shard = conn.shard
            if shard is None:
                if self._coord_stream is conn:
                    self._coord_stream = None
                chan = await self._proxied_channel()
            else:
                if shard < len(self._shards) and self._shards[shard] is conn:
                    self._shards[shard] = None
                chan = await self._channel_for_slot(_header_unpack(head)[2], self.loop.time()
                                                    + REFRESH_MAX_S)
            if type(chan) is not StreamConnection:
                return chan  # the coordinator's ZeroMQ socket: the caller sends there
            conn = chan
        raise AssertionError("unreachable")

    async def _send_later(self, chan: _Channel, frames, deadline: float) -> None:
        """Send once the socket takes it: a shard not connected yet, or queues full."""
        loop = self.loop
        # Only the reader task waits on the asyncio socket, so nothing else can
        # take its wake-ups; a send that must wait tries again every few ms.
        limit = deadline if chan.shard is None else min(deadline, loop.time() + _SEND_WAIT_S)
        pause = 0.0005
        while True:
            if loop.time() >= limit:
                if chan.shard is not None:
                    raise (await self._moved_away(chan.shard)
                           or await self._shard_down(chan.shard))
                raise not_sent(self.url)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
            if self._closed:  # its socket may be closed: close() came while this slept
                raise InmemError("the database is closed")
            try:
                chan.shadow.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                continue

    # -- one request ---------------------------------------------------------------

    async def _roundtrip(self, chan: _Channel, kind: int, target: int, body: bytes,
                         deadline: float):
        """Send one request and return its decoded reply (an InmemError for an error)."""
        loop = self.loop
        shard = chan.shard
        while True:
            if self._closed:
                # A task that was not waiting for a reply when close() came (it was
                # sleeping, connecting, or between the chunks of a pipeline) learns
                # here, before it touches a socket that close() has closed.
                raise InmemError("the database is closed")
            head = header(kind, target, next(self._rid))
            wake_at = deadline if shard is None else min(deadline, loop.time() + DIRECT_CHECK_S)
            req = _Request(loop.create_future(), wake_at)
            if type(chan) is StreamConnection:
                chan.pending[head] = req
                if chan.send(head, body):
                    streamed = True
                else:  # the connection had ended: a new one (a coroutine, so only here)
                    del chan.pending[head]
                    chan = await self._send_stream(chan, head, body, req)
                    streamed = type(chan) is StreamConnection
            else:
                streamed = False
            pending = chan.pending
            if not streamed:
                pending[head] = req
            try:
                if not streamed:
                    # The usual case inline (a send that goes at once, a reply
                    # before the first timer); the rest in _send_later/_wait_late.
                    try:
                        chan.shadow.send_multipart((head, body), zmq.NOBLOCK)
                    except zmq.Again:
                        await self._send_later(chan, (head, body), deadline)
                    if not chan.poke_due:
                        # A send may take the socket's wake-up signal for a reply
                        # that arrived meanwhile (ZeroMQ signals by edges): after
                        # this loop turn's sends, whatever is ready is taken.
                        chan.poke_due = True
                        loop.call_soon(_poke, chan)
                if chan.watch_at is None or wake_at < chan.watch_at:
                    _watch(chan, loop, wake_at)
                await req.fut
                if req.reply is None:
                    await self._wait_late(chan, req, deadline)
            finally:
                del pending[head]
            result = unpack_reply(req.reply)
            if type(result) is ClusterNotReady and loop.time() + NOT_READY_PAUSE_S < deadline:
                await asyncio.sleep(NOT_READY_PAUSE_S)
                continue
            return result

    async def _wait_late(self, chan: _Channel, req: _Request, deadline: float) -> None:
        """A request whose first wait ended without a reply: fail it, or ask after its shard."""
        loop = self.loop
        req.wake_at = _NEVER  # its own timers from here on, not the connection's
        while True:
            if type(chan) is _Channel and not chan.closed:
                # Whatever is ready is taken: a reply whose wake-up the socket's
                # edge-triggered signal lost is found here, not at the deadline.
                _drain(chan)
            if req.reply is not None:
                return
            if req.error is not None:
                raise copy.copy(req.error)
            if chan.shard is None:
                raise no_reply(self.url, self.request_timeout)
            if loop.time() >= deadline:
                raise await self._shard_down(chan.shard)
            req.fut = loop.create_future()
            await self._check_shard(chan)
            if req.reply is not None:
                return
            if req.error is not None:
                raise copy.copy(req.error)
            timer = loop.call_at(min(deadline, loop.time() + DIRECT_CHECK_S), _wake, req.fut)
            try:
                await req.fut
            finally:
                timer.cancel()

    async def _check_shard(self, chan: _Channel) -> None:
        """Ask the coordinator about a late shard, once for every request waiting on it."""
        if chan.check is None or chan.check.done():
            chan.check = self.loop.create_task(self._judge_shard(chan))
            chan.check.add_done_callback(_heard)
        await asyncio.shield(chan.check)

    async def _judge_shard(self, chan: _Channel) -> None:
        gone = shard_gone(chan.shard, await self._shard_entry(chan.shard), self._shard_pids)
        if gone is None:
            return
        # Everything waiting was sent to the process that is gone.
        for req in list(chan.pending.values()):
            if req.reply is None and req.error is None:
                req.error = gone
                _wake(req.fut)

    async def _shard_entry(self, shard: int) -> dict | None:
        try:
            status = await self.cluster("status", timeout=min(self.request_timeout, 2.0))
        except InmemError:
            if self._closed:
                raise
            return None
        return status_entry(status, shard)

    async def _shard_down(self, shard: int) -> InmemError:
        return shard_down(shard, await self._shard_entry(shard), self._shard_pids, self.url,
                          self.request_timeout)

    # -- the async Database backend interface --------------------------------------

    async def call(self, op, args):
        loop = self.loop
        if self._closed or _running_loop() is not loop:
            self._check_open()
        prepared = packed_call(op, args, self._packer, self.max_message_bytes)
        if prepared is None:
            return await self.cluster(op, list(args))
        run, body, shaped = prepared
        now = loop.time()
        deadline = now + self.request_timeout
        slot = self._slots.get(run) if type(run) is str else None
        if slot is None:
            slot = self._slot(run)
        if self.direct:
            if self.owners is None:
                await self._load_slotmap()
            chan = self._shards[self.owners[slot]]
            if chan is None or (type(chan) is StreamConnection and chan.lost is not None):
                chan = await self._channel_for_slot(slot, deadline)
        else:
            chan = await self._proxied_channel()
        result = _AGAIN
        if type(chan) is StreamConnection:
            # The usual case written out here rather than in _roundtrip: one
            # coroutine less per call, which is most of what a call costs here.
            head = _pack_header(VERSION, KIND_OP, slot, next(self._rid) & _RID_MASK)
            if chan.shard is None:
                wake_at = deadline
            else:
                wake_at = now + DIRECT_CHECK_S
                if wake_at > deadline:
                    wake_at = deadline
            req = _Request(loop.create_future(), wake_at)
            pending = chan.pending
            pending[head] = req
            if chan.send(head, body):
                if chan.watch_at is None or wake_at < chan.watch_at:
                    _watch(chan, loop, wake_at)
                if self._inline < _INLINE_RUN:
                    # A reply already there is taken now: the await below then
                    # finds it done and the loop turns for nothing (see look).
                    chan.look()
                    self._inline = self._inline + 1 if req.fut.done() else 0
                else:
                    self._inline = 0  # this one waits: the loop turns, others run
                try:
                    await req.fut
                    if req.reply is None:
                        await self._wait_late(chan, req, deadline)
                finally:
                    del pending[head]
                result = unpack_reply(req.reply)
                if type(result) is ClusterNotReady and loop.time() + NOT_READY_PAUSE_S < deadline:
                    await asyncio.sleep(NOT_READY_PAUSE_S)  # as _roundtrip, then ask again
                    result = _AGAIN
            else:
                del pending[head]  # the connection had ended: _roundtrip makes a new one
        if result is _AGAIN:
            result = await self._roundtrip(chan, KIND_OP, slot, body, deadline)
        if type(result) is SlotMoved:
            # Our slot map is stale: refresh it and send once more, where it says.
            await self._load_slotmap()
            chan = (await self._shard_channel(self.owners[slot]) if self.direct
                    else await self._proxied_channel())
            result = await self._roundtrip(chan, KIND_OP, slot, body, deadline)
        if isinstance(result, InmemError):
            try:
                raise result
            finally:
                result = None  # its traceback holds this frame: no cycle through the error
        return shape(op, args, result) if shaped else result

    def _slot(self, run) -> int:
        """slot_of(run), remembered for the runs this client used last."""
        slot = slot_of(run)
        if type(run) is str:
            slots = self._slots
            if len(slots) >= _SLOTS_KEPT:
                slots.clear()
            slots[run] = slot
        return slot

    async def cluster(self, name: str, args=(), timeout: float | None = None):
        """A request the coordinator answers itself (status, info, fan-outs...)."""
        self._check_open()
        body = pack_checked(self._packer, [name, list(args)], self.max_message_bytes)
        deadline = self.loop.time() + (self.request_timeout if timeout is None else timeout)
        result = await self._roundtrip(self._coord, KIND_CLUSTER, 0, body, deadline)
        if isinstance(result, InmemError):
            try:
                raise result
            finally:
                result = None
        return shape(name, args, result)

    async def call_batch(self, ops, _retry: bool = False) -> list:
        self._check_open()
        parts = None if _retry else batch_segments(ops)
        if parts is not None:
            # A read of every shard queued before run operations: in parts, in order.
            out: list = []
            for start, end in parts:
                out += await self.call_batch(ops[start:end])
            return out
        if self.owners is None:
            await self._load_slotmap()
        results: list = [None] * len(ops)
        later: list = []
        # The request timeout bounds each wait for the cluster to answer a chunk,
        # not the whole pipeline (a bulk load may take minutes): every chunk may
        # take as long as all of them, and `_progress` ends a pipeline that
        # stops moving.
        plan = list(plan_batch(ops, self.owners, results, later))
        n_chunks = sum(-(-len(indexes) // BATCH_CHUNK_OPS) for _, indexes, _ in plan)
        deadline = self.loop.time() + self.request_timeout * max(n_chunks, 1)
        sends = []  # (indexes, task)
        shards = []
        for shard, indexes, bodies in plan:
            for idx, payload in chunks(self._packer, indexes, bodies, results,
                                       self.max_message_bytes):
                # Where one of the planned shard's slots lives now (see the blocking
                # client's _send_batch).
                slot = self.shard_slot[shard] if shard < len(self.shard_slot) else 0
                chan = (await self._channel_for_slot(slot, deadline) if self.direct
                        else await self._proxied_channel())
                task = self.loop.create_task(
                    self._roundtrip(chan, KIND_BATCH, slot, payload, deadline))
                sends.append((idx, task))
                shards.append(shard)
            # Let the full chunk go out while the rest is packed.
            await asyncio.sleep(0)
        try:
            if len(sends) > 1:
                await self._progress([t for _, t in sends], shards)
            replies = await asyncio.gather(*(t for _, t in sends), return_exceptions=True)
        except BaseException:
            for _, task in sends:
                task.cancel()
            raise
        timeouts = [r for r in replies if type(r) is Timeout]
        if timeouts:
            if not self.direct:
                raise no_reply(self.url, self.request_timeout, len(timeouts))
            raise timeouts[0]
        for (idx, _), reply in zip(sends, replies):
            if isinstance(reply, BaseException) and not isinstance(reply, InmemError):
                raise reply
            if isinstance(reply, InmemError):
                reply = bare(reply)
            apply_batch_reply(reply, idx, ops, results)
        moved = [i for i, r in enumerate(results) if type(r) is SlotMoved]
        if moved and not _retry:
            # Our slot map is stale: refresh it and send those once more.
            await self._load_slotmap()
            again = await self.call_batch([ops[i] for i in moved], _retry=True)
            for i, r in zip(moved, again):
                results[i] = r
        for i in later:
            op, args = ops[i]
            try:
                results[i] = await self.call(op, args)
            except InmemError as exc:
                results[i] = bare(exc)
        return results

    async def _progress(self, tasks: list, shards: list) -> None:
        """Wait for a pipeline's chunks while each `request_timeout` sees one answered;
        Timeout (naming a shard that did not answer, when direct) once none was."""
        left = set(tasks)
        while left:
            done, left = await asyncio.wait(left, timeout=self.request_timeout,
                                            return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if not self.direct:
                    raise no_reply(self.url, self.request_timeout, len(left))
                shard = next(s for t, s in zip(tasks, shards) if t in left)
                raise Timeout(f"no reply from shard {shard} within "
                              f"{self.request_timeout:g} s ({len(left)} batches unanswered)")

    async def fanout(self, op: str, args) -> list:
        """A read-only operation on every shard: one answer per shard, in shard order."""
        return await self.cluster("fanout", [op, list(args)])

    async def snapshot(self) -> list:
        return await self.cluster("snapshot", timeout=max(self.request_timeout,
                                                     protocol.SLOW_ADMIN_TIMEOUT_S))

    async def compact_history(self) -> list:
        return await self.cluster("compact_history", timeout=max(self.request_timeout,
                                                     protocol.SLOW_ADMIN_TIMEOUT_S))

    async def recovery_report(self) -> list:
        return await self.cluster("recovery_report")

    async def info(self) -> dict:
        return await self.cluster("info")

    async def status(self) -> dict:
        return await self.cluster("status")

    # -- the cluster ---------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> dict:
        """Wait until every shard is ready; ClusterNotReady after `timeout`."""
        loop = self.loop
        deadline = loop.time() + timeout
        status = None
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                status = await self.cluster("status", timeout=min(left, 0.5))
            except Timeout:
                continue
            if status.get("ready"):
                await self._load_slotmap()
                return status
            await asyncio.sleep(min(READY_POLL_S, max(deadline - loop.time(), 0)))
        if status is None:
            hint = ("; a cluster with keys answers only clients holding one (connect(url, "
                    "keys=DIR))" if self.keys is None and self.url.startswith("tcp://") else "")
            raise ClusterNotReady(f"no coordinator answered at {self.url} within {timeout:g} s"
                                  + hint)
        waiting = ", ".join(f"shard {s['shard']} {s['state']}" for s in status["shards"]
                            if s["state"] != "ready")
        raise ClusterNotReady(f"the cluster at {self.url} was not ready within {timeout:g} s "
                              f"({waiting})")

    async def _load_slotmap(self, timeout: float | None = None) -> None:
        from .client import _shard_keys
        m = SlotMap.parse(await self.cluster("slotmap", timeout=timeout))
        if m.endpoints != self.shard_endpoints:
            # The shards moved (a first map, or a cluster replaced at this address). The
            # list never shrinks: a call may index it with the old map until the new
            # one is in place, after the status below.
            self._shards = [None] * max(len(self._shards), m.shard_count)
        self.shard_slot = m.shard_slot
        self.shard_endpoints = m.endpoints
        self.shard_streams = [stream_path(e) for e in self.shard_endpoints]
        self.shard_keys = _shard_keys(self.keys, m.shard_keys, m.shard_count)
        if m.max_message_bytes is not None:
            # The cluster's limit, so that an oversized request is refused here, clearly.
            self.max_message_bytes = min(self.max_message_bytes, m.max_message_bytes)
        if self.direct:
            # Straight to the shards only once every one has recovered, and
            # knowing which process each shard is (see the blocking client).
            status = self._last_status = await self.cluster("status", timeout=timeout)
            if not status.get("ready"):
                raise ClusterNotReady(f"the cluster at {self.url} is not ready yet; retry shortly")
            for entry in status["shards"]:
                self._shard_pids[entry["shard"]] = entry.get("pid")
        self.owners = m.owners

    async def close(self) -> None:
        if self._closed:
            return
        loop = self.loop
        if _running_loop() is not loop and loop.is_running():
            # Its loop runs in another thread: its sockets, tasks and futures are
            # that thread's to touch, so the close is done there.
            try:
                done = asyncio.run_coroutine_threadsafe(self.close(), loop)
            except RuntimeError:
                pass  # it closed meanwhile: released from here, below
            else:
                try:
                    await asyncio.wait_for(asyncio.wrap_future(done), _CLOSE_THERE_S)
                    return
                except asyncio.TimeoutError:
                    pass  # that loop no longer turns: released from here, below
        if self._closed:
            return
        self._closed = True
        if _running_loop() is not loop:
            # Its loop has ended (or no longer turns): nothing of it can be awaited
            # or woken from here, and the sockets are released all the same.
            self._finalizer()
            return
        readers = [c.reader for c in self._channels if c.reader is not None]
        closed = InmemError("the database is closed")
        for chan in [*self._channels, *(conn for conn, _ in self._streams)]:
            for req in chan.pending.values():
                if req.reply is None and req.error is None:
                    req.error = closed
                    _wake(req.fut)
            if type(chan) is _Channel and chan.reader is not None:
                chan.reader.cancel()
        try:
            await asyncio.gather(*readers, return_exceptions=True)
        finally:
            # Even when this close is cancelled (a shutdown under wait_for): a
            # later close() finds it done, so the sockets are released now.
            self._finalizer()

    def describe(self) -> str:
        return f"cluster {self.url}" + (" (direct to shards)" if self.direct else "")


__all__ = ["AsyncClusterBackend"]
