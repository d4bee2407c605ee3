"""A pipeline's puts to one run, applied as a series: the same answers as one put at a time.

`Engine.execute_batch` (embedded pipelines) and the shard worker's BATCH
handler hand a series of `kv.put`s to one run to `kv_put_series`, which checks
each put as `kv_put` does and logs the accepted ones as few WAL groups. These
tests hold it to the one-at-a-time path: results (versions, and errors by
class and message), tables, journals and the logged effects, for random
sequences that mix good and bad puts with other runs and operations.
"""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InmemError, InvalidValue, VersionMismatch
from inmem.shard import kv as kv_module
from inmem.shard.durable import DurableStore
from inmem.shard.effects import decode_batch, record_payloads
from inmem.shard.engine import Engine, put_series_end

NOW = 1_700_000_000_000_000


def _engine() -> Engine:
    e = Engine(clock=lambda: NOW, max_value_bytes=64, log=True)
    for run in ("r", "s", "ended"):
        e.execute("run.begin", [None, run, None, [], None])
    e.execute("run.end", ["ended"])
    e.take_log()
    return e


def _answer(x):
    if isinstance(x, InmemError):
        return (type(x).__name__, str(x))
    return x


def _logged(engine: Engine) -> list:
    """Every effect the engine queued for the WAL, in order, groups flattened."""
    out = []
    for payload, _n in record_payloads(engine.log):
        _count, batches = decode_batch(payload)
        for _run, effs in batches:
            out.extend(tuple(e) for e in effs)
    return out


def _state(engine: Engine) -> dict:
    return {rid: (dict(r.kv), list(r.journal.items)) for rid, r in engine.runs.items()}


keys = st.one_of(st.sampled_from(["a", "b", "c", "é", "", "x" * 300]), st.just(5))
values = st.one_of(st.binary(max_size=80), st.integers(), st.just({"k": [1, 2]}),
                   st.just({1, 2}), st.text(max_size=70))
ttls = st.sampled_from([None, None, None, 5, -1, "soon"])
runs = st.sampled_from(["r", "r", "r", "s", "ended", "missing", 7])


@st.composite
def calls(draw):
    shape = draw(st.sampled_from(["put", "put", "put", "put3", "short", "long", "get"]))
    run, key = draw(runs), draw(keys)
    if shape == "get":
        return ("kv.get", [run, key])
    if shape == "put3":
        return ("kv.put", [run, key, draw(values)])
    if shape == "short":
        return ("kv.put", [run, key])
    if shape == "long":
        return ("kv.put", [run, key, draw(values), None, "extra"])
    return ("kv.put", [run, key, draw(values), draw(ttls)])


@settings(max_examples=300, deadline=None)
@given(st.lists(calls(), max_size=40))
def test_a_batch_answers_and_logs_as_one_put_at_a_time(ops):
    series, single = _engine(), _engine()
    got = series.execute_batch([(op, list(args)) for op, args in ops])
    want = []
    for op, args in ops:
        try:
            want.append(single.execute(op, list(args)))
        except InmemError as exc:
            want.append(exc)
    assert [_answer(x) for x in got] == [_answer(x) for x in want]
    assert _state(series) == _state(single)
    assert _logged(series) == _logged(single)
    assert series.log_writes == sum(g[1] for g in series.log)


def test_a_series_is_found_only_among_puts_to_one_run():
    ops = [("kv.put", ["r", "a", 1]), ("kv.put", ["r", "b", 2]), ("kv.put", ["s", "c", 3]),
           ("kv.get", ["s", "c"]), InvalidValue("in place"), ("kv.put", ["r", "d", 4])]
    assert put_series_end(ops, 0) == 2
    assert put_series_end(ops, 2) == 3
    assert put_series_end(ops, 3) == 4
    assert put_series_end(ops, 4) == 5
    assert put_series_end(ops, 5) == 6
    assert put_series_end([("kv.put", [["not", "a", "run"], "k", 1])] * 3, 0) == 1


def test_a_series_of_puts_is_logged_as_one_group():
    e = _engine()
    assert e.execute_batch([("kv.put", ["r", f"k{i}", i]) for i in range(50)]) == [1] * 50
    assert len(e.log) == 1 and e.log[0][1] == 50 and e.log_writes == 50


def test_a_large_series_is_split_into_groups_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(kv_module, "_SERIES_GROUP_BYTES", 200)
    series, single = _engine(), _engine()
    ops = [("kv.put", ["r", f"k{i % 7}", bytes(40)]) for i in range(30)]
    got = series.execute_batch(ops)
    want = [single.execute(op, list(args)) for op, args in ops]
    assert got == want
    assert len(series.log) > 1
    assert _state(series) == _state(single) and _logged(series) == _logged(single)


