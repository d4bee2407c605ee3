"""The public `Database` object: runs, transactions, pipelines, replay, search, admin.

A Database is a thin front over a backend with one method that matters,
`call(op, args)`: the embedded backend hands the operation to an engine in
this process, the cluster backend sends it to the shard that owns the run.
Everything here is therefore backend-agnostic; the only composite operations
built client-side are the retry loops (state transitions, run_transaction).
"""

from __future__ import annotations

from .backend import Backend
from .errors import InmemError, RunNotFound, TransactionConflict
from .pipeline import Pipeline
from .sections import JSON, Events, Runs, StateCells, Traces, as_tags, backoff, new_run_id
from .transaction import Transaction
from .types import RunView


class Database:
    """The store, embedded or remote. Use `inmem.open` or `inmem.connect` to get one."""

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

    def begin_run(self, name=None, run_id=None, parent=None, tags=(), metadata=None) -> str:
        # The id is chosen here, not on the shard, because it decides which shard owns the run.
        if run_id is None:
            run_id = new_run_id()
        if parent is not None and self.run_status(parent) == "not_found":
            # Checked here rather than on the shard: the parent may live on another one.
            raise RunNotFound(f"parent run {parent!r} does not exist", run_id=parent)
        return self._call("run.begin", (name, run_id, parent, as_tags(tags), metadata))

    def end_run(self, run):
        return self._call("run.end", (run,))

    def abort_run(self, run, reason=None):
        return self._call("run.abort", (run, reason))

    def run_status(self, run) -> str:
        return self._call("run.status", (run,))

    def orphaned_runs(self) -> list:
        return self._call("run.orphaned", ())

    # -- transactions and pipelines ------------------------------------------------

    def transaction(self, run):
        return Transaction(self._call, run)

    def run_transaction(self, run, fn, retries=8):
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

    def pipeline(self):
        return Pipeline(self._backend)

    # -- replay, diff and search ----------------------------------------------------

    def replay_run(self, run, at=None):
        """The run folded from its journal: read-only, as of the first `at` entries."""
        return RunView.from_wire(self._call("run.replay", (run, at)))

    def diff_runs(self, run_a, run_b):
        from .replay import diff_views
        return diff_views(self.replay_run(run_a), self.replay_run(run_b))

    def search(self, query, run=None, primitives=None, limit=10, offset=0, budget_ms=None):
        """BM25 keyword search across every shard; see shard/search_index.py."""
        from .search import search
        self._check_open()
        if run is not None and self.run_status(run) == "not_found":
            raise RunNotFound(f"run {run!r} does not exist", run_id=run)
        return search(self._backend, query, run, primitives, limit, offset, budget_ms)

    # -- operations ----------------------------------------------------------------

    def snapshot(self) -> list:
        self._check_open()
        return self._backend.snapshot()

    def recovery_report(self) -> list:
        self._check_open()
        return self._backend.recovery_report()

    def info(self) -> dict:
        self._check_open()
        return self._backend.info()

    def _check_open(self) -> None:
        # Operations go through the backend, which refuses them once closed;
        # these few do not, so they are refused here.
        if self._closed:
            raise InmemError("the database is closed; open or connect again")

    def close(self) -> None:
        self._closed = True
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return f"<inmem.Database {self._backend.describe()}>"
