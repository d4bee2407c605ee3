"""A long run's replay folded in slices gives what one fold gives, and notices a delete.

`shard.replay.Folding` is the fold fed in pieces; `shard.deferred_reads`
feeds it a slice at a time for a shard worker, between its turns. Here: the
pieces make the same view as one fold at every position (hypothesis, over
journals of every kind of write, TTLs and deletes included), the jobs and
the waits answer in order with errors in place, and which requests wait.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem.shard.deferred_reads as deferred_reads
from inmem.errors import InvalidValue, RunNotFound
from inmem.shard.deferred_reads import ReadWaits, ReplayJob, replay_jobs, verify_job
from inmem.shard.engine import Engine
from inmem.shard.replay import Folding, fold

#: a hang detector
MAX_STEPS = 100_000

WRITE = st.one_of(
    st.tuples(st.just("kv.put"), st.sampled_from("abc"), st.integers(0, 9),
              st.sampled_from([None, 1, 3600])),
    st.tuples(st.just("kv.delete"), st.sampled_from("abc")),
    st.tuples(st.just("events.append"), st.sampled_from(["t", "u"]), st.integers(0, 9)),
    st.tuples(st.just("state.set"), st.sampled_from("xy"), st.integers(0, 9)),
    st.tuples(st.just("json.put"), st.sampled_from("pq"), st.integers(0, 9)),
    st.tuples(st.just("json.delete"), st.sampled_from("pq")),
    st.tuples(st.just("traces.record"), st.sampled_from(["thought", "decision"])),
)


def engine_with(writes: list) -> tuple[Engine, str]:
    engine = Engine()
    run = engine.execute("run.begin", [None, "r", None, [], None])
    for w in writes:
        op = w[0]
        if op == "kv.put":
            engine.kv_put(run, w[1], w[2], w[3])
        elif op == "kv.delete":
            engine.kv_delete(run, w[1])
        elif op == "json.delete":
            engine.js_delete(run, w[1])
        elif op == "events.append":
            engine.ev_append(run, w[1], {"n": w[2]})
        elif op == "state.set":
            engine.st_set(run, w[1], w[2])
        elif op == "json.put":
            engine.js_put(run, w[1], {"n": w[2]})
        else:
            engine.tr_record(run, w[1], {"text": "t"})
    return engine, run


@settings(max_examples=60, deadline=None)
@given(st.lists(WRITE, max_size=60), st.integers(1, 7), st.data())
def test_a_fold_fed_in_pieces_is_the_fold_at_once(writes, piece, data):
    engine, run = engine_with(writes)
    n = len(engine.runs[run].journal)
    at = data.draw(st.integers(0, n))
    items = engine.runs[run].journal.raw(0, at)
    folding = Folding()
    for start in range(0, at, piece):
        folding.feed(items[start:start + piece])
    assert folding.view() == fold(items, at) == engine.execute("run.replay", [run, at])
    # And as the worker runs it: a job stepped `piece` entries at a time.
    job = ReplayJob(run, *engine.replay_bounds(run, at))
    for _ in range(MAX_STEPS):
        if job.done:
            break
        job.step(engine, piece)
    assert job.folding.view() == fold(items, at)


def long_engine(entries: int) -> tuple[Engine, str, str]:
    engine = Engine()
    a = engine.execute("run.begin", [None, "a", None, [], None])
    b = engine.execute("run.begin", [None, "b", None, [], None])
    for i in range(entries):
        engine.kv_put(a, f"k{i % 50}", i)
    engine.kv_put(b, "k0", 0)
    return engine, a, b


def test_only_long_journals_are_folded_apart():
    engine, a, b = long_engine(deferred_reads.INLINE_ENTRIES + 1)
    assert replay_jobs(engine, [("run.replay", [b, None])]) is None  # a short one: inline
    jobs = replay_jobs(engine, [("run.replay", [a, None]), ("run.replay", [b, None])])
    assert [type(j) for j in jobs] == [ReplayJob, ReplayJob]
    # An earlier position folds only that far: inline when short.
    assert replay_jobs(engine, [("run.replay", [a, 10])]) is None


def test_the_waits_answer_each_request_whole_with_errors_in_place():
    engine, a, b = long_engine(deferred_reads.INLINE_ENTRIES * 2)
    waits = ReadWaits()
    calls = [("run.replay", [a, None]), ("run.replay", ["nope", None]),
             ("run.replay", [b, "x"]), ("run.replay", [b, None])]
    waits.add(["first"], replay_jobs(engine, calls), None)
    waits.add(["second"], replay_jobs(engine, [("run.replay", [a, -5])]), "run.replay")
    answered = []
    for _ in range(MAX_STEPS):
        answered += waits.step(engine)
        if not waits:
            break
    assert [frames for frames, _r, _b in answered] == [["first"], ["second"]]
    (_, results, batch), (_, second, single) = answered
    assert batch is None and single == "run.replay"
    assert results[0] == engine.execute("run.replay", [a, None])
    assert type(results[1]) is RunNotFound and type(results[2]) is InvalidValue
    assert results[3] == engine.execute("run.replay", [b, None])
    assert second == [engine.execute("run.replay", [a, -5])]


def test_a_run_deleted_while_it_is_replayed_answers_run_not_found():
    engine, a, _b = long_engine(deferred_reads.INLINE_ENTRIES * 2)
    waits = ReadWaits()
    waits.add(["f"], replay_jobs(engine, [("run.replay", [a, None])]), "run.replay")
    assert waits.step(engine) == []  # one slice done, more to go
    engine.execute("run.delete", [a])
    [(_frames, [result], _batch)] = waits.step(engine)
    assert type(result) is RunNotFound


def test_the_waiting_replays_are_bounded():
    waits = ReadWaits()
    for i in range(deferred_reads.WAITING_MAX):
        assert not waits.full()
        waits.add([i], [], "run.replay")
    assert waits.full()


@pytest.mark.parametrize("at", [None, 0, 7, -1])
def test_replay_bounds_are_the_replays_own(at):
    engine, a, _b = long_engine(20)
    data, pos = engine.replay_bounds(a, at)
    assert data is engine.runs[a]
    assert engine.execute("run.replay", [a, at])[-1] == pos


def events_engine(n: int) -> tuple[Engine, str]:
    engine = Engine()
    run = engine.execute("run.begin", [None, "e", None, [], None])
    for i in range(n):
        engine.ev_append(run, "step", {"i": i})
    return engine, run


def test_a_long_chain_is_checked_in_slices_as_at_once():
    engine, run = events_engine(deferred_reads.INLINE_EVENTS + 1)
    assert verify_job(engine, [run]) is not None
    assert verify_job(engine, ["nope"]) is None  # inline: the call says why
    waits = ReadWaits()
    waits.add(["v"], verify_job(engine, [run]), "ev.verify")
    for steps in range(MAX_STEPS):
        done = waits.step(engine)
        if done:
            break
    assert steps > 0
    [(_frames, [check], op)] = done
    assert op == "ev.verify"
    assert check == engine.ev_verify(run) == (True, deferred_reads.INLINE_EVENTS + 1, None, None)


def test_a_broken_chain_is_found_where_it_breaks_in_slices_too():
    engine, run = events_engine(deferred_reads.INLINE_EVENTS * 2)
    events = engine.runs[run].events
    bad = deferred_reads.INLINE_EVENTS + 3
    events[bad] = events[bad][:-1] + (b"\0" * 32,) if type(events[bad]) is tuple else events[bad]
    whole = engine.ev_verify(run)
    assert whole.valid is False and whole.first_invalid in (bad, bad + 1)
    waits = ReadWaits()
    waits.add(["v"], verify_job(engine, [run]), "ev.verify")
    for _ in range(MAX_STEPS):
        done = waits.step(engine)
        if done:
            break
    assert done[0][1] == [whole]


def embedded_long_run(db, n: int) -> tuple[str, str]:
    run, short = db.begin_run(), db.begin_run()
    for start in range(0, n, 5_000):
        with db.pipeline() as p:
            for i in range(start, min(start + 5_000, n)):
                p.kv.put(run, f"k{i % 7}", i)
            p.execute()
        db.events.append(run, "step", {"at": start})
    db.kv.put(short, "k0", "x")
    return run, short


@pytest.mark.parametrize("call", ["replay", "diff", "verify"])
def test_an_embedded_long_read_lets_other_threads_in_between_its_slices(tmp_path, monkeypatch,
                                                                         call):
    import inmem
    from between_slices import write_between_slices

    n = deferred_reads.INLINE_ENTRIES * 3
    db = inmem.open(tmp_path / "db", snapshot_on_close=False)
    try:
        run, short = embedded_long_run(db, n)
        if call == "verify":  # a long chain: more events than are checked inline
            for start in range(0, deferred_reads.INLINE_EVENTS * 2, 1_000):
                with db.pipeline() as p:
                    for i in range(1_000):
                        p.events.append(run, "tick", {"i": start + i})
                    p.execute()
        expected = {"replay": lambda: engine_result(db, "run.replay", [run, None]),
                    "diff": lambda: None,
                    "verify": lambda: engine_result(db, "ev.verify", [run])}[call]()
        other = write_between_slices(monkeypatch, lambda: db.kv.put(short, "late", 1))
        if call == "replay":
            view = db.replay_run(run)
            assert view.position == expected[-1] and view.kv == {f"k{i}": max(
                j for j in range(n) if j % 7 == i) for i in range(7)}
        elif call == "diff":
            diff = db.diff_runs(run, short)
            assert {(d.primitive, d.key) for d in diff.modified} == {("kv", "k0")}
        else:
            assert db.events.verify_chain(run) == expected
        assert other == [1, False]  # the other thread's write went in meanwhile
    finally:
        db.close()


def engine_result(db, op: str, args: list):
    with db._backend.lock:
        return db._backend.engine.execute(op, args)


def test_an_asyncio_embedded_replay_lets_the_loop_run_between_its_slices(tmp_path):
    import asyncio

    import inmem
    import inmem.asyncio

    n = deferred_reads.INLINE_ENTRIES * 3

    async def main():
        db = await inmem.asyncio.open(tmp_path / "db", snapshot_on_close=False)
        try:
            run, short = await db.begin_run(), await db.begin_run()
            for start in range(0, n, 5_000):
                async with db.pipeline() as p:
                    for i in range(start, min(start + 5_000, n)):
                        p.kv.put(run, f"k{i % 7}", i)
                    await p.execute()
            replay = asyncio.create_task(db.replay_run(run))
            await asyncio.sleep(0)  # the replay's first slice, then it yields
            version = await db.kv.put(short, "late", 1)
            waiting = not replay.done()
            return version, waiting, await replay
        finally:
            await db.close()

    version, waiting, view = asyncio.run(main())
    assert version == 1 and waiting is True
    assert view.kv == {f"k{i}": max(j for j in range(n) if j % 7 == i) for i in range(7)}
