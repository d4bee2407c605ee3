"""Pipelines: many operations sent in as few messages as possible.

A pipeline reuses the Database's section classes with a `call` that queues
instead of sending, so `p.kv.put(run, k, v)` takes exactly the arguments of
`db.kv.put`. `execute()` hands the queue to the backend in one batch; each
operation succeeds or fails on its own (a pipeline is not a transaction).
As in redis-py, every queued operation runs before a failure is reported:
`execute()` then raises the first operation's error, and
`execute(raise_on_error=False)` returns each error in its place as the
exception object instead.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .errors import InmemError, InvalidValue
from .sections import (JSON, KV, Events, Runs, StateCells, Traces, assemble_tree, begin_args,
                       new_run_id, reason_arg)
from .values import copy_value


_CONTAINERS = frozenset((dict, list))


def _queue(ops: list, op, args) -> None:
    # Values are captured now: a list or dict the caller changes before
    # execute() must not change what is written.
    if not _CONTAINERS.isdisjoint(map(type, args)):
        args = tuple(copy_value(a) if type(a) in _CONTAINERS else a for a in args)
    ops.append((op, args))


class _PipelineState(StateCells):
    __slots__ = ()

    def transition(self, *args, **kwargs):
        """Not in a pipeline: it reads before it writes, so it raises InvalidValue; call
        `db.state.transition` (or `db.run_transaction`) instead."""
        raise InvalidValue("state.transition reads before it writes; it cannot be pipelined")

    transition_or_init = transition


class _PipelineTraces(Traces):
    __slots__ = ()

    def tree(self, run, trace_id):
        """Queue `Traces.tree`: `execute()` gives the subtree under `trace_id`."""
        # Queued as it comes from the shard; execute() assembles the tree.
        return self._call("tr.tree", (run, trace_id))


class Pipeline:
    """Operations queued now and sent together by `execute()`; not a transaction.

    `p.kv`, `p.events`, `p.state`, `p.traces`, `p.json` and `p.runs` take the
    same arguments as the Database's sections and return None: each call only
    queues. `state.transition` and `transition_or_init` cannot be queued
    (they read before they write) and raise InvalidValue.

        with db.pipeline() as p:
            p.kv.put(run, "a", 1)
            p.events.append(run, "step", {"n": 1})
            version, event = p.execute()
    """

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

    def begin_run(self, name: str | None = None, run_id: str | None = None,
                  parent: str | None = None, tags: list[str] | tuple[str, ...] = (),
                  metadata: Any = None, searchable: bool = True) -> None:
        """Queue `Database.begin_run`; its result is the run id (generated now if not given)."""
        self._queue("run.begin", begin_args(name, run_id or new_run_id(), parent, tags, metadata,
                                            searchable))

    def end_run(self, run: str) -> None:
        """Queue `Database.end_run`."""
        self._queue("run.end", (run,))

    def abort_run(self, run: str, reason: str | BaseException | None = None) -> None:
        """Queue `Database.abort_run`."""
        self._queue("run.abort", (run, reason_arg(reason)))

    def __len__(self) -> int:
        return len(self._ops)

    def execute(self, raise_on_error: bool = True) -> list:
        """Send every queued operation; their results, in the order they were queued.

        Every operation runs, whatever its neighbours do. Then, by default,
        the first failed operation's InmemError is raised (the others'
        results are lost with it); `raise_on_error=False` returns each error
        in its place as the exception object. The queue is empty afterwards
        either way. An error that stops the whole batch (the connection,
        a closed database) is raised in both modes.
        """
        if not self._ops:
            return []
        ops = self._take()
        return self._finish(ops, self._backend.call_batch(ops), raise_on_error)

    def _take(self) -> list:
        """The queued operations, leaving the queue empty."""
        ops = self._ops.copy()
        self._ops.clear()
        return ops

    @staticmethod
    def _finish(ops, results, raise_on_error: bool = False) -> list:
        """The batch's results as the API gives them (trace trees assembled).

        With `raise_on_error`, the first failed operation's error is raised
        instead, with a note saying which operation it was.
        """
        first = None  # index of the first failed operation
        for i, (op, _args) in enumerate(ops):
            result = results[i]
            if isinstance(result, InmemError):
                if first is None:
                    first = i
            elif op == "tr.tree":
                try:
                    results[i] = assemble_tree(result)
                except InmemError as exc:
                    results[i] = exc
                    if first is None:
                        first = i
        if raise_on_error and first is not None:
            error = results[first]
            # The message stays the operation's own; the note says which one it was.
            error.add_note(f"raised by operation {first} ({ops[first][0]}) of {len(ops)} "
                           "in the pipeline; every operation ran")
            raise error
        return results

    def reset(self) -> None:
        """Drop every queued operation without sending it."""
        self._ops.clear()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type, exc, tb):
        # Operations queued but never executed are sent on a clean exit rather
        # than dropped without a word (raising the first error, as execute()
        # does); an exception discards them.
        if exc_type is None and self._ops:
            self.execute()
        else:
            self.reset()
        return False
