"""JSON documents: put/get/set/delete/array_push/array_pop and every path form."""

from __future__ import annotations

import pytest

import inmem

DOC = {
    "a": {"b": {"c": 1}},
    "items": [10, 20, {"deep": "x"}],
    "key with.dots": {"inner": True},
    "n": 5,
    "s": "str",
    "nul": None,
}


@pytest.fixture
def doc_run(db, run):
    db.json.put(run, "doc", DOC)
    return run


def test_put_and_get_whole_document(db, run):
    assert db.json.put(run, "doc", DOC) == 1
    assert db.json.get(run, "doc") == DOC
    assert db.json.get(run, "doc", "$") == DOC
    assert db.json.get(run, "doc", path="$") == DOC
    assert db.json.put(run, "doc", {"replaced": 1}) == 2
    assert db.json.get(run, "doc") == {"replaced": 1}


@pytest.mark.parametrize("doc", [[1, 2], "scalar", 3, None, {}, b"raw"])
def test_any_value_is_a_document(db, run, doc):
    db.json.put(run, "doc", doc)
    assert db.json.get(run, "doc") == doc


@pytest.mark.parametrize("path, expected", [
    ("$", DOC),
    ("$.a", {"b": {"c": 1}}),
    ("$.a.b", {"c": 1}),
    ("$.a.b.c", 1),
    ("$.items", [10, 20, {"deep": "x"}]),
    ("$.items[0]", 10),
    ("$.items[1]", 20),
    ("$.items[-1]", {"deep": "x"}),
    ("$.items[-3]", 10),
    ("$.items[2].deep", "x"),
    ('$["key with.dots"]', {"inner": True}),
    ('$["key with.dots"].inner', True),
    ('$["a"]["b"].c', 1),
    ("$.nul", None),
    ("$.s", "str"),
])
def test_get_paths(db, doc_run, path, expected):
    assert db.json.get(doc_run, "doc", path) == expected


@pytest.mark.parametrize("path", ["$.missing", "$.a.missing", "$.a.b.missing", "$.items[2].nope"])
def test_get_missing_member_is_none(db, doc_run, path):
    assert db.json.get(doc_run, "doc", path) is None


def test_get_missing_document_is_none(db, run):
    assert db.json.get(run, "nope") is None
    assert db.json.get(run, "nope", "$.a.b") is None


def test_set_replaces_and_returns_version(db, doc_run):
    assert db.json.set(doc_run, "doc", "$.a.b.c", 2) == 2
    assert db.json.get(doc_run, "doc", "$.a.b.c") == 2
    assert db.json.set(doc_run, "doc", "$.items[0]", "first") == 3
    assert db.json.set(doc_run, "doc", "$.items[-1]", "last") == 4
    assert db.json.get(doc_run, "doc", "$.items") == ["first", 20, "last"]
    assert db.json.set(doc_run, "doc", '$["key with.dots"].inner', False) == 5
    assert db.json.get(doc_run, "doc", '$["key with.dots"]') == {"inner": False}
    assert db.json.set(doc_run, "doc", '$["new key.with dots"]', 1) == 6
    assert db.json.get(doc_run, "doc", '$["new key.with dots"]') == 1
    assert db.json.get(doc_run, "doc", "$.n") == 5  # untouched siblings stay


def test_set_creates_missing_objects_on_the_way(db, doc_run):
    db.json.set(doc_run, "doc", "$.x.y.z", [1])
    assert db.json.get(doc_run, "doc", "$.x") == {"y": {"z": [1]}}
    db.json.set(doc_run, "doc", "$.a.new.leaf", "v")
    assert db.json.get(doc_run, "doc", "$.a") == {"b": {"c": 1}, "new": {"leaf": "v"}}


def test_set_on_missing_document_creates_it(db, run):
    assert db.json.set(run, "fresh", "$.a.b", 1) == 1
    assert db.json.get(run, "fresh") == {"a": {"b": 1}}
    assert db.json.set(run, "whole", "$", [1, 2]) == 1
    assert db.json.get(run, "whole") == [1, 2]


def test_set_root_replaces_document(db, doc_run):
    db.json.set(doc_run, "doc", "$", {"only": 1})
    assert db.json.get(doc_run, "doc") == {"only": 1}


