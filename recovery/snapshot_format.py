"""The on-disk snapshot file format: its bytes, its writer, its reader and `snapshot verify`.

This module is the only place that knows the layout. Every integer is
little-endian. Offsets are from the start of the file.

    offset  width  field
    ------  -----  -----------------------------------------------------------
         0      8  magic           b"INMEMSNP"
         8      2  format_version  u16, currently 1
        10      2  flags           u16, 0; reserved. A reader refuses bits it
                                   does not know rather than guess their meaning.
        12      8  created_at      int64, microseconds since the Unix epoch
        20      8  wal_position    u64, the WAL position covered: every WAL
                                   record with LSN < wal_position is in this
                                   snapshot, none at or above it is
        28      4  shard           u32, the shard id that wrote the file
        32      4  section_count   u32, how many sections follow the counts
        36      4  counts_length   u32, byte length of the counts map (<= 1 MiB)
        40      n  counts          msgpack map str -> int, e.g.
                                   {"runs": 3, "keys": 1000, "events": 12}; purely
                                   informative (verify prints it), never trusted
                                   to size anything

    then section_count sections, back to back:

         0      1  type            u8, a section type id below (0 is never used)
         1      8  length          u64, byte length of body
         9 length  body            opaque bytes (the engine stores msgpack)

    and last, the trailer:

      size-4    4  crc32c          u32, CRC-32C (Castagnoli) of every byte of
                                   the file before the trailer: header, counts
                                   and all sections

Section type ids are assigned once and never renumbered or reused; a new
primitive takes the next free id. A type appears at most once per file.

    1 RUNS   2 KV   3 EVENTS   4 STATE   5 TRACES   6 JSON   7 JOURNAL   8 META

Every format version, present and future, keeps the magic, the version field
at offset 8, and the crc32c trailer over everything before it. That is what
lets a reader tell a damaged file (bad checksum: corrupt, fall back to an
older snapshot) from a file written by a newer release (good checksum,
unknown version: refuse to load, and do not treat it as damage).

The writer computes the checksum as it streams (a running crc32c per write),
so a large section body is never copied just to be checksummed. The reader
reads the whole file with one read (or, from a megabyte on, maps it), runs
crc32c over it once, and hands out sections as memoryview slices of that one
buffer: no per-section copies.
Every length read from the file is checked against the bytes left before it
is used.
"""

from __future__ import annotations

import argparse
import datetime
import mmap
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import msgpack

from inmem.checksum import crc32c
from inmem.files import NotRegularFile, open_regular
from inmem.recovery.errors import SnapshotCorrupt, SnapshotError, SnapshotUnsupported

MAGIC = b"INMEMSNP"
FORMAT_VERSION = 1
KNOWN_FLAGS = 0

RUNS = 1
KV = 2
EVENTS = 3
STATE = 4
TRACES = 5
JSON = 6
JOURNAL = 7
META = 8

SECTION_NAMES: dict[int, str] = {
    RUNS: "RUNS",
    KV: "KV",
    EVENTS: "EVENTS",
    STATE: "STATE",
    TRACES: "TRACES",
    JSON: "JSON",
    JOURNAL: "JOURNAL",
    META: "META",
}

_HEADER = struct.Struct("<8sHHqQIII")
_SECTION = struct.Struct("<BQ")
_CRC = struct.Struct("<I")

HEADER_BYTES = _HEADER.size          # 40
SECTION_HEADER_BYTES = _SECTION.size  # 9
TRAILER_BYTES = _CRC.size            # 4
MIN_FILE_BYTES = HEADER_BYTES + TRAILER_BYTES
# The counts map is a handful of names; a bigger value is damage, not data.
COUNTS_BYTES_MAX = 1 << 20

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


def section_name(type_id: int) -> str:
    """The constant's name for a section type id, or `UNKNOWN(<id>)`."""
    return SECTION_NAMES.get(type_id, f"UNKNOWN({type_id})")


