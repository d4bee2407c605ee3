"""The coordinator: the clients' ROUTER, routing by slot, fan-out, readiness, supervision.

One thread, one poll loop over the client socket, the client stream socket
(clients on this host, `inmem.stream`), one DEALER per shard and, for each
ready shard on this host, a stream link to it.

The hot path is a forward: a client's [identity, header, body] is checked
(frame count, header length, version byte, kind), its slot looked up in the
slot map, and the same three frames are sent to the owning shard; the shard's
reply comes back with the identity in front and goes out unchanged. Bodies
are never decoded on this path, and big ones are not copied either (sent
with copy=False: pyzmq copies only those under its copy threshold, where a
copy is cheaper than tracking the buffer). A stream client's requests get an
identity of their own (`STREAM_IDENT_BYTES`), so the shards and the
bookkeeping below see them as any other client's. Operations for a shard on
this host go over its stream socket (fewer thread hand-overs than a DEALER)
under a request id of the coordinator's own, which maps the reply back to
its client; when that stream closes, what was in flight on it is answered
ShardUnavailable at once. Admin requests (hello, ping, info) stay on the
DEALER, which is also the path to shards on other hosts. The one piece of bookkeeping is the set of
requests in flight per shard, so that when a shard dies each of them is
answered ShardUnavailable instead of waiting for the client's deadline.

Everything else is rare and may decode: cluster requests (status, info,
slot map, snapshot, recovery report) and the fan-out of operations that are
not about one run (`inmem.ops.FANOUT_OPS`), sent to every shard at once
and merged in an order that does not depend on which shard answered first.

Readiness: until every shard has answered "hello" once (each after its own
recovery, all in parallel), routed requests get ClusterNotReady. After that a
shard that is down, restarting or unresponsive (silent for the heartbeat
timeout, see `_heartbeats`) makes only its own slots answer ShardUnavailable.
SIGTERM/SIGINT stop the loop; shards are stopped cleanly (flush, final
snapshot) by the supervisor.

A shard that cannot start for a lasting reason (its files, their permissions,
damage recovery may not skip: see `inmem.processes.lasting_failure`) before
the cluster was first ready ends the start at once: `run` raises
ClusterNotReady naming the shard, the path and the cause, and the shards are
killed (none has served anything). Once the cluster has been ready, a shard
that dies is restarted whatever the reason, with backoff; while its restarts
fail, its status says why and requests for its slots are answered
ShardUnavailable with that reason.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import struct
import time
import traceback

import zmq

import inmem.protocol as protocol
from inmem.errors import ClusterNotReady, InmemError, ProtocolError, ShardUnavailable
from inmem.files import CLUSTER_LOCK_NAME, lock_file_pid, make_dirs, socket_in_use, try_lock
from inmem.keys import (COORDINATOR, KeyFileError, ServerKeys, insecure_warning, is_tcp,
                        public_key, shard_name)
from inmem.ops import FANOUT_READ_OPS
from inmem.stream import stream_path
from inmem.stream_server import Connection, StreamLink, StreamServer
from inmem.transport import SocketsPoll, bind_router, drain
from inmem.types import RecoveryResult
from inmem.protocol import (HEADER_BYTES, KIND_ADMIN, KIND_BATCH, KIND_CLUSTER, KIND_OP,
                            SLOT_COUNT, VERSION)

from .config import (ConfigError, check_not_nested, connect_endpoint, prepare_socket_dir,
                     runtime_dir_problem, shard_dir, socket_dir, tcp_endpoints, with_shard_count)
from .fanout import FanOut, describe_recovery
from .slotmap import SlotMap
from .supervisor import DOWN, READY, RECOVERING, UNRESPONSIVE, Supervisor

log = logging.getLogger("inmem.coordinator")

TICK_S = 0.02
#: the identity a stream client's requests carry to the shards: 0x01 and a
#: counter, never the 5 bytes starting 0x00 that a ROUTER gives its peers
STREAM_IDENT_BYTES = 9
#: the request id field of a header (after version, kind and slot)
_RID = struct.Struct("<Q")
#: how often a recovering shard is asked whether it is ready: often, since its
#: answer is what the whole cluster waits for (a shard binds only once recovered,
#: so until then the ask fails at once, costing nothing). Until the cluster is
#: first ready the loop wakes this often to ask; later restarts ask every tick
HELLO_EVERY_S = 0.005
#: how often the link to a shard on this host tries to connect while it is not there
LOCAL_RECONNECT_MS = 5
#: frames taken from one socket per loop turn, so one busy peer cannot starve the rest
DRAIN_MAX = 1024
#: requests, and bytes of them, forwarded to one shard and not answered yet beyond
#: which the next is answered ShardUnavailable instead of queued: what a peer
#: that sends faster than the shard answers can make this process hold (the
#: shard reads at most RECV_QUEUE_MAX of them; the rest waits here). Far above
#: what clients that wait for their answers ever have in flight.
INFLIGHT_MAX = 65536
INFLIGHT_BYTES_MAX = 512 * 2**20
#: a cluster request (info, fan-out) not answered by then is answered Timeout
INTERNAL_TIMEOUT_S = 30.0
#: set by `python -m inmem.coordinator --watch-parent`: stop when this process is gone
PARENT_PID: int | None = None


class ShardLink:
    """The coordinator's connection to one shard and the requests in flight on it."""

    __slots__ = ("handle", "sock", "inflight", "inflight_bytes", "hello_sent", "last_seen",
                 "ping_sent", "stream", "by_rid")

    def __init__(self, handle):
        self.handle = handle
        self.sock = None
        #: the shard's stream socket, for forwarded operations (None: they go on `sock`)
        self.stream: StreamLink | None = None
        #: forwarded on `stream`: our request id -> (client identity, client's header)
        self.by_rid: dict = {}
        self.inflight: dict = {}  # (client identity, header) -> body size
        self.inflight_bytes = 0
        self.hello_sent = 0.0
        self.last_seen = time.monotonic()
        self.ping_sent: float | None = None


