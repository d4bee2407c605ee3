"""A shard's directory of snapshot files: atomic creation, retention, fallback loading.

File names are `snap-<wal_position, 20 digits>-<created_at µs, 20 digits>.snap`.
Both numbers are zero-padded to the width of a u64, so sorting names sorts by
WAL position and then by time: name order is age order. Other names in the
directory are left alone; `*.snap.tmp` is an unfinished write and
`*.snap.broken.N` a file that failed verification, kept as evidence (numbered
from 1, never replacing older evidence; older releases wrote `*.snap.broken`).
Snapshot files are 0600 and the directory 0700 (see `inmem.files`).

Creating a snapshot is atomic: write `<name>.tmp`, fsync it, rename it to
`<name>`, fsync the directory. A crash at any point leaves either no new
snapshot (and a `.tmp` for `cleanup_tmp`) or a complete, durable one.

`write` starts no thread and takes no lock, so a single-threaded shard may
fork() and call it in the child, as Redis does for BGSAVE. The child should
then leave with os._exit so that it does not flush buffers it inherited.

The WAL may drop records below `oldest_retained_position()` and no further:
if the newest snapshot turns out to be damaged, recovery falls back to an
older one and needs every WAL record from that one's position onwards.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from inmem.files import fsync_dir, make_dirs, move_to_evidence, open_private
from inmem.recovery.errors import SnapshotCorrupt
from inmem.recovery.snapshot_format import Snapshot, read_snapshot_file, write_snapshot_file

try:
    from inmem.wal import failpoints as _failpoints
except ImportError:
    _failpoints = None

FAILPOINTS = ("snapshot.before_rename", "snapshot.after_rename", "snapshot.before_retention_delete")

if _failpoints is not None:
    _failpoint = _failpoints.failpoint
    for _name in FAILPOINTS:
        _failpoints.register(_name)
else:
    def _failpoint(name: str) -> None:
        """No failpoint module in this build: crash points do nothing."""

_NAME = re.compile(r"^snap-(\d{20})-(\d{20})\.snap$")
TMP_SUFFIX = ".tmp"
_POSITION_MAX = 10 ** 20 - 1


def snapshot_name(wal_position: int, created_at: int) -> str:
    """The file name for a snapshot covering the WAL below `wal_position`."""
    return f"snap-{wal_position:020d}-{created_at:020d}.snap"


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot file as the directory listing shows it (not yet verified)."""

    path: str
    wal_position: int
    timestamp: int
    bytes: int


def _now_us() -> int:
    return time.time_ns() // 1000


class SnapshotStore:
    """The snapshot files of one shard, in one directory."""

    def __init__(self, directory, retention: int = 2):
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
            raise ValueError(f"snapshot retention must be an int >= 1, got {retention!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.retention = retention
        make_dirs(self.directory)

    # -- writing ----------------------------------------------------------

    def write(
        self,
        *,
        wal_position: int,
        shard: int,
        counts: Mapping[str, int],
        sections: Sequence[tuple[int, bytes]],
        created_at: int | None = None,
        before_publish=None,
    ) -> SnapshotInfo:
        """Write a snapshot atomically and durably, then apply retention.

        `before_publish`, if given, is called once the file is durable under
        its temporary name and before it takes its final one; if it raises,
        the temporary file is removed and nothing is published.
        """
        if created_at is None:
            created_at = _now_us()
        # The file name holds both numbers in 20 digits; the format checks the rest.
        for label, value in (("wal_position", wal_position), ("created_at", created_at)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _POSITION_MAX:
                raise ValueError(f"{label} must be an int in [0, {_POSITION_MAX}], got {value!r}")
        final = os.path.join(self.directory, snapshot_name(wal_position, created_at))
        tmp = final + TMP_SUFFIX
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            with open(fd, "wb") as f:
                size = write_snapshot_file(f, created_at=created_at, wal_position=wal_position,
                                           shard=shard, counts=counts, sections=sections)
                f.flush()
                os.fsync(f.fileno())
            if before_publish is not None:
                before_publish()
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _failpoint("snapshot.before_rename")
        os.rename(tmp, final)
        _failpoint("snapshot.after_rename")
        fsync_dir(self.directory)
        self.apply_retention()
        return SnapshotInfo(final, wal_position, created_at, size)

    def apply_retention(self) -> list[str]:
        """Delete the oldest snapshots beyond `retention`; return the deleted paths."""
        doomed = self.list()[self.retention:]
        if not doomed:
            return []
        _failpoint("snapshot.before_retention_delete")
        deleted = []
        for info in doomed:
            try:
                os.unlink(info.path)
            except FileNotFoundError:
                continue
            deleted.append(info.path)
        fsync_dir(self.directory)
        return deleted

    # -- reading ----------------------------------------------------------

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot file, newest first; `.tmp` and `.broken.N` files are not listed."""
        infos = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = _NAME.match(entry.name)
                if match is None:
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue
                infos.append(SnapshotInfo(entry.path, int(match.group(1)), int(match.group(2)), size))
        infos.sort(key=lambda info: (info.wal_position, info.timestamp), reverse=True)
        return infos

    def newest(self) -> SnapshotInfo | None:
        infos = self.list()
        return infos[0] if infos else None

    def oldest_retained_position(self) -> int:
        """The WAL may delete records with LSN below this, and none at or above it.

        0 when there is no snapshot: then the WAL is the only copy of the data.
        """
        infos = self.list()
        return min(info.wal_position for info in infos) if infos else 0

    def load_newest_valid(self) -> tuple[Snapshot | None, list[str]]:
        """Load the newest snapshot that verifies, falling back to older ones.

        A file that fails verification is renamed to `<name>.broken.N` and its
        new path is returned in the second element. A file written by another
        format version raises SnapshotUnsupported: it is not damage, and
        skipping it would silently recover an older state.
        """
        broken: list[str] = []
        for info in self.list():
            try:
                snap = read_snapshot_file(info.path, verify=True)
                if (snap.header.wal_position, snap.header.created_at) != (info.wal_position, info.timestamp):
                    # Retention and WAL deletion trust the name, so a name that
                    # disagrees with the verified header cannot be used.
                    raise SnapshotCorrupt(
                        info.path, 12,
                        f"the header says wal_position {snap.header.wal_position}, created_at "
                        f"{snap.header.created_at}, but the file name says {info.wal_position}, "
                        f"{info.timestamp}")
            except SnapshotCorrupt:
                broken.append(self._quarantine(info.path))
                continue
            return snap, broken
        return None, broken

    # -- housekeeping -----------------------------------------------------

    def _quarantine(self, path: str) -> str:
        return move_to_evidence(path)

    def cleanup_tmp(self) -> list[str]:
        """Remove `.tmp` files left by a crash mid-write; return their paths.

        Call it at startup, before any snapshot is being written (a forked
        writer's `.tmp` file looks the same as a crashed one's).
        """
        removed = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if (name.endswith(TMP_SUFFIX) and _NAME.match(name[:-len(TMP_SUFFIX)])
                        and not entry.is_dir(follow_symlinks=False)):  # a directory is not ours
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    removed.append(entry.path)
        if removed:
            fsync_dir(self.directory)
        return sorted(removed)
