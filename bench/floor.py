"""The floor: a bare echo server, what a round trip costs before a store does any work.

`EchoServer` runs `serve` in a process of its own, listening as a shard does:
a ROUTER set up as the cluster's own (`inmem.transport.bind_router`) on an
ipc:// socket, and beside it the stream socket (`inmem.stream_server`) that
clients on the same host use by default. One loop polls both (the shard's
`inmem.transport.RouterPoll`), takes every
message that is ready (from the ROUTER with `copy=False`) and sends each one
back unchanged. It stores nothing, decodes nothing and fsyncs nothing, so no
key-value store reached over the same transport from Python can answer
faster: the cluster rows show their distance to it. `FloorClient` talks to
it over the stream socket as our default client does (`stream=False`:
through a DEALER, as a client on another host would).

With a log (`EchoServer(log_dir=...)`, the floor of strict rows) each turn
also appends what it took to a file and fsyncs it, one write and one fsync
for the whole turn, before any echo goes out: group commit and nothing
else, what a strict shard's turn costs before it applies anything. The file
is preallocated as a WAL segment is.

The clients send what our client sends for the same work, packed once up
front: `put_frames` is the header and body of one `kv.put` of a 16-byte key
and a 100-byte value, `batch_frames` the BATCH messages a pipeline of puts
becomes (chunks of `BATCH_CHUNK_OPS` operations). `FloorClient` is a DEALER
with the client's socket options; its `single(i)` and `batch(i)` are the
op(i) of the same loops that time our rows.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time

import zmq

from inmem.client import BATCH_CHUNK_OPS
from inmem.protocol import (DEFAULT_MAX_MESSAGE_BYTES, KIND_BATCH, KIND_OP, header,
                            new_packer, op_body, slot_of)
from inmem.stream import StreamChannel, stream_path
from inmem.stream_server import StreamServer
from inmem.transport import RouterPoll, bind_router

START_TIMEOUT_S = 20.0
#: messages taken off the socket per turn at most, as the coordinator's loop does
DRAIN_MAX = 1024
#: bytes a log preallocates (a WAL segment's default `segment_bytes_max`); it wraps around
LOG_BYTES = 64 << 20


class TurnLog:
    """The durable floor's file: `commit(parts)` writes them at once and fsyncs."""

    def __init__(self, path: str, size: int = LOG_BYTES):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.size = size
        self.offset = 0
        self.commits = 0
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError:  # a file system without it: the writes extend the file instead
            pass

    def commit(self, parts: list) -> None:
        data = b"".join(parts)
        if self.offset + len(data) > self.size:
            self.offset = 0
        os.pwrite(self.fd, data, self.offset)
        self.offset += len(data)
        os.fsync(self.fd)
        self.commits += 1

    def close(self) -> None:
        os.close(self.fd)


def serve(endpoint: str, ready, log_path: str | None = None) -> None:
    """The echo loop (the server process's target): runs until the process is ended.
    With `log_path`, every turn's messages are written there and fsynced before their echoes."""
    log = None if log_path is None else TurnLog(log_path)
    ctx = zmq.Context(1)
    sock = bind_router(ctx, endpoint, DEFAULT_MAX_MESSAGE_BYTES)
    stream = StreamServer(stream_path(endpoint), DEFAULT_MAX_MESSAGE_BYTES)
    waiter = RouterPoll(sock)  # the shard's own wait, so the floor stays under the shard
    stream.register(waiter)
    ready.set()
    recv, send = sock.recv_multipart, sock.send_multipart
    noblock = zmq.NOBLOCK
    while True:
        router_ready, events = waiter.wait(-1)
        ready_msgs: list = []
        if router_ready:
            try:
                for _ in range(DRAIN_MAX):
                    ready_msgs.append(recv(noblock, copy=False))
            except zmq.Again:
                pass
        echoes: list = []
        stream.read(events, echoes, DRAIN_MAX)
        if log is not None and (ready_msgs or echoes):
            log.commit([frames[-1] for frames in ready_msgs] + [e[2] for e in echoes])
        for frames in ready_msgs:
            send(frames, noblock, copy=False)
        for conn, head, body in echoes:
            stream.send(conn, head, body)


