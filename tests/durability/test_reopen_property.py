"""Property: whatever a durable store answers before a close, it answers the same after reopening.

Random sequences over every primitive (with transactions, deletes and refused
writes mixed in) are applied to a buffered or strict store; before closing we
record every run's state and its replay at every journal position, then
reopen — from the WAL alone, or from a snapshot plus the WAL — and ask again.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmem

KEYS = st.sampled_from(["a", "b", "c/1", "c/2"])
VALUES = st.integers(-3, 3) | st.text(max_size=4) | st.lists(st.integers(0, 2), max_size=2)

OPS = st.one_of(
    st.tuples(st.just("kv.put"), KEYS, VALUES),
    st.tuples(st.just("kv.delete"), KEYS),
    st.tuples(st.just("events.append"), st.sampled_from(["step", "tool"]), VALUES),
    st.tuples(st.just("state.set"), KEYS, VALUES),
    st.tuples(st.just("json.put"), KEYS, st.dictionaries(st.sampled_from("xy"), VALUES, max_size=2)),
    st.tuples(st.just("traces.record"), VALUES),
    st.tuples(st.just("tx"), KEYS, VALUES, KEYS),
    st.tuples(st.just("refused"), KEYS),
    st.tuples(st.just("snapshot")),
)


def _apply(db, run, op) -> None:
    name = op[0]
    if name == "kv.put":
        db.kv.put(run, op[1], op[2])
    elif name == "kv.delete":
        db.kv.delete(run, op[1])
    elif name == "events.append":
        db.events.append(run, op[1], {"v": op[2]})
    elif name == "state.set":
        db.state.set(run, op[1], op[2])
    elif name == "json.put":
        db.json.put(run, op[1], op[2])
    elif name == "traces.record":
        db.traces.record(run, "thought", {"v": op[1]})
    elif name == "tx":
        with db.transaction(run) as tx:
            tx.kv.put(op[1], op[2])
            tx.kv.put(op[3] + "/tx", tx.kv.get(op[1]))
    elif name == "refused":
        with pytest.raises(inmem.InvalidValue):
            db.kv.put(run, op[1], 1, ttl=float("inf"))
    elif name == "snapshot":
        db.snapshot()


def _observe(db, runs) -> dict:
    seen = {}
    for run in runs:
        length = db.replay_run(run).position
        seen[run] = {
            "status": db.run_status(run),
            "kv": db.kv.items(run),
            "events": db.events.range(run, 0, 1_000),
            "replays": [db.replay_run(run, at=k) for k in range(length + 1)],
        }
    return seen


@pytest.mark.parametrize("mode", ["buffered", "strict"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, 1), OPS), max_size=30), end_first=st.booleans())
def test_reopen_answers_the_same(mode, ops, end_first):
    path = tempfile.mkdtemp(prefix="inmem-reopen-")
    try:
        db = inmem.open(path, durability=mode, snapshot_on_close=False)
        runs = [db.begin_run(run_id="r0"), db.begin_run(run_id="r1")]
        for lane, op in ops:
            _apply(db, runs[lane], op)
        if end_first:
            db.end_run(runs[0])
        before = _observe(db, runs)
        db.close()
        with inmem.open(path, durability=mode, snapshot_on_close=False) as db:
            after = _observe(db, runs)
        # A run left active reads as orphaned after a reopen; nothing else may change.
        for run in runs:
            if before[run]["status"] == "active":
                assert after[run]["status"] == "orphaned"
                after[run]["status"] = "active"
        assert after == before
    finally:
        shutil.rmtree(path, ignore_errors=True)
