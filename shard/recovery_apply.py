"""The shard's side of recovery: how snapshot sections and WAL records become engine state.

The recovery sequence (`inmem.recovery.sequence`) reads and checks the files
and decides what their damage means; it knows nothing of the engine. It hands
what it read to a target with this shape, `EngineRecovery`, which loads
snapshot sections through `shard.snapshot_codec` and applies WAL records
through `RecoveryOps`, the part of the `Engine` that applies logged groups
with the same `shard.effects` functions live writes use.

What it is handed has passed its checksum, so it is what some release
wrote; when it is not what this build writes (a record or a section of
another shape, an effect code it does not know, a write to a run that was
never created) the target raises `UnreadableContent` saying which record,
and the sequence names the file: nothing of the kind escapes as a TypeError
or a msgpack error. Run-level effects (creation, status, deletion), rare and
able to change or drop a whole run silently, are checked field by field
before they are applied.

Reclaimed KV entries, state cells and JSON documents (`shard.dead_keys`) are
not in the WAL: a snapshot holds each run's version floor of each family, and
a record holds each write with its version, so what recovery rebuilds hands
out no version twice; the dead entries it brings back have no notes, so the
target tells the engine to look for them in every family
(`ReclaimOps.rescan_dead`), which its first sweeps do. A run created or
deleted by a record starts every family again from floor 0.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Callable

from inmem.recovery.errors import UnreadableContent, describe

from .effects import (APPLY, CODE, CREATE_FLAGS, CREATE_RUN, DELETE_RUN, KV_DEL, KV_PUT,
                      RUN_CREATE, RUN_DELETE, RUN_STATUS, STATUS, STATUS_ERROR, STATUS_TS,
                      apply_kv_many, apply_status, decode_batch)
from .lifecycle import STATUSES
from .runs import RunData
from .search_index import SearchIndex
from .snapshot_codec import load

log = logging.getLogger("inmem.shard")

_CODE = itemgetter(CODE)
_KV_CODES = frozenset((KV_PUT, KV_DEL))
_RUN_CODES = frozenset((RUN_CREATE, RUN_DELETE))


def _refuse(eff, why: str):
    raise UnreadableContent(f"{why}: {eff!r:.200}")


def _check_create(run_id, eff) -> None:
    """A RUN_CREATE effect as the engine writes it, for run `run_id`."""
    if (len(eff) not in (CREATE_FLAGS, CREATE_FLAGS + 1) or eff[CREATE_RUN] != run_id
            or not isinstance(eff[2], (str, type(None))) or not isinstance(eff[3], (str, type(None)))
            or not isinstance(eff[4], (tuple, list)) or not all(isinstance(t, str) for t in eff[4])
            or not isinstance(eff[5], (bytes, type(None))) or type(eff[6]) is not int
            or (len(eff) > CREATE_FLAGS and type(eff[CREATE_FLAGS]) is not int)):
        _refuse(eff, f"not a creation of run {run_id!r}")


def _check_delete(run_id, eff) -> None:
    if len(eff) != 3 or eff[DELETE_RUN] != run_id or type(eff[2]) is not int:
        _refuse(eff, f"not a deletion of run {run_id!r}")


def _apply_status_checked(r, eff) -> None:
    """apply_status for an effect read back from disk: a status the engine knows, or no change."""
    if (len(eff) != 4 or eff[STATUS] not in STATUSES or type(eff[STATUS_TS]) is not int
            or not isinstance(eff[STATUS_ERROR], (str, type(None)))):
        _refuse(eff, "not a status change")
    apply_status(r, eff)


#: APPLY for effects read back from disk: the run-level ones are checked first
_APPLY = {**APPLY, RUN_STATUS: _apply_status_checked}


class RecoveryOps:
    """The engine's methods that apply what a recovery read back."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    index: SearchIndex
    history_files: object
    forget_floors: Callable[[str], None]

    def apply_batches(self, batches) -> None:
        """Apply a WAL record's batches, `(run id, [effect, ...])`, in order.

        The same functions as live writes, in bulk: a batch of plain KV writes
        to a live run goes to the journal and the table with C-level calls.
        """
        runs = self.runs
        for run_id, effs in batches:
            r = runs.get(run_id)
            if r is not None:
                if len(effs) == 1:  # one operation: the common record shape
                    eff = effs[0]
                    code = eff[CODE]
                    if code not in _RUN_CODES:
                        _APPLY[code](r, eff)
                        continue
                codes = set(map(_CODE, effs))
                if codes <= _KV_CODES:
                    apply_kv_many(r, effs)
                    continue
                if not codes & _RUN_CODES:
                    for eff in effs:
                        _APPLY[eff[CODE]](r, eff)
                    continue
            self.apply_group((run_id, *effs))

    def apply_group(self, group: tuple) -> None:
        """Apply one logged group, `(run id, effect, ...)`, read back from the WAL.

        This is the path live writes take (the same APPLY functions), minus the
        checks: a group in the log was validated when it was first committed.
        """
        run_id = group[0]
        r = self.runs.get(run_id)
        if r is not None and len(group) == 2:  # the common case: one write to a live run
            eff = group[1]
            code = eff[CODE]
            if code != RUN_CREATE and code != RUN_DELETE:
                _APPLY[code](r, eff)
                return
        for eff in group[1:]:
            code = eff[CODE]
            if code == RUN_CREATE:
                _check_create(run_id, eff)
                r = self.runs[run_id] = RunData(eff, None, self.history_files)
                self.forget_floors(run_id)  # a new run: its keys start from floor 0
                continue
            if code == RUN_DELETE:
                _check_delete(run_id, eff)
                gone = self.runs.pop(run_id, None)
                if gone is not None:
                    gone.journal.release()
                self.index.drop_run(run_id)
                self.forget_floors(run_id)
                r = None
                continue
            if r is None:
                raise UnreadableContent(f"a write to run {run_id!r}, which was never created")
            _APPLY[code](r, eff)

    def mark_orphans(self) -> list[str]:
        """After recovery: every run still active has no end; flag it as orphaned."""
        for r in self.runs.values():
            if r.status == "active":
                r.orphaned = True
        return self.orphaned_runs()