def test_a_group_the_log_refuses_leaves_the_store_unchanged(monkeypatch):
    e = _engine()
    e.execute("kv.put", ["r", "a", 1])
    before = _state(e)
    logged = list(e.log)

    def refuse(run_id, effs, journal=None):
        raise InvalidValue("this write cannot be logged: refused for the test")

    monkeypatch.setattr(e, "_log", refuse)
    got = e.execute_batch([("kv.put", ["r", "a", 2]), ("kv.put", ["r", "b", 3])])
    assert [_answer(x) for x in got] == [
        ("InvalidValue", "this write cannot be logged: refused for the test")] * 2
    assert _state(e) == before and e.log == logged


def test_max_pending_writes_counts_the_writes_of_a_series():
    with tempfile.TemporaryDirectory() as tmp:
        store, engine = DurableStore.open(tmp, durability="buffered", flusher=False,
                                          max_pending_writes=10, snapshot_on_close=False)
        try:
            engine.execute("run.begin", [None, "r", None, [], None])
            with store.lock:
                store.commit_locked()
                engine.execute_batch([("kv.put", ["r", f"a{i}", i]) for i in range(5)])
                store.commit_locked()
                assert len(engine.log) >= 1, "five writes stay in memory under a limit of ten"
                engine.execute_batch([("kv.put", ["r", f"b{i}", i]) for i in range(5)])
                store.commit_locked()
                assert engine.log == [] and engine.log_writes == 0
                assert store.writer.pending_records >= 1
        finally:
            store.close()


@pytest.mark.parametrize("durability", ["buffered", "strict"])
def test_a_series_survives_reopening(tmp_path, durability):
    store, engine = DurableStore.open(tmp_path, durability=durability, flusher=False,
                                      snapshot_on_close=False)
    engine.execute("run.begin", [None, "r", None, [], None])
    with store.lock:
        got = engine.execute_batch([("kv.put", ["r", f"k{i % 5}", i]) for i in range(20)]
                                   + [("kv.put", ["r", 5, 1])])
        store.wait_durable(store.commit_locked())
    assert got[:20] == [1 + i // 5 for i in range(20)]
    assert isinstance(got[20], InmemError)
    want = dict(engine.runs["r"].kv)
    store.close()
    store, engine = DurableStore.open(tmp_path, durability=durability, flusher=False,
                                      snapshot_on_close=False)
    try:
        assert dict(engine.runs["r"].kv) == want
    finally:
        store.close()


@pytest.mark.parametrize("durability", ["buffered", "strict"])
def test_history_of_a_series_replays_the_same_at_every_step_after_reopening(tmp_path,
                                                                             durability):
    import inmem
    path = tmp_path / "db"
    with inmem.open(path, durability, snapshot_on_close=False) as db:
        run = db.begin_run(run_id="agent")
        p = db.pipeline()
        for i in range(30):
            p.kv.put(run, f"k{i % 4}", i)
        p.kv.put(run, "", "refused in place")
        for i in range(5):
            p.kv.put(run, f"tail{i}", {"i": i})
        got = p.execute(raise_on_error=False)
        assert got[:4] == [1, 1, 1, 1] and isinstance(got[30], inmem.InvalidKey)
        before = [db.replay_run(run, at=k) for k in range(0, 40)]
    with inmem.open(path, durability, snapshot_on_close=False) as db:
        after = [db.replay_run(run, at=k) for k in range(0, 40)]
        assert db.kv.get(run, "k3") == 27 and db.kv.get(run, "tail4") == {"i": 4}
    assert [v.kv for v in after] == [v.kv for v in before]
    assert before[-1].kv["k1"] == 29 and len(before[-1].kv) == 9


@pytest.mark.parametrize("log", [False, True])
def test_a_ttl_put_that_reclaims_in_a_series_raises_the_floor_for_the_puts_after_it(log):
    """A pipeline of puts runs as one series; its ttl put goes the general way, which
    reclaims due dead entries inline and raises the run's floor. The series read the floor
    once, so a key reclaimed there and written again later in the pipeline took its first
    life's version again (and a cas holding that version won)."""
    now = [1_700_000_000_000_000]
    e = Engine(clock=lambda: now[0], dead_key_retention_s=0, log=log)
    e.begin_run(run_id="r")
    assert e.kv_put("r", "c", "first life") == 1
    assert e.kv_delete("r", "c") is True  # the tombstone: version 2
    now[0] += 3_000_000  # its death is due
    got = e.kv_put_series("r", [["r", "a", 1], ["r", "t", 1, 100], ["r", "c", "second life"]])
    assert e.kv_floors.get("r") == 2
    assert got == [1, 1, 3]
    assert e.kv_get_versioned("r", "c").version == 3
    with pytest.raises(VersionMismatch):
        e.kv_cas("r", "c", 1, "a stale writer")
