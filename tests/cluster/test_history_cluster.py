"""A cluster's history: the in-memory limit from its config, and compaction on request.

An inmemory cluster started with `history` keeps that much of each run's
journal in its shard processes (replay of a run that lost entries raises
HistoryNotKept through the client); a durable cluster compacts its shards'
history files on `compact_history()`, one report per shard, and replays
the same afterwards and after a restart.
"""

from __future__ import annotations

import pytest

import inmem
from inmem.protocol import SLOT_COUNT, slot_of

pytestmark = [pytest.mark.slow]


def test_an_inmemory_cluster_keeps_the_history_its_config_says(make_cluster):
    cluster = make_cluster(shards=2, durability="inmemory", history=10)
    with cluster.connect() as db:
        run = db.begin_run(run_id="long")
        short = db.begin_run(run_id="short")
        db.kv.put(short, "k", 1)
        for i in range(300):
            db.kv.put(run, f"k{i % 5}", i)
        with pytest.raises(inmem.HistoryNotKept) as err:
            db.replay_run(run)
        assert err.value.run_id == "long"
        assert db.replay_run(short).kv == {"k": 1}
        shards = db.info()["shards"]
        assert sum(s["history"]["dropped"] for s in shards) > 0
        assert {s["history"]["limit"] for s in shards} == {10}
        assert db.compact_history() == []


def test_a_durable_cluster_compacts_on_request_and_replays_the_same(make_cluster, tmp_path):
    data = tmp_path / "data"
    opts = dict(shards=2, durability="buffered", segment_bytes_max=4096,
                history_compact_dead_fraction=1.0)
    cluster = make_cluster(data_dir=data, **opts)
    with cluster.connect() as db:
        owners = [None] * SLOT_COUNT
        for start, end, shard in db._backend.cluster("slotmap")["ranges"]:
            owners[start:end + 1] = [shard] * (end - start + 1)
        # Runs of one shard, so that their records share its WAL segments.
        ids = [f"r{i}" for i in range(1000) if owners[slot_of(f"r{i}")] == 0][:5]
        keep = db.begin_run(run_id=ids[0])
        for r in range(4):
            gone = db.begin_run(run_id=ids[1 + r])
            for i in range(60):
                db.kv.put(keep, f"k{i % 9}", {"r": r, "i": i})
                db.kv.put(gone, f"g{i % 4}", "x" * 40)
        n = db.replay_run(keep).position
        before = [db.replay_run(keep, at=k) for k in range(0, n + 1, 5)]
        db.snapshot()
        db.snapshot()
        for r in range(4):
            db.runs.delete(ids[1 + r])
        reports = db.compact_history()
        assert [r["shard"] for r in reports] == [0, 1]
        assert reports[0]["files"] >= 1 and reports[1]["files"] == 0, reports
        assert all(r["bytes_after"] <= r["bytes_before"] for r in reports), reports
        assert [db.replay_run(keep, at=k) for k in range(0, n + 1, 5)] == before
    cluster.stop()
    again = make_cluster(data_dir=data, **opts)
    with again.connect() as db:
        assert [db.replay_run(keep, at=k) for k in range(0, n + 1, 5)] == before