@dataclass(frozen=True)
class SnapshotHeader:
    """The fixed header fields and the counts map of one snapshot file."""

    format_version: int
    flags: int
    created_at: int
    wal_position: int
    shard: int
    section_count: int
    counts: dict[str, int]


@dataclass
class Snapshot:
    """A snapshot read from disk.

    `sections` maps a section type id to its body. Bodies are memoryview
    slices of one buffer holding the whole file; `msgpack.unpackb` accepts them
    directly. `crc_ok` is None when the file was read with verify=False.
    """

    path: str
    size: int
    header: SnapshotHeader
    sections: dict[int, memoryview]
    crc: int
    crc_ok: bool | None
    section_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def wal_position(self) -> int:
        return self.header.wal_position

    @property
    def created_at(self) -> int:
        return self.header.created_at

    @property
    def counts(self) -> dict[str, int]:
        return self.header.counts


# ---------------------------------------------------------------------------
# writing


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _encode_counts(counts: Mapping[str, int]) -> bytes:
    if not isinstance(counts, Mapping):
        raise TypeError(f"counts must be a mapping of str to int, got {type(counts).__name__}")
    for key, value in counts.items():
        if not isinstance(key, str):
            raise TypeError(f"counts keys must be str, got {key!r}")
        _check_int(f"counts[{key!r}]", value, 0, _U64_MAX)
    # Sorted keys make two snapshots of the same state byte-identical.
    packed = msgpack.packb(dict(sorted(counts.items())), use_bin_type=True)
    if len(packed) > COUNTS_BYTES_MAX:
        raise ValueError(f"counts map encodes to {len(packed)} bytes; the limit is {COUNTS_BYTES_MAX}")
    return packed


def _as_bytes_view(type_id: int, body) -> memoryview:
    try:
        view = memoryview(body)
    except TypeError:
        raise TypeError(
            f"section {section_name(type_id)} body must be bytes-like, got {type(body).__name__}"
        ) from None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _writer(target):
    """A function that writes a whole buffer to an fd or a binary file object."""
    if isinstance(target, int):
        fd = target

        def write_fd(view: memoryview) -> None:
            # os.write may write less than asked (large buffers, signals): loop.
            while view:
                written = os.write(fd, view)
                view = view[written:]

        return write_fd

    raw_write = target.write

    def write_file(view: memoryview) -> None:
        # A buffered file writes everything; an unbuffered one may not.
        while view:
            written = raw_write(view)
            if written is None:
                raise BlockingIOError("the snapshot target is non-blocking and would block")
            if written >= len(view):
                return
            view = view[written:]

    return write_file


def write_snapshot_file(
    fileobj_or_fd,
    *,
    created_at: int,
    wal_position: int,
    shard: int,
    counts: Mapping[str, int],
    sections: Sequence[tuple[int, bytes]],
) -> int:
    """Write one complete snapshot to an open fd or binary file; return the bytes written.

    The caller owns the file: this writes at the current position and neither
    flushes, fsyncs nor closes (SnapshotStore does those). It starts no thread
    and takes no lock, so it is safe in a child right after fork().
    """
    _check_int("created_at", created_at, _I64_MIN, _I64_MAX)
    _check_int("wal_position", wal_position, 0, _U64_MAX)
    _check_int("shard", shard, 0, _U32_MAX)
    counts_bytes = _encode_counts(counts)

    bodies: list[tuple[int, memoryview]] = []
    seen: set[int] = set()
    for item in sections:
        try:
            type_id, body = item
        except (TypeError, ValueError):
            raise TypeError(f"each section must be a (type_id, bytes) pair, got {item!r:.80}") from None
        _check_int("section type", type_id, 1, 255)
        if type_id in seen:
            raise ValueError(f"section {section_name(type_id)} appears twice; a type may appear once")
        seen.add(type_id)
        bodies.append((type_id, _as_bytes_view(type_id, body)))

    write = _writer(fileobj_or_fd)
    crc_update = crc32c

    head = _HEADER.pack(MAGIC, FORMAT_VERSION, KNOWN_FLAGS, created_at, wal_position, shard,
                        len(bodies), len(counts_bytes)) + counts_bytes
    crc = crc_update(head)
    write(memoryview(head))
    total = len(head)
    pack_section = _SECTION.pack
    for type_id, view in bodies:
        section_head = pack_section(type_id, view.nbytes)
        crc = crc_update(view, crc_update(section_head, crc))
        write(memoryview(section_head))
        write(view)
        total += SECTION_HEADER_BYTES + view.nbytes
    write(memoryview(_CRC.pack(crc)))
    return total + TRAILER_BYTES


