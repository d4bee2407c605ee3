"""The tolerant WAL reader: records in log order, and an honest account of how the log ends.

Iterating a `WalReader` yields `(lsn, rtype, payload)` for every good record
with `lsn >= start_lsn`. When iteration finishes, `reader.outcome` says why
it stopped, as one of three distinct types:

- `CleanEnd`: the data ran out at a record boundary, or the rest of the newest
  segment is zero bytes (a header of six zero bytes means "end": record type 0
  is never written).
- `TornTail(segment, offset, bytes_left)`: the newest segment ends with an
  incomplete or damaged record and nothing valid follows it: the normal
  aftermath of a crash mid-write. Recovery keeps a copy, then truncates the
  segment at `offset`.
- `Corruption(segment, offset, reason)`: damage that a crash cannot explain: a
  bad record followed by any valid record (found by scanning ahead byte by
  byte, so a torn tail is never declared while good data sits behind it), a
  bad record or a torn end in a segment that is not the newest, a record in a
  format version this build does not know, or a gap or overlap in LSNs
  between segments (a missing segment), or a directory or FIFO under a
  segment's name (never opened in a way that could wait for a writer).

Decision table for a bad record at `offset` of segment S:

    valid record later in S?  S is newest?  budget left?  outcome
    yes                       any           yes           skip to it, count it
    yes                       any           no            Corruption
    no                        yes           any           TornTail
    no                        no            yes           skip rest of S, count it
    no                        no            no            Corruption

Skipping (`max_corrupt_entries > 0`): each skipped region counts once in
`corrupt_skipped` and is listed in `skipped`. LSNs count the records actually
read: the writer's records lost in a skipped region are unknown in number, so
records after it *in the same segment* get LSNs lower than the writer gave
them. At the next segment the reader re-anchors on the segment's name (which
is the writer's LSN), so the shift never crosses a segment boundary. A gap
between segments is never skipped: a missing segment is always Corruption.

Speed: a segment is read whole into one bytes object (segments are bounded in
size), except for a zero tail that the filesystem reports as a hole (the
unwritten rest of a preallocated segment after a crash): that is known to read
as zeros and is not read at all, unless damage in front of it needs the whole
file to be classified. Each payload is sliced out of the bytes once and its crc
continues from the precomputed crc of its type and version bytes, so a record
costs one allocation. Records before `start_lsn` are verified through a memoryview with
no payload object made, and a segment that ends before `start_lsn` is not read
at all. Replaying 1M records of 100 bytes takes about 0.55 s (1.9M records/s).
Records are gathered in blocks (`blocks()`: lists of up to BLOCK_RECORDS
payloads or about BLOCK_BYTES), which recovery decodes and applies together; iterating hands the
same records out one by one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import ClassVar, Iterator

from inmem.checksum import crc32c

from inmem.files import NotRegularFile, read_data
from inmem.wal.record import (PREFIX_CRCS, CRC, CRC_SIZE, HEADER, HEADER_SIZE,
                              READ_VERSIONS, RECORD_BYTES_MAX, RECORD_OVERHEAD)
from inmem.wal.segment import list_segments


#: records per block handed out by `WalReader.blocks`, and the bytes of segment a
#: block spans at most (past one record): small enough that a block's decoded
#: records are applied while they are still in the CPU's caches
BLOCK_RECORDS = 4096
BLOCK_BYTES = 256 * 1024


@dataclass(frozen=True)
class CleanEnd:
    """The log ends at a record boundary (or in zero fill)."""
    kind: ClassVar[str] = "clean"


@dataclass(frozen=True)
class TornTail:
    """The newest segment ends in a partial or damaged record with nothing valid after it."""
    segment: str
    offset: int
    bytes_left: int
    kind: ClassVar[str] = "torn_tail"


@dataclass(frozen=True)
class Corruption:
    """Damage that a crash mid-write cannot explain; replay must not silently pass it.

    `skippable`: a damaged record inside a segment, which a larger
    `max_corrupt_entries` would have skipped; a gap or overlap between
    segments, a file that is not a segment, or a record format this build does
    not read is never skipped, whatever the budget.
    """
    segment: str
    offset: int
    reason: str
    skippable: bool = False
    kind: ClassVar[str] = "corruption"


@dataclass(frozen=True)
class SkippedRegion:
    """A damaged stretch of a segment that the reader skipped under its corruption budget."""
    segment: str
    offset: int
    length: int
    reason: str


Outcome = CleanEnd | TornTail | Corruption

CLEAN_END = CleanEnd()


def read_file(path) -> bytes:
    """The whole content of `path` as one immutable buffer.

    bytes rather than a bytearray filled by readinto: slicing a payload out of
    bytes is one allocation, where a bytearray needs a memoryview slice plus a
    copy, and that difference is a third of the reader's time per record.
    """
    with open(path, "rb", buffering=0) as f:
        return f.readall()


#: a byte that may be a record's version field
_VERSION_BYTE = re.compile(b"[" + b"".join(re.escape(bytes((v,))) for v in READ_VERSIONS) + b"]")


def find_record(buf, start: int, end: int, record_bytes_max: int = RECORD_BYTES_MAX) -> int:
    """Offset of the first record in buf[start:end] whose crc verifies, or -1.

    Candidates are found by searching for a readable version byte with a
    regular expression (in C), so zero fill and most payload bytes are passed
    over without a Python-level step per byte; each candidate's bounds are
    checked before its crc.
    """
    unpack_header = HEADER.unpack_from
    unpack_crc = CRC.unpack_from
    search = _VERSION_BYTE.search
    with memoryview(buf) as mv:
        pos = start + 5
        while True:
            m = search(buf, pos, end)
            if m is None:
                return -1
            v = m.start()
            p = v - 5
            pos = v + 1
            if p + RECORD_OVERHEAD > end:
                return -1
            length, rtype, _ = unpack_header(buf, p)
            body_end = p + HEADER_SIZE + length
            if (rtype and length <= record_bytes_max and body_end + CRC_SIZE <= end
                    and crc32c(mv[p + 4:body_end]) == unpack_crc(buf, body_end)[0]):
                return p


def _diagnose(buf, off: int, size: int, record_bytes_max: int) -> str:
    """Why the bytes at `off` are not a good record (the slow path: only on damage)."""
    rest = size - off
    if rest < HEADER_SIZE:
        return f"incomplete record header ({rest} bytes left)"
    length, rtype, version = HEADER.unpack_from(buf, off)
    if length == 0 and rtype == 0 and version == 0:
        return "zero-filled bytes"
    if version not in READ_VERSIONS:
        return f"bad record format version {version}"
    if rtype == 0:
        return "record type 0 (reserved, never written)"
    if length > record_bytes_max:
        return f"length field {length} exceeds the record limit of {record_bytes_max} bytes"
    if off + HEADER_SIZE + length + CRC_SIZE > size:
        return f"length field {length} runs past the end of the segment ({rest} bytes left)"
    body_end = off + HEADER_SIZE + length
    stored = CRC.unpack_from(buf, body_end)[0]
    with memoryview(buf) as mv:
        computed = crc32c(mv[off + 4:body_end])
    return f"crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})"


def _unknown_version(buf, off: int, size: int, record_bytes_max: int) -> int | None:
    """The version of an intact record in a format this build cannot read, else None.

    Such a record was written by another release: it is not damage, and skipping
    it would drop data silently, so it always stops the reader.
    """
    if size - off < RECORD_OVERHEAD:
        return None
    length, rtype, version = HEADER.unpack_from(buf, off)
    body_end = off + HEADER_SIZE + length
    if (version == 0 or version in READ_VERSIONS or not rtype or length > record_bytes_max
            or body_end + CRC_SIZE > size):
        return None
    with memoryview(buf) as mv:
        ok = crc32c(mv[off + 4:body_end]) == CRC.unpack_from(buf, body_end)[0]
    return version if ok else None


class WalReader:
    """Read a WAL directory in LSN order, tolerating a torn tail and reporting damage.

    Attributes, valid once iteration has finished:
      outcome          CleanEnd | TornTail | Corruption
      next_lsn         the LSN after the last good record; with no segment at
                       all it is `start_lsn` (nothing on disk contradicts it).
                       It can be below `start_lsn` if the log ends before it.
      first_lsn        first LSN of the oldest segment (None: no segments)
      corrupt_skipped  damaged regions skipped under `max_corrupt_entries`
      skipped          list of SkippedRegion, one per skip
      segment          path of the segment being read (while iterating), or the
                       last one read
      end_offset       byte offset in `segment` just after its last good
                       record, where a clean end's zero fill (if any) begins
    """

    def __init__(self, directory, start_lsn: int = 0, max_corrupt_entries: int = 0,
                 record_bytes_max: int = RECORD_BYTES_MAX):
        if start_lsn < 0:
            raise ValueError(f"start_lsn must be >= 0, got {start_lsn}")
        if max_corrupt_entries < 0:
            raise ValueError(f"max_corrupt_entries must be >= 0, got {max_corrupt_entries}")
        self.directory = os.fspath(directory)
        self.start_lsn = start_lsn
        self.max_corrupt_entries = max_corrupt_entries
        self.record_bytes_max = record_bytes_max
        self.outcome: Outcome | None = None
        self.next_lsn = start_lsn
        self.first_lsn: int | None = None
        self.corrupt_skipped = 0
        self.skipped: list[SkippedRegion] = []
        self.segment: str | None = None
        self.end_offset = 0

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        return self._records()

    def read_all(self) -> list[tuple[int, int, bytes]]:
        """Every record as a list; the outcome is in `self.outcome` afterwards."""
        return list(self._records())

    def blocks(self, max_records: int = BLOCK_RECORDS) -> Iterator[tuple[int, list, list]]:
        """The same records in blocks: `(first lsn, [rtype, ...], [payload, ...])`.

        A block holds up to `max_records` consecutive good records of one
        segment (and about BLOCK_BYTES of it), so a consumer (recovery) can decode and apply them together
        rather than one at a time. The outcome is the same as iterating.
        """
        return ((first, rtypes, payloads)
                for first, rtypes, payloads, _seg, _offs in self._blocks(max_records))

    def placed_blocks(self, max_records: int = BLOCK_RECORDS) -> Iterator[tuple]:
        """`blocks()` with where each record sits:
        `(first lsn, [rtype, ...], [payload, ...], segment, [offset, ...])`.

        `segment` is the first LSN of the segment the block is in (which names
        the file) and each offset is where a record's header starts in it, so
        a consumer can point at a record later without reading the log again.
        """
        return self._blocks(max_records)

    def _records(self):
        for first, rtypes, payloads, _seg, _offs in self._blocks(BLOCK_RECORDS):
            yield from zip(range(first, first + len(payloads)), rtypes, payloads)

    def _stop(self, outcome: Outcome, lsn: int) -> None:
        self.outcome = outcome
        self.next_lsn = lsn

    def _blocks(self, max_records: int):
        # One generator with the per-record loop inlined, handing out lists:
        # a generator step per record costs ~0.13 us, a quarter of the total.
        self.outcome = None
        self.corrupt_skipped = 0
        self.skipped = []
        self.segment = None
        segments = list_segments(self.directory)
        if not segments:
            self.first_lsn = None
            self._stop(CLEAN_END, self.start_lsn)
            return
        self.first_lsn = lsn = segments[0][0]
        last = len(segments) - 1
        start = self.start_lsn
        rmax = self.record_bytes_max
        unpack_header = HEADER.unpack_from
        unpack_crc = CRC.unpack_from
        crc = crc32c
        prefix_crcs = PREFIX_CRCS
        skipped_before = 0
        for i, (first, path) in enumerate(segments):
            self.segment = path
            segment = first
            if first != lsn:
                if first > lsn and self.corrupt_skipped > skipped_before:
                    # The previous segment lost records in a skipped region; its
                    # successor's name is the writer's LSN, so trust it.
                    lsn = first
                else:
                    # Name the segment before too: it may be the damaged one.
                    prev = os.path.basename(segments[i - 1][1])
                    if first > lsn:
                        what = (f"missing records: {prev} ends after LSN {lsn - 1} at byte "
                                f"{self.end_offset}, so it was cut short or a segment "
                                f"between them is missing")
                    else:
                        what = (f"overlapping records (segments disagree): {prev} goes on "
                                f"to LSN {lsn - 1}")
                    self._stop(Corruption(path, 0, f"{what}: expected LSN {lsn}, "
                                          f"segment starts at LSN {first}"), lsn)
                    return
            skipped_before = self.corrupt_skipped
            if i < last and segments[i + 1][0] <= start:
                # Every record of this segment precedes start_lsn: not even read.
                lsn = segments[i + 1][0]
                continue
            try:
                data, file_size = read_data(path)
            except NotRegularFile as exc:
                self._stop(Corruption(path, 0, f"{exc.kind} under a segment's name, not a "
                                      f"segment file; move it out of the WAL directory"), lsn)
                return
            size = len(data)
            off = 0
            self.end_offset = 0
            while True:
                if lsn < start:
                    off, lsn = _skip_records(data, off, lsn, start, rmax)
                # The hot loop: int comparisons, one slice (the payload, which
                # is handed out anyway) and one crc continued from the header's.
                rtypes, payloads, offsets = [], [], []
                first = lsn
                block_end = off + BLOCK_BYTES
                while off + 10 <= size:
                    length, rtype, ver = unpack_header(data, off)
                    body = off + 6
                    body_end = body + length
                    prefix_crc = prefix_crcs[ver]
                    if prefix_crc is None or not rtype or length > rmax or body_end + 4 > size:
                        break
                    payload = data[body:body_end]
                    if crc(payload, prefix_crc[rtype]) != unpack_crc(data, body_end)[0]:
                        break
                    rtypes.append(rtype)
                    payloads.append(payload)
                    offsets.append(off)
                    lsn += 1
                    off = body_end + 4
                    if len(payloads) == max_records or off >= block_end:
                        yield first, rtypes, payloads, segment, offsets
                        rtypes, payloads, offsets = [], [], []
                        first = lsn
                        block_end = off + BLOCK_BYTES
                if payloads:
                    yield first, rtypes, payloads, segment, offsets
                if off == size:
                    self.end_offset = off
                    break
                if size < file_size:
                    if data.count(0, off) == size - off:
                        self.end_offset = off
                        break  # zero fill, and a hole (zeros too) from there on
                    # Damage: classify it with the whole file in view.
                    data = read_file(path)
                    size = len(data)
                off = self._damage(data, off, path, lsn, i == last)
                if off < 0:
                    return
                if off == size:
                    break
        self._stop(CLEAN_END, lsn)

    def _damage(self, data: bytes, off: int, path: str, lsn: int, newest: bool) -> int:
        """Classify the bytes at `off`, which are not a good record.

        Returns the offset to resume reading at (the segment size for "this
        segment is done"), or -1 after setting `self.outcome` to stop reading.
        """
        size = len(data)
        rmax = self.record_bytes_max
        rest = size - off
        if data.count(0, off) == rest:
            self.end_offset = off
            return size  # zero fill: this segment ends here
        unknown = _unknown_version(data, off, size, rmax)
        if unknown is not None:
            self._stop(Corruption(
                path, off, f"record in format version {unknown}, which this build does "
                f"not read (this build reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}); open the data "
                f"with the release that wrote it"), lsn)
            return -1
        reason = _diagnose(data, off, size, rmax)
        nxt = find_record(data, off + 1, size, rmax)
        if nxt < 0 and newest:
            self._stop(TornTail(path, off, rest), lsn)
            return -1
        if nxt < 0:
            reason = f"{reason}, at the end of a segment that is not the newest"
            skip_to = size
        else:
            reason = f"{reason}, followed by a valid record at offset {nxt}"
            skip_to = nxt
        if self.corrupt_skipped >= self.max_corrupt_entries:
            self._stop(Corruption(path, off, reason, skippable=True), lsn)
            return -1
        self.corrupt_skipped += 1
        self.skipped.append(SkippedRegion(path, off, skip_to - off, reason))
        if skip_to == size:
            self.end_offset = off
        return skip_to


def _skip_records(data: bytes, off: int, lsn: int, start: int, rmax: int) -> tuple[int, int]:
    """Walk good records before `start` without making payload objects.

    Returns (offset, lsn) of the first record not walked: the one at `start`,
    or the first bad one (left for the caller's loop to classify).
    """
    size = len(data)
    unpack_header = HEADER.unpack_from
    unpack_crc = CRC.unpack_from
    with memoryview(data) as mv:
        while lsn < start and off + RECORD_OVERHEAD <= size:
            length, rtype, ver = unpack_header(data, off)
            body_end = off + HEADER_SIZE + length
            if (ver not in READ_VERSIONS or not rtype or length > rmax
                    or body_end + CRC_SIZE > size
                    or crc32c(mv[off + 4:body_end]) != unpack_crc(data, body_end)[0]):
                break
            lsn += 1
            off = body_end + CRC_SIZE
    return off, lsn
