"""A read-only pass that decodes a shard's files as opening would, for the operator's tools.

`inmem wal inspect` and `inmem snapshot verify` check the format (headers,
lengths, crc32c). A record or a section whose checksum holds can still hold
contents this build does not write, and opening refuses those
(RecordContentError, SnapshotContentError, SnapshotUnsupported). The tools
must say the same, so they hand the contents to the same kind of recovery
target that opening uses (`RecoveryTarget`, built by the caller above this
layer on a scratch engine), through the same calls, and turn what it raises
into the same typed errors, naming the file and the offset.

Nothing here writes: no lock is taken, no snapshot is set aside, no torn
tail is cut, no directory is made. Records are fed block by block as the
WAL reader hands them out, so a large log is never held whole.
"""

from __future__ import annotations

import os

from inmem.recovery.errors import (RecordContentError, SnapshotCorrupt, SnapshotError,
                                   UnreadableContent, describe)
from inmem.recovery.sequence import RecoveryTarget, _load_snapshot
from inmem.recovery.snapshot_format import Snapshot, read_snapshot_file
from inmem.recovery.snapshot_store import SnapshotStore


def check_snapshot(snap: Snapshot, target: RecoveryTarget) -> SnapshotError | None:
    """Load `snap`'s sections into `target` (empty) as opening does; the error opening would
    raise (SnapshotContentError or SnapshotUnsupported, naming the file and the section's
    offset), or None when they load."""
    try:
        _load_snapshot(target, snap)
    except SnapshotError as exc:
        return exc
    return None


def newest_snapshot(directory) -> tuple[Snapshot | None, list[str]]:
    """The snapshot opening would start from in `directory` (its snapshots/ directory), read
    only: the newest one whose checksum and name hold. Also the names of newer ones opening
    would set aside as damaged. SnapshotUnsupported propagates, as it stops opening."""
    sdir = os.path.join(os.fspath(directory), "snapshots")
    if not os.path.isdir(sdir):
        return None, []
    skipped = []
    for info in SnapshotStore(sdir).list():
        try:
            snap = read_snapshot_file(info.path, verify=True)
        except SnapshotCorrupt:
            skipped.append(os.path.basename(info.path))
            continue
        if (snap.header.wal_position, snap.header.created_at) != (info.wal_position,
                                                                  info.timestamp):
            skipped.append(os.path.basename(info.path))
            continue
        return snap, skipped
    return None, skipped


class RecordCheck:
    """Feeds WAL records from `start_lsn` on to a recovery target, and keeps the first refusal.

    `feed` takes the blocks a `WalReader` hands out (`placed_blocks`), with
    the segment's path; records before `start_lsn` (held by the snapshot the
    target was loaded from) are not checked, as opening does not apply them.
    After a refusal the state behind it is unknown, so nothing more is fed.
    """

    def __init__(self, target: RecoveryTarget, start_lsn: int = 0, start: str = "no snapshot"):
        self.target = target
        self.start_lsn = start_lsn
        #: what the state the records are applied to comes from, for the report
        self.start = start
        self.records = 0
        self.groups = 0
        #: RecordContentError (or the error applying raised) of the first refused record
        self.error: Exception | None = None
        #: the LSN of the refused record
        self.error_lsn: int | None = None

    def feed(self, first: int, payloads: list, path: str, segment: int, offsets: list) -> None:
        """Apply one block of records (the first has LSN `first`) of the segment at `path`."""
        if self.error is not None:
            return
        skip = self.start_lsn - first
        if skip >= len(payloads):
            return
        if skip > 0:
            first, payloads, offsets = first + skip, payloads[skip:], offsets[skip:]
        try:
            self.groups += self.target.apply_records(payloads, segment, offsets)
        except UnreadableContent as exc:
            index = exc.index or 0
            self.error = RecordContentError(path, offsets[index], exc.reason)
            self.error_lsn = first + index
            self.records += index  # the block's records before it were decoded and applied
            return
        except MemoryError:
            raise
        except Exception as exc:  # opening would fail on it too, untyped: say so, typed
            self.error = RecordContentError(path, offsets[0], f"applying the block of records "
                                            f"from here failed ({describe(exc)})")
            self.error_lsn = first
            return
        self.records += len(payloads)
