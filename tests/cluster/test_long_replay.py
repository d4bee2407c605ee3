"""Replaying or diffing a long run does not hold its shard.

`run.replay` folds a run's journal from its first entry. Folded inside its
request, a run of 250,000 entries held its shard for half a second (another
client's put waited 555 ms), a long-lived agent's run of millions longer
than the coordinator's heartbeat timeout. A worker folds a long journal a
slice at a time between its turns (shard.deferred_reads): here another
client is served while the replay is under way, and the answers are those
of the engine folding at once.
"""

from __future__ import annotations

import threading
import time

import pytest

import inmem.replay
from inmem.shard.deferred_reads import INLINE_ENTRIES
from inmem.types import RunView

ENTRIES = INLINE_ENTRIES * 12


def fill(db, run: str, n: int) -> None:
    """`n` writes to a few keys: a long journal, a small view (so its reply is quick to
    send and read, and the fold is what takes the time)."""
    step = 10_000
    for start in range(0, n, step):
        with db.pipeline() as p:
            for i in range(start, min(start + step, n)):
                if i % 1000 == 0:
                    p.events.append(run, "step", {"i": i})
                else:
                    p.kv.put(run, f"k{i % 3}", i)
            p.execute()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("call", ["replay", "diff"])
def test_a_long_replay_lets_other_clients_in(make_cluster, monkeypatch, call):
    # When the reply has come back (before this process decodes it, which takes a
    # while of its own): the other client's puts are counted up to then.
    arrived = threading.Event()
    if call == "replay":
        from_wire = RunView.from_wire
        monkeypatch.setattr(RunView, "from_wire",
                            classmethod(lambda cls, wire: (arrived.set(), from_wire(wire))[1]))
    else:
        diff_wires = inmem.replay.diff_wires
        monkeypatch.setattr(inmem.replay, "diff_wires",
                            lambda a, b: (arrived.set(), diff_wires(a, b))[1])
    cluster = make_cluster(shards=1)  # both runs of a diff on one shard: one batch
    db = cluster.connect(request_timeout=120)
    other = cluster.connect(request_timeout=60)
    run, short = db.begin_run(), db.begin_run()
    fill(db, run, ENTRIES)
    db.kv.put(short, "k0", "x")
    assert db.replay_run(run, at=100).position == 100  # short: folded inline
    arrived.clear()
    done = threading.Event()
    answer: list = []

    def replay():
        try:
            answer.append(db.replay_run(run) if call == "replay" else db.diff_runs(run, short))
        except Exception as exc:  # reported below, not lost in the thread
            answer.append(exc)
        done.set()

    # When the request has gone out: the other client's puts are counted from a
    # moment after it (the replay is in the shard by then) to the reply.
    sent = threading.Event()
    owner, name = (db, "_call") if call == "replay" else (db._backend, "call_batch")
    send = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: (sent.set(), send(*a, **k))[1])
    th = threading.Thread(target=replay, daemon=True)
    th.start()
    assert sent.wait(60)
    time.sleep(0.05)
    served_during = 0
    deadline = time.monotonic() + 120  # a hang detector
    while not arrived.is_set() and time.monotonic() < deadline:
        other.kv.put(short, "ping", served_during)
        if not arrived.is_set():
            served_during += 1
    th.join(timeout=60)
    result = answer[0]
    assert not isinstance(result, Exception), result
    # Folded inline, the whole replay was one turn: no put got in before its reply.
    assert served_during >= 5
    if call == "replay":
        assert result.position >= ENTRIES  # every entry written, and the run's own
        assert len(result.events) == ENTRIES // 1000
        assert result.kv["k1"] == max(i for i in range(ENTRIES) if i % 3 == 1 and i % 1000)
    else:
        removed = {(d.primitive, d.key): d.a for d in result.removed}
        # The pings came after the diff's request: its short run is as it was then.
        assert ("kv", "ping") not in {(d.primitive, d.key) for d in result.added}
        assert removed[("kv", "k1")] == max(i for i in range(ENTRIES) if i % 3 == 1 and i % 1000)
        assert ("kv", "k0") in {(d.primitive, d.key) for d in result.modified}
    other.close()
    db.close()
