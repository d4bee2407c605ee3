"""The value model: what a value and a key may be (checks used by the engine and clients).

A value is None, bool, int64, float, str, bytes, list, or a dict with str keys,
nested freely. The store keeps every value as the msgpack bytes it was
encoded to once at the edge: bytes are not tracked by the cyclic GC, they are
what the WAL, snapshots and replies carry, and decoding on read hands the
caller a private copy that it may mutate freely.
"""

from __future__ import annotations

from itertools import islice

from .display import short_value
from .errors import InvalidKey, InvalidValue

KEY_BYTES_MAX = 1024
DEFAULT_MAX_VALUE_BYTES = 16 * 2**20
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: nesting deeper than this is refused rather than risking a RecursionError
DEPTH_MAX = 256

#: types every value of which is in the value model (an int is not: it must fit 64 bits)
ALWAYS_VALID_TYPES = frozenset((str, bytes, float, bool, type(None)))


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


def _check_int(value: int) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidValue(f"int {short_value(value)} does not fit in 64 signed bits")


def _too_deep() -> InvalidValue:
    return InvalidValue(f"value nested deeper than {DEPTH_MAX} levels; flatten it or store "
                        "the inner part under its own key")


def check_value(value) -> None:
    """Raise InvalidValue unless `value` is inside the value model.

    The walk is iterative (an explicit stack), so a value nested far too deep,
    or a list that contains itself, is refused with an InvalidValue naming the
    limit rather than a RecursionError.
    """
    t = type(value)
    if t in ALWAYS_VALID_TYPES:
        return
    if t is int:
        _check_int(value)
        return
    stack: list = []
    pop, push = stack.pop, stack.append
    if t is list:
        # A list of scalars (a typical value, or a [type, bytes] pair) needs no stack,
        # nor do the items, at its start, that are such lists a few levels down (a
        # batch of [key, [type, bytes]] pairs, a record and its references): valid
        # whatever the walk, which then checks the rest of the list only. Errors are
        # found last item first, so sparing valid ones changes none reported.
        for item in value:
            if type(item) not in ALWAYS_VALID_TYPES:
                break
        else:
            return
        if type(item) is dict:  # a list of documents: no plain start to pass over
            push((value, 0))
        else:
            start = _plain_prefix(value, PLAIN_LEVELS)
            if start == len(value):
                return
            for item in islice(value, start, None):  # the root, at depth 0, as the walk does
                if type(item) not in ALWAYS_VALID_TYPES:
                    push((item, 1))
    else:
        push((value, 0))
    while stack:
        v, depth = pop()
        t = type(v)
        if t is int:
            _check_int(v)
            continue
        if depth > DEPTH_MAX:
            raise _too_deep()
        if t is list:
            items = v
        elif t is dict:
            for k in v:
                if type(k) is not str:
                    raise InvalidValue(f"dict keys must be str, got {type(k).__name__}")
            items = v.values()
        else:
            raise InvalidValue(f"{t.__name__} is not a storable value "
                               "(use None, bool, int, float, str, bytes, list or dict)")
        for item in items:
            if type(item) not in ALWAYS_VALID_TYPES:
                push((item, depth + 1))


#: levels of lists and dicts below a value that `plain_value` looks into (far under
#: DEPTH_MAX)
PLAIN_LEVELS = 6


def plain_value(value, levels: int = PLAIN_LEVELS) -> bool:
    """Whether `value`, a list or a dict, holds only scalars, 64-bit ints, and lists and
    str-keyed dicts of such at most `levels` levels down: a value the model takes, said
    in one pass (no stack, no tuple per item). False says nothing: the value may still
    be valid (`check_value`'s walk decides, and names what is wrong)."""
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    else:
        items = value
    for item in items:
        t = type(item)
        if t in ALWAYS_VALID_TYPES:
            continue
        if t is int:
            if INT64_MIN <= item <= INT64_MAX:
                continue
            return False
        if (t is not list and t is not dict) or not levels or not plain_value(item, levels - 1):
            return False
    return True


def _plain_prefix(value: list, levels: int) -> int:
    """How many of `value`'s first items are plain: scalars, ints that fit 64 bits, or
    lists that are `plain_value`s at most `levels` levels down (values the walk
    accepts). It stops at the first other item (a dict, a bad item, lists deeper
    still), which the walk checks, saying what is wrong."""
    n = 0
    for item in value:
        t = type(item)
        if t not in ALWAYS_VALID_TYPES and not (
                INT64_MIN <= item <= INT64_MAX if t is int
                else t is list and levels > 0 and plain_value(item, levels - 1)):
            return n
        n += 1
    return n


def _rebuild(value, sort_keys: bool, strict: bool):
    """A copy of the dicts and lists of `value`, walked with an explicit stack.

    With `sort_keys` every dict is rebuilt in sorted key order. Beyond
    DEPTH_MAX levels a `strict` walk raises InvalidValue; otherwise the rest is
    shared, not copied (such a value is refused wherever it is stored).
    """
    t = type(value)
    if t is not dict and t is not list:
        return value
    root = {} if t is dict else []
    stack = [(value, root, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        src, dst, depth = pop()
        if depth > DEPTH_MAX:
            raise _too_deep()
        deeper = depth + 1
        share = deeper > DEPTH_MAX and not strict
        if type(src) is dict:
            if sort_keys:
                try:
                    keys = sorted(src)
                except TypeError:
                    raise InvalidValue("dict keys must be str") from None
            else:
                keys = src
            for k in keys:
                v = src[k]
                tv = type(v)
                if (tv is dict or tv is list) and not share:
                    v2 = {} if tv is dict else []
                    push((v, v2, deeper))
                    v = v2
                dst[k] = v
        else:
            append = dst.append
            for v in src:
                tv = type(v)
                if (tv is dict or tv is list) and not share:
                    v2 = {} if tv is dict else []
                    push((v, v2, deeper))
                    v = v2
                append(v)
    return root


def canonical(value):
    """A copy of `value` with every map's keys sorted, at every depth (for hashing).

    It runs before the value is validated, so it checks the depth itself.
    """
    return _rebuild(value, True, True)


def copy_value(value):
    """A private copy of a value's dicts and lists, so later changes by the caller don't leak in."""
    return _rebuild(value, False, False)


ZERO_HASH = bytes(32)
