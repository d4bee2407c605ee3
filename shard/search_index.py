"""Keyword search: one shard's inverted index, kept up with the runs' journals.

What each primitive contributes as a document (primitive, run, ref):

| primitive | ref          | text                                                       |
|-----------|--------------|------------------------------------------------------------|
| kv        | key          | a str value, or every str inside a list/dict value         |
| json      | key          | every str leaf of the document                             |
| events    | sequence     | the event type and every str inside the payload            |
| state     | name         | a str value, or every str inside a list/dict value         |
| traces    | trace id     | the trace type and every str inside the data               |
| runs      | run id       | the run's name and its tags                                |

Dict keys and bytes are not text. Tokens are the lowercased Unicode words
of the text (`\\w+`). A document with no token is not indexed.

`SearchIndex` is assembled from parts, each in its own module, over two
modules of plain functions and data:

| part          | module                 | what it holds                                       |
|---------------|------------------------|-----------------------------------------------------|
| Documents     | shard.search_docs      | documents in and out; long ones in steps            |
| IndexRebuild  | shard.search_rebuild   | the rebuild after a recovery, from the tables       |
| Scoring       | shard.search_scoring   | statistics and BM25 hits                            |
|               | shard.search_text      | tokenizing, packed values walked in steps, snippets |
|               | shard.search_postings  | term -> {document: tf}, in parts                    |

This module keeps the index's state and how it follows the journals.

A run begun with `searchable=False` contributes nothing: its journal is
passed over without being read (what a store keeps for its own bookkeeping,
a LangGraph thread's checkpoints for one, would only fill the index with
one-off terms and cost every write the indexing).

The index never reaches disk and costs the write path nothing: it follows
each run's journal with a watermark. It is kept up in the background (the
shard worker's idle turns, the embedded store's scheduler thread, in slices
of a few milliseconds under the lock) and brought fully up to date before
each search, so a search sees every committed write — unless its
`budget_ms` runs out first, which it then reports. A deleted run's
documents go when the run goes; an expired key leaves the index at the
first catch-up after its expiry. A long document (a large text value) is
indexed in steps between looks at the clock (`shard.search_docs`); a search
without a budget waits for them too.

A history lets go of an entry only once the index has read it: a durable
store's written items through `read_held`, an in-memory store's `history=`
limit through `read_for_trim`. Both run inside a write, so both are bounded:
a long document met there gets a few milliseconds of steps at most, the rest
of it (and of the journal behind it) is left to the background slices, and
the history keeps what the index has not read (until it holds so much that
the writes step the document along themselves, `TRIM_HELD_MAX`).

After a recovery the index starts empty and `rebuilding`, and is rebuilt
from the runs' tables in the background slices (`shard.search_rebuild`). A
search in that window helps the rebuild along for at most its `budget_ms`
(`REBUILD_WAIT_MS` when it gives none) and then answers from what is indexed,
saying so (`index_complete` false). The first catch-up that reaches the end
of every journal ends the rebuild; from then on a search without a budget
waits for the whole catch-up again. The journals are read before each slice
of the table pass, so what was written or deleted since the rebuild began is
in the index first: a search that answers from an incomplete index misses
documents but never finds one the store no longer has.
"""

from __future__ import annotations

from collections import deque
import heapq
import time

from .effects import (CODE, EV_APPEND, EV_PAYLOAD, EV_SEQ, EV_TYPE, EXPIRES, JS_DEL, JS_PUT, KEY,
                      KEYED, KV_DEL, KV_PUT, RUN_CREATE, RUN_STATUS, ST_DEL, ST_PUT, TR_ADD,
                      TR_DATA, TR_ID, TR_TYPE, VALUE, VERSION, effect_of)
from .entries import PLAIN_AT, entry_version
from .search_docs import Documents
from .search_postings import Postings
from .search_rebuild import IndexRebuild
from .search_scoring import Scoring, ref_key
from .search_text import TEXTISH, packed_text, tokenize

# What the rest of the package imports from here, beside SearchIndex.
__all__ = ["PRIMITIVES", "SearchIndex", "packed_text", "ref_key", "tokenize"]

PRIMITIVES = ("kv", "json", "events", "state", "traces", "runs")
#: how long a search that gives no budget helps a rebuild along before it answers
#: from what is indexed; the shard serves no other request meanwhile, so it is the
#: same bound as a snapshot's serving pause
REBUILD_WAIT_MS = 20

