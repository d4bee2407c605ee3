"""Replays of long runs, folded a slice at a time between a shard worker's turns.

`run.replay` (behind `db.replay_run` and `db.diff_runs`) folds a run's journal
from its first entry: O(run size). Folded inside its request, a run of a
quarter of a million entries held its shard for half a second (every other
client of the shard waited), and a long-lived agent's run of millions for
longer than the coordinator's heartbeat timeout. A worker folds a journal
longer than `INLINE_ENTRIES` here instead: the request waits, and the loop
feeds its fold (`shard.replay.Folding`) `SLICE_ENTRIES` at a time between its
turns, serving everyone else meanwhile, then answers it. The journal is
append-only and the position is fixed when the request arrives, so the
answer is the one an inline fold would have given; a run deleted meanwhile
answers RunNotFound, as a replay that came after the delete would.

A request is one `run.replay`, or a pipeline of nothing but `run.replay`
calls (`diff_runs` of two runs on one shard sends that); a pipeline that mixes
them with other operations runs inline, in its order.
"""

from __future__ import annotations

from inmem.errors import InmemError, RunNotFound

from .replay import Folding

#: a journal this long or shorter is folded inside its request (a few tens of ms)
INLINE_ENTRIES = 20_000
#: entries folded per slice while a replay waits
SLICE_ENTRIES = 8_192
#: replay requests that may wait at once; past that one is folded inline
WAITING_MAX = 1024
OP = "run.replay"


class ReplayJob:
    """One run's fold under way: the run's data, the position it ends at, how far it is."""

    __slots__ = ("run", "data", "at", "pos", "folding")

    def __init__(self, run: str, data, at: int):
        self.run = run
        self.data = data
        self.at = at
        self.pos = 0
        self.folding = Folding()

    def step(self, engine, budget: int) -> int:
        """Fold up to `budget` more entries (hold the engine's lock); the entries folded.
        RunNotFound when the run was deleted (or replaced) since the request came."""
        if engine.runs.get(self.run) is not self.data:
            raise RunNotFound(f"run {self.run!r} was deleted while it was replayed")
        stop = min(self.pos + budget, self.at)
        n = stop - self.pos
        if n:
            self.folding.feed(self.data.journal.raw(self.pos, stop))
            self.pos = stop
        return n

    @property
    def done(self) -> bool:
        return self.pos >= self.at


def replay_jobs(engine, calls: list) -> list | None:
    """For `calls` ([(op, args)], every op `run.replay`): a job per call (or the
    InmemError its arguments raise) when their journals are long enough to fold
    apart; None to fold them inline. Hold the engine's lock."""
    jobs: list = []
    total = 0
    for _op, args in calls:
        try:
            data, at = engine.replay_bounds(*args)
        except TypeError as exc:
            jobs.append(InmemError(f"bad arguments for {OP}: {exc}"))
            continue
        except InmemError as exc:
            jobs.append(exc)
            continue
        jobs.append(ReplayJob(args[0], data, at))
        total += at
    return jobs if total > INLINE_ENTRIES else None


class ReplayWaits:
    """The replay requests waiting, first come first folded: [frames, jobs, batch?]."""

    __slots__ = ("queue",)

    def __init__(self):
        self.queue: list = []

    def __bool__(self) -> bool:
        return bool(self.queue)

    def full(self) -> bool:
        return len(self.queue) >= WAITING_MAX

    def add(self, frames: list, jobs: list, batch: bool) -> None:
        self.queue.append((frames, jobs, batch))

    def step(self, engine) -> list:
        """One slice of the first request's folds (hold the engine's lock); once they are
        all done, [(frames, results, batch?)] for it (a result: the view or the
        InmemError), else []."""
        if not self.queue:
            return []
        frames, jobs, batch = self.queue[0]
        budget = SLICE_ENTRIES
        for i, job in enumerate(jobs):
            if type(job) is not ReplayJob or job.done:
                continue
            try:
                budget -= job.step(engine, budget)
            except InmemError as exc:
                jobs[i] = exc
                continue
            if budget <= 0:
                break
        if any(type(job) is ReplayJob and not job.done for job in jobs):
            return []
        self.queue.pop(0)
        results = [job.folding.view() if type(job) is ReplayJob else job for job in jobs]
        return [(frames, results, batch)]
