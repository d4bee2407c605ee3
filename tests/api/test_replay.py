"""Replay: `replay_run(run, at)` against the live state of the run.

The property test drives one run through a random mix of writes (KV with
TTLs and CAS, JSON edits, state cells, events, traces, transactions, clock
moves), reads the live state of the run through the ordinary API after each
write that moved the journal, and then asks for a replay at every recorded
position: each must equal what the run looked like at that moment. The other
tests pin the rest of the contract: a view replays to itself, replays are
repeatable and write nothing, `at` past the end is the end, unknown runs are
refused, and a durable store replays the same after a snapshot and a reopen.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmem

from .support import same

KV_KEYS = ["a", "b", "c/1"]
JSON_KEYS = ["d1", "d2"]
STATE_NAMES = ["s1", "s2"]
TRACE_TYPES = ["tool_call", "decision", "query", "thought", "error", "custom"]
JSON_PATHS = ["$.n", "$.a.b", "$.items", "$.items[0]", "$.items[-1]", '$["x.y"]']

scalars = (st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2, allow_nan=False)
           | st.text(max_size=4) | st.binary(max_size=3))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
docs = st.fixed_dictionaries({"n": st.integers(0, 9), "items": st.lists(scalars, max_size=3)},
                             optional={"a": st.fixed_dictionaries({"b": scalars})})
payloads = st.dictionaries(st.sampled_from(["x", "y", "msg"]), values, max_size=3)

kv_key = st.sampled_from(KV_KEYS)
json_key = st.sampled_from(JSON_KEYS)
json_path = st.sampled_from(JSON_PATHS)
state_name = st.sampled_from(STATE_NAMES)

# One write: a tuple whose first item names the operation.
kv_puts = st.tuples(st.just("kv_put"), kv_key, values, st.sampled_from([None, 0.5, 2.0]))
single_writes = st.one_of(
    kv_puts,
    st.tuples(st.just("kv_delete"), kv_key),
    st.tuples(st.just("kv_cas"), kv_key, st.booleans(), values),
    st.tuples(st.just("json_put"), json_key, docs),
    st.tuples(st.just("json_set"), json_key, json_path, values),
    st.tuples(st.just("json_delete"), json_key, st.sampled_from(["$", *JSON_PATHS])),
    st.tuples(st.just("json_push"), json_key, st.just("$.items"), scalars),
    st.tuples(st.just("json_pop"), json_key, st.just("$.items")),
    st.tuples(st.just("state_set"), state_name, values),
    st.tuples(st.just("state_delete"), state_name),
    st.tuples(st.just("event"), st.sampled_from(["step", "tool", "note"]), payloads),
    st.tuples(st.just("trace"), st.sampled_from(TRACE_TYPES), payloads, st.booleans(),
              st.lists(st.sampled_from(["t1", "t2"]), max_size=2, unique=True)),
)
#: writes a transaction may hold (all of them answer inside `tx`)
tx_writes = st.one_of(
    st.tuples(st.just("kv_put"), kv_key, values, st.just(None)),
    st.tuples(st.just("kv_delete"), kv_key),
    st.tuples(st.just("json_put"), json_key, docs),
    st.tuples(st.just("state_set"), state_name, values),
    st.tuples(st.just("event"), st.sampled_from(["step", "tool"]), payloads),
    st.tuples(st.just("trace"), st.sampled_from(TRACE_TYPES), payloads, st.booleans(),
              st.just([])),
)
# KV puts are drawn on their own as well, so that TTLs meet clock moves often.
steps = st.one_of(
    single_writes,
    kv_puts,
    st.tuples(st.just("tx"), st.lists(tx_writes, min_size=1, max_size=4)),
    st.tuples(st.just("tick"), st.sampled_from([0.25, 1.0, 3.0])),
)


class Driver:
    """Applies generated writes to one run and reads the run back through the API."""

    def __init__(self, db, run):
        self.db = db
        self.run = run
        self.trace_ids: list[str] = []

    def apply(self, target, step) -> None:
        """Apply `step` through `target` (the database's namespaces or a transaction)."""
        op = step[0]
        run = () if target is not self.db else (self.run,)
        if op == "kv_put":
            _, key, value, ttl = step
            if ttl is None:
                target.kv.put(*run, key, value)
            else:
                target.kv.put(*run, key, value, ttl=ttl)
        elif op == "kv_delete":
            target.kv.delete(*run, step[1])
        elif op == "kv_cas":
            _, key, right, value = step
            got = self.db.kv.get_versioned(self.run, key)
            current = 0 if got is None else got.version
            target.kv.cas(*run, key, current if right else current + 7, value)
        elif op == "json_put":
            target.json.put(*run, step[1], step[2])
        elif op == "json_set":
            target.json.set(*run, step[1], step[2], step[3])
        elif op == "json_delete":
            target.json.delete(*run, step[1], step[2])
        elif op == "json_push":
            target.json.array_push(*run, step[1], step[2], step[3])
        elif op == "json_pop":
            target.json.array_pop(*run, step[1], step[2])
        elif op == "state_set":
            target.state.set(*run, step[1], step[2])
        elif op == "state_delete":
            target.state.delete(*run, step[1])
        elif op == "event":
            target.events.append(*run, step[1], step[2])
        elif op == "trace":
            _, ttype, data, child, tags = step
            parent = self.trace_ids[-1] if child and self.trace_ids else None
            tid = target.traces.record(*run, ttype, data, parent_id=parent, tags=tuple(tags))
            if target is self.db:
                self.trace_ids.append(tid)
        else:
            raise ValueError(op)

    def apply_transaction(self, writes) -> None:
        with self.db.transaction(self.run) as tx:
            for w in writes:
                self.apply(tx, w)
        for w, result in zip(writes, tx.results):
            if w[0] == "trace":
                self.trace_ids.append(result)

    def live(self) -> dict:
        """The run as the ordinary read API shows it now, in the shape of a RunView."""
        db, run = self.db, self.run
        docs = {}
        for key in JSON_KEYS:
            doc = db.json.get(run, key)
            if doc is not None:
                docs[key] = doc
        cells = {}
        for name in STATE_NAMES:
            cell = db.state.read(run, name)
            if cell is not None:
                cells[name] = cell.value
        return {
            "kv": dict(db.kv.items(run)),
            "json": docs,
            "state": cells,
            "events": [list(e) for e in db.events.range(run, 0, db.events.count(run))],
            "traces": [list(db.traces.get(run, tid)) for tid in self.trace_ids],
        }


def as_plain(view) -> dict:
    return {"kv": view.kv, "json": view.json, "state": view.state,
            "events": [list(e) for e in view.events],
            "traces": [list(t) for t in view.traces]}


def footprint(db, run, keys=KV_KEYS) -> tuple:
    """What a replay must leave untouched: counts, versions and the journal length."""
    versions = tuple(None if (v := db.kv.get_versioned(run, k)) is None else v.version
                     for k in keys)
    cells = tuple(None if (c := db.state.read(run, n)) is None else c.version
                  for n in STATE_NAMES)
    info = db.info()
    return (versions, cells, db.events.count(run), db.runs.get(run).updated_at,
            [(s["keys"], s["runs"]) for s in info["shards"]])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          max_examples=60)
