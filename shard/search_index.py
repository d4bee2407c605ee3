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

A long document (more than LONG_TEXT characters of text, or bytes of packed
value: a scraped page, a transcript, up to max_value_bytes) is indexed in
steps, as the rest of the index is kept up. Indexing it in one go held the
shard's loop (the embedded store's lock) for seconds: 4 s of CPU for 15 MiB
of distinct words, long enough for a cluster to mark the shard unresponsive.
A step decodes about STEP_CHARS characters from the packed value (never the
whole value at once), tokenizes them and puts their terms straight into the
postings; a step of taking one out removes STEP_TERMS postings entries. The
clock is looked at between two steps, so a slice overruns its deadline by
one step (~1-2 ms) at most, whatever the value's size. While one is under
way the index reports `long_work()`, and the shard runs its slices back to
back when idle, as for a rebuild.

Why steps rather than a cap on the text indexed per value: a cap bounds the
work but makes the rest of a transcript unfindable, and still needs steps to
fit a few milliseconds (16 KiB of text is about the most one step can do).
With steps nothing is lost, and the results are exact:

- the text is cut between steps only just after a space or a punctuation
  mark that also ends a word for `str.lower` (`SEPARATORS`: neither a word
  character nor cased nor case-ignorable, so Greek final sigma lowercases
  as it does in the whole text), so the tokens, and the BM25 scores once it
  is indexed, are those of the text taken whole; a stretch of more than
  MAX_CARRY characters with no such mark is the one exception (cut there);
- the document is in `_partial` while its postings entries are there in
  part: it is not in `docs`, searches skip it and `stats` does not count it,
  so it becomes visible whole after its last step and leaves at once when it
  goes (its entries are then taken out in steps, unseen); a search never
  counts or finds half of one;
- nothing else is indexed while a job is under way (the journal waits), so
  the index stays in journal order: a later write or delete of the same key
  is applied after it, and a job whose entry was replaced meanwhile (or
  whose run was deleted) stops and takes out what it added.

Memory: what a long document costs is its distinct terms, as for any
document (a list of them, for taking it out, plus their postings); neither
its decoded text nor its token list is ever held whole, and no dict of its
whole vocabulary is built aside. The postings are split in POSTINGS_PARTS
dicts (`Postings`): one dict growing past a million terms paused the shard
~0.1 s at each doubling. A snippet is cut from the first SNIPPET_SCAN
characters of a document's text (its start when the words matched lie
beyond), found by one regex rather than a Python loop over every word.

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
from collections import Counter, deque
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
#: a document with more text than this (characters of str, bytes of packed value) is
#: indexed in steps; below it, in one go (~16 KiB of words take ~1-2 ms)
LONG_TEXT = 16 * 1024
#: what one step of a long document does: decode and tokenize this much text (and
#: put its terms in the postings) ...
STEP_CHARS = 4 * 1024
#: ... or take this many postings entries out
STEP_TERMS = 1024
#: text is cut between steps only after a SEPARATOR; a stretch longer than this
#: without one (a "word" of a megabyte) is cut anyway
MAX_CARRY = 48 * 1024
#: a snippet is looked for in this much of a document's text, no more
SNIPPET_SCAN = 256 * 1024
#: how long `read_held` lets a long document's steps run before it leaves the rest
#: to the background slices (the history's items it read stay indexed)
HELD_STEP_MS = 2
#: packed elements a long document's decoding walks between two looks at the clock
WALK_TICK = 4096
#: how long the journal read before an in-memory history's trim may run (`read_for_trim`)
TRIM_READ_MS = 2

_WORD = re.compile(r"\w+")
_unpackb = msgpack.unpackb


def _breaks_words_and_case(c: str) -> bool:
    # Not a word character (no token spans it) and neither cased nor case-ignorable
    # (Unicode's Final_Sigma context stops at it): text cut after it lowercases and
    # tokenizes as it does whole.
    return not _WORD.match(c) and ("a\u03a3" + c + "a").lower()[1] == "\u03c2"


