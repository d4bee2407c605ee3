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


class _FromFields:
    """Pickles (and copies) an error from its fields, not its message: the classes here
    take their fields as arguments (a forked snapshot writer or a worker may send one to
    another process)."""

    __slots__ = ()

    def __reduce__(self):
        return (type(self), tuple(getattr(self, f) for f in self._fields))


class SnapshotError(InmemError):
    """A snapshot file that this build cannot load."""

    #: a shard that fails its start with it fails the same way every time
    #: (see inmem.processes.lasting_failure)
    lasting = True


class SnapshotCorrupt(_FromFields, SnapshotError, _PublicCorruptionError):
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


class SnapshotUnsupported(_FromFields, SnapshotError):
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


class CorruptionError(_FromFields, _PublicCorruptionError):
    """Damaged WAL records before the tail that the recovery policy may not skip.

    `skippable`: a larger `max_corrupt_entries` would skip the damage (damaged
    records inside a segment); False for what no budget skips (a missing
    segment, a file that is not a segment, a record format this build does not
    read), and the message then does not offer the budget.
    """

    _fields = ("path", "offset", "reason", "skippable")

    def __init__(self, path, offset: int, reason: str, skippable: bool = True):
        path = os.fspath(path)
        if skippable:
            advice = ("to start anyway, raise max_corrupt_entries to skip the damaged records "
                      "(their operations are lost; see recovery.policy)")
        else:
            advice = ("max_corrupt_entries does not skip this (it skips damaged records "
                      "inside a segment only): do what the reason above says, or restore the "
                      "WAL directory from a backup")
        super().__init__(
            f"WAL corruption in {path} at byte offset {offset}: {reason}. Recovery "
            f"stopped without changing anything. Keep a copy of the data directory; "
            f"{advice}.",
            path=path, offset=offset, reason=reason, skippable=skippable)


class WalGapError(_FromFields, _PublicCorruptionError):
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


class RecordContentError(_FromFields, _PublicCorruptionError):
    """A WAL record whose crc32c verifies but whose payload is not operations this build applies.

    A crash cannot write such a record and a damaged one fails its checksum,
    so it comes from a different or faulty release, or from a file put in the
    WAL directory by hand. It is never skipped (`max_corrupt_entries` counts
    damage the checksum caught): what it says is unknown.
    """

    _fields = ("path", "offset", "reason")

    def __init__(self, path, offset: int, reason: str):
        path = os.fspath(path)
        super().__init__(
            f"WAL record in {path} at byte offset {offset} passes its crc32c but does not "
            f"hold operations this build can apply: {reason}. It was written by a different "
            f"or faulty inmem release, or the file does not belong to this store. Recovery "
            f"stopped; keep a copy of the data directory, and open it with the release that "
            f"wrote it.",
            path=path, offset=offset, reason=reason)


class SnapshotContentError(_FromFields, SnapshotError, _PublicCorruptionError):
    """A snapshot whose crc32c verifies but whose sections do not decode to a state."""

    _fields = ("path", "offset", "reason")

    def __init__(self, path, offset: int, reason: str):
        path = os.fspath(path)
        super().__init__(
            f"snapshot {path} passes its crc32c but its contents do not decode to a state "
            f"this build can load (at byte offset {offset}: {reason}). It was written by a "
            f"different or faulty inmem release. Recovery stopped; move the file aside "
            f"(keep it for diagnosis) to recover from an older snapshot and the WAL.",
            path=path, offset=offset, reason=reason)


class UnreadableContent(ValueError):
    """Raised by a recovery target: what it was handed does not decode to engine state.

    The target knows the bytes but not the file: `index` is the position of
    the WAL record in the block it was given (None for a snapshot), `section`
    the snapshot section type it was reading (None if unknown), `version` the
    codec version a snapshot names when this build does not read it (else
    None). The recovery sequence turns it into RecordContentError,
    SnapshotContentError or SnapshotUnsupported, naming the file.
    """

    def __init__(self, reason: str, index: int | None = None, section: int | None = None,
                 version: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.index = index
        self.section = section
        self.version = version


def describe(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of an exception met while decoding a file's contents (`Type` alone if
    it has no message, as msgpack's FormatError), cut to `limit` characters."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:limit]}" if text else name


class PolicyInputError(ValueError):
    """Inputs to the recovery policy that describe an impossible situation."""


class PolicyTableError(RuntimeError):
    """The recovery decision table matched zero or several cases: a bug in the table."""
