"""The saver's `list(None)` (every thread) over more threads than one reply of runs holds:
it listed the runs of its tag with one unpaged `run.list`, which failed on a cluster once
their RunInfos passed `max_message_bytes`; it reads them a page at a time now.
"""

from __future__ import annotations

import uuid

from langgraph.checkpoint.base import empty_checkpoint

from inmem.langgraph import InmemSaver

#: the client's message limit here: 16 KiB stand for the default 64 MiB
LIMIT = 16 * 1024
THREADS = 200


def test_listing_every_thread_of_more_threads_than_one_reply_holds(monkeypatch):
    # (20 runs a page with a 16 KiB limit stand for 1,000 with the default 64 MiB)
    from inmem.langgraph import queries
    monkeypatch.setattr(queries, "RUNS_PAGE", 20)
    from cluster.shared import shared_cluster
    db = shared_cluster().connect(max_message_bytes=LIMIT)
    try:
        saver = InmemSaver(db, prefix=f"many-{uuid.uuid4().hex[:8]}:")
        for i in range(THREADS):
            config = {"configurable": {"thread_id": f"t{i:03d}", "checkpoint_ns": ""}}
            saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
        listed = list(saver.list(None))
        assert sorted(t.config["configurable"]["thread_id"] for t in listed) == [
            f"t{i:03d}" for i in range(THREADS)]
    finally:
        db.close()
