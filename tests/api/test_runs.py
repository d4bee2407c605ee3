"""Runs: lifecycle, status transitions, metadata, listing, deletion, and the
RunNotFound / RunNotActive rules that every other primitive obeys."""

from __future__ import annotations

import uuid

import pytest

import inmem

from .support import ALLOWED, STATUSES, bring_to

# --- creation and metadata ------------------------------------------------


def test_begin_run_generates_uuid4_hex(db):
    run = db.begin_run()
    assert isinstance(run, str)
    assert len(run) == 32
    assert uuid.UUID(hex=run).version == 4
    assert uuid.UUID(hex=run).hex == run
    assert db.begin_run() != run
    assert db.run_status(run) == "active"


def test_begin_run_with_given_id(db):
    assert db.begin_run(run_id="my-run") == "my-run"
    assert db.run_status("my-run") == "active"


def test_begin_run_existing_id_is_run_exists(db):
    db.begin_run(run_id="dup", name="first")
    with pytest.raises(inmem.RunExists):
        db.begin_run(run_id="dup", name="second")
    assert db.runs.get("dup").name == "first"


def test_run_info_fields(clocked_db, clock):
    db = clocked_db
    parent = db.begin_run(name="parent")
    clock.advance(1)
    run = db.begin_run(name="agent", parent=parent, tags=("a", "b"),
                       metadata={"model": "m", "n": [1, 2]})
    info = db.runs.get(run)
    assert info.run_id == run
    assert info.name == "agent"
    assert info.parent == parent
    assert info.status == "active"
    assert list(info.tags) == ["a", "b"]
    assert info.metadata == {"model": "m", "n": [1, 2]}
    assert info.created_at == clock.now_us
    assert info.updated_at == clock.now_us
    assert info.ended_at is None
    assert info.error is None
    assert all(isinstance(x, int) for x in (info.created_at, info.updated_at))


def test_run_info_defaults(db):
    run = db.begin_run()
    info = db.runs.get(run)
    assert info.name is None
    assert info.parent is None
    assert list(info.tags) == []
    assert info.status == "active"


