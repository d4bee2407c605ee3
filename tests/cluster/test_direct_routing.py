"""Direct routing: the client sends run operations to the owning shard, and a stale map is redirected."""

from __future__ import annotations

import time

import pytest

import inmem
from inmem.protocol import slot_of

pytestmark = pytest.mark.slow


def _run_on_shard(owners, shard: int, prefix: str) -> str:
    i = 0
    while owners[slot_of(f"{prefix}{i}")] != shard:
        i += 1
    return f"{prefix}{i}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=str(tmp_path_factory.mktemp("direct")), shards=2,
                       durability="inmemory") as c:
        yield c


def test_the_client_routes_by_slot_by_default(cluster):
    db = cluster.connect()
    try:
        assert db._backend.direct is True
        run = db.begin_run()
        db.kv.put(run, "k", 1)
        assert db.kv.get(run, "k") == 1
    finally:
        db.close()


@pytest.mark.parametrize("batched", [False, True])
def test_a_stale_slot_map_is_redirected_and_refreshed(cluster, batched):
    db = cluster.connect()
    try:
        backend = db._backend
        backend.call("run.status", ("warm-up",))  # loads the slot map
        owners = list(backend.owners)
        run = _run_on_shard(owners, 0, f"stale-{batched}-")
        db.begin_run(run_id=run)
        # The client's map now says the run's slot is on shard 1: a stale map.
        backend.owners = list(owners)
        backend.owners[slot_of(run)] = 1
        if batched:
            with db.pipeline() as p:
                p.kv.put(run, "k", "v")
                p.kv.get(run, "k")
                assert p.execute() == [1, "v"]
        else:
            assert db.kv.put(run, "k", "v") == 1
            assert db.kv.get(run, "k") == "v"
        assert backend.owners[slot_of(run)] == 0  # refreshed from the coordinator
    finally:
        db.close()


def test_a_shard_refuses_a_slot_it_does_not_own_with_slot_moved(cluster):
    import msgpack
    import zmq

    from inmem import protocol
    db = cluster.connect()
    try:
        backend = db._backend
        backend.call("run.status", ("warm-up",))
        run = _run_on_shard(backend.owners, 0, "moved-")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(backend.shard_endpoints[1])  # the shard that does not own it
        head = protocol.header(protocol.KIND_OP, slot_of(run), 7)
        sock.send_multipart([head, msgpack.packb(["run.status", [run]])])
        _head, body = sock.recv_multipart()
        err = protocol.unpack_reply(body)
        assert type(err) is inmem.SlotMoved
        assert err.slot == slot_of(run) and err.shard == 0
        sock.close(0)
        ctx.term()
    finally:
        db.close()


def test_the_client_remembers_slots_of_recent_runs_within_a_bound(cluster, monkeypatch):
    from inmem import client as client_mod
    monkeypatch.setattr(client_mod, "_SLOTS_KEPT", 8)
    db = cluster.connect()
    try:
        runs = [db.begin_run() for _ in range(20)]
        for i, run in enumerate(runs):
            assert db.kv.put(run, "k", i) == 1
            slots = db._backend._slots
            assert len(slots) <= 8
            assert slots[run] == slot_of(run)
        assert [db.kv.get(run, "k") for run in runs] == list(range(20))
        # An id that is not a str names no run: refused as ever, and never remembered.
        with pytest.raises(inmem.InmemError):
            db.kv.put(5, "k", 1)
        assert 5 not in db._backend._slots
    finally:
        db.close()


def test_a_direct_zeromq_send_waits_for_a_slow_connection_until_its_deadline():
    # A new DEALER's connection can take more than 200 ms on a loaded host: the send
    # gave up at the first 200 ms poll and raised "no reply from shard N within 10 s".
    import zmq

    from cluster.shared import shared_cluster
    from inmem.client import _Channel
    from inmem.protocol import KIND_OP, header
    db = shared_cluster().connect(stream=False)
    backend = db._backend
    try:
        class SlowToConnect:
            """A socket whose connection is up only at its fourth look."""
            def __init__(self):
                self.looks = 0
                self.sent = []

            def send_multipart(self, frames, flags=0):
                if self.looks < 4:
                    raise zmq.Again()
                self.sent.append(frames)

            def poll(self, timeout=None, flags=zmq.POLLIN):
                self.looks += 1
                return 0 if self.looks < 4 else zmq.POLLOUT

        sock = SlowToConnect()
        chan = _Channel(sock, shard=0)
        head = header(KIND_OP, 0, 1)
        assert backend._send(chan, head, b"body", time.monotonic() + 30) is chan
        assert sock.sent == [(head, b"body")] and sock.looks == 4
    finally:
        db.close()
