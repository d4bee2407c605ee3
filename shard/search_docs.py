"""Documents into and out of the search index's postings: short ones at once, long ones in steps.

A document is what one primitive entry contributes (`shard.search_index`):
its tokens' term frequencies go into the postings (`shard.search_postings`),
and `docs` holds its length and distinct terms, to take it out again.

A long document (more than LONG_TEXT characters of text, or bytes of packed
value: a scraped page, a transcript, up to max_value_bytes) is indexed in
steps, as the rest of the index is kept up. Indexing it in one go held the
shard's loop (the embedded store's lock) for seconds: 4 s of CPU for 15 MiB
of distinct words, long enough for a cluster to mark the shard unresponsive.
A step decodes about STEP_CHARS characters from the packed value (never the
whole value at once, `shard.search_text`), tokenizes them and puts their
terms straight into the postings; a step of taking one out removes
STEP_TERMS postings entries. The clock is looked at between two steps, so a
slice overruns its deadline by one step (~1-2 ms) at most, whatever the
value's size. While one is under way the index reports `long_work()`, and
the shard runs its slices back to back when idle, as for a rebuild.

Why steps rather than a cap on the text indexed per value: a cap bounds the
work but makes the rest of a transcript unfindable, and still needs steps to
fit a few milliseconds (16 KiB of text is about the most one step can do).
With steps nothing is lost, and the results are exact:

- the text is cut between steps only where tokenizing it whole would cut
  too (`shard.search_text`), so the tokens, and the BM25 scores once it is
  indexed, are those of the text taken whole;
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
whole vocabulary is built aside.
"""

from __future__ import annotations

from collections import Counter, deque
from itertools import islice
import time

from .search_postings import PART, Postings
from .search_text import WORD, packed_text, segments, tokenize

#: a document with more text than this (characters of str, bytes of packed value) is
#: indexed in steps; below it, in one go (~16 KiB of words take ~1-2 ms)
LONG_TEXT = 16 * 1024
#: what one step of taking a long document out does: this many postings entries
STEP_TERMS = 1024


class Documents:
    """The index's documents and their postings: adding and taking them out (a part of
    `SearchIndex`, which holds the state declared here)."""

    postings: Postings
    docs: dict
    long_terms: dict
    _jobs: deque
    _partial: set
    _dropping: dict
    _dropped_docs: int
    total_len: int
    by_run: dict
    run_len: dict

    # -- documents in and out ------------------------------------------------------

    def _remove(self, doc) -> None:
        old = self.docs.pop(doc, None)
        if old is None:
            return
        self.total_len -= old[0]
        run_docs = self.by_run.get(doc[1])
        if run_docs is not None:
            run_docs.discard(doc)
            self.run_len[doc[1]] -= old[0]
        terms = self.long_terms.pop(doc, None)
        if terms is not None:  # gone from searches now; its postings go in steps
            self._partial.add(doc)
            self._jobs.append((doc, None, self._take_out(doc, terms)))
            return
        parts = self.postings.parts
        for term in islice(old, 1, None):
            part = parts[hash(term) & PART]
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
            tokens = WORD.findall(texts[0].lower())
        else:
            tokens = WORD.findall(" ".join(texts).lower())
        if not tokens:
            return
        tfs = dict.fromkeys(tokens, 1)
        if len(tfs) != len(tokens):  # a repeated word: count properly
            tfs = Counter(tokens)
        self.docs[doc] = (len(tokens), *tfs)
        self.total_len += len(tokens)
        run_len = self.run_len
        run_len[doc[1]] = run_len.get(doc[1], 0) + len(tokens)
        parts = self.postings.parts
        for term, tf in tfs.items():
            part = parts[hash(term) & PART]
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

    # -- long documents, in steps ---------------------------------------------------

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
        for segment in segments(sources):
            if segment:
                tokens = tokenize(segment)
                length += len(tokens)
                for term, tf in Counter(tokens).items():
                    part = parts[hash(term) & PART]
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
        self.run_len[doc[1]] = self.run_len.get(doc[1], 0) + length
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
                part = parts[hash(term) & PART]
                plist = part[term]
                del plist[doc]
                if not plist:
                    del part[term]
            if terms:
                yield
        self._partial.discard(doc)

    def _drop_run_docs(self, run_id: str) -> None:
        """Take out the documents of a deleted run, all in a job: the delete itself touches
        none of them.

        Taken out one by one in the delete, a run's 100K documents held the
        shard for 1.7 s and 400K for ~5 s (it was marked unresponsive); even
        popping each from `docs` costs ~1-2 µs a document (a memory access
        apiece). The statistics leave them at once (their count in
        `_dropped_docs`, their length from `run_len`), searches skip them by
        their run's id in `_dropping`, and the job takes them out of `docs` and
        the postings, STEP_TERMS postings entries a step. Entries of that run id
        are the deleted run's only, as nothing is indexed behind a job (a run
        begun again under the id waits for it).
        """
        gone = self.by_run.pop(run_id, None)
        length = self.run_len.pop(run_id, 0)
        if not gone:
            return
        self.total_len -= length
        self._dropped_docs += len(gone)
        self._dropping[run_id] = self._dropping.get(run_id, 0) + 1
        self._jobs.append((None, None, self._take_out_run(run_id, gone)))

    def _take_out_run(self, run_id: str, gone: set):
        """A job: a deleted run's documents out of `docs` and the postings, in steps."""
        parts = self.postings.parts
        pop = self.docs.pop
        long_terms = self.long_terms
        n = 0
        for doc in gone:
            old = pop(doc)
            self._dropped_docs -= 1
            # the list of a long document's terms; (length, terms...) of a short one
            terms = long_terms.pop(doc, old)
            for term in (islice(terms, 1, None) if type(terms) is tuple else terms):
                part = parts[hash(term) & PART]
                plist = part[term]
                del plist[doc]
                if not plist:
                    del part[term]
                n += 1
                if n >= STEP_TERMS:
                    n = 0
                    yield
            n += 8  # a document's own pops count too
        left = self._dropping[run_id] - 1
        if left:
            self._dropping[run_id] = left
        else:
            del self._dropping[run_id]

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
