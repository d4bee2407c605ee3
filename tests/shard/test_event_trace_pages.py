"""Pages of a run's events by type and traces by type, by tag and roots (`after=`, `limit=`)
on the shard engine: against a model of the unpaged lists, live and read back from the WAL
and from a snapshot, after a transaction that recorded traces was taken back, with the old
argument tuples, refusing what is not a page, and costing about the page, not the run.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InvalidValue, TraceNotFound
from inmem.shard import events as shard_events
from inmem.shard import trace_places
from inmem.shard import traces as shard_traces
from inmem.shard.effects import record_payloads
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.snapshot_codec import dump

TYPES = ["thought", "tool_call", "decision"]
TAGS = ["a", "b", "c"]


def listings(engine, run):
    """(name, unpaged list, page function) of every paged listing of traces of `run`."""
    out = []
    for t in TYPES:
        out.append((f"type {t}", engine.tr_by_type(run, t),
                    lambda after, limit, t=t: engine.tr_by_type(run, t, after, limit)))
    for tag in TAGS:
        out.append((f"tag {tag}", engine.tr_by_tag(run, tag),
                    lambda after, limit, tag=tag: engine.tr_by_tag(run, tag, after, limit)))
    out.append(("roots", engine.tr_roots(run),
                lambda after, limit: engine.tr_roots(run, after, limit)))
    return out


def page_through(page, limit) -> list:
    out, after = [], None
    while True:
        got = page(after, limit)
        assert len(got) <= limit
        if not got:
            return out
        out.extend(got)
        after = got[-1].id


def check_trace_pages(engine, run, order: list[str], cursors) -> None:
    """Every listing paged from every cursor is the unpaged one after the cursor's place in
    record order (`order`: every trace id of the run, in record order)."""
    place = {tid: i for i, tid in enumerate(order)}
    for name, whole, page in listings(engine, run):
        assert [t.id for t in whole] == sorted((t.id for t in whole), key=place.__getitem__)
        for limit in (1, 2, 5):
            assert page_through(page, limit) == whole, (name, limit)
        for cursor in cursors:
            rest = [t for t in whole if place[t.id] > place[cursor]]
            assert page(cursor, None) == rest, (name, cursor)
            assert page(cursor, 2) == rest[:2], (name, cursor)


trace_steps = st.lists(
    st.tuples(st.sampled_from(TYPES), st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
              st.none() | st.integers(0, 30)),
    max_size=40)


@settings(max_examples=60, deadline=None, database=None)
@given(trace_steps, st.lists(st.integers(0, 40), max_size=4))
def test_trace_pages_are_the_unpaged_lists_live_and_read_back(steps, cursor_at):
    live = Engine(log=True)
    run = live.begin_run(run_id="r")
    order: list[str] = []
    for i, (trace_type, tags, parent) in enumerate(steps):
        parent_id = order[parent % len(order)] if parent is not None and order else None
        order.append(live.tr_record(run, trace_type, {"i": i}, parent_id, tags,
                                    trace_id=f"t{(i * 7) % 41:02d}"))
    cursors = [order[i % len(order)] for i in cursor_at] if order else []
    check_trace_pages(live, run, order, cursors)
    from_wal = Engine()
    EngineRecovery(from_wal).apply_records(
        [payload for payload, _n in record_payloads(live.take_log())])
    check_trace_pages(from_wal, run, order, cursors)
    from_snapshot = Engine()
    EngineRecovery(from_snapshot).load_snapshot(dict(dump(live)[1]))
    check_trace_pages(from_snapshot, run, order, cursors)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.sampled_from(["x", "y", "z"]), max_size=40),
       st.lists(st.integers(-2, 42), max_size=4), st.integers(1, 6))
def test_event_pages_are_the_unpaged_list(types, afters, limit):
    engine = Engine()
    run = engine.begin_run(run_id="r")
    for i, t in enumerate(types):
        engine.ev_append(run, t, {"i": i})
    for t in ("x", "y", "z", "never"):
        whole = engine.ev_by_type(run, t)
        assert [e.event_type for e in whole] == [t] * types.count(t)
        out, after = [], None
        while True:
            page = engine.ev_by_type(run, t, after, limit)
            assert len(page) <= limit
            if not page:
                break
            out.extend(page)
            after = page[-1].sequence
        assert out == whole
        for after in afters:  # any sequence, not only one of this type's events
            rest = [e for e in whole if e.sequence > after]
            assert engine.ev_by_type(run, t, after, None) == rest
            assert engine.ev_by_type(run, t, after, limit) == rest[:limit]


def test_the_old_argument_tuples_are_the_whole_lists():
    engine = Engine()
    run = engine.begin_run(run_id="r")
    engine.ev_append(run, "x", 1)
    root = engine.tr_record(run, "thought", {}, tags=["a"])
    assert [e.sequence for e in engine.execute("ev.by_type", (run, "x"))] == [0]
    assert [t.id for t in engine.execute("tr.by_type", (run, "thought"))] == [root]
    assert [t.id for t in engine.execute("tr.by_tag", (run, "a"))] == [root]
    assert [t.id for t in engine.execute("tr.roots", (run,))] == [root]
    assert engine.execute("ev.by_type", (run, "x", None, None)) == engine.ev_by_type(run, "x")
    assert engine.execute("tr.roots", (run, None, None)) == engine.tr_roots(run)


def test_pages_after_a_transaction_that_recorded_traces_was_taken_back():
    """A failed transaction takes back the traces it recorded; ids of its traces may come
    again in other places, which the trace's place in record order must follow."""
    engine = Engine()
    run = engine.begin_run(run_id="r")
    for tid in ("a", "b", "c"):
        engine.tr_record(run, "thought", {}, trace_id=tid)
    assert [t.id for t in engine.tr_by_type(run, "thought", "a", 10)] == ["b", "c"]
    with pytest.raises(InvalidValue):
        engine.tx_commit(run, [], [["tr.record", [run, "thought", {}, None, [], None, "x"]],
                                   ["tr.record", [run, "thought", {}, None, [], None, "y"]],
                                   ["tr.record", [run, "no-such-type", {}]]])
    assert [t.id for t in engine.tr_by_type(run, "thought", "a", 10)] == ["b", "c"]
    with pytest.raises(TraceNotFound):
        engine.tr_by_type(run, "thought", "x", 10)
    # The same ids again, in the other order, and the last one in the same place as before.
    for tid in ("z", "y", "x", "w"):
        engine.tr_record(run, "thought", {}, trace_id=tid)
    whole = [t.id for t in engine.tr_by_type(run, "thought")]
    assert whole == ["a", "b", "c", "z", "y", "x", "w"]
    for i, cursor in enumerate(whole):
        assert [t.id for t in engine.tr_by_type(run, "thought", cursor, 10)] == whole[i + 1:]
        assert [t.id for t in engine.tr_roots(run, cursor, 2)] == whole[i + 1:i + 3]


