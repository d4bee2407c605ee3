"""Every section of the API through the client, against one real 2-shard cluster.

The full API suite (tests/api) runs against a cluster too; these tests cover
what only a cluster has: results and errors crossing processes, runs spread
over shards, fan-out merges, pipelines split per shard, and many threads on
one client.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

import inmem
from inmem.types import Event, RecoveryResult, RunInfo, SnapshotInfo, State, Trace, TraceTree

from .conftest import runs_on_each_shard, shard_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = inmem.Cluster(data_dir=tmp_path_factory.mktemp("smoke") / "data", shards=2,
                      durability="buffered", ready_timeout=45)
    c.start()
    pid = c.proc.pid
    try:
        yield c
    finally:
        try:
            c.stop(timeout=20)
        finally:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def db(cluster):
    d = cluster.connect()
    yield d
    d.close()


@pytest.fixture
def run(db):
    return db.begin_run(name="smoke")


def test_kv(db, run):
    assert db.kv.put(run, "a", {"x": [1, 2.5, None, True, b"\x00"]}) == 1
    assert db.kv.put(run, "a", "two") == 2
    v = db.kv.get_versioned(run, "a")
    assert isinstance(v, inmem.Versioned) and (v.value, v.version) == ("two", 2)
    assert db.kv.get(run, "missing", default=7) == 7
    assert db.kv.exists(run, "a") and not db.kv.exists(run, "b")
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "a", 1, "x")
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert db.kv.cas(run, "a", 2, "three") == 3
    db.kv.put(run, "b", 2, ttl=60)
    assert db.kv.get_many(run, ["a", "nope", "b"]) == ["three", None, 2]
    assert db.kv.keys(run) == ["a", "b"]
    assert db.kv.items(run, prefix="a") == [("a", "three")]
    assert db.kv.delete(run, "a") is True and db.kv.delete(run, "a") is False


def test_events(db, run):
    evs = [db.events.append(run, "step", {"i": i, "z": {"b": 1, "a": 2}}) for i in range(5)]
    assert all(isinstance(e, Event) for e in evs)
    assert [e.sequence for e in evs] == list(range(5))
    assert evs[1].prev_hash == evs[0].hash and evs[0].prev_hash == bytes(32)
    assert db.events.read(run, 3) == evs[3]
    assert db.events.range(run, 1, 3) == evs[1:3]
    assert db.events.head(run) == evs[-1]
    assert db.events.count(run) == 5
    assert db.events.by_type(run, "step") == evs
    chain = db.events.verify_chain(run)
    assert isinstance(chain, inmem.ChainCheck) and chain.valid and chain.length == 5


def test_state(db, run):
    assert db.state.init(run, "c", 0) == 1
    with pytest.raises(inmem.StateExists):
        db.state.init(run, "c", 0)
    s = db.state.read(run, "c")
    assert isinstance(s, State) and (s.value, s.version) == (0, 1)
    assert db.state.cas(run, "c", 1, 5) == 2
    result, version = db.state.transition(run, "c", lambda st: (st.value + 1, "did"))
    assert (result, version) == ("did", 3)
    assert db.state.transition_or_init(run, "new", 10, lambda st: (st.value * 2, st.value)) == (10, 1)
    assert db.state.read(run, "new").value == 20
    with pytest.raises(inmem.StateNotFound):
        db.state.transition(run, "absent", lambda st: (1, 1))
    assert db.state.delete(run, "c") is True and db.state.read(run, "c") is None


def test_traces(db, run):
    root = db.traces.record(run, "thought", {"t": "plan"}, tags=["p"])
    child = db.traces.record(run, "tool_call", {"tool": "x"}, parent_id=root, metadata={"m": 1})
    got = db.traces.get(run, child)
    assert isinstance(got, Trace) and got.parent_id == root and got.metadata == {"m": 1}
    assert [t.id for t in db.traces.roots(run)] == [root]
    assert [t.id for t in db.traces.by_tag(run, "p")] == [root]
    assert [t.id for t in db.traces.by_type(run, "tool_call")] == [child]
    tree = db.traces.tree(run, root)
    assert isinstance(tree, TraceTree) and isinstance(tree.children[0], TraceTree)
    assert tree.children[0].trace.id == child
    with pytest.raises(inmem.TraceNotFound):
        db.traces.record(run, "thought", {}, parent_id="nope")


def test_json(db, run):
    assert db.json.put(run, "doc", {"a": {"b": 1}, "items": []}) == 1
    db.json.set(run, "doc", "$.a.c", "x")
    assert db.json.array_push(run, "doc", "$.items", 1) == 1
    assert db.json.array_push(run, "doc", "$.items", 2) == 2
    assert db.json.array_pop(run, "doc", "$.items") == 2
    assert db.json.get(run, "doc") == {"a": {"b": 1, "c": "x"}, "items": [1]}
    assert db.json.get(run, "doc", "$.a.b") == 1
    assert db.json.delete(run, "doc", "$.a.b") is True
    with pytest.raises(inmem.InvalidPath):
        db.json.get(run, "doc", "a.b")


def test_runs_across_shards(db):
    ids = runs_on_each_shard(db, 2, per_shard=2, prefix="lifecycle")
    begun = [db.begin_run(name="r", run_id=i, tags=["t"]) for s in (0, 1) for i in ids[s]]
    listed = [r.run_id for r in db.runs.list(tag="t")]
    infos = [db.runs.get(i) for i in begun]
    assert all(isinstance(i, RunInfo) for i in infos)
    assert listed == [i.run_id for i in sorted(infos, key=lambda r: (r.created_at, r.run_id))]
    assert set(listed) == set(begun)
    db.end_run(begun[0])
    db.abort_run(begun[1], "boom")
    db.runs.pause(begun[2])
    assert db.run_status(begun[0]) == "completed"
    assert db.runs.get(begun[1]).error == "boom"
    assert [r.run_id for r in db.runs.list(status="paused", tag="t")] == [begun[2]]
    with pytest.raises(inmem.InvalidStatusTransition):
        db.runs.resume(begun[0])
    with pytest.raises(inmem.RunExists):
        db.begin_run(run_id=begun[3])
    assert db.runs.delete(begun[3]) is True and db.run_status(begun[3]) == "not_found"
    assert db.orphaned_runs() == []


def test_transactions(db, run):
    with db.transaction(run) as tx:
        n = tx.kv.get("n", 0)
        tx.kv.put("n", n + 1)
        tx.events.append("counted", {"n": n + 1})
    assert tx.results[0] == 1 and isinstance(tx.results[1], Event)
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            tx.kv.get("n")
            db.kv.put(run, "n", 100)  # someone else writes what the transaction read
            tx.kv.put("n", 2)
    assert db.kv.get(run, "n") == 100
    assert db.run_transaction(run, lambda tx: tx.kv.put("m", 1) or "ok") == "ok"


def test_pipeline_spans_shards_and_keeps_order(db):
    ids = runs_on_each_shard(db, 2, per_shard=1, prefix="pipe")
    a, b = ids[0][0], ids[1][0]
    with db.pipeline() as p:
        p.begin_run(run_id=a)
        p.begin_run(run_id=b)
        for i in range(300):
            p.kv.put(a if i % 2 else b, f"k{i}", i)
        p.kv.get(a, "k1")
        p.kv.cas(b, "k0", 99, "x")          # fails in place
        p.runs.list()                       # a fan-out inside a pipeline
        p.events.append(a, "e", {})
        results = p.execute(raise_on_error=False)
    assert results[:2] == [a, b]
    assert results[2:302] == [1] * 300
    assert results[302] == 1
    assert isinstance(results[303], inmem.VersionMismatch)
    assert {r.run_id for r in results[304]} >= {a, b}
    assert isinstance(results[305], Event)
    assert len(db.kv.keys(a)) == 150 and len(db.kv.keys(b)) == 150


def test_runs_spread_over_shards(db, cluster):
    runs = [db.begin_run(name="spread") for _ in range(64)]
    expected = [0, 0]
    for r in runs:
        expected[shard_of(db, r)] += 1
    assert min(expected) > 0, "64 random runs all on one shard"
    by_shard = {s["shard"]: s for s in db.info()["shards"]}
    before = cluster.connect()
    # Every run is found on the shard the slot map names and nowhere else.
    for r in runs:
        assert before.runs.get(r) is not None
    before.close()
    assert by_shard[0]["runs"] >= expected[0] and by_shard[1]["runs"] >= expected[1]


def test_operations(db, run, cluster):
    db.kv.put(run, "k", 1)
    info = db.info()
    assert info["ready"] is True and len(info["shards"]) == 2
    pids = cluster.pids()
    for i, s in enumerate(info["shards"]):
        assert s["shard"] == i and s["state"] == "ready" and s["durability"] == "buffered"
        assert s["pid"] == pids["shards"][i] and s["memory_bytes"] > 0
        assert isinstance(s["keys"], int) and isinstance(s["wal_bytes"], int)
    snaps = db.snapshot()
    assert [s.shard for s in snaps] == [0, 1]
    assert all(isinstance(s, SnapshotInfo) and os.path.isabs(s.path) and os.path.exists(s.path)
               for s in snaps)
    report = db.recovery_report()
    assert [r.shard for r in report] == [0, 1]
    assert all(isinstance(r, RecoveryResult) for r in report)


def test_errors_match_the_embedded_engine(db):
    embedded = inmem.open(None)
    calls = [
        lambda d: d.kv.get("no-such-run", "k"),
        lambda d: d.kv.put(d._run, "", 1),
        lambda d: d.kv.put(d._run, "k", {1: 2}),
        lambda d: d.kv.put(d._run, "k", (1, 2)),
        lambda d: d.kv.put(d._run, ("tuple",), 1),
        lambda d: d.kv.put(d._run, "k", 2**64),
        lambda d: d.json.get(d._run, "k", "$["),
        lambda d: d.runs.set_status(d._run, "archived") and d.runs.set_status(d._run, "active"),
        lambda d: d.traces.record(d._run, "nonsense", {}),
        lambda d: d.events.range(d._run, "a", 2),
    ]
    try:
        for d in (db, embedded):
            d._run = d.begin_run(run_id="errors-run")
        for call in calls:
            outcomes = []
            for d in (db, embedded):
                try:
                    call(d)
                    outcomes.append(None)
                except inmem.InmemError as exc:
                    outcomes.append((type(exc), str(exc)))
            assert outcomes[0] == outcomes[1]
            assert outcomes[0] is not None
    finally:
        embedded.close()


def test_many_threads_share_one_database(db):
    errors = []
    runs = [db.begin_run(name=f"thread-{i}") for i in range(8)]

    def work(run):
        try:
            for i in range(100):
                assert db.kv.put(run, "k", i) == i + 1
                assert db.kv.get(run, "k") == i
            with db.pipeline() as p:
                for i in range(50):
                    p.events.append(run, "e", i)
                assert [e.sequence for e in p.execute()] == list(range(50))
        except Exception as exc:  # reported below, with the thread's run
            errors.append((run, exc))

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert all(db.events.count(r) == 50 for r in runs)


def test_a_closed_database_refuses_calls(cluster):
    d = cluster.connect()
    d.close()
    d.close()  # twice is fine
    with pytest.raises(inmem.InmemError, match="closed"):
        d.kv.get("r", "k")


def test_direct_mode_skips_the_coordinator_with_the_same_results(cluster):
    db = cluster.connect(direct=True)
    try:
        assert "direct" in repr(db)
        ids = runs_on_each_shard(db, 2, per_shard=1, prefix="direct")
        a, b = ids[0][0], ids[1][0]
        db.begin_run(run_id=a)
        db.begin_run(run_id=b)
        assert db.kv.put(a, "k", {"v": 1}) == 1
        assert db.kv.get(a, "k") == {"v": 1}
        with pytest.raises(inmem.RunNotFound):
            db.kv.get("direct-missing", "k")
        with db.pipeline() as p:
            for i in range(600):
                p.kv.put(a if i % 3 else b, f"p{i}", i)
            p.kv.cas(b, "p0", 5, "x")
            results = p.execute(raise_on_error=False)
        assert results[:600] == [1] * 600 and isinstance(results[600], inmem.VersionMismatch)
        with db.transaction(b) as tx:
            tx.kv.put("t", tx.kv.get("p0") + 1)
        assert db.kv.get(b, "t") == 1
        # Fan-outs and cluster requests still go through the coordinator.
        assert {a, b} <= {r.run_id for r in db.runs.list()}
        assert db.info()["ready"] is True
        # The requests did not pass through the coordinator: its counter of
        # forwarded-but-unanswered work is untouched, and a plain client sees the data.
        plain = cluster.connect()
        assert plain.kv.get(a, "p1") == 1
        plain.close()
    finally:
        db.close()
