"""The cluster client: `connect(url)` returns a Database whose backend talks to a coordinator.

Threads: each thread that uses the Database gets its own DEALER socket (pyzmq
sockets must not be shared between threads). We measured the alternative, one
socket behind a lock: it is as fast from one thread and serialises many
threads into one request at a time, while a socket per thread lets their
requests be in flight together (see the note in `bench/` figures). Sockets
are made on a thread's first call and all closed by `close()`.

Every request has a request id (in the header, echoed by the reply: a late
reply to a request that timed out is recognised and dropped) and a deadline:
no reply by then raises `inmem.Timeout`. `ClusterNotReady` replies are
retried until the deadline, since nothing was applied; `ShardUnavailable`
goes to the caller, who decides whether the operation may be retried.
Sockets use LINGER 0, so closing or exiting never waits for a peer.

Pipelines are grouped per shard with the coordinator's slot map (fetched when
connecting) into BATCH messages, all sent before the first reply is awaited,
and the results are put back in pipeline order. A transaction is one
`tx.commit` message holding its read set and write set.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref

import zmq

from . import protocol
from .database import Database
from .errors import ClusterNotReady, InmemError, ProtocolError, Timeout
from .protocol import (FANOUT_OPS, KIND_BATCH, KIND_CLUSTER, KIND_OP, SLOT_COUNT, header,
                       op_body, pack_checked, route_run, shape, slot_of, unpack_reply)

#: how long to wait between asking a cluster that is not ready yet
_NOT_READY_PAUSE_S = 0.05

_live_backends: "weakref.WeakSet[ClusterBackend]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's sockets must not be touched from a forked child.
    for backend in list(_live_backends):
        backend._closed = "this Database was opened before fork(); connect again in the child"


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ThreadState:
    """One thread's socket and packer; closing it when the thread is gone."""

    __slots__ = ("sock", "packer", "rcvtimeo", "__weakref__")

    def __init__(self, sock):
        self.sock = sock
        self.packer = protocol.new_packer()
        self.rcvtimeo = -1

    def __del__(self):
        try:
            self.sock.close(0)
        except Exception:
            pass


