"""The parent side of the crash tests: start the child driver, reap it, and judge what recovered.

`run_child` starts `crash_child.py` in its own session (process group), so
that a snapshot child it forked is killed and waited for along with it: a
leftover writer would hold the directory lock and race the reopen.
`verify_reopen` opens the directory the way a restarted shard would and
checks every invariant of the crash suite; `continue_and_reopen` then
proves the recovered store takes writes and recovers again cleanly.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import psutil

import inmem
from inmem.wal.reader import WalReader
from polling import wait_for

from . import workload

CHILD = Path(__file__).with_name("crash_child.py")
FAILPOINT_EXIT = 77
ZERO_HASH = bytes(32)
# What the parent opens with: the child's tiny segments, no background snapshot.
REOPEN_OPTIONS = {"segment_bytes_max": 4096}


@dataclass
class ChildRun:
    """What a finished (or killed) child left: exit status, its lines, its acks per lane."""

    returncode: int
    stdout: str
    stderr: str
    acks: dict = field(default_factory=dict)   # lane -> ops acknowledged (0..n-1)
    lines: list = field(default_factory=list)  # complete stdout lines, in order

    def fired(self, point: str) -> bool:
        return f"failpoint {point} hit" in self.stderr

    def has(self, line: str) -> bool:
        return any(x == line or x.startswith(line + " ") for x in self.lines)

    def describe(self) -> str:
        tail = "\n".join(self.lines[-5:])
        return (f"exit {self.returncode}; acks {self.acks}; last lines:\n{tail}\n"
                f"stderr:\n{self.stderr[-3000:]}")


def child_env(failpoint: str | None = None, skip: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INMEM_FAILPOINT")}
    if failpoint is not None:
        env["INMEM_FAILPOINT"] = failpoint
        env["INMEM_FAILPOINT_SKIP"] = str(skip)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_child(directory, logs: Path, *args, env: dict) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    # Files, not pipes: a child acknowledging thousands of ops never blocks on a
    # full pipe, and whatever it wrote before dying is still there to read.
    with open(logs / "stdout", "ab") as out, open(logs / "stderr", "ab") as err:
        return subprocess.Popen(
            [sys.executable, str(CHILD), os.fspath(directory), *map(str, args)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True)


def _group_alive(pgid: int) -> bool:
    """True while a process of the group still runs (zombies hold no files)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return False


def kill_group(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGKILL the child and everything it forked; wait until they are all gone."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of group {pgid} survived SIGKILL")
        time.sleep(0.01)


def read_run(proc: subprocess.Popen, logs: Path) -> ChildRun:
    raw = (logs / "stdout").read_bytes().decode(errors="replace")
    # A line cut by the kill has no newline: it was never fully acknowledged.
    complete = raw[:raw.rfind("\n") + 1] if "\n" in raw else ""
    lines = complete.splitlines()
    acks: dict[int, int] = {}
    for line in lines:
        if line.startswith("ack "):
            _, lane, i = line.split()
            lane, i = int(lane), int(i)
            if i != acks.get(lane, 0):
                raise AssertionError(f"the driver acknowledged lane {lane} op {i} out of order")
            acks[lane] = i + 1
    stderr = (logs / "stderr").read_bytes().decode(errors="replace")
    return ChildRun(proc.returncode, raw, stderr, acks, lines)


def run_child(directory, logs: Path, mode: str, *args, failpoint: str | None = None,
              skip: int = 0, timeout_s: float = 30.0) -> ChildRun:
    """Run the driver to its end (or its failpoint), then reap its whole group."""
    proc = start_child(directory, logs, "--mode", mode, *args, env=child_env(failpoint, skip))
    try:
        proc.wait(timeout=timeout_s)
    finally:
        kill_group(proc)
    return read_run(proc, logs)


def wait_for_line(logs: Path, line: str, proc: subprocess.Popen, timeout_s: float = 15.0):
    target = (line + "\n").encode()
    path = logs / "stdout"

    def printed() -> bool:
        if path.exists() and target in path.read_bytes():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before {line!r}: "
                                 f"{(logs / 'stderr').read_text(errors='replace')[-3000:]}")
        return False

    wait_for(printed, timeout_s, f"the child to print {line!r}")


# -- the invariants ------------------------------------------------------------------


def _sorted_maps(value):
    if isinstance(value, dict):
        return {k: _sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted_maps(v) for v in value]
    return value


def event_hash(e) -> bytes:
    """The documented recipe, recomputed here so the engine is not its own judge."""
    body = [e.sequence, e.event_type, _sorted_maps(e.payload), e.timestamp, e.prev_hash]
    return hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()


def check_chain(db, run: str) -> int:
    count = db.events.count(run)
    check = db.events.verify_chain(run)
    assert check.valid and check.length == count, f"{run}: chain check {check}"
    prev = ZERO_HASH
    for seq, e in enumerate(db.events.range(run, 0, count)):
        assert e.sequence == seq, f"{run}: event {seq} has sequence {e.sequence}"
        assert e.prev_hash == prev, f"{run}: event {seq} does not link to its predecessor"
        assert e.hash == event_hash(e), f"{run}: event {seq} hash does not match its content"
        prev = e.hash
    return count


