"""Traces: reasoning records with parent links, types, tags and trees."""

from __future__ import annotations

import pytest

import inmem

TRACE_TYPES = ["tool_call", "decision", "query", "thought", "error", "custom"]


def test_record_and_get(clocked_db, clock):
    run = clocked_db.begin_run()
    tid = clocked_db.traces.record(run, "tool_call", {"tool": "search", "args": {"q": "x"}},
                                   tags=("io", "web"), metadata={"model": "m1"})
    assert isinstance(tid, str) and tid
    t = clocked_db.traces.get(run, tid)
    assert t.id == tid
    assert t.parent_id is None
    assert t.trace_type == "tool_call"
    assert t.data == {"tool": "search", "args": {"q": "x"}}
    assert list(t.tags) == ["io", "web"]
    assert t.metadata == {"model": "m1"}
    assert t.timestamp == clock.now_us


def test_get_unknown_is_none(db, run):
    assert db.traces.get(run, "no-such-trace") is None


@pytest.mark.parametrize("trace_type", TRACE_TYPES)
def test_every_documented_type_is_accepted(db, run, trace_type):
    tid = db.traces.record(run, trace_type, {})
    assert db.traces.get(run, tid).trace_type == trace_type


@pytest.mark.parametrize("trace_type", ["Thought", "tool", "", "other", None, 3])
def test_other_types_are_refused(db, run, trace_type):
    with pytest.raises(inmem.InvalidValue):
        db.traces.record(run, trace_type, {})
    assert db.traces.roots(run) == []


@pytest.mark.parametrize("data", [None, [], "text", 1, b"x", [("k", "v")]])
def test_data_must_be_a_dict(db, run, data):
    with pytest.raises(inmem.InvalidValue):
        db.traces.record(run, "thought", data)
    assert db.traces.roots(run) == []


def test_ids_are_unique(db, run):
    ids = [db.traces.record(run, "thought", {"i": i}) for i in range(20)]
    assert len(set(ids)) == 20
    assert all(isinstance(i, str) for i in ids)


def test_parent_links(db, run):
    root = db.traces.record(run, "decision", {"d": 1})
    child = db.traces.record(run, "tool_call", {"t": 1}, parent_id=root)
    grandchild = db.traces.record(run, "thought", {"x": 1}, parent_id=child)
    assert db.traces.get(run, child).parent_id == root
    assert db.traces.get(run, grandchild).parent_id == child


def test_unknown_parent_is_trace_not_found(db, run):
    db.traces.record(run, "thought", {})
    with pytest.raises(inmem.TraceNotFound):
        db.traces.record(run, "thought", {}, parent_id="no-such-trace")
    assert len(db.traces.roots(run)) == 1


def test_parent_from_another_run_is_not_found(db):
    r1, r2 = db.begin_run(), db.begin_run()
    other = db.traces.record(r1, "thought", {})
    with pytest.raises(inmem.TraceNotFound):
        db.traces.record(r2, "thought", {}, parent_id=other)
    assert db.traces.get(r2, other) is None


def test_by_type_in_record_order(db, run):
    a = db.traces.record(run, "thought", {"n": 1})
    b = db.traces.record(run, "tool_call", {"n": 2})
    c = db.traces.record(run, "thought", {"n": 3}, parent_id=b)
    assert [t.id for t in db.traces.by_type(run, "thought")] == [a, c]
    assert [t.id for t in db.traces.by_type(run, "tool_call")] == [b]
    assert db.traces.by_type(run, "error") == []
    assert db.traces.by_type(run, "thought")[1] == db.traces.get(run, c)


@pytest.mark.parametrize("trace_type", ["Thought", "tool", "", "other"])
def test_by_type_refuses_a_type_no_trace_can_have(db, run, trace_type):
    # A typo in the type listed nothing, as if the run had no such traces.
    db.traces.record(run, "thought", {})
    with pytest.raises(inmem.InvalidValue, match="trace_type must be one of"):
        db.traces.by_type(run, trace_type)
    with pytest.raises(inmem.InvalidValue, match="trace_type must be one of"):
        db.traces.by_type(run, trace_type, limit=1)


def test_by_tag_in_record_order(db, run):
    a = db.traces.record(run, "thought", {}, tags=("x", "y"))
    db.traces.record(run, "thought", {}, tags=("y",))
    c = db.traces.record(run, "query", {}, tags=["x"])
    db.traces.record(run, "query", {})
    assert [t.id for t in db.traces.by_tag(run, "x")] == [a, c]
    assert len(db.traces.by_tag(run, "y")) == 2
    assert db.traces.by_tag(run, "absent") == []


