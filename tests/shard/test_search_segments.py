"""A long document's text, walked and cut in steps, tokenizes as the whole text does.

The index decodes a long value a piece at a time (`packed_pieces`) and cuts
its text into segments (`segments`) that are lowercased and tokenized one by
one. Whatever the value (nested lists and dicts, dict keys, bytes, numbers,
any Unicode, words of any length below MAX_CARRY), the tokens must be those of
the value's strs joined by spaces and tokenized whole, as a short document is.
The step sizes are made tiny here so that every cut is exercised.
"""

from __future__ import annotations

from contextlib import contextmanager

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem.shard.search_text as si

# Letters and marks that lowercasing treats by context (Greek sigma), case-ignorable
# characters (apostrophe, period, colon), separators and digits, plus anything.
ALPHABET = st.one_of(st.sampled_from(list("aΣσςΑİIß'.:·_- ,;\n\t\u3000。ﬀ5é\u0301")),
                     st.characters(blacklist_categories=("Cs",)))
TEXT = st.text(ALPHABET, max_size=120)
VALUE = st.recursive(
    st.one_of(TEXT, st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False), st.binary(max_size=20),
              st.none(), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(TEXT, inner, max_size=6)),
    max_leaves=30)


def whole(sources) -> list[str]:
    texts = []
    for src in sources:
        texts.extend([src] if type(src) is str else si.packed_text(src))
    return si.tokenize(" ".join(texts))


def stepped(sources) -> list[str]:
    return [t for seg in si.segments(sources) for t in si.tokenize(seg)]


@settings(max_examples=300, deadline=None)
@given(value=VALUE, step=st.integers(1, 12), extra=TEXT)
def test_segments_tokenize_as_the_whole_text(value, step, extra):
    sources = [extra, msgpack.packb(value)]
    with tiny_steps(step, 10**9):
        assert stepped(sources) == whole(sources)


@settings(max_examples=300, deadline=None)
@given(value=VALUE, step=st.integers(1, 12), carry=st.integers(1, 40), extra=TEXT)
def test_a_long_stretch_without_a_separator_is_the_only_difference(value, step, carry, extra):
    sources = [extra, msgpack.packb(value)]
    with tiny_steps(step, carry):
        got = stepped(sources)
    want = whole(sources)
    if got != want:
        # The one allowed difference: a stretch longer than MAX_CARRY with no place to cut.
        assert _has_long_uncut_stretch(sources, carry), (got, want)


@settings(max_examples=200, deadline=None)
@given(value=VALUE)
def test_the_walk_finds_the_strs_packed_text_finds(value):
    data = msgpack.packb(value)
    texts, parts = [], []
    for piece, end in si.packed_pieces(data):
        if piece is None:
            continue
        parts.append(piece)
        if end:
            texts.append("".join(parts))
            parts = []
    assert parts == []
    assert texts == si.packed_text(data)


def _has_long_uncut_stretch(sources, carry: int) -> bool:
    for src in sources:
        for text in ([src] if type(src) is str else si.packed_text(src)):
            run = 0
            for c in text:
                run = 0 if c in si.SEPARATORS else run + 1
                if run >= carry:
                    return True
    return False


@contextmanager
def tiny_steps(step: int, carry: int):
    """The step and carry sizes for one example (a fixture would outlive it)."""
    saved = si.STEP_CHARS, si.MAX_CARRY, si.WALK_TICK
    si.STEP_CHARS, si.MAX_CARRY, si.WALK_TICK = step, carry, 3
    try:
        yield
    finally:
        si.STEP_CHARS, si.MAX_CARRY, si.WALK_TICK = saved
