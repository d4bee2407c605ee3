"""Dead entries reclaimed: deleted and expired KV keys, deleted state cells and JSON documents
leave their run's tables, each family under its own per-run version floor.

A delete leaves an entry that says so (a tombstone: the key's version keeps
counting across delete and re-create), and an expired entry reads as missing
but its next put continues its version (`shard.kv`). A deleted state cell
(`shard.state_cells`) or JSON document (`shard.json_docs`, a delete of the
whole document) leaves a tombstone too. Kept for ever, they made a TTL cache
of unique keys, a delete-heavy agent memory, or an agent that creates and
deletes a document or a cell per task, grow without end, in memory and in
every snapshot. So a *dead* entry (a tombstone, or a KV entry whose TTL has
passed) that has been dead for longer than the engine's
`dead_key_retention_s` (default 60 s; 0: at the next sweep) is removed from
its run's table (a KV key from the run's sorted key order too,
`shard.key_order`), and the run's **version floor** of that family becomes
max(floor, that entry's version).

Three families, three floors per run (`DeadKeys`, one per family: `dead`,
`dead_state` and `dead_json`, whose floors are the engine's `kv_floors`,
`state_floors` and `json_floors`), not one floor the run's families share.
Both keep the contract below; separate floors were chosen because a
family's versions then depend on its own history alone: a document edited ten thousand times and deleted does not start every new KV
key or cell of the run above 10,000 (a KV entry's version takes 1 byte below
256 and 2 below 65,536, `shard.entries`, so a shared floor would grow the
entries, and slow the put path, of a family that reclaimed nothing), and a
KV-only workload sees exactly the versions it saw before cells and
documents were reclaimed. What it costs is two more ints per run in a
snapshot, and nothing on a write: a name not in its table looks up its own
family's floors, as a KV key did.

The contract on versions holds unchanged: versions grow by 1 with each write
of a key, and a version a client saw never validates again. A key that is not
in its run's table gets, on its first write, the version `floor + 1` of its
family (every path that writes a KV key: `kv.put`, a pipeline's series of
puts, `kv.put_many`, `kv.cas`; a cell: `st.init`, `st.set`, `st.cas`; a
document: `js.put`, `js.set`, `js.push`; and transactions, which run those),
so a run that never reclaimed anything starts its keys at 1 as before, and a
reclaimed key written again gets a version above every version it had: no
version ever names two lives of one key. The search index relies on it too:
it skips a logged write whose version is no longer its key's, so a document
deleted, reclaimed and written again is never indexed with its old text.

Validation against a reclaimed key (what was chosen, and why):

- `kv.cas(key, expected)` and `st.cas(name, expected)`: the key is not live,
  so its version is 0, as for a tombstone: an expected version above 0 fails
  (it is stale: it named a life that is over; a cell's `VersionMismatch`
  says `actual` 0 and `current` None, as for any absent cell), 0 ("must not
  exist") passes, as it did on the tombstone. `st.read` gives None and
  `st.init` creates the cell, as on the tombstone; a reclaimed document reads
  as missing and a delete of it (whole or of a part) finds nothing.
- a transaction's read set: a key read as missing *and never written* has
  version 0; one read as a tombstone or an expired entry has that entry's
  version. At commit a key absent from the table counts as version 0. So a
  read of a dead entry that was reclaimed since conflicts (its version is not
  0), as it would have if the tombstone had been written over: a transaction
  never commits on a read the kept tombstone would have refused, except one
  that read a key missing (version 0) and finds it missing again, after it was
  written and its dead entry reclaimed in between. That one commits, and it is
  plainly right: the read agrees with the state at commit, so the
  transaction is serializable there (its reads are what they would be if it
  ran whole at its commit). A tombstone read then reclaimed conflicts though
  the key is missing still: the one spurious conflict, and a retry reads 0.

How dead entries are found without rescanning the tables: the writes that make
one (a delete, a put with a TTL) note the key under the time it dies (the
delete's time, the expiry) in a bucket of about a second (`BUCKET_SHIFT`);
the buckets are a heap by time and each holds its keys by run, one heap per
family. Cells and documents have no TTL: only their deletes note. A sweep takes
the buckets whose every time is past the retention, and for each key looks at
the entry the key holds *now*: still dead, and dead since that long, it is
reclaimed; written since, it is left (a delete noted its own death), or, if
it expires later, noted again at that time. So a put with a TTL over an
expiring entry that dies no later than it notes nothing (`noted_before`): a
key whose TTL is refreshed on every read (LangGraph's store does) keeps one
note, not one per refresh. A note costs a list slot per dead or expiring
entry; a run with none costs nothing. After a recovery nothing is noted: the first sweeps look
once at each recovered run's tables for their dead and expiring entries (a
pass in C per table, then the notes in slices), in each family only at the
runs whose table in it holds entries (most runs have no cell or document).

The sweep is incremental and bounded: `sweep_dead` handles at most so many
notes in all families together and stops at a deadline, and the next call
resumes where it stopped, starting with the family after the one this call
started with, so a backlog of one family does not keep the others waiting.
It runs from the shard's upkeep (`shard.upkeep`: the embedded durable store's
scheduler thread and the worker's idle turns), and the writes that make a
dead entry also reclaim up to `INLINE_PER_WRITE` due ones each, so reclaiming
keeps pace with the writes that make dead entries wherever the engine runs (an
embedded in-memory store has no upkeep thread), and a plain put or get pays
nothing. The sweep waits while the search index is rebuilt after a recovery
(its pass over the tables takes keys by position), and an expired entry whose
document the index still holds is left for the next round, once the index's
own expiry pass has dropped it.

Durability: reclaiming is not logged in the WAL. A recovered store is the
last snapshot, which stores each run's floors (`shard.snapshot_codec`), plus
the WAL records after it; a WAL record holds each write's final entry with its
version (`shard.effects`: the field form or the entry form, both with the
version), so a version handed out after a reclaim is replayed as it was given.
What a reclaim after the snapshot took away comes back with the recovery (the
dead entry is in the snapshot or in the WAL after it), is dead again and is
reclaimed again; a key reclaimed before the snapshot is covered by the
snapshot's floor. Either way a key's next version stays above every version
it had.
"""