def test_a_run_deleted_and_begun_again_pages_its_own_traces():
    engine = Engine()
    run = engine.begin_run(run_id="r")
    for tid in ("a", "b", "c"):
        engine.tr_record(run, "thought", {}, trace_id=tid)
    assert [t.id for t in engine.tr_roots(run, "a", 1)] == ["b"]
    engine.run_delete(run)
    engine.begin_run(run_id="r")
    for tid in ("c", "b", "a"):
        engine.tr_record(run, "thought", {}, trace_id=tid)
    assert [t.id for t in engine.tr_roots(run, "c", 5)] == ["b", "a"]
    assert [t.id for t in engine.tr_roots(run, "a", 5)] == []


def test_places_of_deleted_runs_are_let_go():
    """What a page keeps to find a trace's place goes with its run, not kept forever."""
    engine = Engine()
    for i in range(300):
        run = engine.begin_run(run_id=f"r{i}")
        engine.tr_record(run, "thought", {}, trace_id="a")
        engine.tr_record(run, "thought", {}, trace_id="b")
        assert [t.id for t in engine.tr_roots(run, "a", 5)] == ["b"]
        engine.run_delete(run)
    assert len(shard_traces.kept_places(engine)) < 150


@pytest.mark.parametrize("call", [
    lambda e: e.ev_by_type("r", "x", None, 0), lambda e: e.ev_by_type("r", "x", None, -1),
    lambda e: e.ev_by_type("r", "x", None, True), lambda e: e.ev_by_type("r", "x", None, 1.0),
    lambda e: e.ev_by_type("r", "x", "3", None), lambda e: e.ev_by_type("r", "x", True, None),
    lambda e: e.ev_by_type("r", "x", 1.5, None), lambda e: e.ev_by_type("r", "x", [1], None),
    lambda e: e.tr_by_type("r", "thought", None, 0), lambda e: e.tr_by_tag("r", "a", None, "2"),
    lambda e: e.tr_roots("r", None, False), lambda e: e.tr_roots("r", 3, None),
    lambda e: e.tr_roots("r", ["a"], None), lambda e: e.tr_by_tag("r", "a", b"a", None),
])
def test_what_is_not_a_page_is_refused(call):
    engine = Engine()
    engine.begin_run(run_id="r")
    engine.tr_record("r", "thought", {}, tags=["a"], trace_id="a")
    with pytest.raises(InvalidValue):
        call(engine)


