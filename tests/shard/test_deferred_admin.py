"""The admin requests a shard's loop answers later (`shard.deferred_admin`), against stores
whose snapshot children and compaction passes end when the test says: who is answered, with
what, and when."""

from __future__ import annotations

from inmem.errors import DurabilityError
from inmem.shard.deferred_admin import CompactionRequests, SnapshotRequests


class FakeStore:
    """Children that run until `end(pid)`; `failed` pids end with DurabilityError."""

    path = "fake"

    def __init__(self):
        self.child = None
        self.next_pid = 100
        self.ended: dict = {}
        self.refuse = None

    def start_snapshot(self):
        if self.refuse is not None:
            raise self.refuse
        if self.child is None:
            self.child = self.next_pid
            self.next_pid += 1
        return self.child

    def snapshot_running(self):
        return self.child

    def snapshot_done(self, pid):
        if pid not in self.ended:
            return False, None
        if self.child == pid:
            self.child = None
        if self.ended[pid] == "failed":
            raise DurabilityError(f"child {pid} failed")
        return True, f"info {pid}"

    def end(self, pid, how="ok"):
        self.ended[pid] = how


def test_a_request_gets_its_own_child_and_is_answered_when_it_ends():
    store = FakeStore()
    snaps = SnapshotRequests(store)
    assert not snaps
    snaps.add(["a"])
    assert snaps and snaps.poll() == [] and store.child == 100
    assert snaps.poll() == []  # still running: nothing to say
    store.end(100)
    assert snaps.poll() == [(["a"], ["info 100"])]
    assert not snaps and store.child is None


def test_requests_during_a_running_child_share_the_next_one():
    store = FakeStore()
    store.start_snapshot()  # an automatic snapshot, forked before the requests
    snaps = SnapshotRequests(store)
    snaps.add(["a"])
    snaps.add(["b"])
    assert snaps.poll() == [] and store.child == 100  # not answered by the older child
    store.end(100)
    assert snaps.poll() == [] and store.child == 101  # both wait for the next
    snaps.add(["c"])  # came while 101 runs: waits for the one after
    store.end(101)
    assert snaps.poll() == [(["a"], ["info 101"]), (["b"], ["info 101"])]
    assert store.child == 102
    store.end(102)
    assert snaps.poll() == [(["c"], ["info 102"])]


def test_a_failed_child_fails_its_requests_only():
    store = FakeStore()
    snaps = SnapshotRequests(store)
    snaps.add(["a"])
    snaps.poll()
    snaps.add(["b"])
    store.end(100, "failed")
    answered = snaps.poll()
    assert [frames for frames, _ in answered] == [["a"]]
    assert isinstance(answered[0][1], DurabilityError)
    assert store.child == 101  # b's own child
    store.end(101)
    assert snaps.poll() == [(["b"], ["info 101"])]


def test_a_store_that_cannot_snapshot_answers_at_once():
    store = FakeStore()
    store.refuse = DurabilityError("the store refuses writes")
    snaps = SnapshotRequests(store)
    snaps.add(["a"])
    (frames, err), = snaps.poll()
    assert frames == ["a"] and err is store.refuse and not snaps


class SlicedStore:
    """compact_history_in_slices: passes of `slices` slices, numbered; or a failure."""

    path = "fake"

    def __init__(self, slices: int):
        self.slices = slices
        self.passes = 0
        self.fail = None

    def compact_history_in_slices(self):
        if self.fail is not None:
            raise self.fail
        self.passes += 1
        number = self.passes
        for _ in range(self.slices):
            yield
        return {"files": number}


def test_a_compaction_request_is_answered_after_its_whole_pass():
    store = SlicedStore(3)
    reqs = CompactionRequests(store)
    reqs.add(["a"])
    assert [reqs.step() for _ in range(3)] == [[], [], []]
    assert reqs.step() == [(["a"], {"files": 1})]
    assert not reqs and reqs.step() == []


def test_compaction_requests_each_get_a_pass_started_after_they_came():
    store = SlicedStore(1)
    reqs = CompactionRequests(store)
    reqs.add(["a"])
    assert reqs.step() == []
    reqs.add(["b"])  # during a's pass: a pass of its own, after it
    assert reqs.step() == [(["a"], {"files": 1})]
    assert reqs.step() == []
    assert reqs.step() == [(["b"], {"files": 2})]


def test_a_compaction_that_cannot_run_fails_its_request_only():
    store = SlicedStore(1)
    store.fail = DurabilityError("the store refuses writes")
    reqs = CompactionRequests(store)
    reqs.add(["a"])
    reqs.add(["b"])
    assert reqs.step() == [(["a"], store.fail)]
    store.fail = None
    assert reqs.step() == [] and reqs.step() == [(["b"], {"files": 1})]


def test_an_unexpected_error_fails_the_snapshot_requests_not_the_loop():
    store = FakeStore()
    snaps = SnapshotRequests(store)
    snaps.add(["a"])
    snaps.poll()
    snaps.add(["b"])

    def broken(pid):
        raise KeyError("a bug")

    store.snapshot_done = broken
    answered = snaps.poll()
    assert [f for f, _ in answered] == [["a"], ["b"]] and not snaps
    assert all("internal error in snapshot" in str(err) for _, err in answered)
