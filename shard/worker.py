"""The shard worker process: one engine, its WAL and its snapshots, behind a ZeroMQ ROUTER
and, for clients on its host, a Unix stream socket (`inmem.stream`).

    python -m inmem.shard.worker --spec '<json>' --shard 1   # how the coordinator starts it
    inmem shard serve --config cluster.toml --shard 1        # by hand (another host)

Start-up: recover the shard directory `<data_dir>/shard-<N>` (snapshot + WAL,
through `shard.durable`; nothing to recover in inmemory mode), then bind the
shard's endpoint. Binding only after recovery is what makes readiness simple:
whoever reaches the socket reaches a recovered shard, and the first answer to
the coordinator's "hello" carries the RecoveryResult.

One thread owns the socket, the engine and the WAL's writes: no background
thread contends for the GIL. Every operation and every committed transaction is
therefore atomic. One poll (`inmem.transport.RouterPoll`: the kernel's poll
over the ROUTER's ZMQ_FD) watches the ROUTER, the stream listener and every
stream connection. Each turn drains every request waiting on them (up to
DRAIN_MAX), applies them in arrival order, hands their WAL groups over in one
durable commit step (`DurableStore.commit_locked`: in strict mode one write and
one fsync for the whole turn, group commit), and only then sends the replies,
so nothing is acknowledged before it is as durable as the mode promises. What
no reply needs waits until the replies are out: telling the runs' histories
where their effects went in the WAL (`DurableStore.place_handed`), since every
client of a strict shard waits for each step taken before its reply. In
buffered mode the flush is the loop's own: between turns `DurableStore.tick`
writes what is pending once the interval has passed (or at once when a batch
is full), and the poll timeout is cut to the time left until then; the fsync
that follows runs on the WAL writer's syncer thread, which only calls fsync
(without the GIL), so a slow disk never stalls the loop. When idle the loop runs the shard's upkeep (index slices, due snapshots);
while the search index is rebuilt after recovery (the shard is ready before
it is), every turn that finds no request waiting runs one bounded slice of it,
and a turn that served requests gives it its share of the turn's time
(`shard.upkeep.IndexShare`), so that a load that never lets the loop idle
does not hold the index back. A search without a budget that the index
cannot serve after one short slice (a large text being indexed) waits apart
(`shard.deferred_search`), the loop running index slices for it between
turns, and is answered once the index is up to date; a replay of a long
run and a check of a long event chain are likewise done a slice at a time
between turns (`shard.deferred_reads`), so no request holds the loop for
longer than a slice of its work.

No input from the network may stop the loop: a frame that is not a message is
counted and dropped, anything else that is wrong gets an error reply. The
one deliberate exit on the write path is a failed WAL write or fsync: memory
then holds writes the disk may not, so the worker answers DurabilityError to
the whole turn and exits; the coordinator restarts it and recovery rebuilds
the shard from what is on disk (fail-stop, as redis does on a failed fsync).

SIGTERM, SIGINT or SIGHUP: finish the turn, stop, flush the WAL, take the final
snapshot when configured, exit 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback

import zmq

import inmem.protocol as protocol
from inmem.errors import DurabilityError, InmemError, InvalidValue, ProtocolError, SlotMoved
from inmem.files import make_dirs
from inmem.keys import COORDINATOR, ServerKeys, insecure_warning, is_tcp, public_key, shard_name
from inmem.processes import (HELLO_TOKEN_ENV, clear_exit_note, die_with_parent,
                             write_exit_note)
from inmem.protocol import KIND_ADMIN, KIND_BATCH, KIND_OP, slot_of
from inmem.ops import ROUTE_BY_FIRST, WRITE_OPS, route_run
from inmem.shard.commit_wait import CommitWait, fine_timer_slack
from inmem.shard.deferred_admin import CompactionRequests, SnapshotRequests
from inmem.shard.deferred_reads import OPS as SLICED_READS, REPLAY, ReadWaits, replay_jobs, verify_job
from inmem.shard.deferred_search import BUDGET_ARG as SEARCH_OPS, SearchWaits, waits_for_index
from inmem.shard.engine import Engine, exception_text, put_series_end
from inmem.shard.upkeep import UPKEEP_EVERY_S, IndexShare, index_slice, shard_info, upkeep
from inmem.stream import stream_path
from inmem.stream_server import Connection, StreamServer
from inmem.transport import RouterPoll, bind_router, drain, drain_noting_keys, ipc_dir

log = logging.getLogger("inmem.shard")

_header_unpack = protocol.HEADER.unpack
_HEADER_BYTES = protocol.HEADER_BYTES
_KINDS = protocol.KINDS
#: what a header frame of the wrong size parses as: a version no peer speaks
_NO_HEADER = (-1, -1, -1, -1)
#: requests applied per turn at most, so replies to the first do not wait forever
DRAIN_MAX = 4096
POLL_MS = 100
#: how often the loop looks at a snapshot child that a request waits for (ms)
SNAPSHOT_LOOK_MS = 10
#: runs whose slots a shard remembers for its check of OP requests (cleared when full)
_RUN_SLOTS_KEPT = 4096
EXIT_DURABILITY = 3
EXIT_STARTUP = 2


class Worker:
    def __init__(self, spec: dict, shard: int):
        self.spec = spec
        self.shard = shard
        self.endpoint = spec["shards"][shard]["endpoint"]
        self.durability = spec["durability"]
        self.max_message_bytes = spec["max_message_bytes"]
        self.path = os.path.join(spec["data_dir"], f"shard-{shard}")
        self.lock = threading.RLock()  # the store's own lock once it is open
        self.store = None
        self.engine = None
        self.sock = None
        #: (device, inode) of the ipc socket file bound here, removed at close if still it
        self.ipc_file = None
        self.stream: StreamServer | None = None
        self.ctx = None
        self.server_keys = None
        self.stopping = False
        self.dropped_frames = 0
        self.protocol_errors = 0
        self.requests = 0
        #: slot -> owning shard, from the coordinator's hello (None: not told yet)
        self.owners = None
        #: on Curve: ZeroMQ peer -> the public key its handshake used, and the
        #: coordinator's (see run_admin); None otherwise
        self.peer_keys: dict | None = None
        self.coordinator_key: str | None = None
        #: the token of the coordinator that started this shard (see admin_hello)
        self.hello_token = spec.get("hello_token") or os.environ.pop(HELLO_TOKEN_ENV, None)
        #: the slots of the runs requests named last (see _moved)
        self._run_slots: dict = {}
        self.recovery = None
        self.parent_pid: int | None = None
        self.packer = protocol.new_reply_packer()
        self.write_ops = WRITE_OPS
        self.strict = self.durability == "strict"
        #: strict: the wait for recently served clients before a turn's fsync
        self.commit_wait: CommitWait | None = None
        #: snapshot and compaction requests answered later (durable modes)
        self.snapshots: SnapshotRequests | None = None
        self.compactions: CompactionRequests | None = None
        #: searches without a budget waiting for the index (see shard.deferred_search),
        #: and long replays and chain checks done between turns (shard.deferred_reads)
        self.searches = SearchWaits()
        self.slow_reads = ReadWaits()
        #: (the waits, what their `add` takes after the frames) of a request that
        #: run_op or run_batch left to be answered later
        self._deferred: tuple | None = None
        self.clock = None  # the engine's own clock, unless test hooks may pin it
        self.pinned_us: int | None = None
        if spec.get("test_hooks"):
            self.clock = self._test_clock

    # -- start-up ------------------------------------------------------------------

    def _memory_engine(self) -> Engine:
        """An inmemory shard's engine, with the options that mean something without files."""
        options = self.spec.get("options", {})
        return Engine(clock=self.clock, max_value_bytes=self.spec["max_value_bytes"],
                      history=self.spec.get("history", "full"),
                      **({"dead_key_retention_s": options["dead_key_retention_s"]}
                         if "dead_key_retention_s" in options else {}))

    def open(self) -> None:
        if self.durability == "inmemory":
            self.engine = self._memory_engine()
            self.recovery = None
            return
        from inmem.shard.durable import DurableStore
        self.store, self.engine = DurableStore.open(
            self.path, durability=self.durability, max_value_bytes=self.spec["max_value_bytes"],
            shard=self.shard, clock=self.clock, flusher=False, one_writer=True,
            holder=f"shard {self.shard} of a cluster",
            **self.spec["options"])
        # The store's flusher takes its lock to hand the engine's log to the WAL.
        self.lock = self.store.lock
        self.recovery = self.store.recovery_result
        self.snapshots = SnapshotRequests(self.store)
        self.compactions = CompactionRequests(self.store)
        wait_us = self.store.options["commit_wait_us"]
        if self.strict and wait_us:
            fine_timer_slack()
            self.commit_wait = CommitWait(wait_us)
        # Recovered objects live as long as this process: keep the cyclic GC
        # from walking millions of them on every full collection.
        gc.freeze()

    def bind(self) -> None:
        self.ctx = zmq.Context(1)
        directory = ipc_dir(self.endpoint)
        if directory:
            make_dirs(directory)
        server_keys = None
        if is_tcp(self.endpoint):
            if self.spec.get("keys"):
                # Only the cluster's keys get through: the coordinator, and
                # clients sending straight to this shard.
                server_keys = ServerKeys(self.spec["keys"], shard_name(self.shard))
                server_keys.start(self.ctx)
            elif not self.spec.get("insecure"):
                raise InmemError(f"{self.endpoint} is a tcp endpoint and no key directory is "
                                 "configured; set [cluster] keys (or insecure = true)")
            else:
                log.warning("%s", insecure_warning([self.endpoint]))
        self.server_keys = server_keys
        sock = bind_router(self.ctx, self.endpoint, self.max_message_bytes, server_keys)
        if directory:
            # ZeroMQ leaves an ipc socket's file behind when the socket closes; close()
            # removes it if it is still the one bound here (a shard run alone, `inmem
            # shard serve`, has no coordinator to clean up after it).
            self.ipc_file = _identity(self.endpoint[6:])
        if server_keys is not None:
            # Whose key each ZeroMQ peer's handshake used (see run_admin): the
            # coordinator's is the only one that may send this shard its slot map.
            self.coordinator_key = public_key(self.spec["keys"], COORDINATOR).decode()
            self.peer_keys = {}
        self.sock = sock
        path = stream_path(self.endpoint)
        if path is not None:
            try:
                self.stream = StreamServer(path, self.max_message_bytes)
            except OSError as exc:
                raise InmemError(f"cannot listen on {path}: {exc}") from None

    # -- the loop ------------------------------------------------------------------

    def serve(self) -> None:
        sock = self.sock
        stream = self.stream
        # The kernel's poll over the ROUTER's ZMQ_FD and the stream sockets: a
        # turn that serves only stream clients makes no ZeroMQ call.
        waiter = RouterPoll(sock)
        if stream is not None:
            stream.register(waiter)
        wait = waiter.wait
        reply_all = self.reply_all
        process = self.process
        tick = None if self.store is None else self.store.tick
        place_handed = None if self.store is None else self.store.place_handed
        next_idle = time.monotonic() + UPKEEP_EVERY_S
        rebuilding = self.engine.index_rebuilding
        frozen = not rebuilding()
        index_share = IndexShare(self.engine, self.lock)
        snapshots = self.snapshots if self.snapshots is not None else ()
        compactions = self.compactions if self.compactions is not None else ()
        searches = self.searches
        slow_reads = self.slow_reads
        peer_keys = self.peer_keys

        def take(timeout: int, batch: list) -> bool:
            # Every request ready within `timeout` ms onto `batch`, the ROUTER's first
            # (see RouterPoll); whether anything was ready.
            ready, events = wait(timeout)
            if ready:
                batch.extend(drain(sock, DRAIN_MAX) if peer_keys is None
                             else drain_noting_keys(sock, DRAIN_MAX, peer_keys))
            if stream is not None and events:
                stream.read(events, batch, DRAIN_MAX)
            return ready or bool(events)

        def more(batch: list) -> None:
            # What arrived since the turn's drain (the commit wait's look).
            take(0, batch)

        while not self.stopping:
            timeout = POLL_MS
            if tick is not None:
                # The buffered flush runs here, between turns, after their replies.
                try:
                    flush_in = tick()
                except DurabilityError as exc:
                    self.fail_stop([], exc)
                if flush_in is not None:
                    timeout = min(POLL_MS, int(flush_in * 1000) + 1)
            if snapshots:
                self.answer_snapshots()
                waiter.touched()  # a reply may have gone out on the ROUTER, outside a turn
                if snapshots:  # a child still writing: look at it again soon
                    timeout = min(timeout, SNAPSHOT_LOOK_MS)
            if compactions:
                self.answer_compactions()
                waiter.touched()
                if compactions:
                    timeout = 0  # the next slice after a look at the sockets
            if searches:
                self.answer_searches()
                waiter.touched()
                if searches:
                    timeout = 0  # the next slice after a look at the sockets
            if slow_reads:
                self.answer_slow_reads()
                waiter.touched()
                if slow_reads:
                    timeout = 0
            if rebuilding():
                timeout = 0
            elif not frozen:
                # The rebuilt index lives as long as the process, as the recovered state does.
                gc.freeze()
                frozen = True
            batch: list = []
            if take(timeout, batch):
                if batch:
                    # Replies to ROUTER peers go out in this turn, one `wait` said
                    # the ROUTER was ready in: the next wait asks it before sleeping.
                    reply_all(process(batch, more))
                    if place_handed is not None:
                        with self.lock:
                            place_handed()
                    index_share()  # a rebuild's share of a loop that never idles
            elif not timeout and rebuilding():
                index_slice(self.engine, self.lock)
            now = time.monotonic()
            if now >= next_idle:
                next_idle = now + UPKEEP_EVERY_S
                self.idle()

    def answer_snapshots(self) -> None:
        """Reply to the snapshot requests whose child has ended; start the next child."""
        with self.lock:
            answered = self.snapshots.poll()
        for frames, result in answered:
            frames[-1] = protocol.pack_reply(self.packer, result, self.max_message_bytes)
            self.reply_to(frames)

    def answer_compactions(self) -> None:
        """One slice of the history compaction a request waits for; its reply once done."""
        for frames, result in self.compactions.step():
            if isinstance(result, dict):
                result = [{"shard": self.shard, **result}]
            frames[-1] = protocol.pack_reply(self.packer, result, self.max_message_bytes)
            self.reply_to(frames)

    def answer_searches(self) -> None:
        """One slice of index work for the searches waiting on it; their replies once
        it is up to date."""
        with self.lock:
            ready = self.searches.step(self.engine)
            for frames, op, args in ready:
                frames[-1] = protocol.pack_reply(self.packer, self._execute(op, args, None),
                                                 self.max_message_bytes, op)
        for frames, _op, _args in ready:
            self.reply_to(frames)

    def answer_slow_reads(self) -> None:
        """One slice of the first waiting long read; its reply once it is done."""
        with self.lock:
            try:
                done = self.slow_reads.step(self.engine)
            except Exception as exc:  # a bug: answer the request, keep serving
                log.error("shard %d: a long read failed:\n%s", self.shard, traceback.format_exc())
                frames, jobs, op = self.slow_reads.queue.pop(0)
                err = InmemError(f"internal error in {op or REPLAY}: {exception_text(exc)}")
                done = [(frames, [err] * len(jobs), op)]
            for frames, results, op in done:
                frames[-1] = (protocol.pack_results(self.packer, results, self.max_message_bytes)
                              if op is None else
                              protocol.pack_reply(self.packer, results[0], self.max_message_bytes,
                                                  op))
        for frames, _results, _op in done:
            self.reply_to(frames)

    def reply_to(self, reply: list) -> None:
        """Send a reply back the way its request came: the ROUTER, or a stream connection."""
        peer = reply[0]
        if type(peer) is Connection:
            self.stream.send(peer, reply[1], reply[2])
            return
        try:
            self.sock.send_multipart(reply, zmq.NOBLOCK)
        except zmq.ZMQError:  # the peer is gone; nothing to tell it
            pass

    def reply_all(self, replies: list) -> None:
        """Send a turn's replies: the ROUTER's one by one, each stream connection's together
        (one system call for the many requests a connection had in flight)."""
        if self.stream is None:
            for reply in replies:
                self.reply_to(reply)
            return
        by_conn: dict = {}
        for reply in replies:
            peer = reply[0]
            if type(peer) is Connection:
                got = by_conn.get(peer)
                if got is None:
                    by_conn[peer] = [reply]
                else:
                    got.append(reply)
            else:
                self.reply_to(reply)
        send, send_many = self.stream.send, self.stream.send_many
        for conn, got in by_conn.items():
            if len(got) == 1:
                send(conn, got[0][1], got[0][2])
            else:
                send_many(conn, got)

    def process(self, batch: list, more=None) -> list:
        """Apply a drained batch; return the replies to send once it is as durable as promised.

        The store's one durable commit step runs once per batch: strict, the
        batch's groups become WAL records and one fsync covers them before any
        reply goes out; buffered, the engine's list of encoded groups is the
        in-memory batch that the flusher writes every interval. A strict batch
        with something to fsync first waits for the clients the commit wait
        expects (`more(batch)` adds what arrived since; see shard.commit_wait).
        """
        replies = []
        store = self.store
        token = None
        with self.lock:
            if store is not None and store.writer.failed:
                self.fail_stop(replies, DurabilityError(f"the WAL failed: {store.writer.error}"))
            self._handle_all(batch, 0, replies)
            if more is not None and self.commit_wait is not None and self.engine.log:
                n = len(batch)
                self.commit_wait.fill(batch, more)
                self._handle_all(batch, n, replies)
            if store is not None:
                try:
                    token = store.commit_locked(defer_placing=True)
                except DurabilityError as exc:
                    self.fail_stop(replies, exc)
        if token is not None:
            try:
                store.wait_durable(token)
            except DurabilityError as exc:
                self.fail_stop(replies, exc)
        return replies

    def _handle_all(self, batch: list, start: int, replies: list) -> None:
        for i in range(start, len(batch)):
            frames = batch[i]
            try:
                reply = self.handle(frames, None)
            except Exception as exc:  # a bug must not stop the loop; say what broke
                reply = self.internal_error(frames, exc)
            if reply is not None:
                replies.append(reply)

    def handle(self, frames: list, refuse_writes):
        n = len(frames)
        # [peer, *envelope, header, body]
        if n < 3 or n > 3 + protocol.ENVELOPE_FRAMES_MAX:
            self.dropped_frames += 1
            return None
        head = frames[-2]
        # parse_header's checks, inline for a header that passes them (once per request)
        version, kind, target, _rid = (_header_unpack(head) if len(head) == _HEADER_BYTES
                                       else _NO_HEADER)
        if version != protocol.VERSION or kind not in _KINDS:
            try:
                protocol.parse_header(head)  # fails as the checks above did, saying why
            except ProtocolError as exc:
                self.protocol_errors += 1
                if protocol.request_id_of(head) is None:
                    self.dropped_frames += 1
                    return None
                return frames[:-1] + [protocol.error_body(exc)]
        self.requests += 1
        owners = self.owners
        if owners is not None and kind <= KIND_BATCH and (target >= protocol.SLOT_COUNT
                                                          or owners[target] != self.shard):
            if target >= protocol.SLOT_COUNT:
                self.protocol_errors += 1
                frames[-1] = protocol.error_body(ProtocolError(f"slot {target} is out of range"))
                return frames
            # Sent with a stale slot map: say who owns the slot; the client retries there.
            frames[-1] = protocol.error_body(SlotMoved(
                f"slot {target} is served by shard {owners[target]}, not {self.shard}",
                slot=target, shard=owners[target]))
            return frames
        try:
            if kind == KIND_OP:
                body = self.run_op(frames[-1], refuse_writes, owners is not None)
            elif kind == KIND_BATCH:
                body = self.run_batch(frames[-1], refuse_writes)
            elif kind == KIND_ADMIN:
                body = self.run_admin(frames[-1], frames[0], frames)
                if body is None:
                    return None  # answered later (see shard.deferred_admin)
            else:
                self.protocol_errors += 1
                body = protocol.error_body(ProtocolError("a shard does not answer cluster requests"))
            if body is None:
                # A search waiting for the index, or a long replay or chain check:
                # answered later (shard.deferred_search, shard.deferred_reads).
                waits, *rest = self._deferred
                self._deferred = None
                waits.add(frames, *rest)
                return None
        except Exception as exc:  # whatever the request, its sender gets an answer
            return self.internal_error(frames, exc)
        frames[-1] = body
        return frames

    def internal_error(self, frames: list, exc: Exception):
        log.error("shard %d: internal error:\n%s", self.shard,
                  "".join(traceback.format_exception(exc)))
        if len(frames) < 3 or protocol.request_id_of(frames[-2]) is None:
            self.dropped_frames += 1
            return None
        return frames[:-1] + [protocol.error_body(InmemError(
            f"internal error in shard {self.shard}: {exception_text(exc)}"))]

    def _execute(self, op, args, refuse_writes, execute=None):
        if refuse_writes is not None and op in self.write_ops:
            return refuse_writes
        try:
            if execute is None:
                # What Engine.execute does, less its lookup's guard: the request's
                # decoding checked that the engine knows `op`.
                try:
                    return self.engine.ops[op](*args)
                except TypeError as exc:
                    return InvalidValue(f"bad arguments for {op}: {exc}")
            return execute(op, args)
        except InmemError as exc:
            return exc
        except Exception as exc:
            # A bug, not bad input the engine already names: keep serving, say what broke.
            log.error("shard %d: %s failed:\n%s", self.shard, op, traceback.format_exc())
            return InmemError(f"internal error in {op}: {type(exc).__name__}: {exc}")

    def run_op(self, body, refuse_writes, in_cluster: bool = False) -> bytes:
        try:
            op, args = protocol.decode_op(body, self.engine.ops)
        except ProtocolError as exc:
            self.protocol_errors += 1
            return protocol.error_body(exc)
        if in_cluster:
            moved = self._not_ours(op, args)
            if moved is not None:
                return protocol.error_body(moved)
        engine = self.engine
        if op in SEARCH_OPS and not self.searches.full() and waits_for_index(engine, op, args):
            self._deferred = (self.searches, op, args)
            return None
        if op in SLICED_READS and not self.slow_reads.full():
            jobs = (replay_jobs(engine, [(op, args)]) if op == REPLAY
                    else verify_job(engine, args))
            if jobs is not None:
                self._deferred = (self.slow_reads, jobs, op)
                return None
        if op in engine.packed_ops:
            # Its stored values go out as they are stored: nothing decoded to be packed again.
            result = self._execute(op, args, refuse_writes, engine.execute_packed)
            if type(result) is bytes and len(result) <= self.max_message_bytes:
                return result
            if type(result) is bytes:
                result = protocol.oversized_result(len(result), self.max_message_bytes, op)
            return protocol.pack_reply(self.packer, result, self.max_message_bytes, op)
        return protocol.pack_reply(self.packer, self._execute(op, args, refuse_writes),
                                   self.max_message_bytes, op)

    def run_batch(self, body, refuse_writes) -> bytes:
        try:
            items = protocol.decode_batch(body, self.engine.ops)
        except ProtocolError as exc:
            self.protocol_errors += 1
            return protocol.error_body(exc)
        execute = self._execute
        moved = None if self.owners is None else self._moved_check()
        if (items and not self.slow_reads.full()
                and all(type(item) is not ProtocolError and item[0] == REPLAY
                        and (moved is None or not moved(*item)) for item in items)):
            # Nothing but replays (diff_runs): long ones are folded between turns.
            jobs = replay_jobs(self.engine, items)
            if jobs is not None:
                self._deferred = (self.slow_reads, jobs, None)
                return None
        results: list = []
        i, n = 0, len(items)
        while i < n:
            item = items[i]
            if type(item) is ProtocolError:
                results.append(item)
                i += 1
                continue
            op, args = item
            j = put_series_end(items, i) if refuse_writes is None else i + 1
            if j > i + 1:
                # A pipeline's puts to one run: checked one by one, logged together.
                err = None if moved is None else moved(op, args)
                if err is not None:
                    results.extend([err] * (j - i))
                else:
                    results.extend(self._put_series(args[0], [items[k][1] for k in range(i, j)]))
                i = j
                continue
            results.append((moved is not None and moved(op, args))
                           or execute(op, args, refuse_writes))
            i += 1
        return protocol.pack_results(self.packer, results, self.max_message_bytes)

    def _put_series(self, run, calls: list) -> list:
        try:
            return self.engine.kv_put_series(run, calls)
        except Exception as exc:
            # A bug, not bad input the engine already names: keep serving, say what broke.
            log.error("shard %d: kv.put series failed:\n%s", self.shard, traceback.format_exc())
            err = InmemError(f"internal error in kv.put: {type(exc).__name__}: {exc}")
            return [err] * len(calls)

    def _not_ours(self, op, args):
        """SlotMoved (or ProtocolError) when an OP request's run lives on another shard.

        The header's slot, which routed it here, is the sender's word for where
        the run lives; the run's own id decides. A request whose header names
        one of this shard's slots for a run of another shard (no client of ours
        sends one) would otherwise make the run here as well as there.
        """
        run = (args[0] if args else None) if op in ROUTE_BY_FIRST else route_run(op, args)
        if type(run) is str:
            return self._moved(run)
        if run is None and op == "run.begin":
            # The run's id decides its shard, so the client chooses it (a shard
            # would make one that may well be another shard's).
            return ProtocolError("run.begin on a cluster's shard names its run id")
        return None  # read on every shard, about no run, or an id the engine refuses

    def _moved_check(self):
        """fn(op, args) -> SlotMoved when the op's run lives on another shard, else None.

        A batch is sent to the shard that owns its header's slot, so each
        operation in it is checked too (a stale map may have grouped it with
        the wrong shard's).
        """
        def moved(op, args):
            run = route_run(op, args)
            if type(run) is not str:
                return None  # not about one run, or a bad id the engine will refuse
            return self._moved(run)

        return moved

    def _moved(self, run: str):
        """SlotMoved when run `run` lives on another shard, else None; the slots of the
        runs named last are remembered (a crc32c each otherwise)."""
        slots = self._run_slots
        slot = slots.get(run)
        if slot is None:
            slot = slot_of(run)
            if len(slots) >= _RUN_SLOTS_KEPT:
                slots.clear()
            slots[run] = slot
        owner = self.owners[slot]
        if owner == self.shard:
            return None
        return SlotMoved(f"slot {slot} is served by shard {owner}, not {self.shard}",
                         slot=slot, shard=owner)

    def run_admin(self, body, peer, frames: list) -> bytes | None:
        """The reply body to an admin request; None when it is answered later (`frames`,
        the request's, are then kept for the reply)."""
        try:
            name, args = protocol.decode_op(body, protocol.ADMIN_OPS)
        except ProtocolError as exc:
            self.protocol_errors += 1
            return protocol.error_body(exc)
        if name in ("snapshot", "compact_history"):
            deferred = self.snapshots if name == "snapshot" else self.compactions
            if deferred is not None:
                if args:
                    return protocol.error_body(ProtocolError(f"{name} takes no arguments"))
                deferred.add(frames)
                return None
        try:
            if name in protocol.DEBUG_OPS and not self.spec.get("test_hooks"):
                raise ProtocolError(f"{name}: test hooks are off in this cluster")
            if name == "hello" and args and (type(peer) is Connection or (
                    self.peer_keys is not None
                    and self.peer_keys.get(peer) != self.coordinator_key)):
                # The coordinator's link is its ZeroMQ socket, and on Curve its
                # handshake used the coordinator's key: a slot map from anyone else
                # is some other process's.
                raise ProtocolError("hello: a slot map is the coordinator's to send, over "
                                    "its own link")
            result = getattr(self, "admin_" + name.replace(".", "_"))(*args)
        except InmemError as exc:
            result = exc
        except TypeError as exc:
            result = ProtocolError(f"bad arguments for {name}: {exc}")
        except Exception as exc:  # a bug, not bad input: keep serving, say what broke
            log.error("shard %d: %s failed:\n%s", self.shard, name, traceback.format_exc())
            result = InmemError(f"internal error in {name}: {type(exc).__name__}: {exc}")
        return protocol.pack_reply(self.packer, result, self.max_message_bytes)

    # -- admin requests ------------------------------------------------------------

    def admin_hello(self, owners=None, token=None) -> dict:
        """The coordinator's greeting; it carries the slot map (`protocol.pack_owners`).

        A shard its coordinator started knows that coordinator's token, and
        takes a slot map only with it: the map decides which runs the shard
        serves, so no other peer may change it. A remote shard, started by
        hand, has no token: on Curve it takes a map only from the peer whose
        handshake used the coordinator's key (`run_admin`).
        """
        if owners is not None:
            if self.hello_token is not None and token != self.hello_token:
                raise ProtocolError("hello: a slot map without the token of the coordinator "
                                    "that started this shard")
            table = protocol.unpack_owners(owners)
            if max(table) >= len(self.spec["shards"]):
                raise ProtocolError(f"hello: a slot map naming shard {max(table)} of a cluster "
                                    f"of {len(self.spec['shards'])}")
            self.owners = table
        return {"shard": self.shard, "pid": os.getpid(), "durability": self.durability,
                "endpoint": self.endpoint, "recovery": self.recovery,
                "protocol": protocol.VERSION}

    def admin_ping(self) -> str:
        return "pong"

    def admin_info(self) -> dict:
        cw = self.commit_wait
        return shard_info(self.shard, self.engine, self.store, requests=self.requests,
                          protocol_errors=self.protocol_errors,
                          dropped_frames=self.dropped_frames,
                          commit_waits=0 if cw is None else cw.waits,
                          commit_waited_for=0 if cw is None else cw.waited_for)

    def admin_snapshot(self) -> list:
        return []  # an in-memory shard; a durable one answers later (see run_admin)

    def admin_compact_history(self) -> list:
        return []  # likewise

    def admin_recovery_report(self) -> list:
        return [] if self.recovery is None else [self.recovery]

    # -- test hooks (only with test_hooks in the spec) ------------------------------

    def _test_clock(self) -> int:
        pinned = self.pinned_us
        return time.time_ns() // 1000 if pinned is None else pinned

    def admin_debug_reset(self) -> None:
        """Forget every run: a fresh store for the next test (inmemory shards only)."""
        if self.store is not None:
            raise ProtocolError("debug.reset needs an inmemory cluster")
        self.engine = self._memory_engine()
        self.pinned_us = None

    def admin_debug_clock(self, now_us) -> None:
        if now_us is not None and type(now_us) is not int:
            raise ProtocolError("debug.clock takes int microseconds or None")
        self.pinned_us = now_us

    def admin_debug_max_value_bytes(self, limit) -> None:
        if type(limit) is not int or limit < 1:
            raise ProtocolError("debug.max_value_bytes takes a positive int")
        self.engine.max_value_bytes = limit

    # -- upkeep and shutdown -------------------------------------------------------

    def idle(self) -> None:
        store = self.store
        if store is not None and store.writer.failed:  # the buffered flusher hit an I/O error
            self.fail_stop([], DurabilityError(f"the WAL failed: {store.writer.error}"))
        upkeep(self.engine, store, self.lock)
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.error("shard %d: the coordinator is gone; stopping", self.shard)
            self.stopping = True

    def fail_stop(self, replies: list, exc: DurabilityError):
        log.critical("shard %d: %s; answering DurabilityError and exiting for recovery",
                     self.shard, exc)
        err = protocol.error_body(exc)
        for reply in replies:
            reply[-1] = err
            self.reply_to(reply)
        write_exit_note(self.spec["data_dir"], self.shard, exc)
        self.sock.close(0)
        if self.stream is not None:
            self.stream.close()
        self.exit_process(EXIT_DURABILITY)

    @staticmethod
    def exit_process(code: int) -> None:
        # At once, no cleanup: memory may hold writes the disk does not.
        os._exit(code)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            if self.ipc_file is not None and _identity(self.endpoint[6:]) == self.ipc_file:
                try:
                    os.unlink(self.endpoint[6:])
                except OSError:
                    pass
        if self.stream is not None:
            self.stream.close()
        if self.store is not None:
            # Not under the lock: closing joins the flusher, which may be waiting
            # for it; the store takes the lock itself for the final flush.
            self.store.close()
        if self.server_keys is not None:
            self.server_keys.stop()
        if self.ctx is not None:
            self.ctx.term()