def test_delete_path(db, doc_run):
    assert db.json.delete(doc_run, "doc", "$.a.b.c") is True
    assert db.json.get(doc_run, "doc", "$.a") == {"b": {}}
    assert db.json.delete(doc_run, "doc", "$.a.b.c") is False
    assert db.json.delete(doc_run, "doc", "$.items[0]") is True
    assert db.json.get(doc_run, "doc", "$.items") == [20, {"deep": "x"}]
    assert db.json.delete(doc_run, "doc", "$.items[-1]") is True
    assert db.json.get(doc_run, "doc", "$.items") == [20]
    assert db.json.delete(doc_run, "doc", '$["key with.dots"]') is True
    assert "key with.dots" not in db.json.get(doc_run, "doc")
    assert db.json.delete(doc_run, "doc", "$.missing") is False


def test_delete_whole_document(db, doc_run):
    assert db.json.delete(doc_run, "doc") is True
    assert db.json.get(doc_run, "doc") is None
    assert db.json.delete(doc_run, "doc") is False
    assert db.json.delete(doc_run, "doc", "$") is False
    assert db.json.delete(doc_run, "never", "$.a") is False


def test_every_write_bumps_the_version(db, run):
    assert db.json.put(run, "doc", {"l": [1]}) == 1
    assert db.json.set(run, "doc", "$.x", 1) == 2
    db.json.array_push(run, "doc", "$.l", 2)  # 3
    db.json.array_pop(run, "doc", "$.l")  # 4
    db.json.delete(run, "doc", "$.x")  # 5
    assert db.json.set(run, "doc", "$.y", 1) == 6
    db.json.delete(run, "doc")  # 7: deleting is a write
    assert db.json.put(run, "doc", {}) == 8


def test_array_push_returns_new_length(db, doc_run):
    assert db.json.array_push(doc_run, "doc", "$.items", 30) == 4
    assert db.json.array_push(doc_run, "doc", "$.items", {"o": [1]}) == 5
    assert db.json.get(doc_run, "doc", "$.items") == [10, 20, {"deep": "x"}, 30, {"o": [1]}]
    db.json.set(doc_run, "doc", "$.a.list", [])
    assert db.json.array_push(doc_run, "doc", "$.a.list", None) == 1
    assert db.json.get(doc_run, "doc", "$.a.list") == [None]


def test_array_pop_returns_last_then_none_on_empty(db, run):
    db.json.put(run, "doc", {"stack": [1, "two", [3]]})
    assert db.json.array_pop(run, "doc", "$.stack") == [3]
    assert db.json.array_pop(run, "doc", "$.stack") == "two"
    assert db.json.array_pop(run, "doc", "$.stack") == 1
    assert db.json.array_pop(run, "doc", "$.stack") is None
    assert db.json.get(run, "doc") == {"stack": []}


def test_array_ops_on_root_array(db, run):
    db.json.put(run, "arr", [])
    assert db.json.array_push(run, "arr", "$", "a") == 1
    assert db.json.array_push(run, "arr", "$", "b") == 2
    assert db.json.get(run, "arr", "$[-1]") == "b"
    assert db.json.array_pop(run, "arr", "$") == "b"
    assert db.json.get(run, "arr") == ["a"]


MALFORMED = ["", "a.b", "$.", "$..a", "$[", "$[0", "$.a[", "$.a[]", "$.a[x]",
             "$.items[1.5]", '$["unterminated', '$["a"', "$a", "$.a.", "$ .a", ".a"]