#: where the text of a long document may be cut between two steps, most common first
SEPARATORS = "".join(c for c in " \n\t\r\x0b\x0c\u3000\u3002\uff0c\u3001,;!?()[]{}<>\"/\\|=+*&%#@~^"
                     if _breaks_words_and_case(c))


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


def _last_cut(s: str) -> int:
    """Where `s` may be cut (just after this index), or -1: the last SEPARATOR in it."""
    for c in SEPARATORS:
        i = s.rfind(c)
        if i >= 0:
            return i
    return -1


_LAST_NONWORD = re.compile(r"\W(?=\w*\Z)")


def _segments(sources):
    """The text of `sources` in segments of about STEP_CHARS characters, one per step.

    Tokenized one by one they give the tokens of the texts joined by spaces
    (what a short document's `_put_texts` tokenizes): each is cut just after a
    SEPARATOR, or at a text's end. A stretch of MAX_CARRY characters without a
    separator is cut after its last non-word character, or, a single word that
    long, anywhere. An empty segment is a step of decoding that met no text.
    """
    batch: list = []
    size = 0
    for src in sources:
        carry = ""
        for piece, end in (_str_pieces(src) if type(src) is str else _packed_pieces(src)):
            if piece is None:
                yield ""
                continue
            text = carry + piece if carry else piece
            carry = ""
            if not end:
                cut = _last_cut(text)
                if cut < 0:
                    if len(text) < MAX_CARRY:
                        carry = text
                        continue
                    m = _LAST_NONWORD.search(text)
                    cut = m.start() if m else len(text) - 1
                carry = text[cut + 1:]
                text = text[:cut + 1]
            batch.append(text)
            size += len(text)
            if size >= STEP_CHARS:
                yield " ".join(batch)
                batch = []
                size = 0
    if batch:
        yield " ".join(batch)


def _str_pieces(text: str):
    n = len(text)
    if n <= STEP_CHARS:
        yield text, True
        return
    for i in range(0, n, STEP_CHARS):
        yield text[i:i + STEP_CHARS], i + STEP_CHARS >= n


#: packed elements of a fixed size: first byte -> bytes
_FIXED = {0xc0: 1, 0xc2: 1, 0xc3: 1, 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9,
          0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9, 0xd4: 3, 0xd5: 4, 0xd6: 6, 0xd7: 10, 0xd8: 18}
#: first byte -> (bytes of the big-endian length field, bytes after it before the data)
_SIZED = {0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0),       # str
          0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0),       # bin
          0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1)}       # ext
#: first byte -> (bytes of the big-endian count field, elements per count)
_CONTAINERS = {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}


