"""Diff: `diff_runs(a, b)` entry by entry, for every primitive.

`added` holds what only run b has, `removed` what only run a has, `modified`
what both have with different content, each as DiffEntry(primitive, key, a,
b) with None on the missing side. KV, JSON and state compare by key; events
by sequence on type and payload; traces by record-order position on type,
data, tags and metadata. Values compare by type as well: 1, True and 1.0 are
three different values.
"""

from __future__ import annotations

import pytest

import inmem

from .support import same


def entries(diff, primitive):
    """The diff restricted to one primitive, as three lists of (key, a, b)."""
    return tuple([(e.key, e.a, e.b) for e in part if e.primitive == primitive]
                 for part in (diff.added, diff.removed, diff.modified))


def assert_empty(diff):
    assert diff.added == [] and diff.removed == [] and diff.modified == []


@pytest.fixture
def pair(db):
    return db.begin_run(name="a"), db.begin_run(name="b")


def test_identical_runs_have_an_empty_diff(db, pair):
    a, b = pair
    for run in pair:
        db.kv.put(run, "k", {"x": [1, "y", None]})
        db.json.put(run, "doc", {"items": [1.5, True]})
        db.state.set(run, "cell", "ready")
        db.events.append(run, "step", {"i": 0})
        tid = db.traces.record(run, "thought", {"why": "because"}, tags=("t",), metadata={"m": 1})
        db.traces.record(run, "decision", {"pick": 1}, parent_id=tid)
    assert_empty(db.diff_runs(a, b))
    assert_empty(db.diff_runs(b, a))
    assert_empty(db.diff_runs(a, a))


def test_identical_runs_holding_nan_have_an_empty_diff(db, pair):
    # NaN is a legal float value; a run holding it is still identical to a
    # run that wrote the very same things.
    nan = float("nan")
    for run in pair:
        db.kv.put(run, "k", nan)
        db.kv.put(run, "nested", {"x": [1.0, nan]})
        db.json.put(run, "doc", {"v": nan})
        db.state.set(run, "cell", nan)
        db.events.append(run, "step", {"v": nan})
        db.traces.record(run, "thought", {"v": nan})
    assert_empty(db.diff_runs(*pair))


def test_empty_runs_have_an_empty_diff(db, pair):
    assert_empty(db.diff_runs(*pair))


def test_kv_added_removed_modified(db, pair):
    a, b = pair
    db.kv.put(a, "same", 1)
    db.kv.put(b, "same", 1)
    db.kv.put(a, "only_a", "gone")
    db.kv.put(b, "only_b", [1, 2])
    db.kv.put(a, "changed", {"v": 1})
    db.kv.put(b, "changed", {"v": 2})
    added, removed, modified = entries(db.diff_runs(a, b), "kv")
    assert added == [("only_b", None, [1, 2])]
    assert removed == [("only_a", "gone", None)]
    assert modified == [("changed", {"v": 1}, {"v": 2})]


def test_diff_is_antisymmetric(db, pair):
    a, b = pair
    db.kv.put(a, "only_a", 1)
    db.kv.put(b, "only_b", 2)
    db.kv.put(a, "changed", 1)
    db.kv.put(b, "changed", 2)
    ab, ba = db.diff_runs(a, b), db.diff_runs(b, a)
    assert [(e.primitive, e.key, e.b, e.a) for e in ab.added] == \
        [(e.primitive, e.key, e.a, e.b) for e in ba.removed]
    assert [(e.primitive, e.key, e.b, e.a) for e in ab.modified] == \
        [(e.primitive, e.key, e.a, e.b) for e in ba.modified]


def test_kv_write_history_does_not_matter_only_the_result(db, pair):
    a, b = pair
    db.kv.put(a, "k", "first")
    db.kv.put(a, "k", "final")
    db.kv.put(a, "tmp", 1)
    db.kv.delete(a, "tmp")
    db.kv.put(b, "k", "final")
    assert_empty(db.diff_runs(a, b))


