"""Keyword search: one shard's inverted index and its BM25 scoring.

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
first catch-up after its expiry.

After a recovery the index starts empty and `rebuilding`: the shard reports
ready first and the index is rebuilt after, in the same background slices,
back to back while the shard has nothing else to do (and in a share of its
turns when it never has nothing to do). The rebuild reads the runs' tables as
they stand, not their histories: the index holds each key's current entry
only, and the history of a recovered store is mostly on disk. A search in that
window helps the rebuild along for at most its `budget_ms` (`REBUILD_WAIT_MS`
when it gives none) and then answers from what is indexed, saying so
(`index_complete` false). The first catch-up that reaches the end of every
journal ends the rebuild; from then on a search without a budget waits for
the whole catch-up again.

Scoring is BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5)))
with N, the average document length and each term's n taken over the whole
collection. In a cluster those statistics are summed across shards first
(`stats`), then each shard scores with the global figures (`query`), so a
hit scores the same as it would in one big index.
"""

from __future__ import annotations

import heapq
from itertools import islice
from collections import Counter
import math
import re
import time

import msgpack

from .effects import (CODE, EV_APPEND, EV_PAYLOAD, EV_SEQ, EV_TYPE, EXPIRES, JS_DEL, JS_PUT, KEY,
                      KEYED, KV_DEL, KV_PUT, RUN_CREATE, RUN_STATUS, ST_DEL, ST_PUT, TR_ADD,
                      TR_DATA, TR_ID, TR_TYPE, VALUE, VERSION, effect_of)
from .entries import PLAIN_AT, entry_expires, entry_value, entry_version

K1 = 1.2
B = 0.75
PRIMITIVES = ("kv", "json", "events", "state", "traces", "runs")
SNIPPET_CHARS = 80
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

_WORD = re.compile(r"\w+")
_unpackb = msgpack.unpackb


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _strings(value, out: list) -> list:
    t = type(value)
    if t is str:
        out.append(value)
    elif t is list:
        for v in value:
            _strings(v, out)
    elif t is dict:
        for v in value.values():
            _strings(v, out)
    return out


# msgpack first bytes that can hold text: 0x80-0x9f fixmap/fixarray, 0xa0-0xbf
# fixstr, 0xd9-0xdb str, 0xdc-0xdf array/map. Everything else is a number,
# bytes, bool or nil, and is skipped without decoding.
_TEXTISH = bytes(1 if 0x80 <= b <= 0xbf or 0xd9 <= b <= 0xdf else 0 for b in range(256))


def packed_text(data) -> list:
    """Strings inside a packed value."""
    if not data or not _TEXTISH[data[0]]:
        return []
    return _strings(_unpackb(data, raw=False), [])


