"""State cells: init/read/set/cas/transition/transition_or_init/delete."""

from __future__ import annotations

import pytest

import inmem


def test_init_and_read(clocked_db, clock):
    run = clocked_db.begin_run()
    assert clocked_db.state.read(run, "cell") is None
    assert clocked_db.state.init(run, "cell", {"phase": "plan"}) == 1
    s = clocked_db.state.read(run, "cell")
    assert (s.value, s.version, s.updated_at) == ({"phase": "plan"}, 1, clock.now_us)


def test_init_twice_is_state_exists(db, run):
    db.state.init(run, "cell", 1)
    with pytest.raises(inmem.StateExists):
        db.state.init(run, "cell", 2)
    s = db.state.read(run, "cell")
    assert (s.value, s.version) == (1, 1)


def test_set_creates_then_bumps(clocked_db, clock):
    run = clocked_db.begin_run()
    assert clocked_db.state.set(run, "cell", "a") == 1
    clock.advance(2)
    assert clocked_db.state.set(run, "cell", "b") == 2
    s = clocked_db.state.read(run, "cell")
    assert (s.value, s.version, s.updated_at) == ("b", 2, clock.now_us)


def test_cas(db, run):
    db.state.init(run, "cell", 0)
    assert db.state.cas(run, "cell", 1, 10) == 2
    with pytest.raises(inmem.VersionMismatch) as info:
        db.state.cas(run, "cell", 1, 20)
    assert (info.value.expected, info.value.actual) == (1, 2)
    s = db.state.read(run, "cell")
    assert (s.value, s.version) == (10, 2)
    # The loser of the race is told what won, so it can retry without a read.
    assert info.value.current == s
    assert type(info.value.current) is inmem.State


def test_cas_on_an_absent_cell_reports_no_current_state(db, run):
    with pytest.raises(inmem.VersionMismatch) as info:
        db.state.cas(run, "never", 3, "x")
    assert (info.value.actual, info.value.current) == (0, None)
    db.state.init(run, "gone", 1)
    db.state.delete(run, "gone")
    with pytest.raises(inmem.VersionMismatch) as info:
        db.state.cas(run, "gone", 1, "x")
    assert (info.value.actual, info.value.current) == (0, None)


def test_a_kv_version_mismatch_has_no_current_state(db, run):
    db.kv.put(run, "k", 1)
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "k", 7, 2)
    assert info.value.current is None


def test_cas_zero_creates_only_when_absent(db, run):
    assert db.state.cas(run, "cell", 0, "new") == 1
    with pytest.raises(inmem.VersionMismatch) as info:
        db.state.cas(run, "cell", 0, "again")
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert db.state.read(run, "cell").value == "new"


def test_transition(db, run):
    db.state.init(run, "counter", 5)
    seen = []

    def bump(state):
        seen.append((state.value, state.version))
        return state.value + 1, f"was {state.value}"

    assert db.state.transition(run, "counter", bump) == ("was 5", 2)
    assert db.state.transition(run, "counter", bump) == ("was 6", 3)
    assert seen == [(5, 1), (6, 2)]
    s = db.state.read(run, "counter")
    assert (s.value, s.version) == (7, 3)


def test_transition_result_can_be_any_python_object(db, run):
    db.state.init(run, "cell", [1])
    marker = object()
    result, version = db.state.transition(run, "cell", lambda s: (s.value + [2], marker))
    assert result is marker
    assert version == 2
    assert db.state.read(run, "cell").value == [1, 2]


def test_transition_on_absent_cell(db, run):
    calls = []
    with pytest.raises(inmem.StateNotFound):
        db.state.transition(run, "missing", lambda s: calls.append(s) or (1, None))
    assert calls == []
    assert db.state.read(run, "missing") is None


def test_transition_fn_error_writes_nothing(db, run):
    db.state.init(run, "cell", 1)

    def broken(state):
        raise ZeroDivisionError("inside fn")

    with pytest.raises(ZeroDivisionError):
        db.state.transition(run, "cell", broken)
    s = db.state.read(run, "cell")
    assert (s.value, s.version) == (1, 1)


def test_transition_invalid_new_value(db, run):
    db.state.init(run, "cell", 1)
    with pytest.raises(inmem.InvalidValue):
        db.state.transition(run, "cell", lambda s: ((1, 2), None))
    assert db.state.read(run, "cell").version == 1


@pytest.mark.timeout(20)
def test_transition_retries_when_the_cell_changes_underneath(db, run):
    db.state.init(run, "cell", 0)
    calls = []

    def fn(state):
        calls.append(state.value)
        if len(calls) == 1:
            # Another client writes between this read and the commit.
            db.state.set(run, "cell", 100)
        return state.value + 1, state.value

    result, version = db.state.transition(run, "cell", fn)
    assert calls == [0, 100]
    assert result == 100
    assert version == 3
    assert db.state.read(run, "cell").value == 101


