"""The typed errors of snapshot reading and of the recovery policy.

Each error carries the file (`path`) and the byte offset (`offset`) it is
about, plus a `reason`, and its message tells the operator what to do next.
Damage subclasses the public `inmem.errors.CorruptionError`, so code that
catches the public class also catches damage found during recovery.
"""

from __future__ import annotations

import os

from inmem.errors import CorruptionError as _PublicCorruptionError
from inmem.errors import InmemError


class SnapshotError(InmemError):
    """A snapshot file that this build cannot load."""


class SnapshotCorrupt(SnapshotError, _PublicCorruptionError):
    """A snapshot file whose bytes are damaged: bad magic, bad length, bad crc32c."""

    _fields = ("path", "offset", "reason")

    def __init__(self, path, offset: int, reason: str):
        path = os.fspath(path)
        super().__init__(
            f"snapshot {path} is damaged at byte offset {offset}: {reason}. "
            f"Recovery renames such a file to *.broken.N (kept as evidence) and falls "
            f"back to an older snapshot plus the WAL; run `inmem snapshot verify "
            f"{path}` to see its sections, and keep the file for diagnosis.",
            path=path, offset=offset, reason=reason)

    def __reduce__(self):
        # Rebuild from the fields, not the message, so the error survives pickling
        # (a forked snapshot writer or a worker may send it to another process).
        return (type(self), (self.path, self.offset, self.reason))


class SnapshotUnsupported(SnapshotError):
    """A snapshot whose checksum is good but whose format version or flags this build does not know.

    Such a file was written by another (usually newer) inmem. It is not damage,
    so recovery never renames it to *.broken.N or silently falls back past it.
    """

    _fields = ("path", "offset", "reason", "version")

    def __init__(self, path, offset: int, reason: str, version: int):
        path = os.fspath(path)
        super().__init__(
            f"snapshot {path} cannot be read by this build: {reason}. It was written "
            f"by a different inmem release; run that release (or a newer one) on this "
            f"data directory, or move the file aside to recover from an older snapshot.",
            path=path, offset=offset, reason=reason, version=version)

    def __reduce__(self):
        return (type(self), (self.path, self.offset, self.reason, self.version))


class CorruptionError(_PublicCorruptionError):
    """Damaged WAL records before the tail that the recovery policy may not skip."""

    _fields = ("path", "offset", "reason")

    def __init__(self, path, offset: int, reason: str):
        path = os.fspath(path)
        super().__init__(
            f"WAL corruption in {path} at byte offset {offset}: {reason}. Recovery "
            f"stopped without changing anything. Keep a copy of the data directory; "
            f"to start anyway, raise max_corrupt_entries to skip the damaged records "
            f"(their operations are lost; see recovery.policy).",
            path=path, offset=offset, reason=reason)

    def __reduce__(self):
        return (type(self), (self.path, self.offset, self.reason))


class WalGapError(_PublicCorruptionError):
    """A WAL segment is missing between the snapshot position and the log's end.

    `offset` is the WAL position (LSN) where the log should have continued.
    """

    _fields = ("path", "offset", "reason")

    def __init__(self, path, offset: int, reason: str):
        path = os.fspath(path)
        super().__init__(
            f"WAL gap in {path}: no record at position {offset} ({reason}). Records "
            f"after the snapshot are missing, so replaying would silently drop "
            f"writes. Restore the missing segment files from a backup, or move the "
            f"data directory aside and start empty.",
            path=path, offset=offset, reason=reason)

    def __reduce__(self):
        return (type(self), (self.path, self.offset, self.reason))


class PolicyInputError(ValueError):
    """Inputs to the recovery policy that describe an impossible situation."""


class PolicyTableError(RuntimeError):
    """The recovery decision table matched zero or several cases: a bug in the table."""
