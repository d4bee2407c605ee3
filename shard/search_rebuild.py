"""The search index rebuilt after a recovery: from the runs' tables as they stand.

After a recovery the index starts empty and `rebuilding`: the shard reports
ready first and the index is rebuilt after, in the same background slices
as the rest of its upkeep, back to back while the shard has nothing else to
do (and in a share of its turns when it never has nothing to do). The
rebuild reads the runs' tables as they stand, not their histories: the index
holds each key's current entry only, and the history of a recovered store is
mostly on disk. `start_rebuild` sets each run's watermark to its journal's
length and begins the pass over the tables (`_table_pass`, a generator that
`SearchIndex.catch_up` steps slice by slice, after the journals).
"""

from __future__ import annotations

import heapq
from itertools import islice

from .effects import EV_PAYLOAD, EV_SEQ, EV_TYPE, KV_PUT, TR_DATA, TR_ID, TR_TYPE, effect_of
from .entries import PLAIN_AT, entry_expires, entry_value
from .search_text import TEXTISH


class IndexRebuild:
    """The table pass of a rebuild (a part of `SearchIndex`, which holds its state)."""

    rebuilding: bool
    watermark: dict
    expiring: list
    _tables: object

    def start_rebuild(self, runs: dict, now_us: int) -> None:
        """After a recovery: rebuild the (empty) index from the runs' tables, then follow the journals.

        What the index holds of a key is its current entry (a replaced write is
        never indexed), so the rebuild reads the tables as they stand rather
        than every journal from its first entry, most of which is on disk: each
        run's journal length is noted now and becomes its watermark (what lies
        below it is covered by the tables), and its tables are indexed in
        slices, each key's entry as it is when its turn comes. The journals past
        the watermarks are followed before every slice, so a write or delete
        made meanwhile is in the index at once; the table pass meeting that key
        later indexes its current entry again, which is harmless (one document).
        """
        self.rebuilding = bool(runs)
        self.read_all = True  # the next catch-up hands every run's history `unread`
        if not runs:
            return
        covered = list(runs.items())
        # The journals below these lengths are never read: the table pass
        # covers them. Saying so now lets a durable history let go of the
        # items that recovery just read back from the WAL, instead of holding
        # them on the heap until the pass is done.
        for run_id, r in covered:
            if r.searchable:
                self.watermark[run_id] = len(r.journal)
            else:
                self.pass_over(run_id)
        self._tables = self._table_pass(runs, covered, now_us)

    def _table_pass(self, runs: dict, covered: list, now_us: int):
        """A generator: one step per table entry indexed (see `start_rebuild`)."""
        textish = TEXTISH
        plain_at = PLAIN_AT
        marks = [(run_id, r, len(r.events), len(r.trace_order)) for run_id, r in covered]
        for run_id, r, n_events, n_traces in marks:
            if runs.get(run_id) is not r or not r.searchable:
                continue  # deleted meanwhile, or never indexed
            self._put(("runs", run_id, run_id), [t for t in (r.name, *r.tags) if t])
            yield
            for prim, table in (("kv", r.kv), ("json", r.json), ("state", r.state)):
                for chunk in _chunks_of(table):
                    if runs.get(run_id) is not r:
                        break
                    for key, e in chunk:
                        # As it is now: the chunk was taken before other work ran, and a
                        # key written or deleted since is the journals' to index.
                        e = table.get(key)
                        if e is None:
                            continue
                        at = plain_at[e[0]]
                        # No text: nothing to index, and (each key is met once,
                        # before the journals are read) nothing indexed to replace.
                        if not at or textish[e[at]]:
                            if runs.get(run_id) is not r:
                                break  # deleted while this chunk was under way
                            self._table_entry((prim, run_id, key), key, e, now_us,
                                              _keeps_entry(table, key, e))
                            yield
                    yield
            events = r.events
            for i in range(n_events):
                if runs.get(run_id) is not r:
                    break
                eff = events[i]
                self._put(("events", run_id, eff[EV_SEQ]), [eff[EV_TYPE], eff[EV_PAYLOAD]])
                yield
            order = r.trace_order
            for i in range(n_traces):
                if runs.get(run_id) is not r:
                    break
                eff = r.traces[order[i]]
                self._put(("traces", run_id, eff[TR_ID]), [eff[TR_TYPE], eff[TR_DATA]])
                yield

    def _table_entry(self, doc, key, e, now_us: int, alive=None) -> None:
        """Index a key's current entry as the journal pass would leave it."""
        data = entry_value(e)
        expires = entry_expires(e)
        if data is None or (expires is not None and expires <= now_us):
            self._remove(doc)  # deleted, or expired: nothing to find
            return
        if expires is not None:
            heapq.heappush(self.expiring, (expires, doc, effect_of((KV_PUT, key, e))))
        self._put(doc, [data], alive)


def _chunks_of(table: dict, size: int = 64):
    """The (key, entry) pairs of a table in lists of `size`, taken between other work.

    The table may gain keys between two chunks (writes go on while the index
    is rebuilt); iterating on then raises, and a fresh iterator goes on after
    the pairs already taken. Keys are only ever added at the end (a write
    never removes one; a transaction taken back removes only a key it added
    itself), so every key present when the pass began is met exactly once.
    """
    done = 0
    it = iter(table.items())
    while True:
        try:
            chunk = list(islice(it, size))
        except RuntimeError:  # changed size since the last chunk
            it = islice(iter(table.items()), done, None)
            continue
        if not chunk:
            return
        done += len(chunk)
        yield chunk


def _keeps_entry(table: dict, key, e):
    """Whether entry `e` is still `key`'s, asked later (a long document of a rebuild)."""
    return lambda: table.get(key) is e