#: journal entries indexed between two looks at the clock (a text value takes ~10 us,
#: so a slice overruns its deadline by well under a millisecond), and per read without one
SLICE = 32
CHUNK = 8192
#: the watermark of a run begun with searchable=False: beyond every journal position
PASSED_OVER = 1 << 62
#: how long `read_held` lets a long document's steps run before it leaves the rest
#: to the background slices (the history's items it read stay indexed)
HELD_STEP_MS = 2
#: how long the journal read before an in-memory history's trim may run (`read_for_trim`)
TRIM_READ_MS = 2
#: items a history may hold while the index is busy with a long document before the
#: writes that trim it step the document along themselves (TRIM_READ_MS each)
TRIM_HELD_MAX = 4096


class SearchIndex(Documents, IndexRebuild, Scoring):
    """One shard's search index (see the module docstring)."""

    def __init__(self):
        self.postings = Postings()
        #: doc -> (length, *its distinct terms): one tuple a document (a dict of its term
        #: frequencies took ~230 bytes more, and the postings hold them already); a long
        #: document's is (length,), its terms in `long_terms`
        self.docs: dict[tuple, tuple] = {}
        #: long document -> the list of its distinct terms (built step by step: a tuple
        #: of a million terms would be made in one go)
        self.long_terms: dict[tuple, list] = {}
        #: the work of long documents, in order: (doc, cancelled, generator), one step a
        #: `next`; cancelled is a one-item list a run's deletion sets
        self._jobs: deque = deque()
        #: documents whose postings entries are there in part (being added or taken
        #: out): not in `docs`, so searches neither count nor find them
        self._partial: set = set()
        #: run id -> removal jobs under way of a deleted run's documents, and how many of
        #: theirs are still in `docs` (shard.search_docs: searches skip them)
        self._dropping: dict = {}
        self._dropped_docs = 0
        self.total_len = 0
        self.by_run: dict[str, set] = {}
        #: run id -> the total length of its documents in `docs`
        self.run_len: dict[str, int] = {}
        self.watermark: dict[str, int] = {}      # run -> journal entries indexed
        #: the runs whose journals may hold entries past their watermark: a catch-up
        #: looks at these only (every run, each upkeep round, cost 80 ms a round at
        #: 100,000 runs, under the lock); each run's history names itself here as
        #: it grows, once a pass over every run (`read_all`) has handed it the set
        self.unread: set = set()
        #: the next catch-up looks at every run (a new index, a rebuild), handing each
        #: run's history `unread`
        self.read_all = True
        self.expiring: list = []                 # heap of (expires_at, doc)
        #: set by a recovery, cleared by the first catch-up that reaches every journal's end
        self.rebuilding = False
        #: while rebuilding: the pass over the runs' tables, resumed slice by slice
        self._tables = None

    # -- following the journals ------------------------------------------------------

    def pass_over(self, run_id: str) -> None:
        """Never read run `run_id` (begun with searchable=False): its watermark lies past any
        journal's end, so its history lets go of what is on disk at once."""
        self.watermark[run_id] = PASSED_OVER

    def drop_run(self, run_id: str) -> None:
        """Take a deleted run's documents out (its long ones under way stop)."""
        for doc, cancelled, _job in self._jobs:
            if cancelled is not None and doc[1] == run_id:
                cancelled[0] = True  # a long document of the run under way: it stops
        self._drop_run_docs(run_id)
        self.watermark.pop(run_id, None)
        self.unread.discard(run_id)

    def _tables_step(self, runs: dict, deadline: float | None) -> bool:
        """Go on with the table pass; True once it is done (and the journals take over)."""
        steps = self._tables
        jobs = self._jobs
        n = 0
        for _ in steps:
            if jobs and not self._run_jobs(deadline):
                return False  # a long document under way: the pass resumes after it
            n += 1
            if n == SLICE:
                n = 0
                if deadline is not None and time.monotonic() > deadline:
                    return False
        self._tables = None  # the watermarks were set when the pass began
        return True

    def catch_up(self, runs: dict, now_us: int, deadline: float | None = None) -> bool:
        """Index every journal entry not yet indexed; drop deleted runs and expired keys.

        With a `deadline` (time.monotonic()) it stops there and returns False;
        the watermarks keep what was done, so the next call goes on from it.
        """
        unread = self.unread
        if self.read_all:
            # Deleting a run drops it here at once (drop_run); a pass over every run
            # looks for any other way a run left.
            for run_id in [r for r in self.watermark if r not in runs]:
                self.drop_run(run_id)
            for run_id, r in runs.items():
                r.journal.unread = unread
            unread.update(runs)
            self.read_all = False
        # A long document under way is finished before anything else is indexed.
        if self._jobs and not self._run_jobs(deadline):
            return False
        # The journals first, the table pass of a rebuild after: what was written or
        # deleted since the rebuild began is in the index before more of the tables
        # is, so a search that answers from an incomplete index misses documents but
        # never finds one the store no longer has.
        if unread:
            for run_id in list(unread):
                r = runs.get(run_id)
                if r is not None and not self._catch_up_run(run_id, r, len(r.journal), deadline):
                    return False
                unread.discard(run_id)
        if self._tables is not None and not self._tables_step(runs, deadline):
            return False
        heap = self.expiring
        while heap and heap[0][0] <= now_us:
            expires_at, doc, eff = heapq.heappop(heap)
            r = runs.get(doc[1])
            e = None if r is None else r.kv.get(doc[2])
            if e is not None and entry_version(e) == eff[VERSION]:  # not written since
                self._remove(doc)
        if self._jobs and not self._run_jobs(deadline):
            return False  # a long expired document's postings still going
        self.rebuilding = False
        return True

    def _catch_up_run(self, run_id: str, r, end: int, deadline: float | None,
                      long_deadline: float | None = None) -> bool:
        """Index run `run_id`'s journal up to position `end`; False if `deadline` came first.

        A long document met on the way is done in steps until `long_deadline`
        (`deadline` when None); its entry counts as read once its job is queued.
        """
        journal = r.journal
        done = self.watermark.get(run_id, 0)
        if done >= end:
            return True
        if not r.searchable:
            self.pass_over(run_id)
            return True
        index_effect = self._index_effect
        textish = TEXTISH
        docs = self.docs
        jobs = self._jobs
        plain_at = PLAIN_AT
        if long_deadline is None:
            long_deadline = deadline
        # Field positions as locals too: this loop runs once per journal entry.
        code, key, value, expires = CODE, KEY, VALUE, EXPIRES
        i = done
        while i < end:
            stop = min(end, i + (CHUNK if deadline is None else SLICE))
            # A stretch at a time, as the history holds it: items in memory,
            # effects read back from disk (one record read per stretch, not per entry).
            pos = i
            for item in journal.raw(i, stop):
                pos += 1
                c = item[code]
                # Fast skip: a KV write whose value holds no text and replaces
                # no indexed document (the bulk of a rebuild of binary data).
                if c == KV_PUT:
                    if len(item) == 3:  # held: (code, key, entry)
                        e = item[2]
                        at = plain_at[e[0]]
                        if at and not textish[e[at]] and ("kv", run_id, item[1]) not in docs:
                            continue
                        item = effect_of(item)
                    elif item[expires] is None and not textish[item[value][0]] \
                            and ("kv", run_id, item[key]) not in docs:
                        continue
                elif len(item) == 3 and c in KEYED:
                    item = effect_of(item)
                index_effect(run_id, r, item)
                if jobs:
                    break  # a long document: its steps before the next entry
            i = pos
            if jobs:
                self.watermark[run_id] = i
                if not self._run_jobs(long_deadline):
                    return False
            if deadline is not None and i < end and time.monotonic() > deadline:
                self.watermark[run_id] = i
                return False
        self.watermark[run_id] = end
        return True

    def read_held(self, run_id: str, r) -> None:
        """Index the items run `run_id`'s history holds in memory, before it lets them go.

        Only when the index has read everything before them: then they are read
        here, in memory, instead of back from the WAL later (a bulk load of binary
        values would otherwise have every record read back just to be skipped).
        """
        h = r.journal
        if self._tables is None and self.watermark.get(run_id, 0) >= h.base:
            # A long document among them is stepped for HELD_STEP_MS at most here;
            # the background slices finish it (the items before it were read).
            long_deadline = time.monotonic() + HELD_STEP_MS / 1000
            if self._jobs and not self._run_jobs(long_deadline):
                return
            self._catch_up_run(run_id, r, h.disk, None, long_deadline)

    def read_for_trim(self, run_id: str, r) -> int:
        """Read run `run_id`'s journal so that its in-memory history may let it go: the
        position read to (what the history may drop).

        Bounded, as it runs inside the write that crossed the history's limit: the
        journal is read for at most TRIM_READ_MS, and a long document met on the
        way gets one step, its job queued (its entry counts as read); its other
        steps, and anything the index has not read behind a long document under
        way (the index stays in journal order), are left to the background
        slices. The history keeps what is not read until a later trim; past
        TRIM_HELD_MAX items, the write steps the long document for TRIM_READ_MS
        first, so writes faster than the background slices cannot grow it for ever.
        """
        held = len(r.journal.items) > TRIM_HELD_MAX
        if self._jobs:
            if not held or not self._run_jobs(time.monotonic() + TRIM_READ_MS / 1000):
                return self.watermark.get(run_id, 0)
        # Past TRIM_HELD_MAX held, the journal is read to its end, not for TRIM_READ_MS:
        # a bulk write (a put_many, a pipeline's puts, a transaction) adds more entries than
        # that reads, so where nothing else catches the index up (an embedded in-memory
        # store between searches) the history would grow by each one. What is read is what
        # those writes added, once each.
        deadline = None if held else time.monotonic() + TRIM_READ_MS / 1000
        self._catch_up_run(run_id, r, len(r.journal), deadline,
                           time.monotonic() + TRIM_READ_MS / 1000 if held else 0.0)
        return self.watermark.get(run_id, 0)

    def catch_up_for_search(self, runs: dict, now_us: int, deadline: float | None) -> bool:
        """Catch up before a search: to the end, or until `deadline`; while rebuilding,
        for at most REBUILD_WAIT_MS when the search set no deadline. True: complete."""
        if deadline is None and self.rebuilding:
            deadline = time.monotonic() + REBUILD_WAIT_MS / 1000
        return self.catch_up(runs, now_us, deadline)

    def _index_effect(self, run_id, r, eff) -> None:
        # A keyed write that a later one replaced is skipped: the later entry (a
        # write or a delete) is indexed when reached. So an index that is behind
        # (a rebuild, a search out of budget) holds no value the store no longer
        # has, only fewer of the current ones.
        code = eff[CODE]
        if code == KV_PUT:
            if not _current(r.kv, eff):
                return
            doc = ("kv", run_id, eff[KEY])
            self._put(doc, [eff[VALUE]], _keeps(r.kv, eff))
            if eff[EXPIRES] is not None:
                heapq.heappush(self.expiring, (eff[EXPIRES], doc, eff))
        elif code == KV_DEL:
            self._remove(("kv", run_id, eff[KEY]))
        elif code == JS_PUT:
            if _current(r.json, eff):
                self._put(("json", run_id, eff[KEY]), [eff[VALUE]],
                          _keeps(r.json, eff))
        elif code == JS_DEL:
            self._remove(("json", run_id, eff[KEY]))
        elif code == ST_PUT:
            if _current(r.state, eff):
                self._put(("state", run_id, eff[KEY]), [eff[VALUE]],
                          _keeps(r.state, eff))
        elif code == ST_DEL:
            self._remove(("state", run_id, eff[KEY]))
        elif code == EV_APPEND:
            self._put(("events", run_id, eff[EV_SEQ]), [eff[EV_TYPE], eff[EV_PAYLOAD]])
        elif code == TR_ADD:
            self._put(("traces", run_id, eff[TR_ID]), [eff[TR_TYPE], eff[TR_DATA]])
        elif code == RUN_CREATE or code == RUN_STATUS:
            self._put(("runs", run_id, run_id), [t for t in (r.name, *r.tags) if t])


def _keeps(table: dict, eff):
    """Whether the keyed write `eff` is still its key's entry, asked later (a long document)."""
    return lambda: _current(table, eff)


def _current(table: dict, eff) -> bool:
    """Whether the keyed write `eff` is still its key's entry (no later write replaced it)."""
    e = table.get(eff[KEY])
    return e is not None and entry_version(e) == eff[VERSION]
