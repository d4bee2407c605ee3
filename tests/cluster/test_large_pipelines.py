"""Pipelines larger than the sockets' buffers: every transport keeps reading replies while it
sends, so a bulk load of any size completes (and every operation in it is applied once).

A shard stops reading a stream connection whose replies the kernel could not
take (backpressure), so a client that sent a whole pipeline before reading a
single reply filled both directions and waited for its deadline.
"""

from __future__ import annotations

import asyncio

import pytest

import inmem
import inmem.asyncio as aio

#: per request; a pipeline that stalls fails within it rather than at the suite's timeout
REQUEST_TIMEOUT_S = 20.0

TRANSPORTS = {
    "direct-stream": {},
    "direct-zeromq": {"stream": False},
    "via-coordinator-stream": {"direct": False},
    "via-coordinator-zeromq": {"direct": False, "stream": False},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("bulk") / "data", shards=2,
                       durability="buffered", ready_timeout=45.0) as cl:
        yield cl


#: a value whose reads make replies far larger than their requests
BIG = "x" * 4096
#: reads of BIG in one pipeline: 20 MB of replies
READS = 5_000


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_a_pipeline_whose_replies_overflow_the_socket_buffers_completes(cluster, transport):
    db = inmem.connect(cluster.endpoint, request_timeout=REQUEST_TIMEOUT_S,
                       **TRANSPORTS[transport])
    try:
        run = db.begin_run(f"reads-{transport}")
        db.kv.put(run, "big", BIG)
        with db.pipeline() as p:
            for i in range(READS):
                p.kv.get(run, "big")
                if i % 1000 == 0:
                    p.kv.put(run, f"mark{i}", i)  # writes among the reads, applied once
            got = p.execute()
        assert got.count(BIG) == READS and got.count(1) == READS // 1000
        assert db.kv.keys(run, "mark") == sorted(f"mark{i}" for i in range(0, READS, 1000))
        # The connection is still in step: the next calls get their own replies.
        assert db.kv.put(run, "big", "small") == 2
        assert db.kv.get(run, "big") == "small"
    finally:
        db.close()


#: a request timeout far shorter than a long pipeline takes as a whole
SHORT_TIMEOUT_S = 1.0
#: puts no client here sends and has applied within SHORT_TIMEOUT_S (over 300K/s)
LONG = 300_000


@pytest.mark.parametrize("transport", ["direct-stream", "via-coordinator-zeromq"])
def test_a_pipeline_longer_than_the_request_timeout_completes_while_it_progresses(
        cluster, transport):
    # The timeout bounds a wait for the cluster's next step (taking a chunk or
    # answering one), as a socket timeout does, not the whole pipeline.
    db = inmem.connect(cluster.endpoint, request_timeout=SHORT_TIMEOUT_S,
                       **TRANSPORTS[transport])
    try:
        run = db.begin_run(f"long-{transport}")
        with db.pipeline() as p:
            for i in range(LONG):
                p.kv.put(run, f"k{i}", i)
            versions = p.execute()
        assert versions == [1] * LONG
        assert len(db.kv.keys(run)) == LONG
    finally:
        db.close()


def test_an_async_pipeline_longer_than_the_request_timeout_completes(cluster):
    async def main():
        db = await aio.connect(cluster.endpoint, request_timeout=SHORT_TIMEOUT_S)
        try:
            run = await db.begin_run("long-async")
            async with db.pipeline() as p:
                for i in range(LONG):
                    p.kv.put(run, f"k{i}", i)
                versions = await p.execute()
            assert versions == [1] * LONG
            assert len(await db.kv.keys(run)) == LONG
        finally:
            await db.close()

    asyncio.run(main())