def _packed_pieces(data):
    """(piece, end) for each str inside packed `data`, in the order `packed_text` gives them.

    Dict keys are left out. A str is decoded STEP_CHARS bytes at a time (cut at
    a character's first byte), `end` on its last piece; every WALK_TICK
    elements, (None, False): a step's worth of walking. Nothing is decoded in
    one go, so a value of any size costs a bounded step at a time.
    """
    if not data or not _TEXTISH[data[0]]:
        return
    view = memoryview(data)
    n_data = len(data)
    pos = 0
    # each level: [elements left, is a map (keys and values alternate), skipped]
    stack = [[1, False, False]]
    walked = 0
    while stack:
        top = stack[-1]
        if not top[0]:
            stack.pop()
            continue
        skip = top[2] or (top[1] and not top[0] & 1)  # a map's key: 2n, 2n-2, ... left
        top[0] -= 1
        if pos >= n_data:
            return
        walked += 1
        if walked == WALK_TICK:
            walked = 0
            yield None, False
        b = data[pos]
        if b <= 0x7f or b >= 0xe0:
            pos += 1
        elif b <= 0x9f:
            pos += 1
            if b <= 0x8f:
                stack.append([2 * (b & 0x0f), True, skip])
            else:
                stack.append([b & 0x0f, False, skip])
        elif b <= 0xbf or b in _SIZED:
            if b <= 0xbf:
                n, start = b & 0x1f, pos + 1
            else:
                width, extra = _SIZED[b]
                if pos + 1 + width > n_data:
                    return
                n = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
                start = pos + 1 + width + extra
            end = start + n
            if end > n_data:
                return
            pos = end
            if skip or not (b <= 0xbf or b <= 0xdb and b >= 0xd9):
                continue
            off = start
            while True:
                cut = min(off + STEP_CHARS, end)
                while cut < end and data[cut] & 0xc0 == 0x80:
                    cut -= 1  # back to a character's first byte
                if cut <= off < end:  # one character longer than a step: take it whole
                    cut = off + 1
                    while cut < end and data[cut] & 0xc0 == 0x80:
                        cut += 1
                yield str(view[off:cut], "utf-8", "replace"), cut >= end
                if cut >= end:
                    break
                off = cut
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            if pos + 1 + width > n_data:
                return
            stack.append([per * int.from_bytes(data[pos + 1:pos + 1 + width], "big"), per == 2,
                          skip])
            pos += 1 + width
        elif b in _FIXED:
            pos += _FIXED[b]
        else:  # 0xc1 is never used: not a value this index can read
            return


#: the postings are this many dicts, a term's chosen by its hash (a power of two)
POSTINGS_PARTS = 256
_PART = POSTINGS_PARTS - 1


class Postings:
    """term -> {doc: term frequency}, kept in POSTINGS_PARTS dicts rather than one.

    A dict grows by building its table anew, all at once: one dict of every
    term paused its shard ~0.1 s each time its vocabulary doubled past a
    million terms (one large text of distinct words does that in a few
    steps). A part holds 1/POSTINGS_PARTS of the terms, so it grows in as
    many smaller pauses. The index's hot loops pick the part themselves
    (`parts[hash(term) & _PART]`); this mapping interface is for the rest.
    """

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = [{} for _ in range(POSTINGS_PARTS)]

    def get(self, term, default=None):
        return self.parts[hash(term) & _PART].get(term, default)

    def __getitem__(self, term):
        return self.parts[hash(term) & _PART][term]

    def __setitem__(self, term, plist) -> None:
        self.parts[hash(term) & _PART][term] = plist

    def __delitem__(self, term) -> None:
        del self.parts[hash(term) & _PART][term]

    def __contains__(self, term) -> bool:
        return term in self.parts[hash(term) & _PART]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __iter__(self):
        for part in self.parts:
            yield from part

    def keys(self):
        return list(self)

    def items(self):
        return [item for part in self.parts for item in part.items()]

    def values(self):
        return [plist for part in self.parts for plist in part.values()]

    def __eq__(self, other) -> bool:
        if isinstance(other, Postings):
            other = dict(other.items())
        return isinstance(other, dict) and dict(self.items()) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Postings({dict(self.items())!r})"


