"""KV put_many (several keys in one write, all or none) and get_linked (a value and what it names)."""

from __future__ import annotations

import pytest

import inmem


def test_put_many_stores_every_pair_with_its_own_version(db, run):
    db.kv.put(run, "a", 0)
    assert db.kv.put_many(run, [("a", 1), ("b", {"x": [1]}), ("c", None)]) == [2, 1, 1]
    assert db.kv.get_many(run, ["a", "b", "c"]) == [1, {"x": [1]}, None]
    assert db.kv.exists(run, "c")
    assert db.kv.put_many(run, {"b": 2, "d": b"\x00"}) == [2, 1]
    assert db.kv.items(run) == [("a", 1), ("b", 2), ("c", None), ("d", b"\x00")]
    assert db.kv.put_many(run, []) == []


def test_put_many_counts_a_key_given_twice_twice_and_keeps_the_last(db, run):
    assert db.kv.put_many(run, [("k", 1), ("k", 2), ("k", 3)]) == [1, 2, 3]
    assert db.kv.get_versioned(run, "k").version == 3
    assert db.kv.get(run, "k") == 3


def test_put_many_stores_one_value_under_two_keys_as_two_copies(db, run):
    shared = {"a": [1, 2]}
    db.kv.put_many(run, [("x", shared), ("y", shared)])
    x = db.kv.get(run, "x")
    x["a"].append(3)  # values read back are private copies, not one object
    assert db.kv.get(run, "y") == {"a": [1, 2]} and db.kv.get(run, "x") == {"a": [1, 2]}


def test_put_many_with_ttl_expires_every_pair(clocked_db, clock):
    run = clocked_db.begin_run()
    clocked_db.kv.put_many(run, {"a": 1, "b": 2}, ttl=2)
    clock.advance(1.999)
    assert clocked_db.kv.get_many(run, ["a", "b"]) == [1, 2]
    clock.advance(0.001)
    assert clocked_db.kv.get_many(run, ["a", "b"]) == [None, None]


@pytest.mark.parametrize("items, error", [
    ([("ok", 1), ("", 2)], inmem.InvalidKey),
    ([("ok", 1), ("bad", {1: 2})], inmem.InvalidValue),
    ([("ok", 1), ("short",)], inmem.InvalidValue),
    ([("ok", 1), "not-a-pair"], inmem.InvalidValue),
])
def test_put_many_refuses_the_whole_write_when_one_pair_is_bad(db, run, items, error):
    with pytest.raises(error):
        db.kv.put_many(run, items)
    assert db.kv.keys(run) == []  # not even the good pair
    assert db.kv.put(run, "ok", 1) == 1  # and no version was used up


def test_put_many_on_a_missing_or_ended_run_is_refused(db, run):
    with pytest.raises(inmem.RunNotFound):
        db.kv.put_many("no-such-run", {"a": 1})
    db.end_run(run)
    with pytest.raises(inmem.RunNotActive):
        db.kv.put_many(run, {"a": 1})
    with pytest.raises(inmem.InvalidValue):
        db.kv.put_many(run, "ab")


def test_put_many_in_a_pipeline_and_in_history(db, run):
    with db.pipeline() as p:
        p.kv.put_many(run, {"a": 1, "b": 2})
        p.kv.get(run, "b")
        assert p.execute() == [[1, 1], 2]
    assert db.replay_run(run).kv == {"a": 1, "b": 2}


def test_get_linked_reads_the_value_and_every_reference_in_order(db, run):
    db.kv.put_many(run, {"blob/1": "one", "blob/2": [2]})
    db.json.put(run, "doc", {"w": 1})
    record = {"name": "r", "refs": [["kv", "blob/2"], ["json", "doc"], "gone",
                                    ["json", "no-doc"], "blob/1"]}
    db.kv.put(run, "head", record)
    assert db.kv.get_linked(run, "head", "refs") == (record, [[2], {"w": 1}, None, None, "one"])
    # A list value names its references by index, from either end.
    db.kv.put(run, "row", ["x", [["kv", "blob/1"]]])
    assert db.kv.get_linked(run, "row", 1) == (["x", [["kv", "blob/1"]]], ["one"])
    assert db.kv.get_linked(run, "row", -1)[1] == ["one"]


