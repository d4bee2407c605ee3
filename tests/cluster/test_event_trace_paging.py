"""A run's events by type and traces by type, by tag and roots on a cluster whose listing is
over max_message_bytes: the unpaged call fails with an error that says to page it, and the
pages (`limit=`, `after=`) bring every event and trace, on every transport and with the
asyncio client.
"""

from __future__ import annotations

import asyncio

import pytest

import inmem
import inmem.asyncio
from paging import pages

pytestmark = pytest.mark.slow

LIMIT = 64 << 10
COUNT = 100
BLOB = "b" * 1500  # 75-150 KB of events or traces of one kind in all: over LIMIT
TRANSPORTS = [{}, {"stream": False}, {"direct": False}]
RUN = "long-run"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("ev-tr-paging") / "data", shards=2,
                       durability="inmemory", max_message_bytes=LIMIT) as c:
        db = c.connect()
        db.begin_run(run_id=RUN)
        root = db.traces.record(RUN, "thought", {"blob": BLOB}, tags=["plan"])
        with db.pipeline() as p:
            for i in range(COUNT):
                p.events.append(RUN, "step", {"i": i, "blob": BLOB})
                p.events.append(RUN, "tick", i)
                # Every other one a root; all of them "step" traces tagged "t".
                p.traces.record(RUN, "tool_call", {"i": i, "blob": BLOB},
                                root if i % 2 else None, ["t"])
        db.close()
        yield c


#: name, the call's unpaged form, and the text the error says to call instead
LISTINGS = [
    ("events.by_type", lambda db, **kw: db.events.by_type(RUN, "step", **kw),
     r"events\.by_type\(\.\.\., limit="),
    ("traces.by_type", lambda db, **kw: db.traces.by_type(RUN, "tool_call", **kw),
     r"traces\.by_type\(\.\.\., limit="),
    ("traces.by_tag", lambda db, **kw: db.traces.by_tag(RUN, "t", **kw),
     r"traces\.by_tag\(\.\.\., limit="),
    ("traces.roots", lambda db, **kw: db.traces.roots(RUN, **kw),
     r"traces\.roots\(\.\.\., limit="),
]


def expected(name) -> list:
    if name == "events.by_type":
        return [("step", i) for i in range(COUNT)]
    if name == "traces.roots":
        return [("thought", None)] + [("tool_call", i) for i in range(0, COUNT, 2)]
    return [("tool_call", i) for i in range(COUNT)]


def summary(items) -> list:
    out = []
    for x in items:
        if isinstance(x, inmem.Event):
            assert x.payload["blob"] == BLOB
            out.append((x.event_type, x.payload["i"]))
        else:
            assert x.data["blob"] == BLOB
            out.append((x.trace_type, x.data.get("i")))
    return out


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_unpaged_listing_says_to_page_and_the_pages_bring_everything(cluster, options):
    db = cluster.connect(**options)
    try:
        for name, listing, hint in LISTINGS:
            with pytest.raises(inmem.ProtocolError, match=hint):
                listing(db)
            got = pages(lambda **kw: listing(db, **kw), 20)
            assert summary(got) == expected(name), name
            # A page that is itself too large says the same.
            with pytest.raises(inmem.ProtocolError, match=hint):
                listing(db, limit=COUNT)
        # A listing of what fits still comes whole, as before.
        assert [e.payload for e in db.events.by_type(RUN, "tick")] == list(range(COUNT))
    finally:
        db.close()


def test_pages_in_a_pipeline_fit_together(cluster):
    db = cluster.connect()
    try:
        with db.pipeline() as p:
            p.events.by_type(RUN, "step", limit=15)
            p.traces.roots(RUN, limit=15)
            p.events.by_type(RUN, "tick")
            got = p.execute(raise_on_error=False)
        assert summary(got[0]) == expected("events.by_type")[:15]
        assert summary(got[1]) == expected("traces.roots")[:15]
        assert [e.payload for e in got[2]] == list(range(COUNT))
    finally:
        db.close()


@pytest.mark.parametrize("options", TRANSPORTS, ids=["stream", "zeromq", "proxied"])
def test_the_asyncio_client_pages(cluster, options):
    async def go():
        db = await inmem.asyncio.connect(cluster.endpoint, **options)
        try:
            for name, listing, hint in LISTINGS:
                with pytest.raises(inmem.ProtocolError, match=hint):
                    await listing(db)
                out, after = [], None
                while True:
                    page = await listing(db, after=after, limit=30)
                    if not page:
                        break
                    out.extend(page)
                    after = page[-1]
                assert summary(out) == expected(name), name
            with pytest.raises(inmem.TraceNotFound):
                await db.traces.roots(RUN, after="no-such-trace", limit=1)
        finally:
            await db.close()
    asyncio.run(go())