def test_kv_deleted_key_counts_as_absent(db, pair):
    a, b = pair
    db.kv.put(a, "k", 1)
    db.kv.put(b, "k", 1)
    db.kv.delete(b, "k")
    assert entries(db.diff_runs(a, b), "kv") == ([], [("k", 1, None)], [])


def test_kv_expired_key_counts_as_absent(clocked_db, clock):
    db = clocked_db
    a, b = db.begin_run(), db.begin_run()
    db.kv.put(a, "k", "v", ttl=1)
    db.kv.put(b, "k", "v")
    assert_empty(db.diff_runs(a, b))
    clock.advance(2)
    db.kv.put(a, "tick", 0)  # a write after the expiry, at the run's new clock
    db.kv.put(b, "tick", 0)
    assert entries(db.diff_runs(a, b), "kv") == ([("k", None, "v")], [], [])


@pytest.mark.parametrize("va, vb", [
    (1, True), (True, 1), (1, 1.0), (1.0, True), (0, False), (0, 0.0),
    ([1], [True]), ({"x": 1}, {"x": 1.0}), ("1", 1), (b"x", "x"), (None, False),
])
def test_values_of_different_types_are_modified(db, pair, va, vb):
    a, b = pair
    db.kv.put(a, "k", va)
    db.kv.put(b, "k", vb)
    db.json.put(a, "doc", {"v": va})
    db.json.put(b, "doc", {"v": vb})
    db.state.set(a, "cell", va)
    db.state.set(b, "cell", vb)
    diff = db.diff_runs(a, b)
    assert diff.added == [] and diff.removed == []
    got = {(e.primitive, e.key): (e.a, e.b) for e in diff.modified}
    assert set(got) == {("kv", "k"), ("json", "doc"), ("state", "cell")}
    assert same(got[("kv", "k")], (va, vb))
    assert same(got[("json", "doc")], ({"v": va}, {"v": vb}))
    assert same(got[("state", "cell")], (va, vb))


@pytest.mark.parametrize("va, vb", [(1, True), (1, 1.0), (0, False)])
def test_event_payloads_of_different_types_are_modified(db, pair, va, vb):
    a, b = pair
    db.events.append(a, "step", {"v": va})
    db.events.append(b, "step", {"v": vb})
    added, removed, modified = entries(db.diff_runs(a, b), "events")
    assert (added, removed) == ([], [])
    assert [k for k, _, _ in modified] == [0]


@pytest.mark.parametrize("va, vb", [(1, True), (1, 1.0)])
def test_trace_data_of_different_types_is_modified(db, pair, va, vb):
    a, b = pair
    db.traces.record(a, "thought", {"v": va})
    db.traces.record(b, "thought", {"v": vb})
    added, removed, modified = entries(db.diff_runs(a, b), "traces")
    assert (added, removed) == ([], [])
    assert [k for k, _, _ in modified] == [0]


def test_json_added_removed_modified(db, pair):
    a, b = pair
    db.json.put(a, "same", {"x": [1, {"y": "z"}]})
    db.json.put(b, "same", {"x": [1, {"y": "z"}]})
    db.json.put(a, "only_a", {"n": 1})
    db.json.put(b, "only_b", {"n": 2})
    db.json.put(a, "doc", {"items": [1, 2], "t": "x"})
    db.json.put(b, "doc", {"items": [1, 2], "t": "x"})
    db.json.array_push(b, "doc", "$.items", 3)
    added, removed, modified = entries(db.diff_runs(a, b), "json")
    assert added == [("only_b", None, {"n": 2})]
    assert removed == [("only_a", {"n": 1}, None)]
    assert modified == [("doc", {"items": [1, 2], "t": "x"}, {"items": [1, 2, 3], "t": "x"})]


def test_json_deleted_document_counts_as_absent(db, pair):
    a, b = pair
    db.json.put(a, "doc", {"n": 1})
    db.json.put(b, "doc", {"n": 1})
    db.json.delete(a, "doc")
    assert entries(db.diff_runs(a, b), "json") == ([("doc", None, {"n": 1})], [], [])


