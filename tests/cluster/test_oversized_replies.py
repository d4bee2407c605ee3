"""A reply over the client's own max_message_bytes fails its request alone, with
ProtocolError, on every transport; the connection and the other requests go on."""

from __future__ import annotations

import asyncio

import pytest

import inmem
import inmem.asyncio

pytestmark = pytest.mark.slow

LIMIT = 64 << 10
BIG = b"x" * (300 << 10)
TRANSPORTS = [{}, {"stream": False}, {"direct": False}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("oversized") / "data", shards=2,
                       durability="inmemory") as c:
        db = c.connect()
        run = db.begin_run(run_id="big-replies")
        db.kv.put(run, "big", BIG)
        db.kv.put(run, "small", 1)
        db.close()
        yield c


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_blocking_client(cluster, options):
    db = cluster.connect(max_message_bytes=LIMIT, **options)
    try:
        for _ in range(3):
            with pytest.raises(inmem.ProtocolError, match="over this client's max_message_bytes"):
                db.kv.get("big-replies", "big")
            # The connection goes on: the next replies are each their own request's.
            assert db.kv.get("big-replies", "small") == 1
            assert db.kv.put("big-replies", "n", 2) >= 1
        with db.pipeline() as p:
            p.kv.get("big-replies", "small")
            p.kv.get("big-replies", "big")
            got = p.execute(raise_on_error=False)
        # The batch's one reply is over the limit: each of its operations says so.
        assert all(isinstance(r, inmem.ProtocolError) for r in got)
        assert db.kv.get("big-replies", "small") == 1
    finally:
        db.close()
    roomy = cluster.connect(**options)
    try:
        assert roomy.kv.get("big-replies", "big") == BIG
    finally:
        roomy.close()


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_asyncio_client_fails_only_that_request(cluster, options):
    async def go():
        db = await inmem.asyncio.connect(cluster.endpoint, max_message_bytes=LIMIT, **options)
        try:
            for _ in range(3):
                got = await asyncio.gather(
                    db.kv.get("big-replies", "small"), db.kv.get("big-replies", "big"),
                    *[db.kv.get("big-replies", "small") for _ in range(20)],
                    return_exceptions=True)
                assert got[0] == 1 and all(g == 1 for g in got[2:]), got
                assert isinstance(got[1], inmem.ProtocolError), got[1]
                assert "over this client's max_message_bytes" in str(got[1])
            assert await db.kv.put("big-replies", "m", 3) >= 1
        finally:
            await db.close()
    asyncio.run(go())


@pytest.mark.parametrize("limit", [None, LIMIT], ids=["kept", "over-the-limit"])
def test_a_large_reply_that_outlasts_one_wait_slice_is_read_whole(cluster, monkeypatch, limit):
    # A direct client waits for a reply in short slices (between them it asks whether
    # the shard is still alive). A reply still arriving when a slice ends must be
    # read on to the request's own deadline, not cut off with the stream closed.
    import inmem.client as client_module
    value = b"y" * (8 << 20)
    writer = cluster.connect()
    writer.kv.put("big-replies", "slow", value)
    writer.close()
    monkeypatch.setattr(client_module, "_DIRECT_CHECK_S", 0.0002)
    db = cluster.connect(**({} if limit is None else {"max_message_bytes": limit}))
    try:
        for _ in range(3):
            if limit is None:
                assert db.kv.get("big-replies", "slow") == value
            else:
                with pytest.raises(inmem.ProtocolError, match="max_message_bytes"):
                    db.kv.get("big-replies", "slow")
            assert db.kv.get("big-replies", "small") == 1
    finally:
        db.close()


def test_a_run_too_large_to_list_at_once_is_listed_in_pages(cluster):
    db = cluster.connect(max_message_bytes=LIMIT)
    try:
        run = db.begin_run(run_id="many-keys")
        keys = [f"key/{i:06d}" for i in range(8000)]  # ~100 KiB of names
        with db.pipeline() as p:
            for k in keys:
                p.kv.put(run, k, 0)
            p.execute()
        with pytest.raises(inmem.ProtocolError, match="max_message_bytes"):
            db.kv.keys(run)
        listed, after = [], None
        while page := db.kv.keys(run, "key/", after=after, limit=2000):
            listed += page
            after = page[-1]
        assert listed == keys
        assert db.kv.items(run, after=keys[-2], limit=5) == [(keys[-1], 0)]
    finally:
        db.close()
