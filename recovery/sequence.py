"""The recovery sequence of one shard directory, and its report.

    1. remove `*.tmp` snapshot files a crash left mid-write;
    2. load the newest snapshot whose crc verifies (a bad one becomes
       `*.broken.N`, the next older one is tried);
    3. replay the WAL from the snapshot's position, handing the records to
       the target in blocks (the shard decodes a block and applies it through
       its live apply path);
    4. ask the policy table (`recovery.policy`) what the findings mean: go on,
       cut a torn tail (after keeping a numbered, fsynced `*.broken.N` copy),
       or fail with a CorruptionError naming the file and offset (a record
       or a snapshot whose checksum holds but whose contents the target
       cannot use fails too, as RecordContentError or SnapshotContentError);
    5. let the target mark the runs left active as orphaned and schedule the
       rebuild of its indexes (they are never stored; the shard rebuilds them
       after it reports ready, so readiness never waits for them), and fill a
       RecoveryResult.

The sequence reads files and decides what their state means; what the bytes
become is the target's business (a `RecoveryTarget`, provided by the shard
layer above), so this layer never imports the engine.

Directory layout of a shard: `<dir>/wal/` segments, `<dir>/snapshots/` files.
Both directories are created 0700 and fsynced (with their parent) before
anything is written in them; a zero tail that a crash left in the newest WAL
segment is cut off by the WAL writer that opens the log next.
"""

from __future__ import annotations

from typing import Protocol

import gc
import logging
import os
import sys
import time

from inmem.errors import CorruptionError as PublicCorruptionError
from inmem.files import keep_evidence_copy, make_dirs
from inmem.types import RecoveryResult
from inmem.recovery import policy
from inmem.recovery.errors import (RecordContentError, SnapshotContentError,
                                   SnapshotUnsupported, UnreadableContent)
from inmem.recovery.snapshot_store import SnapshotStore
from inmem.wal.reader import CleanEnd, Corruption, TornTail, WalReader
from inmem.wal.segment import list_segments

log = logging.getLogger("inmem.recovery")

PROGRESS_AFTER_S = 1.0


class _Progress:
    """Shows progress once a recovery has run longer than a second."""

    def __init__(self, label: str, total_bytes: int):
        self.label = label
        self.total = max(total_bytes, 1)
        self.t0 = time.monotonic()
        self.last = self.t0
        self.shown = False
        self.tty = sys.stderr.isatty()

    def update(self, done_bytes: int, records: int) -> None:
        now = time.monotonic()
        if now - self.t0 < PROGRESS_AFTER_S or now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last = now
        self.shown = True
        frac = min(done_bytes / self.total, 1.0)
        if self.tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label}: [{bar:<30}] {frac:4.0%} {records} records")
            sys.stderr.flush()
        else:
            log.info("%s: %.0f%% (%d records, %.1f s)", self.label, frac * 100, records,
                     now - self.t0)

    def done(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")


def wal_dir(directory) -> str:
    return os.path.join(os.fspath(directory), "wal")


def snapshot_dir(directory) -> str:
    return os.path.join(os.fspath(directory), "snapshots")


def _dir_bytes(path: str) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
    except FileNotFoundError:
        return 0


class RecoveryTarget(Protocol):
    """What recovery rebuilds: the shard's state, fed the files' contents in log order."""

    def load_snapshot(self, sections: dict) -> None: ...

    def apply_records(self, payloads: list, segment: int | None = None,
                      offsets: list | None = None) -> int:
        """Apply a block of WAL records, in log order; return how many committed groups they held.

        `segment` (the first LSN of the segment file the block is in) and
        `offsets` (where each record's header starts in it) say where the
        records sit, for a target that points at them instead of keeping them.
        """

    def mark_orphans(self) -> list: ...

    def schedule_index_rebuild(self) -> None:
        """The indexes are rebuilt from the recovered state, after recovery returns."""


def recover(directory, target: RecoveryTarget, *, shard: int = 0, max_corrupt_entries: int = 0,
            snapshot_retention: int = 2):
    """Rebuild `target` (empty) from `directory`.

    Returns (RecoveryResult, next_lsn, store, case, log_end): `log_end` is
    (newest segment's path, offset after its last record, LSN after it) when
    the WAL was read to a clean end with nothing skipped, so that a writer
    can continue it without reading it again (`WalWriter(log_end=...)`);
    None otherwise.
    """
    started_at = time.time_ns() // 1000
    t0 = time.perf_counter()
    # Recovery allocates millions of objects that all survive: without this
    # the cyclic GC would walk them again and again while they are created.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _recover(directory, target, shard, max_corrupt_entries, snapshot_retention,
                        started_at, t0)
    finally:
        if gc_was_enabled:
            gc.enable()