# ---------------------------------------------------------------------------
# reading


def _check_magic(buf, path: str) -> None:
    size = len(buf)
    if size == 0:
        raise SnapshotCorrupt(path, 0, "the file is empty (a crash before its first write?)")
    head = bytes(buf[:len(MAGIC)])
    if head != MAGIC[:len(head)]:
        if not any(buf[:4096]):
            raise SnapshotCorrupt(path, 0, "the file starts with zero bytes, not the snapshot magic")
        raise SnapshotCorrupt(path, 0, f"bad magic {head!r}, expected {MAGIC!r}")
    if size < MIN_FILE_BYTES:
        raise SnapshotCorrupt(
            path, size, f"the file is {size} bytes, shorter than the smallest snapshot "
            f"({MIN_FILE_BYTES} bytes): truncated")


def _crc_of(buf) -> tuple[int, int]:
    """(stored trailer, computed crc32c of everything before it)."""
    body_end = len(buf) - TRAILER_BYTES
    (stored,) = _CRC.unpack_from(buf, body_end)
    return stored, crc32c(memoryview(buf)[:body_end])


def _check_version(header_fields, path: str) -> None:
    version, flags = header_fields[1], header_fields[2]
    if version != FORMAT_VERSION:
        newer = "newer than" if version > FORMAT_VERSION else "not"
        raise SnapshotUnsupported(
            path, 8, f"format version {version} is {newer} the version this build reads "
            f"({FORMAT_VERSION})", version)
    if flags & ~KNOWN_FLAGS:
        raise SnapshotUnsupported(
            path, 10, f"header flags 0x{flags:04x} name features this build does not know",
            version)


def _decode_counts(view: memoryview, path: str, offset: int) -> dict[str, int]:
    try:
        counts = msgpack.unpackb(view, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise SnapshotCorrupt(path, offset, f"the counts map is not valid msgpack ({exc})") from None
    if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in counts.items()):
        raise SnapshotCorrupt(path, offset, "the counts field is not a map of str to int")
    return counts


def _parse_structure(buf, path: str) -> tuple[tuple, dict[int, memoryview], dict[int, int]]:
    """Walk header, counts and sections; every length is bounded by the bytes left."""
    view = memoryview(buf)
    end = len(view) - TRAILER_BYTES  # sections must end exactly here
    fields = _HEADER.unpack_from(view, 0)
    _check_version(fields, path)
    section_count, counts_length = fields[6], fields[7]

    pos = HEADER_BYTES
    if counts_length > COUNTS_BYTES_MAX or counts_length > end - pos:
        raise SnapshotCorrupt(
            path, 36, f"counts length {counts_length} exceeds the {end - pos} bytes left "
            f"before the trailer (or the {COUNTS_BYTES_MAX}-byte limit)")
    counts = _decode_counts(view[pos:pos + counts_length], path, pos)
    pos += counts_length

    # A section costs at least its 9-byte header, so a count that cannot fit is
    # rejected before the loop rather than discovered one section at a time.
    if section_count * SECTION_HEADER_BYTES > end - pos:
        raise SnapshotCorrupt(
            path, 32, f"section count {section_count} cannot fit in the {end - pos} bytes "
            f"left before the trailer")

    sections: dict[int, memoryview] = {}
    offsets: dict[int, int] = {}
    unpack_section = _SECTION.unpack_from
    for index in range(section_count):
        if end - pos < SECTION_HEADER_BYTES:
            raise SnapshotCorrupt(path, pos, f"section {index} header runs past the trailer")
        type_id, length = unpack_section(view, pos)
        if type_id == 0:
            raise SnapshotCorrupt(path, pos, f"section {index} has type 0, which is never written")
        if type_id in sections:
            raise SnapshotCorrupt(path, pos, f"section {section_name(type_id)} appears twice")
        body_start = pos + SECTION_HEADER_BYTES
        if length > end - body_start:
            raise SnapshotCorrupt(
                path, pos + 1, f"section {section_name(type_id)} claims {length} bytes but only "
                f"{end - body_start} are left before the trailer")
        sections[type_id] = view[body_start:body_start + length]
        offsets[type_id] = body_start
        pos = body_start + length
    if pos != end:
        raise SnapshotCorrupt(
            path, pos, f"{end - pos} unexplained byte(s) after the last of {section_count} "
            f"section(s), before the trailer")
    return fields + (counts,), sections, offsets


