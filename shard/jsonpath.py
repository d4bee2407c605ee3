"""JSON document paths: parsing `$`, `$.a.b`, `$.items[0]`, `$.items[-1]`,
`$["key with.dots"]`, and the get/set/delete/push/pop walks over a decoded
document. Every misfit raises InvalidPath with the path and the step.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from inmem.display import short_value
from inmem.errors import InvalidPath

# A dotted name: a letter (any script) or "_", then letters, digits, "_" and "-".
_NAME = re.compile(r"[^\W\d][\w\-]*")
_INDEX = re.compile(r"-?[0-9]+")
#: the most digits an index may have (an int64 has 19; no list is that long)
INDEX_DIGITS_MAX = 18

_MISSING = object()


@lru_cache(maxsize=4096)
def parse(path) -> tuple:
    """Return the steps of `path` as a tuple of str (names) and int (indexes)."""
    if type(path) is not str or not path.startswith("$"):
        raise InvalidPath(f"a path starts with '$': {short_value(path)}")
    steps = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c == ".":
            m = _NAME.match(path, i + 1)
            if not m:
                raise InvalidPath(f"expected a name after '.' at offset {i} in {path!r}")
            steps.append(m.group())
            i = m.end()
        elif c == "[":
            if i + 1 < n and path[i + 1] in "\"'":
                quote = path[i + 1]
                j = i + 2
                buf = []
                while j < n and path[j] != quote:
                    if path[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(path[j])
                    j += 1
                if j + 1 >= n or path[j] != quote or path[j + 1] != "]":
                    raise InvalidPath(f"unterminated quoted name at offset {i} in {path!r}")
                steps.append("".join(buf))
                i = j + 2
            else:
                m = _INDEX.match(path, i + 1)
                if not m or m.end() >= n or path[m.end()] != "]":
                    raise InvalidPath(f"expected an index or a quoted name at offset {i} in {path!r}")
                digits = len(m.group()) - (path[i + 1] == "-")
                if digits > INDEX_DIGITS_MAX:
                    raise InvalidPath(f"an index of {digits} digits at offset {i}: an index has "
                                      f"at most {INDEX_DIGITS_MAX}")
                steps.append(int(m.group()))
                i = m.end() + 1
        else:
            raise InvalidPath(f"unexpected {c!r} at offset {i} in {path!r}")
    return tuple(steps)


def _step(node, step, path):
    """Child of `node` at `step`, or _MISSING; InvalidPath when the step does not fit."""
    if type(step) is str:
        if type(node) is dict:
            return node.get(step, _MISSING)
        raise InvalidPath(f"name step {step!r} on {_a(node)} in {path!r}")
    if type(node) is list:
        try:
            return node[step]
        except IndexError:
            return _MISSING
    raise InvalidPath(f"index step [{step}] on {_a(node)} in {path!r}")


def _kind(node) -> str:
    if type(node) is dict:
        return "object"
    if type(node) is list:
        return "array"
    return "scalar"


def _a(node) -> str:
    """The node's kind with its article, for messages ("an array", "a scalar")."""
    kind = _kind(node)
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def get(doc, steps: tuple, path: str):
    node = doc
    for step in steps:
        node = _step(node, step, path)
        if node is _MISSING:
            return None
    return node


def set_(doc, steps: tuple, value, path: str):
    """Return the document with `value` at `steps`, creating objects on the way."""
    if not steps:
        return value
    if doc is None:
        doc = {} if type(steps[0]) is str else _refuse_index(steps[0], path)
    node = doc
    for k, step in enumerate(steps):
        last = k == len(steps) - 1
        if type(step) is str:
            if type(node) is not dict:
                raise InvalidPath(f"name step {step!r} on {_a(node)} in {path!r}")
            if last:
                node[step] = value
                return doc
            child = node.get(step, _MISSING)
            if child is _MISSING or child is None:
                nxt = steps[k + 1]
                child = {} if type(nxt) is str else _refuse_index(nxt, path)
                node[step] = child
            node = child
        else:
            if type(node) is not list:
                raise InvalidPath(f"index step [{step}] on {_a(node)} in {path!r}")
            if not -len(node) <= step < len(node):
                raise InvalidPath(f"index [{step}] out of range (length {len(node)}) in {path!r}")
            if last:
                node[step] = value
                return doc
            node = node[step]
    return doc  # pragma: no cover - the loop always returns


def _refuse_index(step, path):
    raise InvalidPath(f"cannot create an array for index [{step}] in {path!r}; set the array first")


def delete(doc, steps: tuple, path: str) -> bool:
    """Remove the node at `steps` (non-empty) from `doc`; False when it is missing."""
    parent = get(doc, steps[:-1], path)
    if parent is None:
        return False
    last = steps[-1]
    if type(last) is str:
        if type(parent) is not dict:
            raise InvalidPath(f"name step {last!r} on {_a(parent)} in {path!r}")
        return parent.pop(last, _MISSING) is not _MISSING
    if type(parent) is not list:
        raise InvalidPath(f"index step [{last}] on {_a(parent)} in {path!r}")
    try:
        del parent[last]
    except IndexError:
        return False
    return True


def array_at(doc, steps: tuple, path: str, create: bool):
    """The list at `steps`; with `create`, a missing one is made (objects on the way too).

    A missing document, or a null on the way, holds no array yet: as `set_`
    does, it gives way to the objects the path needs.
    """
    node = doc
    for step in steps:
        if node is None:
            break
        node = _step(node, step, path)
        if node is _MISSING:
            node = None
            break
    if node is None:
        if not create:
            return doc, None
        node = []
        doc = set_(doc, steps, node, path)
    if type(node) is not list:
        raise InvalidPath(f"{path!r} is {_a(node)}, not an array")
    return doc, node


def describe(steps: tuple) -> str:
    """Render steps back into a canonical path string (for messages and journals)."""
    out = ["$"]
    for s in steps:
        if type(s) is int:
            out.append(f"[{s}]")
        elif _NAME.fullmatch(s):
            out.append("." + s)
        else:
            out.append("[" + json.dumps(s) + "]")
    return "".join(out)