@given(script=st.lists(steps, min_size=1, max_size=25))
def test_replay_equals_live_state_at_every_position(backend_factory, clock_factory, script):
    clock = clock_factory()
    db = backend_factory(clock=clock)
    try:
        run = db.begin_run(name="replayed")
        driver = Driver(db, run)
        start = db.replay_run(run)
        recorded = {start.position: driver.live()}
        assert as_plain(start) == {"kv": {}, "json": {}, "state": {}, "events": [], "traces": []}
        position = start.position
        for step in script:
            if step[0] == "tick":
                clock.advance(step[1])
                continue
            try:
                if step[0] == "tx":
                    driver.apply_transaction(step[1])
                else:
                    driver.apply(db, step)
            except (inmem.InvalidPath, inmem.VersionMismatch):
                # A refused write commits nothing: the journal must not move.
                assert db.replay_run(run).position == position
                continue
            now = db.replay_run(run).position
            assert now >= position
            if now != position:
                # A write that moved the journal: the state is taken at the
                # very clock tick the write carries, as the replay judges it.
                position = now
                recorded[position] = driver.live()

        for at, expected in recorded.items():
            view = db.replay_run(run, at=at)
            assert view.position == at
            got = as_plain(view)
            assert same(got, expected), (at, got, expected)

        before = footprint(db, run)
        end = db.replay_run(run)
        assert end.position == position
        assert same(as_plain(end), recorded[position])
        again = db.replay_run(run)
        assert again == end and same(as_plain(again), as_plain(end))
        assert db.replay_run(run, at=end.position) == end
        assert db.replay_run(run, at=end.position + 1000) == end
        assert footprint(db, run) == before
    finally:
        db.close()


