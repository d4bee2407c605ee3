"""Recovery: the snapshot file format, the snapshot directory, and the recovery policy.

- `recovery.snapshot_format` owns the bytes of a snapshot file (drawn in its
  docstring), its streaming writer, its checking reader and `snapshot verify`.
- `recovery.snapshot_store` owns a shard's `snapshots/` directory: atomic
  creation, retention, `.tmp` cleanup and fallback to older snapshots.
- `recovery.policy` owns the decision table that says what recovery does with
  what it found on disk.
- `recovery.errors` owns the typed errors all three raise.
"""

from inmem.recovery.errors import (
    CorruptionError,
    PolicyInputError,
    PolicyTableError,
    RecordContentError,
    SnapshotContentError,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotUnsupported,
    WalGapError,
)
from inmem.recovery.snapshot_format import (
    FORMAT_VERSION,
    MAGIC,
    Snapshot,
    SnapshotHeader,
    parse_snapshot,
    read_snapshot_file,
    verify_main,
    write_snapshot_file,
)
from inmem.recovery.snapshot_store import SnapshotInfo, SnapshotStore

__all__ = [
    "CorruptionError", "PolicyInputError", "PolicyTableError", "RecordContentError",
    "SnapshotContentError", "SnapshotCorrupt", "SnapshotError", "SnapshotUnsupported", "WalGapError",
    "FORMAT_VERSION", "MAGIC",
    "Snapshot", "SnapshotHeader", "parse_snapshot", "read_snapshot_file", "verify_main",
    "write_snapshot_file", "SnapshotInfo", "SnapshotStore",
]
