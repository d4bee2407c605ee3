"""Collecting the answers of a request sent to every shard, and describing recoveries.

A `FanOut` waits for one answer per shard, in any order, and calls `done`
once with the answers in shard order, so that the merge that follows
(`inmem.protocol.merge_fanout`) never depends on which shard was fastest.
"""

from __future__ import annotations

from inmem.types import RecoveryResult


class FanOut:
    __slots__ = ("results", "remaining", "done", "finished")

    def __init__(self, n: int, done):
        self.results = [None] * n
        self.remaining = n
        self.done = done
        self.finished = False

    def part(self, index: int):
        """The callback that delivers shard `index`'s answer."""
        def deliver(result):
            if self.finished:
                return
            self.results[index] = result
            self.remaining -= 1
            if self.remaining == 0:
                self.finished = True
                self.done(self.results)
        return deliver


def describe_recovery(r) -> str:
    """One line for a RecoveryResult as a shard sent it (a list of its fields), or None."""
    if r is None:
        return "in memory, nothing to recover"
    try:
        f = dict(zip(RecoveryResult._fields, r))
        snapshot, replayed, transactions = (f["snapshot_used"], f["records_replayed"],
                                            f["transactions_recovered"])
        skipped, truncated, orphaned, seconds = (f["corrupt_records_skipped"],
                                                 f["tail_truncated_bytes"], f["orphaned_runs"],
                                                 f["seconds"])
    except (TypeError, KeyError):
        return f"recovered ({r!r:.100})"
    source = f"snapshot {snapshot}" if snapshot else "no snapshot"
    parts = [f"{source}, {replayed} WAL records replayed ({transactions} transactions)"]
    if truncated:
        parts.append(f"torn tail of {truncated} bytes cut")
    if skipped:
        parts.append(f"{skipped} corrupt records skipped")
    if orphaned:
        parts.append(f"{len(orphaned)} orphaned runs")
    parts.append(f"{seconds:.3f} s")
    return ", ".join(parts)


__all__ = ["FanOut", "describe_recovery"]
