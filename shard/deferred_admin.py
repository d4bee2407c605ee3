"""On-demand snapshots in a shard's loop: each request answered when its child is done,
while the loop goes on serving.

`db.snapshot()` reaches every shard as an admin request. The snapshot is
written by a forked child (`DurableStore`), so the loop has nothing to do
until that child exits: it keeps serving, as Redis does during BGSAVE, and
looks at the child once a turn (a waitpid that does not wait) while a
request is waiting for it. Waiting for the child in the loop instead stalls
every client of the shard for the whole snapshot, and one slower than the
coordinator's heartbeat timeout gets the shard reported unresponsive.

A request is answered by a child forked after it arrived, which holds every
write acknowledged before it. A child already running when it came (an
automatic snapshot, or another request's) may not: the request waits for
that one to end, then for the next, which every request that came
meanwhile shares.
"""

from __future__ import annotations

import logging

from inmem.errors import InmemError

log = logging.getLogger("inmem.shard")


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
            except InmemError as exc:  # the store refuses writes, say
                return answered + [(frames, exc) for frames in queued]
            if pid is None:
                return answered + [(frames, []) for frames in queued]
            self.pid, self.waiting = pid, queued
        return answered