from __future__ import annotations

import heapq
import time
from itertools import compress
from operator import itemgetter
from typing import Callable

from .entries import DELETED, EXPIRING, entry_expires, entry_ts, entry_version
from .key_order import drop as drop_from_order

#: a note's time is kept to buckets of 2**BUCKET_SHIFT µs (about a second)
BUCKET_SHIFT = 20
_BUCKET_LAST = (1 << BUCKET_SHIFT) - 1
#: the default of the `dead_key_retention_s` option, in seconds
DEFAULT_RETENTION_S = 60
#: notes one upkeep round handles at most, and the time it may take
SWEEP_ENTRIES = 4096
SWEEP_MS = 2.0
#: notes a write that makes a dead entry handles after its own
INLINE_PER_WRITE = 2

#: the families of keyed tables whose dead entries are reclaimed, by their run attribute
FAMILIES = ("kv", "state", "json")

#: `due_at` when nothing is noted
_NEVER = float("inf")
#: flags -> whether an entry may be or become dead (a tombstone, or one with an expiry)
_MORTAL = tuple(bool(f & (DELETED | EXPIRING)) for f in range(32))
_FLAGS = itemgetter(0)


def dead_since(e: bytes) -> int | None:
    """When entry `e` died or dies, µs: a delete's time, an expiry; None if it never does."""
    flags = e[0]
    if flags & DELETED:
        return entry_ts(e)
    if flags & EXPIRING:
        return entry_expires(e)
    return None


def noted_before(old: bytes | None, expires: int) -> bool:
    """Whether a put with a TTL ending at `expires` over entry `old` needs no note of its own:
    `old` expires (and is not deleted) no later, so its note comes first and finds the new one."""
    return (old is not None and old[0] & (DELETED | EXPIRING) == EXPIRING
            and entry_expires(old) <= expires)


def due_by(retention_us: int, now: int) -> int:
    """The last bucket whose every time lies `retention_us` or more before `now`."""
    return ((now - retention_us + 1) >> BUCKET_SHIFT) - 1


