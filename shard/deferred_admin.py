"""Admin requests a shard answers later, while its loop goes on serving: on-demand snapshots
and history compaction.

Both take time that grows with the data. Done to the end inside the loop,
they stall every client of the shard for as long (a 300K-key snapshot held
puts for 0.31 s, compacting 26 MB of history for 0.41 s), and one slower
than the coordinator's heartbeat timeout gets the shard reported
unresponsive. So the request's frames are kept, the loop serves on, and the
reply goes out when the work is done.

Snapshots. `db.snapshot()` is written by a forked child (`DurableStore`),
so the loop has nothing to do until it exits, as Redis does during BGSAVE;
it looks at the child once a turn (a waitpid that does not wait) while a
request waits for it. A request is answered by a child forked after it
arrived, which holds every write acknowledged before it. A child already
running when it came (an automatic snapshot, or another request's) may not:
the request waits for that one to end, then for the next, which every
request that came meanwhile shares.

History compaction. `db.compact_history()` runs in the loop itself, in the
slices the automatic compaction uses (`shard.history_compaction`), one per
turn; requests are served between them. Requests are taken one at a time,
each a whole pass started after it arrived.
"""

from __future__ import annotations

import logging

from inmem.errors import InmemError

log = logging.getLogger("inmem.shard")


class CompactionRequests:
    """The compact_history requests a shard has not answered yet: the first one's pass
    goes on a slice per `step`."""

    __slots__ = ("store", "queue", "slices")

    def __init__(self, store):
        self.store = store
        self.queue: list = []
        self.slices = None  # the first request's pass, once started

    def __bool__(self) -> bool:
        return bool(self.queue)

    def add(self, frames: list) -> None:
        """A request to answer once a whole compaction pass started after it has ended."""
        self.queue.append(frames)

    def step(self) -> list:
        """One slice of the first request's pass; [(frames, what it did or the
        InmemError)] once the pass has ended, else []."""
        if not self.queue:
            return []
        try:
            if self.slices is None:
                self.slices = self.store.compact_history_in_slices()
            next(self.slices)
            return []
        except StopIteration as done:
            result = done.value
        except InmemError as exc:
            result = exc
        except Exception as exc:  # a bug: keep serving, say what broke
            log.exception("history compaction of %s failed", self.store.path)
            result = InmemError(f"internal error in compact_history: {type(exc).__name__}: {exc}")
        self.slices = None
        return [(self.queue.pop(0), result)]


class SnapshotRequests:
    """The snapshot requests a shard has not answered yet, and the child they wait for."""

    __slots__ = ("store", "queued", "pid", "waiting")

    def __init__(self, store):
        self.store = store
        #: requests (their frames) that need a child forked after they arrived
        self.queued: list = []
        #: the child started for `waiting`, the requests it answers
        self.pid: int | None = None
        self.waiting: list = []

    def __bool__(self) -> bool:
        return bool(self.queued or self.waiting)

    def add(self, frames: list) -> None:
        """A request to answer once a snapshot taken after it is durable."""
        self.queued.append(frames)

    def poll(self) -> list:
        """[(frames, result), ...] for the requests whose snapshot has ended (a list of one
        SnapshotInfo, [] when there was nothing to take, or the InmemError), and a child
        started for the queued ones when none is running."""
        try:
            return self._poll()
        except Exception as exc:  # a bug must not stop the shard's loop: fail these requests
            log.exception("snapshot requests of %s failed", self.store.path)
            err = InmemError(f"internal error in snapshot: {type(exc).__name__}: {exc}")
            pending = self.waiting + self.queued  # in the order they came
            self.queued, self.waiting, self.pid = [], [], None
            return [(frames, err) for frames in pending]

    def _poll(self) -> list:
        answered: list = []
        store = self.store
        if self.pid is not None:
            try:
                done, info = store.snapshot_done(self.pid)
                result = [] if info is None else [info]
            except InmemError as exc:
                done, result = True, exc
            if not done:
                return answered
            answered = [(frames, result) for frames in self.waiting]
            self.pid, self.waiting = None, []
        if self.queued:
            running = store.snapshot_running()
            if running is not None:
                try:
                    store.snapshot_done(running)  # reaped here if it has ended
                except InmemError as exc:  # an automatic one's: the WAL is kept, nothing lost
                    log.error("snapshot of %s failed: %s", store.path, exc)
                if store.snapshot_running() is not None:
                    return answered
            queued, self.queued = self.queued, []
            try:
                pid = store.start_snapshot()
            except InmemError as exc:  # the store refuses writes, fork was refused...
                return answered + [(frames, exc) for frames in queued]
            if pid is None:
                return answered + [(frames, []) for frames in queued]
            self.pid, self.waiting = pid, queued
        return answered