def parse_snapshot(buf, path="<memory>", verify: bool = True) -> Snapshot:
    """Parse a whole snapshot held in memory (bytes, bytearray or memoryview).

    With verify=True the crc32c trailer is checked before any field is
    trusted. With verify=False only the structure is checked: every length
    must still fit, but bit flips inside bodies go unnoticed.
    """
    path = os.fspath(path)
    _check_magic(buf, path)
    crc_ok: bool | None = None
    if verify:
        stored, computed = _crc_of(buf)
        crc_ok = stored == computed
        if not crc_ok:
            version = _HEADER.unpack_from(buf, 0)[1]
            hint = ""
            if version != FORMAT_VERSION:
                hint = (f"; the version field also reads {version}, not {FORMAT_VERSION}, so "
                        f"this may be a file from another release, or damage to that field")
            raise SnapshotCorrupt(
                path, len(buf) - TRAILER_BYTES,
                f"crc32c mismatch: trailer says 0x{stored:08x}, contents give 0x{computed:08x}{hint}")
    else:
        (stored,) = _CRC.unpack_from(buf, len(buf) - TRAILER_BYTES)
    fields, sections, offsets = _parse_structure(buf, path)
    _magic, version, flags, created_at, wal_position, shard, section_count, _clen, counts = fields
    header = SnapshotHeader(version, flags, created_at, wal_position, shard, section_count, counts)
    return Snapshot(path, len(buf), header, sections, stored, crc_ok, offsets)


#: files at least this big are mapped rather than read
MAP_MIN_BYTES = 1 << 20


def _read_whole(path: str):
    """The whole file: its bytes, or for a big file a read-only mapping of them.

    A mapping populated up front (MAP_POPULATE) hands the page cache's pages
    over without copying them; reading a 130 MB snapshot into a new buffer
    costs the copy and as many page faults again, a third of loading it. A
    snapshot is never written once published, and recovery holds the
    directory's lock, so the mapped file does not change under the reader.
    """
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        raise SnapshotCorrupt(path, 0, f"it is {exc.kind}, not a snapshot file") from None
    with open(fd, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        populate = getattr(mmap, "MAP_POPULATE", 0)
        if size >= MAP_MIN_BYTES and populate:
            try:
                return mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED | populate,
                                 prot=mmap.PROT_READ)
            except (OSError, ValueError):  # no mapping to be had: read it instead
                pass
        # An unbuffered FileIO.read() sizes its buffer from fstat and fills it with
        # as few read() calls as the kernel allows: one allocation, no copy.
        return f.read()


def read_snapshot_file(path, verify: bool = True) -> Snapshot:
    """Read and check one snapshot file; raise SnapshotCorrupt or SnapshotUnsupported."""
    path = os.fspath(path)
    return parse_snapshot(_read_whole(path), path, verify)