class Coordinator:
    def __init__(self, spec: dict, out=print):
        self.out = out
        self.spec = spec
        self.stopping = False
        self.ready_once = False
        #: a new data directory's slot map, saved when the cluster is first ready
        self._unsaved_map = False
        self.t0 = time.monotonic()
        self.counters = {"dropped_frames": 0, "protocol_errors": 0, "internal_errors": 0,
                         "shard_unavailable": 0}
        self._rid = itertools.count(1)
        self._pending: dict = {}  # internal request id -> (callback, deadline)
        self._lock_fd = None
        #: why the start failed, when a shard could not start (see `_fail_start`)
        self.start_failure: InmemError | None = None
        self.ctx = None
        self.front = None
        self.stream: StreamServer | None = None
        #: stream connections by the identity their requests carry to the shards
        self.stream_peers: dict[bytes, Connection] = {}
        self._stream_ids = itertools.count(1)
        self._forward_ids = itertools.count(1)
        self._by_stream_fd: dict[int, ShardLink] = {}
        self.poller = None
        self.supervisor = None
        self.server_keys = None
        self.shard_keys: dict = {}
        self._links_version = 0  # bumped when a shard's socket is replaced

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        check_not_nested(spec["data_dir"], "data_dir")
        make_dirs(spec["data_dir"])
        self._lock_fd = lock_data_dir(spec["data_dir"])
        # A new map is saved once the cluster is first ready (`_saw_ready`): a start that
        # fails (an endpoint it cannot bind, a shard that cannot start) must not fix the
        # data directory's shard count, nor make it look like one that has served.
        new_map = SlotMap.read(spec["data_dir"]) is None
        slotmap = SlotMap.load_or_create(spec["data_dir"], len(spec["shards"]),
                                         spec["shards_auto"], save=False)
        if slotmap.shard_count != len(spec["shards"]):
            spec = self.spec = with_shard_count(spec, slotmap.shard_count)
        if not new_map:
            _check_shard_dirs(spec)
        self.slotmap = slotmap
        self.owners = slotmap.owners
        # Every hello carries the slot map, so a shard can redirect a request
        # sent with a stale one (see inmem.errors.SlotMoved), and a token the
        # shards this coordinator starts are given: only its hellos set their map.
        self._hello_token = secrets.token_hex(16)
        self._hello = protocol.new_packer().pack(
            ["hello", [protocol.pack_owners(slotmap.owners), self._hello_token]])
        self._first_slot = {}
        for slot, shard in enumerate(slotmap.owners):
            self._first_slot.setdefault(shard, slot)
        self.max_message_bytes = spec["max_message_bytes"]
        self.packer = protocol.new_reply_packer()
        prepare_socket_dir(spec)
        self._load_keys(spec)
        self.supervisor = Supervisor(spec, out=self.out, hello_token=self._hello_token)
        # The shards first, forked before this process opens a socket or starts a
        # thread: they recover while the rest of the start-up goes on.
        self.supervisor.start_all(fork=True)
        self._unsaved_map = new_map
        try:
            self._start_serving(spec)
        except BaseException:
            # They have served nothing: no need to wait for a clean stop (a shard
            # killed mid-recovery recovers the same files next time).
            self.supervisor.kill_all()
            raise

    def _start_serving(self, spec: dict) -> None:
        self.ctx = zmq.Context(1)
        self._start_keys(spec)
        self.poller = SocketsPoll()
        self.links = [ShardLink(h) for h in self.supervisor.handles]
        # Where each shard is reached: a local one bound on a network interface's name
        # (tcp://lo:7711) at that interface's address.
        self.shard_addresses = [h.endpoint if h.remote else connect_endpoint(h.endpoint)
                                for h in self.supervisor.handles]
        for link in self.links:
            self._connect(link)
        endpoint = spec["client_endpoint"]
        try:
            front = bind_router(self.ctx, endpoint, self.max_message_bytes, self.server_keys)
        except InmemError as exc:
            raise ConfigError(str(exc)) from None
        self.front = front
        self.poller.register(front, zmq.POLLIN)
        path = stream_path(endpoint)
        if path is not None:
            try:
                self.stream = StreamServer(path, self.max_message_bytes)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {path}: {exc}") from None
            self.stream.register(self.poller)
        self.out(f"inmem coordinator pid {os.getpid()} on {endpoint}: "
                 f"{len(self.links)} shards, {spec['durability']}, data in {spec['data_dir']}")

    def _load_keys(self, spec: dict) -> None:
        """Curve for every tcp endpoint: our keypair and each tcp shard's public key, read.

        Only files are read here (a missing one is a ConfigError before any
        shard starts); the ZAP handler starts in `_start_keys`.
        """
        self.server_keys = None
        self.shard_keys: dict = {}  # shard id -> its public key, for shards on tcp
        tcp = tcp_endpoints(spec)
        if not tcp:
            return
        if not spec.get("keys"):
            self.out("WARNING: " + insecure_warning(tcp))
            return
        try:
            self.server_keys = ServerKeys(spec["keys"], COORDINATOR)
            for s in spec["shards"]:
                if is_tcp(s["endpoint"]):
                    self.shard_keys[s["id"]] = public_key(spec["keys"], shard_name(s["id"]))
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None

    def _start_keys(self, spec: dict) -> None:
        """The ZAP handler for a tcp client endpoint (a thread: after the shards are forked)."""
        if self.server_keys is None:
            return
        if is_tcp(spec["client_endpoint"]):
            self.server_keys.start(self.ctx)
        self.out(f"Curve on {', '.join(tcp_endpoints(spec))}: peers admitted from "
                 f"{spec['keys']} ({len(self.server_keys.admitted)} keys)")

    def _connect(self, link: ShardLink) -> None:
        if link.sock is not None:
            self.poller.unregister(link.sock)
            link.sock.close(0)  # linger 0: requests queued for a dead shard are dropped
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # Queue only on a live connection: a send to a shard that is not there
        # fails at once instead of waiting for whatever process binds next.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # Replies wait in the shard rather than here when this loop falls behind.
        sock.setsockopt(zmq.RCVHWM, protocol.RECV_QUEUE_MAX)
        sock.setsockopt(zmq.SNDHWM, 0)
        if link.handle.remote:
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        else:
            # A shard on this host binds the moment it has recovered, and the whole
            # cluster waits for that: try every few ms without backing off (a
            # connect to a socket not there yet is one failed syscall), or the
            # backoff would add up to its maximum to every start.
            sock.setsockopt(zmq.RECONNECT_IVL, LOCAL_RECONNECT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        shard_key = self.shard_keys.get(link.handle.id)
        if shard_key is not None:
            self.server_keys.connect_as_client(sock, shard_key)
        sock.connect(self.shard_addresses[link.handle.id])
        link.sock = sock
        link.hello_sent = 0.0
        link.ping_sent = None
        link.last_seen = time.monotonic()
        self.poller.register(sock, zmq.POLLIN)
        self._links_version += 1

    # -- the loop ------------------------------------------------------------------

    def serve(self) -> None:
        front = self.front
        stream = self.stream
        by_sock = {}
        version = -1
        next_tick = 0.0
        while not self.stopping:
            if version != self._links_version:
                version = self._links_version
                by_sock = {l.sock: l for l in self.links}
            # Until the cluster is first ready, the hellos that find each shard
            # the moment it binds go out every few ms: a start waits for them.
            events = self.poller.poll((TICK_S if self.ready_once else HELLO_EVERY_S) * 1000)
            by_fd = self._by_stream_fd
            for sock, ev in events:
                if sock is front:
                    self._drain_front()
                elif sock in by_fd:
                    self._drain_link_stream(by_fd[sock], ev)
                else:
                    link = by_sock.get(sock)
                    if link is not None:
                        self._drain_shard(link)
            if stream is not None and events:
                self._drain_stream(dict(events))
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK_S
                self._tick(now)
            elif not self.ready_once:
                self._send_hellos(now)

    def _drain_stream(self, events: dict) -> None:
        """Requests from stream clients, handled as ROUTER messages under an identity of their own."""
        batch: list = []
        stream = self.stream
        before = len(stream.connections)
        stream.read(events, batch, DRAIN_MAX)
        peers = self.stream_peers
        if len(stream.connections) != before or len(peers) > len(stream.connections):
            self._sync_stream_peers()
        for msg in batch:
            conn = msg[0]
            ident = conn.ident
            if ident is None:
                serial = next(self._stream_ids).to_bytes(STREAM_IDENT_BYTES - 1, "little")
                ident = conn.ident = b"\x01" + serial
                peers[ident] = conn
            msg[0] = ident
            self._client_message(msg)

    def _sync_stream_peers(self) -> None:
        live = self.stream.connections
        for ident, conn in list(self.stream_peers.items()):
            if conn.closed or live.get(conn.fd) is not conn:
                del self.stream_peers[ident]

    def _drain_front(self) -> None:
        handle = self._client_message
        for frames in drain(self.front, DRAIN_MAX):
            if len(frames[0]) == STREAM_IDENT_BYTES:
                self._reserved_ident(frames)
                continue
            handle(frames)

    def _reserved_ident(self, frames: list) -> None:
        """A ZeroMQ peer that set a routing id of a stream client's size: refused.

        Replies to such ids go to stream clients (`_send_frames`), so this
        peer's replies would reach the stream client of that name. It is told
        so on its own socket when its request can be answered at all.
        """
        self.counters["protocol_errors"] += 1
        if len(frames) != 3 or protocol.request_id_of(frames[1]) is None:
            self.counters["dropped_frames"] += 1
            return
        try:
            self.front.send_multipart([frames[0], frames[1], protocol.error_body(ProtocolError(
                f"routing ids of {STREAM_IDENT_BYTES} bytes are reserved for the "
                "coordinator's stream clients; let ZeroMQ choose this socket's"))],
                zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._used(self.front)

    def _client_message(self, frames: list) -> None:
        """Forward, answer or drop one [identity, header, body].

        Whatever goes wrong on the way is answered (or counted), never the
        end of the loop. Bodies are forwarded as they came, never decoded.
        """
        counters = self.counters
        try:
            if len(frames) != 3:
                counters["dropped_frames"] += 1
                return
            ident, head, body = frames
            if len(head) != HEADER_BYTES or head[0] != VERSION:
                self._bad_header(ident, head)
                return
            kind = head[1]
            if kind == KIND_OP or kind == KIND_BATCH:
                if not self.ready_once:
                    self._error(ident, head, ClusterNotReady(self._not_ready_message()))
                    return
                slot = head[2] | (head[3] << 8)
                if slot >= SLOT_COUNT:
                    counters["protocol_errors"] += 1
                    self._error(ident, head, ProtocolError(f"slot {slot} is out of range"))
                    return
                link = self.links[self.owners[slot]]
                if link.handle.state != READY:
                    self._unavailable(ident, head, link)
                    return
                size = len(body)
                inflight = link.inflight
                if ((link.inflight_bytes + size > INFLIGHT_BYTES_MAX and inflight)
                        or len(inflight) >= INFLIGHT_MAX):
                    self._overloaded(ident, head, link)
                    return
                key = (ident, head)
                stream = link.stream
                if stream is not None:
                    # Our own request id in the header: the reply names the request by it.
                    rid = next(self._forward_ids)
                    if stream.send(head[:4] + _RID.pack(rid), body):
                        link.by_rid[rid] = key
                        if stream.wants_write:
                            self.poller.modify(stream.fd, zmq.POLLIN | zmq.POLLOUT)
                    else:
                        self._link_stream_lost(link)
                        stream = None
                if stream is None:
                    try:
                        link.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    except zmq.ZMQError:
                        self._unavailable(ident, head, link)
                        return
                    finally:
                        self._used(link.sock)
                link.inflight_bytes += size - inflight.get(key, 0)
                inflight[key] = size
            elif kind == KIND_CLUSTER:
                self._cluster_request(ident, head, body)
            else:
                counters["protocol_errors"] += 1
                self._error(ident, head, ProtocolError(f"kind {kind} is not a client request"))
        except Exception as exc:  # a bug: say what broke, answer, go on
            self._client_failed(frames, exc)

    def _client_failed(self, frames: list, exc: Exception) -> None:
        """A message whose handling raised: an error reply when it has a request id, else a drop."""
        if len(frames) == 3 and protocol.request_id_of(frames[1]) is not None:
            self._internal_error(exc, frames[0], frames[1])
        else:
            self.counters["dropped_frames"] += 1
            self._internal_error(exc)

    def _drain_shard(self, link: ShardLink) -> None:
        send = self._send_frames
        inflight = link.inflight
        link.last_seen = time.monotonic()
        link.ping_sent = None
        for frames in drain(link.sock, DRAIN_MAX):
            try:
                if len(frames) != 3:
                    self.counters["dropped_frames"] += 1
                    continue
                ident = frames[0]
                if ident:
                    size = inflight.pop((ident, frames[1]), None)
                    if size is not None:
                        link.inflight_bytes -= size
                    send(frames)
                else:
                    self._internal_reply(link, frames[1], frames[2])
            except Exception as exc:  # a bug must not stop the loop
                self.counters["dropped_frames"] += 1
                self._internal_error(exc)

    def _drain_link_stream(self, link: ShardLink, ev: int) -> None:
        """Replies to what was forwarded on a shard's stream, back to their clients."""
        stream = link.stream
        if stream is None:
            return
        if ev & zmq.POLLOUT:
            stream.flush()
            if not stream.wants_write and not stream.closed:
                self.poller.modify(stream.fd, zmq.POLLIN)
        link.last_seen = time.monotonic()
        by_rid, inflight = link.by_rid, link.inflight
        send = self._send_frames
        for head, body in stream.read():
            key = by_rid.pop(_RID.unpack_from(head, 4)[0], None)
            if key is None:
                self.counters["dropped_frames"] += 1
                continue
            size = inflight.pop(key, None)
            if size is not None:
                link.inflight_bytes -= size
            send([key[0], key[1], body])
        if stream.closed:
            self._link_stream_lost(link)

    def _open_link_stream(self, link: ShardLink) -> None:
        """Forward to a ready shard on this host through its stream socket, if it has one."""
        self._close_link_stream(link)
        h = link.handle
        path = None if h.remote else stream_path(h.endpoint)
        if path is None:
            return
        try:
            stream = StreamLink(path, self.max_message_bytes)
        except OSError as exc:
            log.warning("shard %d: no stream link (%s); forwarding over ZeroMQ", h.id, exc)
            return
        link.stream = stream
        self._by_stream_fd[stream.fd] = link
        self.poller.register(stream.fd, zmq.POLLIN)

    def _close_link_stream(self, link: ShardLink) -> None:
        stream, link.stream = link.stream, None
        if stream is None:
            return
        self._by_stream_fd.pop(stream.fd, None)
        try:
            self.poller.unregister(stream.fd)
        except KeyError:
            pass
        stream.close()

    def _link_stream_lost(self, link: ShardLink) -> None:
        """The shard closed its stream (it died, most likely): answer what was in flight on it now.

        The supervisor sees the process end on its own; the clients waiting
        for these requests need not wait for that.
        """
        reason = link.stream.close_reason if link.stream is not None else ""
        self._close_link_stream(link)
        if not link.by_rid:
            return
        h = link.handle
        err = protocol.error_body(ShardUnavailable(
            f"shard {h.id} closed its connection ({reason}) while the request was in flight; "
            "it may or may not have been applied (check before retrying a non-idempotent write)"))
        for key in link.by_rid.values():
            size = link.inflight.pop(key, None)
            if size is not None:
                link.inflight_bytes -= size
            self._send(key[0], key[1], err)
        self.counters["shard_unavailable"] += len(link.by_rid)
        link.by_rid.clear()

    # -- replies -------------------------------------------------------------------

    def _send(self, ident: bytes, head: bytes, body: bytes) -> None:
        self._send_frames([ident, head, body])

    def _send_frames(self, frames: list) -> None:
        """A reply [identity, header, body] to the client it is for, on its own transport."""
        if len(frames[0]) == STREAM_IDENT_BYTES:
            conn = self.stream_peers.get(frames[0])
            if conn is not None:
                self.stream.send(conn, frames[1], frames[2])
            return
        try:
            self.front.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            pass
        self._used(self.front)

    def _used(self, sock) -> None:
        # A ZeroMQ call outside a turn the poller reported the socket ready in: it may
        # have consumed the socket's wake-up signal (see inmem.transport.SocketsPoll).
        poller = self.poller
        if poller is not None:
            poller.touched(sock)

    def _error(self, ident, head, err: InmemError) -> None:
        self._send(ident, head, protocol.error_body(err))

    def _result(self, ident, head, result) -> None:
        self._send(ident, head, protocol.pack_reply(self.packer, result, self.max_message_bytes))

    def _unavailable(self, ident, head, link: ShardLink) -> None:
        self.counters["shard_unavailable"] += 1
        h = link.handle
        self._error(ident, head, ShardUnavailable(_unavailable_text(h)))

    def _overloaded(self, ident, head, link: ShardLink) -> None:
        self.counters["shard_unavailable"] += 1
        self._error(ident, head, ShardUnavailable(
            f"shard {link.handle.id} is overloaded ({len(link.inflight)} requests of "
            f"{link.inflight_bytes} bytes waiting for it); retry shortly, or wait for "
            "answers before sending more"))

    def _bad_header(self, ident, head) -> None:
        self.counters["protocol_errors"] += 1
        try:
            protocol.parse_header(head)
            err = ProtocolError("malformed header")
        except ProtocolError as exc:
            err = exc
        if protocol.request_id_of(head) is None:
            self.counters["dropped_frames"] += 1
            return
        self._error(ident, head, err)

    def _internal_error(self, exc: Exception, ident=None, head=None) -> None:
        self.counters["internal_errors"] += 1
        log.error("coordinator: %s", "".join(traceback.format_exception(exc)))
        if ident is not None:
            try:
                text = f"{type(exc).__name__}: {exc}"[:500]
            except Exception:  # an exception whose str() fails
                text = type(exc).__name__
            self._error(ident, head, InmemError(f"internal error in the coordinator: {text}"))

    def _not_ready_message(self) -> str:
        waiting = []
        for l in self.links:
            h = l.handle
            if h.state != READY:
                entry = h.summary()
                waiting.append(f"{h.id} {entry['state']}" + (
                    f" ({h.last_error})" if h.last_error else ""))
        return "the cluster is still recovering; shards not ready: " + ", ".join(waiting)

    # -- cluster requests ----------------------------------------------------------

    def _cluster_request(self, ident, head, body) -> None:
        try:
            name, args = protocol.decode_op(body, protocol.CLUSTER_OPS)
        except ProtocolError as exc:
            self.counters["protocol_errors"] += 1
            self._error(ident, head, exc)
            return
        if name == "ping":
            self._result(ident, head, "pong")
        elif name == "status":
            self._result(ident, head, self.status())
        elif name == "slotmap":
            self._result(ident, head, {"shard_count": self.slotmap.shard_count,
                                       "ranges": self.slotmap.ranges(),
                                       "shards": list(self.shard_addresses),
                                       # public keys of shards on tcp, for direct clients
                                       "shard_keys": [_text(self.shard_keys.get(l.handle.id))
                                                      for l in self.links],
                                       "max_message_bytes": self.max_message_bytes})
        elif name == "recovery_report":
            self._result(ident, head, [l.handle.recovery for l in self.links
                                       if l.handle.recovery is not None])
        elif name == "info":
            self._info(ident, head)
        elif not self.ready_once:
            self._error(ident, head, ClusterNotReady(self._not_ready_message()))
        elif name in ("snapshot", "compact_history"):
            # Their time grows with the data: a shard that dies meanwhile fails them at
            # once, and one that hangs is found by the heartbeats.
            self._fan_out(ident, head, name, KIND_ADMIN, name, [],
                          protocol.SLOW_ADMIN_TIMEOUT_S)
        elif name == "fanout":
            if (len(args) != 2 or type(args[0]) is not str
                    or args[0] not in FANOUT_READ_OPS or type(args[1]) is not list):
                self._error(ident, head, ProtocolError(
                    f"fanout takes [op, args] with op one of {sorted(FANOUT_READ_OPS)}"))
            else:
                self._fan_out(ident, head, "fanout", KIND_OP, args[0], args[1])
        elif name in protocol.DEBUG_OPS:
            if not self.spec.get("test_hooks"):
                self._error(ident, head, ProtocolError(f"{name}: test hooks are off in this cluster"))
            else:
                self._fan_out(ident, head, name, KIND_ADMIN, name, args)
        else:
            shard_op, shard_args = protocol.fanout_request(name, args)
            self._fan_out(ident, head, name, KIND_OP, shard_op, shard_args, merge_args=args)

    def status(self) -> dict:
        shards = []
        now = time.monotonic()
        for l in self.links:
            s = l.handle.summary()
            s["recovery"] = l.handle.recovery
            # how long an unresponsive shard has said nothing
            s["silent_s"] = (round(now - l.last_seen, 1) if l.handle.state == UNRESPONSIVE
                             else None)
            shards.append(s)
        return {"ready": all(l.handle.state == READY for l in self.links),
                "ready_once": self.ready_once, "shards": shards,
                "coordinator": {"pid": os.getpid(), "endpoint": self.spec["client_endpoint"],
                                "durability": self.spec["durability"], **self.counters}}

    def _fan_out(self, ident, head, name, kind, shard_op, shard_args,
                 timeout: float = INTERNAL_TIMEOUT_S, merge_args=()) -> None:
        for l in self.links:
            if l.handle.state != READY:
                self._unavailable(ident, head, l)
                return
        fan = FanOut(len(self.links),
                     lambda results: self._fan_done(ident, head, name, results, merge_args))
        body = protocol.new_packer().pack([shard_op, shard_args])
        for i, l in enumerate(self.links):
            self._ask(l, kind, body, fan.part(i), timeout)

    def _fan_done(self, ident, head, name, results, args=()) -> None:
        try:
            self._merge_and_reply(ident, head, name, results, args)
        except Exception as exc:
            self._internal_error(exc, ident, head)

    def _merge_and_reply(self, ident, head, name, results, args=()) -> None:
        for r in results:
            if isinstance(r, InmemError):
                self._error(ident, head, r)
                return
        try:
            merged = protocol.merge_fanout(name, results, args)
        except (ProtocolError, TypeError, IndexError, KeyError) as exc:
            self._error(ident, head, ProtocolError(f"cannot merge {name}: {exc}"))
            return
        # Named, so that a merge over the limit says what to ask instead (a page of runs).
        self._send(ident, head, protocol.pack_reply(self.packer, merged, self.max_message_bytes,
                                                    name))

    def _info(self, ident, head) -> None:
        def done(results):
            try:
                reply(results)
            except Exception as exc:
                self._internal_error(exc, ident, head)

        def reply(results):
            shards = []
            for l, r in zip(self.links, results):
                entry = l.handle.summary()
                entry.update({"keys": None, "runs": None, "memory_bytes": None,
                              "wal_bytes": None, "durability": self.spec["durability"]})
                if isinstance(r, dict):
                    entry.update(r)
                    entry["state"] = l.handle.state
                shards.append(entry)
            self._result(ident, head, {"shards": shards,
                                       "ready": all(l.handle.state == READY for l in self.links),
                                       "coordinator": self.status()["coordinator"]})

        fan = FanOut(len(self.links), done)
        body = protocol.new_packer().pack(["info", []])
        for i, l in enumerate(self.links):
            if l.handle.state == READY:
                self._ask(l, KIND_ADMIN, body, fan.part(i))
            else:
                fan.part(i)(None)

    # -- requests the coordinator itself sends to shards ---------------------------

    def _ask(self, link: ShardLink, kind: int, body: bytes, callback,
             timeout: float = INTERNAL_TIMEOUT_S) -> None:
        rid = next(self._rid)
        # Admin requests name the shard; engine operations a slot it owns, which
        # is what a shard checks them against.
        target = link.handle.id if kind == KIND_ADMIN else self._first_slot[link.handle.id]
        head = protocol.header(kind, target, rid)
        try:
            link.sock.send_multipart([b"", head, body], zmq.NOBLOCK)
        except zmq.ZMQError:
            self._deliver(callback, ShardUnavailable(f"shard {link.handle.id} is not reachable"))
            return
        finally:
            self._used(link.sock)
        self._pending[rid] = (callback, time.monotonic() + timeout, link)

    def _internal_reply(self, link: ShardLink, head: bytes, body: bytes) -> None:
        rid = protocol.request_id_of(head)
        entry = self._pending.pop(rid, None)
        if entry is None:
            return  # an answer to a hello or ping we already gave up on
        self._deliver(entry[0], protocol.unpack_reply(body))

    def _deliver(self, callback, result) -> None:
        """Run a pending request's callback; one that raises is logged, not fatal."""
        try:
            callback(result)
        except Exception as exc:
            self._internal_error(exc)

    def _fail_pending(self, link: ShardLink, err: InmemError) -> None:
        for rid, (callback, _, l) in list(self._pending.items()):
            if l is link:
                del self._pending[rid]
                self._deliver(callback, err)

    # -- upkeep: deaths, restarts, hellos, heartbeats, expired requests ------------

    def _send_hellos(self, now: float) -> None:
        """Ask each shard not known to be ready yet whether it is."""
        for link in self.links:
            h = link.handle
            if h.state == RECOVERING or (h.remote and h.state == DOWN):
                # A remote shard is asked every tick, as its heartbeats are.
                if now - link.hello_sent >= (TICK_S if h.remote else HELLO_EVERY_S):
                    link.hello_sent = now
                    self._ask(link, KIND_ADMIN, self._hello, self._hello_callback(link, h.pid))

    def _tick(self, now: float) -> None:
        if PARENT_PID is not None and os.getppid() != PARENT_PID:
            self.out("the parent process is gone; stopping")
            self.stopping = True
        sup = self.supervisor
        for h in sup.poll():
            link = self.links[h.id]
            if (not self.ready_once and h.start_failure is not None
                    and h.start_failure.get("lasting")):
                self._fail_start(h)
                return
            delay = sup.schedule_restart(h)
            self.out(f"shard {h.id} exited (code {h.last_exit}"
                     + (f", {h.last_error}" if h.last_error else "")
                     + f"); restarting in {delay:.2f} s")
            self._shard_lost(link)
        for h in sup.restart_due():
            self.out(f"shard {h.id} restarting (pid {h.pid}, restart {h.restarts})")
        self._send_hellos(now)
        self._heartbeats(now)
        expired = [rid for rid, (_, deadline, _) in self._pending.items() if deadline < now]
        for rid in expired:
            callback = self._pending.pop(rid)[0]
            self._deliver(callback, ShardUnavailable("a shard did not answer in time"))

    def _fail_start(self, h) -> None:
        """End a start that cannot succeed: shard `h` failed at start-up for a lasting reason.

        Another try would meet the same files (a restart loop that a user sees
        as a start hanging until its timeout): the loop stops, and `run` raises
        the ClusterNotReady made here.
        """
        note = h.start_failure
        self.start_failure = ClusterNotReady(
            f"shard {h.id} cannot start: {h.last_error}", shard=h.id, path=note.get("path"),
            cause=note.get("error"))
        self.out(f"{self.start_failure}; stopping (the cluster has served nothing)")
        self.stopping = True

    def _heartbeats(self, now: float) -> None:
        """Ping each serving shard that has sent nothing for a while; act on the silent ones.

        Anything a shard sends (a reply, a pong) counts as an answer, so a shard
        busy with the coordinator's requests is never pinged; an idle one, or one
        whose clients send to it directly, gets a ping a heartbeat interval.
        A remote shard silent for the heartbeat timeout is marked down and its
        link started afresh (it may come back as another process, to be greeted
        again). A shard on this host is its own process, watched by the
        supervisor: silent, it is marked unresponsive, its slots are answered
        ShardUnavailable and what is in flight on it waits (a shard held by one
        long request still answers it); the first thing it sends makes it ready
        again. One silent for restart_unresponsive_after_s (when set) is killed,
        and restarted as any shard that died.
        """
        sup = self.spec["supervisor"]
        heartbeat = sup["heartbeat_interval_s"]
        silence = sup["heartbeat_timeout_s"]
        kill_after = sup.get("restart_unresponsive_after_s", 0)
        for link in self.links:
            h = link.handle
            state = h.state
            if state == READY:
                if link.ping_sent is None:
                    if now - link.last_seen >= heartbeat:
                        link.ping_sent = now
                        self._ask(link, KIND_ADMIN, _PING, _ignore)
                elif now - link.last_seen >= silence:
                    if h.remote:
                        self.out(f"shard {h.id} at {h.endpoint} silent for {silence} s; "
                                 "marking it down")
                        h.state = DOWN
                        h.last_error = f"no heartbeat for {silence} s"
                        self._shard_lost(link)
                    else:
                        h.state = UNRESPONSIVE
                        h.last_error = f"no answer, not even to a ping, for {silence} s"
                        self.out(f"shard {h.id} (pid {h.pid}) has not answered for {silence} s; "
                                 "marking it unresponsive")
            elif state == UNRESPONSIVE:
                quiet = now - link.last_seen
                if quiet < silence:
                    h.state = READY
                    h.last_error = None
                    self.out(f"shard {h.id} (pid {h.pid}) answers again; ready")
                elif kill_after and quiet >= kill_after:
                    why = f"no answer for {kill_after} s: killed to be restarted"
                    if h.last_error != why:
                        self.out(f"shard {h.id} (pid {h.pid}) has not answered for "
                                 f"{kill_after} s; killing it to restart it")
                        self.supervisor.kill_unresponsive(h, why)
                elif link.ping_sent is None or now - link.ping_sent >= heartbeat:
                    # Again and again: the first ping may not have got through (a send
                    # refused while the connection was down is not retried).
                    link.ping_sent = now
                    self._ask(link, KIND_ADMIN, _PING, _ignore)

    def _shard_lost(self, link: ShardLink) -> None:
        """Answer everything in flight on a lost shard, and start a fresh connection."""
        h = link.handle
        err = protocol.error_body(ShardUnavailable(
            f"shard {h.id} went down while the request was in flight; it may or may not have "
            "been applied (check before retrying a non-idempotent write)"))
        send = self._send
        for ident, head in link.inflight:
            send(ident, head, err)
        self.counters["shard_unavailable"] += len(link.inflight)
        link.inflight.clear()
        link.by_rid.clear()
        link.inflight_bytes = 0
        self._close_link_stream(link)
        self._fail_pending(link, ShardUnavailable(f"shard {h.id} went down"))
        self._connect(link)

    def _hello_callback(self, link: ShardLink, pid_at_send):
        def on_hello(reply):
            h = link.handle
            if isinstance(reply, InmemError) or h.state == READY:
                return
            if not isinstance(reply, dict) or reply.get("shard") != h.id:
                h.last_error = (f"the process at {h.endpoint} says it is shard "
                                f"{reply.get('shard') if isinstance(reply, dict) else reply!r}, "
                                f"not {h.id}; fix the endpoints in the config")
                self.out(f"shard {h.id}: {h.last_error}")
                return
            if not h.remote and reply.get("pid") != h.pid:
                return  # an answer from a previous process of this shard
            h.pid = reply.get("pid")
            h.recovery = reply.get("recovery")
            h.state = READY
            h.ready_at = time.monotonic()
            h.last_error = None
            h.start_failure = None
            h.start_failures = 0
            self._open_link_stream(link)
            self.out(f"shard {h.id} ready, pid {h.pid}: {describe_recovery(h.recovery)}")
            if not self.ready_once and all(l.handle.state == READY for l in self.links):
                self._save_new_map()
                self.ready_once = True
                slowest = max((l.handle.recovery[_SECONDS] for l in self.links
                               if l.handle.recovery is not None), default=0.0)
                self.out(f"ready: {len(self.links)} shards in {time.monotonic() - self.t0:.2f} s "
                         f"(slowest shard recovery {slowest:.2f} s) on "
                         f"{self.spec['client_endpoint']}")
        return on_hello

    def _save_new_map(self) -> None:
        """Save a new data directory's slot map, as its cluster is first ready: before any
        client is served, and only once every shard made its directory and recovered, so
        that a slot map on disk means a data directory that has served (`_check_shard_dirs`)."""
        if not self._unsaved_map:
            return
        self._unsaved_map = False
        if self.spec["durability"] == "inmemory":
            return  # its shards keep nothing there: the next start may have any count
        try:
            self.slotmap.save(self.spec["data_dir"])
        except OSError as exc:
            # Serving goes on: the next start makes the same even map from the shard count
            # (or from the shard stores found, see slotmap.load_or_create).
            self.out(f"warning: cannot save the slot map in {self.spec['data_dir']}: {exc}")

    # -- stop ----------------------------------------------------------------------

    def close(self) -> None:
        if self.front is not None:
            self.front.close(0)
            self.front = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.supervisor is not None:
            if self.start_failure is not None:
                # None has served anything: nothing to flush, and a shard still
                # recovering would only make the refusal wait for it.
                self.supervisor.kill_all()
            else:
                self.supervisor.stop_all()
        if self.server_keys is not None:
            self.server_keys.stop()
        if self.ctx is not None:
            self.ctx.destroy(0)
            self.ctx = None
        # Only the coordinator that holds the data directory's lock owns its
        # sockets: one refused at start must leave the running cluster's alone.
        if self._lock_fd is not None:
            remove_sockets(self.spec)
            os.close(self._lock_fd)
            self._lock_fd = None


def _unavailable_text(h) -> str:
    """Why requests for shard `h`'s slots are not served: its state and its last failure."""
    if h.start_failures:
        return (f"shard {h.id} is down: its restarts fail at start-up ({h.start_failures} in a "
                f"row): {h.last_error}; it is tried again with backoff until that is fixed")
    # A send that fails to a shard still marked ready: it is gone, not known so yet.
    state = "not connected" if h.state == READY else h.state
    if not h.last_error:
        why = ""
    elif h.state == DOWN and h.last_exit is not None:
        why = f" (last exit {h.last_exit}: {h.last_error})"
    else:
        why = f" ({h.last_error})"
    return f"shard {h.id} is {state}; retry shortly{why}"


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("ascii")


_SECONDS = RecoveryResult._fields.index("seconds")
_PING = protocol.new_packer().pack(["ping", []])


def _ignore(reply) -> None:
    """A ping's callback: its answer counts on arrival, as anything the shard sends does."""


LOCK_NAME = CLUSTER_LOCK_NAME


def lock_data_dir(data_dir: str) -> int:
    """The coordinator's exclusive lock on a data directory (its fd, holding our pid).

    ConfigError, naming the holder's pid, if another process holds it.
    """
    path = os.path.join(data_dir, LOCK_NAME)
    fd = try_lock(path)
    if fd is None:
        holder = lock_holder(data_dir)
        who = f"another coordinator (pid {holder})" if holder else "another coordinator"
        raise ConfigError(f"{who} is serving {data_dir}; stop it first, or connect to it")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(data_dir: str) -> int | None:
    """The pid the lock file of `data_dir` names (meaningful while the lock is held)."""
    return lock_file_pid(os.path.join(data_dir, LOCK_NAME))


def remove_sockets(spec: dict) -> None:
    """Remove this host's ipc socket files of a cluster, and the short socket directory.

    Only for the holder of the data directory's lock: the coordinator that
    served it, or `inmem.Cluster` cleaning up after a coordinator that was
    killed (a killed shard or coordinator leaves its socket file behind).
    """
    sock_dir = socket_dir(spec["data_dir"])
    runtime = sock_dir != spec["data_dir"]
    try:
        if runtime and runtime_dir_problem(sock_dir):
            return  # not our directory (start refused it): nothing in it is ours
    except FileNotFoundError:
        return
    endpoints = [spec.get("client_endpoint", "")]
    endpoints += [s["endpoint"] for s in spec.get("shards", ()) if not s["remote"]]
    paths = [e[6:] for e in endpoints if e.startswith("ipc://")]
    paths += [p for p in map(stream_path, endpoints[1:]) if p is not None]
    for path in paths:
        if socket_in_use(path):
            continue  # another process serves it now (a cluster given the same endpoint)
        try:
            os.unlink(path)
        except OSError:
            pass
    if runtime:
        try:
            os.rmdir(sock_dir)  # only when empty: nothing but our sockets is removed
        except OSError:
            pass


def _check_shard_dirs(spec: dict) -> None:
    """ClusterNotReady if a local shard's directory is missing from a data directory that
    has served (its slot map is saved once the cluster is first ready, after every local
    shard made its directory and recovered).

    A shard started there would make an empty store and the cluster would serve
    without the shard's runs, taking new writes under their ids: a disk not
    mounted, or a restore that left the directory out, looks just like that.
    An operator who means to start the shard empty makes the directory.
    An inmemory cluster's shards make none and always start empty: nothing to miss.
    """
    if spec["durability"] == "inmemory":
        return
    for shard in spec["shards"]:
        if shard["remote"]:
            continue  # its directory is on its own host
        path = shard_dir(spec, shard["id"])
        if not os.path.lexists(path):
            raise ClusterNotReady(
                f"shard {shard['id']} cannot start: its directory {path} is missing, though "
                f"this data directory has served with it (a disk not mounted, or a restore "
                f"that left it out?); restore it, or make the empty directory to start shard "
                f"{shard['id']} empty, without the runs it held", shard=shard["id"], path=path,
                cause="missing")


def run(spec: dict, out=print) -> int:
    """Serve until SIGTERM or SIGINT; the body of `inmem serve` and `python -m inmem.coordinator`."""
    coord = Coordinator(spec, out=out)

    def stop(signum, frame):
        coord.stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        coord.start()
        coord.serve()
        if coord.start_failure is not None:
            raise coord.start_failure
        out("stopping: flushing and snapshotting shards")
    finally:
        coord.close()
        for s, h in old.items():
            signal.signal(s, h)
    out("stopped")
    return 0


__all__ = ["Coordinator", "run", "lock_data_dir", "lock_holder", "remove_sockets", "DOWN",
           "RECOVERING", "READY"]
