"""The postings of the search index: term -> {document: term frequency}, in parts.

`Postings` keeps them in POSTINGS_PARTS dicts, a term's chosen by its hash,
rather than in one: a dict grows by building its table anew all at once, and
one dict of a million terms paused its shard ~0.1 s at each doubling.
"""

from __future__ import annotations

#: the postings are this many dicts, a term's chosen by its hash (a power of two)
POSTINGS_PARTS = 256
#: a term's part is `parts[hash(term) & PART]`
PART = POSTINGS_PARTS - 1


class Postings:
    """term -> {doc: term frequency}, kept in POSTINGS_PARTS dicts rather than one.

    A dict grows by building its table anew, all at once: one dict of every
    term paused its shard ~0.1 s each time its vocabulary doubled past a
    million terms (one large text of distinct words does that in a few
    steps). A part holds 1/POSTINGS_PARTS of the terms, so it grows in as
    many smaller pauses. The index's hot loops pick the part themselves
    (`parts[hash(term) & PART]`); this mapping interface is for the rest.
    """

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = [{} for _ in range(POSTINGS_PARTS)]

    def get(self, term, default=None):
        return self.parts[hash(term) & PART].get(term, default)

    def __getitem__(self, term):
        return self.parts[hash(term) & PART][term]

    def __setitem__(self, term, plist) -> None:
        self.parts[hash(term) & PART][term] = plist

    def __delitem__(self, term) -> None:
        del self.parts[hash(term) & PART][term]

    def __contains__(self, term) -> bool:
        return term in self.parts[hash(term) & PART]

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