class SearchIndex:
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
        run_docs = self.by_run.get(doc[1])
        if run_docs is not None:
            run_docs.discard(doc)
        terms = self.long_terms.pop(doc, None)
        if terms is not None:  # gone from searches now; its postings go in steps
            self._partial.add(doc)
            self._jobs.append((doc, None, self._take_out(doc, terms)))
            return
        parts = self.postings.parts
        for term in islice(old, 1, None):
            part = parts[hash(term) & _PART]
            plist = part[term]
            del plist[doc]
            if not plist:
                del part[term]

    def _put(self, doc, sources, alive=None) -> None:
        """Index `doc` with the text of `sources` (strs, and packed values whose strs count).

        A long text, or any text while long work is under way (the index stays in
        order), is left to a job of steps; `alive()` says whether what it indexes
        is still current (when it no longer is, the job stops: a later entry of the
        journal, or the run's deletion, has its turn after it).
        """
        if doc in self.docs:
            self._remove(doc)
        if len(sources) == 1:  # a keyed write's value: the common case, kept short
            src = sources[0]
            if len(src) <= LONG_TEXT and not self._jobs:
                self._put_texts(doc, [src] if type(src) is str else packed_text(src))
                return
        elif sum(map(len, sources)) <= LONG_TEXT and not self._jobs:
            texts = []
            for src in sources:
                if type(src) is str:
                    texts.append(src)
                else:
                    texts.extend(packed_text(src))
            self._put_texts(doc, texts)
            return
        cancelled = [False]
        self._jobs.append((doc, cancelled, self._put_long(doc, sources, alive, cancelled)))

    def _put_texts(self, doc, texts) -> None:
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
        parts = self.postings.parts
        for term, tf in tfs.items():
            part = parts[hash(term) & _PART]
            plist = part.get(term)
            if plist is None:
                part[term] = {doc: tf}
            else:
                plist[doc] = tf
        run_docs = self.by_run.get(doc[1])
        if run_docs is None:
            self.by_run[doc[1]] = {doc}
        else:
            run_docs.add(doc)

    # -- long documents, in steps ---------------------------------------------------------

    def _put_long(self, doc, sources, alive, cancelled):
        """A job: tokenize `sources` a segment a step, each segment's terms into the postings.

        The document is in `_partial` meanwhile (searches neither count nor find
        it) and enters `docs` after its last step. Its terms go straight into the
        postings, a segment's at a time: no dict of the whole document's terms is
        built aside (it would cost a copy of its vocabulary, and growing it, a
        pause of its own). It stops, taking out what it added, once `alive()`
        says false or its run is deleted (`cancelled`): what replaced the entry
        is indexed after it.
        """
        parts = self.postings.parts
        partial = self._partial
        # Nothing else is indexed while a job is under way, so `doc` is not in `docs`.
        partial.add(doc)
        terms: list = []  # its distinct terms, to take them out again
        length = 0
        for segment in _segments(sources):
            if segment:
                tokens = _WORD.findall(segment.lower())
                length += len(tokens)
                for term, tf in Counter(tokens).items():
                    part = parts[hash(term) & _PART]
                    plist = part.get(term)
                    if plist is None:
                        part[term] = {doc: tf}
                        terms.append(term)
                    else:
                        before = plist.get(doc)
                        if before is None:
                            plist[doc] = tf
                            terms.append(term)
                        else:
                            plist[doc] = before + tf
                del tokens
            yield
            if cancelled[0] or (alive is not None and not alive()):
                yield from self._take_out(doc, terms)
                return
        partial.discard(doc)
        if not length:
            return
        self.docs[doc] = (length,)
        self.long_terms[doc] = terms
        self.total_len += length
        run_docs = self.by_run.get(doc[1])
        if run_docs is None:
            self.by_run[doc[1]] = {doc}
        else:
            run_docs.add(doc)

    def _take_out(self, doc, terms: list):
        """A job: take a document's postings out, a step at a time (it left `docs` already)."""
        parts = self.postings.parts
        self._partial.add(doc)
        while terms:
            for _ in range(min(STEP_TERMS, len(terms))):
                term = terms.pop()
                part = parts[hash(term) & _PART]
                plist = part[term]
                del plist[doc]
                if not plist:
                    del part[term]
            if terms:
                yield
        self._partial.discard(doc)

    def _run_jobs(self, deadline: float | None) -> bool:
        """Step the jobs of long documents until none is left (True) or `deadline` passes.

        At least one step runs per call, so a deadline already past still progresses.
        """
        jobs = self._jobs
        while jobs:
            job = jobs[0]
            for _ in job[2]:
                if deadline is not None and time.monotonic() > deadline:
                    return False
            jobs.popleft()
        return True

    def long_work(self) -> bool:
        """Whether a long document is being added or taken out (see the module docstring)."""
        return bool(self._jobs)

    def pass_over(self, run_id: str) -> None:
        """Never read run `run_id` (begun with searchable=False): its watermark lies past any
        journal's end, so its history lets go of what is on disk at once."""
        self.watermark[run_id] = PASSED_OVER

    def drop_run(self, run_id: str) -> None:
        for doc, cancelled, _job in self._jobs:
            if cancelled is not None and doc[1] == run_id:
                cancelled[0] = True  # a long document of the run under way: it stops
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
        for run_id in [r for r in self.watermark if r not in runs]:
            self.drop_run(run_id)
        # A long document under way is finished before anything else is indexed.
        if self._jobs and not self._run_jobs(deadline):
            return False
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
        textish = _TEXTISH
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
        slices. The history keeps what is not read until a later trim.
        """
        if not self._jobs:
            self._catch_up_run(run_id, r, len(r.journal), time.monotonic() + TRIM_READ_MS / 1000,
                               0.0)
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

    # -- queries -------------------------------------------------------------------

    def stats(self, terms) -> list:
        """[document count, total length, {term: document frequency}] of this shard."""
        postings, partial = self.postings, self._partial
        dfs = {}
        for t in terms:
            plist = postings.get(t, ())
            n = len(plist)
            if partial and n:  # a long document half added or half taken out is not counted
                n -= sum(1 for doc in partial if doc in plist)
            dfs[t] = n
        return [len(self.docs), self.total_len, dfs]

    def query(self, terms, n_docs, total_len, dfs, run=None, primitives=None, top=10,
              deadline=None):
        """(hits as [score, primitive, run, ref], matches, budget exhausted) with global stats."""
        avgdl = total_len / n_docs if n_docs else 0.0
        scores: dict = {}
        exhausted = False
        allowed = None if primitives is None else frozenset(primitives)
        docs = self.docs
        partial = self._partial
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
                if partial and doc in partial:
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


def _keeps(table: dict, eff):
    """Whether the keyed write `eff` is still its key's entry, asked later (a long document)."""
    return lambda: _current(table, eff)


