"""How an engine's state becomes snapshot sections, and back.

A snapshot holds what the engine keeps, close to as it keeps it, so that
each section is packed and unpacked by one msgpack call (in C) and loading is
a copy of it rather than a replay:

- RUNS: per run `[run_id, create effect, status, updated_at, ended_at, error,
  orphaned, kv floor, state floor, json floor]`, the last three the run's
  version floors of its KV keys, state cells and JSON documents
  (`shard.dead_keys`: a name not in its table takes its family's floor + 1 on
  its first write); codec version 3 has the KV floor alone, codec 2 none;
- KV, STATE, JSON: per run `[run_id, keys, entries]`, two parallel lists: the
  keys and their packed entries (`shard.entries`), loaded with one
  `dict.update(zip(...))`;
- EVENTS, TRACES: per run `[run_id, effects]`, the tables' own effect tuples;
- JOURNAL: the history index, not the history: `[file names, runs]` where each
  run is `[run_id, length, base, extent starts, extent places, extent skips,
  in-memory extents, held effects]` (the three extent arrays as little-endian
  i64 bytes; see `shard.history` and `shard.history_files`). A durable shard
  hands every effect to the WAL before it forks a snapshot, so the history is
  all extents, and a snapshot costs the same whether each key was written
  once or a hundred times.
- META: the codec version and counts.

Codec version 3 (runs with a KV floor alone: their state and JSON floors
load as 0, which is what a build that kept every dead cell and document
had), codec version 2 (runs without a floor: each loads with floors 0, for
the same reason) and codec version 1 (each run's whole journal split by
primitive, with its positions) are still read; a version 1 history is kept
in memory, as it has no record to point at. A
snapshot of a newer codec version than this build reads is refused as such
(UnreadableContent with its version), never read as damage.
"""

from __future__ import annotations

import sys
from array import array
from itertools import groupby
from operator import itemgetter
from typing import Protocol

import msgpack

from inmem.recovery import snapshot_format as fmt
from inmem.recovery.errors import UnreadableContent, describe

from .effects import (APPLY, CODE, KV_DEL, KV_PUT, RUN_CREATE, apply_kv_many,
                      load_entries, load_events, load_traces)
from .history_files import i64_from_le, i64_to_le
from .runs import RunData

CODEC_VERSION = 4
_READS = (1, 2, 3, 4)
#: the fields of a run in the RUNS section, by codec version (2: no floor, 3: the KV
#: floor, 4: the KV, state and JSON floors)
_RUN_FIELDS = {2: 7, 3: 8, 4: 10}

_ORDER = (fmt.RUNS, fmt.KV, fmt.EVENTS, fmt.STATE, fmt.TRACES, fmt.JSON)
#: the sections `dump` writes, every one of them, from codec version 2 on (3 and 4 add none)
_SECTIONS_V2 = (fmt.META, fmt.RUNS, fmt.KV, fmt.EVENTS, fmt.STATE, fmt.TRACES, fmt.JSON,
                fmt.JOURNAL)


class Snapshottable(Protocol):
    """What the codec needs of an engine (`shard.engine.Engine` is one)."""

    runs: dict[str, RunData]
    history_files: object

    def counts(self) -> dict: ...

    def dead_families(self) -> tuple: ...


def dump(engine: Snapshottable) -> tuple[dict, list]:
    """(counts, [(section type, body bytes), ...]) for the engine's current state."""
    runs, kv, state, docs, events, traces, journal = [], [], [], [], [], [], []
    kv_floors, st_floors, js_floors = (d.floors for d in engine.dead_families())
    for run_id, r in engine.runs.items():
        h = r.journal
        runs.append((run_id, r.create_effect(), r.status, r.updated_at, r.ended_at, r.error,
                     r.orphaned, kv_floors.get(run_id, 0), st_floors.get(run_id, 0),
                     js_floors.get(run_id, 0)))
        if r.kv:
            kv.append((run_id, list(r.kv), list(r.kv.values())))
        if r.state:
            state.append((run_id, list(r.state), list(r.state.values())))
        if r.json:
            docs.append((run_id, list(r.json), list(r.json.values())))
        if r.events:
            events.append((run_id, r.events))
        if r.traces:
            traces.append((run_id, list(r.traces.values())))
        journal.append((run_id, len(h), h.disk, i64_to_le(h.ext_pos), i64_to_le(h.ext_loc),
                        i64_to_le(h.ext_skip), sorted((h.mem or {}).items()),
                        h.effects(h.disk, len(h))))
    files = engine.history_files
    names = [] if files is None else list(files.names)
    packb = msgpack.Packer(use_bin_type=True).pack
    counts = engine.counts()
    sections = [(fmt.META, packb({"codec": CODEC_VERSION, **counts})),
                (fmt.RUNS, packb(runs)), (fmt.KV, packb(kv)), (fmt.EVENTS, packb(events)),
                (fmt.STATE, packb(state)), (fmt.TRACES, packb(traces)), (fmt.JSON, packb(docs)),
                (fmt.JOURNAL, packb((names, journal)))]
    return counts, sections


def load(engine: Snapshottable, sections: dict) -> None:
    """Rebuild `engine` (empty) from the sections of a snapshot.

    Raises UnreadableContent (naming the section it was reading) when the
    sections are not a state this build wrote: the file's checksum held, so
    they come from another release or a faulty one.
    """
    at = [fmt.META]  # the section being read, for the error
    try:
        _load(engine, sections, at)
    except (UnreadableContent, MemoryError):
        raise
    except Exception as exc:
        raise UnreadableContent(f"section {fmt.section_name(at[0])}: {describe(exc)}",
                                section=at[0]) from exc


