"""The engine's one-pass check of the values most writes carry.

A write's value must be inside the value model (`inmem.values.check_value`):
None, bool, 64-bit int, float, str, bytes, lists and str-keyed dicts of them.
Most values are small documents and lists a few levels deep (a message
{"role": ..., "content": ...}, a [type, bytes] pair, a checkpoint record and
its references), and `plain_value` says in one pass over them that they are:
no stack, no tuple per item. What it does not vouch for (a deeper value, or
anything outside the model) goes to `check_value`'s walk, which decides, and
names what is wrong; so the values accepted, and the refusals, are the walk's.
"""

from __future__ import annotations

from inmem.values import ALWAYS_VALID_TYPES, INT64_MAX, INT64_MIN

#: levels of lists and dicts below a value that `plain_value` looks into (far under
#: the value model's DEPTH_MAX)
PLAIN_LEVELS = 6


def plain_value(value, levels: int = PLAIN_LEVELS) -> bool:
    """Whether `value`, a list or a dict, holds only scalars, 64-bit ints, and lists and
    str-keyed dicts of such at most `levels` levels down: a value the model takes.
    False says nothing: the value may still be valid (`check_value` decides)."""
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
