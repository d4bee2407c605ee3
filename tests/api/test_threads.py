"""One Database shared by many threads: no lost update, no broken chain."""

from __future__ import annotations

import pytest

import inmem

from .support import check_chain, run_threads

THREADS = 8
PER_THREAD = 40

pytestmark = pytest.mark.timeout(60)


def test_kv_cas_retry_loops_lose_no_increment(db, run):
    db.kv.put(run, "count", 0)

    def worker(_):
        for _ in range(PER_THREAD):
            while True:
                cur = db.kv.get_versioned(run, "count")
                try:
                    db.kv.cas(run, "count", cur.version, cur.value + 1)
                    break
                except inmem.VersionMismatch:
                    continue

    run_threads(worker, THREADS)
    final = db.kv.get_versioned(run, "count")
    assert final.value == THREADS * PER_THREAD
    assert final.version == 1 + THREADS * PER_THREAD


def test_state_transition_loses_no_increment(db, run):
    db.state.init(run, "count", 0)

    def worker(_):
        for _ in range(PER_THREAD):
            db.state.transition(run, "count", lambda s: (s.value + 1, None), retries=100_000)

    run_threads(worker, THREADS)
    s = db.state.read(run, "count")
    assert s.value == THREADS * PER_THREAD
    assert s.version == 1 + THREADS * PER_THREAD


def test_state_transition_or_init_from_many_threads(db, run):
    def worker(_):
        for _ in range(PER_THREAD):
            db.state.transition_or_init(run, "count", 0, lambda s: (s.value + 1, None),
                                        retries=100_000)

    run_threads(worker, THREADS)
    assert db.state.read(run, "count").value == THREADS * PER_THREAD


def test_run_transaction_counter(db, run):
    def increment(tx):
        n = tx.kv.get("n", 0)
        tx.kv.put("n", n + 1)
        tx.events.append("inc", n + 1)

    def worker(_):
        for _ in range(PER_THREAD):
            db.run_transaction(run, increment, retries=100_000)

    run_threads(worker, THREADS)
    total = THREADS * PER_THREAD
    assert db.kv.get(run, "n") == total
    events = db.events.range(run, 0, total + 1)
    # Each committed increment appended the value it wrote, so the log counts 1..total.
    assert [e.payload for e in events] == list(range(1, total + 1))
    check_chain(events)


def test_concurrent_event_appends_keep_one_chain(db, run):
    mine = {}

    def worker(index):
        mine[index] = [db.events.append(run, f"w{index}", {"i": i}).sequence
                       for i in range(PER_THREAD)]

    run_threads(worker, THREADS)
    total = THREADS * PER_THREAD
    assert db.events.count(run) == total
    check = db.events.verify_chain(run)
    assert (check.valid, check.length, check.first_invalid) == (True, total, None)
    events = db.events.range(run, 0, total)
    check_chain(events)
    assert sorted(s for seqs in mine.values() for s in seqs) == list(range(total))
    for index, seqs in mine.items():
        # One thread's appends keep their order inside the shared chain.
        assert seqs == sorted(seqs)
        assert [events[s].payload["i"] for s in seqs] == list(range(PER_THREAD))
        assert all(events[s].event_type == f"w{index}" for s in seqs)


def test_concurrent_puts_to_distinct_keys(db, run):
    def worker(index):
        for i in range(PER_THREAD):
            db.kv.put(run, f"t{index}/k{i:03}", i)

    run_threads(worker, THREADS)
    assert len(db.kv.keys(run)) == THREADS * PER_THREAD
    for index in range(THREADS):
        assert db.kv.items(run, prefix=f"t{index}/") == [
            (f"t{index}/k{i:03}", i) for i in range(PER_THREAD)]


def test_concurrent_runs_and_writes(db):
    runs = {}

    def worker(index):
        r = db.begin_run(name=f"w{index}")
        runs[index] = r
        for i in range(PER_THREAD):
            db.kv.put(r, "k", i)
        db.end_run(r)

    run_threads(worker, THREADS)
    assert len(set(runs.values())) == THREADS
    assert sorted(r.run_id for r in db.runs.list(status="completed")) == sorted(runs.values())
    for r in runs.values():
        assert db.kv.get_versioned(r, "k").version == PER_THREAD
