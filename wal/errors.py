"""The typed errors of the write-ahead log.

Damage found while *reading* is not an exception: the reader reports it as an
outcome value (see `wal.reader`), because a torn tail is a normal end after a
crash. Exceptions here are for the writer (fail-stop after an I/O error, use
after close, an oversized record) and for opening a log that needs recovery.
Every message names what the operator or caller should do next.
"""

from __future__ import annotations

from inmem.errors import DurabilityError, InmemError


class WalError(InmemError):
    """Base class of every error raised by the `wal` package."""


class WalFailed(WalError, DurabilityError):
    """The log hit a write or fsync error and stopped accepting records (fail-stop).

    The original OSError is the `__cause__`. Nothing appended after the last
    successful fsync may be acknowledged: after an fsync error the kernel may
    have dropped the dirty pages, so retrying cannot prove durability. The
    process must close the writer and recover from what is on disk.
    """


class WalClosed(WalError):
    """An append, sync or roll on a writer that was closed."""


class RecordTooLarge(WalError, ValueError):
    """A payload longer than the record size limit (`record.RECORD_BYTES_MAX`)."""


class WalNeedsRecovery(WalError):
    """The log does not end cleanly (torn tail or corruption), so a writer may not continue it.

    Appending after a torn tail would turn it into mid-log corruption. Run
    recovery (which truncates a torn tail after keeping a `*.broken.N` copy), or
    pass an explicit `start_lsn` that the caller has made true.
    """
