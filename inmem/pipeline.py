"""Pipelines: many operations sent in as few messages as possible.

A pipeline reuses the Database's section classes with a `call` that queues
instead of sending, so `p.kv.put(run, k, v)` takes exactly the arguments of
`db.kv.put`. `execute()` hands the queue to the backend in one batch; each
operation succeeds or fails on its own (a pipeline is not a transaction) and
a failure comes back in place as the exception object.
"""

from __future__ import annotations

from functools import partial

from .errors import InmemError, InvalidValue
from .sections import (JSON, KV, Events, Runs, StateCells, Traces, as_tags, assemble_tree,
                       new_run_id)
from .values import copy_value


_CONTAINERS = (dict, list)


def _queue(ops: list, op, args) -> None:
    # Values are captured now: a list or dict the caller changes before
    # execute() must not change what is written.
    for a in args:
        if type(a) in _CONTAINERS:
            args = tuple(copy_value(a) if type(a) in _CONTAINERS else a for a in args)
            break
    ops.append((op, args))


class _PipelineState(StateCells):
    __slots__ = ()

    def transition(self, *args, **kwargs):
        raise InvalidValue("state.transition reads before it writes; it cannot be pipelined")

    transition_or_init = transition


class _PipelineTraces(Traces):
    __slots__ = ()

    def tree(self, run, trace_id):
        # Queued as it comes from the shard; execute() assembles the tree.
        return self._call("tr.tree", (run, trace_id))


class Pipeline:
    def __init__(self, backend):
        self._backend = backend
        self._ops: list = []
        # The sections hold this function, which holds the list but not the
        # pipeline: no reference cycle keeps a dropped pipeline (and its
        # Database's connection) alive until a garbage collection.
        self._queue = queue = partial(_queue, self._ops)
        self.kv = KV(queue)
        self.events = Events(queue)
        self.state = _PipelineState(queue)
        self.traces = _PipelineTraces(queue)
        self.json = JSON(queue)
        self.runs = Runs(queue)

    def begin_run(self, name=None, run_id=None, parent=None, tags=(), metadata=None):
        self._queue("run.begin", (name, run_id or new_run_id(), parent, as_tags(tags), metadata))

    def end_run(self, run):
        self._queue("run.end", (run,))

    def abort_run(self, run, reason=None):
        self._queue("run.abort", (run, reason))

    def __len__(self) -> int:
        return len(self._ops)

    def execute(self) -> list:
        if not self._ops:
            return []
        ops = self._take()
        return self._finish(ops, self._backend.call_batch(ops))

    def _take(self) -> list:
        """The queued operations, leaving the queue empty."""
        ops = self._ops.copy()
        self._ops.clear()
        return ops

    @staticmethod
    def _finish(ops, results) -> list:
        """The batch's results as the API gives them (trace trees assembled)."""
        for i, (op, _args) in enumerate(ops):
            if op == "tr.tree" and not isinstance(results[i], InmemError):
                try:
                    results[i] = assemble_tree(results[i])
                except InmemError as exc:
                    results[i] = exc
        return results

    def reset(self) -> None:
        self._ops.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Operations queued but never executed are sent on a clean exit rather
        # than dropped without a word; an exception discards them.
        if exc_type is None and self._ops:
            self.execute()
        else:
            self.reset()
        return False