class ClusterBackend:
    def __init__(self, url: str, timeout: float = 5.0, *, request_timeout: float | None = None,
                 max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES):
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"a cluster URL looks like ipc:///path or tcp://host:port, got {url!r}")
        self.url = url
        self.timeout = float(timeout)
        self.request_timeout = float(request_timeout if request_timeout is not None else timeout)
        self.max_message_bytes = max_message_bytes
        self.ctx = zmq.Context(1)
        self._local = threading.local()
        self._states: "weakref.WeakSet[_ThreadState]" = weakref.WeakSet()
        self._states_lock = threading.Lock()
        self._rid = itertools.count(1)
        self._closed: bool | str = False
        self.owners: list | None = None
        self.shard_slot: list = []
        _live_backends.add(self)

    # -- sockets -------------------------------------------------------------------

    def _state(self) -> _ThreadState:
        try:
            return self._local.state
        except AttributeError:
            pass
        if self._closed:
            raise InmemError(self._closed if isinstance(self._closed, str)
                             else "the database is closed")
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, -1)  # replies are from our cluster, which caps them
        sock.setsockopt(zmq.SNDTIMEO, max(int(self.request_timeout * 1000), 1))
        sock.connect(self.url)
        st = _ThreadState(sock)
        with self._states_lock:
            self._states.add(st)
        self._local.state = st
        return st

    def _recv(self, st: _ThreadState, deadline: float):
        """The next message on this thread's socket, or None once the deadline has passed."""
        sock = st.sock
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                return None
            # setsockopt only when the timeout must shrink (a stale reply ate
            # into the deadline) or has room to grow again; overshooting the
            # deadline by up to 20 ms is the price of not setting it every call.
            current = st.rcvtimeo
            if current < 0 or remaining < current - 20 or remaining > current + 1000:
                sock.setsockopt(zmq.RCVTIMEO, remaining)
                st.rcvtimeo = remaining
            try:
                return sock.recv_multipart()
            except zmq.Again:
                continue

    def _roundtrip(self, st: _ThreadState, kind: int, target: int, body: bytes, deadline: float):
        """Send one request and return its decoded reply (an InmemError for an error)."""
        sock = st.sock
        while True:
            head = header(kind, target, next(self._rid))
            try:
                sock.send_multipart((head, body))
            except zmq.Again:
                raise Timeout(f"could not send to {self.url} within the deadline") from None
            while True:
                frames = self._recv(st, deadline)
                if frames is None:
                    raise Timeout(f"no reply from {self.url} within {self.request_timeout:g} s")
                if len(frames) == 2 and frames[0] == head:
                    break
                # A late reply to a request that timed out, or junk: not ours.
            result = unpack_reply(frames[1])
            if type(result) is ClusterNotReady and time.monotonic() + _NOT_READY_PAUSE_S < deadline:
                time.sleep(_NOT_READY_PAUSE_S)
                continue
            return result

    # -- the Database backend interface --------------------------------------------

    def call(self, op, args):
        st = self._local.__dict__.get("state") or self._state()
        if self._closed:
            raise InmemError(self._closed if isinstance(self._closed, str)
                             else "the database is closed")
        run = route_run(op, args)
        if run is None and op in FANOUT_OPS:
            return self.cluster(op, list(args))
        body = pack_checked(st.packer, op_body(op, args), self.max_message_bytes)
        result = self._roundtrip(st, KIND_OP, slot_of(run), body,
                                 time.monotonic() + self.request_timeout)
        if isinstance(result, InmemError):
            raise result
        return shape(op, args, result)

    def cluster(self, name: str, args=(), timeout: float | None = None):
        """A request the coordinator answers itself (status, info, fan-outs...)."""
        st = self._state()
        body = pack_checked(st.packer, [name, list(args)], self.max_message_bytes)
        deadline = time.monotonic() + (self.request_timeout if timeout is None else timeout)
        result = self._roundtrip(st, KIND_CLUSTER, 0, body, deadline)
        if isinstance(result, InmemError):
            raise result
        return shape(name, args, result)

    def call_batch(self, ops) -> list:
        st = self._state()
        if self.owners is None:
            self._load_slotmap()
        owners = self.owners
        results: list = [None] * len(ops)
        groups: dict = {}  # shard -> ([indexes], [bodies])
        later = []
        for i, (op, args) in enumerate(ops):
            run = route_run(op, args)
            if run is None and op in FANOUT_OPS:
                later.append(i)
                continue
            try:
                body = op_body(op, args)
            except InmemError as exc:
                results[i] = exc
                continue
            shard = owners[slot_of(run)]
            g = groups.get(shard)
            if g is None:
                g = groups[shard] = ([], [])
            g[0].append(i)
            g[1].append(body)
        deadline = time.monotonic() + self.request_timeout
        sent = {}
        for shard, (indexes, bodies) in groups.items():
            for idx, payload in self._chunks(st, indexes, bodies, results):
                sent[self._send_batch(st, self.shard_slot[shard], payload)] = (idx, payload,
                                                                             shard)
        self._collect(st, sent, ops, results, deadline)
        for i in later:
            op, args = ops[i]
            try:
                results[i] = self.call(op, args)
            except InmemError as exc:
                results[i] = exc
        return results

    def _chunks(self, st, indexes, bodies, results):
        """Packed BATCH bodies under the message limit, with the indexes each one holds."""
        try:
            yield indexes, pack_checked(st.packer, bodies, self.max_message_bytes)
            return
        except InmemError as exc:
            if len(bodies) == 1:
                results[indexes[0]] = exc
                return
        half = len(bodies) // 2
        yield from self._chunks(st, indexes[:half], bodies[:half], results)
        yield from self._chunks(st, indexes[half:], bodies[half:], results)

    def _send_batch(self, st, slot: int, payload: bytes) -> bytes:
        head = header(KIND_BATCH, slot, next(self._rid))
        try:
            st.sock.send_multipart((head, payload))
        except zmq.Again:
            raise Timeout(f"could not send to {self.url} within the deadline") from None
        return head

    def _collect(self, st, sent: dict, ops, results, deadline) -> None:
        while sent:
            frames = self._recv(st, deadline)
            if frames is None:
                raise Timeout(f"no reply from {self.url} within {self.request_timeout:g} s "
                              f"({len(sent)} batches unanswered)")
            if len(frames) != 2 or frames[0] not in sent:
                continue
            idx, payload, shard = sent.pop(frames[0])
            reply = unpack_reply(frames[1])
            if type(reply) is ClusterNotReady and time.monotonic() + _NOT_READY_PAUSE_S < deadline:
                time.sleep(_NOT_READY_PAUSE_S)
                sent[self._send_batch(st, self.shard_slot[shard], payload)] = (idx, payload, shard)
                continue
            if isinstance(reply, InmemError):
                for i in idx:
                    results[i] = reply
                continue
            if type(reply) is not list or len(reply) != len(idx):
                err = ProtocolError("a batch reply does not match its request")
                for i in idx:
                    results[i] = err
                continue
            for i, r in zip(idx, reply):
                if isinstance(r, InmemError):
                    results[i] = r
                else:
                    op, args = ops[i]
                    try:
                        results[i] = shape(op, args, r)
                    except ProtocolError as exc:
                        results[i] = exc

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
            time.sleep(min(_NOT_READY_PAUSE_S, max(deadline - time.monotonic(), 0)))
        if status is None:
            raise ClusterNotReady(f"no coordinator answered at {self.url} within {timeout:g} s")
        waiting = ", ".join(f"shard {s['shard']} {s['state']}" for s in status["shards"]
                            if s["state"] != "ready")
        raise ClusterNotReady(f"the cluster at {self.url} was not ready within {timeout:g} s "
                              f"({waiting})")

    def _load_slotmap(self) -> None:
        m = self.cluster("slotmap")
        owners = [0] * SLOT_COUNT
        first = {}
        for start, end, shard in m["ranges"]:
            owners[start:end + 1] = [shard] * (end - start + 1)
            first.setdefault(shard, start)
        self.shard_slot = [first.get(s, 0) for s in range(m["shard_count"])]
        self.owners = owners

    def snapshot(self) -> list:
        return self.cluster("snapshot")

    def recovery_report(self) -> list:
        return self.cluster("recovery_report")

    def info(self) -> dict:
        return self.cluster("info")

    def status(self) -> dict:
        return self.cluster("status")

    def close(self) -> None:
        if self._closed is True:
            return
        self._closed = True
        with self._states_lock:
            states = list(self._states)
        for st in states:
            try:
                st.sock.close(0)
            except Exception:
                pass
        self.ctx.destroy(0)
        _live_backends.discard(self)

    def describe(self) -> str:
        return f"cluster {self.url}"


def connect(url: str, timeout: float = 5.0, **options) -> Database:
    """A Database on the cluster at `url`, once every shard is ready (ClusterNotReady if not)."""
    backend = ClusterBackend(url, timeout, **options)
    try:
        backend.wait_ready(timeout)
    except BaseException:
        backend.close()
        raise
    return Database(backend)


__all__ = ["connect", "ClusterBackend"]
