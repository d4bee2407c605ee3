"""runs.list over a cluster whose merged list is over max_message_bytes: the unpaged list
fails with an error that says to page it, and the pages (`limit=`, `after=`) bring every
run, on every transport and with the asyncio client.
"""

from __future__ import annotations

import asyncio

import pytest

import inmem
import inmem.asyncio
from paging import pages

pytestmark = pytest.mark.slow

LIMIT = 64 << 10
RUNS = 100
META = {"blob": "m" * 800}  # ~85 KB of RunInfos in all: each shard's part fits, the merge not
TRANSPORTS = [{}, {"stream": False}, {"direct": False}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("runs-paging") / "data", shards=2,
                       durability="inmemory", max_message_bytes=LIMIT) as c:
        db = c.connect()
        with db.pipeline() as p:
            for i in range(RUNS):
                p.begin_run(run_id=f"run-{i:04d}", tags=["batch"] if i % 2 else ["other"],
                            metadata=META)
        db.close()
        yield c


ALL = [f"run-{i:04d}" for i in range(RUNS)]


def in_order(listed) -> list:
    """The run ids of `listed`, checked to be in the documented order and each there once."""
    assert listed == sorted(listed, key=lambda r: (r.created_at, r.run_id))
    ids = [r.run_id for r in listed]
    assert len(set(ids)) == len(ids)
    return sorted(ids)


def page_through(db, limit, **filters) -> list:
    """Every listed run, a page of `limit` at a time, each page's last run the next's `after`."""
    return pages(lambda **page: db.runs.list(**filters, **page), limit)


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_unpaged_list_says_to_page_and_the_pages_bring_every_run(cluster, options):
    db = cluster.connect(**options)
    try:
        # Each shard's part is under the limit (about 0.85 KB a run): the merge is over it.
        runs = [c["runs"] for c in db._backend.fanout("engine.counts", [])]
        assert sum(runs) == RUNS and max(runs) * 850 < LIMIT, runs
        with pytest.raises(inmem.ProtocolError, match=r"runs\.list\(\.\.\., limit="):
            db.runs.list()
        listed = page_through(db, 20)
        assert in_order(listed) == ALL
        assert all(r.metadata == META for r in listed)
        tagged = page_through(db, 15, tag="batch")
        assert in_order(tagged) == ALL[1::2]
        assert db.runs.list(tag="batch", limit=1) == tagged[:1]
        assert db.runs.list(tag="batch", after=tagged[10], limit=7) == tagged[11:18]
        # A page that is itself too large says the same.
        with pytest.raises(inmem.ProtocolError, match=r"runs\.list\(\.\.\., limit="):
            db.runs.list(limit=RUNS)
    finally:
        db.close()


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_asyncio_client_pages(cluster, options):
    async def go():
        db = await inmem.asyncio.connect(cluster.endpoint, **options)
        try:
            with pytest.raises(inmem.ProtocolError, match=r"runs\.list\(\.\.\., limit="):
                await db.runs.list()
            out, after = [], None
            while True:
                page = await db.runs.list(after=after, limit=30)
                if not page:
                    break
                out.extend(page)
                after = page[-1]
            assert in_order(out) == ALL
            with pytest.raises(inmem.InvalidValue):
                await db.runs.list(after="run-0001")
        finally:
            await db.close()
    asyncio.run(go())


def test_a_shard_whose_own_part_is_over_the_limit_says_to_page(make_cluster):
    cluster = make_cluster(shards=1, durability="inmemory", max_message_bytes=LIMIT)
    db = cluster.connect()
    try:
        with db.pipeline() as p:
            for i in range(RUNS):
                p.begin_run(run_id=f"run-{i:04d}", metadata=META)
        with pytest.raises(inmem.ProtocolError, match=r"runs\.list\(\.\.\., limit="):
            db.runs.list()
        assert in_order(page_through(db, 25)) == ALL
    finally:
        db.close()