def test_json_key_order_does_not_matter(db, pair):
    a, b = pair
    db.json.put(a, "doc", {"x": 1, "y": 2})
    db.json.put(b, "doc", {"y": 2, "x": 1})
    assert_empty(db.diff_runs(a, b))


def test_state_added_removed_modified(db, pair):
    a, b = pair
    db.state.init(a, "same", {"phase": 1})
    db.state.init(b, "same", {"phase": 1})
    db.state.set(a, "only_a", "a")
    db.state.set(b, "only_b", "b")
    db.state.init(a, "cell", 0)
    db.state.init(b, "cell", 0)
    db.state.cas(b, "cell", 1, 5)
    db.state.set(a, "deleted_in_b", 1)
    db.state.set(b, "deleted_in_b", 1)
    db.state.delete(b, "deleted_in_b")
    added, removed, modified = entries(db.diff_runs(a, b), "state")
    assert added == [("only_b", None, "b")]
    assert removed == [("deleted_in_b", 1, None), ("only_a", "a", None)]
    assert modified == [("cell", 0, 5)]


def test_state_versions_do_not_matter_only_values(db, pair):
    a, b = pair
    db.state.set(a, "cell", 1)
    db.state.set(b, "cell", 0)
    db.state.set(b, "cell", 1)
    assert_empty(db.diff_runs(a, b))


def test_events_by_sequence(db, pair):
    a, b = pair
    for run in pair:
        db.events.append(run, "start", {"i": 0})
    db.events.append(a, "step", {"i": 1})
    db.events.append(b, "step", {"i": 99})
    db.events.append(a, "kind-a", {"i": 2})
    db.events.append(b, "kind-b", {"i": 2})
    db.events.append(a, "tail", {"i": 3})
    db.events.append(a, "tail", {"i": 4})
    diff = db.diff_runs(a, b)
    added, removed, modified = entries(diff, "events")
    assert added == []
    assert [(k, ea.event_type, ea.payload, eb) for k, ea, eb in removed] == \
        [(3, "tail", {"i": 3}, None), (4, "tail", {"i": 4}, None)]
    assert [(k, (ea.event_type, ea.payload), (eb.event_type, eb.payload))
            for k, ea, eb in modified] == [
        (1, ("step", {"i": 1}), ("step", {"i": 99})),
        (2, ("kind-a", {"i": 2}), ("kind-b", {"i": 2})),
    ]
    # The entries carry the events themselves, with their sequences.
    for k, ea, eb in modified:
        assert ea.sequence == eb.sequence == k
    back = entries(db.diff_runs(b, a), "events")
    assert [(k, ea, eb.payload) for k, ea, eb in back[0]] == \
        [(3, None, {"i": 3}), (4, None, {"i": 4})]


def test_events_with_equal_content_but_other_times_are_equal(clocked_db, clock):
    db = clocked_db
    a = db.begin_run()
    db.events.append(a, "step", {"i": 0})
    clock.advance(10)
    b = db.begin_run()
    db.events.append(b, "step", {"i": 0})
    assert db.events.head(a).timestamp != db.events.head(b).timestamp
    assert db.events.head(a).hash != db.events.head(b).hash
    assert_empty(db.diff_runs(a, b))


def test_traces_by_position(db, pair):
    a, b = pair
    ta = db.traces.record(a, "thought", {"why": "x"}, tags=("t",))
    tb = db.traces.record(b, "thought", {"why": "x"}, tags=("t",))
    assert ta != tb  # ids differ across runs, yet the traces are equal
    db.traces.record(a, "decision", {"pick": "left"})
    db.traces.record(b, "decision", {"pick": "right"})
    db.traces.record(a, "query", {"q": "same"}, tags=("x",))
    db.traces.record(b, "query", {"q": "same"}, tags=("y",))
    db.traces.record(a, "custom", {"c": 1}, metadata={"m": 1})
    db.traces.record(b, "custom", {"c": 1}, metadata={"m": 2})
    db.traces.record(a, "tool_call", {"t": 1})
    db.traces.record(b, "error", {"t": 1})
    db.traces.record(b, "thought", {"extra": True})
    added, removed, modified = entries(db.diff_runs(a, b), "traces")
    assert removed == []
    assert [(k, ta_, tb_.trace_type, tb_.data) for k, ta_, tb_ in added] == \
        [(5, None, "thought", {"extra": True})]
    assert [k for k, _, _ in modified] == [1, 2, 3, 4]
    pick = {k: (x.data, y.data) for k, x, y in modified}
    assert pick[1] == ({"pick": "left"}, {"pick": "right"})
    kinds = {k: (x.trace_type, y.trace_type) for k, x, y in modified}
    assert kinds[4] == ("tool_call", "error")
    assert [(list(x.tags), list(y.tags)) for k, x, y in modified if k == 2] == [(["x"], ["y"])]
    assert [(x.metadata, y.metadata) for k, x, y in modified if k == 3] == [({"m": 1}, {"m": 2})]


