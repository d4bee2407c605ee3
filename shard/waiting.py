"""The requests a shard worker answers later, in arrival order: what each kind of wait shares.

A subclass (`shard.deferred_search.SearchWaits`, `shard.deferred_reads.ReadWaits`)
says how many may wait (`limit`: past it a request is served inline, so no
client can grow a shard's memory without bound) and how the first ones are
advanced (`step`).
"""

from __future__ import annotations


class Waiting:
    """Waiting requests: tuples whose first item is the request's frames."""

    __slots__ = ("queue",)
    limit = 1024

    def __init__(self):
        self.queue: list = []

    def __bool__(self) -> bool:
        return bool(self.queue)

    def full(self) -> bool:
        return len(self.queue) >= self.limit

    def add(self, frames: list, *what) -> None:
        self.queue.append((frames, *what))
