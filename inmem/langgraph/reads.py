"""Reads that may not fit in one reply: asked again in smaller pieces.

A cluster refuses a reply over its (or its client's) `max_message_bytes`
(64 MiB by default) with ProtocolError, in place of the result of every
operation that went in that message. What the adapters read at once grows
with what an agent stored: a page of `list` is up to 64 checkpoints and the
channel values they name, a checkpoint names every channel value of its
state, a search without a query reads a whole namespace. A thread of twenty
checkpoints of 4 MiB of state could be written but not listed.

`read_in_pieces(ops)` is a plan step (see `driver.py`) for read-only
operations: the operations whose reply was refused are asked again in
halves, and a single one in parts — a `kv.get_many` by halves of its keys,
a `kv.keys` or `kv.items` listing in sorted pages — until each reply fits.
A single value always fits (a value is at most `max_value_bytes`, 16 MiB by
default); what still does not keeps its ProtocolError for the caller to
raise. Nothing is asked twice when everything fits, so the usual read costs
the round trip it did.
"""

from __future__ import annotations

from inmem.errors import ProtocolError

#: keys a listing too large for one reply asks for per page (halved while a page is too large)
LIST_PAGE = 4096


def read_in_pieces(ops: list):
    """Plan step: the results of read-only `ops`, every reply small enough to arrive."""
    results = list((yield ops))
    failed = [i for i, r in enumerate(results) if type(r) is ProtocolError]
    if not failed:
        return results
    if len(ops) == 1:
        return [(yield from _one_in_parts(ops[0], results[0]))]
    again = [ops[i] for i in failed]
    if len(again) == 1:
        answers = yield from read_in_pieces(again)
    else:
        half = len(again) // 2
        answers = (yield from read_in_pieces(again[:half]))
        answers += (yield from read_in_pieces(again[half:]))
    for i, answer in zip(failed, answers):
        results[i] = answer
    return results


def _one_in_parts(op, error):
    """Plan step: one operation whose reply was refused, read in parts where it can be."""
    name, args = op
    if name == "kv.get_many" and len(args[1]) > 1:
        run, keys = args[0], list(args[1])
        half = len(keys) // 2
        # One half at a time: sent together they would share a reply again.
        (first,) = yield from read_in_pieces([("kv.get_many", (run, keys[:half]))])
        (second,) = yield from read_in_pieces([("kv.get_many", (run, keys[half:]))])
        if isinstance(first, BaseException):
            return first
        if isinstance(second, BaseException):
            return second
        return first + second
    if name in ("kv.items", "kv.keys") and len(args) <= 2:
        return (yield from _listed_in_pages(name, args[0], args[1] if len(args) > 1 else ""))
    return error


def _listed_in_pages(name: str, run: str, prefix: str):
    """Plan step: a `kv.keys` or `kv.items` listing too large for one reply, in sorted pages
    (`after`, `limit`); a page still too large (large values) is asked again at half."""
    out: list = []
    after, limit = None, LIST_PAGE
    while True:
        (page,) = yield [(name, (run, prefix, after, limit))]
        if type(page) is ProtocolError and limit > 1:
            limit //= 2
            continue
        if isinstance(page, BaseException):
            return page
        out += page
        if len(page) < limit:
            return out
        after = page[-1][0] if name == "kv.items" else page[-1]