def _load(engine: Snapshottable, sections: dict, at: list) -> None:
    meta = msgpack.unpackb(sections[fmt.META], raw=False) if fmt.META in sections else {}
    codec = meta.get("codec", 1)
    if codec not in _READS:
        if type(codec) is int and codec > CODEC_VERSION:
            raise UnreadableContent(
                f"its state is in codec version {codec}, newer than the versions this build "
                f"reads ({', '.join(map(str, _READS))})", section=fmt.META, version=codec)
        raise ValueError(f"snapshot codec version {codec!r} is not one this build wrote")
    if codec == 1:
        _load_v1(engine, sections, at)
        return
    for t in _SECTIONS_V2:
        if t not in sections:
            at[0] = t
            raise ValueError("the section is missing")
    files = engine.history_files
    runs = engine.runs
    families = engine.dead_families()  # KV, state, JSON: the order of the floors in a run
    fields = _RUN_FIELDS[codec]
    at[0] = fmt.RUNS
    for row in _unpack(sections.get(fmt.RUNS)):
        if len(row) != fields:
            raise ValueError(f"a run is {fields} fields in codec version {codec}, "
                             f"not {len(row)}")
        run_id, create, status, updated_at, ended_at, error, orphaned = row[:7]
        if not create or create[CODE] != RUN_CREATE or create[1] != run_id:
            raise ValueError(f"run {run_id!r} has no creation record in the snapshot")
        r = RunData(create, None, files)
        r.status, r.updated_at, r.ended_at, r.error, r.orphaned = \
            status, updated_at, ended_at, error, orphaned
        runs[run_id] = r
        # The floors a codec does not hold are 0: its build kept those dead entries.
        for d, floor in zip(families, row[7:]):
            if type(floor) is not int or floor < 0:
                raise ValueError(f"run {run_id!r} has a {d.table} version floor of {floor!r}")
            if floor:
                d.floors[run_id] = floor
    for t, attr in ((fmt.KV, "kv"), (fmt.STATE, "state"), (fmt.JSON, "json")):
        at[0] = t
        for run_id, keys, entries in _unpack(sections.get(t)):
            if len(keys) != len(entries):
                raise ValueError(f"snapshot section {fmt.section_name(t)} of run {run_id!r} "
                                 "has keys and entries of different lengths")
            load_entries(getattr(runs[run_id], attr), keys, entries)
    at[0] = fmt.EVENTS
    for run_id, effs in _unpack(sections.get(fmt.EVENTS)):
        load_events(runs[run_id], effs)
    at[0] = fmt.TRACES
    for run_id, effs in _unpack(sections.get(fmt.TRACES)):
        load_traces(runs[run_id], effs)
    at[0] = fmt.JOURNAL
    names, journals = _unpack(sections.get(fmt.JOURNAL)) or ((), ())
    if names:
        if files is None:
            raise ValueError("this snapshot's history is on disk, and the engine has no files")
        files.adopt(list(names))
    for run_id, length, base, pos, loc, skip, mem, held in journals:
        h = runs[run_id].journal
        h.ext_pos, h.ext_loc, h.ext_skip = i64_from_le(pos), i64_from_le(loc), i64_from_le(skip)
        if not len(h.ext_pos) == len(h.ext_loc) == len(h.ext_skip) or base + len(held) != length:
            raise ValueError(f"the history index of run {run_id!r} does not add up")
        h.mem = {start: list(effs) for start, effs in mem} or None
        h.base = h.disk = base
        h.items = list(held)
        if files is not None:
            live = files.live
            for place in h.ext_loc:
                if place >= 0:
                    live[place >> 40] += 1
        elif any(place >= 0 for place in h.ext_loc):
            raise ValueError("this snapshot's history is on disk, and the engine has no files")


# -- codec version 1 -------------------------------------------------------------------

def _load_v1(engine: Snapshottable, sections: dict, at: list) -> None:
    journals: dict = {}
    orphans: dict = {}
    at[0] = fmt.RUNS
    for run_id, n, positions, effs, orphaned in _unpack(sections.get(fmt.RUNS)):
        if not effs or effs[0][CODE] != RUN_CREATE:
            raise ValueError(f"run {run_id!r} has no creation record in the snapshot")
        journal = [None] * n
        _place(journal, _positions(positions), effs)
        journals[run_id] = journal
        orphans[run_id] = orphaned
    for t in _ORDER[1:]:
        at[0] = t
        for run_id, _n, positions, effs in _unpack(sections.get(t)):
            _place(journals[run_id], _positions(positions), effs)
    missing = [run_id for run_id, journal in journals.items() if None in journal]
    if missing:
        raise ValueError(f"snapshot journals have holes in runs {missing[:5]}")
    runs = engine.runs
    for run_id, journal in journals.items():
        r = RunData(journal[0], None, engine.history_files)
        # Runs of plain KV writes, the bulk of most journals, go in with C-level loops.
        for is_kv, effs in groupby(journal[1:], _IS_KV):
            if is_kv:
                apply_kv_many(r, list(effs))
            else:
                for eff in effs:
                    APPLY[eff[CODE]](r, eff)
        r.orphaned = orphans[run_id]
        r.journal.pin()  # no WAL record holds these any more: they stay in memory
        runs[r.run_id] = r


_CODE = itemgetter(CODE)
_KV_CODES = frozenset((KV_PUT, KV_DEL))


def _IS_KV(eff) -> bool:
    return eff[CODE] in _KV_CODES


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
