"""The value model: what a value and a key may be (checks used by the engine and clients).

A value is None, bool, int64, float, str, bytes, list, or a dict with str keys,
nested freely. The store keeps every value as the msgpack bytes it was
encoded to once at the edge: bytes are not tracked by the cyclic GC, they are
what the WAL, snapshots and replies carry, and decoding on read hands the
caller a private copy that it may mutate freely.
"""

from __future__ import annotations

from .errors import InvalidKey, InvalidValue

KEY_BYTES_MAX = 1024
DEFAULT_MAX_VALUE_BYTES = 16 * 2**20
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: nesting deeper than this is refused rather than risking a RecursionError
DEPTH_MAX = 256

_SCALARS = frozenset((str, bytes, float, bool, type(None)))


def check_key(key, what: str = "key") -> str:
    """Return `key` when it is a valid key or name, else raise InvalidKey."""
    if type(key) is not str:
        raise InvalidKey(f"{what} must be a str, got {type(key).__name__}")
    n = len(key)
    if n == 0:
        raise InvalidKey(f"{what} must not be empty")
    if key.isascii():
        if n > KEY_BYTES_MAX:
            raise InvalidKey(f"{what} is longer than {KEY_BYTES_MAX} UTF-8 bytes")
        return key
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"{what} is not valid Unicode text (lone surrogate)") from None
    if size > KEY_BYTES_MAX:
        raise InvalidKey(f"{what} is longer than {KEY_BYTES_MAX} UTF-8 bytes")
    return key


def check_value(value, _depth: int = 0) -> None:
    """Raise InvalidValue unless `value` is inside the value model."""
    t = type(value)
    if t in _SCALARS:
        return
    if t is int:
        if INT64_MIN <= value <= INT64_MAX:
            return
        raise InvalidValue(f"int {value} does not fit in 64 signed bits")
    if _depth > DEPTH_MAX:
        raise InvalidValue(f"value nested deeper than {DEPTH_MAX} levels")
    if t is list:
        for item in value:
            if type(item) not in _SCALARS:
                check_value(item, _depth + 1)
        return
    if t is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise InvalidValue(f"dict keys must be str, got {type(k).__name__}")
            if type(item) not in _SCALARS:
                check_value(item, _depth + 1)
        return
    raise InvalidValue(f"{t.__name__} is not a storable value "
                       "(use None, bool, int, float, str, bytes, list or dict)")


def canonical(value):
    """A copy of `value` with every map's keys sorted, recursively (for hashing)."""
    t = type(value)
    if t is dict:
        return {k: canonical(value[k]) for k in sorted(value)}
    if t is list:
        return [canonical(v) for v in value]
    return value


ZERO_HASH = bytes(32)
