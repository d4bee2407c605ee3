"""The public `Database` object: runs, transactions, pipelines, replay, search, admin.

A Database is a thin front over a backend with one method that matters,
`call(op, args)`: the embedded backend hands the operation to an engine in
this process, the cluster backend sends it to the shard that owns the run.
Everything here is therefore backend-agnostic; the only composite operations
built client-side are the retry loops (state transitions, run_transaction).
"""

from __future__ import annotations

import time

from typing import Any, Callable

from .backend import Backend
from .display import short_value
from .errors import InmemError, ProtocolError, RunNotFound, TransactionConflict
from .pipeline import Pipeline
from .sections import (JSON, Events, Runs, StateCells, Traces, Value, backoff, begin_args,
                       check_retries, new_run_id, reason_arg)
from .transaction import Transaction
from .types import RecoveryResult, RunDiff, RunView, SearchResponse, SnapshotInfo


class Database:
    """The store, embedded or remote. Use `inmem.open` or `inmem.connect` to get one.

    Its sections hold the data of runs: `kv` (versioned keys), `events`
    (hash-chained log), `state` (CAS cells), `traces` (reasoning trees),
    `json` (documents by path) and `runs` (metadata and lifecycle). Every
    call behaves the same embedded or against a cluster, and every error is
    an `inmem.InmemError`. Safe to share between threads; not across fork().

        with inmem.open(None) as db:
            run = db.begin_run(name="agent")
            db.kv.put(run, "goal", "summarise")
    """

    def __reduce__(self):
        raise TypeError("a Database cannot be pickled or sent to another process: open or "
                        "connect again there (inmem.open(path), inmem.connect(url))")

    def __init__(self, backend: Backend):
        self._backend = backend
        self._closed = False
        call = backend.call
        self._call = call
        self.kv = backend.kv_section()
        self.events = Events(call)
        self.state = StateCells(call)
        self.traces = Traces(call)
        self.json = JSON(call)
        self.runs = Runs(call)

    # -- runs ----------------------------------------------------------------------

    def begin_run(self, name: str | None = None, run_id: str | None = None,
                  parent: str | None = None, tags: list[str] | tuple[str, ...] = (),
                  metadata: Value = None, searchable: bool = True) -> str:
        """Start a run (status "active"); its id, generated unless `run_id` is given.

        The id decides the shard that holds everything of the run. RunExists if
        `run_id` is taken, RunNotFound if `parent` does not exist. `searchable=False`
        keeps everything of the run out of keyword search (`db.search` never finds
        it): for data nobody looks up by its words, which then costs its writes no
        indexing and the index no memory.
        """
        # The id is chosen here, not on the shard, because it decides which shard owns the run.
        if run_id is None:
            run_id = new_run_id()
        if parent is not None and self.run_status(parent) == "not_found":
            # Checked here rather than on the shard: the parent may live on another one.
            raise RunNotFound(f"parent run {short_value(parent)} does not exist", run_id=parent)
        return self._call("run.begin",
                          begin_args(name, run_id, parent, tags, metadata, searchable))

    def end_run(self, run: str) -> str:
        """Mark the run "completed"; the new status. InvalidStatusTransition if it cannot end."""
        return self._call("run.end", (run,))

    def abort_run(self, run: str, reason: str | BaseException | None = None) -> str:
        """Mark the run "failed", keeping `reason` (text, or an exception's text) as its error."""
        return self._call("run.abort", (run, reason_arg(reason)))

    def run_status(self, run: str) -> str:
        """The run's status, "orphaned" for one a crash left unended, "not_found" if absent."""
        return self._call("run.status", (run,))

    def orphaned_runs(self) -> list[str]:
        """Ids of the runs left active by a crash, oldest first, across every shard."""
        return self._call("run.orphaned", ())

    # -- transactions and pipelines ------------------------------------------------

    def transaction(self, run: str) -> Transaction:
        """An optimistic transaction over one run: `with db.transaction(run) as tx: ...`.

        Commits when the block ends (all writes or none; TransactionConflict
        if anything it read changed meanwhile); an exception aborts it.
        """
        return Transaction(self._call, run)

    def run_transaction(self, run: str, fn: Callable[[Transaction], Any], retries: int = 8) -> Any:
        """Run `fn(tx)` and commit, retrying it on TransactionConflict; what `fn` returned.

        `fn` runs again from scratch on each retry, so it must not have side
        effects outside `tx`. The last TransactionConflict is raised after
        `retries` retries.
        """
        check_retries(retries)
        for attempt in range(retries + 1):
            tx = Transaction(self._call, run)
            result = fn(tx)
            try:
                tx.commit()
                return result
            except TransactionConflict:
                if attempt == retries:
                    raise
                backoff(attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover

    def pipeline(self) -> Pipeline:
        """A batch of operations sent together; `execute()` returns each one's result.

        Not a transaction: each operation succeeds or fails on its own, and
        `execute()` raises the first failure after every operation ran
        (`execute(raise_on_error=False)` returns failures in place).
        """
        return Pipeline(self._backend)

    # -- replay, diff and search ----------------------------------------------------

    def replay_run(self, run: str, at: int | None = None) -> RunView:
        """The run folded from its journal: read-only, as of the first `at` entries (None: all;
        a negative `at` counts from the end, as a Python index).

        RunNotFound if the run does not exist.
        """
        return RunView.from_wire(self._call("run.replay", (run, at)))

    def diff_runs(self, run_a: str, run_b: str) -> RunDiff:
        """What differs between two runs' replayed states, per primitive and key.

        `added`: only in run_b; `removed`: only in run_a; `modified`: in both,
        with different values (`.a` in run_a, `.b` in run_b).
        """
        from .replay import diff_wires
        # One batch: on a cluster the two runs' shards fold them side by side. Two
        # runs of one shard come back in one reply, and when together they are over
        # max_message_bytes the larger gives way (ProtocolError): it is asked for alone,
        # where it may fit.
        runs = (run_a, run_b)
        wires = self._backend.call_batch([("run.replay", (run, None)) for run in runs])
        for i, wire in enumerate(wires):
            if isinstance(wire, ProtocolError):
                wires[i] = self._call("run.replay", (runs[i], None))
        for wire in wires:  # the first run's error first
            if isinstance(wire, BaseException):
                raise wire
        return diff_wires(wires[0], wires[1])

    def search(self, query: str, run: str | None = None, primitives: list[str] | None = None,
               limit: int = 10, offset: int = 0,
               budget_ms: float | None = None) -> SearchResponse:
        """BM25 keyword search across every shard, best hits first.

        `run` limits it to one run (RunNotFound if absent); `primitives` to a
        subset of kv, json, events, state, traces, runs; `limit`/`offset` page
        the ranked hits; `budget_ms` bounds the time spent (the response's
        `budget_exhausted` says when it ran out). Scores are the same as one
        index over every shard's documents would give.
        """
        t0 = time.perf_counter()  # took_ms and the budget count the whole call
        from .search import search
        self._check_open()
        if run is not None and self.run_status(run) == "not_found":
            raise RunNotFound(f"run {short_value(run)} does not exist", run_id=run)
        return search(self._backend, query, run, primitives, limit, offset, budget_ms, t0)

    # -- operations ----------------------------------------------------------------

    def snapshot(self) -> list[SnapshotInfo]:
        """Take a snapshot of every shard now; one SnapshotInfo per durable shard ([] in memory)."""
        self._check_open()
        return self._backend.snapshot()

    def compact_history(self) -> list[dict]:
        """Compact every shard's history files that hold records of deleted runs, now.

        Runs' histories stay exactly as they were; the files shrink to their
        live records. One dict per durable shard (`shard`, `files` compacted,
        `bytes_before`, `bytes_after`); [] in memory. Durable shards also do
        this by themselves, in the background, once a file is mostly dead.
        """
        self._check_open()
        return self._backend.compact_history()

    def recovery_report(self) -> list[RecoveryResult]:
        """How each shard recovered when it last started."""
        self._check_open()
        return self._backend.recovery_report()

    def info(self) -> dict:
        """Readiness and, per shard: pid, state, keys, runs, memory and WAL bytes, durability."""
        self._check_open()
        return self._backend.info()

    def _check_open(self) -> None:
        # Operations go through the backend, which refuses them once closed;
        # these few do not, so they are refused here.
        if self._closed:
            raise InmemError("the database is closed; open or connect again")

    def close(self) -> None:
        """Flush and fsync the WAL, then (embedded) the closing snapshot if configured.

        Later calls raise InmemError. Closing twice is harmless.
        """
        self._closed = True
        self._backend.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return f"<inmem.Database {self._backend.describe()}>"
