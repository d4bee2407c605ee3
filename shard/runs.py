"""Runs on a shard: what one run holds (`RunData`) and the run lifecycle operations.

`RunOps` is one of the parts the `Engine` is assembled from: beginning a run,
moving it through its statuses (`shard.lifecycle` has the transition table),
listing (whole, or in pages read from `shard.run_order`), reading and deleting
runs. It uses the engine plumbing (`_commit`, `_log`, `_encode`, `_run`,
`_check_text`, the clock) that `shard.engine` defines.
"""

from __future__ import annotations

import uuid
from typing import Callable

import msgpack

from inmem.display import short_value
from inmem.errors import InvalidValue, RunExists
from inmem.types import RunInfo
from inmem.values import check_key

from .effects import CREATE_FLAGS, RUN_CREATE, RUN_DELETE, RUN_STATUS, UNSEARCHABLE
from .history import History
from .lifecycle import STATUSES, check_transition
from .run_order import RunOrder
from .search_index import SearchIndex

_unpackb = msgpack.unpackb


class RunData:
    """Everything one run holds on its shard."""

    __slots__ = ("run_id", "name", "parent", "tags", "metadata", "searchable", "status",
                 "created_at", "updated_at", "ended_at", "error", "orphaned", "kv", "state", "json",
                 "events", "events_by_type", "traces", "trace_order", "traces_by_type",
                 "traces_by_tag", "trace_roots", "trace_children", "journal", "kv_order")

    def __init__(self, eff: tuple, history_limit: int | None = None, history_files=None):
        """A new active run from its RUN_CREATE effect (the first entry of its journal)."""
        _, self.run_id, self.name, self.parent, tags, self.metadata, ts = eff[:CREATE_FLAGS]
        self.tags = tuple(tags)
        #: False: the keyword search index leaves the run out (flag UNSEARCHABLE)
        self.searchable = len(eff) <= CREATE_FLAGS or not eff[CREATE_FLAGS] & UNSEARCHABLE
        self.status = "active"
        self.created_at = self.updated_at = ts
        self.ended_at = None
        self.error = None
        self.orphaned = False
        #: KV, state and JSON entries: key -> the packed entry of its last write (shard.entries)
        self.kv: dict = {}
        self.state: dict = {}
        self.json: dict = {}
        #: the sorted order of the KV keys, for listings: built by the first one
        #: (shard.key_order), None until then
        self.kv_order = None
        #: EV_APPEND effects by sequence, and the sequences of each event type
        self.events: list = []
        self.events_by_type: dict = {}
        #: TR_ADD effects by id, and trace ids in order, by type, by tag, by parent
        self.traces: dict = {}
        self.trace_order: list = []
        self.traces_by_type: dict = {}
        self.traces_by_tag: dict = {}
        self.trace_roots: list = []
        self.trace_children: dict = {}
        #: every effect committed to the run, in order (replay folds it)
        self.journal = History(self.run_id, eff, history_limit, history_files)

    def info(self) -> RunInfo:
        return RunInfo(self.run_id, self.name, self.parent,
                       "orphaned" if self.orphaned else self.status, list(self.tags),
                       None if self.metadata is None else _unpackb(self.metadata, raw=False),
                       self.created_at, self.updated_at, self.ended_at, self.error,
                       self.searchable)

    def create_effect(self) -> tuple:
        """The RUN_CREATE effect that makes this run as it was made (what a snapshot keeps)."""
        eff = (RUN_CREATE, self.run_id, self.name, self.parent, self.tags, self.metadata,
               self.created_at)
        return eff if self.searchable else eff + (UNSEARCHABLE,)


