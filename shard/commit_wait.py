"""Strict mode's commit wait: before a turn's one fsync, a moment for the clients about to send.

A strict shard commits each turn with one write and one fsync, shared by
every request the turn drained (group commit). Clients that each wait for
their reply before sending again fall into step with the fsync: those
answered by one turn send their next request while the next turn's fsync
runs, so two groups alternate and each fsync covers about half of them.
Waiting briefly before the fsync for the clients that were served in the
last two turns and have not sent yet lets one fsync cover them all (with
four client processes per shard, measured: 2.2 requests per fsync without
the wait, 3.9 with it). It is the commit delay of PostgreSQL (`commit_delay` with
`commit_siblings`) and MySQL (`binlog_group_commit_sync_delay`), bounded
by the clients actually seen:

- only a turn with writes to fsync waits, and only such turns count (a
  turn of reads, or of the coordinator's pings, neither waits nor makes
  anyone expected);
- no wait when every recently served client is in the turn already (one
  client alone never waits, nor a pipelining or asynchronous one, whose
  requests all come from one connection);
- the wait ends as soon as they are all in, and after `commit_wait_us`
  (the `commit_wait_us` durability option; 0 turns it off) in any case;
- a client that stops sending costs at most two turns' waits before it
  is forgotten.

The wait sleeps in slices of SLICE_US, looking for new requests between
them, with the process's timer slack set to 1 µs so that a slice is close
to what it asks for (Linux otherwise adds up to 50 µs to each sleep). That
holds while a CPU is free: when clients keep every CPU busy, the shard gets
its CPU back only when the scheduler gives it, and a slice took ~180 µs on
2 cores with 8 client processes, so a wait then lasts one slice whatever
the budget (it still raised throughput there: without it, fewer requests
share each fsync).
"""

from __future__ import annotations

import ctypes
import time
from typing import Callable

#: the length of one sleep while waiting (µs)
SLICE_US = 10
_PR_SET_TIMERSLACK = 29


def fine_timer_slack() -> bool:
    """Ask Linux for 1 µs timer slack for this process (short sleeps as asked); False if not."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux, or no prctl
        return False


class CommitWait:
    """Which peers a shard served in its last two turns, and the wait for the missing ones."""

    __slots__ = ("budget", "prev", "recent", "waits", "waited_for", "_sleep", "_now")

    def __init__(self, budget_us: float, sleep: Callable = time.sleep,
                 now: Callable = time.perf_counter):
        self.budget = budget_us / 1e6
        self.prev: set = set()
        self.recent: set = set()
        #: turns that waited, and the requests the waits brought in
        self.waits = 0
        self.waited_for = 0
        self._sleep = sleep
        self._now = now

    def fill(self, batch: list, more: Callable[[list], None]) -> None:
        """Wait for the recent peers missing from `batch` (its items: [peer, ...frames]);
        `more(batch)` appends what has arrived since, without blocking."""
        peers = {item[0] for item in batch}
        recent = self.recent
        if self.budget and not recent <= peers:
            self.waits += 1
            had = n = len(batch)
            now, sleep, step = self._now, self._sleep, SLICE_US / 1e6
            end = now() + self.budget
            while True:
                sleep(step)
                more(batch)
                if len(batch) > n:
                    peers.update(item[0] for item in batch[n:])
                    n = len(batch)
                    if recent <= peers:
                        break
                if now() >= end:
                    break
            self.waited_for += n - had
        self.recent = self.prev | peers
        self.prev = peers
