"""The shard's side of recovery: how snapshot sections and WAL records become engine state.

The recovery sequence (`inmem.recovery.sequence`) reads and checks the files
and decides what their damage means; it knows nothing of the engine. It hands
what it read to a target with this shape, `EngineRecovery`, which loads
snapshot sections through `shard.snapshot_codec` and applies WAL records
through `RecoveryOps`, the part of the `Engine` that applies logged groups
with the same `shard.effects` functions live writes use.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Callable

from inmem.errors import InmemError

from .effects import APPLY, CODE, KV_DEL, KV_PUT, RUN_CREATE, RUN_DELETE, apply_kv_many, decode_batch
from .history_files import record_places
from .runs import RunData
from .search_index import SearchIndex
from .snapshot_codec import load

log = logging.getLogger("inmem.shard")

_CODE = itemgetter(CODE)
_KV_CODES = frozenset((KV_PUT, KV_DEL))
_RUN_CODES = frozenset((RUN_CREATE, RUN_DELETE))


class RecoveryOps:
    """The engine's methods that apply what a recovery read back."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    index: SearchIndex
    history_files: object

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
                        APPLY[code](r, eff)
                        continue
                codes = set(map(_CODE, effs))
                if codes <= _KV_CODES:
                    apply_kv_many(r, effs)
                    continue
                if not codes & _RUN_CODES:
                    for eff in effs:
                        APPLY[eff[CODE]](r, eff)
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
                APPLY[code](r, eff)
                return
        for eff in group[1:]:
            code = eff[CODE]
            if code == RUN_CREATE:
                r = self.runs[run_id] = RunData(eff, None, self.history_files)
                continue
            if code == RUN_DELETE:
                gone = self.runs.pop(run_id, None)
                if gone is not None:
                    gone.journal.release()
                self.index.drop_run(run_id)
                r = None
                continue
            if r is None:
                raise InmemError(f"the log names run {run_id!r}, which was never created")
            APPLY[code](r, eff)

    def mark_orphans(self) -> list[str]:
        """After recovery: every run still active has no end; flag it as orphaned."""
        for r in self.runs.values():
            if r.status == "active":
                r.orphaned = True
        return self.orphaned_runs()


class EngineRecovery:
    """Rebuilds an empty engine from a snapshot and the WAL records after it.

    With history files (a durable store), it also notes, for every record it
    applies, which run histories took how many of its effects, so that
    `place_history` can point them at the record afterwards instead of
    keeping them on the heap.
    """

    __slots__ = ("engine", "_apply", "_track", "_sizes")

    def __init__(self, engine: RecoveryOps):
        self.engine = engine
        self._apply = engine.apply_batches
        track = getattr(engine, "history_files", None) is not None
        #: per applied record: [(History, count, skip), ...]
        self._track: list | None = [] if track else None
        self._sizes: list = []

    def load_snapshot(self, sections: dict) -> None:
        load(self.engine, sections)

    def apply_record(self, payload) -> int:
        """Apply one WAL record through the live apply path; return its group count."""
        count, batches = decode_batch(payload)
        if self._track is None:
            self._apply(batches)
            return count
        self._track.append(self._apply_tracked(batches))
        self._sizes.append(len(payload))
        return count

    def apply_records(self, payloads) -> int:
        """Apply a block of WAL records, in log order; return their group count.

        The block's consecutive batches of one run become one batch, in order:
        records of one operation each (strict mode, a light load) then take
        the bulk paths together instead of one record at a time.
        """
        if self._track is not None:  # each record's effects must stay attributable to it
            return sum(map(self.apply_record, payloads))
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
        return groups

    def _apply_tracked(self, batches) -> list:
        runs = self.engine.runs
        apply = self._apply
        seen: dict = {}
        out = []
        for batch in batches:
            run_id, effs = batch
            r0 = runs.get(run_id)
            h0 = None if r0 is None else r0.journal
            n0 = 0 if h0 is None else len(h0.items)
            apply((batch,))
            r1 = runs.get(run_id)
            h1 = None if r1 is None else r1.journal
            skip = seen.get(run_id, 0)
            if h1 is h0:
                if h0 is not None:
                    out.append((h0, len(h0.items) - n0, skip))
            else:
                if h0 is not None:  # deleted in this batch, after these
                    out.append((h0, len(h0.items) - n0, skip))
                if h1 is not None:  # created in this batch: from its last creation on
                    at = max(i for i, eff in enumerate(effs) if eff[CODE] == RUN_CREATE)
                    out.append((h1, len(h1.items), skip + at))
            seen[run_id] = skip + len(effs)
        return out

    def place_history(self, wal_dir: str, next_lsn: int) -> int:
        """Point the histories at the WAL records replay read; return the effects placed.

        When the records cannot be found again where the reader found them (a
        damaged region was skipped), the effects stay in memory instead.
        """
        engine = self.engine
        track, self._track = self._track, None
        if not track:
            return 0
        files = engine.history_files
        places = record_places(wal_dir, next_lsn - len(track), self._sizes)
        runs = engine.runs
        if places is None:
            log.warning("history of %d WAL records stays in memory: the records could not be "
                        "found again where recovery read them", len(track))
            for r in runs.values():
                r.journal.pin()
            return 0
        placed = 0
        for (first, offset), entries in zip(places, track):
            place = files.place(first, offset)
            for h, count, skip in entries:
                r = runs.get(h.run_id)
                if count and r is not None and r.journal is h:
                    h.to_disk(count, place, skip)
                    placed += count
        indexed = engine.index.watermark
        for r in runs.values():
            r.journal.drop_held(indexed.get(r.run_id, 0))
        return placed

    def mark_orphans(self) -> list[str]:
        return self.engine.mark_orphans()

    def schedule_index_rebuild(self) -> None:
        # The index is never stored. Rebuilding it here would keep the shard
        # from reporting ready for ~10 us per text value; it is rebuilt after,
        # in the background slices that keep it up to date.
        engine = self.engine
        engine.index.start_rebuild(engine.runs, engine.clock())