@dataclass
class DiskState:
    """What the directory held before the reopen, to judge the recovery report by."""

    snapshots: list    # *.snap names, oldest first
    wal_broken: set    # names of wal/*.broken.N
    segments: dict     # segment name -> size
    records_after_snapshot: int  # good WAL records at or after the newest snapshot

    @classmethod
    def of(cls, directory) -> "DiskState":
        directory = Path(directory)
        sdir, wdir = directory / "snapshots", directory / "wal"
        snaps = sorted(p.name for p in sdir.glob("*.snap")) if sdir.is_dir() else []
        broken = {p.name for p in wdir.glob("*.broken.*")} if wdir.is_dir() else set()
        segs = {p.name: p.stat().st_size for p in wdir.glob("*.wal")} if wdir.is_dir() else {}
        position = snapshot_position(snaps[-1]) if snaps else 0
        return cls(snaps, broken, segs, wal_records_from(directory, position))


def snapshot_position(name: str) -> int:
    # snap-<wal_position, 20 digits>-<created_at, 20 digits>.snap
    return int(name.split("-")[1])


def wal_records_from(directory, position: int) -> int:
    """How many good WAL records the directory holds at or after `position`."""
    reader = WalReader(Path(directory) / "wal", start_lsn=position)
    return sum(1 for _ in reader)


def check_report(db, directory, before: DiskState, ops_total: int, runs: list[str]):
    """The RecoveryResult agrees with what was on disk and what was recovered.

    `ops_total` is how many write operations the recovered state holds (each
    op commits one group; a WAL record holds one group or, batched, several).
    """
    (report,) = db.recovery_report()
    directory = Path(directory)
    assert report.shard == 0
    assert report.corrupt_records_skipped == 0, report
    assert report.seconds >= 0 and report.started_at <= report.finished_at, report
    if before.snapshots:
        newest = before.snapshots[-1]
        assert report.snapshot_used == str((directory / "snapshots" / newest).resolve()), \
            f"recovery used {report.snapshot_used}, the newest valid snapshot is {newest}"
    else:
        assert report.snapshot_used is None, report
    assert report.records_replayed == before.records_after_snapshot, (
        f"{report.records_replayed} records replayed; the WAL held "
        f"{before.records_after_snapshot} after the snapshot")
    assert report.records_replayed <= report.transactions_recovered <= ops_total, (
        f"{report}: every record holds one group or more, and every group is one of the "
        f"{ops_total} ops the state holds")
    new_broken = {p.name for p in (directory / "wal").glob("*.broken.*")} - before.wal_broken
    if report.tail_truncated_bytes:
        assert len(new_broken) == 1, f"a cut tail must leave one *.broken.N copy: {new_broken}"
        (copy,) = new_broken
        segment = directory / "wal" / copy[:copy.rindex(".broken.")]
        cut = (directory / "wal" / copy).stat().st_size - segment.stat().st_size
        assert cut == report.tail_truncated_bytes, (cut, report)
    else:
        assert not new_broken, f"no tail was cut, yet {new_broken} appeared"
    assert sorted(report.orphaned_runs) == sorted(runs), report
    assert sorted(db.orphaned_runs()) == sorted(runs)
    return report


def verify_reopen(directory, mode: str, child: ChildRun, lanes: int) -> dict:
    """Reopen after a crash and check every invariant; return lane -> recovered ops.

    strict: every acknowledged op is there. buffered: a prefix of the
    acknowledged ops. Either way no op beyond the one in flight, no hole, no
    half transaction, a chain that verifies, and a report that adds up.
    After a clean close (the child printed "closed" or "close_error"),
    everything acknowledged must be there in both modes.
    """
    before = DiskState.of(directory)
    clean_close = child.has("closed") or child.has("close_error")
    ready = child.has("ready")
    recovered: dict[int, int] = {}
    db = inmem.open(directory, durability=mode, **REOPEN_OPTIONS)
    try:
        ops_total = 0
        runs = []
        for lane in range(lanes):
            acked = child.acks.get(lane, 0)
            n = workload.recovered_ops(db, lane)
            run = workload.lane_run(lane)
            if n is None:
                assert mode == "buffered" and not clean_close, (
                    f"{run} is gone, yet its creation was acknowledged ({mode}); "
                    f"{child.describe()}")
                recovered[lane] = 0
                continue
            ops_total += 1 + n
            runs.append(run)
            assert n <= acked + 1, f"{run}: {n} ops recovered, only {acked} + 1 were attempted"
            if mode == "strict" or clean_close:
                assert n >= acked, (f"{run}: {acked} ops acknowledged, {n} recovered "
                                    f"({mode}); {child.describe()}")
            assert db.run_status(run) == "orphaned", db.run_status(run)
            assert check_chain(db, run) == len(workload.expected(n)["events"])
            recovered[lane] = n
        if mode == "strict" and ready:
            assert len(runs) == lanes, "strict: a lane's run was acknowledged and lost"
        check_report(db, directory, before, ops_total, runs)
    finally:
        db.close()
    return recovered


def continue_and_reopen(directory, mode: str, recovered: dict, extra_ops: int = 12) -> None:
    """The recovered store takes new writes and recovers from them cleanly again."""
    with inmem.open(directory, durability=mode, **REOPEN_OPTIONS) as db:
        for lane, n in recovered.items():
            run = workload.begin(db, lane)
            for i in range(n, n + extra_ops):
                workload.apply_op(db, run, i)
            db.end_run(run)
    with inmem.open(directory, durability=mode, **REOPEN_OPTIONS) as db:
        (report,) = db.recovery_report()
        assert report.tail_truncated_bytes == 0 and report.corrupt_records_skipped == 0, report
        assert report.snapshot_used is not None, "a clean close writes a snapshot"
        assert report.orphaned_runs == [] and db.orphaned_runs() == []
        for lane, n in recovered.items():
            run = workload.lane_run(lane)
            assert workload.recovered_ops(db, lane) == n + extra_ops
            assert db.run_status(run) == "completed"
            check_chain(db, run)