def _unreadable(exc: Exception, index: int | None) -> UnreadableContent:
    """The error for a WAL record (`index` in its block) that could not be applied."""
    if isinstance(exc, UnreadableContent):
        exc.index = index
        return exc
    return UnreadableContent(f"applying it failed ({describe(exc)})", index)


def _first_undecodable(payloads) -> int | None:
    """The index of the first payload that does not decode on its own, or None."""
    for i, payload in enumerate(payloads):
        try:
            decode_batch(payload)
        except Exception:
            return i
    return None


class EngineRecovery:
    """Rebuilds an empty engine from a snapshot and the WAL records after it.

    With history files (a durable store), every record's effects are pointed
    at the record as soon as they are applied (the reader says where each
    record sits), so the runs' histories hold a few bytes of index per record
    instead of the effects.
    """

    __slots__ = ("engine", "_apply", "_files", "bytes_applied")

    def __init__(self, engine: RecoveryOps):
        self.engine = engine
        self._apply = engine.apply_batches
        self._files = getattr(engine, "history_files", None)
        #: the WAL record bytes replayed: what a snapshot now would let go of
        self.bytes_applied = 0

    def load_snapshot(self, sections: dict) -> None:
        """Fill the engine from a snapshot's sections; UnreadableContent if they are not a state."""
        load(self.engine, sections)
        # Dead entries come back without the notes that find them (shard.dead_keys).
        self.engine.rescan_dead()

    def apply_records(self, payloads, segment: int | None = None, offsets=None) -> int:
        """Apply a block of WAL records, in log order; return their group count.

        The block's consecutive batches of one run become one batch, in order:
        records of one operation each (strict mode, a light load) then take
        the bulk paths together instead of one record at a time. With history
        files, each record is applied on its own and its effects are pointed
        at it (`segment`: the first LSN of its segment file, `offsets`: where
        each record starts in it), which the caller must then give.
        """
        self.bytes_applied += sum(map(len, payloads))
        self.engine.rescan_dead()
        if self._files is not None:
            if offsets is None:
                raise ValueError("a store with history files applies WAL records with their places")
            return self._apply_placed(payloads, segment, offsets)
        try:
            groups = 0
            merged: list = []
            last = None
            for count, batches in map(decode_batch, payloads):
                groups += count
                for batch in batches:
                    run_id = batch[0]
                    if run_id == last:
                        prev = merged[-1]
                        if type(prev[1]) is not list:
                            merged[-1] = prev = (run_id, list(prev[1]))
                        prev[1].extend(batch[1])
                    else:
                        merged.append(batch)
                        last = run_id
            self._apply(merged)
        except MemoryError:
            raise
        except Exception as exc:
            # The records were merged: say which one, if one alone does not decode.
            raise _unreadable(exc, _first_undecodable(payloads)) from exc
        return groups

    def _apply_placed(self, payloads, segment: int, offsets) -> int:
        # Each batch's effects are pointed at their record as soon as they are
        # applied, and the items they became are let go while still in the
        # cache: the index rebuild that follows recovery reads the tables, not
        # these (SearchIndex.start_rebuild), and replay reads the record. A
        # run deleted by a later batch releases its places then, as it does
        # when it is deleted live.
        runs = self.engine.runs
        apply = self._apply
        place_of = self._files.place
        groups = 0
        i = 0
        try:  # costs nothing until a record raises; then that record is named
            for i, (payload, offset) in enumerate(zip(payloads, offsets)):
                count, batches = decode_batch(payload)
                groups += count
                place = place_of(segment, offset)
                seen: dict = {}  # run -> its effects in this record so far, as a reader counts them
                for batch in batches:
                    run_id, effs = batch
                    r0 = runs.get(run_id)
                    n0 = 0 if r0 is None else len(r0.journal.items)
                    apply((batch,))
                    skip = seen.get(run_id, 0)
                    seen[run_id] = skip + len(effs)
                    r = runs.get(run_id)
                    if r is None:
                        continue  # deleted in this batch: its history went with it
                    h = r.journal
                    if r is r0:
                        n = len(h.items) - n0
                    else:  # created in this batch: from its last creation on
                        n = len(h.items)
                        skip += max(j for j, eff in enumerate(effs) if eff[CODE] == RUN_CREATE)
                    if n:
                        h.to_disk(n, place, skip)
                        h.drop_held(h.disk)
        except MemoryError:
            raise
        except Exception as exc:
            raise _unreadable(exc, i) from exc
        return groups

    def mark_orphans(self) -> list[str]:
        return self.engine.mark_orphans()

    def schedule_index_rebuild(self) -> None:
        # The index is never stored. Rebuilding it here would keep the shard
        # from reporting ready for ~10 us per text value; it is rebuilt after,
        # in the background slices that keep it up to date.
        engine = self.engine
        engine.index.start_rebuild(engine.runs, engine.clock())