# --- the rest of the contract, by example -----------------------------------


def _sample_writes(db, run) -> list:
    """A fixed mix of writes; returns the position after each one."""
    def in_transaction():
        with db.transaction(run) as tx:
            tx.kv.put("k2", 2)
            tx.events.append("step", {"i": 1})
            tx.state.set("cell", 2)

    def parent():
        return db.traces.record(run, "thought", {"why": "x"}, tags=("t",), metadata={"m": 1})

    writes = [
        lambda: db.kv.put(run, "k", "v1"),
        lambda: db.kv.put(run, "k", {"nested": [1, b"\x00", True]}),
        lambda: db.json.put(run, "doc", {"items": [1], "title": "t"}),
        lambda: db.json.array_push(run, "doc", "$.items", 2.5),
        lambda: db.state.init(run, "cell", 0),
        lambda: db.state.cas(run, "cell", 1, 1),
        lambda: db.events.append(run, "step", {"i": 0}),
        lambda: db.traces.record(run, "decision", {"pick": "a"}, parent_id=parent()),
        in_transaction,
        lambda: db.kv.delete(run, "k"),
        lambda: db.json.delete(run, "doc", "$.title"),
        lambda: db.state.delete(run, "cell"),
    ]
    positions = []
    for write in writes:
        write()
        positions.append(db.replay_run(run).position)
    return positions


def test_view_replays_to_itself_and_is_repeatable(db, run):
    positions = _sample_writes(db, run)
    assert positions == sorted(set(positions))
    for at in [0, 1, *positions]:
        view = db.replay_run(run, at=at)
        assert db.replay_run(run, at=view.position) == view
        assert db.replay_run(run, at=at) == view
    end = db.replay_run(run)
    assert end.position == positions[-1]
    assert end.kv == {"k2": 2}
    assert end.json == {"doc": {"items": [1, 2.5]}}
    assert end.state == {}
    assert [(e.sequence, e.event_type, e.payload) for e in end.events] == \
        [(0, "step", {"i": 0}), (1, "step", {"i": 1})]
    assert [(t.trace_type, t.data) for t in end.traces] == \
        [("thought", {"why": "x"}), ("decision", {"pick": "a"})]
    assert end.traces[1].parent_id == end.traces[0].id
    assert end.traces[0].tags == ["t"] and end.traces[0].metadata == {"m": 1}


def test_replay_at_zero_is_empty(db, run):
    db.kv.put(run, "k", 1)
    view = db.replay_run(run, at=0)
    assert view.position == 0
    assert (view.kv, view.json, view.state, view.events, view.traces) == ({}, {}, {}, [], [])


def test_replay_beyond_the_end_is_the_end(db, run):
    _sample_writes(db, run)
    end = db.replay_run(run)
    for at in (end.position, end.position + 1, end.position * 10 + 7):
        assert db.replay_run(run, at=at) == end


def test_a_negative_position_counts_from_the_end(db, run):
    # As a Python index: at=-1 is the run before its last entry.
    _sample_writes(db, run)
    n = db.replay_run(run).position
    assert db.replay_run(run, at=-1) == db.replay_run(run, at=n - 1)
    assert db.replay_run(run, at=-n).position == 0
    assert db.replay_run(run, at=-n - 5).position == 0  # before the start: the empty run


def test_replay_never_writes(db, run):
    _sample_writes(db, run)
    other = db.begin_run(name="other")
    db.kv.put(other, "x", 1)
    keys = db.kv.keys(run)
    before = (footprint(db, run, keys), footprint(db, other, ["x"]), db.kv.items(run),
              db.replay_run(run).position, db.replay_run(other).position)
    for at in (None, 0, 3, 100):
        db.replay_run(run, at=at)
    db.diff_runs(run, other)
    after = (footprint(db, run, keys), footprint(db, other, ["x"]), db.kv.items(run),
             db.replay_run(run).position, db.replay_run(other).position)
    assert after == before


