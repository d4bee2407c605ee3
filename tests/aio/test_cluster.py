"""The asyncio cluster client: many calls on one connection, cancellation, routing, failures.

Real coordinator and shard processes. The API suite runs every behaviour
against the asyncio client too (the `async-cluster` backend); these are what
only a connection shared by many coroutines has to get right. Each runs over
both transports: the shards' Unix stream sockets (the default on their host)
and ZeroMQ (`stream=False`).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid

import pytest

import zmq

import inmem
import inmem.asyncio
from inmem.async_client import _Channel
from inmem.async_stream import StreamConnection
from inmem.protocol import slot_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=str(tmp_path_factory.mktemp("aio")), shards=2,
                       durability="inmemory") as c:
        yield c


@pytest.fixture(params=["stream", "zmq"])
def connect(request):
    """`inmem.asyncio.connect` over one transport: `await connect(endpoint, **options)`."""
    stream = request.param == "stream"

    def _connect(endpoint, **options):
        return inmem.asyncio.connect(endpoint, stream=stream, **options)
    _connect.stream = stream
    return _connect


def _all_channels(backend) -> list:
    return [*backend._channels, *(conn for conn, _ in backend._streams)]


def _runs_per_shard(owners, per_shard: int, prefix: str) -> list:
    # Fresh ids each time: the module's cluster serves every transport's run of a test.
    prefix = f"{prefix}{uuid.uuid4().hex[:8]}-"
    found: dict = {0: [], 1: []}
    i = 0
    while min(len(v) for v in found.values()) < per_shard:
        run = f"{prefix}{i}"
        shard = owners[slot_of(run)]
        if len(found[shard]) < per_shard:
            found[shard].append(run)
        i += 1
    return found[0] + found[1]


@pytest.mark.parametrize("direct", [True, False])
def test_a_thousand_gathered_calls_on_one_connection_each_get_their_own_reply(cluster, connect, direct):
    async def main():
        db = await connect(cluster.endpoint, direct=direct)
        runs = _runs_per_shard(db._backend.owners, 2, f"many-{direct}-")
        for run in runs:
            await db.begin_run(run_id=run)
        keys = [(runs[i % len(runs)], f"k{i}") for i in range(1000)]
        versions = await asyncio.gather(*(db.kv.put(run, key, {"i": i})
                                          for i, (run, key) in enumerate(keys)))
        assert versions == [1] * 1000
        # Every reply reached the call that asked: each get returns its own key's value.
        got = await asyncio.gather(*(db.kv.get(run, key) for run, key in keys))
        assert got == [{"i": i} for i in range(1000)]
        # Mixed kinds in flight together: run operations, coordinator requests, pipelines.
        p = db.pipeline()
        for run, key in keys[:300]:
            p.kv.get(run, key)
        mixed = await asyncio.gather(db.orphaned_runs(), p.execute(),
                                     *(db.kv.exists(run, key) for run, key in keys[:200]),
                                     db.runs.list())
        assert mixed[0] == []
        assert mixed[1] == [{"i": i} for i in range(300)]
        assert mixed[2:202] == [True] * 200
        assert {r.run_id for r in mixed[202]} >= set(runs)
        await db.close()
    asyncio.run(main())


@pytest.mark.parametrize("direct", [True, False])
def test_cancelled_calls_never_desynchronise_the_connection(cluster, connect, direct):
    rng = random.Random(1234 + direct)

    async def main():
        db = await connect(cluster.endpoint, direct=direct)
        runs = _runs_per_shard(db._backend.owners, 2, f"cancel-{direct}-")
        for run in runs:
            await db.begin_run(run_id=run)
        expected: dict = {}
        for i in range(200):
            run = runs[i % len(runs)]
            await db.kv.put(run, f"k{i}", i)
            expected[(run, f"k{i}")] = i
        items = list(expected.items())

        async def one(n):
            (run, key), value = items[n % len(items)]
            kind = n % 4
            if kind == 0:
                assert await db.kv.get(run, key) == value
            elif kind == 1:
                p = db.pipeline()
                for (r, k), v in items[n % 50:n % 50 + 20]:
                    p.kv.get(r, k)
                assert await p.execute() == [v for _, v in items[n % 50:n % 50 + 20]]
            elif kind == 2:
                assert await db.kv.get_versioned(run, key) is not None
            else:
                assert run in {r.run_id for r in await db.runs.list()}
            return n

        for round_ in range(30):
            tasks = [asyncio.create_task(one(round_ * 100 + j)) for j in range(40)]
            # Cancel some at random points: before sending, between send and
            # reply, while a reply is being read, mid-pipeline.
            for _ in range(rng.randrange(0, 4)):
                await asyncio.sleep(0)
            await asyncio.sleep(rng.random() * 0.003)
            cancelled = set(rng.sample(range(40), rng.randrange(1, 30)))
            for j in cancelled:
                tasks[j].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for j, outcome in enumerate(done):
                if isinstance(outcome, asyncio.CancelledError):
                    assert j in cancelled
                else:
                    # Finished before its cancel, or never cancelled: its own answer.
                    assert outcome == round_ * 100 + j, outcome
            # Every later call gets its own reply, one at a time and many at once.
            (run, key), value = items[round_]
            assert await db.kv.get(run, key) == value
            sample = rng.sample(items, 50)
            assert await asyncio.gather(*(db.kv.get(r, k) for (r, k), _ in sample)) == \
                [v for _, v in sample]
        assert all(not c.pending for c in _all_channels(db._backend))
        await db.close()
    asyncio.run(main())


def test_a_call_that_times_out_leaves_its_late_reply_to_nobody(cluster, connect):
    async def main():
        db = await connect(cluster.endpoint)
        run = await db.begin_run()
        await db.kv.put(run, "k", "v")
        task = asyncio.create_task(db.kv.get(run, "k"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            assert await db.kv.get(run, "k") == "v"
        await db.close()
    asyncio.run(main())


@pytest.mark.timeout(60)
def test_a_reply_nobody_was_woken_for_is_still_taken_long_before_the_deadline(cluster):
    # ZeroMQ signals replies by edges; were one lost, the reply would sit in the
    # socket. Here the reader task is stopped outright: a late request's own checks
    # (every DIRECT_CHECK_S) take what is ready; without them the call raises Timeout
    # at its deadline.
    async def main():
        db = await inmem.asyncio.connect(cluster.endpoint, stream=False, timeout=20)
        run = await db.begin_run()
        await db.kv.put(run, "k", "v")
        backend = db._backend
        (chan,) = [c for c in backend._shards if type(c) is _Channel and c.pending == {}
                   and c.reader is not None and c.shard == backend.owners[slot_of(run)]]
        chan.reader.cancel()
        await asyncio.sleep(0)
        assert await db.kv.get(run, "k") == "v"
        await db.close()
    asyncio.run(main())


def test_errors_are_the_blocking_clients_classes_and_messages(cluster, connect):
    sync_db = cluster.connect()
    run = sync_db.begin_run()
    sync_db.kv.put(run, "k", 1)
    sync_db.state.init(run, "s", 1)
    cases = [
        ("kv.get", lambda d: d.kv.get("no-such-run", "k")),
        ("kv.cas", lambda d: d.kv.cas(run, "k", 7, 2)),
        ("begin", lambda d: d.begin_run(run_id=run)),
        ("key", lambda d: d.kv.put(run, "", 1)),
        ("value", lambda d: d.kv.put(run, "k", {1: 2})),
        ("state", lambda d: d.state.init(run, "s", 2)),
        ("tree", lambda d: d.traces.tree(run, "nope")),
        ("status", lambda d: d.runs.set_status(run, "bogus")),
        ("parent", lambda d: d.begin_run(parent="no-such-parent")),
        ("big", lambda d: d.kv.put(run, "big", b"x" * (80 * 2**20))),
        ("search", lambda d: d.search("x", run="no-such-run")),
    ]
    expected = {}
    for name, fn in cases:
        with pytest.raises(inmem.InmemError) as info:
            fn(sync_db)
        expected[name] = (type(info.value), str(info.value))
    sync_db.close()

    async def main():
        db = await connect(cluster.endpoint)
        for name, fn in cases:
            with pytest.raises(inmem.InmemError) as info:
                await fn(db)
            assert (type(info.value), str(info.value)) == expected[name], name
        await db.close()
    asyncio.run(main())
    with pytest.raises(inmem.InvalidURL):
        asyncio.run(inmem.asyncio.connect("http://nope"))
    with pytest.raises(inmem.InvalidOption):
        asyncio.run(connect(cluster.endpoint, bogus=1))


@pytest.mark.parametrize("batched", [False, True])
def test_a_stale_slot_map_is_redirected_and_refreshed(cluster, connect, batched):
    async def main():
        db = await connect(cluster.endpoint)
        backend = db._backend
        owners = list(backend.owners)
        run = _runs_per_shard(owners, 1, f"stale-{batched}-")[0]  # a run on shard 0
        await db.begin_run(run_id=run)
        backend.owners = list(owners)
        backend.owners[slot_of(run)] = 1  # the map now says shard 1: stale
        if batched:
            async with db.pipeline() as p:
                p.kv.put(run, "k", "v")
                p.kv.get(run, "k")
                assert await p.execute() == [1, "v"]
        else:
            assert await db.kv.put(run, "k", "v") == 1
            assert await db.kv.get(run, "k") == "v"
        assert backend.owners[slot_of(run)] == 0  # refreshed from the coordinator
        await db.close()
    asyncio.run(main())


def test_close_answers_the_calls_still_waiting(cluster, connect):
    async def main():
        db = await connect(cluster.endpoint)
        run = await db.begin_run()
        tasks = [asyncio.create_task(db.kv.put(run, f"k{i}", i)) for i in range(200)]
        await asyncio.sleep(0)
        await db.close()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            assert outcome == 1 or (isinstance(outcome, inmem.InmemError)
                                    and "closed" in str(outcome)), outcome
        with pytest.raises(inmem.InmemError, match="closed"):
            await db.kv.get(run, "k0")
    asyncio.run(main())


def test_a_connection_belongs_to_its_event_loop(cluster, connect):
    db = asyncio.run(connect(cluster.endpoint))

    async def elsewhere():
        with pytest.raises(inmem.InmemError, match="another event loop"):
            await db.kv.get("r", "k")
    asyncio.run(elsewhere())


def test_it_closes_from_another_loop_after_its_own_ended(cluster, connect):
    async def first():
        db = await connect(cluster.endpoint)
        run = await db.begin_run()
        assert await db.kv.put(run, "k", 1) == 1
        return db
    db = asyncio.run(first())
    backend = db._backend
    socks = [c.sock for c in backend._channels] + [s for _, s in backend._streams]
    assert socks

    async def second():
        await db.close()  # no error: its sockets are released without the old loop
        await db.close()
        with pytest.raises(inmem.InmemError, match="closed"):
            await db.kv.get("r", "k")
    asyncio.run(second())
    assert all(s.closed if isinstance(s, zmq.Socket) else s.fileno() == -1 for s in socks)


@pytest.mark.timeout(120)
def test_calls_waiting_on_a_shard_that_dies_fail_as_soon_as_the_coordinator_knows(tmp_path,
                                                                                  connect):
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2, durability="inmemory",
                       restart_backoff_ms=50) as cluster:
        async def main():
            db = await connect(cluster.endpoint, request_timeout=60)
            runs = _runs_per_shard(db._backend.owners, 1, "die-")
            for run in runs:
                await db.begin_run(run_id=run)
            victim = cluster.pids()["shards"][0]
            os.kill(victim, signal.SIGSTOP)  # requests to it now wait, unanswered
            try:
                tasks = [asyncio.create_task(db.kv.put(runs[0], f"k{i}", i))
                         for i in range(100)]
                # The other shard still answers meanwhile.
                assert await db.kv.put(runs[1], "alive", 1) == 1
                await asyncio.sleep(0.3)
                assert not any(t.done() for t in tasks)
                began = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                waited = time.monotonic() - began
            finally:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            assert all(isinstance(o, inmem.ShardUnavailable) for o in outcomes), outcomes[:3]
            # Long before the 60 s deadline: the coordinator's word was enough.
            assert waited < 30, waited
            # The restarted shard is served on the same connection.
            last = None
            for _ in range(200):
                try:
                    assert await db.run_status(runs[0]) in ("not_found", "active")
                    break
                except (inmem.ShardUnavailable, inmem.ClusterNotReady, inmem.Timeout) as exc:
                    last = exc
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the restarted shard never answered: {last!r}")
            await db.close()
        asyncio.run(main())


@pytest.mark.parametrize("direct", [True, False])
def test_the_transport_is_the_stream_socket_on_this_host_and_zeromq_when_asked(cluster, connect,
                                                                               direct):
    async def main():
        db = await connect(cluster.endpoint, direct=direct)
        backend = db._backend
        runs = _runs_per_shard(backend.owners, 1, f"transport-{direct}-")
        for run in runs:
            await db.begin_run(run_id=run)
            assert await db.kv.put(run, "k", run) == 1
        async with db.pipeline() as p:
            for run in runs:
                p.kv.get(run, "k")
            assert await p.execute() == runs
        kind = StreamConnection if connect.stream else _Channel
        if direct:
            assert {type(c) for c in backend._shards} == {kind}
        else:
            assert type(backend._coord_stream) is kind
        await db.close()
        assert all(c.lost for c in backend._shards + [backend._coord_stream]
                   if type(c) is StreamConnection)
    asyncio.run(main())


@pytest.mark.timeout(120)
def test_a_shard_restarted_while_the_connection_was_idle_is_reached_at_once(tmp_path, connect):
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2, durability="inmemory",
                       restart_backoff_ms=50) as cluster:
        async def main():
            db = await connect(cluster.endpoint)
            run = _runs_per_shard(db._backend.owners, 1, "idle-")[0]  # on shard 0
            await db.begin_run(run_id=run)
            before = db._backend._shards[0]
            victim = cluster.pids()["shards"][0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                status = await db._backend.status()
                pid = status["shards"][0].get("pid")
                if status.get("ready") and pid not in (None, victim):
                    break
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.05)
            # The first call after the restart is answered, on a new connection
            # where the transport needs one (the in-memory run is gone with it).
            assert await db.run_status(run) == "not_found"
            if connect.stream:
                assert db._backend._shards[0] is not before
                assert before.lost is not None
            await db.close()
        asyncio.run(main())


@pytest.mark.timeout(180)
def test_a_thousand_calls_and_pipelines_on_a_stopped_shard_fail_typed_and_the_db_goes_on(
        tmp_path, connect):
    # SIGSTOP: the process is there and its socket accepts, but nothing answers;
    # the coordinator's heartbeat takes it out of service and restarts it.
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2, durability="inmemory",
                       heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0,
                       restart_backoff_ms=50) as cluster:
        async def main():
            db = await connect(cluster.endpoint, request_timeout=60)
            runs = _runs_per_shard(db._backend.owners, 1, "stop-")
            for run in runs:
                await db.begin_run(run_id=run)
            victim = cluster.pids()["shards"][0]

            async def pipeline(j):
                p = db.pipeline()
                for k in range(40):
                    p.kv.put(runs[k % 2], f"p{j}-{k}", k)
                return await p.execute()
            os.kill(victim, signal.SIGSTOP)
            try:
                tasks = [asyncio.create_task(db.kv.put(runs[0], f"k{i}", i))
                         for i in range(1000)]
                tasks += [asyncio.create_task(pipeline(j)) for j in range(10)]
                outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                                  50)  # a hang detector, far below 60 s
            finally:
                try:
                    os.kill(victim, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            odd = [o for o in outcomes
                   if not isinstance(o, (inmem.ShardUnavailable, inmem.Timeout))]
            assert odd == [], odd[:3]
            last = None
            for _ in range(300):
                try:
                    await db.begin_run(run_id=runs[0])
                    break
                except (inmem.ShardUnavailable, inmem.ClusterNotReady, inmem.Timeout) as exc:
                    last = exc
                    await asyncio.sleep(0.1)
                except inmem.RunExists:
                    break  # the shard was only paused, and kept its runs
            else:
                raise AssertionError(f"the shard never answered again: {last!r}")
            got = await asyncio.gather(*(db.kv.put(runs[0], f"after{i}", i) for i in range(1000)))
            assert got == [1] * 1000
            await db.close()
        asyncio.run(main())
