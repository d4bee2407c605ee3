"""What the simulation's clients write and how they write it down: values, parts, journal lines.

Shared by the client processes (`sim_client.py`, which imports it as a plain
module) and the model (`model.py`), so that both derive the same value from
the same uid and read the same journal format.

Every write a client sends is described by one or more *parts* (a
transaction has several), each a small JSON dict naming the primitive and
the slot it touches, and a *uid* from which the written value is derived
(`value_for`), so the journal never has to hold the values themselves::

    {"p": "kv", "a": "put"|"cas"|"del", "key": k, "uid": u, "ttl": t, "exp": v}
    {"p": "st", "a": "init"|"set"|"cas", "key": name, "uid": u, "exp": v}
    {"p": "js", "a": "put"|"set", "key": k, "uid": u, "path": "$.f"}
    {"p": "ev", "type": t, "uid": u}
    {"p": "tr", "type": t, "uid": u, "parent": trace id or None}
    {"p": "run", "a": "begin"|"end"|"abort"|"pause"|"resume", "reason": r}

A hostile part carries "hv" (how its value is built, see `hostile_value`).

Journal lines (JSON, one per line, flushed as written)::

    {"k": "phase", "p": phase}
    {"k": "call", "n": n, "run": run, "parts": [...], "hostile": name or None, "phase": p, "t": time}
    {"k": "done", "n": n, "out": "ack"|"rej"|"unk"|"exc", "err": class, "msg": text, "res": [...],
     "t": time}
    {"k": "obs", "run": run, "status": status}      (buffered: a status read after a write)

`out`: ack = the call returned (res holds one result per part); rej = it
raised an InmemError that says nothing was applied; unk = the outcome is not
known (a lost connection, ShardUnavailable, Timeout, DurabilityError); exc =
an exception that is not an InmemError at all (always a finding).
"""

from __future__ import annotations

import json
import os
import random

EVENT_TYPES = ("observe", "act", "msg")
TRACE_TYPES = ("thought", "decision", "tool_call")
#: errors after which a write may or may not have been applied
UNKNOWN_ERRORS = frozenset(("ShardUnavailable", "Timeout", "ClusterNotReady", "DurabilityError"))
NESTING = 1000
#: a ttl long enough that nothing expires while a simulation runs
LONG_TTL = 3600.0


def value_for(uid: str):
    """The value written by part `uid`: a dict holding the uid and a few fields of every type."""
    rng = random.Random(uid)
    value = {"u": uid}
    for i in range(rng.randint(0, 4)):
        value[f"f{i}"] = _field(rng, 0)
    return value


def _field(rng: random.Random, depth: int):
    kind = rng.randrange(9 if depth < 2 else 7)
    if kind == 0:
        return rng.choice((0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(-10**9, 10**9)))
    if kind == 1:
        return rng.choice((0.5, -1e-300, 1.7976931348623157e308, rng.random()))
    if kind == 2:
        letters = "abz \u00e9\u4e2d\U0001f600\n\"\\"
        return "".join(rng.choice(letters) for _ in range(rng.randrange(12)))
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(16)))
    if kind == 4:
        return rng.choice((True, False))
    if kind == 5:
        return None
    if kind == 6:
        return "x" * rng.randrange(2000)
    if kind == 7:
        return [_field(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"n{i}": _field(rng, depth + 1) for i in range(rng.randrange(4))}


def nested(levels: int = NESTING):
    value = None
    for _ in range(levels):
        value = [value]
    return value


def big_value(size: int) -> bytes:
    return b"\xab" * size


def hostile_value(part: dict):
    """The value a hostile part wrote: too deep (still naming its uid) or too big."""
    hv = part.get("hv")
    if hv == "nested":
        return {"u": part["uid"], "d": nested()}
    if hv == "big":
        return big_value(part["size"])
    raise ValueError(f"not a hostile part: {part!r}")


def part_value(part: dict):
    """What the part wrote (for js "set": the value put at the path)."""
    if "hv" in part:
        return hostile_value(part)
    return value_for(part["uid"])


def abort_reason(part: dict):
    """The reason an "abort" part sent (a long one is journaled by its length)."""
    if "reason_len" in part:
        return "r" * part["reason_len"]
    return part.get("reason")


class Journal:
    """Append-only JSON lines, flushed per line so a reader sees every finished call."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_journal(path) -> list:
    """Every complete line of a journal (a torn last line is ignored)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            out.append(json.loads(line))
    return out


def count_done(path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.startswith('{"k": "done"'))