def test_end_run(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    created = clock.now_us
    clock.advance(3)
    db.end_run(run)
    info = db.runs.get(run)
    assert info.status == "completed"
    assert db.run_status(run) == "completed"
    assert info.created_at == created
    assert info.updated_at == clock.now_us
    assert info.ended_at == clock.now_us
    assert info.error is None


def test_abort_run(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    clock.advance(2)
    db.abort_run(run, "tool crashed: timeout")
    info = db.runs.get(run)
    assert info.status == "failed"
    assert info.error == "tool crashed: timeout"
    assert info.ended_at == clock.now_us
    assert db.run_status(run) == "failed"


def test_abort_run_keeps_an_exceptions_text_on_every_backend(db):
    # The usual `except Exception as exc: db.abort_run(run, exc)`: an exception
    # does not cross the wire, so its text is what is sent.
    run, queued = db.begin_run(), db.begin_run()
    try:
        raise ValueError("tool crashed: timeout")
    except ValueError as exc:
        db.abort_run(run, exc)
    assert db.runs.get(run).error == "tool crashed: timeout"
    with db.pipeline() as p:
        p.abort_run(queued, RuntimeError("planner gave up"))
    assert db.runs.get(queued).status == "failed"
    assert db.runs.get(queued).error == "planner gave up"
    with pytest.raises(inmem.InvalidValue, match="a reason must be a str"):
        db.abort_run(db.begin_run(), object())


def test_status_change_updates_updated_at(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    clock.advance(1)
    db.runs.pause(run)
    info = db.runs.get(run)
    assert info.updated_at == clock.now_us
    assert info.ended_at is None


def test_unknown_run(db):
    assert db.run_status("nope") == "not_found"
    assert db.runs.get("nope") is None
    assert db.runs.delete("nope") is False


def test_orphaned_runs_is_empty_without_recovery(db, run):
    assert db.orphaned_runs() == []


# --- transitions ----------------------------------------------------------

PAIRS = [(a, b) for a in STATUSES for b in STATUSES]


@pytest.mark.parametrize("from_, to", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition_table(db, from_, to):
    run = db.begin_run()
    bring_to(db, run, from_)
    if to in ALLOWED[from_]:
        db.runs.set_status(run, to)
        assert db.run_status(run) == to
        assert db.runs.get(run).status == to
    else:
        with pytest.raises(inmem.InvalidStatusTransition) as info:
            db.runs.set_status(run, to)
        assert info.value.from_ == from_
        assert info.value.to == to
        assert db.run_status(run) == from_


HELPERS = {
    "pause": ("paused", lambda db, r: db.runs.pause(r)),
    "resume": ("active", lambda db, r: db.runs.resume(r)),
    "cancel": ("cancelled", lambda db, r: db.runs.cancel(r)),
    "archive": ("archived", lambda db, r: db.runs.archive(r)),
    "end_run": ("completed", lambda db, r: db.end_run(r)),
    "abort_run": ("failed", lambda db, r: db.abort_run(r, "why")),
}
HELPER_CASES = [(h, s) for h in sorted(HELPERS) for s in STATUSES]


@pytest.mark.parametrize("helper, from_", HELPER_CASES,
                         ids=[f"{h}-from-{s}" for h, s in HELPER_CASES])
def test_helpers_follow_the_table(db, helper, from_):
    to, call = HELPERS[helper]
    run = db.begin_run()
    bring_to(db, run, from_)
    if to in ALLOWED[from_]:
        call(db, run)
        assert db.run_status(run) == to
    else:
        with pytest.raises(inmem.InvalidStatusTransition) as info:
            call(db, run)
        assert (info.value.from_, info.value.to) == (from_, to)
        assert db.run_status(run) == from_


def test_archived_is_final(db, run):
    db.runs.archive(run)
    for status in STATUSES:
        with pytest.raises(inmem.InvalidStatusTransition):
            db.runs.set_status(run, status)
    assert db.run_status(run) == "archived"


def test_paused_then_resumed_then_completed(db, run):
    db.runs.pause(run)
    db.runs.resume(run)
    db.end_run(run)
    db.runs.archive(run)
    assert db.run_status(run) == "archived"


@pytest.mark.parametrize("status", ["bogus", "", "not_found", "orphaned"])
def test_set_status_to_an_unknown_status(db, run, status):
    with pytest.raises((inmem.InvalidStatusTransition, inmem.InvalidValue)):
        db.runs.set_status(run, status)
    assert db.run_status(run) == "active"


# --- writes by status -----------------------------------------------------

WRITES = {
    "kv.put": lambda db, r: db.kv.put(r, "k", 1),
    "kv.delete": lambda db, r: db.kv.delete(r, "k"),
    "kv.cas": lambda db, r: db.kv.cas(r, "k", 0, 1),
    "events.append": lambda db, r: db.events.append(r, "t", {}),
    "state.init": lambda db, r: db.state.init(r, "fresh", 1),
    "state.set": lambda db, r: db.state.set(r, "s", 1),
    "state.cas": lambda db, r: db.state.cas(r, "s", 1, 2),
    "state.transition": lambda db, r: db.state.transition(r, "s", lambda s: (s.value + 1, None)),
    "state.transition_or_init": lambda db, r: db.state.transition_or_init(
        r, "s", 0, lambda s: (s.value + 1, None)),
    "state.delete": lambda db, r: db.state.delete(r, "s"),
    "traces.record": lambda db, r: db.traces.record(r, "thought", {}),
    "json.put": lambda db, r: db.json.put(r, "d", {}),
    "json.set": lambda db, r: db.json.set(r, "doc", "$.a", 1),
    "json.delete": lambda db, r: db.json.delete(r, "doc", "$.a"),
    "json.array_push": lambda db, r: db.json.array_push(r, "doc", "$.l", 1),
    "json.array_pop": lambda db, r: db.json.array_pop(r, "doc", "$.l"),
    "transaction": lambda db, r: _tx_write(db, r),
    "run_transaction": lambda db, r: db.run_transaction(r, lambda tx: tx.kv.put("k", 1)),
}


def _tx_write(db, run):
    with db.transaction(run) as tx:
        tx.kv.put("k", 1)


def _seed(db, run):
    """Give the run something for every write above to act on."""
    db.state.set(run, "s", 1)
    db.json.put(run, "doc", {"a": 0, "l": [1, 2]})


def _snapshot(db, run):
    return (db.kv.items(run), db.events.count(run), db.state.read(run, "s"),
            db.state.read(run, "fresh"), db.json.get(run, "doc"), db.json.get(run, "d"),
            len(db.traces.roots(run)))


ENDED = ["completed", "failed", "cancelled", "archived"]
ENDED_CASES = [(w, s) for w in sorted(WRITES) for s in ENDED]


@pytest.mark.parametrize("write, status", ENDED_CASES,
                         ids=[f"{w}-{s}" for w, s in ENDED_CASES])
def test_writes_to_ended_runs_are_refused(db, write, status):
    run = db.begin_run()
    _seed(db, run)
    bring_to(db, run, status)
    before = _snapshot(db, run)
    with pytest.raises(inmem.RunNotActive):
        WRITES[write](db, run)
    assert _snapshot(db, run) == before


@pytest.mark.parametrize("write", sorted(WRITES))
def test_writes_to_paused_runs_are_allowed(db, write):
    run = db.begin_run()
    _seed(db, run)
    db.runs.pause(run)
    WRITES[write](db, run)
    assert db.run_status(run) == "paused"


@pytest.mark.parametrize("write", sorted(WRITES))
def test_writes_to_active_runs_are_allowed(db, write):
    run = db.begin_run()
    _seed(db, run)
    WRITES[write](db, run)
    assert db.run_status(run) == "active"


def test_reads_of_completed_run_still_work(db, run):
    db.kv.put(run, "k", "v")
    db.events.append(run, "t", 1)
    db.state.set(run, "s", 2)
    db.json.put(run, "d", {"a": 1})
    tid = db.traces.record(run, "thought", {"x": 1})
    db.end_run(run)
    assert db.kv.get(run, "k") == "v"
    assert db.kv.keys(run) == ["k"]
    assert db.events.count(run) == 1
    assert db.events.verify_chain(run).valid
    assert db.state.read(run, "s").value == 2
    assert db.json.get(run, "d", "$.a") == 1
    assert db.traces.get(run, tid).data == {"x": 1}


# --- calls naming a missing run -------------------------------------------

MISSING = "no-such-run"

ALL_CALLS = {
    "kv.put": lambda db: db.kv.put(MISSING, "k", 1),
    "kv.get": lambda db: db.kv.get(MISSING, "k"),
    "kv.get_versioned": lambda db: db.kv.get_versioned(MISSING, "k"),
    "kv.exists": lambda db: db.kv.exists(MISSING, "k"),
    "kv.delete": lambda db: db.kv.delete(MISSING, "k"),
    "kv.cas": lambda db: db.kv.cas(MISSING, "k", 0, 1),
    "kv.get_many": lambda db: db.kv.get_many(MISSING, ["k"]),
    "kv.keys": lambda db: db.kv.keys(MISSING),
    "kv.items": lambda db: db.kv.items(MISSING),
    "events.append": lambda db: db.events.append(MISSING, "t", {}),
    "events.read": lambda db: db.events.read(MISSING, 0),
    "events.range": lambda db: db.events.range(MISSING, 0, 10),
    "events.head": lambda db: db.events.head(MISSING),
    "events.count": lambda db: db.events.count(MISSING),
    "events.by_type": lambda db: db.events.by_type(MISSING, "t"),
    "events.verify_chain": lambda db: db.events.verify_chain(MISSING),
    "state.init": lambda db: db.state.init(MISSING, "s", 1),
    "state.read": lambda db: db.state.read(MISSING, "s"),
    "state.set": lambda db: db.state.set(MISSING, "s", 1),
    "state.cas": lambda db: db.state.cas(MISSING, "s", 0, 1),
    "state.transition": lambda db: db.state.transition(MISSING, "s", lambda s: (1, None)),
    "state.transition_or_init": lambda db: db.state.transition_or_init(
        MISSING, "s", 0, lambda s: (1, None)),
    "state.delete": lambda db: db.state.delete(MISSING, "s"),
    "traces.record": lambda db: db.traces.record(MISSING, "thought", {}),
    "traces.get": lambda db: db.traces.get(MISSING, "t"),
    "traces.by_type": lambda db: db.traces.by_type(MISSING, "thought"),
    "traces.by_tag": lambda db: db.traces.by_tag(MISSING, "x"),
    "traces.roots": lambda db: db.traces.roots(MISSING),
    "traces.tree": lambda db: db.traces.tree(MISSING, "t"),
    "json.put": lambda db: db.json.put(MISSING, "d", {}),
    "json.get": lambda db: db.json.get(MISSING, "d"),
    "json.set": lambda db: db.json.set(MISSING, "d", "$.a", 1),
    "json.delete": lambda db: db.json.delete(MISSING, "d"),
    "json.array_push": lambda db: db.json.array_push(MISSING, "d", "$.l", 1),
    "json.array_pop": lambda db: db.json.array_pop(MISSING, "d", "$.l"),
    "end_run": lambda db: db.end_run(MISSING),
    "abort_run": lambda db: db.abort_run(MISSING, "why"),
    "runs.set_status": lambda db: db.runs.set_status(MISSING, "paused"),
    "runs.pause": lambda db: db.runs.pause(MISSING),
    "runs.resume": lambda db: db.runs.resume(MISSING),
    "runs.cancel": lambda db: db.runs.cancel(MISSING),
    "runs.archive": lambda db: db.runs.archive(MISSING),
    "transaction": lambda db: _tx_write(db, MISSING),
    "run_transaction": lambda db: db.run_transaction(MISSING, lambda tx: tx.kv.put("k", 1)),
}


@pytest.mark.parametrize("call", sorted(ALL_CALLS))
def test_calls_naming_a_missing_run(db, call):
    with pytest.raises(inmem.RunNotFound):
        ALL_CALLS[call](db)
    assert db.run_status(MISSING) == "not_found"


def test_begin_run_with_missing_parent(db):
    with pytest.raises(inmem.RunNotFound):
        db.begin_run(parent=MISSING)
    assert db.runs.list() == []


# --- listing --------------------------------------------------------------


def test_list_in_creation_order_with_filters(clocked_db, clock):
    db = clocked_db
    ids = []
    root = db.begin_run(run_id="zz-root", tags=("x",))
    ids.append(root)
    # Ids that sort against creation order, so the order can only come from created_at.
    for i, rid in enumerate(["y-child", "m-child", "a-child"]):
        clock.advance(1)
        ids.append(db.begin_run(run_id=rid, parent=root, tags=("x",) if i % 2 else ("y",)))
    clock.advance(1)
    other = db.begin_run(run_id="b-other")
    ids.append(other)

    assert [r.run_id for r in db.runs.list()] == ids
    assert [r.run_id for r in db.runs.list(parent=root)] == ["y-child", "m-child", "a-child"]
    assert [r.run_id for r in db.runs.list(tag="x")] == ["zz-root", "m-child"]
    assert [r.run_id for r in db.runs.list(tag="y")] == ["y-child", "a-child"]
    assert db.runs.list(tag="none") == []

    db.end_run("m-child")
    db.abort_run("b-other", "x")
    assert [r.run_id for r in db.runs.list(status="active")] == ["zz-root", "y-child", "a-child"]
    assert [r.run_id for r in db.runs.list(status="completed")] == ["m-child"]
    assert [r.run_id for r in db.runs.list(status="failed")] == ["b-other"]
    assert db.runs.list(status="paused") == []
    assert [r.run_id for r in db.runs.list(status="active", parent=root, tag="y")] == [
        "y-child", "a-child"]
    listed = db.runs.list(status="failed")[0]
    assert listed == db.runs.get("b-other")
    assert listed.error == "x"


def test_list_ties_broken_by_run_id(clocked_db):
    db = clocked_db  # the clock stands still: every run has the same created_at
    for rid in ["c", "a", "d", "b"]:
        db.begin_run(run_id=rid)
    assert [r.run_id for r in db.runs.list()] == ["a", "b", "c", "d"]


def test_list_of_empty_database(db):
    assert db.runs.list() == []


# --- deletion -------------------------------------------------------------


def _fill(db, run):
    db.kv.put(run, "k", 1)
    db.events.append(run, "t", {})
    db.state.set(run, "s", 1)
    db.json.put(run, "d", {})
    return db.traces.record(run, "thought", {})


def test_delete_removes_run_and_all_data(db):
    keep = db.begin_run(run_id="keep")
    gone = db.begin_run(run_id="gone")
    _fill(db, keep)
    tid = _fill(db, gone)
    assert db.runs.delete(gone) is True
    assert db.runs.delete(gone) is False
    assert db.run_status(gone) == "not_found"
    assert db.runs.get(gone) is None
    assert [r.run_id for r in db.runs.list()] == ["keep"]
    for read in (lambda: db.kv.get(gone, "k"), lambda: db.events.count(gone),
                 lambda: db.state.read(gone, "s"), lambda: db.json.get(gone, "d"),
                 lambda: db.traces.get(gone, tid), lambda: db.kv.put(gone, "k", 2)):
        with pytest.raises(inmem.RunNotFound):
            read()
    assert db.kv.get(keep, "k") == 1 and db.events.count(keep) == 1


def test_deleted_id_can_be_reused_and_starts_empty(db):
    run = db.begin_run(run_id="again")
    _fill(db, run)
    db.runs.delete(run)
    assert db.begin_run(run_id="again") == "again"
    assert db.kv.keys(run) == []
    assert db.events.count(run) == 0
    assert db.events.head(run) is None
    assert db.state.read(run, "s") is None
    assert db.json.get(run, "d") is None
    assert db.traces.roots(run) == []
    assert db.events.append(run, "t", {}).sequence == 0


@pytest.mark.parametrize("status", STATUSES)
def test_delete_works_in_every_status(db, status):
    run = db.begin_run()
    bring_to(db, run, status)
    assert db.runs.delete(run) is True
    assert db.run_status(run) == "not_found"


@pytest.mark.parametrize("filters", [{"tag": ["demo"]}, {"tag": ("demo",)}, {"tag": 5},
                                     {"tag": ""}, {"parent": ["p"]}, {"parent": 5},
                                     {"parent": b"p"}])
def test_list_with_a_tag_or_parent_that_is_no_name_is_refused(db, filters):
    # tag=["demo"] (a list where one tag belongs) listed nothing, as if no run had the tag.
    parent = db.begin_run(run_id="p", tags=["demo"])
    db.begin_run(parent=parent, tags=["demo"])
    with pytest.raises((inmem.InvalidValue, inmem.InvalidKey), match="tag|parent"):
        db.runs.list(**filters)
    with pytest.raises((inmem.InvalidValue, inmem.InvalidKey), match="tag|parent"):
        db.runs.list(**filters, limit=1)
    assert len(db.runs.list(tag="demo")) == 2 and len(db.runs.list(parent="p")) == 1


@pytest.mark.parametrize("status", ["bogus", "Active", "", "not_found", ["active"]])
def test_list_with_a_status_no_run_can_have_is_refused(db, status):
    # A typo in the filter listed nothing, as if no run had the status.
    db.begin_run()
    with pytest.raises(inmem.InvalidValue, match="unknown run status"):
        db.runs.list(status=status)
    assert len(db.runs.list(status="active")) == 1
