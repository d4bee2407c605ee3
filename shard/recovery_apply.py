"""The shard's side of recovery: how snapshot sections and WAL records become engine state.

The recovery sequence (`inmem.recovery.sequence`) reads and checks the files
and decides what their damage means; it knows nothing of the engine. It hands
what it read to a target with this shape, which the shard provides here.
"""

from __future__ import annotations

from .effects import decode_batch
from .engine import Engine
from .snapshot_codec import load


class EngineRecovery:
    """Rebuilds an empty engine from a snapshot and the WAL records after it."""

    __slots__ = ("engine", "_apply")

    def __init__(self, engine: Engine):
        self.engine = engine
        self._apply = engine.apply_batches

    def load_snapshot(self, sections: dict) -> None:
        load(self.engine, sections)

    def apply_record(self, payload) -> int:
        """Apply one WAL record through the live apply path; return its group count."""
        count, batches = decode_batch(payload)
        self._apply(batches)
        return count

    def mark_orphans(self) -> list:
        return self.engine.mark_orphans()

    def rebuild_indexes(self) -> None:
        engine = self.engine
        engine.index.catch_up(engine.runs, engine.clock())  # indexes are rebuilt, never stored