class EchoServer:
    """`with EchoServer() as server:` an echo process on `server.endpoint`, ended on exit.

    `log_dir`: the durable floor, its log in that directory (put it on the
    disk the store under test writes to)."""

    def __init__(self, log_dir: str | None = None):
        # A short directory of its own: ipc paths have a small length limit.
        self.dir = tempfile.mkdtemp(prefix="inmem-floor-")
        self.endpoint = f"ipc://{os.path.join(self.dir, 'echo.sock')}"
        self.log_path = None if log_dir is None else os.path.join(log_dir, "echo.log")
        self.proc = None

    def start(self) -> "EchoServer":
        mpc = mp.get_context("spawn")
        ready = mpc.Event()
        self.proc = mpc.Process(target=serve, args=(self.endpoint, ready, self.log_path),
                                daemon=True,
                                name="inmem-bench-floor")
        self.proc.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                code = self.proc.exitcode
                self.stop()
                why = f"exited (code {code})" if code is not None else \
                    f"did not bind within {START_TIMEOUT_S:.0f} s"
                raise RuntimeError(f"the floor's echo server on {self.endpoint} {why}")
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "EchoServer":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


def put_frames(run: str, key: str, value: bytes, request_id: int = 1) -> list:
    """The two frames our client sends for one kv.put (header, body)."""
    body = new_packer().pack(op_body("kv.put", (run, key, value)))
    return [header(KIND_OP, slot_of(run), request_id), body]


def batch_frames(run: str, keys: list, value: bytes) -> list:
    """The BATCH messages our client sends for a pipeline of puts of `keys` into `run`."""
    packer = new_packer()
    out = []
    for lo in range(0, len(keys), BATCH_CHUNK_OPS):
        bodies = [op_body("kv.put", (run, k, value)) for k in keys[lo:lo + BATCH_CHUNK_OPS]]
        out.append([header(KIND_BATCH, slot_of(run), lo + 1), packer.pack(bodies)])
    return out


class FloorClient:
    """A client of an echo server, set up as ours; `single`/`batch` are loop ops."""

    def __init__(self, endpoint: str, *, run: str = "floor", key: str = "k" * 16,
                 value: bytes = b"", batch: int = 0, timeout_s: float = 30.0,
                 stream: bool = True):
        self.timeout_s = timeout_s
        self.ctx = self.sock = self.chan = None
        if stream:
            self.chan = StreamChannel(stream_path(endpoint), 0, timeout_s)
        else:
            self.ctx = zmq.Context(1)
            self.sock = self.ctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.MAXMSGSIZE, -1)
            self.sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
            self.sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
            self.sock.connect(endpoint)
        self.frames = put_frames(run, key, value)
        self.batches = batch_frames(run, [f"{key[:-6]}{i:06d}" for i in range(batch)],
                                    value) if batch else []
        if stream:
            self.single = self._single_stream
            self.batch = self._batch_stream

    def _single_stream(self, i: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        self.chan.send(self.frames[0], self.frames[1], deadline)
        if self.chan.recv(deadline, DEFAULT_MAX_MESSAGE_BYTES) is None:
            raise TimeoutError("the floor did not echo")

    def _batch_stream(self, i: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        for head, body in self.batches:
            self.chan.send(head, body, deadline)
        for _ in self.batches:
            if self.chan.recv(deadline, DEFAULT_MAX_MESSAGE_BYTES) is None:
                raise TimeoutError("the floor did not echo")

    def single(self, i: int) -> None:
        self.sock.send_multipart(self.frames)
        self.sock.recv_multipart()

    def batch(self, i: int) -> None:
        # As a pipeline: every chunk sent, then every reply collected.
        send, recv = self.sock.send_multipart, self.sock.recv_multipart
        for frames in self.batches:
            send(frames)
        for _ in self.batches:
            recv()

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
        if self.sock is not None:
            self.sock.close(0)
            self.ctx.term()


__all__ = ["EchoServer", "FloorClient", "TurnLog", "serve", "put_frames", "batch_frames"]