def nested(depth: int = 100_000) -> list:
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


@pytest.mark.parametrize("bad", [nested(), -10**5000, "x" * 10**6],
                         ids=["nested", "long-int", "long-str"])
def test_a_hostile_page_is_refused_with_invalid_value(bad):
    """What no repr() shows (a list nested too deep, an int too long) is still refused with
    the error that says what a page takes."""
    engine = Engine()
    engine.begin_run(run_id="r")
    engine.tr_record("r", "thought", {}, tags=["a"], trace_id="a")
    for op, args in (("ev.by_type", ("r", "x", None, bad)), ("ev.by_type", ("r", "x", bad, 1)),
                     ("tr.by_type", ("r", "thought", None, bad)),
                     ("tr.by_tag", ("r", "a", bad, 1)), ("tr.roots", ("r", bad, None))):
        if type(bad) is int and op == "ev.by_type" and args[2] is bad:
            assert engine.execute(op, args) == []  # any int is a sequence to start after
            continue
        with pytest.raises((InvalidValue, TraceNotFound)) as caught:
            engine.execute(op, args)
        assert "after" in str(caught.value) or "limit" in str(caught.value)


def test_a_cursor_that_is_not_a_trace_of_the_run_is_trace_not_found():
    engine = Engine()
    engine.begin_run(run_id="r")
    engine.begin_run(run_id="s")
    engine.tr_record("s", "thought", {}, trace_id="elsewhere")
    for call in (lambda: engine.tr_roots("r", "elsewhere", 5),
                 lambda: engine.tr_by_type("r", "thought", "elsewhere", None),
                 lambda: engine.tr_by_tag("r", "a", "nothing", 1)):
        with pytest.raises(TraceNotFound, match="elsewhere|nothing"):
            call()


class CountingList(list):
    """An index of a run, counting the items a listing reads from it."""

    looked = 0

    def __getitem__(self, i):
        got = super().__getitem__(i)
        CountingList.looked += len(got) if type(i) is slice else 1
        return got

    def __iter__(self):
        for x in super().__iter__():
            CountingList.looked += 1
            yield x


