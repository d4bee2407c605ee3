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
`[run_id, journal_length, positions, effects]`, where each effect is stored
without its run id (the item names it once) and rebuilt on load. The RUNS
section also carries the run's orphaned flag. The META section is a map with
the engine's format version and counts.
"""

from __future__ import annotations

import msgpack

from recovery import snapshot_format as fmt

from .effects import APPLY, PRIMITIVE, RUN_CREATE
from .engine import Engine, RunData

CODEC_VERSION = 1

_SECTION_OF = {"runs": fmt.RUNS, "kv": fmt.KV, "events": fmt.EVENTS, "state": fmt.STATE,
               "traces": fmt.TRACES, "json": fmt.JSON}
_ORDER = (fmt.RUNS, fmt.KV, fmt.EVENTS, fmt.STATE, fmt.TRACES, fmt.JSON)


def dump(engine: Engine) -> tuple[dict, list]:
    """(counts, [(section type, body bytes), ...]) for the engine's current state."""
    split = {t: [] for t in _ORDER}
    for r in engine.runs.values():
        per = {t: ([], []) for t in _ORDER}
        for pos, eff in enumerate(r.journal):
            positions, effs = per[_SECTION_OF[PRIMITIVE[eff[0]]]]
            positions.append(pos)
            effs.append((eff[0], *eff[2:]))
        n = len(r.journal)
        for t, (positions, effs) in per.items():
            if t == fmt.RUNS:
                split[t].append((r.run_id, n, positions, effs, r.orphaned))
            elif positions:
                split[t].append((r.run_id, n, positions, effs))
    packb = msgpack.Packer(use_bin_type=True).pack
    counts = engine.counts()
    sections = [(fmt.META, packb({"codec": CODEC_VERSION, **counts}))]
    sections += [(t, packb(split[t])) for t in _ORDER]
    return counts, sections


def load(engine: Engine, sections: dict) -> None:
    """Rebuild `engine` (empty) from the sections of a snapshot."""
    meta = msgpack.unpackb(sections[fmt.META], raw=False) if fmt.META in sections else {}
    if meta.get("codec", CODEC_VERSION) != CODEC_VERSION:
        raise ValueError(f"snapshot codec version {meta.get('codec')} is not supported")
    runs = engine.runs
    for item in _unpack(sections.get(fmt.RUNS)):
        run_id, n, positions, effs, orphaned = item
        journal = [None] * n
        r = None
        for pos, e in zip(positions, effs):
            eff = (e[0], run_id, *e[1:])
            journal[pos] = eff
            if e[0] == RUN_CREATE:
                r = RunData(eff)
            else:
                APPLY[e[0]](r, eff)
        if r is None:
            raise ValueError(f"run {run_id!r} has no creation record in the snapshot")
        r.journal = journal
        r.orphaned = orphaned
        runs[run_id] = r
    for t in _ORDER[1:]:
        for run_id, n, positions, effs in _unpack(sections.get(t)):
            r = runs[run_id]
            run_id = r.run_id  # one shared str for every effect of the run
            journal = r.journal
            apply = None
            code = None
            for pos, e in zip(positions, effs):
                if e[0] != code:
                    code = e[0]
                    apply = APPLY[code]
                eff = (code, run_id, *e[1:])
                journal[pos] = eff
                apply(r, eff)


def _unpack(body):
    if body is None:
        return ()
    return msgpack.unpackb(body, raw=False, use_list=False)