def test_traces_with_equal_content_in_a_tree_are_equal(db, pair):
    for run in pair:
        root = db.traces.record(run, "thought", {"plan": "p"})
        db.traces.record(run, "tool_call", {"tool": "search"}, parent_id=root)
    assert_empty(db.diff_runs(*pair))


def test_every_primitive_in_one_diff(db, pair):
    a, b = pair
    db.kv.put(b, "k", 1)
    db.json.put(b, "d", {"n": 1})
    db.state.set(b, "s", 1)
    db.events.append(b, "e", {})
    db.traces.record(b, "thought", {})
    diff = db.diff_runs(a, b)
    assert sorted(e.primitive for e in diff.added) == ["events", "json", "kv", "state", "traces"]
    assert diff.removed == [] and diff.modified == []
    reverse = db.diff_runs(b, a)
    assert sorted(e.primitive for e in reverse.removed) == \
        ["events", "json", "kv", "state", "traces"]
    assert all(e.b is None and e.a is not None for e in reverse.removed)


def test_diff_of_finished_runs(db, pair):
    a, b = pair
    db.kv.put(a, "k", 1)
    db.kv.put(b, "k", 2)
    db.end_run(a)
    db.abort_run(b, "boom")
    assert entries(db.diff_runs(a, b), "kv") == ([], [], [("k", 1, 2)])


def test_diff_with_an_unknown_run_is_run_not_found(db, run):
    with pytest.raises(inmem.RunNotFound):
        db.diff_runs(run, "missing")
    with pytest.raises(inmem.RunNotFound):
        db.diff_runs("missing", run)
    # Both runs are replayed at once; the first one's error is the one raised.
    with pytest.raises(inmem.RunNotFound, match="'gone-a'"):
        db.diff_runs("gone-a", "gone-b")


def test_diff_does_not_write(db, pair):
    a, b = pair
    db.kv.put(a, "k", 1)
    db.kv.put(b, "k", 2)
    before = (db.replay_run(a), db.replay_run(b), db.kv.get_versioned(a, "k"),
              db.kv.get_versioned(b, "k"))
    db.diff_runs(a, b)
    assert (db.replay_run(a), db.replay_run(b), db.kv.get_versioned(a, "k"),
            db.kv.get_versioned(b, "k")) == before


def test_many_keys_are_sorted_in_each_list(db, pair):
    a, b = pair
    for i in range(30):
        if i % 3:
            db.kv.put(a, f"k{i:02d}", i)
        if i % 2:
            db.kv.put(b, f"k{i:02d}", i if i % 5 else -i)
    diff = db.diff_runs(a, b)
    for part in (diff.added, diff.removed, diff.modified):
        keys = [e.key for e in part if e.primitive == "kv"]
        assert keys == sorted(keys)
    only_a = {f"k{i:02d}" for i in range(30) if i % 3 and not i % 2}
    only_b = {f"k{i:02d}" for i in range(30) if i % 2 and not i % 3}
    changed = {f"k{i:02d}" for i in range(30) if i % 3 and i % 2 and not i % 5}
    added, removed, modified = entries(diff, "kv")
    assert {k for k, _, _ in added} == only_b
    assert {k for k, _, _ in removed} == only_a
    assert {k for k, _, _ in modified} == changed
