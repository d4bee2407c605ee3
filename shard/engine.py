"""The shard engine: one shard's data and every operation on it, as a pure library.

No sockets, threads or files here. A caller (the embedded Database, or a
shard worker process) hands the engine operations — a name plus msgpack-able
arguments, `execute(op, args)` — and gets back msgpack-able results or an
`inmem` error. Each accepted write is resolved into an effect
(`shard.effects`), encoded for the WAL, applied through the apply functions
of `shard.effects`, appended to its run's journal, and, when the caller keeps
a WAL, queued in `self.log` as a group (one group per operation, committed
transaction, or series of puts to one run in a batch, see `execute_batch`)
for the caller to write.

`Engine` is assembled from one part per job, each in its own module:

| part        | module                | operations                                  |
|-------------|-----------------------|---------------------------------------------|
| RunOps      | shard.runs            | run.begin/end/abort/set_status/get/list/... |
| KVOps       | shard.kv              | kv.*                                        |
| EventOps    | shard.events          | ev.*                                        |
| StateOps    | shard.state_cells     | st.*                                        |
| TraceOps    | shard.traces          | tr.*                                        |
| JsonOps     | shard.json_docs       | js.*                                        |
| TxOps       | shard.transactions    | tx.read, tx.commit                          |
| ReplayOps   | shard.replay          | run.replay                                  |
| SearchOps   | shard.search_ops      | search.stats, search.query, index_step      |
| RecoveryOps | shard.recovery_apply  | apply_batches, apply_group, mark_orphans    |
| ReclaimOps  | shard.dead_keys       | sweep_dead (dead entries leave their tables) |

This module keeps what they share: the dispatch (built from the table of
operations in `inmem.ops`), value encoding and checks, run lookup, and the
commit step that orders encode-for-the-WAL before apply.

The engine is not thread-safe: callers serialise every operation (a lock in
the embedded Database, the single-threaded worker loop in a shard process).
Writes must be; most reads would not need it (every mutation is a single
assignment or append of an immutable object, an entry's bytes or an effect
tuple, which CPython performs atomically), but a KV listing brings the run's
sorted key order up to date as it reads (`shard.key_order`).
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable

import msgpack

from inmem.display import short_value
from inmem.errors import InmemError, InvalidKey, InvalidValue, RunNotActive, RunNotFound, ValueTooLarge
from inmem.ops import OPS
from inmem.values import ALWAYS_VALID_TYPES, DEFAULT_MAX_VALUE_BYTES, check_value, plain_value

from .dead_keys import DEFAULT_RETENTION_S, ReclaimOps
from .effects import APPLY, CODE, GROUP_BYTES_MAX, array_header
from .events import EventOps
from .history import history_limit
from .json_docs import JsonOps
from .kv import KVOps
from .lifecycle import WRITABLE
from .recovery_apply import RecoveryOps
from .replay import ReplayOps
from .runs import RunData, RunOps
from .search_index import SearchIndex
from .search_ops import SearchOps
from .state_cells import StateOps
from .traces import TraceOps
from .transactions import TxOps, undo_entry

__all__ = ["Engine", "RunData", "TTL_MAX_SECONDS"]

#: the longest TTL a key may have: a century, in seconds
TTL_MAX_SECONDS = 100 * 365 * 24 * 3600

log = logging.getLogger("inmem.shard")


def exception_text(exc: BaseException) -> str:
    """An unexpected exception as its class and message, short (for an error sent back)."""
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except Exception:  # an exception whose str() fails
        return type(exc).__name__


def internal_error(op: str, exc: Exception) -> InmemError:
    """The error an operation's unexpected exception becomes in a batch, its traceback logged."""
    log.error("internal error in %s:\n%s", op, "".join(traceback.format_exception(exc)))
    return InmemError(f"internal error in {op}: {exception_text(exc)}")


def _now_us() -> int:
    return time.time_ns() // 1000