def test_mutating_a_view_does_not_touch_the_store(db, run):
    db.kv.put(run, "k", {"a": [1]})
    db.json.put(run, "doc", {"a": [1]})
    view = db.replay_run(run)
    view.kv["k"]["a"].append(2)
    view.json["doc"]["a"].append(2)
    view.kv["new"] = 1
    assert db.kv.get(run, "k") == {"a": [1]}
    assert db.json.get(run, "doc") == {"a": [1]}
    assert db.kv.exists(run, "new") is False
    fresh = db.replay_run(run)
    assert fresh.kv == {"k": {"a": [1]}} and fresh.json == {"doc": {"a": [1]}}


def test_unknown_run_is_run_not_found(db, run):
    with pytest.raises(inmem.RunNotFound):
        db.replay_run("no-such-run")
    with pytest.raises(inmem.RunNotFound):
        db.replay_run("no-such-run", at=0)
    db.runs.delete(run)
    with pytest.raises(inmem.RunNotFound):
        db.replay_run(run)


@pytest.mark.parametrize("finish", ["end", "abort", "cancel", "archive"])
def test_replay_of_a_finished_run(db, run, finish):
    _sample_writes(db, run)
    before = db.replay_run(run)
    {"end": lambda: db.end_run(run), "abort": lambda: db.abort_run(run, "boom"),
     "cancel": lambda: db.runs.cancel(run), "archive": lambda: db.runs.archive(run)}[finish]()
    after = db.replay_run(run)
    assert after.position >= before.position
    assert (after.kv, after.json, after.state, after.events, after.traces) == \
        (before.kv, before.json, before.state, before.events, before.traces)
    assert db.replay_run(run, at=before.position) == before


def test_expired_key_is_absent_from_a_later_position(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "short", "s", ttl=1)
    db.kv.put(run, "long", "l", ttl=100)
    early = db.replay_run(run)
    assert early.kv == {"long": "l", "short": "s"}
    clock.advance(5)
    db.kv.put(run, "later", 1)
    late = db.replay_run(run)
    assert late.kv == {"later": 1, "long": "l"}
    assert late.kv == dict(db.kv.items(run))
    # Time travel back: the key was alive at that position.
    assert db.replay_run(run, at=early.position).kv == {"long": "l", "short": "s"}


# --- durable stores -----------------------------------------------------------


def test_replay_survives_snapshot_and_reopen(tmp_path):
    path = tmp_path / "db"
    with inmem.open(path, durability="strict") as db:
        run = db.begin_run(name="durable")
        other = db.begin_run(name="bystander")
        first = _sample_writes(db, run)
        db.kv.put(other, "x", 1)
        db.snapshot()
        db.events.append(run, "after-snapshot", {"n": 1})
        db.kv.put(run, "post", [1, "two", None])
        db.json.set(run, "doc", "$.items[0]", "changed")
        positions = [0, 1, *first, db.replay_run(run).position]
        views = {at: db.replay_run(run, at=at) for at in positions}
        end = db.replay_run(run)
    with inmem.open(path, durability="strict") as db:
        for at, view in views.items():
            again = db.replay_run(run, at=at)
            assert again == view
            assert same(as_plain(again), as_plain(view))
        assert db.replay_run(run) == end
        assert db.replay_run(other).kv == {"x": 1}
        db.kv.put(run, "resumed", True)
        grown = db.replay_run(run)
        assert grown.position == end.position + 1
        assert grown.kv == {**end.kv, "resumed": True}
    with inmem.open(path, durability="strict") as db:
        assert db.replay_run(run) == grown
        assert db.replay_run(run, at=end.position) == end


def test_replay_after_reopen_without_snapshot(tmp_path):
    path = tmp_path / "db"
    with inmem.open(path, durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run()
        positions = _sample_writes(db, run)
        views = [db.replay_run(run, at=at) for at in positions]
    with inmem.open(path, durability="strict", snapshot_on_close=False) as db:
        assert [db.replay_run(run, at=at) for at in positions] == views
