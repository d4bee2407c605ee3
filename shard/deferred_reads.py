"""Long reads done a slice at a time between a shard worker's turns: replays, chain checks.

`run.replay` (behind `db.replay_run` and `db.diff_runs`) folds a run's journal
from its first entry, and `ev.verify` (`events.verify_chain`) hashes a run's
events from the first: both O(run size). Done inside its request, a replay of
a run of a quarter of a million entries held its shard for half a second
(every other client of the shard waited), a check of 50,000 events as long,
and a long-lived agent's run of millions would outlast the coordinator's
heartbeat timeout. A worker does a long one here instead: the request waits,
and the loop steps its job (`ReplayJob`, over `shard.replay.Folding`; or
`shard.events.ChainVerification`) a slice at a time between its turns,
serving everyone else meanwhile, then answers it. Journals and event logs
are append-only and the extent is fixed when the request arrives, so the
answer is the one done inline would have given; a run deleted meanwhile
answers RunNotFound, as a request that came after the delete would.

A request is one such call, or a pipeline of nothing but `run.replay` calls
(`diff_runs` of two runs on one shard sends that); a pipeline that mixes them
with other operations runs inline, in its order.
"""

from __future__ import annotations

from inmem.errors import InmemError, RunNotFound

from .events import ChainVerification
from .replay import Folding
from .waiting import Waiting

#: a journal this long or shorter is folded inside its request (a few tens of ms)
INLINE_ENTRIES = 20_000
#: a chain this long or shorter is checked inside its request (about as long)
INLINE_EVENTS = 4_000
#: requests that may wait at once; past that one is done inline
WAITING_MAX = 1024
REPLAY = "run.replay"
VERIFY = "ev.verify"
OPS = (REPLAY, VERIFY)


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

    def result(self) -> list:
        return self.folding.view()


#: what one slice does of each kind of job (about 10 ms of work)
SLICE = {ReplayJob: 8_192, ChainVerification: 1_024}


def verify_job(engine, args) -> list | None:
    """For `ev.verify(*args)`: [its job] when the chain is long enough to check apart;
    None to check it inline (bad arguments included: the call says why). Hold the
    engine's lock."""
    if len(args) != 1 or type(args[0]) is not str:
        return None
    data = engine.runs.get(args[0])
    if data is None or len(data.events) <= INLINE_EVENTS:
        return None
    return [ChainVerification(args[0], data)]


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
            jobs.append(InmemError(f"bad arguments for {REPLAY}: {exc}"))
            continue
        except InmemError as exc:
            jobs.append(exc)
            continue
        jobs.append(ReplayJob(args[0], data, at))
        total += at
    return jobs if total > INLINE_ENTRIES else None


class ReadWaits(Waiting):
    """The requests waiting, first come first done: (frames, jobs, the op, or None for
    a pipeline)."""

    __slots__ = ()
    limit = WAITING_MAX

    def step(self, engine) -> list:
        """One slice of the first request's jobs (hold the engine's lock); once they are
        all done, [(frames, results, op)] for it (a result: the job's or the
        InmemError), else []."""
        if not self.queue:
            return []
        frames, jobs, op = self.queue[0]
        share = 1.0  # of one slice, shared by the jobs of a pipeline in turn
        for i, job in enumerate(jobs):
            if isinstance(job, InmemError) or job.done:
                continue
            budget = max(1, int(SLICE[type(job)] * share))
            try:
                share -= job.step(engine, budget) / SLICE[type(job)]
            except InmemError as exc:
                jobs[i] = exc
                continue
            if share <= 0:
                break
        if any(not isinstance(job, InmemError) and not job.done for job in jobs):
            return []
        self.queue.pop(0)
        return [(frames, [job if isinstance(job, InmemError) else job.result() for job in jobs],
                 op)]