def test_get_linked_without_a_value_or_without_the_field(db, run):
    assert db.kv.get_linked(run, "absent", "refs") is None
    db.kv.put(run, "plain", {"a": 1})
    assert db.kv.get_linked(run, "plain", "refs") == ({"a": 1}, [])
    assert db.kv.get_linked(run, "plain", 0) == ({"a": 1}, [])
    db.kv.put(run, "list", [1, 2])
    assert db.kv.get_linked(run, "list", 5) == ([1, 2], [])
    assert db.kv.get_linked(run, "list", "refs") == ([1, 2], [])
    db.kv.put(run, "scalar", 3)
    assert db.kv.get_linked(run, "scalar", "refs") == (3, [])
    db.kv.delete(run, "scalar")
    assert db.kv.get_linked(run, "scalar", "refs") is None
    with pytest.raises(inmem.RunNotFound):
        db.kv.get_linked("no-such-run", "k", "refs")


def test_get_linked_finds_values_as_get_does(clocked_db, clock):
    # Non-ASCII keys, an expiring head and refused keys, on every backend.
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "clé", {"refs": ["été", ["kv", "absent"]]})
    db.kv.put(run, "été", 1)
    assert db.kv.get_linked(run, "clé", "refs") == ({"refs": ["été", ["kv", "absent"]]}, [1, None])
    db.kv.put(run, "short", {"refs": ["été"]}, ttl=5)
    assert db.kv.get_linked(run, "short", "refs") == ({"refs": ["été"]}, [1])
    clock.advance(6)
    assert db.kv.get(run, "short") is None
    assert db.kv.get_linked(run, "short", "refs") is None
    for bad in ("", "k" * 1025):
        with pytest.raises(inmem.InvalidKey):
            db.kv.get_linked(run, bad, "refs")


@pytest.mark.parametrize("args", [
    (["a", "list"], "k", "refs"),   # a run id that is not a str
    ({"a": 1}, "k", "refs"),
    ("RUN", ["k"], "refs"),         # a key that is not a str
    ("RUN", None, "refs"),
])
def test_get_linked_refuses_bad_arguments_with_a_typed_error(db, run, args):
    args = tuple(run if a == "RUN" else a for a in args)
    with pytest.raises((inmem.InvalidValue, inmem.InvalidKey, inmem.RunNotFound)):
        db.kv.get_linked(*args)
    assert db.kv.get_linked(run, "absent", "refs") is None  # and the store goes on


@pytest.mark.parametrize("refs", [
    "kv",  # not a list
    [["kv"]],  # not a pair
    [["state", "x"]],  # not a section it reads
    [["kv", ""]],  # not a key
    [""],
    [7],
])
def test_get_linked_refuses_a_malformed_reference(db, run, refs):
    db.kv.put(run, "head", {"refs": refs})
    with pytest.raises((inmem.InvalidValue, inmem.InvalidKey)):
        db.kv.get_linked(run, "head", "refs")


def test_put_many_is_recovered_whole_from_the_log(tmp_path):
    path = str(tmp_path / "store")
    with inmem.open(path, durability="strict") as db:
        run = db.begin_run()
        assert db.kv.put_many(run, {f"k{i}": i for i in range(50)}) == [1] * 50
        assert db.kv.put_many(run, [("k0", "again")]) == [2]
    with inmem.open(path, durability="strict") as db:
        assert db.kv.get_many(run, [f"k{i}" for i in range(50)]) == ["again"] + list(range(1, 50))
        assert db.kv.get_versioned(run, "k0").version == 2


def test_put_many_versions_past_one_and_two_bytes_read_and_recover(tmp_path):
    # A key rewritten by every put_many (a checkpointer's head) passes version 255 and
    # 65535, where its entry's version field widens: each width reads back and replays.
    path = str(tmp_path / "store")
    with inmem.open(path, durability="buffered") as db:
        run = db.begin_run()
        for i in range(1, 70_001):
            head = {"n": i}
            assert db.kv.put_many(run, [(f"rec/{i % 3}", head), ("head", head)])[1] == i
            if i in (255, 256, 65_535, 65_536):
                got = db.kv.get_versioned(run, "head")
                assert (got.value, got.version) == (head, i)
        assert db.kv.get(run, "head") == {"n": 70_000}
        assert db.kv.put(run, "head", "last") == 70_001
    with inmem.open(path, durability="buffered") as db:
        got = db.kv.get_versioned(run, "head")
        assert (got.value, got.version) == ("last", 70_001)
        assert db.kv.get_many(run, ["rec/0", "rec/1", "rec/2"]) == [
            {"n": 69_999}, {"n": 70_000}, {"n": 69_998}]
        assert [db.kv.get_versioned(run, f"rec/{k}").version for k in range(3)] == [
            23_333, 23_334, 23_333]