def _keeps_entry(table: dict, key, e):
    """Whether entry `e` is still `key`'s, asked later (a long document of a rebuild)."""
    return lambda: table.get(key) is e


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


def snippet_texts(sources) -> list[str]:
    """The texts of a document's `sources` (strs, packed values) as far as a snippet looks.

    The first SNIPPET_SCAN characters: a long document is never decoded whole
    for its snippet.
    """
    texts: list = []
    left = SNIPPET_SCAN
    for src in sources:
        if type(src) is not str and len(src) <= LONG_TEXT:  # short: decoded in one go
            for text in packed_text(src):
                texts.append(text)
                left -= len(text)
            if left <= 0:
                return texts
            continue
        pieces: list = []
        for piece, end in (_str_pieces(src) if type(src) is str else _packed_pieces(src)):
            if piece is None:
                continue
            pieces.append(piece)
            left -= len(piece)
            if end or left <= 0:
                texts.append("".join(pieces))
                pieces = []
                if left <= 0:
                    return texts
    return texts


def snippet(texts: list, terms) -> str:
    """A short piece of the document's text around its first matching word."""
    wanted = set(terms)
    # The words as one pattern, longest first, whole words only: the regex engine
    # finds the first, where a Python loop over every word took a millisecond per 10 KiB.
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(wanted, key=len, reverse=True)))
                         + r")(?!\w)") if wanted else None
    for text in texts:
        at = None
        low = text.lower()
        if pattern is not None and len(low) == len(text):  # positions in both agree
            m = pattern.search(low)
            if m is not None:
                at = m.start()
        else:
            for m in _WORD.finditer(text):
                if m.group().lower() in wanted:
                    at = m.start()
                    break
        if at is not None:
            start = max(at - SNIPPET_CHARS // 3, 0)
            piece = text[start:start + SNIPPET_CHARS]
            return ("…" if start else "") + piece + ("…" if start + SNIPPET_CHARS < len(text) else "")
    return (texts[0][:SNIPPET_CHARS] if texts else "")