class SearchIndex:
    def __init__(self):
        self.postings: dict[str, dict] = {}
        #: doc -> (length, *its distinct terms): one tuple a document (a dict of its term
        #: frequencies took ~230 bytes more, and the postings hold them already)
        self.docs: dict[tuple, tuple] = {}
        self.total_len = 0
        self.by_run: dict[str, set] = {}
        self.watermark: dict[str, int] = {}      # run -> journal entries indexed
        self.expiring: list = []                 # heap of (expires_at, doc)
        #: set by a recovery, cleared by the first catch-up that reaches every journal's end
        self.rebuilding = False
        #: while rebuilding: the pass over the runs' tables, resumed slice by slice
        self._tables = None

    # -- maintenance ---------------------------------------------------------------

    def _remove(self, doc) -> None:
        old = self.docs.pop(doc, None)
        if old is None:
            return
        self.total_len -= old[0]
        postings = self.postings
        for term in islice(old, 1, None):
            plist = postings[term]
            del plist[doc]
            if not plist:
                del postings[term]
        run_docs = self.by_run.get(doc[1])
        if run_docs is not None:
            run_docs.discard(doc)

    def _put(self, doc, texts) -> None:
        if doc in self.docs:
            self._remove(doc)
        if len(texts) == 1:
            tokens = _WORD.findall(texts[0].lower())
        else:
            tokens = _WORD.findall(" ".join(texts).lower())
        if not tokens:
            return
        tfs = dict.fromkeys(tokens, 1)
        if len(tfs) != len(tokens):  # a repeated word: count properly
            tfs = Counter(tokens)
        self.docs[doc] = (len(tokens), *tfs)
        self.total_len += len(tokens)
        postings = self.postings
        for term, tf in tfs.items():
            plist = postings.get(term)
            if plist is None:
                postings[term] = {doc: tf}
            else:
                plist[doc] = tf
        run_docs = self.by_run.get(doc[1])
        if run_docs is None:
            self.by_run[doc[1]] = {doc}
        else:
            run_docs.add(doc)

    def pass_over(self, run_id: str) -> None:
        """Never read run `run_id` (begun with searchable=False): its watermark lies past any
        journal's end, so its history lets go of what is on disk at once."""
        self.watermark[run_id] = PASSED_OVER

    def drop_run(self, run_id: str) -> None:
        for doc in list(self.by_run.pop(run_id, ())):
            self._remove(doc)
        self.watermark.pop(run_id, None)

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
        textish = _TEXTISH
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
                            self._table_entry((prim, run_id, key), key, e, now_us)
                            yield
                    yield
            events = r.events
            for i in range(n_events):
                if runs.get(run_id) is not r:
                    break
                eff = events[i]
                self._put(("events", run_id, eff[EV_SEQ]), [eff[EV_TYPE], *packed_text(eff[EV_PAYLOAD])])
                yield
            order = r.trace_order
            for i in range(n_traces):
                if runs.get(run_id) is not r:
                    break
                eff = r.traces[order[i]]
                self._put(("traces", run_id, eff[TR_ID]), [eff[TR_TYPE], *packed_text(eff[TR_DATA])])
                yield

    def _table_entry(self, doc, key, e, now_us: int) -> None:
        """Index a key's current entry as the journal pass would leave it."""
        data = entry_value(e)
        expires = entry_expires(e)
        if data is None or (expires is not None and expires <= now_us):
            self._remove(doc)  # deleted, or expired: nothing to find
            return
        if expires is not None:
            heapq.heappush(self.expiring, (expires, doc, effect_of((KV_PUT, key, e))))
        self._put(doc, packed_text(data))

    def _tables_step(self, runs: dict, deadline: float | None) -> bool:
        """Go on with the table pass; True once it is done (and the journals take over)."""
        steps = self._tables
        while True:
            n = 0
            for _ in steps:
                n += 1
                if n == SLICE:
                    break
            if n < SLICE:
                break  # the pass is done
            if deadline is not None and time.monotonic() > deadline:
                return False
        self._tables = None  # the watermarks were set when the pass began
        return True

    def catch_up(self, runs: dict, now_us: int, deadline: float | None = None) -> bool:
        """Index every journal entry not yet indexed; drop deleted runs and expired keys.

        With a `deadline` (time.monotonic()) it stops there and returns False;
        the watermarks keep what was done, so the next call goes on from it.
        """
        for run_id in [r for r in self.watermark if r not in runs]:
            self.drop_run(run_id)
        # The journals first, the table pass of a rebuild after: what was written or
        # deleted since the rebuild began is in the index before more of the tables
        # is, so a search that answers from an incomplete index misses documents but
        # never finds one the store no longer has.
        for run_id, r in runs.items():
            if not self._catch_up_run(run_id, r, len(r.journal), deadline):
                return False
        if self._tables is not None and not self._tables_step(runs, deadline):
            return False
        heap = self.expiring
        while heap and heap[0][0] <= now_us:
            expires_at, doc, eff = heapq.heappop(heap)
            r = runs.get(doc[1])
            e = None if r is None else r.kv.get(doc[2])
            if e is not None and entry_version(e) == eff[VERSION]:  # not written since
                self._remove(doc)
        self.rebuilding = False
        return True

    def _catch_up_run(self, run_id: str, r, end: int, deadline: float | None) -> bool:
        """Index run `run_id`'s journal up to position `end`; False if `deadline` came first."""
        journal = r.journal
        done = self.watermark.get(run_id, 0)
        if done >= end:
            return True
        if not r.searchable:
            self.pass_over(run_id)
            return True
        index_effect = self._index_effect
        textish = _TEXTISH
        docs = self.docs
        plain_at = PLAIN_AT
        # Field positions as locals too: this loop runs once per journal entry.
        code, key, value, expires = CODE, KEY, VALUE, EXPIRES
        i = done
        while i < end:
            stop = min(end, i + (CHUNK if deadline is None else SLICE))
            # A stretch at a time, as the history holds it: items in memory,
            # effects read back from disk (one record read per stretch, not per entry).
            for item in journal.raw(i, stop):
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
            i = stop
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
            self._catch_up_run(run_id, r, h.disk, None)

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
            self._put(doc, packed_text(eff[VALUE]))
            if eff[EXPIRES] is not None:
                heapq.heappush(self.expiring, (eff[EXPIRES], doc, eff))
        elif code == KV_DEL:
            self._remove(("kv", run_id, eff[KEY]))
        elif code == JS_PUT:
            if _current(r.json, eff):
                self._put(("json", run_id, eff[KEY]), packed_text(eff[VALUE]))
        elif code == JS_DEL:
            self._remove(("json", run_id, eff[KEY]))
        elif code == ST_PUT:
            if _current(r.state, eff):
                self._put(("state", run_id, eff[KEY]), packed_text(eff[VALUE]))
        elif code == ST_DEL:
            self._remove(("state", run_id, eff[KEY]))
        elif code == EV_APPEND:
            self._put(("events", run_id, eff[EV_SEQ]),
                      [eff[EV_TYPE], *packed_text(eff[EV_PAYLOAD])])
        elif code == TR_ADD:
            self._put(("traces", run_id, eff[TR_ID]), [eff[TR_TYPE], *packed_text(eff[TR_DATA])])
        elif code == RUN_CREATE or code == RUN_STATUS:
            self._put(("runs", run_id, run_id), [t for t in (r.name, *r.tags) if t])

    # -- queries -------------------------------------------------------------------

    def stats(self, terms) -> list:
        """[document count, total length, {term: document frequency}] of this shard."""
        return [len(self.docs), self.total_len,
                {t: len(self.postings.get(t, ())) for t in terms}]

    def query(self, terms, n_docs, total_len, dfs, run=None, primitives=None, top=10,
              deadline=None):
        """(hits as [score, primitive, run, ref], matches, budget exhausted) with global stats."""
        avgdl = total_len / n_docs if n_docs else 0.0
        scores: dict = {}
        exhausted = False
        allowed = None if primitives is None else frozenset(primitives)
        docs = self.docs
        steps = 0
        for term in dict.fromkeys(terms):
            plist = self.postings.get(term)
            if not plist:
                continue
            n = dfs.get(term, len(plist))
            idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
            for doc, tf in plist.items():
                steps += 1
                if deadline is not None and not steps & 0x3FF and time.monotonic() > deadline:
                    exhausted = True
                    break
                if run is not None and doc[1] != run:
                    continue
                if allowed is not None and doc[0] not in allowed:
                    continue
                dl = docs[doc][0]
                norm = K1 * (1 - B + B * dl / avgdl) if avgdl else K1
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
            if exhausted:
                break
        best = heapq.nsmallest(top, scores.items(), key=_order)
        return [[s, d[0], d[1], d[2]] for d, s in best], len(scores), exhausted


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


def _current(table: dict, eff) -> bool:
    """Whether the keyed write `eff` is still its key's entry (no later write replaced it)."""
    e = table.get(eff[KEY])
    return e is not None and entry_version(e) == eff[VERSION]


def _order(item):
    doc, score = item
    return (-score, doc[0], doc[1], ref_key(doc[2]))


def ref_key(ref):
    """Sort key for a ref or diff key that may be an int (event sequence) or a str."""
    # Ints and strs are never compared with each other (the primitive decides
    # first), but a tuple keeps the sort total anyway.
    return (0, ref, "") if type(ref) is int else (1, 0, ref)


def snippet(texts: list, terms) -> str:
    """A short piece of the document's text around its first matching word."""
    wanted = set(terms)
    for text in texts:
        for m in _WORD.finditer(text):
            if m.group().lower() in wanted:
                start = max(m.start() - SNIPPET_CHARS // 3, 0)
                piece = text[start:start + SNIPPET_CHARS]
                return ("…" if start else "") + piece + ("…" if start + SNIPPET_CHARS < len(text) else "")
    return (texts[0][:SNIPPET_CHARS] if texts else "")