def _deleting_on_first_call(db, run, name, seen):
    """A transition fn that deletes the cell under itself the first time it is called."""
    def fn(state):
        seen.append(state.value)
        if len(seen) == 1:
            db.state.delete(run, name)
        return state.value + 1, None
    return fn


@pytest.mark.timeout(20)
def test_a_transition_retries_from_the_failed_cas_without_reading_again(db, run, monkeypatch):
    db.state.init(run, "cell", 0)
    reads = []
    # The async backends hand out a blocking face; count on the section it drives.
    section = type(getattr(db.state, "_obj", db.state))
    plain_read = section.read

    def counted_read(self, *args):
        reads.append(args)
        return plain_read(self, *args)

    monkeypatch.setattr(section, "read", counted_read)
    calls = []

    def fn(state):
        calls.append((state.value, state.version))
        if len(calls) < 3:
            db.state.set(run, "cell", state.value + 100)
        return state.value + 1, None

    assert db.state.transition(run, "cell", fn)[1] == 4
    assert calls == [(0, 1), (100, 2), (200, 3)]
    assert len(reads) == 1
    assert db.state.read(run, "cell").value == 201


@pytest.mark.timeout(20)
def test_transition_stops_when_the_cell_is_deleted_underneath(db, run):
    db.state.init(run, "cell", 0)
    with pytest.raises(inmem.StateNotFound):
        db.state.transition(run, "cell", _deleting_on_first_call(db, run, "cell", []))
    assert db.state.read(run, "cell") is None


@pytest.mark.timeout(20)
def test_transition_or_init_starts_over_when_the_cell_is_deleted_underneath(db, run):
    db.state.init(run, "cell", 5)
    seen = []
    fn = _deleting_on_first_call(db, run, "cell", seen)
    # Versions keep growing across a delete, as for KV.
    assert db.state.transition_or_init(run, "cell", 0, fn) == (None, 3)
    assert seen == [5, 0]
    assert db.state.read(run, "cell").value == 1


def test_transition_or_init_when_absent_applies_fn_in_same_step(db, run):
    seen = []

    def fn(state):
        seen.append(state.value)
        return state.value + ["added"], "ok"

    assert db.state.transition_or_init(run, "cell", ["initial"], fn) == ("ok", 1)
    assert seen == [["initial"]]
    s = db.state.read(run, "cell")
    assert (s.value, s.version) == (["initial", "added"], 1)


def test_transition_or_init_when_present_ignores_initial(db, run):
    db.state.set(run, "cell", 10)
    result = db.state.transition_or_init(run, "cell", 0, lambda s: (s.value * 2, s.value))
    assert result == (10, 2)
    assert db.state.read(run, "cell").value == 20


def test_delete(db, run):
    assert db.state.delete(run, "cell") is False
    db.state.init(run, "cell", 1)
    assert db.state.delete(run, "cell") is True
    assert db.state.read(run, "cell") is None
    assert db.state.delete(run, "cell") is False
    with pytest.raises(inmem.StateNotFound):
        db.state.transition(run, "cell", lambda s: (s.value, None))
    db.state.init(run, "cell", 2)  # init works again once the cell is gone
    assert db.state.read(run, "cell").value == 2


def test_delete_is_a_write_for_versions(db, run):
    assert db.state.set(run, "cell", "a") == 1
    db.state.delete(run, "cell")
    assert db.state.set(run, "cell", "b") == 3
    with pytest.raises(inmem.VersionMismatch):
        db.state.cas(run, "cell", 1, "stale")
    assert db.state.read(run, "cell").value == "b"


def test_read_returns_private_copy(db, run):
    db.state.init(run, "cell", {"l": [1]})
    db.state.read(run, "cell").value["l"].append(2)
    assert db.state.read(run, "cell").value == {"l": [1]}


def test_state_and_kv_are_separate(db, run):
    db.state.set(run, "same", "state")
    db.kv.put(run, "same", "kv")
    assert db.state.read(run, "same").value == "state"
    assert db.kv.get(run, "same") == "kv"


@pytest.mark.parametrize("call", [
    lambda db, run: db.state.init(run, "", 1),
    lambda db, run: db.state.set(run, "x" * 1025, 1),
    lambda db, run: db.state.read(run, ""),
    lambda db, run: db.state.cas(run, "", 0, 1),
    lambda db, run: db.state.delete(run, ""),
    lambda db, run: db.state.transition_or_init(run, "", 0, lambda s: (1, None)),
], ids=["init", "set", "read", "cas", "delete", "transition_or_init"])
def test_invalid_names(db, run, call):
    with pytest.raises(inmem.InvalidKey):
        call(db, run)