class DeadKeys:
    """One engine's notes of the dead entries of one family of tables (the runs' KV tables,
    state tables or JSON tables), its runs' version floors in it and what it reclaimed."""

    __slots__ = ("table", "retention_us", "floors", "buckets", "times", "reclaimed", "rescan",
                 "unnoted", "due_at", "_last")

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S, table: str = "kv"):
        if type(retention_s) not in (int, float) or not retention_s >= 0:
            raise ValueError(f"dead_key_retention_s must be a number >= 0, got {retention_s!r}")
        if table not in FAMILIES:
            raise ValueError(f"no family of tables named {table!r}")
        #: the run attribute that holds the family's table: "kv", "state" or "json"
        self.table = table
        #: how long an entry stays dead before it is reclaimed, µs (inf: a practical never)
        self.retention_us = int(min(retention_s, 10**12) * 1_000_000)
        #: run id -> its version floor in this family; only runs that reclaimed something
        #: in it are here
        self.floors: dict[str, int] = {}
        #: bucket -> {run id: [key, ...]}: the keys whose entries die in that bucket
        self.buckets: dict[int, dict] = {}
        #: the buckets, a heap
        self.times: list[int] = []
        #: dead entries reclaimed since the engine started
        self.reclaimed = 0
        #: runs whose tables were filled without notes (a recovery): [(run id, keys or None)]
        self.rescan: list = []
        #: True: every run's table may hold entries without notes (`rescan` is made from it)
        self.unnoted = False
        #: the time (µs) from which the first bucket is due: one comparison tells a write
        #: whether there is anything to reclaim
        self.due_at = _NEVER
        #: (bucket, run id, its keys) of the last note: a run's deletes come in a row
        self._last = (None, None, None)

    def note(self, run_id: str, key: str, at: int) -> None:
        """The entry just written at `key` of run `run_id` dies at `at` (µs)."""
        b = at >> BUCKET_SHIFT
        last_b, last_run, last_keys = self._last
        if b == last_b and run_id == last_run:
            last_keys.append(key)
            return
        by_run = self.buckets.get(b)
        if by_run is None:
            keys = [key]
            self.buckets[b] = {run_id: keys}
            times = self.times
            heapq.heappush(times, b)
            if times[0] == b:
                self.first_changed()
        else:
            keys = by_run.get(run_id)
            if keys is None:
                keys = by_run[run_id] = [key]
            else:
                keys.append(key)
        self._last = (b, run_id, keys)

    def first_changed(self) -> None:
        """The first bucket is another (or none): when it is due, and no cached note list."""
        times = self.times
        self.due_at = ((times[0] + 1) << BUCKET_SHIFT) + self.retention_us - 1 if times \
            else _NEVER
        self._last = (None, None, None)

    def forget_run(self, run_id: str) -> None:
        """Run `run_id` is gone: a run begun later under its id starts from floor 0."""
        self.floors.pop(run_id, None)

    def rescan_all(self) -> None:
        """The runs' tables were filled without notes (a recovery): look at each for its dead
        entries before the next sweep."""
        self.unnoted = True