def _identity(path: str) -> tuple | None:
    """(device, inode) of the file at `path`, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def run_worker(spec: dict, shard: int, watch_parent: bool = False) -> int:
    """The body of a shard process: recover, bind, serve until stopped; the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"shard {shard} %(levelname)s %(name)s: %(message)s")
    if not 0 <= shard < len(spec["shards"]):
        print(f"shard {shard} is not in this cluster (it has {len(spec['shards'])})",
              file=sys.stderr)
        return EXIT_STARTUP
    worker = Worker(spec, shard)
    if watch_parent:
        worker.parent_pid = die_with_parent()

    def stop(signum, frame):
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A hangup (the terminal of `inmem serve` closed) stops a shard cleanly too, as it
    # does the coordinator: in a fresh interpreter (a restarted shard) it would kill it.
    # Ignored under nohup, and a forked shard keeps the handler serve gave it.
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, stop)
    clear_exit_note(spec["data_dir"], shard)
    try:
        worker.open()
        worker.bind()
    except (InmemError, OSError, zmq.ZMQError) as exc:
        log.critical("shard %d cannot start: %s: %s", shard, type(exc).__name__, exc)
        write_exit_note(spec["data_dir"], shard, exc)
        return EXIT_STARTUP
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inmem.shard.worker",
                                description="one shard of an inmem cluster, as its coordinator "
                                            "starts it (by hand: inmem shard serve)")
    p.add_argument("--shard", type=int, required=True, help="this shard's number in the spec")
    p.add_argument("--spec", required=True, help="the resolved cluster spec, as JSON")
    p.add_argument("--watch-parent", action="store_true",
                   help="exit when the parent process (the coordinator) dies")
    args = p.parse_args(argv)
    return run_worker(json.loads(args.spec), args.shard, args.watch_parent)


if __name__ == "__main__":
    sys.exit(main())
