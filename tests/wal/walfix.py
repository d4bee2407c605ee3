"""Helpers for the WAL tests: records built byte by byte, segment files.

Records here are assembled with struct and crc32c directly from the documented
record layout, not with `wal.record`, so the tests check the encoder against
the format instead of against itself.
"""

from __future__ import annotations

import os
import struct

from crc32c import crc32c


def rec(payload: bytes, rtype: int = 1, version: int = 2, crc: int | None = None,
        length: int | None = None) -> bytes:
    """One record: | length u32 | type u8 | version u8 | payload | crc32c u32 |, little-endian."""
    if crc is None:
        crc = crc32c(bytes([rtype, version]) + payload)
    if length is None:
        length = len(payload)
    return struct.pack("<IBB", length, rtype, version) + payload + struct.pack("<I", crc)


def seg_name(first_lsn: int) -> str:
    return "%020d.wal" % first_lsn


def write_segment(directory, first_lsn: int, data: bytes) -> str:
    path = os.path.join(os.fspath(directory), seg_name(first_lsn))
    with open(path, "wb") as f:
        f.write(data)
    return path


def flip_bit(data: bytes, byte_index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[byte_index] ^= 1 << bit
    return bytes(out)


def payloads(n: int, size: int = 20, tag: bytes = b"p") -> list[bytes]:
    """n distinct payloads of exactly `size` bytes (size < 256 keeps length bytes non-zero)."""
    return [(tag + b"%06d" % i).ljust(size, b".") for i in range(n)]


def read_back(directory, **kwargs):
    """(list of (lsn, rtype, payload), reader) for a directory."""
    from inmem.wal.reader import WalReader
    reader = WalReader(directory, **kwargs)
    return list(reader), reader