class Engine(RunOps, KVOps, EventOps, StateOps, TraceOps, JsonOps, TxOps, ReplayOps, SearchOps,
             RecoveryOps, ReclaimOps):
    """One shard's state and the operations on it."""

    def __init__(self, clock: Callable[[], int] | None = None,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, log: bool = False,
                 history="full", dead_key_retention_s: float = DEFAULT_RETENTION_S):
        self.clock = clock or _now_us
        #: dead KV entries, state cells and documents, and the runs' version floors
        #: (shard.dead_keys): self.dead, self.kv_floors, self.dead_state, self.dead_json
        self._init_dead(dead_key_retention_s)
        #: entries each run keeps in memory (None: all of them), see `shard.history`
        self.history_limit = history_limit(history)
        #: a durable store's history files: runs keep their history there
        self.history_files = None
        #: durable: the runs whose history holds items already on disk (see
        #: release_history); None until its first round, which looks at every run
        self.held_runs: set | None = None
        self.max_value_bytes = max_value_bytes
        self.runs: dict[str, RunData] = {}
        #: groups committed since the caller last took them, each already encoded
        #: for the WAL: `(run id, effect count, packed effects, the run's History)`
        #: (None: no WAL)
        self.log: list | None = [] if log else None
        #: writes (effects) in `self.log`: the buffered flush starts at a count of writes
        self.log_writes = 0
        #: inside a transaction: what taking each applied effect back needs
        self._undo: list | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._pack = self._packer.pack
        self.index = SearchIndex()
        self.ops = self._op_table()
        #: operations that can answer with their result already packed (`execute_packed`)
        self.packed_ops = {"kv.get_linked": self.kv_get_linked_packed}

    # -- dispatch ------------------------------------------------------------------

    def execute(self, op: str, args):
        """Apply one operation by name; raises an InmemError subclass on refusal."""
        try:
            fn = self.ops[op]
        except (KeyError, TypeError):
            raise InmemError(f"unknown operation {op!r}") from None
        try:
            return fn(*args)
        except TypeError as exc:
            raise InvalidValue(f"bad arguments for {op}: {exc}") from None

    def execute_packed(self, op: str, args) -> bytes:
        """`execute` for an operation of `packed_ops`: its result as msgpack bytes (a reply)."""
        try:
            return self.packed_ops[op](*args)
        except TypeError as exc:
            raise InvalidValue(f"bad arguments for {op}: {exc}") from None

    def execute_batch(self, ops) -> list:
        """Apply operations in order; a refusal is returned in place, the rest go on.

        A series of puts to one run goes through `kv_put_series`: the same
        results, one clock reading and few WAL groups.
        """
        out = []
        i, n = 0, len(ops)
        while i < n:
            op, args = ops[i]
            j = put_series_end(ops, i)
            if j > i + 1:
                out.extend(self.kv_put_series(args[0], [ops[k][1] for k in range(i, j)]))
                i = j
                continue
            try:
                out.append(self.execute(op, args))
            except InmemError as exc:
                # Without its traceback: the frames would tie the engine into a cycle.
                out.append(exc.with_traceback(None))
            except Exception as exc:
                # A defect in one operation: that operation's error, and the rest go
                # on, as a cluster's shard answers it (and says where it broke).
                out.append(internal_error(op, exc))
            i += 1
        return out

    def run_delete(self, run: str) -> bool:
        """Delete a run (shard.runs); a run begun again under its id starts from floor 0."""
        gone = RunOps.run_delete(self, run)
        if gone:
            self.forget_floors(run)
        return gone

    def _op_table(self) -> dict[str, Callable]:
        """Operation name -> bound handler, from the one table of operations (inmem.ops)."""
        return {name: getattr(self, op.handler) for name, op in OPS.items()}

    # -- the commit step -----------------------------------------------------------

    def take_log(self) -> list:
        """The groups queued for the WAL since the last call, oldest first: (run id, count, bytes)."""
        groups = self.log
        if not groups:
            return []
        self.log = []
        self.log_writes = 0
        return [g[:3] for g in groups]

    def _commit(self, r: RunData, eff: tuple) -> None:
        """Queue one resolved effect for the WAL, then apply it to run `r` and journal it."""
        undo = self._undo
        if undo is not None:
            undo.append(undo_entry(r, eff))
        elif self.log is not None:
            self._log(r.run_id, (eff,), r.journal)
        APPLY[eff[CODE]](r, eff)
        if undo is None and len(r.journal.items) > r.journal.trim_at:
            self._trim_history(r)

    def _trim_history(self, r: RunData) -> None:
        """Drop what an in-memory store's `history=` limit lets go and the index has read.

        The index reads the run's journal for a bounded time first; what it has
        not read yet (a large text's steps go on in the background slices, and
        the entries after it wait for them) stays until a later write trims it.
        """
        r.journal.trim(self.index.read_for_trim(r.run_id, r))

    def _log(self, run_id: str, effs, journal=None) -> None:
        """Encode a group for the WAL before it is applied: what cannot be logged is refused.

        This is what makes "encode before acknowledge" hold: a value that passed
        validation but cannot be encoded, or a group too large for one WAL
        record, raises here, while the store is still unchanged.
        """
        pack = self._pack
        try:
            n = len(effs)
            if n == 1:
                data = pack(effs[0])
            else:
                # Packed as one list, less the list's header: the effects back to back.
                data = pack(effs if type(effs) is list else list(effs))[
                    1 if n < 16 else len(array_header(n)):]
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise InvalidValue(f"this write cannot be logged: {exc}") from None
        if len(data) > GROUP_BYTES_MAX:
            raise ValueTooLarge(f"this write takes {len(data)} bytes in the log, over the limit "
                                f"of {GROUP_BYTES_MAX} for one operation or transaction; "
                                "split it into smaller ones")
        # The run's history rides along, so that the hand-over to the WAL can
        # tell it where its effects went (shard.history_files); None: a delete.
        self.log.append((run_id, len(effs), data, journal))
        self.log_writes += len(effs)

    # -- checks shared by the operations -------------------------------------------

    def _encode(self, value) -> bytes:
        """Validate and encode a value with the engine's own packer (writes are serialised)."""
        t = type(value)
        if t is list or t is dict:
            # A document or a list a few levels deep (a message, a [type, bytes]
            # pair, a checkpoint record and its references) is checked here in one
            # pass; anything else goes to the full walk, which says what is wrong.
            if not plain_value(value):
                check_value(value)
        elif t not in ALWAYS_VALID_TYPES:
            check_value(value)
        try:
            data = self._pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise InvalidValue(f"cannot encode value: {exc}") from None
        if len(data) > self.max_value_bytes:
            raise ValueTooLarge(f"encoded value is {len(data)} bytes, over the limit of "
                                f"{self.max_value_bytes}")
        return data

    def _check_text(self, text: str, what: str) -> str:
        """`text` when it is valid Unicode (no lone surrogates) within the value limit."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidValue(f"{what} is not valid Unicode text (it holds a lone surrogate)") \
                from None
        if size > self.max_value_bytes:
            raise ValueTooLarge(f"{what} is {size} bytes, over the limit of {self.max_value_bytes}")
        return text

    def _run(self, run) -> RunData:
        """The run named `run`; RunNotFound (InvalidKey for a non-str) if there is none."""
        try:
            r = self.runs.get(run)
        except TypeError:  # unhashable, so not a run id: refused below by type
            r = None
        if r is None:
            if type(run) is not str:
                raise InvalidKey(f"run id must be a str, got {type(run).__name__}")
            raise RunNotFound(f"run {run!r} does not exist", run_id=run)
        return r

    def _writable(self, run) -> RunData:
        """The run named `run` when it accepts writes; RunNotActive when it has ended."""
        r = self.runs.get(run) if type(run) is str else None
        if r is None:
            return self._run(run)
        if r.status not in WRITABLE:
            raise RunNotActive(f"run {run!r} is {r.status}; only active or paused runs accept writes",
                               run_id=run, status=r.status)
        return r

    def _ttl_us(self, ttl) -> int:
        # The comparisons also refuse nan; the upper bound keeps expiry times in 64 bits.
        if type(ttl) not in (int, float) or not 0 < ttl <= TTL_MAX_SECONDS:
            raise InvalidValue(f"ttl must be a number of seconds above 0 and at most "
                               f"{TTL_MAX_SECONDS} (a century), got {short_value(ttl)}")
        return int(ttl * 1_000_000)

    # -- statistics ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        keys = events = traces = state = docs = journal = dropped = 0
        for r in self.runs.values():
            keys += len(r.kv)
            events += len(r.events)
            traces += len(r.traces)
            state += len(r.state)
            docs += len(r.json)
            journal += len(r.journal)
            dropped += r.journal.base
        out = {"runs": len(self.runs), "keys": keys, "events": events, "traces": traces,
               "state": state, "json": docs, "journal": journal}
        if self.history_limit is not None:
            out["history_dropped"] = dropped
        return out

    def history_counts(self) -> dict:
        """The runs' history entries: all of them, those held in memory, those dropped."""
        entries = held = earlier = index = 0
        for r in self.runs.values():
            h = r.journal
            entries += len(h)
            held += len(h.items)
            earlier += h.disk if self.history_files is not None else h.base
            index += h.index_bytes()
        if self.history_files is not None:
            # A durable store: what is not held is on disk, behind an index.
            return {"entries": entries, "in_memory": held, "on_disk": earlier,
                    "index_bytes": index, "limit": "full"}
        return {"entries": entries, "in_memory": held, "dropped": earlier,
                "limit": "full" if self.history_limit is None else self.history_limit}

    def release_history(self) -> None:
        """Durable: drop the held history items that are on disk and read by the search index.

        Only the runs that hold such items are looked at (`held_runs`, which the
        commit path fills as it places a run's items on disk): every run, each
        upkeep round, cost 130 ms a round at 100,000 runs, under the lock.
        The first round after opening looks at every run once.
        """
        if self.history_files is None:
            return
        indexed = self.index.watermark
        waiting = self.held_runs
        if waiting is None:
            waiting = self.held_runs = set(self.runs)
        runs = self.runs
        for run_id in list(waiting):
            r = runs.get(run_id)
            if r is not None:
                h = r.journal
                if h.disk > h.base:
                    h.drop_held(indexed.get(run_id, 0))
                    if h.disk > h.base:
                        continue  # not read by the index yet: another round
            waiting.discard(run_id)


def put_series_end(ops, i: int) -> int:
    """The end of the series of `kv.put` operations to one run that starts at `ops[i]`.

    `ops` holds (op, args) pairs, or anything else (an error in place of an
    operation), which ends a series. Returns i + 1 when `ops[i]` starts none.
    """
    item = ops[i]
    n = len(ops)
    if i + 1 >= n or type(item) not in (tuple, list) or item[0] != "kv.put":
        return i + 1
    args = item[1]
    if type(args) not in (list, tuple) or not args or type(args[0]) is not str:
        return i + 1
    run = args[0]
    j = i + 1
    while j < n:
        nxt = ops[j]
        if type(nxt) not in (tuple, list) or nxt[0] != "kv.put":
            break
        a = nxt[1]
        if type(a) not in (list, tuple) or not a or a[0] != run:
            break
        j += 1
    return j