def test_roots_in_record_order(db, run):
    assert db.traces.roots(run) == []
    r1 = db.traces.record(run, "decision", {})
    db.traces.record(run, "thought", {}, parent_id=r1)
    r2 = db.traces.record(run, "decision", {})
    assert [t.id for t in db.traces.roots(run)] == [r1, r2]


def _shape(tree):
    return (tree.trace.id, [_shape(c) for c in tree.children])


def test_tree_nested_children_in_record_order(db, run):
    root = db.traces.record(run, "decision", {"name": "root"})
    a = db.traces.record(run, "thought", {"name": "a"}, parent_id=root)
    b = db.traces.record(run, "tool_call", {"name": "b"}, parent_id=root)
    a1 = db.traces.record(run, "query", {"name": "a1"}, parent_id=a)
    c = db.traces.record(run, "thought", {"name": "c"}, parent_id=root)
    a2 = db.traces.record(run, "query", {"name": "a2"}, parent_id=a)
    b1 = db.traces.record(run, "error", {"name": "b1"}, parent_id=b)
    other_root = db.traces.record(run, "decision", {"name": "other"})

    tree = db.traces.tree(run, root)
    assert tree.trace == db.traces.get(run, root)
    assert _shape(tree) == (root, [(a, [(a1, []), (a2, [])]), (b, [(b1, [])]), (c, [])])
    assert tree.children[0].children[1].trace.data == {"name": "a2"}
    assert _shape(db.traces.tree(run, a)) == (a, [(a1, []), (a2, [])])
    assert _shape(db.traces.tree(run, b1)) == (b1, [])
    assert _shape(db.traces.tree(run, other_root)) == (other_root, [])


def test_tree_of_unknown_trace(db, run):
    with pytest.raises(inmem.TraceNotFound):
        db.traces.tree(run, "no-such-trace")


def _chain(db, run, depth):
    """A root and `depth` - 1 traces each the child of the one before, and a leaf beside."""
    ids = [db.traces.record(run, "thought", {"i": 0})]
    for i in range(1, depth):
        ids.append(db.traces.record(run, "thought", {"i": i}, parent_id=ids[-1]))
    db.traces.record(run, "decision", {"side": True}, parent_id=ids[0])
    return ids


def _walk(tree):
    """Every node's trace in preorder, with its number of children (no recursion)."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        out.append((node.trace, len(node.children)))
        stack.extend(reversed(node.children))
    return out


def test_a_deep_tree_pickles_copies_and_compares(db, run):
    # An agent loop that records each step as the child of the last makes a
    # chain far deeper than the interpreter's recursion limit.
    import copy
    import pickle

    ids = _chain(db, run, 3000)
    tree = db.traces.tree(run, ids[0])
    again = db.traces.tree(run, ids[0])
    assert tree is not again and tree == again and not tree != again

    back = pickle.loads(pickle.dumps(tree))
    assert back == tree and _walk(back) == _walk(tree)
    assert isinstance(back, inmem.TraceTree) and isinstance(back.children, list)

    deep = copy.deepcopy(tree)
    assert deep == tree
    node = deep
    while node.children:
        node = node.children[0]
    node.trace.data["i"] = "changed"          # the copy's data is its own
    assert deep != tree and tree != deep
    assert tree.children[0].trace.data == {"i": 1}

    shallow = copy.copy(tree)
    assert shallow == tree and shallow.children is tree.children

    other = db.traces.tree(run, ids[1])
    assert tree != other and tree != (tree.trace, tree.children[:1])


def test_returned_data_is_a_private_copy(db, run):
    data = {"steps": [1]}
    tid = db.traces.record(run, "thought", data)
    data["steps"].append(2)
    db.traces.get(run, tid).data["steps"].append(3)
    db.traces.roots(run)[0].data["steps"].append(4)
    assert db.traces.get(run, tid).data == {"steps": [1]}


def test_a_tag_named_twice_finds_the_trace_once(db, run):
    tid = db.traces.record(run, "thought", {"x": 1}, tags=["web", "web", "a"])
    assert [t.id for t in db.traces.by_tag(run, "web")] == [tid]
    assert db.traces.get(run, tid).tags == ["web", "a"]
    other = db.begin_run(tags=["x", "x"])
    assert [r.run_id for r in db.runs.list(tag="x")] == [other]
