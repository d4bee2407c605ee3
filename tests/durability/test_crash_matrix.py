"""Every named crash point in every durability mode, in a real child process.

Each case runs `crash_child.py` with one failpoint armed, lets it die there
(or, for the points inside the forked snapshot writer, lets the snapshot
fail while the store keeps serving), reopens the directory in this process
and checks the crash suite's invariants (see `harness.verify_reopen`).

A case passes only if its point really fired: exit code 77 from the store's
own process, or the failpoint's line on stderr from a snapshot child. A point
registered in `KNOWN_FAILPOINTS` without a plan here fails the suite, so the
matrix cannot silently shrink or miss a new point.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import shard.durable  # noqa: F401  (imports every module that registers a failpoint)
from inmem.shard.history_compaction import POINTS as COMPACTION_POINTS
from inmem.wal.failpoints import KNOWN_FAILPOINTS

from . import harness, test_history_compaction

pytestmark = [pytest.mark.slow]

OPS = 600


@dataclass(frozen=True)
class Plan:
    """How to reach a point: hits to let pass per mode, and where it fires."""

    skip: dict
    in_snapshot_child: bool = False
    #: crashed by a suite of its own, whose workload reaches it (this one does not)
    elsewhere: str | None = None


# With OPS ops, a manual snapshot every 90 and 4 KiB segments (about 60 records
# each), the skips below put every crash in the middle of the workload: after
# segments rolled and snapshots and WAL deletions already happened.
PLANS = {
    # Strict writes once per op; buffered once per flush (16 pending or 5 ms),
    # and buffered children pace their ops so that a flush comes every few ops.
    "wal.before_write": Plan({"strict": 100, "buffered": 8}),
    "wal.after_write_before_fsync": Plan({"strict": 100, "buffered": 8}),
    "wal.after_fsync": Plan({"strict": 100, "buffered": 8}),
    # Rolls: one per full segment and one per snapshot.
    "wal.before_roll": Plan({"strict": 3, "buffered": 3}),
    "wal.after_roll": Plan({"strict": 3, "buffered": 3}),
    # Deletions: after each snapshot that leaves whole segments behind it.
    "wal.before_delete": Plan({"strict": 1, "buffered": 1}),
    "wal.after_delete": Plan({"strict": 1, "buffered": 1}),
    "snapshot.before_fork": Plan({"strict": 2, "buffered": 2}),
    "snapshot.before_wal_delete": Plan({"strict": 1, "buffered": 1}),
    # History retention: before each WAL deletion, the segments the run's
    # history still names are linked into history/.
    "history.before_retain": Plan({"strict": 1, "buffered": 1}),
    "history.after_retain": Plan({"strict": 1, "buffered": 1}),
    "snapshot.after_wal_delete": Plan({"strict": 1, "buffered": 1}),
    # Inside the forked writer: hit counts start from the parent's (zero) in
    # every child, so skip 0; every snapshot from then on fails.
    "snapshot.child_written": Plan({"strict": 0, "buffered": 0}, in_snapshot_child=True),
    "snapshot.before_rename": Plan({"strict": 0, "buffered": 0}, in_snapshot_child=True),
    "snapshot.after_rename": Plan({"strict": 0, "buffered": 0}, in_snapshot_child=True),
    # Retention deletes only from the third snapshot on: two succeed first.
    "snapshot.before_retention_delete": Plan({"strict": 0, "buffered": 0},
                                             in_snapshot_child=True),
    # History compaction needs runs deleted and their files out of the WAL; its
    # crash suite checks replay, at= and diff after a crash at each step.
    **{point: Plan({}, elsewhere="test_history_compaction") for point in COMPACTION_POINTS},
}

# The points the durability issue names; the modules must keep registering them.
REQUIRED = {
    "wal.before_write", "wal.after_write_before_fsync", "wal.after_fsync", "wal.before_roll",
    "wal.after_roll", "wal.before_delete", "wal.after_delete", "snapshot.before_rename",
    "snapshot.after_rename", "snapshot.before_retention_delete", "snapshot.before_fork",
    "snapshot.child_written", "snapshot.before_wal_delete", "snapshot.after_wal_delete",
}

# (point, mode) pairs that cannot fire, with the reason. None today: every
# point is on a path both durable modes take.
MODES = ("buffered", "strict")


def test_every_required_point_is_registered():
    missing = REQUIRED - set(KNOWN_FAILPOINTS)
    assert not missing, f"failpoints no longer registered: {sorted(missing)}"


def test_every_registered_point_has_a_plan():
    unplanned = [p for p in KNOWN_FAILPOINTS if p not in PLANS]
    assert not unplanned, f"add a crash plan for {unplanned} in {__name__}.PLANS"


def test_every_point_crashed_elsewhere_is_in_that_suite():
    suites = {"test_history_compaction": test_history_compaction.CRASH_POINTS}
    for point, plan in PLANS.items():
        if plan.elsewhere:
            assert point in suites[plan.elsewhere], (point, plan.elsewhere)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("point", [p for p in KNOWN_FAILPOINTS
                                   if p not in PLANS or not PLANS[p].elsewhere])
def test_crash_at_point(point, mode, tmp_path):
    plan = PLANS.get(point)
    assert plan is not None, f"no crash plan for {point}"
    data = tmp_path / "data"
    pace_us = 200 if mode == "buffered" else 0
    child = harness.run_child(data, tmp_path / "logs", mode, "--ops", OPS, "--pace-us", pace_us,
                              failpoint=point, skip=plan.skip[mode])
    assert child.fired(point), f"{point} did not fire in {mode} mode: {child.describe()}"
    assert child.has("ready"), child.describe()
    if plan.in_snapshot_child:
        # The snapshot failed in its child; the store itself went on serving.
        assert child.returncode == 0, child.describe()
        assert child.has("done"), child.describe()
        first_fail = child.lines.index("snapfail")
        assert any(x.startswith("ack ") for x in child.lines[first_fail:]), (
            f"nothing was acknowledged after the failed snapshot: {child.describe()}")
        assert child.acks == {0: OPS}
    else:
        assert child.returncode == harness.FAILPOINT_EXIT, child.describe()
        assert not child.has("done"), (
            f"{point} fired only after the workload: move its skip earlier. {child.describe()}")
    recovered = harness.verify_reopen(data, mode, child, lanes=1)
    if plan.in_snapshot_child:
        assert recovered == {0: OPS}
    harness.continue_and_reopen(data, mode, recovered)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("end", ["close", "abandon"])
def test_no_failpoint_baseline(mode, end, tmp_path):
    """The harness itself: a run that ends by closing loses nothing, one that just
    exits loses at most the buffered tail."""
    data = tmp_path / "data"
    child = harness.run_child(data, tmp_path / "logs", mode, "--ops", 300, "--end", end)
    assert child.returncode == 0 and child.has("done"), child.describe()
    assert child.acks == {0: 300}
    recovered = harness.verify_reopen(data, mode, child, lanes=1)
    if end == "close" or mode == "strict":
        assert recovered == {0: 300}
    harness.continue_and_reopen(data, mode, recovered)