def _recover(directory, target, shard, max_corrupt_entries, snapshot_retention, started_at, t0):
    wdir, sdir = wal_dir(directory), snapshot_dir(directory)
    wal_missing = not os.path.lexists(wdir)
    make_dirs(sdir, tighten=True)
    store = SnapshotStore(sdir, retention=snapshot_retention)
    store.cleanup_tmp()
    any_snapshot = bool(store.list())
    if wal_missing and any_snapshot:
        # A store that took a snapshot has had a WAL directory ever since, holding
        # what was written after the snapshot: opening from the snapshot alone
        # would drop those writes without a word.
        raise PublicCorruptionError(
            f"the WAL directory {wdir} is missing, though the store has snapshots: the "
            "writes after the newest snapshot were in it (a restore that left it out?). "
            "Restore it, or make the empty directory to open the store from its newest "
            "snapshot alone", path=wdir, offset=0, skippable=False)
    make_dirs(wdir, tighten=True)
    snap, broken = store.load_newest_valid()
    start_lsn = 0
    snapshot_used = None
    if snap is not None:
        _load_snapshot(target, snap)
        start_lsn = snap.wal_position
        snapshot_used = os.path.abspath(snap.path)

    progress = _Progress(f"shard {shard} recovery", _dir_bytes(wdir))
    reader = WalReader(wdir, start_lsn=start_lsn, max_corrupt_entries=max_corrupt_entries)
    segments = list_segments(wdir)
    first_lsn = segments[0][0] if segments else None
    # Found before replay, not after: the records behind a gap would be applied
    # to a state that lacks their predecessors (the engine rejects them with an
    # unrelated error, or worse, accepts them), where the policy must say WAL gap.
    gap = first_lsn is not None and first_lsn > start_lsn
    apply = target.apply_records
    records = groups_applied = done_bytes = 0
    for _first, _rtypes, payloads, segment, offsets in (() if gap else reader.placed_blocks()):
        try:
            groups_applied += apply(payloads, segment, offsets)
        except UnreadableContent as exc:
            at = offsets[exc.index or 0] if offsets else 0
            raise RecordContentError(reader.segment, at, exc.reason) from exc
        records += len(payloads)
        done_bytes += sum(map(len, payloads))
        progress.update(done_bytes, records)
    progress.done()

    outcome = reader.outcome
    corruption = isinstance(outcome, Corruption)
    case = policy.decide(
        newest_snapshot_ok=snap is not None and not broken,
        older_snapshot_ok=snap is not None and bool(broken),
        any_snapshot=any_snapshot,
        wal_tail_torn=isinstance(outcome, TornTail),
        corruption_before_tail=corruption or reader.corrupt_skipped > 0,
        corrupt_within_budget=reader.corrupt_skipped <= max_corrupt_entries and not corruption,
        wal_gap=gap,
    )
    if case.fails:
        where = outcome if corruption else None
        path = where.segment if where else wdir
        offset = where.offset if where else 0
        reason = where.reason if where else (
            f"the WAL starts at record {first_lsn} but the state needs it from {start_lsn}"
            f"{_damaged_snapshots(sdir, broken)}")
        case.raise_failure(path=path, offset=offset, reason=reason,
                           skippable=where.skippable if where else True)

    truncated = 0
    if isinstance(outcome, TornTail):
        truncated = _cut_torn_tail(outcome)
    orphans = target.mark_orphans()
    t_index = time.perf_counter()
    target.schedule_index_rebuild()
    index_seconds = time.perf_counter() - t_index
    finished_at = time.time_ns() // 1000
    result = RecoveryResult(
        shard=shard, snapshot_used=snapshot_used, records_replayed=records,
        transactions_recovered=groups_applied, corrupt_records_skipped=reader.corrupt_skipped,
        tail_truncated_bytes=truncated, orphaned_runs=orphans,
        seconds=round(time.perf_counter() - t0, 6), started_at=started_at,
        finished_at=finished_at, index_seconds=round(index_seconds, 6))
    log.info("shard %d recovered: snapshot %s, %d records, %d truncated bytes, %d orphaned runs",
             shard, snapshot_used, records, truncated, len(orphans))
    log_end = None
    if (isinstance(outcome, CleanEnd) and not reader.corrupt_skipped and reader.segment
            and segments and reader.segment == segments[-1][1]):
        log_end = (reader.segment, reader.end_offset, reader.next_lsn)
    return result, max(reader.next_lsn, start_lsn), store, case, log_end


def _damaged_snapshots(sdir: str, broken: list) -> str:
    """A clause naming the snapshots set aside as damaged, now or at an earlier open, if any.

    With them gone the WAL below their position (let go once they were
    durable) is missing: they, not the WAL, are what was damaged.
    """
    try:
        names = {n for n in os.listdir(sdir) if ".snap.broken" in n}
    except OSError:
        names = set()
    names.update(os.path.basename(p) for p in broken)
    if not names:
        return ""
    return (f"; the snapshot(s) that held the state before it failed verification and "
            f"were set aside as {', '.join(sorted(names))} in {sdir}")


def _load_snapshot(target, snap) -> None:
    """Hand the snapshot's sections to the target; a typed error naming the file if they do not load."""
    try:
        target.load_snapshot(snap.sections)
    except UnreadableContent as exc:
        offset = snap.section_offsets.get(exc.section, 0)
        if exc.version is not None:
            raise SnapshotUnsupported(snap.path, offset, exc.reason, exc.version) from exc
        raise SnapshotContentError(snap.path, offset, exc.reason) from exc


def _cut_torn_tail(torn: TornTail) -> int:
    """Keep a durable *.broken.N copy of the segment, then truncate it at the torn record."""
    path = torn.segment
    size = os.path.getsize(path)
    cut = size - torn.offset
    if cut <= 0:
        return 0
    # The copy is durable before the cut: a crash between them must not lose both.
    copy = keep_evidence_copy(path)
    with open(path, "r+b") as f:
        f.truncate(torn.offset)
        f.flush()
        os.fsync(f.fileno())
    log.warning("cut a torn tail of %d bytes from %s (copy kept as %s)", cut, path, copy)
    return cut
