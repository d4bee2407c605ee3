"""A write interrupted part way (Ctrl-C, an exception from a signal handler) in an embedded
durable store: the store refuses writes and takes no snapshot from its memory until it is
reopened, and reopening recovers a consistent store from the WAL's whole records."""

from __future__ import annotations

import random
import signal

import pytest

import inmem


@pytest.mark.parametrize("durability", ["buffered", "strict"])
def test_an_interrupt_inside_the_commit_step_stops_writes_and_reopening_recovers(
        tmp_path, monkeypatch, durability):
    path = tmp_path / "store"
    db = inmem.open(path, durability=durability)
    run = db.begin_run(run_id="r")
    db.kv.put(run, "acked", 1)
    store = db._backend.store
    real = store.commit_locked

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(store, "commit_locked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        db.events.append(run, "step", {"n": 1})
    monkeypatch.undo()
    for write in (lambda: db.kv.put(run, "later", 2), lambda: db.events.append(run, "t", {}),
                  lambda: db.kv.put_many(run, {"a": 1}), db.snapshot):
        with pytest.raises(inmem.DurabilityError, match="interrupted"):
            write()
    assert db.kv.get(run, "acked") == 1  # reads still answer
    db.close()  # flushes the WAL's whole records, takes no snapshot
    assert not list((path / "snapshots").glob("*.snap"))
    with inmem.open(path, durability=durability) as again:
        assert again.kv.get(run, "acked") == 1 and again.kv.get(run, "later") is None
        view = again.replay_run(run)
        assert view.kv["acked"] == 1
        again.kv.put(run, "after", 3)  # writable again


def test_interrupts_at_random_moments_never_leave_a_store_that_cannot_be_reopened(tmp_path):
    path = tmp_path / "store"

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    rng = random.Random(7)
    db = inmem.open(path, durability="buffered")
    run = db.begin_run(run_id="r")
    acked = {}
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        for trial in range(120):
            try:
                try:
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0001, 0.003))
                    with db.pipeline() as p:
                        for j in range(100):
                            p.kv.put(run, f"k{j}", trial)
                    acked = {f"k{j}": trial for j in range(100)}
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except (KeyboardInterrupt, inmem.DurabilityError):
                pass
    finally:
        while True:  # a last alarm may still land here
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
                break
            except KeyboardInterrupt:
                pass
    db.close()
    with inmem.open(path, durability="buffered") as again:
        view = again.replay_run(run)
        for key, trial in acked.items():
            # What was acknowledged is there (a later unacknowledged write may be too).
            assert view.kv[key] >= trial