OPS = {
    "get": lambda db, run, p: db.json.get(run, "doc", p),
    "set": lambda db, run, p: db.json.set(run, "doc", p, 1),
    "delete": lambda db, run, p: db.json.delete(run, "doc", p),
    "array_push": lambda db, run, p: db.json.array_push(run, "doc", p, 1),
    "array_pop": lambda db, run, p: db.json.array_pop(run, "doc", p),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_paths(db, doc_run, op, path):
    with pytest.raises(inmem.InvalidPath):
        OPS[op](db, doc_run, path)
    assert db.json.get(doc_run, "doc") == DOC


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("path", [
    "$.items.name",       # a name step on an array
    "$.items[0].x",       # a name step on a number inside an array
    "$.a[0]",             # an index step on an object
    "$[0]",               # an index step on the root object
    "$.n.x",              # a step through a scalar
    "$.n[0]",
    "$.s[0]",             # strings are scalars, not arrays
    "$.s.length",
], ids=["name-on-array", "name-on-number", "index-on-object", "index-on-root",
        "name-through-int", "index-through-int", "index-through-str", "name-through-str"])
def test_steps_that_do_not_fit_the_document(db, doc_run, op, path):
    with pytest.raises(inmem.InvalidPath):
        OPS[op](db, doc_run, path)
    assert db.json.get(doc_run, "doc") == DOC


@pytest.mark.parametrize("path", ["$.a", "$.n", "$.s"])
def test_push_and_pop_on_a_non_array(db, doc_run, path):
    with pytest.raises(inmem.InvalidPath):
        db.json.array_push(doc_run, "doc", path, 1)
    with pytest.raises(inmem.InvalidPath):
        db.json.array_pop(doc_run, "doc", path)
    assert db.json.get(doc_run, "doc") == DOC


def test_returned_values_are_private_copies(db, doc_run):
    db.json.get(doc_run, "doc")["items"].append("mutated")
    db.json.get(doc_run, "doc", "$.a")["b"]["c"] = "mutated"
    assert db.json.get(doc_run, "doc") == DOC
    value = {"v": [1]}
    db.json.set(doc_run, "doc", "$.fresh", value)
    value["v"].append(2)
    assert db.json.get(doc_run, "doc", "$.fresh") == {"v": [1]}
    popped_from = {"l": [[1]]}
    db.json.put(doc_run, "p", popped_from)
    popped_from["l"][0].append(9)
    assert db.json.get(doc_run, "p") == {"l": [[1]]}


def test_bytes_and_str_stay_distinct_in_documents(db, run):
    db.json.put(run, "doc", {"b": b"x", "s": "x"})
    assert db.json.get(run, "doc", "$.b") == b"x"
    assert db.json.get(run, "doc", "$.s") == "x"


def test_invalid_document_key(db, run):
    with pytest.raises(inmem.InvalidKey):
        db.json.put(run, "", {})
    with pytest.raises(inmem.InvalidKey):
        db.json.get(run, "k" * 1025)


def test_array_push_makes_the_document_and_the_objects_its_path_needs(db, run):
    # "creates the array if absent": a missing document, and a null on the way, too.
    assert db.json.array_push(run, "plan", "$.steps", "search") == 1
    assert db.json.get(run, "plan") == {"steps": ["search"]}
    db.json.put(run, "doc", {"n": None})
    assert db.json.array_push(run, "doc", "$.n.items", 1) == 1
    assert db.json.get(run, "doc") == {"n": {"items": [1]}}
    with db.transaction(run) as tx:
        tx.json.array_push("plan2", "$.a.b", "x")
    assert db.json.get(run, "plan2") == {"a": {"b": ["x"]}}
    with db.pipeline() as p:
        p.json.array_push(run, "plan3", "$.steps", "s")
        assert p.execute() == [1]
    # Popping what is not there is None, and a scalar on the way is still refused.
    assert db.json.array_pop(run, "never", "$.steps") is None
    assert db.json.array_pop(run, "doc", "$.zz.q") is None
    db.json.put(run, "s", {"a": 3})
    with pytest.raises(inmem.InvalidPath):
        db.json.array_push(run, "s", "$.a.b", 1)


def test_a_document_that_holds_null_can_be_deleted(db, run):
    assert db.json.put(run, "doc", None) == 1
    assert db.json.delete(run, "doc") is True
    assert db.json.delete(run, "doc") is False
    assert "doc" not in db.replay_run(run).json
    db.json.put(run, "doc", None)
    with db.transaction(run) as tx:
        tx.json.delete("doc")
    assert tx.results == [True]
    assert db.replay_run(run).json == {}


def test_an_index_of_thousands_of_digits_is_an_invalid_path(db, run):
    # int() of more than 4300 digits raises a bare ValueError: it must not get that far.
    db.json.put(run, "d", {"l": [1, 2]})
    huge = "$.l[" + "9" * 5000 + "]"
    for call in (lambda: db.json.get(run, "d", huge), lambda: db.json.set(run, "d", huge, 1),
                 lambda: db.json.delete(run, "d", huge)):
        with pytest.raises(inmem.InvalidPath, match="digits"):
            call()
    with db.pipeline() as p:
        p.kv.put(run, "before", 1)
        p.json.get(run, "d", huge)
        p.kv.put(run, "after", 2)
        got = p.execute(raise_on_error=False)
    assert isinstance(got[1], inmem.InvalidPath) and db.kv.get(run, "after") == 2


def test_dotted_names_may_be_any_letters(db, run):
    db.json.put(run, "d", {})
    db.json.set(run, "d", "$.café", 1)
    db.json.set(run, "d", "$.日本", 2)
    assert db.json.get(run, "d") == {"café": 1, "日本": 2}
    assert db.json.get(run, "d", '$["café"]') == 1
    db.json.set(run, "d", "$.l", [1])
    with pytest.raises(inmem.InvalidPath, match="on an array"):
        db.json.get(run, "d", "$.l.x")