# ---------------------------------------------------------------------------
# `inmem snapshot verify FILE`


def _format_time(micros: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(micros / 1e6, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "out of range"
    return moment.isoformat()


def verify_main(argv: Sequence[str] | None = None, out=None, content=None) -> int:
    """`inmem snapshot verify FILE`: print what the file holds; 0 when valid, 2 otherwise.

    The format (structure, crc32c) is checked here. What the sections mean is
    the engine's, above this layer: `content`, a function of the Snapshot that
    loads it as opening would and returns (the error opening would raise or
    None, a few words on what it loaded), is called once the format holds
    (`inmem snapshot verify` gives one; see `recovery.content_check`). A file
    whose contents opening refuses is not valid.
    """
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="inmem snapshot verify",
        description="Check a snapshot file's structure and crc32c, and print its header and sections.")
    parser.add_argument("file", help="a snapshot file (snap-*.snap, or a *.broken.N one)")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return 2 if exc.code not in (0, None) else 0

    def say(line: str = "") -> None:
        print(line, file=out)

    path = args.file
    try:
        buf = _read_whole(path)
    except OSError as exc:
        say(f"{path}: cannot read: {exc.strerror or exc}")
        return 2
    except SnapshotCorrupt as exc:  # a directory or a FIFO under the name
        say(f"{path}: cannot read: {exc.reason}")
        say("result: INVALID")
        return 2
    say(f"file: {path} ({len(buf)} bytes)")
    valid = True

    try:
        _check_magic(buf, path)
    except SnapshotCorrupt as exc:
        say(f"structure: BAD at offset {exc.offset}: {exc.reason}")
        say("result: INVALID")
        return 2

    fields = _HEADER.unpack_from(buf, 0)
    say(f"format version: {fields[1]} (this build reads {FORMAT_VERSION})")
    say(f"flags: 0x{fields[2]:04x}")
    say(f"created_at: {fields[3]} us ({_format_time(fields[3])})")
    say(f"wal_position: {fields[4]}")
    say(f"shard: {fields[5]}")
    say(f"sections declared: {fields[6]}")

    try:
        snap = parse_snapshot(buf, path, verify=False)
    except SnapshotUnsupported as exc:
        valid = False
        say(f"format: UNSUPPORTED: {exc.reason}")
    except SnapshotError as exc:
        valid = False
        say(f"structure: BAD at offset {exc.offset}: {exc.reason}")
    else:
        counts = snap.header.counts
        say("counts: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "(none)"))
        for type_id, body in snap.sections.items():
            say(f"section {section_name(type_id)} (type {type_id}): {body.nbytes} bytes "
                f"at offset {snap.section_offsets[type_id]}")
        say("structure: ok")

    stored, computed = _crc_of(buf)
    if stored == computed:
        say(f"crc32c: ok (0x{stored:08x})")
    else:
        valid = False
        say(f"crc32c: BAD (trailer 0x{stored:08x}, contents 0x{computed:08x})")
    if not valid:
        say("content: not checked (the format does not hold)")
    elif content is None:
        say("content: not checked (no content check was given; `inmem snapshot verify` runs one)")
    else:
        error, loaded = content(snap)
        if error is None:
            say(f"content: ok ({loaded})")
        elif isinstance(error, SnapshotUnsupported):
            valid = False
            say(f"content: UNSUPPORTED: {error.reason}; opening refuses this snapshot "
                f"(SnapshotUnsupported): it was written by another inmem release, run that "
                f"release on its directory")
        else:
            valid = False
            say(f"content: BAD at offset {error.offset}: {error.reason}; the crc32c holds, but "
                f"opening refuses this snapshot ({type(error).__name__}) and stops: move it "
                f"aside (keep it) to recover from an older snapshot and the WAL")
    say("result: " + ("valid" if valid else "INVALID"))
    return 0 if valid else 2
