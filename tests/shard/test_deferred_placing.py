"""A commit that leaves telling the histories for after its replies (`defer_placing`): the
records are durable at once, reads see every write meanwhile, and the histories end up
naming the same records as with an immediate hand-over, in order, across reopening."""

from __future__ import annotations

import pytest

from inmem.shard.durable import DurableStore


def _open(path, durability="strict"):
    # A buffered batch of two writes: every turn below hands its writes over, as a
    # strict one does, so the buffered store defers placing too.
    return DurableStore.open(path, durability=durability, flusher=False, one_writer=True,
                             snapshot_on_close=False, max_pending_writes=2)


def _turn(store, engine, puts, defer):
    with store.lock:
        for run, key, value in puts:
            engine.execute("kv.put", [run, key, value, None])
        token = store.commit_locked(defer_placing=defer)
    store.wait_durable(token)


def _turns(n):
    # Two runs interleaved in each turn, one key rewritten: extents of both runs in
    # every record, and a history longer than what is current.
    return [[("a", f"k{t % 3}", t), ("b", "x", t), ("a", "last", t)] for t in range(n)]


def _extents(engine, run):
    h = engine.runs[run].journal
    return list(h.ext_pos), list(h.ext_skip), h.disk, len(h)


@pytest.mark.parametrize("durability", ["strict", "buffered"])
def test_deferred_and_immediate_placing_leave_the_same_histories(tmp_path, durability):
    seen = {}
    for defer in (False, True):
        store, engine = _open(tmp_path / f"{durability}-{defer}", durability)
        try:
            for run in ("a", "b"):
                engine.execute("run.begin", [None, run, None, [], None])
            deferred = 0
            for puts in _turns(12):
                _turn(store, engine, puts, defer)
                deferred += len(store._unplaced)
                if defer:
                    with store.lock:
                        store.place_handed()
            assert bool(deferred) == defer
            with store.lock:
                store.emit_locked()
            seen[defer] = {r: _extents(engine, r) for r in ("a", "b")}
            seen[defer, "replay"] = engine.execute("run.replay", ["a", None])
        finally:
            store.close()
    assert seen[True] == seen[False]
    assert seen[True, "replay"] == seen[False, "replay"]


def test_reads_see_every_write_before_the_histories_are_told(tmp_path):
    store, engine = _open(tmp_path)
    try:
        engine.execute("run.begin", [None, "a", None, [], None])
        engine.execute("run.begin", [None, "b", None, [], None])
        for puts in _turns(5):
            _turn(store, engine, puts, True)
            # Not placed yet: the run's items are still held, the WAL has the record.
            assert store._unplaced
            assert engine.execute("kv.get", ["a", "last", None]) == puts[-1][2]
        h = engine.runs["a"].journal
        assert h.disk < len(h), "the held items are not on disk until placed"
        before = engine.execute("run.replay", ["a", None])
        with store.lock:
            store.place_handed()
        assert not store._unplaced
        assert h.disk == len(h)
        assert engine.execute("run.replay", ["a", None]) == before
    finally:
        store.close()


def test_an_immediate_hand_over_places_what_a_deferred_one_left_first(tmp_path):
    store, engine = _open(tmp_path)
    try:
        engine.execute("run.begin", [None, "a", None, [], None])
        engine.execute("run.begin", [None, "b", None, [], None])
        turns = _turns(6)
        for puts in turns[:3]:
            _turn(store, engine, puts, True)
        for puts in turns[3:]:
            _turn(store, engine, puts, False)  # places the three deferred records first
        assert not store._unplaced
        h = engine.runs["a"].journal
        assert h.disk == len(h)
        assert list(h.ext_pos) == sorted(h.ext_pos), "extents follow the records' order"
    finally:
        store.close()


def test_deferred_records_survive_reopening_even_when_never_placed(tmp_path):
    store, engine = _open(tmp_path)
    engine.execute("run.begin", [None, "a", None, [], None])
    engine.execute("run.begin", [None, "b", None, [], None])
    for puts in _turns(4):
        _turn(store, engine, puts, True)
    want = engine.execute("run.replay", ["a", None])
    store.close()
    store, engine = _open(tmp_path)
    try:
        assert engine.execute("kv.get", ["a", "last", None]) == 3
        assert engine.execute("run.replay", ["a", None]) == want
    finally:
        store.close()