def test_a_page_of_events_reads_about_the_page_not_the_run(monkeypatch):
    engine = Engine()
    run = engine.begin_run(run_id="r")
    for i in range(6000):
        engine.ev_append(run, "x" if i % 3 else "y", None)
    r = engine.runs[run]
    r.events_by_type["x"] = CountingList(r.events_by_type["x"])
    made = []
    monkeypatch.setattr(shard_events, "as_event",
                        lambda e, made=made, real=shard_events.as_event: made.append(1) or real(e))
    CountingList.looked = 0
    page = engine.ev_by_type(run, "x", 3000, 10)
    assert [e.sequence for e in page] == [3001, 3002, 3004, 3005, 3007, 3008, 3010, 3011,
                                          3013, 3014]
    assert len(made) == 10
    assert CountingList.looked <= 40


def test_a_page_of_traces_reads_about_the_page_not_the_run(monkeypatch):
    engine = Engine()
    run = engine.begin_run(run_id="r")
    ids = [engine.tr_record(run, "thought" if i % 3 else "decision", {}, tags=["t"])
           for i in range(6000)]
    r = engine.runs[run]
    for table, key in ((r.traces_by_type, "thought"), (r.traces_by_tag, "t")):
        table[key] = CountingList(table[key])
    r.trace_roots = CountingList(r.trace_roots)
    engine.tr_roots(run, ids[0], 1)  # the first page after a trace may look at every trace
    made = []
    monkeypatch.setattr(shard_traces, "as_trace",
                        lambda e, made=made, real=shard_traces.as_trace: made.append(1) or real(e))
    for page in (lambda: engine.tr_by_type(run, "thought", ids[3000], 10),
                 lambda: engine.tr_by_tag(run, "t", ids[3000], 10),
                 lambda: engine.tr_roots(run, ids[3000], 10)):
        CountingList.looked = 0
        made.clear()
        got = page()
        assert len(got) == 10 and got[0].id in ids[3001:3003]
        assert len(made) == 10
        assert CountingList.looked <= 40
    # Traces recorded since are taken in without a pass over the others.
    ids.append(engine.tr_record(run, "thought", {}, tags=["t"]))
    CountingList.looked = 0
    assert [t.id for t in engine.tr_by_tag(run, "t", ids[-2], 10)] == [ids[-1]]
    assert CountingList.looked <= 40


class StubRun:
    """A run's table as the places read it: its trace ids in record order."""

    def __init__(self, run_id, order):
        self.run_id = run_id
        self.trace_order = order


def test_places_follow_an_order_changed_under_them():
    """The map is checked against the order it reads: ids taken back from the end and
    recorded again in other places (which the engine does only inside one commit) are
    found in their new places, whether the last place changed or not."""
    run = StubRun("r", ["a", "b", "c", "d", "e"])
    places = trace_places.TracePlaces(run)
    assert places.start(["a", "c", "d"], "b") == 1
    del run.trace_order[2:]
    run.trace_order += ["d", "c", "e"]  # as long as before and "e" last again: c, d swapped
    places.catch_up()
    assert places.start(["a", "b", "d", "c", "e"], "d") == 3
    assert places.start(["a", "d", "c"], "c") == 3
    assert places.start(["a", "d", "c"], "b") == 1
    del run.trace_order[1:]
    run.trace_order += ["x", "c"]  # another last place
    places.catch_up()
    assert places.start(["a", "x", "c"], "x") == 2
    del run.trace_order[1:]
    places.catch_up()  # shorter than what the map covered
    run.trace_order += ["c", "b"]
    places.catch_up()
    assert places.start(["a", "c", "b"], "a") == 1
    assert places.start(["a", "c", "b"], "c") == 2
    assert places.start(["c", "b"], "b") == 2


def test_places_of_deleted_runs_are_dropped_as_they_accumulate():
    runs = {}
    kept = trace_places.Places()
    for i in range(1000):
        r = runs[f"r{i}"] = StubRun(f"r{i}", ["a", "b"])
        assert kept.of_run(runs, r).start(["a", "b"], "a") == 1
        if i % 10:
            del runs[f"r{i}"]
    assert len(kept.by_run) <= max(trace_places.SWEEP_AT, 2 * len(runs)) + 1
    assert all(kept.by_run[rid].run is runs[rid] for rid in runs)
