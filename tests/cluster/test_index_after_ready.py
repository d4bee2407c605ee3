"""A recovered cluster is ready before its shards' search indexes; searches say so until they are.

The shards' files are written in-process (faster than through a cluster),
then a cluster recovers them: it must answer reads at once, flag searches
partial while the shards rebuild their indexes in their idle turns, and
then answer exactly what one index over both shards' data answers.
"""

from __future__ import annotations

import pytest

import inmem
from polling import wait_for
from text_corpus import answers, assert_same, fill, matching, text_of

from .shared import cluster_data_dir


def _runs_per_shard(owners, per_shard: int) -> dict:
    from inmem.protocol import slot_of
    runs: dict = {0: [], 1: []}
    i = 0
    while min(len(v) for v in runs.values()) < per_shard:
        rid = f"idx-{i}"
        i += 1
        s = owners[slot_of(rid)]
        if len(runs[s]) < per_shard:
            runs[s].append(rid)
    return runs


@pytest.mark.timeout(180)
def test_cluster_shards_are_ready_before_their_index(make_cluster, tmp_path):
    from inmem.coordinator.slotmap import SlotMap
    data = tmp_path / "data"
    data.mkdir()
    slotmap = SlotMap.even(2)
    slotmap.save(str(data))
    runs = _runs_per_shard(slotmap.owners, 2)
    n = 30_000  # per shard: a rebuild long enough to be caught in the act
    reference = inmem.open(None)  # what one index over both shards answers
    texts = {}
    for s in (0, 1):
        with inmem.open(data / f"shard-{s}", durability="buffered",
                        snapshot_on_close=(s == 0)) as db:
            for run in runs[s]:
                db.begin_run(run_id=run)
                reference.begin_run(run_id=run)
            fill(db, runs[s], n)
            fill(reference, runs[s], n)
    texts = {f"k{i:06d}": text_of(i) for i in range(n)}
    before = answers(reference)
    reference.close()

    cluster = make_cluster(data_dir=data, durability="buffered")
    db = cluster.connect()
    report = db.recovery_report()
    assert [r.shard for r in report] == [0, 1]
    first = db.search("cedar grove", limit=20, budget_ms=0)
    assert first.index_complete is False
    assert matching(first, texts, "cedar grove")
    # (The shards may finish between that search and this call: info says per shard.)
    assert all(type(s["index_complete"]) is bool for s in db.info()["shards"])
    assert db.kv.get(runs[1][1], "k000001") == text_of(1)  # served while the index rebuilds
    wait_for(lambda: all(s["index_complete"] for s in db.info()["shards"]), 120,
             "both shards' index rebuild")
    assert_same(answers(db), before)
    db.close()


@pytest.mark.timeout(180)
def test_the_index_completes_while_clients_never_let_the_shard_idle(make_cluster, tmp_path):
    import threading

    data = cluster_data_dir(tmp_path, 1)
    runs = ["busy-0", "busy-1"]
    n = 12_000
    reference = inmem.open(None)
    with inmem.open(data / "shard-0", durability="buffered") as db:  # snapshot on close
        for run in runs:
            db.begin_run(run_id=run)
            reference.begin_run(run_id=run)
        fill(db, runs, n)
        fill(reference, runs, n)
    before = answers(reference)
    reference.close()

    cluster = make_cluster(data_dir=data, shards=1, durability="buffered")
    stop = threading.Event()
    served = [0] * 4
    failures: list = []

    def load(i):
        # Pipelines back to back from four clients: the shard always has one waiting.
        client = cluster.connect()
        try:
            keys = [f"k{j:06d}" for j in range(i, n, 97)][:200]
            while not stop.is_set():
                with client.pipeline() as p:
                    for k in keys:
                        p.kv.get(runs[0], k)
                    p.execute()
                served[i] += 1
        except Exception as exc:  # reported below; a thread must not die silently
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    db = cluster.connect()
    try:
        wait_for(lambda: all(served), 60, "the clients' first answers")
        wait_for(lambda: db.info()["shards"][0]["index_complete"], 120,
                 "the index rebuild under load")
        still_serving = list(served)
        wait_for(lambda: all(a > b for a, b in zip(served, still_serving)), 60,
                 "the clients after the rebuild")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures
    assert_same(answers(db), before)
    db.close()
