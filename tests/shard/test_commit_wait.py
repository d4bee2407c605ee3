"""Strict mode's commit wait: when a turn waits for recently served clients, for how long,
and that a strict cluster's shards use it (and keep every acknowledged write)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

import inmem
from inmem.shard.commit_wait import SLICE_US, CommitWait


class FakeTime:
    """A clock that moves only when slept on, and the arrivals due at given sleeps."""

    def __init__(self, arrivals: dict | None = None):
        self.t = 0.0
        self.sleeps = 0
        self.arrivals = arrivals or {}  # sleep number -> [peer, ...] arriving then

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds

    def more(self, batch: list) -> None:
        for peer in self.arrivals.pop(self.sleeps, ()):
            batch.append([peer, b"header", b"body"])


def _wait(budget_us, clock):
    return CommitWait(budget_us, sleep=clock.sleep, now=clock.now)


def _turn(cw, clock, *peers) -> list:
    batch = [[p, b"header", b"body"] for p in peers]
    cw.fill(batch, clock.more)
    return [item[0] for item in batch]


def test_one_client_alone_never_waits():
    clock = FakeTime()
    cw = _wait(100, clock)
    for _ in range(50):
        assert _turn(cw, clock, "a") == ["a"]
    assert clock.sleeps == 0 and cw.waits == 0


def test_a_turn_waits_for_a_recent_client_and_ends_when_it_arrives():
    clock = FakeTime()
    cw = _wait(100, clock)
    _turn(cw, clock, "a", "b")
    clock.arrivals = {3: ["b"]}
    assert _turn(cw, clock, "a") == ["a", "b"]
    assert clock.sleeps == 3  # not one slice more than it took
    assert (cw.waits, cw.waited_for) == (1, 1)


def test_the_wait_is_bounded_and_a_silent_client_is_forgotten():
    clock = FakeTime()
    cw = _wait(100, clock)
    _turn(cw, clock, "a", "b")
    whole = 100 // SLICE_US  # slices in the budget (one more if the clock rounds down)
    _turn(cw, clock, "a")        # b missing: waits the whole budget
    first = clock.sleeps
    assert whole <= first <= whole + 1
    _turn(cw, clock, "a")        # b was served two turns ago: still waited for
    assert whole <= clock.sleeps - first <= whole + 1
    waited = clock.sleeps
    _turn(cw, clock, "a")        # now forgotten
    assert clock.sleeps == waited
    assert (cw.waits, cw.waited_for) == (2, 0)


def test_others_arriving_meanwhile_join_the_turn_too():
    clock = FakeTime()
    cw = _wait(100, clock)
    _turn(cw, clock, "a", "b", "c")
    clock.arrivals = {1: ["new"], 2: ["b"], 4: ["c"]}
    assert _turn(cw, clock, "a") == ["a", "new", "b", "c"]
    assert clock.sleeps == 4


def test_a_budget_of_zero_never_waits():
    clock = FakeTime()
    cw = _wait(0, clock)
    _turn(cw, clock, "a", "b")
    _turn(cw, clock, "a")
    assert clock.sleeps == 0 and cw.waits == 0


def _client(endpoint: str, run: str, n: int, out) -> None:
    db = inmem.connect(endpoint)
    try:
        for i in range(n):
            db.kv.put(run, f"k{i}", i)
        out.put((run, n))
    finally:
        db.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wait_us", [100, 0])
def test_strict_shards_wait_for_their_clients_and_keep_every_write(tmp_path, wait_us):
    clients, n = 4, 150
    with inmem.Cluster(data_dir=tmp_path / "data", shards=1, durability="strict",
                       commit_wait_us=wait_us, ready_timeout=45) as cl:
        db = cl.connect()
        runs = [db.begin_run() for _ in range(clients)]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_client, args=(cl.endpoint, r, n, out)) for r in runs]
        for p in procs:
            p.start()
        done = dict(out.get(timeout=90) for _ in procs)
        for p in procs:
            p.join(30)
        assert done == {r: n for r in runs}
        for r in runs:
            assert db.kv.items(r) and len(db.kv.keys(r)) == n
            assert db.kv.get(r, f"k{n - 1}") == n - 1
        (shard,) = db.info()["shards"]
        if wait_us:
            # Four clients that each wait for their reply fall into step with the
            # fsync; the waits bring the missing ones into the turn.
            assert shard["commit_waits"] > 0 and shard["commit_waited_for"] > 0
        else:
            assert shard["commit_waits"] == 0
        db.close()


def test_the_option_is_checked(tmp_path):
    with pytest.raises(inmem.InmemError, match="commit_wait_us"):
        inmem.Cluster(data_dir=tmp_path / "data", shards=1, durability="strict",
                      commit_wait_us=-1)
