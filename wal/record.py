"""The WAL record format: the bytes of one record, and how to write them.

One record, all integers little-endian::

    offset  size  field
    0       4     length   u32  number of payload bytes (not counting header or crc)
    4       1     type     u8   record type, one of the TYPE_* codes below
    5       1     version  u8   record format version, FORMAT_VERSION
    6       N     payload       N = length bytes (msgpack for TYPE_BATCH)
    6+N     4     crc32c   u32  CRC-32C (Castagnoli) of type + version + payload

    +-----------+------+---------+-----------------+-----------+
    | length u32| type | version | payload (length)| crc32c u32|
    +-----------+------+---------+-----------------+-----------+
     <---------- header, 6 ----->                   <-- 4 ---->

The crc covers bytes [4, 6+N): type, version and payload. It does not cover
the length, but a wrong length moves the crc to the wrong place, so it is
caught all the same.

Type codes are part of the on-disk format: a code is never renumbered or
reused. Type 0 is reserved and never written, so that a header of six zero
bytes (a zero-filled tail, as left by preallocation or some crashes) can only
mean "no more records". Decoding lives in `wal.reader`, which has to decide
between a clean end, a torn tail and corruption.
"""

from __future__ import annotations

import struct

from inmem.checksum import crc32c

from inmem.wal.errors import RecordTooLarge

#: The record format version written into every record. Version 2 records may
#: log a keyed write as the entry it leaves (`shard.effects`); version 1
#: records, which this build still reads, never do. A release that reads only
#: version 1 stops at a version 2 record and says so, instead of misreading it.
FORMAT_VERSION = 2
#: The versions this build reads.
READ_VERSIONS = (1, 2)

#: A payload holding one or more committed operations (a drained batch or one
#: transaction); recovery keeps or drops it whole.
TYPE_BATCH = 1
# Codes 2..255 are free for later record types. Add them here, never reuse one.

#: Record type code -> name, for tools such as `wal inspect`.
TYPE_NAMES = {TYPE_BATCH: "batch"}

#: Largest payload a record may carry. A reader rejects a length field above
#: this before allocating anything, so a damaged length cannot exhaust memory.
RECORD_BYTES_MAX = 64 * 2**20

HEADER = struct.Struct("<IBB")
CRC = struct.Struct("<I")
HEADER_SIZE = HEADER.size          # 6
CRC_SIZE = CRC.size                # 4
RECORD_OVERHEAD = HEADER_SIZE + CRC_SIZE

#: PREFIX_CRCS[version][type]: the crc of the two bytes (type, version), for
#: each version this build reads (None for the others). The crc of a payload
#: continues from it, so neither encoding nor reading ever copies a payload
#: just to checksum it together with its header.
PREFIX_CRCS = tuple(tuple([crc32c(bytes((rtype, version))) for rtype in range(256)])
                    if version in READ_VERSIONS else None for version in range(256))
#: The same for the version this build writes.
PREFIX_CRC = PREFIX_CRCS[FORMAT_VERSION]

_pack_header = HEADER.pack
_pack_crc = CRC.pack


def checked_size(payload, rtype: int = TYPE_BATCH) -> int:
    """Validate a payload and type code; return the payload's length in bytes.

    Raises TypeError for a payload that is not bytes-like, ValueError for a
    type code outside 1..255 and RecordTooLarge past RECORD_BYTES_MAX, all
    before anything is written, so a rejected record never leaves half a
    record in a buffer.
    """
    if type(rtype) is not int or not 0 < rtype < 256:
        raise ValueError(f"record type must be an int in 1..255, got {rtype!r}")
    kind = type(payload)
    if kind is bytes or kind is bytearray:
        size = len(payload)
    elif kind is memoryview and payload.contiguous:
        size = payload.nbytes
    else:
        raise TypeError(f"a WAL payload must be bytes, bytearray or a contiguous "
                        f"memoryview, not {kind.__name__}")
    if size > RECORD_BYTES_MAX:
        raise RecordTooLarge(
            f"WAL record payload of {size} bytes exceeds the limit of "
            f"{RECORD_BYTES_MAX} bytes; split the batch into smaller records")
    return size


def append_record(buf: bytearray, payload, rtype: int, size: int) -> None:
    """Append one record to `buf` with no checks: `size` comes from `checked_size`."""
    buf += _pack_header(size, rtype, FORMAT_VERSION)
    buf += payload
    buf += _pack_crc(crc32c(payload, PREFIX_CRC[rtype]))


def encode_into(buf: bytearray, payload, rtype: int = TYPE_BATCH) -> int:
    """Append one encoded record to `buf`; return the number of bytes added.

    `payload` is bytes, a bytearray or a contiguous memoryview. No intermediate
    copy of the payload is made.
    """
    size = checked_size(payload, rtype)
    buf += _pack_header(size, rtype, FORMAT_VERSION)
    buf += payload
    buf += _pack_crc(crc32c(payload, PREFIX_CRC[rtype]))
    return size + RECORD_OVERHEAD


def encode(payload, rtype: int = TYPE_BATCH) -> bytes:
    """Return one record holding `payload` as bytes."""
    buf = bytearray()
    encode_into(buf, payload, rtype)
    return bytes(buf)


def record_size(payload_len: int) -> int:
    """Bytes taken on disk by a record whose payload is `payload_len` bytes long."""
    return payload_len + RECORD_OVERHEAD
