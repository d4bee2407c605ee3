"""How an engine's state becomes snapshot sections, and back.

The engine's state is its runs' journals: every stored entry is the last
effect written to its slot, so a snapshot holds each run's journal split by
primitive — one section per primitive, as the file format asks — with each
effect's journal position beside it. Loading puts every effect back at its
position (the journal, for replay) and applies it through the same
`effects.APPLY` functions live writes use (the state). Within one primitive
the effects are in journal order, and primitives do not read each other's
state, so applying section by section rebuilds exactly the state that was
served.

Section body (msgpack): a list with one item per run,
`[run_id, journal_length, positions, effects]`, where `positions` is the
journal position of each effect as little-endian u32s (bytes) and each effect
is the tuple the engine holds. The RUNS section also carries the run's
orphaned flag. The META section is a map with the codec version and counts.

Loading is built for the common shapes: a run whose effects of one primitive
sit at consecutive positions is put back with one slice assignment, and the
KV, state and JSON tables are filled by the bulk apply functions of
`shard.effects` (`dict.update` over C iterators).
"""

from __future__ import annotations

import sys
from array import array
from itertools import compress, groupby
from operator import itemgetter
from typing import Protocol

import msgpack

from inmem.recovery import snapshot_format as fmt

from .effects import APPLY, CODE, KV_DEL, KV_PUT, PRIMITIVE, RUN_CREATE, apply_kv_many
from .runs import RunData

CODEC_VERSION = 1

_SECTION_OF = {"runs": fmt.RUNS, "kv": fmt.KV, "events": fmt.EVENTS, "state": fmt.STATE,
               "traces": fmt.TRACES, "json": fmt.JSON}
_ORDER = (fmt.RUNS, fmt.KV, fmt.EVENTS, fmt.STATE, fmt.TRACES, fmt.JSON)


class Snapshottable(Protocol):
    """What the codec needs of an engine (`shard.engine.Engine` is one)."""

    runs: dict[str, RunData]

    def counts(self) -> dict: ...


def dump(engine: Snapshottable) -> tuple[dict, list]:
    """(counts, [(section type, body bytes), ...]) for the engine's current state."""
    split = {t: [] for t in _ORDER}
    for r in engine.runs.values():
        n = len(r.journal)
        journal = r.journal.effects(0, n)
        codes = list(map(_CODE, journal))
        present = set(codes)
        for t in _ORDER:
            wanted = _CODES_OF_SECTION[t]
            if t != fmt.RUNS and not present & wanted:
                continue
            # compress() walks the journal in C: the split costs no Python loop per entry.
            mask = list(map(wanted.__contains__, codes))
            effs = list(compress(journal, mask))
            positions = _positions_bytes(compress(range(n), mask))
            if t == fmt.RUNS:
                split[t].append((r.run_id, n, positions, effs, r.orphaned))
            else:
                split[t].append((r.run_id, n, positions, effs))
    packb = msgpack.Packer(use_bin_type=True).pack
    counts = engine.counts()
    sections = [(fmt.META, packb({"codec": CODEC_VERSION, **counts}))]
    sections += [(t, packb(split[t])) for t in _ORDER]
    return counts, sections


def load(engine: Snapshottable, sections: dict) -> None:
    """Rebuild `engine` (empty) from the sections of a snapshot."""
    meta = msgpack.unpackb(sections[fmt.META], raw=False) if fmt.META in sections else {}
    if meta.get("codec", CODEC_VERSION) != CODEC_VERSION:
        raise ValueError(f"snapshot codec version {meta.get('codec')} is not supported")
    journals: dict = {}
    orphans: dict = {}
    for run_id, n, positions, effs, orphaned in _unpack(sections.get(fmt.RUNS)):
        if not effs or effs[0][CODE] != RUN_CREATE:
            raise ValueError(f"run {run_id!r} has no creation record in the snapshot")
        journal = [None] * n
        _place(journal, _positions(positions), effs)
        journals[run_id] = journal
        orphans[run_id] = orphaned
    for t in _ORDER[1:]:
        for run_id, _n, positions, effs in _unpack(sections.get(t)):
            _place(journals[run_id], _positions(positions), effs)
    missing = [run_id for run_id, journal in journals.items() if None in journal]
    if missing:
        raise ValueError(f"snapshot journals have holes in runs {missing[:5]}")
    runs = engine.runs
    for run_id, journal in journals.items():
        r = RunData(journal[0])
        # Runs of plain KV writes, the bulk of most journals, go in with C-level loops.
        for is_kv, effs in groupby(journal[1:], _IS_KV):
            if is_kv:
                apply_kv_many(r, list(effs))
            else:
                for eff in effs:
                    APPLY[eff[CODE]](r, eff)
        r.orphaned = orphans[run_id]
        runs[r.run_id] = r


_CODE = itemgetter(CODE)
_KV_CODES = frozenset((KV_PUT, KV_DEL))


def _IS_KV(eff) -> bool:
    return eff[CODE] in _KV_CODES


_CODES_OF_SECTION = {t: frozenset(c for c, prim in PRIMITIVE.items() if _SECTION_OF[prim] == t)
                     for t in _ORDER}


def _positions_bytes(positions) -> bytes:
    a = array("I", positions)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _positions(data) -> array:
    a = array("I")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def _place(journal: list, positions: array, effs) -> None:
    if len(positions) != len(effs):
        raise ValueError("snapshot section has positions and effects of different lengths")
    if not effs:
        return
    first, last = positions[0], positions[-1]
    if last - first + 1 == len(effs) and last < len(journal):
        journal[first:last + 1] = effs  # consecutive: one C-level copy
        return
    for pos, eff in zip(positions, effs):
        journal[pos] = eff


def _unpack(body):
    if body is None:
        return ()
    return msgpack.unpackb(body, raw=False, use_list=False)