class ReclaimOps:
    """The engine's sweep of dead entries, in each family of tables (see the module docstring)."""

    runs: dict
    clock: Callable[[], int]
    #: the KV family's notes and floors (`kv_floors` is its `floors`)
    dead: DeadKeys
    #: the state cells' and the JSON documents' (`state_floors`, `json_floors` their floors)
    dead_state: DeadKeys
    dead_json: DeadKeys
    _undo: list | None

    def _init_dead(self, retention_s: float) -> None:
        """Make the notes and floors of each family (the engine's __init__ calls it)."""
        self.dead = DeadKeys(retention_s, "kv")
        self.kv_floors = self.dead.floors
        self.dead_state = DeadKeys(retention_s, "state")
        self.state_floors = self.dead_state.floors
        self.dead_json = DeadKeys(retention_s, "json")
        self.json_floors = self.dead_json.floors
        #: the families in the order a sweep takes them; it turns after each sweep
        self._dead_turn = [self.dead, self.dead_state, self.dead_json]

    def dead_families(self) -> tuple:
        """Each family's DeadKeys: (KV, state cells, JSON documents)."""
        return (self.dead, self.dead_state, self.dead_json)

    def forget_floors(self, run_id: str) -> None:
        """Run `run_id` is gone: a run begun later under its id starts every family from 0."""
        for d in self.dead_families():
            d.forget_run(run_id)

    def rescan_dead(self) -> None:
        """The tables were filled without notes (a recovery): every family looks again."""
        for d in self.dead_families():
            d.rescan_all()

    def reclaimed_counts(self) -> dict:
        """Dead entries reclaimed since the engine started, by family, as `db.info()` says."""
        return {"kv_reclaimed": self.dead.reclaimed,
                "state_reclaimed": self.dead_state.reclaimed,
                "json_reclaimed": self.dead_json.reclaimed}

    def sweep_dead(self, max_entries: int = SWEEP_ENTRIES, budget_ms: float | None = None) -> int:
        """Reclaim the entries dead for longer than the retention, in every family: at most
        `max_entries` notes looked at in all, and none after `budget_ms`. Returns how many
        were reclaimed; the next call goes on where this one stopped, starting with the
        family after the one this call started with (one family's backlog does not keep the
        others waiting)."""
        if self._undo is not None or self.index.rebuilding:
            return 0
        deadline = None if budget_ms is None else time.monotonic() + budget_ms / 1000
        turn = self._dead_turn
        order = tuple(turn)
        turn.append(turn.pop(0))
        reclaimed = 0
        now = None
        for d in order:
            if max_entries <= 0:
                break
            if d.unnoted:
                # Only runs with entries in this family: most runs hold no cell or document.
                attr = d.table
                d.rescan = [(run_id, None) for run_id, r in self.runs.items()
                            if getattr(r, attr)]
                d.unnoted = False
            if d.rescan:
                max_entries -= self._rescan_step(d, max_entries)
                if max_entries <= 0 or d.rescan:
                    continue
            times = d.times
            if not times:
                continue
            if now is None:
                now = self.clock()
            last = due_by(d.retention_us, now)
            if times[0] > last:
                continue
            got, seen = self._reclaim_due(d, last, max_entries, deadline)
            reclaimed += got
            max_entries -= seen
            if deadline is not None and time.monotonic() > deadline:
                break
        return reclaimed

    def _reclaim_due(self, d: DeadKeys, last: int, max_entries: int, deadline) -> tuple:
        """Look at up to `max_entries` notes of family `d`'s buckets up to `last`; reclaim the
        entries that died in those buckets (a note and the entry it finds agree on the
        bucket). Returns (entries reclaimed, notes looked at)."""
        times, buckets, floors, runs = d.times, d.buckets, d.floors, self.runs
        attr = d.table
        is_kv = attr == "kv"
        docs = self.index.docs
        d._last = (None, None, None)  # the lists noted into may go
        seen = reclaimed = 0
        again: list = []  # (run id, key, when): entries to note again
        while times and times[0] <= last and seen < max_entries:
            b = times[0]
            by_run = buckets[b]
            while by_run and seen < max_entries:
                run_id = next(iter(by_run))
                keys = by_run[run_id]
                r = runs.get(run_id)
                if r is None:  # the run is gone, and its notes with it
                    del by_run[run_id]
                    continue
                table = getattr(r, attr)
                while keys and seen < max_entries:
                    key = keys.pop()
                    seen += 1
                    e = table.get(key)
                    if e is None:
                        continue
                    flags = e[0]
                    if flags & DELETED:
                        since = entry_ts(e)
                    elif flags & EXPIRING:
                        since = entry_expires(e)
                    else:
                        continue  # written since: live, and it does not expire
                    if since >> BUCKET_SHIFT > last:
                        # Written since. A delete noted its own death; a put with a
                        # TTL that dies later may not have (noted_before): note it.
                        if not flags & DELETED:
                            again.append((run_id, key, since))
                        continue
                    if not flags & DELETED and ("kv", run_id, key) in docs:
                        # The search index still holds it: the next round, once the
                        # index's own expiry pass dropped it.
                        again.append((run_id, key, (last + 1) << BUCKET_SHIFT))
                        continue
                    del table[key]
                    version = entry_version(e)
                    if version > floors.get(run_id, 0):
                        floors[run_id] = version
                    if is_kv:
                        drop_from_order(r, key)
                    reclaimed += 1
                if not keys:
                    del by_run[run_id]
                if deadline is not None and time.monotonic() > deadline:
                    break
            if not by_run:
                heapq.heappop(times)
                del buckets[b]
                d.first_changed()
            if deadline is not None and time.monotonic() > deadline:
                break
        for run_id, key, at in again:
            d.note(run_id, key, at)  # a bucket after `last`: not looked at again this round
        d.reclaimed += reclaimed
        return reclaimed, seen

    def _rescan_step(self, d: DeadKeys, budget: int) -> int:
        """Note the dead and expiring entries of family `d` in the runs a recovery filled;
        the work done."""
        work = 0
        attr = d.table
        while d.rescan and work < budget:
            run_id, keys = d.rescan[-1]
            r = self.runs.get(run_id)
            if r is None:
                d.rescan.pop()
                continue
            table = getattr(r, attr)
            if keys is None:
                # One pass in C over the run's entries: the mortal ones' keys.
                keys = list(compress(table, map(_MORTAL.__getitem__,
                                                map(_FLAGS, table.values()))))
                work += len(table) // 64 + 1
                d.rescan[-1] = (run_id, keys)
            while keys and work < budget:
                key = keys.pop()
                work += 1
                e = table.get(key)
                if e is not None:
                    at = dead_since(e)
                    if at is not None:
                        d.note(run_id, key, at)
            if not keys:
                d.rescan.pop()
        return work

    def _reclaim_inline(self, now: int, n: int, d: DeadKeys | None = None) -> None:
        """After a write that made `n` dead or expiring entries of family `d` (KV when None),
        once `d.due_at` has come: reclaim a few due ones of that family (none inside a
        transaction, during a rebuild or a rescan)."""
        if d is None:
            d = self.dead
        if d.times and not d.rescan and not d.unnoted and self._undo is None \
                and not self.index.rebuilding:
            last = due_by(d.retention_us, now)
            if d.times[0] <= last:
                self._reclaim_due(d, last, INLINE_PER_WRITE * n, None)

    def _note_tombstone(self, d: DeadKeys, run_id: str, key: str, now: int) -> None:
        """A delete at `now` left a tombstone at `key` of run `run_id` in family `d` (state
        cells, JSON documents): note it, and reclaim a few due ones if any are."""
        d.note(run_id, key, now)
        if now >= d.due_at:
            self._reclaim_inline(now, 1, d)
