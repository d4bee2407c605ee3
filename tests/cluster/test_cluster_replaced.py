"""A client that outlives its cluster: a new cluster laid out otherwise, served at the same
address (`inmem serve` restarted with another config), is found again by the next call.

The client routes straight to the shards with the map it took from the coordinator, as a
Redis Cluster client does. When a shard's address no longer takes connections, the client
asks the coordinator for the map again before it gives up, so it follows a cluster that
was replaced instead of failing with ShardUnavailable ("retry shortly") for ever. A call
whose request may have reached the old shard is never sent twice.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

import inmem
import inmem.asyncio
from inmem.protocol import slot_of

from .conftest import runs_on_each_shard, wait_for

pytestmark = pytest.mark.slow


def _cluster(tmp_path, name: str, shards: int, endpoint: str) -> inmem.Cluster:
    return inmem.Cluster(data_dir=tmp_path / name, shards=shards, durability="buffered",
                         endpoint=endpoint, ready_timeout=30)


def _runs_on_every_shard(db, shards: int, prefix: str) -> list:
    """Runs begun on the new cluster, at least one owned by each of its shards."""
    owners = inmem.connect(db._backend.url)._backend
    runs, seen = [], set()
    for i in range(200):
        run = db.begin_run(run_id=f"{prefix}-{i}")
        runs.append(run)
        if owners.owners is None:
            owners._load_slotmap()
        seen.add(owners.owners[slot_of(run)])
        if len(seen) == shards:
            break
    owners.close()
    assert len(seen) == shards
    return runs


def test_blocking_client_threads_follow_a_cluster_replaced_at_the_same_address(tmp_path):
    endpoint = f"ipc://{tmp_path}/c.sock"
    old = _cluster(tmp_path, "a", 2, endpoint).start()
    db = inmem.connect(endpoint)
    try:
        before = [db.begin_run(run_id=f"a-{i}") for i in range(8)]
        errors: list = []

        def use(runs, tag):
            try:
                for run in runs:
                    db.kv.put(run, tag, tag)
                    assert db.kv.get(run, tag) == tag
            except Exception as exc:  # reported below, with the thread's tag
                errors.append((tag, exc))

        # Every thread holds connections to the old shards.
        workers = [threading.Thread(target=use, args=(before, f"t{i}")) for i in range(2)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        use(before, "main")
        assert errors == []
        old.stop()

        new = _cluster(tmp_path, "b", 3, endpoint).start()
        try:
            after = _runs_on_every_shard(db, 3, "b")
            use(after, "main")
            workers = [threading.Thread(target=use, args=(after, f"t{i}")) for i in range(2)]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            assert errors == []
            # Pipelines too, whose chunks are grouped by shard with the map.
            p = db.pipeline()
            for run in after:
                p.kv.put(run, "p", 1)
            assert p.execute() == [1] * len(after)
            assert [db.kv.get(run, "p") for run in after] == [1] * len(after)
        finally:
            new.stop()
    finally:
        db.close()


def test_a_shard_that_is_only_down_still_fails_fast_with_shard_unavailable(tmp_path):
    # The same cluster, one shard gone: the refreshed map is the same, so the call
    # fails as before (no retry on the same address, no wait for a timeout).
    endpoint = f"ipc://{tmp_path}/c.sock"
    cluster = _cluster(tmp_path, "a", 2, endpoint).start()
    db = inmem.connect(endpoint)
    try:
        runs = _runs_on_every_shard(db, 2, "a")
        for run in runs:
            db.kv.put(run, "k", 1)
        cluster.stop()
        with pytest.raises((inmem.ShardUnavailable, inmem.Timeout)):
            db.kv.put(runs[0], "k", 2)
    finally:
        db.close()


def test_asyncio_client_follows_a_cluster_replaced_at_the_same_address(tmp_path):
    endpoint = f"ipc://{tmp_path}/c.sock"

    async def main():
        old = _cluster(tmp_path, "a", 2, endpoint).start()
        adb = await inmem.asyncio.connect(endpoint)
        try:
            before = [await adb.begin_run(run_id=f"a-{i}") for i in range(8)]
            for run in before:
                await adb.kv.put(run, "k", 1)
            old.stop()
            new = _cluster(tmp_path, "b", 3, endpoint).start()
            try:
                sync = inmem.connect(endpoint)
                after = _runs_on_every_shard(sync, 3, "b")
                sync.close()
                for run in after:
                    await adb.kv.put(run, "k", 2)
                assert [await adb.kv.get(run, "k") for run in after] == [2] * len(after)
                assert await asyncio.gather(*(adb.kv.put(run, "g", 1) for run in after)) \
                    == [1] * len(after)
            finally:
                new.stop()
        finally:
            await adb.close()

    asyncio.run(main())


@pytest.mark.parametrize("before_shards,after_shards", [(2, 3), (3, 2)])
def test_a_pipeline_first_after_the_replacement_is_regrouped_by_the_new_map(
        tmp_path, before_shards, after_shards):
    # Planned with the old map (its shard numbers may not exist any more): every
    # operation still reaches the shard that owns it now, each applied once.
    endpoint = f"ipc://{tmp_path}/c.sock"
    old = _cluster(tmp_path, "a", before_shards, endpoint).start()
    db = inmem.connect(endpoint)
    try:
        for i in range(12):
            db.kv.put(db.begin_run(run_id=f"a-{i}"), "k", 1)
        old.stop()
        new = _cluster(tmp_path, "b", after_shards, endpoint).start()
        try:
            other = inmem.connect(endpoint)
            after = _runs_on_every_shard(other, after_shards, "b")
            other.close()
            p = db.pipeline()
            for n, run in enumerate(after):
                p.kv.put(run, "p", n)
                p.kv.put(run, "p", n)
            assert p.execute() == [1, 2] * len(after)
            assert [db.kv.get(run, "p") for run in after] == list(range(len(after)))
        finally:
            new.stop()
    finally:
        db.close()


@pytest.mark.parametrize("before_shards,after_shards", [(2, 3), (3, 2)])
def test_asyncio_pipeline_first_after_the_replacement(tmp_path, before_shards, after_shards):
    endpoint = f"ipc://{tmp_path}/c.sock"

    async def main():
        old = _cluster(tmp_path, "a", before_shards, endpoint).start()
        adb = await inmem.asyncio.connect(endpoint)
        try:
            for i in range(12):
                await adb.kv.put(await adb.begin_run(run_id=f"a-{i}"), "k", 1)
            old.stop()
            new = _cluster(tmp_path, "b", after_shards, endpoint).start()
            try:
                sync = inmem.connect(endpoint)
                after = _runs_on_every_shard(sync, after_shards, "b")
                sync.close()
                p = adb.pipeline()
                for n, run in enumerate(after):
                    p.kv.put(run, "p", n)
                    p.kv.put(run, "p", n)
                assert await p.execute() == [1, 2] * len(after)
                assert [await adb.kv.get(run, "p") for run in after] == list(range(len(after)))
            finally:
                new.stop()
        finally:
            await adb.close()

    asyncio.run(main())


def test_asyncio_direct_request_to_a_shard_whose_restarts_fail_names_why(tmp_path):
    # The same cluster, a shard whose every restart fails: the refreshed map is the
    # same, and the coordinator's reason for the shard is in the error.
    cluster = inmem.Cluster(data_dir=tmp_path / "a", shards=2, durability="strict",
                            restart_backoff_ms=50, restart_backoff_max_ms=400,
                            ready_timeout=30).start()
    try:
        db = cluster.connect()
        run = runs_on_each_shard(db, 2, prefix="broken")[1][0]
        db.begin_run(run_id=run)
        db.kv.put(run, "kept", 1)
        wal = os.path.join(cluster.data_dir, "shard-1", "wal")
        os.rename(wal, wal + ".aside")  # the live shard keeps its open segment
        with open(wal, "w") as f:
            f.write("x")

        async def main():
            adb = await inmem.asyncio.connect(cluster.endpoint)
            try:
                assert await adb.kv.get(run, "kept") == 1
                os.kill(cluster.pids()["shards"][1], 9)
                wait_for(lambda: cluster.status()["shards"][1]["start_failures"] >= 2, 30,
                         "shard 1's restarts to fail twice")
                with pytest.raises(inmem.ShardUnavailable) as caught:
                    await adb.kv.put(run, "more", 2)
                assert f"{wal} is a file, not a directory" in str(caught.value)
            finally:
                await adb.close()

        asyncio.run(main())
        db.close()
    finally:
        cluster.stop()


# -- over tcp (ZeroMQ), where a connection to an address nobody serves never fails ---------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_cluster(tmp_path, name: str, coordinator_port: int, shards: int) -> inmem.Cluster:
    lines = [f'[cluster]\ndata_dir = "{tmp_path / name}"\nshards = {shards}\n'
             f'endpoint = "tcp://127.0.0.1:{coordinator_port}"\ninsecure = true\n']
    for i in range(shards):
        lines.append(f'[[shard]]\nid = {i}\nendpoint = "tcp://127.0.0.1:{_free_port()}"\n')
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text("".join(lines))
    return inmem.Cluster(str(cfg), ready_timeout=30)


@pytest.mark.parametrize("face", ["blocking", "asyncio"])
def test_a_tcp_client_takes_the_new_map_after_the_cluster_was_replaced(tmp_path, face):
    port = _free_port()
    old = _tcp_cluster(tmp_path, "a", port, 2).start()
    endpoint = old.endpoint
    runs = [f"r-{i}" for i in range(12)]

    def put_until_it_lands(put):
        # The first request for an old shard waits its request timeout, then fails
        # saying the cluster changed; the next goes by the new map.
        errors = []
        for _ in range(3):
            try:
                return put(), errors
            except (inmem.ShardUnavailable, inmem.Timeout) as exc:
                errors.append(exc)
        raise AssertionError(f"never landed: {errors}")

    if face == "blocking":
        db = inmem.connect(endpoint, request_timeout=1.0)
        try:
            for run in runs:
                db.begin_run(run_id=run)
            old.stop()
            new = _tcp_cluster(tmp_path, "b", port, 3).start()
            try:
                for run in runs:
                    put_until_it_lands(lambda: db.begin_run(run_id=run))
                    assert db.kv.put(run, "k", 1) == 1
            finally:
                new.stop()
        finally:
            db.close()
        return

    async def main():
        adb = await inmem.asyncio.connect(endpoint, request_timeout=1.0)
        try:
            for run in runs:
                await adb.begin_run(run_id=run)
            old.stop()
            new = _tcp_cluster(tmp_path, "b", port, 3).start()
            try:
                for run in runs:
                    errors = []
                    for _ in range(3):
                        try:
                            await adb.begin_run(run_id=run)
                            break
                        except (inmem.ShardUnavailable, inmem.Timeout) as exc:
                            errors.append(exc)
                    else:
                        raise AssertionError(f"never landed: {errors}")
                    assert await adb.kv.put(run, "k", 1) == 1
            finally:
                new.stop()
        finally:
            await adb.close()

    asyncio.run(main())
