"""The write-ahead log: record format, segment writer (buffered and strict), tolerant reader.

    from inmem.wal import WalWriter, WalReader
    with WalWriter(path, "strict") as w:
        lsn = w.append(payload)            # durable when it returns
    reader = WalReader(path, start_lsn=0)
    for lsn, rtype, payload in reader:
        ...
    reader.outcome                         # CleanEnd | TornTail | Corruption

Modules: `record` (the bytes of a record), `segment` (file names and listing),
`reader`, `writer`, `failpoints` (named crash points), `inspect` (the
`inmem wal inspect` command), `errors`.
"""

from inmem.wal.errors import (RecordTooLarge, WalClosed, WalError, WalFailed,
                        WalNeedsRecovery)
from inmem.wal.failpoints import KNOWN_FAILPOINTS, failpoint, register
from inmem.wal.reader import (CleanEnd, Corruption, SkippedRegion, TornTail, WalReader,
                        find_record)
from inmem.wal.record import (FORMAT_VERSION, RECORD_BYTES_MAX, RECORD_OVERHEAD, TYPE_BATCH,
                        TYPE_NAMES, encode, encode_into)
from inmem.wal.segment import list_segments, parse_segment_name, segment_name
from inmem.wal.writer import MODES, WalWriter
from inmem.wal.inspect import inspect_wal

__all__ = [
    "CleanEnd", "Corruption", "FORMAT_VERSION", "KNOWN_FAILPOINTS", "MODES",
    "RECORD_BYTES_MAX", "RECORD_OVERHEAD", "RecordTooLarge", "SkippedRegion",
    "TYPE_BATCH", "TYPE_NAMES", "TornTail", "WalClosed", "WalError", "WalFailed",
    "WalNeedsRecovery", "WalReader", "WalWriter", "encode", "encode_into",
    "failpoint", "find_record", "inspect_wal", "list_segments", "parse_segment_name",
    "register", "segment_name",
]
