"""Segment files: their names, listing them in log order, and directory hygiene.

A WAL directory holds only segment files. A segment is named by the LSN (log
sequence number: the global index of a record, from 0) of its first record,
as 20 decimal digits plus ".wal", e.g. `00000000000000001234.wal`; 20 digits
hold any u64, so name order is numeric order is log order. An empty segment
is legal: its name still says which LSN comes next.

Other names that may appear, and are never taken for segments:
`*.broken.N` (evidence kept by recovery before it repairs a segment, numbered
from 1 and never overwritten; older releases wrote `*.broken`) and `*.tmp` (a
file being created; left behind only by a crash, and removed by
`remove_temp_files` when a writer opens the directory).

Segment files are created 0600 and directories fsynced through `inmem.files`.
"""

from __future__ import annotations

import os

SEGMENT_SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
LSN_DIGITS = 20
LSN_MAX = 10**LSN_DIGITS - 1

_NAME_LEN = LSN_DIGITS + len(SEGMENT_SUFFIX)


def segment_name(first_lsn: int) -> str:
    """The file name of the segment whose first record has LSN `first_lsn`."""
    if not 0 <= first_lsn <= LSN_MAX:
        raise ValueError(f"LSN out of range: {first_lsn}")
    return f"{first_lsn:0{LSN_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The first LSN named by `name`, or None if `name` is not a segment file name."""
    if len(name) != _NAME_LEN or not name.endswith(SEGMENT_SUFFIX):
        return None
    digits = name[:LSN_DIGITS]
    # isdigit() alone accepts non-ASCII digits such as "²"; a segment name is ASCII.
    if not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def segment_path(directory, first_lsn: int) -> str:
    return os.path.join(os.fspath(directory), segment_name(first_lsn))


def list_segments(directory) -> list[tuple[int, str]]:
    """All segments in `directory` as (first_lsn, path), in log order.

    A missing directory has no segments. Files that are not segments
    (`*.broken.N`, `*.tmp`, anything else) are ignored.
    """
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        lsn = parse_segment_name(name)
        if lsn is not None:
            found.append((lsn, os.path.join(directory, name)))
    found.sort()
    return found


def other_files(directory) -> list[str]:
    """Names in `directory` that are not segments (evidence, temp files, strays), sorted."""
    try:
        names = os.listdir(os.fspath(directory))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if parse_segment_name(n) is None)


def remove_temp_files(directory) -> list[str]:
    """Delete `*.tmp` leftovers of an interrupted file creation; return their paths.

    The caller fsyncs the directory afterwards if it needs the removal durable.
    """
    directory = os.fspath(directory)
    removed = []
    for name in other_files(directory):
        if name.endswith(TMP_SUFFIX):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                continue  # no writer makes a directory: not a leftover of ours
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