class RunOps:
    """The run operations of the engine."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    #: the runs sorted for pages of run_list, built by the first page (shard.run_order)
    _run_order: RunOrder | None = None
    log: list | None
    index: SearchIndex

    def begin_run(self, name: str | None = None, run_id: str | None = None,
                  parent: str | None = None, tags=(), metadata=None,
                  searchable: bool = True) -> str:
        if type(searchable) is not bool:
            raise InvalidValue(f"searchable must be True or False, not {short_value(searchable)}")
        if run_id is None:
            run_id = uuid.uuid4().hex
        else:
            check_key(run_id, "run id")
        if run_id in self.runs:
            raise RunExists(f"run {run_id!r} already exists", run_id=run_id)
        if name is not None:
            check_key(name, "run name")
        if parent is not None:
            check_key(parent, "parent run id")
        tags = check_tags(tags)
        meta = None if metadata is None else self._encode(metadata)
        eff = (RUN_CREATE, run_id, name, parent, tags, meta, self.clock())
        if not searchable:
            eff += (UNSEARCHABLE,)
        r = RunData(eff, self.history_limit, self.history_files)
        # Its first entry for the index to read; every later one names the run itself.
        unread = r.journal.unread = self.index.unread
        unread.add(run_id)
        if not searchable:
            self.index.pass_over(run_id)
        if self.log is not None:
            self._log(run_id, (eff,), r.journal)
        self.runs[run_id] = r
        return run_id

    def set_status(self, run: str, status: str, error=None) -> str:
        r = self._run(run)
        if status not in STATUSES:
            raise InvalidValue(f"unknown run status {short_value(status)}")
        check_transition(r.status, status)
        if error is not None:
            error = self._check_text(as_reason(error), "the reason")
        self._commit(r, (RUN_STATUS, status, self.clock(), error))
        return status

    def end_run(self, run: str) -> str:
        return self.set_status(run, "completed")

    def abort_run(self, run: str, reason=None) -> str:
        return self.set_status(run, "failed", "" if reason is None else reason)

    def run_status(self, run: str) -> str:
        r = self.runs.get(run) if type(run) is str else None
        if r is None:
            return "not_found"
        return "orphaned" if r.orphaned else r.status

    def run_get(self, run: str) -> RunInfo | None:
        r = self.runs.get(run) if type(run) is str else None
        return None if r is None else r.info()

    def run_list(self, status: str | None = None, tag: str | None = None,
                 parent: str | None = None, after=None, limit: int | None = None
                 ) -> list[RunInfo]:
        """The runs that match the filters, by creation time then id; in a page when
        `after` ([created_at, run_id]: start after that place in the order) or `limit`
        (at most so many) is given."""
        if status is not None and (type(status) is not str or status not in LISTED_STATUSES):
            # A typo in the filter would list nothing, as if no run had the status.
            raise InvalidValue(f"unknown run status {short_value(status)}; one of "
                               f"{', '.join(sorted(LISTED_STATUSES))} (or None)")
        # Likewise a tag or parent that no run can have (a list where one tag belongs).
        if tag is not None:
            check_key(tag, "tag")
        if parent is not None and type(parent) is not str:
            raise InvalidValue(f"parent must be a run id (str) or None, got "
                               f"{type(parent).__name__}")
        start = run_cursor(after)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise InvalidValue(f"limit must be an int of at least 1 or None, got {short_value(limit)}")
        if start is None and limit is None:
            out = [r for r in self.runs.values() if _matches(r, status, tag, parent)]
            out.sort(key=_creation_order)
            return [r.info() for r in out]
        # A page reads the shard's order of runs from its start (shard.run_order):
        # about what it returns, not a sort of every run per page.
        order = self._run_order
        if order is None:
            order = self._run_order = RunOrder(self.runs)
        else:
            order.catch_up(self.runs)
        out = []
        for r in order.after(self.runs, start):
            if _matches(r, status, tag, parent):
                out.append(r.info())
                if len(out) == limit:
                    break
        return out

    def run_delete(self, run: str) -> bool:
        if type(run) is not str or run not in self.runs:
            return False
        if self.log is not None:
            self._log(run, ((RUN_DELETE, run, self.clock()),))
        self.runs.pop(run).journal.release()
        self.index.drop_run(run)
        return True

    def orphaned_runs(self) -> list[str]:
        return [r.run_id for r in sorted(self.runs.values(), key=_creation_order) if r.orphaned]


def _matches(r: RunData, status, tag, parent) -> bool:
    return ((status is None or status == ("orphaned" if r.orphaned else r.status))
            and (tag is None or tag in r.tags) and (parent is None or r.parent == parent))


def _creation_order(r: RunData) -> tuple:
    return (r.created_at, r.run_id)


#: what runs.list's status filter may name: the stored statuses, and "orphaned"
LISTED_STATUSES = STATUSES | {"orphaned"}


def run_cursor(after) -> tuple | None:
    """`after` of a page of runs as the (created_at, run_id) it starts after, or None.

    A place in the order rather than a run id: it holds across shards (each shard
    starts its part there) and after the run it came from is deleted.
    """
    if after is None:
        return None
    if type(after) in (list, tuple) and len(after) == 2:
        created_at, run_id = after
        if type(created_at) is int and type(run_id) is str:
            return created_at, run_id
    raise InvalidValue("after must be the last RunInfo of the previous page or its "
                       f"(created_at, run_id), got {short_value(after)}")


def as_reason(reason) -> str:
    """The text kept as a run's error: a str, or the message of an exception or a number."""
    if type(reason) is str:
        return reason
    if isinstance(reason, BaseException) or type(reason) in (int, float, bool):
        try:
            return str(reason)
        except Exception:  # an int past the digits Python prints, a broken __str__
            return short_value(reason)
    raise InvalidValue(f"a reason must be a str (or an exception), got {type(reason).__name__}")


def check_tags(tags) -> tuple:
    """`tags` as a tuple when it is a list or tuple of valid tag strings; a tag named
    twice is kept once (its first place), so an index by tag holds each thing once."""
    if type(tags) not in (list, tuple):
        raise InvalidValue(f"tags must be a list or tuple of str, got {type(tags).__name__}")
    for t in tags:
        if type(t) is not str:
            raise InvalidValue(f"tags must be a list or tuple of str, one is a {type(t).__name__}")
        check_key(t, "tag")
    tags = tuple(tags)
    return tags if len(set(tags)) == len(tags) else tuple(dict.fromkeys(tags))
