"""The cluster client: `connect(url)` returns a Database whose backend talks to a coordinator.

Threads: each thread that uses the Database gets its own DEALER socket (pyzmq
sockets must not be shared between threads). We measured the alternative, one
socket behind a lock held for the round trip: from one thread both do the
same; from 4 and 8 threads the socket per thread did about twice the
operations per second, because the threads' requests are in flight together
instead of one at a time. Sockets are made as a thread's calls need them and
closed when the thread is gone.

Closing while other threads call: a socket is closed only by the thread that
uses it, or while that thread cannot touch it (pyzmq sockets are not thread
safe, and closing one under a thread waiting on it aborts the process).
`close()` closes the sockets of the threads that are not inside a call
(their next call sees the client closed before it touches one) and returns.
A thread inside a call is woken if it waits on a stream (a pipe that close()
makes readable), or looks at the flag every `_CLOSE_CHECK_MS` if it waits on
ZeroMQ; its call ends with the closed error (or its reply, if that came
first) and it closes its own sockets. The last to close its sockets ends the
context, which then has nothing to wait for.

Every request has a request id (in the header, echoed by the reply: a late
reply to a request that timed out is recognised and dropped) and a deadline:
no reply by then raises `inmem.Timeout`. `ClusterNotReady` replies are
retried until the deadline, since nothing was applied; `ShardUnavailable`
goes to the caller, who decides whether the operation may be retried.
Sockets use LINGER 0, so closing or exiting never waits for a peer.

Pipelines are grouped per shard with the coordinator's slot map (fetched when
connecting) into BATCH messages of up to BATCH_CHUNK_OPS operations, each
sent as soon as it is full, so the shard applies one while the client packs
the next; the results are put back in pipeline order. A transaction is one
`tx.commit` message holding its read set and write set.

By default the client routes by slot itself, as Redis Cluster clients do:
operations on runs go straight to the owning shard's socket (the slot map
names each shard's endpoint), which saves the hop that costs about half of a
single operation's round trip. A shard sent a request for a slot it does not
own answers SlotMoved; the client then reloads the slot map from the
coordinator and sends the request again. A shard whose address refuses the
connection makes the client ask for the map again too, before it raises
ShardUnavailable: the cluster at this address may have been replaced by one
laid out otherwise, whose shards are elsewhere. `direct=False` sends everything
through the coordinator instead (for thin clients). The coordinator still
answers everything else, and is asked, when a shard is slow to answer,
whether that shard is down or restarted (ShardUnavailable) or only slow
(Timeout).

Transport: a shard or coordinator on this host (an ipc:// endpoint) is
reached through its Unix stream socket (`inmem.stream`), which a thread reads
and writes itself, without ZeroMQ's I/O threads in between; tcp endpoints
and cluster requests use ZeroMQ. `stream=False` uses ZeroMQ for everything.
A stream that breaks says at once what happened: a request in flight on a
shard that dies gets ShardUnavailable when the kernel closes the connection,
not at its deadline; a connection found broken when sending (its shard
restarted since this thread last used it) is replaced and the request sent
once more, since a shard applies only whole frames.

Lifetime: a Database dropped without `close()` releases its sockets and its
ZeroMQ context (and with it the context's I/O threads and descriptors) as
soon as it is collected, through a finalizer that holds the context and the
sockets but never the client; the client itself is kept free of reference
cycles (errors handed back lose their tracebacks), so dropping it is enough.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import weakref

import zmq

import inmem.protocol as protocol
from .database import Database
from .sections import KV
from .errors import (ClusterNotReady, InmemError, InvalidOption, InvalidURL, ShardUnavailable,
                     SlotMoved, Timeout)
from .ops import shape
from .protocol import (HEADER, KIND_BATCH, KIND_CLUSTER, KIND_OP, VERSION, header,
                       oversized_reply, pack_checked, slot_of, unpack_reply)
from .routing import (BATCH_CHUNK_OPS, CONNECT_OPTIONS, URL_SCHEMES, SlotMap,  # noqa: F401
                      apply_batch_reply, bare as _bare, batch_segments, check_client_options,
                      check_connect_options, check_number as _number, check_url, chunks,
                      no_reply, not_sent, plan_batch, shard_down, shard_gone, shard_refused,
                      status_entry)
from .routing import DIRECT_CHECK_S as _DIRECT_CHECK_S, NOT_READY_PAUSE_S as _NOT_READY_PAUSE_S
from .routing import LOCAL_RECONNECT_MS as _LOCAL_RECONNECT_MS, READY_POLL_S as _READY_POLL_S
from .routing import REFRESH_MAX_S, packed_call
from .stream import StreamChannel, StreamClosed, stream_path

_live_backends: "weakref.WeakSet[ClusterBackend]" = weakref.WeakSet()
#: closed sockets kept in a client's list before it is pruned
_PRUNE_MIN = 64
#: runs whose slot a client remembers (a crc32c of the id each call otherwise)
_SLOTS_KEPT = 4096
#: `_reply` without a first look
_UNSEEN = object()
_pack_header = HEADER.pack
_header_unpack = HEADER.unpack
#: request ids go on the wire as u64 (`protocol.header`)
_RID_MASK = 0xFFFFFFFFFFFFFFFF
#: longest wait on a ZeroMQ socket between two looks at whether the client was closed
_CLOSE_CHECK_MS = 100
#: how long a direct ZeroMQ send waits for its connection between two looks at the shard
_SEND_CHECK_MS = 200


def _close_all(channels: list) -> None:
    """Close and forget `channels` (a thread's own, or retired for it to close)."""
    for chan in channels:
        try:
            chan.close(0)
        except Exception:
            pass
    channels.clear()


def _after_fork_in_child() -> None:
    # The parent's sockets must not be touched from a forked child; the lock
    # may have been held by a thread that the child does not have.
    for backend in list(_live_backends):
        backend._closed = "this Database was opened before fork(); connect again in the child"
        backend._seats.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _release(ctx, sockets: list, seats: "_Seats", pid: int) -> None:
    """Close every socket a client made, then end its context (I/O threads, fds).

    The finalizer of a ClusterBackend: it runs when close() finds no thread
    using the client any more (at once, or when the last call in flight
    ends), when the backend is collected, or at exit, whichever comes first,
    and holds the context and the sockets, never the backend. The sockets
    are held strongly on purpose: when a Database is collected as part of a
    reference cycle, the weak references through which the context knows its
    sockets are cleared first, and ending a context with a socket still open
    would wait forever.
    """
    if os.getpid() != pid:  # a forked child must not touch the parent's context
        return
    with seats.lock:
        # A thread inside a call now can only be a daemon thread at interpreter
        # exit (close() and collection run this only once no call is in flight):
        # closing its socket under it would abort in libzmq, and ending the
        # context would wait for it forever. The exiting process lets them go.
        for ref in seats.states.values():
            st = ref()
            if st is not None and st.busy:
                return
        seats.states.clear()  # a thread's state that goes later has nothing left to close
        wake, seats.wake = seats.wake, None
    for sock in sockets:
        sock.close(0)
    sockets.clear()
    if wake is not None:
        os.close(wake[0])
        os.close(wake[1])
    ctx.term()


def _peer_name(shard: int | None) -> str:
    return "the coordinator" if shard is None else f"shard {shard}"


class _Channel:
    """A DEALER socket and the receive timeout last set on it."""

    __slots__ = ("sock", "rcvtimeo", "shard")

    def __init__(self, sock, shard=None):
        self.sock = sock
        self.rcvtimeo = -1
        self.shard = shard

    @property
    def closed(self) -> bool:
        return self.sock.closed

    def close(self, linger=0) -> None:
        self.sock.close(linger)


class _Seats:
    """The thread states of one client, so that each is closed once, by one thread.

    pyzmq sockets are not thread safe: a socket may be closed only by the
    thread that uses it, or once that thread can no longer touch it. A state
    is therefore closed by whoever takes it out of `states` first (`claim`):
    its own thread when it ends or leaves a call on a closed client, or
    close() for a thread that is not inside a call (`_ThreadState.busy` is
    0: its next call sees the client closed before touching a socket).
    `open` counts the states not yet closed; the context ends at 0.
    """

    __slots__ = ("lock", "states", "open", "keys", "wake")

    def __init__(self):
        self.lock = threading.Lock()
        self.states: dict = {}  # key -> weakref to a _ThreadState
        self.open = 0
        self.keys = itertools.count()
        #: (read end, write end) of the pipe that wakes threads waiting on a stream
        self.wake: tuple | None = None

    def add(self, st: "_ThreadState") -> None:
        """Register a new thread's state (the caller holds the lock)."""
        st.key = next(self.keys)
        self.states[st.key] = weakref.ref(st)
        self.open += 1

    def claim(self, key: int) -> bool:
        """Whether the caller is the one to close the state `key` (then `done` after)."""
        with self.lock:
            return self.states.pop(key, None) is not None

    def done(self) -> None:
        with self.lock:
            self.open -= 1

    def forget(self) -> None:
        """In a forked child: nothing here is the child's to close."""
        self.lock = threading.Lock()
        self.states = {}
        self.wake = None


class _ThreadState:
    """One thread's sockets and packer; the sockets close when the thread is gone.

    `busy` counts the calls of its thread in progress (nested calls count
    again): while it is not 0, only that thread may close the sockets.
    """

    __slots__ = ("coord", "coord_stream", "shards", "retired", "packer", "busy", "key",
                 "seats", "__weakref__")

    def __init__(self, seats: _Seats, shard_count: int):
        #: the ZeroMQ channel to the coordinator, made on first use
        self.coord = None
        #: where proxied operations go: the coordinator's stream, else `coord`
        self.coord_stream = None
        self.shards: list = [None] * shard_count
        #: channels to the shards of a layout the cluster no longer has, for this
        #: thread to close (another thread's map refresh put them here)
        self.retired: list = []
        self.packer = protocol.new_packer()
        self.busy = 0
        self.key = -1
        self.seats = seats

    def close(self) -> None:
        for chan in [self.coord, self.coord_stream, *self.shards, *self.retired]:
            if chan is not None:
                try:
                    chan.close(0)
                except Exception:
                    pass

    def __del__(self):
        seats = self.seats
        if seats.claim(self.key):
            self.close()
            seats.done()


class ClusterBackend:
    def __init__(self, url: str, timeout: float = 5.0, *, request_timeout: float | None = None,
                 max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
                 direct: bool = True, stream: bool = True, keys=None):
        self.url = check_url(url)
        self.timeout = _number("timeout", timeout)
        self.request_timeout = _number("request_timeout", request_timeout, True) or self.timeout
        check_client_options(max_message_bytes, direct, stream)
        self.max_message_bytes = max_message_bytes
        self.direct = direct
        self.stream = stream
        #: Curve for tcp: our keypair and the coordinator's key (see inmem.keys)
        self.keys = _client_keys(keys)
        self.shard_keys: list = []  # each shard's public key (None: not on tcp)
        self.ctx = zmq.Context(1)
        self._sockets: list = []  # every socket made and not yet pruned, for _release
        self._seats = _Seats()
        self._prune_at = _PRUNE_MIN
        self._pid = os.getpid()
        self._finalizer = weakref.finalize(self, _release, self.ctx, self._sockets, self._seats,
                                           self._pid)
        self._local = threading.local()
        self._rid = itertools.count(1)
        self._closed: bool | str = False
        #: the context has ended (`_end_if_unused`)
        self._ended = False
        self.owners: list | None = None
        self.shard_slot: list = []
        self.shard_endpoints: list = []
        #: the length of every thread's list of shard channels: the most shards any map
        #: this client took has named, so that a thread reading the map while another
        #: replaces it never indexes past its list
        self._most_shards = 0
        #: the coordinator's status as the last map refresh found it
        self._last_status: dict | None = None
        self.shard_streams: list = []  # each shard's stream socket path, or None
        self._shard_pids: dict = {}  # shard -> its pid when last asked
        self._slots: dict = {}  # run -> its slot, for the runs used last (`_slot`)
        #: how long a direct request's first look for its reply lasts (see `_reply`)
        self._first_look = min(self.request_timeout, _DIRECT_CHECK_S)
        _live_backends.add(self)

    # -- sockets -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _leave(self, st: _ThreadState) -> None:
        """After a call that found the client closed: close this thread's sockets, and
        end the context if no other thread still has a call in progress."""
        if st.busy or os.getpid() != self._pid:
            return
        seats = self._seats
        if seats.claim(st.key):
            st.close()
            seats.done()
        self._end_if_unused()

    def _end_if_unused(self) -> None:
        seats = self._seats
        with seats.lock:
            if self._ended or seats.open:
                return
            self._ended = True
        # Every thread's sockets are closed, so the context ends without waiting.
        self._finalizer()

    def _socket(self, endpoint: str, immediate: bool = False, server_key: bytes | None = None):
        with self._seats.lock:
            # Checked under the lock that close() sets the flag under: no socket
            # is made in a context that may be ending.
            self._check_open()
            sock = self.ctx.socket(zmq.DEALER)
            sockets = self._sockets
            sockets.append(sock)
            if len(sockets) >= self._prune_at:
                # The sockets of threads that ended were closed as they ended.
                sockets[:] = [s for s in sockets if not s.closed]
                self._prune_at = max(_PRUNE_MIN, 2 * len(sockets))
        sock.setsockopt(zmq.LINGER, 0)
        # Replies are from our cluster, which caps them; one over this client's own
        # limit fails its request (_recv) rather than the connection.
        sock.setsockopt(zmq.MAXMSGSIZE, -1)
        sock.setsockopt(zmq.SNDTIMEO, max(int(self.request_timeout * 1000), 1))
        if endpoint.startswith("ipc://"):
            # A socket on this host that is not there yet (a cluster starting) is
            # tried again every few ms, not ZeroMQ's 100: a failed connect is one
            # syscall, and whoever waits for the cluster waits for this moment.
            sock.setsockopt(zmq.RECONNECT_IVL, _LOCAL_RECONNECT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        if immediate:
            # Queue nothing for a shard that is not connected: a send then fails
            # at once (ShardUnavailable) instead of reaching whatever binds next.
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if self.keys is not None and endpoint.startswith("tcp://"):
            self.keys.apply(sock, server_key or self.keys.coordinator)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise InvalidURL(f"cannot connect to {endpoint!r:.200}: {exc}; check the "
                             "coordinator's client endpoint") from None
        return sock

    def _state(self) -> _ThreadState:
        try:
            return self._local.state
        except AttributeError:
            pass
        self._check_open()
        # Registered before it has a socket: its sockets are made inside calls,
        # while `busy` keeps close() from closing them under this thread.
        st = _ThreadState(self._seats, self._most_shards)
        with self._seats.lock:
            self._check_open()
            self._seats.add(st)
        self._local.state = st
        return st

    def _coord(self, st: _ThreadState) -> _Channel:
        """This thread's ZeroMQ channel to the coordinator."""
        chan = st.coord
        if chan is None:
            chan = st.coord = _Channel(self._socket(self.url))
        return chan

    def _shard_channel(self, st: _ThreadState, shard: int):
        """This thread's direct channel to `shard`, connected (or ShardUnavailable)."""
        if st.retired:
            _close_all(st.retired)
        chan = st.shards[shard]
        if chan is None or chan.closed:
            if shard >= len(self.shard_endpoints):  # a map read while another replaced it
                raise ShardUnavailable(f"{_peer_name(shard)} is not in the slot map of the "
                                       f"cluster at {self.url} any more; retry")
            endpoint = self.shard_endpoints[shard]
            path = self.shard_streams[shard] if self.stream else None
            if endpoint.startswith("ipc://") and not self.url.startswith("ipc://"):
                # A shard on an ipc socket beside the coordinator is out of reach of a
                # client that came over tcp (it may be on another host): its runs go
                # through the coordinator.
                chan = self._coord(st)
            elif path is not None:
                chan = self._stream_channel(path, shard)
            else:
                key = self.shard_keys[shard] if shard < len(self.shard_keys) else None
                chan = _Channel(self._socket(endpoint, True, key), shard)
            st.shards[shard] = chan
        return chan

    def _channel_for_slot(self, st: _ThreadState, slot: int, deadline: float):
        """This thread's channel to the shard that owns `slot`.

        When that shard's address refuses the connection, the coordinator is
        asked for the map again before ShardUnavailable is raised: a cluster
        replaced at this address by one laid out otherwise (restarted with
        another config) has its shards elsewhere, and a client that kept its
        old map would fail for ever. Nothing was sent yet, so trying the new
        owner is safe.
        """
        endpoints, owners = self.shard_endpoints, self.owners
        try:
            return self._shard_channel(st, owners[slot])
        except ShardUnavailable:
            status = None
            if self.owners is owners:  # (another thread may have asked already)
                status = self._refresh_map(deadline)
            if self.shard_endpoints == endpoints and self.owners == owners:
                # The same cluster, its shard not there: say why when the coordinator knows.
                why = shard_refused(owners[slot], status_entry(status, owners[slot]))
                if why is not None:
                    raise why from None
                raise
        return self._shard_channel(st, self.owners[slot])

    def _moved_away(self, shard: int) -> InmemError | None:
        """ShardUnavailable when the slot map asked for again names other shards than the
        one this client had (a cluster replaced at this address): a ZeroMQ connection to
        an address nobody serves never fails, it only never takes the request."""
        endpoints, owners = self.shard_endpoints, self.owners
        self._refresh_map(time.monotonic() + REFRESH_MAX_S)
        if self.shard_endpoints == endpoints and self.owners == owners:
            return None
        return ShardUnavailable(f"the cluster at {self.url} no longer has {_peer_name(shard)} "
                                "where this client's slot map said (it was replaced); the "
                                "request was not sent, and the next one goes by the new map")

    def _refresh_map(self, deadline: float) -> dict | None:
        """The slot map asked for again, within `deadline` and at most REFRESH_MAX_S; the
        coordinator's status when it answered. One that does not answer changes nothing."""
        self._last_status = None
        timeout = min(deadline - time.monotonic(), REFRESH_MAX_S)
        if timeout > 0:
            try:
                self._load_slotmap(timeout)
            except InmemError:  # ClusterNotReady, with the status kept
                pass
        return self._last_status

    def _proxied_channel(self, st: _ThreadState):
        """Where this thread sends operations through the coordinator.

        The coordinator's stream socket when it has one on this host, else
        the ZeroMQ channel that also carries cluster requests.
        """
        chan = st.coord_stream
        if chan is None or chan.closed:
            path = stream_path(self.url) if self.stream else None
            if path is not None:
                try:
                    chan = self._stream_channel(path, None)
                except ShardUnavailable:
                    chan = self._coord(st)  # it answers (or times out) as it always did
            else:
                chan = self._coord(st)
            st.coord_stream = chan
        return chan

    def _stream_channel(self, path: str, shard: int | None) -> StreamChannel:
        seats = self._seats
        with seats.lock:
            self._check_open()
            if seats.wake is None:
                read, write = os.pipe()
                os.set_blocking(write, False)
                seats.wake = (read, write)
            wake = seats.wake[0]
        try:
            chan = StreamChannel(path, shard, min(self.request_timeout, 2.0), wake)
        except (OSError, socket.timeout) as exc:
            raise ShardUnavailable(f"{_peer_name(shard)} does not accept connections at {path} "
                                   f"({exc.strerror or exc}); retry shortly") from None
        with seats.lock:
            self._sockets.append(chan)
        return chan

    def _stream_closed(self, chan: StreamChannel, why: str) -> InmemError:
        """ShardUnavailable for a stream that broke mid-request; the channel is dropped.

        The closed error instead when the client is closing: close() wakes a
        thread waiting on a stream, which then ends its call here.
        """
        chan.close()
        if self._closed:
            return self._closed_error()
        return ShardUnavailable(f"{_peer_name(chan.shard)} closed the connection ({why}) while a "
                                "request was in flight; it may or may not have been applied")

    def _closed_error(self) -> InmemError:
        closed = self._closed
        return InmemError(closed if isinstance(closed, str) else "the database is closed")

    def _recv(self, chan, deadline: float, until: float | None = None):
        """The next message on a channel, or None once the deadline has passed.

        `until`: the request's own deadline when `deadline` ends a slice of it (a
        large reply that began arriving is read on to it)."""
        if type(chan) is StreamChannel:
            try:
                return chan.recv(deadline, self.max_message_bytes, True, until)
            except StreamClosed as exc:
                raise self._stream_closed(chan, str(exc)) from None
        sock = chan.sock
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                return None
            if remaining > _CLOSE_CHECK_MS:
                # Another thread's close() cannot interrupt this wait (it must not
                # touch this thread's socket), so the wait looks up now and then.
                remaining = _CLOSE_CHECK_MS
            # setsockopt only when the timeout must shrink (a stale reply ate
            # into the deadline) or has room to grow again; overshooting the
            # deadline by up to 20 ms is the price of not setting it every call.
            current = chan.rcvtimeo
            if current < 0 or remaining < current - 20 or remaining > current + 1000:
                sock.setsockopt(zmq.RCVTIMEO, remaining)
                chan.rcvtimeo = remaining
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                if self._closed:
                    raise self._closed_error() from None
                continue
            if len(frames) == 2 and len(frames[1]) > self.max_message_bytes:
                # Over this client's own limit: its request fails alone, as on a stream.
                frames[1] = oversized_reply(len(frames[1]), self.max_message_bytes)
            return frames

    def _send(self, chan, head: bytes, body: bytes, deadline: float):
        """Send one request; the channel it went on (a broken stream is replaced)."""
        if type(chan) is StreamChannel:
            return self._send_stream(chan, head, body, deadline)
        sock = chan.sock
        if chan.shard is None:
            try:
                sock.send_multipart((head, body))
            except zmq.Again:
                raise not_sent(self.url) from None
            return chan
        # A direct channel: wait, within the deadline, for its connection to be up.
        # A new one can take more than a moment on a loaded host (giving up after the
        # first 200 ms failed calls with a Timeout long before their deadline); between
        # slices the coordinator says whether the shard is down, or the cluster was
        # replaced, so those still fail at once.
        while True:
            try:
                sock.send_multipart((head, body), zmq.NOBLOCK)
                return chan
            except zmq.Again:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms <= 0:
                    raise (self._moved_away(chan.shard) or self._shard_down(chan.shard)) from None
                if not sock.poll(min(wait_ms, _SEND_CHECK_MS), zmq.POLLOUT):
                    why = self._moved_away(chan.shard) or self._shard_gone(chan.shard)
                    if why is not None:
                        raise why from None

    def _send_stream(self, chan: StreamChannel, head: bytes, body: bytes, deadline: float):
        try:
            chan.send(head, body, deadline)
            return chan
        except (TimeoutError, StreamClosed) as exc:
            return self._send_again(chan, exc, head, body, deadline)

    def _send_again(self, chan: StreamChannel, exc: Exception, head: bytes, body: bytes,
                    deadline: float):
        """After a send on a stream failed with `exc`: Timeout, or one more try on a new
        connection; the channel the request went on.

        A connection that broke while this thread was not using it (its shard
        restarted) fails the send, and a shard applies only whole frames:
        nothing was applied, so one new connection may take it.
        """
        for attempt in range(2):
            if type(exc) is not StreamClosed:
                raise Timeout(f"could not send to {_peer_name(chan.shard)} within the "
                              "deadline; the request was not applied") from None
            chan.close()
            if attempt:
                raise ShardUnavailable(f"{_peer_name(chan.shard)} closed the connection "
                                       f"({exc}) before the request was sent; it was not "
                                       "applied, retry shortly") from None
            st = self._local.state
            chan = (self._proxied_channel(st) if chan.shard is None
                    else self._channel_for_slot(st, _header_unpack(head)[2], deadline))
            if type(chan) is not StreamChannel:
                return self._send(chan, head, body, deadline)
            try:
                chan.send(head, body, deadline)
                return chan
            except (TimeoutError, StreamClosed) as again:
                exc = again

    def _shard_entry(self, shard: int) -> dict | None:
        """The coordinator's status of `shard`, or None when it cannot be asked."""
        try:
            status = self.cluster("status", timeout=min(self.request_timeout, 2.0))
        except InmemError:
            if self._closed:
                raise self._closed_error() from None
            return None
        return status_entry(status, shard)

    def _shard_gone(self, shard: int, entry: dict | None = None) -> InmemError | None:
        """ShardUnavailable if the coordinator says `shard` is down or is a newer process."""
        entry = self._shard_entry(shard) if entry is None else entry
        return shard_gone(shard, entry, self._shard_pids)

    def _shard_down(self, shard: int) -> InmemError:
        """Why a direct channel got no answer by the deadline: ShardUnavailable or Timeout."""
        return shard_down(shard, self._shard_entry(shard), self._shard_pids, self.url,
                          self.request_timeout)

    def _roundtrip(self, chan: _Channel, kind: int, target: int, body: bytes, deadline: float):
        """Send one request and return its decoded reply (an InmemError for an error)."""
        while True:
            head = header(kind, target, next(self._rid))
            chan = self._send(chan, head, body, deadline)
            result = unpack_reply(self._reply(chan, head, deadline)[1])
            if type(result) is ClusterNotReady and time.monotonic() + _NOT_READY_PAUSE_S < deadline:
                time.sleep(_NOT_READY_PAUSE_S)
                continue
            return result

    def _reply(self, chan, head: bytes, deadline: float, frames=_UNSEEN) -> list:
        """The reply to the request `head` just sent on `chan`: its frames [header, body].

        `frames`: what a first look for it found, when the caller looked (a
        late reply to an earlier request, or None when the look's slice
        passed). Timeout, or ShardUnavailable for a direct request whose shard
        is gone, when no reply comes.
        """
        shard = chan.shard
        looked = frames is not _UNSEEN
        while True:
            if not looked:
                frames = (self._recv(chan, deadline) if shard is None else
                          # Direct: wait in slices, and between them ask the coordinator
                          # whether the shard is still the process we sent to, so a
                          # request to a shard that died fails as soon as that is known.
                          self._recv(chan, min(deadline, time.monotonic() + _DIRECT_CHECK_S),
                                     deadline))
            looked = False
            if frames is None:
                if shard is not None and time.monotonic() < deadline:
                    gone = self._shard_gone(shard)
                    if gone is not None:
                        raise gone
                    continue
                if shard is not None:
                    raise self._shard_down(shard)
                raise no_reply(self.url, self.request_timeout)
            if len(frames) == 2 and frames[0] == head:
                return frames
            # A late reply to a request that timed out, or junk: not ours.

    # -- the Database backend interface --------------------------------------------

    def call(self, op, args):
        st = self._local.__dict__.get("state") or self._state()
        # busy before the look at the flag, and close() sets the flag before it
        # looks at busy: of a call and a close() that meet, one always sees the other.
        st.busy += 1
        try:
            if self._closed:
                self._check_open()
            prepared = packed_call(op, args, st.packer, self.max_message_bytes)
            if prepared is None:
                return self.cluster(op, list(args))
            run, data, shaped = prepared
            now = time.monotonic()
            deadline = now + self.request_timeout
            slot = self._slots.get(run) if type(run) is str else None
            if slot is None:
                slot = self._slot(run)
            if self.direct:
                if self.owners is None:
                    self._load_slotmap()
                chan = st.shards[self.owners[slot]]
                if chan is None or chan.closed:
                    chan = self._channel_for_slot(st, slot, deadline)
            else:
                chan = self._proxied_channel(st)
            if type(chan) is StreamChannel and chan.shard is not None:
                # The usual case written out here rather than in _roundtrip: a direct
                # request on this host's stream, answered at the first look.
                head = _pack_header(VERSION, KIND_OP, slot, next(self._rid) & _RID_MASK)
                try:
                    chan.send(head, data, deadline)
                except (TimeoutError, StreamClosed) as exc:
                    chan = self._send_again(chan, exc, head, data, deadline)
                frames = None
                if type(chan) is StreamChannel:
                    try:
                        # (short, so not woken by close(): one descriptor fewer to poll)
                        frames = chan.recv(now + self._first_look, self.max_message_bytes,
                                           False, deadline)
                    except StreamClosed as exc:
                        raise self._stream_closed(chan, str(exc)) from None
                if frames is None or frames[0] != head:
                    frames = self._reply(chan, head, deadline, frames)
                result = unpack_reply(frames[1])
                if (type(result) is ClusterNotReady
                        and time.monotonic() + _NOT_READY_PAUSE_S < deadline):
                    time.sleep(_NOT_READY_PAUSE_S)
                    result = self._roundtrip(chan, KIND_OP, slot, data, deadline)
            else:
                result = self._roundtrip(chan, KIND_OP, slot, data, deadline)
            if type(result) is SlotMoved:
                # Our slot map is stale: refresh it and send once more, where it says.
                self._load_slotmap()
                chan = (self._shard_channel(st, self.owners[slot]) if self.direct
                        else self._proxied_channel(st))
                result = self._roundtrip(chan, KIND_OP, slot, data, deadline)
            if isinstance(result, InmemError):
                try:
                    raise result
                finally:
                    result = None  # its traceback holds this frame: no cycle through the error
            return shape(op, args, result) if shaped else result
        finally:
            st.busy -= 1
            if self._closed:
                self._leave(st)

    def _slot(self, run) -> int:
        """slot_of(run), remembered for the runs this client used last."""
        slot = slot_of(run)
        if type(run) is str:
            slots = self._slots
            if len(slots) >= _SLOTS_KEPT:
                slots.clear()
            slots[run] = slot
        return slot

    def cluster(self, name: str, args=(), timeout: float | None = None):
        """A request the coordinator answers itself (status, info, fan-outs...)."""
        st = self._state()
        st.busy += 1  # (see call)
        try:
            self._check_open()
            body = pack_checked(st.packer, [name, list(args)], self.max_message_bytes)
            deadline = time.monotonic() + (self.request_timeout if timeout is None else timeout)
            result = self._roundtrip(self._coord(st), KIND_CLUSTER, 0, body, deadline)
            if isinstance(result, InmemError):
                try:
                    raise result
                finally:
                    result = None
            return shape(name, args, result)
        finally:
            st.busy -= 1
            if self._closed:
                self._leave(st)

    def call_batch(self, ops, _retry: bool = False) -> list:
        st = self._state()
        st.busy += 1  # (see call)
        try:
            self._check_open()
            return self._call_batch(st, ops, _retry)
        finally:
            st.busy -= 1
            if self._closed:
                self._leave(st)

    def _call_batch(self, st: _ThreadState, ops, _retry: bool) -> list:
        parts = None if _retry else batch_segments(ops)
        if parts is not None:
            # A read of every shard queued before run operations: in parts, in order.
            out: list = []
            for start, end in parts:
                out += self.call_batch(ops[start:end])
            return out
        if self.owners is None:
            self._load_slotmap()
        owners = self.owners
        results: list = [None] * len(ops)
        sent: dict = {}
        later: list = []
        # Each full chunk is sent as soon as it is planned: the shard applies
        # it while the rest is packed. The request timeout bounds each wait for
        # the cluster to take a chunk or answer one, not the whole pipeline (a
        # bulk load may take minutes).
        for shard, indexes, bodies in plan_batch(ops, owners, results, later):
            self._flush_group(st, shard, (indexes, bodies), results, sent)
        self._collect(st, sent, ops, results)
        moved = [i for i, r in enumerate(results) if type(r) is SlotMoved]
        if moved and not _retry:
            # Our slot map is stale: refresh it and send those once more.
            self._load_slotmap()
            again = self.call_batch([ops[i] for i in moved], _retry=True)
            for i, r in zip(moved, again):
                results[i] = r
        for i in later:
            op, args = ops[i]
            try:
                results[i] = self.call(op, args)
            except InmemError as exc:
                results[i] = _bare(exc)
        return results

    def _flush_group(self, st, shard, group, results, sent) -> None:
        indexes, bodies = group
        for idx, payload in chunks(st.packer, indexes, bodies, results, self.max_message_bytes):
            try:
                head, chan = self._send_batch(st, shard, payload,
                                              time.monotonic() + self.request_timeout)
            except ShardUnavailable as exc:
                for i in idx:
                    results[i] = _bare(exc)
                continue
            sent[head] = (idx, payload, shard, chan)

    def _send_batch(self, st, shard: int, payload: bytes, deadline: float):
        # A batch goes where one of its planned shard's slots lives now: the same
        # shard, unless the map changed since the plan (the shard then answers
        # SlotMoved for each operation it does not own, and those are sent again).
        slots = self.shard_slot
        slot = slots[shard] if shard < len(slots) else 0
        chan = (self._channel_for_slot(st, slot, deadline) if self.direct
                else self._proxied_channel(st))
        head = header(KIND_BATCH, slot, next(self._rid))
        return head, self._send(chan, head, payload, deadline)

    def _collect(self, st, sent: dict, ops, results) -> None:
        """The replies to the batches in `sent`, into `results`; each one answered gives
        the rest another `request_timeout`."""
        poller = None
        deadline = time.monotonic() + self.request_timeout
        while sent:
            chans = {id(entry[3]): entry[3] for entry in sent.values()}
            if len(chans) == 1:
                (chan,) = chans.values()
                try:
                    frames = self._recv(chan, deadline)
                except ShardUnavailable as exc:
                    self._fail_channel(sent, chan, results, exc)
                    continue
            else:
                # Direct batches to several shards: take whichever answers first.
                if poller is None:
                    poller = zmq.Poller()
                    registered = set()
                frames = None
                for chan in chans.values():
                    if id(chan) not in registered:
                        poller.register(chan.sock if type(chan) is _Channel else chan, zmq.POLLIN)
                        registered.add(id(chan))
                    if type(chan) is StreamChannel and chan.ready():
                        frames = chan  # a whole reply already read: no need to poll
                        break
                if frames is None:
                    wait_ms = int((deadline - time.monotonic()) * 1000)
                    ready = (dict(poller.poll(min(wait_ms, _CLOSE_CHECK_MS))) if wait_ms > 0
                             else {})
                    for chan in chans.values():
                        # (a poller names a plain socket by its descriptor)
                        if (chan.sock if type(chan) is _Channel else chan.fileno()) in ready:
                            frames = chan
                            break
                    if frames is None and wait_ms > 0:
                        if self._closed:
                            raise self._closed_error()
                        continue
                if frames is not None:
                    try:
                        frames = self._recv(frames, deadline)
                    except ShardUnavailable as exc:
                        self._fail_channel(sent, frames, results, exc)
                        continue
            if frames is None:
                self._expire(sent, results, deadline)
                return
            if len(frames) != 2 or frames[0] not in sent:
                continue
            idx, payload, shard, chan = sent.pop(frames[0])
            deadline = time.monotonic() + self.request_timeout
            reply = unpack_reply(frames[1])
            if type(reply) is ClusterNotReady and time.monotonic() + _NOT_READY_PAUSE_S < deadline:
                time.sleep(_NOT_READY_PAUSE_S)
                head, chan = self._send_batch(st, shard, payload, deadline)
                sent[head] = (idx, payload, shard, chan)
                continue
            apply_batch_reply(reply, idx, ops, results)

    @staticmethod
    def _fail_channel(sent: dict, chan, results, exc: InmemError) -> None:
        """Every batch in flight on `chan` gets `exc` (its shard closed the connection)."""
        exc = _bare(exc)
        for head in [h for h, entry in sent.items() if entry[3] is chan]:
            for i in sent.pop(head)[0]:
                results[i] = exc

    def _expire(self, sent: dict, results, deadline) -> None:
        if not self.direct:
            raise no_reply(self.url, self.request_timeout, len(sent))
        for idx, _payload, shard, _chan in sent.values():
            err = self._shard_down(shard)
            if type(err) is Timeout:
                try:
                    raise err
                finally:
                    err = None
            for i in idx:
                results[i] = err

    # -- cluster-wide operations ---------------------------------------------------

    def wait_ready(self, timeout: float) -> dict:
        """Wait until every shard is ready; ClusterNotReady after `timeout`."""
        deadline = time.monotonic() + timeout
        status = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                status = self.cluster("status", timeout=min(left, 0.5))
            except Timeout:
                continue
            if status.get("ready"):
                self._load_slotmap()
                return status
            time.sleep(min(_READY_POLL_S, max(deadline - time.monotonic(), 0)))
        if status is None:
            hint = ("; a cluster with keys answers only clients holding one (connect(url, "
                    "keys=DIR))" if self.keys is None and self.url.startswith("tcp://") else "")
            raise ClusterNotReady(f"no coordinator answered at {self.url} within {timeout:g} s"
                                  + hint)
        waiting = ", ".join(f"shard {s['shard']} {s['state']}" for s in status["shards"]
                            if s["state"] != "ready")
        raise ClusterNotReady(f"the cluster at {self.url} was not ready within {timeout:g} s "
                              f"({waiting})")

    def _load_slotmap(self, timeout: float | None = None) -> None:
        """Take the coordinator's slot map, and when routing direct the cluster's status
        (kept as `_last_status`): ClusterNotReady unless every shard is ready."""
        m = SlotMap.parse(self.cluster("slotmap", timeout=timeout))
        owners, count = m.owners, m.shard_count
        if m.endpoints != self.shard_endpoints:
            self._new_layout(count)
        self.shard_slot = m.shard_slot
        self.shard_endpoints = m.endpoints
        self.shard_keys = _shard_keys(self.keys, m.shard_keys, count)
        self.shard_streams = [stream_path(e) for e in self.shard_endpoints]
        # The cluster's limit, so that an oversized request is refused here, clearly.
        if m.max_message_bytes is not None:
            self.max_message_bytes = min(self.max_message_bytes, m.max_message_bytes)
        if self.direct:
            # Straight to the shards only once every one has recovered (the
            # coordinator's readiness gate, which direct requests do not pass);
            # and which process each shard is, to tell a restart from a slow reply.
            status = self._last_status = self.cluster("status", timeout=timeout)
            if not status.get("ready"):
                raise ClusterNotReady(f"the cluster at {self.url} is not ready yet; retry shortly")
            for entry in status["shards"]:
                self._shard_pids[entry["shard"]] = entry.get("pid")
        self.owners = owners

    def _new_layout(self, count: int) -> None:
        """The shards moved (a first map, or a cluster replaced at this address): every
        thread's channels to the old ones are retired, for that thread to close."""
        with self._seats.lock:
            self._most_shards = size = max(self._most_shards, count)
            for ref in list(self._seats.states.values()):
                st = ref()
                if st is not None:
                    st.retired += [c for c in st.shards if c is not None]
                    st.shards = [None] * size

    def kv_section(self) -> KV:
        return KV(self.call)

    def fanout(self, op: str, args) -> list:
        """A read-only operation on every shard: one answer per shard, in shard order."""
        return self.cluster("fanout", [op, list(args)])

    def snapshot(self) -> list:
        return self.cluster("snapshot", timeout=max(self.request_timeout,
                                                     protocol.SLOW_ADMIN_TIMEOUT_S))

    def compact_history(self) -> list:
        return self.cluster("compact_history", timeout=max(self.request_timeout,
                                                     protocol.SLOW_ADMIN_TIMEOUT_S))

    def recovery_report(self) -> list:
        return self.cluster("recovery_report")

    def info(self) -> dict:
        return self.cluster("info")

    def status(self) -> dict:
        return self.cluster("status")

    def close(self) -> None:
        """Close this client; other threads' calls, in progress or later, raise InmemError.

        Returns at once. The sockets of a thread that is not inside a call are
        closed here; a thread inside one is woken (a wait on a stream) or looks
        at the flag within _CLOSE_CHECK_MS (a wait on ZeroMQ), and closes its
        own sockets as its call ends with the closed error (or its result, if
        that came first). The context ends with the last of them.
        """
        if self._closed is True:
            return
        if os.getpid() != self._pid:
            # A forked child's copy: nothing of it is the child's to close.
            self._closed = True
            self._finalizer()
            return
        seats = self._seats
        with seats.lock:
            self._closed = True
            states = [(key, ref()) for key, ref in seats.states.items()]
        busy = False
        for key, st in states:
            if st is None:
                continue
            if st.busy:
                busy = True
            elif seats.claim(key):
                st.close()
                seats.done()
        if busy:
            with seats.lock:
                if seats.wake is not None and not self._ended:
                    try:
                        os.write(seats.wake[1], b"\0")
                    except BlockingIOError:
                        pass  # full: it is readable already
        _live_backends.discard(self)
        self._end_if_unused()

    def describe(self) -> str:
        return f"cluster {self.url}" + (" (direct to shards)" if self.direct else "")


def _client_keys(keys):
    """The ClientKeys of the `keys` option (None: no keys; plain tcp)."""
    if keys is None:
        return None
    if not isinstance(keys, (str, os.PathLike)):
        raise InvalidOption(f"keys is a key directory (inmem keys generate) or a client's "
                            f".key_secret file, got {type(keys).__name__}")
    from .keys import ClientKeys
    return ClientKeys(keys)


def _shard_keys(keys, announced, count: int) -> list:
    """Each shard's public key: as the coordinator (whose key we checked) announced it, or
    from our key directory."""
    out = [None] * count
    if keys is None:
        return out
    for i in range(count):
        key = announced[i] if isinstance(announced, list) and i < len(announced) else None
        out[i] = key.encode("ascii") if isinstance(key, str) else keys.shard_key(i)
    return out


def connect(url: str, timeout: float = 5.0, **options) -> Database:
    """A Database on the cluster at `url`, once every shard is ready (ClusterNotReady if not).

    Options: request_timeout (seconds per call, in a pipeline per chunk;
    default `timeout`),
    max_message_bytes (the cluster's limit), direct (send run operations
    straight to the owning shard, skipping the coordinator hop; default
    True), stream (reach a shard or coordinator on this host through its
    Unix stream socket rather than ZeroMQ; default True), keys (the
    cluster's key directory, or a client's `.key_secret` file: Curve on tcp).
    """
    check_connect_options(options)
    backend = ClusterBackend(url, timeout, **options)
    try:
        backend.wait_ready(timeout)
    except BaseException:
        backend.close()
        raise
    return Database(backend)


__all__ = ["connect", "ClusterBackend"]
