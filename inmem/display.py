"""How the records of the API show themselves: the pieces their reprs are made of.

A repr is for a person at a prompt or reading a log: hashes as short hex,
timestamps (int microseconds since the epoch) as ISO 8601 UTC datetimes,
scores and durations rounded, long values cut short. The records themselves
keep the exact values; only what is printed changes.
"""

from __future__ import annotations

import reprlib
from datetime import datetime, timezone

#: hex digits of a hash shown in a repr (48 bits: enough to tell hashes apart by eye)
HASH_HEX_SHOWN = 12

_values = reprlib.Repr()
_values.maxlevel = 3
_values.maxstring = 60
_values.maxother = 60
_values.maxlist = _values.maxtuple = _values.maxdict = _values.maxset = 6
_values.maxlong = 40


def iso_us(timestamp_us) -> str:
    """Microseconds since the epoch as an ISO 8601 UTC datetime; anything else as its repr."""
    if type(timestamp_us) is not int:
        return repr(timestamp_us)
    try:
        moment = datetime.fromtimestamp(timestamp_us / 1_000_000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(timestamp_us)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def short_hex(digest) -> str:
    """The first HASH_HEX_SHOWN hex digits of a bytes hash, then an ellipsis."""
    if not isinstance(digest, (bytes, bytearray)):
        return repr(digest)
    text = digest.hex()
    return text if len(text) <= HASH_HEX_SHOWN else text[:HASH_HEX_SHOWN] + "…"


def short_value(value) -> str:
    """A value's repr, with long strings and containers cut short.

    Never raises: an int too long to print shows its size, and a value whose
    repr fails (a broken __repr__) its type, so that an error message about a
    hostile argument is never itself an error.
    """
    try:
        return _values.repr(value)
    except Exception:  # (reprlib picks its way by type name, which a stand-in may share)
        pass
    if type(value) is int:  # past the digits Python prints
        return f"<an int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # RecursionError for deep nesting, a broken __repr__
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:76] + "...>"


def rounded(number, digits: int = 4) -> str:
    """A float with at most `digits` significant digits; anything else as its repr."""
    if type(number) is not float:
        return repr(number)
    return f"{number:.{digits}g}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for one: "1 key", "3 keys", "0 keys"."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def record_repr(name: str, fields: list[tuple[str, str]]) -> str:
    """`Name(field=shown, ...)` from already formatted field texts."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in fields)})"


__all__ = ["HASH_HEX_SHOWN", "iso_us", "short_hex", "short_value", "rounded", "count", "record_repr"]
