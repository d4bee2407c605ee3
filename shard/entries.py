"""Keyed entries: how a KV key, a state cell or a JSON document is held in memory, as one `bytes`.

A run's KV, state and JSON tables map a key to its entry: the slot's last
write, with its version, time and (KV) expiry packed in front of the value in
one immutable `bytes` object. One object per key, where a tuple of six (plus
an int for the time) cost three: for a 16-byte key and a 100-byte value the
entry takes the 144-byte allocation the value alone would take, so a table
costs what a plain `dict` of str -> bytes costs.

Layout, all integers little-endian:

    offset  width  field
    0       1      flags: bits 0-1 the version's width (0: 1 byte, 1: 2, 2: 4, 3: 8),
                   bit 2 EXPIRING (an expiry time follows the version),
                   bit 3 DELETED (no value follows: the slot's last write was a delete),
                   bit 4 WIDE_TS (the time did not fit bytes 1-7; it follows as an i64)
    1       7      ts: the write's time, µs since the epoch, u56 (0 when WIDE_TS)
    8       w      version: u8 / u16 / u32 / u64 as the flags say
    ...     8      ts as i64, only with WIDE_TS
    ...     8      expires_at, µs, i64, only with EXPIRING
    ...     rest   the value, msgpack, only without DELETED

The common case — a live value that does not expire, a version below 256, a
time after 1970 — has a 9-byte header, and its value starts at a fixed
offset, which `PLAIN_AT[flags]` gives (0 for every other case): a read is a
dict lookup, one index into a tuple and a slice handed to msgpack.

Entries are derived from effects (`shard.effects`), never the other way: the
WAL, the journal and snapshots keep effects, and `entry_of` packs an effect's
fields into its entry when it is applied.
"""

from __future__ import annotations

import struct
from operator import itemgetter

_WIDTH_CODE = {1: 0, 2: 1, 4: 2, 8: 3}
_WIDTHS = (1, 2, 4, 8)
EXPIRING = 4
DELETED = 8
WIDE_TS = 16
_TS_MAX = 1 << 56

_HEAD_1 = struct.Struct("<QB").pack   # (ts << 8 | flags, version): the common 9-byte header
_HEAD_2 = struct.Struct("<QH").pack   # the same with a 2-byte version (flags 1)
_I64 = struct.Struct("<q")
_pack_i64 = _I64.pack
_unpack_i64 = _I64.unpack_from
_from = int.from_bytes


def _value_at(flags: int) -> int:
    return 8 + _WIDTHS[flags & 3] + (8 if flags & WIDE_TS else 0) + (8 if flags & EXPIRING else 0)


#: flags -> where the value starts, for a live entry that does not expire; 0 otherwise
PLAIN_AT = tuple(0 if f & (EXPIRING | DELETED) else _value_at(f) for f in range(32))
#: flags -> where the value starts, for any live entry; 0 for a delete
VALUE_AT = tuple(0 if f & DELETED else _value_at(f) for f in range(32))


def pack_entry(value, version: int, ts: int, expires: int | None = None) -> bytes:
    """The entry of a write: `value` the packed value (None: a delete)."""
    if value is not None and expires is None and 0 <= ts < _TS_MAX:
        if 0 < version < 256:
            return _HEAD_1(ts << 8, version) + value
        if 0 < version < 0x10000:
            return _HEAD_2(ts << 8 | 1, version) + value
    flags = 0
    if version < 0x100:
        width = 1
    elif version < 0x10000:
        width = 2
    elif version < 0x1_0000_0000:
        width = 4
    else:
        width = 8
    flags = _WIDTH_CODE[width]
    wide = not 0 <= ts < _TS_MAX
    parts = [b"", version.to_bytes(width, "little")]
    if wide:
        flags |= WIDE_TS
        parts.append(_pack_i64(ts))
    if expires is not None:
        flags |= EXPIRING
        parts.append(_pack_i64(expires))
    if value is None:
        flags |= DELETED
    else:
        parts.append(value)
    parts[0] = (flags | (0 if wide else ts << 8)).to_bytes(8, "little")
    return b"".join(parts)


def entry_value(e: bytes):
    """The packed value of an entry (None: deleted)."""
    at = VALUE_AT[e[0]]
    return e[at:] if at else None


def entry_version(e: bytes) -> int:
    width = _WIDTHS[e[0] & 3]
    return e[8] if width == 1 else _from(e[8:8 + width], "little")


def entry_ts(e: bytes) -> int:
    flags = e[0]
    if flags & WIDE_TS:
        return _unpack_i64(e, 8 + _WIDTHS[flags & 3])[0]
    return _from(e[1:8], "little")


def entry_expires(e: bytes) -> int | None:
    """The expiry time of an entry, µs; None when it does not expire."""
    flags = e[0]
    if not flags & EXPIRING:
        return None
    return _unpack_i64(e, 8 + _WIDTHS[flags & 3] + (8 if flags & WIDE_TS else 0))[0]


def unpack_entry(e: bytes) -> tuple:
    """(packed value or None, version, ts, expires or None) of an entry."""
    return entry_value(e), entry_version(e), entry_ts(e), entry_expires(e)


def entry_of(eff: tuple) -> bytes:
    """The entry a keyed effect (KV_*, ST_*, JS_*: code, key, value, version, ts[, expires]) leaves.

    An effect in its entry form, `(code, key, entry)`, is its own entry.
    """
    if len(eff) == 3:
        return eff[2]
    return pack_entry(eff[2], eff[3], eff[4], eff[5] if len(eff) > 5 else None)


def live_value(e: bytes, now: int):
    """The packed value of an entry that is live at `now` (not deleted, not expired), else None."""
    flags = e[0]
    at = PLAIN_AT[flags]
    if at:
        return e[at:]
    if flags & DELETED:
        return None
    exp = entry_expires(e)
    if exp is not None and exp <= now:
        return None
    return e[VALUE_AT[flags]:]


def plain_kv_entries(effs) -> list | None:
    """The entries of KV effects that are all plain puts, in one comprehension; else None.

    Plain: a value, no expiry, a version below 256 and a time that fits 56
    bits, which is every write of a bulk load; the entry is then its 9-byte
    header and the value. Packing raises on anything else (a delete's None
    value, a wider version or time, an effect of another shape), and the
    caller then packs each effect with `entry_of`.
    """
    head = _HEAD_1
    try:
        if any(map(_EXPIRES_OF, effs)):
            return None
        return [head(ts << 8, version) + value for _c, _k, value, version, ts, _x in effs]
    except (TypeError, ValueError, IndexError, struct.error):
        return None


_EXPIRES_OF = itemgetter(5)
