"""How a client's sockets wait for a cluster that is starting: ipc retried every few ms.

A client created while the coordinator starts (`Cluster.start`, `inmem
status --wait-ready`) connects before anything listens; ZeroMQ then tries
again every RECONNECT_IVL. On ipc (this host) that is a few ms without
backoff, so the first answer comes as soon as the socket is there; tcp keeps
ZeroMQ's defaults. Both clients, and a real start that becomes ready.
"""

from __future__ import annotations

import asyncio

import zmq

import inmem
from inmem.async_client import AsyncClusterBackend
from inmem.client import ClusterBackend
from inmem.routing import LOCAL_RECONNECT_MS


def _ivl(sock) -> tuple[int, int]:
    return sock.getsockopt(zmq.RECONNECT_IVL), sock.getsockopt(zmq.RECONNECT_IVL_MAX)


def test_the_blocking_clients_ipc_socket_retries_every_few_ms(tmp_path):
    backend = ClusterBackend(f"ipc://{tmp_path}/nobody.sock", timeout=0.1)
    try:
        assert _ivl(backend._socket(f"ipc://{tmp_path}/nobody.sock")) == (LOCAL_RECONNECT_MS, 0)
        assert _ivl(backend._socket("tcp://127.0.0.1:9")) == (100, 0)  # ZeroMQ's defaults
    finally:
        backend.close()


def test_the_async_clients_ipc_socket_retries_every_few_ms(tmp_path):
    async def main():
        backend = AsyncClusterBackend(f"ipc://{tmp_path}/nobody.sock", timeout=0.1)
        try:
            ipc = backend._channel(f"ipc://{tmp_path}/nobody.sock", None)
            tcp = backend._channel("tcp://127.0.0.1:9", None)
            return _ivl(ipc.sock), _ivl(tcp.sock)
        finally:
            await backend.close()

    ipc, tcp = asyncio.run(main())
    assert ipc == (LOCAL_RECONNECT_MS, 0)
    assert tcp == (100, 0)


def test_a_start_waits_for_every_shard_and_then_answers(tmp_path):
    with inmem.Cluster(shards=2, durability="buffered", data_dir=tmp_path / "data") as cluster:
        status = cluster.status()
        assert status["ready"] and [s["state"] for s in status["shards"]] == ["ready", "ready"]
        db = cluster.connect()
        try:
            run = db.begin_run(name="r")
            db.kv.put(run, "k", b"v")
            assert db.kv.get(run, "k") == b"v"
        finally:
            db.close()
